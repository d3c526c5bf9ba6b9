/* imgpromote: move a disk served by a writable imgmount to production storage while the
 * guest runs (the mount daemon copies and mirrors: src/serve/ic_promote.h).  Thin: asks
 * the daemon through an extended attribute of MOUNTPOINT/POINT/disk.raw and follows its
 * status. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "ic_cli.h"
#include "ic_progress.h"
#include "imgchain.h"

#define XA_PROMOTE "user.imgchain.promote"
#define XA_ERROR "user.imgchain.promote.error"

static const struct ic_cli_opt opts[] = {
	{ "no-wait", 256, NULL, "start (or look at) the promote and return at once" },
	{ "rate", 258, "BYTES", "copy at most BYTES a second (K, M, G suffixes;\nguest writes are never limited)" },
	{ "status", 257, NULL, "print the promote's status line and exit\n(DEST not given)" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgpromote",
	.synopsis =
		"Usage: imgpromote [OPTION]... MOUNTPOINT POINT DEST\n"
		"  or:  imgpromote --status MOUNTPOINT POINT\n"
		"Move restore point POINT's disk, served by a writable imgmount (--overlay) at\n"
		"MOUNTPOINT and in use by a guest, to DEST (a block device, or a file created if\n"
		"missing) without stopping the guest: the mount daemon copies the disk (chain\n"
		"plus overlay) to DEST while every guest write goes to the overlay and to DEST\n"
		"before it is acknowledged; once the copy is complete the disk is served from\n"
		"DEST alone (disk.raw and disk-flat.vmdk read and write DEST).  Waits, showing\n"
		"progress, until the switch.  A daemon killed meanwhile resumes the promote when\n"
		"imgmount is started again with the same overlay directory.\n",
	.opts = opts,
	.common = IC_CLI_QUIET,
	.epilog = "Exit status: 0 switched (or started, with --no-wait), 1 error (the promote\n"
		  "failed, the daemon is gone), 2 usage.\n",
};

struct status {
	char phase[16];
	uint64_t copied, size;
	const char *error;
};

static int get_status(const char *disk, char *buf, size_t cap, struct status *st)
{
	ssize_t n = getxattr(disk, XA_PROMOTE, buf, cap - 1);
	char *e;

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	memset(st, 0, sizeof(*st));
	if (sscanf(buf, "phase=%15s copied=%" SCNu64 " size=%" SCNu64, st->phase, &st->copied,
		   &st->size) < 1)
		return -EPROTO;
	e = strstr(buf, " error=");
	st->error = e ? e + 7 : NULL;
	return 0;
}

/* DEST made absolute (it may not exist yet: its directory must). */
static char *abs_dest(const char *dest)
{
	char *d1 = strdup(dest), *d2 = strdup(dest), *dir, *out = NULL;

	if (d1 && d2 && (dir = realpath(dirname(d1), NULL))) {
		const char *base = basename(d2);

		if (asprintf(&out, "%s/%s", strcmp(dir, "/") ? dir : "", base) < 0)
			out = NULL;
		free(dir);
	}
	free(d1);
	free(d2);
	return out;
}

static int fail_gone(const char *disk, int err)
{
	if (err == -ENODATA || err == -ENOTSUP || err == -EPROTO) {
		ic_msg("%s: not a disk served by an imgmount that can promote", disk);
		return IC_EXIT_ERROR;
	}
	ic_msg("%s: %s (if the mount daemon died, start imgmount again with the same overlay directory: the promote resumes)",
	       disk, strerror(-err));
	return IC_EXIT_ERROR;
}

static int wait_switch(const char *disk, const char *point, bool quiet)
{
	struct ic_progress pg;
	struct status st;
	char buf[8192];
	double t0 = ic_now();
	int ret;

	ic_progress_init(&pg, point, 0, quiet);
	for (;;) {
		ret = get_status(disk, buf, sizeof(buf), &st);
		if (ret)
			return ic_progress_done(&pg), fail_gone(disk, ret);
		pg.total = st.size;
		if (!strcmp(st.phase, "switched") || !strcmp(st.phase, "failed") ||
		    !strcmp(st.phase, "none"))
			break;
		ic_progress_update(&pg, st.copied);
		usleep(200000);
	}
	ic_progress_done(&pg);
	if (!strcmp(st.phase, "switched")) {
		if (!quiet)
			printf("%s: switched to %s: %" PRIu64 " bytes, %.1f s\n", point,
			       strstr(buf, "dest=") + 5, st.size, ic_now() - t0);
		return IC_EXIT_OK;
	}
	ic_msg("%s: promote %s%s%s", disk, st.phase, st.error ? ": " : "",
	       st.error ? st.error : "");
	return IC_EXIT_ERROR;
}

int main(int argc, char **argv)
{
	bool nowait = false, status = false;
	char *disk = NULL, *dest = NULL, *mnt = NULL, *val = NULL, buf[8192];
	uint64_t rate = 0;
	struct status st;
	struct stat sb;
	int c, ret;

	ic_progname = cli.prog;
	while ((c = ic_cli_next(&cli, argc, argv)) > 0) {
		if (c == 256)
			nowait = true;
		else if (c == 257)
			status = true;
		else if (c == 258 && (ic_parse_size(cli.optarg, &rate) || !rate))
			return ic_cli_usage("%s %s: not a rate in bytes a second", cli.optname,
					    cli.optarg);
	}
	if (c < 0)
		return cli.status;
	if (argc - cli.optind != (status ? 2 : 3))
		return ic_cli_usage(status ? "expected MOUNTPOINT POINT" :
					     "expected MOUNTPOINT POINT DEST");
	if (asprintf(&disk, "%s/%s/disk.raw", argv[cli.optind], argv[cli.optind + 1]) < 0)
		return ic_report(-ENOMEM);
	if (stat(disk, &sb) < 0) {
		ic_msg("%s: %s (no restore point '%s' served at %s?)", disk, strerror(errno),
		       argv[cli.optind + 1], argv[cli.optind]);
		return IC_EXIT_ERROR;
	}
	/* the daemon answers for its disks: anything else is not ours to set an xattr on */
	ret = get_status(disk, buf, sizeof(buf), &st);
	if (ret)
		return fail_gone(disk, ret);
	if (status) {
		printf("%s\n", buf);
		return IC_EXIT_OK;
	}
	dest = abs_dest(argv[cli.optind + 2]);
	mnt = realpath(argv[cli.optind], NULL);
	if (!dest || !mnt) {
		ic_msg("%s: %s", dest ? argv[cli.optind] : argv[cli.optind + 2], strerror(errno));
		return IC_EXIT_ERROR;
	}
	if (!strncmp(dest, mnt, strlen(mnt)) && (dest[strlen(mnt)] == '/' || !dest[strlen(mnt)])) {
		ic_msg("%s: DEST is inside the mount %s: refused", dest, mnt);
		return IC_EXIT_ERROR;
	}
	if (rate ? asprintf(&val, "%s\nrate=%" PRIu64, dest, rate) < 0 : !(val = strdup(dest)))
		return ic_report(-ENOMEM);
	if (setxattr(disk, XA_PROMOTE, val, strlen(val), 0) < 0) {
		int err = errno;
		ssize_t n = getxattr(disk, XA_ERROR, buf, sizeof(buf) - 1);

		buf[n > 0 ? n : 0] = '\0';
		if (err == ENOTSUP || err == EOPNOTSUPP)
			ic_msg("%s: not served by an imgmount that can promote (%s)", disk, strerror(err));
		else
			ic_msg("%s: %s", disk, buf[0] ? buf : strerror(err));
		return IC_EXIT_ERROR;
	}
	if (nowait) {
		ret = get_status(disk, buf, sizeof(buf), &st);
		if (ret)
			ret = fail_gone(disk, ret);
		else if (!cli.quiet)
			printf("%s\n", buf);
	} else {
		ret = wait_switch(disk, argv[cli.optind + 1], cli.quiet);
	}
	free(val);
	free(mnt);
	free(dest);
	free(disk);
	return ret;
}
