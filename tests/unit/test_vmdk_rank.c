/* test_vmdk_rank.c: the allocation map behind the compact sparse VMDK (ic_rank): rank and
 * select against a plain array, at superblock and word boundaries, empty, full and
 * random maps of several densities; the walker over runs of set units (ic_rank_walk)
 * against select byte by byte. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ic_rank.h"
#include "unit.h"

/* Build the map from a bool array and check every rank, select and test against it. */
static void check_against(const bool *set, uint64_t n)
{
	struct ic_rank r;
	uint64_t k = 0;
	int bad = 0;

	CHECK_EQ(ic_rank_init(&r, n), 0);
	for (uint64_t i = 0; i < n; i++)
		if (set[i])
			ic_rank_set_range(&r, i, i + 1);
	ic_rank_seal(&r);
	for (uint64_t i = 0; i < n && !bad; i++) {
		bad |= ic_rank_of(&r, i) != k;
		bad |= ic_rank_test(&r, i) != set[i];
		if (set[i])
			bad |= ic_rank_select(&r, k++) != i;
	}
	CHECK(!bad);
	CHECK_EQ(r.count, k);
	CHECK_EQ(ic_rank_of(&r, n), k);
	CHECK_EQ(ic_rank_select(&r, k), n);
	CHECK_EQ(ic_rank_select(&r, k + 100), n);
	CHECK(!ic_rank_test(&r, n));
	ic_rank_free(&r);
}

static void test_shapes(void)
{
	static const uint64_t sizes[] = { 1, 63, 64, 65, 511, 512, 513, 1023, 1024, 4097, 100000 };
	uint64_t seed = 12;

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		uint64_t n = sizes[si];
		bool *set = calloc(n, sizeof(bool));

		check_against(set, n);                  /* empty */
		for (uint64_t i = 0; i < n; i++)
			set[i] = true;
		check_against(set, n);                  /* full */
		for (unsigned per = 2; per <= 1000; per *= 7) {
			for (uint64_t i = 0; i < n; i++)
				set[i] = unit_rnd_below(&seed, per) == 0;
			check_against(set, n);
		}
		/* only the last unit, only the first */
		memset(set, 0, n * sizeof(bool));
		set[n - 1] = true;
		check_against(set, n);
		memset(set, 0, n * sizeof(bool));
		set[0] = true;
		check_against(set, n);
		free(set);
	}
}

/* Ranges across words and superblocks; a range past the end is clamped. */
static void test_ranges(void)
{
	const uint64_t n = 5000;
	bool *set = calloc(n, sizeof(bool));
	struct ic_rank r;

	CHECK_EQ(ic_rank_init(&r, n), 0);
	ic_rank_set_range(&r, 60, 70);
	ic_rank_set_range(&r, 500, 1600);
	ic_rank_set_range(&r, 4990, 9000);
	ic_rank_set_range(&r, 3000, 3000);
	ic_rank_seal(&r);
	for (uint64_t i = 0; i < n; i++)
		set[i] = (i >= 60 && i < 70) || (i >= 500 && i < 1600) || i >= 4990;
	CHECK_EQ(r.count, 10 + 1100 + 10);
	CHECK_EQ(ic_rank_of(&r, 1600), 1110);
	CHECK_EQ(ic_rank_select(&r, 10), 500);
	CHECK_EQ(ic_rank_select(&r, 1110), 4990);
	ic_rank_free(&r);
	check_against(set, n);
	free(set);
}

/* Walk [pos, pos+len) of the stored units: every byte lands where select puts it, pieces
 * are maximal (two in a row are never contiguous on the disk) and cover the range. */
static int walk_check(const struct ic_rank *r, uint64_t unit, uint64_t pos, size_t len)
{
	struct ic_rank_walk w;
	uint64_t at, b = pos, prev_end = UINT64_MAX;
	size_t n;
	int bad = 0;

	ic_rank_walk_start(&w, r, unit, pos, len);
	while (ic_rank_walk_next(&w, &at, &n)) {
		bad |= n == 0 || at == prev_end;
		for (uint64_t k = 0; k < n; k += unit / 3 + 1) {
			uint64_t u = ic_rank_select(r, (b + k) / unit);

			bad |= at + k != u * unit + (b + k) % unit;
		}
		/* the piece's last byte too */
		bad |= at + n - 1 != ic_rank_select(r, (b + n - 1) / unit) * unit + (b + n - 1) % unit;
		b += n;
		prev_end = at + n;
	}
	bad |= b != pos + len;
	return bad;
}

static void test_walk(void)
{
	static const uint64_t units[] = { 1, 512, 4096, 65536 };
	uint64_t seed = 7;
	int bad = 0;

	for (unsigned per = 1; per <= 64; per *= 4) {
		const uint64_t n = 3000;
		struct ic_rank r;

		CHECK_EQ(ic_rank_init(&r, n), 0);
		for (uint64_t i = 0; i < n; i++)
			if (unit_rnd_below(&seed, per + 1) != 0 || per == 1)
				ic_rank_set_range(&r, i, i + 1);
		ic_rank_seal(&r);
		for (size_t ui = 0; ui < sizeof(units) / sizeof(units[0]); ui++) {
			uint64_t unit = units[ui], total = r.count * unit;

			for (int t = 0; t < 200 && total; t++) {
				uint64_t pos = unit_rnd_below(&seed, total);
				uint64_t len = 1 + unit_rnd_below(&seed, total - pos);

				if (t % 3 == 0 && len > 5 * unit)
					len = 5 * unit;     /* short reads too */
				bad |= walk_check(&r, unit, pos, (size_t)len);
			}
			bad |= walk_check(&r, unit, 0, (size_t)total);
		}
		ic_rank_free(&r);
	}
	CHECK(!bad);
	/* runs across words and superblocks: one piece for a run of 1100 units */
	{
		struct ic_rank r;
		struct ic_rank_walk w;
		uint64_t at;
		size_t nb;

		CHECK_EQ(ic_rank_init(&r, 5000), 0);
		ic_rank_set_range(&r, 60, 70);
		ic_rank_set_range(&r, 500, 1600);
		ic_rank_set_range(&r, 4990, 5000);
		ic_rank_seal(&r);
		ic_rank_walk_start(&w, &r, 8, 8 * 5 + 3, (5 * 8 - 3) + 1100 * 8 + 16);
		CHECK(ic_rank_walk_next(&w, &at, &nb));
		CHECK_EQ(at, 65 * 8 + 3);
		CHECK_EQ(nb, 5 * 8 - 3);
		CHECK(ic_rank_walk_next(&w, &at, &nb));
		CHECK_EQ(at, 500 * 8);
		CHECK_EQ(nb, 1100 * 8);
		CHECK(ic_rank_walk_next(&w, &at, &nb));
		CHECK_EQ(at, 4990 * 8);
		CHECK_EQ(nb, 16);
		CHECK(!ic_rank_walk_next(&w, &at, &nb));
		ic_rank_free(&r);
	}
}

int main(void)
{
	RUN(test_shapes);
	RUN(test_ranges);
	RUN(test_walk);
	UNIT_EXIT();
}
