/* ic_rank.c: an allocation bitmap with O(1) rank, a binary-search select and a walker
 * over runs of set units. */
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

/* Set units from i on, up to max of them (i < n): the length of the run starting at i. */
static uint64_t run_from(const struct ic_rank *r, uint64_t i, uint64_t max)
{
	uint64_t run = 0;

	while (run < max && i < r->n) {
		uint64_t ones = ~(r->bits[i / 64] >> (i % 64));
		unsigned k = ones ? (unsigned)__builtin_ctzll(ones) : 64;

		if (k > 64 - i % 64)
			k = 64 - (unsigned)(i % 64);
		run += k;
		i += k;
		if (!k || i % 64)
			break;
	}
	if (i > r->n)
		run -= i - r->n;
	return run < max ? run : max;
}

void ic_rank_walk_start(struct ic_rank_walk *w, const struct ic_rank *r, uint64_t unit_bytes,
			uint64_t pos, size_t len)
{
	w->r = r;
	w->unit = unit_bytes;
	w->pos = pos;
	w->left = len;
}

bool ic_rank_walk_next(struct ic_rank_walk *w, uint64_t *disk_off, size_t *n)
{
	uint64_t in, u, units, bytes;

	if (!w->left)
		return false;
	in = w->pos % w->unit;
	u = ic_rank_select(w->r, w->pos / w->unit);
	/* units the rest of the walk touches, the first one included */
	units = (in + w->left + w->unit - 1) / w->unit;
	if (u < w->r->n)
		units = run_from(w->r, u, units);
	else
		units = 1;              /* past the stored units: one unit at a time */
	bytes = units * w->unit - in;
	if (bytes > w->left)
		bytes = w->left;
	*disk_off = u * w->unit + in;
	*n = (size_t)bytes;
	w->pos += bytes;
	w->left -= (size_t)bytes;
	return true;
}
