/* ic_consolidate.c: keyless merging of restore points: each step of a plan prepared
 * (journal, copies), committed and finished, after the recovery of an interrupted run.
 * The modules: ic_cons_plan (planner), ic_cons_write (target writer), ic_cons_journal,
 * ic_cons_finish (roll forward/back, hole punching), ic_cons_util. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_chain.h"
#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_util.h"

const char *const ic_cons_phase_names[IC_CONS_NPHASES] = {
	"plan", "copy", "sync", "commit", "finish", "punch",
};

/* ---- steps ------------------------------------------------------------------------ */

static void track_peak(struct cons *x)
{
	/* the blocks cloned count in both files but were not allocated again */
	uint64_t a = ic_cons_dir_alloc(x->dir), sh = x->shared_alloc;

	a = a > sh ? a - sh : 0;
	if (a > x->alloc0 && a - x->alloc0 > x->st->peak_extra)
		x->st->peak_extra = a - x->alloc0;
}

/* The points outside the removed set whose parent is in it: each is rewritten onto
 * the nearest surviving ancestor of its removed ancestors. */
static size_t find_targets(struct ic_chain *c, const bool *in_d, const struct ic_cons_step *s,
			   struct tgt *tg)
{
	size_t n = 0;

	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_point *p = &c->points[i], *top;

		if (in_d[i] || !p->parent || !in_d[p->parent - c->points])
			continue;
		top = p->parent;
		while (top->parent && in_d[top->parent - c->points])
			top = top->parent;
		memset(&tg[n], 0, sizeof(tg[n]));
		tg[n].p = p;
		tg[n].seq = p->seq;
		tg[n].base = top->parent ? top->parent->seq : 0;
		tg[n].fl = top->depth - 1;
		tg[n].in_place = s->in_place && p->seq == s->target && top->seq == s->from &&
				 !top->parent;
		n++;
	}
	return n;
}

static void count_removed(struct cons *x, struct ic_chain *c, const bool *in_d, struct tgt *tg,
			  size_t ntg)
{
	for (size_t i = 0; i < c->npoints; i++) {
		bool merged = false;

		if (!in_d[i])
			continue;
		for (size_t k = 0; k < ntg && !merged; k++)
			for (struct ic_point *q = tg[k].p; q && !merged; q = q->parent)
				merged = q == &c->points[i];
		if (merged)
			x->st->points_merged++;
		else
			x->st->points_removed++;
	}
}

static int prepare_step(struct cons *x, struct ic_chain *c, const bool *in_d, struct tgt *tg,
			size_t ntg)
{
	struct journal *j = &x->j;
	double t0;
	int ret;

	ic_cons_journal_reset_step(j);
	j->phase = J_PREPARE;
	for (size_t i = 0; i < c->npoints; i++)
		if (in_d[i] && (ret = ic_array_push(&j->remove, c->points[i].seq)))
			return ret;
	qsort(j->remove.v, j->remove.n, sizeof(*j->remove.v), cmp_u32_desc);
	for (size_t k = 0; k < ntg; k++)
		if (tg[k].in_place) {
			struct ic_point *top = tg[k].p;

			while (top->parent)
				top = top->parent;
			j->inplace = true;
			j->ip_file = top->seq;
			j->ip_target = tg[k].seq;
			j->ip_d0 = top->img->slot.data_end;
		}
	ret = ic_cons_journal_write(x->dir, j);
	if (ret)
		return ret;
	ic_cons_step(x, "prepare");
	/* the copies first: they may read the full's records, which stay untouched */
	for (int pass = 0; pass < 2; pass++)
		for (size_t k = 0; k < ntg; k++) {
			struct tgt *t = &tg[k];

			if (t->in_place != (pass == 1))
				continue;
			if (t->in_place) {
				char *fpath = ic_cons_seq_path(x->dir, j->ip_file);

				ret = fpath ? ic_image_open(fpath, O_RDWR, &t->rw) : -ENOMEM;
				free(fpath);
				if (!ret && (t->rw->slot.seq != j->ip_file || t->rw->slot.data_end != j->ip_d0))
					ret = ic_fail(-EAGAIN, "%s: changed under the merge", t->rw->path);
			}
			if (!ret)
				ret = ic_cons_write_target(x, c, t);
			if (ret)
				return ret;
		}
	ic_cons_step(x, "written");
	t0 = ic_now();
	track_peak(x);
	j->phase = J_COMMIT;
	for (size_t k = 0; k < ntg; k++) {
		if (tg[k].in_place) {
			j->have_slot = true;
			j->ip_slot = tg[k].slot;
		} else {
			ret = ic_array_push(&j->tseq, tg[k].seq);
			if (!ret)
				ret = ic_array_push(&j->tbase, tg[k].base);
			if (ret)
				return ret;
		}
	}
	ret = ic_cons_journal_write(x->dir, j);
	x->st->phase_seconds[IC_CONS_T_COMMIT] += ic_now() - t0;
	if (!ret)
		ic_cons_step(x, "commit");
	return ret;
}

static int run_step(struct cons *x, const struct ic_cons_step *s)
{
	struct ic_chain *c = NULL;
	struct cons_rebase rb = { 0 };
	struct tgt *tg = NULL;
	bool *in_d = NULL, any = false;
	size_t ntg = 0;
	double t0;
	int ret = ic_chain_open(x->dir, &c);

	if (ret)
		return ret;
	in_d = calloc(c->npoints + 1, sizeof(*in_d));
	tg = calloc(c->npoints + 1, sizeof(*tg));
	if (!in_d || !tg) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < s->nremove; i++) {
		struct ic_point *p = ic_chain_find_seq(c, s->remove[i]);

		if (!p)
			continue;
		if (p->broken) {
			ret = ic_fail(-ENOENT, "%s: restore point '%s' cannot be read (an ancestor is missing): not merging it",
				      c->dir, ic_point_name(p));
			goto out;
		}
		in_d[p - c->points] = any = true;
	}
	/* a point served with a writable overlay stays, rewritten (FORMAT.md 10.8) */
	ic_cons_rebase_pin(x, c, in_d);
	any = false;
	for (size_t i = 0; i < c->npoints; i++)
		any |= in_d[i];
	if (!any)
		goto out;
	ntg = find_targets(c, in_d, s, tg);
	ret = ic_cons_rebase_collect(c, in_d, &rb);
	if (ret)
		goto out;
	count_removed(x, c, in_d, tg, ntg);
	x->st->steps++;
	ret = prepare_step(x, c, in_d, tg, ntg);
	for (size_t k = 0; k < ntg; k++)
		ic_image_close(tg[k].rw);
	ic_chain_free(c);
	c = NULL;
	if (ret) {
		struct ic_error err;    /* the rollback's own failures must not replace it */
		int r2 = 0;

		ic_error_save(&err, ret);
		if (x->j.phase == J_PREPARE)
			r2 = ic_cons_rollback(x);
		if (r2)
			ic_cons_note(x, "rollback: %s", ic_last_error(r2));
		ret = ic_error_raise(&err);
		goto out;
	}
	for (size_t k = 0; k < ntg; k++)
		x->st->points_rewritten += tg[k].in_place;
	t0 = ic_now();
	ret = ic_cons_finish_commit(x, false);
	x->st->phase_seconds[IC_CONS_T_FINISH] += ic_now() - t0;
	if (!ret)
		ret = ic_cons_rebase_ask(x, &rb);
out:
	ic_cons_rebase_free(&rb);
	ic_chain_free(c);
	free(in_d);
	free(tg);
	return ret;
}

/* ---- the whole run ----------------------------------------------------------------- */
static int run_locked(struct cons *x)
{
	struct ic_chain *c = NULL;
	struct ic_cons_node *nodes = NULL;
	struct ic_cons_plan plan = { 0 };
	double t_lock = ic_now(), t_plan = 0;
	int ret = ic_cons_recover(x);

	if (!ret)
		ic_cons_rebase_load(x);     /* points kept for servers that did not re-base */
	if (!ret)
		ret = ic_chain_cleanup_tmp(x->dir);
	if (!ret)
		ret = ic_cons_punch(x);
	if (!ret) {
		t_plan = ic_now();
		ret = ic_chain_open(x->dir, &c);
	}
	if (ret)
		goto out;
	if (!c->npoints && !c->nbad) {
		ret = ic_fail(-ENOENT, "%s: no restore points (not a chain?)", x->dir);
		goto out;
	}
	for (size_t i = 0; i < c->nbad; i++)
		ic_cons_note(x, "warning: %s", c->bad[i].why);
	ic_cons_rebase_resolve(x, c);
	ret = ic_cons_make_plan(x, c, &nodes, &plan);
	/* the lock, then the plan (a recovery that finishes a step counts as finish) */
	x->st->phase_seconds[IC_CONS_T_PLAN] = t_lock - x->t0 + ic_now() - t_plan;
	ic_chain_free(c);
	c = NULL;
	for (size_t s = 0; !ret && s < plan.nsteps; s++)
		ret = run_step(x, &plan.steps[s]);
	if (!ret)
		ret = ic_cons_punch(x);
	if (ret) {
		struct ic_error e;

		ic_error_save(&e, ret);     /* the save's own failures must not take its message */
		ic_cons_rebase_save(x);
		ret = ic_error_raise(&e);
	} else {
		ic_cons_rebase_save(x);
	}
	ic_cons_step(x, "done");
out:
	ic_cons_plan_free(&plan);
	free(nodes);
	ic_chain_free(c);
	return ret;
}

int ic_consolidate(const struct ic_consolidate_opts *o, struct ic_consolidate_stats *st)
{
	struct cons x;
	double t0 = ic_now();
	int lock = -1, ret;

	memset(&x, 0, sizeof(x));
	memset(st, 0, sizeof(*st));
	x.o = o;
	x.st = st;
	x.dir = o->chain_dir;
	x.t0 = t0;
	if (!o->merge && ic_retention_empty(&o->keep))
		return ic_fail(-EINVAL, "nothing to do: give --merge or a --keep-* rule");
	if (o->dry_run) {
		struct ic_chain *c;
		struct ic_cons_node *nodes = NULL;
		struct ic_cons_plan plan = { 0 };
		struct journal j;

		if (!ic_cons_journal_read(o->chain_dir, &j) && (j.phase != J_IDLE || j.punch.n) && o->out)
			fprintf(o->out, "note: %s holds an interrupted consolidation, which the next run finishes first\n",
				o->chain_dir);
		ic_cons_journal_destroy(&j);
		ret = ic_chain_open(o->chain_dir, &c);
		if (ret)
			return ret;
		ret = ic_cons_make_plan(&x, c, &nodes, &plan);
		ic_cons_plan_free(&plan);
		free(nodes);
		ic_chain_free(c);
		return ret;
	}
	ret = ic_chain_lock(o->chain_dir, false, &lock);
	if (ret)
		return ret;
	x.alloc0 = ic_cons_dir_alloc(o->chain_dir);
	ret = run_locked(&x);
	st->space_freed = (int64_t)x.alloc0 - (int64_t)ic_cons_dir_alloc(o->chain_dir);
	ic_cons_journal_destroy(&x.j);
	ic_reclaim_reset(&x.rp);
	ic_array_free(&x.stale);
	ic_chain_unlock(lock);
	st->seconds = ic_now() - t0;
	return ret;
}
