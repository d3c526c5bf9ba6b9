/* imgmount: show every restore point of a chain as disk files a hypervisor boots
 * (FUSE).  A thin main() over mount_fs.c and the library. */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_cli.h"
#include "mount_fs.h"

enum { OPT_OVERLAY = 256, OPT_CACHE, OPT_LOG, OPT_TAKE_OVER, OPT_TAKE_OVER_WAIT };

static const struct ic_cli_opt opts[] = {
	{ "foreground", 'f', NULL, "stay in the foreground, log to stderr" },
	{ NULL, 'o', "OPTIONS", "FUSE mount options (allow_other, ...) and, for\n"
	  "fstab and mount(8), overlay=, passphrase_file=,\ncache_size=, log=, accept_rollback,\n"
	  "take_over, take_over_wait=\n"
	  "(the long options below)" },
	{ "debug", 'd', NULL, "FUSE debug output (implies -f)" },
	{ "overlay", OPT_OVERLAY, "DIR", "writable: copy-on-write into DIR (created if\nneeded)" },
	{ "take-over", OPT_TAKE_OVER, NULL, "a point's overlay served writable by another\n"
	  "imgmount or nbdkit: ask it to release it (at\nthe first open for writing)" },
	{ "take-over-wait", OPT_TAKE_OVER_WAIT, "SECONDS", "how long to wait for that (default 30)" },
	{ "cache-size", OPT_CACHE, "SIZE", "decoded block cache (default: 1/16 of RAM,\n64M..1G)" },
	{ "log", OPT_LOG, "WHERE", "syslog (the default in the background), stderr\n"
	  "(the default with -f) or a file to append to" },
	{ 0 },
};

static struct ic_cli cli = {
	.prog = "imgmount",
	.synopsis =
		"Usage: imgmount [-f] [-o OPTIONS] [--overlay DIR [--take-over]]\n"
		"                [--passphrase-file FILE] [--cache-size SIZE] [--log WHERE]\n"
		"                CHAIN MOUNTPOINT [-o OPTIONS]\n"
		"Mount CHAIN: one directory per restore point (disk.raw, disk.vmdk,\n"
		"disk-flat.vmdk, disk-sparse.vmdk, info.json) and `latest`.  Read-only unless\n"
		"--overlay is given.\n",
	.opts = opts,
	.common = IC_CLI_KEYED,
	.epilog =
		"fstab: CHAIN MOUNTPOINT fuse.imgmount passphrase_file=FILE[,OPTIONS] 0 0\n"
		"Unmount with fusermount3 -u MOUNTPOINT.  Exit status: 0 ok, 1 error, 2 usage,\n"
		"3 wrong passphrase, 4 damaged chain.\n",
};

struct cli {
	bool foreground, debug, accept_rollback, take_over;
	int take_over_wait;
	const char *overlay, *passfile, *chain, *mountpoint, *log;
	uint64_t cache_bytes;
	struct fuse_args fargs;
};

/* The -o options that are imgmount's own: fstab lines and mount.fuse(8) can only pass
 * -o.  Each is the long option of the same name; a long option wins over -o. */
struct own_opts {
	char *overlay, *passfile, *cache, *log;
	int rollback, take_over;
	char *take_over_wait;
};

#define OWN(t, field) { t, offsetof(struct own_opts, field), 1 }
static const struct fuse_opt own_opt_spec[] = {
	OWN("overlay=%s", overlay),
	OWN("passphrase_file=%s", passfile),
	OWN("cache_size=%s", cache),
	OWN("cache=%s", cache),
	OWN("log=%s", log),
	OWN("accept_rollback", rollback),
	OWN("take_over", take_over),
	OWN("take_over_wait=%s", take_over_wait),
	FUSE_OPT_END
};

/* mount(8)'s own options that reach us through mount.fuse: not for the kernel. */
static int drop_mount_opts(void *data, const char *arg, int key, struct fuse_args *out)
{
	static const char *const mount_only[] = { "defaults", "auto", "noauto", "nofail",
						  "_netdev", "user", "users", "nouser", "owner",
						  "group", NULL };

	(void)data;
	(void)out;
	if (key != FUSE_OPT_KEY_OPT)
		return 1;
	if (!strncmp(arg, "x-", 2) || !strncmp(arg, "comment=", 8))
		return 0;
	for (int i = 0; mount_only[i]; i++)
		if (!strcmp(arg, mount_only[i]))
			return 0;
	return 1;
}

static int parse_own_opts(struct cli *c)
{
	struct own_opts o = { 0 };

	if (fuse_opt_parse(&c->fargs, &o, own_opt_spec, drop_mount_opts)) {
		ic_cli_usage("bad -o options");
		return -1;
	}
	if (!c->overlay)
		c->overlay = o.overlay;
	if (!c->passfile)
		c->passfile = o.passfile;
	if (!c->log)
		c->log = o.log;
	c->accept_rollback |= o.rollback;
	c->take_over |= o.take_over;
	if (o.take_over_wait && !c->take_over_wait) {
		char *end;
		long v = strtol(o.take_over_wait, &end, 10);

		if (*end || end == o.take_over_wait || v < 1 || v > 3600) {
			ic_cli_usage("bad -o take_over_wait=%s (1..3600 seconds)", o.take_over_wait);
			return -1;
		}
		c->take_over_wait = (int)v;
	}
	if (o.cache && !c->cache_bytes &&
	    (ic_parse_size(o.cache, &c->cache_bytes) || c->cache_bytes < (1u << 20))) {
		ic_cli_usage("bad -o cache_size=%s (e.g. 512M, at least 1M)", o.cache);
		return -1;
	}
	/* the strings live as long as the process: the mount runs until exit */
	return 0;
}

/* Returns -1 to go on, or the exit status (--help, --version, a usage error). */
static int parse_args(int argc, char **argv, struct cli *c)
{
	int ch;

	while ((ch = ic_cli_next(&cli, argc, argv)) > 0) {
		switch (ch) {
		case 'f': c->foreground = true; break;
		case 'd': c->debug = c->foreground = true; break;
		case 'o':
			fuse_opt_add_arg(&c->fargs, "-o");
			fuse_opt_add_arg(&c->fargs, cli.optarg);
			break;
		case OPT_OVERLAY: c->overlay = cli.optarg; break;
		case OPT_LOG: c->log = cli.optarg; break;
		case OPT_TAKE_OVER: c->take_over = true; break;
		case OPT_TAKE_OVER_WAIT:
			if (ic_cli_int(&cli, 1, 3600, &c->take_over_wait))
				return IC_EXIT_USAGE;
			break;
		case OPT_CACHE:
			if (ic_parse_size(cli.optarg, &c->cache_bytes) ||
			    c->cache_bytes < (1u << 20))
				return ic_cli_usage("bad --cache-size '%s' (e.g. 512M, at least 1M)",
						    cli.optarg);
			break;
		}
	}
	if (ch < 0)
		return cli.status;
	c->passfile = cli.passphrase_file;
	c->accept_rollback = cli.accept_rollback;
	if (argc - cli.optind != 2)
		return ic_cli_usage("expected CHAIN and MOUNTPOINT");
	c->chain = argv[cli.optind];
	c->mountpoint = argv[cli.optind + 1];
	return parse_own_opts(c) ? IC_EXIT_USAGE : -1;
}

/* A clear word before mounting: missing, not a directory, stale, or already mounted. */
static int check_mountpoint(const char *mp)
{
	struct stat sb, up;
	char *parent;
	int ret = 0;

	if (stat(mp, &sb) < 0) {
		if (errno == ENOTCONN)
			return ic_fail(-EBUSY, "%s: a dead FUSE mount is still there; run fusermount3 -u %s first",
				       mp, mp);
		return ic_fail(-errno, "mountpoint %s: %s", mp, strerror(errno));
	}
	if (!S_ISDIR(sb.st_mode))
		return ic_fail(-ENOTDIR, "mountpoint %s: not a directory", mp);
	parent = ic_path_join(mp, "..");
	if (!parent)
		return -ENOMEM;
	if (stat(parent, &up) == 0 && (up.st_dev != sb.st_dev || up.st_ino == sb.st_ino))
		ret = ic_fail(-EBUSY, "mountpoint %s is busy: something is already mounted there", mp);
	free(parent);
	return ret;
}

/* fsname=imgchain:PATH, with the commas the option parser would split on escaped away;
 * ro without an overlay, so that mount(8) and /proc/mounts show what the mount is. */
static void add_base_opts(struct fuse_args *a, const char *chain, bool writable)
{
	char buf[PATH_MAX + 128], name[PATH_MAX];

	snprintf(name, sizeof(name), "%s", chain);
	for (char *p = name; *p; p++)
		if (*p == ',' || *p == '\\')
			*p = '_';
	snprintf(buf, sizeof(buf), "fsname=imgchain:%s,subtype=imgmount,default_permissions,"
		 "max_read=1048576%s", name, writable ? "" : ",ro");
	fuse_opt_insert_arg(a, 1, "-o");
	fuse_opt_insert_arg(a, 2, buf);
}

static bool log_is(const struct cli *c, const char *where)
{
	return c->log && !strcmp(c->log, where);
}

static bool log_to_file(const struct cli *c)
{
	return c->log && !log_is(c, "syslog") && !log_is(c, "stderr");
}

/* After daemonizing: syslog by default in the background (stderr is /dev/null then),
 * stderr in the foreground, or what --log chose. */
static void switch_log(const struct cli *c)
{
	if (log_to_file(c))
		mount_log_file();
	else if (log_is(c, "syslog") || (!c->log && !c->foreground))
		mount_log_syslog();
}

static int run(struct cli *c, struct mount_fs *fs)
{
	struct fuse_loop_config lc = { .clone_fd = 1, .max_idle_threads = 16 };
	struct fuse *f;
	int ret;

	if (c->debug)
		fuse_opt_add_arg(&c->fargs, "-d");
	f = fuse_new(&c->fargs, mount_fs_ops(), sizeof(*mount_fs_ops()), fs);
	if (!f)
		return ic_fail(-EINVAL, "cannot set up FUSE (bad -o option?)");
	if (fuse_mount(f, c->mountpoint)) {
		fuse_destroy(f);
		return ic_fail(-EIO, "cannot mount on %s (see the message above)", c->mountpoint);
	}
	ret = -EIO;
	/* libfuse only takes over signals left at their default: a shell starting us in
	 * the background ignores SIGINT, yet SIGINT must still unmount cleanly */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	if (fuse_set_signal_handlers(fuse_get_session(f))) {
		ic_fail(ret, "cannot install signal handlers");
		goto out_unmount;
	}
	if (fuse_daemonize(c->foreground)) {
		ic_fail(ret, "cannot daemonize");
		goto out_signals;
	}
	switch_log(c);
	ret = mount_fs_start(fs);
	if (ret) {
		mount_log(LOG_ERR, "%s", ic_last_error(ret));
		goto out_signals;
	}
	mount_log(LOG_INFO, "%s mounted on %s: %zu restore points, %s", c->chain, c->mountpoint,
		  mount_fs_npoints(fs), c->overlay ? "writable overlay" : "read-only");
	ret = fuse_loop_mt(f, &lc);
	/* a positive result is the signal that ended the loop: a clean shutdown */
	ret = ret < 0 ? ic_fail(ret, "the FUSE session ended with an error: %s", strerror(-ret)) : 0;
	mount_log(LOG_INFO, "%s: unmounting", c->mountpoint);
out_signals:
	fuse_remove_signal_handlers(fuse_get_session(f));
out_unmount:
	fuse_unmount(f);
	fuse_destroy(f);
	return ret;
}

static int absolute(const char *path, const char *what, char **out)
{
	*out = realpath(path, NULL);
	if (!*out)
		return ic_fail(-errno, "%s %s: %s", what, path, strerror(errno));
	return 0;
}

int main(int argc, char **argv)
{
	struct cli c = { .fargs = FUSE_ARGS_INIT(0, NULL) };
	struct mount_opts mo = { 0 };
	struct ic_key *key = NULL;
	struct mount_fs *fs = NULL;
	char *chain = NULL, *overlay = NULL, *mountpoint = NULL;
	struct ic_s3_remote *remote = NULL;
	int ret;

	ic_progname = cli.prog;
	ic_no_dumps();
	/* libfuse mallocs a buffer per request (up to 1 MiB): keep such buffers in the heap
	 * and the heap untrimmed, so that requests reuse memory instead of faulting in
	 * fresh pages, which is slow on virtual machines */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	fuse_opt_add_arg(&c.fargs, argv[0]);
	ret = parse_args(argc, argv, &c);
	if (ret >= 0) {
		fuse_opt_free_args(&c.fargs);
		return ret;
	}
	if (ic_s3_is_url(c.chain)) {
		/* s3://BUCKET/PREFIX: headers and indexes cached, then the cache is mounted and
		 * the records are fetched as they are read (ic_s3_remote: its client is made
		 * by the first fetch, in the daemon: nothing of it crosses the fork) */
		struct ic_s3_chain *sc;
		const char *dir;

		ret = ic_s3_chain_arg(c.chain, false, IC_S3_NEED_INDEX, NULL, 0, &sc, &dir);
		if (!ret && !(chain = strdup(dir)))
			ret = -ENOMEM;
		if (!ret)
			ret = ic_s3_remote_open(sc, c.chain, &remote);
		ic_s3_chain_close(sc);
	} else {
		ret = absolute(c.chain, "chain", &chain);
	}
	if (ret)
		goto out;
	if (c.overlay) {
		if (mkdir(c.overlay, 0700) < 0 && errno != EEXIST) {
			ret = ic_fail(-errno, "overlay %s: %s", c.overlay, strerror(errno));
			goto out;
		}
		ret = absolute(c.overlay, "overlay", &overlay);
		if (ret)
			goto out;
	}
	ret = check_mountpoint(c.mountpoint);
	if (ret)
		goto out;
	/* a log file is opened now, so that a bad path fails before anything is mounted */
	if (log_to_file(&c)) {
		ret = mount_log_open(c.log);
		if (ret)
			goto out;
	}
	/* the daemon runs in /: keep absolute paths */
	ret = absolute(c.mountpoint, "mountpoint", &mountpoint);
	if (ret)
		goto out;
	c.mountpoint = mountpoint;
	/* the passphrase is asked before anything is mounted or forked */
	ret = ic_key_unlock_chain(chain, c.passfile, c.accept_rollback, &key);
	if (ret)
		goto out;
	mo.chain_dir = chain;
	mo.overlay_dir = overlay;
	mo.cache_bytes = c.cache_bytes;     /* 0: the session's default */
	mo.mountpoint = mountpoint;
	mo.take_over = c.take_over;
	mo.take_over_wait = (unsigned)c.take_over_wait;
	ret = mount_fs_new(&mo, key, &fs);
	if (ret)
		goto out;
	add_base_opts(&c.fargs, chain, overlay != NULL);
	ret = run(&c, fs);
out:
	if (ret)
		mount_log(LOG_ERR, "%s", ic_last_error(ret));
	mount_fs_free(fs);
	if (remote) {
		uint64_t nreq, npre, nbytes;

		ic_s3_remote_stats(remote, &nreq, &npre, &nbytes);
		if (nreq)
			mount_log(LOG_INFO, "%s: %llu bytes fetched from the bucket in %llu ranges "
				  "(%llu by readahead)", c.chain, (unsigned long long)nbytes,
				  (unsigned long long)nreq, (unsigned long long)npre);
		ic_s3_remote_close(remote);
	}
	ic_key_free(key);
	fuse_opt_free_args(&c.fargs);
	free(chain);
	free(overlay);
	free(mountpoint);
	return ic_exit_code(ret);
}
