/* mount_fs_overlay.c: the write, truncate and fsync paths (the overlays themselves are
 * the session's: ic_session_io.c). */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "mount_fs_int.h"

int mfs_write(const char *path, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (h->fd >= 0) {
		n = pwrite(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (off < 0)
		return -EINVAL;
	n = ic_session_write(fs->ss, h->mp, h->file, &h->st, buf, size, (uint64_t)off);
	return n < 0 ? mfs_errno((int)n) : (int)n;
}

int mfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	int ret;

	(void)path;
	if (h->cdp)
		return 0;       /* read-only: nothing to make durable */
	if (h->fd >= 0)
		return (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
	ret = ic_session_fsync(mfs_get()->ss, h->mp, h->file);
	return ret ? mfs_errno(ret) : 0;
}

/* Truncate: a disk file's overlay, or an extra file. */
int mfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = fi ? (struct mhandle *)(uintptr_t)fi->fh : NULL;
	struct ic_overlay *ov = NULL;
	struct where w;
	char *p;
	int ret = 0;

	if (h && h->fd >= 0)
		return ftruncate(h->fd, size) < 0 ? -errno : 0;
	if (!fs->o.overlay_dir)
		return -EROFS;
	if (size < 0)
		return -EINVAL;
	pthread_mutex_lock(&fs->ss->lock);
	if (h) {
		w.node = N_FILE;
		w.mp = h->mp;
		w.file = h->file;
	} else {
		mfs_resolve(fs, path, &w);
	}
	if (w.node == N_FILE && w.file != IC_DISK_INFO) {
		ret = ic_session_size_file(fs->ss, w.mp, w.file);
		if (!ret)
			ov = ic_session_ov_get(fs->ss, w.mp, w.file, true, &ret);
		if (ov)
			ret = ic_overlay_truncate(ov, (uint64_t)size);
		else if (!ret)
			ret = -EIO;
		pthread_mutex_unlock(&fs->ss->lock);
		return ret ? mfs_errno(ret) : 0;
	}
	pthread_mutex_unlock(&fs->ss->lock);
	if (w.node == N_FILE)
		return -EROFS;
	ret = mfs_change_path(fs, path, &p);
	if (!ret && truncate(p, size) < 0)
		ret = -errno;
	free(p);
	return ret;
}
