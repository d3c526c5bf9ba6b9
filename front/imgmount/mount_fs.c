/* mount_fs.c: imgmount's file system: lifecycle, the FUSE operation table, logging. */
#include "config.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

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

static void on_cache_error(void *arg, int err, const char *msg)
{
	(void)arg;
	mount_log(LOG_ERR, "%s", msg);
	(void)err;
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
};

const struct fuse_operations *mount_fs_ops(void)
{
	return &ops;
}

int mount_fs_new(const struct mount_opts *o, const struct ic_key *key, struct mount_fs **out)
{
	struct mount_fs *fs = calloc(1, sizeof(*fs));
	int ret;

	if (!fs)
		return -ENOMEM;
	fs->o = *o;
	fs->key = key;
	fs->uid = getuid();
	fs->gid = getgid();
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->refresh_mu, NULL);
	if (o->overlay_dir && mkdir(o->overlay_dir, 0700) < 0 && errno != EEXIST) {
		ret = ic_fail(-errno, "%s: %s", o->overlay_dir, strerror(errno));
		goto fail;
	}
	ret = mfs_refresh(fs, true);
	if (ret)
		goto fail;
	if (fs->gens->chain->have_images &&
	    memcmp(fs->gens->chain->chain_id, key->chain_id, ICF_ID_LEN)) {
		ret = ic_fail(IC_EKEY, "%s: the key does not belong to this chain", o->chain_dir);
		goto fail;
	}
	*out = fs;
	return 0;
fail:
	mount_fs_free(fs);
	return ret;
}

int mount_fs_start(struct mount_fs *fs)
{
	struct ic_cache_opts co = {
		.max_bytes = fs->o.cache_bytes,
		.on_error = on_cache_error,
		.arg = fs,
	};
	uint32_t bs = fs->gens && fs->gens->chain->have_images ? fs->gens->chain->block_size
							      : ICF_BLOCK_DEFAULT;

	fs->cache = ic_cache_new(bs, fs->key, &co);
	if (!fs->cache)
		return ic_fail(-errno, "block cache: %s", strerror(errno));
	return 0;
}

size_t mount_fs_npoints(struct mount_fs *fs)
{
	size_t n = 0;

	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->npts; i++)
		n += !fs->pts[i]->gone;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

void mount_fs_free(struct mount_fs *fs)
{
	if (!fs)
		return;
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->npts; i++)
		mfs_point_free(fs, fs->pts[i]);
	free(fs->pts);
	fs->pts = NULL;
	fs->npts = fs->pts_cap = 0;
	while (fs->gens)
		mfs_gen_unref(fs, fs->gens);
	pthread_mutex_unlock(&fs->lock);
	if (fs->cache) {
		struct ic_cache_stats st;

		ic_cache_get_stats(fs->cache, &st);
		mount_log(LOG_INFO, "block cache: %llu hits, %llu misses, %llu waits, %llu blocks decoded, %llu by readahead (%llu dropped), %llu evicted, %llu dropped behind a sequential reader, %llu errors",
			  (unsigned long long)st.hits, (unsigned long long)st.misses,
			  (unsigned long long)st.waits, (unsigned long long)st.decoded,
			  (unsigned long long)st.ra_done, (unsigned long long)st.ra_dropped,
			  (unsigned long long)st.evictions, (unsigned long long)st.dropped,
			  (unsigned long long)st.errors);
	}
	ic_cache_free(fs->cache);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->refresh_mu);
	free(fs);
}
