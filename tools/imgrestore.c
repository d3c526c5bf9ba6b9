/* imgrestore: write a restore point's disk to a file or block device. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "imgchain.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imgrestore [OPTION]... CHAIN NAME DEST\n"
		"Write the disk of restore point NAME to DEST: a block device (every byte written)\n"
		"or a file (created sparse: zero blocks are holes).  Every block is authenticated;\n"
		"the first bad block stops the restore with exit status 4 and no DEST file is left.\n\n"
		"  -f, --force                replace DEST if it is an existing non-empty file\n"
		"  -P, --passphrase-file FILE read the passphrase from FILE\n"
		"  -j, --threads N            worker threads (default: one per CPU)\n"
		"  -q, --quiet                no progress and no summary\n"
		"  -R, --accept-rollback      accept a chain older than this machine last saw\n"
		"  -h, --help                 show this help\n"
		"  -V, --version              show the version\n\n"
		"Exit status: 0 ok, 1 error, 2 usage, 3 wrong passphrase or key, 4 corruption found.\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "force", no_argument, NULL, 'f' },
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "threads", required_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "accept-rollback", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ic_restore_opts o = { 0 };
	struct ic_restore_stats st;
	char a[32], r[32], *end;
	int c, ret;

	ic_progname = "imgrestore";
	ic_no_dumps();
	while ((c = getopt_long(argc, argv, "fP:j:qRhV", lopts, NULL)) != -1) {
		switch (c) {
		case 'f': o.force = true; break;
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
		case 'V': printf("imgrestore (imgchain) %s\n", PACKAGE_VERSION); return IC_EXIT_OK;
		default: usage(stderr); return IC_EXIT_USAGE;
		}
	}
	if (argc - optind != 3) {
		ic_msg("expected CHAIN, NAME and DEST (see --help)");
		return IC_EXIT_USAGE;
	}
	o.chain_dir = argv[optind];
	o.name = argv[optind + 1];
	o.dest = argv[optind + 2];
	ic_install_signals();
	ret = ic_restore(&o, &st);
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
