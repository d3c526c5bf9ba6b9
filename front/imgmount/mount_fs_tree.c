/* mount_fs_tree.c: the namespace: paths, attributes, directories, and the changes a
 * writable mount allows on the extra files of a point. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "ic_session_cdp.h"
#include "mount_fs_int.h"

/* Resolve path under fs->ss->lock. */
void mfs_resolve(struct mount_fs *fs, const char *path, struct where *w)
{
	const char *name = path + 1, *slash;

	memset(w, 0, sizeof(*w));
	if (!strcmp(path, "/")) {
		w->node = N_ROOT;
		return;
	}
	slash = strchr(name, '/');
	if (!slash && !strcmp(name, ICF_NAME_RESERVED)) {
		w->node = fs->ss->latest[0] ? N_LATEST : N_NONE;
		return;
	}
	w->mp = ic_session_find(fs->ss, name, slash ? (size_t)(slash - name) : strlen(name));
	if (!w->mp || w->mp->gone) {
		w->mp = NULL;
		return;
	}
	if (!slash || !slash[1]) {
		w->node = N_POINT;
		return;
	}
	w->file = ic_disk_file_from_name(slash + 1);
	if (w->file >= 0 && ic_disk_has(w->mp->disk, w->file)) {
		w->node = N_FILE;
		return;
	}
	if (fs->o.overlay_dir) {
		w->node = N_EXTRA;
		w->rest = slash + 1;
	}
}

char *mfs_extra_path(struct mount_fs *fs, const struct ic_spoint *mp, const char *rest)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s%s%s", fs->o.overlay_dir, mp->name, EXTRA_DIR, rest ? "/" : "",
		     rest ? rest : "") < 0)
		return NULL;
	return p;
}

/* mkdir -p OVERLAY/POINT/extra */
int mfs_extra_dir_make(struct mount_fs *fs, const struct ic_spoint *mp)
{
	char *p = ic_path_join(fs->o.overlay_dir, mp->name);
	int ret = 0;

	if (!p || (mkdir(p, 0700) < 0 && errno != EEXIST))
		ret = p ? -errno : -ENOMEM;
	free(p);
	p = ret ? NULL : mfs_extra_path(fs, mp, NULL);
	if (!ret && (!p || (mkdir(p, 0755) < 0 && errno != EEXIST)))
		ret = p ? -errno : -ENOMEM;
	free(p);
	return ret;
}

/* ---- attributes ---------------------------------------------------------------------- */

void mfs_fill_common(struct mount_fs *fs, struct stat *st, mode_t mode, time_t t)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 65536;
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = t;
}

static int file_attr(struct mount_fs *fs, struct ic_spoint *mp, int file, struct stat *st)
{
	const struct ic_disk_info *in = ic_disk_get_info(mp->disk);
	uint64_t size;
	bool rw;
	int ret = ic_session_size_file(fs->ss, mp, file);

	if (ret)
		return mfs_errno(ret);
	ic_session_ov_get(fs->ss, mp, file, false, &ret);
	size = ic_session_size(mp, file);
	/* an overlay made on another point is refused, or it was handed over to another
	 * server (FORMAT.md 10.7): this one is then read-only */
	rw = fs->o.overlay_dir && file != IC_DISK_INFO && !mp->ov_released &&
	     !(ic_session_ov_of(file) >= 0 && mp->ov_refused[ic_session_ov_of(file)]);
	mfs_fill_common(fs, st, S_IFREG | (rw ? 0644 : 0444), in->created);
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	return 0;
}

int mfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct where w;
	int ret = 0;

	struct mhandle *h = fi ? (struct mhandle *)(uintptr_t)fi->fh : NULL;
	const char *rest;

	if (h && h->cdp)
		return mfs_cdp_fgetattr(fs, h, st);
	if (h && h->dir)
		path = h->dir;
	else if (h && h->fd >= 0)
		return fstat(h->fd, st) < 0 ? -errno : 0;
	if (path && !strchr(path + 1, '/'))
		ic_session_refresh(fs->ss, false);
	if ((!h || h->dir) && path && mfs_cdp_path(fs, path, &rest))
		return mfs_cdp_getattr(fs, rest, st);
	pthread_mutex_lock(&fs->ss->lock);
	if (h && !h->dir) {
		w.node = N_FILE;
		w.mp = h->mp;
		w.file = h->file;
	} else if (path) {
		mfs_resolve(fs, path, &w);
	} else {
		w.node = N_NONE;
	}
	switch (w.node) {
	case N_ROOT:
		mfs_fill_common(fs, st, S_IFDIR | 0555, fs->ss->dir_mtime.tv_sec);
		st->st_nlink = 2 + fs->ss->npts;
		break;
	case N_LATEST:
		mfs_fill_common(fs, st, S_IFLNK | 0777, fs->ss->latest_time.tv_sec);
		st->st_size = (off_t)strlen(fs->ss->latest);
		break;
	case N_POINT:
		mfs_fill_common(fs, st, S_IFDIR | (fs->o.overlay_dir ? 0755 : 0555),
			    ic_disk_get_info(w.mp->disk)->created);
		break;
	case N_FILE:
		ret = file_attr(fs, w.mp, w.file, st);
		break;
	case N_EXTRA: {
		char *p = mfs_extra_path(fs, w.mp, w.rest);

		ret = !p ? -ENOMEM : lstat(p, st) < 0 ? -errno : 0;
		free(p);
		break;
	}
	default:
		ret = -ENOENT;
	}
	pthread_mutex_unlock(&fs->ss->lock);
	return ret;
}

int mfs_readlink(const char *path, char *buf, size_t size)
{
	struct mount_fs *fs = mfs_get();
	struct where w;
	int ret = 0;

	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_LATEST) {
		snprintf(buf, size, "%s", fs->ss->latest);
	} else if (w.node == N_EXTRA) {
		char *p = mfs_extra_path(fs, w.mp, w.rest);
		ssize_t n = p ? readlink(p, buf, size - 1) : -1;

		ret = !p ? -ENOMEM : n < 0 ? -errno : 0;
		if (n >= 0)
			buf[n] = '\0';
		free(p);
	} else {
		ret = w.node == N_NONE ? -ENOENT : -EINVAL;
	}
	pthread_mutex_unlock(&fs->ss->lock);
	return ret;
}

static int fill_extras(struct mount_fs *fs, const char *dir, void *buf, fuse_fill_dir_t filler,
		       bool skip_dots)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (skip_dots && (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")))
			continue;
		filler(buf, de->d_name, NULL, 0, 0);
	}
	closedir(d);
	(void)fs;
	return 0;
}

int mfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct mount_fs *fs = mfs_get();
	const char *rest;
	struct where w;
	bool cdp;
	int ret = 0;

	(void)off;
	(void)flags;
	if (!path && fi && fi->fh)
		path = ((struct mhandle *)(uintptr_t)fi->fh)->dir;
	if (!path)
		return -EBADF;
	if (!strcmp(path, "/"))
		ic_session_refresh(fs->ss, false);
	if (mfs_cdp_path(fs, path, &rest))
		return mfs_cdp_readdir(fs, rest, buf, filler);
	cdp = !strcmp(path, "/") && mfs_cdp_path(fs, "/" IC_SCDP_DIR, &rest);
	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	switch (w.node) {
	case N_ROOT:
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t i = 0; i < fs->ss->npts; i++)
			if (!fs->ss->pts[i]->gone)
				filler(buf, fs->ss->pts[i]->name, NULL, 0, 0);
		if (fs->ss->latest[0])
			filler(buf, ICF_NAME_RESERVED, NULL, 0, 0);
		if (cdp)
			filler(buf, IC_SCDP_DIR, NULL, 0, 0);
		break;
	case N_POINT: {
		char *p;

		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (int f = 0; f < IC_DISK_NFILES; f++)
			if (ic_disk_has(w.mp->disk, f))
				filler(buf, ic_disk_file_name(f), NULL, 0, 0);
		if (!fs->o.overlay_dir)
			break;
		p = mfs_extra_path(fs, w.mp, NULL);
		if (p)
			fill_extras(fs, p, buf, filler, true);
		else
			ret = -ENOMEM;
		free(p);
		break;
	}
	case N_EXTRA: {
		char *p = mfs_extra_path(fs, w.mp, w.rest);

		ret = p ? fill_extras(fs, p, buf, filler, false) : -ENOMEM;
		free(p);
		break;
	}
	case N_NONE:
		ret = -ENOENT;
		break;
	default:
		ret = -ENOTDIR;
	}
	pthread_mutex_unlock(&fs->ss->lock);
	return ret;
}

int mfs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = mfs_get();
	struct mhandle *h = mfs_handle_new(fs);

	if (!h || !(h->dir = strdup(path))) {
		mfs_handle_free(fs, h);
		return -ENOMEM;
	}
	fi->fh = (uintptr_t)h;
	return 0;
}

int mfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;

	(void)path;
	mfs_handle_free(mfs_get(), h);
	return 0;
}

/* ---- namespace changes (overlay mode, extra files only) ------------------------------- */

/* Resolve path for a change: the real path of an extra entry, or an errno. */
int mfs_change_path(struct mount_fs *fs, const char *path, char **out)
{
	struct where w;
	int ret = 0;

	*out = NULL;
	if (!fs->o.overlay_dir)
		return -EROFS;
	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	if (w.node == N_EXTRA) {
		ret = mfs_extra_dir_make(fs, w.mp);
		if (!ret && !(*out = mfs_extra_path(fs, w.mp, w.rest)))
			ret = -ENOMEM;
	} else {
		ret = -EPERM;
	}
	pthread_mutex_unlock(&fs->ss->lock);
	return ret;
}

int mfs_mkdir(const char *path, mode_t mode)
{
	char *p;
	int ret = mfs_change_path(mfs_get(), path, &p);

	if (!ret && mkdir(p, mode) < 0)
		ret = -errno;
	free(p);
	return ret;
}

int mfs_rmdir(const char *path)
{
	char *p;
	int ret = mfs_change_path(mfs_get(), path, &p);

	if (!ret && rmdir(p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

int mfs_unlink(const char *path)
{
	char *p;
	int ret = mfs_change_path(mfs_get(), path, &p);

	if (!ret && unlink(p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

int mfs_symlink(const char *target, const char *path)
{
	char *p;
	int ret = mfs_change_path(mfs_get(), path, &p);

	if (!ret && symlink(target, p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

int mfs_rename(const char *from, const char *to, unsigned int flags)
{
	struct mount_fs *fs = mfs_get();
	char *a = NULL, *b = NULL;
	const char *sa, *sb;
	int ret;

	/* only within one point's directory: each point keeps its own extra files */
	sa = strchr(from + 1, '/');
	sb = strchr(to + 1, '/');
	if (!sa || !sb || sa - from != sb - to || strncmp(from, to, (size_t)(sa - from)))
		return fs->o.overlay_dir ? -EXDEV : -EROFS;
	ret = mfs_change_path(fs, from, &a);
	if (!ret)
		ret = mfs_change_path(fs, to, &b);
	if (!ret && renameat2(AT_FDCWD, a, AT_FDCWD, b, flags) < 0)
		ret = -errno;
	free(a);
	free(b);
	return ret;
}

/* chmod, chown and utimens: real on extra files; accepted and ignored on the disk
 * files of a writable mount (copy tools and hypervisors set them), EROFS otherwise. */
static int attr_change(const char *path, int (*fn)(const char *p, const void *arg),
		       const void *arg)
{
	struct mount_fs *fs = mfs_get();
	struct where w;
	char *p;
	int ret;

	if (!path)
		return 0;
	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	pthread_mutex_unlock(&fs->ss->lock);
	if (w.node == N_NONE)
		return -ENOENT;
	if (w.node != N_EXTRA)
		return fs->o.overlay_dir ? 0 : -EROFS;
	ret = mfs_change_path(fs, path, &p);
	if (!ret)
		ret = fn(p, arg);
	free(p);
	return ret;
}

static int do_chmod(const char *p, const void *arg)
{
	return chmod(p, *(const mode_t *)arg) < 0 ? -errno : 0;
}

static int do_chown(const char *p, const void *arg)
{
	const unsigned *ids = arg;

	return lchown(p, (uid_t)ids[0], (gid_t)ids[1]) < 0 ? -errno : 0;
}

static int do_utimens(const char *p, const void *arg)
{
	return utimensat(AT_FDCWD, p, arg, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int mfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	return attr_change(path, do_chmod, &mode);
}

int mfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	unsigned ids[2] = { (unsigned)uid, (unsigned)gid };

	(void)fi;
	return attr_change(path, do_chown, ids);
}

int mfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	(void)fi;
	return attr_change(path, do_utimens, tv);
}

int mfs_statfs(const char *path, struct statvfs *st)
{
	struct mount_fs *fs = mfs_get();

	(void)path;
	if (statvfs(fs->o.overlay_dir ? fs->o.overlay_dir : fs->o.chain_dir, st) < 0)
		return -errno;
	st->f_namemax = ICF_NAME_MAX;
	return 0;
}
