/* imgconsolidate: merge restore points of a chain without the key (ranges, retention). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cli.h"
#include "imgchain.h"
#include "ic_consolidate.h"
#include "ic_cons_s3.h"

enum { OPT_MERGE = 256, OPT_DRY_RUN, OPT_VERIFY, OPT_FOLD, OPT_REBASE_WAIT, OPT_KEEP };

static const struct ic_cli_opt opts[] = {
	{ "merge", OPT_MERGE, "FROM..TO", "merge the points from FROM (an ancestor of TO)\n"
	  "to TO into one point with TO's name and content;\nFROM's parent becomes its parent" },
	{ "keep-last", OPT_KEEP + 0, "N", "keep the N newest points" },
	{ "keep-hourly", OPT_KEEP + 1, "N", "keep the newest point of each of the last N\nhours (UTC) having one" },
	{ "keep-daily", OPT_KEEP + 2, "N", "... of each of the last N days" },
	{ "keep-weekly", OPT_KEEP + 3, "N", "... of each of the last N ISO weeks" },
	{ "keep-monthly", OPT_KEEP + 4, "N", "... of each of the last N months" },
	{ "keep-yearly", OPT_KEEP + 5, "N", "... of each of the last N years\n"
	  "(other points are merged into their nearest kept\ndescendant; see imgconsolidate(1))" },
	{ "fold-cdp", OPT_FOLD, "KEEP:EVERY", "fold the CDP journal into points (before any\n"
	  "--keep-* rule): sessions older than KEEP become\none point per EVERY (e.g. 1h:1h; s, m, h, d)" },
	{ "dry-run", OPT_DRY_RUN, NULL, "print the plan, change nothing" },
	{ "verify", OPT_VERIFY, NULL, "read and check every record moved, also those\n"
	  "shared rather than copied (XFS reflink, btrfs)" },
	{ "rebase-wait", OPT_REBASE_WAIT, "SECONDS", "wait at most SECONDS (default 60) for each\n"
	  "server of a point served with a writable overlay\nto re-base onto its merged image" },
	{ "quiet", 'q', NULL, "no progress, no plan, no summary" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgconsolidate",
	.synopsis =
		"Usage: imgconsolidate [--merge FROM..TO] [--keep-last N] [--keep-hourly N]\n"
		"         [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
		"         [--fold-cdp KEEP:EVERY] [--dry-run] [--verify] [--rebase-wait SECONDS]\n"
		"         [--quiet] CHAIN\n"
		"Merge restore points of CHAIN by copying their encrypted blocks: no key or\n"
		"passphrase is needed or read.  Every point that stays keeps its exact content\n"
		"and seal.  An interrupted run is finished or rolled back by the next one.\n",
	.opts = opts,
	.common = IC_CLI_QUIET,
	.epilog = "Exit status: 0 ok, 1 error (including a chain locked by another writer),\n"
		  "2 usage, 4 corruption found (nothing changed).\n",
};

static void summary(const struct ic_consolidate_stats *st, const char *chain)
{
	char a[32], b[32], c[32], p[32], r[32];
	double rate = st->seconds > 0 ? (double)st->bytes_copied / st->seconds : 0;

	printf("%s: %u point%s merged, %u removed, %u rewritten in %u step%s%s\n", chain,
	       st->points_merged, st->points_merged == 1 ? "" : "s", st->points_removed,
	       st->points_rewritten, st->steps, st->steps == 1 ? "" : "s",
	       st->recovered ? " (an interrupted run was completed first)" : "");
	printf("  copied %s (%s/s) + %s of index, %s %s, peak extra space %s, %.2f s (%.2f s punching holes)\n",
	       ic_human_bytes(st->bytes_copied, a, sizeof(a)), ic_human_bytes((uint64_t)rate, r, sizeof(r)),
	       ic_human_bytes(st->bytes_index, c, sizeof(c)),
	       st->space_freed >= 0 ? "freed" : "grew by",
	       ic_human_bytes((uint64_t)(st->space_freed >= 0 ? st->space_freed : -st->space_freed), b,
			      sizeof(b)),
	       ic_human_bytes(st->peak_extra, p, sizeof(p)), st->seconds, st->punch_seconds);
	if (st->bytes_shared)
		printf("  shared %s of records with the merged points' files instead of copying them (extents cloned)\n",
		       ic_human_bytes(st->bytes_shared, a, sizeof(a)));
	if (st->bytes_relocated)
		printf("  of the bytes copied, %s are the full's own records moved from between superseded ones (fewer, larger holes)\n",
		       ic_human_bytes(st->bytes_relocated, a, sizeof(a)));
	printf("  time:");
	for (int i = 0; i < IC_CONS_NPHASES; i++)
		printf(" %s %.3f s%s", ic_cons_phase_names[i], st->phase_seconds[i],
		       i + 1 < IC_CONS_NPHASES ? "," : "\n");
	if (st->punches_pending)
		printf("  %u image%s in use by a reader: their unused space is freed by a later run\n",
		       st->punches_pending, st->punches_pending == 1 ? "" : "s");
}

static void summary_s3(const struct ic_s3_cons_stats *s)
{
	char a[32], b[32], c[32], d[32], e[32];

	char f[32];

	printf("  bucket: %u object%s replaced, %u deleted; %s copied by the server (%llu part%s), "
	       "%s of other parts assembled there from smaller pieces, %s sent (%llu part%s not "
	       "copied), of which %s fetched first\n",
	       s->rewritten, s->rewritten == 1 ? "" : "s", s->deleted,
	       ic_human_bytes(s->bytes_server, a, sizeof(a)), (unsigned long long)s->parts_copied,
	       s->parts_copied == 1 ? "" : "s", ic_human_bytes(s->bytes_composed, f, sizeof(f)),
	       ic_human_bytes(s->bytes_sent, b, sizeof(b)),
	       (unsigned long long)s->parts_sent, s->parts_sent == 1 ? "" : "s",
	       ic_human_bytes(s->bytes_fetched, c, sizeof(c)));
	printf("  client traffic: %s sent, %s received (%llu and %llu bytes)\n",
	       ic_human_bytes(s->net_sent, d, sizeof(d)), ic_human_bytes(s->net_received, e, sizeof(e)),
	       (unsigned long long)s->net_sent, (unsigned long long)s->net_received);
}

#ifdef IC_TEST_HOOKS
/* The test build only (tests/lib/cons_hooks.c): IMGCHAIN_TEST_CRASH_AT, _STALL_AT. */
void ic_test_cons_step(const char *name);
#endif

/* The tuning the environment may ask for (tests, benchmarks; imgconsolidate(1)). */
static void env_opts(struct ic_consolidate_opts *o)
{
	const char *isl = getenv("IMGCHAIN_CONS_ISLANDS");

	if (isl && *isl)
		o->islands = strcmp(isl, "0") ? 1 : -1;
	o->no_copy_file_range = getenv("IMGCHAIN_NO_COPY_FILE_RANGE") != NULL;
#ifdef IC_TEST_HOOKS
	o->step = ic_test_cons_step;
#endif
}

/* N[smhd] (seconds without a unit) */
static int parse_duration(const char *s, char **end, int64_t *out)
{
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	v = strtoull(s, end, 10);
	switch (**end) {
	case 'd': v *= 24; /* fall through */
	case 'h': v *= 60; /* fall through */
	case 'm': v *= 60; /* fall through */
	case 's': (*end)++; break;
	default: break;
	}
	if (v > 100ull * 365 * 86400)
		return -1;
	*out = (int64_t)v;
	return 0;
}

static int parse_fold(const char *arg, struct ic_fold_opts *f)
{
	char *end;

	if (parse_duration(arg, &end, &f->keep_s) || *end != ':' ||
	    parse_duration(end + 1, &end, &f->every_s) || *end || f->every_s < 1) {
		ic_cli_usage("--fold-cdp %s: expected KEEP:EVERY, two durations (N, Ns, Nm, Nh, Nd; EVERY at least 1 s)",
			     arg);
		return -1;
	}
	return 0;
}

static int parse_count(const char *opt, const char *arg, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(arg, &end, 10);

	if (!*arg || *end || *arg == '-' || v < 1 || v > 1000000) {
		ic_cli_usage("%s %s: expected a count from 1 to 1000000", opt, arg);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_wait(const char *opt, const char *arg, double *out)
{
	char *end;
	double v = strtod(arg, &end);

	if (!*arg || *end || !(v >= 0.1 && v <= 86400)) {
		ic_cli_usage("%s %s: expected seconds from 0.1 to 86400", opt, arg);
		return -1;
	}
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct ic_consolidate_opts o = { .out = stdout };
	struct ic_consolidate_stats st;
	struct ic_s3_cons_stats s3;
	struct ic_fold_opts fo = { 0 };
	struct ic_fold_stats fst;
	bool fold = false;
	int c, ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((c = ic_cli_next(&cli, argc, argv)) > 0) {
		if (c == OPT_MERGE)
			o.merge = cli.optarg;
		else if (c == OPT_DRY_RUN)
			o.dry_run = true;
		else if (c == OPT_VERIFY)
			o.verify = true;
		else if (c == OPT_FOLD && (fold = true) && parse_fold(cli.optarg, &fo))
			return IC_EXIT_USAGE;
		else if (c == OPT_REBASE_WAIT && parse_wait(cli.optname, cli.optarg, &o.rebase_wait))
			return IC_EXIT_USAGE;
		else if (c >= OPT_KEEP && c < OPT_KEEP + IC_KEEP_NRULES &&
			 parse_count(cli.optname, cli.optarg, &o.keep.keep[c - OPT_KEEP]))
			return IC_EXIT_USAGE;
	}
	if (c < 0)
		return cli.status;
	if (argc - cli.optind != 1)
		return ic_cli_usage("expected one CHAIN directory");
	if (!o.merge && !fold && ic_retention_empty(&o.keep))
		return ic_cli_usage("nothing to do: give --merge FROM..TO, --fold-cdp or at least one --keep-* rule");
	if (o.merge && fold)
		return ic_cli_usage("--merge and --fold-cdp cannot be combined: run them one after the other");
	if (o.merge && !ic_retention_empty(&o.keep))
		return ic_cli_usage("--merge and --keep-* cannot be combined: run them one after the other");
	o.quiet = cli.quiet;
	o.chain_dir = argv[cli.optind];
	if (o.verify && ic_s3_is_url(o.chain_dir))
		return ic_cli_usage("--verify: in a bucket the records are copied by the server, "
				    "never read here; check the chain with imgverify");
	if (fold && ic_s3_is_url(o.chain_dir))
		return ic_cli_usage("--fold-cdp: a chain in a bucket holds no CDP journal");
	env_opts(&o);
	ic_install_signals();
	if (fold) {
		fo.chain_dir = o.chain_dir;
		fo.dry_run = o.dry_run;
		fo.quiet = o.quiet;
		fo.step = o.step;
		ret = ic_fold_cdp(&fo, &fst);
		if (ret)
			return ic_report(ret);
		if (!o.quiet)
			printf("%s: %u checkpoint%s folded into points (%u already were), %u journal session%s removed\n",
			       o.chain_dir, fst.points, fst.points == 1 ? "" : "s", fst.skipped,
			       fst.sessions, fst.sessions == 1 ? "" : "s");
		if (ic_retention_empty(&o.keep))
			return IC_EXIT_OK;
	}
	if (ic_s3_is_url(o.chain_dir))
		ret = ic_consolidate_s3(&o, &st, &s3);
	else
		ret = ic_consolidate(&o, &st);
	if (ret)
		return ic_report(ret);
	if (!o.quiet && !o.dry_run)
		summary(&st, o.chain_dir);
	if (!o.quiet && !o.dry_run && ic_s3_is_url(o.chain_dir))
		summary_s3(&s3);
	return IC_EXIT_OK;
}
