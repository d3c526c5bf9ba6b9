/* ic_image_copy.c: records moved between image files (checked, with copy_file_range
 * where the kernel can), and the holes punched where an image's bytes are unused. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#ifdef __linux__
#include <linux/fs.h>
#endif

#include <xxhash.h>

#include "ic_image.h"
#include "ic_util.h"

/* Copy len bytes in the kernel: copy_file_range, split so that the part aligned on
 * 4 KiB in both files can be shared as a reflink; pwrite from buf where the kernel
 * cannot copy.  have: buf holds the same bytes already (read for the checksum check);
 * else it is filled from the source first (len <= its size). */
static bool no_cfr;  /* no copy_file_range: the caller asked so, or the kernel refused it */

void ic_image_copy_plain(void)
{
	no_cfr = true;
}

static int copy_span(int sfd, uint64_t soff, int dfd, uint64_t doff, uint64_t len,
		     uint8_t *buf, bool have, const char *spath, const char *dpath)
{
	while (len) {
		uint64_t piece = len;
		ssize_t n = -1;

		if ((soff & 4095) == (doff & 4095) && (soff & 4095))
			piece = 4096 - (soff & 4095) < len ? 4096 - (soff & 4095) : len;
		else if ((soff & 4095) == (doff & 4095) && len >= 4096)
			piece = len & ~(uint64_t)4095;
#ifdef HAVE_COPY_FILE_RANGE
		if (!no_cfr) {
			loff_t si = (loff_t)soff, di = (loff_t)doff;

			n = copy_file_range(sfd, &si, dfd, &di, (size_t)piece, 0);
			if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP &&
			    errno != EINVAL && errno != EBADF)
				return ic_fail(-errno, "%s: copy_file_range at %llu: %s", dpath,
					       (unsigned long long)doff, strerror(errno));
			if (n < 0)
				no_cfr = true;
		}
#endif
		if (n <= 0) {
			int ret = have ? 0 : ic_pread_full(sfd, buf, (size_t)piece, soff, spath);

			if (!ret)
				ret = ic_pwrite_full(dfd, buf, (size_t)piece, doff, dpath);
			if (ret)
				return ret;
			n = (ssize_t)piece;
		}
		soff += (uint64_t)n;
		doff += (uint64_t)n;
		buf += n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* The longest prefix of ents[i..n) that fits in buflen: its end index; 0 with an error
 * for records that are not contiguous or larger than the buffer. */
static size_t batch_end(const struct ic_image *src, const struct icf_entry *ents, size_t i,
			size_t n, size_t buflen, uint64_t *len, int *err)
{
	uint64_t start = ents[i].offset;
	size_t k = i;

	*len = 0;
	*err = 0;
	while (k < n && *len + ents[k].stored_len <= buflen) {
		if (ents[k].offset != start + *len) {
			*err = ic_fail(-EINVAL, "%s: records to copy are not contiguous", src->path);
			return 0;
		}
		*len += ents[k].stored_len;
		k++;
	}
	if (k == i)
		*err = ic_fail(-EINVAL, "%s: record larger than the copy buffer", src->path);
	return k;
}

static int check_batch(const struct ic_image *src, const struct icf_entry *ents, size_t i,
		       size_t k, const uint8_t *buf)
{
	for (size_t r = i; r < k; r++)
		if (XXH3_64bits(buf + (ents[r].offset - ents[i].offset), ents[r].stored_len) !=
		    ents[r].rec_hash)
			return ic_fail(IC_ECORRUPT,
				       "%s: block %llu: record checksum mismatch (data damaged)",
				       src->path, (unsigned long long)ents[r].pos);
	return 0;
}

/* Read and check ents[0..n) a buffer's worth at a time; copy each batch to dst_fd at
 * dst_off once checked, unless dst_fd < 0. */
static int check_copy(const struct ic_image *src, const struct icf_entry *ents, size_t n,
		      int dst_fd, uint64_t dst_off, const char *dst_path, void *buf, size_t buflen)
{
	for (size_t i = 0; i < n;) {
		uint64_t len;
		int ret;
		size_t k = batch_end(src, ents, i, n, buflen, &len, &ret);

		if (!ret)
			ret = ic_pread_full(src->fd, buf, (size_t)len, ents[i].offset, src->path);
		if (!ret)
			ret = check_batch(src, ents, i, k, buf);
		if (!ret && dst_fd >= 0)
			ret = copy_span(src->fd, ents[i].offset, dst_fd, dst_off, len, buf, true,
					src->path, dst_path);
		if (ret)
			return ret;
		dst_off += len;
		i = k;
	}
	return 0;
}

int ic_image_check_records(const struct ic_image *src, const struct icf_entry *ents, size_t n,
			   void *buf, size_t buflen)
{
	return check_copy(src, ents, n, -1, 0, NULL, buf, buflen);
}

int ic_image_copy_bytes(const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
			uint64_t dst_off, const char *dst_path, void *buf, size_t buflen)
{
	while (len) {
		uint64_t piece = len < buflen ? len : buflen;
		int ret = copy_span(src->fd, off, dst_fd, dst_off, piece, buf, false, src->path,
				    dst_path);

		if (ret)
			return ret;
		off += piece;
		dst_off += piece;
		len -= piece;
	}
	return 0;
}

int ic_image_copy_records(const struct ic_image *src, const struct icf_entry *ents, size_t n,
			  int dst_fd, uint64_t dst_off, const char *dst_path, void *buf,
			  size_t buflen)
{
	return check_copy(src, ents, n, dst_fd, dst_off, dst_path, buf, buflen);
}

/* ---- clones: extents shared instead of copied (reflink file systems) ------------------ */

#ifdef FICLONERANGE
static int clone_call(int sfd, uint64_t soff, uint64_t len, int dfd, uint64_t doff)
{
	struct file_clone_range r = {
		.src_fd = sfd, .src_offset = soff, .src_length = len, .dest_offset = doff,
	};

	return ioctl(dfd, FICLONERANGE, &r) < 0 ? -errno : 0;
}
#endif

/* The errors of a file system (or a pair of files) that cannot share these extents. */
static bool cannot_clone(int err)
{
	return err == -EOPNOTSUPP || err == -ENOTTY || err == -EXDEV || err == -EINVAL ||
	       err == -ENOSYS || err == -EPERM || err == -ETXTBSY;
}

const struct ic_clone_redirect *ic_clone_redirect;

uint32_t ic_image_clone_probe(const struct ic_image *src, int dst_fd)
{
	if (ic_clone_redirect)
		return ic_clone_redirect->blk;
#ifdef FICLONERANGE
	struct statfs sf;
	struct stat st, ss;
	uint64_t blk, len, at;
	int ret;

	if (no_cfr || fstatfs(dst_fd, &sf) < 0 || fstat(dst_fd, &st) < 0 ||
	    fstat(src->fd, &ss) < 0 || st.st_dev != ss.st_dev)
		return 0;
	blk = (uint64_t)sf.f_bsize;
	if (blk < 4096 || blk > (1u << 20) || (blk & (blk - 1)) || !ss.st_size)
		return 0;
	/* the source's first block, cloned past the destination's end, then cut off again */
	len = (uint64_t)ss.st_size < blk ? (uint64_t)ss.st_size : blk;
	at = ((uint64_t)st.st_size + blk - 1) & ~(blk - 1);
	ret = clone_call(src->fd, 0, len, dst_fd, at);
	if (!ret || (fstat(dst_fd, &ss) == 0 && ss.st_size != st.st_size)) {
		/* (only then: a truncation is a journal transaction on ext4, not free) */
		if (ftruncate(dst_fd, st.st_size) < 0)
			return 0;
	}
	return ret ? 0 : (uint32_t)blk;
#else
	(void)src;
	(void)dst_fd;
	return 0;
#endif
}

int ic_image_clone_range(const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
			 uint64_t dst_off, uint32_t blk, const char *dst_path)
{
	if (ic_clone_redirect)
		return ic_clone_redirect->fn(ic_clone_redirect->arg, src, off, len, dst_fd, dst_off);
#ifdef FICLONERANGE
	uint64_t b = blk, s0 = off & ~(b - 1), d0 = dst_off - (off - s0), e = off + len, n;
	struct stat ss;
	int ret;

	if (!blk || (off & (b - 1)) != (dst_off & (b - 1)))
		return -EOPNOTSUPP;
	if (fstat(src->fd, &ss) < 0)
		return ic_fail(-errno, "%s: stat: %s", src->path, strerror(errno));
	if (e > (uint64_t)ss.st_size)
		return ic_fail(IC_ECORRUPT, "%s: records end past the end of the file", src->path);
	/* whole blocks; the last one may end at the source's end of file */
	n = ((e + b - 1) & ~(b - 1)) - s0;
	if (s0 + n > (uint64_t)ss.st_size)
		n = (uint64_t)ss.st_size - s0;
	ret = clone_call(src->fd, s0, n, dst_fd, d0);
	if (ret && !cannot_clone(ret))
		return ic_fail(ret, "%s: clone of %s at %llu: %s", dst_path, src->path,
			       (unsigned long long)s0, strerror(-ret));
	return ret ? -EOPNOTSUPP : 0;
#else
	(void)src, (void)off, (void)len, (void)dst_fd, (void)dst_off, (void)blk, (void)dst_path;
	return -EOPNOTSUPP;
#endif
}

int ic_image_punch_range(int fd, uint64_t off, uint64_t len, uint32_t blk, const char *path)
{
	uint64_t b = blk ? blk : 4096, a = (off + b - 1) & ~(b - 1), e = (off + len) & ~(b - 1);

	if (e <= a)
		return 0;
#ifdef HAVE_FALLOCATE
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)a, (off_t)(e - a)) < 0 &&
	    errno != EOPNOTSUPP)
		return ic_fail(-errno, "%s: punch hole at %llu: %s", path, (unsigned long long)a,
			       strerror(errno));
#else
	(void)fd, (void)path;
#endif
	return 0;
}

static void mark_used(uint8_t *bits, uint64_t nb, uint64_t off, uint64_t len)
{
	for (uint64_t b = off / 4096; b < nb && b * 4096 < off + len; b++)
		bits[b / 8] |= (uint8_t)(1u << (b % 8));
}

/* Is [off, off + len) a hole already?  (Without SEEK_DATA: assume not.) */
static bool is_hole(int fd, uint64_t off, uint64_t len)
{
#ifdef SEEK_DATA
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);

	if (d < 0)
		return errno == ENXIO;    /* no data from off to the end */
	return (uint64_t)d >= off + len;
#else
	return false;
#endif
}

int ic_image_punch_unused(struct ic_image *img, uint64_t *freed)
{
	return ic_image_punch_below(img, UINT64_MAX, freed);
}

int ic_image_punch_below(struct ic_image *img, uint64_t limit, uint64_t *freed)
{
	const struct icf_slot *s = &img->slot;
	struct stat st0, st1;
	struct icf_entry e;
	uint64_t nb, b;
	uint8_t *bits;
	int ret;

	*freed = 0;
	ret = ic_image_check_index(img);
	if (ret)
		return ret;
	if (fstat(img->fd, &st0) < 0)
		return ic_fail(-errno, "%s: stat: %s", img->path, strerror(errno));
	nb = ((uint64_t)st0.st_size + 4095) / 4096;
	if (limit / 4096 < nb)
		nb = limit / 4096;    /* whole blocks below limit */
	bits = calloc(nb / 8 + 1, 1);
	if (!bits)
		return -ENOMEM;
	mark_used(bits, nb, 0, ICF_HEADER_SIZE);
	mark_used(bits, nb, s->index_offset, s->index_count * sizeof(struct icf_entry));
	for (uint64_t i = 0; i < s->index_count; i++) {
		ret = ic_image_entry(img, i, &e);
		if (ret)
			goto out;
		if (e.kind != ICF_ENTRY_ZERO)
			mark_used(bits, nb, e.offset, e.stored_len);
	}
	for (b = 0; b < nb;) {
		uint64_t run = 0;

		while (b + run < nb && !(bits[(b + run) / 8] & (1u << ((b + run) % 8))))
			run++;
		if (run) {
			uint64_t off = b * 4096, len = run * 4096;

			if (off + len > (uint64_t)st0.st_size)
				len = (uint64_t)st0.st_size - off;
			if (is_hole(img->fd, off, len)) {
				b += run;    /* punched by an earlier run: no call, no journal */
				continue;
			}
#ifdef HAVE_FALLOCATE
			if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				      (off_t)len) < 0) {
				ret = ic_fail(-errno, "%s: punch hole at %llu: %s", img->path,
					      (unsigned long long)off, strerror(errno));
				goto out;
			}
#else
			ret = ic_fail(-EOPNOTSUPP, "%s: cannot punch holes on this system", img->path);
			goto out;
#endif
			b += run;
		} else {
			b++;
		}
	}
	/* no fsync: holes that a crash forgets only leave space allocated */
	if (fstat(img->fd, &st1) == 0 && st1.st_blocks < st0.st_blocks)
		*freed = (uint64_t)(st0.st_blocks - st1.st_blocks) * 512;
out:
	free(bits);
	return ret;
}
