/* ic_cdp_int.h: what the journal's writer and reader share (FORMAT.md 13.2). */
#ifndef IC_CDP_INT_H
#define IC_CDP_INT_H

#include <stdint.h>

#include <sodium.h>

#include "imgchain_cdp.h"
#include "imgchain_format.h"
#include "ic_keys.h"

#include "ic_array.h"

/* The session numbers of dir (CHAIN/cdp: a directory, not a link), ascending. */
struct ic_cdp_sessions IC_ARRAY_BODY(uint32_t);
int ic_cdp_list_sessions(const char *dir, struct ic_cdp_sessions *out);

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
