/* mount_fs_cdp.c: the `cdp/` directory: one directory per checkpoint of the chain's CDP
 * journal that `imgrestore --at` offers, named by its UTC time, holding `disk.raw`
 * (read-only; ic_session_cdp.h).  Shown when the chain has a journal and no restore
 * point is called `cdp` (the point wins). */
#include "config.h"

#include <stdio.h>

#include "ic_session_cdp.h"
#include "mount_fs_int.h"

bool mfs_cdp_path(struct mount_fs *fs, const char *path, const char **rest)
{
	size_t n = strlen(IC_SCDP_DIR);
	bool point;

	if (path[0] != '/' || strncmp(path + 1, IC_SCDP_DIR, n) ||
	    (path[1 + n] && path[1 + n] != '/'))
		return false;
	pthread_mutex_lock(&fs->ss->lock);
	point = ic_session_find(fs->ss, IC_SCDP_DIR, n) != NULL;
	pthread_mutex_unlock(&fs->ss->lock);
	if (point || !ic_scdp_present(fs->ss))
		return false;
	*rest = path + 1 + n;
	return true;
}

/* What a path below cdp/ names. */
struct cdp_path {
	const char *name;           /* the checkpoint's name, len bytes; len 0: cdp/ itself */
	size_t len;
	bool file;                  /* NAME/disk.raw */
	struct ic_scdp_info in;     /* the checkpoint (len > 0) */
};

/* What rest names: "" or "/" the directory, "/NAME" or "/NAME/" a checkpoint's
 * directory, "/NAME/disk.raw" its file.  -ENOENT for anything else, another errno for a
 * journal that cannot be read. */
static int resolve(struct mount_fs *fs, const char *rest, struct cdp_path *c)
{
	const char *slash;
	int ret;

	memset(c, 0, sizeof(*c));
	if (!rest[0] || !strcmp(rest, "/"))
		return 0;
	c->name = rest + 1;
	slash = strchr(c->name, '/');
	c->len = slash ? (size_t)(slash - c->name) : strlen(c->name);
	if (!c->len || (slash && slash[1] && strcmp(slash + 1, IC_SCDP_FILE)))
		return -ENOENT;
	c->file = slash && slash[1];
	ret = ic_scdp_find(fs->ss, c->name, c->len, &c->in);
	return !ret || ret == -ENOENT ? ret : mfs_errno(ret);
}

int mfs_cdp_getattr(struct mount_fs *fs, const char *rest, struct stat *st)
{
	struct cdp_path c;
	int ret = resolve(fs, rest, &c);

	if (ret)
		return ret;
	if (!c.len) {
		mfs_fill_common(fs, st, S_IFDIR | 0555, fs->ss->dir_mtime.tv_sec);
	} else if (!c.file) {
		mfs_fill_common(fs, st, S_IFDIR | 0555, c.in.when.tv_sec);
	} else {
		mfs_fill_common(fs, st, S_IFREG | 0444, c.in.when.tv_sec);
		st->st_mtim = c.in.when;
		st->st_size = (off_t)c.in.disk_size;
		st->st_blocks = (blkcnt_t)((c.in.disk_size + 511) / 512);
	}
	return 0;
}

int mfs_cdp_fgetattr(struct mount_fs *fs, struct mhandle *h, struct stat *st)
{
	uint64_t size = ic_scdp_size(h->cdp);

	mfs_fill_common(fs, st, S_IFREG | 0444, 0);
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	return 0;
}

struct lister {
	void *buf;
	fuse_fill_dir_t filler;
};

static int list_one(void *arg, const struct ic_scdp_info *c)
{
	struct lister *l = arg;

	l->filler(l->buf, c->name, NULL, 0, 0);
	return 0;
}

int mfs_cdp_readdir(struct mount_fs *fs, const char *rest, void *buf, fuse_fill_dir_t filler)
{
	struct lister l = { buf, filler };
	struct cdp_path c;
	int ret = resolve(fs, rest, &c);

	if (ret)
		return ret;
	if (c.file)
		return -ENOTDIR;
	filler(buf, ".", NULL, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	if (c.len) {
		filler(buf, IC_SCDP_FILE, NULL, 0, 0);
		return 0;
	}
	ret = ic_scdp_each(fs->ss, list_one, &l);
	return ret ? mfs_errno(ret) : 0;
}

int mfs_cdp_open(struct mount_fs *fs, const char *rest, struct fuse_file_info *fi)
{
	struct mhandle *h;
	struct cdp_path c;
	int ret = resolve(fs, rest, &c);

	if (ret)
		return ret;
	if (!c.file)
		return -EISDIR;
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	h = mfs_handle_new(fs);
	if (!h)
		return -ENOMEM;
	ret = ic_scdp_open(fs->ss, c.name, c.len, &h->cdp);
	if (ret) {
		mfs_handle_free(fs, h);
		return ret == -ENOENT ? ret : mfs_errno(ret);
	}
	fi->fh = (uintptr_t)h;
	fi->keep_cache = 1;     /* a checkpoint's bytes never change */
	return 0;
}
