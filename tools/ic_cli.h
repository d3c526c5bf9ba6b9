/* ic_cli.h: the command-line layer every tool shares.  One getopt_long loop over the
 * common options (-P/--passphrase-file, -q/--quiet, -R/--accept-rollback, -h/--help,
 * -V/--version) and a tool's own table; one format for --help; one way to report a
 * usage error ("PROG: MESSAGE" then "Try 'PROG --help' for more information.", exit 2).
 *
 * Short options mean the same in every tool (each letter is taken once):
 *   -P passphrase-file  -q quiet  -R accept-rollback  -h help  -V version
 *   -n name  -p parent  -F full  -b block-size  -l level  -c changed-blocks
 *   -j threads  -J json  -D data  -f foreground  -d debug  -o (FUSE options)
 * Long options a serving front end shares with the others, spelled the same in nbdkit's
 * key=value form: --overlay DIR (overlay=), --take-over (take-over=yes), --take-over-wait
 * SECONDS (take-over-wait=): imgmount's table, nbdkit_imgchain.c's config. */
#ifndef IC_CLI_H
#define IC_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* The common options a tool takes (--help and --version: always). */
enum {
	IC_CLI_PASSPHRASE = 1 << 0,	/* -P, --passphrase-file FILE */
	IC_CLI_QUIET = 1 << 1,		/* -q, --quiet */
	IC_CLI_ROLLBACK = 1 << 2,	/* -R, --accept-rollback */
	IC_CLI_KEYED = IC_CLI_PASSPHRASE | IC_CLI_ROLLBACK,
};

/* One option of a tool.  id is returned by ic_cli_next: the short letter when there is
 * one, else a value >= 256.  help: lines separated by '\n', printed from column 30. */
struct ic_cli_opt {
	const char *name;	/* long name, without "--" */
	int id;
	const char *arg;	/* the argument's name in --help, NULL: takes none */
	const char *help;
};

struct ic_cli {
	/* set by the tool */
	const char *prog;
	const char *synopsis;		/* "Usage: ..." and the description, '\n'-ended */
	const struct ic_cli_opt *opts;	/* the tool's own options, ended by a NULL name */
	unsigned common;		/* IC_CLI_* */
	const char *epilog;		/* after the options (environment, exit status) */
	/* set by ic_cli_next */
	const char *optarg;		/* the argument of the option returned */
	const char *optname;		/* "--name" as the user would write it */
	const char *passphrase_file;
	bool quiet, accept_rollback;
	int optind;			/* the first operand, once ic_cli_next returned 0 */
	int status;			/* the exit status, once ic_cli_next returned -1 */
};

/* Parse the next option: its id (a tool's own option), 0 when the operands start at
 * cli->optind, or -1 when the tool should exit with cli->status (--help, --version,
 * or a usage error already reported). */
int ic_cli_next(struct ic_cli *cli, int argc, char **argv);

/* Print the whole help (synopsis, options, common options, epilog) to f. */
void ic_cli_help(const struct ic_cli *cli, FILE *f);

/* Report a usage error: "PROG: MESSAGE" and the --help hint; returns IC_EXIT_USAGE. */
int ic_cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a decimal integer from lo to hi; a usage error naming the option otherwise
 * ("--OPT ARG: must be LO..HI").  Returns 0 or IC_EXIT_USAGE. */
int ic_cli_int(const struct ic_cli *cli, long lo, long hi, int *out);

#endif
