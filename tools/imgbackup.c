/* imgbackup: create a restore point (full or incremental) in a chain. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cli.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "name", 'n', "NAME", "name of the restore point\n(default: UTC time, e.g. 20261122T161400Z)" },
	{ "parent", 'p', "NAME", "base the incremental on point NAME (a branch)" },
	{ "full", 'F', NULL, "make a full image, whatever the chain holds" },
	{ "block-size", 'b', "SIZE", "block size of a new chain: 4K..4M, a power\nof two (default 64K)" },
	{ "level", 'l', "N", "zstd level 1..19, 0 = no compression (default 1)" },
	{ "changed-blocks", 'c', "FILE", "read only the ranges listed in FILE\n(lines \"OFFSET LENGTH\" in bytes)" },
	{ "threads", 'j', "N", "worker threads (default: one per CPU)" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgbackup",
	.synopsis =
		"Usage: imgbackup [OPTION]... CHAIN SOURCE\n"
		"Back up SOURCE (a raw disk image or block device) into the chain directory\n"
		"CHAIN.  The first backup creates the chain (a full image) in CHAIN, which must\n"
		"be absent or empty; later ones store only the blocks that changed since the\n"
		"newest point (or --parent).  CHAIN may be s3://BUCKET/PREFIX (a bucket; see\n"
		"imgbackup(1), S3 BUCKETS).\n",
	.opts = opts,
	.common = IC_CLI_KEYED | IC_CLI_QUIET,
	.epilog =
		"Passphrase: --passphrase-file, else $IMGCHAIN_PASSPHRASE_FILE, else\n"
		"$IMGCHAIN_PASSPHRASE, else asked on the terminal (twice when the chain is\n"
		"created).\n"
		"Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key,\n"
		"4 corruption found.\n",
};

static void summary(const struct ic_backup_stats *st, const char *chain)
{
	char a[32], b[32], c[32], d[32], r[32], ratio[32] = "";
	double rate = st->seconds > 0 ? (double)st->disk_size / st->seconds : 0;

	printf("%s point '%s' (seq %u)%s%s%s in %s\n",
	       st->parent[0] ? "incremental" : "full", st->name, st->seq,
	       st->parent[0] ? " based on '" : "", st->parent, st->parent[0] ? "'" : "", chain);
	printf("  disk %s, read %s, changed %s (%llu blocks), zeroed %llu blocks\n",
	       ic_human_bytes(st->disk_size, a, sizeof(a)), ic_human_bytes(st->bytes_read, b, sizeof(b)),
	       ic_human_bytes(st->bytes_changed, c, sizeof(c)),
	       (unsigned long long)st->blocks_changed, (unsigned long long)st->blocks_zeroed);
	/* a ratio only of something stored: nothing changed has none */
	if (st->bytes_stored)
		snprintf(ratio, sizeof(ratio), ", ratio %.2f",
			 (double)st->bytes_changed / (double)st->bytes_stored);
	printf("  stored %s%s, %.2f s (passphrase KDF %.2f s), %s/s\n",
	       ic_human_bytes(st->bytes_stored, d, sizeof(d)), ratio, st->seconds, st->seconds_key,
	       ic_human_bytes((uint64_t)rate, r, sizeof(r)));
}

int main(int argc, char **argv)
{
	struct ic_backup_opts o = { .level = 1 };
	struct ic_backup_stats st;
	struct ic_s3_chain *sc = NULL;
	struct ic_s3_pre *pre = NULL;
	const char *chain;
	uint64_t v;
	int c, ret, sret;

	ic_progname = cli.prog;
	ic_no_dumps();
	while ((c = ic_cli_next(&cli, argc, argv)) > 0) {
		switch (c) {
		case 'n':
			o.name = cli.optarg;
			if (!ic_name_valid(o.name))
				return ic_cli_usage("--name '%s': invalid name (1-127 of A-Z a-z 0-9 . _ + : -, not starting with . or -)",
						    o.name);
			break;
		case 'p': o.parent = cli.optarg; break;
		case 'F': o.full = true; break;
		case 'b':
			if (ic_parse_size(cli.optarg, &v) || v < ICF_BLOCK_MIN ||
			    v > ICF_BLOCK_MAX || (v & (v - 1)))
				return ic_cli_usage("--block-size %s: must be a power of two from 4K to 4M",
						    cli.optarg);
			o.block_size = (uint32_t)v;
			break;
		case 'l':
			if (ic_cli_int(&cli, 0, 19, &o.level))
				return IC_EXIT_USAGE;
			break;
		case 'c': o.changed_blocks = cli.optarg; break;
		case 'j':
			if (ic_cli_int(&cli, 1, 64, &o.threads))
				return IC_EXIT_USAGE;
			break;
		}
	}
	if (c < 0)
		return cli.status;
	if (argc - cli.optind != 2)
		return ic_cli_usage("expected CHAIN and SOURCE");
	if (o.full && o.parent)
		return ic_cli_usage("--full and --parent exclude each other");
	o.passphrase_file = cli.passphrase_file;
	o.quiet = cli.quiet;
	o.accept_rollback = cli.accept_rollback;
	chain = argv[cli.optind];
	o.source = argv[cli.optind + 1];
	ic_install_signals();
	/* s3://BUCKET/PREFIX: under the lease, the indexes cached, the new point uploaded */
	o.record_later = ic_s3_is_url(chain);
	ret = ic_s3_chain_arg(chain, true, IC_S3_NEED_INDEX, NULL, 0, &sc, &o.chain_dir);
	if (!ret && sc)
		ret = ic_s3_pre_start(sc, &pre);
	if (!ret)
		ret = ic_backup(&o, &st);
	if (!ret && pre)
		ret = ic_s3_pre_finish(pre, st.seq);
	else
		ic_s3_pre_abort(pre);
	if (!ret && sc) {
		ret = ic_s3_chain_push(sc);
		if (!ret)
			ret = ic_s3_chain_published(sc, st.seq);
		/* remembered (rollback detection) only once published: a killed upload's
		 * point never was */
		sret = ret ? 0 : ic_state_record(st.chain_id, st.seq, st.name, st.seal);
		if (sret)
			ic_msg("warning: %s (rollback detection will not know this point)",
			       ic_last_error(sret));
	}
	ic_s3_chain_close(sc);
	if (ret)
		return ic_report(ret);
	if (!o.quiet)
		summary(&st, chain);
	return IC_EXIT_OK;
}
