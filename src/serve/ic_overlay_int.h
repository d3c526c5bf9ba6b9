/* ic_overlay_int.h: what the overlay's two halves share (not installed; ic_overlay.c
 * describes the files).  ic_overlay_map.c: the block map on disk and in memory (bitmap
 * pages, loading, the shadow-paged commit); ic_overlay.c: the data path and the life of
 * an overlay. */
#ifndef IC_OVERLAY_INT_H
#define IC_OVERLAY_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ic_overlay.h"

#define OVL_BS		((uint64_t)IC_OVERLAY_BLOCK)
#define OVL_SLOT	4096u
#define OVL_PAGE_HDR	32u
#define OVL_PAGE_WORDS	((OVL_SLOT - OVL_PAGE_HDR) / 8)		/* 508 */
#define OVL_PAGE_BITS	((uint64_t)OVL_PAGE_WORDS * 64)		/* 32512 blocks */
#define OVL_PAGES_OFF	(2 * (uint64_t)OVL_SLOT)
#define OVL_VERSION	2u
#define OVL_VERSION_UNBOUND 1u				/* before the binding */
#define OVL_F_MODIFIED	1u
#define OVL_PAGE_MAGIC	0x50564f49u				/* "IOVP" */
/* 256 TiB: keeps the page array (16 bytes per 127 MiB) small. */
#define OVL_MAX_SIZE	(1ull << 48)
#define OVL_MAX_PAGES	(OVL_MAX_SIZE / OVL_BS / OVL_PAGE_BITS + 1)
/* Generations of header and page slots stay below this (FORMAT.md 10.2): a larger one was
 * written by someone else, and a commit past it would wrap to below the committed one. */
#define OVL_GEN_LIMIT	(1ull << 63)


struct ovl_disk_header {
	char magic[8];
	uint32_t version;
	uint32_t block_size;
	uint32_t page_bits;
	uint32_t flags;
	uint64_t gen;
	uint64_t size;
	uint64_t base_limit;
	uint64_t base_size;
	uint64_t checksum;	/* XXH3-64 of the whole slot with this field zero */
	uint8_t bind[IC_OVERLAY_BIND_LEN];
	char label[IC_OVERLAY_LABEL_MAX + 1];
};

_Static_assert(offsetof(struct ovl_disk_header, bind) == 64, "binding offset");
_Static_assert(offsetof(struct ovl_disk_header, label) == 112, "label offset");

union ovl_header_slot {
	struct ovl_disk_header h;
	uint8_t raw[OVL_SLOT];
};

struct ovl_disk_page {
	uint32_t magic;
	uint32_t reserved;
	uint64_t gen;
	uint64_t index;
	uint64_t checksum;	/* XXH3-64 of the whole slot with this field zero */
	uint64_t words[OVL_PAGE_WORDS];
};

_Static_assert(sizeof(struct ovl_disk_page) == OVL_SLOT, "a page fills one slot");
_Static_assert(offsetof(struct ovl_disk_page, words) == OVL_PAGE_HDR, "page header size");

struct ovl_page {
	uint64_t *bits;		/* OVL_PAGE_WORDS words; NULL while no bit is set */
	int8_t slot;		/* map slot of the committed copy, -1 if none */
	bool dirty;		/* differs from the committed copy */
};

struct ic_overlay {
	/* Readers share it; writes, truncates, commits and accessors of state take it. */
	pthread_rwlock_t lock;
	int data_fd, map_fd;
	char *data_path, *map_path, *dir;
	struct ovl_page *pages;
	uint64_t nr_pages;
	uint64_t dirty_lo, dirty_hi;	/* pages that may be dirty: [lo, hi) */
	uint64_t base_size, size, base_limit;
	struct ic_overlay_bind bind;	/* recorded in the header */
	uint64_t gen;			/* of the committed header */
	int hdr_slot;			/* header slot holding it */
	uint64_t max_gen;		/* highest generation ever stamped or seen */
	uint64_t punch_lo, punch_hi;	/* blocks dropped by truncate, space not yet freed */
	bool modified, hdr_dirty, unsynced, need_dirsync;
	bool readonly;			/* a snapshot's: loading repairs nothing */
	bool released;			/* handed to another server: EROFS, no commit */
	int err;			/* sticky: a failed fdatasync may have lost writes */
};

static inline uint64_t ovl_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static inline uint64_t ovl_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static inline uint64_t ovl_blocks(uint64_t bytes)
{
	return bytes / OVL_BS + (bytes % OVL_BS != 0);
}


/* The bitmap page of page p (NULL: no bit set); is block blk's bit set? */
static inline const uint64_t *ovl_page_bits(const struct ic_overlay *ov, uint64_t p)
{
	return p < ov->nr_pages ? ov->pages[p].bits : NULL;
}

static inline bool ovl_test(const struct ic_overlay *ov, uint64_t blk)
{
	const uint64_t *bits = ovl_page_bits(ov, blk / OVL_PAGE_BITS);
	uint64_t i = blk % OVL_PAGE_BITS;

	return bits && (bits[i / 64] >> (i % 64) & 1);
}

/* ---- ic_overlay_map.c ---------------------------------------------------------------- */

/* First block in [blk, limit) whose bit differs from set, or limit. */
uint64_t ovl_run_end(const struct ic_overlay *ov, uint64_t blk, uint64_t limit, bool set);
/* Allocate what setting the bits of blocks [lo, hi) needs, so that it cannot fail later. */
int ovl_reserve(struct ic_overlay *ov, uint64_t lo, uint64_t hi);
/* Set or clear the bits of blocks [lo, hi); setting needs ovl_reserve() first. */
void ovl_update_range(struct ic_overlay *ov, uint64_t lo, uint64_t hi, bool set);
/* Commit what changed (the steps in ic_overlay.c), under the write lock. */
int ovl_commit(struct ic_overlay *ov);
/* Read the newest valid header (binding checked), then every page's committed copy. */
int ovl_load_header(struct ic_overlay *ov);
int ovl_load_pages(struct ic_overlay *ov);

/* ---- ic_overlay.c ---------------------------------------------------------------------- */

/* Take (F_RDLCK: a change; F_WRLCK: a snapshot) or drop (F_UNLCK) the cut lock, the OFD
 * lock on byte 0 of the map (FORMAT.md 10.6), waiting for it. */
int ovl_cut_lock(struct ic_overlay *ov, short type);
/* Free ov, closing its files (its rwlock too when lock); commits nothing. */
void ovl_free(struct ic_overlay *ov, bool lock);
/* Write len bytes of data at off into prefix.data (not yet durable). */
int ovl_pwrite_data(struct ic_overlay *ov, const void *buf, uint64_t len, uint64_t off);

#endif
