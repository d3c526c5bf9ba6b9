/* mount_fs.c: imgmount's file system: lifecycle, the FUSE operation table, logging. */
#include "config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "ic_promote.h"
#include "mount_fs_int.h"

/* ---- logging -------------------------------------------------------------------- */

enum { LOG_TO_STDERR, LOG_TO_SYSLOG, LOG_TO_FILE };

static int log_to = LOG_TO_STDERR;
static FILE *log_file;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void mount_log_syslog(void)
{
	openlog("imgmount", LOG_PID, LOG_DAEMON);
	log_to = LOG_TO_SYSLOG;
}

int mount_log_open(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	FILE *f = fd < 0 ? NULL : fdopen(fd, "a");

	if (!f) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return ic_fail(-e, "log file %s: %s", path, strerror(e));
	}
	setvbuf(f, NULL, _IOLBF, 0);
	log_file = f;
	return 0;
}

void mount_log_file(void)
{
	if (log_file)
		log_to = LOG_TO_FILE;
}

/* One line to the log file: local time, pid, severity. */
static void log_line(int prio, const char *fmt, va_list ap)
{
	static const char *const level[] = { "emerg", "alert", "crit", "error", "warning",
					     "notice", "info", "debug" };
	char stamp[32];
	struct tm tm;
	time_t t = time(NULL);

	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", localtime_r(&t, &tm));
	pthread_mutex_lock(&log_mu);
	fprintf(log_file, "%s imgmount[%ld] %s: ", stamp, (long)getpid(), level[prio & 7]);
	vfprintf(log_file, fmt, ap);
	fputc('\n', log_file);
	pthread_mutex_unlock(&log_mu);
}

void mount_log(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_to == LOG_TO_SYSLOG) {
		vsyslog(prio, fmt, ap);
	} else if (log_to == LOG_TO_FILE) {
		log_line(prio, fmt, ap);
	} else {
		flockfile(stderr);
		fprintf(stderr, "imgmount: ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		funlockfile(stderr);
	}
	va_end(ap);
}

static void on_session_log(void *arg, int prio, const char *msg)
{
	(void)arg;
	mount_log(prio, "%s", msg);
}

/* errno for the kernel: damage and key trouble are I/O errors to a reader. */
int mfs_errno(int err)
{
	if (err == IC_ECORRUPT || err == IC_EKEY || err == -ENXIO)
		return -EIO;
	return err < 0 ? err : -EIO;
}
/* ---- lifecycle ------------------------------------------------------------------------- */

static void *mfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct mount_fs *fs = mfs_get();

	conn->max_write = IO_MAX;
	conn->max_read = IO_MAX;    /* must equal the max_read mount option imgmount passes */
	conn->max_readahead = IO_MAX;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* the chain's points change only by backups and consolidation: the root and point
	 * entries are re-checked every second, the file contents are ours alone */
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 0.0;
	cfg->nullpath_ok = 1;
	cfg->use_ino = 0;
	return fs;
}

static const struct fuse_operations ops = {
	.init = mfs_init,
	.getattr = mfs_getattr,
	.readlink = mfs_readlink,
	.opendir = mfs_opendir,
	.readdir = mfs_readdir,
	.releasedir = mfs_releasedir,
	.open = mfs_open,
	.create = mfs_create,
	.read = mfs_read,
	.write = mfs_write,
	.fsync = mfs_fsync,
	.flush = mfs_flush,
	.release = mfs_release,
	.mkdir = mfs_mkdir,
	.rmdir = mfs_rmdir,
	.unlink = mfs_unlink,
	.symlink = mfs_symlink,
	.rename = mfs_rename,
	.truncate = mfs_truncate,
	.chmod = mfs_chmod,
	.chown = mfs_chown,
	.utimens = mfs_utimens,
	.statfs = mfs_statfs,
	.setxattr = mfs_setxattr,
	.getxattr = mfs_getxattr,
};

const struct fuse_operations *mount_fs_ops(void)
{
	return &ops;
}

int mount_fs_new(const struct mount_opts *o, const struct ic_key *key, struct mount_fs **out)
{
	struct ic_session_opts so = {
		.chain_dir = o->chain_dir,
		.overlay_dir = o->overlay_dir,
		.cache_bytes = o->cache_bytes,
		.log = on_session_log,
		.owner_server = "imgmount",
		.owner_where = o->mountpoint,
		.take_over = o->take_over,
		.take_over_wait = o->take_over_wait,
	};
	struct mount_fs *fs = calloc(1, sizeof(*fs));
	int ret;

	if (!fs)
		return -ENOMEM;
	fs->o = *o;
	pthread_mutex_init(&fs->hlock, NULL);
	fs->uid = getuid();
	fs->gid = getgid();
	ret = ic_session_new(&so, key, &fs->ss);
	if (ret) {
		pthread_mutex_destroy(&fs->hlock);
		free(fs);
		return ret;
	}
	*out = fs;
	return 0;
}

int mount_fs_start(struct mount_fs *fs)
{
	int ret = ic_session_start(fs->ss);

	if (!ret)
		ic_promote_resume_all(fs->ss);     /* promotes a killed daemon left running */
	return ret;
}

size_t mount_fs_npoints(struct mount_fs *fs)
{
	return ic_session_npoints(fs->ss);
}

struct mhandle *mfs_handle_new(struct mount_fs *fs)
{
	struct mhandle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->fd = -1;
	h->file = -1;
	pthread_mutex_lock(&fs->hlock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->hlock);
	return h;
}

void mfs_handle_free(struct mount_fs *fs, struct mhandle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&fs->hlock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->hlock);
	free(h->dir);
	free(h);
}

void mount_fs_free(struct mount_fs *fs)
{
	if (!fs)
		return;
	/* the FUSE loop has ended: what is still open will never be released by the kernel
	 * (open across the unmount); release it as a close would, writes committed */
	while (fs->handles) {
		struct mhandle *h = fs->handles;

		mfs_handle_close(fs, h);
		mfs_handle_free(fs, h);
	}
	if (fs->ss)
		ic_promote_stop_all(fs->ss);
	ic_session_free(fs->ss);
	pthread_mutex_destroy(&fs->hlock);
	free(fs);
}
