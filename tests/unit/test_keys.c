/* test_keys.c: key derivation, the key file codec, passphrase slots and passphrase sources. */
#include "config.h"

#include <fcntl.h>
#include <stddef.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_keys.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"
#include "unit.h"

#define PASS1 "correct horse battery staple"
#define PASS2 "tr0ub4dor&3"

static const uint8_t chain_a[ICF_ID_LEN] = { 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
				     0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0 };
static const uint8_t chain_b[ICF_ID_LEN] = { 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8,
				     0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0 };

/* One real key file (one Argon2id run), shared by the tests that need one. */
static struct ic_keyfile fixture_kf;
static struct ic_key *fixture_key;

static bool msg_has(int err, const char *needle)
{
	const char *m = ic_last_error(err);

	if (strstr(m, needle))
		return true;
	fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", m, needle);
	return false;
}

static void write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char *p = ic_path_join(dir, name);
	FILE *f = fopen(p, "wb");

	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(p);
		exit(1);
	}
	free(p);
}

static int try_unlock(const struct ic_keyfile *kf, const char *pass, int *slot)
{
	struct ic_key *key = NULL;
	int ret = ic_keyfile_unlock(kf, pass, strlen(pass), &key, slot);

	if (!ret) {
		CHECK(!memcmp(key->master, fixture_key->master, ICF_KEY_LEN));
		ic_key_free(key);
	}
	return ret;
}

/* A structurally valid key file with no real wrapping: decode tests need no KDF. */
static void fake_keyfile(struct ic_keyfile *kf)
{
	memset(kf, 0, sizeof(*kf));
	memcpy(kf->h.magic, ICF_KEY_MAGIC, 8);
	kf->h.version = ICF_KEYFILE_V1;
	memcpy(kf->h.chain_id, chain_a, ICF_ID_LEN);
	memset(kf->h.key_check, 0x5a, ICF_CHECK_LEN);
	kf->h.slots[2].used = 1;
	kf->h.slots[2].alg = crypto_pwhash_ALG_ARGON2ID13;
	kf->h.slots[2].opslimit = 2;
	kf->h.slots[2].memlimit = 64u << 20;
	memset(kf->h.slots[2].salt, 0x11, ICF_SALT_LEN);
	memset(kf->h.slots[2].nonce, 0x22, 24);
	memset(kf->h.slots[2].wrapped, 0x33, 48);
}

static void test_derivation(void)
{
	uint8_t master[ICF_KEY_LEN], sub[ICF_KEY_LEN], msg[24], check[ICF_CHECK_LEN];
	struct ic_key *a, *a2, *b;

	for (unsigned i = 0; i < ICF_KEY_LEN; i++)
		master[i] = (uint8_t)i;
	a = ic_key_from_master(master, chain_a);
	a2 = ic_key_from_master(master, chain_a);
	b = ic_key_from_master(master, chain_b);
	CHECK(a && a2 && b);
	if (!a || !a2 || !b)
		return;
	CHECK(!memcmp(a, a2, sizeof(*a)));
	CHECK(memcmp(a->key_check, b->key_check, ICF_CHECK_LEN));
	CHECK(!memcmp(a->k_block, b->k_block, ICF_KEY_LEN)); /* subkeys depend on the master only */
	CHECK(memcmp(a->k_block, a->k_seal, ICF_KEY_LEN));
	CHECK(memcmp(a->k_seal, a->k_digest, ICF_KEY_LEN));
	CHECK(memcmp(a->k_digest, a->k_check, ICF_KEY_LEN));
	CHECK(memcmp(a->k_block, a->master, ICF_KEY_LEN));

	/* the documented derivation, recomputed from libsodium directly */
	crypto_kdf_derive_from_key(sub, ICF_KEY_LEN, 1, "imgchain", master);
	CHECK(!memcmp(sub, a->k_block, ICF_KEY_LEN));
	crypto_kdf_derive_from_key(sub, ICF_KEY_LEN, 2, "imgchain", master);
	CHECK(!memcmp(sub, a->k_seal, ICF_KEY_LEN));
	crypto_kdf_derive_from_key(sub, ICF_KEY_LEN, 3, "imgchain", master);
	CHECK(!memcmp(sub, a->k_digest, ICF_KEY_LEN));
	crypto_kdf_derive_from_key(sub, ICF_KEY_LEN, 4, "imgchain", master);
	CHECK(!memcmp(sub, a->k_check, ICF_KEY_LEN));
	memcpy(msg, "ICKEYCHK", 8);
	memcpy(msg + 8, chain_a, ICF_ID_LEN);
	crypto_generichash(check, ICF_CHECK_LEN, msg, sizeof(msg), sub, ICF_KEY_LEN);
	CHECK(!memcmp(check, a->key_check, ICF_CHECK_LEN));

	ic_key_free(a);
	ic_key_free(a2);
	ic_key_free(b);
	ic_key_free(NULL);
}

static void test_kdf_defaults(void)
{
	uint64_t ops, mem;

	unsetenv("IMGCHAIN_KDF");
	ic_kdf_defaults(&ops, &mem);
	CHECK_EQ(ops, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	CHECK_EQ(mem, crypto_pwhash_MEMLIMIT_INTERACTIVE);
	setenv("IMGCHAIN_KDF", "moderate", 1);
	ic_kdf_defaults(&ops, &mem);
	CHECK_EQ(ops, crypto_pwhash_OPSLIMIT_MODERATE);
	CHECK_EQ(mem, crypto_pwhash_MEMLIMIT_MODERATE);
	setenv("IMGCHAIN_KDF", "sensitive", 1);
	ic_kdf_defaults(&ops, &mem);
	CHECK_EQ(ops, crypto_pwhash_OPSLIMIT_SENSITIVE);
	CHECK_EQ(mem, crypto_pwhash_MEMLIMIT_SENSITIVE);
	CHECK(ops <= ICF_KDF_OPSLIMIT_MAX && mem <= ICF_KDF_MEMLIMIT_MAX);
	setenv("IMGCHAIN_KDF", "interactive", 1);
	ic_kdf_defaults(&ops, &mem);
	CHECK_EQ(ops, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	unsetenv("IMGCHAIN_KDF");
}

static void test_roundtrip(void)
{
	uint8_t buf[sizeof(struct icf_keyfile)];
	struct ic_keyfile kf, loaded;
	char *dir = unit_tmpdir(), *path;
	struct stat st;
	int slot = -1;

	kf = fixture_kf;
	CHECK_EQ(kf.h.slots[0].used, 1);
	CHECK_EQ(kf.h.slots[0].alg, crypto_pwhash_ALG_ARGON2ID13);
	CHECK_EQ(kf.h.slots[0].opslimit, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	CHECK(!memcmp(kf.h.key_check, fixture_key->key_check, ICF_CHECK_LEN));
	CHECK(!memcmp(kf.h.chain_id, chain_a, ICF_ID_LEN));
	for (unsigned i = 1; i < ICF_KEY_SLOTS; i++)
		CHECK_EQ(kf.h.slots[i].used, 0);

	ic_keyfile_encode(&kf, buf);
	CHECK(!memcmp(buf, ICF_KEY_MAGIC, 8));
	CHECK_EQ(ic_keyfile_decode(buf, sizeof(buf), &loaded, "mem"), 0);
	CHECK(!memcmp(&loaded, &kf, offsetof(struct icf_keyfile, file_hash)));

	CHECK_EQ(ic_keyfile_load(dir, &loaded), -ENOENT);
	CHECK_EQ(ic_keyfile_store(dir, &kf), 0);
	CHECK_EQ(ic_keyfile_load(dir, &loaded), 0);
	CHECK(!memcmp(&loaded, &kf, offsetof(struct icf_keyfile, file_hash)));
	path = ic_path_join(dir, ICF_KEYFILE_NAME);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 &&
	      st.st_size == sizeof(struct icf_keyfile));
	free(path);

	CHECK_EQ(try_unlock(&loaded, PASS1, &slot), 0);
	CHECK_EQ(slot, 0);
	unit_rmtree(dir);
}

static void test_wrong_passphrase(void)
{
	int ret = try_unlock(&fixture_kf, "not it", NULL);

	CHECK_EQ(ret, IC_EKEY);
	CHECK(msg_has(ret, "wrong passphrase"));
}

static void test_slots(void)
{
	struct ic_keyfile kf = fixture_kf, full;
	uint64_t ops, mem;
	int slot = -1;

	ic_kdf_defaults(&ops, &mem);
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), ops, mem), 1);
	CHECK(memcmp(kf.h.slots[0].salt, kf.h.slots[1].salt, ICF_SALT_LEN));
	CHECK_EQ(try_unlock(&kf, PASS2, &slot), 0);
	CHECK_EQ(slot, 1);
	CHECK_EQ(try_unlock(&kf, PASS1, &slot), 0);
	CHECK_EQ(slot, 0);

	/* caps apply to new slots too, so that the file stays readable */
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), 65, mem), -EINVAL);
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), ops, 4ull << 30),
		 -EINVAL);

	/* every slot full: no KDF is run, -ENOSPC */
	full = kf;
	for (unsigned i = 2; i < ICF_KEY_SLOTS; i++)
		full.h.slots[i] = kf.h.slots[1];
	CHECK_EQ(ic_keyfile_add_slot(&full, fixture_key, PASS2, strlen(PASS2), ops, mem),
		 -ENOSPC);

	CHECK_EQ(ic_keyfile_remove_slot(&kf, -1), -EINVAL);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, ICF_KEY_SLOTS), -EINVAL);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, 5), -ENOENT);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, 0), 0);
	CHECK_EQ(kf.h.slots[0].used, 0);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, 1), -EBUSY);
	CHECK_EQ(try_unlock(&kf, PASS1, NULL), IC_EKEY);
	CHECK_EQ(try_unlock(&kf, PASS2, &slot), 0);
	CHECK_EQ(slot, 1);
	/* the freed slot is reused first */
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS1, strlen(PASS1), ops, mem), 0);
}

/* The wrapping's additional data binds the slot index, the chain id and the KDF cost. */
static void test_binding(void)
{
	struct ic_keyfile kf;
	int ret;

	kf = fixture_kf;
	kf.h.slots[3] = kf.h.slots[0];
	memset(&kf.h.slots[0], 0, sizeof(kf.h.slots[0]));
	CHECK_EQ(try_unlock(&kf, PASS1, NULL), IC_EKEY);

	kf = fixture_kf;
	kf.h.chain_id[0] ^= 1;
	CHECK_EQ(try_unlock(&kf, PASS1, NULL), IC_EKEY);

	kf = fixture_kf;
	kf.h.key_check[15] ^= 0x80;
	ret = try_unlock(&kf, PASS1, NULL);
	CHECK_EQ(ret, IC_EKEY);
	CHECK(msg_has(ret, "key check mismatch"));
}

static void expect_corrupt(const struct ic_keyfile *kf, const char *cause)
{
	uint8_t buf[sizeof(struct icf_keyfile)];
	struct ic_keyfile out;
	int ret;

	ic_keyfile_encode(kf, buf);
	ret = ic_keyfile_decode(buf, sizeof(buf), &out, "/x/imgchain.key");
	CHECK_EQ(ret, IC_ECORRUPT);
	if (ret == IC_ECORRUPT) {
		CHECK(msg_has(ret, "/x/imgchain.key: "));
		CHECK(msg_has(ret, cause));
	}
}

static void test_decode_fields(void)
{
	struct ic_keyfile good, kf;
	uint8_t buf[sizeof(struct icf_keyfile)];

	fake_keyfile(&good);
	ic_keyfile_encode(&good, buf);
	CHECK_EQ(ic_keyfile_decode(buf, sizeof(buf), &kf, "x"), 0);

#define BAD(stmt, cause)                                                                 \
	do {                                                                             \
		kf = good;                                                               \
		stmt;                                                                    \
		expect_corrupt(&kf, cause);                                              \
	} while (0)
	BAD(kf.h.magic[7] = '2', "bad magic");
	BAD(kf.h.version = 3, "version");
	BAD(kf.h.version = ICF_KEYFILE_V2, "key generation 0 out of range");
	BAD(kf.h.slots[2].used = 2, "in-use flag");
	BAD(kf.h.slots[2].used = 0, "not zeroed");
	BAD(memset(&kf.h.slots[2], 0, sizeof(kf.h.slots[2])), "no key slot");
	BAD(kf.h.slots[5].salt[3] = 1, "not zeroed");
	BAD(kf.h.slots[2].alg = crypto_pwhash_ALG_ARGON2I13, "algorithm");
	BAD(kf.h.slots[2].opslimit = 0, "opslimit");
	BAD(kf.h.slots[2].opslimit = ICF_KDF_OPSLIMIT_MAX + 1, "opslimit");
	BAD(kf.h.slots[2].opslimit = UINT64_MAX, "opslimit");
	BAD(kf.h.slots[2].memlimit = crypto_pwhash_MEMLIMIT_MIN - 1, "memlimit");
	BAD(kf.h.slots[2].memlimit = ICF_KDF_MEMLIMIT_MAX + 1, "memlimit");
	BAD(kf.h.slots[2].memlimit = 1ull << 40, "memlimit");
	BAD(kf.h.slots[2].memlimit = UINT64_MAX, "memlimit");
#undef BAD
	/* the bounds themselves are accepted */
	kf = good;
	kf.h.slots[2].opslimit = ICF_KDF_OPSLIMIT_MAX;
	kf.h.slots[2].memlimit = ICF_KDF_MEMLIMIT_MAX;
	ic_keyfile_encode(&kf, buf);
	CHECK_EQ(ic_keyfile_decode(buf, sizeof(buf), &kf, "x"), 0);
}

static void test_decode_bitflips(void)
{
	uint8_t buf[sizeof(struct icf_keyfile)];
	struct ic_keyfile good, kf;
	unsigned bad = 0;

	fake_keyfile(&good);
	ic_keyfile_encode(&good, buf);
	for (size_t bit = 0; bit < sizeof(buf) * 8; bit++) {
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (ic_keyfile_decode(buf, sizeof(buf), &kf, "f") != IC_ECORRUPT)
			bad++;
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(ic_keyfile_decode(buf, sizeof(buf), &kf, "f"), 0);
}

static void test_decode_sizes(void)
{
	uint8_t buf[sizeof(struct icf_keyfile) + 1];
	struct ic_keyfile good, kf;
	unsigned bad = 0;
	int ret;

	fake_keyfile(&good);
	ic_keyfile_encode(&good, buf);
	buf[sizeof(buf) - 1] = 0;
	for (size_t len = 0; len < sizeof(struct icf_keyfile); len++)
		if (ic_keyfile_decode(buf, len, &kf, "f") != IC_ECORRUPT)
			bad++;
	CHECK_EQ(bad, 0);
	ret = ic_keyfile_decode(buf, 100, &kf, "/x/imgchain.key");
	CHECK(msg_has(ret, "/x/imgchain.key: truncated"));
	CHECK_EQ(ic_keyfile_decode(buf, sizeof(buf), &kf, "f"), IC_ECORRUPT);
}

/* A hostile cost in a key file held in memory must be refused before the KDF runs. */
static void test_unlock_caps(void)
{
	struct ic_keyfile kf = fixture_kf;
	struct ic_key *key = NULL;
	double t0 = ic_now();

	kf.h.slots[0].memlimit = 1ull << 40;
	CHECK_EQ(ic_keyfile_unlock(&kf, PASS1, strlen(PASS1), &key, NULL), IC_ECORRUPT);
	kf.h.slots[0].memlimit = fixture_kf.h.slots[0].memlimit;
	kf.h.slots[0].opslimit = 1000000;
	CHECK_EQ(ic_keyfile_unlock(&kf, PASS1, strlen(PASS1), &key, NULL), IC_ECORRUPT);
	CHECK(key == NULL);
	CHECK(ic_now() - t0 < 0.5);	/* one KDF run would take far longer */
}

static void test_key_unlock(void)
{
	uint8_t buf[sizeof(struct icf_keyfile)];
	char *dir = unit_tmpdir(), *path;
	struct ic_keyfile kf;
	struct ic_key *key = NULL;
	int ret, slot = -1;

	path = ic_path_join(dir, ICF_KEYFILE_NAME);
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	setenv("IMGCHAIN_PASSPHRASE", PASS1, 1);
	CHECK_EQ(ic_key_unlock(dir, NULL, &key), -ENOENT);
	CHECK(msg_has(-ENOENT, path));

	CHECK_EQ(ic_keyfile_store(dir, &fixture_kf), 0);
	CHECK_EQ(ic_key_unlock_keyfile(dir, NULL, &kf, &key, &slot, NULL, NULL), 0);
	CHECK_EQ(slot, 0);
	CHECK(!memcmp(&kf, &fixture_kf, offsetof(struct icf_keyfile, file_hash)));
	CHECK(key && !memcmp(key->key_check, fixture_key->key_check, ICF_CHECK_LEN));
	ic_key_free(key);

	setenv("IMGCHAIN_PASSPHRASE", "wrong", 1);
	ret = ic_key_unlock(dir, NULL, &key);
	CHECK_EQ(ret, IC_EKEY);
	CHECK(msg_has(ret, path));
	CHECK(msg_has(ret, ": wrong passphrase"));

	ic_keyfile_encode(&fixture_kf, buf);
	buf[40] ^= 4;
	write_file(dir, ICF_KEYFILE_NAME, buf, sizeof(buf));
	ret = ic_key_unlock(dir, NULL, &key);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(msg_has(ret, path));
	CHECK(msg_has(ret, "bad checksum"));
	write_file(dir, ICF_KEYFILE_NAME, buf, 17);
	CHECK_EQ(ic_keyfile_load(dir, &kf), IC_ECORRUPT);

	unsetenv("IMGCHAIN_PASSPHRASE");
	free(path);
	unit_rmtree(dir);
}

static int get_pass(const char *file, const char *expect)
{
	char *pass = NULL;
	size_t len = 0;
	int ret = ic_passphrase_get(file, false, NULL, &pass, &len);

	if (ret == 0) {
		CHECK_EQ(len, strlen(expect));
		CHECK_EQ(strlen(pass), len);
		CHECK(!strcmp(pass, expect));
		ic_passphrase_free(pass);
	}
	return ret;
}

static void test_passphrase_sources(void)
{
	char *dir = unit_tmpdir();
	char *f1 = ic_path_join(dir, "p1"), *f2 = ic_path_join(dir, "p2");
	char *fe = ic_path_join(dir, "empty"), *fl = ic_path_join(dir, "long");
	char *fn = ic_path_join(dir, "none"), *big;
	int ret;

	write_file(dir, "p1", "from file one\r\nsecond line\n", 27);
	write_file(dir, "p2", "file two  ", 10);     /* no newline; spaces are kept */
	write_file(dir, "empty", "\nsecond\n", 8);
	big = malloc(3000);
	memset(big, 'x', 3000);
	write_file(dir, "long", big, 3000);
	free(big);
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	unsetenv("IMGCHAIN_PASSPHRASE");

	CHECK_EQ(get_pass(f1, "from file one"), 0);
	CHECK_EQ(get_pass(f2, "file two  "), 0);
	ret = get_pass(fe, "");
	CHECK_EQ(ret, -EINVAL);
	CHECK(msg_has(ret, "empty passphrase"));
	CHECK_EQ(get_pass(fl, ""), -EINVAL);
	ret = get_pass(fn, "");
	CHECK_EQ(ret, -ENOENT);
	CHECK(msg_has(ret, fn));

	/* stdin is /dev/null: no prompt, a clear refusal */
	ret = get_pass(NULL, "");
	CHECK_EQ(ret, -EINVAL);
	CHECK(msg_has(ret, "no passphrase: use --passphrase-file FILE"));

	setenv("IMGCHAIN_PASSPHRASE", "from env", 1);
	CHECK_EQ(get_pass(NULL, "from env"), 0);
	setenv("IMGCHAIN_PASSPHRASE_FILE", f2, 1);
	CHECK_EQ(get_pass(NULL, "file two  "), 0);      /* the file variable comes first */
	CHECK_EQ(get_pass(f1, "from file one"), 0);     /* an explicit file beats both */
	setenv("IMGCHAIN_PASSPHRASE_FILE", "", 1);
	CHECK_EQ(get_pass(NULL, ""), -EINVAL);
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	setenv("IMGCHAIN_PASSPHRASE", "", 1);
	ret = get_pass(NULL, "");
	CHECK_EQ(ret, -EINVAL);
	CHECK(msg_has(ret, "empty passphrase"));
	unsetenv("IMGCHAIN_PASSPHRASE");

	free(f1);
	free(f2);
	free(fe);
	free(fl);
	free(fn);
	unit_rmtree(dir);
}

static void test_passphrase_new(void)
{
	char *pass = NULL;
	size_t len;
	int ret;

	setenv("IMGCHAIN_PASSPHRASE", "old one", 1);
	unsetenv("IMGCHAIN_NEW_PASSPHRASE");
	ret = ic_passphrase_get_new(NULL, NULL, &pass, &len);
	CHECK_EQ(ret, -EINVAL);       /* never the current passphrase's variables */
	CHECK(msg_has(ret, "no new passphrase"));
	setenv("IMGCHAIN_NEW_PASSPHRASE", "new one", 1);
	CHECK_EQ(ic_passphrase_get_new(NULL, NULL, &pass, &len), 0);
	CHECK_EQ(len, 7);
	CHECK(pass && !strcmp(pass, "new one"));
	ic_passphrase_free(pass);
	unsetenv("IMGCHAIN_NEW_PASSPHRASE");
	unsetenv("IMGCHAIN_PASSPHRASE");
}

/* Key generations (FORMAT.md 6.1, version 2): revocation starts a new master key that no
 * old copy of the key file holds; every older generation stays reachable from it. */
static void test_generations(void)
{
	static struct ic_keyfile kf, old, kf2, bad;
	static uint8_t buf[sizeof(struct icf_keyfile) + 4 * sizeof(struct icf_key_gen)];
	struct ic_key *key = NULL, *k1 = NULL, *k2 = NULL;
	/* the cheapest cost for the slots made here: this test runs under valgrind too */
	const uint64_t ops = crypto_pwhash_OPSLIMIT_MIN, mem = 8u << 20;
	unsigned dropped = 0;
	int slot = -1, ret;
	size_t n;

	kf = fixture_kf;
	CHECK_EQ(ic_keyfile_gen(&kf), 0);
	CHECK_EQ(ic_key_current_gen(fixture_key), 0);
	CHECK(ic_key_gen(fixture_key, 0) != NULL && ic_key_gen(fixture_key, 1) == NULL);
	CHECK(!memcmp(ic_key_gen(fixture_key, 0)->k_block, fixture_key->k_block, ICF_KEY_LEN));
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), ops, mem), 1);
	old = kf;

	/* revoke, keeping slot 1 (PASS2): slot 0 (PASS1) is dropped */
	CHECK_EQ(ic_keyfile_revoke(&kf, fixture_key, 1, PASS2, strlen(PASS2), &k1, &dropped), 0);
	CHECK_EQ(dropped, 1u << 0);
	CHECK_EQ(kf.h.version, ICF_KEYFILE_V2);
	CHECK_EQ(ic_keyfile_gen(&kf), 1);
	CHECK_EQ(kf.h.slots[0].used, 0);
	CHECK(kf.h.slots[1].used == 1 && kf.h.slots[1].opslimit == ops &&
	      kf.h.slots[1].memlimit == mem);
	CHECK(!memcmp(kf.h.key_check, fixture_kf.h.key_check, ICF_CHECK_LEN)); /* images the same */
	CHECK(k1 && ic_key_current_gen(k1) == 1);
	if (!k1)
		return;
	CHECK(memcmp(ic_key_gen(k1, 1)->k_block, fixture_key->k_block, ICF_KEY_LEN));
	CHECK(!memcmp(ic_key_gen(k1, 0)->k_block, fixture_key->k_block, ICF_KEY_LEN));
	CHECK(!memcmp(k1->k_seal, fixture_key->k_seal, ICF_KEY_LEN));

	/* encoded: 1120 + 72 bytes, round trip */
	CHECK_EQ(ic_keyfile_size(&kf), sizeof(struct icf_keyfile) + sizeof(struct icf_key_gen));
	n = ic_keyfile_encode(&kf, buf);
	CHECK_EQ(n, 1192);
	CHECK_EQ(ic_keyfile_decode(buf, n, &kf2, "mem"), 0);
	CHECK_EQ(ic_keyfile_gen(&kf2), 1);
	CHECK(!memcmp(&kf2.gens[0], &kf.gens[0], sizeof(kf.gens[0])));
	CHECK_EQ(ic_keyfile_decode(buf, n - 72, &bad, "mem"), IC_ECORRUPT);
	CHECK_EQ(ic_keyfile_decode(buf, n + 72, &bad, "mem"), IC_ECORRUPT);

	/* the new file: PASS2 opens both generations, PASS1 is gone */
	CHECK_EQ(ic_keyfile_unlock(&kf2, PASS2, strlen(PASS2), &key, &slot), 0);
	CHECK_EQ(slot, 1);
	CHECK(key && ic_key_current_gen(key) == 1 &&
	      !memcmp(ic_key_gen(key, 1), ic_key_gen(k1, 1), sizeof(struct ic_subkeys)) &&
	      !memcmp(ic_key_gen_check(key, 1), ic_key_gen_check(k1, 1), ICF_CHECK_LEN));
	ic_key_free(key);
	key = NULL;
	CHECK_EQ(ic_keyfile_unlock(&kf2, PASS1, strlen(PASS1), &key, NULL), IC_EKEY);

	/* the old copy with the revoked passphrase: generation 0 only */
	CHECK_EQ(ic_keyfile_unlock(&old, PASS1, strlen(PASS1), &key, &slot), 0);
	CHECK_EQ(slot, 0);
	CHECK(key && ic_key_current_gen(key) == 0 && ic_key_gen(key, 1) == NULL);
	ic_key_free(key);
	key = NULL;

	/* downgrade attempts: the v1 slot of the old file put into the v2 file (its
	 * wrapping binds no generation), the file relabelled version 1, a generation
	 * record changed: none opens */
	bad = kf2;
	bad.h.slots[0] = old.h.slots[0];
	CHECK_EQ(ic_keyfile_unlock(&bad, PASS1, strlen(PASS1), &key, NULL), IC_EKEY);
	bad = kf2;
	bad.h.version = ICF_KEYFILE_V1;
	bad.h.reserved0 = 0;
	CHECK_EQ(ic_keyfile_unlock(&bad, PASS2, strlen(PASS2), &key, NULL), IC_EKEY);
	bad = kf2;
	bad.gens[0].wrapped[5] ^= 1;
	ret = ic_keyfile_unlock(&bad, PASS2, strlen(PASS2), &key, NULL);
	CHECK_EQ(ret, IC_EKEY);
	CHECK(msg_has(ret, "key generation 0 does not open"));
	CHECK(key == NULL);

	/* a slot added after revocation wraps the newest generation */
	CHECK_EQ(ic_keyfile_add_slot(&kf2, k1, PASS1, strlen(PASS1), ops, mem), 0);
	CHECK_EQ(ic_keyfile_add_slot(&kf2, fixture_key, PASS1, strlen(PASS1), ops, mem), IC_EKEY);
	CHECK_EQ(ic_keyfile_unlock(&kf2, PASS1, strlen(PASS1), &key, &slot), 0);
	CHECK(key && slot == 0 && ic_key_current_gen(key) == 1);
	ic_key_free(key);
	key = NULL;

	/* a second revocation, keeping slot 0: three generations, the first two unchanged */
	CHECK_EQ(ic_keyfile_revoke(&kf2, k1, 0, PASS1, strlen(PASS1), &k2, &dropped), 0);
	CHECK_EQ(dropped, 1u << 1);
	CHECK_EQ(ic_keyfile_gen(&kf2), 2);
	CHECK_EQ(ic_keyfile_unlock(&kf2, PASS1, strlen(PASS1), &key, NULL), 0);
	CHECK(key && ic_key_current_gen(key) == 2 &&
	      !memcmp(ic_key_gen(key, 1), ic_key_gen(k1, 1), sizeof(struct ic_subkeys)) &&
	      !memcmp(ic_key_gen(key, 2), ic_key_gen(k2, 2), sizeof(struct ic_subkeys)) &&
	      !memcmp(key->key_check, fixture_key->key_check, ICF_CHECK_LEN));
	ic_key_free(key);
	/* revoking needs the key of exactly this file */
	CHECK_EQ(ic_keyfile_revoke(&kf2, k1, 0, PASS1, strlen(PASS1), &key, &dropped), IC_EKEY);
	ic_key_free(k1);
	ic_key_free(k2);
}

/* KDF costs above the cap (SENSITIVE unless IMGCHAIN_KDF_MAX) are not run. */
static void test_kdf_cap(void)
{
	static struct ic_keyfile kf;
	struct ic_key *key = NULL;
	uint64_t ops, mem;
	double t0;
	int ret, slot = -1;

	unsetenv("IMGCHAIN_KDF_MAX");
	CHECK_EQ(ic_kdf_cap(&ops, &mem), 0);
	CHECK_EQ(ops, crypto_pwhash_OPSLIMIT_SENSITIVE);
	CHECK_EQ(mem, crypto_pwhash_MEMLIMIT_SENSITIVE);
	setenv("IMGCHAIN_KDF_MAX", "max", 1);
	CHECK_EQ(ic_kdf_cap(&ops, &mem), 0);
	CHECK_EQ(ops, ICF_KDF_OPSLIMIT_MAX);
	CHECK_EQ(mem, ICF_KDF_MEMLIMIT_MAX);
	setenv("IMGCHAIN_KDF_MAX", "5:8", 1);
	CHECK_EQ(ic_kdf_cap(&ops, &mem), 0);
	CHECK_EQ(ops, 5);
	CHECK_EQ(mem, 8u << 20);
	setenv("IMGCHAIN_KDF_MAX", "interactive", 1);
	CHECK_EQ(ic_kdf_cap(&ops, &mem), 0);
	CHECK_EQ(mem, crypto_pwhash_MEMLIMIT_INTERACTIVE);
	setenv("IMGCHAIN_KDF_MAX", "65:8", 1);
	ret = ic_kdf_cap(&ops, &mem);
	CHECK_EQ(ret, -EINVAL);
	CHECK(msg_has(ret, "IMGCHAIN_KDF_MAX='65:8'"));
	setenv("IMGCHAIN_KDF_MAX", "4:8x", 1);
	CHECK_EQ(ic_kdf_cap(&ops, &mem), -EINVAL);
	unsetenv("IMGCHAIN_KDF_MAX");

	/* a real slot with opslimit 5 (above SENSITIVE's 4), 8 MiB: refused untried */
	kf = fixture_kf;
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), 5, 8u << 20), 1);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, 0), 0);
	ret = ic_keyfile_unlock(&kf, PASS2, strlen(PASS2), &key, NULL);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(msg_has(ret, "key slot(s) 1 refused: KDF cost above what imgchain writes"));
	setenv("IMGCHAIN_KDF_MAX", "5:8", 1);
	CHECK_EQ(ic_keyfile_unlock(&kf, PASS2, strlen(PASS2), &key, &slot), 0);
	CHECK_EQ(slot, 1);
	ic_key_free(key);
	key = NULL;
	unsetenv("IMGCHAIN_KDF_MAX");

	/* a cost within the format's bounds but far above the cap (64 passes of 1 GiB, a
	 * minute or more if it ran): refused at once */
	kf.h.slots[1].opslimit = ICF_KDF_OPSLIMIT_MAX;
	kf.h.slots[1].memlimit = 1ull << 30;
	t0 = ic_now();
	ret = ic_keyfile_unlock(&kf, PASS2, strlen(PASS2), &key, NULL);
	CHECK(ic_now() - t0 < 0.5);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(key == NULL);

	/* with a slot within the cap next to it: a wrong passphrase tries only that one */
	kf = fixture_kf;
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), 5, 8u << 20), 1);
	ret = ic_keyfile_unlock(&kf, PASS2, strlen(PASS2), &key, NULL);
	CHECK_EQ(ret, IC_EKEY);
	CHECK(msg_has(ret, "slot(s) 1 not tried"));
	CHECK_EQ(ic_keyfile_unlock(&kf, PASS1, strlen(PASS1), &key, &slot), 0);
	CHECK_EQ(slot, 0);
	ic_key_free(key);
}

/* IMGCHAIN_PASSPHRASE and IMGCHAIN_NEW_PASSPHRASE leave the environment once read. */
static void test_passphrase_env_removed(void)
{
	char *pass = NULL;
	size_t len;

	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	setenv("IMGCHAIN_PASSPHRASE", "gone after reading", 1);
	CHECK_EQ(ic_passphrase_get(NULL, false, NULL, &pass, &len), 0);
	CHECK(pass && !strcmp(pass, "gone after reading"));
	ic_passphrase_free(pass);
	CHECK(getenv("IMGCHAIN_PASSPHRASE") == NULL);
	/* a second unlock in the same process still has it (kept in sodium memory) */
	CHECK_EQ(ic_passphrase_get(NULL, false, NULL, &pass, &len), 0);
	CHECK(pass && !strcmp(pass, "gone after reading") && len == 18);
	ic_passphrase_free(pass);
	setenv("IMGCHAIN_NEW_PASSPHRASE", "new and gone", 1);
	CHECK_EQ(ic_passphrase_get_new(NULL, NULL, &pass, &len), 0);
	CHECK(pass && !strcmp(pass, "new and gone"));
	ic_passphrase_free(pass);
	CHECK(getenv("IMGCHAIN_NEW_PASSPHRASE") == NULL);
}

/* The state file codec (FORMAT.md section 12): canonical text only. */
static void test_state_codec(void)
{
	static struct ic_state st;
	static char out[IC_STATE_MAX_BYTES];
	static const char v2[] = "imgchain-state 2\nkeygen 1 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\n"
				 "point 1 0101010101010101010101010101010101010101010101010101010101010101 mon\n"
				 "point 7 fefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefe tue.2\n";
	static const char v1[] = "seq 3\nseal abababababababababababababababababababababababababababababababab\nname daily-3\n";
	static const char *const bad[] = {
		"imgchain-state 2\npoint 01 0101010101010101010101010101010101010101010101010101010101010101 a\n",
		"imgchain-state 2\npoint 1 0101010101010101010101010101010101010101010101010101010101010101 a",
		"imgchain-state 2\npoint 0 0101010101010101010101010101010101010101010101010101010101010101 a\n",
		"imgchain-state 2\npoint 1 0101010101010101010101010101010101010101010101010101010101010101 .a\n",
		"imgchain-state 2\npoint 1 0101010101010101010101010101010101010101010101010101010101010A01 a\n",
		"imgchain-state 2\npoint 2 0101010101010101010101010101010101010101010101010101010101010101 a\n"
		"point 2 0101010101010101010101010101010101010101010101010101010101010101 b\n",
		"imgchain-state 2\npoint 1 0101010101010101010101010101010101010101010101010101010101010101 a\n"
		"keygen 1 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\n",
		"imgchain-state 2\nkeygen 257 0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f\n",
		"imgchain-state 2\n\n",
		"imgchain-state 2\npoint 4294967296 0101010101010101010101010101010101010101010101010101010101010101 a\n",
		"seq 3\nseal abab\nname x\n",
		"seq 3\nseal abababababababababababababababababababababababababababababababab\nname x\nmore\n",
	};
	size_t n;
	char *big, *p;

	CHECK_EQ(ic_state_decode(v2, strlen(v2), &st, "s"), 0);
	CHECK(st.have_keygen && st.keygen == 1 && st.npoints == 2 && st.points[1].seq == 7 &&
	      !strcmp(st.points[1].name, "tue.2") && st.points[1].seal[31] == 0xfe);
	n = ic_state_encode(&st, out);
	CHECK(n == strlen(v2) && !memcmp(out, v2, n));
	CHECK_EQ(ic_state_decode(v1, strlen(v1), &st, "s"), 0);
	CHECK(!st.have_keygen && st.npoints == 1 && st.points[0].seq == 3 &&
	      !strcmp(st.points[0].name, "daily-3"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (ic_state_decode(bad[i], strlen(bad[i]), &st, "s") != -EINVAL) {
			fprintf(stderr, "  bad state %zu accepted\n", i);
			CHECK(0);
		}
	/* 256 points decode, 257 do not */
	big = malloc(IC_STATE_MAX_BYTES + 512);
	p = big + sprintf(big, "imgchain-state 2\n");
	for (unsigned i = 1; i <= IC_STATE_POINTS + 1; i++)
		p += sprintf(p, "point %u %064x p%u\n", i, 0, i);
	CHECK_EQ(ic_state_decode(big, (size_t)(p - big), &st, "s"), -EINVAL);
	p = strstr(big, "point 257 ");
	CHECK_EQ(ic_state_decode(big, (size_t)(p - big), &st, "s"), 0);
	CHECK_EQ(st.npoints, IC_STATE_POINTS);
	CHECK(ic_state_encode(&st, out) == (size_t)(p - big));
	free(big);
}

/* The state pins the key generation: an older key file is refused, a newer one accepted. */
static void test_state_keygen(void)
{
	char *dir = unit_tmpdir();
	static struct ic_keyfile kf, cheap;
	struct ic_key *k1 = NULL, *k2 = NULL;
	unsigned dropped;
	int ret;

	setenv("IMGCHAIN_STATE_DIR", dir, 1);
	kf = fixture_kf;
	CHECK_EQ(ic_keyfile_add_slot(&kf, fixture_key, PASS2, strlen(PASS2), 1, 8u << 20), 1);
	CHECK_EQ(ic_keyfile_remove_slot(&kf, 0), 0);
	cheap = kf;
	CHECK_EQ(ic_keyfile_revoke(&kf, fixture_key, 1, PASS2, strlen(PASS2), &k1, &dropped), 0);
	CHECK_EQ(ic_keyfile_revoke(&kf, k1, 1, PASS2, strlen(PASS2), &k2, &dropped), 0);
	ic_state_note_key(k1);
	CHECK_EQ(ic_state_check_key("C", chain_a, false), 0);           /* first seen: gen 1 */
	ic_state_note_key(fixture_key);
	ret = ic_state_check_key("C", chain_a, false);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(msg_has(ret, "C/imgchain.key: rolled back: this machine last saw key generation 1"));
	ic_state_note_key(k2);
	CHECK_EQ(ic_state_check_key("C", chain_a, false), 0);           /* forward: gen 2 */
	ic_state_note_key(k1);
	CHECK_EQ(ic_state_check_key("C", chain_a, false), IC_ECORRUPT);
	CHECK_EQ(ic_state_check_key("C", chain_a, true), 0);            /* accepted: gen 1 */
	CHECK_EQ(ic_state_check_key("C", chain_a, false), 0);
	ic_state_note_key(k2);
	CHECK_EQ(ic_state_check_key("C", chain_a, false), 0);
	/* another key file at the same generation: replaced */
	kf = cheap;
	ic_key_free(k1);
	CHECK_EQ(ic_keyfile_revoke(&kf, fixture_key, 1, PASS2, strlen(PASS2), &k1, &dropped), 0);
	ic_state_note_key(k1);
	ret = ic_state_check_key("C", chain_a, false);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(msg_has(ret, "rolled back"));
	ic_key_free(k2);
	CHECK_EQ(ic_keyfile_revoke(&kf, k1, 1, PASS2, strlen(PASS2), &k2, &dropped), 0);
	ic_state_note_key(k2);
	ret = ic_state_check_key("C", chain_a, false);
	CHECK_EQ(ret, IC_ECORRUPT);
	CHECK(msg_has(ret, "key generation 2 is not the one this machine saw"));
	ic_key_free(k1);
	ic_key_free(k2);
	unsetenv("IMGCHAIN_STATE_DIR");
	unit_rmtree(dir);
}

int main(void)
{
	int fd = open("/dev/null", O_RDONLY), ret;

	/* never prompt, even when run by hand from a terminal */
	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
		return 1;
	close(fd);
	if (sodium_init() < 0)
		return 1;
	unsetenv("IMGCHAIN_KDF");

	RUN(test_derivation);
	RUN(test_kdf_defaults);
	RUN(test_decode_fields);
	RUN(test_decode_bitflips);
	RUN(test_decode_sizes);
	RUN(test_passphrase_sources);
	RUN(test_passphrase_new);
	RUN(test_passphrase_env_removed);
	ret = ic_keyfile_create(chain_a, PASS1, strlen(PASS1), &fixture_kf, &fixture_key);
	if (ret) {
		fprintf(stderr, "ic_keyfile_create: %s\n", ic_last_error(ret));
		return 1;
	}
	RUN(test_roundtrip);
	RUN(test_wrong_passphrase);
	RUN(test_slots);
	RUN(test_binding);
	RUN(test_unlock_caps);
	RUN(test_key_unlock);
	RUN(test_generations);
	RUN(test_kdf_cap);
	RUN(test_state_codec);
	RUN(test_state_keygen);
	ic_key_free(fixture_key);
	UNIT_EXIT();
}
