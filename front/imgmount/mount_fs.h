/* mount_fs.h: the file system imgmount serves (libfuse3 high-level API).
 *
 *   /                      one directory per restore point, `latest` -> the newest
 *   /POINT/disk.raw        \
 *   /POINT/disk-flat.vmdk   |  ic_disk views, read-only (EROFS) unless an overlay
 *   /POINT/disk.vmdk        |  directory is given: then copy-on-write through
 *   /POINT/disk-sparse.vmdk/   ic_overlay (disk.raw and disk-flat.vmdk share one)
 *   /POINT/info.json
 *   /POINT/OTHER...        with an overlay only: real files and directories kept in
 *                          OVERLAY/POINT/extra/ (hypervisor lock files)
 *
 * The chain, the point table, views, the cache and overlays are the serve layer's session
 * (ic_session.h, shared with the nbdkit plugin).  Threads: libfuse's worker threads call
 * the operations concurrently.  The session's lock (fs->ss->lock) guards the point table,
 * each point's identity and handle count and its overlays; a point's view is built under
 * its own mutex.  Reads and writes take no global lock.
 */
#ifndef MOUNT_FS_H
#define MOUNT_FS_H

#define FUSE_USE_VERSION 35

#include <stdbool.h>
#include <stdint.h>

#include <fuse.h>

#include "imgchain.h"

struct mount_opts {
	const char *chain_dir;      /* absolute */
	const char *overlay_dir;    /* absolute, or NULL for a read-only mount */
	uint64_t cache_bytes;       /* 0: the session's default (1/16 of RAM, 64M..1G) */
	const char *mountpoint;     /* absolute; its kernel readahead is raised to 1 MiB */
	bool take_over;             /* ask another server to release a point's overlay (10.7) */
	unsigned take_over_wait;    /* seconds (0: the default, 30) */
};

struct mount_fs;

/* Scan the chain (keyless; no image is read beyond its header and slots) and check
 * that key belongs to it (IC_EKEY if not).  key is borrowed for the mount's life.
 * Creates the overlay directory if needed. */
int mount_fs_new(const struct mount_opts *o, const struct ic_key *key, struct mount_fs **out);
/* Start what needs threads (the block cache and its workers): call after daemonizing. */
int mount_fs_start(struct mount_fs *fs);
/* Close every overlay and image (NULL is fine). */
void mount_fs_free(struct mount_fs *fs);
/* The FUSE operations; the private data given to fuse_new() is the mount_fs. */
const struct fuse_operations *mount_fs_ops(void);
/* Restore points currently shown. */
size_t mount_fs_npoints(struct mount_fs *fs);

/* Logging: stderr ("imgmount: ...") until mount_log_syslog() switches to syslog
 * (LOG_DAEMON, ident imgmount) or mount_log_file() to the file mount_log_open()
 * opened (appended, one timestamped line a message; 0 or an error naming the file).
 * Thread-safe; switch before the FUSE loop starts.  The file survives daemonizing. */
void mount_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mount_log_syslog(void);
int mount_log_open(const char *path);
void mount_log_file(void);

#endif
