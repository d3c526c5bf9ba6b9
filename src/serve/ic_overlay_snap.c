/* ic_overlay_snap.c: a consistent cut of an overlay that another process may be writing
 * (FORMAT.md 10.6).
 *
 * The owner (imgmount) changes the overlay's files only while it holds a shared OFD lock on
 * byte 0 of the map (ic_overlay.c: writes, truncates, commits with their punching, the
 * repairs of an open).  The snapshot takes the exclusive lock: once it has it, no change
 * is in progress and none starts until it lets go.  Under it, the committed map is read
 * (the newest valid header and each page's copy of that generation, exactly as an open
 * after a crash would) and the data file is copied into a private unlinked file in the
 * overlay's directory: FICLONE where the file system shares extents (btrfs, XFS), which
 * takes milliseconds whatever the size, else the runs of present blocks copied with
 * copy_file_range.  Then the lock is dropped and the guest's writes go on; the snapshot
 * reads its own copy at leisure.
 *
 * What the cut holds: the committed map, and for each present block the bytes the data
 * file held at that instant.  That is what the overlay would show after a crash at that
 * instant: every write the guest flushed (fsync) before it, never part of a write, and of
 * the unflushed ones those the crash would keep.  A guest that flushes, as file systems
 * and databases do at their commit points, finds a consistent disk in it. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>

#include "ic_overlay_int.h"
#include "ic_util.h"

void ic_overlay_bind_point(struct ic_overlay_bind *b, const uint8_t chain_id[16],
			   const uint8_t seal[32], const char *name, uint32_t seq)
{
	int n;

	memset(b, 0, sizeof(*b));
	memcpy(b->id, chain_id, 16);
	memcpy(b->id + 16, seal, 32);
	n = snprintf(b->label, sizeof(b->label), "restore point '%s' (seq %u, seal ", name, seq);
	for (int i = 0; i < 8 && n > 0 && (size_t)n + 3 < sizeof(b->label); i++, n += 2)
		snprintf(b->label + n, 3, "%02x", seal[i]);
	if (n > 0 && (size_t)n + 2 < sizeof(b->label))
		memcpy(b->label + n, ")", 2);
}

static char *snap_concat(const char *a, const char *b)
{
	char *p;

	return asprintf(&p, "%s%s", a, b) < 0 ? NULL : p;
}

/* The present blocks' bytes [a, b) of src into dst at the same offsets. */
static int snap_copy_run(struct ic_overlay *ov, int src, int dst, uint64_t a, uint64_t b)
{
	loff_t in = (loff_t)(a * OVL_BS), out = in;
	uint64_t left = (b - a) * OVL_BS;
	uint8_t buf[16 * OVL_BS];

	while (left) {
		ssize_t n = copy_file_range(src, &in, dst, &out, left, 0);
		int ret;

		if (n > 0) {
			left -= (uint64_t)n;
			continue;
		}
		if (n == 0)    /* past the data file's end: zeros (a hole) */
			return 0;
		if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS)
			return ic_fail(-errno, "%s: copy: %s", ov->data_path, strerror(errno));
		n = (ssize_t)ovl_min(left, sizeof(buf));
		n = pread(src, buf, (size_t)n, in);
		if (n <= 0)
			return n < 0 ? ic_fail(-errno, "%s: %s", ov->data_path, strerror(errno)) : 0;
		ret = ic_pwrite_full(dst, buf, (size_t)n, (uint64_t)out, ov->data_path);
		if (ret)
			return ret;
		in += n;
		out += n;
		left -= (uint64_t)n;
	}
	return 0;
}

static int snap_copy(struct ic_overlay *ov, int src, int dst, struct ic_overlay_snap_info *info)
{
	uint64_t nblk = ovl_blocks(ov->size), blk = 0;

	if (ioctl(dst, FICLONE, src) == 0) {
		info->cloned = true;
		return 0;
	}
	while (blk < nblk) {
		uint64_t a = ovl_run_end(ov, blk, nblk, false);
		uint64_t b = ovl_run_end(ov, a, nblk, true);
		int ret = a < b ? snap_copy_run(ov, src, dst, a, b) : 0;

		if (ret)
			return ret;
		blk = b;
	}
	return 0;
}

int ic_overlay_snapshot(const char *prefix, uint64_t base_size, const struct ic_overlay_bind *bind,
			struct ic_overlay **out, struct ic_overlay_snap_info *info)
{
	struct ic_overlay *ov = calloc(1, sizeof(*ov));
	const char *slash = strrchr(prefix, '/');
	int src = -1, ret;
	double t0;

	*out = NULL;
	memset(info, 0, sizeof(*info));
	if (!ov || pthread_rwlock_init(&ov->lock, NULL)) {
		free(ov);
		return ic_fail(-ENOMEM, "%s: out of memory", prefix);
	}
	ov->data_fd = ov->map_fd = -1;
	ov->dirty_lo = ov->punch_lo = UINT64_MAX;
	ov->base_size = base_size;
	ov->readonly = true;
	memcpy(&ov->bind, bind, sizeof(ov->bind));
	ov->data_path = snap_concat(prefix, ".data");
	ov->map_path = snap_concat(prefix, ".map");
	ov->dir = slash ? strndup(prefix, (size_t)(slash - prefix + (slash == prefix))) :
			  strdup(".");
	ret = ov->data_path && ov->map_path && ov->dir ? 0 : -ENOMEM;
	/* read-write only because an exclusive lock needs it: nothing is written to it */
	if (!ret)
		ret = ic_open_regular(AT_FDCWD, NULL, ov->map_path, O_RDWR, 0, &ov->map_fd);
	if (!ret)
		ret = ic_open_regular(AT_FDCWD, NULL, ov->data_path, O_RDONLY, 0, &src);
	if (!ret) {
		ov->data_fd = open(ov->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (ov->data_fd < 0)
			ret = ic_fail(-errno, "%s: private copy: %s", ov->dir, strerror(errno));
	}
	if (ret)
		goto out;
	ret = ovl_cut_lock(ov, F_WRLCK);
	if (ret)
		goto out;
	t0 = ic_now();
	ret = ovl_load_header(ov);
	if (!ret)
		ret = ovl_load_pages(ov);
	if (!ret)
		ret = snap_copy(ov, src, ov->data_fd, info);
	info->frozen = ic_now() - t0;
	ovl_cut_lock(ov, F_UNLCK);
	if (ret)
		goto out;
	info->size = ov->size;
	info->base_limit = ov->base_limit;
	info->generation = ov->gen;
	for (uint64_t blk = 0, n = ovl_blocks(ov->size); blk < n;) {
		uint64_t a = ovl_run_end(ov, blk, n, false), b = ovl_run_end(ov, a, n, true);

		info->blocks += b - a;
		blk = b;
	}
out:
	if (src >= 0)
		close(src);
	if (ret) {
		ovl_free(ov, true);
		return ret;
	}
	*out = ov;
	return 0;
}

uint64_t ic_overlay_run(struct ic_overlay *snap, uint64_t blk, uint64_t limit, bool present)
{
	return ovl_run_end(snap, blk, limit, present);
}

void ic_overlay_snap_free(struct ic_overlay *snap)
{
	if (snap)
		ovl_free(snap, true);
}
