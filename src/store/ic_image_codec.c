/* ic_image_codec.c: the format structs of an image file (header, slots, index entries)
 * between host order and their little-endian bytes; decoders validate every field. */
#include "config.h"

#include <endian.h>
#include <stddef.h>
#include <string.h>

#include <xxhash.h>

#include "ic_image.h"
#include "ic_mem.h"
#include "ic_util.h"

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
	    h->compress != ICF_COMPRESS_ZSTD || o.reserved0 || !ic_is_zero(o.reserved, sizeof(o.reserved)))
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
	o.fold_session_id = htole64(s->fold_session_id);
	o.fold_interval = htole64(s->fold_interval);
	o.fold_time_ns = htole32(s->fold_time_ns);
	o.slot_hash = htole64(XXH3_64bits(&o, offsetof(struct icf_slot, slot_hash)));
	memcpy(buf, &o, sizeof(o));
}

/* version 0: the version is not known yet (a slot kept in the consolidation journal);
 * the rules that depend on it are checked again when the slot is used. */
static int slot_check(const struct icf_slot *s, uint32_t version, const char *path)
{
	const char *why = NULL;

	if (version == ICF_IMAGE_V1 && (s->point_id || s->seal_keygen || s->flags))
		why = "reserved fields are not zero";
	else if (s->flags & ~ICF_SLOT_FLAGS_KNOWN)
		why = "unknown flags (written by a newer imgchain?)";
	else if ((s->flags & ICF_SLOT_FOLDED) && (s->flags & ICF_SLOT_POST_SNAPSHOT))
		why = "folded and post-snapshot at once";
	else if (!(s->flags & ICF_SLOT_FOLDED) &&
		 (s->fold_session_id || s->fold_interval || s->fold_time_ns))
		why = "reserved fields are not zero";
	else if ((s->flags & ICF_SLOT_FOLDED) && (!s->fold_session_id || s->fold_time_ns > 999999999u))
		why = "bad fold fields";
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
		 !ic_is_zero((const uint8_t *)s->name + strlen(s->name),
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
	s->fold_session_id = le64toh(o.fold_session_id);
	s->fold_interval = le64toh(o.fold_interval);
	s->fold_time_ns = le32toh(o.fold_time_ns);
	s->slot_hash = le64toh(o.slot_hash);
	if (s->generation == 0)
		return ic_fail(IC_ECORRUPT, "%s: empty slot", path);
	if (!ic_is_zero(o.reserved0, sizeof(o.reserved0)) ||
	    !ic_is_zero(o.reserved, sizeof(o.reserved)))
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


int ic_slot_validate(const struct icf_slot *s, uint32_t version, const char *path)
{
	return slot_check(s, version, path);
}
