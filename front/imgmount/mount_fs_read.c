/* mount_fs_read.c: opening and releasing files, the views behind them, the read path
 * and the kernel readahead tuning. */
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "ic_mountinfo.h"
#include "mount_fs_int.h"


/* Build (or share) the point's view and attach its disk; the handle's point is pinned. */
static int view_get(struct mount_fs *fs, struct mpoint *mp)
{
	struct ic_view *v = NULL;
	int ret = 0;

	pthread_mutex_lock(&mp->mu);
	if (mp->view) {
		mp->view_users++;
		goto out;
	}
	/* Views of several points may be built at once: each image reads its index into
	 * private memory once, under its own lock (ic_image_check_index).  The seal is
	 * checked on those private copies before any per-block memory; a view rebuilt
	 * later (the point closed and reopened) uses the same copies, which is why the
	 * seal need not be checked again while the point keeps its identity. */
	ret = ic_view_open_nomap(mp->gen->chain, mp->pt, &v);
	if (!ret && !mp->seal_ok)
		ret = ic_view_check_seal(v, fs->key);
	if (!ret)
		ret = ic_view_build_map(v);
	if (!ret)
		ret = ic_disk_attach(mp->disk, fs->cache, v);
	if (ret) {
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(ret));
		ic_view_free(v);
		goto out;
	}
	mp->seal_ok = true;
	mp->view = v;
	mp->view_users = 1;
out:
	pthread_mutex_unlock(&mp->mu);
	return ret;
}

static void view_put(struct mpoint *mp)
{
	pthread_mutex_lock(&mp->mu);
	if (--mp->view_users == 0) {
		ic_disk_detach(mp->disk);
		ic_view_free(mp->view);
		mp->view = NULL;
	}
	pthread_mutex_unlock(&mp->mu);
}
/* Make the size of file of mp final: disk-sparse.vmdk's depends on which of the point's
 * grains hold data, found when its view is first attached (ic_disk_sized).  Called and
 * returns under fs->lock, which it drops meanwhile, the point pinned like an open file. */
int mfs_size_file(struct mount_fs *fs, struct mpoint *mp, int file)
{
	int ret;

	if (ic_disk_sized(mp->disk, file))
		return 0;
	mp->handles++;
	pthread_mutex_unlock(&fs->lock);
	ret = view_get(fs, mp);
	if (!ret)
		view_put(mp);
	pthread_mutex_lock(&fs->lock);
	mp->handles--;
	return ret;
}

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
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	h->file = -1;
	fi->fh = (uintptr_t)h;
	return 0;
}

/* Open a disk file: pin the point, attach its view when the file's bytes need it
 * (a seal or index failure is EIO here), and open or create the overlay. */
static int open_file(struct mount_fs *fs, struct where *w, struct fuse_file_info *fi)
{
	bool wr = wants_write(fi->flags);
	struct mpoint *mp = w->mp;
	struct mhandle *h;
	int ret = 0;

	if (wr && (!fs->o.overlay_dir || w->file == IC_DISK_INFO))
		return -EROFS;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->mp = mp;
	h->file = w->file;
	h->fd = -1;
	mp->handles++;
	pthread_mutex_unlock(&fs->lock);
	if (ic_disk_needs_view(w->file)) {
		ret = view_get(fs, mp);
		h->viewed = ret == 0;
	}
	pthread_mutex_lock(&fs->lock);
	/* after the view: the seal passed, and the file's size (the overlay's base) is known */
	if (!ret)
		mfs_ov_get(fs, mp, w->file, wr, &ret);
	if (ret) {
		if (h->viewed) {
			pthread_mutex_unlock(&fs->lock);
			view_put(mp);
			pthread_mutex_lock(&fs->lock);
		}
		mp->handles--;
		free(h);
		return mfs_errno(ret);
	}
	fi->fh = (uintptr_t)h;
	if (!fs->o.overlay_dir) {
		fi->keep_cache = 1;     /* the bytes of a restore point never change */
	} else if (ov_of(w->file) == OV_DISK) {
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
	struct where w;
	int ret;

	pthread_mutex_lock(&fs->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, 0, false);
	else if (w.node == N_NONE)
		ret = -ENOENT;
	else
		ret = -EISDIR;
	pthread_mutex_unlock(&fs->lock);
	if (w.node == N_FILE && !ret && !__atomic_load_n(&fs->ra_tuned, __ATOMIC_RELAXED))
		tune_readahead(fs);
	return ret;
}

int mfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct where w;
	int ret;

	pthread_mutex_lock(&fs->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, mode, true);
	else if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else
		ret = fs->o.overlay_dir && w.node != N_NONE ? -EPERM : -EROFS;
	if (w.node == N_NONE && fs->o.overlay_dir)
		ret = -EPERM;
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

int mfs_release(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;

	(void)path;
	if (h->fd >= 0) {
		close(h->fd);
	} else {
		bool rescan;

		if (h->viewed)
			view_put(h->mp);
		pthread_mutex_lock(&fs->lock);
		h->mp->handles--;
		rescan = fs->force_rescan;
		pthread_mutex_unlock(&fs->lock);
		if (rescan)
			mfs_refresh(fs, true);
	}
	free(h);
	return 0;
}

/* The base of an overlay: the point's own bytes of that file. */
int mfs_base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct mhandle *h = ((struct base_arg *)arg)->h;
	ssize_t n = ic_disk_read(h->mp->disk, h->file, &h->st, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

/* disk-flat.vmdk over the disk's overlay: its bytes, then zeros to a whole sector (the
 * descriptor counts sectors; the overlay, shared with disk.raw, is sized in bytes). */
static ssize_t flat_read(struct ic_overlay *ov, char *buf, size_t size, uint64_t off,
			 struct base_arg *a)
{
	uint64_t end = mfs_flat_size(ic_overlay_size(ov));
	ssize_t n = ic_overlay_read(ov, buf, size, off, mfs_base_read, a);
	size_t want = off < end ? (end - off < size ? (size_t)(end - off) : size) : 0;

	if (n < 0 || (size_t)n >= want)
		return n;
	memset(buf + n, 0, want - (size_t)n);
	return (ssize_t)want;
}

int mfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct base_arg a = { .h = h };
	struct ic_overlay *ov;
	ssize_t n;

	(void)path;
	if (h->fd >= 0) {
		n = pread(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (off < 0)
		return -EINVAL;
	ov = mfs_ov_load(h->mp, h->file);
	if (ov && h->file == IC_DISK_FLAT)
		n = flat_read(ov, buf, size, (uint64_t)off, &a);
	else if (ov)
		n = ic_overlay_read(ov, buf, size, (uint64_t)off, mfs_base_read, &a);
	else
		n = ic_disk_read(h->mp->disk, h->file, &h->st, buf, size, (uint64_t)off);
	return n < 0 ? mfs_errno((int)n) : (int)n;
}

int mfs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}
