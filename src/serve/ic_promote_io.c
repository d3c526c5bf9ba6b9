/* ic_promote_io.c: the data path of a promoted disk (disk.raw and disk-flat.vmdk, one
 * disk): mirrored writes while copying, DEST alone once switched; its status line and
 * the "promote" member of info.json. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ic_promote_int.h"
#include "ic_util.h"

/* disk-flat.vmdk: whole sectors, the tail zeros (as ic_session_io.c serves it). */
static uint64_t flat_size(uint64_t size)
{
	return (size + 511) / 512 * 512;
}

uint64_t ic_promote_size(struct ic_promote *pr, int file)
{
	return file == IC_DISK_FLAT ? flat_size(pr->st.size) : pr->st.size;
}

int ic_promote_truncate(struct ic_promote *pr, int file, uint64_t size)
{
	return size == ic_promote_size(pr, file) ? 0 : -EPERM;
}

ssize_t ic_promote_read(struct ic_promote *pr, int file, void *buf, size_t len, uint64_t off)
{
	uint64_t end = ic_promote_size(pr, file);
	size_t got = 0;
	int ret;

	if (pr->fd < 0)
		return -EIO;
	if (off >= end)
		return 0;
	if (len > end - off)
		len = (size_t)(end - off);
	if (off < pr->st.size) {
		got = pr->st.size - off < len ? (size_t)(pr->st.size - off) : len;
		ret = ic_pread_full(pr->fd, buf, got, off, pr->st.dest);
		if (ret)
			return ret;
	}
	memset((char *)buf + got, 0, len - got);
	return (ssize_t)len;
}

ssize_t ic_promote_write(struct ic_promote *pr, int file, const void *buf, size_t len,
			 uint64_t off, ic_promote_write_fn ov_write, void *arg)
{
	ssize_t n;
	int ret, slot;

	(void)file;
	/* the disk's size is fixed while promoted: DEST holds that many bytes */
	if (off > pr->st.size || len > pr->st.size - off)
		return -ENOSPC;
	pthread_rwlock_rdlock(&pr->sw);
	switch (ic_promote_phase(pr)) {
	case IC_PROMOTE_SWITCHED:
		ret = pr->fd < 0 || __atomic_load_n(&pr->dest_bad, __ATOMIC_ACQUIRE) ? -EIO :
		      ic_pwrite_full(pr->fd, buf, len, off, pr->st.dest);
		n = ret ? ret : (ssize_t)len;
		break;
	case IC_PROMOTE_COPYING:
		/* the copier holds the chunk it copies: it writes DEST before or after us,
		 * and after us it reads our bytes back through the overlay */
		slot = ic_range_lock(&pr->rl, off, off + len);
		n = ov_write(arg, buf, len, off);
		if (n > 0 && ic_promote_phase(pr) == IC_PROMOTE_COPYING) {
			ret = ic_pwrite_full(pr->fd, buf, (size_t)n, off, pr->st.dest);
			if (ret)
				ic_promote_fail_copy(pr, "mirroring a write", ret);
		}
		ic_range_unlock(&pr->rl, slot);
		break;
	default:
		n = ov_write(arg, buf, len, off);
	}
	pthread_rwlock_unlock(&pr->sw);
	return n;
}

/* A failed fdatasync is sticky: the kernel may have dropped the pages and reports it once,
 * so every later write and fsync of DEST fails too (as the overlay does). */
int ic_promote_fsync(struct ic_promote *pr)
{
	int ph = ic_promote_phase(pr);

	/* copying: the overlay is the disk of record, unless the switch's record may be on
	 * disk (a failed attempt): then a crash would serve DEST, which must hold it all */
	if (ph == IC_PROMOTE_FAILED ||
	    (ph == IC_PROMOTE_COPYING && !__atomic_load_n(&pr->unsure, __ATOMIC_ACQUIRE)))
		return 0;
	if (pr->fd < 0 || __atomic_load_n(&pr->dest_bad, __ATOMIC_ACQUIRE))
		return -EIO;
	if (fdatasync(pr->fd) == 0)
		return 0;
	__atomic_store_n(&pr->dest_bad, true, __ATOMIC_RELEASE);
	return ic_fail(-errno, "%s: fdatasync: %s", pr->st.dest, strerror(errno));
}

/* ---- status ---------------------------------------------------------------------------- */

static const char *phase_name(int ph)
{
	static const char *const n[] = { "none", "copying", "switched", "failed" };

	return ph >= 0 && ph <= IC_PROMOTE_FAILED ? n[ph] : "none";
}

int ic_promote_status(struct ic_spoint *sp, char *buf, size_t cap)
{
	struct ic_promote *pr = __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE);
	int ph, n;

	if (!pr)
		return snprintf(buf, cap, "phase=none");
	ph = ic_promote_phase(pr);
	pthread_mutex_lock(&pr->mu);
	n = snprintf(buf, cap, "phase=%s copied=%" PRIu64 " size=%" PRIu64 " dest=%s%s%s",
		     phase_name(ph),
		     ph == IC_PROMOTE_SWITCHED ? pr->st.size : __atomic_load_n(&pr->copied, __ATOMIC_RELAXED),
		     pr->st.size, pr->st.dest, pr->err[0] ? " error=" : "", pr->err);
	pthread_mutex_unlock(&pr->mu);
	return n;
}

/* s as a JSON string (quotes included) in out[cap]. */
static void json_str(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	out[n++] = '"';
	for (; *s && n + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		else
			out[n++] = (char)c;
	}
	out[n++] = '"';
	out[n] = '\0';
}

/* The point's info.json with "promote" before its closing brace; its length. */
static size_t info_build(struct ic_spoint *sp, char *out, size_t cap)
{
	struct ic_promote *pr = __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE);
	char dest[2 * IC_PROMOTE_DEST_MAX], err[600], e[300];
	ssize_t n = ic_disk_read(sp->disk, IC_DISK_INFO, NULL, out, cap / 2, 0);
	int ph;

	if (n < 3 || !pr || memcmp(out + n - 3, "\n}\n", 3))
		return n < 0 ? 0 : (size_t)n;
	ph = ic_promote_phase(pr);
	pthread_mutex_lock(&pr->mu);
	snprintf(e, sizeof(e), "%s", pr->err);
	pthread_mutex_unlock(&pr->mu);
	json_str(dest, sizeof(dest), pr->st.dest);
	json_str(err, sizeof(err), e);
	n -= 3;
	n += snprintf(out + n, cap - (size_t)n,
		      ",\n  \"promote\": {\"phase\": \"%s\", \"dest\": %s, \"copied\": %" PRIu64
		      ", \"size\": %" PRIu64 ", \"error\": %s}\n}\n",
		      phase_name(ph),
		      dest, ph == IC_PROMOTE_SWITCHED ? pr->st.size : __atomic_load_n(&pr->copied, __ATOMIC_RELAXED),
		      pr->st.size, e[0] ? err : "null");
	return (size_t)n < cap ? (size_t)n : cap - 1;
}

#define INFO_MAX (4 * IC_PROMOTE_DEST_MAX + 8192)

uint64_t ic_promote_info_size(struct ic_spoint *sp)
{
	char *b = malloc(INFO_MAX);
	uint64_t n = b ? info_build(sp, b, INFO_MAX) : 0;

	free(b);
	return n;
}

ssize_t ic_promote_info_read(struct ic_spoint *sp, void *buf, size_t len, uint64_t off)
{
	char *b = malloc(INFO_MAX);
	size_t n;

	if (!b)
		return -ENOMEM;
	n = info_build(sp, b, INFO_MAX);
	if (off >= n) {
		free(b);
		return 0;
	}
	if (len > n - off)
		len = n - (size_t)off;
	memcpy(buf, b + off, len);
	free(b);
	return (ssize_t)len;
}
