/* ic_cache.h: a cache of decoded blocks shared by every reader of a mount, with
 * readahead decoding on a small worker pool.
 *
 * Entries are keyed by the record they decode: (image file device + inode, record
 * offset, record hash), so the same block position of two restore points is two
 * entries when two images hold it, and one entry when they share the record.  Zero
 * blocks never enter the cache.  Memory is bounded (LRU per shard); entries are
 * reference-counted and an entry in use is never evicted.  A record that fails its
 * checksum or authentication (IC_ECORRUPT) is cached as an error for that block only;
 * other failures (EIO from the disk, ENOMEM) are not cached.
 *
 * Knows nothing of FUSE.  Every function is thread-safe unless said otherwise.
 */
#ifndef IC_CACHE_H
#define IC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ic_keys.h"
#include "ic_view.h"

struct ic_cache;
struct ic_cache_src;
struct ic_centry;

#define IC_CACHE_DEFAULT_BYTES (256ull << 20)
#define IC_CACHE_DEFAULT_RA_BYTES (8u << 20)

struct ic_cache_opts {
	uint64_t max_bytes;         /* 0: IC_CACHE_DEFAULT_BYTES (at least 16 blocks kept) */
	int workers;                /* readahead threads; 0: one per online CPU, <0: none */
	uint32_t readahead_bytes;   /* largest readahead window; 0: IC_CACHE_DEFAULT_RA_BYTES */
	/* Called once per block that fails to decode (from the thread that decoded it),
	 * with the message naming the image, the point and the position. May be NULL. */
	void (*on_error)(void *arg, int err, const char *msg);
	void *arg;
};

/* Create a cache for blocks of block_size decoded with key (not copied: the key must
 * outlive the cache).  Starts the worker threads.  NULL with errno on failure. */
struct ic_cache *ic_cache_new(uint32_t block_size, const struct ic_key *key,
			      const struct ic_cache_opts *o);
/* Stop the workers and free every entry; no source may be left (NULL is fine). */
void ic_cache_free(struct ic_cache *c);

/* A source of blocks: one restore point's view.  The view (and its chain) must stay
 * alive until ic_cache_src_free() returns, which first cancels the source's queued
 * readahead and waits for the jobs already running.  NULL with errno on failure. */
struct ic_cache_src *ic_cache_src_new(struct ic_cache *c, const struct ic_view *v);
void ic_cache_src_free(struct ic_cache_src *s);
const struct ic_view *ic_cache_src_view(const struct ic_cache_src *s);

/* A reference to the decoded bytes of one block. */
struct ic_cache_ref {
	struct ic_centry *e;        /* NULL for a zero block */
	const uint8_t *data;        /* block_size bytes (zeros past the block's length) */
	uint32_t len;               /* plain length of the block */
};

/* Get block pos (< nblocks) of the source, decoding it if needed (another thread
 * decoding it is waited for).  On success the caller owns a reference and must
 * ic_cache_put() it; data stays valid and unchanged until then.  Returns 0 or a
 * negative errno: IC_ECORRUPT for a damaged block (logged through on_error once). */
int ic_cache_get(struct ic_cache_src *s, uint64_t pos, struct ic_cache_ref *ref);
void ic_cache_put(struct ic_cache_src *s, struct ic_cache_ref *ref);

/* Readahead state of one reader (e.g. an open file).  Zero-initialise it; it needs
 * no destruction.  Updated without locks: concurrent readers of one stream only
 * blur the heuristic. */
struct ic_cache_stream {
	uint64_t next_off;          /* where the last read ended */
	uint64_t ra_end;            /* block up to which readahead was queued */
	uint32_t window;            /* current readahead window, blocks */
	uint32_t hits;              /* sequential reads in a row */
};

/* Copy disk bytes [off, off+len) of the source into buf (the range must lie within
 * the disk).  The blocks of a read spanning several are decoded in parallel on the
 * workers; a sequential stream (st not NULL) also gets the following blocks decoded
 * ahead, in a window that doubles up to readahead_bytes.  Returns 0 or the error of
 * the first block that fails; never partial data presented as good. */
int ic_cache_read(struct ic_cache_src *s, struct ic_cache_stream *st, void *buf, size_t len,
		  uint64_t off);

/* Queue decoding of blocks [first, first+count) (best effort; dropped when the queue
 * is full, and for blocks already cached). */
void ic_cache_prefetch(struct ic_cache_src *s, uint64_t first, uint64_t count);

struct ic_cache_stats {
	uint64_t hits, misses, waits;       /* lookups found ready / decoded / waited for */
	uint64_t decoded, errors;           /* blocks decoded (by anyone), failures cached */
	uint64_t ra_queued, ra_done, ra_dropped;
	uint64_t evictions;
	uint64_t dropped;                   /* freed at once after a steady sequential read (drop-behind) */
	uint64_t direct;                    /* of those, decoded straight into the reader's buffer */
	uint64_t entries, bytes, max_bytes;
};

void ic_cache_get_stats(struct ic_cache *c, struct ic_cache_stats *st);

#endif
