/* imgverify: check a chain keyless, or authenticate every block with the key. */
#include "config.h"

#include <stdio.h>

#include "ic_cli.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "data", 'D', NULL, "authenticate with the key (asks for the\npassphrase)" },
	{ "passphrase-file", 'P', "FILE", "read the passphrase from FILE's first line\n(used only with --data)" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgverify",
	.synopsis =
		"Usage: imgverify [OPTION]... CHAIN [NAME]\n"
		"Check a chain, or the points NAME depends on.  Without the key (default):\n"
		"headers, slots, index checksums and order, every record present and matching\n"
		"its checksum, every parent present.  With --data: also decrypt and authenticate\n"
		"every block and recompute every seal with the key.  Each problem is reported on\n"
		"stderr by file, point and block.  With --data and no NAME, the points this\n"
		"machine remembers (its state) but the chain no longer holds are listed on\n"
		"stdout, once each: merges remove points too (retention), so this is a report,\n"
		"not an error.\n",
	.opts = opts,
	.common = IC_CLI_KEYED | IC_CLI_QUIET,
	.epilog = "Exit status: 0 sound, 1 error, 2 usage, 3 wrong passphrase or key,\n"
		  "4 problems found.\n",
};

static void report_gone(const struct ic_state_point *p, bool replaced, void *arg)
{
	/* names are checked (ic_name_valid) when the state is read: nothing to escape */
	const char *name = p->name;

	if (replaced)
		printf("%s: remembered restore point '%s' (sequence %u) was replaced: sequence %u now holds a point with another seal\n",
		       (const char *)arg, name, p->seq, p->seq);
	else
		printf("%s: remembered restore point '%s' (sequence %u) is gone (merged away by a retention merge, or deleted)\n",
		       (const char *)arg, name, p->seq);
}

/* After a whole-chain --data check: the points this machine remembers that are gone. */
static void review_state(const char *dir)
{
	struct ic_chain *c;
	int ret = ic_chain_open(dir, &c);

	if (!ret) {
		ret = ic_state_review(c, report_gone, (void *)dir);
		ic_chain_free(c);
	}
	if (ret > 0)
		printf("%s: %d remembered point(s) gone: a report, not an error (merges remove points too); this machine forgets them now\n",
		       dir, ret);
	else if (ret < 0)
		ic_msg("warning: %s (the remembered points were not compared)", ic_last_error(ret));
}

int main(int argc, char **argv)
{
	struct ic_verify_opts o = { 0 };
	struct ic_verify_stats st;
	struct ic_s3_chain *sc = NULL;
	const char *chain;
	char b[32];
	int c, ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((c = ic_cli_next(&cli, argc, argv)) > 0)
		if (c == 'D')
			o.data = true;
	if (c < 0)
		return cli.status;
	if (argc - cli.optind < 1 || argc - cli.optind > 2)
		return ic_cli_usage("expected CHAIN [NAME]");
	o.passphrase_file = cli.passphrase_file;
	o.quiet = cli.quiet;
	o.accept_rollback = cli.accept_rollback;
	chain = argv[cli.optind];
	o.name = argc - cli.optind == 2 ? argv[cli.optind + 1] : NULL;
	ic_install_signals();
	/* s3://BUCKET/PREFIX: every byte of the point's path, or of every image, cached */
	ret = ic_s3_chain_arg(chain, false, o.name ? IC_S3_NEED_HEADER : IC_S3_NEED_FULL, o.name,
			      IC_S3_NEED_FULL, &sc, &o.chain_dir);
	if (!ret)
		ret = ic_verify(&o, &st);
	if (!ret && o.data && !o.name)
		review_state(o.chain_dir);
	ic_s3_chain_close(sc);
	if (ret)
		return ic_report(ret);
	if (!o.quiet)
		printf("%s: %llu point%s, %llu image%s, %llu record%s (%s) %s: no problems\n",
		       chain, (unsigned long long)st.points, st.points == 1 ? "" : "s",
		       (unsigned long long)st.images, st.images == 1 ? "" : "s",
		       (unsigned long long)st.records, st.records == 1 ? "" : "s", ic_human_bytes(st.bytes, b, sizeof(b)),
		       o.data ? "authenticated" : "checked");
	return IC_EXIT_OK;
}
