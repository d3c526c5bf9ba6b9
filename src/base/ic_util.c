/* ic_util.c: careful file I/O, signals and small helpers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <endian.h>
#include <sys/stat.h>

#include "imgchain_format.h"
#include "ic_util.h"

volatile sig_atomic_t ic_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	ic_interrupted = 1;
}

void ic_install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

int ic_pread_full(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ic_fail(-errno, "%s: read at offset %llu: %s", path,
				       (unsigned long long)off, strerror(errno));
		}
		if (n == 0)
			return ic_fail(IC_ECORRUPT, "%s: truncated: needs %zu more bytes at offset %llu",
				       path, len, (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int ic_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, const char *path)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return ic_fail(-errno, "%s: write at offset %llu: %s", path,
				       (unsigned long long)off, strerror(errno));
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int ic_fsync(int fd, const char *path)
{
	if (fsync(fd) < 0)
		return ic_fail(-errno, "%s: fsync: %s", path, strerror(errno));
	return 0;
}

int ic_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return ic_fail(-errno, "%s: open directory: %s", dir, strerror(errno));
	ret = ic_fsync(fd, dir);
	close(fd);
	return ret;
}

char *ic_path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

const char *ic_file_kind(mode_t mode)
{
	if (S_ISREG(mode))
		return "regular file";
	if (S_ISLNK(mode))
		return "symlink";
	if (S_ISFIFO(mode))
		return "FIFO";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "device";
	if (S_ISDIR(mode))
		return "directory";
	if (S_ISSOCK(mode))
		return "socket";
	return "unknown type";
}

char *ic_sanitize(const char *s, size_t n, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n && s[i] && s[i] != '\n'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= len)
				break;
			buf[o++] = (char)c;
		} else {
			if (o + 4 >= len)
				break;
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = '\0';
	return buf;
}

/* The path for messages, and the name to give openat with dirfd.  NULL: no memory. */
static char *reg_path(int dirfd, const char *dir, const char *name, const char **at)
{
	char *path = dir ? ic_path_join(dir, name) : strdup(name);

	*at = dirfd == AT_FDCWD ? path : name;
	return path;
}

static int not_regular(const char *path, mode_t mode)
{
	char safe[600];

	return ic_fail(IC_ECORRUPT, "%s: not a regular file (%s): refused",
		       ic_sanitize(path, strlen(path), safe, sizeof(safe)), ic_file_kind(mode));
}

/* What the name holds now, after an open failed: a plant, or the error itself. */
static int open_failed(int dirfd, const char *at, const char *path, int e)
{
	struct stat st;

	if (fstatat(dirfd, at, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode))
		return not_regular(path, st.st_mode);
	return ic_fail(-e, "%s: open: %s", path, strerror(e));
}

int ic_open_regular(int dirfd, const char *dir, const char *name, int flags, mode_t mode,
		    int *fd_out)
{
	const int o = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
	const char *at;
	char *path = reg_path(dirfd, dir, name, &at), proc[64];
	struct stat st;
	int fd = -1, pfd, ret = 0, e;

	*fd_out = -1;
	if (!path)
		return -ENOMEM;
	for (int tries = 0;; tries++) {
		/* look at what the name holds without opening it (O_PATH): opening a FIFO
		 * blocks, opening a device runs its driver */
		pfd = openat(dirfd, at, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (pfd >= 0)
			break;
		if (errno != ENOENT || !(flags & O_CREAT)) {
			ret = ic_fail(-errno, "%s: %s", path, strerror(errno));
			goto out;
		}
		/* missing: create it, never through a name that appeared meanwhile */
		fd = openat(dirfd, at, flags | O_EXCL | o, mode);
		if (fd >= 0)
			goto check;
		if (errno != EEXIST || (flags & O_EXCL) || tries == 3) {
			ret = open_failed(dirfd, at, path, errno);
			goto out;
		}
	}
	if (fstat(pfd, &st) < 0)
		ret = ic_fail(-errno, "%s: stat: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		ret = not_regular(path, st.st_mode);
	if (ret) {
		close(pfd);
		goto out;
	}
	if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
		close(pfd);
		ret = ic_fail(-EEXIST, "%s: create: %s", path, strerror(EEXIST));
		goto out;
	}
	/* open the inode looked at, not the name (which may hold something else by now) */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, (flags & ~(O_CREAT | O_EXCL)) | (o & ~O_NOFOLLOW));
	if (fd < 0 && errno == ENOENT)    /* no /proc: by name, checked below */
		fd = openat(dirfd, at, (flags & ~(O_CREAT | O_EXCL)) | o);
	e = errno;
	close(pfd);
	if (fd < 0) {
		ret = open_failed(dirfd, at, path, e);
		goto out;
	}
check:
	if (fstat(fd, &st) < 0)
		ret = ic_fail(-errno, "%s: stat: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		ret = not_regular(path, st.st_mode);
	if (ret) {
		close(fd);
		goto out;
	}
	if (!(flags & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*fd_out = fd;
out:
	free(path);
	return ret;
}

int ic_create_tmp(int dirfd, const char *dir, const char *name, int flags, mode_t mode,
		  int *fd)
{
	const char *at;
	char *path = reg_path(dirfd, dir, name, &at);
	struct stat st;
	int ret = 0;

	*fd = -1;
	if (!path)
		return -ENOMEM;
	if (fstatat(dirfd, at, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		/* a leftover or a plant: remove the name (a link itself, never its target) */
		if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
			ret = not_regular(path, st.st_mode);
		else if (unlinkat(dirfd, at, 0) < 0 && errno != ENOENT)
			ret = ic_fail(-errno, "%s: remove: %s", path, strerror(errno));
	}
	free(path);
	if (ret)
		return ret;
	return ic_open_regular(dirfd, dir, name, flags | O_CREAT | O_EXCL, mode, fd);
}

int ic_write_file_atomic(const char *dir, const char *name, const void *buf, size_t len,
			 int mode)
{
	char tmpname[512];
	char *tmp, *dst;
	struct stat st;
	int dfd, fd, ret;

	snprintf(tmpname, sizeof(tmpname), ".tmp-%s", name);
	tmp = ic_path_join(dir, tmpname);
	dst = ic_path_join(dir, name);
	dfd = !tmp || !dst ? -2 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd == -2) {
		ret = -ENOMEM;
		goto out_free;
	}
	if (dfd < 0) {
		ret = ic_fail(-errno, "%s: open directory: %s", dir, strerror(errno));
		goto out_free;
	}
	/* never replace something that is not a regular file: it is not ours */
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode)) {
		ret = not_regular(dst, st.st_mode);
		goto out_close;
	}
	ret = ic_create_tmp(dfd, dir, tmpname, O_WRONLY, (mode_t)mode, &fd);
	if (ret)
		goto out_close;
	ret = ic_pwrite_full(fd, buf, len, 0, tmp);
	if (!ret)
		ret = ic_fsync(fd, tmp);
	close(fd);
	if (!ret && renameat(dfd, tmpname, dfd, name) < 0)
		ret = ic_fail(-errno, "%s: rename: %s", dst, strerror(errno));
	if (!ret)
		ret = ic_fsync(dfd, dir);
	if (ret)
		unlinkat(dfd, tmpname, 0);
out_close:
	close(dfd);
out_free:
	free(tmp);
	free(dst);
	return ret;
}

int ic_rename_noreplace(const char *from, const char *to)
{
	int e;

	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	e = errno;
	if (e == EINVAL || e == ENOSYS || e == EOPNOTSUPP) {
		e = link(from, to) < 0 ? errno : 0;
		if (!e) {
			unlink(from);
			return 0;
		}
	}
	if (e == EEXIST)
		return ic_fail(-EEXIST, "%s: a file is there already, not written by this run: left as it is, the new file was not put in its place",
			       to);
	return ic_fail(-e, "%s: rename: %s", to, strerror(e));
}

uint32_t ic_le32(uint32_t v) { return le32toh(v); }
uint64_t ic_le64(uint64_t v) { return le64toh(v); }

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int ic_hex_decode(const char *hex, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hex_digit(hex[2 * i]), lo = hi < 0 ? -1 : hex_digit(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

double ic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *ic_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024.0 && u < 5) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int ic_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' && shift)
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end)
		return -EINVAL;
	if (shift && v > (~0ull >> shift))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

bool ic_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > ICF_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	if (!strcmp(name, ICF_NAME_RESERVED))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-' || c == '+' || c == ':'))
			return false;
	}
	return true;
}

/* Every tool's first call: keys, passphrases and decoded blocks must not reach a core dump
 * (or a same-user ptrace or /proc/PID/mem reader).  Kept across fork, so the mount daemon
 * inherits it; a failure (never seen on Linux) is not fatal, the cache excludes its slabs
 * from dumps anyway. */
#include <sys/prctl.h>
void ic_no_dumps(void)
{
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
