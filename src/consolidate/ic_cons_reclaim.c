/* ic_cons_reclaim.c: the space an in-place merge frees in the full, planned while the
 * merge is written, so that freeing it takes one hole punch per range and no probing.
 *
 * Before the merge, every byte of the full below its data_end that no record of its
 * index uses is a hole already (each earlier merge punched it, or left the full on the
 * journal's punch list: then this plan is not made and the whole file is scanned as
 * before).  The merge stops using the full's superseded records and its old index; the
 * records it keeps stay where they are, and everything it writes lies above the old
 * data_end.  So below the old data_end, the bytes between two kept records (in file
 * order) are all unused once the merge is committed: one punch frees the whole blocks
 * between them, whatever mix of superseded records, earlier holes and padding lies
 * there; a stretch that lost no record to this merge is skipped (a hole already).  No
 * SEEK_DATA probe, no scan of the new index: one fallocate per stretch, at the file
 * system's block size.  The unused blocks between the records of a cluster cloned
 * above the old data_end join the plan (ic_clone_run), so that the merge itself makes
 * one clone per cluster and punches nothing before its commit. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_util.h"
#include "ic_view.h"

void ic_reclaim_reset(struct reclaim_plan *rp)
{
	ic_array_free(&rp->spans);
	memset(rp, 0, sizeof(*rp));
}

struct rent {
	uint64_t off, len;
	bool kept;
};

static int cmp_rent(const void *a, const void *b)
{
	const struct rent *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

static int add_span(struct reclaim_plan *rp, uint64_t a, uint64_t e)
{
	uint64_t b = rp->blk, s0 = (a + b - 1) & ~(b - 1), s1 = e & ~(b - 1);
	struct rspan *sp;

	if (s1 <= s0)
		return 0;    /* no whole block: nothing to free */
	sp = ic_array_add(&rp->spans);
	if (!sp)
		return -ENOMEM;
	sp->off = s0;
	sp->len = s1 - s0;
	rp->bytes += s1 - s0;
	return 0;
}

int ic_reclaim_add(struct reclaim_plan *rp, uint64_t off, uint64_t len)
{
	return add_span(rp, off, off + len);
}

int ic_reclaim_plan(struct reclaim_plan *rp, const struct ic_view *vt, const uint8_t *reloc,
		    uint64_t limit, uint32_t blk)
{
	const struct ic_image *img = vt->path[0];
	uint64_t n = img->slot.index_count, le = ICF_HEADER_SIZE;
	struct rent *r = malloc((n ? n : 1) * sizeof(*r));
	bool dirty = false, sorted = true;
	size_t nr = 0;
	int ret = 0;

	ic_reclaim_reset(rp);
	if (!r)
		return -ENOMEM;
	rp->blk = blk ? blk : 4096;
	for (uint64_t i = 0; i < n; i++) {
		struct icf_entry e;

		ret = ic_image_entry(img, i, &e);
		if (ret)
			goto out;
		if (e.kind == ICF_ENTRY_ZERO || !e.stored_len)
			continue;
		/* the writer's rule (collect): the full's record stays where it is */
		r[nr].kept = e.pos < vt->nblocks && vt->owner[e.pos] == 1 && !(reloc && reloc[i]);
		r[nr].off = e.offset;
		r[nr].len = e.stored_len;
		sorted &= !nr || r[nr - 1].off <= e.offset;
		nr++;
	}
	if (!sorted)
		qsort(r, nr, sizeof(*r), cmp_rent);
	for (size_t i = 0; i < nr; i++) {
		if (r[i].off + r[i].len > limit) {
			ret = ic_fail(IC_ECORRUPT, "%s: a record ends past data_end", img->path);
			goto out;
		}
		if (!r[i].kept) {
			dirty = true;
			continue;
		}
		if (dirty && (ret = add_span(rp, le, r[i].off)))
			goto out;
		dirty = false;
		if (r[i].off + r[i].len > le)
			le = r[i].off + r[i].len;
	}
	/* after the last kept record: the old index (and what this merge superseded);
	 * the gaps of the clusters cloned are added as they are cloned */
	ret = add_span(rp, le, limit);
	if (!ret)
		rp->valid = true;
out:
	free(r);
	if (ret)
		ic_reclaim_reset(rp);
	return ret;
}

bool ic_reclaim_applies(const struct reclaim_plan *rp, const struct ic_image *img)
{
	return rp->valid && img->slot.seq == rp->seq &&
	       !memcmp(img->slot.index_hash, rp->index_hash, ICF_INDEX_HASH_LEN);
}

int ic_reclaim_run(const struct reclaim_plan *rp, struct ic_image *img, uint64_t *calls)
{
	for (size_t i = 0; i < rp->spans.n; i++) {
		int ret = ic_image_punch_range(img->fd, rp->spans.v[i].off, rp->spans.v[i].len,
					       rp->blk, img->path);

		if (ret)
			return ret;
		(*calls)++;
	}
	return 0;
}
