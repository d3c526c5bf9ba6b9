/* ic_keys.c: keys: master keys and their generations, subkeys and key checks, the KDF
 * defaults and cost cap; a key file's generations unwrapped (unlock), added (revoke), and a
 * new key file.  The key file's codec, I/O and slots: ic_keyfile.c. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ic_keys.h"
#include "ic_keys_int.h"
#include "ic_util.h"

#define IC_KDF_CONTEXT "imgchain"
#define IC_SUBKEY_BLOCK 1
#define IC_SUBKEY_SEAL 2
#define IC_SUBKEY_DIGEST 3
#define IC_SUBKEY_CHECK 4
#define IC_KEYCHK_MAGIC "ICKEYCHK"

_Static_assert(ICF_KEY_LEN == crypto_kdf_KEYBYTES, "master key is a crypto_kdf key");
_Static_assert(sizeof(IC_KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");

int ic_sodium_ready(void)
{
	if (sodium_init() < 0)
		return ic_fail(-EIO, "sodium_init failed");
	return 0;
}

void ic_kdf_defaults(uint64_t *opslimit, uint64_t *memlimit)
{
	const char *level = getenv("IMGCHAIN_KDF");

	if (level && !strcmp(level, "sensitive")) {
		*opslimit = crypto_pwhash_OPSLIMIT_SENSITIVE;
		*memlimit = crypto_pwhash_MEMLIMIT_SENSITIVE;
	} else if (level && !strcmp(level, "moderate")) {
		*opslimit = crypto_pwhash_OPSLIMIT_MODERATE;
		*memlimit = crypto_pwhash_MEMLIMIT_MODERATE;
	} else {
		/* unset, "interactive", or anything unknown */
		*opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
		*memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
	}
}

/* ---- keys ---------------------------------------------------------------- */

static int ic_keygen_derive(struct ic_keygen *kg, const uint8_t chain_id[ICF_ID_LEN], uint32_t g)
{
	uint8_t msg[8 + ICF_ID_LEN + 4];
	uint32_t le32 = ic_le32(g);

	if (crypto_kdf_derive_from_key(kg->sub.k_block, ICF_KEY_LEN, IC_SUBKEY_BLOCK, IC_KDF_CONTEXT,
				       kg->master) != 0 ||
	    crypto_kdf_derive_from_key(kg->sub.k_seal, ICF_KEY_LEN, IC_SUBKEY_SEAL, IC_KDF_CONTEXT,
				       kg->master) != 0 ||
	    crypto_kdf_derive_from_key(kg->sub.k_digest, ICF_KEY_LEN, IC_SUBKEY_DIGEST, IC_KDF_CONTEXT,
				       kg->master) != 0 ||
	    crypto_kdf_derive_from_key(kg->k_check, ICF_KEY_LEN, IC_SUBKEY_CHECK, IC_KDF_CONTEXT,
				       kg->master) != 0)
		return ic_fail(-EIO, "crypto_kdf_derive_from_key failed");
	memcpy(msg, ICF_KEYGEN_MAGIC, 8);
	memcpy(msg + 8, chain_id, ICF_ID_LEN);
	memcpy(msg + 24, &le32, 4);
	if (crypto_generichash(kg->gen_check, sizeof(kg->gen_check), msg, sizeof(msg),
			       kg->k_check, sizeof(kg->k_check)) != 0)
		return ic_fail(-EIO, "crypto_generichash failed");
	return 0;
}

static int ic_key_derive(struct ic_key *key)
{
	const struct ic_keygen *g0 = &key->gen[0];
	uint8_t msg[8 + ICF_ID_LEN];
	int ret;

	for (uint32_t g = 0; g < key->ngen; g++) {
		ret = ic_keygen_derive(&key->gen[g], key->chain_id, g);
		if (ret < 0)
			return ret;
	}
	memcpy(key->master, g0->master, ICF_KEY_LEN);
	memcpy(key->k_block, g0->sub.k_block, ICF_KEY_LEN);
	memcpy(key->k_seal, g0->sub.k_seal, ICF_KEY_LEN);
	memcpy(key->k_digest, g0->sub.k_digest, ICF_KEY_LEN);
	memcpy(key->k_check, g0->k_check, ICF_KEY_LEN);
	memcpy(msg, IC_KEYCHK_MAGIC, 8);
	memcpy(msg + 8, key->chain_id, ICF_ID_LEN);
	if (crypto_generichash(key->key_check, sizeof(key->key_check), msg, sizeof(msg),
			       key->k_check, sizeof(key->k_check)) != 0)
		return ic_fail(-EIO, "crypto_generichash failed");
	return 0;
}

/* A key holding generations 0..ngen-1 from their master keys (masters[g * 32]). */
static struct ic_key *ic_key_build(const uint8_t *masters, uint32_t ngen,
				   const uint8_t chain_id[ICF_ID_LEN])
{
	struct ic_key *key;

	if (ic_sodium_ready() < 0) {
		errno = EIO;
		return NULL;
	}
	if (ngen < 1 || ngen > ICF_KEY_GEN_MAX + 1) {
		ic_fail(-EINVAL, "bad number of key generations %u", ngen);
		errno = EINVAL;
		return NULL;
	}
	key = sodium_malloc(sizeof(*key) + ngen * sizeof(key->gen[0]));
	if (!key) {
		ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
		errno = ENOMEM;
		return NULL;
	}
	memset(key, 0, sizeof(*key) + ngen * sizeof(key->gen[0]));
	memcpy(key->chain_id, chain_id, sizeof(key->chain_id));
	key->ngen = (uint16_t)ngen;
	for (uint32_t g = 0; g < ngen; g++)
		memcpy(key->gen[g].master, masters + (size_t)g * ICF_KEY_LEN, ICF_KEY_LEN);
	if (ic_key_derive(key) < 0) {
		sodium_free(key);
		errno = EIO;
		return NULL;
	}
	/* From here on the key is read-only: a stray write faults instead of corrupting it. */
	sodium_mprotect_readonly(key);
	return key;
}

struct ic_key *ic_key_from_master(const uint8_t master[ICF_KEY_LEN], const uint8_t chain_id[ICF_ID_LEN])
{
	return ic_key_build(master, 1, chain_id);
}

void ic_key_free(struct ic_key *key)
{
	/* sodium_free() makes the pages writable again and wipes them. */
	sodium_free(key);
}

const struct ic_subkeys *ic_key_gen(const struct ic_key *key, uint16_t g)
{
	return g < key->ngen ? &key->gen[g].sub : NULL;
}

uint16_t ic_key_current_gen(const struct ic_key *key)
{
	return (uint16_t)(key->ngen - 1);
}

const uint8_t *ic_key_gen_check(const struct ic_key *key, uint16_t g)
{
	return g < key->ngen ? key->gen[g].gen_check : NULL;
}

/* ---- KDF cost cap ------------------------------------------------------------ */

int ic_kdf_cap(uint64_t *opslimit, uint64_t *memlimit)
{
	const char *v = getenv("IMGCHAIN_KDF_MAX");
	unsigned long long ops, mib;
	char tail;

	*opslimit = crypto_pwhash_OPSLIMIT_SENSITIVE;
	*memlimit = crypto_pwhash_MEMLIMIT_SENSITIVE;
	if (!v || !*v || !strcmp(v, "sensitive"))
		return 0;
	if (!strcmp(v, "interactive")) {
		*opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
		*memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
	} else if (!strcmp(v, "moderate")) {
		*opslimit = crypto_pwhash_OPSLIMIT_MODERATE;
		*memlimit = crypto_pwhash_MEMLIMIT_MODERATE;
	} else if (!strcmp(v, "max")) {
		*opslimit = ICF_KDF_OPSLIMIT_MAX;
		*memlimit = ICF_KDF_MEMLIMIT_MAX;
	} else if (sscanf(v, "%llu:%llu%c", &ops, &mib, &tail) == 2 && ops >= 1 &&
		   ops <= ICF_KDF_OPSLIMIT_MAX && mib >= 1 && mib <= (ICF_KDF_MEMLIMIT_MAX >> 20)) {
		*opslimit = ops;
		*memlimit = (uint64_t)mib << 20;
	} else {
		return ic_fail(-EINVAL,
			       "IMGCHAIN_KDF_MAX='%s': expected interactive, moderate, sensitive, max or OPSLIMIT:MEMLIMIT_MIB (at most %u:%llu)",
			       v, ICF_KDF_OPSLIMIT_MAX,
			       (unsigned long long)(ICF_KDF_MEMLIMIT_MAX >> 20));
	}
	return 0;
}

/* ---- key generations of a key file -------------------------------------------- */

/* Additional data of generation g's record: "ICKEYGEN" || chain_id || le32 g. */
static void ic_gen_ad(uint8_t ad[28], const uint8_t chain_id[ICF_ID_LEN], uint32_t g)
{
	uint32_t le32 = ic_le32(g);

	memcpy(ad, ICF_KEYGEN_MAGIC, 8);
	memcpy(ad + 8, chain_id, ICF_ID_LEN);
	memcpy(ad + 24, &le32, 4);
}

/* masters[G * ICF_KEY_LEN] holds the newest master key: unwrap every older one from it, then
 * build the key and compare generation 0 with the key file's key check. */
int ic_keyfile_finish_unlock(const struct ic_keyfile *kf, uint8_t *masters, struct ic_key **out)
{
	uint32_t gen = ic_keyfile_gen(kf);
	struct ic_key *key;

	for (uint32_t g = gen; g >= 1; g--) {
		const struct icf_key_gen *r = &kf->gens[g - 1];
		unsigned long long mlen;
		uint8_t ad[28];

		ic_gen_ad(ad, kf->h.chain_id, g);
		if (crypto_aead_xchacha20poly1305_ietf_decrypt(
			    masters + (size_t)(g - 1) * ICF_KEY_LEN, &mlen, NULL, r->wrapped,
			    sizeof(r->wrapped), ad, sizeof(ad), r->nonce,
			    masters + (size_t)g * ICF_KEY_LEN) != 0 ||
		    mlen != ICF_KEY_LEN)
			return ic_fail(IC_EKEY, "key file damaged: key generation %u does not open with generation %u's key",
				       g - 1, g);
	}
	key = ic_key_build(masters, gen + 1, kf->h.chain_id);
	if (!key)
		return -errno;
	if (sodium_memcmp(key->key_check, kf->h.key_check, sizeof(kf->h.key_check)) != 0) {
		ic_key_free(key);
		return ic_fail(IC_EKEY, "key file damaged: key check mismatch");
	}
	*out = key;
	return 0;
}

/* The key holds exactly the generations of kf (it was unlocked from it); sodium is ready. */
int ic_key_matches(const struct ic_keyfile *kf, const struct ic_key *key)
{
	int ret = ic_sodium_ready();

	if (ret < 0)
		return ret;
	if (memcmp(key->chain_id, kf->h.chain_id, sizeof(kf->h.chain_id)) ||
	    sodium_memcmp(key->key_check, kf->h.key_check, sizeof(kf->h.key_check)) ||
	    key->ngen != ic_keyfile_gen(kf) + 1)
		return ic_fail(IC_EKEY, "the key does not belong to this key file");
	return 0;
}

int ic_keyfile_revoke(struct ic_keyfile *kf, const struct ic_key *key, int keep,
		      const char *pass, size_t passlen, struct ic_key **out, unsigned *dropped)
{
	uint32_t gen = ic_keyfile_gen(kf);
	struct ic_keyfile next;
	struct icf_key_slot old;
	uint8_t *masters, ad[28];
	struct ic_key *nkey;
	int ret;

	ret = ic_key_matches(kf, key);
	if (ret < 0)
		return ret;
	if (keep < 0 || (unsigned)keep >= ICF_KEY_SLOTS || !kf->h.slots[keep].used)
		return ic_fail(-EINVAL, "key slot %d is not in use", keep);
	if (gen >= ICF_KEY_GEN_MAX)
		return ic_fail(-ENOSPC, "the key file holds %u key generations, the most it can: start a new chain",
			       gen + 1);
	masters = sodium_malloc((size_t)(gen + 2) * ICF_KEY_LEN);
	if (!masters)
		return ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
	for (uint32_t g = 0; g <= gen; g++)
		memcpy(masters + (size_t)g * ICF_KEY_LEN, key->gen[g].master, ICF_KEY_LEN);
	randombytes_buf(masters + (size_t)(gen + 1) * ICF_KEY_LEN, ICF_KEY_LEN);

	next = *kf;
	next.h.version = ICF_KEYFILE_V2;
	next.h.reserved0 = gen + 1;
	randombytes_buf(next.gens[gen].nonce, sizeof(next.gens[gen].nonce));
	ic_gen_ad(ad, next.h.chain_id, gen + 1);
	if (crypto_aead_xchacha20poly1305_ietf_encrypt(
		    next.gens[gen].wrapped, NULL, masters + (size_t)gen * ICF_KEY_LEN, ICF_KEY_LEN,
		    ad, sizeof(ad), NULL, next.gens[gen].nonce,
		    masters + (size_t)(gen + 1) * ICF_KEY_LEN) != 0) {
		ret = ic_fail(-EIO, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
		goto out;
	}
	old = kf->h.slots[keep];
	*dropped = 0;
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		if (kf->h.slots[i].used && i != (unsigned)keep)
			*dropped |= 1u << i;
		sodium_memzero(&next.h.slots[i], sizeof(next.h.slots[i]));
	}
	ret = ic_slot_fill(&next, (unsigned)keep, masters + (size_t)(gen + 1) * ICF_KEY_LEN, pass,
			   passlen, old.opslimit, old.memlimit);
	if (ret < 0)
		goto out;
	nkey = ic_key_build(masters, gen + 2, next.h.chain_id);
	if (!nkey) {
		ret = -errno;
		goto out;
	}
	*kf = next;
	*out = nkey;
	ret = 0;
out:
	sodium_memzero(&next, sizeof(next));
	sodium_free(masters);
	return ret;
}

int ic_keyfile_create(const uint8_t chain_id[ICF_ID_LEN], const char *pass, size_t passlen,
		      struct ic_keyfile *kf, struct ic_key **out)
{
	uint64_t opslimit, memlimit;
	struct ic_key *key;
	uint8_t *master;
	int ret;

	ret = ic_sodium_ready();
	if (ret < 0)
		return ret;
	master = sodium_malloc(ICF_KEY_LEN);
	if (!master)
		return ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
	randombytes_buf(master, ICF_KEY_LEN);
	key = ic_key_from_master(master, chain_id);
	sodium_free(master);
	if (!key)
		return -errno;

	memset(kf, 0, sizeof(*kf));
	memcpy(kf->h.magic, ICF_KEY_MAGIC, sizeof(kf->h.magic));
	kf->h.version = ICF_KEYFILE_V1;
	memcpy(kf->h.chain_id, chain_id, sizeof(kf->h.chain_id));
	memcpy(kf->h.key_check, key->key_check, sizeof(kf->h.key_check));
	ic_kdf_defaults(&opslimit, &memlimit);
	ret = ic_keyfile_add_slot(kf, key, pass, passlen, opslimit, memlimit);
	if (ret < 0) {
		ic_key_free(key);
		return ret;
	}
	*out = key;
	return 0;
}
