/* ic_util.c: error messages, exit codes and careful file I/O. */
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

#include "ic_util.h"

const char *ic_progname = "imgchain";
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

static __thread char last_msg[1024];
static __thread int have_msg;

int ic_exit_code(int err)
{
	if (err >= 0)
		return IC_EXIT_OK;
	if (err == IC_ECORRUPT)
		return IC_EXIT_CORRUPT;
	if (err == IC_EKEY)
		return IC_EXIT_KEY;
	return IC_EXIT_ERROR;
}

int ic_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
	va_end(ap);
	have_msg = 1;
	return err;
}

const char *ic_last_error(int err)
{
	if (have_msg)
		return last_msg;
	return strerror(err < 0 ? -err : err);
}

void ic_clear_error(void)
{
	have_msg = 0;
	last_msg[0] = '\0';
}

void ic_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ic_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int ic_report(int err)
{
	ic_msg("%s", ic_last_error(err));
	return ic_exit_code(err);
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

	if (!p)
		abort();
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

int ic_write_file_atomic(const char *dir, const char *name, const void *buf, size_t len,
			 int mode)
{
	char tmpname[512];
	char *tmp, *dst;
	int fd, ret;

	snprintf(tmpname, sizeof(tmpname), ".tmp-%s", name);
	tmp = ic_path_join(dir, tmpname);
	dst = ic_path_join(dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", tmp, strerror(errno));
		goto out_free;
	}
	ret = ic_pwrite_full(fd, buf, len, 0, tmp);
	if (!ret)
		ret = ic_fsync(fd, tmp);
	close(fd);
	if (!ret && rename(tmp, dst) < 0)
		ret = ic_fail(-errno, "%s: rename: %s", dst, strerror(errno));
	if (!ret)
		ret = ic_fsync_dir(dir);
	if (ret)
		unlink(tmp);
out_free:
	free(tmp);
	free(dst);
	return ret;
}

uint16_t ic_le16(uint16_t v) { return le16toh(v); }
uint32_t ic_le32(uint32_t v) { return le32toh(v); }
uint64_t ic_le64(uint64_t v) { return le64toh(v); }

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

	if (n == 0 || n > 127 || name[0] == '.' || name[0] == '-')
		return false;
	if (!strcmp(name, "latest"))
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
