/* imgconsolidate: merge restore points of a chain without the key (ranges, retention). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgchain.h"
#include "ic_consolidate.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imgconsolidate [--merge FROM..TO] [--keep-last N] [--keep-hourly N]\n"
		"         [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
		"         [--dry-run] [--quiet] CHAIN\n"
		"Merge restore points of CHAIN by copying their encrypted blocks: no key or\n"
		"passphrase is needed or read.  Every point that stays keeps its exact content and\n"
		"seal.  An interrupted run is finished or rolled back by the next one.\n\n"
		"      --merge FROM..TO  merge the points from FROM (an ancestor of TO) to TO into one\n"
		"                        point with TO's name and content; FROM's parent becomes its parent\n"
		"      --keep-last N     keep the N newest points\n"
		"      --keep-hourly N   keep the newest point of each of the last N hours (UTC) having one\n"
		"      --keep-daily N    ... of each of the last N days\n"
		"      --keep-weekly N   ... of each of the last N ISO weeks\n"
		"      --keep-monthly N  ... of each of the last N months\n"
		"      --keep-yearly N   ... of each of the last N years\n"
		"                        (other points are merged into their nearest kept descendant;\n"
		"                        see imgconsolidate(1) for the exact rules)\n"
		"  -n, --dry-run         print the plan, change nothing\n"
		"  -q, --quiet           no progress, no plan, no summary\n"
		"  -h, --help            show this help\n"
		"  -V, --version         show the version\n\n"
		"Exit status: 0 ok, 1 error (including a chain locked by another writer),\n"
		"2 usage, 4 corruption found (nothing changed).\n");
}

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

static int parse_count(const char *opt, const char *arg, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(arg, &end, 10);

	if (!*arg || *end || *arg == '-' || v < 1 || v > 1000000) {
		ic_msg("--%s %s: expected a count from 1 to 1000000", opt, arg);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "merge", required_argument, NULL, 'M' },
		{ "keep-last", required_argument, NULL, 0 + 256 },
		{ "keep-hourly", required_argument, NULL, 1 + 256 },
		{ "keep-daily", required_argument, NULL, 2 + 256 },
		{ "keep-weekly", required_argument, NULL, 3 + 256 },
		{ "keep-monthly", required_argument, NULL, 4 + 256 },
		{ "keep-yearly", required_argument, NULL, 5 + 256 },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ic_consolidate_opts o = { .out = stdout };
	struct ic_consolidate_stats st;
	int c, idx, ret;

	ic_progname = "imgconsolidate";
	ic_no_dumps();
	while ((c = getopt_long(argc, argv, "nqhV", lopts, &idx)) != -1) {
		switch (c) {
		case 'M': o.merge = optarg; break;
		case 'n': o.dry_run = true; break;
		case 'q': o.quiet = true; break;
		case 'h': usage(stdout); return IC_EXIT_OK;
		case 'V': printf("imgconsolidate (imgchain) %s\n", PACKAGE_VERSION); return IC_EXIT_OK;
		default:
			if (c >= 256 && c < 256 + IC_KEEP_NRULES) {
				if (parse_count(lopts[idx].name, optarg, &o.keep.keep[c - 256]))
					return IC_EXIT_USAGE;
				break;
			}
			usage(stderr);
			return IC_EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		ic_msg("expected one CHAIN directory (see --help)");
		return IC_EXIT_USAGE;
	}
	if (!o.merge && ic_retention_empty(&o.keep)) {
		ic_msg("nothing to do: give --merge FROM..TO or at least one --keep-* rule (see --help)");
		return IC_EXIT_USAGE;
	}
	if (o.merge && !ic_retention_empty(&o.keep)) {
		ic_msg("--merge and --keep-* cannot be combined: run them one after the other");
		return IC_EXIT_USAGE;
	}
	o.chain_dir = argv[optind];
	env_opts(&o);
	ic_install_signals();
	ret = ic_consolidate(&o, &st);
	if (ret)
		return ic_report(ret);
	if (!o.quiet && !o.dry_run)
		summary(&st, o.chain_dir);
	return IC_EXIT_OK;
}
