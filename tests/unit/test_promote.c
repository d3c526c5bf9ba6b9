/* test_promote: the pure parts of the live promote engine: the state file's codec
 * (FORMAT.md 18) and the range lock that orders the copier and guest writes. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_promote.h"
#include "unit.h"

static void test_codec_roundtrip(void)
{
	struct ic_promote_state a = { .phase = IC_PROMOTE_SWITCHED, .size = 1ull << 40,
				      .dev = 2049, .ino = 0, .rdev = UINT64_MAX,
				      .rate = 33554432 }, b;
	char buf[8192];
	int n;

	snprintf(a.dest, sizeof(a.dest), "/dev/disk/by-id/wwn-0x5000 c500");
	n = ic_promote_state_encode(&a, buf, sizeof(buf));
	CHECK(n > 0);
	CHECK(!strcmp(buf, "imgchain-promote 1\nphase switched\nsize 1099511627776\ndev 2049\n"
			   "ino 0\nrdev 18446744073709551615\nrate 33554432\ndest /dev/disk/by-id/wwn-0x5000 c500\n"));
	CHECK_EQ(ic_promote_state_decode(buf, (size_t)n, &b), 0);
	CHECK_EQ(b.phase, IC_PROMOTE_SWITCHED);
	CHECK(b.size == a.size && b.dev == a.dev && b.ino == a.ino && b.rdev == a.rdev &&
	      b.rate == a.rate);
	CHECK(!strcmp(b.dest, a.dest));
	a.phase = IC_PROMOTE_COPYING;
	n = ic_promote_state_encode(&a, buf, sizeof(buf));
	CHECK_EQ(ic_promote_state_decode(buf, (size_t)n, &b), 0);
	CHECK_EQ(b.phase, IC_PROMOTE_COPYING);
	/* too small a buffer, a relative or control-byte dest */
	CHECK_EQ(ic_promote_state_encode(&a, buf, 40), -ENAMETOOLONG);
	snprintf(a.dest, sizeof(a.dest), "rel/path");
	CHECK_EQ(ic_promote_state_encode(&a, buf, sizeof(buf)), -EINVAL);
	snprintf(a.dest, sizeof(a.dest), "/a\nphase switched");
	CHECK_EQ(ic_promote_state_encode(&a, buf, sizeof(buf)), -EINVAL);
}

static int dec(const char *s)
{
	struct ic_promote_state st;

	return ic_promote_state_decode(s, strlen(s), &st);
}

static void test_codec_rejects(void)
{
	const char *good = "imgchain-promote 1\nphase copying\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n";
	char buf[256];

	CHECK_EQ(dec(good), 0);
	/* every strict prefix (a torn file) is refused */
	for (size_t i = 0; i < strlen(good); i++) {
		struct ic_promote_state st;

		memcpy(buf, good, i);
		CHECK_EQ(ic_promote_state_decode(buf, i, &st), IC_ECORRUPT);
	}
	CHECK_EQ(dec("imgchain-promote 2\nphase copying\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase done\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 05\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize -5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 18446744073709551616\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 5\nino 2\ndev 1\nrdev 0\nrate 0\ndest /x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest x\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\nmore\n"), IC_ECORRUPT);
	CHECK_EQ(dec("imgchain-promote 1\nphase copying\nsize 5\ndev 1\nino 2\nrdev 0\nrate 0\ndest /x\x01y\n"), IC_ECORRUPT);
}

/* Four threads increment shared counters under ranges: without mutual exclusion of
 * overlapping ranges the increments would be lost.  Range k = [100 k, 100 k + 150)
 * overlaps k - 1 and k + 1 only, and increments cells k and k + 1 (shared with exactly the
 * ranges it overlaps: disjoint ranges touch disjoint cells); [0, 1000) overlaps every one
 * and increments the pair a, b.  Disjoint ranges never wait. */
struct shared {
	struct ic_range_lock rl;
	volatile uint64_t cell[8];
	volatile uint64_t a, b;
	int bad;
};

static void *worker(void *arg)
{
	struct shared *sh = arg;

	for (int i = 0; i < 5000; i++) {
		unsigned k = (unsigned)(i % 7);
		uint64_t lo = (uint64_t)k * 100;
		int slot = ic_range_lock(&sh->rl, lo, lo + 150);     /* overlaps its neighbours */
		uint64_t c0 = sh->cell[k], c1 = sh->cell[k + 1];

		sched_yield();
		sh->cell[k] = c0 + 1;
		sh->cell[k + 1] = c1 + 1;
		ic_range_unlock(&sh->rl, slot);
		slot = ic_range_lock(&sh->rl, 0, 1000);               /* overlaps every one */
		uint64_t a = sh->a;

		if (sh->b != a)
			sh->bad++;
		sh->a = a + 1;
		sh->b = a + 1;
		ic_range_unlock(&sh->rl, slot);
	}
	return NULL;
}

static void test_range_lock(void)
{
	struct shared sh = { .a = 0 };
	pthread_t t[4];
	int s1, s2;

	ic_range_lock_init(&sh.rl);
	/* disjoint ranges are held at once; an empty range overlaps nothing */
	s1 = ic_range_lock(&sh.rl, 0, 100);
	s2 = ic_range_lock(&sh.rl, 100, 200);
	CHECK(s1 != s2);
	ic_range_unlock(&sh.rl, ic_range_lock(&sh.rl, 50, 50));
	ic_range_unlock(&sh.rl, s1);
	ic_range_unlock(&sh.rl, s2);
	CHECK_EQ(sh.rl.waits, 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, worker, &sh);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	uint64_t cells = 0;

	for (int i = 0; i < 8; i++)
		cells += sh.cell[i];
	CHECK_EQ(cells, 4 * 5000 * 2);
	CHECK_EQ(sh.a, 4 * 5000);
	CHECK_EQ(sh.b, sh.a);
	CHECK_EQ(sh.bad, 0);
	ic_range_lock_destroy(&sh.rl);
}

int main(void)
{
	RUN(test_codec_roundtrip);
	RUN(test_codec_rejects);
	RUN(test_range_lock);
	UNIT_EXIT();
}
