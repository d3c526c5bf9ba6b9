/* mount_fs_int.h: what the parts of imgmount's file system share (internal to imgmount).
 *
 *   mount_fs.c          lifecycle, the FUSE operation table, logging, errno mapping
 *   mount_fs_points.c   chain scans (generations), the restore point table, refresh
 *   mount_fs_tree.c     paths, attributes, directories, namespace changes of extra files
 *   mount_fs_read.c     open/release, views, the read path, kernel readahead tuning
 *   mount_fs_overlay.c  overlays: opening them, the write, truncate and fsync paths
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
#include "mount_fs.h"

#define EXTRA_DIR "extra"
#define IO_MAX (1u << 20)

/* Overlays of a point: disk.raw and disk-flat.vmdk show one disk and share one. */
enum { OV_DISK, OV_DESC, OV_SPARSE, OV_N };

static inline int ov_of(int file)
{
	switch (file) {
	case IC_DISK_RAW:
	case IC_DISK_FLAT: return OV_DISK;
	case IC_DISK_DESC: return OV_DESC;
	case IC_DISK_SPARSE: return OV_SPARSE;
	default: return -1;
	}
}

/* One scan of the chain directory.  Kept while a point resolved in it is shown or open. */
struct gen {
	struct ic_chain *chain;
	int refs;                   /* points using it, +1 while current; under fs->lock */
	struct gen *next;
};

struct mpoint {
	char name[ICF_NAME_MAX + 1];
	/* identity, replaced by a refresh only while no handle is open (fs->lock) */
	struct gen *gen;
	struct ic_point *pt;
	uint64_t dev, ino, slot_gen;
	struct ic_disk *disk;
	int handles;                /* open files of this point (fs->lock) */
	bool gone;                  /* no longer in the chain: hidden, freed when idle */
	/* overlays, opened lazily and kept while the identity lasts (fs->lock to open;
	 * readers load the pointers atomically) */
	struct ic_overlay *ov[OV_N];
	bool ov_probed[OV_N];
	bool ov_refused[OV_N];      /* made on another point: never opened again */
	bool ov_locked;
	/* view (mu) */
	pthread_mutex_t mu;
	struct ic_view *view;
	int view_users;
	bool seal_ok;
};

struct mount_fs {
	struct mount_opts o;
	const struct ic_key *key;
	struct ic_cache *cache;
	uid_t uid;
	gid_t gid;
	pthread_mutex_t lock;
	pthread_mutex_t refresh_mu;
	struct gen *gens;           /* every live scan; the first is current */
	struct mpoint **pts;        /* sorted by name; gone ones included while busy */
	size_t npts, pts_cap;
	struct timespec dir_mtime, dir_ctime;
	bool force_rescan;
	char latest[ICF_NAME_MAX + 1];
	struct timespec latest_time;
	int ra_tuned;
};

struct mhandle {
	char *dir;                  /* a directory handle: its path (nothing else set) */
	struct mpoint *mp;          /* NULL for an extra file */
	int file;                   /* enum ic_disk_file */
	int fd;                     /* extra file */
	bool viewed;                /* holds the point's view */
	struct ic_cache_stream st;
};

enum node { N_NONE, N_ROOT, N_LATEST, N_POINT, N_FILE, N_EXTRA };

struct where {
	enum node node;
	struct mpoint *mp;
	int file;
	const char *rest;           /* N_EXTRA: path below the point directory */
};

/* The base of an overlay: the point's own bytes of that file. */
struct base_arg {
	struct mhandle *h;
};

static inline struct mount_fs *mfs_get(void)
{
	return fuse_get_context()->private_data;
}

/* mount_fs.c */
/* errno for the kernel: damage and key trouble are I/O errors to a reader. */
int mfs_errno(int err);

/* mount_fs_points.c */
/* Rescan the chain directory when it changed, or always with force.  Takes fs->lock
 * itself (call without it). */
int mfs_refresh(struct mount_fs *fs, bool force);
/* The point called name[len], or NULL.  Under fs->lock. */
struct mpoint *mfs_find_point(struct mount_fs *fs, const char *name, size_t len);
/* Free an idle point / drop a reference to a scan.  Under fs->lock. */
void mfs_point_free(struct mount_fs *fs, struct mpoint *mp);
void mfs_gen_unref(struct mount_fs *fs, struct gen *g);

/* mount_fs_tree.c */
/* Resolve path.  Under fs->lock. */
void mfs_resolve(struct mount_fs *fs, const char *path, struct where *w);
/* OVERLAY/POINT/extra[/rest], malloc'ed. */
char *mfs_extra_path(struct mount_fs *fs, const struct mpoint *mp, const char *rest);
/* mkdir -p OVERLAY/POINT/extra */
int mfs_extra_dir_make(struct mount_fs *fs, const struct mpoint *mp);
/* The real path of an extra entry for a change, or an errno.  Takes fs->lock. */
int mfs_change_path(struct mount_fs *fs, const char *path, char **out);

/* mount_fs_overlay.c */
/* The overlay of file of mp: opened if it exists on disk, or created when create.
 * NULL (*ret 0) when there is none.  Under fs->lock. */
struct ic_overlay *mfs_ov_get(struct mount_fs *fs, struct mpoint *mp, int file, bool create,
			      int *ret);
/* The overlay of file of mp if open (no lock: an atomic load). */
struct ic_overlay *mfs_ov_load(struct mpoint *mp, int file);

/* mount_fs_read.c */
/* Make ic_disk_size(mp->disk, file) final (builds the point's view once if needed).  Under
 * fs->lock, dropped meanwhile with the point pinned; 0 or the view's error. */
int mfs_size_file(struct mount_fs *fs, struct mpoint *mp, int file);
/* disk-flat.vmdk over an overlay of size bytes: whole sectors, the tail zeros. */
static inline uint64_t mfs_flat_size(uint64_t size)
{
	return (size + 511) / 512 * 512;
}
/* ic_overlay's base reader: the handle's own bytes, zero past the end. */
int mfs_base_read(void *arg, void *buf, size_t len, uint64_t off);

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

#endif
