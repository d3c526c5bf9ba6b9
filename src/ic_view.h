/* ic_view.h: the disk of one restore point: which image holds each block, resolved
 * in O(1) + one binary search whatever the chain's depth, and block reads. */
#ifndef IC_VIEW_H
#define IC_VIEW_H

#include <stdint.h>

#include "ic_chain.h"
#include "ic_codec.h"

struct ic_view {
	struct ic_chain *chain;     /* not owned */
	struct ic_point *point;
	uint32_t depth;
	struct ic_image **path;     /* path[0] the root full ... path[depth-1] the point */
	uint16_t *owner;            /* per block: 1 + level in path, 0 = zero */
	uint64_t nblocks;
	uint64_t disk_size;
	uint32_t block_size;
};

/* A resolved block: e.kind == ICF_ENTRY_ZERO and img == NULL for a zero block. */
struct ic_block_ref {
	struct ic_image *img;
	struct icf_entry e;
};

/* Build the view of point p: checks every index on the path (checksums, order,
 * bounds) and fills the owner map.  IC_ECORRUPT for damage, -ENOENT for a broken
 * ancestry.  Memory: 2 bytes per block. */
int ic_view_open(struct ic_chain *c, struct ic_point *p, struct ic_view **out);
void ic_view_free(struct ic_view *v);

/* Resolve block pos (< nblocks).  Thread-safe. */
int ic_view_lookup(const struct ic_view *v, uint64_t pos, struct ic_block_ref *ref);

/* Walk the point's block map in position order calling fn for each non-zero block.
 * Stops at the first non-zero return of fn. */
int ic_view_walk(const struct ic_view *v,
		 int (*fn)(void *arg, const struct ic_block_ref *ref), void *arg);

/* Recompute the point's seal with the key and compare with the slot's: IC_ECORRUPT
 * "seal mismatch" when the block map is not the one the key holder wrote. */
int ic_view_check_seal(const struct ic_view *v, const struct ic_key *key);

/* Read and decode block pos into buf[block_size] (zero-filled for zero blocks and
 * past plain_len).  rec must hold ic_codec_bound(block_size) bytes.  Returns the
 * block's plain length or a negative errno (IC_ECORRUPT for damage). */
int ic_view_read_block(const struct ic_view *v, struct ic_codec *codec, const struct ic_key *key,
		       uint64_t pos, void *buf, void *rec);

/* Plain length of block pos in this view's geometry. */
uint32_t ic_view_block_len(const struct ic_view *v, uint64_t pos);

#endif
