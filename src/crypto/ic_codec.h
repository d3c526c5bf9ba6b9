/* ic_codec.h: one block in, one stored record out (zstd when it helps, then
 * XChaCha20-Poly1305 with a fresh random nonce), and back, with every length bounded.
 * Record = nonce(24) || ciphertext || tag(16); additional data = struct icf_block_ad. */
#ifndef IC_CODEC_H
#define IC_CODEC_H

#include <stdint.h>

#include <sodium.h>

#include "imgchain_format.h"
#include "ic_keys.h"
#include "ic_mem.h"

/* Per-thread state (zstd contexts, scratch).  Not thread-safe: one per thread. */
struct ic_codec;

struct ic_codec *ic_codec_new(uint32_t block_size, int level);
void ic_codec_free(struct ic_codec *c);

/* Largest record a block of block_size can produce. */
uint32_t ic_codec_bound(uint32_t block_size);

/* Encode plain[plain_len] (1..block_size, not all zero) of block e->pos for the point
 * e->origin (v2: with point id e->origin_id and key generation e->keygen, which the
 * caller sets) into out[ic_codec_bound()], in the record format of image version
 * `version`.  Fills e->stored_len, plain_len, kind and rec_hash and clears offset and
 * digest (the caller sets them). */
int ic_codec_encode(struct ic_codec *c, const struct ic_key *key,
		    const uint8_t chain_id[ICF_ID_LEN],
		    uint32_t version, const void *plain, uint32_t plain_len, void *out,
		    struct icf_entry *e);

/* Decode the record rec (e->stored_len bytes) described by entry e of an image of
 * format `version` into out[block_size].  IC_ECORRUPT when lengths are impossible,
 * authentication fails or the plaintext length differs from e->plain_len. */
int ic_codec_decode(struct ic_codec *c, const struct ic_key *key,
		    const uint8_t chain_id[ICF_ID_LEN],
		    uint32_t version, const struct icf_entry *e, const void *rec, void *out);

/* Keyed change digest (FORMAT.md 4.3) of plain[e->plain_len] as block e->pos stored by
 * the point e->origin (v2: and e->origin_id) in an image of format `version`. */
void ic_codec_digest(const struct ic_key *key, uint32_t version, const struct icf_entry *e,
		     const void *plain, uint8_t out[ICF_DIGEST_LEN]);

/* The seal of a point (FORMAT.md "Seal"): begin with the point's image version, feed
 * every data entry of the point's block map in ascending position order, then finish
 * with the point's slot. */
struct ic_seal {
	crypto_generichash_state st;
	uint32_t version;
};

void ic_seal_begin(struct ic_seal *s, uint32_t version);
void ic_seal_add(struct ic_seal *s, const struct icf_entry *e);
int ic_seal_finish(struct ic_seal *s, const struct ic_key *key, const uint8_t chain_id[ICF_ID_LEN],
		    uint32_t block_size, const struct icf_slot *slot, uint8_t out[32]);

#endif
