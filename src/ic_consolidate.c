/* ic_consolidate.c: keyless merging of restore points: retention, plans, the journal,
 * the block-map flattening writer, steps and the recovery of interrupted runs. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "ic_chain.h"
#include "ic_consolidate.h"
#include "ic_image.h"
#include "ic_lock.h"
#include "ic_progress.h"
#include "ic_util.h"
#include "ic_view.h"

#define WINDOW_BLOCKS 65536u        /* positions flattened per pass of the window loop */
#define COPY_BUF (8u << 20)         /* read-and-check buffer of the record copier */
#define ALIGN_RUN (256u << 10)      /* runs this long are placed reflink-friendly */
#define TMP_TARGET ".tmp-cons-"     /* + seq + ".img": a target written, not yet renamed */

/* ---- test hook ------------------------------------------------------------------- */

const char *const ic_cons_crash_points[] = {
	"prepare", "copy", "written", "commit", "rename", "renamed", "switch", "dup",
	"moved", "delete", "deleted", "punch", "done", NULL,
};

static void hook_one(const char *var, bool stall, const char *name, unsigned *hits)
{
	const char *spec = getenv(var), *colon;
	size_t len;
	unsigned n = 1;

	if (!spec || !*spec)
		return;
	colon = strchr(spec, ':');
	len = colon ? (size_t)(colon - spec) : strlen(spec);
	if (len != strlen(name) || strncmp(spec, name, len))
		return;
	if (colon)
		n = (unsigned)strtoul(colon + 1, NULL, 10);
	if (++*hits != n)
		return;
	if (!stall) {
		raise(SIGKILL);
	} else {
		fprintf(stderr, "stalled at %s\n", name);
		for (;;)
			pause();
	}
}

static void crash_point(const char *name)
{
	static unsigned crash_hits, stall_hits;

	hook_one("IMGCHAIN_TEST_CRASH_AT", false, name, &crash_hits);
	hook_one("IMGCHAIN_TEST_STALL_AT", true, name, &stall_hits);
}

/* ---- small helpers ------------------------------------------------------------------ */

struct u32v {
	uint32_t *v;
	size_t n, cap;
};

static void u32_push(struct u32v *a, uint32_t x)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 16;
		a->v = realloc(a->v, a->cap * sizeof(*a->v));
		if (!a->v)
			abort();
	}
	a->v[a->n++] = x;
}

static bool u32_has(const uint32_t *v, size_t n, uint32_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

static int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

static char *seq_path(const char *dir, uint32_t seq)
{
	char name[32];

	ic_image_filename(seq, name, sizeof(name));
	return ic_path_join(dir, name);
}

static char *tmp_path(const char *dir, uint32_t seq)
{
	char name[64];

	snprintf(name, sizeof(name), "%s%u.img", TMP_TARGET, seq);
	return ic_path_join(dir, name);
}

/* Bytes allocated to the files of the chain directory. */
static uint64_t dir_alloc(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t sum = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
			sum += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

/* ---- retention ------------------------------------------------------------------- */

static const char *const rule_names[IC_KEEP_NRULES] = {
	"last", "hourly", "daily", "weekly", "monthly", "yearly",
};

const char *ic_keep_rule_name(enum ic_keep_rule r)
{
	return (unsigned)r < IC_KEEP_NRULES ? rule_names[r] : "?";
}

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

static const struct ic_cons_node *sort_base;

static int cmp_newest_first(const void *a, const void *b)
{
	const struct ic_cons_node *x = &sort_base[*(const size_t *)a];
	const struct ic_cons_node *y = &sort_base[*(const size_t *)b];

	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	return x->seq > y->seq ? -1 : x->seq < y->seq ? 1 : 0;
}

static int cmp_seq_idx(const void *a, const void *b)
{
	const struct ic_cons_node *x = &sort_base[*(const size_t *)a];
	const struct ic_cons_node *y = &sort_base[*(const size_t *)b];

	return x->seq < y->seq ? -1 : x->seq > y->seq ? 1 : 0;
}

/* Node indices sorted by ascending seq, for parent look-ups (the caller frees). */
static size_t *by_seq(const struct ic_cons_node *nodes, size_t n)
{
	size_t *ix = malloc((n ? n : 1) * sizeof(*ix));

	if (!ix)
		abort();
	for (size_t i = 0; i < n; i++)
		ix[i] = i;
	sort_base = nodes;
	qsort(ix, n, sizeof(*ix), cmp_seq_idx);
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
static void keep_branch_points(struct ic_cons_node *nodes, size_t n)
{
	size_t *ix = by_seq(nodes, n);
	bool *sub = calloc(n ? n : 1, sizeof(*sub));
	unsigned *kids = calloc(n ? n : 1, sizeof(*kids));

	if (!sub || !kids)
		abort();
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
	free(ix);
	free(sub);
	free(kids);
}

int ic_retention_select(struct ic_cons_node *nodes, size_t n, const struct ic_retention *r)
{
	size_t *order, m = 0;

	if (ic_retention_empty(r))
		return ic_fail(-EINVAL, "no retention rule given");
	order = malloc((n ? n : 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		nodes[i].keep = false;
		nodes[i].why[0] = '\0';
		if (!nodes[i].broken)
			order[m++] = i;
	}
	sort_base = nodes;
	qsort(order, m, sizeof(*order), cmp_newest_first);
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
	keep_branch_points(nodes, n);
	return 0;
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

static struct ic_cons_step *new_step(struct ic_cons_plan *p)
{
	struct ic_cons_step *s = realloc(p->steps, (p->nsteps + 1) * sizeof(*s));

	if (!s)
		abort();
	p->steps = s;
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

	if (!done)
		abort();
	memset(p, 0, sizeof(*p));
	for (size_t k = 0; k < n; k++) {
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
		s->target = nodes[t].seq;
		s->from = nodes[from].seq;
		s->base = nodes[from].parent_seq;
		s->in_place = nodes[from].parent_seq == 0;
		/* subtree(from) minus subtree(t): the run and the unkept branches off it */
		for (size_t i = 0; i < n; i++)
			if (!nodes[i].broken && is_ancestor(nodes, ix, n, from, (ssize_t)i) &&
			    !is_ancestor(nodes, ix, n, (ssize_t)t, (ssize_t)i)) {
				u32_push(&rm, nodes[i].seq);
				done[i] = true;
			}
		finish_step(s, &rm, NULL);
	}
	for (size_t i = 0; i < n; i++)
		if (!nodes[i].keep && !nodes[i].broken && !done[i])
			u32_push(&prune, nodes[i].seq);
	if (prune.n)
		finish_step(new_step(p), &prune, NULL);
	else
		free(prune.v);
	free(ix);
	free(done);
	return 0;
}

int ic_cons_plan_merge(const struct ic_cons_node *nodes, size_t n, uint32_t from, uint32_t to,
		       struct ic_cons_plan *p)
{
	size_t *ix = by_seq(nodes, n);
	ssize_t f = find_node(nodes, ix, n, from), t = find_node(nodes, ix, n, to);
	struct u32v rm = { 0 }, rb = { 0 };
	struct ic_cons_step *s;
	int ret = 0;

	memset(p, 0, sizeof(*p));
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
	for (ssize_t i = parent_of(nodes, ix, n, (size_t)t);; i = parent_of(nodes, ix, n, (size_t)i)) {
		u32_push(&rm, nodes[i].seq);
		if (i == f)
			break;
	}
	for (size_t i = 0; i < n; i++) {
		ssize_t par = parent_of(nodes, ix, n, i);

		if ((ssize_t)i != t && par >= 0 && u32_has(rm.v, rm.n, nodes[par].seq) &&
		    !u32_has(rm.v, rm.n, nodes[i].seq))
			u32_push(&rb, nodes[i].seq);
	}
	s = new_step(p);
	s->target = to;
	s->from = from;
	s->base = nodes[f].parent_seq;
	s->in_place = nodes[f].parent_seq == 0;
	finish_step(s, &rm, &rb);
out:
	free(ix);
	return ret;
}

/* ---- the journal ---------------------------------------------------------------------
 *
 * CHAIN/journal, a text file replaced atomically (ic_write_file_atomic), last line a
 * checksum of the others:
 *
 *   imgchain-journal 1
 *   phase prepare|commit|idle
 *   remove SEQ...              points the step removes, descending
 *   inplace FILE TARGET D0     target written into FILE's image, whose data ended at D0
 *   slot HEX                   (commit) the in-place target's new slot, encoded
 *   target SEQ BASE            (commit) a target written to .tmp-cons-SEQ.img
 *   punch SEQ                  an image whose unused space awaits its readers
 *   sum HEX                    XXH3-64 of every byte before this line
 *
 * prepare: nothing visible has changed yet; recovery rolls back (truncates FILE to
 * D0, removes the temporary files).  commit: every new byte is written and synced;
 * recovery rolls forward (renames, slot switch, removals), re-checking each action
 * so that it can be repeated any number of times. */

enum { J_IDLE, J_PREPARE, J_COMMIT };

struct journal {
	int phase;
	struct u32v remove;
	bool inplace;
	uint32_t ip_file, ip_target;
	uint64_t ip_d0;
	bool have_slot;
	struct icf_slot ip_slot;
	struct u32v tseq, tbase;
	struct u32v punch;
};

static void journal_reset_step(struct journal *j)
{
	free(j->remove.v);
	free(j->tseq.v);
	free(j->tbase.v);
	memset(&j->remove, 0, sizeof(j->remove));
	memset(&j->tseq, 0, sizeof(j->tseq));
	memset(&j->tbase, 0, sizeof(j->tbase));
	j->phase = J_IDLE;
	j->inplace = j->have_slot = false;
}

static void journal_destroy(struct journal *j)
{
	journal_reset_step(j);
	free(j->punch.v);
	memset(j, 0, sizeof(*j));
}

struct sbuf {
	char *s;
	size_t n, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int need;

	va_start(ap, fmt);
	need = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (b->n + (size_t)need + 1 > b->cap) {
		b->cap = (b->n + (size_t)need + 1) * 2;
		b->s = realloc(b->s, b->cap);
		if (!b->s)
			abort();
	}
	va_start(ap, fmt);
	vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	b->n += (size_t)need;
}

/* Replace the journal atomically but without syncing: for the prepare and idle
 * phases, whose loss in a crash costs nothing but space (an unused tail of the full,
 * cut at its next merge; holes not punched).  Only commit must be durable. */
static int write_quick(const char *dir, const void *buf, size_t len)
{
	char *tmp = ic_path_join(dir, ".tmp-" ICF_JOURNAL_NAME);
	char *dst = ic_path_join(dir, ICF_JOURNAL_NAME);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), ret;

	if (fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", tmp, strerror(errno));
	} else {
		ret = ic_pwrite_full(fd, buf, len, 0, tmp);
		close(fd);
		if (!ret && rename(tmp, dst) < 0)
			ret = ic_fail(-errno, "%s: rename: %s", dst, strerror(errno));
		if (ret)
			unlink(tmp);
	}
	free(tmp);
	free(dst);
	return ret;
}

static int journal_write(const char *dir, const struct journal *j)
{
	static const char *const phases[] = { "idle", "prepare", "commit" };
	struct sbuf b = { 0 };
	char *path;
	int ret;

	if (j->phase == J_IDLE && !j->punch.n) {
		/* no directory sync: a journal that comes back after a power loss describes
		 * a finished step, and finishing it again changes nothing */
		path = ic_path_join(dir, ICF_JOURNAL_NAME);
		ret = unlink(path) < 0 && errno != ENOENT
			      ? ic_fail(-errno, "%s: remove: %s", path, strerror(errno))
			      : 0;
		free(path);
		return ret;
	}
	sb_printf(&b, "imgchain-journal 1\nphase %s\n", phases[j->phase]);
	if (j->phase != J_IDLE) {
		sb_printf(&b, "remove");
		for (size_t i = 0; i < j->remove.n; i++)
			sb_printf(&b, " %u", j->remove.v[i]);
		sb_printf(&b, "\n");
		if (j->inplace)
			sb_printf(&b, "inplace %u %u %llu\n", j->ip_file, j->ip_target,
				  (unsigned long long)j->ip_d0);
		if (j->have_slot) {
			uint8_t raw[ICF_SLOT_SIZE];

			ic_slot_encode(&j->ip_slot, raw);
			sb_printf(&b, "slot ");
			for (size_t i = 0; i < sizeof(raw); i++)
				sb_printf(&b, "%02x", raw[i]);
			sb_printf(&b, "\n");
		}
		for (size_t i = 0; i < j->tseq.n; i++)
			sb_printf(&b, "target %u %u\n", j->tseq.v[i], j->tbase.v[i]);
	}
	for (size_t i = 0; i < j->punch.n; i++)
		sb_printf(&b, "punch %u\n", j->punch.v[i]);
	sb_printf(&b, "sum %016llx\n", (unsigned long long)XXH3_64bits(b.s, b.n));
	if (j->phase == J_COMMIT)
		ret = ic_write_file_atomic(dir, ICF_JOURNAL_NAME, b.s, b.n, 0600);
	else
		ret = write_quick(dir, b.s, b.n);
	free(b.s);
	return ret;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int journal_line(struct journal *j, char *line, const char *path)
{
	char *arg = strchr(line, ' ');
	unsigned long long a, b, c;

	if (!arg)
		return strcmp(line, "remove") ? -1 : 0;
	*arg++ = '\0';
	if (!strcmp(line, "phase")) {
		j->phase = !strcmp(arg, "prepare") ? J_PREPARE : !strcmp(arg, "commit") ? J_COMMIT
			 : !strcmp(arg, "idle") ? J_IDLE : -1;
		return j->phase < 0 ? -1 : 0;
	}
	if (!strcmp(line, "remove")) {
		for (char *tok = strtok(arg, " "); tok; tok = strtok(NULL, " "))
			u32_push(&j->remove, (uint32_t)strtoul(tok, NULL, 10));
		return 0;
	}
	if (!strcmp(line, "inplace") && sscanf(arg, "%llu %llu %llu", &a, &b, &c) == 3) {
		j->inplace = true;
		j->ip_file = (uint32_t)a;
		j->ip_target = (uint32_t)b;
		j->ip_d0 = c;
		return 0;
	}
	if (!strcmp(line, "slot") && strlen(arg) == 2 * ICF_SLOT_SIZE) {
		uint8_t raw[ICF_SLOT_SIZE];

		for (size_t i = 0; i < ICF_SLOT_SIZE; i++) {
			int hi = hexval(arg[2 * i]), lo = hexval(arg[2 * i + 1]);

			if (hi < 0 || lo < 0)
				return -1;
			raw[i] = (uint8_t)(hi << 4 | lo);
		}
		j->have_slot = true;
		return ic_slot_decode(raw, &j->ip_slot, path) ? -1 : 0;
	}
	if (!strcmp(line, "target") && sscanf(arg, "%llu %llu", &a, &b) == 2) {
		u32_push(&j->tseq, (uint32_t)a);
		u32_push(&j->tbase, (uint32_t)b);
		return 0;
	}
	if (!strcmp(line, "punch") && sscanf(arg, "%llu", &a) == 1) {
		u32_push(&j->punch, (uint32_t)a);
		return 0;
	}
	return -1;
}

/* Read CHAIN/journal; a missing journal is an idle one. */
static int journal_read(const char *dir, struct journal *j)
{
	char *path = ic_path_join(dir, ICF_JOURNAL_NAME);
	char *buf = NULL, *sum, *line, *save = NULL;
	struct stat st;
	int fd, ret = 0;

	memset(j, 0, sizeof(*j));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = errno == ENOENT ? 0 : ic_fail(-errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0 || st.st_size > (1 << 24) || !(buf = calloc(1, (size_t)st.st_size + 1))) {
		ret = ic_fail(-EIO, "%s: cannot read the journal", path);
		goto out;
	}
	ret = ic_pread_full(fd, buf, (size_t)st.st_size, 0, path);
	if (ret)
		goto out;
	sum = strstr(buf, "sum ");
	if (strncmp(buf, "imgchain-journal 1\n", 19) || !sum || (sum > buf && sum[-1] != '\n') ||
	    strtoull(sum + 4, NULL, 16) != XXH3_64bits(buf, (size_t)(sum - buf)))
		goto bad;
	*sum = '\0';
	for (line = strtok_r(buf + 19, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		if (journal_line(j, line, path))
			goto bad;
	goto out;
bad:
	ret = ic_fail(IC_ECORRUPT, "%s: journal damaged; check the chain with imgverify, then remove the journal",
		      path);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return ret;
}

/* ---- flattening: a target's block map folded onto its new base ------------------------
 *
 * For each position of the target's disk, the entry of the newest image of the merged
 * levels [fl, target] that has one, as the target's view resolves it; a zero entry
 * where the base would otherwise show a block the target does not have (a disk that
 * shrank and grew back).  Records of the merged levels are copied byte for byte and
 * checked; in place, the full's own records (level 0) stay where they are. */

struct ment {
	struct icf_entry e;
	uint64_t dst;
	uint32_t lvl;
	bool copy;
};

struct flat {
	struct ic_view *vt, *vb;
	uint32_t fl, tseq;
	bool keep_root;
	int64_t *cursor;
	struct ment *win;
	struct icf_entry *run;
	uint8_t *ibuf, *cbuf;
	XXH3_state_t *ih;
	int dfd;
	const char *dpath;
	uint64_t start, cur, idx_off;
	uint64_t count, n_data, n_zero, data_bytes, copy_bytes;
	struct ic_progress prog;
	uint64_t done;
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
			m->copy = m->e.kind != ICF_ENTRY_ZERO && !(f->keep_root && lvl == 0);
		} else if (!o && bvis) {
			memset(&m->e, 0, sizeof(m->e));
			m->e.pos = pos;
			m->e.plain_len = ic_view_block_len(f->vt, pos);
			m->e.origin = f->tseq;
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

	while (i < n) {
		struct ment *m0;
		uint64_t next, len = 0, d;
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
		if (len >= ALIGN_RUN)
			f->cur += ((m0->e.offset & 4095) - (f->cur & 4095)) & 4095;
		d = f->cur;
		for (size_t r = i; r < k; r++)
			if (f->win[r].copy) {
				f->win[r].dst = d;
				d += f->win[r].e.stored_len;
			}
		if (copy) {
			if (ic_interrupted)
				return ic_fail(-EINTR, "interrupted");
			ret = ic_image_copy_records(f->vt->path[m0->lvl], f->run, nrun, f->dfd, f->cur,
						    f->dpath, f->cbuf, COPY_BUF);
			if (ret)
				return ret;
			f->done += len;
			ic_progress_update(&f->prog, f->done);
			crash_point("copy");
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

		if (f->win[k].copy)
			e.offset = f->win[k].dst;
		ic_entry_encode(&e, f->ibuf + k * sizeof(struct icf_entry));
	}
	XXH3_128bits_update(f->ih, f->ibuf, n * sizeof(struct icf_entry));
	return ic_pwrite_full(f->dfd, f->ibuf, n * sizeof(struct icf_entry),
			      f->idx_off + f->count * sizeof(struct icf_entry), f->dpath);
}

static int flat_pass(struct flat *f, bool copy)
{
	uint64_t nblocks = f->vt->nblocks;
	int ret;

	memset(f->cursor, 0, f->vt->depth * sizeof(*f->cursor));
	f->cur = f->start;
	f->count = f->n_data = f->n_zero = f->data_bytes = f->copy_bytes = 0;
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

			if (m->e.kind == ICF_ENTRY_ZERO) {
				f->n_zero++;
			} else {
				f->n_data++;
				f->data_bytes += m->e.stored_len;
				if (m->copy)
					f->copy_bytes += m->e.stored_len;
			}
		}
		f->count += (uint64_t)n;
	}
	return 0;
}

struct tgt {
	struct ic_point *p;
	uint32_t seq, base, fl;
	bool in_place;
	struct ic_image *rw;        /* in place: the full's image, opened O_RDWR */
	struct icf_slot slot;       /* the target's new slot (generation set on writing) */
};

static void fill_slot(struct tgt *t, struct flat *f)
{
	const struct icf_slot *old = &t->p->img->slot;
	XXH128_canonical_t c;
	struct icf_slot *s = &t->slot;

	memset(s, 0, sizeof(*s));
	s->generation = 1;
	s->seq = old->seq;
	s->parent_seq = t->base;
	s->kind = t->base ? ICF_KIND_CONSOLIDATED : ICF_KIND_SYNTHETIC_FULL;
	s->created = old->created;
	s->disk_size = old->disk_size;
	memcpy(s->name, old->name, sizeof(s->name));
	memcpy(s->seal, old->seal, sizeof(s->seal));
	s->index_offset = f->idx_off;
	s->index_count = f->count;
	s->data_bytes = f->data_bytes;
	s->n_data = f->n_data;
	s->n_zero = f->n_zero;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(f->ih));
	memcpy(s->index_hash, c.digest, 16);
	s->data_end = f->idx_off + f->count * sizeof(struct icf_entry);
}

static void flat_free(struct flat *f)
{
	ic_view_free(f->vt);
	ic_view_free(f->vb);
	free(f->cursor);
	free(f->win);
	free(f->run);
	free(f->ibuf);
	free(f->cbuf);
	if (f->ih)
		XXH3_freeState(f->ih);
}

/* Start a new image file for t: the header, both slots empty. */
static int open_new_image(const char *path, const struct ic_image *like, int *fd)
{
	uint8_t *hb = calloc(1, ICF_HEADER_SIZE);
	int ret;

	if (!hb)
		return -ENOMEM;
	*fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (*fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", path, strerror(errno));
		free(hb);
		return ret;
	}
	ic_header_encode(&like->hdr, hb);
	ret = ic_pwrite_full(*fd, hb, ICF_HEADER_SIZE, 0, path);
	free(hb);
	return ret;
}

static int finish_new_image(int fd, const char *path, struct icf_slot *s)
{
	uint8_t raw[ICF_SLOT_SIZE];
	int ret = ic_fsync(fd, path);

	if (ret)
		return ret;
	ic_slot_encode(s, raw);
	ret = ic_pwrite_full(fd, raw, sizeof(raw), ICF_SLOT_A_OFF, path);
	return ret ? ret : ic_fsync(fd, path);
}

/* Write target t: to CHAIN/.tmp-cons-SEQ.img, or appended to t->rw in place (the
 * slot is not switched here).  Adds to *copied the record bytes copied. */
static int write_target(const char *dir, struct ic_chain *c, struct tgt *t, bool quiet,
			uint64_t *copied, uint64_t *index_bytes)
{
	struct flat f;
	char *tmp = NULL, what[160];
	int fd = -1, ret;

	memset(&f, 0, sizeof(f));
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
	f.ibuf = malloc(WINDOW_BLOCKS * sizeof(struct icf_entry));
	f.cbuf = malloc(COPY_BUF);
	f.ih = XXH3_createState();
	if (!f.cursor || !f.win || !f.run || !f.ibuf || !f.cbuf || !f.ih) {
		ret = -ENOMEM;
		goto out;
	}
	if (t->in_place) {
		f.dfd = t->rw->fd;
		f.dpath = t->rw->path;
		f.start = t->rw->slot.data_end;
	} else {
		tmp = tmp_path(dir, t->seq);
		ret = open_new_image(tmp, t->p->img, &fd);
		if (ret)
			goto out;
		f.dfd = fd;
		f.dpath = tmp;
		f.start = ICF_HEADER_SIZE;
	}
	ret = flat_pass(&f, false);
	if (ret)
		goto out;
	f.idx_off = (f.cur + 63) & ~(uint64_t)63;
	snprintf(what, sizeof(what), "merge into '%s'", ic_point_name(t->p));
	ic_progress_init(&f.prog, what, f.copy_bytes, quiet);
	XXH3_128bits_reset(f.ih);
	ret = flat_pass(&f, true);
	ic_progress_done(&f.prog);
	if (ret)
		goto out;
	fill_slot(t, &f);
	ret = ic_slot_validate(&t->slot, f.dpath);
	if (ret)
		goto out;
	*copied += f.copy_bytes;
	*index_bytes += f.count * sizeof(struct icf_entry);
	if (t->in_place)
		ret = ic_fsync(f.dfd, f.dpath);
	else
		ret = finish_new_image(fd, tmp, &t->slot);
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	flat_free(&f);
	return ret;
}

/* ---- steps ------------------------------------------------------------------------ */

struct cons {
	const struct ic_consolidate_opts *o;
	struct ic_consolidate_stats *st;
	const char *dir;
	struct journal j;
	uint64_t alloc0;
};

static void note(struct cons *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct cons *x, const char *fmt, ...)
{
	va_list ap;

	if (x->o->quiet)
		return;
	fprintf(stderr, "%s: ", ic_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ic_lock_describe on one line (a command line may hold newlines). */
static void describe(pid_t pid, char *buf, size_t len)
{
	ic_lock_describe(pid, buf, len);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < ' ')
			*p = ' ';
}

static void track_peak(struct cons *x)
{
	uint64_t a = dir_alloc(x->dir);

	if (a > x->alloc0 && a - x->alloc0 > x->st->peak_extra)
		x->st->peak_extra = a - x->alloc0;
}

/* Make the non-current slot a copy of the current one, so that the file can only ever
 * be read as the point it now holds. */
static int dup_slot(struct ic_image *img)
{
	uint8_t raw[ICF_SLOT_SIZE];
	struct icf_slot other, s;
	int ret = ic_pread_full(img->fd, raw, sizeof(raw),
				img->slot_index ? ICF_SLOT_A_OFF : ICF_SLOT_B_OFF, img->path);

	if (ret)
		return ret;
	if (!ic_slot_decode(raw, &other, img->path) && other.seq == img->slot.seq &&
	    other.index_offset == img->slot.index_offset &&
	    other.index_count == img->slot.index_count &&
	    !memcmp(other.index_hash, img->slot.index_hash, 16))
		return 0;
	/* not synced: the current slot decides; this copy only keeps the file from ever
	 * falling back to the point it held before */
	s = img->slot;
	s.generation = img->slot.generation + 1;
	ic_slot_encode(&s, raw);
	ret = ic_pwrite_full(img->fd, raw, sizeof(raw),
			     img->slot_index ? ICF_SLOT_A_OFF : ICF_SLOT_B_OFF, img->path);
	if (!ret) {
		img->slot = s;
		img->slot_index ^= 1;
	}
	return ret;
}

/* Undo a step that had not reached its commit point: drop the temporary files, cut
 * what was appended to the full, forget the step.  Safe to repeat. */
static int rollback(struct cons *x)
{
	struct journal *j = &x->j;
	int ret = ic_chain_cleanup_tmp(x->dir), r2;

	if (j->inplace) {
		char *path = seq_path(x->dir, j->ip_file);
		struct ic_image *img;

		if (!ic_image_open(path, O_RDWR, &img)) {
			if (img->slot.seq == j->ip_file && img->slot.data_end == j->ip_d0 &&
			    img->file_size > j->ip_d0) {
				if (ftruncate(img->fd, (off_t)j->ip_d0) < 0 && !ret)
					ret = ic_fail(-errno, "%s: truncate: %s", path, strerror(errno));
				else if (!ret)
					ret = ic_fsync(img->fd, path);
			}
			ic_image_close(img);
		}
		free(path);
	}
	journal_reset_step(j);
	r2 = journal_write(x->dir, j);
	return ret ? ret : r2;
}

static bool in_set(const struct u32v *v, uint32_t seq)
{
	return u32_has(v->v, v->n, seq);
}

/* The in-place target: switch the full's slot to the target, copy it to the other
 * slot, rename the file over the target's.  Each action is checked first, so this
 * can be repeated after a crash at any point. */
static int finish_inplace(struct cons *x)
{
	struct journal *j = &x->j;
	char *fpath = seq_path(x->dir, j->ip_file), *tpath = seq_path(x->dir, j->ip_target);
	struct ic_image *img = NULL;
	int ret = ic_image_open(fpath, O_RDWR, &img);

	if (ret == -ENOENT) {    /* already renamed */
		ret = ic_image_open(tpath, O_RDONLY, &img);
		if (!ret && (img->slot.seq != j->ip_target || img->slot.parent_seq))
			ret = ic_fail(IC_ECORRUPT, "%s: expected the merged full of sequence %u", tpath,
				      j->ip_target);
		goto out;
	}
	if (ret)
		goto out;
	if (img->slot.seq == j->ip_file) {
		struct icf_slot s = j->ip_slot;
		uint64_t len = s.index_count * sizeof(struct icf_entry);
		uint8_t *idx = malloc(len ? len : 1);
		XXH128_canonical_t c;

		if (!j->have_slot || img->slot.data_end != j->ip_d0 || !idx) {
			free(idx);
			ret = ic_fail(IC_ECORRUPT, "%s: does not match the journal", fpath);
			goto out;
		}
		ret = ic_pread_full(img->fd, idx, len, s.index_offset, fpath);
		XXH128_canonicalFromHash(&c, XXH3_128bits(idx, len));
		free(idx);
		if (!ret && memcmp(c.digest, s.index_hash, 16))
			ret = ic_fail(IC_ECORRUPT, "%s: the merged index appended to it is damaged", fpath);
		if (!ret)
			ret = ic_image_switch_slot(img, &s);
		if (ret)
			goto out;
		crash_point("switch");
	}
	if (img->slot.seq != j->ip_target) {
		ret = ic_fail(IC_ECORRUPT, "%s: holds sequence %u, expected %u or %u", fpath,
			      img->slot.seq, j->ip_file, j->ip_target);
		goto out;
	}
	ret = dup_slot(img);
	if (ret)
		goto out;
	crash_point("dup");
	/* made durable with the removals that follow (one directory sync): until then a
	 * crash leaves both files claiming the target, and the chain takes this one */
	if (rename(fpath, tpath) < 0) {
		ret = ic_fail(-errno, "%s: rename to %s: %s", fpath, tpath, strerror(errno));
		goto out;
	}
	crash_point("moved");
out:
	ic_image_close(img);
	free(fpath);
	free(tpath);
	return ret;
}

/* A point that depends on a point to remove and that the step does not rewrite
 * (made since the step was planned)?  Then the step cannot finish. */
static bool unexpected_dependents(struct cons *x)
{
	struct ic_chain *c;
	bool bad = false;

	if (ic_chain_open(x->dir, &c))
		return true;
	for (size_t i = 0; i < c->npoints && !bad; i++) {
		struct ic_point *p = &c->points[i];

		if (p->parent && in_set(&x->j.remove, p->parent->seq) &&
		    !in_set(&x->j.remove, p->seq) && !(x->j.inplace && p->seq == x->j.ip_target)) {
			note(x, "restore point '%s' depends on a point to remove", ic_point_name(p));
			bad = true;
		}
	}
	ic_chain_free(c);
	return bad;
}

static int remove_points(struct cons *x)
{
	struct journal *j = &x->j;
	int ret = 0;

	for (size_t i = 0; i < j->remove.n; i++) {
		char *path = seq_path(x->dir, j->remove.v[i]), who[600];
		struct ic_image *img;
		pid_t pid;

		ret = ic_image_open(path, O_RDONLY, &img);
		if (ret) {
			if (ret != -ENOENT)
				note(x, "%s: left in place: %s", path, ic_last_error(ret));
			free(path);
			ret = 0;
			continue;
		}
		if (img->slot.seq != j->remove.v[i]) {
			ic_image_close(img);
			free(path);
			continue;
		}
		if (ic_lock_holder(img->fd, IC_LOCK_OVERLAY, &pid) == 1) {
			describe(pid, who, sizeof(who));
			ret = ic_fail(-EBUSY, "%s: restore point '%s' is served with a writable overlay by %s: not removing it",
				      path, img->slot.name, who);
			ic_image_close(img);
			free(path);
			return ret;
		}
		ic_image_close(img);
		if (unlink(path) < 0 && errno != ENOENT)
			ret = ic_fail(-errno, "%s: remove: %s", path, strerror(errno));
		free(path);
		if (ret)
			return ret;
		crash_point("delete");
	}
	ret = ic_fsync_dir(x->dir);
	crash_point("deleted");
	return ret;
}

/* Roll a committed step forward to its end.  Safe to repeat after a crash anywhere.
 * recovering: the lock was released since the step was planned (a backup may have
 * added a point on a point to remove). */
static int finish_commit(struct cons *x, bool recovering)
{
	struct journal *j = &x->j;
	bool cannot = false;
	int ret;

	for (size_t i = 0; i < j->tseq.n; i++) {
		char *tmp = tmp_path(x->dir, j->tseq.v[i]), *dst = seq_path(x->dir, j->tseq.v[i]);
		struct ic_image *img;

		if (access(tmp, F_OK) == 0) {
			ret = rename(tmp, dst) < 0 ? ic_fail(-errno, "%s: rename: %s", dst, strerror(errno)) : 0;
			x->st->points_rewritten++;
			crash_point("rename");
		} else {
			ret = ic_image_open(dst, O_RDONLY, &img);
			if (!ret) {
				cannot |= img->slot.parent_seq != j->tbase.v[i];
				ic_image_close(img);
			}
			cannot |= ret != 0;
			ret = 0;
		}
		free(tmp);
		free(dst);
		if (ret)
			return ret;
	}
	/* the renamed points no longer depend on the points to remove: durable before
	 * the full's slot switch makes those vanish */
	if (j->tseq.n && (ret = ic_fsync_dir(x->dir)))
		return ret;
	crash_point("renamed");
	if (cannot || (recovering && unexpected_dependents(x))) {
		note(x, "the interrupted consolidation cannot be finished (its files were removed, or a point was added); rolled back, every point kept");
		return rollback(x);
	}
	if (j->inplace) {
		ret = finish_inplace(x);
		if (ret)
			return ret;
	}
	ret = remove_points(x);
	if (ret)
		return ret;
	if (j->inplace && !in_set(&j->punch, j->ip_target))
		u32_push(&j->punch, j->ip_target);
	journal_reset_step(j);
	return journal_write(x->dir, j);
}

static int check_overlays(struct ic_chain *c, const bool *in_d)
{
	char who[600];
	pid_t pid;

	for (size_t i = 0; i < c->npoints; i++)
		if (in_d[i] && ic_lock_holder(c->points[i].img->fd, IC_LOCK_OVERLAY, &pid) == 1) {
			describe(pid, who, sizeof(who));
			return ic_fail(-EBUSY, "%s: restore point '%s' is served with a writable overlay by %s: not merging it away",
				       c->dir, ic_point_name(&c->points[i]), who);
		}
	return 0;
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
	int ret;

	journal_reset_step(j);
	j->phase = J_PREPARE;
	for (size_t i = 0; i < c->npoints; i++)
		if (in_d[i])
			u32_push(&j->remove, c->points[i].seq);
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
	ret = journal_write(x->dir, j);
	if (ret)
		return ret;
	crash_point("prepare");
	/* the copies first: they may read the full's records, which stay untouched */
	for (int pass = 0; pass < 2; pass++)
		for (size_t k = 0; k < ntg; k++) {
			struct tgt *t = &tg[k];

			if (t->in_place != (pass == 1))
				continue;
			if (t->in_place) {
				char *fpath = seq_path(x->dir, j->ip_file);

				ret = ic_image_open(fpath, O_RDWR, &t->rw);
				free(fpath);
				if (!ret && (t->rw->slot.seq != j->ip_file || t->rw->slot.data_end != j->ip_d0))
					ret = ic_fail(-EAGAIN, "%s: changed under the merge", t->rw->path);
			}
			if (!ret)
				ret = write_target(x->dir, c, t, x->o->quiet, &x->st->bytes_copied,
						   &x->st->bytes_index);
			if (ret)
				return ret;
		}
	crash_point("written");
	track_peak(x);
	j->phase = J_COMMIT;
	for (size_t k = 0; k < ntg; k++) {
		if (tg[k].in_place) {
			j->have_slot = true;
			j->ip_slot = tg[k].slot;
		} else {
			u32_push(&j->tseq, tg[k].seq);
			u32_push(&j->tbase, tg[k].base);
		}
	}
	ret = journal_write(x->dir, j);
	if (!ret)
		crash_point("commit");
	return ret;
}

static int run_step(struct cons *x, const struct ic_cons_step *s)
{
	struct ic_chain *c = NULL;
	struct tgt *tg = NULL;
	bool *in_d = NULL, any = false;
	size_t ntg = 0;
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
	if (!any)
		goto out;
	ret = check_overlays(c, in_d);
	if (ret)
		goto out;
	ntg = find_targets(c, in_d, s, tg);
	count_removed(x, c, in_d, tg, ntg);
	x->st->steps++;
	ret = prepare_step(x, c, in_d, tg, ntg);
	for (size_t k = 0; k < ntg; k++)
		ic_image_close(tg[k].rw);
	ic_chain_free(c);
	c = NULL;
	if (ret) {
		char msg[1024];
		int r2 = 0;

		snprintf(msg, sizeof(msg), "%s", ic_last_error(ret));
		if (x->j.phase == J_PREPARE)
			r2 = rollback(x);
		if (r2)
			note(x, "rollback: %s", ic_last_error(r2));
		ret = ic_fail(ret, "%s", msg);
		goto out;
	}
	for (size_t k = 0; k < ntg; k++)
		x->st->points_rewritten += tg[k].in_place;
	ret = finish_commit(x, false);
out:
	ic_chain_free(c);
	free(in_d);
	free(tg);
	return ret;
}

/* ---- hole punching ---------------------------------------------------------------- */

/* Free the space of records no longer referenced in the images listed in the journal,
 * unless a reader holds one (its punching waits for a later run). */
static int do_punches(struct cons *x)
{
	struct journal *j = &x->j;
	size_t keep = 0, before = j->punch.n;
	int ret = 0;

	x->st->punches_pending = 0;
	for (size_t i = 0; i < j->punch.n; i++) {
		uint32_t seq = j->punch.v[i];
		char *path = seq_path(x->dir, seq), who[600];
		struct ic_image *img;
		uint64_t freed;
		pid_t pid;
		int r = ic_image_open(path, O_RDWR, &img);

		free(path);
		if (r)
			continue;    /* gone: nothing to free */
		if (img->slot.seq != seq) {
			ic_image_close(img);
			continue;
		}
		if (ic_lock_holder(img->fd, IC_LOCK_READER, &pid) == 1) {
			describe(pid, who, sizeof(who));
			note(x, "%s: in use by %s: its unused space will be freed by a later run",
			     img->path, who);
			j->punch.v[keep++] = seq;
			x->st->punches_pending++;
			ic_image_close(img);
			continue;
		}
		r = dup_slot(img);
		if (!r) {
			double t0 = ic_now();

			crash_point("punch");
			r = ic_image_punch_unused(img, &freed);
			x->st->punch_seconds += ic_now() - t0;
		}
		if (r == -EOPNOTSUPP || r == IC_ECORRUPT)
			note(x, "%s", ic_last_error(r));
		else if (r && !ret)
			ret = r;
		if (r && r != -EOPNOTSUPP && r != IC_ECORRUPT) {
			j->punch.v[keep++] = seq;
			x->st->punches_pending++;
		}
		ic_image_close(img);
	}
	j->punch.n = keep;
	if (keep != before || (!keep && j->phase == J_IDLE)) {
		int r = journal_write(x->dir, j);

		if (!ret)
			ret = r;
	}
	return ret;
}

/* ---- planning from a chain and printing the plan ------------------------------------ */

static struct ic_cons_node *chain_nodes(const struct ic_chain *c)
{
	struct ic_cons_node *nodes = calloc(c->npoints + 1, sizeof(*nodes));

	if (!nodes)
		abort();
	for (size_t i = 0; i < c->npoints; i++) {
		const struct ic_point *p = &c->points[i];

		nodes[i].seq = p->seq;
		nodes[i].parent_seq = p->img->slot.parent_seq;
		nodes[i].created = p->img->slot.created;
		nodes[i].name = p->img->slot.name;
		nodes[i].broken = p->broken;
	}
	return nodes;
}

/* "FROM..TO": names may contain "..", so take the one split naming two points. */
static int parse_merge(const struct ic_chain *c, const char *spec, uint32_t *from, uint32_t *to)
{
	size_t len = strlen(spec);
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
		}
	}
	if (found == 1)
		return 0;
	if (found > 1)
		return ic_fail(-EINVAL, "--merge %s: ambiguous (several splits name two points)", spec);
	if (!strstr(spec, ".."))
		return ic_fail(-EINVAL, "--merge %s: expected FROM..TO", spec);
	return ic_fail(-ENOENT, "%s: --merge %s: no such pair of restore points", c->dir, spec);
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

static void print_plan(FILE *out, const struct ic_chain *c, const struct ic_cons_node *nodes,
		       size_t n, const struct ic_cons_plan *plan, bool retention)
{
	char tbuf[32];

	fprintf(out, "plan for %s (%zu restore points):\n", c->dir, n);
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

static int make_plan(struct cons *x, struct ic_chain *c, struct ic_cons_node **nodes,
		     struct ic_cons_plan *plan)
{
	int ret;

	*nodes = chain_nodes(c);
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
	if (!ret && x->o->out && (x->o->dry_run || !x->o->quiet))
		print_plan(x->o->out, c, *nodes, c->npoints, plan, !x->o->merge);
	return ret;
}

/* ---- the whole run ----------------------------------------------------------------- */

static int recover(struct cons *x)
{
	int ret = journal_read(x->dir, &x->j);

	if (ret)
		return ret;
	if (x->j.phase == J_PREPARE) {
		note(x, "rolling back an interrupted consolidation (it had changed nothing visible)");
		x->st->recovered = true;
		return rollback(x);
	}
	if (x->j.phase == J_COMMIT) {
		note(x, "finishing an interrupted consolidation");
		x->st->recovered = true;
		return finish_commit(x, true);
	}
	return 0;
}

static int run_locked(struct cons *x)
{
	struct ic_chain *c = NULL;
	struct ic_cons_node *nodes = NULL;
	struct ic_cons_plan plan = { 0 };
	int ret = recover(x);

	if (!ret)
		ret = ic_chain_cleanup_tmp(x->dir);
	if (!ret)
		ret = do_punches(x);
	if (!ret)
		ret = ic_chain_open(x->dir, &c);
	if (ret)
		goto out;
	if (!c->npoints && !c->nbad) {
		ret = ic_fail(-ENOENT, "%s: no restore points (not a chain?)", x->dir);
		goto out;
	}
	for (size_t i = 0; i < c->nbad; i++)
		note(x, "warning: %s", c->bad[i].why);
	ret = make_plan(x, c, &nodes, &plan);
	ic_chain_free(c);
	c = NULL;
	for (size_t s = 0; !ret && s < plan.nsteps; s++)
		ret = run_step(x, &plan.steps[s]);
	if (!ret)
		ret = do_punches(x);
	crash_point("done");
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
	if (!o->merge && ic_retention_empty(&o->keep))
		return ic_fail(-EINVAL, "nothing to do: give --merge or a --keep-* rule");
	if (o->dry_run) {
		struct ic_chain *c;
		struct ic_cons_node *nodes = NULL;
		struct ic_cons_plan plan = { 0 };
		struct journal j;

		if (!journal_read(o->chain_dir, &j) && (j.phase != J_IDLE || j.punch.n) && o->out)
			fprintf(o->out, "note: %s holds an interrupted consolidation, which the next run finishes first\n",
				o->chain_dir);
		journal_destroy(&j);
		ret = ic_chain_open(o->chain_dir, &c);
		if (ret)
			return ret;
		ret = make_plan(&x, c, &nodes, &plan);
		ic_cons_plan_free(&plan);
		free(nodes);
		ic_chain_free(c);
		return ret;
	}
	ret = ic_chain_lock(o->chain_dir, false, &lock);
	if (ret)
		return ret;
	x.alloc0 = dir_alloc(o->chain_dir);
	ret = run_locked(&x);
	st->space_freed = (int64_t)x.alloc0 - (int64_t)dir_alloc(o->chain_dir);
	journal_destroy(&x.j);
	ic_chain_unlock(lock);
	st->seconds = ic_now() - t0;
	return ret;
}
