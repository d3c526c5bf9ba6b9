/* ic_codec.c: compress-then-encrypt of single blocks, and the reverse. */
#include "config.h"

#include <errno.h>
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

static void build_ad(struct icf_block_ad *ad, const uint8_t chain_id[16], uint32_t block_size,
		     uint64_t pos, uint32_t origin, uint32_t plain_len, uint16_t kind)
{
	memset(ad, 0, sizeof(*ad));
	memcpy(ad->magic, "ICB1", 4);
	memcpy(ad->chain_id, chain_id, 16);
	ad->block_size = htole32(block_size);
	ad->pos = htole64(pos);
	ad->origin = htole32(origin);
	ad->plain_len = htole32(plain_len);
	ad->kind = htole16(kind);
}

int ic_codec_encode(struct ic_codec *c, const struct ic_key *key, const uint8_t chain_id[16],
		    uint64_t pos, uint32_t origin, const void *plain, uint32_t plain_len,
		    void *out, struct icf_entry *e)
{
	struct icf_block_ad ad;
	const uint8_t *payload = plain;
	size_t payload_len = plain_len;
	uint16_t kind = ICF_ENTRY_RAW;
	uint8_t *o = out;
	unsigned long long clen;

	if (plain_len == 0 || plain_len > c->block_size)
		return ic_fail(-EINVAL, "block %llu: bad length %u", (unsigned long long)pos,
			       plain_len);
	if (c->level > 0) {
		size_t z = ZSTD_compressCCtx(c->cctx, c->scratch, c->scratch_len, plain, plain_len,
					     c->level);

		if (ZSTD_isError(z))
			return ic_fail(-EIO, "ZSTD_compressCCtx: %s", ZSTD_getErrorName(z));
		if (z < plain_len) {
			payload = c->scratch;
			payload_len = z;
			kind = ICF_ENTRY_ZSTD;
		}
	}
	build_ad(&ad, chain_id, c->block_size, pos, origin, plain_len, kind);
	randombytes_buf(o, ICF_NONCE_LEN);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(o + ICF_NONCE_LEN, &clen, payload,
						       payload_len, (const uint8_t *)&ad,
						       sizeof(ad), NULL, o, key->k_block) != 0)
		return ic_fail(-EIO, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
	memset(e, 0, sizeof(*e));
	e->pos = pos;
	e->origin = origin;
	e->plain_len = plain_len;
	e->kind = kind;
	e->stored_len = (uint32_t)(clen + ICF_NONCE_LEN);
	e->rec_hash = XXH3_64bits(o, e->stored_len);
	return 0;
}

int ic_codec_decode(struct ic_codec *c, const struct ic_key *key, const uint8_t chain_id[16],
		    const struct icf_entry *e, const void *rec, void *out)
{
	struct icf_block_ad ad;
	const uint8_t *r = rec;
	unsigned long long plen;
	size_t n;

	if (e->plain_len == 0 || e->plain_len > c->block_size ||
	    e->stored_len < ICF_RECORD_OVERHEAD || e->stored_len > ic_codec_bound(c->block_size) ||
	    (e->kind == ICF_ENTRY_RAW && e->stored_len != e->plain_len + ICF_RECORD_OVERHEAD) ||
	    (e->kind != ICF_ENTRY_RAW && e->kind != ICF_ENTRY_ZSTD))
		return ic_fail(IC_ECORRUPT, "block %llu: impossible record lengths or kind",
			       (unsigned long long)e->pos);
	build_ad(&ad, chain_id, c->block_size, e->pos, e->origin, e->plain_len, e->kind);
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(
		    e->kind == ICF_ENTRY_RAW ? out : c->scratch, &plen, NULL, r + ICF_NONCE_LEN,
		    e->stored_len - ICF_NONCE_LEN, (const uint8_t *)&ad, sizeof(ad), r,
		    key->k_block) != 0)
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

void ic_codec_digest(const struct ic_key *key, uint32_t origin, uint64_t pos, const void *plain,
		     uint32_t plain_len, uint8_t out[16])
{
	uint8_t head[20], okey[crypto_onetimeauth_KEYBYTES];
	uint32_t o = htole32(origin), l = htole32(plain_len);
	uint64_t p = htole64(pos);

	/* A one-time Poly1305 key per (origin, position): its tag is published once,
	 * for the record stored under that origin, which is what Poly1305 requires. */
	memcpy(head, "ICDG", 4);
	memcpy(head + 4, &o, 4);
	memcpy(head + 8, &l, 4);
	memcpy(head + 12, &p, 8);
	crypto_generichash(okey, sizeof(okey), head, sizeof(head), key->k_digest, 32);
	crypto_onetimeauth(out, plain, plain_len, okey);
	sodium_memzero(okey, sizeof(okey));
}

int ic_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t acc = 0;
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		uint64_t w[8];

		memcpy(w, p + i, 64);
		acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return 0;
	}
	for (; i < len; i++)
		acc |= p[i];
	return acc == 0;
}

void ic_seal_begin(struct ic_seal *s)
{
	crypto_generichash_init(&s->st, NULL, 0, 32);
}

void ic_seal_add(struct ic_seal *s, const struct icf_entry *e)
{
	struct icf_map_item it;

	if (e->kind == ICF_ENTRY_ZERO)
		return;
	memset(&it, 0, sizeof(it));
	it.pos = htole64(e->pos);
	it.origin = htole32(e->origin);
	it.kind = htole16(e->kind);
	it.plain_len = htole32(e->plain_len);
	it.rec_hash = htole64(e->rec_hash);
	crypto_generichash_update(&s->st, (const uint8_t *)&it, sizeof(it));
}

void ic_seal_finish(struct ic_seal *s, const struct ic_key *key, const uint8_t chain_id[16],
		    uint32_t block_size, const struct icf_slot *slot, uint8_t out[32])
{
	struct icf_seal_head h;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, "ICSEAL01", 8);
	memcpy(h.chain_id, chain_id, 16);
	h.block_size = htole32(block_size);
	h.seq = htole32(slot->seq);
	h.created = (int64_t)htole64((uint64_t)slot->created);
	h.disk_size = htole64(slot->disk_size);
	memcpy(h.name, slot->name, sizeof(h.name));
	crypto_generichash_final(&s->st, h.map_digest, 32);
	crypto_generichash(out, 32, (const uint8_t *)&h, sizeof(h), key->k_seal, 32);
}
