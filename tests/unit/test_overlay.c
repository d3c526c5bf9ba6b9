/* test_overlay.c: the copy-on-write overlay against an in-memory model: random operations,
 * persistence, the truncation rules, base errors, threads, torn commits and SIGKILL crashes. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <xxhash.h>

#include "ic_overlay.h"
#include "ic_util.h"
#include "unit.h"

#define BS ((uint64_t)IC_OVERLAY_BLOCK)
#define MIB (1024ull * 1024)

/* ---- helpers: randomness, the base, the model --------------------------------- */

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t v = unit_rnd(&seed);

		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)unit_rnd(&seed);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

struct tbase {
	uint8_t *bytes;
	uint64_t size;
	int fail;		/* returned by every call when non-zero */
	unsigned calls;		/* atomic */
	unsigned bad;		/* calls past size (atomic) */
};

static int t_base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct tbase *b = arg;

	__atomic_fetch_add(&b->calls, 1, __ATOMIC_RELAXED);
	if (off > b->size || len > b->size - off || len == 0) {
		__atomic_fetch_add(&b->bad, 1, __ATOMIC_RELAXED);
		return -EINVAL;
	}
	if (b->fail)
		return b->fail;
	memcpy(buf, b->bytes + off, len);
	return 0;
}

static void base_init(struct tbase *b, uint64_t size, uint64_t seed)
{
	memset(b, 0, sizeof(*b));
	b->size = size;
	b->bytes = malloc(size ? size : 1);
	fill_random(b->bytes, size, seed);
}

/* The file as it should read: bytes past size are kept zero. */
struct model {
	uint8_t *bytes;
	uint64_t size, cap;
};

static void model_init(struct model *m, const struct tbase *b, uint64_t cap)
{
	m->bytes = calloc(1, cap);
	m->cap = cap;
	m->size = b->size;
	memcpy(m->bytes, b->bytes, b->size);
}

static void model_write(struct model *m, const uint8_t *buf, uint64_t len, uint64_t off)
{
	memcpy(m->bytes + off, buf, len);
	if (off + len > m->size)
		m->size = off + len;
}

static void model_truncate(struct model *m, uint64_t size)
{
	if (size < m->size)
		memset(m->bytes + size, 0, m->size - size);
	m->size = size;
}

static struct ic_overlay *ov_open(const char *prefix, const struct tbase *b)
{
	struct ic_overlay *ov = NULL;
	int ret = ic_overlay_open(prefix, b->size, NULL, &ov);

	if (ret)
		fprintf(stderr, "open %s: %s\n", prefix, ic_last_error(ret));
	CHECK_EQ(ret, 0);
	return ov;
}

static void ov_write(struct ic_overlay *ov, struct tbase *b, struct model *m,
		     const uint8_t *buf, uint64_t len, uint64_t off)
{
	CHECK_EQ(ic_overlay_write(ov, buf, len, off, t_base_read, b), len);
	if (m)
		model_write(m, buf, len, off);
}

/* Read [off, off + len) and compare with the model; returns false on a mismatch. */
static bool check_range(struct ic_overlay *ov, struct tbase *b, const struct model *m,
			uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	uint64_t want = off >= m->size ? 0 : min_u64(len, m->size - off);
	ssize_t n = ic_overlay_read(ov, buf, len, off, t_base_read, b);
	bool ok = n == (ssize_t)want && !memcmp(buf, m->bytes + off, want);

	if (!ok)
		fprintf(stderr, "read %" PRIu64 "+%" PRIu64 ": got %zd, want %" PRIu64 "%s\n",
			off, len, n, want, n == (ssize_t)want ? " (bytes differ)" : "");
	CHECK(ok);
	free(buf);
	return ok;
}

static bool check_all(struct ic_overlay *ov, struct tbase *b, const struct model *m)
{
	bool ok = ic_overlay_size(ov) == m->size;

	CHECK_EQ(ic_overlay_size(ov), m->size);
	for (uint64_t off = 0; ok && off < m->size + BS; off += MIB)
		ok = check_range(ov, b, m, off, MIB);
	return ok;
}

static char *prefix_in(const char *dir)
{
	return ic_path_join(dir, "disk");
}

static char *with_suffix(const char *prefix, const char *suffix)
{
	char *p = malloc(strlen(prefix) + strlen(suffix) + 1);

	strcpy(p, prefix);
	strcat(p, suffix);
	return p;
}

/* ---- random operations against the model --------------------------------------- */

#define RND_CAP (4 * MIB)

static uint64_t pick_len(uint64_t *rng)
{
	switch (unit_rnd_below(rng, 4)) {
	case 0:
		return 1 + unit_rnd_below(rng, 200);
	case 1:
		return BS * (1 + unit_rnd_below(rng, 16));
	case 2:
		return 1 + unit_rnd_below(rng, 64 * 1024);
	default:
		return 1 + unit_rnd_below(rng, 300 * 1024);
	}
}

static uint64_t pick_off(uint64_t *rng, uint64_t size, uint64_t base_size)
{
	uint64_t off;

	switch (unit_rnd_below(rng, 4)) {
	case 0:		/* around the end of the base */
		off = base_size + unit_rnd_below(rng, 128 * 1024) - 64 * 1024;
		break;
	case 1:
		off = unit_rnd_below(rng, size + 128 * 1024) / BS * BS;
		break;
	default:
		off = unit_rnd_below(rng, size + 128 * 1024);
	}
	return min_u64(off, RND_CAP - 1);
}

static uint64_t pick_size(uint64_t *rng, uint64_t size)
{
	uint64_t s;

	switch (unit_rnd_below(rng, 4)) {
	case 0:
		s = unit_rnd_below(rng, RND_CAP / 2);
		break;
	case 1:
		s = unit_rnd_below(rng, RND_CAP / 2) / BS * BS;
		break;
	default:
		s = size + unit_rnd_below(rng, 128 * 1024);
		s = s > 64 * 1024 ? s - 64 * 1024 : 0;
	}
	return min_u64(s, RND_CAP);
}

/* One random operation; false once the overlay and the model disagree. */
static bool random_op(struct ic_overlay **ov, const char *prefix, struct tbase *b,
		      struct model *m, uint64_t *rng, uint8_t *buf)
{
	uint64_t r = unit_rnd_below(rng, 100), off, len;

	if (r < 47) {
		off = pick_off(rng, m->size, b->size);
		len = min_u64(pick_len(rng), RND_CAP - off);
		fill_random(buf, len, unit_rnd(rng));
		ov_write(*ov, b, m, buf, len, off);
	} else if (r < 89) {
		off = unit_rnd_below(rng, m->size + 16 * 1024);
		return check_range(*ov, b, m, off, pick_len(rng));
	} else if (r < 97) {
		uint64_t size = pick_size(rng, m->size);

		CHECK_EQ(ic_overlay_truncate(*ov, size), 0);
		model_truncate(m, size);
	} else if (r < 99) {
		CHECK_EQ(ic_overlay_fsync(*ov), 0);
	} else {
		ic_overlay_close(*ov);
		*ov = ov_open(prefix, b);
		if (!*ov)
			return false;
	}
	return ic_overlay_size(*ov) == m->size;
}

static void test_random_model(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	uint8_t *buf = malloc(RND_CAP);
	uint64_t rng = 0x5eed0001;
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;
	int before = unit_failures;

	base_init(&b, MIB + 1234, 7);
	model_init(&m, &b, RND_CAP);
	ov = ov_open(prefix, &b);
	CHECK(ov && !ic_overlay_modified(ov));
	for (int i = 0; ov && i < 4000 && unit_failures == before; i++) {
		if (!random_op(&ov, prefix, &b, &m, &rng, buf)) {
			fprintf(stderr, "random model: diverged at operation %d\n", i);
			CHECK(0);
		}
	}
	CHECK(ov && check_all(ov, &b, &m));
	CHECK(ov && ic_overlay_modified(ov));
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	CHECK(ov && check_all(ov, &b, &m));
	CHECK(ov && ic_overlay_modified(ov));
	ic_overlay_close(ov);
	CHECK_EQ(b.bad, 0);
	free(buf);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* ---- fixed scenarios -------------------------------------------------------------- */

static void test_fresh_and_persist(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	uint8_t buf[3 * BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;

	base_init(&b, 3 * BS + 17, 11);
	model_init(&m, &b, MIB);
	ov = ov_open(prefix, &b);
	CHECK_EQ(ic_overlay_size(ov), b.size);
	CHECK(!ic_overlay_modified(ov));
	check_all(ov, &b, &m);
	CHECK_EQ(ic_overlay_read(ov, buf, 10, b.size, t_base_read, &b), 0);
	CHECK_EQ(ic_overlay_read(ov, buf, 10, b.size - 3, t_base_read, &b), 3);
	ic_overlay_close(ov);
	/* opening and closing untouched leaves it untouched */
	ov = ov_open(prefix, &b);
	CHECK(!ic_overlay_modified(ov));
	fill_random(buf, sizeof(buf), 12);
	ov_write(ov, &b, &m, buf, 100, 5);
	ov_write(ov, &b, &m, buf, sizeof(buf), b.size - 50);
	CHECK(ic_overlay_modified(ov));
	ic_overlay_close(ov);		/* no fsync: close must persist */
	ov = ov_open(prefix, &b);
	CHECK(ic_overlay_modified(ov));
	check_all(ov, &b, &m);
	ic_overlay_close(ov);
	/* an overlay belongs to one base */
	CHECK_EQ(ic_overlay_open(prefix, b.size + 1, NULL, &ov), -ESTALE);
	CHECK(ov == NULL);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

static void check_zero(struct ic_overlay *ov, struct tbase *b, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len), *zero = calloc(1, len);

	CHECK_EQ(ic_overlay_read(ov, buf, len, off, t_base_read, b), len);
	CHECK(!memcmp(buf, zero, len));
	free(buf);
	free(zero);
}

/* After shrink-then-grow, what was base (or overlay) past the cut reads as zeros. */
static void test_shrink_grow(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir), *data = with_suffix(prefix, ".data");
	uint8_t blk[BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;
	struct stat st;
	unsigned calls;

	base_init(&b, 40000, 21);
	model_init(&m, &b, 4 * MIB);
	ov = ov_open(prefix, &b);
	memset(blk, 0xaa, BS);
	ov_write(ov, &b, &m, blk, BS, BS);
	CHECK_EQ(ic_overlay_truncate(ov, 5000), 0);
	model_truncate(&m, 5000);
	CHECK_EQ(ic_overlay_truncate(ov, 100000), 0);
	model_truncate(&m, 100000);
	calls = b.calls;
	check_zero(ov, &b, 5000, 95000);
	CHECK_EQ(b.calls, calls);	/* nothing past the cut comes from the base */
	check_all(ov, &b, &m);
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	check_all(ov, &b, &m);
	/* a partial write past the cut is completed with zeros, not base bytes */
	ov_write(ov, &b, &m, blk, 1, 30000);
	check_all(ov, &b, &m);
	CHECK_EQ(ic_overlay_truncate(ov, 0), 0);
	model_truncate(&m, 0);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	CHECK(stat(data, &st) == 0 && st.st_size == 0);
	CHECK_EQ(ic_overlay_truncate(ov, 50000), 0);
	model_truncate(&m, 50000);
	check_zero(ov, &b, 0, 50000);
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	check_all(ov, &b, &m);
	CHECK(ic_overlay_modified(ov));
	/* space of dropped blocks is given back once the drop is committed */
	fill_random(m.bytes, MIB, 22);
	ov_write(ov, &b, NULL, m.bytes, MIB, 0);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	CHECK_EQ(ic_overlay_truncate(ov, BS), 0);
	CHECK_EQ(ic_overlay_truncate(ov, MIB), 0);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	CHECK(stat(data, &st) == 0 && st.st_blocks <= 2 * (int64_t)(BS / 512));
	check_zero(ov, &b, BS, MIB - BS);
	ic_overlay_close(ov);
	CHECK_EQ(b.bad, 0);
	free(b.bytes);
	free(m.bytes);
	free(data);
	free(prefix);
	unit_rmtree(dir);
}

/* Base failures come back from reads and from writes that need the base, and a failed
 * write changes nothing. */
static void test_base_errors(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	uint8_t buf[4 * BS], blk[BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;
	unsigned calls;

	base_init(&b, 16 * BS, 31);
	model_init(&m, &b, MIB);
	ov = ov_open(prefix, &b);
	memset(blk, 0x5a, BS);
	ov_write(ov, &b, &m, blk, BS, BS);
	b.fail = -EIO;
	CHECK_EQ(ic_overlay_read(ov, buf, 100, 0, t_base_read, &b), -EIO);
	CHECK_EQ(ic_overlay_read(ov, buf, 2 * BS, 0, t_base_read, &b), -EIO);
	CHECK_EQ(ic_overlay_write(ov, blk, 10, 10, t_base_read, &b), -EIO);
	/* blocks 1, 2 whole and 3 partial: the tail fails, block 1 must stay as it was */
	memset(buf, 0x77, sizeof(buf));
	CHECK_EQ(ic_overlay_write(ov, buf, 2 * BS + 5, BS, t_base_read, &b), -EIO);
	CHECK_EQ(ic_overlay_write(ov, buf, 5, 3 * BS - 5, t_base_read, &b), -EIO);
	/* what does not need the base still works */
	calls = b.calls;
	CHECK_EQ(ic_overlay_read(ov, buf, BS, BS, t_base_read, &b), BS);
	CHECK(!memcmp(buf, blk, BS));
	ov_write(ov, &b, &m, blk, BS, 4 * BS);
	ov_write(ov, &b, &m, blk, 7, b.size + 100);
	CHECK_EQ(b.calls, calls);
	CHECK_EQ(ic_overlay_truncate(ov, b.size + 2 * BS), 0);
	model_truncate(&m, b.size + 2 * BS);
	b.fail = 0;
	check_all(ov, &b, &m);
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	check_all(ov, &b, &m);
	ic_overlay_close(ov);
	CHECK_EQ(b.bad, 0);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* A read makes one base call per run of base blocks, not one per block. */
static void test_base_runs(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	static const uint64_t mine[] = { 3, 10, 11, 200 };
	uint8_t blk[BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;
	unsigned calls;

	base_init(&b, MIB, 41);
	model_init(&m, &b, 2 * MIB);
	ov = ov_open(prefix, &b);
	for (unsigned i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
		fill_random(blk, BS, i);
		ov_write(ov, &b, &m, blk, BS, mine[i] * BS);
	}
	calls = b.calls;
	check_range(ov, &b, &m, 0, MIB);
	CHECK_EQ(b.calls - calls, 4);	/* [0,3) [4,10) [12,200) [201,256) */
	calls = b.calls;
	check_range(ov, &b, &m, 100, 10 * BS);
	CHECK_EQ(b.calls - calls, 2);
	ic_overlay_close(ov);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* ---- torn commits, simulated by hand on the map file ---------------------------- */

static void fill_block(uint8_t *blk, uint8_t c)
{
	memset(blk, c, BS);
}

static bool block_is(struct ic_overlay *ov, struct tbase *b, uint64_t off, uint8_t c)
{
	uint8_t blk[BS], want[BS];

	fill_block(want, c);
	return ic_overlay_read(ov, blk, BS, off, t_base_read, b) == (ssize_t)BS &&
	       !memcmp(blk, want, BS);
}

static void map_io(const char *map, void *buf, size_t len, uint64_t off, bool write)
{
	int fd = open(map, O_RDWR);

	CHECK(fd >= 0);
	if (write)
		CHECK_EQ(pwrite(fd, buf, len, (off_t)off), len);
	else
		CHECK_EQ(pread(fd, buf, len, (off_t)off), len);
	close(fd);
}

/* A commit whose header never reached the disk leaves bitmap pages of a newer generation
 * behind; they must stay ignored even after later commits.  A torn latest header falls
 * back to the previous commit. */
static void test_torn_commit(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir), *map = with_suffix(prefix, ".map");
	const uint64_t far = 200 * MIB;		/* in the second bitmap page */
	uint8_t blk[BS], hdr[8192];
	uint64_t gen[2];
	struct tbase b;
	struct ic_overlay *ov;

	base_init(&b, 1000, 51);
	ov = ov_open(prefix, &b);
	CHECK_EQ(ic_overlay_truncate(ov, 300 * MIB), 0);
	fill_block(blk, 'A');
	ov_write(ov, &b, NULL, blk, BS, BS);
	ic_overlay_close(ov);
	map_io(map, hdr, sizeof(hdr), 0, false);

	ov = ov_open(prefix, &b);
	fill_block(blk, 'B');
	ov_write(ov, &b, NULL, blk, BS, far);
	fill_block(blk, 'C');
	ov_write(ov, &b, NULL, blk, BS, 2 * BS);
	ic_overlay_close(ov);
	map_io(map, hdr, sizeof(hdr), 0, true);		/* the header write is lost */

	ov = ov_open(prefix, &b);
	CHECK(block_is(ov, &b, BS, 'A'));
	CHECK(block_is(ov, &b, 2 * BS, 0));
	CHECK(block_is(ov, &b, far, 0));
	fill_block(blk, 'D');
	ov_write(ov, &b, NULL, blk, BS, 3 * BS);
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	CHECK(block_is(ov, &b, far, 0));
	CHECK(block_is(ov, &b, 2 * BS, 0));
	CHECK(block_is(ov, &b, 3 * BS, 'D'));
	fill_block(blk, 'E');
	ov_write(ov, &b, NULL, blk, BS, 4 * BS);
	ic_overlay_close(ov);

	/* tear the newest header (generation at offset 24 of each slot) */
	map_io(map, hdr, sizeof(hdr), 0, false);
	memcpy(&gen[0], hdr + 24, 8);
	memcpy(&gen[1], hdr + 4096 + 24, 8);
	memset(hdr + (le64toh(gen[0]) > le64toh(gen[1]) ? 0 : 4096) + 100, 0xee, 200);
	map_io(map, hdr, sizeof(hdr), 0, true);
	ov = ov_open(prefix, &b);
	CHECK(block_is(ov, &b, 3 * BS, 'D'));
	CHECK(block_is(ov, &b, 4 * BS, 0));
	CHECK(block_is(ov, &b, far, 0));
	ic_overlay_close(ov);

	/* both headers gone is corruption, not a new overlay */
	memset(hdr, 0xee, sizeof(hdr));
	map_io(map, hdr, sizeof(hdr), 0, true);
	CHECK_EQ(ic_overlay_open(prefix, b.size, NULL, &ov), IC_ECORRUPT);
	free(b.bytes);
	free(map);
	free(prefix);
	unit_rmtree(dir);
}

/* Writes past the committed size that never got committed leave bytes in the tail of the
 * last block; after a crash, growing the file must still show zeros there. */
static void test_unsynced_tail(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	uint8_t buf[BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov;
	int status = 0;
	pid_t pid;

	base_init(&b, 50, 71);
	model_init(&m, &b, MIB);
	ov = ov_open(prefix, &b);
	fill_random(buf, sizeof(buf), 72);
	ov_write(ov, &b, &m, buf, 100, 0);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	pid = fork();
	if (pid == 0) {		/* killed without fsync or close */
		if (ic_overlay_write(ov, buf, 100, 200, t_base_read, &b) != 100)
			_exit(1);
		free(prefix);		/* only to keep valgrind's report of the child clean */
		free(dir);
		kill(getpid(), SIGKILL);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ic_overlay_close(ov);
	ov = ov_open(prefix, &b);
	CHECK_EQ(ic_overlay_size(ov), 100);
	CHECK_EQ(ic_overlay_truncate(ov, BS), 0);
	model_truncate(&m, BS);
	check_all(ov, &b, &m);
	ic_overlay_close(ov);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* ---- threads ------------------------------------------------------------------ */

#define TH_WRITERS 3
#define TH_READERS 3
#define TH_REGION 64			/* blocks per writer */
#define TH_BASE_BLOCKS 64
#define TH_BLOCKS (TH_WRITERS * TH_REGION + 8)

struct th_shared {
	struct ic_overlay *ov;
	struct tbase *b;
	uint64_t last[TH_BLOCKS];	/* each block's latest stamp, written by its owner */
	int writers_left;		/* atomic */
	int bad;			/* atomic */
};

struct th_arg {
	struct th_shared *sh;
	int id;
};

static uint64_t base_stamp(uint64_t blk)
{
	return 0xba5e000000000000ull | blk;
}

/* Every block a reader sees is whole: one stamp repeated, and a stamp that belongs there. */
static bool th_block_ok(const uint64_t *w, uint64_t blk)
{
	uint64_t v = w[0];

	for (unsigned i = 1; i < BS / 8; i++)
		if (w[i] != v)
			return false;
	if (v == 0 || (blk < TH_BASE_BLOCKS && v == base_stamp(blk)))
		return true;
	return (v >> 56) == blk / TH_REGION + 1 && (v & 0xfffff) == blk;
}

static void *th_writer(void *p)
{
	struct th_arg *a = p;
	struct th_shared *sh = a->sh;
	uint64_t rng = 1000 + (uint64_t)a->id, *buf = malloc(16 * BS);

	for (uint64_t seq = 1; seq <= 1500; seq++) {
		uint64_t first = unit_rnd_below(&rng, TH_REGION), n = 1 + unit_rnd_below(&rng, 16);
		uint64_t blk0 = (uint64_t)a->id * TH_REGION + first;

		n = min_u64(n, TH_REGION - first);
		for (uint64_t i = 0; i < n; i++) {
			uint64_t v = (uint64_t)(a->id + 1) << 56 | seq << 20 | (blk0 + i);

			for (unsigned j = 0; j < BS / 8; j++)
				buf[i * BS / 8 + j] = v;
			sh->last[blk0 + i] = v;
		}
		if (ic_overlay_write(sh->ov, buf, n * BS, blk0 * BS, t_base_read, sh->b) !=
		    (ssize_t)(n * BS))
			__atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
	}
	__atomic_fetch_sub(&sh->writers_left, 1, __ATOMIC_RELEASE);
	free(buf);
	return NULL;
}

static void *th_reader(void *p)
{
	struct th_arg *a = p;
	struct th_shared *sh = a->sh;
	uint64_t rng = 2000 + (uint64_t)a->id, *buf = malloc(64 * BS);

	while (__atomic_load_n(&sh->writers_left, __ATOMIC_ACQUIRE) > 0) {
		uint64_t first = unit_rnd_below(&rng, TH_BLOCKS), n = 1 + unit_rnd_below(&rng, 64);
		ssize_t got = ic_overlay_read(sh->ov, buf, n * BS, first * BS, t_base_read, sh->b);

		if (got < 0 || got % (ssize_t)BS)
			__atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
		for (ssize_t i = 0; got > 0 && i < got / (ssize_t)BS; i++)
			if (!th_block_ok(buf + i * (ssize_t)(BS / 8), first + (uint64_t)i))
				__atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	return NULL;
}

static void *th_syncer(void *p)
{
	struct th_shared *sh = p;

	while (__atomic_load_n(&sh->writers_left, __ATOMIC_ACQUIRE) > 0) {
		if (ic_overlay_fsync(sh->ov))
			__atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
		usleep(2000);
	}
	return NULL;
}

static void th_check_final(struct th_shared *sh)
{
	uint64_t *buf = malloc(TH_BLOCKS * BS);
	ssize_t got = ic_overlay_read(sh->ov, buf, TH_BLOCKS * BS, 0, t_base_read, sh->b);

	CHECK(got > 0 && got % (ssize_t)BS == 0);
	for (uint64_t blk = 0; got > 0 && blk < (uint64_t)got / BS; blk++) {
		uint64_t want = sh->last[blk] ? sh->last[blk] :
				blk < TH_BASE_BLOCKS ? base_stamp(blk) : 0;

		CHECK(th_block_ok(buf + blk * BS / 8, blk) && buf[blk * BS / 8] == want);
	}
	free(buf);
}

static void test_threads(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	pthread_t w[TH_WRITERS], r[TH_READERS], s;
	struct th_arg wa[TH_WRITERS], ra[TH_READERS];
	struct th_shared *sh = calloc(1, sizeof(*sh));
	struct tbase b;

	base_init(&b, TH_BASE_BLOCKS * BS, 0);
	for (uint64_t blk = 0; blk < TH_BASE_BLOCKS; blk++)
		for (unsigned j = 0; j < BS / 8; j++)
			memcpy(b.bytes + blk * BS + j * 8, &(uint64_t){ base_stamp(blk) }, 8);
	sh->ov = ov_open(prefix, &b);
	sh->b = &b;
	sh->writers_left = TH_WRITERS;
	for (int i = 0; i < TH_WRITERS; i++) {
		wa[i] = (struct th_arg){ sh, i };
		CHECK_EQ(pthread_create(&w[i], NULL, th_writer, &wa[i]), 0);
	}
	for (int i = 0; i < TH_READERS; i++) {
		ra[i] = (struct th_arg){ sh, i };
		CHECK_EQ(pthread_create(&r[i], NULL, th_reader, &ra[i]), 0);
	}
	CHECK_EQ(pthread_create(&s, NULL, th_syncer, sh), 0);
	for (int i = 0; i < TH_WRITERS; i++)
		pthread_join(w[i], NULL);
	for (int i = 0; i < TH_READERS; i++)
		pthread_join(r[i], NULL);
	pthread_join(s, NULL);
	CHECK_EQ(sh->bad, 0);
	th_check_final(sh);
	ic_overlay_close(sh->ov);
	sh->ov = ov_open(prefix, &b);
	th_check_final(sh);
	ic_overlay_close(sh->ov);
	CHECK_EQ(b.bad, 0);
	free(sh);
	free(b.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* ---- SIGKILL at random moments ------------------------------------------------ */

#define CR_ROUNDS 24
#define CR_OPS 1500
#define CR_CAP MIB
#define CR_SYNCED 0x80000000u		/* pipe message: op i was fsync'd */

struct cr_op {
	bool trunc, sync;
	uint64_t off, len, seed;
};

/* The next operation of a child, also applied to the model; the parent replays it. */
static void cr_step(uint64_t *rng, struct model *m, struct cr_op *op, uint8_t *buf)
{
	memset(op, 0, sizeof(*op));
	if (unit_rnd_below(rng, 40) == 0) {
		op->trunc = true;
		op->off = unit_rnd_below(rng, CR_CAP);
		model_truncate(m, op->off);
	} else {
		op->off = unit_rnd_below(rng, min_u64(m->size + 32 * 1024, CR_CAP - 1));
		if (unit_rnd_below(rng, 2))
			op->off = op->off / BS * BS;
		op->len = min_u64(1 + unit_rnd_below(rng, 4 * BS), CR_CAP - op->off);
		op->seed = unit_rnd(rng);
		fill_random(buf, op->len, op->seed);
		model_write(m, buf, op->len, op->off);
	}
	op->sync = unit_rnd_below(rng, 25) == 0;
}

static void cr_child(const char *prefix, struct tbase *b, struct model *m, uint64_t seed,
		     int fd)
{
	uint8_t *buf = malloc(CR_CAP);
	struct ic_overlay *ov;
	struct cr_op op;

	if (ic_overlay_open(prefix, b->size, NULL, &ov))
		_exit(2);
	for (uint32_t i = 1; i <= CR_OPS; i++) {
		if (write(fd, &i, 4) != 4)
			_exit(2);
		cr_step(&seed, m, &op, buf);
		if (op.trunc ? ic_overlay_truncate(ov, op.off) :
			       ic_overlay_write(ov, buf, op.len, op.off, t_base_read, b) !=
				       (ssize_t)op.len)
			_exit(2);
		if (op.sync) {
			uint32_t msg = i | CR_SYNCED;

			if (ic_overlay_fsync(ov) || write(fd, &msg, 4) != 4)
				_exit(2);
		}
	}
	for (;;)
		pause();
}

/* Per block, the hashes of every content it may show: its state after the last reported
 * fsync, then each later version.  Only the part below the recovered size is compared. */
struct cr_cands {
	uint64_t *h;
	size_t n, cap;
};

static uint64_t cr_vis(uint64_t blk, uint64_t size)
{
	return blk * BS >= size ? 0 : min_u64(BS, size - blk * BS);
}

static void cr_add(struct cr_cands *c, const struct model *m, uint64_t blk, uint64_t size)
{
	uint64_t h = XXH3_64bits(m->bytes + blk * BS, cr_vis(blk, size));

	if (c[blk].n == c[blk].cap) {
		c[blk].cap = c[blk].cap ? 2 * c[blk].cap : 8;
		c[blk].h = realloc(c[blk].h, c[blk].cap * sizeof(uint64_t));
	}
	c[blk].h[c[blk].n++] = h;
}

static bool cr_has(const struct cr_cands *c, uint64_t h)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->h[i] == h)
			return true;
	return false;
}

struct cr_report {
	uint32_t synced, started;
};

/* Replay the child's operations from the baseline, collecting each block's versions from
 * the last reported fsync on; true if size was the file's size at one of those points. */
static bool cr_collect(const struct model *base_m, uint64_t seed, struct cr_report rep,
		       uint64_t size, struct cr_cands *c)
{
	struct model m = { malloc(CR_CAP), base_m->size, CR_CAP };
	uint8_t *buf = malloc(CR_CAP);
	struct cr_op op = { 0 };
	bool size_ok = false;

	memcpy(m.bytes, base_m->bytes, CR_CAP);
	for (uint32_t i = 0; i <= rep.started; i++) {
		uint64_t lo = 0, hi = CR_CAP / BS;

		if (i)
			cr_step(&seed, &m, &op, buf);
		if (i < rep.synced)
			continue;
		if (i > rep.synced && !op.trunc) {
			lo = op.off / BS;
			hi = (op.off + op.len + BS - 1) / BS;
		} else if (i > rep.synced) {
			lo = op.off / BS;
		}
		for (uint64_t blk = lo; blk < hi; blk++)
			cr_add(c, &m, blk, size);
		size_ok |= m.size == size;
		if (getenv("IC_TEST_DEBUG"))
			fprintf(stderr, "op %u: %s %" PRIu64 "+%" PRIu64 " size %" PRIu64 "\n", i,
				op.trunc ? "trunc" : "write", op.off, op.len, m.size);
	}
	free(m.bytes);
	free(buf);
	return size_ok;
}

static bool cr_verify(const struct model *base_m, uint64_t seed, struct cr_report rep,
		      const uint8_t *got, uint64_t size)
{
	struct cr_cands *c = calloc(CR_CAP / BS, sizeof(*c));
	bool ok = cr_collect(base_m, seed, rep, size, c);

	if (!ok)
		fprintf(stderr, "crash: recovered size %" PRIu64 " was never the size after op %u\n",
			size, rep.synced);
	for (uint64_t blk = 0; ok && blk * BS < size; blk++) {
		if (!cr_has(&c[blk], XXH3_64bits(got + blk * BS, cr_vis(blk, size)))) {
			fprintf(stderr, "crash: block %" PRIu64 " holds no version written to it "
				"(fsync'd through op %u, started %u)\n", blk, rep.synced, rep.started);
			ok = false;
		}
	}
	for (uint64_t blk = 0; blk < CR_CAP / BS; blk++)
		free(c[blk].h);
	free(c);
	return ok;
}

static struct cr_report cr_read_reports(int fd)
{
	struct cr_report rep = { 0, 0 };
	uint32_t msg;

	while (read(fd, &msg, 4) == 4) {
		if (msg & CR_SYNCED)
			rep.synced = msg & ~CR_SYNCED;
		else
			rep.started = msg;
	}
	return rep;
}

/* One round: a child works on the overlay and is killed; the recovered overlay must hold
 * every fsync'd write and, per block, some version that was written to it. */
static bool cr_round(const char *prefix, struct tbase *b, struct model *m, uint64_t seed,
		     unsigned delay_us, struct cr_report *rep_out)
{
	struct cr_report rep;
	struct ic_overlay *ov;
	int fds[2], status = 0;
	uint64_t size;
	uint8_t *got;
	bool ok;
	pid_t pid;

	CHECK_EQ(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		cr_child(prefix, b, m, seed, fds[1]);
	}
	close(fds[1]);
	usleep(delay_us);
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	rep = cr_read_reports(fds[0]);
	*rep_out = rep;
	close(fds[0]);

	ov = ov_open(prefix, b);
	if (!ov)
		return false;
	got = calloc(1, CR_CAP);
	size = ic_overlay_size(ov);
	CHECK(size <= CR_CAP);
	CHECK_EQ(ic_overlay_read(ov, got, CR_CAP, 0, t_base_read, b), size);
	ok = cr_verify(m, seed, rep, got, size);
	memcpy(m->bytes, got, CR_CAP);		/* the next round starts from here */
	m->size = size;
	ic_overlay_close(ov);
	free(got);
	return ok;
}

static void test_crash(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	const char *env = getenv("IC_TEST_SEED");
	uint64_t rng = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	unsigned synced = 0, started = 0, killed_early = 0, killed_late = 0;
	struct cr_report rep;
	struct tbase b;
	struct model m;

	fprintf(stderr, "crash test seed %" PRIu64 "\n", rng);
	base_init(&b, 200000, 61);
	model_init(&m, &b, CR_CAP);
	for (int round = 0; round < CR_ROUNDS; round++) {
		unsigned delay = round % 4 == 0 ? (unsigned)unit_rnd_below(&rng, 2000) :
				 (unsigned)unit_rnd_below(&rng, 80000);

		if (!cr_round(prefix, &b, &m, unit_rnd(&rng), delay, &rep)) {
			fprintf(stderr, "crash: round %d (delay %u us) failed\n", round, delay);
			CHECK(0);
			break;
		}
		synced += rep.synced;
		started += rep.started;
		killed_early += rep.started < 50;
		killed_late += rep.started == CR_OPS;
	}
	fprintf(stderr, "crash: %d rounds, %u operations started, %u of them fsync'd; "
		"%u kills in the first 50 operations, %u after the last\n", CR_ROUNDS, started,
		synced, killed_early, killed_late);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

/* ---- binding -------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *p;

	CHECK(fd >= 0);
	CHECK_EQ(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	p = malloc(*len ? *len : 1);
	CHECK_EQ(pread(fd, p, *len, 0), *len);
	close(fd);
	return p;
}

static bool same_file(const char *path, const uint8_t *was, size_t len)
{
	size_t n;
	uint8_t *now = slurp(path, &n);
	bool same = n == len && !memcmp(now, was, len);

	free(now);
	return same;
}

static void bind_make(struct ic_overlay_bind *bd, uint8_t fill, const char *label)
{
	memset(bd, 0, sizeof(*bd));
	memset(bd->id, fill, sizeof(bd->id));
	snprintf(bd->label, sizeof(bd->label), "%s", label);
}

/* ov_open's check of a refusal: -ESTALE, no overlay, a message matching both parts, and
 * neither file changed. */
static void check_refused(const char *prefix, uint64_t size, const struct ic_overlay_bind *bd,
			  const char *want1, const char *want2)
{
	char *map = with_suffix(prefix, ".map"), *data = with_suffix(prefix, ".data");
	size_t nm, nd;
	uint8_t *m = slurp(map, &nm), *d = slurp(data, &nd);
	struct ic_overlay *ov = (struct ic_overlay *)1;
	const char *msg;

	CHECK_EQ(ic_overlay_open(prefix, size, bd, &ov), -ESTALE);
	CHECK(ov == NULL);
	msg = ic_last_error(-ESTALE);
	if (!strstr(msg, want1) || !strstr(msg, want2))
		fprintf(stderr, "message: %s\n", msg);
	CHECK(strstr(msg, want1) && strstr(msg, want2));
	CHECK(strstr(msg, map) != NULL);
	CHECK(same_file(map, m, nm));
	CHECK(same_file(data, d, nd));
	free(m);
	free(d);
	free(map);
	free(data);
}

/* An overlay opens only over the base it was made on (its binding id and size); a version
 * 1 map, which recorded no binding, is refused; a refusal writes nothing. */
static void test_binding(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir), *map = with_suffix(prefix, ".map");
	struct ic_overlay_bind a, other, ctl;
	uint8_t blk[BS], hdr[2 * 4096];
	struct tbase b;
	struct ic_overlay *ov;

	base_init(&b, 5 * BS + 3, 61);
	bind_make(&a, 0xa1, "point A");
	bind_make(&other, 0xb2, "point B");
	CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
	fill_block(blk, 'A');
	ov_write(ov, &b, NULL, blk, BS, BS);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	ic_overlay_close(ov);

	/* the same binding: the writes are back */
	CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
	CHECK(block_is(ov, &b, BS, 'A'));
	ic_overlay_close(ov);
	/* another id (same size), no binding, one byte of the id changed, another size */
	check_refused(prefix, b.size, &other, "overlay made on point A", "not on point B");
	check_refused(prefix, b.size, NULL, "made on point A", "not on an unnamed base");
	ctl = a;
	ctl.id[IC_OVERLAY_BIND_LEN - 1] ^= 1;
	check_refused(prefix, b.size, &ctl, "made on point A", "not on point A");
	check_refused(prefix, b.size + 1, &a, "made over a base of", "bytes");
	/* a label is recorded printable */
	bind_make(&ctl, 0xc3, "bad\033[31m label");
	CHECK_EQ(ic_overlay_open(prefix, b.size, &ctl, &ov), -ESTALE);
	CHECK(strstr(ic_last_error(-ESTALE), "not on bad?[31m label") != NULL);

	/* version 1: the same header without binding, label and version 2 */
	map_io(map, hdr, sizeof(hdr), 0, false);
	for (int i = 0; i < 2; i++) {
		uint8_t *h = hdr + i * 4096;
		uint32_t v1 = htole32(1);
		uint64_t sum;

		if (memcmp(h, "ICOVLMAP", 8))
			continue;
		memcpy(h + 8, &v1, 4);
		memset(h + 56, 0, 8 + 48 + 256);
		sum = htole64(XXH3_64bits(h, 4096));
		memcpy(h + 56, &sum, 8);
	}
	map_io(map, hdr, sizeof(hdr), 0, true);
	check_refused(prefix, b.size, &a, "overlay of version 1", "refused for point A");
	check_refused(prefix, b.size, NULL, "overlay of version 1", "refused for an unnamed base");
	free(b.bytes);
	free(map);
	free(prefix);
	unit_rmtree(dir);
}

/* Set the generation of the map's valid header slots (at 24), or of page 0's valid slots
 * (at 8 of each), to gen, with their checksums fixed. */
static void set_generation(const char *map, bool page, uint64_t gen)
{
	uint64_t base = page ? 8192 : 0, le = htole64(gen);
	size_t sum_at = page ? 24 : 56;
	struct stat st;

	CHECK_EQ(stat(map, &st), 0);
	for (int i = 0; i < 2; i++) {
		uint8_t h[4096];
		uint64_t sum;

		if (base + (i + 1) * 4096u > (uint64_t)st.st_size)
			continue;
		map_io(map, h, sizeof(h), base + i * 4096u, false);
		if (page ? le32toh(*(uint32_t *)h) != 0x50564f49u : memcmp(h, "ICOVLMAP", 8) != 0)
			continue;
		memcpy(h + (page ? 8 : 24), &le, 8);
		memset(h + sum_at, 0, 8);
		sum = htole64(XXH3_64bits(h, 4096));
		memcpy(h + sum_at, &sum, 8);
		map_io(map, h, sizeof(h), base + i * 4096u, true);
	}
}

/* A generation that a commit cannot go past (the storage host wrote it; no overlay
 * commits 2^63 times) is damage: refused with the file named, files untouched.  Before,
 * a header of generation 2^64 - 1 opened, the next commit wrote generation 0 beside it,
 * and a reopen found the old header again: a synced write was lost (fuzz_overlay). */
static void test_generation_limit(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir), *map = with_suffix(prefix, ".map");
	char *data = with_suffix(prefix, ".data");
	uint64_t gens[] = { UINT64_MAX, 1ull << 63 };
	struct ic_overlay_bind a;
	uint8_t blk[BS];
	struct tbase b;
	struct ic_overlay *ov;

	base_init(&b, 4 * BS, 17);
	bind_make(&a, 0xd4, "point D");
	for (int page = 0; page < 2; page++) {
		for (size_t g = 0; g < sizeof(gens) / sizeof(gens[0]); g++) {
			unlink(map);
			unlink(data);
			CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
			fill_block(blk, 'G');
			ov_write(ov, &b, NULL, blk, BS, 0);
			CHECK_EQ(ic_overlay_fsync(ov), 0);
			ic_overlay_close(ov);
			set_generation(map, page, gens[g]);
			ov = (struct ic_overlay *)1;
			CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), IC_ECORRUPT);
			CHECK(ov == NULL);
			CHECK(strstr(ic_last_error(IC_ECORRUPT), "generation") != NULL);
			CHECK(strstr(ic_last_error(IC_ECORRUPT), map) != NULL);
		}
	}
	/* the largest generation allowed still commits, and a reopen sees the write */
	unlink(map);
	unlink(data);
	CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
	ov_write(ov, &b, NULL, blk, BS, 0);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	ic_overlay_close(ov);
	set_generation(map, false, (1ull << 63) - 2);
	set_generation(map, true, (1ull << 63) - 2);
	CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
	fill_block(blk, 'H');
	ov_write(ov, &b, NULL, blk, BS, BS);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	ic_overlay_close(ov);
	CHECK_EQ(ic_overlay_open(prefix, b.size, &a, &ov), 0);
	CHECK(block_is(ov, &b, 0, 'G'));
	CHECK(block_is(ov, &b, BS, 'H'));
	ic_overlay_close(ov);
	free(b.bytes);
	free(data);
	free(map);
	free(prefix);
	unit_rmtree(dir);
}

/* A release (FORMAT.md 10.7) commits what was written, then the overlay never changes its
 * files again: writes and truncates fail with EROFS, fsync and close commit nothing, so the
 * next owner's commits survive the old owner's close. */
static void test_release(void)
{
	char *dir = unit_tmpdir(), *prefix = prefix_in(dir);
	uint8_t buf[2 * BS], got[BS];
	struct tbase b;
	struct model m;
	struct ic_overlay *ov, *next, *again;

	base_init(&b, 8 * BS, 21);
	model_init(&m, &b, MIB);
	ov = ov_open(prefix, &b);
	fill_random(buf, sizeof(buf), 22);
	ov_write(ov, &b, &m, buf, BS + 100, 3);            /* not synced */
	CHECK_EQ(ic_overlay_release(ov), 0);
	CHECK_EQ(ic_overlay_write(ov, buf, 10, 0, t_base_read, &b), -EROFS);
	CHECK_EQ(ic_overlay_truncate(ov, BS), -EROFS);
	CHECK_EQ(ic_overlay_fsync(ov), 0);
	CHECK_EQ(ic_overlay_release(ov), 0);               /* twice is harmless */
	check_all(ov, &b, &m);                              /* reads go on */
	/* the next owner finds every write, and writes on */
	next = ov_open(prefix, &b);
	check_all(next, &b, &m);
	ov_write(next, &b, &m, buf + 7, BS, 5 * BS);
	CHECK_EQ(ic_overlay_fsync(next), 0);
	ic_overlay_close(ov);                               /* commits nothing */
	ic_overlay_close(next);
	again = ov_open(prefix, &b);
	check_all(again, &b, &m);
	CHECK_EQ(ic_overlay_read(again, got, BS, 5 * BS, t_base_read, &b), BS);
	CHECK(!memcmp(got, buf + 7, BS));
	ic_overlay_close(again);
	free(b.bytes);
	free(m.bytes);
	free(prefix);
	unit_rmtree(dir);
}

int main(void)
{
	RUN(test_fresh_and_persist);
	RUN(test_shrink_grow);
	RUN(test_base_errors);
	RUN(test_base_runs);
	RUN(test_random_model);
	RUN(test_torn_commit);
	RUN(test_unsynced_tail);
	RUN(test_threads);
	RUN(test_crash);
	RUN(test_binding);
	RUN(test_generation_limit);
	RUN(test_release);
	UNIT_EXIT();
}
