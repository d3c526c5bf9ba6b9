/* ic_rank.h: which units of a disk hold data, as a bitmap with rank and select, so that a
 * synthesized image file can store only those units, one after another: unit i, if set,
 * is stored as the ic_rank_of(i)-th unit of the file, and the k-th stored unit is unit
 * ic_rank_select(k).
 *
 * Rank is O(1): a count of the set bits before each superblock of 512 units, then at most
 * eight popcounts.  Select is one binary search over the superblock counts and at most
 * eight popcounts.  Memory: n/8 bytes of bitmap + n/64 bytes of counts (a 2 TiB disk in
 * 64 KiB units: 4 MiB + 512 KiB).  Built once (set, then seal), read-only afterwards:
 * any number of threads may read a sealed map.  Knows nothing of disks or formats. */
#ifndef IC_RANK_H
#define IC_RANK_H

#include <stdbool.h>
#include <stdint.h>

struct ic_rank {
	uint64_t n;                 /* units */
	uint64_t count;             /* set units (after ic_rank_seal) */
	uint64_t *bits;             /* n bits, unit i at bit i % 64 of word i / 64 */
	uint64_t *before;           /* per superblock of 512 units: set units before it */
};

/* An empty map of n units: 0 or -ENOMEM (then nothing to free). */
int ic_rank_init(struct ic_rank *r, uint64_t n);
void ic_rank_free(struct ic_rank *r);

/* Mark units [first, end) (end clamped to n).  Before ic_rank_seal only. */
void ic_rank_set_range(struct ic_rank *r, uint64_t first, uint64_t end);
/* Compute the counts; the map is then read-only. */
void ic_rank_seal(struct ic_rank *r);

bool ic_rank_test(const struct ic_rank *r, uint64_t i);
/* Set units before unit i (i <= n). */
uint64_t ic_rank_of(const struct ic_rank *r, uint64_t i);
/* The unit of the k-th set unit (k < count), or n when there is none. */
uint64_t ic_rank_select(const struct ic_rank *r, uint64_t k);

/* Runs of set units, for a file that stores the set units one after another, each
 * unit_bytes long: bytes [pos, pos+len) of the stored units come as pieces, each the
 * longest that is contiguous on the disk too (consecutive set units), in order:
 *
 *	struct ic_rank_walk w;
 *	uint64_t at;
 *	size_t n;
 *
 *	ic_rank_walk_start(&w, r, unit_bytes, pos, len);
 *	while (ic_rank_walk_next(&w, &at, &n))
 *		read n bytes at disk offset at into the next n bytes of the buffer;
 *
 * One select per piece, then a word at a time.  The caller keeps pos + len within
 * count units: stored bytes past them come as pieces at offset n * unit_bytes. */
struct ic_rank_walk {
	const struct ic_rank *r;
	uint64_t unit;              /* bytes per unit */
	uint64_t pos;               /* next stored byte */
	size_t left;                /* bytes still to walk */
};

void ic_rank_walk_start(struct ic_rank_walk *w, const struct ic_rank *r, uint64_t unit_bytes,
			uint64_t pos, size_t len);
/* The next piece: its disk offset and length; false when the walk is over. */
bool ic_rank_walk_next(struct ic_rank_walk *w, uint64_t *disk_off, size_t *n);

#endif
