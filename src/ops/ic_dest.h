/* ic_dest.h: where a block-sync restore writes: a regular file, a block device, or an NBD
 * export named by a URI (libnbd), behind one set of calls. */
#ifndef IC_DEST_H
#define IC_DEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ic_dest {
	const char *name;
	int fd;                     /* a file or device; -1 for NBD */
	struct nbd_handle *nbd;     /* an NBD export */
	bool regular;               /* a regular file: resized to the disk; holes punched */
	uint64_t size;              /* before any resize */
};

/* nbd://, nbds://, nbd+unix://, nbds+unix://, nbd+vsock:// */
bool ic_dest_is_uri(const char *name);
/* Open name for a sync of a disk of size bytes: write-only unless reading (--sync), a
 * missing file created 0600 when create; a device or export must hold size bytes. */
int ic_dest_open(struct ic_dest *d, const char *name, bool reading, bool create, uint64_t size);
/* A regular file given size bytes (grown or shrunk); nothing for a device or export. */
int ic_dest_resize(struct ic_dest *d, uint64_t size);
int ic_dest_pread(struct ic_dest *d, void *buf, size_t len, uint64_t off);
int ic_dest_pwrite(struct ic_dest *d, const void *buf, size_t len, uint64_t off);
/* Make [off, off + len) read as zeros without writing them if the destination can (a hole
 * in a file, NBD WRITE_ZEROES): 1 done, 0 cannot (write zeros instead), or -errno. */
int ic_dest_zero(struct ic_dest *d, size_t len, uint64_t off);
int ic_dest_flush(struct ic_dest *d);
void ic_dest_close(struct ic_dest *d);

#endif
