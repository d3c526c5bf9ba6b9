/* ic_vhdx.h: a dynamic VHDX view of a disk, computed on the fly and compact: the
 * payload blocks holding data follow each other after the metadata, blocks of zeros are
 * absent (BAT state 2, PAYLOAD_BLOCK_ZERO: zeros by the specification, where state 0, not
 * present, would leave them undefined), so the file is the metadata plus the data blocks.
 * Offsets resolve through the allocation map (ic_rank): a BAT entry in O(1) by a rank, a
 * payload block's disk block by a select (a binary search over the map's counts, once per
 * run of consecutive blocks of a read).  Every byte is a function of the disk's size, its
 * allocation and the ids: identical on every remount.  Pure computation: no I/O of its
 * own, nothing of chains, keys or FUSE.
 * Layout: format/FORMAT.md section 17.2; facts: /work/shared/reference/HYPERV.md. */
#ifndef IC_VHDX_H
#define IC_VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ic_rank.h"
#include "ic_vhd.h"

#define IC_VHDX_MAX_SIZE (64ull << 40)     /* the format's limit: 64 TiB */
#define IC_VHDX_BLOCK_MIN (1u << 20)
#define IC_VHDX_BLOCK_MAX (256u << 20)

/* Identity of the file: the virtual disk id (metadata "page 83 data") and the
 * headers' file-write and data-write GUIDs (each 16 bytes as stored). */
struct ic_vhdx_ids {
	uint8_t disk_id[16];
	uint8_t file_write[16];
	uint8_t data_write[16];
};

struct ic_vhdx {
	uint64_t disk_size;         /* bytes of the disk */
	uint64_t virt_size;         /* declared: disk_size up to a 512-byte sector */
	uint32_t block;             /* payload block bytes (power of two) */
	uint32_t nblocks;           /* payload blocks of the disk */
	uint32_t chunk_ratio;       /* payload entries between two sector bitmap entries */
	uint64_t bat_entries, bat_len, data_offset;
	const struct ic_rank *alloc; /* unit b set: payload block b holds data (not owned) */
	bool ready;                 /* ic_vhdx_set_alloc done: file_size and reads valid */
	uint64_t file_size;
	uint8_t header[2][4096];    /* the two headers (sequence numbers 1 and 2) */
	uint8_t region[4096];       /* head of the region table (the rest of 64 KiB is 0) */
	uint8_t meta[256];          /* head of the metadata table */
	uint8_t items[40];          /* the metadata items, at 64 KiB in the region */
};

/* CRC-32C (Castagnoli), as the VHDX checksums: ic_crc32c(0, p, n) of a whole buffer. */
uint32_t ic_crc32c(uint32_t crc, const void *p, size_t n);

/* Plan the file of a disk of disk_size bytes in payload blocks of block_bytes (power of
 * two, IC_VHDX_BLOCK_MIN..MAX).  -EINVAL, -EFBIG past IC_VHDX_MAX_SIZE.  Allocates
 * nothing. */
int ic_vhdx_init(struct ic_vhdx *x, uint64_t disk_size, uint32_t block_bytes,
		 const struct ic_vhdx_ids *ids);

/* The allocation: a sealed map of nblocks units, unit b set when payload block b holds
 * data (kept, not copied: it must outlive every read).  0, or -EINVAL for another count
 * of units; then x->ready. */
int ic_vhdx_set_alloc(struct ic_vhdx *x, const struct ic_rank *alloc);

/* Is payload block b present, and the file offset of a present one (O(1): a rank). */
bool ic_vhdx_present(const struct ic_vhdx *x, uint64_t b);
uint64_t ic_vhdx_block_offset(const struct ic_vhdx *x, uint64_t b);

/* Fill buf with bytes [off, off+len) of the file (zeros past file_size); needs
 * x->ready (-ENXIO otherwise).  One read_disk (and one select) per run of payload blocks
 * consecutive on the disk.
 * Returns 0 or the reader's error. */
int ic_vhdx_read(const struct ic_vhdx *x, void *buf, size_t len, uint64_t off,
		 ic_vhd_read_fn read_disk, void *arg);

#endif
