/* ic_cdp_cli.c: imgrestore --at TIME CHAIN DEST: the disk as of the last CDP checkpoint
 * at or before TIME (src/ops/ic_cdp_read.c). */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ic_cdp.h"
#include "ic_cdp_cli.h"
#include "imgchain.h"

static void fmt(const struct timespec *t, char *buf, size_t len)
{
	struct tm tm;
	time_t s = t->tv_sec;

	if (!gmtime_r(&s, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm))
		buf[0] = 0;
	snprintf(buf + strlen(buf), len - strlen(buf), ".%09ldZ @%lld.%09ld", t->tv_nsec,
		 (long long)t->tv_sec, t->tv_nsec);
}

static int print_ckpt(void *arg, const struct ic_cdp_ckpt_info *c)
{
	char tb[96];

	if (c->gap_prev) {
		fmt(&c->gap_since, tb, sizeof(tb));
		printf("gap: session %u stopped journalling at %s\n", c->gap_prev, tb);
	}
	fmt(&c->when, tb, sizeof(tb));
	printf("session %u checkpoint %llu %s%s\n", c->session, (unsigned long long)c->interval, tb,
	       c->ok ? "" : c->time_ok ? " FAILS AUTHENTICATION" : " FAILS AUTHENTICATION (time too)");
	if (!c->ok)
		*(int *)arg = IC_EXIT_CORRUPT;
	return 0;
}

static int list_main(const struct ic_cli *cli, int argc, char **argv)
{
	struct ic_cdp_restore_opts o = { 0 };
	int ret, status = IC_EXIT_OK;

	if (argc - cli->optind != 1)
		return ic_cli_usage("--checkpoints: expected CHAIN");
	o.chain_dir = argv[cli->optind];
	o.passphrase_file = cli->passphrase_file;
	o.quiet = cli->quiet;
	o.accept_rollback = cli->accept_rollback;
	ret = ic_cdp_checkpoints(&o, print_ckpt, &status);
	return ret ? ic_report(ret) : status;
}

int ic_cdp_restore_main(const char *at, const struct ic_cli *cli, int argc, char **argv)
{
	struct ic_cdp_restore_opts o = { 0 };
	struct ic_cdp_restore_stats st;
	char tb[64], a[32];
	struct tm tm;
	time_t s;
	int ret;

	if (!at)
		return list_main(cli, argc, argv);
	if (argc - cli->optind != 2)
		return ic_cli_usage("--at: expected CHAIN and DEST");
	if (ic_cdp_parse_time(at, &o.at))
		return ic_cli_usage("--at %s: %s", at, ic_last_error(-EINVAL));
	o.chain_dir = argv[cli->optind];
	o.dest = argv[cli->optind + 1];
	o.passphrase_file = cli->passphrase_file;
	o.quiet = cli->quiet;
	o.accept_rollback = cli->accept_rollback;
	ic_install_signals();
	ret = ic_cdp_restore(&o, &st);
	if (ret)
		return ic_report(ret);
	if (!o.quiet) {
		s = st.when.tv_sec;
		if (!gmtime_r(&s, &tm) || !strftime(tb, sizeof(tb), "%Y-%m-%dT%H:%M:%S", &tm))
			tb[0] = 0;
		printf("restored checkpoint %llu of journal session %u (%s.%09ldZ, @%lld.%09ld) to %s: %s, %llu records, %.1f s\n",
		       (unsigned long long)st.interval, st.session, tb, st.when.tv_nsec,
		       (long long)st.when.tv_sec, st.when.tv_nsec, o.dest,
		       ic_human_bytes(st.disk_size, a, sizeof(a)), (unsigned long long)st.records,
		       st.seconds);
	}
	return IC_EXIT_OK;
}
