/* ic_journal.h: reading the CDP journal CHAIN/cdp/NNNNNNNN.cdp (FORMAT.md section 15)
 * with the key: its sessions, each one's header and frames verified (the MAC chain of
 * the checkpoints, their times), which checkpoint a time names, and the records up to
 * one checkpoint.  What the writer shares with it (keys, ids, MACs) is here too.  The
 * restore (ops: imgrestore --at) and the mount's cdp/ view (serve) both read through
 * it; it keeps nothing of the disk itself. */
#ifndef IC_JOURNAL_H
#define IC_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <sodium.h>

#include "imgchain_cdp.h"
#include "imgchain_format.h"
#include "ic_array.h"
#include "ic_keys.h"

/* ---- what the writer and readers share ---- */

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
/* A checkpoint frame's stored hash (at its size - 8) and whether it is right, for the
 * journal's version; the frame's hash set (writer). */
bool ic_cdp_ckpt_hash_ok(const struct icf_cdp_ckpt *c, uint32_t version);
void ic_cdp_ckpt_hash_set(struct icf_cdp_ckpt *c, uint32_t version);
/* The map seal (FORMAT.md 15.5): F(item) of a non-zero block's record of interval k, the
 * 128-bit term A sums (mod 2^128) over the disk's non-zero blocks; and mseal(k) from A. */
typedef unsigned __int128 ic_cdp_acc;
ic_cdp_acc ic_cdp_item_term(const uint8_t kcdp[32], const struct icf_map_item_v2 *it);
ic_cdp_acc ic_cdp_map_term(const uint8_t kcdp[32], const struct icf_cdp_header *h, uint64_t k,
			   const struct icf_cdp_rec *r);
void ic_cdp_mseal(const uint8_t kcdp[32], const struct icf_cdp_header *h,
		  const struct icf_cdp_ckpt *c, ic_cdp_acc a, uint8_t out[32]);
/* Add a record frame to H(k): head bytes 0..55, then the record's nonce and tag. */
void ic_cdp_h_add(crypto_generichash_state *h, const struct icf_cdp_rec *r, const uint8_t *rec);
/* The entry a record frame stands for (for ic_codec_encode/decode). */
void ic_cdp_entry(const struct icf_cdp_header *h, uint64_t k, uint64_t pos, uint32_t plain_len,
		  struct icf_entry *e);

/* ---- reading ---- */

/* One session's file, its header verified with the key. */
struct ic_journal {
	char *path;
	int fd;
	uint64_t size, nblocks;
	struct icf_cdp_header h;
	uint8_t kcdp[32];
	bool keyless;               /* ic_journal_open_keyless: no MAC checked (every checkpoint
				     * ok, times ok when they do not go back) */
};

/* A checkpoint as a scan found it. */
struct ic_jckpt {
	uint32_t session;
	uint32_t gap_prev;          /* the session's header's (15.4) */
	struct timespec gap_since;
	uint64_t interval;
	uint64_t disk_size;         /* the session's */
	struct timespec when;
	bool ok;                    /* the MAC chain verified up to it */
	bool time_ok;               /* its own tmac verified: its time is the writer's */
};
struct ic_jckpts IC_ARRAY_BODY(struct ic_jckpt);

/* A walk of one session's frames.  Scan (on_rec NULL): the checkpoints into ck.  Apply
 * (on_rec set): also on_rec for every record of intervals <= stop, in file order (rec:
 * the record bytes, already checked against rec_hash; NULL for a zero frame); the walk
 * ends at checkpoint stop, which must verify (else IC_ECORRUPT). */
struct ic_jwalk {
	uint64_t stop;
	int (*on_rec)(void *arg, const struct ic_journal *j, uint64_t k, uint64_t off,
		      const struct icf_cdp_rec *r, const uint8_t *rec);
	/* apply: also called at every checkpoint up to stop (after its records) */
	int (*on_ckpt)(void *arg, const struct ic_journal *j, const struct icf_cdp_ckpt *c);
	void *arg;
	struct ic_jckpts ck;        /* results, appended */
	bool has_mseal;             /* apply: checkpoint stop's map seal (version 2) in mseal */
	uint8_t mseal[32];
	uint32_t tail_dropped;      /* a session whose last checkpoint failed: taken for the
				     * torn tail (the flush was never acknowledged) */
};

/* Open session of dir and verify its header (chain, key, mac0).  Always call
 * ic_journal_close, also after a failure. */
int ic_journal_open(const char *dir, uint32_t session, const struct ic_key *key,
		    struct ic_journal *j);
void ic_journal_close(struct ic_journal *j);
/* The same without the key (a fold): the header's hash and fields, its chain id and key
 * check against the chain's (nothing is authenticated). */
int ic_journal_open_keyless(const char *dir, uint32_t session, const uint8_t *chain_id,
			    const uint8_t *key_check, struct ic_journal *j);
/* The length of block pos in the session's geometry. */
uint32_t ic_journal_block_len(const struct ic_journal *j, uint64_t pos);
int ic_journal_walk(struct ic_journal *j, struct ic_jwalk *w);
/* Scan every session of dir (CHAIN/cdp) into *out (appended), in order.  Messages
 * (ic_msg) for ignored sessions and tails unless quiet. */
int ic_journal_scan(const char *dir, const struct ic_key *key, bool quiet, struct ic_jckpts *out);
/* The checkpoint `imgrestore --at at` restores (FORMAT.md 15.3, 15.4): its index in ck,
 * or -ENOENT (none, or at is in a gap) / IC_ECORRUPT (naming the checkpoints affected). */
int ic_journal_choose(const struct ic_jckpts *ck, const char *dir, const struct timespec *at,
		      size_t *out);
/* Whether ic_journal_choose at checkpoint i's own time picks i: the checkpoints a
 * reader may offer by their time.  offered[ck->n], filled; O(n x gaps).  0 or -ENOMEM. */
int ic_journal_offered(const struct ic_jckpts *ck, bool *offered);
/* A folded point's name (FORMAT.md 15.5): "cdp-" and its checkpoint's time as below. */
void ic_cdp_fold_name(int64_t time_s, uint32_t time_ns, char *buf, size_t len);
/* A folded point's seal (slot flag ICF_SLOT_FOLDED) checked with the key: its name,
 * then the map seal recomputed over its resolved block map.  IC_ECORRUPT on a mismatch. */
struct ic_view;
int ic_fold_check_seal(const struct ic_view *v, const struct ic_key *key);
/* t as UTC "YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ" (what ic_cdp_parse_time reads back). */
const char *ic_journal_fmt_time(const struct timespec *t, char *buf, size_t len);

#endif
