/* ic_vmdk.h: VMDK views of a disk, computed on the fly: the descriptor of a
 * descriptor + flat-extent pair, and a monolithicSparse file whose every byte is
 * derived from the disk (zero grains are holes).  Pure computation: no I/O of its own.
 * See /work/shared/reference/VMDK.md for the layouts hypervisors accept. */
#ifndef IC_VMDK_H
#define IC_VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	uint64_t file_size;         /* bytes */
	char descriptor[1024];      /* embedded descriptor text, NUL padded */
	size_t descriptor_len;
};

/* Plan the file for a disk of disk_size bytes with grains of grain_bytes (power of
 * two, 4 KiB..1 MiB; 64 KiB is the default of every hypervisor) named file_name.
 * -EFBIG when the disk is too large for 32-bit grain offsets (about 2 TiB). */
int ic_vmdk_sparse_init(struct ic_vmdk_sparse *s, uint64_t disk_size, uint32_t grain_bytes,
			const char *file_name, const struct ic_vmdk_ident *id);

/* Callbacks for ic_vmdk_sparse_read: is grain g (disk bytes [g*grain, +grain)) all
 * zero?  and read disk bytes (never past disk_size).  Return 0 or -errno. */
struct ic_vmdk_source {
	bool (*grain_is_zero)(void *arg, uint64_t grain);
	int (*read_disk)(void *arg, void *buf, size_t len, uint64_t off);
	void *arg;
};

/* Fill buf with bytes [off, off+len) of the sparse file (clamped reads past
 * file_size give zeros).  Returns 0 or the first error of a callback. */
int ic_vmdk_sparse_read(const struct ic_vmdk_sparse *s, void *buf, size_t len, uint64_t off,
			const struct ic_vmdk_source *src);

#endif
