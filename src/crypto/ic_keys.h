/* ic_keys.h: the chain's master key, its subkeys, the key file and passphrases.
 *
 * The master key is random (32 bytes), created with the chain and stored only
 * wrapped, once per passphrase slot, in CHAIN/imgchain.key (FORMAT.md "Key file").
 * Subkeys come from crypto_kdf_derive_from_key(context "imgchain"):
 *   id 1 block AEAD key, id 2 seal MAC key, id 3 change-digest key, id 4 key check.
 * All key material lives in sodium_malloc() memory and is wiped on free.
 */
#ifndef IC_KEYS_H
#define IC_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgchain_format.h"

/* The subkeys of one key generation (FORMAT.md 6.2): ids 1-3 of that generation's
 * master key. */
struct ic_subkeys {
	uint8_t k_block[ICF_KEY_LEN], k_seal[ICF_KEY_LEN], k_digest[ICF_KEY_LEN];
};

/* One key generation inside struct ic_key. */
struct ic_keygen {
	uint8_t master[ICF_KEY_LEN];
	struct ic_subkeys sub;
	uint8_t k_check[ICF_KEY_LEN];
	uint8_t gen_check[ICF_CHECK_LEN]; /* BLAKE2b-128(k_check, "ICKEYGEN"||chain_id||le32 g) */
};

struct ic_key {
	/* generation 0 (the master key of the chain's creation; every existing image) */
	uint8_t master[ICF_KEY_LEN];
	uint8_t k_block[ICF_KEY_LEN];        /* XChaCha20-Poly1305 key for block records */
	uint8_t k_seal[ICF_KEY_LEN];         /* BLAKE2b key for seals */
	uint8_t k_digest[ICF_KEY_LEN];       /* BLAKE2b key for change digests */
	uint8_t k_check[ICF_KEY_LEN];        /* BLAKE2b key for the key check value */
	uint8_t chain_id[ICF_ID_LEN];
	uint8_t key_check[ICF_CHECK_LEN];      /* BLAKE2b-128(k_check, "ICKEYCHK" || chain_id) */
	uint16_t ngen;              /* generations held: 0 .. ngen-1 */
	struct ic_keygen gen[];     /* gen[0] repeats generation 0 */
};

/* The key file in host form: the head (slots; h.version ICF_KEYFILE_V1 or _V2; in
 * version 2 h.reserved0 is the newest generation G) and, in version 2, the generation
 * records gens[0..G-1] (gens[g-1] wraps master key g-1 under master key g). */
struct ic_keyfile {
	struct icf_keyfile h;
	struct icf_key_gen gens[ICF_KEY_GEN_MAX];
};

/* The newest key generation of a key file (0 for version 1). */
static inline uint32_t ic_keyfile_gen(const struct ic_keyfile *kf)
{
	return kf->h.version == ICF_KEYFILE_V2 ? kf->h.reserved0 : 0;
}

/* The subkeys of generation g, or NULL when the key does not hold it. */
const struct ic_subkeys *ic_key_gen(const struct ic_key *key, uint16_t g);
/* The newest generation the key holds: new points are written with it. */
uint16_t ic_key_current_gen(const struct ic_key *key);
/* Generation g's check value (16 bytes; what the key holder's state pins), or NULL. */
const uint8_t *ic_key_gen_check(const struct ic_key *key, uint16_t g);

/* Default Argon2id cost of a new slot: crypto_pwhash_OPSLIMIT_INTERACTIVE and
 * MEMLIMIT_INTERACTIVE (64 MiB).  IMGCHAIN_KDF=moderate|sensitive raises them. */
void ic_kdf_defaults(uint64_t *opslimit, uint64_t *memlimit);
/* The highest KDF cost an unlock runs: what imgchain writes at most (SENSITIVE:
 * opslimit 4, 1 GiB), unless $IMGCHAIN_KDF_MAX says otherwise: interactive, moderate,
 * sensitive, max (the key file format's bounds, ICF_KDF_*_MAX) or OPSLIMIT:MEMLIMIT_MIB.
 * -EINVAL with a message for another value. */
int ic_kdf_cap(uint64_t *opslimit, uint64_t *memlimit);

/* Derive a key (generation 0 only) from a master key and chain id into sodium memory.
 * Returns NULL with errno = ENOMEM on failure.  The returned key is read-only
 * (sodium_mprotect_readonly): never write to it. */
struct ic_key *ic_key_from_master(const uint8_t master[ICF_KEY_LEN],
				  const uint8_t chain_id[ICF_ID_LEN]);
/* Wipe and release (NULL is fine). */
void ic_key_free(struct ic_key *key);

/* Decode a key file image (len bytes) into kf, checking magic, version, size, file hash,
 * slot fields and the format's KDF bounds (ICF_KDF_*_MAX).  IC_ECORRUPT with a message
 * naming path on any failure.  Never allocates from the file's numbers. */
int ic_keyfile_decode(const void *buf, size_t len, struct ic_keyfile *kf, const char *path);
/* Bytes of kf's encoding: 1120 for version 1, 1120 + 72 G for version 2. */
size_t ic_keyfile_size(const struct ic_keyfile *kf);
/* Encode kf (host order) into buf[ic_keyfile_size(kf)], computing the file hash
 * (kf->h.file_hash is ignored).  Returns the size. */
size_t ic_keyfile_encode(const struct ic_keyfile *kf, void *buf);
/* Reading and writing the key file is the store's (ic_keyfile_load/_store, ic_store.h):
 * this module only encodes and decodes it. */

/* Try the used slots with the passphrase, each only if its KDF cost is within
 * ic_kdf_cap() (the others are skipped and named in the message).  On success *out is
 * the key with every generation of the file (each one unwrapped from the next, and
 * generation 0 compared with kf->h.key_check: a failure is IC_EKEY "key file damaged").
 * IC_EKEY "wrong passphrase" when no slot tried opens; IC_ECORRUPT when every used slot
 * is above the cap (none tried).  *slot_out (may be NULL) gets the slot. */
int ic_keyfile_unlock(const struct ic_keyfile *kf, const char *pass, size_t passlen,
		      struct ic_key **out, int *slot_out);
/* Fill a free slot of kf wrapping the newest master key of key under pass.  Returns
 * the slot number, or -ENOSPC when all ICF_KEY_SLOTS are used. */
int ic_keyfile_add_slot(struct ic_keyfile *kf, const struct ic_key *key, const char *pass,
			size_t passlen, uint64_t opslimit, uint64_t memlimit);
/* Clear slot n (refuses, -EBUSY, to remove the last used slot). */
int ic_keyfile_remove_slot(struct ic_keyfile *kf, int n);
/* Start a new key generation: a fresh random master key G+1, master key G wrapped
 * under it, and only slot keep left, re-made for pass (which must be the passphrase
 * that opened it) with its KDF cost; every other slot is cleared and its number set
 * in *dropped (bit n for slot n).  kf becomes version 2.  *out gets the new key
 * (generations 0..G+1); key is left as it was.  -ENOSPC at ICF_KEY_GEN_MAX. */
int ic_keyfile_revoke(struct ic_keyfile *kf, const struct ic_key *key, int keep,
		      const char *pass, size_t passlen, struct ic_key **out, unsigned *dropped);
/* Create a new chain key: random master key, given chain id, one slot for pass; the
 * key file is version 1 (generation 0 only). */
int ic_keyfile_create(const uint8_t chain_id[ICF_ID_LEN], const char *pass, size_t passlen,
		      struct ic_keyfile *kf, struct ic_key **out);

/* Obtain a passphrase: from passphrase_file if not NULL, else $IMGCHAIN_PASSPHRASE_FILE,
 * else $IMGCHAIN_PASSPHRASE, else a prompt on /dev/tty when stdin is a terminal (asked
 * twice, and must match, when confirm is true); otherwise -EINVAL with a clear message.
 * A file's first line is used (trailing newline stripped); an empty passphrase is refused.
 * $IMGCHAIN_PASSPHRASE is removed from the environment once read, its bytes wiped
 * (also from what /proc/PID/environ shows); later calls in the same process get the
 * value read (kept in sodium memory) while the variable stays unset.
 * *out is sodium_malloc'd, NUL-terminated; release with ic_passphrase_free(). */
int ic_passphrase_get(const char *passphrase_file, bool confirm, const char *prompt,
		      char **out, size_t *len);
void ic_passphrase_free(char *pass);
/* Obtain a NEW passphrase (imgkey add): from passphrase_file if not NULL, else
 * $IMGCHAIN_NEW_PASSPHRASE (removed once read, like $IMGCHAIN_PASSPHRASE), else a
 * confirmed prompt on /dev/tty; never from the variables of ic_passphrase_get(), which
 * hold the current one.  Same rules otherwise. */
int ic_passphrase_get_new(const char *passphrase_file, const char *prompt, char **out,
			  size_t *len);

#endif
