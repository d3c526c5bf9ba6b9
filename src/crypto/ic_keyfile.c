/* ic_keyfile.c: the key file: its codec (one decoder bounding every field), its I/O, and
 * its passphrase-wrapped slots (unlock, add, remove).  Keys and generations: ic_keys.c. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_keys.h"
#include "ic_keys_int.h"
#include "ic_mem.h"
#include "ic_util.h"

/* Additional data of a slot's wrapping: magic, chain id, slot index, KDF parameters, salt. */
#define IC_SLOT_AD_LEN (8 + ICF_ID_LEN + 4 + 4 + 8 + 8 + ICF_SALT_LEN)

_Static_assert(sizeof(((struct icf_key_slot *)0)->salt) == crypto_pwhash_SALTBYTES, "salt");
_Static_assert(sizeof(((struct icf_key_slot *)0)->nonce) ==
	       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce");
_Static_assert(sizeof(((struct icf_key_slot *)0)->wrapped) ==
	       ICF_KEY_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES, "wrapped");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32, "kek");

/* ---- key file encoding ----------------------------------------------------- */

static void ic_slot_swap(struct icf_key_slot *d, const struct icf_key_slot *s)
{
	*d = *s;
	d->used = ic_le32(s->used);
	d->alg = ic_le32(s->alg);
	d->opslimit = ic_le64(s->opslimit);
	d->memlimit = ic_le64(s->memlimit);
}

/* Convert the head between host and disk order (the conversion is its own inverse). */
static void ic_keyfile_swap(struct icf_keyfile *d, const struct icf_keyfile *s)
{
	*d = *s;
	d->version = ic_le32(s->version);
	d->reserved0 = ic_le32(s->reserved0);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		ic_slot_swap(&d->slots[i], &s->slots[i]);
	d->file_hash = ic_le64(s->file_hash);
}

#define IC_KF_HEAD offsetof(struct icf_keyfile, file_hash)   /* 1112: bytes before the hash */

size_t ic_keyfile_size(const struct ic_keyfile *kf)
{
	return sizeof(struct icf_keyfile) + ic_keyfile_gen(kf) * sizeof(struct icf_key_gen);
}

size_t ic_keyfile_encode(const struct ic_keyfile *kf, void *buf)
{
	size_t gbytes = ic_keyfile_gen(kf) * sizeof(struct icf_key_gen);
	struct icf_keyfile disk;
	uint8_t *b = buf;
	uint64_t hash;

	ic_keyfile_swap(&disk, &kf->h);
	memcpy(b, &disk, IC_KF_HEAD);
	memcpy(b + IC_KF_HEAD, kf->gens, gbytes);
	hash = ic_le64(XXH3_64bits(b, IC_KF_HEAD + gbytes));
	memcpy(b + IC_KF_HEAD + gbytes, &hash, 8);
	return IC_KF_HEAD + gbytes + 8;
}

/* Bounds of a used slot; shared by decode and unlock (which must never run the KDF
 * on a hostile cost). */
static int ic_slot_check(const struct icf_key_slot *s, unsigned n, const char *path)
{
	const char *sep = path ? ": " : "";

	if (!path)
		path = "";
	if (s->alg != crypto_pwhash_ALG_ARGON2ID13)
		return ic_fail(IC_ECORRUPT, "%s%skey slot %u: unknown KDF algorithm %u", path, sep,
			       n, s->alg);
	if (s->opslimit < crypto_pwhash_OPSLIMIT_MIN || s->opslimit > ICF_KDF_OPSLIMIT_MAX)
		return ic_fail(IC_ECORRUPT,
			       "%s%skey slot %u: KDF opslimit %llu out of range [%llu, %llu]",
			       path, sep, n, (unsigned long long)s->opslimit,
			       (unsigned long long)crypto_pwhash_OPSLIMIT_MIN,
			       (unsigned long long)ICF_KDF_OPSLIMIT_MAX);
	if (s->memlimit < crypto_pwhash_MEMLIMIT_MIN || s->memlimit > ICF_KDF_MEMLIMIT_MAX)
		return ic_fail(IC_ECORRUPT,
			       "%s%skey slot %u: KDF memlimit %llu out of range [%llu, %llu]",
			       path, sep, n, (unsigned long long)s->memlimit,
			       (unsigned long long)crypto_pwhash_MEMLIMIT_MIN,
			       (unsigned long long)ICF_KDF_MEMLIMIT_MAX);
	return 0;
}

static int ic_keyfile_check_slots(const struct icf_keyfile *kf, const char *path)
{
	unsigned used = 0;
	int ret;

	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		const struct icf_key_slot *s = &kf->slots[i];

		if (s->used == 0) {
			if (!ic_is_zero(s, sizeof(*s)))
				return ic_fail(IC_ECORRUPT, "%s: key slot %u: empty but not zeroed",
					       path, i);
			continue;
		}
		if (s->used != 1)
			return ic_fail(IC_ECORRUPT, "%s: key slot %u: bad in-use flag %u", path, i,
				       s->used);
		ret = ic_slot_check(s, i, path);
		if (ret < 0)
			return ret;
		used++;
	}
	if (!used)
		return ic_fail(IC_ECORRUPT, "%s: no key slot in use", path);
	return 0;
}

int ic_keyfile_decode(const void *buf, size_t len, struct ic_keyfile *kf, const char *path)
{
	const uint8_t *b = buf;
	struct icf_keyfile disk;
	uint32_t version, gen = 0;
	uint64_t hash, stored;
	size_t want;

	if (len < sizeof(disk))
		return ic_fail(IC_ECORRUPT, "%s: truncated key file (%zu of %zu bytes)", path, len,
			       sizeof(disk));
	memcpy(&disk, buf, sizeof(disk));
	if (memcmp(disk.magic, ICF_KEY_MAGIC, sizeof(disk.magic)))
		return ic_fail(IC_ECORRUPT, "%s: not an imgchain key file (bad magic)", path);
	version = ic_le32(disk.version);
	if (version != ICF_KEYFILE_V1 && version != ICF_KEYFILE_V2)
		return ic_fail(IC_ECORRUPT, "%s: unsupported key file version %u", path, version);
	if (version == ICF_KEYFILE_V2) {
		gen = ic_le32(disk.reserved0);
		if (gen < 1 || gen > ICF_KEY_GEN_MAX)
			return ic_fail(IC_ECORRUPT, "%s: key generation %u out of range [1, %u]",
				       path, gen, ICF_KEY_GEN_MAX);
	}
	want = sizeof(disk) + (size_t)gen * sizeof(struct icf_key_gen);
	if (len != want)
		return ic_fail(IC_ECORRUPT, "%s: bad key file size %zu (expected %zu)", path, len,
			       want);
	hash = XXH3_64bits(b, len - 8);
	memcpy(&stored, b + len - 8, 8);
	if (hash != ic_le64(stored))
		return ic_fail(IC_ECORRUPT, "%s: bad checksum (file damaged)", path);
	disk.file_hash = stored;
	ic_keyfile_swap(&kf->h, &disk);
	memcpy(kf->gens, b + IC_KF_HEAD, (size_t)gen * sizeof(struct icf_key_gen));
	return ic_keyfile_check_slots(&kf->h, path);
}

/* ---- slots ----------------------------------------------------------------- */

/* Additional data of a slot's wrapping; version 2 appends the generation it wraps. */
static size_t ic_slot_ad(uint8_t ad[IC_SLOT_AD_LEN + 4], const struct ic_keyfile *kf,
			 const struct icf_key_slot *s, unsigned n)
{
	uint32_t le32;
	uint64_t le64;
	uint8_t *p = ad;

	memcpy(p, ICF_KEY_MAGIC, 8);
	p += 8;
	memcpy(p, kf->h.chain_id, ICF_ID_LEN);
	p += ICF_ID_LEN;
	le32 = ic_le32(n);
	memcpy(p, &le32, 4);
	p += 4;
	le32 = ic_le32(s->alg);
	memcpy(p, &le32, 4);
	p += 4;
	le64 = ic_le64(s->opslimit);
	memcpy(p, &le64, 8);
	p += 8;
	le64 = ic_le64(s->memlimit);
	memcpy(p, &le64, 8);
	p += 8;
	memcpy(p, s->salt, ICF_SALT_LEN);
	p += ICF_SALT_LEN;
	if (kf->h.version == ICF_KEYFILE_V2) {
		le32 = ic_le32(ic_keyfile_gen(kf));
		memcpy(p, &le32, 4);
		p += 4;
	}
	return (size_t)(p - ad);
}

/* The slot's key-encryption key, Argon2id of the passphrase, into sodium memory. */
static int ic_slot_kek(const struct icf_key_slot *s, const char *pass, size_t passlen,
		       uint8_t **kek_out)
{
	uint8_t *kek = sodium_malloc(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);

	if (!kek)
		return ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
	if (crypto_pwhash(kek, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, pass, passlen,
			  s->salt, s->opslimit, (size_t)s->memlimit, (int)s->alg) != 0) {
		sodium_free(kek);
		return ic_fail(-ENOMEM, "crypto_pwhash failed (Argon2id with %llu MiB: out of memory?)",
			       (unsigned long long)(s->memlimit >> 20));
	}
	*kek_out = kek;
	return 0;
}

/* Unwrap slot n into master (sodium memory).  1 if it opened, 0 if not, <0 on error. */
static int ic_slot_open(const struct ic_keyfile *kf, unsigned n, const char *pass,
			size_t passlen, uint8_t *master)
{
	const struct icf_key_slot *s = &kf->h.slots[n];
	uint8_t ad[IC_SLOT_AD_LEN + 4];
	unsigned long long mlen;
	size_t adlen;
	uint8_t *kek;
	int ret;

	ret = ic_slot_check(s, n, NULL);
	if (ret < 0)
		return ret;
	ret = ic_slot_kek(s, pass, passlen, &kek);
	if (ret < 0)
		return ret;
	adlen = ic_slot_ad(ad, kf, s, n);
	ret = crypto_aead_xchacha20poly1305_ietf_decrypt(master, &mlen, NULL, s->wrapped,
							 sizeof(s->wrapped), ad, adlen,
							 s->nonce, kek);
	sodium_free(kek);
	return ret == 0 && mlen == ICF_KEY_LEN;
}

static bool ic_slot_over_cap(const struct icf_key_slot *s, uint64_t ops, uint64_t mem)
{
	return s->opslimit > ops || s->memlimit > mem;
}

int ic_keyfile_unlock(const struct ic_keyfile *kf, const char *pass, size_t passlen,
		      struct ic_key **out, int *slot_out)
{
	uint32_t gen = ic_keyfile_gen(kf);
	uint64_t cap_ops, cap_mem;
	char skipped[256] = "";
	unsigned tried = 0, nskipped = 0;
	size_t sk = 0;
	uint8_t *masters;
	int ret;

	ret = ic_sodium_ready();
	if (ret < 0)
		return ret;
	ret = ic_kdf_cap(&cap_ops, &cap_mem);
	if (ret < 0)
		return ret;
	if (gen > ICF_KEY_GEN_MAX)
		return ic_fail(IC_ECORRUPT, "key generation %u out of range", gen);
	masters = sodium_malloc((size_t)(gen + 1) * ICF_KEY_LEN);
	if (!masters)
		return ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
	/* a cost imgchain never writes is refused before the KDF runs: a key file with
	 * eight such slots must not cost minutes and GiBs per wrong passphrase */
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		if (!kf->h.slots[i].used || !ic_slot_over_cap(&kf->h.slots[i], cap_ops, cap_mem))
			continue;
		nskipped++;
		sk += (size_t)snprintf(skipped + sk, sizeof(skipped) - sk, "%s%u", sk ? ", " : "",
				       i);
	}
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		const struct icf_key_slot *s = &kf->h.slots[i];
		int opened;

		if (!s->used || ic_slot_over_cap(s, cap_ops, cap_mem))
			continue;
		tried++;
		opened = ic_slot_open(kf, i, pass, passlen, masters + (size_t)gen * ICF_KEY_LEN);
		if (opened < 0) {
			ret = opened;
			goto out_free;
		}
		if (opened) {
			ret = ic_keyfile_finish_unlock(kf, masters, out);
			if (!ret && slot_out)
				*slot_out = (int)i;
			if (!ret && nskipped)
				ic_msg("warning: key slot(s) %s not tried: KDF cost above the cap (opslimit %llu, memlimit %llu MiB; IMGCHAIN_KDF_MAX)",
				       skipped, (unsigned long long)cap_ops,
				       (unsigned long long)(cap_mem >> 20));
			goto out_free;
		}
	}
	if (!nskipped)
		ret = ic_fail(IC_EKEY, "wrong passphrase (no key slot opens with it)");
	else if (!tried)
		ret = ic_fail(IC_ECORRUPT,
			      "key slot(s) %s refused: KDF cost above what imgchain writes (cap opslimit %llu, memlimit %llu MiB); the KDF was not run; set IMGCHAIN_KDF_MAX=max (or OPSLIMIT:MEMLIMIT_MIB) if you made such a slot",
			      skipped, (unsigned long long)cap_ops,
			      (unsigned long long)(cap_mem >> 20));
	else
		ret = ic_fail(IC_EKEY,
			      "wrong passphrase (no key slot opens with it; slot(s) %s not tried: KDF cost above the cap opslimit %llu, memlimit %llu MiB, see IMGCHAIN_KDF_MAX)",
			      skipped, (unsigned long long)cap_ops,
			      (unsigned long long)(cap_mem >> 20));
out_free:
	sodium_free(masters);
	return ret;
}

static int ic_kdf_check_new(uint64_t opslimit, uint64_t memlimit)
{
	if (opslimit < crypto_pwhash_OPSLIMIT_MIN || opslimit > ICF_KDF_OPSLIMIT_MAX ||
	    memlimit < crypto_pwhash_MEMLIMIT_MIN || memlimit > ICF_KDF_MEMLIMIT_MAX)
		return ic_fail(-EINVAL, "KDF cost opslimit %llu, memlimit %llu outside the key file's bounds",
			       (unsigned long long)opslimit, (unsigned long long)memlimit);
	return 0;
}

int ic_slot_fill(struct ic_keyfile *kf, unsigned n, const uint8_t *master, const char *pass,
		 size_t passlen, uint64_t opslimit, uint64_t memlimit)
{
	struct icf_key_slot s;
	uint8_t ad[IC_SLOT_AD_LEN + 4];
	size_t adlen;
	uint8_t *kek;
	int ret;

	memset(&s, 0, sizeof(s));
	s.used = 1;
	s.alg = crypto_pwhash_ALG_ARGON2ID13;
	s.opslimit = opslimit;
	s.memlimit = memlimit;
	randombytes_buf(s.salt, sizeof(s.salt));
	randombytes_buf(s.nonce, sizeof(s.nonce));
	ret = ic_slot_kek(&s, pass, passlen, &kek);
	if (ret < 0)
		return ret;
	adlen = ic_slot_ad(ad, kf, &s, n);
	ret = crypto_aead_xchacha20poly1305_ietf_encrypt(s.wrapped, NULL, master, ICF_KEY_LEN,
							 ad, adlen, NULL, s.nonce, kek);
	sodium_free(kek);
	if (ret != 0)
		return ic_fail(-EIO, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
	kf->h.slots[n] = s;
	return 0;
}

int ic_keyfile_add_slot(struct ic_keyfile *kf, const struct ic_key *key, const char *pass,
			size_t passlen, uint64_t opslimit, uint64_t memlimit)
{
	int ret;

	ret = ic_key_matches(kf, key);
	if (ret < 0)
		return ret;
	ret = ic_kdf_check_new(opslimit, memlimit);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		if (kf->h.slots[i].used)
			continue;
		ret = ic_slot_fill(kf, i, key->gen[key->ngen - 1].master, pass, passlen,
				   opslimit, memlimit);
		return ret < 0 ? ret : (int)i;
	}
	return ic_fail(-ENOSPC, "all %u key slots are in use: remove one first", ICF_KEY_SLOTS);
}

int ic_keyfile_remove_slot(struct ic_keyfile *kf, int n)
{
	unsigned used = 0;

	if (n < 0 || (unsigned)n >= ICF_KEY_SLOTS)
		return ic_fail(-EINVAL, "no key slot %d (slots are 0..%u)", n, ICF_KEY_SLOTS - 1);
	if (!kf->h.slots[n].used)
		return ic_fail(-ENOENT, "key slot %d is empty", n);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		used += kf->h.slots[i].used != 0;
	if (used < 2)
		return ic_fail(-EBUSY, "key slot %d is the last one: removing it would lose the key",
			       n);
	sodium_memzero(&kf->h.slots[n], sizeof(kf->h.slots[n]));
	return 0;
}
