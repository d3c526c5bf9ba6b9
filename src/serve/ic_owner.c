/* ic_owner.c: the owner record and the release request of an overlay (ic_owner.h,
 * FORMAT.md 10.7): this process's identity, bounded parsing, atomic writing, liveness. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "ic_owner.h"
#include "ic_util.h"

static const char *const keys[] = { "host", "boot", "pidns", "pid", "start", "since", "server",
				    "where", "token", "wait" };
enum { K_HOST, K_BOOT, K_PIDNS, K_PID, K_START, K_SINCE, K_SERVER, K_WHERE, K_TOKEN, K_WAIT,
       K_N };

#define MAGIC_OWNER "imgchain-owner 1"
#define MAGIC_REQUEST "imgchain-release 1"

/* ---- this process ------------------------------------------------------------------ */

static bool host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

static bool boot_ok(const char *b)
{
	size_t n = strlen(b);

	if (!strcmp(b, "-"))
		return true;
	if (n != 36)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(i == 8 || i == 13 || i == 18 || i == 23 ? b[i] == '-' :
		      (b[i] >= '0' && b[i] <= '9') || (b[i] >= 'a' && b[i] <= 'f')))
			return false;
	return true;
}

/* Read a small /proc file into buf (NUL-terminated); false when it cannot be read. */
static bool read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return true;
}

static void read_boot(char *boot)
{
	char buf[64];

	strcpy(boot, "-");
	if (read_small("/proc/sys/kernel/random/boot_id", buf, sizeof(buf))) {
		buf[strcspn(buf, "\n")] = '\0';
		if (boot_ok(buf) && strlen(buf) == 36)
			strcpy(boot, buf);
	}
}

static uint64_t read_pidns(void)
{
	struct stat sb;

	return stat("/proc/self/ns/pid", &sb) == 0 ? (uint64_t)sb.st_ino : 0;
}

/* Field 22 of /proc/PID/stat (start time, clock ticks after boot); 0 when unknown. */
static uint64_t proc_start(uint64_t pid, bool self)
{
	char path[64], buf[1024], *p;
	unsigned long long v;

	if (self)
		snprintf(path, sizeof(path), "/proc/self/stat");
	else
		snprintf(path, sizeof(path), "/proc/%" PRIu64 "/stat", pid);
	if (!read_small(path, buf, sizeof(buf)))
		return 0;
	p = strrchr(buf, ')');    /* the command name may hold spaces and parentheses */
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
			 &v) != 1)
		return 0;
	return v;
}

static void copy_printable(char *dst, size_t cap, const char *src, bool host)
{
	size_t n = 0;

	for (; src && *src && n + 1 < cap; src++) {
		char c = *src;

		if (host)
			dst[n++] = host_char(c) ? c : '-';
		else
			dst[n++] = c >= 0x20 && c <= 0x7e ? c : '?';
	}
	dst[n] = '\0';
}

int ic_owner_self(struct ic_owner_rec *r, const char *server, const char *where)
{
	char host[256] = "";
	uint8_t rnd[16];

	memset(r, 0, sizeof(*r));
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		strcpy(host, "localhost");
	copy_printable(r->host, sizeof(r->host), host, true);
	read_boot(r->boot);
	r->pidns = read_pidns();
	r->pid = (uint64_t)getpid();
	r->start = proc_start(0, true);
	r->since = (uint64_t)time(NULL);
	copy_printable(r->server, sizeof(r->server), server, true);
	copy_printable(r->where, sizeof(r->where), where && *where ? where : "-", false);
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		return ic_fail(-errno, "owner token: getrandom: %s", strerror(errno));
	for (int i = 0; i < 16; i++)
		snprintf(r->token + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

/* ---- text ---------------------------------------------------------------------------- */

int ic_owner_encode(const struct ic_owner_rec *r, bool request, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s\nhost %s\nboot %s\npidns %" PRIu64 "\npid %" PRIu64
			 "\nstart %" PRIu64 "\nsince %" PRIu64 "\nserver %s\nwhere %s\ntoken %s\n",
			 request ? MAGIC_REQUEST : MAGIC_OWNER, r->host, r->boot, r->pidns, r->pid,
			 r->start, r->since, r->server, r->where, r->token);

	if (n > 0 && request && (size_t)n < len)
		n += snprintf(buf + n, len - (size_t)n, "wait %" PRIu32 "\n", r->wait);
	return n > 0 && (size_t)n < len ? n : -1;
}

/* A decimal without sign or leading zeros, at most max. */
static bool parse_num(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return true;
}

static bool token_ok(const char *t)
{
	if (strlen(t) != 32)
		return false;
	for (; *t; t++)
		if (!((*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'f')))
			return false;
	return true;
}

static bool host_ok(const char *h)
{
	size_t n = strlen(h);

	if (n < 1 || n > 64)
		return false;
	for (; *h; h++)
		if (!host_char(*h))
			return false;
	return true;
}

static bool where_ok(const char *w)
{
	size_t n = strlen(w);

	if (n < 1 || n > IC_OWNER_WHERE_MAX)
		return false;
	for (; *w; w++)
		if (*w < 0x20 || *w > 0x7e)
			return false;
	return true;
}

/* One "KEY VALUE" line (NUL-terminated, no newline) into r; a cause or NULL. */
static const char *parse_field(int k, const char *v, struct ic_owner_rec *r)
{
	uint64_t n;

	switch (k) {
	case K_HOST:
		if (!host_ok(v))
			return "bad host";
		strcpy(r->host, v);
		return NULL;
	case K_BOOT:
		if (!boot_ok(v))
			return "bad boot id";
		strcpy(r->boot, v);
		return NULL;
	case K_PIDNS:
		return parse_num(v, UINT64_MAX, &r->pidns) ? NULL : "bad pidns";
	case K_PID:
		return parse_num(v, INT32_MAX, &r->pid) && r->pid ? NULL : "bad pid";
	case K_START:
		return parse_num(v, UINT64_MAX, &r->start) ? NULL : "bad start";
	case K_SINCE:
		return parse_num(v, UINT64_MAX, &r->since) ? NULL : "bad since";
	case K_SERVER:
		if (strcmp(v, "imgmount") && strcmp(v, "nbdkit"))
			return "bad server (imgmount or nbdkit)";
		strcpy(r->server, v);
		return NULL;
	case K_WHERE:
		if (!where_ok(v))
			return "bad where";
		strcpy(r->where, v);
		return NULL;
	case K_TOKEN:
		if (!token_ok(v))
			return "bad token";
		strcpy(r->token, v);
		return NULL;
	default:
		if (!parse_num(v, IC_OWNER_WAIT_MAX, &n) || !n)
			return "bad wait";
		r->wait = (uint32_t)n;
		return NULL;
	}
}

const char *ic_owner_decode(const void *data, size_t len, bool request, struct ic_owner_rec *r,
			    int *line)
{
	const char *magic = request ? MAGIC_REQUEST : MAGIC_OWNER;
	int nkeys = request ? K_N : K_WAIT;
	char buf[IC_OWNER_MAX + 1], *p = buf, *end = buf + len;

	memset(r, 0, sizeof(*r));
	*line = 0;
	if (len > IC_OWNER_MAX)
		return "larger than 4096 bytes";
	memcpy(buf, data, len);
	if (memchr(buf, '\0', len))
		return "a NUL byte";
	if (!len || buf[len - 1] != '\n')
		return "does not end with a newline";
	for (int k = -1; k < nkeys; k++) {
		char *nl, *sp;
		const char *why;

		++*line;
		if (p >= end)
			return "too short";
		nl = memchr(p, '\n', (size_t)(end - p));
		*nl = '\0';
		if (k < 0) {
			if (strcmp(p, magic))
				return request ? "not a release request" : "not an owner record";
		} else {
			sp = strchr(p, ' ');
			if (!sp || (size_t)(sp - p) != strlen(keys[k]) || strncmp(p, keys[k], strlen(keys[k])))
				return "unexpected line";
			why = parse_field(k, sp + 1, r);
			if (why)
				return why;
		}
		p = nl + 1;
	}
	++*line;
	return p == end ? NULL : "trailing text";
}

int ic_owner_read(int dirfd, const char *dir, const char *name, bool request,
		  struct ic_owner_rec *r)
{
	char buf[IC_OWNER_MAX + 1], path[1200];
	const char *why;
	ssize_t n;
	int fd, ret, line;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ret = ic_open_regular(dirfd, dir, name, O_RDONLY, 0, &fd);
	if (ret)
		return ret;
	do
		n = pread(fd, buf, sizeof(buf), 0);
	while (n < 0 && errno == EINTR);
	ret = n < 0 ? -errno : 0;
	close(fd);
	if (ret)
		return ic_fail(ret, "%s: %s", path, strerror(-ret));
	why = ic_owner_decode(buf, (size_t)n, request, r, &line);
	if (why && !line)
		return ic_fail(IC_ECORRUPT, "%s: damaged %s: %s", path,
			       request ? "release request" : "owner record", why);
	if (why)
		return ic_fail(IC_ECORRUPT, "%s: damaged %s: line %d: %s", path,
			       request ? "release request" : "owner record", line, why);
	return 0;
}

int ic_owner_write(int dirfd, const char *dir, const char *name, bool request,
		   const struct ic_owner_rec *r)
{
	char buf[IC_OWNER_MAX], tmp[96], path[1200];
	int fd, n = ic_owner_encode(r, request, buf, sizeof(buf)), ret;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (n < 0)
		return ic_fail(-EOVERFLOW, "%s: record too long", path);
	/* several newcomers may write requests at once: a temporary name of their own */
	snprintf(tmp, sizeof(tmp), ".tmp-%s.%" PRIu64 ".%.8s", name, r->pid, r->token);
	ret = ic_create_tmp(dirfd, dir, tmp, O_WRONLY, 0600, &fd);
	if (ret)
		return ret;
	ret = ic_pwrite_full(fd, buf, (size_t)n, 0, path);
	if (!ret)
		ret = ic_fsync(fd, path);
	close(fd);
	if (!ret && renameat(dirfd, tmp, dirfd, name) < 0)
		ret = ic_fail(-errno, "%s: rename: %s", path, strerror(errno));
	if (ret)
		unlinkat(dirfd, tmp, 0);
	else
		ret = ic_fsync(dirfd, dir);
	return ret;
}

/* ---- others ---------------------------------------------------------------------------- */

int ic_owner_alive(const struct ic_owner_rec *r)
{
	struct ic_owner_rec me;
	uint64_t start;

	if (ic_owner_self(&me, "imgmount", "-") || strcmp(me.host, r->host) ||
	    !strcmp(me.boot, "-") || strcmp(me.boot, r->boot) || !me.pidns || me.pidns != r->pidns)
		return IC_OWNER_ELSEWHERE;
	start = proc_start(r->pid, false);
	if (!start || (r->start && start != r->start))
		return IC_OWNER_GONE;
	return IC_OWNER_ALIVE;
}

void ic_owner_describe(const struct ic_owner_rec *r, char *buf, size_t len)
{
	char when[64];
	time_t t = (time_t)(r->since > INT32_MAX * 1024ull ? 0 : r->since);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm))
		strcpy(when, "?");
	snprintf(buf, len, "%s (host %s, pid %" PRIu64 ") on %s since %s", r->server, r->host,
		 r->pid, r->where, when);
}
