/* ic_s3_chain.c: a chain in a bucket mirrored by a local cache directory (ic_s3_chain.h;
 * FORMAT.md section 14): pull (list, key file, images filled by parallel range GETs), the
 * path of a point, push (multipart uploads of new images). */
#include "config.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ic_chain.h"
#include "ic_error.h"
#include "ic_lock.h"
#include "ic_pool.h"
#include "ic_s3_chain_int.h"
#include "ic_store.h"
#include "ic_util.h"

unsigned ic_s3_threads(void)
{
	const char *v = getenv("IMGCHAIN_S3_THREADS");
	long n = v ? strtol(v, NULL, 10) : 0;

	return n >= 1 && n <= 64 ? (unsigned)n : 8;
}

#define KEYFILE_MAX (1u << 20)
#define CHUNK (8u << 20)            /* one range GET */
#define PART_MIN (16u << 20)        /* one part of an upload (5 MiB is S3's least) */
#define OBJECTS_MAX 200000u

bool ic_s3_chain_file(const char *n)
{
	size_t i;

	if (strcmp(n, "imgchain.key") == 0)
		return true;
	if (strlen(n) != 12 || strcmp(n + 8, ".img") != 0)
		return false;
	for (i = 0; i < 8; i++)
		if (n[i] < '0' || n[i] > '9')
			return false;
	return true;
}

void ic_s3_fail_once(pthread_mutex_t *mu, struct ic_error *e, bool *failed, int err)
{
	pthread_mutex_lock(mu);
	if (!*failed)
		ic_error_save(e, err);
	*failed = true;
	pthread_mutex_unlock(mu);
}

static int mkdirs(char *path)
{
	char *p;

	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			int e = errno;

			*p = '/';
			return ic_fail(-e, "%s: mkdir: %s", path, strerror(e));
		}
		*p = '/';
	}
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return ic_fail(-errno, "%s: mkdir: %s", path, strerror(errno));
	return 0;
}

/* Does base/origin say id?  (Which bucket and prefix the cache holds: for a person.) */
static bool origin_is(const char *base, const char *id)
{
	char *buf = NULL;
	size_t len;
	bool yes = ic_store_read_file(base, "origin", 4096, &buf, &len) == 0 &&
		   len == strlen(id) && !memcmp(buf, id, len);

	free(buf);
	return yes;
}

/* Tools open the cache before they take its lock, several at once (imginfo beside a
 * backup): write origin only when it does not already say id, each opener through a
 * temporary of its own (one shared name let a second opener remove the first's temporary
 * before renaming its own). */
static int write_origin(const char *base, const char *id)
{
	if (origin_is(base, id))
		return 0;
	return ic_store_write_file_shared(base, "origin", id, strlen(id));
}

int ic_s3_chain_open(const char *url, struct ic_s3_chain **out)
{
	struct ic_s3_chain *sc = calloc(1, sizeof(*sc));
	const char *root = getenv("IMGCHAIN_S3_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	unsigned char h[crypto_hash_sha256_BYTES];
	char hex[2 * sizeof(h) + 1], *id = NULL, *base = NULL;
	int err;

	*out = NULL;
	if (!sc)
		return -ENOMEM;
	sc->lockfd = -1;
	err = ic_s3_open(url, &sc->s3, &sc->prefix);
	if (err) {
		free(sc);
		return err;
	}
	if (asprintf(&id, "%s\n%s\n%s", sc->s3->conf.endpoint, sc->s3->bucket, sc->prefix) < 0) {
		id = NULL;
		err = -ENOMEM;
		goto fail;
	}
	crypto_hash_sha256(h, (const unsigned char *)id, strlen(id));
	sodium_bin2hex(hex, sizeof(hex), h, 16);
	if (root && *root)
		err = asprintf(&base, "%s/%s", root, hex);
	else if (xdg && *xdg)
		err = asprintf(&base, "%s/imgchain/s3/%s", xdg, hex);
	else if (home && *home)
		err = asprintf(&base, "%s/.cache/imgchain/s3/%s", home, hex);
	else
		err = ic_fail(-EINVAL, "S3: no cache directory: set IMGCHAIN_S3_CACHE");
	if (err < 0) {
		base = NULL;
		err = err == -EINVAL ? err : -ENOMEM;
		goto fail;
	}
	sc->base = base;
	if (asprintf(&sc->dir, "%s/chain", base) < 0) {
		sc->dir = NULL;
		err = -ENOMEM;
		goto fail;
	}
	err = mkdirs(sc->dir);
	if (!err)
		err = write_origin(base, id);
	if (!err)
		err = ic_s3_state_load(sc);
	if (err)
		goto fail;
	free(id);
	*out = sc;
	return 0;
fail:
	free(id);
	ic_s3_chain_close(sc);
	return err;
}

void ic_s3_chain_close(struct ic_s3_chain *sc)
{
	if (!sc)
		return;
	ic_s3_lease_drop(sc);
	ic_s3_cache_unlock(sc);
	ic_s3_close(sc->s3);
	free(sc->prefix);
	free(sc->base);
	free(sc->dir);
	free(sc->objs);
	free(sc->remote);
	free(sc);
}

int ic_s3_cache_lock(struct ic_s3_chain *sc)
{
	int err = ic_open_regular(AT_FDCWD, sc->base, "lock", O_RDWR | O_CREAT, 0600, &sc->lockfd);

	if (err)
		return err;
	while (flock(sc->lockfd, LOCK_EX) != 0)
		if (errno != EINTR)
			return ic_fail(-errno, "%s/lock: %s", sc->base, strerror(errno));
	return 0;
}

void ic_s3_cache_unlock(struct ic_s3_chain *sc)
{
	if (sc->lockfd >= 0)
		close(sc->lockfd);
	sc->lockfd = -1;
}

const char *ic_s3_chain_dir(const struct ic_s3_chain *sc)
{
	return sc->dir;
}

struct ic_s3 *ic_s3_chain_client(struct ic_s3_chain *sc)
{
	return sc->s3;
}

const char *ic_s3_chain_prefix(const struct ic_s3_chain *sc)
{
	return sc->prefix;
}

char *ic_s3_chain_key(const struct ic_s3_chain *sc, const char *name)
{
	char *k;

	if (asprintf(&k, "%s%s%s", sc->prefix, *sc->prefix ? "/" : "", name) < 0)
		return NULL;
	return k;
}

/* ---- listing the bucket ---------------------------------------------------------- */

static int list_fn(void *arg, const struct ic_s3_object *o)
{
	struct ic_s3_chain *sc = arg;
	size_t pl = strlen(sc->prefix) + (*sc->prefix ? 1 : 0);
	const char *name;
	struct ic_s3_obj *r;

	if (strlen(o->key) < pl || strncmp(o->key, sc->prefix, pl - (*sc->prefix ? 1 : 0)) != 0 ||
	    (*sc->prefix && o->key[pl - 1] != '/'))
		return 0;               /* not under the prefix (a server's mistake) */
	name = o->key + pl;
	if (!ic_s3_chain_file(name))
		return 0;               /* the lease, foreign objects: not the chain's */
	if (sc->nremote == OBJECTS_MAX)
		return ic_fail(-EFBIG, "%s/%s: more than %u objects", ic_s3_name(sc->s3),
			       sc->prefix, OBJECTS_MAX);
	if (sc->nremote == sc->remote_cap) {
		size_t cap = sc->remote_cap ? 2 * sc->remote_cap : 64;
		void *p = realloc(sc->remote, cap * sizeof(*sc->remote));

		if (!p)
			return -ENOMEM;
		sc->remote = p;
		sc->remote_cap = cap;
	}
	r = &sc->remote[sc->nremote++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->etag, sizeof(r->etag), "%s", o->etag);
	r->size = o->size;
	return 0;
}

int ic_s3_list_remote(struct ic_s3_chain *sc)
{
	char *p = NULL;
	int err;

	sc->nremote = 0;
	if (*sc->prefix && asprintf(&p, "%s/", sc->prefix) < 0)
		return -ENOMEM;
	err = ic_s3_list(sc->s3, p ? p : "", list_fn, sc);
	free(p);
	return err;
}

/* ---- fetching ranges in parallel ------------------------------------------------- */

struct fetch_job {
	struct ic_s3_chain *sc;
	pthread_mutex_t mu;
	struct range { char *key; const char *etag; int fd; uint64_t off, len; } *r;
	size_t n, next;
	struct ic_error err;
	bool failed;
};

static void *fetch_worker(void *arg)
{
	struct fetch_job *j = arg;
	void *buf = malloc(CHUNK);

	for (;;) {
		struct range *r;
		uint64_t done = 0;
		int err = 0;

		pthread_mutex_lock(&j->mu);
		r = j->failed || j->next == j->n ? NULL : &j->r[j->next++];
		pthread_mutex_unlock(&j->mu);
		if (!r)
			break;
		if (!buf)
			err = -ENOMEM;
		while (!err && done < r->len) {
			size_t want = r->len - done < CHUNK ? (size_t)(r->len - done) : CHUNK, got;

			err = ic_s3_get_if(j->sc->s3, r->key, r->etag, r->off + done, want, buf, &got);
			if (err == -EEXIST)
				err = ic_fail(-EAGAIN, "%s/%s: the object changed while it was "
					      "being read: run again", ic_s3_name(j->sc->s3),
					      r->key);
			if (!err && got != want)
				err = ic_fail(IC_ECORRUPT, "%s/%s: shorter than its listing said",
					      ic_s3_name(j->sc->s3), r->key);
			if (!err && pwrite(r->fd, buf, got, (off_t)(r->off + done)) != (ssize_t)got)
				err = ic_fail(-errno, "%s: cache write: %s", j->sc->dir, strerror(errno));
			done += got;
		}
		if (err)
			ic_s3_fail_once(&j->mu, &j->err, &j->failed, err);
	}
	free(buf);
	return NULL;
}

/* Fetch every range of j (several threads), then free the ranges' keys. */
static int fetch_run(struct fetch_job *j)
{
	struct ic_pool pool;
	unsigned n = j->n < ic_s3_threads() ? (unsigned)j->n : ic_s3_threads();
	size_t i;
	int err = 0;

	pthread_mutex_init(&j->mu, NULL);
	if (n) {
		err = ic_pool_start(&pool, n, fetch_worker, j);
		ic_pool_join(&pool);
	}
	pthread_mutex_destroy(&j->mu);
	for (i = 0; i < j->n; i++)
		free(j->r[i].key);
	free(j->r);
	if (!err && j->failed)
		err = ic_error_raise(&j->err);
	return err;
}

static int add_range(struct fetch_job *j, size_t *cap, const struct ic_s3_chain *sc,
		     const struct ic_s3_obj *o, int fd, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	if (j->n == *cap) {
		size_t c = *cap ? 2 * *cap : 16;
		void *p = realloc(j->r, c * sizeof(*j->r));

		if (!p)
			return -ENOMEM;
		j->r = p;
		*cap = c;
	}
	j->r[j->n] = (struct range){ .key = ic_s3_chain_key(sc, o->name), .etag = o->etag,
				     .fd = fd, .off = off, .len = len };
	if (!j->r[j->n].key)
		return -ENOMEM;
	j->n++;
	return 0;
}

/* The index's place in a cached image whose first 4 KiB are here: [off, end). */
static int index_span(const struct ic_s3_chain *sc, const char *name, uint64_t *off,
		      uint64_t *end)
{
	char *path = ic_path_join(sc->dir, name);
	struct ic_image *img;
	int err;

	if (!path)
		return -ENOMEM;
	err = ic_image_open(path, O_RDONLY, &img);
	free(path);
	if (err)
		return err;
	*off = img->slot.index_offset;
	*end = img->slot.data_end;
	ic_image_close(img);
	return 0;
}

/* Fill the cached copies of objs[0..n) (entries of sc->objs) to need: two rounds, the
 * headers first (they say where the index is). */
int ic_s3_fill(struct ic_s3_chain *sc, struct ic_s3_obj **objs, size_t n, enum ic_s3_need need)
{
	int *fds = calloc(n ? n : 1, sizeof(int));
	int round, err = 0;
	size_t i;

	if (!fds)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		fds[i] = -1;
	for (round = IC_S3_NEED_HEADER; !err && round <= (int)need; round++) {
		struct fetch_job j = { .sc = sc };
		size_t cap = 0;

		if (round == IC_S3_NEED_INDEX && need == IC_S3_NEED_FULL)
			continue;       /* the full fetch gets the index too */
		for (i = 0; !err && i < n; i++) {
			struct ic_s3_obj *o = objs[i];
			uint64_t off = 0, end = 0;

			if (o->have >= round)
				continue;
			if (fds[i] < 0)
				err = ic_open_regular(AT_FDCWD, sc->dir, o->name, O_RDWR, 0, &fds[i]);
			if (err)
				break;
			if (round == IC_S3_NEED_HEADER)
				end = o->size < ICF_HEADER_SIZE ? o->size : ICF_HEADER_SIZE;
			else if (round == IC_S3_NEED_FULL)
				end = o->size;
			else
				err = index_span(sc, o->name, &off, &end);
			if (!err && (end > o->size || off > end))
				err = ic_fail(IC_ECORRUPT, "%s/%s: its slot places the index outside "
					      "the object", ic_s3_name(sc->s3), o->name);
			if (!err)
				err = add_range(&j, &cap, sc, o, fds[i], off, end - off);
		}
		if (err) {
			for (i = 0; i < j.n; i++)
				free(j.r[i].key);
			free(j.r);
			break;
		}
		err = fetch_run(&j);
		for (i = 0; !err && i < n; i++)
			if (objs[i]->have < round)
				objs[i]->have = round;
	}
	for (i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	if (!err)
		err = ic_s3_state_save(sc);
	return err;
}

/* ---- the cache's bound ------------------------------------------------------------ */

/* Bytes of the cached images past their first 4 KiB: IMGCHAIN_S3_CACHE_MAX (a size, "0"
 * for no bound; default 16G).  Over it, whole images (largest first) go back to their
 * header, except those a reader holds (byte 0 locked: a mount serving them). */
void ic_s3_cache_trim(struct ic_s3_chain *sc)
{
	const char *v = getenv("IMGCHAIN_S3_CACHE_MAX");
	uint64_t max = 16ull << 30, total = 0;
	bool changed = false;
	size_t i;

	if (v && ic_parse_size(v, &max) != 0)
		return;
	if (max == 0)
		return;
	for (i = 0; i < sc->nobjs; i++)
		if (sc->objs[i].have > IC_S3_NEED_HEADER)
			total += sc->objs[i].size;
	while (total > max) {
		struct ic_s3_obj *big = NULL;
		pid_t pid = 0;
		int fd;

		for (i = 0; i < sc->nobjs; i++) {
			struct ic_s3_obj *o = &sc->objs[i];

			if (o->have > IC_S3_NEED_HEADER && strcmp(o->name, "imgchain.key") != 0 &&
			    (!big || o->size > big->size))
				big = o;
		}
		if (!big)
			break;
		total -= big->size;
		if (ic_open_regular(AT_FDCWD, sc->dir, big->name, O_RDWR, 0, &fd) != 0)
			continue;
		if (ic_lock_holder(fd, 0, &pid) == 0 && pid == 0 && big->size > ICF_HEADER_SIZE &&
		    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, ICF_HEADER_SIZE,
			      (off_t)(big->size - ICF_HEADER_SIZE)) == 0) {
			big->have = IC_S3_NEED_HEADER;
			changed = true;
		} else {
			big->have = -big->have;     /* skipped this time; restored below */
		}
		close(fd);
	}
	for (i = 0; i < sc->nobjs; i++)
		if (sc->objs[i].have < 0)
			sc->objs[i].have = -sc->objs[i].have;
	if (changed)
		ic_s3_state_save(sc);
}
