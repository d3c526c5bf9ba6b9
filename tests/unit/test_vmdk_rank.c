/* test_vmdk_rank.c: the allocation map behind the compact sparse VMDK (ic_rank): rank and
 * select against a plain array, at superblock and word boundaries, empty, full and
 * random maps of several densities. */
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

int main(void)
{
	RUN(test_shapes);
	RUN(test_ranges);
	UNIT_EXIT();
}
