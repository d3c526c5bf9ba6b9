/* ic_cli.c: the command-line layer every tool shares (see ic_cli.h). */
#include "config.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cli.h"
#include "imgchain.h"

#define HELP_COL 30
#define MAX_OPTS 40

static const struct ic_cli_opt common_opts[] = {
	{ "passphrase-file", 'P', "FILE", "read the passphrase from FILE's first line" },
	{ "quiet", 'q', NULL, "no progress and no summary" },
	{ "accept-rollback", 'R', NULL, "accept a chain older than this machine last saw" },
	{ "help", 'h', NULL, "show this help and exit" },
	{ "version", 'V', NULL, "show the version and exit" },
};
static const unsigned common_flags[] = { IC_CLI_PASSPHRASE, IC_CLI_QUIET, IC_CLI_ROLLBACK, 0, 0 };
#define NCOMMON (sizeof(common_opts) / sizeof(common_opts[0]))

/* The tool's own entry with this id, if it has one (it then replaces the common one's
 * help text). */
static const struct ic_cli_opt *own(const struct ic_cli *cli, int id)
{
	for (const struct ic_cli_opt *o = cli->opts; o && o->id; o++)
		if (o->id == id)
			return o;
	return NULL;
}

static bool common_taken(const struct ic_cli *cli, size_t i)
{
	return !common_flags[i] || (cli->common & common_flags[i]);
}

/* Every option the tool takes, in --help order: its own, then the common ones. */
static size_t all_opts(const struct ic_cli *cli, const struct ic_cli_opt **out)
{
	size_t n = 0;

	for (const struct ic_cli_opt *o = cli->opts; o && o->id && n < MAX_OPTS; o++)
		out[n++] = o;
	for (size_t i = 0; i < NCOMMON && n < MAX_OPTS; i++)
		if (common_taken(cli, i) && !own(cli, common_opts[i].id))
			out[n++] = &common_opts[i];
	return n;
}

static void print_opt(const struct ic_cli_opt *o, FILE *f)
{
	const char *h = o->help ? o->help : "";
	int len;

	len = fprintf(f, "  %c%c%s%s%s%s", o->id < 256 ? '-' : ' ', o->id < 256 ? o->id : ' ',
		      o->name ? (o->id < 256 ? ", --" : "  --") : "", o->name ? o->name : "",
		      o->arg ? " " : "", o->arg ? o->arg : "");
	if (len > HELP_COL - 2) {
		fputc('\n', f);
		len = 0;
	}
	for (;;) {
		const char *nl = strchr(h, '\n');
		int n = nl ? (int)(nl - h) : (int)strlen(h);

		fprintf(f, "%*s%.*s\n", HELP_COL - len, "", n, h);
		if (!nl)
			break;
		h = nl + 1;
		len = 0;
	}
}

void ic_cli_help(const struct ic_cli *cli, FILE *f)
{
	const struct ic_cli_opt *opts[MAX_OPTS];
	size_t n = all_opts(cli, opts);

	fputs(cli->synopsis, f);
	fputc('\n', f);
	for (size_t i = 0; i < n; i++)
		print_opt(opts[i], f);
	if (cli->epilog) {
		fputc('\n', f);
		fputs(cli->epilog, f);
	}
}

int ic_cli_usage(const char *fmt, ...)
{
	va_list ap;

	if (fmt && *fmt) {
		fprintf(stderr, "%s: ", ic_progname);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try '%s --help' for more information.\n", ic_progname);
	return IC_EXIT_USAGE;
}

int ic_cli_int(const struct ic_cli *cli, long lo, long hi, int *out)
{
	char *end;
	long v = strtol(cli->optarg, &end, 10);

	if (end == cli->optarg || *end || v < lo || v > hi)
		return ic_cli_usage("%s %s: must be %ld..%ld", cli->optname, cli->optarg, lo, hi);
	*out = (int)v;
	return 0;
}

/* getopt_long's tables, built once from the tool's options. */
static struct option longopts[MAX_OPTS + 1];
static char shortopts[3 * MAX_OPTS + 2];
static const struct ic_cli_opt *table[MAX_OPTS];
static size_t ntable;

static void build(struct ic_cli *cli)
{
	size_t nl = 0, ns = 0;

	ntable = all_opts(cli, table);
	shortopts[ns++] = ':';      /* our own messages, and ':' for a missing argument */
	for (size_t i = 0; i < ntable; i++) {
		const struct ic_cli_opt *o = table[i];

		if (o->name)
			longopts[nl++] = (struct option){ o->name, o->arg ? required_argument
								   : no_argument, NULL, o->id };
		if (o->id < 256) {
			shortopts[ns++] = (char)o->id;
			if (o->arg)
				shortopts[ns++] = ':';
		}
	}
	longopts[nl] = (struct option){ NULL, 0, NULL, 0 };
	shortopts[ns] = '\0';
	opterr = 0;
	ic_progname = cli->prog;
}

static const struct ic_cli_opt *by_id(int id)
{
	for (size_t i = 0; i < ntable; i++)
		if (table[i]->id == id)
			return table[i];
	return NULL;
}

static int bad_option(struct ic_cli *cli, char **argv, int c)
{
	const char *arg = argv[optind - 1];
	bool is_long = !strncmp(arg, "--", 2);

	if (c == ':' && is_long)
		ic_cli_usage("option '%s' requires an argument", arg);
	else if (c == ':')
		ic_cli_usage("option requires an argument -- '%c'", optopt);
	else if (is_long && optopt)
		ic_cli_usage("option '%s' doesn't allow an argument", arg);
	else if (is_long || !optopt)
		ic_cli_usage("unrecognized option '%s'", arg);
	else
		ic_cli_usage("invalid option -- '%c'", optopt);
	cli->status = IC_EXIT_USAGE;
	return -1;
}

int ic_cli_next(struct ic_cli *cli, int argc, char **argv)
{
	static char name[64];
	const struct ic_cli_opt *o;
	int c;

	if (!ntable)
		build(cli);
	c = getopt_long(argc, argv, shortopts, longopts, NULL);
	if (c == -1) {
		cli->optind = optind;
		return 0;
	}
	o = c == '?' || c == ':' ? NULL : by_id(c);
	if (!o)
		return bad_option(cli, argv, c);
	cli->optarg = optarg;
	if (o->name)
		snprintf(name, sizeof(name), "--%s", o->name);
	else
		snprintf(name, sizeof(name), "-%c", o->id);
	cli->optname = name;
	/* a common option is handled here even when the tool gave its own help text */
	switch (c) {
	case 'P': cli->passphrase_file = optarg; return ic_cli_next(cli, argc, argv);
	case 'q': cli->quiet = true; return ic_cli_next(cli, argc, argv);
	case 'R': cli->accept_rollback = true; return ic_cli_next(cli, argc, argv);
	case 'h':
		ic_cli_help(cli, stdout);
		cli->status = IC_EXIT_OK;
		return -1;
	case 'V':
		printf("%s (imgchain) %s\n", cli->prog, PACKAGE_VERSION);
		cli->status = IC_EXIT_OK;
		return -1;
	default:
		return c;
	}
}
