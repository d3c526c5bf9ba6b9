/* mount_fs_int.h: what the parts of imgmount's file system share (internal to imgmount).
 *
 *   mount_fs.c          lifecycle, the FUSE operation table, logging, errno mapping
 *   mount_fs_tree.c     paths, attributes, directories, namespace changes of extra files
 *   mount_fs_read.c     open/release, the read path, kernel readahead tuning
 *   mount_fs_overlay.c  the write, truncate and fsync paths
 *   mount_fs_promote.c  the live promote's control channel (extended attributes)
 *
 * The restore point table, views, the cache and overlays are the serve layer's session
 * (src/serve/ic_session.h), which the nbdkit plugin shares.
 *
 * Locking is described in mount_fs.h; each declaration below says which lock it needs.
 * Names: what the parts share is mfs_* (the FUSE operations mfs_<op>); the daemon's
 * public entry points (mount_fs.h) are mount_fs_* and mount_log*.
 */
#ifndef MOUNT_FS_INT_H
#define MOUNT_FS_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "ic_cache.h"
#include "ic_disk.h"
#include "ic_overlay.h"
#include "ic_session.h"
#include "mount_fs.h"

#define EXTRA_DIR "extra"
#define IO_MAX (1u << 20)

struct mount_fs {
	struct mount_opts o;
	struct ic_session *ss;      /* chain, key, points, views, cache, overlays */
	uid_t uid;
	gid_t gid;
	int ra_tuned;
	/* every open handle: the kernel sends no release for a file still open at
	 * unmount, so mount_fs_free() closes what is left */
	pthread_mutex_t hlock;
	struct mhandle *handles;
};

struct mhandle {
	char *dir;                  /* a directory handle: its path (nothing else set) */
	struct ic_spoint *mp;          /* NULL for an extra file */
	int file;                   /* enum ic_disk_file */
	int fd;                     /* extra file */
	struct ic_scdp_disk *cdp;   /* a checkpoint's disk.raw under cdp/ (nothing else set) */
	struct ic_cache_stream st;
	struct mhandle *prev, *next;  /* fs->handles, under fs->hlock */
};

enum node { N_NONE, N_ROOT, N_LATEST, N_POINT, N_FILE, N_EXTRA };

struct where {
	enum node node;
	struct ic_spoint *mp;
	int file;
	const char *rest;           /* N_EXTRA: path below the point directory */
};

static inline struct mount_fs *mfs_get(void)
{
	return fuse_get_context()->private_data;
}

/* mount_fs.c */
/* errno for the kernel: damage and key trouble are I/O errors to a reader. */
int mfs_errno(int err);

/* mount_fs_tree.c */
/* Resolve path.  Under fs->ss->lock. */
void mfs_resolve(struct mount_fs *fs, const char *path, struct where *w);
/* OVERLAY/POINT/extra[/rest], malloc'ed. */
char *mfs_extra_path(struct mount_fs *fs, const struct ic_spoint *mp, const char *rest);
/* mkdir -p OVERLAY/POINT/extra */
int mfs_extra_dir_make(struct mount_fs *fs, const struct ic_spoint *mp);
/* The attributes every node shares: mode, owner, times t. */
void mfs_fill_common(struct mount_fs *fs, struct stat *st, mode_t mode, time_t t);
/* The real path of an extra entry for a change, or an errno.  Takes fs->ss->lock. */
int mfs_change_path(struct mount_fs *fs, const char *path, char **out);

/* mount_fs_cdp.c: the cdp/ view.  Take no lock of the caller's. */
/* Whether path is under the cdp/ view; *rest: what follows "/cdp". */
bool mfs_cdp_path(struct mount_fs *fs, const char *path, const char **rest);
int mfs_cdp_getattr(struct mount_fs *fs, const char *rest, struct stat *st);
int mfs_cdp_fgetattr(struct mount_fs *fs, struct mhandle *h, struct stat *st);
int mfs_cdp_readdir(struct mount_fs *fs, const char *rest, void *buf, fuse_fill_dir_t filler);
int mfs_cdp_open(struct mount_fs *fs, const char *rest, struct fuse_file_info *fi);

/* Handles (mount_fs.c): a new one (fd and file -1) linked into fs->handles, and one
 * unlinked and freed.  mfs_handle_close() (mount_fs_read.c) releases what a handle holds. */
struct mhandle *mfs_handle_new(struct mount_fs *fs);
void mfs_handle_free(struct mount_fs *fs, struct mhandle *h);
void mfs_handle_close(struct mount_fs *fs, struct mhandle *h);

/* The FUSE operations, by file. */
int mfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi);
int mfs_readlink(const char *path, char *buf, size_t size);
int mfs_opendir(const char *path, struct fuse_file_info *fi);
int mfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		struct fuse_file_info *fi, enum fuse_readdir_flags flags);
int mfs_releasedir(const char *path, struct fuse_file_info *fi);
int mfs_mkdir(const char *path, mode_t mode);
int mfs_rmdir(const char *path);
int mfs_unlink(const char *path);
int mfs_symlink(const char *target, const char *path);
int mfs_rename(const char *from, const char *to, unsigned int flags);
int mfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi);
int mfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi);
int mfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi);
int mfs_statfs(const char *path, struct statvfs *st);

int mfs_open(const char *path, struct fuse_file_info *fi);
int mfs_create(const char *path, mode_t mode, struct fuse_file_info *fi);
int mfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi);
int mfs_flush(const char *path, struct fuse_file_info *fi);
int mfs_release(const char *path, struct fuse_file_info *fi);

int mfs_write(const char *path, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi);
int mfs_truncate(const char *path, off_t size, struct fuse_file_info *fi);
int mfs_fsync(const char *path, int datasync, struct fuse_file_info *fi);

int mfs_setxattr(const char *path, const char *name, const char *value, size_t size,
		 int flags);
int mfs_getxattr(const char *path, const char *name, char *value, size_t size);

#endif
