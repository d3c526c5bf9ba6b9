/* ic_keys.c: master key, subkeys, the key file and its passphrase-wrapped slots. */
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
#include "ic_util.h"

#define IC_KDF_CONTEXT "imgchain"
#define IC_SUBKEY_BLOCK 1
#define IC_SUBKEY_SEAL 2
#define IC_SUBKEY_DIGEST 3
#define IC_SUBKEY_CHECK 4
#define IC_KEYCHK_MAGIC "ICKEYCHK"

/* Additional data of a slot's wrapping: magic, chain id, slot index, KDF parameters, salt. */
#define IC_SLOT_AD_LEN (8 + 16 + 4 + 4 + 8 + 8 + 16)

_Static_assert(ICF_KEY_LEN == crypto_kdf_KEYBYTES, "master key is a crypto_kdf key");
_Static_assert(sizeof(IC_KDF_CONTEXT) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");
_Static_assert(sizeof(((struct icf_key_slot *)0)->salt) == crypto_pwhash_SALTBYTES, "salt");
_Static_assert(sizeof(((struct icf_key_slot *)0)->nonce) ==
	       crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce");
_Static_assert(sizeof(((struct icf_key_slot *)0)->wrapped) ==
	       ICF_KEY_LEN + crypto_aead_xchacha20poly1305_ietf_ABYTES, "wrapped");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32, "kek");

static int ic_sodium_ready(void)
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

static int ic_key_derive(struct ic_key *key)
{
	static const struct {
		uint64_t id;
		size_t off;
	} sub[] = {
		{ IC_SUBKEY_BLOCK, offsetof(struct ic_key, k_block) },
		{ IC_SUBKEY_SEAL, offsetof(struct ic_key, k_seal) },
		{ IC_SUBKEY_DIGEST, offsetof(struct ic_key, k_digest) },
		{ IC_SUBKEY_CHECK, offsetof(struct ic_key, k_check) },
	};
	uint8_t msg[8 + 16];

	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		if (crypto_kdf_derive_from_key((uint8_t *)key + sub[i].off, 32, sub[i].id,
					       IC_KDF_CONTEXT, key->master) != 0)
			return ic_fail(-EIO, "crypto_kdf_derive_from_key failed");
	}
	memcpy(msg, IC_KEYCHK_MAGIC, 8);
	memcpy(msg + 8, key->chain_id, 16);
	if (crypto_generichash(key->key_check, sizeof(key->key_check), msg, sizeof(msg),
			       key->k_check, sizeof(key->k_check)) != 0)
		return ic_fail(-EIO, "crypto_generichash failed");
	return 0;
}

struct ic_key *ic_key_from_master(const uint8_t master[ICF_KEY_LEN], const uint8_t chain_id[16])
{
	struct ic_key *key;

	if (ic_sodium_ready() < 0) {
		errno = EIO;
		return NULL;
	}
	key = sodium_malloc(sizeof(*key));
	if (!key) {
		ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
		errno = ENOMEM;
		return NULL;
	}
	memcpy(key->master, master, ICF_KEY_LEN);
	memcpy(key->chain_id, chain_id, sizeof(key->chain_id));
	if (ic_key_derive(key) < 0) {
		sodium_free(key);
		errno = EIO;
		return NULL;
	}
	/* From here on the key is read-only: a stray write faults instead of corrupting it. */
	sodium_mprotect_readonly(key);
	return key;
}

void ic_key_free(struct ic_key *key)
{
	/* sodium_free() makes the pages writable again and wipes them. */
	sodium_free(key);
}

/* ---- key file encoding ----------------------------------------------------- */

static void ic_slot_swap(struct icf_key_slot *d, const struct icf_key_slot *s)
{
	*d = *s;
	d->used = ic_le32(s->used);
	d->alg = ic_le32(s->alg);
	d->opslimit = ic_le64(s->opslimit);
	d->memlimit = ic_le64(s->memlimit);
}

/* Convert between host and disk order (the conversion is its own inverse). */
static void ic_keyfile_swap(struct icf_keyfile *d, const struct icf_keyfile *s)
{
	*d = *s;
	d->version = ic_le32(s->version);
	d->reserved0 = ic_le32(s->reserved0);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		ic_slot_swap(&d->slots[i], &s->slots[i]);
	d->file_hash = ic_le64(s->file_hash);
}

void ic_keyfile_encode(const struct icf_keyfile *kf, void *buf)
{
	struct icf_keyfile disk;
	uint64_t hash;

	ic_keyfile_swap(&disk, kf);
	hash = XXH3_64bits(&disk, offsetof(struct icf_keyfile, file_hash));
	disk.file_hash = ic_le64(hash);
	memcpy(buf, &disk, sizeof(disk));
}

static bool ic_mem_is_zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
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
			if (!ic_mem_is_zero(s, sizeof(*s)))
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

int ic_keyfile_decode(const void *buf, size_t len, struct icf_keyfile *kf, const char *path)
{
	struct icf_keyfile disk;
	uint64_t hash;

	if (len < sizeof(disk))
		return ic_fail(IC_ECORRUPT, "%s: truncated key file (%zu of %zu bytes)", path, len,
			       sizeof(disk));
	memcpy(&disk, buf, sizeof(disk));
	if (memcmp(disk.magic, ICF_KEY_MAGIC, sizeof(disk.magic)))
		return ic_fail(IC_ECORRUPT, "%s: not an imgchain key file (bad magic)", path);
	if (ic_le32(disk.version) != ICF_VERSION)
		return ic_fail(IC_ECORRUPT, "%s: unsupported key file version %u", path,
			       ic_le32(disk.version));
	if (len != sizeof(disk))
		return ic_fail(IC_ECORRUPT, "%s: bad key file size %zu (expected %zu)", path, len,
			       sizeof(disk));
	hash = XXH3_64bits(&disk, offsetof(struct icf_keyfile, file_hash));
	if (hash != ic_le64(disk.file_hash))
		return ic_fail(IC_ECORRUPT, "%s: bad checksum (file damaged)", path);
	ic_keyfile_swap(kf, &disk);
	return ic_keyfile_check_slots(kf, path);
}

/* ---- key file I/O ---------------------------------------------------------- */

/* Read at most len bytes; a longer file is reported by decode as a bad size. */
static ssize_t ic_read_upto(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int ic_keyfile_load(const char *chain_dir, struct icf_keyfile *kf)
{
	uint8_t buf[sizeof(struct icf_keyfile) + 1];
	char *path = ic_path_join(chain_dir, ICF_KEYFILE_NAME);
	struct stat st;
	ssize_t n;
	int fd, ret;

	ret = ic_open_regular(AT_FDCWD, chain_dir, ICF_KEYFILE_NAME, O_RDONLY, 0, &fd);
	if (ret) {
		if (ret == -ENOENT)
			ret = ic_fail(ret, "%s: no key file (is %s an imgchain chain?)", path,
				      chain_dir);
		goto out_free_path;
	}
	if (fstat(fd, &st) < 0) {
		ret = ic_fail(-errno, "%s: stat: %s", path, strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = ic_fail(IC_ECORRUPT, "%s: not a regular file", path);
		goto out_close;
	}
	n = ic_read_upto(fd, buf, sizeof(buf));
	if (n < 0) {
		ret = ic_fail((int)n, "%s: read: %s", path, strerror((int)-n));
		goto out_close;
	}
	ret = ic_keyfile_decode(buf, (size_t)n, kf, path);
out_close:
	close(fd);
out_free_path:
	free(path);
	return ret;
}

int ic_keyfile_store(const char *chain_dir, const struct icf_keyfile *kf)
{
	uint8_t buf[sizeof(struct icf_keyfile)];

	ic_keyfile_encode(kf, buf);
	return ic_write_file_atomic(chain_dir, ICF_KEYFILE_NAME, buf, sizeof(buf), 0600);
}

/* ---- slots ----------------------------------------------------------------- */

static void ic_slot_ad(uint8_t ad[IC_SLOT_AD_LEN], const struct icf_keyfile *kf,
		       const struct icf_key_slot *s, unsigned n)
{
	uint32_t le32;
	uint64_t le64;
	uint8_t *p = ad;

	memcpy(p, ICF_KEY_MAGIC, 8);
	p += 8;
	memcpy(p, kf->chain_id, 16);
	p += 16;
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
	memcpy(p, s->salt, 16);
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
static int ic_slot_open(const struct icf_keyfile *kf, unsigned n, const char *pass,
			size_t passlen, uint8_t *master)
{
	const struct icf_key_slot *s = &kf->slots[n];
	uint8_t ad[IC_SLOT_AD_LEN];
	unsigned long long mlen;
	uint8_t *kek;
	int ret;

	ret = ic_slot_check(s, n, NULL);
	if (ret < 0)
		return ret;
	ret = ic_slot_kek(s, pass, passlen, &kek);
	if (ret < 0)
		return ret;
	ic_slot_ad(ad, kf, s, n);
	ret = crypto_aead_xchacha20poly1305_ietf_decrypt(master, &mlen, NULL, s->wrapped,
							 sizeof(s->wrapped), ad, sizeof(ad),
							 s->nonce, kek);
	sodium_free(kek);
	return ret == 0 && mlen == ICF_KEY_LEN;
}

static int ic_keyfile_finish_unlock(const struct icf_keyfile *kf, const uint8_t *master,
				    struct ic_key **out)
{
	struct ic_key *key = ic_key_from_master(master, kf->chain_id);

	if (!key)
		return -errno;
	if (sodium_memcmp(key->key_check, kf->key_check, sizeof(kf->key_check)) != 0) {
		ic_key_free(key);
		return ic_fail(IC_EKEY, "key file damaged: key check mismatch");
	}
	*out = key;
	return 0;
}

int ic_keyfile_unlock(const struct icf_keyfile *kf, const char *pass, size_t passlen,
		      struct ic_key **out, int *slot_out)
{
	uint8_t *master;
	int ret;

	ret = ic_sodium_ready();
	if (ret < 0)
		return ret;
	master = sodium_malloc(ICF_KEY_LEN);
	if (!master)
		return ic_fail(-ENOMEM, "sodium_malloc: out of memory for a key");
	ret = IC_EKEY;
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		int opened;

		if (!kf->slots[i].used)
			continue;
		opened = ic_slot_open(kf, i, pass, passlen, master);
		if (opened < 0) {
			ret = opened;
			goto out_free_master;
		}
		if (opened) {
			ret = ic_keyfile_finish_unlock(kf, master, out);
			if (!ret && slot_out)
				*slot_out = (int)i;
			goto out_free_master;
		}
	}
	ret = ic_fail(IC_EKEY, "wrong passphrase (no key slot opens with it)");
out_free_master:
	sodium_free(master);
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

static int ic_slot_fill(struct icf_keyfile *kf, unsigned n, const struct ic_key *key,
			const char *pass, size_t passlen, uint64_t opslimit, uint64_t memlimit)
{
	struct icf_key_slot s;
	uint8_t ad[IC_SLOT_AD_LEN];
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
	ic_slot_ad(ad, kf, &s, n);
	ret = crypto_aead_xchacha20poly1305_ietf_encrypt(s.wrapped, NULL, key->master,
							 ICF_KEY_LEN, ad, sizeof(ad), NULL,
							 s.nonce, kek);
	sodium_free(kek);
	if (ret != 0)
		return ic_fail(-EIO, "crypto_aead_xchacha20poly1305_ietf_encrypt failed");
	kf->slots[n] = s;
	return 0;
}

int ic_keyfile_add_slot(struct icf_keyfile *kf, const struct ic_key *key, const char *pass,
			size_t passlen, uint64_t opslimit, uint64_t memlimit)
{
	int ret;

	ret = ic_sodium_ready();
	if (ret < 0)
		return ret;
	if (memcmp(key->chain_id, kf->chain_id, sizeof(kf->chain_id)) ||
	    sodium_memcmp(key->key_check, kf->key_check, sizeof(kf->key_check)))
		return ic_fail(IC_EKEY, "the key does not belong to this key file");
	ret = ic_kdf_check_new(opslimit, memlimit);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++) {
		if (kf->slots[i].used)
			continue;
		ret = ic_slot_fill(kf, i, key, pass, passlen, opslimit, memlimit);
		return ret < 0 ? ret : (int)i;
	}
	return ic_fail(-ENOSPC, "all %u key slots are in use: remove one first", ICF_KEY_SLOTS);
}

int ic_keyfile_remove_slot(struct icf_keyfile *kf, int n)
{
	unsigned used = 0;

	if (n < 0 || (unsigned)n >= ICF_KEY_SLOTS)
		return ic_fail(-EINVAL, "no key slot %d (slots are 0..%u)", n, ICF_KEY_SLOTS - 1);
	if (!kf->slots[n].used)
		return ic_fail(-ENOENT, "key slot %d is empty", n);
	for (unsigned i = 0; i < ICF_KEY_SLOTS; i++)
		used += kf->slots[i].used != 0;
	if (used < 2)
		return ic_fail(-EBUSY, "key slot %d is the last one: removing it would lose the key",
			       n);
	sodium_memzero(&kf->slots[n], sizeof(kf->slots[n]));
	return 0;
}

int ic_keyfile_create(const uint8_t chain_id[16], const char *pass, size_t passlen,
		      struct icf_keyfile *kf, struct ic_key **out)
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
	memcpy(kf->magic, ICF_KEY_MAGIC, sizeof(kf->magic));
	kf->version = ICF_VERSION;
	memcpy(kf->chain_id, chain_id, sizeof(kf->chain_id));
	memcpy(kf->key_check, key->key_check, sizeof(kf->key_check));
	ic_kdf_defaults(&opslimit, &memlimit);
	ret = ic_keyfile_add_slot(kf, key, pass, passlen, opslimit, memlimit);
	if (ret < 0) {
		ic_key_free(key);
		return ret;
	}
	*out = key;
	return 0;
}

/* ---- the whole unlock ------------------------------------------------------ */

/* Prefix the current message (which ic_fail() is about to overwrite) with path. */
static int ic_fail_prefixed(int err, const char *path)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", ic_last_error(err));
	return ic_fail(err, "%s: %s", path, msg);
}

int ic_key_unlock_keyfile(const char *chain_dir, const char *passphrase_file,
			  struct icf_keyfile *kf, struct ic_key **out, int *slot_out)
{
	char *path, *pass, prompt[512];
	size_t passlen;
	int ret;

	ret = ic_keyfile_load(chain_dir, kf);
	if (ret < 0)
		return ret;
	snprintf(prompt, sizeof(prompt), "Passphrase for %s: ", chain_dir);
	ret = ic_passphrase_get(passphrase_file, false, prompt, &pass, &passlen);
	if (ret < 0)
		return ret;
	ret = ic_keyfile_unlock(kf, pass, passlen, out, slot_out);
	ic_passphrase_free(pass);
	if (ret < 0) {
		path = ic_path_join(chain_dir, ICF_KEYFILE_NAME);
		ret = ic_fail_prefixed(ret, path);
		free(path);
	}
	return ret;
}

int ic_key_unlock(const char *chain_dir, const char *passphrase_file, struct ic_key **out)
{
	struct icf_keyfile kf;

	return ic_key_unlock_keyfile(chain_dir, passphrase_file, &kf, out, NULL);
}
