/* ic_promote.c: the live promote engine (ic_promote.h): DEST, the state file, the copy
 * thread and the switch, the data path of a promoted disk, its status.
 *
 * Order of a guest write while copying: the switch lock shared (the switch waits for it),
 * the chunks it touches range-locked, the overlay written, then DEST; acknowledged after
 * both.  The copier holds the same range lock while it reads a chunk through the session
 * (overlay over chain) and writes it to DEST, so whichever of the two comes second
 * writes DEST last with the newest bytes: no copied-bitmap is needed, the copier never
 * reads a stale chain block over a newer guest write because it reads through the
 * overlay under the lock.  While copying, the overlay stays the disk of record: a crash
 * (or SIGKILL) then restarts the copy from it, and DEST failing only stops the promote. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "ic_promote_int.h"
#include "ic_util.h"


static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;       /* start, resume, stop */

enum ic_promote_phase ic_promote_phase(struct ic_promote *pr)
{
	return __atomic_load_n(&pr->phase, __ATOMIC_ACQUIRE);
}

bool ic_promote_switched(struct ic_promote *pr)
{
	return ic_promote_phase(pr) == IC_PROMOTE_SWITCHED;
}

static void set_err(struct ic_promote *pr, const char *what, int ret)
{
	pthread_mutex_lock(&pr->mu);
	snprintf(pr->err, sizeof(pr->err), "%s: %s", what, ic_last_error(ret));
	pthread_mutex_unlock(&pr->mu);
	ic_session_log(pr->s, LOG_ERR, "promote of '%s' to %s: %s: %s", pr->sp->name, pr->st.dest,
		       what, ic_last_error(ret));
}

/* ---- DEST and the state file ----------------------------------------------------------- */

/* Open DEST for a disk of size bytes: a block device at least that large, or a regular
 * file (created when create, grown to size). */
static int open_dest(const char *path, uint64_t size, bool create, int *out, struct stat *sb)
{
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | (create ? O_CREAT : 0), 0600);
	uint64_t have = 0;
	int ret = 0;

	*out = -1;
	if (fd < 0)
		return ic_fail(-errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, sb) < 0) {
		ret = ic_fail(-errno, "%s: %s", path, strerror(errno));
	} else if (S_ISBLK(sb->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &have) < 0)
			ret = ic_fail(-errno, "%s: size: %s", path, strerror(errno));
		else if (have < size)
			ret = ic_fail(-ENOSPC, "%s: %" PRIu64 " bytes, the disk needs %" PRIu64,
				      path, have, size);
	} else if (S_ISREG(sb->st_mode)) {
		if ((uint64_t)sb->st_size < size && ftruncate(fd, (off_t)size) < 0)
			ret = ic_fail(-errno, "%s: grow to %" PRIu64 " bytes: %s", path, size,
				      strerror(errno));
	} else {
		ret = ic_fail(-EINVAL, "%s: a %s, not a block device or regular file", path,
			      ic_file_kind(sb->st_mode));
	}
	if (ret)
		close(fd);
	else
		*out = fd;
	return ret;
}

static int state_write(struct ic_promote *pr)
{
	char buf[IC_PROMOTE_DEST_MAX + 256];
	int n = ic_promote_state_encode(&pr->st, buf, sizeof(buf));

	if (n < 0)
		return ic_fail(n, "%s/%s: %s", pr->dir, IC_PROMOTE_STATE, strerror(-n));
	return ic_write_file_atomic(pr->dir, IC_PROMOTE_STATE, buf, (size_t)n, 0600);
}

static int state_read(const char *dir, struct ic_promote_state *st)
{
	char buf[IC_PROMOTE_DEST_MAX + 257];
	int fd, ret = ic_open_regular(AT_FDCWD, dir, IC_PROMOTE_STATE, O_RDONLY, 0, &fd);
	ssize_t n;

	if (ret)
		return ret;
	n = read(fd, buf, sizeof(buf));
	ret = n < 0 ? ic_fail(-errno, "%s/%s: %s", dir, IC_PROMOTE_STATE, strerror(errno)) : 0;
	close(fd);
	if (!ret && (ret = ic_promote_state_decode(buf, (size_t)n, st)))
		ret = ic_fail(ret, "%s/%s: %s", dir, IC_PROMOTE_STATE, ic_last_error(ret));
	return ret;
}

/* While copying, nothing is lost by forgetting a promote: the overlay holds the disk. */
static void state_remove(struct ic_promote *pr)
{
	char *p = ic_path_join(pr->dir, IC_PROMOTE_STATE);

	if (p && unlink(p) == 0)
		ic_fsync_dir(pr->dir);
	free(p);
}

/* DEST failed while copying: stop mirroring, the overlay stays the disk. */
bool ic_promote_fail_copy(struct ic_promote *pr, const char *what, int ret)
{
	int want = IC_PROMOTE_COPYING;

	if (!__atomic_compare_exchange_n(&pr->phase, &want, IC_PROMOTE_FAILED, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return false;
	__atomic_store_n(&pr->stop, true, __ATOMIC_RELAXED);
	set_err(pr, what, ret);
	state_remove(pr);
	return true;
}

/* ---- the copy and the switch ----------------------------------------------------------- */

static bool all_zero(const char *b, size_t n)
{
	return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

static int dest_write(struct ic_promote *pr, const char *buf, size_t n, uint64_t off)
{
	if (pr->regular && all_zero(buf, n) &&
	    fallocate(pr->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)n) == 0)
		return 0;
	return ic_pwrite_full(pr->fd, buf, n, off, pr->st.dest);
}

/* Writes paused, DEST flushed, the state says switched: DEST is the disk.  A failure to
 * record it leaves the promote copying (mirroring goes on) and is retried. */
static int do_switch(struct ic_promote *pr)
{
	int ret;

	pthread_rwlock_wrlock(&pr->sw);
	/* the overlay's last state committed now: its files never change after the switch
	 * (a failure is logged; the overlay is not the disk any more once switched) */
	(void)ic_session_fsync(pr->s, pr->sp, IC_DISK_RAW);
	ret = fdatasync(pr->fd) < 0 ? ic_fail(-errno, "%s: fdatasync: %s", pr->st.dest,
					      strerror(errno)) : 0;
	if (ret) {
		pthread_rwlock_unlock(&pr->sw);
		ic_promote_fail_copy(pr, "flush", ret);
		return ret;
	}
	pr->st.phase = IC_PROMOTE_SWITCHED;
	ret = state_write(pr);
	if (ret) {
		pr->st.phase = IC_PROMOTE_COPYING;
		__atomic_store_n(&pr->unsure, true, __ATOMIC_RELEASE);
		set_err(pr, "recording the switch (retried)", ret);
	} else {
		__atomic_store_n(&pr->phase, IC_PROMOTE_SWITCHED, __ATOMIC_RELEASE);
		pthread_mutex_lock(&pr->mu);
		pr->err[0] = '\0';
		pthread_mutex_unlock(&pr->mu);
	}
	pthread_rwlock_unlock(&pr->sw);
	if (!ret)
		ic_session_log(pr->s, LOG_INFO, "promote of '%s': switched to %s", pr->sp->name,
			       pr->st.dest);
	return ret;
}

/* Keep the copy under pr->st.rate: sleep until done bytes are due (a stop ends it). */
static void throttle(struct ic_promote *pr, double t0, uint64_t done)
{
	double due;

	if (!pr->st.rate)
		return;
	due = t0 + (double)done / (double)pr->st.rate;
	while (!__atomic_load_n(&pr->stop, __ATOMIC_RELAXED) && ic_now() < due) {
		double left = due - ic_now();

		usleep(left > 0.1 ? 100000 : (useconds_t)(left * 1e6) + 1);
	}
}

static void *copier(void *arg)
{
	struct ic_promote *pr = arg;
	struct ic_cache_stream cs;
	char *buf = malloc(IC_PROMOTE_CHUNK);
	uint64_t off = 0;
	double t0 = ic_now();
	int ret = 0;

	memset(&cs, 0, sizeof(cs));
	if (!buf) {
		ic_promote_fail_copy(pr, "copy", -ENOMEM);
		return NULL;
	}
	while (off < pr->st.size && !__atomic_load_n(&pr->stop, __ATOMIC_RELAXED)) {
		size_t n = pr->st.size - off < IC_PROMOTE_CHUNK ? (size_t)(pr->st.size - off)
								: IC_PROMOTE_CHUNK;
		/* sp->io (a re-base's exclusion) before the range lock, as a guest write takes
		 * them: the other order deadlocks behind a waiting re-base */
		int slot;
		ssize_t r = 0;

		pthread_rwlock_rdlock(&pr->sp->io);
		slot = ic_range_lock(&pr->rl, off, off + n);

		/* in pieces: the overlay's lock is held while its base is read, and a guest
		 * write anywhere waits for it */
		for (size_t k = 0; k < n && r >= 0; k += IC_PROMOTE_PIECE) {
			size_t m = n - k < IC_PROMOTE_PIECE ? n - k : IC_PROMOTE_PIECE;

			r = ic_session_read_held(pr->sp, IC_DISK_RAW, &cs, buf + k, m, off + k);
			if (r >= 0 && (size_t)r != m)
				r = ic_fail(-EIO, "disk.raw: short read at %" PRIu64, off + k);
		}
		ret = r < 0 ? (int)r : dest_write(pr, buf, n, off);
		ic_range_unlock(&pr->rl, slot);
		pthread_rwlock_unlock(&pr->sp->io);
		/* writeback started as we go: the switch's flush (writes paused) stays short */
		if (!ret)
			(void)sync_file_range(pr->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
		if (ret) {
			ic_promote_fail_copy(pr, r < 0 ? "reading the disk" : "writing", ret);
			break;
		}
		off += n;
		__atomic_store_n(&pr->copied, off, __ATOMIC_RELAXED);
		throttle(pr, t0, off);
	}
	free(buf);
	while (!ret && off >= pr->st.size && !__atomic_load_n(&pr->stop, __ATOMIC_RELAXED) &&
	       ic_promote_phase(pr) == IC_PROMOTE_COPYING && do_switch(pr))
		sleep(1);
	return NULL;
}

/* ---- life ------------------------------------------------------------------------------ */

static void pr_free(struct ic_promote *pr)
{
	if (!pr)
		return;
	if (pr->fd >= 0)
		close(pr->fd);
	pthread_rwlock_destroy(&pr->sw);
	pthread_mutex_destroy(&pr->mu);
	ic_range_lock_destroy(&pr->rl);
	free(pr->dir);
	free(pr);
}

static struct ic_promote *pr_new(struct ic_session *s, struct ic_spoint *sp)
{
	struct ic_promote *pr = calloc(1, sizeof(*pr));

	if (!pr)
		return NULL;
	pr->dir = ic_path_join(s->o.overlay_dir, sp->name);
	if (!pr->dir) {
		free(pr);
		return NULL;
	}
	pr->s = s;
	pr->sp = sp;
	pr->fd = -1;
	pthread_rwlock_init(&pr->sw, NULL);
	pthread_mutex_init(&pr->mu, NULL);
	ic_range_lock_init(&pr->rl);
	return pr;
}

/* Pin sp and open its disk's overlay for writing (created if needed); its size. */
static int pin(struct ic_session *s, struct ic_spoint *sp, uint64_t *size)
{
	int ret;

	pthread_mutex_lock(&s->lock);
	ret = ic_session_size_file(s, sp, IC_DISK_RAW);
	if (!ret)
		ret = ic_session_open(s, sp, IC_DISK_RAW, true);
	pthread_mutex_unlock(&s->lock);
	if (!ret)
		*size = ic_session_size(sp, IC_DISK_RAW);
	return ret;
}

static int run(struct ic_promote *pr)
{
	int ret;

	__atomic_store_n(&pr->phase, pr->st.phase, __ATOMIC_RELEASE);
	__atomic_store_n(&pr->sp->promote, pr, __ATOMIC_RELEASE);
	if (pr->st.phase != IC_PROMOTE_COPYING)
		return 0;
	ret = -pthread_create(&pr->thr, NULL, copier, pr);
	if (ret)
		ic_promote_fail_copy(pr, "starting the copy", ic_fail(ret, "thread: %s", strerror(-ret)));
	pr->thr_started = ret == 0;
	return 0;
}

int ic_promote_start(struct ic_session *s, struct ic_spoint *sp, const char *dest,
		      uint64_t rate)
{
	struct ic_promote *pr, *old;
	struct stat sb;
	uint64_t size = 0;
	bool pinned = false;
	int ret;

	if (!s->o.overlay_dir)
		return ic_fail(-EROFS, "promote needs a writable mount (--overlay)");
	pthread_mutex_lock(&g_mu);
	old = __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE);
	if (old && ic_promote_phase(old) != IC_PROMOTE_FAILED) {
		ret = strcmp(old->st.dest, dest) ? ic_fail(-EBUSY, "'%s' is already promoted to %s",
							   sp->name, old->st.dest) : -EALREADY;
		pthread_mutex_unlock(&g_mu);
		return ret;
	}
	pr = pr_new(s, sp);
	ret = pr ? 0 : -ENOMEM;
	if (!ret && strlen(dest) > IC_PROMOTE_DEST_MAX)
		ret = ic_fail(-ENAMETOOLONG, "%s: path too long", dest);
	/* a failed promote already pinned the point: once is enough */
	if (!ret && !old) {
		ret = pin(s, sp, &size);
		pinned = !ret;
	} else if (!ret) {
		size = old->st.size;
	}
	if (!ret)
		ret = open_dest(dest, size, true, &pr->fd, &sb);
	if (!ret) {
		pr->regular = S_ISREG(sb.st_mode);
		pr->st = (struct ic_promote_state){ .phase = IC_PROMOTE_COPYING, .size = size,
						    .dev = (uint64_t)sb.st_dev, .ino = (uint64_t)sb.st_ino,
						    .rdev = (uint64_t)sb.st_rdev, .rate = rate };
		snprintf(pr->st.dest, sizeof(pr->st.dest), "%s", dest);
		ret = state_write(pr);
	}
	if (ret) {
		if (pinned)
			ic_session_close(s, sp, IC_DISK_RAW);
		pr_free(pr);
		pthread_mutex_unlock(&g_mu);
		return ret;
	}
	ic_session_log(s, LOG_INFO, "promote of '%s' to %s: copying %" PRIu64 " bytes", sp->name,
		       dest, size);
	/* a failed one stays allocated until the end: readers may still hold it */
	pr->prev = old;
	ret = run(pr);
	pthread_mutex_unlock(&g_mu);
	return ret;
}

/* The promote recorded in sp's state file, resumed. */
static void resume(struct ic_session *s, struct ic_spoint *sp)
{
	struct ic_promote *pr = pr_new(s, sp);
	struct stat sb;
	uint64_t size;
	int ret;

	if (!pr)
		return;
	ret = state_read(pr->dir, &pr->st);
	if (ret == -ENOENT) {
		pr_free(pr);
		return;
	}
	if (!ret) {
		__atomic_store_n(&sp->promote_pin, true, __ATOMIC_RELAXED);
		ret = pin(s, sp, &size);
		__atomic_store_n(&sp->promote_pin, false, __ATOMIC_RELAXED);
	}
	if (ret) {
		ic_session_log(s, LOG_ERR, "promote of '%s' not resumed: %s", sp->name,
			       ic_last_error(ret));
		pr_free(pr);
		return;
	}
	if (pr->st.phase == IC_PROMOTE_COPYING)
		pr->st.size = size;
	ret = open_dest(pr->st.dest, pr->st.size, false, &pr->fd, &sb);
	if (!ret && ((uint64_t)sb.st_dev != pr->st.dev || (uint64_t)sb.st_ino != pr->st.ino ||
		     (uint64_t)sb.st_rdev != pr->st.rdev)) {
		close(pr->fd);
		pr->fd = -1;
		ret = ic_fail(-ESTALE, "%s is no longer the file or device the promote wrote",
			      pr->st.dest);
	}
	pr->regular = !ret && S_ISREG(sb.st_mode);
	if (ret && pr->st.phase == IC_PROMOTE_SWITCHED) {
		/* the overlay is stale: serve nothing rather than an older disk */
		pr->phase = IC_PROMOTE_SWITCHED;
		set_err(pr, "reopening DEST after the switch (every I/O of the disk fails)", ret);
		__atomic_store_n(&sp->promote, pr, __ATOMIC_RELEASE);
		return;
	}
	if (ret) {
		pr->phase = IC_PROMOTE_COPYING;
		ic_promote_fail_copy(pr, "reopening DEST (the overlay stays the disk)", ret);
		__atomic_store_n(&sp->promote, pr, __ATOMIC_RELEASE);
		return;
	}
	ic_session_log(s, LOG_INFO, "promote of '%s' to %s resumed: %s", sp->name, pr->st.dest,
		       pr->st.phase == IC_PROMOTE_SWITCHED ? "served from it" : "copying again");
	run(pr);
}

void ic_promote_resume_all(struct ic_session *s)
{
	struct ic_spoint **todo;
	size_t n = 0;

	if (!s->o.overlay_dir)
		return;
	pthread_mutex_lock(&g_mu);
	pthread_mutex_lock(&s->lock);
	todo = calloc(s->npts + 1, sizeof(*todo));
	for (size_t i = 0; todo && i < s->npts; i++) {
		char *p;
		struct stat sb;

		if (asprintf(&p, "%s/%s/%s", s->o.overlay_dir, s->pts[i]->name, IC_PROMOTE_STATE) < 0)
			continue;
		if (lstat(p, &sb) == 0 && !s->pts[i]->promote)
			todo[n++] = s->pts[i];
		free(p);
	}
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < n; i++)
		resume(s, todo[i]);     /* each pinned once resumed: never freed under us */
	free(todo);
	pthread_mutex_unlock(&g_mu);
}

void ic_promote_stop_all(struct ic_session *s)
{
	pthread_mutex_lock(&g_mu);
	for (size_t i = 0; i < s->npts; i++) {
		struct ic_promote *pr = s->pts[i]->promote;

		s->pts[i]->promote = NULL;
		while (pr) {
			struct ic_promote *prev = pr->prev;

			__atomic_store_n(&pr->stop, true, __ATOMIC_RELAXED);
			if (pr->thr_started)
				pthread_join(pr->thr, NULL);
			pr_free(pr);
			pr = prev;
		}
	}
	pthread_mutex_unlock(&g_mu);
}
