/* ic_s3_sync.c: the bucket mirror's state file, pull, the path of a point, push, and the
 * tools' entry (ic_s3_chain_arg).  FORMAT.md section 14. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ic_chain.h"
#include "ic_error.h"
#include "ic_pool.h"
#include "ic_s3_chain_int.h"
#include "ic_store.h"
#include "ic_util.h"

#define KEYFILE_MAX (1u << 20)
#define STATE_MAX (64u << 20)
#define PART_MIN (16ull << 20)      /* one part of an upload (5 MiB is S3's least) */
#define SINGLE_PUT_MAX (16ull << 20)

/* ---- the cache's state: base/objects, one line per object ------------------------
 * "NAME ETAG SIZE HAVE SUM": what the cached file holds of which version of the object.
 * Read strictly; anything unexpected empties the state (everything is fetched again). */

static struct ic_s3_obj *obj_find(struct ic_s3_obj *v, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(v[i].name, name) == 0)
			return &v[i];
	return NULL;
}

static struct ic_s3_obj *obj_add(struct ic_s3_chain *sc)
{
	if (sc->nobjs == sc->objs_cap) {
		size_t cap = sc->objs_cap ? 2 * sc->objs_cap : 64;
		void *p = realloc(sc->objs, cap * sizeof(*sc->objs));

		if (!p)
			return NULL;
		sc->objs = p;
		sc->objs_cap = cap;
	}
	memset(&sc->objs[sc->nobjs], 0, sizeof(*sc->objs));
	return &sc->objs[sc->nobjs++];
}

struct ic_s3_obj *ic_s3_obj_put(struct ic_s3_chain *sc, const struct ic_s3_obj *o)
{
	struct ic_s3_obj *c = obj_find(sc->objs, sc->nobjs, o->name);

	if (!c && !(c = obj_add(sc)))
		return NULL;
	*c = *o;
	return c;
}

int ic_s3_state_load(struct ic_s3_chain *sc)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len;
	int err = ic_store_read_file(sc->base, "objects", STATE_MAX, &buf, &len);

	sc->nobjs = 0;
	if (err == -ENOENT)
		return 0;
	if (err)
		return err;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct ic_s3_obj o = { 0 }, *n;
		unsigned long long size;
		int have;

		if (sscanf(line, "%15s %79s %llu %d %64s", o.name, o.etag, &size, &have, o.sum) != 5 ||
		    have < 0 || have > IC_S3_NEED_FULL || obj_find(sc->objs, sc->nobjs, o.name)) {
			sc->nobjs = 0;  /* not ours, or damaged: start again */
			break;
		}
		o.size = size;
		o.have = have;
		if (!(n = obj_add(sc))) {
			free(buf);
			return -ENOMEM;
		}
		*n = o;
	}
	free(buf);
	return 0;
}

int ic_s3_state_save(struct ic_s3_chain *sc)
{
	size_t cap = 64 + sc->nobjs * (16 + IC_S3_ETAG_MAX + 100), len = 0, i;
	char *buf = malloc(cap);
	int err;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < sc->nobjs; i++) {
		const struct ic_s3_obj *o = &sc->objs[i];

		len += (size_t)snprintf(buf + len, cap - len, "%s %s %llu %d %s\n", o->name,
					o->etag[0] ? o->etag : "-", (unsigned long long)o->size,
					o->have, o->sum[0] ? o->sum : "-");
	}
	err = ic_store_write_file(sc->base, "objects", buf, len, false);
	free(buf);
	return err;
}

static void sha_hex(const void *buf, size_t len, char out[65])
{
	unsigned char h[crypto_hash_sha256_BYTES];

	crypto_hash_sha256(h, buf, len);
	sodium_bin2hex(out, 65, h, sizeof(h));
}

/* ---- pull ------------------------------------------------------------------------- */

static int remove_cached(struct ic_s3_chain *sc, const char *name)
{
	char *path = ic_path_join(sc->dir, name);
	int err;

	if (!path)
		return -ENOMEM;
	err = ic_store_remove(path);
	free(path);
	return err;
}

/* Drop from the cache what the bucket does not hold as cached: state entries and files
 * (also files the state does not know: a killed writer's unpublished image). */
static int prune_cache(struct ic_s3_chain *sc)
{
	DIR *d;
	struct dirent *de;
	size_t i, o = 0;
	int err = 0;

	for (i = 0; i < sc->nobjs; i++) {
		struct ic_s3_obj *c = &sc->objs[i];
		struct ic_s3_obj *r = obj_find(sc->remote, sc->nremote, c->name);

		if (r && strcmp(r->etag, c->etag) == 0 && r->size == c->size)
			sc->objs[o++] = *c;
	}
	sc->nobjs = o;
	d = opendir(sc->dir);
	if (!d)
		return ic_fail(-errno, "%s: %s", sc->dir, strerror(errno));
	while (!err && (de = readdir(d)))
		if (ic_s3_chain_file(de->d_name) && !obj_find(sc->objs, sc->nobjs, de->d_name))
			err = remove_cached(sc, de->d_name);
	closedir(d);
	return err;
}

static int pull_keyfile(struct ic_s3_chain *sc, const struct ic_s3_obj *r)
{
	char *key = ic_s3_chain_key(sc, r->name);
	struct ic_s3_obj *c;
	void *buf = NULL;
	size_t len;
	int err;

	if (!key)
		return -ENOMEM;
	err = ic_s3_get_all(sc->s3, key, KEYFILE_MAX, &buf, &len, NULL);
	free(key);
	if (!err)
		err = ic_store_write_file(sc->dir, r->name, buf, len, false);
	if (!err && !(c = obj_add(sc)))
		err = -ENOMEM;
	if (!err) {
		*c = *r;
		c->have = IC_S3_NEED_FULL;
		sha_hex(buf, len, c->sum);
	}
	free(buf);
	return err;
}

static int pull_image_stub(struct ic_s3_chain *sc, const struct ic_s3_obj *r)
{
	struct ic_s3_obj *c;
	int fd, err;

	err = remove_cached(sc, r->name);
	if (!err)
		err = ic_open_regular(AT_FDCWD, sc->dir, r->name, O_RDWR | O_CREAT | O_EXCL, 0600,
				      &fd);
	if (err)
		return err;
	if (ftruncate(fd, (off_t)r->size) != 0)
		err = ic_fail(-errno, "%s/%s: %s", sc->dir, r->name, strerror(errno));
	close(fd);
	if (!err && !(c = obj_add(sc)))
		err = -ENOMEM;
	if (!err) {
		*c = *r;
		c->have = 0;
	}
	return err;
}

int ic_s3_chain_pull(struct ic_s3_chain *sc, enum ic_s3_need need)
{
	struct ic_s3_obj **fill;
	size_t i, n = 0;
	int err = ic_s3_list_remote(sc);

	if (!err)
		err = prune_cache(sc);
	for (i = 0; !err && i < sc->nremote; i++) {
		const struct ic_s3_obj *r = &sc->remote[i];

		if (obj_find(sc->objs, sc->nobjs, r->name))
			continue;
		err = strcmp(r->name, "imgchain.key") == 0 ? pull_keyfile(sc, r) :
							     pull_image_stub(sc, r);
	}
	if (err) {
		ic_s3_state_save(sc);
		return err;
	}
	fill = calloc(sc->nobjs ? sc->nobjs : 1, sizeof(*fill));
	if (!fill)
		return -ENOMEM;
	for (i = 0; i < sc->nobjs; i++)
		if (strcmp(sc->objs[i].name, "imgchain.key") != 0 && sc->objs[i].have < (int)need)
			fill[n++] = &sc->objs[i];
	err = ic_s3_fill(sc, fill, n, need);
	free(fill);
	return err;
}

int ic_s3_chain_fetch_path(struct ic_s3_chain *sc, const char *name, enum ic_s3_need need)
{
	struct ic_chain *c;
	struct ic_point *p;
	struct ic_s3_obj *fill[ICF_SEQ_MAX > 4096 ? 4096 : ICF_SEQ_MAX];
	size_t n = 0;
	int err = ic_chain_open(sc->dir, &c);

	if (err)
		return err;
	if (name)
		err = ic_chain_lookup(c, name, &p);
	else
		p = ic_chain_newest(c);
	for (; !err && p && n < sizeof(fill) / sizeof(fill[0]); p = p->parent) {
		const char *base = strrchr(p->img->path, '/');
		struct ic_s3_obj *o = obj_find(sc->objs, sc->nobjs, base ? base + 1 : p->img->path);

		if (o && o->have < (int)need)
			fill[n++] = o;
	}
	ic_chain_free(c);
	if (!err)
		err = ic_s3_fill(sc, fill, n, need);
	return err;
}

/* ---- push ------------------------------------------------------------------------- */

struct up_job {
	struct ic_s3_upload *u;
	int fd;
	uint64_t size, part;
	unsigned nparts, next;
	pthread_mutex_t mu;
	struct ic_error err;
	bool failed;
};

static void *up_worker(void *arg)
{
	struct up_job *j = arg;
	void *buf = malloc(j->part);

	for (;;) {
		unsigned k;
		uint64_t off, len;
		int err = 0;

		pthread_mutex_lock(&j->mu);
		k = j->failed || j->next == j->nparts ? 0 : ++j->next;
		pthread_mutex_unlock(&j->mu);
		if (!k)
			break;
		off = (uint64_t)(k - 1) * j->part;
		len = j->size - off < j->part ? j->size - off : j->part;
		if (!buf)
			err = -ENOMEM;
		else if (pread(j->fd, buf, len, (off_t)off) != (ssize_t)len)
			err = ic_fail(-EIO, "upload: short read of the cached image");
		if (!err)
			err = ic_s3_mp_part(j->u, k, buf, len);
		if (err)
			ic_s3_fail_once(&j->mu, &j->err, &j->failed, err);
	}
	free(buf);
	return NULL;
}

static int upload_image(struct ic_s3_chain *sc, const char *name, struct ic_s3_obj *out)
{
	static const struct ic_s3_cond create = { .if_none_match = true };
	char *key = ic_s3_chain_key(sc, name);
	struct up_job j = { .fd = -1 };
	struct ic_pool pool;
	struct stat st;
	void *buf = NULL;
	int err;

	if (!key)
		return -ENOMEM;
	err = ic_open_regular(AT_FDCWD, sc->dir, name, O_RDONLY, 0, &j.fd);
	if (!err && fstat(j.fd, &st) != 0)
		err = ic_fail(-errno, "%s/%s: %s", sc->dir, name, strerror(errno));
	if (err)
		goto out;
	j.size = (uint64_t)st.st_size;
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->size = j.size;
	out->have = IC_S3_NEED_FULL;
	if (j.size <= SINGLE_PUT_MAX) {
		buf = malloc(j.size ? j.size : 1);
		if (!buf)
			err = -ENOMEM;
		else if (pread(j.fd, buf, j.size, 0) != (ssize_t)j.size)
			err = ic_fail(-EIO, "%s/%s: short read", sc->dir, name);
		if (!err)
			err = ic_s3_put(sc->s3, key, buf, j.size, &create, out->etag);
		goto out;
	}
	j.part = PART_MIN;
	while ((j.size + j.part - 1) / j.part > IC_S3_PART_MAX)
		j.part += 1u << 20;
	j.nparts = (unsigned)((j.size + j.part - 1) / j.part);
	err = ic_s3_mp_start(sc->s3, key, &j.u);
	if (err)
		goto out;
	pthread_mutex_init(&j.mu, NULL);
	err = ic_pool_start(&pool, j.nparts < ic_s3_threads() ? j.nparts : ic_s3_threads(),
			    up_worker, &j);
	ic_pool_join(&pool);
	pthread_mutex_destroy(&j.mu);
	if (!err && j.failed)
		err = ic_error_raise(&j.err);
	if (!err)
		err = ic_s3_lease_check(sc);
	if (!err)
		err = ic_s3_mp_complete(j.u, out->etag);
	if (err)
		ic_s3_mp_abort(j.u);
	if (!err && !out->etag[0])
		err = ic_s3_head(sc->s3, key, NULL, out->etag);
out:
	if (j.fd >= 0)
		close(j.fd);
	free(buf);
	free(key);
	return err;
}

int ic_s3_push_keyfile(struct ic_s3_chain *sc)
{
	struct ic_s3_cond cond = { 0 };
	struct ic_s3_obj *c = obj_find(sc->objs, sc->nobjs, "imgchain.key");
	struct ic_s3_obj *r = obj_find(sc->remote, sc->nremote, "imgchain.key");
	char sum[65], *buf = NULL, *key = NULL;
	size_t len;
	int err = ic_store_read_file(sc->dir, "imgchain.key", KEYFILE_MAX, &buf, &len);

	if (err == -ENOENT)
		return 0;
	if (err)
		return err;
	sha_hex(buf, len, sum);
	if (c && r && strcmp(c->etag, r->etag) == 0 && strcmp(c->sum, sum) == 0)
		goto out;               /* unchanged */
	if (r && !c) {
		err = ic_fail(-EEXIST, "%s/%s: a key file appeared in the bucket meanwhile",
			      ic_s3_name(sc->s3), sc->prefix);
		goto out;
	}
	if (r)
		cond.if_match = c->etag;
	else
		cond.if_none_match = true;
	key = ic_s3_chain_key(sc, "imgchain.key");
	err = key ? ic_s3_put(sc->s3, key, buf, len, &cond, r ? r->etag : NULL) : -ENOMEM;
	if (err == -EEXIST)
		err = ic_fail(-EEXIST, "%s: the bucket's key file changed meanwhile", key);
	if (!err && !c && !(c = obj_add(sc)))
		err = -ENOMEM;
	if (!err) {
		if (!r)
			err = ic_s3_head(sc->s3, key, NULL, c->etag);
		else
			strcpy(c->etag, r->etag);
		strcpy(c->name, "imgchain.key");
		c->size = len;
		c->have = IC_S3_NEED_FULL;
		strcpy(c->sum, sum);
	}
out:
	free(key);
	free(buf);
	return err;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int ic_s3_chain_push(struct ic_s3_chain *sc)
{
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *d;
	int err = ic_s3_lease_check(sc);

	if (!err)
		err = ic_s3_list_remote(sc);
	if (!err)
		err = ic_s3_push_keyfile(sc);
	if (err)
		return err;
	d = opendir(sc->dir);
	if (!d)
		return ic_fail(-errno, "%s: %s", sc->dir, strerror(errno));
	while (!err && (de = readdir(d))) {
		if (!ic_s3_chain_file(de->d_name) || strcmp(de->d_name, "imgchain.key") == 0 ||
		    obj_find(sc->remote, sc->nremote, de->d_name))
			continue;
		if (n == cap) {
			void *p = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof(*names));

			if (!p) {
				err = -ENOMEM;
				break;
			}
			names = p;
		}
		if (!(names[n] = strdup(de->d_name)))
			err = -ENOMEM;
		else
			n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; !err && i < n; i++) {
		struct ic_s3_obj o = { 0 }, *c;

		err = upload_image(sc, names[i], &o);
		if (!err) {
			c = obj_find(sc->objs, sc->nobjs, names[i]);
			if (!c && !(c = obj_add(sc)))
				err = -ENOMEM;
			else
				*c = o;
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (!err)
		err = ic_s3_state_save(sc);
	return err;
}

/* ---- the tools' entry -------------------------------------------------------------- */

int ic_s3_chain_arg(const char *arg, bool writer, enum ic_s3_need need, const char *point,
		    enum ic_s3_need path_need, struct ic_s3_chain **scp, const char **dir)
{
	struct ic_s3_chain *sc;
	int err;

	*scp = NULL;
	*dir = arg;
	if (!ic_s3_is_url(arg))
		return 0;
	err = ic_s3_chain_open(arg, &sc);
	if (err)
		return err;
	/* one process uses the cache at a time, until ic_s3_chain_close: a reader's pull
	 * would drop a writer's image not yet uploaded, a trim punch what a reader is about
	 * to open */
	err = ic_s3_cache_lock(sc);
	if (!err)
		ic_s3_cache_trim(sc);   /* what earlier runs left, before this one's needs */
	if (!err && writer)
		err = ic_s3_lease_take(sc);
	if (!err)
		err = ic_s3_chain_pull(sc, need);
	if (!err && path_need > need && sc->nobjs > 1)
		err = ic_s3_chain_fetch_path(sc, point, path_need);
	if (err) {
		ic_s3_chain_close(sc);
		return err;
	}
	*scp = sc;
	*dir = sc->dir;
	return 0;
}

int ic_s3_chain_published(struct ic_s3_chain *sc, unsigned seq)
{
	char name[16];
	struct ic_s3_obj *o;

	snprintf(name, sizeof(name), "%08u.img", seq);
	o = obj_find(sc->objs, sc->nobjs, name);
	if (o && o->etag[0] && o->have == IC_S3_NEED_FULL)
		return 0;
	return ic_fail(-EIO, "%s/%s/%s: the new point was not uploaded", ic_s3_name(sc->s3),
		       sc->prefix, name);
}
