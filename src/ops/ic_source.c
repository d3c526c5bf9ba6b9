/* ic_source.c: the source of a backup: dispatch, and the local kind (a regular file or
 * a block device: pread, holes from SEEK_DATA/SEEK_HOLE). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "ic_source_int.h"
#include "ic_util.h"

bool ic_source_is_uri(const char *spec)
{
	size_t n = strspn(spec, "abcdefghijklmnopqrstuvwxyz+");

	return n >= 3 && !strncmp(spec, "nbd", 3) && !strncmp(spec + n, "://", 3);
}

void ic_source_inner_blocks(uint64_t a, uint64_t b, uint64_t size, uint32_t bs,
			    uint64_t *first, uint64_t *end)
{
	uint64_t nblocks = (size + bs - 1) / bs;

	*first = (a + bs - 1) / bs;
	*end = b >= size ? nblocks : b / bs;
	if (*end < *first)
		*end = *first;
}

/* ---- a file or block device ---------------------------------------------------- */

struct local {
	int fd;
	bool regular;
};

static int local_zero_blocks(struct ic_source *s, uint32_t bs, uint8_t *map, uint8_t mark)
{
	struct local *l = s->priv;
	uint64_t off = 0, first, end;

	if (!l->regular)
		return 0;
	while (off < s->size) {
		off_t data = lseek(l->fd, (off_t)off, SEEK_DATA);
		uint64_t hole_end = data < 0 ? s->size : (uint64_t)data;
		off_t hole;

		if (data < 0 && errno != ENXIO)
			return 0;    /* no SEEK_DATA: read everything */
		ic_source_inner_blocks(off, hole_end, s->size, bs, &first, &end);
		for (uint64_t b = first; b < end; b++)
			map[b] = mark;
		if (data < 0)
			return 0;
		hole = lseek(l->fd, data, SEEK_HOLE);
		if (hole < 0)
			return 0;
		off = (uint64_t)hole;
	}
	return 0;
}

static int local_dirty_blocks(struct ic_source *s, uint32_t bs, uint8_t *map)
{
	return ic_fail(-EINVAL, "%s: a dirty bitmap needs an NBD source (nbd://...)", s->spec);
}

static int local_read(struct ic_source *s, void *buf, size_t len, uint64_t off)
{
	struct local *l = s->priv;
	uint8_t *dst = buf;

	while (len) {
		ssize_t r = pread(l->fd, dst, len, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return ic_fail(-errno, "%s: read at offset %llu: %s", s->spec,
				       (unsigned long long)off, strerror(errno));
		}
		if (r == 0)
			return ic_fail(-EIO, "%s: source shrank while being read (ends before %llu of %llu bytes)",
				       s->spec, (unsigned long long)off,
				       (unsigned long long)s->size);
		dst += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

/* Holes past a new end of file read as zeros: a source that shrank while it was
 * read must fail the backup, not store zeros. */
static int local_check_end(struct ic_source *s)
{
	struct local *l = s->priv;
	struct stat st;

	if (!l->regular)
		return 0;    /* a block device's size is fixed; short reads are caught */
	if (fstat(l->fd, &st) < 0)
		return ic_fail(-errno, "%s: %s", s->spec, strerror(errno));
	if ((uint64_t)st.st_size < s->size)
		return ic_fail(-EIO, "%s: source shrank while being read (%llu bytes, was %llu)",
			       s->spec, (unsigned long long)st.st_size,
			       (unsigned long long)s->size);
	return 0;
}

static void local_close(struct ic_source *s)
{
	struct local *l = s->priv;

	if (l && l->fd >= 0)
		close(l->fd);
	free(l);
}

static const struct ic_source_ops local_ops = {
	.zero_blocks = local_zero_blocks,
	.dirty_blocks = local_dirty_blocks,
	.read = local_read,
	.check_end = local_check_end,
	.close = local_close,
};

static int local_open(struct ic_source *s)
{
	struct local *l = calloc(1, sizeof(*l));
	struct stat st;
	int e;

	if (!l)
		return -ENOMEM;
	s->ops = &local_ops;
	s->priv = l;
	/* O_NONBLOCK: a FIFO must be refused, not waited on */
	l->fd = open(s->spec, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (l->fd < 0)
		return ic_fail(-errno, "%s: %s", s->spec, strerror(errno));
	if (fstat(l->fd, &st) < 0 || fcntl(l->fd, F_SETFL, 0) < 0)
		goto err;
	l->regular = S_ISREG(st.st_mode);
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(l->fd, BLKGETSIZE64, &s->size) < 0)
			goto err;
	} else if (S_ISREG(st.st_mode)) {
		s->size = (uint64_t)st.st_size;
	} else {
		return ic_fail(-EINVAL, "%s: not a regular file or block device", s->spec);
	}
	return 0;
err:
	e = errno;
	return ic_fail(-e, "%s: %s", s->spec, strerror(e));
}

/* ---- dispatch ------------------------------------------------------------------ */

int ic_source_open(const char *spec, const char *bitmap, struct ic_source **sp)
{
	struct ic_source *s = calloc(1, sizeof(*s));
	int ret;

	*sp = NULL;
	if (!s)
		return -ENOMEM;
	s->spec = spec;
	if (ic_source_is_uri(spec)) {
		ret = ic_source_nbd_open(s, bitmap);
	} else {
		ret = local_open(s);
		if (!ret && bitmap)
			ret = local_dirty_blocks(s, 0, NULL);
	}
	if (!ret && s->size == 0)
		ret = ic_fail(-EINVAL, "%s: source is empty", spec);
	if (ret) {
		ic_source_close(s);
		return ret;
	}
	*sp = s;
	return 0;
}

void ic_source_close(struct ic_source *s)
{
	if (!s)
		return;
	if (s->ops)
		s->ops->close(s);
	free(s);
}

uint64_t ic_source_size(const struct ic_source *s)
{
	return s->size;
}

bool ic_source_remote(const struct ic_source *s)
{
	return s->remote;
}

int ic_source_zero_blocks(struct ic_source *s, uint32_t bs, uint8_t *map, uint8_t mark)
{
	return s->ops->zero_blocks(s, bs, map, mark);
}

int ic_source_dirty_blocks(struct ic_source *s, uint32_t bs, uint8_t *map)
{
	return s->ops->dirty_blocks(s, bs, map);
}

int ic_source_read(struct ic_source *s, void *buf, size_t len, uint64_t off)
{
	return s->ops->read(s, buf, len, off);
}

int ic_source_read_many(struct ic_source *s, const struct ic_source_rd *rd, size_t n)
{
	int ret = 0;

	if (s->ops->read_many)
		return s->ops->read_many(s, rd, n);
	for (size_t i = 0; i < n && !ret; i++)
		ret = s->ops->read(s, rd[i].buf, rd[i].len, rd[i].off);
	return ret;
}

int ic_source_check_end(struct ic_source *s)
{
	return s->ops->check_end(s);
}
