/* imgbackup: create a restore point (full or incremental) in a chain. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cli.h"
#include "imgbackup_overlay.h"
#include "imgchain.h"

static const struct ic_cli_opt opts[] = {
	{ "name", 'n', "NAME", "name of the restore point\n(default: UTC time, e.g. 20261122T161400Z)" },
	{ "parent", 'p', "NAME", "base the incremental on point NAME (a branch)" },
	{ "full", 'F', NULL, "make a full image, whatever the chain holds" },
	{ "block-size", 'b', "SIZE", "block size of a new chain: 4K..4M, a power\nof two (default 64K)" },
	{ "level", 'l', "N", "zstd level 1..19, 0 = no compression (default 1)" },
	{ "changed-blocks", 'c', "FILE", "read only the ranges listed in FILE\n(lines \"OFFSET LENGTH\" in bytes)" },
	{ "dirty-bitmap", 256, "NAME", "NBD source: read only the extents marked in\nqemu:dirty-bitmap:NAME (recorded for the parent\nby --next-bitmap, else refused)" },
	{ "bitmap-export", 258, "NAME", "the export offers --dirty-bitmap's content under\nNAME (a frozen copy, as in a pull-mode backup)" },
	{ "head-start", 259, "URI", "first read the blocks --dirty-bitmap marks from\nthe live disk URI, then run --snapshot-cmd, then\nread from SOURCE what --late-bitmap marks" },
	{ "late-bitmap", 260, "NAME", "head start: SOURCE's bitmap of the writes made\nsince the head start began" },
	{ "snapshot-cmd", 261, "CMD", "head start: the shell command that takes the\nsnapshot and exports it as SOURCE" },
	{ "next-bitmap", 257, "NAME", "record that dirty bitmap NAME tracks the\nwrites made after this point" },
	{ "post-snapshot-of", 263, "NAME", "SOURCE is snapshot NAME as modified after it was\n"
					   "taken (journal replay, fsck, quiescence\n"
					   "writers): the point is NAME's child, flagged\n"
					   "post-snapshot; the chain goes on from NAME" },
	{ "threads", 'j', "N", "worker threads (default: one per CPU, two per\nCPU for an NBD source)" },
	{ "from-overlay", 262, "DIR", "no SOURCE: the writes an imgmount overlay holds\n"
				      "for a point (DIR = the mount's --overlay\n"
				      "directory/POINT) become a new point, child of\n"
				      "POINT, taken while the mount keeps serving" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgbackup",
	.synopsis =
		"Usage: imgbackup [OPTION]... CHAIN SOURCE\n"
		"  or:  imgbackup [OPTION]... --from-overlay DIR CHAIN\n"
		"Back up SOURCE (a raw disk image, a block device, or an NBD export:\n"
		"nbd://HOST[:PORT]/EXPORT, nbds://..., nbd+unix:///EXPORT?socket=PATH)\n"
		"into the chain directory CHAIN.  The first backup creates the chain (a full\n"
		"image) in CHAIN, which must be absent or empty; later ones store only the\n"
		"blocks that changed since the newest point (or --parent).  CHAIN may be\n"
		"s3://BUCKET/PREFIX (a bucket; see imgbackup(1), S3 BUCKETS).\n",
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
	       st->post_snapshot ? "post-snapshot" : st->parent[0] ? "incremental" : "full",
	       st->name, st->seq, st->post_snapshot ? " of '" : st->parent[0] ? " based on '" : "",
	       st->parent, st->parent[0] ? "'" : "", chain);
	if (st->bytes_read_head)
		printf("  head start read %s from the live disk, then %s from the snapshot\n",
		       ic_human_bytes(st->bytes_read_head, a, sizeof(a)),
		       ic_human_bytes(st->bytes_read - st->bytes_read_head, b, sizeof(b)));
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
	struct ic_overlay_snap_info cut;
	const char *overlay = NULL;
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
		case 259: o.head_start = cli.optarg; break;
		case 261: o.snapshot_cmd = cli.optarg; break;
		case 256:
		case 257:
		case 258:
		case 260:
			if (!ic_name_valid(cli.optarg))
				return ic_cli_usage("%s '%s': invalid bitmap name (1-127 of A-Z a-z 0-9 . _ + : -, not starting with . or -)",
						    cli.optname, cli.optarg);
			*(c == 256 ? &o.dirty_bitmap : c == 257 ? &o.next_bitmap
			  : c == 258 ? &o.bitmap_export : &o.late_bitmap) = cli.optarg;
			break;
		case 'j':
			if (ic_cli_int(&cli, 1, 64, &o.threads))
				return IC_EXIT_USAGE;
			break;
		case 262: overlay = cli.optarg; break;
		case 263: o.post_snapshot_of = cli.optarg; break;
		}
	}
	if (c < 0)
		return cli.status;
	if (overlay && (o.full || o.changed_blocks || o.dirty_bitmap || o.head_start))
		return ic_cli_usage("--from-overlay makes an incremental of the overlay's point: no --full, --changed-blocks, --dirty-bitmap or --head-start");
	if (overlay && argc - cli.optind != 1)
		return ic_cli_usage("expected CHAIN after --from-overlay DIR");
	if (!overlay && argc - cli.optind != 2)
		return ic_cli_usage("expected CHAIN and SOURCE");
	if (o.full && o.parent)
		return ic_cli_usage("--full and --parent exclude each other");
	if (o.bitmap_export && !o.dirty_bitmap)
		return ic_cli_usage("--bitmap-export needs --dirty-bitmap");
	if (o.head_start && (!o.dirty_bitmap || !o.late_bitmap))
		return ic_cli_usage("--head-start needs --dirty-bitmap and --late-bitmap");
	if ((o.late_bitmap || o.snapshot_cmd) && !o.head_start)
		return ic_cli_usage("--late-bitmap and --snapshot-cmd need --head-start");
	if (o.post_snapshot_of && (overlay || o.full || o.parent || o.dirty_bitmap ||
				   o.next_bitmap || o.head_start))
		return ic_cli_usage("--post-snapshot-of NAME makes a child of NAME from the whole snapshot (or --changed-blocks): no --from-overlay, --full, --parent, --dirty-bitmap, --next-bitmap or --head-start (change tracking goes on from NAME)");
	if (o.changed_blocks && o.dirty_bitmap)
		return ic_cli_usage("--changed-blocks and --dirty-bitmap exclude each other");
	o.passphrase_file = cli.passphrase_file;
	o.quiet = cli.quiet;
	o.accept_rollback = cli.accept_rollback;
	chain = argv[cli.optind];
	o.source = overlay ? overlay : argv[cli.optind + 1];
	ic_install_signals();
	/* s3://BUCKET/PREFIX: under the lease, the indexes cached, the new point uploaded */
	o.record_later = ic_s3_is_url(chain);
	ret = ic_s3_chain_arg(chain, true, IC_S3_NEED_INDEX, NULL, 0, &sc, &o.chain_dir);
	if (!ret && sc)
		ret = ic_s3_pre_start(sc, &pre);
	if (!ret)
		ret = overlay ? ic_backup_from_overlay(&o, overlay, &st, &cut)
			      : ic_backup(&o, &st);
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
	if (overlay && !o.quiet)
		printf("overlay %s: cut at map generation %llu, %llu blocks of 4 KiB, writes held "
		       "%.3f s (%s)\n", overlay, (unsigned long long)cut.generation,
		       (unsigned long long)cut.blocks, cut.frozen, cut.cloned ? "reflink" : "copied");
	if (!o.quiet)
		summary(&st, chain);
	return IC_EXIT_OK;
}
