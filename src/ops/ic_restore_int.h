/* ic_restore_int.h: what ic_restore.c (whole restores) and ic_sync.c (block-sync restores)
 * share: the opening of a point for a keyed restore, and the workers' chunk queue. */
#ifndef IC_RESTORE_INT_H
#define IC_RESTORE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ic_chain.h"
#include "ic_error.h"
#include "ic_keys.h"
#include "ic_verify.h"
#include "ic_view.h"

#define IC_RESTORE_CHUNK_BYTES (4u << 20)

/* A point opened for a keyed restore: the chain, the key (checked against the chain) and
 * the point's view, whose seal passed (no owner map). */
struct ic_restore_ctx {
	struct ic_chain *c;
	struct ic_key *key;
	struct ic_view *v;
};

/* Open o->chain_dir, unlock the key, open point o->name and check its seal and the
 * rollback state.  On failure x is closed already. */
int ic_restore_open(const struct ic_restore_opts *o, struct ic_restore_ctx *x);
/* Open another point of the same chain (its seal checked with x's key). */
int ic_restore_open_point(struct ic_restore_ctx *x, const char *name, struct ic_view **out);
void ic_restore_close(struct ic_restore_ctx *x);

/* The workers' queue: chunks of per_chunk blocks of a disk of nblocks, taken in order. */
struct ic_chunks {
	uint64_t per_chunk, nchunks, nblocks;
	pthread_mutex_t mu;         /* also guards the users' totals */
	uint64_t next, done_blocks;
	struct ic_error err;        /* the first worker's failure */
};

/* The next chunk into *k (true), or false when none is left, a worker failed or the
 * process was interrupted. */
bool ic_chunks_take(struct ic_chunks *q, uint64_t *k);
/* Blocks [first, end) of chunk k. */
void ic_chunks_range(const struct ic_chunks *q, uint64_t k, uint64_t *first, uint64_t *end);
/* Run fn(arg) on up to `threads` workers over the chunks of a disk of nblocks blocks of
 * block_size bytes (fn calls ic_chunks_take, then ic_chunks_done for each chunk), showing
 * progress as `what`; the first worker's failure. */
int ic_chunks_run(struct ic_chunks *q, uint64_t nblocks, uint32_t block_size, int threads,
		  bool quiet, const char *what, void *(*fn)(void *), void *arg);
/* Chunk done with ret (under q->mu: the caller adds its totals while holding it). */
void ic_chunks_done_locked(struct ic_chunks *q, int ret);

/* ic_sync.c: the block-sync restore of x's point onto o->dest (o->sync or o->sync_from). */
int ic_restore_sync(const struct ic_restore_opts *o, struct ic_restore_ctx *x,
		    struct ic_restore_stats *st);

#endif
