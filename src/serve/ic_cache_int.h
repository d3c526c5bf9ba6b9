/* ic_cache_int.h: what the parts of the block cache share (not installed).
 *
 *   ic_cache.c        the cache's life, sources, ic_cache_get/put, statistics
 *   ic_cache_table.c  the sharded table and LRU, slab buffers, per-thread decoders,
 *                     loading an entry, drop-behind (cache_entry_put)
 *   ic_cache_ra.c     readahead: the worker threads and their queue, POSIX_FADV_WILLNEED,
 *                     sequential streams (ic_cache_read) */
#ifndef IC_CACHE_INT_H
#define IC_CACHE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ic_cache.h"
#include "ic_codec.h"
#include "ic_pool.h"


#define NSHARDS 16u                 /* power of two */
#define QUEUE_CAP 2048u             /* queued readahead jobs */
#define ERR_COST 256u               /* bytes an error entry is charged */
#define RA_SLACK (2ull << 20)       /* reordering of concurrent reads still counts as sequential */
#define RA_START_BYTES (256u << 10)
#define SLAB_BYTES (4u << 20)       /* block buffers come from pre-faulted slabs of this size */
#define SHARD_CVS 8u                /* condition variables per shard (power of two) */
#define PREFETCH_BATCH 64u          /* readahead jobs queued under one lock */

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
	uint16_t waiters;           /* threads waiting for it to load */
	bool drop;                  /* a stream consumed it while a worker held it */
	bool hashed;                /* reachable from the table (else freed at last put) */
	int err;
	uint8_t *data;
};

struct shard {
	pthread_mutex_t mu;
	/* A LOADING entry of this shard became READY: its waiters sleep on the variable its
	 * address picks, and are woken only when it has some, so that a load does not wake
	 * every thread waiting for some other block of the shard. */
	pthread_cond_t cv[SHARD_CVS];
	struct ic_centry **bucket;
	size_t nbuckets;            /* power of two */
	struct ic_centry lru;       /* sentinel: lnext most recent, lprev least recent */
	void *free_bufs;            /* recycled block buffers (a list through their first bytes) */
	uint64_t bytes, entries;
	uint64_t hits, misses, waits, decoded, errors, evictions, dropped, direct;
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

/* The thread-exit destructor gets the box, which knows its cache. */
struct tctx_box {
	struct ic_cache *c;
	struct tctx t;
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
	struct ic_pool pool;        /* the readahead workers */
	uint64_t ra_queued, ra_done, ra_dropped;
};

struct ic_cache_src {
	struct ic_cache *c;
	const struct ic_view *v;
	uint64_t *dev, *ino;        /* per level of the view's path */
	uint32_t jobs;              /* queued or running, under c->qmu */
	bool dying;
};

/* The table's key: an image file (device, inode) and a record's offset in it. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

static inline uint64_t cache_key_hash(uint64_t dev, uint64_t ino, uint64_t off)
{
	return mix64(off ^ mix64(ino ^ mix64(dev)));
}

static inline pthread_cond_t *entry_cv(struct shard *sh, const struct ic_centry *e)
{
	return &sh->cv[mix64((uintptr_t)e) & (SHARD_CVS - 1)];
}

/* ---- ic_cache_table.c ---------------------------------------------------------------- */

/* Under sh->mu: the entry of that record, or NULL. */
struct ic_centry *cache_table_find(struct shard *sh, uint64_t h, uint64_t dev, uint64_t ino,
				   uint64_t off, uint64_t rec_hash);
/* Find or create the entry of a data block; *created tells the caller to load it.
 * With wait, a LOADING entry of another thread is waited for; without, NULL is
 * returned for it (readahead: someone already works on it). */
struct ic_centry *cache_entry_get(struct ic_cache_src *s, uint16_t level,
				  const struct icf_entry *ie, bool wait, bool *created,
				  struct shard **shp);
/* Decode into the LOADING entry e (owned by this thread), then publish it. */
void cache_entry_load(struct ic_cache_src *s, struct shard *sh, struct ic_centry *e,
		      uint64_t pos);
/* Decode block pos (record *br of path level) straight into out (block_size bytes), past
 * the table, for a steady stream that wants the whole block and would drop it behind
 * anyway: saves the buffer, the copy and the table's work.  Only when no thread has the
 * block loading or loaded: then a ghost entry (no buffer) marks it, so that readahead
 * queued for it is skipped.  0: done; 1: not done (the block is in the table, or its
 * decode failed: the caller takes the table's path, which reports and caches a damaged
 * block once). */
int cache_decode_direct(struct ic_cache_src *s, uint16_t level, const struct ic_block_ref *br,
			void *out);
/* End a reference; drop: drop-behind (a stream consumed the block). */
void cache_entry_put(struct ic_cache *c, struct shard *sh, struct ic_centry *e, bool drop);
/* Tell the cache's owner about a failure (its on_error callback). */
void cache_report(struct ic_cache *c, int err);
/* Per-thread decoders: the key's destructor, and the release of one at ic_cache_free. */
void cache_tls_exit(void *p);
void cache_tctx_release(struct tctx_box *b);

/* ---- ic_cache_ra.c ------------------------------------------------------------------- */

/* The readahead queue and its workers (o.workers of them; none when < 0). */
int cache_workers_start(struct ic_cache *c);

/* ---- ic_cache.c ---------------------------------------------------------------------- */

void cache_ref_put(struct ic_cache_src *s, struct ic_cache_ref *ref, bool drop);

#endif
