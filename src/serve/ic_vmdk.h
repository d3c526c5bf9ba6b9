/* ic_vmdk.h: VMDK views of a disk, computed on the fly: the descriptor of a
 * descriptor + flat-extent pair, and a compact monolithicSparse file whose every byte is
 * derived from the disk and its allocation map: the grains that hold data, stored one
 * after another in disk order, and nothing for the others (their grain table entries are
 * 0).  Pure computation: no I/O of its own.  FORMAT.md section 13 gives the
 * layout; /work/shared/reference/VMDK.md the constraints hypervisors put on it. */
#ifndef IC_VMDK_H
#define IC_VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ic_rank.h"

/* Identity of a disk: CID and UUIDs, derived deterministically from a seed so that a
 * remount shows identical bytes. */
struct ic_vmdk_ident {
	uint32_t cid;
	uint8_t uuid[16];           /* ddb.uuid */
	uint8_t uuid_image[16];     /* ddb.uuid.image */
	uint8_t uuid_modification[16];
	uint8_t long_content_id[16]; /* last 4 bytes == cid */
};

void ic_vmdk_ident_derive(const void *seed, size_t seed_len, struct ic_vmdk_ident *id);

/* Text of disk.vmdk describing a VMFS flat extent named flat_name of disk_size bytes
 * (createType="vmfs"; extent size in sectors, rounded up).  Returns the length
 * (excluding NUL) or -ENOSPC if cap is too small. */
int ic_vmdk_flat_descriptor(char *buf, size_t cap, uint64_t disk_size, const char *flat_name,
			    const struct ic_vmdk_ident *id);

/* Layout of a synthesized monolithicSparse file. */
struct ic_vmdk_sparse {
	uint64_t disk_size;         /* bytes of the disk */
	uint64_t capacity;          /* sectors */
	uint64_t grain;             /* sectors per grain (power of two) */
	uint64_t n_grains, n_gts, gd_sectors;
	uint64_t rgd_offset, gd_offset, overhead; /* sectors */
	uint64_t max_file_size;     /* bytes, every grain stored (the 32-bit limit's measure) */
	uint64_t file_size;         /* bytes: metadata + the stored grains, once allocated */
	const struct ic_rank *alloc; /* grains stored (NULL until ic_vmdk_sparse_set_alloc) */
	char descriptor[1024];      /* embedded descriptor text, NUL padded */
	size_t descriptor_len;
};

/* Plan the file for a disk of disk_size bytes with grains of grain_bytes (power of
 * two, 4 KiB..1 MiB; 64 KiB is the default of every hypervisor) named file_name.
 * -EFBIG when the disk is too large for 32-bit grain offsets with every grain stored
 * (about 2 TiB): then a hypervisor may fill every hole through an overlay.  file_size
 * is max_file_size until the allocation is known. */
int ic_vmdk_sparse_init(struct ic_vmdk_sparse *s, uint64_t disk_size, uint32_t grain_bytes,
			const char *file_name, const struct ic_vmdk_ident *id);

/* The grains the file stores: a sealed map of n_grains units (not copied: it must
 * outlive s).  Sets file_size.  -EINVAL when the map has another size. */
int ic_vmdk_sparse_set_alloc(struct ic_vmdk_sparse *s, const struct ic_rank *alloc);

/* Reads the disk's bytes [off, off+len) (never past disk_size): 0 or -errno. */
struct ic_vmdk_source {
	int (*read_disk)(void *arg, void *buf, size_t len, uint64_t off);
	void *arg;
};

/* Fill buf with bytes [off, off+len) of the sparse file (clamped reads past
 * file_size give zeros): one read_disk per run of stored grains that are neighbours
 * on the disk too.  Returns 0, the first error of a callback, or -ENXIO before the
 * allocation is set. */
int ic_vmdk_sparse_read(const struct ic_vmdk_sparse *s, void *buf, size_t len, uint64_t off,
			const struct ic_vmdk_source *src);

#endif
