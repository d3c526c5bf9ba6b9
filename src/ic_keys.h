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

struct ic_key {
	uint8_t master[ICF_KEY_LEN];
	uint8_t k_block[32];        /* XChaCha20-Poly1305 key for block records */
	uint8_t k_seal[32];         /* BLAKE2b key for seals */
	uint8_t k_digest[32];       /* BLAKE2b key for change digests */
	uint8_t k_check[32];        /* BLAKE2b key for the key check value */
	uint8_t chain_id[16];
	uint8_t key_check[16];      /* BLAKE2b-128(k_check, "ICKEYCHK" || chain_id) */
};

/* Default Argon2id cost of a new slot: crypto_pwhash_OPSLIMIT_INTERACTIVE and
 * MEMLIMIT_INTERACTIVE (64 MiB).  IMGCHAIN_KDF=moderate|sensitive raises them. */
void ic_kdf_defaults(uint64_t *opslimit, uint64_t *memlimit);

/* Derive a key (subkeys, key_check) from a master key and chain id into sodium
 * memory.  Returns NULL with errno = ENOMEM on failure.  The returned key is
 * read-only (sodium_mprotect_readonly): never write to it. */
struct ic_key *ic_key_from_master(const uint8_t master[ICF_KEY_LEN], const uint8_t chain_id[16]);
/* Wipe and release (NULL is fine). */
void ic_key_free(struct ic_key *key);

/* Decode a key file image (len bytes) into kf, checking magic, version, file hash,
 * slot fields and KDF caps (ICF_KDF_*_MAX).  IC_ECORRUPT with a message naming
 * path on any failure.  Never allocates from the file's numbers. */
int ic_keyfile_decode(const void *buf, size_t len, struct icf_keyfile *kf, const char *path);
/* Encode kf (host order) into buf[sizeof(struct icf_keyfile)], computing file_hash. */
void ic_keyfile_encode(const struct icf_keyfile *kf, void *buf);
/* Read and decode CHAIN/imgchain.key.  -ENOENT (with a message) if absent. */
int ic_keyfile_load(const char *chain_dir, struct icf_keyfile *kf);
/* Write kf to CHAIN/imgchain.key atomically (tmp, fsync, rename, fsync dir), mode 0600. */
int ic_keyfile_store(const char *chain_dir, const struct icf_keyfile *kf);

/* Try every used slot with the passphrase.  On success *out is the key (its
 * key_check compared with kf->key_check: a mismatch is IC_EKEY "key file damaged").
 * IC_EKEY "wrong passphrase" when no slot opens.  *slot_out (may be NULL) gets the slot. */
int ic_keyfile_unlock(const struct icf_keyfile *kf, const char *pass, size_t passlen,
		      struct ic_key **out, int *slot_out);
/* Fill a free slot of kf wrapping key->master under pass.  Returns the slot
 * number, or -ENOSPC when all ICF_KEY_SLOTS are used. */
int ic_keyfile_add_slot(struct icf_keyfile *kf, const struct ic_key *key, const char *pass,
			size_t passlen, uint64_t opslimit, uint64_t memlimit);
/* Clear slot n (refuses, -EBUSY, to remove the last used slot). */
int ic_keyfile_remove_slot(struct icf_keyfile *kf, int n);
/* Create a new chain key: random master key, given chain id, one slot for pass. */
int ic_keyfile_create(const uint8_t chain_id[16], const char *pass, size_t passlen,
		      struct icf_keyfile *kf, struct ic_key **out);

/* Obtain a passphrase: from passphrase_file if not NULL, else $IMGCHAIN_PASSPHRASE_FILE,
 * else $IMGCHAIN_PASSPHRASE, else a prompt on /dev/tty when stdin is a terminal (asked
 * twice, and must match, when confirm is true); otherwise -EINVAL with a clear message.
 * A file's first line is used (trailing newline stripped); an empty passphrase is refused.
 * *out is sodium_malloc'd, NUL-terminated; release with ic_passphrase_free(). */
int ic_passphrase_get(const char *passphrase_file, bool confirm, const char *prompt,
		      char **out, size_t *len);
void ic_passphrase_free(char *pass);
/* Obtain a NEW passphrase (imgkey add): from passphrase_file if not NULL, else
 * $IMGCHAIN_NEW_PASSPHRASE, else a confirmed prompt on /dev/tty; never from the
 * variables of ic_passphrase_get(), which hold the current one.  Same rules otherwise. */
int ic_passphrase_get_new(const char *passphrase_file, const char *prompt, char **out,
			  size_t *len);

/* The whole unlock for tools: load the key file of chain_dir, get the passphrase
 * (never confirmed), unlock.  Messages and codes as above. */
int ic_key_unlock(const char *chain_dir, const char *passphrase_file, struct ic_key **out);
/* The same, also returning the decoded key file (to change its slots) and the slot
 * that opened (slot_out may be NULL). */
int ic_key_unlock_keyfile(const char *chain_dir, const char *passphrase_file,
			  struct icf_keyfile *kf, struct ic_key **out, int *slot_out);

#endif
