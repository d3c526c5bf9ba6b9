/* ic_cdp_int.h: what the journal's writer and reader share (FORMAT.md 15.2). */
#ifndef IC_CDP_INT_H
#define IC_CDP_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <sodium.h>

#include "imgchain_cdp.h"
#include "imgchain_format.h"
#include "ic_keys.h"

#include "ic_array.h"

/* The session numbers of dir (CHAIN/cdp: a directory, not a link), ascending. */
struct ic_cdp_sessions IC_ARRAY_BODY(uint32_t);
int ic_cdp_list_sessions(const char *dir, struct ic_cdp_sessions *out);

#include "ic_codec.h"

/* The writer (ic_cdp_write.c; ic_cdp_range.c encodes ranges with workers). */
struct ic_cdp_writer {
	char *chain_dir, *cdp_dir, *path;
	const struct ic_key *key;
	struct ic_codec *codec;
	uint8_t *frame;             /* head + record */
	struct icf_cdp_header h;
	uint8_t kcdp[32], mac[32];
	crypto_generichash_state hk;
	uint64_t k, frames, off, nblocks;
	uint64_t off0;              /* the end of checkpoint 0 */
	struct timespec last;
	int fd;
	int failed;                 /* sticky: the first failure */
	/* ic_cdp_put_range's workers (ic_cdp_range.c): a codec each, frames of a chunk */
	unsigned nthreads;
	int level;
	struct ic_codec **codecs;
	uint8_t *slots;
	uint32_t *lens;
};

/* A record frame (head + record) of block pos = buf[len] for the current interval into
 * frame[sizeof(struct icf_cdp_rec) + ic_codec_bound()], with codec (thread-safe for
 * distinct codecs while w does not change): its bytes, 0 when all zero and skip_zero. */
int ic_cdp_encode_frame(const struct ic_cdp_writer *w, struct ic_codec *codec, uint64_t pos,
			const void *buf, uint32_t len, bool skip_zero, uint8_t *frame);
/* Append a frame encode_frame made (in position order within a request). */
int ic_cdp_append_frame(struct ic_cdp_writer *w, const uint8_t *frame);
/* The length of block pos in the session's geometry. */
uint32_t ic_cdp_block_len(const struct ic_cdp_writer *w, uint64_t pos);
void ic_cdp_range_free(struct ic_cdp_writer *w);

/* K_cdp of generation g: BLAKE2b-256(key = seal key of g, "ICCDPKEY" || chain_id). */
int ic_cdp_mac_key(const struct ic_key *key, uint16_t g, uint8_t out[32]);
/* J(k): the origin_id of interval k's records. */
uint64_t ic_cdp_interval_id(uint64_t session_id, uint64_t k);
/* mac0 of a header (bytes 0..1023 as stored). */
void ic_cdp_header_mac(const uint8_t kcdp[32], const struct icf_cdp_header *h, uint8_t out[32]);
/* mac(k) from mac(k-1), the checkpoint's stored bytes 0..47 and H(k). */
void ic_cdp_ckpt_mac(const uint8_t kcdp[32], const uint8_t prev[32], const struct icf_cdp_ckpt *c,
		     const uint8_t hk[32], uint8_t out[32]);
/* tmac: the checkpoint's interval and time alone, under the session. */
void ic_cdp_ckpt_tmac(const uint8_t kcdp[32], uint64_t session_id, const struct icf_cdp_ckpt *c,
		      uint8_t out[32]);
/* Add a record frame to H(k): head bytes 0..55, then the record's nonce and tag. */
void ic_cdp_h_add(crypto_generichash_state *h, const struct icf_cdp_rec *r, const uint8_t *rec);
/* The entry a record frame stands for (for ic_codec_encode/decode). */
void ic_cdp_entry(const struct icf_cdp_header *h, uint64_t k, uint64_t pos, uint32_t plain_len,
		  struct icf_entry *e);

#endif
