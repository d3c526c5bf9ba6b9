/* imgrestore: write a restore point's disk to a file or block device. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "ic_cli.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "force", 256, NULL, "replace DEST if it is an existing non-empty file" },
	{ "threads", 'j', "N", "worker threads (default: one per CPU)" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgrestore",
	.synopsis =
		"Usage: imgrestore [OPTION]... CHAIN NAME DEST\n"
		"Write the disk of restore point NAME (\"latest\": the newest) to DEST: a block\n"
		"device (every byte written) or a file (created sparse: zero blocks are holes).\n"
		"Every block is authenticated; the first bad block stops the restore with exit\n"
		"status 4 and no DEST file is left.\n",
	.opts = opts,
	.common = IC_CLI_KEYED | IC_CLI_QUIET,
	.epilog = "Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key,\n"
		  "4 corruption found.\n",
};

int main(int argc, char **argv)
{
	struct ic_restore_opts o = { 0 };
	struct ic_restore_stats st;
	struct ic_s3_chain *sc = NULL;
	char a[32], r[32];
	int c, ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((c = ic_cli_next(&cli, argc, argv)) > 0) {
		switch (c) {
		case 256: o.force = true; break;
		case 'j':
			if (ic_cli_int(&cli, 1, 64, &o.threads))
				return IC_EXIT_USAGE;
			break;
		}
	}
	if (c < 0)
		return cli.status;
	if (argc - cli.optind != 3)
		return ic_cli_usage("expected CHAIN, NAME and DEST");
	o.passphrase_file = cli.passphrase_file;
	o.quiet = cli.quiet;
	o.accept_rollback = cli.accept_rollback;
	o.chain_dir = argv[cli.optind];
	o.name = argv[cli.optind + 1];
	o.dest = argv[cli.optind + 2];
	ic_install_signals();
	/* s3://BUCKET/PREFIX: the headers, then every byte of the point's path, cached */
	ret = ic_s3_chain_arg(o.chain_dir, false, IC_S3_NEED_HEADER, o.name, IC_S3_NEED_FULL, &sc,
			      &o.chain_dir);
	if (!ret)
		ret = ic_restore(&o, &st);
	ic_s3_chain_close(sc);
	if (ret)
		return ic_report(ret);
	if (!o.quiet)
		printf("restored '%s' to %s: %s, %llu data blocks, %.1f s, %s/s\n", o.name, o.dest,
		       ic_human_bytes(st.disk_size, a, sizeof(a)), (unsigned long long)st.data_blocks,
		       st.seconds,
		       ic_human_bytes(st.seconds > 0 ? (uint64_t)((double)st.disk_size / st.seconds) : 0,
				      r, sizeof(r)));
	return IC_EXIT_OK;
}
