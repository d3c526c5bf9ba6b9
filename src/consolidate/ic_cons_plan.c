/* ic_cons_plan.c: the planner: retention rules, merge and retention plans, and the
 * plan of a chain, printed.  Reads nothing but the chain's slots; changes nothing. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>

#include "ic_chain.h"
#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_util.h"

/* ---- retention ------------------------------------------------------------------- */

static const char *const rule_names[IC_KEEP_NRULES] = {
	"last", "hourly", "daily", "weekly", "monthly", "yearly",
};

bool ic_retention_empty(const struct ic_retention *r)
{
	for (int i = 0; i < IC_KEEP_NRULES; i++)
		if (r->keep[i])
			return false;
	return true;
}

static int64_t period_of(enum ic_keep_rule r, const struct ic_cons_node *p)
{
	time_t t = (time_t)p->created;
	struct tm tm;
	char buf[16];

	if (r == IC_KEEP_LAST)
		return p->seq;
	gmtime_r(&t, &tm);
	switch (r) {
	case IC_KEEP_HOURLY:
		return (((int64_t)tm.tm_year * 400 + tm.tm_yday) * 24) + tm.tm_hour;
	case IC_KEEP_DAILY:
		return (int64_t)tm.tm_year * 400 + tm.tm_yday;
	case IC_KEEP_WEEKLY:
		strftime(buf, sizeof(buf), "%G%V", &tm);
		return strtoll(buf, NULL, 10);
	case IC_KEEP_MONTHLY:
		return (int64_t)tm.tm_year * 12 + tm.tm_mon;
	default:
		return tm.tm_year;
	}
}

static void add_why(struct ic_cons_node *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void add_why(struct ic_cons_node *p, const char *fmt, ...)
{
	size_t len = strlen(p->why);
	va_list ap;

	if (len && len + 2 < sizeof(p->why)) {
		strcpy(p->why + len, ", ");
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(p->why + len, sizeof(p->why) - len, fmt, ap);
	va_end(ap);
}

/* qsort_r comparators of node indices; arg: the nodes */
static int cmp_newest_first(const void *a, const void *b, void *arg)
{
	const struct ic_cons_node *x = (const struct ic_cons_node *)arg + *(const size_t *)a;
	const struct ic_cons_node *y = (const struct ic_cons_node *)arg + *(const size_t *)b;

	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	return x->seq > y->seq ? -1 : x->seq < y->seq ? 1 : 0;
}

static int cmp_seq_idx(const void *a, const void *b, void *arg)
{
	const struct ic_cons_node *x = (const struct ic_cons_node *)arg + *(const size_t *)a;
	const struct ic_cons_node *y = (const struct ic_cons_node *)arg + *(const size_t *)b;

	return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/* Node indices sorted by ascending seq, for parent look-ups (the caller frees); NULL: no
 * memory. */
static size_t *by_seq(const struct ic_cons_node *nodes, size_t n)
{
	size_t *ix = malloc((n ? n : 1) * sizeof(*ix));

	if (!ix)
		return NULL;
	for (size_t i = 0; i < n; i++)
		ix[i] = i;
	qsort_r(ix, n, sizeof(*ix), cmp_seq_idx, (void *)nodes);
	return ix;
}

static ssize_t find_node(const struct ic_cons_node *nodes, const size_t *ix, size_t n, uint32_t seq)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint32_t s = nodes[ix[mid]].seq;

		if (s == seq)
			return (ssize_t)ix[mid];
		if (s < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static ssize_t parent_of(const struct ic_cons_node *nodes, const size_t *ix, size_t n, size_t i)
{
	if (!nodes[i].parent_seq)
		return -1;
	return find_node(nodes, ix, n, nodes[i].parent_seq);
}

/* Keep non-kept points that have kept points in two or more child subtrees. */
static int keep_branch_points(struct ic_cons_node *nodes, size_t n)
{
	size_t *ix = by_seq(nodes, n);
	bool *sub = calloc(n ? n : 1, sizeof(*sub));
	unsigned *kids = calloc(n ? n : 1, sizeof(*kids));
	int ret = 0;

	if (!ix || !sub || !kids) {
		ret = -ENOMEM;
		goto out;
	}
	/* descending seq: every child is done before its parent */
	for (size_t k = n; k-- > 0;) {
		size_t i = ix[k];
		ssize_t par;

		if (nodes[i].broken)
			continue;
		if (!nodes[i].keep && kids[i] >= 2) {
			nodes[i].keep = true;
			add_why(&nodes[i], "branch");
		}
		sub[i] = sub[i] || nodes[i].keep;
		par = parent_of(nodes, ix, n, i);
		if (par >= 0 && sub[i]) {
			kids[par]++;
			sub[par] = true;
		}
	}
out:
	free(ix);
	free(sub);
	free(kids);
	return ret;
}

/* The post-snapshot point Q of a snapshot point P, or -1: P and Q are one restore point in
 * two forms (crash-consistent, quiesced), kept or dropped together. */
static ssize_t paired_parent(const struct ic_cons_node *nodes, const size_t *ix, size_t n,
			     size_t i)
{
	ssize_t par = parent_of(nodes, ix, n, i);

	if (!nodes[i].post_snapshot || nodes[i].broken || par < 0 || nodes[par].broken)
		return -1;
	return par;
}

/* Keep both of a pair when one is kept (until nothing changes: a parent may have several). */
static void keep_pairs(struct ic_cons_node *nodes, size_t n, const size_t *ix)
{
	bool changed = true;

	while (changed) {
		changed = false;
		for (size_t i = 0; i < n; i++) {
			ssize_t par = paired_parent(nodes, ix, n, i);

			if (par < 0 || nodes[par].keep == nodes[i].keep)
				continue;
			if (nodes[par].keep)
				add_why(&nodes[i], "post-snapshot of %s", nodes[par].name);
			else
				add_why(&nodes[par], "snapshot of %s", nodes[i].name);
			nodes[par].keep = nodes[i].keep = true;
			changed = true;
		}
	}
}

int ic_retention_select(struct ic_cons_node *nodes, size_t n, const struct ic_retention *r)
{
	size_t *order, *ix, m = 0;
	int ret;

	if (ic_retention_empty(r))
		return ic_fail(-EINVAL, "no retention rule given");
	order = malloc((n ? n : 1) * sizeof(*order));
	ix = by_seq(nodes, n);
	if (!order || !ix) {
		free(order);
		free(ix);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		nodes[i].keep = false;
		nodes[i].why[0] = '\0';
		/* a post-snapshot point is counted by its parent */
		if (!nodes[i].broken && paired_parent(nodes, ix, n, i) < 0)
			order[m++] = i;
	}
	qsort_r(order, m, sizeof(*order), cmp_newest_first, nodes);
	for (int rule = 0; rule < IC_KEEP_NRULES; rule++) {
		unsigned want = r->keep[rule], count = 0;
		bool have_last = false;
		int64_t last = 0;

		if (!want)
			continue;
		for (size_t k = 0; k < m && count < want; k++) {
			struct ic_cons_node *p = &nodes[order[k]];
			int64_t per = period_of((enum ic_keep_rule)rule, p);

			if (have_last && per == last)
				continue;
			have_last = true;
			last = per;
			if (p->keep)
				continue;    /* kept by an earlier rule: the period does not count */
			p->keep = true;
			add_why(p, "%s #%u", rule_names[rule], ++count);
		}
		if (count < want && m && !nodes[order[m - 1]].keep) {
			nodes[order[m - 1]].keep = true;
			add_why(&nodes[order[m - 1]], "%s oldest", rule_names[rule]);
		}
	}
	free(order);
	keep_pairs(nodes, n, ix);
	ret = keep_branch_points(nodes, n);
	if (!ret)
		keep_pairs(nodes, n, ix);   /* a snapshot point kept as a branch keeps its pair */
	free(ix);
	return ret;
}

/* ---- plans ------------------------------------------------------------------------ */

void ic_cons_plan_free(struct ic_cons_plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nsteps; i++) {
		free(p->steps[i].remove);
		free(p->steps[i].rebase);
	}
	free(p->steps);
	memset(p, 0, sizeof(*p));
}

/* A zeroed step at the end of the plan, or NULL (no memory). */
static struct ic_cons_step *new_step(struct ic_cons_plan *p)
{
	struct ic_cons_step *s;

	if (ic_array_grow(&p->steps, &p->steps_cap, p->nsteps + 1, sizeof(*p->steps)))
		return NULL;
	s = &p->steps[p->nsteps++];
	memset(s, 0, sizeof(*s));
	return s;
}

/* Is node a (or a itself) an ancestor of node i? */
static bool is_ancestor(const struct ic_cons_node *nodes, const size_t *ix, size_t n, ssize_t a,
			ssize_t i)
{
	for (; i >= 0; i = parent_of(nodes, ix, n, (size_t)i))
		if (i == a)
			return true;
	return false;
}

static void finish_step(struct ic_cons_step *s, struct u32v *rm, struct u32v *rb)
{
	qsort(rm->v, rm->n, sizeof(*rm->v), cmp_u32_desc);
	s->remove = rm->v;
	s->nremove = rm->n;
	s->rebase = rb ? rb->v : NULL;
	s->nrebase = rb ? rb->n : 0;
}

int ic_cons_plan_retention(const struct ic_cons_node *nodes, size_t n, struct ic_cons_plan *p)
{
	size_t *ix = by_seq(nodes, n);
	bool *done = calloc(n ? n : 1, sizeof(*done));
	struct u32v prune = { 0 };
	int ret = 0;

	memset(p, 0, sizeof(*p));
	if (!ix || !done) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < n && !ret; k++) {
		size_t t = ix[k];
		ssize_t from, par = parent_of(nodes, ix, n, t);
		struct ic_cons_step *s;
		struct u32v rm = { 0 };

		if (!nodes[t].keep || nodes[t].broken || par < 0 || nodes[par].keep)
			continue;
		from = par;
		for (ssize_t up = parent_of(nodes, ix, n, (size_t)from); up >= 0 && !nodes[up].keep;
		     up = parent_of(nodes, ix, n, (size_t)up))
			from = up;
		s = new_step(p);
		if (!s) {
			ret = -ENOMEM;
			break;
		}
		s->target = nodes[t].seq;
		s->from = nodes[from].seq;
		s->base = nodes[from].parent_seq;
		s->in_place = nodes[from].parent_seq == 0;
		/* subtree(from) minus subtree(t): the run and the unkept branches off it */
		for (size_t i = 0; i < n; i++)
			if (!nodes[i].broken && is_ancestor(nodes, ix, n, from, (ssize_t)i) &&
			    !is_ancestor(nodes, ix, n, (ssize_t)t, (ssize_t)i)) {
				if (!ret)
					ret = ic_array_push(&rm, nodes[i].seq);
				done[i] = true;
			}
		finish_step(s, &rm, NULL);    /* the step owns rm, freed with the plan */
	}
	for (size_t i = 0; i < n && !ret; i++)
		if (!nodes[i].keep && !nodes[i].broken && !done[i])
			ret = ic_array_push(&prune, nodes[i].seq);
	if (!ret && prune.n) {
		struct ic_cons_step *ps = new_step(p);

		if (ps)
			finish_step(ps, &prune, NULL);
		else
			ret = -ENOMEM;
	}
	if (!prune.n || ret)
		ic_array_free(&prune);
out:
	if (ret)
		ic_cons_plan_free(p);
	free(ix);
	free(done);
	return ret;
}

int ic_cons_plan_merge(const struct ic_cons_node *nodes, size_t n, uint32_t from, uint32_t to,
		       struct ic_cons_plan *p)
{
	size_t *ix = by_seq(nodes, n);
	ssize_t f = ix ? find_node(nodes, ix, n, from) : -1;
	ssize_t t = ix ? find_node(nodes, ix, n, to) : -1;
	struct u32v rm = { 0 }, rb = { 0 };
	struct ic_cons_step *s;
	int ret = 0;

	memset(p, 0, sizeof(*p));
	if (!ix) {
		ret = -ENOMEM;
		goto out;
	}
	if (f < 0 || t < 0) {
		ret = ic_fail(-ENOENT, "no such restore point (sequence %u)", f < 0 ? from : to);
		goto out;
	}
	if (nodes[t].broken) {
		ret = ic_fail(-ENOENT, "restore point '%s' cannot be read: an ancestor is missing",
			      nodes[t].name);
		goto out;
	}
	if (!is_ancestor(nodes, ix, n, f, t)) {
		ret = ic_fail(-EINVAL, "'%s' is not an ancestor of '%s'", nodes[f].name, nodes[t].name);
		goto out;
	}
	if (f == t)
		goto out;
	for (ssize_t i = parent_of(nodes, ix, n, (size_t)t); !ret;
	     i = parent_of(nodes, ix, n, (size_t)i)) {
		ret = ic_array_push(&rm, nodes[i].seq);
		if (i == f)
			break;
	}
	for (size_t i = 0; i < n && !ret; i++) {
		ssize_t par = parent_of(nodes, ix, n, i);

		if ((ssize_t)i != t && par >= 0 && u32_has(rm.v, rm.n, nodes[par].seq) &&
		    !u32_has(rm.v, rm.n, nodes[i].seq))
			ret = ic_array_push(&rb, nodes[i].seq);
	}
	s = ret ? NULL : new_step(p);
	if (!s) {
		ic_array_free(&rm);
		ic_array_free(&rb);
		ret = -ENOMEM;
		goto out;
	}
	s->target = to;
	s->from = from;
	s->base = nodes[f].parent_seq;
	s->in_place = nodes[f].parent_seq == 0;
	finish_step(s, &rm, &rb);
out:
	free(ix);
	return ret;
}

/* ---- planning from a chain and printing the plan ------------------------------------ */

static struct ic_cons_node *chain_nodes(const struct ic_chain *c)
{
	struct ic_cons_node *nodes = calloc(c->npoints + 1, sizeof(*nodes));

	if (!nodes)
		return NULL;
	for (size_t i = 0; i < c->npoints; i++) {
		const struct ic_point *p = &c->points[i];

		nodes[i].seq = p->seq;
		nodes[i].parent_seq = p->img->slot.parent_seq;
		nodes[i].created = p->img->slot.created;
		nodes[i].name = p->img->slot.name;
		nodes[i].broken = p->broken;
		nodes[i].post_snapshot = p->img->slot.flags & ICF_SLOT_POST_SNAPSHOT;
	}
	return nodes;
}

/* "FROM..TO": names may contain "..", so take the one split naming two points. */
static int parse_merge(const struct ic_chain *c, const char *spec, uint32_t *from, uint32_t *to)
{
	size_t len = strlen(spec);
	char unknown[256] = "";	/* the name of a split whose other name is a point */
	int found = 0;

	for (const char *d = strstr(spec, ".."); d; d = strstr(d + 1, "..")) {
		char left[256];
		size_t k = (size_t)(d - spec);
		struct ic_point *f, *t;

		if (k >= sizeof(left) || k + 2 > len)
			continue;
		memcpy(left, spec, k);
		left[k] = '\0';
		f = ic_chain_find(c, left);
		t = ic_chain_find(c, d + 2);
		if (f && t) {
			*from = f->seq;
			*to = t->seq;
			found++;
		} else if ((f || t) && !unknown[0]) {
			snprintf(unknown, sizeof(unknown), "%s", f ? d + 2 : left);
		}
	}
	if (found == 1)
		return 0;
	if (found > 1)
		return ic_fail(-EINVAL, "--merge %s: ambiguous (several splits name two points)", spec);
	if (!strstr(spec, ".."))
		return ic_fail(-EINVAL, "--merge %s: expected FROM..TO", spec);
	if (unknown[0])
		return ic_fail(-ENOENT, "%s: --merge %s: no such pair of restore points: no point is named '%s'",
			       c->dir, spec, unknown);
	return ic_fail(-ENOENT, "%s: --merge %s: no such pair of restore points: neither name is a point",
		       c->dir, spec);
}

static void fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static const char *node_name(const struct ic_cons_node *nodes, size_t n, uint32_t seq)
{
	for (size_t i = 0; i < n; i++)
		if (nodes[i].seq == seq)
			return nodes[i].name;
	return "?";
}

static void print_plan(FILE *out, const char *name, const struct ic_chain *c,
		       const struct ic_cons_node *nodes, size_t n, const struct ic_cons_plan *plan,
		       bool retention)
{
	char tbuf[32];

	fprintf(out, "plan for %s (%zu restore points):\n", name, n);
	for (size_t i = 0; i < n; i++) {
		const struct ic_cons_node *p = &nodes[i];
		const char *act = "keep", *into = NULL;

		for (size_t s = 0; s < plan->nsteps; s++)
			if (u32_has(plan->steps[s].remove, plan->steps[s].nremove, p->seq)) {
				act = plan->steps[s].target ? "merge" : "remove";
				into = plan->steps[s].target ? node_name(nodes, n, plan->steps[s].target) : NULL;
			}
		if (p->broken)
			act = "broken";
		fmt_time(p->created, tbuf, sizeof(tbuf));
		fprintf(out, "  %-6s %08u  %s  %-14s %s", act, p->seq, tbuf,
			ic_kind_name(c->points[i].img->slot.kind), p->name);
		if (into)
			fprintf(out, "  -> into '%s'", into);
		else if (retention && p->keep)
			fprintf(out, "  (%s)", p->why);
		else if (p->broken)
			fprintf(out, "  (an ancestor is missing: left alone)");
		fputc('\n', out);
	}
	if (!plan->nsteps)
		fprintf(out, "nothing to do\n");
	for (size_t s = 0; s < plan->nsteps; s++) {
		const struct ic_cons_step *st = &plan->steps[s];

		if (!st->target) {
			fprintf(out, "step %zu: remove %zu point%s that no kept point depends on\n", s + 1,
				st->nremove, st->nremove == 1 ? "" : "s");
			continue;
		}
		fprintf(out, "step %zu: merge '%s'..'%s' into one point '%s'", s + 1,
			node_name(nodes, n, st->from), node_name(nodes, n, st->target),
			node_name(nodes, n, st->target));
		if (!st->base)
			fprintf(out, ", which becomes a synthetic full%s\n",
				st->in_place ? " (written in place in the full's file)" : "");
		else
			fprintf(out, ", based on '%s'\n", node_name(nodes, n, st->base));
		for (size_t r = 0; r < st->nrebase; r++)
			fprintf(out, "        rebase '%s' onto %s%s%s (it keeps its content)\n",
				node_name(nodes, n, st->rebase[r]), st->base ? "'" : "nothing: a synthetic full",
				st->base ? node_name(nodes, n, st->base) : "", st->base ? "'" : "");
	}
}

int ic_cons_make_plan(struct cons *x, struct ic_chain *c, struct ic_cons_node **nodes,
		     struct ic_cons_plan *plan)
{
	int ret;

	*nodes = chain_nodes(c);
	if (!*nodes)
		return -ENOMEM;
	if (x->o->merge) {
		uint32_t from = 0, to = 0;

		ret = parse_merge(c, x->o->merge, &from, &to);
		if (!ret)
			ret = ic_cons_plan_merge(*nodes, c->npoints, from, to, plan);
	} else {
		ret = ic_retention_select(*nodes, c->npoints, &x->o->keep);
		if (!ret)
			ret = ic_cons_plan_retention(*nodes, c->npoints, plan);
	}
	for (size_t s = 0; !ret && x->o->no_in_place && s < plan->nsteps; s++)
		plan->steps[s].in_place = false;
	if (!ret && x->o->out && (x->o->dry_run || !x->o->quiet))
		print_plan(x->o->out, x->o->chain_name ? x->o->chain_name : c->dir, c, *nodes,
			   c->npoints, plan, !x->o->merge);
	return ret;
}
