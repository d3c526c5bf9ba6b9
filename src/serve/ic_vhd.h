/* ic_vhd.h: a fixed VHD view of a disk, computed on the fly: the disk's bytes, zeros up
 * to a whole MiB (what Azure requires), then the 512-byte footer.  Pure computation: no
 * I/O of its own, nothing of chains, keys or FUSE.  See /work/shared/reference/HYPERV.md
 * and format/FORMAT.md section 17. */
#ifndef IC_VHD_H
#define IC_VHD_H

#include <stddef.h>
#include <stdint.h>

#define IC_VHD_FOOTER 512u
#define IC_VHD_ALIGN (1u << 20)
/* qemu's limit (and Hyper-V's for VHD): 0xff000000 sectors = 2040 GiB. */
#define IC_VHD_MAX_SIZE (0xff000000ull * 512u)

struct ic_vhd {
	uint64_t disk_size;         /* bytes of the disk */
	uint64_t cur_size;          /* the footer's current size: disk_size up to a MiB */
	uint64_t file_size;         /* cur_size + the footer */
	uint8_t footer[IC_VHD_FOOTER];
};

/* Plan the file of a disk of disk_size bytes created at unix time created, whose
 * footer carries uuid.  -EINVAL for an empty disk, -EFBIG past IC_VHD_MAX_SIZE. */
int ic_vhd_init(struct ic_vhd *h, uint64_t disk_size, int64_t created, const uint8_t uuid[16]);

/* CHS of the VHD specification's algorithm for a disk of sectors sectors. */
void ic_vhd_chs(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt);

/* Reads disk bytes [off, off+len) (never past disk_size): 0 or -errno. */
typedef int (*ic_vhd_read_fn)(void *arg, void *buf, size_t len, uint64_t off);

/* Fill buf with bytes [off, off+len) of the file (zeros past file_size).  Returns 0 or
 * the reader's error. */
int ic_vhd_read(const struct ic_vhd *h, void *buf, size_t len, uint64_t off,
		ic_vhd_read_fn read_disk, void *arg);

#endif
