/* ic_overlay.c: a persistent copy-on-write overlay over one read-only file.
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
 * Locking: one rwlock.  Reads share it (so the base callback may run in several threads at
 * once); writes, truncates and commits hold it exclusively, so no read sees half a write.
 * fsync first flushes data without the lock, then commits under it.  A failed fdatasync
 * is sticky: the kernel may have dropped the pages, so writes and fsyncs fail from then on.
 */
#include "config.h"
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1		/* fallocate() when built without config.h */
#endif

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "ic_overlay.h"
#include "ic_util.h"

#define OVL_BS		((uint64_t)IC_OVERLAY_BLOCK)
#define OVL_SLOT	4096u
#define OVL_PAGE_HDR	32u
#define OVL_PAGE_WORDS	((OVL_SLOT - OVL_PAGE_HDR) / 8)		/* 508 */
#define OVL_PAGE_BITS	((uint64_t)OVL_PAGE_WORDS * 64)		/* 32512 blocks */
#define OVL_PAGES_OFF	(2 * (uint64_t)OVL_SLOT)
#define OVL_VERSION	2u
#define OVL_VERSION_UNBOUND 1u				/* before the binding */
#define OVL_F_MODIFIED	1u
#define OVL_PAGE_MAGIC	0x50564f49u				/* "IOVP" */
/* 256 TiB: keeps the page array (16 bytes per 127 MiB) small. */
#define OVL_MAX_SIZE	(1ull << 48)
#define OVL_MAX_PAGES	(OVL_MAX_SIZE / OVL_BS / OVL_PAGE_BITS + 1)

static const char ovl_magic[8] = { 'I', 'C', 'O', 'V', 'L', 'M', 'A', 'P' };

struct ovl_disk_header {
	char magic[8];
	uint32_t version;
	uint32_t block_size;
	uint32_t page_bits;
	uint32_t flags;
	uint64_t gen;
	uint64_t size;
	uint64_t base_limit;
	uint64_t base_size;
	uint64_t checksum;	/* XXH3-64 of the whole slot with this field zero */
	uint8_t bind[IC_OVERLAY_BIND_LEN];
	char label[IC_OVERLAY_LABEL_MAX + 1];
};

_Static_assert(offsetof(struct ovl_disk_header, bind) == 64, "binding offset");
_Static_assert(offsetof(struct ovl_disk_header, label) == 112, "label offset");

union ovl_header_slot {
	struct ovl_disk_header h;
	uint8_t raw[OVL_SLOT];
};

struct ovl_disk_page {
	uint32_t magic;
	uint32_t reserved;
	uint64_t gen;
	uint64_t index;
	uint64_t checksum;	/* XXH3-64 of the whole slot with this field zero */
	uint64_t words[OVL_PAGE_WORDS];
};

_Static_assert(sizeof(struct ovl_disk_page) == OVL_SLOT, "a page fills one slot");
_Static_assert(offsetof(struct ovl_disk_page, words) == OVL_PAGE_HDR, "page header size");

struct ovl_page {
	uint64_t *bits;		/* OVL_PAGE_WORDS words; NULL while no bit is set */
	int8_t slot;		/* map slot of the committed copy, -1 if none */
	bool dirty;		/* differs from the committed copy */
};

struct ic_overlay {
	/* Readers share it; writes, truncates, commits and accessors of state take it. */
	pthread_rwlock_t lock;
	int data_fd, map_fd;
	char *data_path, *map_path, *dir;
	struct ovl_page *pages;
	uint64_t nr_pages;
	uint64_t dirty_lo, dirty_hi;	/* pages that may be dirty: [lo, hi) */
	uint64_t base_size, size, base_limit;
	struct ic_overlay_bind bind;	/* recorded in the header */
	uint64_t gen;			/* of the committed header */
	int hdr_slot;			/* header slot holding it */
	uint64_t max_gen;		/* highest generation ever stamped or seen */
	uint64_t punch_lo, punch_hi;	/* blocks dropped by truncate, space not yet freed */
	bool modified, hdr_dirty, unsynced, need_dirsync;
	int err;			/* sticky: a failed fdatasync may have lost writes */
};

static uint64_t ovl_min(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t ovl_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static uint64_t ovl_blocks(uint64_t bytes)
{
	return bytes / OVL_BS + (bytes % OVL_BS != 0);
}

static uint64_t ovl_slot_sum(const void *slot, size_t field)
{
	uint8_t tmp[OVL_SLOT];

	memcpy(tmp, slot, OVL_SLOT);
	memset(tmp + field, 0, sizeof(uint64_t));
	return XXH3_64bits(tmp, OVL_SLOT);
}

/* ---- the in-memory bitmap ------------------------------------------------------ */

static const uint64_t *ovl_page_bits(const struct ic_overlay *ov, uint64_t p)
{
	return p < ov->nr_pages ? ov->pages[p].bits : NULL;
}

static bool ovl_test(const struct ic_overlay *ov, uint64_t blk)
{
	const uint64_t *bits = ovl_page_bits(ov, blk / OVL_PAGE_BITS);
	uint64_t i = blk % OVL_PAGE_BITS;

	return bits && (bits[i / 64] >> (i % 64) & 1);
}

/* First bit index in [i, end) of one page that differs from set, or end. */
static uint64_t ovl_page_scan(const uint64_t *bits, uint64_t i, uint64_t end, bool set)
{
	for (uint64_t w = i / 64; w * 64 < end; w++) {
		uint64_t x = set ? ~bits[w] : bits[w];

		if (w == i / 64)
			x &= ~0ull << (i % 64);
		if (x)
			return ovl_min(w * 64 + (uint64_t)__builtin_ctzll(x), end);
	}
	return end;
}

/* First block in [blk, limit) whose bit differs from set, or limit. */
static uint64_t ovl_run_end(const struct ic_overlay *ov, uint64_t blk, uint64_t limit, bool set)
{
	while (blk < limit) {
		uint64_t p = blk / OVL_PAGE_BITS, first = p * OVL_PAGE_BITS;
		uint64_t end = ovl_min(OVL_PAGE_BITS, limit - first);
		const uint64_t *bits = ovl_page_bits(ov, p);
		uint64_t j;

		if (!bits && set)
			return blk;
		j = bits ? ovl_page_scan(bits, blk - first, end, set) : end;
		if (j < end)
			return first + j;
		blk = first + end;
	}
	return limit;
}

static void ovl_mark_dirty(struct ic_overlay *ov, uint64_t p)
{
	ov->pages[p].dirty = true;
	ov->dirty_lo = ovl_min(ov->dirty_lo, p);
	ov->dirty_hi = ovl_max(ov->dirty_hi, p + 1);
}

static int ovl_grow_pages(struct ic_overlay *ov, uint64_t n)
{
	struct ovl_page *pages;

	if (n <= ov->nr_pages)
		return 0;
	pages = realloc(ov->pages, n * sizeof(*pages));
	if (!pages)
		return ic_fail(-ENOMEM, "%s: out of memory for the block map", ov->map_path);
	for (uint64_t p = ov->nr_pages; p < n; p++)
		pages[p] = (struct ovl_page){ .bits = NULL, .slot = -1, .dirty = false };
	ov->pages = pages;
	ov->nr_pages = n;
	return 0;
}

/* Allocate what setting the bits of blocks [lo, hi) needs, so that it cannot fail later. */
static int ovl_reserve(struct ic_overlay *ov, uint64_t lo, uint64_t hi)
{
	uint64_t p_hi = (hi - 1) / OVL_PAGE_BITS;
	int ret = ovl_grow_pages(ov, p_hi + 1);

	for (uint64_t p = lo / OVL_PAGE_BITS; !ret && p <= p_hi; p++) {
		if (ov->pages[p].bits)
			continue;
		ov->pages[p].bits = calloc(OVL_PAGE_WORDS, sizeof(uint64_t));
		if (!ov->pages[p].bits)
			ret = ic_fail(-ENOMEM, "%s: out of memory for the block map", ov->map_path);
	}
	return ret;
}

static bool ovl_page_update(uint64_t *bits, uint64_t i, uint64_t j, bool set)
{
	bool changed = false;

	while (i < j) {
		uint64_t b = i % 64, n = ovl_min(64 - b, j - i);
		uint64_t mask = (n == 64 ? ~0ull : (1ull << n) - 1) << b;
		uint64_t old = bits[i / 64];

		bits[i / 64] = set ? old | mask : old & ~mask;
		changed |= bits[i / 64] != old;
		i += n;
	}
	return changed;
}

static bool ovl_page_empty(const uint64_t *bits)
{
	for (unsigned w = 0; w < OVL_PAGE_WORDS; w++)
		if (bits[w])
			return false;
	return true;
}

/* Set or clear the bits of blocks [lo, hi); setting needs ovl_reserve() first. */
static void ovl_update_range(struct ic_overlay *ov, uint64_t lo, uint64_t hi, bool set)
{
	while (lo < hi && lo / OVL_PAGE_BITS < ov->nr_pages) {
		uint64_t p = lo / OVL_PAGE_BITS, first = p * OVL_PAGE_BITS;
		uint64_t end = ovl_min(hi, first + OVL_PAGE_BITS);
		struct ovl_page *pg = &ov->pages[p];

		if (pg->bits && ovl_page_update(pg->bits, lo - first, end - first, set))
			ovl_mark_dirty(ov, p);
		if (!set && pg->bits && ovl_page_empty(pg->bits)) {
			free(pg->bits);
			pg->bits = NULL;
		}
		lo = end;
	}
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

/* ---- writing -------------------------------------------------------------------- */

static void ovl_note_size(struct ic_overlay *ov, uint64_t size)
{
	if (size != ov->size || !ov->modified)
		ov->hdr_dirty = true;
	ov->size = size;
	ov->modified = true;
}

static int ovl_pwrite_data(struct ic_overlay *ov, const void *buf, uint64_t len, uint64_t off)
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
	ret = ov->err ? ov->err : ovl_write_locked(ov, buf, len, off, base, arg);
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
	ret = ov->err;
	if (!ret && size < ov->size)
		ret = ovl_shrink(ov, size);
	if (!ret && size != ov->size)
		ovl_note_size(ov, size);
	pthread_rwlock_unlock(&ov->lock);
	return ret;
}

/* ---- committing ----------------------------------------------------------------- */

/* A failed fdatasync may have dropped dirty pages: a later one could succeed without
 * them, so the overlay refuses further writes and commits. */
static int ovl_datasync(struct ic_overlay *ov, int fd, const char *path)
{
	if (fdatasync(fd) == 0)
		return 0;
	ov->err = ic_fail(-errno, "%s: fdatasync: %s", path, strerror(errno));
	return ov->err;
}

static int ovl_write_page(struct ic_overlay *ov, uint64_t p, uint64_t gen)
{
	struct ovl_page *pg = &ov->pages[p];
	struct ovl_disk_page dp = {
		.magic = htole32(OVL_PAGE_MAGIC),
		.gen = htole64(gen),
		.index = htole64(p),
	};
	int slot = pg->slot == 0 ? 1 : 0;

	for (unsigned w = 0; pg->bits && w < OVL_PAGE_WORDS; w++)
		dp.words[w] = htole64(pg->bits[w]);
	dp.checksum = htole64(ovl_slot_sum(&dp, offsetof(struct ovl_disk_page, checksum)));
	return ic_pwrite_full(ov->map_fd, &dp, OVL_SLOT,
			      OVL_PAGES_OFF + (2 * p + (uint64_t)slot) * OVL_SLOT, ov->map_path);
}

static int ovl_write_header(struct ic_overlay *ov, uint64_t gen)
{
	union ovl_header_slot s;

	memset(&s, 0, sizeof(s));
	memcpy(s.h.magic, ovl_magic, sizeof(ovl_magic));
	s.h.version = htole32(OVL_VERSION);
	s.h.block_size = htole32((uint32_t)OVL_BS);
	s.h.page_bits = htole32((uint32_t)OVL_PAGE_BITS);
	s.h.flags = htole32(ov->modified ? OVL_F_MODIFIED : 0);
	s.h.gen = htole64(gen);
	s.h.size = htole64(ov->size);
	s.h.base_limit = htole64(ov->base_limit);
	s.h.base_size = htole64(ov->base_size);
	memcpy(s.h.bind, ov->bind.id, sizeof(s.h.bind));
	memcpy(s.h.label, ov->bind.label, sizeof(s.h.label));
	s.h.checksum = htole64(ovl_slot_sum(&s, offsetof(struct ovl_disk_header, checksum)));
	return ic_pwrite_full(ov->map_fd, &s, OVL_SLOT, (uint64_t)(1 - ov->hdr_slot) * OVL_SLOT,
			      ov->map_path);
}

/* Give back the space of blocks dropped by truncate.  Only after a commit: until then the
 * committed map may still point at them.  Failures cost space, never correctness. */
static void ovl_punch(struct ic_overlay *ov)
{
	uint64_t nblk = ovl_blocks(ov->size), lo = ov->punch_lo;
	uint64_t hi = ovl_min(ov->punch_hi, nblk);

	if (ov->punch_hi > nblk && ftruncate(ov->data_fd, (off_t)(nblk * OVL_BS)) < 0) {
		/* only space is lost; open trims the file again */
	}
	while (lo < hi) {
		uint64_t a = ovl_run_end(ov, lo, hi, true);
		uint64_t b = ovl_run_end(ov, a, hi, false);

#ifdef FALLOC_FL_PUNCH_HOLE
		if (b > a)
			(void)fallocate(ov->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)(a * OVL_BS), (off_t)((b - a) * OVL_BS));
#endif
		lo = b;
	}
	ov->punch_lo = UINT64_MAX;
	ov->punch_hi = 0;
}

static void ovl_committed(struct ic_overlay *ov, uint64_t gen)
{
	for (uint64_t p = ov->dirty_lo; p < ov->dirty_hi; p++) {
		struct ovl_page *pg = &ov->pages[p];

		if (pg->dirty)
			pg->slot = pg->slot == 0 ? 1 : 0;
		pg->dirty = false;
	}
	ov->dirty_lo = UINT64_MAX;
	ov->dirty_hi = 0;
	ov->hdr_dirty = false;
	ov->gen = gen;
	ov->hdr_slot = 1 - ov->hdr_slot;
	ovl_punch(ov);
}

static int ovl_commit(struct ic_overlay *ov)
{
	uint64_t gen;
	int ret;

	if (ov->unsynced) {
		ret = ovl_datasync(ov, ov->data_fd, ov->data_path);
		if (ret)
			return ret;
		ov->unsynced = false;
	}
	if (!ov->hdr_dirty && ov->dirty_lo >= ov->dirty_hi)
		return 0;
	if (ov->need_dirsync) {
		ret = ic_fsync_dir(ov->dir);
		if (ret)
			return ret;
		ov->need_dirsync = false;
	}
	/* Never reuse a generation, even one of a failed attempt. */
	gen = ++ov->max_gen;
	for (uint64_t p = ov->dirty_lo; p < ov->dirty_hi; p++) {
		ret = ov->pages[p].dirty ? ovl_write_page(ov, p, gen) : 0;
		if (ret)
			return ret;
	}
	ret = ovl_datasync(ov, ov->map_fd, ov->map_path);
	if (!ret)
		ret = ovl_write_header(ov, gen);
	if (!ret)
		ret = ovl_datasync(ov, ov->map_fd, ov->map_path);
	if (!ret)
		ovl_committed(ov, gen);
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
	flush = ov->unsynced && !ov->err;
	pthread_rwlock_unlock(&ov->lock);
	ret = flush && fdatasync(ov->data_fd) < 0 ? -errno : 0;

	pthread_rwlock_wrlock(&ov->lock);
	if (ret && !ov->err)
		ov->err = ic_fail(ret, "%s: fdatasync: %s", ov->data_path, strerror(-ret));
	ret = ov->err ? ov->err : ovl_commit(ov);
	pthread_rwlock_unlock(&ov->lock);
	return ret;
}

/* ---- opening -------------------------------------------------------------------- */

/* pread that reads zeros past the end of the file. */
static int ovl_pread_zero(int fd, void *buf, size_t len, uint64_t off, const char *path)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ic_fail(-errno, "%s: read at offset %llu: %s", path,
				       (unsigned long long)off, strerror(errno));
		if (n == 0) {
			memset(p, 0, len);
			break;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static bool ovl_header_valid(const union ovl_header_slot *s)
{
	return !memcmp(s->h.magic, ovl_magic, sizeof(ovl_magic)) &&
	       le64toh(s->h.checksum) ==
		       ovl_slot_sum(s, offsetof(struct ovl_disk_header, checksum));
}

static bool ovl_all_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

/* A label is printable ASCII, NUL-terminated and NUL-padded. */
static bool ovl_label_valid(const char *label)
{
	size_t n = strnlen(label, IC_OVERLAY_LABEL_MAX + 1);

	if (n > IC_OVERLAY_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (label[i] < 0x20 || label[i] > 0x7e)
			return false;
	return ovl_all_zero((const uint8_t *)label + n, IC_OVERLAY_LABEL_MAX + 1 - n);
}

static const char *ovl_label_or(const char *label)
{
	return label[0] ? label : "an unnamed base";
}

static int ovl_check_header(struct ic_overlay *ov, const struct ovl_disk_header *h)
{
	uint64_t size = le64toh(h->size), limit = le64toh(h->base_limit);
	uint32_t version = le32toh(h->version);

	if ((version != OVL_VERSION && version != OVL_VERSION_UNBOUND) ||
	    le32toh(h->block_size) != OVL_BS || le32toh(h->page_bits) != OVL_PAGE_BITS)
		return ic_fail(IC_ECORRUPT, "%s: unsupported map version %u", ov->map_path,
			       version);
	if (version == OVL_VERSION_UNBOUND)
		return ic_fail(-ESTALE, "%s: overlay of version 1, which does not record what it "
			       "was made on: refused for %s", ov->map_path,
			       ovl_label_or(ov->bind.label));
	if (!ovl_label_valid(h->label))
		return ic_fail(IC_ECORRUPT, "%s: damaged label", ov->map_path);
	if (memcmp(h->bind, ov->bind.id, IC_OVERLAY_BIND_LEN))
		return ic_fail(-ESTALE, "%s: overlay made on %s, not on %s", ov->map_path,
			       ovl_label_or(h->label), ovl_label_or(ov->bind.label));
	if (le64toh(h->base_size) != ov->base_size)
		return ic_fail(-ESTALE, "%s: made over a base of %llu bytes, not %llu",
			       ov->map_path, (unsigned long long)le64toh(h->base_size),
			       (unsigned long long)ov->base_size);
	if (size > OVL_MAX_SIZE || limit > size || limit > ov->base_size)
		return ic_fail(IC_ECORRUPT, "%s: impossible size %llu or base limit %llu",
			       ov->map_path, (unsigned long long)size,
			       (unsigned long long)limit);
	ov->size = size;
	ov->base_limit = limit;
	ov->gen = ov->max_gen = le64toh(h->gen);
	ov->modified = le32toh(h->flags) & OVL_F_MODIFIED;
	return 0;
}

/* The valid header of highest generation.  None at all is a new overlay only if slot 0 is
 * still blank: the first commit writes slot 1, and slot 0 is written only while slot 1
 * holds a committed header. */
static int ovl_load_header(struct ic_overlay *ov)
{
	union ovl_header_slot s[2];
	int best = -1;
	int ret = ovl_pread_zero(ov->map_fd, s, sizeof(s), 0, ov->map_path);

	if (ret)
		return ret;
	for (int i = 0; i < 2; i++) {
		if (ovl_header_valid(&s[i]) &&
		    (best < 0 || le64toh(s[i].h.gen) > le64toh(s[best].h.gen)))
			best = i;
	}
	ov->hdr_slot = best < 0 ? 0 : best;
	if (best >= 0)
		return ovl_check_header(ov, &s[best].h);
	if (!ovl_all_zero(s[0].raw, OVL_SLOT))
		return ic_fail(IC_ECORRUPT, "%s: no valid header", ov->map_path);
	ov->size = ov->base_limit = ov->base_size;
	return 0;
}

static bool ovl_page_valid(const struct ovl_disk_page *dp, uint64_t p)
{
	return le32toh(dp->magic) == OVL_PAGE_MAGIC && le64toh(dp->index) == p &&
	       le64toh(dp->checksum) == ovl_slot_sum(dp, offsetof(struct ovl_disk_page, checksum));
}

/* Page p: the valid slot of highest generation not above the committed header.  A valid
 * slot above it was left by a failed commit: the page is marked dirty so that the next
 * commit overwrites that slot with a higher generation. */
static int ovl_load_page(struct ic_overlay *ov, uint64_t p)
{
	struct ovl_disk_page dp[2];
	struct ovl_page *pg = &ov->pages[p];
	int ret = ovl_pread_zero(ov->map_fd, dp, sizeof(dp), OVL_PAGES_OFF + p * 2 * OVL_SLOT,
				 ov->map_path);

	for (int s = 0; !ret && s < 2; s++) {
		uint64_t gen = le64toh(dp[s].gen);

		if (!ovl_page_valid(&dp[s], p))
			continue;
		ov->max_gen = ovl_max(ov->max_gen, gen);
		if (gen > ov->gen)
			ovl_mark_dirty(ov, p);
		else if (pg->slot < 0 || gen > le64toh(dp[pg->slot].gen))
			pg->slot = (int8_t)s;
	}
	if (ret || pg->slot < 0 ||
	    ovl_all_zero((const uint8_t *)dp[pg->slot].words, OVL_SLOT - OVL_PAGE_HDR))
		return ret;
	pg->bits = malloc(OVL_PAGE_WORDS * sizeof(uint64_t));
	if (!pg->bits)
		return ic_fail(-ENOMEM, "%s: out of memory for the block map", ov->map_path);
	for (unsigned w = 0; w < OVL_PAGE_WORDS; w++)
		pg->bits[w] = le64toh(dp[pg->slot].words[w]);
	return 0;
}

/* Load every page the map holds, then restore the invariants past size that unsynced
 * writes may have broken: bits, the tail of the last block, the data file's length. */
static int ovl_load_pages(struct ic_overlay *ov)
{
	static const uint8_t zeros[OVL_BS];
	uint64_t n = 0, nblk = ovl_blocks(ov->size);
	struct stat st;
	int ret = 0;

	if (fstat(ov->map_fd, &st) < 0)
		return ic_fail(-errno, "%s: stat: %s", ov->map_path, strerror(errno));
	if ((uint64_t)st.st_size > OVL_PAGES_OFF)
		n = ((uint64_t)st.st_size - OVL_PAGES_OFF + 2 * OVL_SLOT - 1) / (2 * OVL_SLOT);
	if (n > OVL_MAX_PAGES)
		return ic_fail(IC_ECORRUPT, "%s: map too large", ov->map_path);
	ret = ovl_grow_pages(ov, n);
	for (uint64_t p = 0; !ret && p < n; p++)
		ret = ovl_load_page(ov, p);
	if (ret)
		return ret;
	ovl_update_range(ov, nblk, n * OVL_PAGE_BITS, false);
	if (ov->size % OVL_BS && ovl_test(ov, ov->size / OVL_BS))
		ret = ovl_pwrite_data(ov, zeros, OVL_BS - ov->size % OVL_BS, ov->size);
	if (!ret && fstat(ov->data_fd, &st) == 0 && (uint64_t)st.st_size > nblk * OVL_BS &&
	    ftruncate(ov->data_fd, (off_t)(nblk * OVL_BS)) < 0)
		ret = ic_fail(-errno, "%s: ftruncate: %s", ov->data_path, strerror(errno));
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

static void ovl_free(struct ic_overlay *ov, bool lock)
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
		ret = ovl_load_header(ov);
	if (!ret)
		ret = ovl_load_pages(ov);
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
