/* test_codec.c: block encode/decode: round trips, tampering, bounds, nonces. */
#include "config.h"

#include <string.h>

#include <sodium.h>
#include <xxhash.h>

#include "imgchain.h"
#include "unit.h"

#define BS 65536u

static struct ic_key *key, *other_key;
static uint8_t chain_id[16] = "chain-id-0123456";

static void fill(uint8_t *b, size_t n, int compressible)
{
	for (size_t i = 0; i < n; i++)
		b[i] = compressible ? (uint8_t)(i / 100) : (uint8_t)randombytes_uniform(256);
}

static void roundtrip(uint32_t len, int compressible, uint16_t want_kind)
{
	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = malloc(BS), *out = malloc(BS), *rec = malloc(ic_codec_bound(BS));
	struct icf_entry e;

	fill(plain, len, compressible);
	CHECK_EQ(ic_codec_encode(c, key, chain_id, 7, 3, plain, len, rec, &e), 0);
	CHECK_EQ(e.kind, want_kind);
	CHECK_EQ(e.plain_len, len);
	CHECK_EQ(e.pos, 7);
	CHECK_EQ(e.origin, 3);
	CHECK(e.stored_len <= len + ICF_RECORD_OVERHEAD);
	CHECK_EQ(e.rec_hash, XXH3_64bits(rec, e.stored_len));
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &e, rec, out), 0);
	CHECK(memcmp(plain, out, len) == 0);
	free(plain);
	free(out);
	free(rec);
	ic_codec_free(c);
}

static void test_roundtrip(void)
{
	roundtrip(BS, 1, ICF_ENTRY_ZSTD);
	roundtrip(BS, 0, ICF_ENTRY_RAW);
	roundtrip(1234, 1, ICF_ENTRY_ZSTD);
	roundtrip(1, 0, ICF_ENTRY_RAW);
}

/* Every field bound in the additional data must make authentication fail. */
static void test_tamper(void)
{
	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = malloc(BS), *out = malloc(BS), *rec = malloc(ic_codec_bound(BS));
	uint8_t other_chain[16] = "another-chain-id";
	struct icf_entry e, t;

	fill(plain, BS, 1);
	CHECK_EQ(ic_codec_encode(c, key, chain_id, 42, 5, plain, BS, rec, &e), 0);
	t = e; t.pos = 43;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.origin = 4;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.plain_len = BS - 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.kind = ICF_ENTRY_RAW;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	CHECK_EQ(ic_codec_decode(c, key, other_chain, &e, rec, out), IC_ECORRUPT);
	CHECK_EQ(ic_codec_decode(c, other_key, chain_id, &e, rec, out), IC_ECORRUPT);
	/* a single flipped bit anywhere in the record */
	for (uint32_t i = 0; i < e.stored_len; i += 97) {
		rec[i] ^= 0x10;
		CHECK_EQ(ic_codec_decode(c, key, chain_id, &e, rec, out), IC_ECORRUPT);
		rec[i] ^= 0x10;
	}
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &e, rec, out), 0);
	/* impossible lengths are refused before any decryption */
	t = e; t.stored_len = 10;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.stored_len = ic_codec_bound(BS) + 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.plain_len = BS + 1;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	t = e; t.kind = 9;
	CHECK_EQ(ic_codec_decode(c, key, chain_id, &t, rec, out), IC_ECORRUPT);
	free(plain);
	free(out);
	free(rec);
	ic_codec_free(c);
}

/* The same block encrypted twice gives different records (fresh random nonces). */
static void test_nonce_fresh(void)
{
	struct ic_codec *c = ic_codec_new(BS, 3);
	uint8_t *plain = calloc(1, BS), *r1 = malloc(ic_codec_bound(BS)), *r2 = malloc(ic_codec_bound(BS));
	struct icf_entry e1, e2;

	plain[0] = 1;
	CHECK_EQ(ic_codec_encode(c, key, chain_id, 1, 1, plain, BS, r1, &e1), 0);
	CHECK_EQ(ic_codec_encode(c, key, chain_id, 1, 1, plain, BS, r2, &e2), 0);
	CHECK_EQ(e1.stored_len, e2.stored_len);
	CHECK(memcmp(r1, r2, ICF_NONCE_LEN) != 0);
	CHECK(memcmp(r1, r2, e1.stored_len) != 0);
	CHECK(e1.rec_hash != e2.rec_hash);
	free(plain);
	free(r1);
	free(r2);
	ic_codec_free(c);
}

/* Level 0 stores raw; digests depend on origin, position, content and key. */
static void test_level0_and_digest(void)
{
	struct ic_codec *c = ic_codec_new(BS, 0);
	uint8_t *plain = calloc(1, BS), *rec = malloc(ic_codec_bound(BS));
	uint8_t d1[16], d2[16], d3[16], d4[16], d5[16];
	struct icf_entry e;

	plain[5] = 9;
	CHECK_EQ(ic_codec_encode(c, key, chain_id, 1, 1, plain, BS, rec, &e), 0);
	CHECK_EQ(e.kind, ICF_ENTRY_RAW);
	ic_codec_digest(key, 1, 1, plain, BS, d1);
	ic_codec_digest(key, 2, 1, plain, BS, d2);
	ic_codec_digest(key, 1, 2, plain, BS, d3);
	ic_codec_digest(other_key, 1, 1, plain, BS, d4);
	plain[6] = 1;
	ic_codec_digest(key, 1, 1, plain, BS, d5);
	CHECK(memcmp(d1, d2, 16) && memcmp(d1, d3, 16) && memcmp(d1, d4, 16) && memcmp(d1, d5, 16));
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
	uint8_t m1[32], m2[32];

	CHECK(sodium_init() >= 0);
	randombytes_buf(m1, 32);
	randombytes_buf(m2, 32);
	key = ic_key_from_master(m1, chain_id);
	other_key = ic_key_from_master(m2, chain_id);
	CHECK(key && other_key);
	RUN(test_roundtrip);
	RUN(test_tamper);
	RUN(test_nonce_fresh);
	RUN(test_level0_and_digest);
	RUN(test_is_zero);
	ic_key_free(key);
	ic_key_free(other_key);
	UNIT_EXIT();
}
