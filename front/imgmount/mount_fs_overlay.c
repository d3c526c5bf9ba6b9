/* mount_fs_overlay.c: copy-on-write overlays of a point's disk files: opening them,
 * the write, truncate and fsync paths. */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <unistd.h>

#include "ic_lock.h"

#include "mount_fs_int.h"

static const char *const ov_names[OV_N] = { "disk.raw", "disk.vmdk", "disk-sparse.vmdk" };

static char *ov_prefix(struct mount_fs *fs, const struct mpoint *mp, int k)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s", fs->o.overlay_dir, mp->name, ov_names[k]) < 0)
		return NULL;
	return p;
}

static bool ov_exists(const char *prefix)
{
	char path[PATH_MAX];
	struct stat sb;

	snprintf(path, sizeof(path), "%s.map", prefix);
	if (stat(path, &sb) == 0)
		return true;
	snprintf(path, sizeof(path), "%s.data", prefix);
	return stat(path, &sb) == 0;
}

/* What an overlay of mp belongs to: the chain and the point's seal, which authenticates the
 * point's whole block map, name, seq, creation time and disk size.  A merge that keeps the
 * point's content keeps its seal, so its overlays stay; another point of the same name has
 * another seal.  The seal is the slot's, checked with the key before any byte is served. */
static void ov_binding(const struct mpoint *mp, struct ic_overlay_bind *b)
{
	const struct icf_slot *s = &mp->pt->img->slot;
	int n;

	memset(b, 0, sizeof(*b));
	memcpy(b->id, ic_disk_get_info(mp->disk)->chain_id, ICF_ID_LEN);
	memcpy(b->id + ICF_ID_LEN, s->seal, ICF_SEAL_LEN);
	n = snprintf(b->label, sizeof(b->label), "restore point '%s' (seq %u, seal ", mp->name,
		     s->seq);
	for (int i = 0; i < 8 && n > 0 && (size_t)n + 3 < sizeof(b->label); i++, n += 2)
		snprintf(b->label + n, 3, "%02x", s->seal[i]);
	if (n > 0 && (size_t)n + 2 < sizeof(b->label))
		memcpy(b->label + n, ")", 2);
}

/* The overlay of file f of mp: opened if it exists on disk, or created when create.
 * Returns NULL (ret 0) when there is none.  An overlay made on another point (or of the
 * unbound version 1) is refused once, logged, and never touched: the point is then served
 * without it, read-only (ret -EROFS when create).  Under fs->lock. */
struct ic_overlay *mfs_ov_get(struct mount_fs *fs, struct mpoint *mp, int file, bool create,
			      int *ret)
{
	struct ic_overlay *ov = NULL;
	int k = ov_of(file);
	char *prefix, *dir;
	struct stat sb;

	*ret = 0;
	if (!fs->o.overlay_dir || k < 0)
		return NULL;
	/* an overlay's base size must be the file's final one (mfs_size_file first) */
	if (!ic_disk_sized(mp->disk, file)) {
		*ret = create ? -EIO : 0;
		return NULL;
	}
	if (mp->ov_refused[k])
		*ret = create ? -EROFS : 0;
	if (mp->ov[k] || mp->ov_refused[k] || (mp->ov_probed[k] && !create))
		return mp->ov[k];
	prefix = ov_prefix(fs, mp, k);
	if (!prefix) {
		*ret = -ENOMEM;
		return NULL;
	}
	mp->ov_probed[k] = true;
	if (!create && !ov_exists(prefix)) {
		free(prefix);
		return NULL;
	}
	dir = ic_path_join(fs->o.overlay_dir, mp->name);
	if (!dir)
		*ret = ic_fail(-ENOMEM, "%s/%s: %s", fs->o.overlay_dir, mp->name, strerror(ENOMEM));
	else if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		*ret = ic_fail(-errno, "%s: %s", dir, strerror(errno));
	else if (lstat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode))    /* never through a link */
		*ret = ic_fail(IC_ECORRUPT, "%s: not a directory (%s): refused", dir,
			       ic_file_kind(sb.st_mode));
	free(dir);
	if (!*ret) {
		struct ic_overlay_bind b;

		ov_binding(mp, &b);
		/* disk.raw's size for both names of the disk (disk-flat.vmdk pads it) */
		*ret = ic_overlay_open(prefix, ic_disk_size(mp->disk, k == OV_DISK ? IC_DISK_RAW :
							    file), &b, &ov);
	}
	if (*ret == -ESTALE) {
		mount_log(LOG_ERR, "%s: not applied, '%s' is served read-only",
			  ic_last_error(*ret), mp->name);
		mp->ov_refused[k] = true;
		*ret = create ? -EROFS : 0;
		ov = NULL;
	} else if (*ret) {
		mount_log(LOG_ERR, "overlay %s: %s", prefix, ic_last_error(*ret));
		ov = NULL;
	} else {
		/* mfs_read and mfs_write load it without fs->lock: publish it fully built */
		__atomic_store_n(&mp->ov[k], ov, __ATOMIC_RELEASE);
		/* tell imgconsolidate not to merge this point away while we serve it writable */
		if (!mp->ov_locked && ic_lock_hold(mp->pt->img->fd, IC_LOCK_OVERLAY) == 0)
			mp->ov_locked = true;
	}
	free(prefix);
	return ov;
}

struct ic_overlay *mfs_ov_load(struct mpoint *mp, int file)
{
	int k = ov_of(file);

	return k < 0 ? NULL : __atomic_load_n(&mp->ov[k], __ATOMIC_ACQUIRE);
}
int mfs_write(const char *path, const char *buf, size_t size, off_t off,
	      struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct base_arg a = { .h = h };
	struct ic_overlay *ov;
	ssize_t n;
	int ret = 0;

	(void)path;
	if (h->fd >= 0) {
		n = pwrite(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (!fs->o.overlay_dir || h->file == IC_DISK_INFO)
		return -EROFS;
	ov = mfs_ov_load(h->mp, h->file);
	if (!ov) {
		pthread_mutex_lock(&fs->lock);
		ov = mfs_ov_get(fs, h->mp, h->file, true, &ret);
		pthread_mutex_unlock(&fs->lock);
		if (!ov)
			return mfs_errno(ret ? ret : -EIO);
	}
	n = ic_overlay_write(ov, buf, size, (uint64_t)off, mfs_base_read, &a);
	if (n < 0)
		mount_log(LOG_ERR, "restore point '%s': write to %s: %s", h->mp->name,
			  ic_disk_file_name(h->file), ic_last_error((int)n));
	return n < 0 ? mfs_errno((int)n) : (int)n;
}

int mfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct ic_overlay *ov;
	int ret;

	(void)path;
	if (h->fd >= 0)
		return (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
	ov = mfs_ov_load(h->mp, h->file);
	if (!ov)
		return 0;
	ret = ic_overlay_fsync(ov);
	if (ret)
		mount_log(LOG_ERR, "restore point '%s': fsync of %s: %s", h->mp->name,
			  ic_disk_file_name(h->file), ic_last_error(ret));
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
	pthread_mutex_lock(&fs->lock);
	if (h) {
		w.node = N_FILE;
		w.mp = h->mp;
		w.file = h->file;
	} else {
		mfs_resolve(fs, path, &w);
	}
	if (w.node == N_FILE && w.file != IC_DISK_INFO) {
		ret = mfs_size_file(fs, w.mp, w.file);
		if (!ret)
			ov = mfs_ov_get(fs, w.mp, w.file, true, &ret);
		if (ov)
			ret = ic_overlay_truncate(ov, (uint64_t)size);
		else if (!ret)
			ret = -EIO;
		pthread_mutex_unlock(&fs->lock);
		return ret ? mfs_errno(ret) : 0;
	}
	pthread_mutex_unlock(&fs->lock);
	if (w.node == N_FILE)
		return -EROFS;
	ret = mfs_change_path(fs, path, &p);
	if (!ret && truncate(p, size) < 0)
		ret = -errno;
	free(p);
	return ret;
}
