/* ic_image.c: the reader of image files: header, slots, the private index, records. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "ic_codec.h"
#include "ic_image.h"
#include "ic_lock.h"
#include "ic_util.h"

#define IBUF_ENTRIES 16384u

/* ---- reader -------------------------------------------------------------------- */

static int pick_slot(struct ic_image *img, const uint8_t *hdrbuf)
{
	struct icf_slot a, b;
	/* B first: when both fail, the message left is slot A's (B is often just unused) */
	int rb = ic_slot_decode(hdrbuf + ICF_SLOT_B_OFF, &b, img->hdr.version, img->path);
	int ra = ic_slot_decode(hdrbuf + ICF_SLOT_A_OFF, &a, img->hdr.version, img->path);

	if (ra && rb)
		return ra;    /* message of slot A's failure */
	if (!ra && (rb || a.generation > b.generation)) {
		img->slot = a;
		img->slot_index = 0;
	} else {
		img->slot = b;
		img->slot_index = 1;
	}
	return 0;
}

int ic_image_open(const char *path, int flags, struct ic_image **out)
{
	struct ic_image *img = calloc(1, sizeof(*img));
	uint8_t *hdrbuf = malloc(ICF_HEADER_SIZE);
	struct stat st;
	int ret;

	if (!img || !hdrbuf) {
		ret = -ENOMEM;
		goto out_free;
	}
	img->path = strdup(path);
	pthread_mutex_init(&img->index_mu, NULL);
	if (!img->path) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = ic_open_regular(AT_FDCWD, NULL, path, flags, 0, &img->fd);
	if (ret)
		goto out_free;
	/* A reader announces itself before it reads the slots, so that a consolidation
	 * that switched this file's slot either sees the lock (and defers punching the
	 * records the old slot uses) or was done before we read (FORMAT.md "Locks"). */
	if ((flags & O_ACCMODE) == O_RDONLY) {
		/* without it a consolidation would not see this reader: do not read at all */
		ret = ic_lock_hold(img->fd, IC_LOCK_READER);
		if (ret) {
			ret = ic_fail(ret, "%s: cannot take the reader lock: %s", path,
				      strerror(-ret));
			goto out_free;
		}
	}
	if (fstat(img->fd, &st) < 0) {
		ret = ic_fail(-errno, "%s: stat: %s", path, strerror(errno));
		goto out_free;
	}
	img->file_size = (uint64_t)st.st_size;
	if (img->file_size < ICF_HEADER_SIZE) {
		ret = ic_fail(IC_ECORRUPT, "%s: truncated: %llu bytes, smaller than the header", path,
			      (unsigned long long)img->file_size);
		goto out_free;
	}
	ret = ic_pread_full(img->fd, hdrbuf, ICF_HEADER_SIZE, 0, path);
	if (!ret)
		ret = ic_header_decode(hdrbuf, &img->hdr, path);
	if (!ret)
		ret = pick_slot(img, hdrbuf);
	if (ret)
		goto out_free;
	if (img->slot.data_end > img->file_size) {
		ret = ic_fail(IC_ECORRUPT, "%s: truncated: %llu bytes, needs %llu", path,
			      (unsigned long long)img->file_size,
			      (unsigned long long)img->slot.data_end);
		goto out_free;
	}
	free(hdrbuf);
	*out = img;
	return 0;
out_free:
	free(hdrbuf);
	ic_image_close(img);
	return ret;
}

void ic_image_close(struct ic_image *img)
{
	if (!img)
		return;
	free(img->index);
	free(img->index_err);
	if (img->path)
		pthread_mutex_destroy(&img->index_mu);
	if (img->fd >= 0 && img->path)
		close(img->fd);
	free(img->path);
	free(img);
}

/* v1: flags (host keygen) 0.  v2: a key generation readers know, and a non-zero point id
 * of the origin, which for the point's own entries is the slot's: a record or zero
 * entry of another point under the same sequence number is not this point's. */
static bool entry_ids_ok(const struct ic_image *img, const struct icf_entry *e)
{
	if (img->hdr.version == ICF_IMAGE_V1)
		return e->keygen == 0;
	if (e->keygen > ICF_KEY_GEN_MAX || e->origin_id == 0)
		return false;
	return e->origin != img->slot.seq || e->origin_id == img->slot.point_id;
}

static int entry_bounds(const struct ic_image *img, const struct icf_entry *e)
{
	const struct icf_slot *s = &img->slot;
	uint64_t nblocks = (s->disk_size + img->hdr.block_size - 1) / img->hdr.block_size;
	uint64_t idx_end = s->index_offset + s->index_count * sizeof(struct icf_entry);
	uint64_t last_len = s->disk_size - (nblocks - 1) * img->hdr.block_size;

	if (e->origin == 0 || e->origin > s->seq || !entry_ids_ok(img, e))
		return -1;
	if (e->pos >= nblocks)
		return -1;
	if (e->plain_len == 0 || e->plain_len > img->hdr.block_size)
		return -1;
	if (e->pos == nblocks - 1 && e->plain_len != last_len)
		return -1;
	if (e->pos < nblocks - 1 && e->plain_len != img->hdr.block_size)
		return -1;
	if (e->kind == ICF_ENTRY_ZERO)
		return (e->offset || e->stored_len || e->rec_hash) ? -1 : 0;
	if (e->kind != ICF_ENTRY_RAW && e->kind != ICF_ENTRY_ZSTD)
		return -1;
	/* Readers size their record buffers by ic_codec_bound() (FORMAT.md 4.2); written so
	 * that a hostile offset near 2^64 cannot wrap around. */
	if (e->stored_len > ic_codec_bound(img->hdr.block_size) ||
	    (e->kind == ICF_ENTRY_RAW && e->stored_len != e->plain_len + ICF_RECORD_OVERHEAD))
		return -1;
	if (e->stored_len <= ICF_RECORD_OVERHEAD || e->offset < ICF_HEADER_SIZE ||
	    e->offset > s->data_end || e->stored_len > s->data_end - e->offset)
		return -1;
	if (e->offset < idx_end && e->offset + e->stored_len > s->index_offset)
		return -1;
	return 0;
}

/* Decode and bound-check the entry at raw (entry i of img). */
static int entry_check(const struct ic_image *img, const uint8_t *raw, uint64_t i,
		       struct icf_entry *e)
{
	if (ic_entry_decode(raw, e, img->hdr.version))
		return ic_fail(IC_ECORRUPT, "%s: index checksum mismatch (index damaged at entry %llu)",
			       img->path, (unsigned long long)i);
	if (entry_bounds(img, e))
		return ic_fail(IC_ECORRUPT, "%s: index entry %llu (block %llu): fields out of bounds",
			       img->path, (unsigned long long)i, (unsigned long long)e->pos);
	return 0;
}

int ic_image_entry(const struct ic_image *img, uint64_t i, struct icf_entry *e)
{
	if (!img->index)
		return ic_fail(-EINVAL, "%s: index not read yet", img->path);
	if (i >= img->slot.index_count)
		return ic_fail(-EINVAL, "%s: entry %llu out of range", img->path,
			       (unsigned long long)i);
	return entry_check(img, img->index + i * sizeof(struct icf_entry), i, e);
}

uint64_t ic_image_entry_pos(const struct ic_image *img, uint64_t i)
{
	uint64_t v;

	memcpy(&v, img->index + i * sizeof(struct icf_entry), 8);
	return le64toh(v);
}

/* An entry failed its checks: rot (the index hash fails too) or a forged index (the
 * hash was fixed: the entry's own message stands)?  The rest of the index is hashed
 * through buf (buf_entries entries), reused, so this costs time bounded by the file, not memory.
 * Version 1 entries carry their own checksum, so their damage was named already. */
static int rot_or_forged(struct ic_image *img, XXH3_state_t *h, uint8_t *buf, uint64_t buf_entries,
			 uint64_t from, uint64_t bad)
{
	const struct icf_slot *s = &img->slot;
	const uint64_t esz = sizeof(struct icf_entry);
	XXH128_canonical_t c;

	if (img->hdr.version == ICF_IMAGE_V1)
		return IC_ECORRUPT;
	for (uint64_t done = from; done < s->index_count;) {
		uint64_t k = s->index_count - done < buf_entries ? s->index_count - done
								  : buf_entries;
		int ret = ic_pread_full(img->fd, buf, (size_t)(k * esz), s->index_offset + done * esz,
					img->path);

		if (ret)
			return ret;
		XXH3_128bits_update(h, buf, (size_t)(k * esz));
		done += k;
	}
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
	if (memcmp(c.digest, s->index_hash, ICF_INDEX_HASH_LEN))
		return ic_fail(IC_ECORRUPT, "%s: index checksum mismatch (index damaged at entry %llu)",
			       img->path, (unsigned long long)bad);
	return IC_ECORRUPT;
}

/* Read the index into private memory, a chunk at a time: each chunk's entries are
 * checked (checksum, bounds, ascending) and hashed before the next is read, and the
 * buffer grows only with what was checked, so a garbage or sparse index fails at its
 * first chunk.  Nothing later reads the file's index again: what the seal is checked
 * against is what every lookup uses, whatever the storage does meanwhile. */
static int load_index(struct ic_image *img)
{
	const struct icf_slot *s = &img->slot;
	const uint64_t esz = sizeof(struct icf_entry);
	uint64_t n = s->index_count, bs = img->hdr.block_size;
	uint64_t nblocks = (s->disk_size + bs - 1) / bs, done = 0, cap = 0, prev = 0, want;
	XXH3_state_t *h = NULL;
	XXH128_canonical_t c;
	struct icf_entry e;
	uint8_t *buf = NULL;
	struct stat st;
	int ret = 0;

	/* Positions ascend below the disk's block count: entry nblocks cannot be valid, so
	 * no more than nblocks + 1 entries are ever read or allocated (that one fails with
	 * the precise cause). */
	want = n > nblocks ? nblocks + 1 : n;
	if (fstat(img->fd, &st) < 0)
		return ic_fail(-errno, "%s: stat: %s", img->path, strerror(errno));
	if (s->data_end > (uint64_t)st.st_size)
		return ic_fail(IC_ECORRUPT, "%s: truncated: %llu bytes, needs %llu", img->path,
			       (unsigned long long)st.st_size, (unsigned long long)s->data_end);
	h = XXH3_createState();
	if (!h)
		return -ENOMEM;
	XXH3_128bits_reset(h);
	while (done < want) {
		uint64_t k = want - done < IBUF_ENTRIES ? want - done : IBUF_ENTRIES;
		uint8_t *chunk;

		if (done + k > cap) {
			uint64_t ncap = cap * 2 > done + k ? cap * 2 : done + k;
			uint8_t *nb;

			if (ncap > want)
				ncap = want;
			nb = realloc(buf, (size_t)(ncap * esz));
			if (!nb) {
				ret = ic_fail(-ENOMEM, "%s: no memory for an index of %llu entries",
					      img->path, (unsigned long long)n);
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		chunk = buf + done * esz;
		ret = ic_pread_full(img->fd, chunk, (size_t)(k * esz), s->index_offset + done * esz,
				    img->path);
		if (ret)
			goto out;
		XXH3_128bits_update(h, chunk, (size_t)(k * esz));
		for (uint64_t i = 0; i < k; i++) {
			ret = entry_check(img, chunk + i * esz, done + i, &e);
			if (!ret && done + i && e.pos <= prev)
				ret = ic_fail(IC_ECORRUPT, "%s: index entry %llu out of order",
					      img->path, (unsigned long long)(done + i));
			if (ret) {
				if (ret == IC_ECORRUPT)
					ret = rot_or_forged(img, h, chunk, k, done + k, done + i);
				goto out;
			}
			prev = e.pos;
		}
		done += k;
	}
	if (want < n) {    /* not reached: entry nblocks failed above */
		ret = ic_fail(IC_ECORRUPT, "%s: index of %llu entries for a disk of %llu blocks",
			      img->path, (unsigned long long)n, (unsigned long long)nblocks);
		goto out;
	}
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
	if (memcmp(c.digest, s->index_hash, ICF_INDEX_HASH_LEN)) {
		ret = ic_fail(IC_ECORRUPT, "%s: index checksum mismatch (index damaged)", img->path);
		goto out;
	}
	img->index = buf ? buf : malloc(1);
	buf = NULL;
	if (!img->index)
		ret = -ENOMEM;
out:
	XXH3_freeState(h);
	free(buf);
	return ret;
}

int ic_image_check_index(struct ic_image *img)
{
	int ret;

	pthread_mutex_lock(&img->index_mu);
	if (!img->index_state) {
		ret = load_index(img);
		img->index_state = ret ? ret : 1;
		if (ret == IC_ECORRUPT) {
			img->index_err = malloc(sizeof(*img->index_err));
			if (img->index_err)
				ic_error_save(img->index_err, ret);
		} else if (ret)
			img->index_state = 0;    /* no memory, an I/O error: may work next time */
	} else {
		ret = img->index_state > 0 ? 0 : img->index_state;
		if (ret)    /* the same message as the first time */
			ret = img->index_err ? ic_error_raise(img->index_err)
					     : ic_fail(ret, "%s: index damaged", img->path);
	}
	pthread_mutex_unlock(&img->index_mu);
	return ret;
}

int64_t ic_image_find(const struct ic_image *img, uint64_t pos, int64_t hint)
{
	uint64_t lo = 0, hi = img->slot.index_count;

	if (hint >= 0 && (uint64_t)hint < hi) {
		uint64_t p = ic_image_entry_pos(img, (uint64_t)hint);

		if (p == pos)
			return hint;
		if (p < pos && (uint64_t)hint + 1 < hi &&
		    ic_image_entry_pos(img, (uint64_t)hint + 1) == pos)
			return hint + 1;
		if (p < pos)
			lo = (uint64_t)hint + 1;
		else
			hi = (uint64_t)hint;
	}
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		uint64_t p = ic_image_entry_pos(img, mid);

		if (p == pos)
			return (int64_t)mid;
		if (p < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

const struct ic_image_remote *ic_image_remote;

int ic_image_read_record(const struct ic_image *img, const struct icf_entry *e, void *buf)
{
	const struct ic_image_remote *r = ic_image_remote;
	int ret = r ? r->fill(r->arg, img->fd, e->offset, e->stored_len) : 0;

	if (ret)
		return ret;
	ret = ic_pread_full(img->fd, buf, e->stored_len, e->offset, img->path);
	if (r)
		r->done(r->arg, img->fd, e->offset, e->stored_len);
	if (ret)
		return ret;
	if (XXH3_64bits(buf, e->stored_len) != e->rec_hash)
		return ic_fail(IC_ECORRUPT, "%s: block %llu: record checksum mismatch (data damaged)",
			       img->path, (unsigned long long)e->pos);
	return 0;
}

int ic_image_switch_slot(struct ic_image *img, struct icf_slot *s)
{
	uint8_t buf[ICF_SLOT_SIZE];
	int target = img->slot_index ^ 1;
	int ret;

	s->generation = img->slot.generation + 1;
	ic_slot_encode(s, buf);
	ret = ic_pwrite_full(img->fd, buf, sizeof(buf),
			     target ? ICF_SLOT_B_OFF : ICF_SLOT_A_OFF, img->path);
	if (!ret)
		ret = ic_fsync(img->fd, img->path);
	if (!ret) {
		img->slot = *s;
		img->slot_index = target;
		/* the index read for the old slot is not the new slot's */
		pthread_mutex_lock(&img->index_mu);
		free(img->index);
		img->index = NULL;
		img->index_state = 0;
		pthread_mutex_unlock(&img->index_mu);
	}
	return ret;
}

void ic_image_filename(uint32_t seq, char *buf, size_t len)
{
	snprintf(buf, len, "%08u%s", seq, ICF_IMAGE_SUFFIX);
}
