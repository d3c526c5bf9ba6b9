/* ic_codec.c: compress-then-encrypt of single blocks, and the reverse. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>
#include <zstd.h>

#include "ic_codec.h"
#include "ic_util.h"

struct ic_codec {
	uint32_t block_size;
	int level;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	uint8_t *scratch;           /* compressed payload or decrypted payload */
	size_t scratch_len;
};

uint32_t ic_codec_bound(uint32_t block_size)
{
	size_t zb = ZSTD_compressBound(block_size);

	return (uint32_t)((zb > block_size ? zb : block_size) + ICF_RECORD_OVERHEAD);
}

struct ic_codec *ic_codec_new(uint32_t block_size, int level)
{
	struct ic_codec *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->block_size = block_size;
	c->level = level;
	c->scratch_len = ic_codec_bound(block_size);
	c->scratch = malloc(c->scratch_len);
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	if (!c->scratch || !c->cctx || !c->dctx) {
		ic_codec_free(c);
		errno = ENOMEM;
		return NULL;
	}
	/* Level 1 on 32-128 KiB blocks (zstd's 16-128 KiB row): a 4096-entry hash table
	 * instead of 8192 stays in L1/L2: 10-15% less compression CPU for 0.7% less ratio
	 * on the benchmark disk (doc/PERFORMANCE.md "Backup over NBD"); decoding is the same */
	ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level > 0 ? level : 1);
	if (level == 1 && block_size > 16384 && block_size <= 131072)
		ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_hashLog, 12);
	return c;
}

void ic_codec_free(struct ic_codec *c)
{
	if (!c)
		return;
	ZSTD_freeCCtx(c->cctx);
	ZSTD_freeDCtx(c->dctx);
	free(c->scratch);
	free(c);
}

/* The additional data of a record (FORMAT.md 4.2) into ad[]; returns its length. */
static size_t build_ad(uint8_t *ad, const uint8_t chain_id[ICF_ID_LEN], uint32_t block_size,
		       uint32_t version, const struct icf_entry *e, uint16_t kind)
{
	if (version == ICF_IMAGE_V1) {
		struct icf_block_ad a;

		memset(&a, 0, sizeof(a));
		memcpy(a.magic, "ICB1", 4);
		memcpy(a.chain_id, chain_id, ICF_ID_LEN);
		a.block_size = htole32(block_size);
		a.pos = htole64(e->pos);
		a.origin = htole32(e->origin);
		a.plain_len = htole32(e->plain_len);
		a.kind = htole16(kind);
		memcpy(ad, &a, sizeof(a));
		return sizeof(a);
	} else {
		struct icf_block_ad_v2 a;

		memset(&a, 0, sizeof(a));
		memcpy(a.magic, "ICB2", 4);
		memcpy(a.chain_id, chain_id, ICF_ID_LEN);
		a.block_size = htole32(block_size);
		a.pos = htole64(e->pos);
		a.origin = htole32(e->origin);
		a.origin_id = htole64(e->origin_id);
		a.plain_len = htole32(e->plain_len);
		a.kind = htole16(kind);
		a.keygen = htole16(e->keygen);
		memcpy(ad, &a, sizeof(a));
		return sizeof(a);
	}
}

static bool known_version(uint32_t version)
{
	return version == ICF_IMAGE_V1 || version == ICF_IMAGE_V2;
}

int ic_codec_encode(struct ic_codec *c, const struct ic_key *key,
		    const uint8_t chain_id[ICF_ID_LEN],
		    uint32_t version, const void *plain, uint32_t plain_len, void *out,
		    struct icf_entry *e)
{
	uint8_t ad[sizeof(struct icf_block_ad_v2)];
	const uint8_t *payload = plain;
	size_t payload_len = plain_len, adlen;
	uint16_t kind = ICF_ENTRY_RAW;
	const struct ic_subkeys *sk;
	uint8_t *o = out;
	unsigned long long clen;

	if (plain_len == 0 || plain_len > c->block_size)
		return ic_fail(-EINVAL, "block %llu: bad length %u", (unsigned long long)e->pos,
			       plain_len);
	if (!known_version(version) ||
	    (version == ICF_IMAGE_V1 ? e->origin_id || e->keygen
				     : !e->origin_id || e->keygen > ICF_KEY_GEN_MAX))
		return ic_fail(-EINVAL, "block %llu: no record of format %u for point id %llu, key generation %u",
			       (unsigned long long)e->pos, version,
			       (unsigned long long)e->origin_id, e->keygen);
	sk = ic_key_gen(key, e->keygen);
	if (!sk)
		return ic_fail(IC_EKEY, "block %llu: key generation %u is not in this key",
			       (unsigned long long)e->pos, e->keygen);
	if (c->level > 0) {
		size_t z = ZSTD_compress2(c->cctx, c->scratch, c->scratch_len, plain, plain_len);

		if (ZSTD_isError(z))
			return ic_fail(-EIO, "ZSTD_compress2: %s", ZSTD_getErrorName(z));
		if (z < plain_len) {
			payload = c->scratch;
			payload_len = z;
			kind = ICF_ENTRY_ZSTD;
		}
	}
	e->plain_len = plain_len;
	adlen = build_ad(ad, chain_id, c->block_size, version, e, kind);
	randombytes_buf(o, ICF_NONCE_LEN);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(o + ICF_NONCE_LEN, &clen, payload,
						       payload_len, ad, adlen, NULL, o,
						       sk->k_block) != 0)
		return ic_fail(-EIO, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
	e->offset = 0;
	e->kind = kind;
	e->stored_len = (uint32_t)(clen + ICF_NONCE_LEN);
	e->rec_hash = XXH3_64bits(o, e->stored_len);
	memset(e->digest, 0, sizeof(e->digest));
	return 0;
}

int ic_codec_decode(struct ic_codec *c, const struct ic_key *key,
		    const uint8_t chain_id[ICF_ID_LEN],
		    uint32_t version, const struct icf_entry *e, const void *rec, void *out)
{
	uint8_t ad[sizeof(struct icf_block_ad_v2)];
	const struct ic_subkeys *sk;
	const uint8_t *r = rec;
	unsigned long long plen;
	size_t n, adlen;

	if (e->plain_len == 0 || e->plain_len > c->block_size ||
	    e->stored_len < ICF_RECORD_OVERHEAD || e->stored_len > ic_codec_bound(c->block_size) ||
	    (e->kind == ICF_ENTRY_RAW && e->stored_len != e->plain_len + ICF_RECORD_OVERHEAD) ||
	    (e->kind != ICF_ENTRY_RAW && e->kind != ICF_ENTRY_ZSTD))
		return ic_fail(IC_ECORRUPT, "block %llu: impossible record lengths or kind",
			       (unsigned long long)e->pos);
	if (!known_version(version) ||
	    (version == ICF_IMAGE_V1 ? e->origin_id || e->keygen
				     : !e->origin_id || e->keygen > ICF_KEY_GEN_MAX))
		return ic_fail(IC_ECORRUPT, "block %llu: impossible point id or key generation",
			       (unsigned long long)e->pos);
	/* a record of a newer key generation than this key holds: a key file from before a
	 * revocation (its holder may read only what was written before) */
	sk = ic_key_gen(key, e->keygen);
	if (!sk)
		return ic_fail(IC_EKEY, "block %llu (point seq %u): written under key generation %u, which this key file does not hold (revoked, or an older copy of imgchain.key)",
			       (unsigned long long)e->pos, e->origin, e->keygen);
	adlen = build_ad(ad, chain_id, c->block_size, version, e, e->kind);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    e->kind == ICF_ENTRY_RAW ? out : c->scratch, &plen, NULL, r + ICF_NONCE_LEN,
		    e->stored_len - ICF_NONCE_LEN, ad, adlen, r, sk->k_block) != 0)
		return ic_fail(IC_ECORRUPT, "block %llu (point seq %u): authentication failed",
			       (unsigned long long)e->pos, e->origin);
	if (e->kind == ICF_ENTRY_RAW)
		return 0;
	n = ZSTD_decompressDCtx(c->dctx, out, e->plain_len, c->scratch, plen);
	if (ZSTD_isError(n) || n != e->plain_len)
		return ic_fail(IC_ECORRUPT, "block %llu: decompressed size mismatch (%s)",
			       (unsigned long long)e->pos,
			       ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
	return 0;
}

void ic_codec_digest(const struct ic_key *key, uint32_t version, const struct icf_entry *e,
		     const void *plain, uint8_t out[ICF_DIGEST_LEN])
{
	const struct ic_subkeys *sk = ic_key_gen(key, e->keygen);
	struct icf_digest_head h;
	uint8_t okey[crypto_onetimeauth_KEYBYTES];

	if (!sk) {    /* not this key's generation: no digest can match (the block is stored) */
		memset(out, 0, ICF_DIGEST_LEN);
		return;
	}

	/* A one-time Poly1305 key per (origin, position) and, in v2, per point id: its tag
	 * is published once, for the record stored under that origin, which is what
	 * Poly1305 requires.  v1 keys repeat when a sequence number is reused. */
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, version == ICF_IMAGE_V1 ? "ICDG" : "ICD2", 4);
	h.origin = htole32(e->origin);
	h.plain_len = htole32(e->plain_len);
	h.pos = htole64(e->pos);
	h.origin_id = htole64(e->origin_id);
	crypto_generichash(okey, sizeof(okey), (const uint8_t *)&h,
			   version == ICF_IMAGE_V1 ? offsetof(struct icf_digest_head, origin_id)
						   : sizeof(h),
			   sk->k_digest, ICF_KEY_LEN);
	crypto_onetimeauth(out, plain, e->plain_len, okey);
	sodium_memzero(okey, sizeof(okey));
}

void ic_seal_begin(struct ic_seal *s, uint32_t version)
{
	s->version = version;
	crypto_generichash_init(&s->st, NULL, 0, ICF_SEAL_LEN);
}

void ic_seal_add(struct ic_seal *s, const struct icf_entry *e)
{
	if (e->kind == ICF_ENTRY_ZERO)
		return;
	if (s->version == ICF_IMAGE_V1) {
		struct icf_map_item it;

		memset(&it, 0, sizeof(it));
		it.pos = htole64(e->pos);
		it.origin = htole32(e->origin);
		it.kind = htole16(e->kind);
		it.plain_len = htole32(e->plain_len);
		it.rec_hash = htole64(e->rec_hash);
		crypto_generichash_update(&s->st, (const uint8_t *)&it, sizeof(it));
	} else {
		struct icf_map_item_v2 it;

		memset(&it, 0, sizeof(it));
		it.pos = htole64(e->pos);
		it.origin = htole32(e->origin);
		it.kind = htole16(e->kind);
		it.keygen = htole16(e->keygen);
		it.plain_len = htole32(e->plain_len);
		it.rec_hash = htole64(e->rec_hash);
		it.origin_id = htole64(e->origin_id);
		crypto_generichash_update(&s->st, (const uint8_t *)&it, sizeof(it));
	}
}

int ic_seal_finish(struct ic_seal *s, const struct ic_key *key, const uint8_t chain_id[ICF_ID_LEN],
		   uint32_t block_size, const struct icf_slot *slot, uint8_t out[32])
{
	const struct ic_subkeys *sk = ic_key_gen(key, slot->seal_keygen);

	if (!sk)
		return ic_fail(IC_EKEY, "restore point '%.127s' is sealed under key generation %u, which this key file does not hold (revoked, or an older copy of imgchain.key)",
			       slot->name, slot->seal_keygen);
	if (s->version == ICF_IMAGE_V1) {
		struct icf_seal_head h;

		memset(&h, 0, sizeof(h));
		memcpy(h.magic, "ICSEAL01", 8);
		memcpy(h.chain_id, chain_id, ICF_ID_LEN);
		h.block_size = htole32(block_size);
		h.seq = htole32(slot->seq);
		h.created = (int64_t)htole64((uint64_t)slot->created);
		h.disk_size = htole64(slot->disk_size);
		memcpy(h.name, slot->name, sizeof(h.name));
		crypto_generichash_final(&s->st, h.map_digest, ICF_SEAL_LEN);
		crypto_generichash(out, ICF_SEAL_LEN, (const uint8_t *)&h, sizeof(h), sk->k_seal,
				   ICF_KEY_LEN);
	} else {
		struct icf_seal_head_v2 h;

		memset(&h, 0, sizeof(h));
		memcpy(h.magic, "ICSEAL02", 8);
		memcpy(h.chain_id, chain_id, ICF_ID_LEN);
		h.block_size = htole32(block_size);
		h.seq = htole32(slot->seq);
		h.created = (int64_t)htole64((uint64_t)slot->created);
		h.disk_size = htole64(slot->disk_size);
		memcpy(h.name, slot->name, sizeof(h.name));
		h.point_id = htole64(slot->point_id);
		h.seal_keygen = htole16(slot->seal_keygen);
		/* the post-snapshot flag (0 before issue 13: the same seal) */
		h.flags = (uint8_t)(slot->flags & ICF_SLOT_POST_SNAPSHOT);
		crypto_generichash_final(&s->st, h.map_digest, ICF_SEAL_LEN);
		crypto_generichash(out, ICF_SEAL_LEN, (const uint8_t *)&h, sizeof(h), sk->k_seal,
				   ICF_KEY_LEN);
	}
	return 0;
}
