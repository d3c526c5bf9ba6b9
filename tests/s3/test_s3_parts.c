/* test_s3_parts.c: the parts of an image rewritten in a bucket (ic_s3_cons_up.c), with no
 * server.  On random layouts of copied, local and zero segments: the parts tile the image
 * in order; every part but the last is at least the least part; a copied part lies inside
 * one copied segment and is at most 4 GiB; a sent part names the segment its first byte
 * is in.  And the bytes the client moves: a layout of large copied ranges between a header
 * and an index sends the header's part (the least part, borrowed) and the index only. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ic_s3_cons_int.h"
#include "../unit/unit.h"

#define MIB (1ull << 20)

static struct s3c_file src[3];

static int check_plan(const struct s3c_plan *pl, uint64_t size, uint64_t least)
{
	uint64_t at = 0;

	for (size_t k = 0; k < pl->parts.n; k++) {
		const struct s3c_part *p = &pl->parts.v[k];
		const struct s3c_seg *s = &pl->segs.v[p->seg];

		if (p->d0 != at || p->d1 <= p->d0)
			return 1;
		if (k + 1 < pl->parts.n && p->d1 - p->d0 < least)
			return 2;
		if (p->copy && (s->kind != S3C_COPY || p->d0 < s->dst || p->d1 > s->dst + s->len ||
				p->d1 - p->d0 > (4ull << 30)))
			return 3;
		if (!p->copy && (p->d0 < s->dst || p->d0 >= s->dst + s->len))
			return 4;
		at = p->d1;
	}
	return at == size ? 0 : 5;
}

static void random_layouts(void)
{
	uint64_t seed = 42;

	for (int round = 0; round < 2000; round++) {
		struct s3c_plan pl = { .name = "t" };
		uint64_t least = round % 2 ? 5 * MIB : 65536, at = 0;
		int nseg = 1 + (int)unit_rnd_below(&seed, 40);

		for (int i = 0; i < nseg; i++) {
			int kind = (int)unit_rnd_below(&seed, 3);
			uint64_t len = 1 + unit_rnd_below(&seed, unit_rnd_below(&seed, 4) ? 2 * least :
									  40 * least);

			CHECK_EQ(ic_s3c_add_seg(&pl, kind, at, len, kind == S3C_COPY ?
						&src[unit_rnd_below(&seed, 3)] : NULL,
						unit_rnd_below(&seed, 1000) * 4096), 0);
			at += len;
		}
		CHECK_EQ(ic_s3c_plan_parts(&pl, at, least), 0);
		CHECK_EQ(check_plan(&pl, at, least), 0);
		ic_array_free(&pl.segs);
		ic_array_free(&pl.parts);
	}
}

/* header 4 KiB, three large copied ranges of two objects, index 300 KiB */
static void large_ranges(void)
{
	struct s3c_plan pl = { .name = "t" };
	uint64_t least = 5 * MIB, at = 0, sent = 0, copied = 0;
	const uint64_t lens[] = { 4096, 40 * MIB, 9 * MIB, 300 * MIB, 300 << 10 };

	for (int i = 0; i < 5; i++) {
		CHECK_EQ(ic_s3c_add_seg(&pl, i == 0 || i == 4 ? S3C_LOCAL : S3C_COPY, at, lens[i],
					i == 0 || i == 4 ? NULL : &src[i % 2], 1 << 20), 0);
		at += lens[i];
	}
	CHECK_EQ(pl.segs.n, 5u);
	CHECK_EQ(ic_s3c_plan_parts(&pl, at, least), 0);
	CHECK_EQ(check_plan(&pl, at, least), 0);
	for (size_t k = 0; k < pl.parts.n; k++)
		*(pl.parts.v[k].copy ? &copied : &sent) += pl.parts.v[k].d1 - pl.parts.v[k].d0;
	CHECK_EQ(sent, least + (300 << 10));
	CHECK_EQ(copied, at - sent);
	/* the first part: the header and the borrowed start of the first range */
	CHECK(!pl.parts.v[0].copy && pl.parts.v[0].d1 == least);
	ic_array_free(&pl.segs);
	ic_array_free(&pl.parts);
}

/* a copied range continuing the last one (same object, next bytes) joins it */
static void joined(void)
{
	struct s3c_plan pl = { .name = "t" };

	CHECK_EQ(ic_s3c_add_seg(&pl, S3C_COPY, 0, 100, &src[0], 1000), 0);
	CHECK_EQ(ic_s3c_add_seg(&pl, S3C_COPY, 100, 50, &src[0], 1100), 0);
	CHECK_EQ(ic_s3c_add_seg(&pl, S3C_COPY, 150, 50, &src[1], 1150), 0);
	CHECK_EQ(ic_s3c_add_seg(&pl, S3C_COPY, 200, 50, &src[1], 9999), 0);
	CHECK_EQ(pl.segs.n, 3u);
	CHECK_EQ(pl.segs.v[0].len, 150u);
	ic_array_free(&pl.segs);
	ic_array_free(&pl.parts);
}

int main(void)
{
	RUN(random_layouts);
	RUN(large_ranges);
	RUN(joined);
	UNIT_EXIT();
}
