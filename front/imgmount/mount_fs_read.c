/* mount_fs_read.c: opening and releasing files (ic_session_open/close: the point pinned,
 * its view and overlay), the read path and the kernel readahead tuning. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "ic_mountinfo.h"
#include "ic_session_cdp.h"
#include "mount_fs_int.h"


/* The kernel reads ahead 128 KiB on a FUSE mount whatever max_readahead says; 1 MiB
 * requests halve the per-request cost of sequential reads.  Done once after the INIT
 * exchange (which would reset it), by root only: a failure changes nothing else. */
struct bdi_ask {
	const char *mountpoint;
	char dev[64];
};

static int mount_dev(const struct ic_mount_ent *m, void *arg)
{
	struct bdi_ask *a = arg;

	if (!strcmp(m->mountpoint, a->mountpoint))
		snprintf(a->dev, sizeof(a->dev), "%s", m->dev);    /* the last one is ours */
	return 0;
}

static void tune_readahead(struct mount_fs *fs)
{
	struct bdi_ask a = { .dev = "" };
	char path[128];
	int fd;

	if (__atomic_exchange_n(&fs->ra_tuned, 1, __ATOMIC_RELAXED) || !fs->o.mountpoint)
		return;
	a.mountpoint = fs->o.mountpoint;
	if (ic_mountinfo_each(mount_dev, &a) || !a.dev[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", a.dev);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1024", 4) < 0)
			(void)0;
		close(fd);
	}
}

/* ---- open / read / write -------------------------------------------------------------- */

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static int open_extra(struct mount_fs *fs, struct where *w, struct fuse_file_info *fi,
		      mode_t mode, bool create)
{
	struct mhandle *h;
	char *p;
	int fd, ret = 0;

	if (create)
		ret = mfs_extra_dir_make(fs, w->mp);
	if (ret)
		return ret;
	p = mfs_extra_path(fs, w->mp, w->rest);
	if (!p)
		return -ENOMEM;
	fd = create ? open(p, fi->flags | O_CREAT | O_CLOEXEC, mode) : open(p, fi->flags | O_CLOEXEC);
	free(p);
	if (fd < 0)
		return -errno;
	h = mfs_handle_new(fs);
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	fi->fh = (uintptr_t)h;
	return 0;
}

/* Open a disk file: the session pins the point, attaches its view (a seal or index
 * failure is EIO here), and opens or creates the overlay.  Under fs->ss->lock. */
static int open_file(struct mount_fs *fs, struct where *w, struct fuse_file_info *fi)
{
	bool wr = wants_write(fi->flags);
	struct mhandle *h;
	int ret;

	if (wr && (!fs->o.overlay_dir || w->file == IC_DISK_INFO))
		return -EROFS;
	h = mfs_handle_new(fs);
	if (!h)
		return -ENOMEM;
	ret = ic_session_open(fs->ss, w->mp, w->file, wr);
	if (ret) {
		mfs_handle_free(fs, h);
		return mfs_errno(ret);
	}
	h->mp = w->mp;
	h->file = w->file;
	fi->fh = (uintptr_t)h;
	if (!fs->o.overlay_dir) {
		fi->keep_cache = 1;     /* the bytes of a restore point never change */
	} else if (w->file == IC_DISK_INFO) {
		fi->direct_io = 1;      /* a promote's progress changes it */
	} else if (ic_session_ov_of(w->file) == IC_SOV_DISK) {
		/* two names, one overlay: the page cache of one would miss writes via the other */
		fi->direct_io = 1;
	} else {
		fi->keep_cache = 1;     /* every write comes through this inode's page cache */
	}
	return 0;
}

int mfs_open(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	const char *rest;
	struct where w;
	int ret;

	if (mfs_cdp_path(fs, path, &rest))
		return mfs_cdp_open(fs, rest, fi);
	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, 0, false);
	else if (w.node == N_NONE)
		ret = -ENOENT;
	else
		ret = -EISDIR;
	pthread_mutex_unlock(&fs->ss->lock);
	if (w.node == N_FILE && !ret && !__atomic_load_n(&fs->ra_tuned, __ATOMIC_RELAXED))
		tune_readahead(fs);
	return ret;
}

int mfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct where w;
	int ret;

	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, mode, true);
	else if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else
		ret = fs->o.overlay_dir && w.node != N_NONE ? -EPERM : -EROFS;
	if (w.node == N_NONE && fs->o.overlay_dir)
		ret = -EPERM;
	pthread_mutex_unlock(&fs->ss->lock);
	return ret;
}

/* What a handle holds: a checkpoint's disk, an extra file's descriptor, or the session's
 * open of a point's disk file (a directory handle holds nothing). */
void mfs_handle_close(struct mount_fs *fs, struct mhandle *h)
{
	if (h->cdp)
		ic_scdp_close(h->cdp);
	else if (h->fd >= 0)
		close(h->fd);
	else if (h->mp)
		ic_session_close(fs->ss, h->mp, h->file);
	h->cdp = NULL;
	h->fd = -1;
	h->mp = NULL;
}

int mfs_release(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;

	(void)path;
	mfs_handle_close(fs, h);
	mfs_handle_free(fs, h);
	return 0;
}

int mfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	ssize_t n;

	(void)path;
	if (h->fd >= 0) {
		n = pread(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (off < 0)
		return -EINVAL;
	if (h->cdp) {
		n = ic_scdp_read(h->cdp, buf, size, (uint64_t)off);
		return n < 0 ? mfs_errno((int)n) : (int)n;
	}
	n = ic_session_read(h->mp, h->file, &h->st, buf, size, (uint64_t)off);
	return n < 0 ? mfs_errno((int)n) : (int)n;
}

int mfs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}
