/* imgrestore: write a restore point's disk to a file or block device. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "ic_cli.h"
#include "ic_cdp_cli.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "force", 256, NULL, "replace DEST if it is an existing non-empty file" },
	{ "threads", 'j', "N", "worker threads (default: one per CPU)" },
	{ "sync", 257, NULL, "DEST holds some version of the disk: compare each\n"
			     "block with the point's (keyed digest) and write\n"
			     "only the blocks that differ" },
	{ "sync-from", 258, "POINT", "DEST holds restore point POINT exactly: write\n"
				     "the blocks whose entries differ, without\n"
				     "reading DEST" },
	{ "at", 320, "TIME", "restore the CDP journal's disk as of the last\n"
			     "checkpoint at or before TIME (seconds since\n"
			     "1970, or UTC YYYY-MM-DDTHH:MM:SS[.F]):\n"
			     "operands CHAIN DEST" },
	{ "checkpoints", 321, NULL, "list the CDP journal's checkpoints, verified:\n"
				    "operand CHAIN" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgrestore",
	.synopsis =
		"Usage: imgrestore [OPTION]... CHAIN NAME DEST\n"
		"  or:  imgrestore [OPTION]... --at TIME CHAIN DEST\n"
		"  or:  imgrestore [OPTION]... --checkpoints CHAIN\n"
		"Write the disk of restore point NAME (\"latest\": the newest) to DEST: a block\n"
		"device (every byte written) or a file (created sparse: zero blocks are holes).\n"
		"Every block is authenticated; the first bad block stops the restore with exit\n"
		"status 4 and no DEST file is left.\n"
		"With --sync or --sync-from, DEST (a file, a block device or an NBD URI) is\n"
		"updated in place and only the blocks that differ from the point are written.\n",
	.opts = opts,
	.common = IC_CLI_KEYED | IC_CLI_QUIET,
	.epilog = "Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key,\n"
		  "4 corruption found.\n",
};

static void print_sync(const struct ic_restore_opts *o, const struct ic_restore_stats *st)
{
	char a[32], r[32], w[32];

	printf("synced '%s' to %s: %s, %llu blocks compared, %llu skipped (equal), %llu written, "
	       "%llu zeroed; read from the chain %s, written %s, %.1f s\n", o->name, o->dest,
	       ic_human_bytes(st->disk_size, a, sizeof(a)), (unsigned long long)st->compared,
	       (unsigned long long)st->skipped, (unsigned long long)st->written,
	       (unsigned long long)st->zeroed, ic_human_bytes(st->chain_bytes, r, sizeof(r)),
	       ic_human_bytes(st->bytes_written, w, sizeof(w)), st->seconds);
}

int main(int argc, char **argv)
{
	struct ic_restore_opts o = { 0 };
	const char *at = NULL;
	bool list = false;
	struct ic_restore_stats st;
	struct ic_s3_chain *sc = NULL;
	char a[32], r[32];
	int c, ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((c = ic_cli_next(&cli, argc, argv)) > 0) {
		switch (c) {
		case 256: o.force = true; break;
		case 257: o.sync = true; break;
		case 258: o.sync_from = cli.optarg; break;
		case 'j':
			if (ic_cli_int(&cli, 1, 64, &o.threads))
				return IC_EXIT_USAGE;
			break;
		case 320: at = cli.optarg; break;
		case 321: list = true; break;
		}
	}
	if (c < 0)
		return cli.status;
	if (at || list)
		return ic_cdp_restore_main(at, &cli, argc, argv);
	if (argc - cli.optind != 3)
		return ic_cli_usage("expected CHAIN, NAME and DEST");
	if (o.force && (o.sync || o.sync_from))
		return ic_cli_usage("--force replaces DEST; --sync and --sync-from update it");
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
	if (!o.quiet && (o.sync || o.sync_from))
		print_sync(&o, &st);
	else if (!o.quiet)
		printf("restored '%s' to %s: %s, %llu data blocks, %.1f s, %s/s\n", o.name, o.dest,
		       ic_human_bytes(st.disk_size, a, sizeof(a)), (unsigned long long)st.data_blocks,
		       st.seconds,
		       ic_human_bytes(st.seconds > 0 ? (uint64_t)((double)st.disk_size / st.seconds) : 0,
				      r, sizeof(r)));
	return IC_EXIT_OK;
}
