/* imgverify: check a chain keyless, or authenticate every block with the key. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>

#include "imgchain.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: imgverify [OPTION]... CHAIN [NAME]\n"
		"Check a chain, or the points NAME depends on.  Without the key (default): headers,\n"
		"slots, index checksums and order, every record present and matching its checksum,\n"
		"every parent present.  With --data: also decrypt and authenticate every block and\n"
		"recompute every seal with the key.  Each problem is reported on stderr by file,\n"
		"point and block.  With --data and no NAME, the points this machine remembers\n"
		"(its state) but the chain no longer holds are listed on stdout, once each: merges\n"
		"remove points too (retention), so this is a report, not an error.\n\n"
		"  -d, --data                 authenticate with the key (asks for the passphrase)\n"
		"  -P, --passphrase-file FILE read the passphrase from FILE (implies nothing without --data)\n"
		"  -q, --quiet                no progress and no summary\n"
		"  -R, --accept-rollback      accept a chain older than this machine last saw\n"
		"  -h, --help                 show this help\n"
		"  -V, --version              show the version\n\n"
		"Exit status: 0 sound, 1 error, 2 usage, 3 wrong passphrase or key, 4 problems found.\n");
}

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
	static const struct option lopts[] = {
		{ "data", no_argument, NULL, 'd' },
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "accept-rollback", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct ic_verify_opts o = { 0 };
	struct ic_verify_stats st;
	char b[32];
	int c, ret;

	ic_progname = "imgverify";
	ic_no_dumps();
	while ((c = getopt_long(argc, argv, "dP:qRhV", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': o.data = true; break;
		case 'P': o.passphrase_file = optarg; break;
		case 'q': o.quiet = true; break;
		case 'R': o.accept_rollback = true; break;
		case 'h': usage(stdout); return IC_EXIT_OK;
		case 'V': printf("imgverify (imgchain) %s\n", PACKAGE_VERSION); return IC_EXIT_OK;
		default: usage(stderr); return IC_EXIT_USAGE;
		}
	}
	if (argc - optind < 1 || argc - optind > 2) {
		ic_msg("expected CHAIN [NAME] (see --help)");
		return IC_EXIT_USAGE;
	}
	o.chain_dir = argv[optind];
	o.name = argc - optind == 2 ? argv[optind + 1] : NULL;
	ic_install_signals();
	ret = ic_verify(&o, &st);
	if (ret)
		return ic_report(ret);
	if (o.data && !o.name)
		review_state(o.chain_dir);
	if (!o.quiet)
		printf("%s: %llu points, %llu images, %llu records (%s) %s: no problems\n", o.chain_dir,
		       (unsigned long long)st.points, (unsigned long long)st.images,
		       (unsigned long long)st.records, ic_human_bytes(st.bytes, b, sizeof(b)),
		       o.data ? "authenticated" : "checked");
	return IC_EXIT_OK;
}
