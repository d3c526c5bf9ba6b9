/* ic_cache.c: the shared decoded-block cache (sharded LRU) and its readahead workers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "ic_cache.h"
#include "ic_codec.h"
#include "ic_util.h"

#define NSHARDS 16u                 /* power of two */
#define QUEUE_CAP 2048u             /* queued readahead jobs */
#define ERR_COST 256u               /* bytes an error entry is charged */
#define RA_SLACK (2ull << 20)       /* reordering of concurrent reads still counts as sequential */
#define RA_START_BYTES (256u << 10)
#define SLAB_BYTES (4u << 20)       /* block buffers come from pre-faulted slabs of this size */

/* E_GONE: a ghost.  A steady sequential reader consumed the block, nobody else used
 * it: its buffer went back at once (drop-behind: a stream of a whole disk neither
 * pushes the other readers' blocks out nor grows the cache), the entry stays so that
 * readahead queued for it before is skipped.  A reader that wants it decodes again. */
enum { E_LOADING, E_READY, E_GONE };
#define GHOST_COST ((uint32_t)sizeof(struct ic_centry))

struct ic_centry {
	struct ic_centry *hnext;
	struct ic_centry *lprev, *lnext;    /* LRU links, only while refs == 0 */
	uint64_t dev, ino, off, rec_hash;   /* the key */
	uint32_t refs;
	uint32_t len;
	uint32_t cost;
	uint8_t state;
	uint8_t uses;               /* lookups that returned it (saturating) */
	bool drop;                  /* a stream consumed it while a worker held it */
	bool hashed;                /* reachable from the table (else freed at last put) */
	int err;
	uint8_t *data;
};

struct shard {
	pthread_mutex_t mu;
	pthread_cond_t cv;          /* a LOADING entry of this shard became READY */
	struct ic_centry **bucket;
	size_t nbuckets;            /* power of two */
	struct ic_centry lru;       /* sentinel: lnext most recent, lprev least recent */
	void *free_bufs;            /* recycled block buffers (a list through their first bytes) */
	uint64_t bytes, entries;
	uint64_t hits, misses, waits, decoded, errors, evictions, dropped;
} __attribute__((aligned(64)));

struct job {
	struct ic_cache_src *src;   /* NULL: cancelled */
	uint64_t pos;
};

/* What each thread needs to decode: its own codec and record buffer. */
struct tctx {
	struct tctx *next, *prev;
	struct ic_codec *codec;
	uint8_t *rec;
};

struct ic_cache {
	uint32_t bs;
	const struct ic_key *key;
	struct ic_cache_opts o;
	uint64_t shard_budget;
	uint8_t *zeros;
	struct shard shards[NSHARDS];

	/* Block buffers: faulting fresh pages in is slow (tens of microseconds a page on
	 * some virtual machines), so buffers come from MAP_POPULATE slabs, are recycled
	 * through the shards' free lists and only go back to the system with the cache. */
	pthread_mutex_t slab_mu;
	void **slabs;
	size_t nslabs, slab_len;
	uint8_t *slab_next, *slab_end;

	pthread_key_t tls;
	bool tls_ok;
	pthread_mutex_t tls_mu;
	struct tctx tls_list;

	pthread_mutex_t qmu;
	pthread_cond_t qcv;         /* jobs queued or stop */
	pthread_cond_t qdone;       /* a job of a dying source ended */
	struct job *q;
	size_t qhead, qlen;
	bool stop;
	pthread_t *thr;
	int nthr;
	uint64_t ra_queued, ra_done, ra_dropped;
};

struct ic_cache_src {
	struct ic_cache *c;
	const struct ic_view *v;
	uint64_t *dev, *ino;        /* per level of the view's path */
	uint32_t jobs;              /* queued or running, under c->qmu */
	bool dying;
};

/* ---- per-thread decode state -------------------------------------------------- */

/* The thread-exit destructor gets the box, which knows its cache. */
struct tctx_box {
	struct ic_cache *c;
	struct tctx t;
};

static void tctx_release(struct tctx_box *b)
{
	struct ic_cache *c = b->c;

	pthread_mutex_lock(&c->tls_mu);
	b->t.prev->next = b->t.next;
	b->t.next->prev = b->t.prev;
	pthread_mutex_unlock(&c->tls_mu);
	ic_codec_free(b->t.codec);
	free(b->t.rec);
	free(b);
}

static void tls_exit(void *p)
{
	tctx_release(p);
}

static struct tctx *tctx_get(struct ic_cache *c)
{
	struct tctx_box *b = pthread_getspecific(c->tls);

	if (b)
		return &b->t;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->c = c;
	b->t.codec = ic_codec_new(c->bs, 0);
	b->t.rec = malloc(ic_codec_bound(c->bs));
	if (!b->t.codec || !b->t.rec) {
		ic_codec_free(b->t.codec);
		free(b->t.rec);
		free(b);
		return NULL;
	}
	pthread_mutex_lock(&c->tls_mu);
	b->t.next = c->tls_list.next;
	b->t.prev = &c->tls_list;
	c->tls_list.next->prev = &b->t;
	c->tls_list.next = &b->t;
	pthread_mutex_unlock(&c->tls_mu);
	pthread_setspecific(c->tls, b);
	return &b->t;
}

/* ---- block buffers ------------------------------------------------------------ */

static void *slab_take(struct ic_cache *c)
{
	void *b = NULL;

	pthread_mutex_lock(&c->slab_mu);
	if (c->slab_next == c->slab_end) {
		void **ns = realloc(c->slabs, (c->nslabs + 1) * sizeof(*ns));
		void *m = ns ? mmap(NULL, c->slab_len, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0) : MAP_FAILED;

		if (ns)
			c->slabs = ns;
		if (m == MAP_FAILED)
			goto out;
#ifdef MADV_DONTDUMP
		/* decoded blocks stay out of core dumps even if the process is dumpable */
		(void)madvise(m, c->slab_len, MADV_DONTDUMP);
#endif
		c->slabs[c->nslabs++] = m;
		c->slab_next = m;
		c->slab_end = (uint8_t *)m + c->slab_len;
	}
	b = c->slab_next;
	c->slab_next += c->bs;
out:
	pthread_mutex_unlock(&c->slab_mu);
	return b;
}

/* Under sh->mu. */
static void *buf_get(struct ic_cache *c, struct shard *sh)
{
	void *b = sh->free_bufs;

	if (b) {
		sh->free_bufs = *(void **)b;
		return b;
	}
	return slab_take(c);
}

static void buf_put(struct shard *sh, void *b)
{
	if (!b)
		return;
	*(void **)b = sh->free_bufs;
	sh->free_bufs = b;
}

/* ---- table and LRU -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static uint64_t key_hash(uint64_t dev, uint64_t ino, uint64_t off)
{
	return mix64(off ^ mix64(ino ^ mix64(dev)));
}

static void lru_unlink(struct ic_centry *e)
{
	e->lprev->lnext = e->lnext;
	e->lnext->lprev = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push(struct shard *sh, struct ic_centry *e)
{
	e->lnext = sh->lru.lnext;
	e->lprev = &sh->lru;
	sh->lru.lnext->lprev = e;
	sh->lru.lnext = e;
}

static void table_remove(struct shard *sh, struct ic_centry *e, uint64_t h)
{
	struct ic_centry **pp = &sh->bucket[(h / NSHARDS) & (sh->nbuckets - 1)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	e->hashed = false;
	sh->bytes -= e->cost;
	sh->entries--;
}

static void entry_free(struct shard *sh, struct ic_centry *e)
{
	buf_put(sh, e->data);
	free(e);
}

/* Drop least recently used idle entries until the shard fits its budget. */
static void shard_trim(struct ic_cache *c, struct shard *sh)
{
	while (sh->bytes > c->shard_budget && sh->lru.lprev != &sh->lru) {
		struct ic_centry *e = sh->lru.lprev;

		lru_unlink(e);
		table_remove(sh, e, key_hash(e->dev, e->ino, e->off));
		sh->evictions++;
		entry_free(sh, e);
	}
}

static struct ic_centry *table_find(struct shard *sh, uint64_t h, uint64_t dev, uint64_t ino,
				    uint64_t off, uint64_t rec_hash)
{
	struct ic_centry *e = sh->bucket[(h / NSHARDS) & (sh->nbuckets - 1)];

	for (; e; e = e->hnext)
		if (e->off == off && e->ino == ino && e->dev == dev && e->rec_hash == rec_hash)
			return e;
	return NULL;
}

static struct ic_centry *table_insert(struct ic_cache *c, struct shard *sh, uint64_t h,
				      uint64_t dev, uint64_t ino, const struct icf_entry *ie)
{
	struct ic_centry *e = calloc(1, sizeof(*e));
	size_t b = (h / NSHARDS) & (sh->nbuckets - 1);

	if (!e)
		return NULL;
	shard_trim(c, sh);      /* first, so that an evicted buffer is reused at once */
	e->data = buf_get(c, sh);
	if (!e->data) {
		free(e);
		return NULL;
	}
	e->dev = dev;
	e->ino = ino;
	e->off = ie->offset;
	e->rec_hash = ie->rec_hash;
	e->refs = 1;
	e->state = E_LOADING;
	e->hashed = true;
	e->cost = c->bs + (uint32_t)sizeof(*e);
	e->hnext = sh->bucket[b];
	sh->bucket[b] = e;
	sh->bytes += e->cost;
	sh->entries++;
	return e;
}

/* drop: a sequential stream consumed the block and nobody else used it: free it now
 * (drop-behind) rather than let the stream push the cache's other blocks out. */
static void entry_put(struct ic_cache *c, struct shard *sh, struct ic_centry *e, bool drop)
{
	pthread_mutex_lock(&sh->mu);
	e->drop |= drop;
	if (--e->refs == 0) {
		drop = e->drop;
		e->drop = false;        /* asked for by the references just ended only */
		if (drop && e->hashed && e->uses <= 1 && !e->err && e->state == E_READY) {
			buf_put(sh, e->data);
			e->data = NULL;
			e->state = E_GONE;
			sh->bytes -= e->cost - GHOST_COST;
			e->cost = GHOST_COST;
			sh->dropped++;
			lru_push(sh, e);
		} else if (!e->hashed) {
			entry_free(sh, e);
		} else {
			lru_push(sh, e);
			shard_trim(c, sh);
		}
	}
	pthread_mutex_unlock(&sh->mu);
}

/* ---- decoding ------------------------------------------------------------------------ */

static void report(struct ic_cache *c, int err)
{
	if (c->o.on_error)
		c->o.on_error(c->o.arg, err, ic_last_error(err));
}

/* Decode into the LOADING entry e (owned by this thread), then publish it. */
static void entry_load(struct ic_cache_src *s, struct shard *sh, struct ic_centry *e,
		       uint64_t pos)
{
	struct ic_cache *c = s->c;
	struct tctx *t = tctx_get(c);
	int ret;

	if (!t)
		ret = ic_fail(-ENOMEM, "no memory for a block decoder");
	else
		ret = ic_view_read_block(s->v, t->codec, c->key, pos, e->data, t->rec);
	if (ret < 0)
		report(c, ret);
	pthread_mutex_lock(&sh->mu);
	sh->decoded++;
	if (ret < 0) {
		e->err = ret;
		buf_put(sh, e->data);
		e->data = NULL;
		if (e->hashed) {
			uint32_t cost = e->cost;

			/* only authentication failures are facts about the block worth keeping */
			if (ret == IC_ECORRUPT) {
				e->cost = ERR_COST;
				sh->bytes -= cost - ERR_COST;
				sh->errors++;
			} else {
				table_remove(sh, e, key_hash(e->dev, e->ino, e->off));
			}
		}
	} else {
		e->len = (uint32_t)ret;
	}
	e->state = E_READY;
	pthread_cond_broadcast(&sh->cv);
	pthread_mutex_unlock(&sh->mu);
}

/* Find or create the entry of a data block; *created tells the caller to load it.
 * With wait, a LOADING entry of another thread is waited for; without, NULL is
 * returned for it (readahead: someone already works on it). */
static struct ic_centry *entry_get(struct ic_cache_src *s, uint16_t level,
				   const struct icf_entry *ie, bool wait, bool *created,
				   struct shard **shp)
{
	struct ic_cache *c = s->c;
	uint64_t dev = s->dev[level], ino = s->ino[level];
	uint64_t h = key_hash(dev, ino, ie->offset);
	struct shard *sh = &c->shards[h & (NSHARDS - 1)];
	struct ic_centry *e;

	*shp = sh;
	*created = false;
	pthread_mutex_lock(&sh->mu);
	e = table_find(sh, h, dev, ino, ie->offset, ie->rec_hash);
	if (!e) {
		e = table_insert(c, sh, h, dev, ino, ie);
		*created = e != NULL;
		sh->misses += wait && e;
	} else if (e->state == E_GONE) {
		void *b;

		if (!wait) {
			e = NULL;
		} else {
			lru_unlink(e);          /* idle: ghosts have no references */
			sh->bytes += c->bs;
			e->cost += c->bs;
			shard_trim(c, sh);
			b = buf_get(c, sh);
			if (!b) {
				sh->bytes -= c->bs;
				e->cost -= c->bs;
				lru_push(sh, e);
				e = NULL;
			} else {
				e->data = b;
				e->refs = 1;
				e->uses = 0;
				e->state = E_LOADING;
				*created = true;
				sh->misses++;
			}
		}
	} else if (e->state == E_READY) {
		if (!wait) {
			e = NULL;
		} else {
			if (e->refs++ == 0)
				lru_unlink(e);
			sh->hits++;
		}
	} else if (!wait) {
		e = NULL;
	} else {
		e->refs++;
		sh->waits++;
		while (e->state == E_LOADING)
			pthread_cond_wait(&sh->cv, &sh->mu);
	}
	if (e && wait && e->uses < UINT8_MAX)
		e->uses++;
	pthread_mutex_unlock(&sh->mu);
	return e;
}

/* ---- public: blocks ------------------------------------------------------------------ */

int ic_cache_get(struct ic_cache_src *s, uint64_t pos, struct ic_cache_ref *ref)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct ic_centry *e;
	struct shard *sh;
	bool created;
	uint16_t o;
	int ret;

	memset(ref, 0, sizeof(*ref));
	if (pos >= v->nblocks)
		return ic_fail(-EINVAL, "block %llu past the end of the disk",
			       (unsigned long long)pos);
	o = v->owner[pos];
	if (o) {
		ret = ic_view_lookup(v, pos, &br);
		if (ret) {
			report(s->c, ret);
			return ret;
		}
	}
	if (!o || !br.img) {
		ref->data = s->c->zeros;
		ref->len = ic_view_block_len(v, pos);
		return 0;
	}
	e = entry_get(s, (uint16_t)(o - 1), &br.e, true, &created, &sh);
	if (!e)
		return ic_fail(-ENOMEM, "no memory for the block cache");
	if (created)
		entry_load(s, sh, e, pos);
	if (e->err) {
		ret = e->err;
		entry_put(s->c, sh, e, false);
		return ret;
	}
	ref->e = e;
	ref->data = e->data;
	ref->len = e->len;
	return 0;
}

static void ref_put(struct ic_cache_src *s, struct ic_cache_ref *ref, bool drop)
{
	struct ic_centry *e = ref->e;

	if (e)
		entry_put(s->c, &s->c->shards[key_hash(e->dev, e->ino, e->off) & (NSHARDS - 1)], e,
			  drop);
	ref->e = NULL;
	ref->data = NULL;
}

void ic_cache_put(struct ic_cache_src *s, struct ic_cache_ref *ref)
{
	ref_put(s, ref, false);
}

/* A worker's job: decode block pos unless it is a zero block or cached already. */
static void job_run(struct ic_cache_src *s, uint64_t pos)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct ic_centry *e;
	struct shard *sh;
	bool created;
	uint16_t o;

	if (pos >= v->nblocks || !(o = v->owner[pos]))
		return;
	if (ic_view_lookup(v, pos, &br) || !br.img)
		return;    /* a damaged entry is reported to the reader that needs it */
	e = entry_get(s, (uint16_t)(o - 1), &br.e, false, &created, &sh);
	if (!e)
		return;
	if (created)
		entry_load(s, sh, e, pos);
	entry_put(s->c, sh, e, false);
}

static void *worker_main(void *arg)
{
	struct ic_cache *c = arg;

	pthread_mutex_lock(&c->qmu);
	for (;;) {
		struct job j;

		while (!c->stop && !c->qlen)
			pthread_cond_wait(&c->qcv, &c->qmu);
		if (c->stop)
			break;
		j = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % QUEUE_CAP;
		c->qlen--;
		if (!j.src)
			continue;
		pthread_mutex_unlock(&c->qmu);
		job_run(j.src, j.pos);
		pthread_mutex_lock(&c->qmu);
		c->ra_done++;
		if (--j.src->jobs == 0 && j.src->dying)
			pthread_cond_broadcast(&c->qdone);
	}
	pthread_mutex_unlock(&c->qmu);
	return NULL;
}

/* Is block pos worth queueing: a data block not yet in the table?  *br: its record. */
static bool wants_decode(struct ic_cache_src *s, uint64_t pos, struct ic_block_ref *brp)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct shard *sh;
	uint16_t o = v->owner[pos];
	uint64_t h, dev, ino;
	bool found;

	if (!o || ic_view_lookup(v, pos, &br) || !br.img)
		return false;
	dev = s->dev[o - 1];
	ino = s->ino[o - 1];
	h = key_hash(dev, ino, br.e.offset);
	sh = &s->c->shards[h & (NSHARDS - 1)];
	pthread_mutex_lock(&sh->mu);
	found = table_find(sh, h, dev, ino, br.e.offset, br.e.rec_hash) != NULL;
	pthread_mutex_unlock(&sh->mu);
	*brp = br;
	return !found;
}

/* Records about to be decoded are asked of the kernel at once (POSIX_FADV_WILLNEED),
 * ranges of one image a little apart joined: the kernel's own readahead follows one
 * file, while a deep chain's newest blocks are single records spread over many. */
#define WILLNEED_GAP (128u << 10)
struct willneed {
	int fd;
	uint64_t start, end;
};

static void willneed_flush(struct willneed *w)
{
	if (w->fd >= 0 && w->end > w->start)
		(void)posix_fadvise(w->fd, (off_t)w->start, (off_t)(w->end - w->start),
				    POSIX_FADV_WILLNEED);
	w->fd = -1;
}

static void willneed_add(struct willneed *w, const struct ic_block_ref *br)
{
	uint64_t s = br->e.offset, e = br->e.offset + br->e.stored_len;

	if (w->fd == br->img->fd && s >= w->start && s <= w->end + WILLNEED_GAP) {
		if (e > w->end)
			w->end = e;
		return;
	}
	willneed_flush(w);
	w->fd = br->img->fd;
	w->start = s;
	w->end = e;
}

void ic_cache_prefetch(struct ic_cache_src *s, uint64_t first, uint64_t count)
{
	struct ic_cache *c = s->c;
	struct willneed w = { .fd = -1 };
	uint64_t end = first + count;

	if (!c->nthr)
		return;
	if (end > s->v->nblocks || end < first)
		end = s->v->nblocks;
	for (uint64_t pos = first; pos < end; pos++) {
		struct ic_block_ref br;

		if (!wants_decode(s, pos, &br))
			continue;
		willneed_add(&w, &br);
		pthread_mutex_lock(&c->qmu);
		if (c->qlen == QUEUE_CAP || s->dying) {
			c->ra_dropped++;
			pthread_mutex_unlock(&c->qmu);
			break;
		}
		c->q[(c->qhead + c->qlen) % QUEUE_CAP] = (struct job){ .src = s, .pos = pos };
		c->qlen++;
		s->jobs++;
		c->ra_queued++;
		pthread_cond_signal(&c->qcv);
		pthread_mutex_unlock(&c->qmu);
	}
	willneed_flush(&w);
}

/* Sequential detection: a read starting near where the previous one ended.  True when
 * the stream is steady (its readahead window grew to the largest). */
static bool stream_advance(struct ic_cache_src *s, struct ic_cache_stream *st, uint64_t off,
			   uint64_t len, uint64_t last)
{
	struct ic_cache *c = s->c;
	uint64_t prev = __atomic_load_n(&st->next_off, __ATOMIC_RELAXED);
	uint32_t max_win = c->o.readahead_bytes / c->bs;
	uint32_t win = __atomic_load_n(&st->window, __ATOMIC_RELAXED);
	uint64_t ra_end = __atomic_load_n(&st->ra_end, __ATOMIC_RELAXED);
	bool seq = prev && off + RA_SLACK >= prev && off <= prev + RA_SLACK;
	uint64_t from, to;

	if (off + len > prev || !seq)
		__atomic_store_n(&st->next_off, off + len, __ATOMIC_RELAXED);
	if (!seq) {
		__atomic_store_n(&st->window, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&st->hits, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&st->ra_end, 0, __ATOMIC_RELAXED);
		return false;
	}
	if (max_win < 1)
		max_win = 1;
	if (!win)
		win = RA_START_BYTES / c->bs ? RA_START_BYTES / c->bs : 1;
	else if (win < max_win)
		win *= 2;
	if (win > max_win)
		win = max_win;
	__atomic_store_n(&st->window, win, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->hits, 1, __ATOMIC_RELAXED);
	from = ra_end > last + 1 ? ra_end : last + 1;
	to = last + 1 + win;
	if (to > s->v->nblocks)
		to = s->v->nblocks;
	/* top the window up only when half of it was consumed, so jobs go out in batches */
	if (from >= to || (ra_end > last + 1 && ra_end - (last + 1) > win / 2))
		return win == max_win;
	__atomic_store_n(&st->ra_end, to, __ATOMIC_RELAXED);
	ic_cache_prefetch(s, from, to - from);
	return win == max_win;
}

int ic_cache_read(struct ic_cache_src *s, struct ic_cache_stream *st, void *buf, size_t len,
		  uint64_t off)
{
	const uint32_t bs = s->c->bs;
	uint8_t *p = buf;
	uint64_t first, last;
	bool steady = false;

	if (!len)
		return 0;
	if (off > s->v->disk_size || len > s->v->disk_size - off)
		return ic_fail(-EINVAL, "read past the end of the disk");
	first = off / bs;
	last = (off + len - 1) / bs;
	if (st)
		steady = stream_advance(s, st, off, len, last);
	if (last > first)
		ic_cache_prefetch(s, first + 1, last - first);
	for (uint64_t pos = first; pos <= last; pos++) {
		struct ic_cache_ref ref;
		uint64_t boff = pos == first ? off % bs : 0;
		size_t n = bs - boff < len ? (size_t)(bs - boff) : len;
		int ret = ic_cache_get(s, pos, &ref);

		if (ret)
			return ret;
		memcpy(p, ref.data + boff, n);
		/* a steady stream read the block to its end: drop-behind (blocks used by
		 * other readers stay) */
		ref_put(s, &ref, steady && boff + n == bs);
		p += n;
		len -= n;
	}
	return 0;
}

/* ---- sources -------------------------------------------------------------------------- */

struct ic_cache_src *ic_cache_src_new(struct ic_cache *c, const struct ic_view *v)
{
	struct ic_cache_src *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->c = c;
	s->v = v;
	s->dev = calloc(v->depth ? v->depth : 1, sizeof(*s->dev));
	s->ino = calloc(v->depth ? v->depth : 1, sizeof(*s->ino));
	if (!s->dev || !s->ino || v->block_size != c->bs) {
		free(s->dev);
		free(s->ino);
		free(s);
		errno = v->block_size != c->bs ? EINVAL : ENOMEM;
		return NULL;
	}
	for (uint32_t i = 0; i < v->depth; i++) {
		struct stat sb;

		if (fstat(v->path[i]->fd, &sb) < 0) {
			int e = errno;

			free(s->dev);
			free(s->ino);
			free(s);
			errno = e;
			return NULL;
		}
		s->dev[i] = sb.st_dev;
		s->ino[i] = sb.st_ino;
	}
	return s;
}

void ic_cache_src_free(struct ic_cache_src *s)
{
	struct ic_cache *c;

	if (!s)
		return;
	c = s->c;
	pthread_mutex_lock(&c->qmu);
	s->dying = true;
	for (size_t i = 0; i < c->qlen; i++) {
		struct job *j = &c->q[(c->qhead + i) % QUEUE_CAP];

		if (j->src == s) {
			j->src = NULL;
			s->jobs--;
		}
	}
	while (s->jobs)
		pthread_cond_wait(&c->qdone, &c->qmu);
	pthread_mutex_unlock(&c->qmu);
	free(s->dev);
	free(s->ino);
	free(s);
}

const struct ic_view *ic_cache_src_view(const struct ic_cache_src *s)
{
	return s->v;
}

/* ---- the cache ------------------------------------------------------------------------ */

static int shards_init(struct ic_cache *c)
{
	uint64_t per = c->shard_budget / c->bs + 1;
	size_t nb = 16;

	while (nb < per * 2 && nb < (1u << 22))
		nb <<= 1;
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		pthread_mutex_init(&sh->mu, NULL);
		pthread_cond_init(&sh->cv, NULL);
		sh->lru.lnext = sh->lru.lprev = &sh->lru;
		sh->nbuckets = nb;
		sh->bucket = calloc(nb, sizeof(*sh->bucket));
		if (!sh->bucket)
			return -ENOMEM;
	}
	return 0;
}

static int workers_start(struct ic_cache *c)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int n = c->o.workers ? c->o.workers : (int)(ncpu > 0 ? ncpu : 2);

	if (n < 0)
		n = 0;
	c->q = calloc(QUEUE_CAP, sizeof(*c->q));
	c->thr = calloc(n ? (size_t)n : 1, sizeof(*c->thr));
	if (!c->q || !c->thr)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		int r = pthread_create(&c->thr[i], NULL, worker_main, c);

		if (r)
			return -r;
		c->nthr++;
	}
	return 0;
}

struct ic_cache *ic_cache_new(uint32_t block_size, const struct ic_key *key,
			      const struct ic_cache_opts *o)
{
	struct ic_cache *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return NULL;
	c->bs = block_size;
	c->key = key;
	if (o)
		c->o = *o;
	if (!c->o.max_bytes)
		c->o.max_bytes = IC_CACHE_DEFAULT_BYTES;
	if (c->o.max_bytes < 16ull * block_size)
		c->o.max_bytes = 16ull * block_size;
	if (!c->o.readahead_bytes)
		c->o.readahead_bytes = IC_CACHE_DEFAULT_RA_BYTES;
	c->shard_budget = c->o.max_bytes / NSHARDS;
	pthread_mutex_init(&c->tls_mu, NULL);
	pthread_mutex_init(&c->slab_mu, NULL);
	c->slab_len = block_size > SLAB_BYTES ? block_size : SLAB_BYTES;
	pthread_mutex_init(&c->qmu, NULL);
	pthread_cond_init(&c->qcv, NULL);
	pthread_cond_init(&c->qdone, NULL);
	c->tls_list.next = c->tls_list.prev = &c->tls_list;
	c->zeros = calloc(1, block_size);
	ret = c->zeros ? shards_init(c) : -ENOMEM;
	if (!ret)
		ret = -pthread_key_create(&c->tls, tls_exit);
	c->tls_ok = !ret;
	if (!ret)
		ret = workers_start(c);
	if (ret) {
		ic_cache_free(c);
		errno = -ret;
		return NULL;
	}
	return c;
}

void ic_cache_free(struct ic_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->qmu);
	c->stop = true;
	pthread_cond_broadcast(&c->qcv);
	pthread_mutex_unlock(&c->qmu);
	for (int i = 0; i < c->nthr; i++)
		pthread_join(c->thr[i], NULL);
	if (c->tls_ok) {
		/* threads still alive (e.g. the caller) keep a decoder: free them here */
		while (c->tls_list.next != &c->tls_list) {
			struct tctx *t = c->tls_list.next;

			tctx_release((struct tctx_box *)((char *)t - offsetof(struct tctx_box, t)));
		}
		pthread_setspecific(c->tls, NULL);
		pthread_key_delete(c->tls);
	}
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		for (size_t b = 0; sh->bucket && b < sh->nbuckets; b++) {
			struct ic_centry *e = sh->bucket[b], *n;

			for (; e; e = n) {
				n = e->hnext;
				free(e);    /* buffers go with the slabs */
			}
		}
		free(sh->bucket);
		pthread_mutex_destroy(&sh->mu);
		pthread_cond_destroy(&sh->cv);
	}
	for (size_t i = 0; i < c->nslabs; i++)
		munmap(c->slabs[i], c->slab_len);
	free(c->slabs);
	pthread_mutex_destroy(&c->slab_mu);
	free(c->q);
	free(c->thr);
	free(c->zeros);
	free(c);
}

void ic_cache_get_stats(struct ic_cache *c, struct ic_cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		pthread_mutex_lock(&sh->mu);
		st->hits += sh->hits;
		st->misses += sh->misses;
		st->waits += sh->waits;
		st->decoded += sh->decoded;
		st->errors += sh->errors;
		st->evictions += sh->evictions;
		st->dropped += sh->dropped;
		st->entries += sh->entries;
		st->bytes += sh->bytes;
		pthread_mutex_unlock(&sh->mu);
	}
	pthread_mutex_lock(&c->qmu);
	st->ra_queued = c->ra_queued;
	st->ra_done = c->ra_done;
	st->ra_dropped = c->ra_dropped;
	pthread_mutex_unlock(&c->qmu);
	st->max_bytes = c->o.max_bytes;
}
