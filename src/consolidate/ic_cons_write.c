/* ic_cons_write.c: the writer of a consolidation target: its block map folded onto
 * its new base, the records copied byte for byte and checked. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_mountinfo.h"
#include "ic_pool.h"
#include "ic_progress.h"
#include "ic_util.h"
#include "ic_view.h"

#define WINDOW_BLOCKS 65536u        /* positions flattened per pass of the window loop */
#define COPY_BUF (1u << 20)         /* read-and-check buffer of the record copier: small
				     * enough to stay in the CPU cache between the read, the
				     * check and the copy; grown to hold the largest record */
#define ISLAND_MAX (128u << 10)     /* the full's records relocated to join two holes */

/* ---- flattening: a target's block map folded onto its new base ------------------------
 *
 * For each position of the target's disk, the entry of the newest image of the merged
 * levels [fl, target] that has one, as the target's view resolves it; a zero entry
 * where the base would otherwise show a block the target does not have (a disk that
 * shrank and grew back).  Records of the merged levels are copied byte for byte and
 * checked; in place, the full's own records (level 0) stay where they are. */

struct ment {
	struct icf_entry e;         /* the entry as its level's index has it (offset: there) */
	uint64_t dst;               /* copied: the record's offset in the destination */
	uint32_t lvl;               /* the level of the target's path it comes from */
	bool copy;                  /* its record is copied (else a zero, or a kept record) */
};

/* One target being flattened.  Two sizing passes (copy false: offsets only) then one
 * copying pass walk the target's disk a window of WINDOW_BLOCKS positions at a time. */
struct flat {
	struct ic_view *vt;         /* the target's view: path[0] the full .. path[depth-1] it */
	struct ic_view *vb;         /* the new base's view; NULL for a synthetic full */
	uint32_t fl;                /* first merged level of vt: levels fl..target fold into one */
	uint32_t tseq;              /* the target's seq: origin of the zero entries added */
	bool keep_root;             /* in place: level 0 (the full) keeps its records in place */
	int64_t *cursor;            /* per level of vt: index entry reached (positions ascend) */
	uint8_t *reloc;             /* in place: the full's entries to copy all the same */
	struct ment *win;           /* the window's entries, ascending pos (collect, place) */
	struct icf_entry *run;      /* the records of one run: contiguous in one source */
	uint8_t *cbuf;              /* read-and-check buffer of the record copier */
	size_t cbuf_len;
	struct ic_writer *w;        /* the store's image writer: the records, the index */
	uint64_t start;             /* where the records go: after the header, or the full's end */
	uint64_t cur;               /* the next record's place in the target */
	uint64_t count;             /* entries of this pass */
	uint64_t copy_bytes;        /* bytes of the records copied, */
	uint64_t reloc_bytes;       /* of copy_bytes: the full's own records moved (islands) */
	struct ic_progress prog;
	uint64_t done;              /* record bytes copied so far (progress) */
	struct checker *ck;         /* the checking thread, NULL: check in line */
	struct cons *x;             /* the run (its options, the step hook) */
	bool clone;                 /* records shared rather than copied (ic_cons_clone.c) */
	struct clone_plan cp;
	uint64_t k;                 /* copied records met so far in this pass */
};

static ssize_t collect(struct flat *f, uint64_t p0, uint64_t p1)
{
	size_t n = 0;

	for (uint64_t pos = p0; pos < p1; pos++) {
		uint16_t o = f->vt->owner[pos];
		bool bvis = f->vb && pos < f->vb->nblocks && f->vb->owner[pos];
		struct ment *m = &f->win[n];

		if (o && o - 1u >= f->fl) {
			uint32_t lvl = o - 1u;
			struct ic_image *img = f->vt->path[lvl];
			int64_t i = f->cursor[lvl];
			int ret;

			while ((uint64_t)i < img->slot.index_count && ic_image_entry_pos(img, (uint64_t)i) < pos)
				i++;
			f->cursor[lvl] = i;
			if ((uint64_t)i >= img->slot.index_count)
				return ic_fail(IC_ECORRUPT, "%s: block %llu vanished from the index", img->path,
					       (unsigned long long)pos);
			ret = ic_image_entry(img, (uint64_t)i, &m->e);
			if (ret)
				return ret;
			if (m->e.pos != pos || m->e.plain_len != ic_view_block_len(f->vt, pos))
				return ic_fail(IC_ECORRUPT, "%s: block %llu: index disagrees with the map",
					       img->path, (unsigned long long)pos);
			if (m->e.kind == ICF_ENTRY_ZERO && !bvis)
				continue;
			m->lvl = lvl;
			m->copy = m->e.kind != ICF_ENTRY_ZERO &&
				  !(f->keep_root && lvl == 0 && !(f->reloc && f->reloc[i]));
		} else if (!o && bvis) {
			memset(&m->e, 0, sizeof(m->e));
			m->e.pos = pos;
			m->e.plain_len = ic_view_block_len(f->vt, pos);
			m->e.origin = f->tseq;
			m->e.origin_id = f->vt->point->img->slot.point_id;    /* 0 in v1 */
			m->e.kind = ICF_ENTRY_ZERO;
			m->lvl = 0;
			m->copy = false;
		} else {
			continue;
		}
		n++;
	}
	return (ssize_t)n;
}

/* Give the copied records of the window their place (pass 1) and copy them (pass 2).
 * A run is a sequence of records contiguous in one source; a long run starts at the
 * same offset modulo 4 KiB as in its source, so that a reflink can share it. */
static int place(struct flat *f, size_t n, bool copy)
{
	size_t i = 0;

	if (f->clone) {    /* the sizing pass lists the records, the clones place them */
		for (; i < n; i++) {
			struct ment *m = &f->win[i];
			int ret;

			if (!m->copy)
				continue;
			if (copy) {
				m->dst = f->cp.dst[f->k++];
				continue;
			}
			ret = ic_clone_add(&f->cp, m->lvl, &m->e);
			if (ret)
				return ret;
		}
		return 0;
	}

	while (i < n) {
		struct ment *m0;
		uint64_t next, len = 0, d, at = 0;
		size_t k, nrun = 0;
		int ret;

		while (i < n && !f->win[i].copy)
			i++;
		if (i == n)
			break;
		m0 = &f->win[i];
		next = m0->e.offset;
		for (k = i; k < n; k++) {
			struct ment *m = &f->win[k];

			if (!m->copy)
				continue;
			if (m->lvl != m0->lvl || m->e.offset != next)
				break;
			f->run[nrun++] = m->e;
			next += m->e.stored_len;
			len += m->e.stored_len;
		}
		f->cur = ic_writer_run_start(f->cur, m0->e.offset, len);
		d = f->cur;
		for (size_t r = i; r < k; r++)
			if (f->win[r].copy) {
				f->win[r].dst = d;
				d += f->win[r].e.stored_len;
			}
		if (copy) {
			if (ic_interrupted)
				return ic_fail(-EINTR, "interrupted");
			/* checked by the checker thread, or in line by the writer */
			ret = f->ck ? ic_checker_push(f->ck, f->vt->path[m0->lvl], f->run, nrun) : 0;
			if (!ret)
				ret = ic_writer_copy(f->w, f->vt->path[m0->lvl], f->run, nrun, !f->ck,
						     f->cbuf, f->cbuf_len, &at);
			if (!ret && at != f->cur)
				ret = ic_fail(-EIO, "merge into seq %u: records placed at %llu, not %llu",
					      f->tseq, (unsigned long long)at,
					      (unsigned long long)f->cur);
			if (ret)
				return ret;
			f->done += len;
			ic_progress_update(&f->prog, f->done);
			ic_cons_step(f->x, "copy");
		}
		f->cur += len;
		i = k;
	}
	return 0;
}

static int emit_index(struct flat *f, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		struct icf_entry e = f->win[k].e;
		int ret;

		if (f->win[k].copy)
			e.offset = f->win[k].dst;
		ret = ic_writer_add_entry(f->w, &e);
		if (ret)
			return ret;
	}
	return 0;
}

static int flat_pass(struct flat *f, bool copy)
{
	uint64_t nblocks = f->vt->nblocks;
	int ret;

	memset(f->cursor, 0, f->vt->depth * sizeof(*f->cursor));
	if (f->clone && !copy)
		ic_clone_reset(&f->cp);
	f->k = 0;
	f->cur = f->start;
	f->count = f->copy_bytes = f->reloc_bytes = 0;
	for (uint64_t p0 = 0; p0 < nblocks; p0 += WINDOW_BLOCKS) {
		uint64_t p1 = p0 + WINDOW_BLOCKS < nblocks ? p0 + WINDOW_BLOCKS : nblocks;
		ssize_t n = collect(f, p0, p1);

		if (n < 0)
			return (int)n;
		ret = place(f, (size_t)n, copy);
		if (!ret && copy)
			ret = emit_index(f, (size_t)n);
		if (ret)
			return ret;
		for (ssize_t k = 0; k < n; k++) {
			const struct ment *m = &f->win[k];

			if (m->e.kind == ICF_ENTRY_ZERO)
				continue;
			if (m->copy)
				f->copy_bytes += m->e.stored_len;
			if (m->copy && f->keep_root && m->lvl == 0)
				f->reloc_bytes += m->e.stored_len;
		}
		f->count += (uint64_t)n;
	}
	return 0;
}

/* The merged point's identity: its totals and index are the writer's (ic_writer_finish). */
static void fill_slot(struct tgt *t)
{
	const struct icf_slot *old = &t->p->img->slot;
	struct icf_slot *s = &t->slot;

	memset(s, 0, sizeof(*s));
	s->seq = old->seq;
	s->parent_seq = t->base;
	s->kind = t->base ? ICF_KIND_CONSOLIDATED : ICF_KIND_SYNTHETIC_FULL;
	s->created = old->created;
	s->disk_size = old->disk_size;
	memcpy(s->name, old->name, sizeof(s->name));
	memcpy(s->seal, old->seal, sizeof(s->seal));
	s->point_id = old->point_id;        /* the merged point keeps its identity and seal */
	s->seal_keygen = old->seal_keygen;
	s->flags = old->flags;              /* sealed with it (post-snapshot); a folded
					     * point's seal is the journal's */
	s->fold_session_id = old->fold_session_id;
	s->fold_interval = old->fold_interval;
	s->fold_time_ns = old->fold_time_ns;
}

static void flat_free(struct flat *f)
{
	ic_view_free(f->vt);
	ic_view_free(f->vb);
	free(f->cursor);
	free(f->reloc);
	free(f->win);
	free(f->run);
	free(f->cbuf);
	ic_clone_free(&f->cp);
	ic_writer_abort(f->w);
}

/* ---- islands: the full's records left between two superseded ones --------------------
 *
 * In place, the records of the full that the target still uses stay where they are and
 * the superseded ones around them become holes.  A small island of used records between
 * two superseded ones costs a hole more to punch, and on a file system that discards
 * what it frees (mount option "discard") each hole waits for the device.  Islands of at
 * most ISLAND_MAX bytes are therefore copied with the merged records, the smallest
 * first, within the slack between the merged points' data and what the merge copies
 * anyway: the peak extra space stays below the size of the merged points. */

struct isl_ent {
	uint64_t off;
	uint64_t len;
	uint64_t idx;
	bool used;
};

struct island {
	uint64_t span;
	size_t a, b;                /* [a, b) of the entries sorted by offset */
};

static int cmp_isl_off(const void *a, const void *b)
{
	const struct isl_ent *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

static int cmp_island(const void *a, const void *b)
{
	const struct island *x = a, *y = b;

	return x->span < y->span ? -1 : x->span > y->span;
}

static size_t find_islands(const struct isl_ent *e, size_t ne, struct island *is)
{
	size_t ni = 0, a = 1;

	while (a < ne) {
		size_t b = a;

		if (!e[a].used || e[a - 1].used) {
			a++;
			continue;
		}
		while (b < ne && e[b].used)
			b++;
		if (b == ne)
			break;
		is[ni].span = e[b - 1].off + e[b - 1].len - e[a].off;
		is[ni].a = a;
		is[ni].b = b;
		if (is[ni].span <= ISLAND_MAX)
			ni++;
		a = b + 1;
	}
	return ni;
}

/* Does the file system holding path discard the blocks it frees (mount option
 * "discard")?  Only then does a hole cost more than moving a small island: elsewhere
 * a punch is a few microseconds of metadata.  (ic_consolidate_opts.islands can decide
 * instead: tests, benchmarks.) */
struct discard_ask {
	dev_t dev;
	bool yes;
};

static int mount_discards(const struct ic_mount_ent *m, void *arg)
{
	struct discard_ask *a = arg;

	if (m->major == major(a->dev) && m->minor == minor(a->dev))
		a->yes = ic_mount_opt_has(m->super_options, "discard");
	return a->yes;
}

static bool fs_discards(const char *path)
{
	struct discard_ask a = { 0 };
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	a.dev = st.st_dev;
	ic_mountinfo_each(mount_discards, &a);
	return a.yes;
}

/* Mark in f->reloc the entries of the full (level 0) to copy, within budget bytes. */
static int pick_islands(struct flat *f, uint64_t budget)
{
	struct ic_image *img = f->vt->path[0];
	uint64_t n = img->slot.index_count;
	struct isl_ent *e = NULL;
	struct island *is = NULL;
	size_t ne = 0, ni;
	int ret = 0;

	if (!budget || n < 3)
		return 0;
	e = malloc(n * sizeof(*e));
	is = malloc(n * sizeof(*is));
	f->reloc = calloc(n, 1);
	if (!e || !is || !f->reloc) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct icf_entry x;

		ret = ic_image_entry(img, i, &x);
		if (ret)
			goto out;
		if (x.kind == ICF_ENTRY_ZERO)
			continue;
		e[ne].off = x.offset;
		e[ne].len = x.stored_len;
		e[ne].idx = i;
		e[ne].used = x.pos < f->vt->nblocks && f->vt->owner[x.pos] == 1;
		ne++;
	}
	qsort(e, ne, sizeof(*e), cmp_isl_off);
	ni = find_islands(e, ne, is);
	qsort(is, ni, sizeof(*is), cmp_island);
	for (size_t k = 0; k < ni && is[k].span <= budget; k++) {
		budget -= is[k].span;
		for (size_t r = is[k].a; r < is[k].b; r++)
			f->reloc[e[r].idx] = 1;
	}
out:
	free(e);
	free(is);
	return ret;
}

static int clone_check(void *arg, const struct ic_image *src, const struct icf_entry *ents,
		       size_t n)
{
	struct flat *f = arg;

	return ic_checker_push(f->ck, src, ents, n);
}

static int clone_done(void *arg, uint64_t bytes)
{
	struct flat *f = arg;

	if (ic_interrupted)
		return ic_fail(-EINTR, "interrupted");
	f->done += bytes;
	ic_progress_update(&f->prog, f->done);
	ic_cons_step(f->x, "copy");
	return 0;
}

/* Copy pass: the clones first (clone mode), then the index (and in copy mode the
 * records with it). */
static int copy_all(struct flat *f)
{
	struct clone_ops ops = {
		.verify = f->x->o->verify, .check = f->ck ? clone_check : NULL,
		.done = clone_done, .arg = f, .buf = f->cbuf, .buflen = f->cbuf_len,
		.defer = f->keep_root ? &f->x->rp : NULL,
	};
	int ret = f->clone ? ic_clone_run(&f->cp, f->w, f->vt->path, &ops) : 0;

	return ret ? ret : flat_pass(f, true);
}

int ic_cons_write_target(struct cons *x, struct ic_chain *c, struct tgt *t)
{
	struct ic_consolidate_stats *st = x->st;
	double t0 = ic_now(), t1;
	struct checker ck;
	struct flat f;
	char *tmp = NULL, what[160];
	int ret;

	memset(&f, 0, sizeof(f));
	f.x = x;
	if (x->o->no_copy_file_range)
		ic_image_copy_plain();
	f.fl = t->fl;
	f.tseq = t->seq;
	f.keep_root = t->in_place;
	ret = ic_view_open(c, t->p, &f.vt);
	if (!ret && t->base)
		ret = ic_view_open(c, ic_chain_find_seq(c, t->base), &f.vb);
	if (ret)
		goto out;
	f.cursor = calloc(f.vt->depth, sizeof(*f.cursor));
	f.win = malloc(WINDOW_BLOCKS * sizeof(*f.win));
	f.run = malloc(WINDOW_BLOCKS * sizeof(*f.run));
	f.cbuf_len = COPY_BUF;
	if (f.cbuf_len < 2 * (size_t)ic_codec_bound(c->block_size))
		f.cbuf_len = 2 * (size_t)ic_codec_bound(c->block_size);
	f.cbuf = malloc(f.cbuf_len);
	if (!f.cursor || !f.win || !f.run || !f.cbuf) {
		ret = -ENOMEM;
		goto out;
	}
	if (t->in_place) {
		ret = ic_writer_in_place(t->rw, &f.w);
	} else {
		tmp = ic_cons_tmp_path(x->dir, t->seq);
		ret = tmp ? ic_writer_create(tmp, &t->p->img->hdr, &f.w) : -ENOMEM;
	}
	if (ret)
		goto out;
	f.start = ic_writer_offset(f.w);
	/* a file system that shares extents: the records are cloned, not copied */
	f.clone = ic_writer_clone_probe(f.w, f.vt->path[f.fl]) != 0;
	ret = flat_pass(&f, false);
	if (!ret && t->in_place && (x->o->islands ? x->o->islands > 0 : fs_discards(t->rw->path))) {
		uint64_t merged = 0;

		for (uint32_t l = 1; l < f.vt->depth; l++)
			merged += f.vt->path[l]->slot.data_bytes;
		ret = pick_islands(&f, merged > f.copy_bytes ? merged - f.copy_bytes : 0);
		if (!ret && f.reloc)
			ret = flat_pass(&f, false);
	}
	if (!ret && f.clone)
		ret = ic_clone_layout(&f.cp, f.w, f.start, &f.cur);
	/* the index follows the records (FORMAT.md section 7) */
	if (!ret)
		ret = ic_writer_place_index(f.w, f.cur);
	/* in place: the full's ranges the merge frees, unless it held unused space already */
	if (t->in_place)
		ic_reclaim_reset(&x->rp);
	if (!ret && t->in_place && !in_set(&x->j.punch, t->rw->slot.seq)) {
		uint32_t blk = ic_writer_clone_blk(f.w);
		uint64_t lim = f.start;    /* where the writer's bytes start */

		if (f.clone && f.cp.clus.n)    /* the first cluster's first block */
			lim = f.cp.clus.v[0].dst & ~(uint64_t)(blk - 1);
		ret = ic_reclaim_plan(&x->rp, f.vt, f.reloc, lim, blk);
	}
	if (ret)
		goto out;
	snprintf(what, sizeof(what), "merge into '%s'", ic_point_name(t->p));
	ic_progress_init(&f.prog, what, f.copy_bytes, x->o->quiet);
	/* (clones without --verify read nothing: no checker, unless a clone is refused and
	 * its records are copied, checked in line then) */
	f.ck = (f.clone && !x->o->verify) || ic_checker_start(&ck, f.cbuf_len) ? NULL : &ck;
	ret = copy_all(&f);
	if (f.ck) {
		int r2 = ic_checker_finish(&ck);

		/* a damaged record first: the copier may have stopped because of it */
		if (r2 && (!ret || r2 == IC_ECORRUPT))
			ret = r2;
		f.ck = NULL;
	}
	ic_progress_done(&f.prog);
	if (ret)
		goto out;
	st->bytes_copied += f.clone ? f.cp.copied : f.copy_bytes;
	st->bytes_shared += f.clone ? f.cp.shared : 0;
	x->shared_alloc += f.clone ? f.cp.alloc : 0;
	st->bytes_relocated += f.reloc_bytes;
	st->bytes_index += f.count * sizeof(struct icf_entry);
	t1 = ic_now();
	st->phase_seconds[IC_CONS_T_COPY] += t1 - t0;
	/* the totals, the index hash, the rest of the index; fsync; a new file's slot A */
	fill_slot(t);
	ret = ic_writer_finish(f.w, &t->slot);
	f.w = NULL;
	if (!ret && t->in_place && x->rp.valid) {    /* the plan is for this slot only */
		x->rp.seq = t->seq;
		memcpy(x->rp.index_hash, t->slot.index_hash, ICF_INDEX_HASH_LEN);
	}
	st->phase_seconds[IC_CONS_T_SYNC] += ic_now() - t1;
out:
	if (ret && t->in_place)
		ic_reclaim_reset(&x->rp);
	free(tmp);
	flat_free(&f);
	return ret;
}
