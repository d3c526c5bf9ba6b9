/* ic_state.h: what the key holder remembers of each chain, to detect a chain that
 * was rolled back or lost its newest points since this machine last saw it.
 *
 * One small text file per chain id in the state directory: $IMGCHAIN_STATE_DIR,
 * else $XDG_STATE_HOME/imgchain, else ~/.local/state/imgchain.  It holds the
 * highest sequence seen, that point's name and seal.  The files of the chain
 * cannot show that a newer point once existed: only this memory can. */
#ifndef IC_STATE_H
#define IC_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "ic_chain.h"

/* Compare the chain with the remembered state.  IC_ECORRUPT with a message when
 * the newest remembered point is gone and nothing newer exists, or when it exists
 * with another seal.  With accept=true such a chain is accepted and the state
 * reset to it.  No state yet: 0.  On success the state is advanced to the newest
 * point present (only the key holder calls this, after authenticating the key). */
int ic_state_check(const struct ic_chain *c, bool accept);

/* Remember a new point (after imgbackup committed it). */
int ic_state_record(const uint8_t chain_id[16], uint32_t seq, const char *name,
		    const uint8_t seal[32]);

#endif
