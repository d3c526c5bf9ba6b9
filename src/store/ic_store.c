/* ic_store.c: the chain directory as a store (ic_store.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_image.h"
#include "ic_keys.h"
#include "ic_store.h"
#include "ic_util.h"

/* Read at most len bytes; a longer file is reported by decode as a bad size. */
static ssize_t read_upto(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int ic_store_read_file(const char *dir, const char *name, size_t max, char **buf, size_t *len)
{
	char *path = ic_path_join(dir, name);
	struct stat st;
	size_t cap;
	ssize_t n;
	int fd, ret;

	*buf = NULL;
	*len = 0;
	if (!path)
		return -ENOMEM;
	ret = ic_open_regular(AT_FDCWD, dir, name, O_RDONLY, 0, &fd);
	if (ret)
		goto out;
	if (fstat(fd, &st) < 0) {
		ret = ic_fail(-errno, "%s: stat: %s", path, strerror(errno));
		goto out_close;
	}
	/* what the file holds, at most max + 1 (a file that grew is seen to be too large) */
	cap = (uint64_t)st.st_size > max ? max + 1 : (size_t)st.st_size + 1;
	*buf = malloc(cap + 1);
	if (!*buf) {
		ret = ic_fail(-ENOMEM, "out of memory");
		goto out_close;
	}
	n = read_upto(fd, *buf, cap);
	if (n < 0) {
		ret = ic_fail((int)n, "%s: read: %s", path, strerror((int)-n));
		free(*buf);
		*buf = NULL;
		goto out_close;
	}
	(*buf)[n] = 0;
	*len = (size_t)n;
out_close:
	close(fd);
out:
	free(path);
	return ret;
}

/* Write buf[len] to dir/tname (created afresh), then rename it over dir/name. */
static int write_via(const char *dir, const char *tname, const char *name, const void *buf,
		     size_t len)
{
	char *tmp = ic_path_join(dir, tname), *dst = ic_path_join(dir, name);
	int fd, ret;

	ret = tmp && dst ? ic_create_tmp(AT_FDCWD, dir, tname, O_WRONLY, 0600, &fd) : -ENOMEM;
	if (!ret) {
		ret = ic_pwrite_full(fd, buf, len, 0, tmp);
		close(fd);
		if (!ret && rename(tmp, dst) < 0)
			ret = ic_fail(-errno, "%s: rename: %s", dst, strerror(errno));
		if (ret)
			unlink(tmp);
	}
	free(tmp);
	free(dst);
	return ret;
}

int ic_store_write_file(const char *dir, const char *name, const void *buf, size_t len,
			bool durable)
{
	char tname[256];

	if (durable)
		return ic_write_file_atomic(dir, name, buf, len, 0600);
	snprintf(tname, sizeof(tname), ".tmp-%s", name);
	return write_via(dir, tname, name, buf, len);
}

int ic_store_write_file_shared(const char *dir, const char *name, const void *buf, size_t len)
{
	char tname[256];

	snprintf(tname, sizeof(tname), ".tmp-%s-%ld", name, (long)getpid());
	return write_via(dir, tname, name, buf, len);
}

int ic_store_remove(const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return ic_fail(-errno, "%s: remove: %s", path, strerror(errno));
	return 0;
}

int ic_store_rename(const char *from, const char *to)
{
	if (rename(from, to) < 0)
		return ic_fail(-errno, "%s: rename to %s: %s", from, to, strerror(errno));
	return 0;
}

int ic_store_put(const char *tmp, const char *to)
{
	struct stat st;

	if (fstatat(AT_FDCWD, tmp, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -ENOENT;
	if (!S_ISREG(st.st_mode))
		return ic_fail(IC_ECORRUPT, "%s: not a regular file (%s): refused", tmp,
			       ic_file_kind(st.st_mode));
	if (rename(tmp, to) < 0)
		return ic_fail(-errno, "%s: rename: %s", to, strerror(errno));
	return 0;
}

int ic_store_sync(const char *dir)
{
	return ic_fsync_dir(dir);
}

int ic_store_truncate(struct ic_image *img, uint64_t len)
{
	if (ftruncate(img->fd, (off_t)len) < 0)
		return ic_fail(-errno, "%s: truncate: %s", img->path, strerror(errno));
	return ic_fsync(img->fd, img->path);
}

uint64_t ic_store_allocated(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t sum = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			sum += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

int ic_store_create(const char *dir, bool *created)
{
	struct stat st;

	*created = false;
	if (stat(dir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return ic_fail(-ENOTDIR, "%s: not a directory", dir);
		return 0;
	}
	if (errno != ENOENT)
		return ic_fail(-errno, "%s: %s", dir, strerror(errno));
	if (mkdir(dir, 0700) < 0)
		return ic_fail(-errno, "%s: create chain directory: %s", dir, strerror(errno));
	*created = true;
	return 0;
}

bool ic_store_exists(const char *dir, const char *name)
{
	char *path = ic_path_join(dir, name);
	bool yes = path && faccessat(AT_FDCWD, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0;

	free(path);
	return yes;
}

void ic_store_discard(const char *dir)
{
	char *k = ic_path_join(dir, ICF_KEYFILE_NAME);
	char *l = ic_path_join(dir, ICF_LOCK_NAME);

	if (k)
		unlink(k);
	if (l)
		unlink(l);
	rmdir(dir);
	free(k);
	free(l);
}

/* ---- the key file: bytes from the store, encoding and decoding by ic_keys ----------- */

#define IC_KF_MAX (sizeof(struct icf_keyfile) + ICF_KEY_GEN_MAX * sizeof(struct icf_key_gen))

int ic_keyfile_load(const char *chain_dir, struct ic_keyfile *kf)
{
	char *path = ic_path_join(chain_dir, ICF_KEYFILE_NAME);
	char *buf;
	size_t n;
	int ret = path ? ic_store_read_file(chain_dir, ICF_KEYFILE_NAME, IC_KF_MAX, &buf, &n)
		       : -ENOMEM;

	if (!path)
		return ret;
	if (ret == -ENOENT)
		ret = ic_fail(ret, "%s: no key file (is %s an imgchain chain?)", path, chain_dir);
	if (!ret)
		ret = ic_keyfile_decode(buf, n, kf, path);
	free(buf);
	free(path);
	return ret;
}

int ic_keyfile_store(const char *chain_dir, const struct ic_keyfile *kf)
{
	uint8_t *buf = malloc(IC_KF_MAX);
	size_t n;
	int ret;

	if (!buf)
		return ic_fail(-ENOMEM, "out of memory");
	n = ic_keyfile_encode(kf, buf);
	ret = ic_store_write_file(chain_dir, ICF_KEYFILE_NAME, buf, n, true);
	free(buf);
	return ret;
}
