/* ic_unlock.h: the whole unlock a keyed tool does: the chain's key file, a passphrase,
 * the key, and the key holder's state told which key generations it holds. */
#ifndef IC_UNLOCK_H
#define IC_UNLOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "ic_keys.h"
#include "ic_store.h"    /* ic_keyfile_load, ic_keyfile_store */

/* The whole unlock for tools: load the key file of chain_dir, get the passphrase
 * (never confirmed), unlock.  Messages and codes as above.  The key's generations are
 * noted for the key holder's state (ic_state_check() compares them). */
int ic_key_unlock(const char *chain_dir, const char *passphrase_file, struct ic_key **out);
/* For servers of a chain (imgmount, the nbdkit plugin): ic_key_unlock, then the key
 * must be the one of chain_dir's images (IC_EKEY "wrong key") and the chain not older
 * than this machine last saw (ic_state_check: IC_ECORRUPT unless accept_rollback). */
int ic_key_unlock_chain(const char *chain_dir, const char *passphrase_file,
			bool accept_rollback, struct ic_key **out);
/* The same, also returning the decoded key file (to change its slots), the slot that
 * opened (slot_out may be NULL) and, when pass_out is not NULL, the passphrase
 * (release with ic_passphrase_free). */
int ic_key_unlock_keyfile(const char *chain_dir, const char *passphrase_file,
			  struct ic_keyfile *kf, struct ic_key **out, int *slot_out,
			  char **pass_out, size_t *passlen_out);

#endif
