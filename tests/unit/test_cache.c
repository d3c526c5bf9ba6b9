/* test_cache.c: the decoded-block cache over a real chain made by ic_backup(): exact
 * bytes at every alignment, records shared between points, concurrent readers,
 * eviction under a tiny budget, references surviving eviction, readahead, drop-behind
 * of a steady sequential stream, whole blocks of a steady stream decoded straight into
 * the reader's buffer, and a damaged record cached as an error for its block only (on
 * that path too). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "imgchain.h"
#include "ic_cache.h"
#include "unit.h"

#define BS 65536u
#define NBLK 160u                   /* 10 MiB disk, plus a short tail */
#define TAIL 12345u
#define DISK ((uint64_t)NBLK * BS + TAIL)

static char *dir, *chain;
static uint8_t *src0, *src1;        /* the disk at the two points */
static struct ic_chain *ch;
static struct ic_key *key;
static struct ic_view *v0, *v1;

/* Blocks: every 5th zero, every 3rd compressible text, the rest random. */
static void make_disk(uint8_t *d, uint64_t seed)
{
	for (uint64_t off = 0; off < DISK; off += 8) {
		uint64_t b = off / BS, x = unit_rnd(&seed);
		size_t n = DISK - off < 8 ? (size_t)(DISK - off) : 8;

		if (b % 5 == 1)
			x = 0;
		else if (b % 3 == 0)
			x = 0x2020656e696c2061ull + (off / 64);
		memcpy(d + off, &x, n);
	}
}

static void write_file(const char *path, const uint8_t *d)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(ic_pwrite_full(fd, d, DISK, 0, path) == 0);
	close(fd);
}

static int backup(const char *source, const char *name)
{
	struct ic_backup_opts o = {
		.chain_dir = chain, .source = source, .name = name, .quiet = true, .level = 3,
	};
	struct ic_backup_stats st;

	return ic_backup(&o, &st);
}

/* Point "one", then "two" with 12 blocks changed (two of them to zeros). */
static void setup(void)
{
	char *f0, *f1;

	dir = unit_tmpdir();
	chain = ic_path_join(dir, "chain");
	f0 = ic_path_join(dir, "d0");
	f1 = ic_path_join(dir, "d1");
	src0 = malloc(DISK);
	src1 = malloc(DISK);
	make_disk(src0, 1);
	memcpy(src1, src0, DISK);
	for (unsigned i = 0; i < 12; i++) {
		uint64_t b = 7 + i * 13, s = 99 + i;

		for (uint64_t k = 0; k < BS; k++)
			src1[b * BS + k] = i >= 10 ? 0 : (uint8_t)unit_rnd(&s);
	}
	write_file(f0, src0);
	write_file(f1, src1);
	setenv("IMGCHAIN_PASSPHRASE", "cache test passphrase", 1);
	CHECK_EQ(backup(f0, "one"), 0);
	CHECK_EQ(backup(f1, "two"), 0);
	CHECK_EQ(ic_chain_open(chain, &ch), 0);
	CHECK_EQ(ch->npoints, 2);
	CHECK_EQ(ic_key_unlock(chain, NULL, &key), 0);
	CHECK_EQ(ic_view_open(ch, ic_chain_find(ch, "one"), &v0), 0);
	CHECK_EQ(ic_view_open(ch, ic_chain_find(ch, "two"), &v1), 0);
	free(f0);
	free(f1);
}

static struct ic_cache *new_cache(uint64_t bytes, int workers)
{
	struct ic_cache_opts o = { .max_bytes = bytes, .workers = workers };
	struct ic_cache *c = ic_cache_new(BS, key, &o);

	CHECK(c != NULL);
	return c;
}

/* Read the whole disk in chunks of n at a starting skew, compare with want. */
static bool read_all(struct ic_cache_src *s, const uint8_t *want, size_t n, uint64_t skew,
		     struct ic_cache_stream *st)
{
	uint8_t *buf = malloc(n);
	bool ok = true;

	if (skew) {
		CHECK_EQ(ic_cache_read(s, st, buf, skew, 0), 0);
		ok &= !memcmp(buf, want, skew);
	}
	for (uint64_t off = skew; off < DISK; off += n) {
		size_t len = DISK - off < n ? (size_t)(DISK - off) : n;

		if (ic_cache_read(s, st, buf, len, off)) {
			ok = false;
			break;
		}
		ok &= !memcmp(buf, want + off, len);
	}
	free(buf);
	return ok;
}

static void test_exact_bytes(void)
{
	static const size_t sizes[] = { 511, 4096, 65536, 131072 + 17, 1u << 20 };
	struct ic_cache *c = new_cache(0, 0);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0), *s1 = ic_cache_src_new(c, v1);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		struct ic_cache_stream st = { 0 };

		CHECK(read_all(s0, src0, sizes[i], i * 1000, &st));
		CHECK(read_all(s1, src1, sizes[i], i * 777, NULL));
	}
	/* single bytes around a block boundary and at the very end */
	for (uint64_t off = BS - 3; off < BS + 3; off++) {
		uint8_t b;

		CHECK_EQ(ic_cache_read(s1, NULL, &b, 1, off), 0);
		CHECK_EQ(b, src1[off]);
	}
	{
		uint8_t b;

		CHECK_EQ(ic_cache_read(s1, NULL, &b, 1, DISK - 1), 0);
		CHECK_EQ(b, src1[DISK - 1]);
		CHECK(ic_cache_read(s1, NULL, &b, 1, DISK) < 0);
	}
	ic_cache_src_free(s0);
	ic_cache_src_free(s1);
	ic_cache_free(c);
}

/* Point two shares all but 12 records with point one: reading it second decodes only
 * those, as the cache is keyed by record, not by point. */
static void test_shared_records(void)
{
	struct ic_cache *c = new_cache(0, -1);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0), *s1 = ic_cache_src_new(c, v1);
	struct ic_cache_stats a, b;

	CHECK(read_all(s0, src0, BS, 0, NULL));
	ic_cache_get_stats(c, &a);
	CHECK(read_all(s1, src1, BS, 0, NULL));
	ic_cache_get_stats(c, &b);
	CHECK_EQ(b.decoded - a.decoded, 10);    /* 12 changed, 2 of them now zero blocks */
	CHECK(b.hits > a.hits);
	ic_cache_src_free(s0);
	ic_cache_src_free(s1);
	ic_cache_free(c);
}

/* A reference stays valid and unchanged while eviction churns everything else. */
static void test_eviction_and_refs(void)
{
	struct ic_cache *c = new_cache(16 * BS, 0);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0);
	struct ic_cache_stats st;
	struct ic_cache_ref held;

	CHECK_EQ(ic_cache_get(s0, 2, &held), 0);
	CHECK(held.e != NULL);
	CHECK_EQ(held.len, BS);
	for (int round = 0; round < 3; round++)
		CHECK(read_all(s0, src0, 3 * BS + 5, (uint64_t)round * 4096, NULL));
	CHECK(!memcmp(held.data, src0 + 2 * BS, BS));
	ic_cache_get_stats(c, &st);
	CHECK(st.evictions > 0);
	/* the budget is kept per shard: at most the budget plus what references pin */
	CHECK(st.bytes <= st.max_bytes + 16 * (BS + 256));
	ic_cache_put(s0, &held);
	/* zero blocks never take space */
	CHECK_EQ(ic_cache_get(s0, 1, &held), 0);
	CHECK(held.e == NULL);
	CHECK(ic_is_zero(held.data, BS));
	ic_cache_put(s0, &held);
	ic_cache_src_free(s0);
	ic_cache_free(c);
}

struct reader {
	struct ic_cache_src *s;
	const uint8_t *want;
	uint64_t seed;
	bool sequential;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct ic_cache_stream st = { 0 };
	uint8_t *buf = malloc(256 * 1024);

	for (int i = 0; i < 400; i++) {
		uint64_t len = 1 + unit_rnd(&r->seed) % (256 * 1024);
		uint64_t off = r->sequential ? (uint64_t)i * 131072 % DISK :
					       unit_rnd(&r->seed) % DISK;

		if (off + len > DISK)
			len = DISK - off;
		if (ic_cache_read(r->s, &st, buf, len, off) || memcmp(buf, r->want + off, len))
			r->bad++;
	}
	free(buf);
	return NULL;
}

/* Eight threads, random and sequential, two points, a cache smaller than the disk. */
static void test_concurrency(void)
{
	struct ic_cache *c = new_cache(48 * BS, 2);
	struct ic_cache_src *s[2] = { ic_cache_src_new(c, v0), ic_cache_src_new(c, v1) };
	struct reader r[8];
	pthread_t t[8];
	struct ic_cache_stats st;

	for (int i = 0; i < 8; i++) {
		r[i] = (struct reader){ .s = s[i % 2], .want = i % 2 ? src1 : src0,
					.seed = 1000 + (uint64_t)i, .sequential = i < 2 };
		pthread_create(&t[i], NULL, reader_main, &r[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ(r[i].bad, 0);
	}
	ic_cache_get_stats(c, &st);
	CHECK(st.evictions > 0);
	CHECK(st.ra_queued > 0);
	ic_cache_src_free(s[0]);
	ic_cache_src_free(s[1]);
	ic_cache_free(c);
}

/* Sequential reading queues readahead; freeing the source with jobs queued is safe. */
static void test_readahead(void)
{
	struct ic_cache *c = new_cache(0, 2);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0);
	struct ic_cache_stream st = { 0 };
	struct ic_cache_stats a;
	uint8_t buf[4096];

	for (uint64_t off = 0; off < 8 * BS; off += sizeof(buf)) {
		CHECK_EQ(ic_cache_read(s0, &st, buf, sizeof(buf), off), 0);
		CHECK(!memcmp(buf, src0 + off, sizeof(buf)));
	}
	CHECK(st.window > 1);
	ic_cache_get_stats(c, &a);
	CHECK(a.ra_queued > 8);
	ic_cache_prefetch(s0, 0, NBLK + 1);
	ic_cache_src_free(s0);  /* cancels what is queued, waits for what runs */
	ic_cache_free(c);
}

static uint64_t data_blocks(const struct ic_view *v, uint64_t from)
{
	uint64_t n = 0;

	for (uint64_t pos = from; pos < v->nblocks; pos++) {
		struct ic_block_ref br;

		CHECK_EQ(ic_view_lookup(v, pos, &br), 0);
		n += br.img != NULL;
	}
	return n;
}

/* A steady sequential stream frees the blocks it consumed (drop-behind): each block
 * decoded once, the cache's memory stays near the readahead window, a block another
 * reader used before stays cached, and a dropped block reads back right. */
static void test_drop_behind(void)
{
	struct ic_cache_opts o = { .workers = 2, .readahead_bytes = 1u << 20 };
	struct ic_cache *c = ic_cache_new(BS, key, &o);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0);
	struct ic_cache_stream st = { 0 };
	struct ic_cache_stats a, b;
	uint64_t kept = NBLK - 10, again = NBLK - 30, ndata = data_blocks(v0, 0);
	uint8_t buf[BS];

	CHECK(ndata > 100);
	CHECK(v0->owner[kept] && v0->owner[again]);     /* data blocks, not zeros */
	CHECK_EQ(ic_cache_read(s0, NULL, buf, BS, kept * BS), 0);    /* a random reader */
	CHECK(read_all(s0, src0, 1u << 20, 0, &st));
	ic_cache_get_stats(c, &a);
	CHECK_EQ(a.decoded, ndata);
	CHECK(a.dropped > ndata * 2 / 3);    /* steady from the third 1 MiB read on */
	CHECK(a.dropped < ndata);
	CHECK(a.bytes < (ndata - a.dropped / 2) * BS);
	CHECK_EQ(a.errors, 0);
	/* the block the random reader had used is still there */
	CHECK_EQ(ic_cache_read(s0, NULL, buf, BS, kept * BS), 0);
	CHECK(!memcmp(buf, src0 + kept * BS, BS));
	ic_cache_get_stats(c, &b);
	CHECK_EQ(b.decoded, a.decoded);
	CHECK_EQ(b.hits, a.hits + 1);
	/* a dropped one is decoded again, byte for byte */
	CHECK_EQ(ic_cache_read(s0, NULL, buf, BS, again * BS), 0);
	CHECK(!memcmp(buf, src0 + again * BS, BS));
	ic_cache_get_stats(c, &b);
	CHECK_EQ(b.decoded, a.decoded + 1);
	/* and a second stream over the disk reads it right again */
	memset(&st, 0, sizeof(st));
	CHECK(read_all(s0, src0, 1u << 20, 4096, &st));
	ic_cache_src_free(s0);
	ic_cache_free(c);
}

/* Without workers every block is the reader's to decode: once the stream is steady, whole
 * blocks go straight into its buffer (no block buffer kept: only ghosts), each decoded
 * once, byte for byte; a second stream decodes them again, right. */
static void test_direct(void)
{
	struct ic_cache_opts o = { .workers = -1, .readahead_bytes = 512u << 10 };
	struct ic_cache *c = ic_cache_new(BS, key, &o);
	struct ic_cache_src *s0 = ic_cache_src_new(c, v0);
	struct ic_cache_stream st = { 0 };
	struct ic_cache_stats a, b;
	uint64_t ndata = data_blocks(v0, 0);

	CHECK(read_all(s0, src0, BS, 0, &st));
	ic_cache_get_stats(c, &a);
	CHECK_EQ(a.decoded, ndata);
	CHECK(a.dropped >= ndata - 2);          /* steady from the third read on */
	CHECK(a.direct >= ndata - 2);
	CHECK(a.bytes < 3 * BS + (uint64_t)NBLK * 256);
	CHECK_EQ(a.errors, 0);
	memset(&st, 0, sizeof(st));
	CHECK(read_all(s0, src0, 3 * BS, 4096, &st));   /* unaligned: partial blocks too */
	ic_cache_get_stats(c, &b);
	CHECK(b.decoded >= a.decoded + ndata - 4);
	ic_cache_src_free(s0);
	ic_cache_free(c);
}

/* Wait until the workers ran every queued job (their decoding changes the counters). */
static void settle(struct ic_cache *c)
{
	struct ic_cache_stats st;

	for (int i = 0; i < 5000; i++) {
		ic_cache_get_stats(c, &st);
		if (st.ra_done == st.ra_queued)
			return;
		usleep(1000);
	}
	CHECK(!"readahead jobs still running after 5 s");
}

static int errors_seen;

static void on_error(void *arg, int err, const char *msg)
{
	(void)arg;
	CHECK_EQ(err, IC_ECORRUPT);
	CHECK(strstr(msg, "restore point 'one'") != NULL);
	CHECK(strstr(msg, "block 3 ") != NULL);
	errors_seen++;
}

/* Flip a byte inside block 3's record: that block fails, cached as an error (decoded
 * once, reported once); every other block still reads. */
static void test_corrupt_block(void)
{
	struct ic_cache_opts o = { .workers = 2, .on_error = on_error };
	struct ic_cache *c;
	struct ic_cache_src *s0;
	struct ic_block_ref ref;
	struct ic_cache_stats a, b;
	uint8_t *buf = malloc(4 * BS), byte;
	int fd;

	CHECK_EQ(ic_view_lookup(v0, 3, &ref), 0);
	CHECK(ref.img != NULL);
	fd = open(ref.img->path, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pread(fd, &byte, 1, (off_t)(ref.e.offset + ref.e.stored_len / 2)) == 1);
	byte ^= 0x10;
	CHECK(pwrite(fd, &byte, 1, (off_t)(ref.e.offset + ref.e.stored_len / 2)) == 1);
	c = ic_cache_new(BS, key, &o);
	s0 = ic_cache_src_new(c, v0);
	CHECK_EQ(ic_cache_read(s0, NULL, buf, 4 * BS, 2 * BS), IC_ECORRUPT);
	CHECK_EQ(ic_cache_read(s0, NULL, buf, 10, 3 * BS + 100), IC_ECORRUPT);
	settle(c);      /* the first read queued blocks 3..5 and returned at block 3 */
	ic_cache_get_stats(c, &a);
	CHECK_EQ(a.errors, 1);
	CHECK_EQ(ic_cache_read(s0, NULL, buf, BS, 3 * BS), IC_ECORRUPT);
	ic_cache_get_stats(c, &b);
	CHECK_EQ(b.decoded, a.decoded);         /* the error came from the cache */
	CHECK_EQ(errors_seen, 1);
	CHECK_EQ(ic_cache_read(s0, NULL, buf, 3 * BS, 0), 0);
	CHECK(!memcmp(buf, src0, 3 * BS));
	CHECK_EQ(ic_cache_read(s0, NULL, buf, 4 * BS, 4 * BS), 0);
	CHECK(!memcmp(buf, src0 + 4 * BS, 4 * BS));
	/* a steady stream meets the damaged block on the direct path: the read fails, the
	 * block is reported once more (a new cache) and cached as an error there */
	{
		struct ic_cache_opts od = { .workers = -1, .readahead_bytes = 512u << 10,
					    .on_error = on_error };
		struct ic_cache *cd = ic_cache_new(BS, key, &od);
		struct ic_cache_src *sd = ic_cache_src_new(cd, v0);
		struct ic_cache_stream st = { 0 };
		struct ic_cache_stats d;

		CHECK_EQ(ic_cache_read(sd, &st, buf, BS, 0), 0);
		CHECK_EQ(ic_cache_read(sd, &st, buf, BS, BS), 0);
		CHECK_EQ(ic_cache_read(sd, &st, buf, BS, 2 * BS), 0);   /* steady: direct */
		CHECK(!memcmp(buf, src0 + 2 * BS, BS));
		CHECK_EQ(ic_cache_read(sd, &st, buf, BS, 3 * BS), IC_ECORRUPT);
		CHECK_EQ(errors_seen, 2);
		CHECK_EQ(ic_cache_read(sd, &st, buf, BS, 4 * BS), 0);
		CHECK(!memcmp(buf, src0 + 4 * BS, BS));
		CHECK_EQ(ic_cache_read(sd, NULL, buf, BS, 3 * BS), IC_ECORRUPT);
		CHECK_EQ(errors_seen, 2);
		ic_cache_get_stats(cd, &d);
		CHECK_EQ(d.errors, 1);
		CHECK(d.direct >= 1);
		ic_cache_src_free(sd);
		ic_cache_free(cd);
	}
	/* point two shares the damaged record: the error is the record's, for both */
	{
		struct ic_cache_src *s1 = ic_cache_src_new(c, v1);

		CHECK_EQ(ic_cache_read(s1, NULL, buf, 1, 3 * BS), IC_ECORRUPT);
		CHECK_EQ(ic_cache_read(s1, NULL, buf, BS, 4 * BS), 0);
		ic_cache_src_free(s1);
	}
	ic_cache_src_free(s0);
	ic_cache_free(c);
	byte ^= 0x10;
	CHECK(pwrite(fd, &byte, 1, (off_t)(ref.e.offset + ref.e.stored_len / 2)) == 1);
	close(fd);
	free(buf);
}

int main(void)
{
	setup();
	if (unit_failures)
		return 1;
	RUN(test_exact_bytes);
	RUN(test_shared_records);
	RUN(test_eviction_and_refs);
	RUN(test_concurrency);
	RUN(test_readahead);
	RUN(test_drop_behind);
	RUN(test_direct);
	RUN(test_corrupt_block);
	ic_view_free(v0);
	ic_view_free(v1);
	ic_key_free(key);
	ic_chain_free(ch);
	free(src0);
	free(src1);
	free(chain);
	unit_rmtree(dir);
	UNIT_EXIT();
}
