/* ic_cons_clone.c: a target's records shared rather than copied, on a file system that
 * shares extents between files (XFS with reflink, btrfs).
 *
 * Cloning works on whole file-system blocks at the same place in their blocks on both
 * sides, and records are packed at any offset.  So the records a target takes from one
 * source image are grouped into clusters (sorted by offset, a gap of at most CLONE_GAP
 * unused bytes between two neighbours), and each cluster is cloned whole, its blocks
 * landing after the target's records so far at the same offset modulo the block size
 * as in the source (FORMAT.md section 7).  The unused bytes of the first and last block
 * come along; the whole blocks of a gap are punched (they are new bytes of the target:
 * no reader can see them), at once, or in place, with the full's superseded records
 * after the commit (ic_cons_reclaim.c): a cluster cloned whole and its gaps punched
 * later is one call in the merge where cloning the pieces apart is one per piece.  No
 * record is read or rewritten: each one's checksum travels unchanged in the index, and
 * the records are read and checked only with --verify, or when the file system refuses
 * the clone after all (then they are copied and checked as on any other file system,
 * at the places planned). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_util.h"

#define CLONE_GAP (1u << 20)        /* unused bytes cloned (then punched) to join records */
#define RUN_CHUNK 4096u             /* entries handed to a copy or a check at a time */

void ic_clone_reset(struct clone_plan *p)
{
	p->recs.n = 0;
	p->clus.n = 0;
	p->shared = p->copied = p->alloc = 0;
}

void ic_clone_free(struct clone_plan *p)
{
	ic_array_free(&p->recs);
	ic_array_free(&p->clus);
	free(p->dst);
	p->dst = NULL;
	free(p->run);
	p->run = NULL;
}

int ic_clone_add(struct clone_plan *p, uint32_t lvl, const struct icf_entry *e)
{
	struct crec *r = ic_array_add(&p->recs);

	if (!r)
		return -ENOMEM;
	r->off = e->offset;
	r->pos = e->pos;
	r->hash = e->rec_hash;
	r->len = e->stored_len;
	r->lvl = lvl;
	r->k = p->recs.n - 1;
	return 0;
}

static int cmp_crec(const void *a, const void *b)
{
	const struct crec *x = a, *y = b;

	if (x->lvl != y->lvl)
		return x->lvl < y->lvl ? -1 : 1;
	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return x->k < y->k ? -1 : x->k > y->k;
}

int ic_clone_layout(struct clone_plan *p, const struct ic_writer *w, uint64_t start,
		    uint64_t *end)
{
	struct crec *r = p->recs.v;
	size_t n = p->recs.n;
	uint64_t cur = start;

	free(p->dst);
	p->dst = malloc((n ? n : 1) * sizeof(*p->dst));
	if (!p->dst)
		return -ENOMEM;
	qsort(r, n, sizeof(*r), cmp_crec);
	for (size_t a = 0; a < n;) {
		struct cclus *c = ic_array_add(&p->clus);
		uint64_t s = r[a].off, e = s + r[a].len;
		size_t b = a + 1;

		if (!c)
			return -ENOMEM;
		while (b < n && r[b].lvl == r[a].lvl && r[b].off <= e + CLONE_GAP) {
			if (r[b].off + r[b].len > e)
				e = r[b].off + r[b].len;
			b++;
		}
		c->a = a;
		c->b = b;
		c->dst = ic_writer_clone_place(w, cur, s);
		for (size_t i = a; i < b; i++)
			p->dst[r[i].k] = c->dst + (r[i].off - s);
		cur = c->dst + (e - s);
		a = b;
	}
	*end = cur;
	return 0;
}

/* Hand recs [a, b) of one cluster, in runs contiguous in the source, to the checker
 * (ops->check) or check them here; copy them too when copy (to dst + their place). */
static int each_run(struct clone_plan *p, const struct cclus *c, const struct ic_image *src,
		    struct ic_writer *w, bool copy, const struct clone_ops *ops)
{
	const struct crec *r = p->recs.v;
	uint64_t s = r[c->a].off;

	for (size_t i = c->a; i < c->b;) {
		size_t n = 0;
		int ret = 0;

		do {
			struct icf_entry *e = &p->run[n++];

			memset(e, 0, sizeof(*e));
			e->pos = r[i].pos;
			e->offset = r[i].off;
			e->stored_len = r[i].len;
			e->rec_hash = r[i].hash;
			i++;
		} while (i < c->b && n < RUN_CHUNK && r[i].off == r[i - 1].off + r[i - 1].len);
		if (ops->check)
			ret = ops->check(ops->arg, src, p->run, n);
		if (!ret && copy)
			ret = ic_writer_copy_at(w, src, p->run, n, !ops->check, ops->buf, ops->buflen,
						c->dst + (p->run[0].offset - s));
		else if (!ret && !ops->check)
			ret = ic_image_check_records(src, p->run, n, ops->buf, ops->buflen);
		if (ret)
			return ret;
	}
	return 0;
}

/* The whole blocks between the records of a cloned cluster: nothing uses them.  Punched
 * now, or added to defer (a merge into the full's file: punched after its commit). */
static int punch_gaps(struct clone_plan *p, const struct cclus *c, struct ic_writer *w,
		      uint32_t blk, struct reclaim_plan *defer)
{
	const struct crec *r = p->recs.v;
	uint64_t s = r[c->a].off, e = s + r[c->a].len, b = blk ? blk : 4096;

	for (size_t i = c->a + 1; i < c->b; i++) {
		if (r[i].off > e) {
			uint64_t g0 = (e + b - 1) & ~(b - 1), g1 = r[i].off & ~(b - 1);
			int ret = defer ? ic_reclaim_add(defer, c->dst + (e - s), r[i].off - e) :
					  ic_writer_punch(w, c->dst + (e - s), r[i].off - e);

			if (ret)
				return ret;
			if (g1 > g0 && !defer)    /* (deferred: still cloned at the commit) */
				p->alloc -= g1 - g0;
		}
		if (r[i].off + r[i].len > e)
			e = r[i].off + r[i].len;
	}
	return 0;
}

int ic_clone_run(struct clone_plan *p, struct ic_writer *w, struct ic_image *const *levels,
		 const struct clone_ops *ops)
{
	uint32_t blk = ic_writer_clone_blk(w);

	if (!p->run) {
		p->run = malloc(RUN_CHUNK * sizeof(*p->run));
		if (!p->run)
			return -ENOMEM;
	}
	for (size_t ci = 0; ci < p->clus.n; ci++) {
		const struct cclus *c = &p->clus.v[ci];
		const struct crec *r = p->recs.v;
		const struct ic_image *src = levels[r[c->a].lvl];
		uint64_t s = r[c->a].off, e = s, bytes = 0;
		int ret;

		for (size_t i = c->a; i < c->b; i++) {
			if (r[i].off + r[i].len > e)
				e = r[i].off + r[i].len;
			bytes += r[i].len;
		}
		ret = ic_writer_clone(w, src, s, e - s, c->dst);
		if (!ret) {
			uint64_t b = blk ? blk : 4096;

			p->shared += bytes;
			p->alloc += ((c->dst + (e - s) + b - 1) & ~(b - 1)) - (c->dst & ~(b - 1));
			ret = punch_gaps(p, c, w, blk,
					 ops->defer && ops->defer->valid ? ops->defer : NULL);
			if (!ret && ops->verify)
				ret = each_run(p, c, src, w, false, ops);
		} else if (ret == -EOPNOTSUPP) {
			p->copied += bytes;
			ret = each_run(p, c, src, w, true, ops);
		}
		if (!ret && ops->done)
			ret = ops->done(ops->arg, bytes);
		if (ret)
			return ret;
	}
	return 0;
}
