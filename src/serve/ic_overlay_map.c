/* ic_overlay_map.c: the overlay's block map: the bitmap in memory, its shadow-paged
 * pages and headers on disk (loaded at open, written by a commit).  The format and the
 * commit's steps are described at the top of ic_overlay.c. */
#include "config.h"
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1		/* fallocate() when built without config.h */
#endif

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "ic_mem.h"
#include "ic_overlay_int.h"
#include "ic_util.h"

static const char ovl_magic[8] = { 'I', 'C', 'O', 'V', 'L', 'M', 'A', 'P' };
static uint64_t ovl_slot_sum(const void *slot, size_t field)
{
	uint8_t tmp[OVL_SLOT];

	memcpy(tmp, slot, OVL_SLOT);
	memset(tmp + field, 0, sizeof(uint64_t));
	return XXH3_64bits(tmp, OVL_SLOT);
}

/* ---- the in-memory bitmap ------------------------------------------------------ */

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
uint64_t ovl_run_end(const struct ic_overlay *ov, uint64_t blk, uint64_t limit, bool set)
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
int ovl_reserve(struct ic_overlay *ov, uint64_t lo, uint64_t hi)
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
void ovl_update_range(struct ic_overlay *ov, uint64_t lo, uint64_t hi, bool set)
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

int ovl_commit(struct ic_overlay *ov)
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
	/* Never reuse a generation, even one of a failed attempt (none reaches the limit:
	 * 2^63 commits). */
	if (ov->max_gen + 1 >= OVL_GEN_LIMIT)
		return ic_fail(IC_ECORRUPT, "%s: generations exhausted", ov->map_path);
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

/* A label is printable ASCII, NUL-terminated and NUL-padded. */
static bool ovl_label_valid(const char *label)
{
	size_t n = strnlen(label, IC_OVERLAY_LABEL_MAX + 1);

	if (n > IC_OVERLAY_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (label[i] < 0x20 || label[i] > 0x7e)
			return false;
	return ic_is_zero((const uint8_t *)label + n, IC_OVERLAY_LABEL_MAX + 1 - n);
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
	if (le64toh(h->gen) >= OVL_GEN_LIMIT)
		return ic_fail(IC_ECORRUPT, "%s: header generation %llu out of range", ov->map_path,
			       (unsigned long long)le64toh(h->gen));
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
int ovl_load_header(struct ic_overlay *ov)
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
	if (!ic_is_zero(s[0].raw, OVL_SLOT))
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
		if (gen >= OVL_GEN_LIMIT)
			return ic_fail(IC_ECORRUPT, "%s: page %llu: generation %llu out of range",
				       ov->map_path, (unsigned long long)p, (unsigned long long)gen);
		ov->max_gen = ovl_max(ov->max_gen, gen);
		if (gen > ov->gen)
			ovl_mark_dirty(ov, p);
		else if (pg->slot < 0 || gen > le64toh(dp[pg->slot].gen))
			pg->slot = (int8_t)s;
	}
	if (ret || pg->slot < 0 ||
	    ic_is_zero((const uint8_t *)dp[pg->slot].words, OVL_SLOT - OVL_PAGE_HDR))
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
int ovl_load_pages(struct ic_overlay *ov)
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
	if (ov->readonly)
		return 0;    /* a snapshot reads nothing past size */
	if (ov->size % OVL_BS && ovl_test(ov, ov->size / OVL_BS))
		ret = ovl_pwrite_data(ov, zeros, OVL_BS - ov->size % OVL_BS, ov->size);
	if (!ret && fstat(ov->data_fd, &st) == 0 && (uint64_t)st.st_size > nblk * OVL_BS &&
	    ftruncate(ov->data_fd, (off_t)(nblk * OVL_BS)) < 0)
		ret = ic_fail(-errno, "%s: ftruncate: %s", ov->data_path, strerror(errno));
	return ret;
}

