/* ic_image.c: reading, validating and writing image files. */
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

#define WBUF_SIZE (4u << 20)
#define IBUF_ENTRIES 16384u

/* ---- encode / decode -------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

void ic_header_encode(const struct icf_header *h, void *buf)
{
	struct icf_header o;

	memset(&o, 0, sizeof(o));
	memcpy(o.magic, ICF_IMAGE_MAGIC, 8);
	o.version = htole32(h->version);
	o.header_size = htole32(h->header_size);
	memcpy(o.chain_id, h->chain_id, ICF_ID_LEN);
	memcpy(o.key_check, h->key_check, ICF_CHECK_LEN);
	o.block_size = htole32(h->block_size);
	o.cipher = htole32(h->cipher);
	o.compress = htole32(h->compress);
	o.hdr_hash = htole64(XXH3_64bits(&o, offsetof(struct icf_header, hdr_hash)));
	memcpy(buf, &o, sizeof(o));
}

int ic_header_decode(const void *buf, struct icf_header *h, const char *path)
{
	struct icf_header o;
	uint32_t bs;

	memcpy(&o, buf, sizeof(o));
	if (memcmp(o.magic, ICF_IMAGE_MAGIC, 8))
		return ic_fail(IC_ECORRUPT, "%s: not an imgchain image (bad magic)", path);
	if (le64toh(o.hdr_hash) != XXH3_64bits(&o, offsetof(struct icf_header, hdr_hash)))
		return ic_fail(IC_ECORRUPT, "%s: header checksum mismatch (file damaged)", path);
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, o.magic, 8);
	h->version = le32toh(o.version);
	h->header_size = le32toh(o.header_size);
	memcpy(h->chain_id, o.chain_id, ICF_ID_LEN);
	memcpy(h->key_check, o.key_check, ICF_CHECK_LEN);
	h->block_size = bs = le32toh(o.block_size);
	h->cipher = le32toh(o.cipher);
	h->compress = le32toh(o.compress);
	h->hdr_hash = le64toh(o.hdr_hash);
	if (h->version != ICF_IMAGE_V1 && h->version != ICF_IMAGE_V2)
		return ic_fail(IC_ECORRUPT, "%s: unsupported format version %u", path, h->version);
	if (h->header_size != ICF_HEADER_SIZE || h->cipher != ICF_CIPHER_XCHACHA20POLY1305 ||
	    h->compress != ICF_COMPRESS_ZSTD || o.reserved0 || !all_zero(o.reserved, sizeof(o.reserved)))
		return ic_fail(IC_ECORRUPT, "%s: unsupported header fields", path);
	if (bs < ICF_BLOCK_MIN || bs > ICF_BLOCK_MAX || (bs & (bs - 1)))
		return ic_fail(IC_ECORRUPT, "%s: bad block size %u", path, bs);
	return 0;
}

void ic_slot_encode(const struct icf_slot *s, void *buf)
{
	struct icf_slot o;

	memset(&o, 0, sizeof(o));
	o.generation = htole64(s->generation);
	o.seq = htole32(s->seq);
	o.parent_seq = htole32(s->parent_seq);
	o.kind = htole32(s->kind);
	o.flags = htole32(s->flags);
	o.created = (int64_t)htole64((uint64_t)s->created);
	o.disk_size = htole64(s->disk_size);
	o.index_offset = htole64(s->index_offset);
	o.index_count = htole64(s->index_count);
	o.data_bytes = htole64(s->data_bytes);
	o.n_data = htole64(s->n_data);
	o.n_zero = htole64(s->n_zero);
	memcpy(o.index_hash, s->index_hash, ICF_INDEX_HASH_LEN);
	memcpy(o.seal, s->seal, ICF_SEAL_LEN);
	memcpy(o.name, s->name, sizeof(o.name));
	o.data_end = htole64(s->data_end);
	o.point_id = htole64(s->point_id);
	o.seal_keygen = htole16(s->seal_keygen);
	o.slot_hash = htole64(XXH3_64bits(&o, offsetof(struct icf_slot, slot_hash)));
	memcpy(buf, &o, sizeof(o));
}

/* version 0: the version is not known yet (a slot kept in the consolidation journal);
 * the rules that depend on it are checked again when the slot is used. */
static int slot_check(const struct icf_slot *s, uint32_t version, const char *path)
{
	const char *why = NULL;

	if (version == ICF_IMAGE_V1 && (s->point_id || s->seal_keygen))
		why = "reserved fields are not zero";
	else if (version == ICF_IMAGE_V2 && !s->point_id)
		why = "point id 0";
	else if (version == ICF_IMAGE_V2 && s->seal_keygen > ICF_KEY_GEN_MAX)
		why = "unknown key generation";
	else if (s->seq == 0)
		why = "sequence 0";
	else if (s->seq > ICF_SEQ_MAX)
		why = "sequence above 99999999";
	else if (s->parent_seq >= s->seq)
		why = "parent is not older than the point";
	else if (s->kind < ICF_KIND_FULL || s->kind > ICF_KIND_CONSOLIDATED)
		why = "unknown kind";
	else if ((s->parent_seq == 0) !=
		 (s->kind == ICF_KIND_FULL || s->kind == ICF_KIND_SYNTHETIC_FULL))
		why = "kind does not match parent";
	else if (s->disk_size == 0 || s->disk_size > ICF_DISK_MAX)
		why = "impossible disk size";
	else if (s->index_offset < ICF_HEADER_SIZE || s->index_count > ICF_INDEX_COUNT_MAX ||
		 s->index_offset > s->data_end ||
		 s->index_count * sizeof(struct icf_entry) > s->data_end - s->index_offset)
		why = "index out of bounds";
	else if (s->n_data + s->n_zero != s->index_count)
		why = "entry counts disagree";
	else if (memchr(s->name, 0, sizeof(s->name)) == NULL || !ic_name_valid(s->name) ||
		 !all_zero((const uint8_t *)s->name + strlen(s->name),
			   sizeof(s->name) - strlen(s->name)))
		why = "bad name";
	if (why)
		return ic_fail(IC_ECORRUPT, "%s: bad slot: %s", path, why);
	return 0;
}

int ic_slot_decode(const void *buf, struct icf_slot *s, uint32_t version, const char *path)
{
	struct icf_slot o;

	memcpy(&o, buf, sizeof(o));
	if (le64toh(o.slot_hash) != XXH3_64bits(&o, offsetof(struct icf_slot, slot_hash)))
		return ic_fail(IC_ECORRUPT, "%s: slot checksum mismatch", path);
	memset(s, 0, sizeof(*s));
	s->generation = le64toh(o.generation);
	s->seq = le32toh(o.seq);
	s->parent_seq = le32toh(o.parent_seq);
	s->kind = le32toh(o.kind);
	s->flags = le32toh(o.flags);
	s->created = (int64_t)le64toh((uint64_t)o.created);
	s->disk_size = le64toh(o.disk_size);
	s->index_offset = le64toh(o.index_offset);
	s->index_count = le64toh(o.index_count);
	s->data_bytes = le64toh(o.data_bytes);
	s->n_data = le64toh(o.n_data);
	s->n_zero = le64toh(o.n_zero);
	memcpy(s->index_hash, o.index_hash, ICF_INDEX_HASH_LEN);
	memcpy(s->seal, o.seal, ICF_SEAL_LEN);
	memcpy(s->name, o.name, sizeof(s->name));
	s->data_end = le64toh(o.data_end);
	s->point_id = le64toh(o.point_id);
	s->seal_keygen = le16toh(o.seal_keygen);
	s->slot_hash = le64toh(o.slot_hash);
	if (s->generation == 0)
		return ic_fail(IC_ECORRUPT, "%s: empty slot", path);
	if (s->flags || !all_zero(o.reserved, sizeof(o.reserved)))
		return ic_fail(IC_ECORRUPT, "%s: bad slot: reserved fields are not zero", path);
	return slot_check(s, version, path);
}

void ic_entry_encode(const struct icf_entry *e, void *buf, uint32_t version)
{
	struct icf_entry o;

	memset(&o, 0, sizeof(o));
	o.pos = htole64(e->pos);
	o.offset = htole64(e->offset);
	o.stored_len = htole32(e->stored_len);
	o.plain_len = htole32(e->plain_len);
	o.origin = htole32(e->origin);
	o.kind = htole16(e->kind);
	o.keygen = htole16(e->keygen);    /* v1: flags */
	o.rec_hash = htole64(e->rec_hash);
	memcpy(o.digest, e->digest, ICF_DIGEST_LEN);
	if (version == ICF_IMAGE_V1)
		o.origin_id = htole64(XXH3_64bits(&o, offsetof(struct icf_entry_v1, entry_hash)));
	else
		o.origin_id = htole64(e->origin_id);
	memcpy(buf, &o, sizeof(o));
}

int ic_entry_decode(const void *buf, struct icf_entry *e, uint32_t version)
{
	struct icf_entry o;

	memcpy(&o, buf, sizeof(o));
	/* v1: the last 8 bytes are entry_hash; v2 drops it (the index hash covers the
	 * entries, and readers keep a verified copy of the index) */
	if (version == ICF_IMAGE_V1 &&
	    le64toh(o.origin_id) != XXH3_64bits(&o, offsetof(struct icf_entry_v1, entry_hash)))
		return IC_ECORRUPT;
	e->pos = le64toh(o.pos);
	e->offset = le64toh(o.offset);
	e->stored_len = le32toh(o.stored_len);
	e->plain_len = le32toh(o.plain_len);
	e->origin = le32toh(o.origin);
	e->kind = le16toh(o.kind);
	e->keygen = le16toh(o.keygen);
	e->rec_hash = le64toh(o.rec_hash);
	memcpy(e->digest, o.digest, ICF_DIGEST_LEN);
	e->origin_id = version == ICF_IMAGE_V1 ? 0 : le64toh(o.origin_id);
	return 0;
}

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
	ret = ic_open_regular(AT_FDCWD, NULL, path, flags, 0, &img->fd);
	if (ret)
		goto out_free;
	/* A reader announces itself before it reads the slots, so that a consolidation
	 * that switched this file's slot either sees the lock (and defers punching the
	 * records the old slot uses) or was done before we read (FORMAT.md "Locks"). */
	if ((flags & O_ACCMODE) == O_RDONLY)
		ic_lock_hold(img->fd, IC_LOCK_READER);
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

int ic_image_read_record(const struct ic_image *img, const struct icf_entry *e, void *buf)
{
	int ret = ic_pread_full(img->fd, buf, e->stored_len, e->offset, img->path);

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

/* ---- writer -------------------------------------------------------------------- */

struct ic_writer {
	char *dir, *path, *ipath;
	int fd, ifd;
	uint32_t seq;
	uint64_t off;               /* file offset of wbuf[0] */
	uint8_t *wbuf;
	size_t wlen;
	uint8_t *ibuf;
	size_t ilen;
	uint64_t nentries, n_data, n_zero, data_bytes;
	uint64_t last_pos;
	XXH3_state_t *ih;
	struct icf_header hdr;
};

int ic_writer_new(const char *chain_dir, const struct icf_header *hdr, uint32_t seq,
		  struct ic_writer **out)
{
	struct ic_writer *w = calloc(1, sizeof(*w));
	char name[64];
	uint8_t *hb;
	int ret;

	if (!w)
		return -ENOMEM;
	w->fd = w->ifd = -1;
	w->dir = strdup(chain_dir);
	w->seq = seq;
	w->hdr = *hdr;
	snprintf(name, sizeof(name), "%s%u-%d.img", ICF_TMP_PREFIX, seq, (int)getpid());
	w->path = ic_path_join(chain_dir, name);
	snprintf(name, sizeof(name), "%s%u-%d.idx", ICF_TMP_PREFIX, seq, (int)getpid());
	w->ipath = ic_path_join(chain_dir, name);
	w->wbuf = malloc(WBUF_SIZE);
	w->ibuf = malloc(IBUF_ENTRIES * sizeof(struct icf_entry));
	w->ih = XXH3_createState();
	if (!w->dir || !w->path || !w->ipath || !w->wbuf || !w->ibuf || !w->ih) {
		ret = -ENOMEM;
		goto fail;
	}
	XXH3_128bits_reset(w->ih);
	w->fd = open(w->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", w->path, strerror(errno));
		goto fail;
	}
	w->ifd = open(w->ipath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->ifd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", w->ipath, strerror(errno));
		goto fail;
	}
	/* Header with both slots empty: until commit the file is not an image. */
	hb = w->wbuf;
	memset(hb, 0, ICF_HEADER_SIZE);
	ic_header_encode(hdr, hb);
	w->wlen = ICF_HEADER_SIZE;
	w->off = 0;
	*out = w;
	return 0;
fail:
	ic_writer_abort(w);
	return ret;
}

static int wflush(struct ic_writer *w)
{
	int ret;

	if (!w->wlen)
		return 0;
	ret = ic_pwrite_full(w->fd, w->wbuf, w->wlen, w->off, w->path);
	if (ret)
		return ret;
	w->off += w->wlen;
	w->wlen = 0;
	return 0;
}

int ic_writer_append(struct ic_writer *w, const void *rec, uint32_t len, uint64_t *offset)
{
	int ret;

	if (w->wlen + len > WBUF_SIZE) {
		ret = wflush(w);
		if (ret)
			return ret;
	}
	*offset = w->off + w->wlen;
	if (len > WBUF_SIZE) {
		ret = ic_pwrite_full(w->fd, rec, len, w->off, w->path);
		if (!ret)
			w->off += len;
		return ret;
	}
	memcpy(w->wbuf + w->wlen, rec, len);
	w->wlen += len;
	return 0;
}

static int iflush(struct ic_writer *w)
{
	int ret;

	if (!w->ilen)
		return 0;
	XXH3_128bits_update(w->ih, w->ibuf, w->ilen);
	ret = ic_pwrite_full(w->ifd, w->ibuf, w->ilen,
			     (w->nentries * sizeof(struct icf_entry)) - w->ilen, w->ipath);
	w->ilen = 0;
	return ret;
}

int ic_writer_add_entry(struct ic_writer *w, const struct icf_entry *e)
{
	if (w->nentries && e->pos <= w->last_pos)
		return ic_fail(-EINVAL, "%s: entries out of order", w->path);
	ic_entry_encode(e, w->ibuf + w->ilen, w->hdr.version);
	w->ilen += sizeof(struct icf_entry);
	w->nentries++;
	w->last_pos = e->pos;
	if (e->kind == ICF_ENTRY_ZERO) {
		w->n_zero++;
	} else {
		w->n_data++;
		w->data_bytes += e->stored_len;
	}
	if (w->ilen == IBUF_ENTRIES * sizeof(struct icf_entry))
		return iflush(w);
	return 0;
}

/* Copy the side index file to the end of the image. */
static int copy_index(struct ic_writer *w, uint64_t dst)
{
	uint64_t len = w->nentries * sizeof(struct icf_entry), done = 0;
	int ret;

	while (done < len) {
		size_t n = len - done > WBUF_SIZE ? WBUF_SIZE : (size_t)(len - done);

		ret = ic_pread_full(w->ifd, w->wbuf, n, done, w->ipath);
		if (!ret)
			ret = ic_pwrite_full(w->fd, w->wbuf, n, dst + done, w->path);
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

int ic_writer_commit(struct ic_writer *w, struct icf_slot *slot)
{
	uint8_t sbuf[ICF_SLOT_SIZE];
	XXH128_canonical_t c;
	char fname[32];
	char *final = NULL;
	int ret;

	ret = wflush(w);
	if (!ret)
		ret = iflush(w);
	if (ret)
		goto out;
	slot->generation = 1;
	slot->index_offset = w->off;
	slot->index_count = w->nentries;
	slot->n_data = w->n_data;
	slot->n_zero = w->n_zero;
	slot->data_bytes = w->data_bytes;
	slot->data_end = w->off + w->nentries * sizeof(struct icf_entry);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(w->ih));
	memcpy(slot->index_hash, c.digest, ICF_INDEX_HASH_LEN);
	ret = slot_check(slot, w->hdr.version, w->path);
	if (!ret)
		ret = copy_index(w, w->off);
	if (!ret)
		ret = ic_fsync(w->fd, w->path);
	if (ret)
		goto out;
	ic_slot_encode(slot, sbuf);
	ret = ic_pwrite_full(w->fd, sbuf, sizeof(sbuf), ICF_SLOT_A_OFF, w->path);
	if (!ret)
		ret = ic_fsync(w->fd, w->path);
	if (ret)
		goto out;
	ic_image_filename(w->seq, fname, sizeof(fname));
	final = ic_path_join(w->dir, fname);
	/* never replace a file: even a damaged image there is someone's data */
	ret = final ? ic_rename_noreplace(w->path, final) : -ENOMEM;
	if (ret)
		goto out;
	free(w->path);
	w->path = NULL;    /* committed: nothing for abort to remove */
	ret = ic_fsync_dir(w->dir);
out:
	free(final);
	ic_writer_abort(w);
	return ret;
}

void ic_writer_abort(struct ic_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->ifd >= 0)
		close(w->ifd);
	if (w->path)
		unlink(w->path);
	if (w->ipath)
		unlink(w->ipath);
	free(w->path);
	free(w->ipath);
	free(w->dir);
	free(w->wbuf);
	free(w->ibuf);
	if (w->ih)
		XXH3_freeState(w->ih);
	free(w);
}

/* ---- consolidation support (imgconsolidate, issue 4): new functions only ---------- */

int ic_slot_validate(const struct icf_slot *s, uint32_t version, const char *path)
{
	return slot_check(s, version, path);
}

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
