/* ic_dest.c: a block-sync restore's destination: file, block device or NBD export. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "ic_dest.h"
#include "ic_util.h"

bool ic_dest_is_uri(const char *name)
{
	static const char *const schemes[] = { "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
					       "nbd+vsock://" };

	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (!strncmp(name, schemes[i], strlen(schemes[i])))
			return true;
	return false;
}

static int nbd_err(struct ic_dest *d, const char *what)
{
	int e = nbd_get_errno() ? nbd_get_errno() : EIO;

	return ic_fail(-e, "%s: %s: %s", d->name, what, nbd_get_error());
}

static int open_nbd(struct ic_dest *d, uint64_t size)
{
	int64_t n;

	d->nbd = nbd_create();
	if (!d->nbd)
		return nbd_err(d, "libnbd");
	if (nbd_connect_uri(d->nbd, d->name) < 0)
		return nbd_err(d, "connect");
	if (nbd_is_read_only(d->nbd) == 1)
		return ic_fail(-EROFS, "%s: the export is read-only", d->name);
	n = nbd_get_size(d->nbd);
	if (n < 0)
		return nbd_err(d, "size");
	d->size = (uint64_t)n;
	if (d->size < size)
		return ic_fail(-ENOSPC, "%s: export is smaller than the disk (%llu bytes)", d->name,
			       (unsigned long long)size);
	return 0;
}

int ic_dest_open(struct ic_dest *d, const char *name, bool reading, bool create, uint64_t size)
{
	int flags = (reading ? O_RDWR : O_WRONLY) | O_CLOEXEC;
	struct stat st;

	memset(d, 0, sizeof(*d));
	d->name = name;
	d->fd = -1;
	if (ic_dest_is_uri(name))
		return open_nbd(d, size);
	d->fd = open(name, flags);
	if (d->fd < 0 && errno == ENOENT && create)
		d->fd = open(name, flags | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
	if (d->fd < 0)
		return ic_fail(-errno, "%s: %s", name, strerror(errno));
	if (fstat(d->fd, &st) < 0)
		return ic_fail(-errno, "%s: %s", name, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(d->fd, BLKGETSIZE64, &d->size) < 0 || d->size < size)
			return ic_fail(-ENOSPC, "%s: device is smaller than the disk (%llu bytes)",
				       name, (unsigned long long)size);
		return 0;
	}
	if (!S_ISREG(st.st_mode))
		return ic_fail(-EINVAL, "%s: not a regular file or block device", name);
	d->regular = true;
	d->size = (uint64_t)st.st_size;
	if (reading)
		posix_fadvise(d->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return 0;
}

int ic_dest_resize(struct ic_dest *d, uint64_t size)
{
	if (!d->regular || d->size == size || ftruncate(d->fd, (off_t)size) == 0)
		return 0;
	return ic_fail(-errno, "%s: set size: %s", d->name, strerror(errno));
}

int ic_dest_pread(struct ic_dest *d, void *buf, size_t len, uint64_t off)
{
	if (!d->nbd)
		return ic_pread_full(d->fd, buf, len, off, d->name);
	return nbd_pread(d->nbd, buf, len, off, 0) < 0 ? nbd_err(d, "read") : 0;
}

int ic_dest_pwrite(struct ic_dest *d, const void *buf, size_t len, uint64_t off)
{
	if (!d->nbd)
		return ic_pwrite_full(d->fd, buf, len, off, d->name);
	return nbd_pwrite(d->nbd, buf, len, off, 0) < 0 ? nbd_err(d, "write") : 0;
}

int ic_dest_zero(struct ic_dest *d, size_t len, uint64_t off)
{
	if (d->nbd) {
		if (nbd_can_zero(d->nbd) != 1)
			return 0;
		return nbd_zero(d->nbd, len, off, 0) < 0 ? nbd_err(d, "write zeroes") : 1;
	}
	if (!d->regular)
		return 0;
	if (!fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len))
		return 1;
	if (errno == EOPNOTSUPP || errno == ENOSYS)
		return 0;
	return ic_fail(-errno, "%s: punch a hole: %s", d->name, strerror(errno));
}

int ic_dest_flush(struct ic_dest *d)
{
	if (!d->nbd)
		return ic_fsync(d->fd, d->name);
	if (nbd_can_flush(d->nbd) != 1)
		return 0;
	return nbd_flush(d->nbd, 0) < 0 ? nbd_err(d, "flush") : 0;
}

void ic_dest_close(struct ic_dest *d)
{
	if (d->fd >= 0)
		close(d->fd);
	if (d->nbd) {
		nbd_shutdown(d->nbd, 0);
		nbd_close(d->nbd);
	}
	d->fd = -1;
	d->nbd = NULL;
}
