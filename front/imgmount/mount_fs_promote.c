/* mount_fs_promote.c: the control channel of a live promote (imgpromote): extended
 * attributes of a point's disk.raw (or disk-flat.vmdk).
 *
 *   setxattr user.imgchain.promote = DEST       start promoting the disk to DEST (an
 *            [ "\nrate=" BYTES_PER_SECOND ]     absolute path), the copy limited to that
 *                                               rate if given; EALREADY is success
 *   getxattr user.imgchain.promote              "phase=... copied=N size=N dest=PATH
 *                                               [error=MESSAGE]" (ic_promote_status)
 *   getxattr user.imgchain.promote.error        why the last start failed ("" if none)
 *
 * DEST is a path the daemon opens with its own rights: only the daemon's user (or root)
 * may start a promote, even on a mount with allow_other (EPERM for anyone else). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ic_promote.h"
#include "mount_fs_int.h"

#define XA_PROMOTE "user.imgchain.promote"
#define XA_ERROR "user.imgchain.promote.error"

static pthread_mutex_t err_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_err[1024];

/* The point of path if it names its disk (disk.raw or disk-flat.vmdk). */
static struct ic_spoint *disk_of(struct mount_fs *fs, const char *path)
{
	struct where w;

	pthread_mutex_lock(&fs->ss->lock);
	mfs_resolve(fs, path, &w);
	pthread_mutex_unlock(&fs->ss->lock);
	if (w.node != N_FILE || (w.file != IC_DISK_RAW && w.file != IC_DISK_FLAT))
		return NULL;
	return w.mp;     /* a point is freed only when gone and idle: the caller's is pinned */
}

int mfs_setxattr(const char *path, const char *name, const char *value, size_t size,
		 int flags)
{
	struct mount_fs *fs = mfs_get();
	struct ic_spoint *sp;
	char dest[IC_PROMOTE_DEST_MAX + 64], *nl, *end;
	unsigned long long rate = 0;
	int ret;

	(void)flags;
	if (strcmp(name, XA_PROMOTE))
		return -ENOTSUP;
	if (fuse_get_context()->uid != 0 && fuse_get_context()->uid != getuid())
		return -EPERM;
	sp = path ? disk_of(fs, path) : NULL;
	if (!sp)
		return -ENOTSUP;
	if (size == 0 || size >= sizeof(dest) || memchr(value, '\0', size) || value[0] != '/')
		return -EINVAL;
	memcpy(dest, value, size);
	dest[size] = '\0';
	nl = strchr(dest, '\n');
	if (nl) {
		*nl = '\0';
		if (strncmp(nl + 1, "rate=", 5) || nl[6] < '0' || nl[6] > '9')
			return -EINVAL;
		errno = 0;
		rate = strtoull(nl + 6, &end, 10);
		if (errno || *end)
			return -EINVAL;
	}
	ret = ic_promote_start(fs->ss, sp, dest, rate);
	if (ret == -EALREADY)
		ret = 0;
	pthread_mutex_lock(&err_mu);
	snprintf(last_err, sizeof(last_err), "%s", ret ? ic_last_error(ret) : "");
	pthread_mutex_unlock(&err_mu);
	if (ret)
		mount_log(LOG_ERR, "promote of '%s' to %s: %s", sp->name, dest, ic_last_error(ret));
	return ret ? mfs_errno(ret) : 0;
}

int mfs_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct mount_fs *fs = mfs_get();
	struct ic_spoint *sp = path ? disk_of(fs, path) : NULL;
	char buf[IC_PROMOTE_DEST_MAX + 1200];
	size_t n;

	if (!sp)
		return -ENODATA;
	if (!strcmp(name, XA_PROMOTE)) {
		ic_promote_status(sp, buf, sizeof(buf));
	} else if (!strcmp(name, XA_ERROR)) {
		pthread_mutex_lock(&err_mu);
		snprintf(buf, sizeof(buf), "%s", last_err);
		pthread_mutex_unlock(&err_mu);
	} else {
		return -ENODATA;
	}
	n = strlen(buf);
	if (size == 0)
		return (int)n;
	if (size < n)
		return -ERANGE;
	memcpy(value, buf, n);
	return (int)n;
}
