/* ic_state.h: what the key holder remembers of each chain, to detect a chain or a key
 * file that was rolled back, and points that went away, since this machine last saw it.
 *
 * One small text file per chain id in the state directory: $IMGCHAIN_STATE_DIR,
 * else $XDG_STATE_HOME/imgchain, else ~/.local/state/imgchain (format: FORMAT.md
 * "State file").  It holds the newest key generation seen with its check value, and the
 * last IC_STATE_POINTS points seen (sequence, seal, name).  The files of the chain
 * cannot show that a newer point or key generation once existed: only this memory can. */
#ifndef IC_STATE_H
#define IC_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ic_chain.h"
#include "ic_keys.h"

#define IC_STATE_POINTS 256u        /* points remembered: the newest by sequence */
#define IC_STATE_MAX_BYTES 65536u   /* a longer state file is refused */

struct ic_state_point {
	uint32_t seq;
	uint8_t seal[ICF_SEAL_LEN];
	char name[ICF_NAME_MAX + 1];
};

struct ic_state {
	bool have_keygen;
	uint32_t keygen;            /* newest key generation seen */
	uint8_t gen_check[ICF_CHECK_LEN];      /* its check value (ic_key_gen_check) */
	size_t npoints;
	struct ic_state_point points[IC_STATE_POINTS];  /* ascending seq */
};

/* Decode a state file's text (len bytes; version 2, or the single-point version 1).
 * -EINVAL with a message naming path when it is not exactly what ic_state_encode()
 * writes.  Never allocates. */
int ic_state_decode(const char *buf, size_t len, struct ic_state *st, const char *path);
/* Encode st into buf (at least IC_STATE_MAX_BYTES); returns the length. */
size_t ic_state_encode(const struct ic_state *st, char *buf);

/* Note the generations of a key just unlocked (ic_key_unlock does it), for the next
 * ic_state_check() or ic_state_check_key() of its chain. */
void ic_state_note_key(const struct ic_key *key);

/* Compare the noted key of chain_id (if any) with the remembered key generation:
 * IC_ECORRUPT naming dir's key file when the key file is older (rolled back) or its
 * generation is another one than remembered (replaced).  With accept=true it is
 * accepted.  On success the state is advanced to the key's newest generation. */
int ic_state_check_key(const char *dir, const uint8_t chain_id[ICF_ID_LEN], bool accept);

/* ic_state_check_key(), then compare the chain with the remembered points.
 * IC_ECORRUPT with a message when the newest remembered point is gone and nothing
 * newer exists, or when it exists with another seal.  With accept=true such a chain is
 * accepted and the state reset to it.  No state yet: 0.  On success the state is
 * advanced to the newest point present (only the key holder calls this, after
 * authenticating the key). */
int ic_state_check(const struct ic_chain *c, bool accept);

/* Remember a new point (after imgbackup committed it). */
int ic_state_record(const uint8_t chain_id[ICF_ID_LEN], uint32_t seq, const char *name,
		    const uint8_t seal[ICF_SEAL_LEN]);

/* After every point of c was authenticated (imgverify --data): call report for each
 * remembered point that is gone (no point has its sequence) or was replaced (its
 * sequence now has another seal), then forget those and remember every point of c.
 * Returns the number reported, or <0. */
int ic_state_review(const struct ic_chain *c,
		    void (*report)(const struct ic_state_point *p, bool replaced, void *arg),
		    void *arg);

/* Side files of the state directory, "HEX.SUFFIX" beside the state file, for what else
 * the key holder remembers of a chain (FORMAT.md section 16).  Load: the whole file into
 * buf (-ENOENT when absent, -EINVAL when longer than max), its path into path (for
 * messages); store: replaced atomically. */
int ic_state_side_load(const uint8_t chain_id[ICF_ID_LEN], const char *suffix, char *buf,
		       size_t max, size_t *len, char *path, size_t pathlen);
int ic_state_side_store(const uint8_t chain_id[ICF_ID_LEN], const char *suffix,
			const char *buf, size_t len);

#endif
