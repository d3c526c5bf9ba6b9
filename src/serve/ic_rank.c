/* ic_rank.c: an allocation bitmap with O(1) rank and a binary-search select. */
#include <errno.h>
#include <stdlib.h>

#include "ic_rank.h"

#define SB_WORDS 8u                 /* a superblock: 8 words of 64 units */
#define SB_UNITS (64u * SB_WORDS)

static uint64_t words_of(uint64_t n)
{
	return n / 64 + (n % 64 != 0);
}

int ic_rank_init(struct ic_rank *r, uint64_t n)
{
	uint64_t w = words_of(n), sb = n / SB_UNITS + 1;

	r->n = n;
	r->count = 0;
	r->bits = calloc(w ? w : 1, sizeof(*r->bits));
	r->before = calloc(sb, sizeof(*r->before));
	if (!r->bits || !r->before) {
		ic_rank_free(r);
		return -ENOMEM;
	}
	return 0;
}

void ic_rank_free(struct ic_rank *r)
{
	free(r->bits);
	free(r->before);
	r->bits = NULL;
	r->before = NULL;
	r->n = r->count = 0;
}

void ic_rank_set_range(struct ic_rank *r, uint64_t first, uint64_t end)
{
	if (end > r->n)
		end = r->n;
	for (uint64_t i = first; i < end; i++)
		r->bits[i / 64] |= 1ull << (i % 64);
}

/* One superblock's counts are the running total: the last entry (index n / SB_UNITS)
 * is the total, whatever n is. */
void ic_rank_seal(struct ic_rank *r)
{
	uint64_t w = words_of(r->n), total = 0;

	for (uint64_t i = 0; i < w; i++) {
		if (i % SB_WORDS == 0)
			r->before[i / SB_WORDS] = total;
		total += (uint64_t)__builtin_popcountll(r->bits[i]);
	}
	for (uint64_t sb = (w + SB_WORDS - 1) / SB_WORDS; sb <= r->n / SB_UNITS; sb++)
		r->before[sb] = total;
	r->count = total;
}

bool ic_rank_test(const struct ic_rank *r, uint64_t i)
{
	return i < r->n && (r->bits[i / 64] >> (i % 64)) & 1;
}

uint64_t ic_rank_of(const struct ic_rank *r, uint64_t i)
{
	uint64_t sb, k;

	if (i >= r->n)
		return r->count;
	sb = i / SB_UNITS;
	k = r->before[sb];
	for (uint64_t w = sb * SB_WORDS; w < i / 64; w++)
		k += (uint64_t)__builtin_popcountll(r->bits[w]);
	if (i % 64)
		k += (uint64_t)__builtin_popcountll(r->bits[i / 64] & ((1ull << (i % 64)) - 1));
	return k;
}

/* The k-th set bit of word x (k < popcount(x)). */
static unsigned select_in_word(uint64_t x, uint64_t k)
{
	while (k--)
		x &= x - 1;
	return (unsigned)__builtin_ctzll(x);
}

uint64_t ic_rank_select(const struct ic_rank *r, uint64_t k)
{
	uint64_t lo = 0, hi = r->n / SB_UNITS, w, end;

	if (k >= r->count)
		return r->n;
	/* the last superblock with fewer than k + 1 set units before it holds unit k */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;

		if (r->before[mid] <= k)
			lo = mid;
		else
			hi = mid - 1;
	}
	k -= r->before[lo];
	end = words_of(r->n);
	for (w = lo * SB_WORDS; w < end; w++) {
		uint64_t c = (uint64_t)__builtin_popcountll(r->bits[w]);

		if (k < c)
			return w * 64 + select_in_word(r->bits[w], k);
		k -= c;
	}
	return r->n;                /* not reached for k < count */
}
