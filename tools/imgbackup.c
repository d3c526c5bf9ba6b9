/* imgbackup: create a restore point (full or incremental) in a chain. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgchain.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imgbackup [OPTION]... CHAIN SOURCE\n"
		"Back up SOURCE (a raw disk image or block device) into the chain directory CHAIN.\n"
		"The first backup creates the chain (a full image); later ones store only the\n"
		"blocks that changed since the newest point (or --parent).\n\n"
		"  -n, --name NAME            name of the restore point (default: UTC time, e.g. 20261122T161400Z)\n"
		"  -p, --parent NAME          base the incremental on point NAME (a branch)\n"
		"  -F, --full                 make a full image, whatever the chain holds\n"
		"  -b, --block-size SIZE      block size of a new chain: 4K..4M, power of two (default 64K)\n"
		"  -l, --level N              zstd level 1..19, 0 = no compression (default 1)\n"
		"  -c, --changed-blocks FILE  read only the ranges listed in FILE (lines \"OFFSET LENGTH\" in bytes)\n"
		"  -P, --passphrase-file FILE read the passphrase from FILE\n"
		"  -j, --threads N            worker threads (default: one per CPU)\n"
		"  -q, --quiet                no progress and no summary\n"
		"  -R, --accept-rollback      accept a chain older than this machine last saw\n"
		"  -h, --help                 show this help\n"
		"  -V, --version              show the version\n\n"
		"Passphrase: --passphrase-file, else $IMGCHAIN_PASSPHRASE_FILE, else $IMGCHAIN_PASSPHRASE,\n"
		"else asked on the terminal (twice when the chain is created).\n"
		"Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key, 4 corruption found.\n");
}

static void summary(const struct ic_backup_stats *st, const char *chain)
{
	char a[32], b[32], c[32], d[32], r[32];
	double rate = st->seconds > 0 ? (double)st->disk_size / st->seconds : 0;

	printf("%s point '%s' (seq %u)%s%s%s in %s\n",
	       st->parent[0] ? "incremental" : "full", st->name, st->seq,
	       st->parent[0] ? " based on '" : "", st->parent, st->parent[0] ? "'" : "", chain);
	printf("  disk %s, read %s, changed %s (%llu blocks), zeroed %llu blocks\n",
	       ic_human_bytes(st->disk_size, a, sizeof(a)), ic_human_bytes(st->bytes_read, b, sizeof(b)),
	       ic_human_bytes(st->bytes_changed, c, sizeof(c)),
	       (unsigned long long)st->blocks_changed, (unsigned long long)st->blocks_zeroed);
	printf("  stored %s, ratio %.2f, %.2f s (passphrase KDF %.2f s), %s/s\n",
	       ic_human_bytes(st->bytes_stored, d, sizeof(d)),
	       st->bytes_stored ? (double)st->bytes_changed / (double)st->bytes_stored : 0.0,
	       st->seconds, st->seconds_key, ic_human_bytes((uint64_t)rate, r, sizeof(r)));
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "parent", required_argument, NULL, 'p' },
		{ "full", no_argument, NULL, 'F' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "level", required_argument, NULL, 'l' },
		{ "changed-blocks", required_argument, NULL, 'c' },
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "threads", required_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "accept-rollback", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ic_backup_opts o = { .level = 1 };
	struct ic_backup_stats st;
	uint64_t v;
	char *end;
	int c, ret;

	ic_progname = "imgbackup";
	ic_no_dumps();
	while ((c = getopt_long(argc, argv, "n:p:Fb:l:c:P:j:qRhV", lopts, NULL)) != -1) {
		switch (c) {
		case 'n': o.name = optarg; break;
		case 'p': o.parent = optarg; break;
		case 'F': o.full = true; break;
		case 'b':
			if (ic_parse_size(optarg, &v) || v < ICF_BLOCK_MIN || v > ICF_BLOCK_MAX ||
			    (v & (v - 1))) {
				ic_msg("--block-size %s: must be a power of two from 4K to 4M", optarg);
				return IC_EXIT_USAGE;
			}
			o.block_size = (uint32_t)v;
			break;
		case 'l':
			o.level = (int)strtol(optarg, &end, 10);
			if (end == optarg || *end || o.level < 0 || o.level > 19) {
				ic_msg("--level %s: must be 0..19", optarg);
				return IC_EXIT_USAGE;
			}
			break;
		case 'c': o.changed_blocks = optarg; break;
		case 'P': o.passphrase_file = optarg; break;
		case 'j':
			o.threads = (int)strtol(optarg, &end, 10);
			if (end == optarg || *end || o.threads < 1 || o.threads > 64) {
				ic_msg("--threads %s: must be 1..64", optarg);
				return IC_EXIT_USAGE;
			}
			break;
		case 'q': o.quiet = true; break;
		case 'R': o.accept_rollback = true; break;
		case 'h': usage(stdout); return IC_EXIT_OK;
		case 'V': printf("imgbackup (imgchain) %s\n", PACKAGE_VERSION); return IC_EXIT_OK;
		default: usage(stderr); return IC_EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		ic_msg("expected CHAIN and SOURCE (see --help)");
		return IC_EXIT_USAGE;
	}
	if (o.full && o.parent) {
		ic_msg("--full and --parent exclude each other");
		return IC_EXIT_USAGE;
	}
	o.chain_dir = argv[optind];
	o.source = argv[optind + 1];
	ic_install_signals();
	ret = ic_backup(&o, &st);
	if (ret)
		return ic_report(ret);
	if (!o.quiet)
		summary(&st, o.chain_dir);
	return IC_EXIT_OK;
}
