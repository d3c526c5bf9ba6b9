/* test_consolidate.c: the retention rules on synthetic timestamps, the planner on
 * synthetic trees, and merges of real chains at the library level (content, seals,
 * disks that shrink and grow, branches, locks held by readers and overlays, damage). */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgchain.h"
#include "ic_consolidate.h"
#include "ic_lock.h"
#include "unit.h"

/* ---- retention ------------------------------------------------------------------- */

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
			 .tm_min = mi };

	return (int64_t)timegm(&tm);
}

static struct ic_cons_node nodes[64];
static size_t nn;

/* A linear chain: node i has seq i+1 and parent i. */
static void linear(const int64_t *times, size_t n)
{
	memset(nodes, 0, sizeof(nodes));
	for (size_t i = 0; i < n; i++) {
		nodes[i].seq = (uint32_t)i + 1;
		nodes[i].parent_seq = (uint32_t)i;
		nodes[i].created = times[i];
		nodes[i].name = "p";
	}
	nn = n;
}

/* "1" for kept, "0" otherwise, by seq */
static const char *kept(void)
{
	static char s[65];

	for (size_t i = 0; i < nn; i++)
		s[i] = nodes[i].keep ? '1' : '0';
	s[nn] = '\0';
	return s;
}

#define CHECK_KEPT(want)                                                             \
	do {                                                                         \
		if (strcmp(kept(), want)) {                                          \
			fprintf(stderr, "%s:%d: kept %s, want %s\n", __FILE__, __LINE__, \
				kept(), want);                                       \
			unit_failures++;                                             \
		}                                                                    \
	} while (0)

static void test_keep_last(void)
{
	int64_t t[10];
	struct ic_retention r = { 0 };

	for (int i = 0; i < 10; i++)
		t[i] = utc(2024, 5, 1, 0, i);
	linear(t, 10);
	r.keep[IC_KEEP_LAST] = 3;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("0000000111");
	r.keep[IC_KEEP_LAST] = 20;    /* more than there are: all kept */
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("1111111111");
	memset(&r, 0, sizeof(r));
	CHECK(ic_retention_select(nodes, nn, &r) < 0);
}

static void test_keep_daily(void)
{
	/* three per day over four days; newest of each day counts */
	int64_t t[12];
	struct ic_retention r = { 0 };

	for (int d = 0; d < 4; d++)
		for (int k = 0; k < 3; k++)
			t[d * 3 + k] = utc(2024, 2, 27 + d, 6 + 6 * k, 0);    /* Feb 27..Mar 1 (leap) */
	linear(t, 12);
	r.keep[IC_KEEP_DAILY] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("000000001001");
	/* not enough days: the oldest point is kept as well */
	r.keep[IC_KEEP_DAILY] = 6;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("101001001001");
	CHECK(strstr(nodes[0].why, "daily oldest") != NULL);
	/* UTC: 23:30 and 00:30 are two days whatever the local zone */
	t[0] = utc(2024, 1, 1, 23, 30);
	t[1] = utc(2024, 1, 2, 0, 30);
	linear(t, 2);
	r.keep[IC_KEEP_DAILY] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("11");
}

static void test_rule_order(void)
{
	/* keep-last 2 takes the two newest (same day); keep-daily 2 then passes over that
	 * day (its newest is kept already) and counts the two days before */
	int64_t t[8] = {
		utc(2024, 3, 1, 10, 0), utc(2024, 3, 1, 20, 0), utc(2024, 3, 2, 10, 0),
		utc(2024, 3, 2, 20, 0), utc(2024, 3, 3, 10, 0), utc(2024, 3, 4, 8, 0),
		utc(2024, 3, 4, 9, 0),  utc(2024, 3, 4, 10, 0),
	};
	struct ic_retention r = { 0 };

	linear(t, 8);
	r.keep[IC_KEEP_LAST] = 2;
	r.keep[IC_KEEP_DAILY] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("00011011");
	CHECK(strstr(nodes[7].why, "last #1") != NULL);
	CHECK(strstr(nodes[4].why, "daily #1") != NULL);
	CHECK(strstr(nodes[3].why, "daily #2") != NULL);
}

static void test_weekly_iso(void)
{
	/* 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO week 2020-W53; 2021-01-04 is W01 */
	int64_t t[5] = {
		utc(2020, 12, 27, 12, 0),    /* Sun: 2020-W52 */
		utc(2020, 12, 28, 12, 0),    /* W53 */
		utc(2021, 1, 1, 12, 0),      /* W53 */
		utc(2021, 1, 3, 23, 0),      /* W53, its newest */
		utc(2021, 1, 4, 0, 30),      /* 2021-W01 */
	};
	struct ic_retention r = { 0 };

	linear(t, 5);
	r.keep[IC_KEEP_WEEKLY] = 3;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("10011");
}

static void test_monthly_yearly(void)
{
	int64_t t[7] = {
		utc(2021, 6, 1, 0, 0),  utc(2022, 1, 5, 0, 0),  utc(2022, 12, 31, 23, 59),
		utc(2023, 1, 1, 0, 0),  utc(2023, 1, 31, 0, 0), utc(2023, 2, 1, 0, 0),
		utc(2023, 2, 14, 0, 0),
	};
	struct ic_retention r = { 0 };

	linear(t, 7);
	r.keep[IC_KEEP_MONTHLY] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("0000101");
	r.keep[IC_KEEP_YEARLY] = 2;    /* 2023 is taken by monthly: 2022 and 2021 count */
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("1010101");
	memset(&r, 0, sizeof(r));
	r.keep[IC_KEEP_HOURLY] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("0000001");
}

/* full 1 - 2 - 3 - 4 - 5, and a branch 3 - 6 */
static void tree(void)
{
	static const uint32_t par[6] = { 0, 1, 2, 3, 4, 3 };

	memset(nodes, 0, sizeof(nodes));
	for (int i = 0; i < 6; i++) {
		nodes[i].seq = (uint32_t)i + 1;
		nodes[i].parent_seq = par[i];
		nodes[i].created = utc(2024, 1, 1 + i, 0, 0);
		nodes[i].name = (const char *[]){ "f", "a", "b", "c", "d", "x" }[i];
	}
	nn = 6;
}

static void test_plan_retention(void)
{
	struct ic_retention r = { 0 };
	struct ic_cons_plan p;

	/* keep-last 2: x (6) and d (5); b (3) has kept points in two subtrees: kept */
	tree();
	r.keep[IC_KEEP_LAST] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("001011");
	CHECK(strstr(nodes[2].why, "branch") != NULL);
	CHECK_EQ(ic_cons_plan_retention(nodes, nn, &p), 0);
	CHECK_EQ(p.nsteps, 2);
	/* b takes f and a: a synthetic full, in place */
	CHECK_EQ(p.steps[0].target, 3);
	CHECK_EQ(p.steps[0].from, 1);
	CHECK_EQ(p.steps[0].base, 0);
	CHECK(p.steps[0].in_place);
	CHECK_EQ(p.steps[0].nremove, 2);
	CHECK_EQ(p.steps[0].remove[0], 2);
	CHECK_EQ(p.steps[0].remove[1], 1);
	/* d takes c, based on b */
	CHECK_EQ(p.steps[1].target, 5);
	CHECK_EQ(p.steps[1].from, 4);
	CHECK_EQ(p.steps[1].base, 3);
	CHECK(!p.steps[1].in_place);
	ic_cons_plan_free(&p);

	/* keep-last 1 keeps x only: d, c on the other branch are removed, not merged */
	r.keep[IC_KEEP_LAST] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("000001");
	CHECK_EQ(ic_cons_plan_retention(nodes, nn, &p), 0);
	CHECK_EQ(p.nsteps, 1);
	CHECK_EQ(p.steps[0].target, 6);
	CHECK_EQ(p.steps[0].from, 1);
	CHECK_EQ(p.steps[0].nremove, 5);
	ic_cons_plan_free(&p);

	/* a broken point is neither kept nor removed */
	tree();
	nodes[4].broken = true;
	r.keep[IC_KEEP_LAST] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("000001");
	CHECK_EQ(ic_cons_plan_retention(nodes, nn, &p), 0);
	for (size_t i = 0; i < p.steps[0].nremove; i++)
		CHECK(p.steps[0].remove[i] != 5);
	ic_cons_plan_free(&p);
}

/* Post-snapshot points (FORMAT.md 3.2): f <- p <- q (post-snapshot of p), p <- n <- r
 * (post-snapshot of n), q <- s (an ordinary child of q). */
static void pairs(size_t n)
{
	static const uint32_t parent[] = { 0, 1, 2, 2, 4, 3 };
	static const bool post[] = { false, false, true, false, true, false };

	memset(nodes, 0, sizeof(nodes));
	for (size_t i = 0; i < n; i++) {
		nodes[i].seq = (uint32_t)i + 1;
		nodes[i].parent_seq = parent[i];
		nodes[i].post_snapshot = post[i];
		nodes[i].created = utc(2024, 5, 1, 0, (int)i);
		nodes[i].name = (const char *[]){ "f", "p", "q", "n", "r", "s" }[i];
	}
	nn = n;
}

static void test_keep_pairs(void)
{
	struct ic_retention r = { 0 };
	struct ic_cons_plan p;

	/* the rules count f, p, n: r is kept with n, q with p */
	pairs(5);
	r.keep[IC_KEEP_LAST] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("00011");
	CHECK(strstr(nodes[4].why, "post-snapshot of n") != NULL);
	/* p and q are dropped together: p merged into n, q removed */
	CHECK_EQ(ic_cons_plan_retention(nodes, nn, &p), 0);
	CHECK_EQ(p.nsteps, 1);
	CHECK_EQ(p.steps[0].target, 4);
	CHECK_EQ(p.steps[0].nremove, 3);
	ic_cons_plan_free(&p);
	r.keep[IC_KEEP_LAST] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("01111");
	CHECK(strstr(nodes[2].why, "post-snapshot of p") != NULL);
	r.keep[IC_KEEP_LAST] = 3;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("11111");
	/* s on q: keep-last 1 keeps s only (q and p go into it together); keep-last 2 keeps
	 * s and n, so p is a branch point, and q is kept with it */
	pairs(6);
	r.keep[IC_KEEP_LAST] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("000001");
	r.keep[IC_KEEP_LAST] = 2;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("011111");
	CHECK(strstr(nodes[1].why, "branch") != NULL);
	/* a post-snapshot point whose parent is broken counts on its own */
	pairs(3);
	nodes[1].broken = nodes[2].broken = true;
	r.keep[IC_KEEP_LAST] = 1;
	CHECK_EQ(ic_retention_select(nodes, nn, &r), 0);
	CHECK_KEPT("100");
}

static void test_plan_merge(void)
{
	struct ic_cons_plan p;

	tree();
	/* a..d: a, b, c go; x (child of b) is rebased onto f */
	CHECK_EQ(ic_cons_plan_merge(nodes, nn, 2, 5, &p), 0);
	CHECK_EQ(p.nsteps, 1);
	CHECK_EQ(p.steps[0].base, 1);
	CHECK(!p.steps[0].in_place);
	CHECK_EQ(p.steps[0].nremove, 3);
	CHECK_EQ(p.steps[0].nrebase, 1);
	CHECK_EQ(p.steps[0].rebase[0], 6);
	ic_cons_plan_free(&p);
	CHECK_EQ(ic_cons_plan_merge(nodes, nn, 1, 3, &p), 0);
	CHECK(p.steps[0].in_place);
	CHECK_EQ(p.steps[0].nrebase, 0);
	ic_cons_plan_free(&p);
	CHECK(ic_cons_plan_merge(nodes, nn, 6, 5, &p) < 0);    /* x is not an ancestor of d */
	CHECK_EQ(ic_cons_plan_merge(nodes, nn, 5, 5, &p), 0);
	CHECK_EQ(p.nsteps, 0);
}

/* ---- merges of real chains ----------------------------------------------------------- */

static char *dir, *chain;

static void randfill(const char *path, uint64_t size, unsigned seed, int nchanges, bool create)
{
	int fd = open(path, O_RDWR | O_CREAT | (create ? O_TRUNC : 0), 0600);
	uint8_t buf[20000];
	uint64_t rs = seed;

	CHECK(fd >= 0);
	if (create)
		CHECK_EQ(ftruncate(fd, (off_t)size), 0);
	for (int i = 0; i < nchanges; i++) {
		size_t len = 1 + (size_t)unit_rnd_below(&rs, sizeof(buf));
		off_t off = (off_t)unit_rnd_below(&rs, size - len);
		int kind = (int)unit_rnd_below(&rs, 4);

		for (size_t k = 0; k < len; k++)
			buf[k] = kind == 0 ? 0 :
				 kind == 1 ? (uint8_t)(k / 100) : (uint8_t)unit_rnd(&rs);
		CHECK_EQ(pwrite(fd, buf, len, off), (ssize_t)len);
	}
	close(fd);
}

static void backup(const char *src, const char *name, const char *parent)
{
	struct ic_backup_opts o = { .chain_dir = chain, .source = src, .name = name,
				    .parent = parent, .block_size = 4096, .level = 3, .quiet = true,
				    .threads = 2 };
	struct ic_backup_stats st;
	int ret = ic_backup(&o, &st);

	if (ret)
		fprintf(stderr, "backup %s: %s\n", name, ic_last_error(ret));
	CHECK_EQ(ret, 0);
}

static char *spath(const char *name)
{
	return ic_path_join(dir, name);
}

/* Save the source as dir/NAME and back it up as point NAME. */
static void snap(const char *src, const char *name, const char *parent)
{
	char cmd[4096], *dst = spath(name);

	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", src, dst);
	CHECK_EQ(system(cmd), 0);
	backup(src, name, parent);
	free(dst);
}

static void check_point(const char *name)
{
	struct ic_restore_opts o = { .chain_dir = chain, .name = name, .quiet = true, .force = true };
	struct ic_restore_stats st;
	char *out = spath("restored"), *want = spath(name), cmd[4096];
	int ret;

	o.dest = out;
	unlink(out);
	ret = ic_restore(&o, &st);
	if (ret)
		fprintf(stderr, "restore %s: %s\n", name, ic_last_error(ret));
	CHECK_EQ(ret, 0);
	snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", out, want);
	if (system(cmd) != 0) {
		fprintf(stderr, "point %s restores different bytes\n", name);
		unit_failures++;
	}
	free(out);
	free(want);
}

static void verify_all(void)
{
	struct ic_verify_opts o = { .chain_dir = chain, .data = true, .quiet = true };
	struct ic_verify_stats st;
	int ret = ic_verify(&o, &st);

	if (ret)
		fprintf(stderr, "verify: %s\n", ic_last_error(ret));
	CHECK_EQ(ret, 0);
}

static int consolidate(const char *merge, unsigned keep_last, struct ic_consolidate_stats *st)
{
	struct ic_consolidate_opts o = { .chain_dir = chain, .merge = merge, .quiet = true };
	int ret;

	o.keep.keep[IC_KEEP_LAST] = keep_last;
	ret = ic_consolidate(&o, st);
	if (ret)
		fprintf(stderr, "consolidate: %s\n", ic_last_error(ret));
	return ret;
}

static int npoints(void)
{
	struct ic_chain *c;
	int n;

	CHECK_EQ(ic_chain_open(chain, &c), 0);
	n = (int)c->npoints;
	ic_chain_free(c);
	return n;
}

static uint32_t kind_of(const char *name)
{
	struct ic_chain *c;
	struct ic_point *p;
	uint32_t k = 0;

	CHECK_EQ(ic_chain_open(chain, &c), 0);
	p = ic_chain_find(c, name);
	if (p)
		k = p->img->slot.kind;
	ic_chain_free(c);
	return k;
}

/* full; i1 shrinks the disk; i2 grows it back (zeros where the full had data);
 * i3 changes more; a branch br off i1 */
static void make_chain(void)
{
	char *src;

	dir = unit_tmpdir();
	chain = spath("chain");
	src = spath("src");
	randfill(src, 1 << 20, 1, 300, true);
	snap(src, "full", NULL);
	CHECK_EQ(truncate(src, 600 * 1024 + 100), 0);
	randfill(src, 600 * 1024 + 100, 2, 40, false);
	snap(src, "i1", NULL);
	CHECK_EQ(truncate(src, (1 << 20) + 5000), 0);
	randfill(src, (1 << 20) + 5000, 3, 40, false);
	snap(src, "i2", NULL);
	randfill(src, (1 << 20) + 5000, 4, 40, false);
	snap(src, "i3", NULL);
	CHECK_EQ(truncate(src, 0), 0);
	randfill(src, 800 * 1024, 5, 50, true);
	snap(src, "br", "i1");
	free(src);
}

static void test_merge_range(void)
{
	struct ic_consolidate_stats st;

	make_chain();
	/* i1..i2 into i2: br (a child of i1) is rebased onto the full */
	CHECK_EQ(consolidate("i1..i2", 0, &st), 0);
	CHECK_EQ(st.points_merged, 1);
	CHECK_EQ(st.points_rewritten, 2);
	CHECK_EQ(npoints(), 4);
	CHECK_EQ(kind_of("i2"), ICF_KIND_CONSOLIDATED);
	CHECK_EQ(kind_of("br"), ICF_KIND_CONSOLIDATED);
	check_point("full");
	check_point("i2");
	check_point("i3");
	check_point("br");
	verify_all();
	/* into the full, in place: i3 becomes a synthetic full */
	CHECK_EQ(consolidate("full..i3", 0, &st), 0);
	CHECK_EQ(kind_of("i3"), ICF_KIND_SYNTHETIC_FULL);
	CHECK_EQ(kind_of("br"), ICF_KIND_SYNTHETIC_FULL);    /* rebased off the full */
	CHECK_EQ(npoints(), 2);
	check_point("i3");
	check_point("br");
	verify_all();
	unit_rmtree(dir);
	free(chain);
}

static pid_t hold_lock(const char *name, int which)
{
	int pfd[2];
	pid_t pid;
	char c;

	CHECK_EQ(pipe(pfd), 0);
	pid = fork();
	if (pid == 0) {
		char *path = ic_path_join(chain, name);
		int fd = open(path, O_RDONLY);

		if (fd < 0 || ic_lock_hold(fd, which))
			_exit(1);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	CHECK_EQ(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	close(pfd[1]);
	return pid;
}

static void test_readers_and_overlays(void)
{
	struct ic_consolidate_stats st;
	pid_t pid;

	make_chain();
	/* an overlay on i1, the only point to merge away: kept (FORMAT.md 10.8), so the
	 * step has nothing left to do and nothing changes */
	pid = hold_lock("00000002.img", IC_LOCK_OVERLAY);
	CHECK_EQ(consolidate("i1..i2", 0, &st), 0);
	CHECK_EQ(st.steps, 0);
	CHECK_EQ(npoints(), 5);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* a reader of the full: the merge runs, its space waits for the reader */
	pid = hold_lock("00000001.img", IC_LOCK_READER);
	CHECK_EQ(consolidate("full..i1", 0, &st), 0);
	CHECK_EQ(st.punches_pending, 1);
	check_point("i1");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* a later run frees it */
	CHECK_EQ(consolidate(NULL, 100, &st), 0);
	CHECK_EQ(st.punches_pending, 0);
	CHECK(st.space_freed > 0);
	check_point("i1");
	check_point("i2");
	check_point("i3");
	check_point("br");
	verify_all();
	unit_rmtree(dir);
	free(chain);
}

static void test_damage(void)
{
	struct ic_consolidate_stats st;
	struct ic_chain *c;
	struct ic_view *v;
	struct icf_entry e;
	char *path, cmd[4096], *sum1 = NULL, *sum2 = NULL;
	size_t len = 0;
	FILE *f;
	int fd;
	uint8_t b;

	make_chain();
	/* flip a bit in a record of i2 that i3 still uses */
	CHECK_EQ(ic_chain_open(chain, &c), 0);
	CHECK_EQ(ic_view_open(c, ic_chain_find(c, "i3"), &v), 0);
	memset(&e, 0, sizeof(e));
	for (uint64_t pos = 0; pos < v->nblocks; pos++) {
		struct ic_block_ref ref;

		CHECK_EQ(ic_view_lookup(v, pos, &ref), 0);
		if (ref.img == ic_chain_find(c, "i2")->img) {
			e = ref.e;
			break;
		}
	}
	CHECK(e.stored_len > 40);
	path = strdup(ic_chain_find(c, "i2")->img->path);
	ic_view_free(v);
	ic_chain_free(c);
	fd = open(path, O_RDWR);
	CHECK_EQ(pread(fd, &b, 1, (off_t)e.offset + 30), 1);
	b ^= 4;
	CHECK_EQ(pwrite(fd, &b, 1, (off_t)e.offset + 30), 1);
	close(fd);
	snprintf(cmd, sizeof(cmd), "cd '%s' && ls -a && sha256sum *", chain);
	f = popen(cmd, "r");
	CHECK(getdelim(&sum1, &len, 0, f) > 0);
	pclose(f);
	CHECK_EQ(consolidate("full..i3", 0, &st), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "checksum") != NULL);
	f = popen(cmd, "r");
	len = 0;
	CHECK(getdelim(&sum2, &len, 0, f) > 0);
	pclose(f);
	CHECK(sum1 && sum2 && !strcmp(sum1, sum2));
	free(sum1);
	free(sum2);
	free(path);
	unit_rmtree(dir);
	free(chain);
}

int main(void)
{
	setenv("IMGCHAIN_PASSPHRASE", "test-pass", 1);
	setenv("IMGCHAIN_KDF", "interactive", 1);
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	RUN(test_keep_last);
	RUN(test_keep_daily);
	RUN(test_rule_order);
	RUN(test_weekly_iso);
	RUN(test_monthly_yearly);
	RUN(test_plan_retention);
	RUN(test_keep_pairs);
	RUN(test_plan_merge);
	{
		char *sd = unit_tmpdir();

		setenv("IMGCHAIN_STATE_DIR", sd, 1);
		RUN(test_merge_range);
		RUN(test_readers_and_overlays);
		RUN(test_damage);
		unit_rmtree(sd);
	}
	UNIT_EXIT();
}
