/* ic_overlay.c: a persistent copy-on-write overlay over one read-only file: the data path
 * (read, write, truncate, fsync) and open/close; the block map is ic_overlay_map.c.
 *
 * On disk (integers little-endian):
 *
 *   prefix.data  A sparse file: block b of the overlay lives at offset b * 4096, so data
 *                needs no allocation table.  Blocks never written are holes.
 *   prefix.map   Shadow-paged block map, every structure in two 4 KiB slots:
 *                  0, 4096                 header slots 0 and 1
 *                  8192 + (2p + s) * 4096  slot s of bitmap page p
 *                A header holds magic "ICOVLMAP", version, block size, bits per page,
 *                flags (modified), generation, logical size, base limit, base size, an
 *                XXH3-64 of the slot, and the binding: the 48-byte id of the base it was
 *                made over and a label naming it (format/FORMAT.md, "Overlay").  A page
 *                holds magic, generation, its own index, an XXH3-64 and 4064 bytes (32512
 *                bits: 127 MiB of disk) of the bitmap of blocks present in prefix.data.
 *                The map grows with the highest page used.
 *
 * Commit (ic_overlay_fsync), under the write lock:
 *   1. fdatasync(data): every block whose bit is about to be published is durable.
 *   2. each page changed since the last commit goes to the slot that does NOT hold its
 *      committed copy, stamped with generation G+1;  3. fdatasync(map);
 *   4. the header of generation G+1 goes to the header slot that does not hold G;
 *   5. fdatasync(map): the commit point.
 * Open takes the valid header of highest generation H and, for each page, the valid slot of
 * highest generation <= H.  A crash before 5 completes leaves state H whole (slots written in
 * 2 carry H+1 and are ignored, torn ones fail their checksum); after 5, state H+1 is whole.
 * A valid slot above H, left by a commit that did not finish, marks its page dirty at open:
 * the next commit overwrites it with a generation above every one seen, so it can never be
 * picked up later.
 * Cost: an fsync writes the pages it changed plus one header, proportional to what was
 * written since the last one, not to the disk (a whole map would be 32 MiB per TiB).  The map
 * holds two copies of each page in use, at most 66 MiB per TiB, holes elsewhere; open reads it.
 *
 * Why a set bit never shows garbage: a bit reaches the map only in step 2, after step 1 made
 * its block durable; blocks are always written whole (partial writes are completed from the
 * current contents first); a block whose bit is clear is never read from prefix.data, so what
 * lies there (writes after the last commit, blocks dropped by truncate) is harmless.  The
 * space of dropped blocks is punched only after the commit that cleared their bits.  An
 * overwrite of a block already in the overlay is in place: an unsynced one is whole per block
 * against SIGKILL (one page-cache page per block) and, as on a real disk, only sector-atomic
 * against power loss.
 *
 * Binding: open refuses (-ESTALE, nothing written) a map whose id or base size differs from
 * the caller's, and a version 1 map (it recorded only the base size).  A new overlay
 * records the caller's binding with its first commit.
 *
 * Invariants: base_limit = min(base size, every size truncated to) <= size; base bytes are
 * shown only below base_limit, zeros above it.  No bit is set at or past the block that holds
 * the end of size, and the bytes of an overlay block past size are zero.
 *
 * Cut (FORMAT.md 10.6): every change of the files (a write, a truncate, a commit with its
 * punching) is made holding a shared OFD lock on byte 0 of prefix.map; a snapshot taken by
 * another process (ic_overlay_snap.c) holds the exclusive lock while it reads the committed
 * map and copies the data, so it sees the files as they were at one instant.
 *
 * Locking: one rwlock.  Reads share it (so the base callback may run in several threads at
 * once); writes, truncates and commits hold it exclusively, so no read sees half a write.
 * fsync first flushes data without the lock, then commits under it.  A failed fdatasync
 * is sticky: the kernel may have dropped the pages, so writes and fsyncs fail from then on.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ic_overlay_int.h"
#include "ic_util.h"

/* ---- the cut lock (FORMAT.md 10.6) --------------------------------------------------- */

int ovl_cut_lock(struct ic_overlay *ov, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };

	while (fcntl(ov->map_fd, F_OFD_SETLKW, &fl) < 0) {
		if (errno != EINTR)
			return ic_fail(-errno, "%s: lock: %s", ov->map_path, strerror(errno));
	}
	return 0;
}

/* ---- reading -------------------------------------------------------------------- */

static int ovl_read_base(struct ic_overlay *ov, uint8_t *buf, uint64_t len, uint64_t off,
			 ic_base_read_fn base, void *arg)
{
	uint64_t n = off < ov->base_limit ? ovl_min(len, ov->base_limit - off) : 0;

	if (n) {
		int ret = base(arg, buf, (size_t)n, off);

		if (ret)
			return ret < 0 ? ret : -EIO;
	}
	memset(buf + n, 0, (size_t)(len - n));
	return 0;
}

/* Bytes [off, off + len) as the overlay shows them, whatever the size: one data file read
 * per run of overlay blocks, one base call per run of the others. */
static int ovl_read_locked(struct ic_overlay *ov, uint8_t *buf, uint64_t len, uint64_t off,
			   ic_base_read_fn base, void *arg)
{
	uint64_t end = off + len, last = ovl_blocks(end);

	while (off < end) {
		bool in = ovl_test(ov, off / OVL_BS);
		uint64_t stop = ovl_min(end, ovl_run_end(ov, off / OVL_BS, last, in) * OVL_BS);
		int ret;

		if (in)
			ret = ic_pread_full(ov->data_fd, buf, (size_t)(stop - off), off,
					    ov->data_path);
		else
			ret = ovl_read_base(ov, buf, stop - off, off, base, arg);
		if (ret)
			return ret;
		buf += stop - off;
		off = stop;
	}
	return 0;
}

ssize_t ic_overlay_read(struct ic_overlay *ov, void *buf, size_t len, uint64_t off,
			ic_base_read_fn base, void *arg)
{
	uint64_t n = 0;
	int ret = 0;

	pthread_rwlock_rdlock(&ov->lock);
	if (off < ov->size) {
		n = ovl_min(ovl_min(len, ov->size - off), SSIZE_MAX);
		ret = ovl_read_locked(ov, buf, n, off, base, arg);
	}
	pthread_rwlock_unlock(&ov->lock);
	return ret ? ret : (ssize_t)n;
}

/* The run of blocks from off (at most len bytes) that the overlay holds (*present) or
 * leaves to the base; every byte counts as held where the base no longer shows (past
 * base_limit, after a truncation). */
uint64_t ic_overlay_extent(struct ic_overlay *ov, uint64_t off, uint64_t len, bool *present)
{
	uint64_t end = off + len, stop;

	pthread_rwlock_rdlock(&ov->lock);
	if (off >= ov->base_limit) {
		*present = true;
		stop = end;
	} else {
		*present = ovl_test(ov, off / OVL_BS);
		stop = ovl_run_end(ov, off / OVL_BS, ovl_blocks(end), *present) * OVL_BS;
		if (!*present)
			stop = ovl_min(stop, ov->base_limit);
		stop = ovl_min(stop, end);
	}
	pthread_rwlock_unlock(&ov->lock);
	return stop - off;
}

/* ---- writing -------------------------------------------------------------------- */

static void ovl_note_size(struct ic_overlay *ov, uint64_t size)
{
	if (size != ov->size || !ov->modified)
		ov->hdr_dirty = true;
	ov->size = size;
	ov->modified = true;
}

int ovl_pwrite_data(struct ic_overlay *ov, const void *buf, uint64_t len, uint64_t off)
{
	if (!len)
		return 0;
	ov->unsynced = true;
	return ic_pwrite_full(ov->data_fd, buf, (size_t)len, off, ov->data_path);
}

/* Blocks [lo, hi) receive buf at off.  A partial first or last block is completed from the
 * current contents before anything is written, so a base error changes nothing. */
static int ovl_write_locked(struct ic_overlay *ov, const uint8_t *buf, uint64_t len,
			    uint64_t off, ic_base_read_fn base, void *arg)
{
	uint64_t end = off + len, lo = off / OVL_BS, hi = ovl_blocks(end);
	uint64_t hoff = off % OVL_BS, hn = 0, tn = 0;
	uint8_t head[OVL_BS], tail[OVL_BS];
	int ret = ovl_reserve(ov, lo, hi);

	if (!ret && (hoff || (hi - lo == 1 && end % OVL_BS))) {
		hn = ovl_min(len, OVL_BS - hoff);
		ret = ovl_read_locked(ov, head, OVL_BS, lo * OVL_BS, base, arg);
		memcpy(head + hoff, buf, (size_t)hn);
	}
	if (!ret && end % OVL_BS && hi - 1 > lo) {
		tn = end % OVL_BS;
		ret = ovl_read_locked(ov, tail, OVL_BS, (hi - 1) * OVL_BS, base, arg);
		memcpy(tail, buf + len - tn, (size_t)tn);
	}
	if (!ret && hn)
		ret = ovl_pwrite_data(ov, head, OVL_BS, lo * OVL_BS);
	if (!ret)
		ret = ovl_pwrite_data(ov, buf + hn, len - hn - tn, off + hn);
	if (!ret && tn)
		ret = ovl_pwrite_data(ov, tail, OVL_BS, (hi - 1) * OVL_BS);
	if (ret)
		return ret;
	ovl_update_range(ov, lo, hi, true);
	ovl_note_size(ov, ovl_max(ov->size, end));
	return 0;
}

ssize_t ic_overlay_write(struct ic_overlay *ov, const void *buf, size_t len, uint64_t off,
			 ic_base_read_fn base, void *arg)
{
	int ret;

	if (!len)
		return 0;
	if (off >= OVL_MAX_SIZE || len > OVL_MAX_SIZE - off)
		return ic_fail(-EFBIG, "%s: write past the overlay's limit of %llu bytes",
			       ov->data_path, (unsigned long long)OVL_MAX_SIZE);
	len = ovl_min(len, SSIZE_MAX);
	pthread_rwlock_wrlock(&ov->lock);
	ret = ov->released ? -EROFS : ov->err ? ov->err : ovl_cut_lock(ov, F_RDLCK);
	if (!ret) {
		ret = ovl_write_locked(ov, buf, len, off, base, arg);
		ovl_cut_lock(ov, F_UNLCK);
	}
	pthread_rwlock_unlock(&ov->lock);
	return ret ? ret : (ssize_t)len;
}

/* Drop what lies past size: the tail of a partial last block is zeroed in place (a later
 * growth must read zeros there), whole blocks lose their bits now and their space after the
 * next commit. */
static int ovl_shrink(struct ic_overlay *ov, uint64_t size)
{
	static const uint8_t zeros[OVL_BS];
	uint64_t keep = ovl_blocks(size), old = ovl_blocks(ov->size);

	if (size % OVL_BS && ovl_test(ov, size / OVL_BS)) {
		int ret = ovl_pwrite_data(ov, zeros, OVL_BS - size % OVL_BS, size);

		if (ret)
			return ret;
	}
	ovl_update_range(ov, keep, old, false);
	ov->base_limit = ovl_min(ov->base_limit, size);
	ov->punch_lo = ovl_min(ov->punch_lo, keep);
	ov->punch_hi = ovl_max(ov->punch_hi, old);
	return 0;
}

int ic_overlay_truncate(struct ic_overlay *ov, uint64_t size)
{
	int ret;

	if (size > OVL_MAX_SIZE)
		return ic_fail(-EFBIG, "%s: size past the overlay's limit of %llu bytes",
			       ov->data_path, (unsigned long long)OVL_MAX_SIZE);
	pthread_rwlock_wrlock(&ov->lock);
	ret = ov->released ? -EROFS : ov->err ? ov->err : ovl_cut_lock(ov, F_RDLCK);
	if (!ret) {
		if (size < ov->size)
			ret = ovl_shrink(ov, size);
		if (!ret && size != ov->size)
			ovl_note_size(ov, size);
		ovl_cut_lock(ov, F_UNLCK);
	}
	pthread_rwlock_unlock(&ov->lock);
	return ret;
}

int ic_overlay_fsync(struct ic_overlay *ov)
{
	bool flush;
	int ret;

	/* Write back the bulk of the data without holding off readers and writers; the
	 * commit then finds little left to flush under the lock.  Its error cannot be
	 * ignored: the kernel reports a writeback error once per open file, so the commit's
	 * own fdatasync would succeed on pages this one found lost. */
	pthread_rwlock_rdlock(&ov->lock);
	flush = ov->unsynced && !ov->err && !ov->released;
	if (ov->released) {
		/* everything written before the release was committed by it */
		ret = ov->err;
		pthread_rwlock_unlock(&ov->lock);
		return ret;
	}
	pthread_rwlock_unlock(&ov->lock);
	ret = flush && fdatasync(ov->data_fd) < 0 ? -errno : 0;

	pthread_rwlock_wrlock(&ov->lock);
	if (ret && !ov->err)
		ov->err = ic_fail(ret, "%s: fdatasync: %s", ov->data_path, strerror(-ret));
	ret = ov->released ? ov->err : ov->err ? ov->err : ovl_cut_lock(ov, F_RDLCK);
	if (!ret && !ov->released) {
		ret = ovl_commit(ov);
		ovl_cut_lock(ov, F_UNLCK);
	}
	pthread_rwlock_unlock(&ov->lock);
	return ret;
}

int ic_overlay_release(struct ic_overlay *ov)
{
	int ret;

	pthread_rwlock_wrlock(&ov->lock);
	ret = ov->released ? 0 : ov->err ? ov->err : ovl_cut_lock(ov, F_RDLCK);
	if (!ret && !ov->released) {
		ret = ovl_commit(ov);
		ovl_cut_lock(ov, F_UNLCK);
	}
	ov->released = true;
	pthread_rwlock_unlock(&ov->lock);
	return ret;
}

static int ovl_open_file(const char *path, bool *created)
{
	int fd, ret = ic_open_regular(AT_FDCWD, NULL, path, O_RDWR, 0, &fd);

	if (ret == -ENOENT) {
		ret = ic_open_regular(AT_FDCWD, NULL, path, O_RDWR | O_CREAT | O_EXCL, 0600, &fd);
		*created |= !ret;
	}
	return ret ? ret : fd;
}

static char *ovl_concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 1);

	if (!p)
		return NULL;
	memcpy(p, a, la);
	memcpy(p + la, b, lb + 1);
	return p;
}

static int ovl_open_files(struct ic_overlay *ov, const char *prefix)
{
	const char *slash = strrchr(prefix, '/');

	ov->data_path = ovl_concat(prefix, ".data");
	ov->map_path = ovl_concat(prefix, ".map");
	if (!slash)
		ov->dir = ovl_concat(".", "");
	else if (slash == prefix)
		ov->dir = ovl_concat("/", "");
	else
		ov->dir = strndup(prefix, (size_t)(slash - prefix));
	if (!ov->dir || !ov->data_path || !ov->map_path)
		return -ENOMEM;
	ov->data_fd = ovl_open_file(ov->data_path, &ov->need_dirsync);
	if (ov->data_fd < 0)
		return ov->data_fd;
	ov->map_fd = ovl_open_file(ov->map_path, &ov->need_dirsync);
	return ov->map_fd < 0 ? ov->map_fd : 0;
}

static int ovl_init_lock(struct ic_overlay *ov)
{
	pthread_rwlockattr_t attr;
	int ret;

	pthread_rwlockattr_init(&attr);
	/* Readers must not starve a guest's writes and flushes. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	ret = -pthread_rwlock_init(&ov->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	return ret ? ic_fail(ret, "overlay lock: %s", strerror(-ret)) : 0;
}

void ovl_free(struct ic_overlay *ov, bool lock)
{
	for (uint64_t p = 0; p < ov->nr_pages; p++)
		free(ov->pages[p].bits);
	free(ov->pages);
	if (ov->data_fd >= 0)
		close(ov->data_fd);
	if (ov->map_fd >= 0)
		close(ov->map_fd);
	if (lock)
		pthread_rwlock_destroy(&ov->lock);
	free(ov->data_path);
	free(ov->map_path);
	free(ov->dir);
	free(ov);
}

int ic_overlay_open(const char *prefix, uint64_t base_size, const struct ic_overlay_bind *bind,
		    struct ic_overlay **out)
{
	struct ic_overlay *ov = calloc(1, sizeof(*ov));
	int ret;

	*out = NULL;
	if (!ov)
		return ic_fail(-ENOMEM, "%s: out of memory", prefix);
	ov->data_fd = ov->map_fd = -1;
	ov->dirty_lo = ov->punch_lo = UINT64_MAX;
	ov->base_size = base_size;
	if (bind) {
		size_t n = strnlen(bind->label, IC_OVERLAY_LABEL_MAX);

		memcpy(ov->bind.id, bind->id, IC_OVERLAY_BIND_LEN);
		/* NUL-padded, and printable whatever the caller gave */
		for (size_t i = 0; i < n; i++)
			ov->bind.label[i] = bind->label[i] < 0x20 || bind->label[i] > 0x7e ?
					    '?' : bind->label[i];
	}
	ret = ovl_init_lock(ov);
	if (ret) {
		ovl_free(ov, false);
		return ret;
	}
	if (base_size > OVL_MAX_SIZE)
		ret = ic_fail(-EFBIG, "%s: base of %llu bytes is too large for an overlay",
			      prefix, (unsigned long long)base_size);
	if (!ret)
		ret = ovl_open_files(ov, prefix);
	if (!ret)
		ret = ovl_cut_lock(ov, F_RDLCK);    /* loading repairs what unsynced writes broke */
	if (!ret) {
		ret = ovl_load_header(ov);
		if (!ret)
			ret = ovl_load_pages(ov);
		ovl_cut_lock(ov, F_UNLCK);
	}
	if (ret) {
		ovl_free(ov, true);
		return ret;
	}
	*out = ov;
	return 0;
}

void ic_overlay_close(struct ic_overlay *ov)
{
	if (!ov)
		return;
	/* The error, if any, is left in ic_last_error(); callers that care fsync first. */
	(void)ic_overlay_fsync(ov);
	ovl_free(ov, true);
}

uint64_t ic_overlay_size(struct ic_overlay *ov)
{
	uint64_t size;

	pthread_rwlock_rdlock(&ov->lock);
	size = ov->size;
	pthread_rwlock_unlock(&ov->lock);
	return size;
}

bool ic_overlay_modified(struct ic_overlay *ov)
{
	bool modified;

	pthread_rwlock_rdlock(&ov->lock);
	modified = ov->modified;
	pthread_rwlock_unlock(&ov->lock);
	return modified;
}
