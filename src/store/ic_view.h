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
	uint64_t *lim;              /* per level: entries at >= lim are hidden (FORMAT.md 3.4) */
	uint16_t *owner;            /* per block: 1 + level in path, 0 = zero; NULL until
				     * ic_view_build_map */
	uint64_t nblocks;
	uint64_t disk_size;
	uint32_t block_size;
};

/* A resolved block: e.kind == ICF_ENTRY_ZERO and img == NULL for a zero block. */
struct ic_block_ref {
	struct ic_image *img;
	struct icf_entry e;
};

/* The view of point p without any per-block memory: reads every index on the path
 * into private memory and checks it (ic_image_check_index: checksums, order, bounds),
 * nothing more.  IC_ECORRUPT for damage, -ENOENT for a broken ancestry.
 * Memory: the path's index bytes (shared by the views of one chain) + O(depth). */
int ic_view_open_nomap(struct ic_chain *c, struct ic_point *p, struct ic_view **out);
/* Build the owner map (2 bytes per block of the point's disk) for O(1) lookups, from the
 * private indexes.  Keyed readers (the mount) call it only after ic_view_check_seal
 * passed, so that its size is one the key holder sealed. */
int ic_view_build_map(struct ic_view *v);
/* ic_view_open_nomap, then ic_view_check_seal with key, then ic_view_build_map. */
int ic_view_open_sealed(struct ic_chain *c, struct ic_point *p, const struct ic_key *key,
			struct ic_view **out);
/* ic_view_open_nomap + ic_view_build_map, keyless (consolidation, tests): the map's size
 * is not authenticated. */
int ic_view_open(struct ic_chain *c, struct ic_point *p, struct ic_view **out);
void ic_view_free(struct ic_view *v);

/* Resolve block pos (< nblocks).  Thread-safe.  O(1) + one binary search with the owner
 * map, one binary search per level without it. */
int ic_view_lookup(const struct ic_view *v, uint64_t pos, struct ic_block_ref *ref);

/* Walk the point's block map in position order calling fn for each non-zero block, by a
 * streaming merge of the path's private indexes (needs no owner map): O(depth) memory,
 * O(entries x log depth) time, never a loop over the disk's blocks.  Checks every
 * mapped entry's length against the point's geometry.  Stops at the first non-zero
 * return of fn. */
int ic_view_walk(const struct ic_view *v,
		 int (*fn)(void *arg, const struct ic_block_ref *ref), void *arg);

/* A cursor over the point's mapped blocks (zero entries included) in position order, the
 * same merge as ic_view_walk, for readers that go forward through ranges (imgrestore's
 * workers) without the owner map.  Memory O(depth); seek: one binary search per level. */
struct ic_view_cursor;
int ic_view_cursor_open(const struct ic_view *v, struct ic_view_cursor **out);
/* Move to the first mapped block at or after pos. */
void ic_view_cursor_seek(struct ic_view_cursor *c, uint64_t pos);
/* The next mapped block below end into *ref (ref->img NULL for a zero entry; its length
 * checked against the point's geometry): 1, 0 when there is none below end (the cursor
 * stays), or a negative errno. */
int ic_view_cursor_next(struct ic_view_cursor *c, uint64_t end, struct ic_block_ref *ref);
void ic_view_cursor_free(struct ic_view_cursor *c);

/* ic_view_walk without a callback: the keyless check of the map's consistency. */
int ic_view_check_map(const struct ic_view *v);

/* Recompute the point's seal with the key (ic_view_walk over the private indexes) and
 * compare with the slot's: IC_ECORRUPT "seal mismatch" when the block map is not the one
 * the key holder wrote.  What passed is what later lookups use: the private copies. */
int ic_view_check_seal(const struct ic_view *v, const struct ic_key *key);

/* Read and decode block pos into buf[block_size] (zero-filled for zero blocks and
 * past plain_len).  rec must hold ic_codec_bound(block_size) bytes.  Returns the
 * block's plain length or a negative errno (IC_ECORRUPT for damage). */
int ic_view_read_block(const struct ic_view *v, struct ic_codec *codec, const struct ic_key *key,
		       uint64_t pos, void *buf, void *rec);

/* The same for a block already resolved (ic_view_lookup, a cursor). */
int ic_view_read_ref(const struct ic_view *v, struct ic_codec *codec, const struct ic_key *key,
		     const struct ic_block_ref *ref, void *buf, void *rec);

/* The cause in a damage message msg about block pos of image path: past a leading
 * "PATH: block POS: ", which a message that already names the file and block would
 * repeat. */
const char *ic_view_damage_cause(const char *msg, const char *path, uint64_t pos);

/* Plain length of block pos in this view's geometry. */
uint32_t ic_view_block_len(const struct ic_view *v, uint64_t pos);

#endif
