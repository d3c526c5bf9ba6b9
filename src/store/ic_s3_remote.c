/* ic_s3_remote.c: the images of a chain in a bucket read on demand (imgmount, instant
 * recovery: FORMAT.md 14.4).
 *
 * The mount pulls the chain to its indexes only; the records stay in the bucket until a
 * reader needs them.  Each image of the cache is cut into chunks (IMGCHAIN_S3_CHUNK,
 * default 1 MiB); a record read makes its chunks present first: fetched by a range GET
 * bound to the listed ETag (If-Match) and written into the cache file, one fetch per
 * chunk however many readers wait for it.  The readahead of sequential readers
 * (ic_cache_ra.c) hands its ranges to prefetch: their chunks are fetched by
 * IMGCHAIN_S3_THREADS workers in parallel, nobody waiting.  The bytes fetched are bounded
 * by IMGCHAIN_S3_CACHE_MAX: beyond it the least recently used chunks no read is using
 * are punched out of the files again.  Every byte still goes through the same checks as a
 * local chain's (record checksum, then authentication): a fetch that failed is an error
 * (EIO), a chunk that came back wrong fails the checksum (EIO), never data served.
 *
 * The S3 client and the workers are created at the first fetch, in the process that
 * serves (the daemon after its fork), never before. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_image.h"
#include "ic_pool.h"
#include "ic_s3_chain_int.h"
#include "ic_util.h"

#define QUEUE_MAX 1024u

enum { C_ABSENT, C_FETCHING, C_PRESENT, C_CACHED /* before the mount: never evicted */ };

struct chunk {
	uint8_t state;
	uint16_t pins;              /* reads between fill and done */
	uint32_t used;              /* tick of the last use (LRU) */
};

struct rimg {
	char name[16];
	char etag[IC_S3_ETAG_MAX];
	ino_t ino;
	uint64_t size;
	int wfd;                    /* the cache file, written: opened with the mount's pull,
				     * so that a later pull replacing the file is not written */
	struct chunk *ch;
	size_t nch;
};

struct job {
	size_t img, chunk;
};

struct ic_s3_remote {
	char *url, *dir, *prefix;
	struct rimg *imgs;
	size_t nimgs;
	uint64_t chunk, max, present;
	uint32_t tick;
	pthread_mutex_t mu;
	pthread_cond_t cv;          /* a chunk's fetch ended; a job was queued */
	struct ic_s3 *s3;           /* created at the first fetch, in the serving process */
	pid_t pid;
	struct ic_pool pool;
	bool started, stop;
	struct job q[QUEUE_MAX];
	size_t qh, qn;
	uint64_t fetched, requests, prefetched;
	struct ic_image_remote hook;
};

static struct rimg *img_of(struct ic_s3_remote *r, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return NULL;
	for (size_t i = 0; i < r->nimgs; i++)
		if (r->imgs[i].ino == st.st_ino)
			return &r->imgs[i];
	return NULL;
}

static void *worker(void *arg);

/* The client and the workers, once, in this process (mu held). */
static int start(struct ic_s3_remote *r)
{
	char *pfx = NULL;
	int ret;

	if (r->started && r->pid == getpid())
		return r->s3 ? 0 : -EIO;
	r->started = true;
	r->pid = getpid();
	r->s3 = NULL;               /* one made before a fork is the parent's: not used */
	ret = ic_s3_open(r->url, &r->s3, &pfx);
	free(pfx);
	if (ret)
		return ret;
	r->pool.n = 0;
	if (ic_pool_start(&r->pool, ic_s3_threads(), worker, r) && !r->pool.n)
		ic_pool_join(&r->pool);     /* no workers: prefetches are dropped */
	return 0;
}

/* Fetch chunk k of m into its file (mu not held). */
static int fetch(struct ic_s3_remote *r, struct rimg *m, size_t k)
{
	uint64_t off = (uint64_t)k * r->chunk, len = m->size - off < r->chunk ? m->size - off : r->chunk;
	char *key = NULL;
	void *buf = malloc(len ? len : 1);
	size_t got = 0;
	int ret = buf ? 0 : -ENOMEM;

	if (!ret && asprintf(&key, "%s%s%s", r->prefix, *r->prefix ? "/" : "", m->name) < 0) {
		key = NULL;
		ret = -ENOMEM;
	}
	if (!ret)
		ret = ic_s3_get_if(r->s3, key, m->etag, off, len, buf, &got);
	if (!ret && got != len)
		ret = ic_fail(-EIO, "%s/%s: the object is shorter than listed", r->dir, m->name);
	if (!ret && pwrite(m->wfd, buf, len, (off_t)off) != (ssize_t)len)
		ret = ic_fail(-errno, "%s/%s: write: %s", r->dir, m->name, strerror(errno));
	free(buf);
	free(key);
	pthread_mutex_lock(&r->mu);
	r->requests++;
	r->fetched += ret ? 0 : len;
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* Over the bound: the least recently used chunks no read pins punched (mu held). */
static void evict(struct ic_s3_remote *r)
{
	while (r->max && r->present > r->max) {
		struct rimg *bm = NULL;
		size_t bk = 0;
		uint32_t best = UINT32_MAX;

		for (size_t i = 0; i < r->nimgs; i++)
			for (size_t k = 0; k < r->imgs[i].nch; k++) {
				const struct chunk *c = &r->imgs[i].ch[k];

				if (c->state == C_PRESENT && !c->pins && c->used < best) {
					best = c->used;
					bm = &r->imgs[i];
					bk = k;
				}
			}
		if (!bm)
			return;
		ic_image_punch_range(bm->wfd, (uint64_t)bk * r->chunk, r->chunk, 1, bm->name);
		bm->ch[bk].state = C_ABSENT;
		r->present -= r->chunk;
	}
}

/* A fetch of chunk k of m ended (mu held). */
static void fetched(struct ic_s3_remote *r, struct rimg *m, size_t k, int ret)
{
	m->ch[k].state = ret ? C_ABSENT : C_PRESENT;
	if (!ret) {
		r->present += r->chunk;
		evict(r);
	}
	pthread_cond_broadcast(&r->cv);
}

static void *worker(void *arg)
{
	struct ic_s3_remote *r = arg;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		struct job j;
		int ret;

		while (!r->qn && !r->stop)
			pthread_cond_wait(&r->cv, &r->mu);
		if (r->stop)
			break;
		j = r->q[r->qh];
		r->qh = (r->qh + 1) % QUEUE_MAX;
		r->qn--;
		pthread_mutex_unlock(&r->mu);
		ret = fetch(r, &r->imgs[j.img], j.chunk);
		ic_clear_error();
		pthread_mutex_lock(&r->mu);
		r->prefetched += !ret;
		fetched(r, &r->imgs[j.img], j.chunk, ret);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static int r_fill(void *arg, int fd, uint64_t off, uint64_t len)
{
	struct ic_s3_remote *r = arg;
	struct rimg *m = img_of(r, fd);
	int ret = 0;

	if (!m || !len)
		return 0;               /* not an image of the bucket's chain */
	if (off + len > m->size)
		return 0;               /* the read reports the short file */
	pthread_mutex_lock(&r->mu);
	ret = start(r);
	for (size_t k = off / r->chunk; !ret && k <= (off + len - 1) / r->chunk; k++) {
		struct chunk *c = &m->ch[k];

		while (c->state == C_FETCHING)
			pthread_cond_wait(&r->cv, &r->mu);
		if (c->state == C_ABSENT) {
			c->state = C_FETCHING;
			c->pins++;          /* not evicted before this read is done */
			pthread_mutex_unlock(&r->mu);
			ret = fetch(r, m, k);
			pthread_mutex_lock(&r->mu);
			fetched(r, m, k, ret);
		} else {
			c->pins++;
		}
		c->used = ++r->tick;
		if (ret)
			c->pins--;
	}
	if (ret) {                  /* unpin what this read had pinned */
		for (size_t k = off / r->chunk; k <= (off + len - 1) / r->chunk; k++) {
			if (m->ch[k].state == C_ABSENT || m->ch[k].state == C_FETCHING ||
			    !m->ch[k].pins)
				break;
			m->ch[k].pins--;
		}
		ret = ic_fail(-EIO, "%s/%s: fetching bytes %llu..%llu from the bucket failed: %s",
			      r->dir, m->name, (unsigned long long)off,
			      (unsigned long long)(off + len - 1), ic_last_error(ret));
	}
	pthread_mutex_unlock(&r->mu);
	return ret;
}

static void r_done(void *arg, int fd, uint64_t off, uint64_t len)
{
	struct ic_s3_remote *r = arg;
	struct rimg *m = img_of(r, fd);

	if (!m || !len || off + len > m->size)
		return;
	pthread_mutex_lock(&r->mu);
	for (size_t k = off / r->chunk; k <= (off + len - 1) / r->chunk; k++)
		if (m->ch[k].pins)
			m->ch[k].pins--;
	evict(r);
	pthread_mutex_unlock(&r->mu);
}

static void r_prefetch(void *arg, int fd, uint64_t off, uint64_t len)
{
	struct ic_s3_remote *r = arg;
	struct rimg *m = img_of(r, fd);

	if (!m || !len)
		return;
	if (off + len > m->size)
		len = off < m->size ? m->size - off : 0;
	pthread_mutex_lock(&r->mu);
	if (len && start(r) == 0 && r->pool.n)
		for (size_t k = off / r->chunk; k <= (off + len - 1) / r->chunk && r->qn < QUEUE_MAX; k++)
			if (m->ch[k].state == C_ABSENT) {
				m->ch[k].state = C_FETCHING;
				m->ch[k].used = ++r->tick;
				r->q[(r->qh + r->qn++) % QUEUE_MAX] = (struct job){ m - r->imgs, k };
				pthread_cond_broadcast(&r->cv);
			}
	pthread_mutex_unlock(&r->mu);
}

static uint64_t env_size(const char *var, uint64_t def)
{
	const char *v = getenv(var);
	uint64_t x;

	return v && *v && ic_parse_size(v, &x) == 0 ? x : def;
}

int ic_s3_remote_open(struct ic_s3_chain *sc, const char *url, struct ic_s3_remote **out)
{
	struct ic_s3_remote *r = calloc(1, sizeof(*r));
	int ret = 0;

	*out = NULL;
	if (!r || !(r->url = strdup(url)) || !(r->dir = strdup(sc->dir)) ||
	    !(r->prefix = strdup(sc->prefix)) || !(r->imgs = calloc(sc->nobjs + 1, sizeof(*r->imgs)))) {
		ic_s3_remote_close(r);
		return -ENOMEM;
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->chunk = env_size("IMGCHAIN_S3_CHUNK", 1u << 20);
	if (r->chunk < 4096 || r->chunk > (64u << 20))
		r->chunk = 1u << 20;
	r->max = env_size("IMGCHAIN_S3_CACHE_MAX", 16ull << 30);
	for (size_t i = 0; !ret && i < sc->nobjs; i++) {
		const struct ic_s3_obj *o = &sc->objs[i];
		struct rimg *m = &r->imgs[r->nimgs];
		struct stat st;
		int fd;

		if (strcmp(o->name, "imgchain.key") == 0)
			continue;
		if (ic_open_regular(AT_FDCWD, sc->dir, o->name, O_WRONLY, 0, &fd) != 0) {
			ic_clear_error();
			continue;           /* the mount reports the image missing */
		}
		if (fstat(fd, &st) < 0) {
			close(fd);
			continue;
		}
		m->wfd = fd;
		memcpy(m->name, o->name, sizeof(m->name));
		memcpy(m->etag, o->etag, sizeof(m->etag));
		m->ino = st.st_ino;
		m->size = o->size;
		m->nch = (size_t)((o->size + r->chunk - 1) / r->chunk);
		m->ch = calloc(m->nch ? m->nch : 1, sizeof(*m->ch));
		if (!m->ch)
			ret = -ENOMEM;
		/* fully cached already (a restore filled it): nothing to fetch */
		for (size_t k = 0; m->ch && o->have == IC_S3_NEED_FULL && k < m->nch; k++)
			m->ch[k].state = C_CACHED;
		r->nimgs++;
	}
	if (ret) {
		ic_s3_remote_close(r);
		return ret;
	}
	r->hook = (struct ic_image_remote){ .fill = r_fill, .done = r_done, .prefetch = r_prefetch,
					    .arg = r };
	ic_image_remote = &r->hook;
	*out = r;
	return 0;
}

void ic_s3_remote_stats(struct ic_s3_remote *r, uint64_t *requests, uint64_t *prefetched,
			uint64_t *bytes)
{
	pthread_mutex_lock(&r->mu);
	*requests = r->requests;
	*prefetched = r->prefetched;
	*bytes = r->fetched;
	pthread_mutex_unlock(&r->mu);
}

void ic_s3_remote_close(struct ic_s3_remote *r)
{
	if (!r)
		return;
	if (ic_image_remote == &r->hook)
		ic_image_remote = NULL;
	if (r->imgs) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		if (r->started && r->pid == getpid())
			ic_pool_join(&r->pool);
		if (r->s3 && r->pid == getpid())
			ic_s3_close(r->s3);
		for (size_t i = 0; i < r->nimgs; i++) {
			if (r->imgs[i].wfd >= 0)
				close(r->imgs[i].wfd);
			free(r->imgs[i].ch);
		}
		pthread_mutex_destroy(&r->mu);
		pthread_cond_destroy(&r->cv);
	}
	free(r->imgs);
	free(r->url);
	free(r->dir);
	free(r->prefix);
	free(r);
}
