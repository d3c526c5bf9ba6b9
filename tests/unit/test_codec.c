/* test_codec.c: block encode/decode: round trips, tampering, bounds, nonces. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "imgchain.h"
#include "unit.h"

#define BS 65536u

static struct ic_key *key, *other_key;
static uint8_t chain_id[ICF_ID_LEN] = "chain-id-0123456";

static void fill(uint8_t *b, size_t n, int compressible)
{
	for (size_t i = 0; i < n; i++)
		b[i] = compressible ? (uint8_t)(i / 100) : (uint8_t)randombytes_uniform(256);
}

/* encode block pos of point origin (point id origin_id in v2; 0 in v1) */
static int enc(struct ic_codec *c, const struct ic_key *k, uint32_t version, uint64_t pos,
	       uint32_t origin, uint64_t origin_id, const void *plain, uint32_t len, void *rec,
	       struct icf_entry *e)
{
	memset(e, 0xa5, sizeof(*e));    /* encode must set or clear every field */
	e->pos = pos;
	e->origin = origin;
	e->origin_id = origin_id;
	e->keygen = 0;
	return ic_codec_encode(c, k, chain_id, version, plain, len, rec, e);
}

static void roundtrip(uint32_t version, uint32_t len, int compressible, uint16_t want_kind)
{
	uint64_t id = version == ICF_IMAGE_V1 ? 0 : 0x1122334455667788ull;

	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = malloc(BS), *out = malloc(BS), *rec = malloc(ic_codec_bound(BS));
	struct icf_entry e;

	fill(plain, len, compressible);
	CHECK_EQ(enc(c, key, version, 7, 3, id, plain, len, rec, &e), 0);
	CHECK_EQ(e.kind, want_kind);
	CHECK_EQ(e.origin_id, id);
	CHECK_EQ(e.keygen, 0);
	CHECK_EQ(e.offset, 0);
	CHECK(sodium_is_zero(e.digest, ICF_DIGEST_LEN));
	CHECK_EQ(e.plain_len, len);
	CHECK_EQ(e.pos, 7);
	CHECK_EQ(e.origin, 3);
	CHECK(e.stored_len <= len + ICF_RECORD_OVERHEAD);
	CHECK_EQ(e.rec_hash, XXH3_64bits(rec, e.stored_len));
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &e, rec, out), 0);
	CHECK(memcmp(plain, out, len) == 0);
	/* a record of one version never decodes as the other's */
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version ^ 3, &e, rec, out), IC_ECORRUPT);
	free(plain);
	free(out);
	free(rec);
	ic_codec_free(c);
}

static void test_roundtrip(void)
{
	for (uint32_t v = ICF_IMAGE_V1; v <= ICF_IMAGE_V2; v++) {
		roundtrip(v, BS, 1, ICF_ENTRY_ZSTD);
		roundtrip(v, BS, 0, ICF_ENTRY_RAW);
		roundtrip(v, 1234, 1, ICF_ENTRY_ZSTD);
		roundtrip(v, 1, 0, ICF_ENTRY_RAW);
	}
}

/* Every field bound in the additional data must make authentication fail. */
static void tamper(uint32_t version)
{
	uint64_t id = version == ICF_IMAGE_V1 ? 0 : 77;
	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = malloc(BS), *out = malloc(BS), *rec = malloc(ic_codec_bound(BS));
	uint8_t other_chain[ICF_ID_LEN] = "another-chain-id";
	struct icf_entry e, t;

	fill(plain, BS, 1);
	CHECK_EQ(enc(c, key, version, 42, 5, id, plain, BS, rec, &e), 0);
	if (version == ICF_IMAGE_V2) {
		/* v2: the point id (a same-seq point's record) and the key generation */
		t = e; t.origin_id = 78;
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
		t = e; t.origin_id = 0;
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
		t = e; t.keygen = 1;    /* a generation this key does not hold: a key error */
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_EKEY);
		t = e; t.keygen = ICF_KEY_GEN_MAX + 1;    /* beyond any key file */
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	} else {
		t = e; t.origin_id = 78;    /* v1 has no point id: a non-zero one is refused */
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	}
	t = e; t.pos = 43;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.origin = 4;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.plain_len = BS - 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.kind = ICF_ENTRY_RAW;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	CHECK_EQ(ic_codec_decode(c, key, other_chain, version, &e, rec, out), IC_ECORRUPT);
	CHECK_EQ(ic_codec_decode(c, other_key, chain_id, version, &e, rec, out), IC_ECORRUPT);
	/* a single flipped bit anywhere in the record */
	for (uint32_t i = 0; i < e.stored_len; i += 97) {
		rec[i] ^= 0x10;
		CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &e, rec, out), IC_ECORRUPT);
		rec[i] ^= 0x10;
	}
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &e, rec, out), 0);
	/* impossible lengths are refused before any decryption */
	t = e; t.stored_len = 10;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.stored_len = ic_codec_bound(BS) + 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.plain_len = BS + 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	t = e; t.kind = 9;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, version, &t, rec, out), IC_ECORRUPT);
	free(plain);
	free(out);
	free(rec);
	ic_codec_free(c);
}

static void test_tamper(void)
{
	tamper(ICF_IMAGE_V1);
	tamper(ICF_IMAGE_V2);
}

static void put(uint8_t **p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

/* The v2 additional data and digest key have exactly the layout of FORMAT.md 4.2 and
 * 4.3 (built here byte by byte, independently of the structs). */
static void test_v2_layout(void)
{
	struct ic_codec *c = ic_codec_new(BS, 0);
	uint8_t *plain = malloc(BS), *rec = malloc(ic_codec_bound(BS)), *out = malloc(BS);
	uint8_t ad[52], head[28], okey[32], d[ICF_DIGEST_LEN], *p;
	unsigned long long plen;
	struct icf_entry e;

	fill(plain, 1000, 0);
	CHECK_EQ(enc(c, key, ICF_IMAGE_V2, 0x0102030405060708ull, 9, 0xa1a2a3a4a5a6a7a8ull, plain,
		     1000, rec, &e), 0);
	CHECK_EQ(e.kind, ICF_ENTRY_RAW);
	p = ad;
	memcpy(p, "ICB2", 4);
	p += 4;
	memcpy(p, chain_id, ICF_ID_LEN);
	p += ICF_ID_LEN;
	put(&p, BS, 4);
	put(&p, 0x0102030405060708ull, 8);
	put(&p, 9, 4);
	put(&p, 0xa1a2a3a4a5a6a7a8ull, 8);
	put(&p, 1000, 4);
	put(&p, ICF_ENTRY_RAW, 2);
	put(&p, 0, 2);
	CHECK_EQ(p - ad, 52);
	CHECK_EQ(crypto_aead_xchacha20poly1305_ietf_decrypt(out, &plen, NULL, rec + ICF_NONCE_LEN,
							    e.stored_len - ICF_NONCE_LEN, ad,
							    sizeof(ad), rec, key->k_block), 0);
	CHECK(plen == 1000 && memcmp(out, plain, 1000) == 0);
	p = head;
	memcpy(p, "ICD2", 4);
	p += 4;
	put(&p, 9, 4);
	put(&p, 1000, 4);
	put(&p, 0x0102030405060708ull, 8);
	put(&p, 0xa1a2a3a4a5a6a7a8ull, 8);
	crypto_generichash(okey, 32, head, sizeof(head), key->k_digest, ICF_KEY_LEN);
	crypto_onetimeauth(d, plain, 1000, okey);
	ic_codec_digest(key, ICF_IMAGE_V2, &e, plain, e.digest);
	CHECK(memcmp(d, e.digest, ICF_DIGEST_LEN) == 0);
	/* v1: "ICDG" and the first 20 bytes only, whatever the point id */
	p = head;
	memcpy(p, "ICDG", 4);
	crypto_generichash(okey, 32, head, 20, key->k_digest, ICF_KEY_LEN);
	crypto_onetimeauth(d, plain, 1000, okey);
	e.origin_id = 0;
	ic_codec_digest(key, ICF_IMAGE_V1, &e, plain, e.digest);
	CHECK(memcmp(d, e.digest, ICF_DIGEST_LEN) == 0);
	free(plain);
	free(rec);
	free(out);
	ic_codec_free(c);
}

/* The same block encrypted twice gives different records (fresh random nonces). */
static void test_nonce_fresh(void)
{
	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = calloc(1, BS), *r1 = malloc(ic_codec_bound(BS)), *r2 = malloc(ic_codec_bound(BS));
	struct icf_entry e1, e2;

	plain[0] = 1;
	CHECK_EQ(enc(c, key, ICF_IMAGE_V2, 1, 1, 5, plain, BS, r1, &e1), 0);
	CHECK_EQ(enc(c, key, ICF_IMAGE_V2, 1, 1, 5, plain, BS, r2, &e2), 0);
	CHECK_EQ(e1.stored_len, e2.stored_len);
	CHECK(memcmp(r1, r2, ICF_NONCE_LEN) != 0);
	CHECK(memcmp(r1, r2, e1.stored_len) != 0);
	CHECK(e1.rec_hash != e2.rec_hash);
	free(plain);
	free(r1);
	free(r2);
	ic_codec_free(c);
}

static void digest(const struct ic_key *k, uint32_t version, uint32_t origin, uint64_t origin_id,
		   uint64_t pos, const uint8_t *plain, uint8_t out[ICF_DIGEST_LEN])
{
	struct icf_entry e;

	memset(&e, 0, sizeof(e));
	e.pos = pos;
	e.origin = origin;
	e.origin_id = origin_id;
	e.plain_len = BS;
	ic_codec_digest(k, version, &e, plain, out);
}

/* Level 0 stores raw; digests depend on origin, position, content and key, and in v2 on
 * the point id: two points under one sequence number never share a one-time key. */
static void test_level0_and_digest(void)
{
	struct ic_codec *c = ic_codec_new(BS, 0);
	uint8_t *plain = calloc(1, BS), *rec = malloc(ic_codec_bound(BS));
	uint8_t d1[ICF_DIGEST_LEN], d2[ICF_DIGEST_LEN], d3[ICF_DIGEST_LEN], d4[ICF_DIGEST_LEN];
	uint8_t d5[ICF_DIGEST_LEN], d6[ICF_DIGEST_LEN], d7[ICF_DIGEST_LEN], d8[ICF_DIGEST_LEN];
	struct icf_entry e;

	plain[5] = 9;
	CHECK_EQ(enc(c, key, ICF_IMAGE_V1, 1, 1, 0, plain, BS, rec, &e), 0);
	CHECK_EQ(e.kind, ICF_ENTRY_RAW);
	for (uint32_t v = ICF_IMAGE_V1; v <= ICF_IMAGE_V2; v++) {
		uint64_t id = v == ICF_IMAGE_V1 ? 0 : 1000;

		plain[6] = 0;
		digest(key, v, 1, id, 1, plain, d1);
		digest(key, v, 2, id, 1, plain, d2);
		digest(key, v, 1, id, 2, plain, d3);
		digest(other_key, v, 1, id, 1, plain, d4);
		plain[6] = 1;
		digest(key, v, 1, id, 1, plain, d5);
		CHECK(memcmp(d1, d2, ICF_DIGEST_LEN) && memcmp(d1, d3, ICF_DIGEST_LEN) &&
		      memcmp(d1, d4, ICF_DIGEST_LEN) && memcmp(d1, d5, ICF_DIGEST_LEN));
	}
	/* v2: same (origin, position, content), another point id: another digest; and
	 * never v1's */
	plain[6] = 0;
	digest(key, ICF_IMAGE_V2, 1, 1000, 1, plain, d6);
	digest(key, ICF_IMAGE_V2, 1, 1001, 1, plain, d7);
	digest(key, ICF_IMAGE_V1, 1, 0, 1, plain, d8);
	CHECK(memcmp(d6, d7, ICF_DIGEST_LEN) && memcmp(d6, d8, ICF_DIGEST_LEN) &&
	      memcmp(d7, d8, ICF_DIGEST_LEN));
	free(plain);
	free(rec);
	ic_codec_free(c);
}

/* Writers cannot make a record that breaks the version's rules. */
static void test_encode_rules(void)
{
	struct ic_codec *c = ic_codec_new(BS, 0);
	uint8_t *plain = calloc(1, BS), *rec = malloc(ic_codec_bound(BS));
	struct icf_entry e;

	plain[0] = 1;
	CHECK_EQ(enc(c, key, ICF_IMAGE_V2, 1, 1, 0, plain, BS, rec, &e), -EINVAL);
	CHECK_EQ(enc(c, key, ICF_IMAGE_V1, 1, 1, 5, plain, BS, rec, &e), -EINVAL);
	CHECK_EQ(enc(c, key, 3, 1, 1, 5, plain, BS, rec, &e), -EINVAL);
	free(plain);
	free(rec);
	ic_codec_free(c);
}

static void test_is_zero(void)
{
	uint8_t b[1000] = { 0 };

	CHECK(ic_is_zero(b, sizeof(b)));
	b[999] = 1;
	CHECK(!ic_is_zero(b, sizeof(b)));
	b[999] = 0;
	b[64] = 1;
	CHECK(!ic_is_zero(b, sizeof(b)));
	CHECK(ic_is_zero(b, 64));
}

int main(void)
{
	uint8_t m1[ICF_KEY_LEN], m2[ICF_KEY_LEN];

	CHECK(sodium_init() >= 0);
	randombytes_buf(m1, ICF_KEY_LEN);
	randombytes_buf(m2, ICF_KEY_LEN);
	key = ic_key_from_master(m1, chain_id);
	other_key = ic_key_from_master(m2, chain_id);
	CHECK(key && other_key);
	RUN(test_roundtrip);
	RUN(test_tamper);
	RUN(test_v2_layout);
	RUN(test_encode_rules);
	RUN(test_nonce_fresh);
	RUN(test_level0_and_digest);
	RUN(test_is_zero);
	ic_key_free(key);
	ic_key_free(other_key);
	UNIT_EXIT();
}
