/* test_cdp.c: the CDP journal's writer and reader (src/ops/ic_cdp*) without nbdkit: a
 * modelled disk changes over eight intervals (data, zero blocks, the short last block),
 * journalled a block at a time and in ranges (two encoder threads); every checkpoint
 * restores exactly, one nanosecond before a checkpoint gives the one before it, before
 * the first none; the same for a version 1 journal (still read); a version 2 journal's
 * map seal (FORMAT.md 15.5) changed makes its checkpoint's restore fail; a folded point's
 * slot fields; times parse. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_cdp.h"
#include "ic_cdp_int.h"
#include "imgchain_cdp.h"
#include "imgchain.h"
#include "unit.h"

#define BS 4096u
#define NB 11u
#define DISK ((uint64_t)(NB - 1) * BS + 1000)
#define NK 9

static char *chain;
static uint8_t model[NK][DISK];
static struct timespec when[NK];

static uint32_t blen(uint64_t p)
{
	return p + 1 < NB ? BS : (uint32_t)(DISK - p * BS);
}

static void make_chain(void)
{
	struct ic_keyfile kf;
	struct ic_key *k = NULL;
	uint8_t id[ICF_ID_LEN];
	char sd[4200];

	chain = unit_tmpdir();
	snprintf(sd, sizeof(sd), "%s/state", chain);
	setenv("IMGCHAIN_STATE_DIR", sd, 1);
	setenv("IMGCHAIN_PASSPHRASE", "cdp unit test", 1);
	setenv("IMGCHAIN_KDF", "interactive", 1);
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	randombytes_buf(id, sizeof(id));
	CHECK_EQ(ic_keyfile_create(id, "cdp unit test", 13, &kf, &k), 0);
	CHECK_EQ(ic_keyfile_store(chain, &kf), 0);
	ic_key_free(k);
}

static void put(struct ic_cdp_writer *w, const uint8_t *disk, uint64_t p, bool skip_zero)
{
	CHECK_EQ(ic_cdp_put_block(w, p, disk + p * BS, blen(p), skip_zero), 0);
}

/* ic_cdp_put_dirty's read: block pos of the disk arg */
static int read_model(void *arg, uint64_t pos, void *buf, uint32_t len)
{
	CHECK_EQ(len, blen(pos));
	memcpy(buf, (const uint8_t *)arg + pos * BS, len);
	return 0;
}

static int restore_at(const struct timespec *at, const char *name)
{
	struct ic_cdp_restore_opts r = { .chain_dir = chain, .quiet = true, .at = *at };
	struct ic_cdp_restore_stats st;
	char dest[4200];

	snprintf(dest, sizeof(dest), "%s/%s", chain, name);
	r.dest = dest;
	return ic_cdp_restore(&r, &st);
}

/* The last checkpoint's map seal changed (its frame hash fixed): that restore fails, the
 * one before still works. */
static void tamper_mseal(void)
{
	char path[4200];
	uint8_t f[ICF_CDP_CKPT_V2];
	uint64_t h;
	off_t end;
	int fd;

	snprintf(path, sizeof(path), "%s/cdp/00000001.cdp", chain);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	end = lseek(fd, 0, SEEK_END);
	CHECK_EQ(pread(fd, f, sizeof(f), end - (off_t)sizeof(f)), (long long)sizeof(f));
	CHECK_EQ(f[0], 'I');
	f[ICF_CDP_MSEAL_OFF + 5] ^= 1;
	h = XXH3_64bits(f, sizeof(f) - 8);
	memcpy(f + sizeof(f) - 8, &h, 8);
	CHECK_EQ(pwrite(fd, f, sizeof(f), end - (off_t)sizeof(f)), (long long)sizeof(f));
	close(fd);
	CHECK_EQ(restore_at(&when[NK - 1], "mseal-bad"), IC_ECORRUPT);
	CHECK_EQ(restore_at(&when[NK - 2], "mseal-before"), 0);
}

static void roundtrip(uint32_t version)
{
	struct ic_cdp_writer_opts o = { .block_size = BS, .threads = 2, .version = version };
	struct ic_cdp_writer *w = NULL;
	struct ic_key *key = NULL;
	uint64_t seed = 42;
	char dest[4200];

	make_chain();
	o.chain_dir = chain;
	CHECK_EQ(ic_key_unlock(chain, NULL, &key), 0);
	CHECK_EQ(ic_cdp_writer_new(&o, key, &w), 0);
	if (!w)
		return;
	CHECK_EQ(ic_cdp_writer_start(w, DISK), 0);
	for (uint64_t i = 0; i < DISK; i++)     /* blocks 2, 5 and the last hold data */
		model[0][i] = (i / BS == 2 || i / BS == 5 || i / BS == NB - 1) ? (uint8_t)(i * 7 + 1) : 0;
	CHECK_EQ(ic_cdp_put_range(w, 0, NB, model[0], true), 0);    /* two encoders */
	CHECK_EQ(ic_cdp_checkpoint(w, &when[0]), 0);
	for (int k = 1; k < NK; k++) {
		memcpy(model[k], model[k - 1], DISK);
		for (int n = 0; n < 3; n++) {
			uint64_t p = (seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33;
			uint64_t at;

			p %= NB;
			at = p * BS;
			if (n == 2 && k % 3 == 0)
				memset(model[k] + at, 0, blen(p));      /* a zeroed block */
			else
				for (uint32_t i = 0; i < blen(p); i += 97)
					model[k][at + i] = (uint8_t)(k * 31 + n + i);
			put(w, model[k], p, false);
		}
		if (k % 3 == 1) {       /* deferred: blocks 4 and the last, changed after marking */
			CHECK_EQ(ic_cdp_mark_dirty(w, 4, 1), 0);
			CHECK_EQ(ic_cdp_mark_dirty(w, NB - 1, 1), 0);
			CHECK_EQ(ic_cdp_mark_dirty(w, 4, 1), 0);
			CHECK_EQ(ic_cdp_dirty_count(w), 2u);
			model[k][4 * BS + 9] = (uint8_t)(k + 100);
			model[k][DISK - 2] = (uint8_t)(k + 200);
		}
		if (k % 2) {            /* the last three blocks at once, one changed */
			model[k][DISK - 1] ^= (uint8_t)k;
			CHECK_EQ(ic_cdp_put_range(w, NB - 3, 3, model[k] + (NB - 3) * BS, false), 0);
		}
		/* the dirty blocks as the disk now reads (the last one journalled since: not) */
		CHECK_EQ(ic_cdp_put_dirty(w, read_model, model[k]), 0);
		CHECK_EQ(ic_cdp_dirty_count(w), 0u);
		usleep(2000);
		CHECK_EQ(ic_cdp_checkpoint(w, &when[k]), 0);
	}
	ic_cdp_writer_free(w);
	for (int k = 0; k < NK; k++) {
		for (int before = 0; before < 2; before++) {
			struct ic_cdp_restore_opts r = { .chain_dir = chain, .dest = dest, .quiet = true };
			struct ic_cdp_restore_stats st;
			uint8_t *got = malloc(DISK);
			int fd, want = before ? k - 1 : k;

			snprintf(dest, sizeof(dest), "%s/r%d-%d", chain, k, before);
			r.at = when[k];
			if (before && r.at.tv_nsec-- == 0) {
				r.at.tv_sec--;
				r.at.tv_nsec = 999999999;
			}
			if (want < 0) {
				CHECK_EQ(ic_cdp_restore(&r, &st), -ENOENT);
				CHECK(access(dest, F_OK) != 0);
				free(got);
				continue;
			}
			CHECK_EQ(ic_cdp_restore(&r, &st), 0);
			CHECK_EQ(st.interval, (uint64_t)want);
			fd = open(dest, O_RDONLY);
			CHECK(fd >= 0);
			CHECK_EQ(pread(fd, got, DISK, 0), (long long)DISK);
			CHECK_EQ(lseek(fd, 0, SEEK_END), (long long)DISK);
			CHECK(memcmp(got, model[want], DISK) == 0);
			close(fd);
			free(got);
		}
	}
	ic_key_free(key);
	if (version != 1)
		tamper_mseal();
}

static void test_roundtrip(void)
{
	roundtrip(0);
}

static void test_roundtrip_v1(void)
{
	char *v2 = chain;

	roundtrip(1);
	unit_rmtree(v2);
}

/* A folded point's slot (FORMAT.md 15.5): flag and fold fields go together, v2 only. */
static void test_fold_slot(void)
{
	struct icf_slot s;

	memset(&s, 0, sizeof(s));
	s.generation = 1;
	s.seq = 2;
	s.kind = ICF_KIND_SYNTHETIC_FULL;
	s.disk_size = 1;
	s.index_offset = ICF_HEADER_SIZE;
	s.data_end = ICF_HEADER_SIZE;
	s.point_id = 5;
	strcpy(s.name, "cdp-2026-12-03T10:14:06.000000001Z");
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, "slot"), 0);
	s.flags = ICF_SLOT_FOLDED;                       /* no session id */
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, "slot"), IC_ECORRUPT);
	s.fold_session_id = 9;
	s.fold_interval = 3;
	s.fold_time_ns = 1;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, "slot"), 0);
	s.fold_time_ns = 1000000000;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, "slot"), IC_ECORRUPT);
	s.fold_time_ns = 1;
	s.point_id = 0;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V1, "slot"), IC_ECORRUPT);   /* v1: no fold */
	s.point_id = 5;
	s.flags = 0;                                     /* fold fields without the flag */
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, "slot"), IC_ECORRUPT);
}

/* The incompressibility probe: random bytes yes, zeros, text and half-zero blocks no. */
static void test_probe(void)
{
	static uint8_t b[65536];
	size_t i;

	randombytes_buf(b, sizeof(b));
	CHECK(ic_cdp_probe(b, sizeof(b), IC_CDP_RAW_BITS));
	CHECK(ic_cdp_probe(b, 4096, IC_CDP_RAW_BITS));
	CHECK(ic_cdp_probe(b, 5000, IC_CDP_RAW_BITS));         /* a short last block */
	CHECK(!ic_cdp_probe(b, sizeof(b), 0));                  /* off */
	CHECK(!ic_cdp_probe(b, sizeof(b), 8000));               /* at least 8 bits: never */
	memset(b, 0, sizeof(b) / 2);
	for (i = 0; i < sizeof(b); i += 8192)                   /* zeros in every sample piece */
		memset(b + i, 0, 2048);
	CHECK(!ic_cdp_probe(b, sizeof(b), IC_CDP_RAW_BITS));
	for (i = 0; i < sizeof(b); i++)
		b[i] = "the quick brown fox jumps over the lazy dog "[i % 44];
	CHECK(!ic_cdp_probe(b, sizeof(b), IC_CDP_RAW_BITS));
	memset(b, 0, sizeof(b));
	CHECK(!ic_cdp_probe(b, sizeof(b), IC_CDP_RAW_BITS));
}

static void test_parse_time(void)
{
	struct timespec t;

	CHECK_EQ(ic_cdp_parse_time("@1.5", &t), 0);
	CHECK_EQ(t.tv_sec, 1);
	CHECK_EQ(t.tv_nsec, 500000000);
	CHECK_EQ(ic_cdp_parse_time("1000000000", &t), 0);
	CHECK_EQ(t.tv_sec, 1000000000);
	CHECK_EQ(t.tv_nsec, 0);
	CHECK_EQ(ic_cdp_parse_time("2001-09-09T01:46:40Z", &t), 0);
	CHECK_EQ(t.tv_sec, 1000000000);
	CHECK_EQ(ic_cdp_parse_time("2001-09-09 01:46:40.000000001234", &t), 0);
	CHECK_EQ(t.tv_sec, 1000000000);
	CHECK_EQ(t.tv_nsec, 1);
	CHECK_EQ(ic_cdp_parse_time("yesterday", &t), -EINVAL);
	CHECK_EQ(ic_cdp_parse_time("1.2.3", &t), -EINVAL);
	CHECK_EQ(ic_cdp_parse_time("12Z", &t), -EINVAL);
	CHECK_EQ(ic_cdp_parse_time("2001-09-09", &t), -EINVAL);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	RUN(test_parse_time);
	RUN(test_probe);
	RUN(test_fold_slot);
	RUN(test_roundtrip);
	RUN(test_roundtrip_v1);
	unit_rmtree(chain);
	UNIT_EXIT();
}
