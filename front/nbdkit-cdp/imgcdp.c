/* imgcdp: an nbdkit filter that journals every write, zero and trim of the disk beneath
 * it into an imgchain chain's CDP journal (FORMAT.md section 15), encrypted under the
 * chain key, and acknowledges a flush (or FUA) only once the journal holds everything up
 * to it durably.  Every flush is a checkpoint with its time (`imgrestore --at`).
 *
 *   nbdkit --filter=imgcdp file /vm/web01.raw chain=/backups/web01 \
 *          passphrase-file=/etc/imgchain/web01.pass
 *
 * The only nbdkit code of the project's CDP; the journal is src/ops/ic_cdp*. */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "imgchain.h"
#include "ic_cdp.h"
#include "ic_pool.h"

static char *chain_dir, *pass_file;
static uint32_t block_size;
static int level = 1;            /* zstd: 1 costs half of 3's CPU (doc/PERFORMANCE.md) */
static struct ic_key *key;
static struct ic_cdp_writer *writer;
static bool started;
/* on-error=gap: journalling stopped at gap_since; every flush tries a new session */
static bool gap_policy, in_gap;
/* session-size=: a new session once the current one holds that much; keep-sessions= */
static uint64_t session_size;
/* a new session's capture failed: it has no checkpoint 0 and must get nothing more */
static bool broken;
static int keep_sessions;
/* keep-age=: sessions whose last checkpoint is that old are removed; session-age=: a new
 * session at the flush that finds the current one that old (seconds; 0: none) */
static int64_t keep_age, session_age;
static struct timespec session_t0;     /* when the current session's capture ended */
static struct timespec gap_since;
static uint8_t *blockbuf;
static uint8_t *stage;          /* 64 zero blocks (capture of a zero request) */
static int threads;
static unsigned raw_bits;       /* raw-entropy=: 1/1000 bit a byte; 0 the default, 9000 off */
/* one journal, in the order of the disk's writes: writes, zeroes, trims and flushes
 * are journalled one at a time (reads go on in parallel) */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void report(int err)
{
	nbdkit_error("imgcdp: %s", ic_last_error(err));
}

/* A duration: N seconds, or N followed by s, m, h or d. */
static int parse_duration(const char *k, const char *v, int64_t *out)
{
	char *end;
	unsigned long long n;
	int64_t mul = 1;

	errno = 0;
	n = strtoull(v, &end, 10);
	if (end != v && *end && !end[1]) {
		mul = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
		end += mul != 0;
	}
	if (end == v || *end || errno || *v == '-' || !n || n > (unsigned long long)INT64_MAX / 86400) {
		nbdkit_error("imgcdp: %s=%s: not a duration (N, Ns, Nm, Nh or Nd; at least 1 s)", k, v);
		return -1;
	}
	*out = (int64_t)n * mul;
	return 0;
}

static int imgcdp_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *k,
			 const char *v)
{
	if (!strcmp(k, "chain")) {
		free(chain_dir);
		chain_dir = nbdkit_realpath(v);
		return chain_dir ? 0 : -1;
	}
	if (!strcmp(k, "passphrase-file")) {
		free(pass_file);
		pass_file = nbdkit_realpath(v);
		return pass_file ? 0 : -1;
	}
	if (!strcmp(k, "block-size")) {
		uint64_t n;

		if (ic_parse_size(v, &n) || n > ICF_BLOCK_MAX) {
			nbdkit_error("imgcdp: block-size=%s: not a size", v);
			return -1;
		}
		block_size = (uint32_t)n;
		return 0;
	}
	if (!strcmp(k, "session-size")) {
		if (ic_parse_size(v, &session_size)) {
			nbdkit_error("imgcdp: session-size=%s: not a size", v);
			return -1;
		}
		return 0;
	}
	if (!strcmp(k, "keep-sessions"))
		return nbdkit_parse_int("keep-sessions", v, &keep_sessions) == -1 ||
		       keep_sessions < 0 ? -1 : 0;
	if (!strcmp(k, "keep-age"))
		return parse_duration(k, v, &keep_age);
	if (!strcmp(k, "session-age"))
		return parse_duration(k, v, &session_age);
	if (!strcmp(k, "on-error")) {
		if (strcmp(v, "fail") && strcmp(v, "gap")) {
			nbdkit_error("imgcdp: on-error=%s: must be fail or gap", v);
			return -1;
		}
		gap_policy = !strcmp(v, "gap");
		return 0;
	}
	if (!strcmp(k, "threads"))
		return nbdkit_parse_int("threads", v, &threads) == -1 || threads < 0 ? -1 : 0;
	if (!strcmp(k, "raw-entropy")) {
		char *end;
		double d = strtod(v, &end);

		if (!strcmp(v, "off")) {
			raw_bits = 9000;
		} else if (end == v || *end || !(d > 0 && d <= 8)) {
			nbdkit_error("imgcdp: raw-entropy=%s: bits a byte, above 0 and up to 8, or off",
				     v);
			return -1;
		} else {
			raw_bits = (unsigned)(d * 1000 + 0.5);
		}
		return 0;
	}
	if (!strcmp(k, "level")) {
		if (nbdkit_parse_int("level", v, &level) == -1)
			return -1;
		return 0;
	}
	return next(nxdata, k, v);
}

static int imgcdp_config_complete(nbdkit_next_config_complete *next, nbdkit_backend *nxdata)
{
	if (!chain_dir) {
		nbdkit_error("imgcdp: chain=DIR is required");
		return -1;
	}
	/* an age cap needs new sessions: the current one is never removed */
	if (keep_age && !session_age)
		session_age = keep_age;
	return next(nxdata);
}

#define imgcdp_config_help \
	"chain=DIR             (required) the imgchain chain whose journal gets the writes\n" \
	"passphrase-file=FILE  the chain's passphrase (else $IMGCHAIN_PASSPHRASE_FILE,\n" \
	"                      $IMGCHAIN_PASSPHRASE)\n" \
	"block-size=SIZE       a chain without images: its block size (default 64K)\n" \
	"level=N               zstd level (default 1; 0: 3; negative: not compressed)\n" \
	"threads=N             encoders of a large write (default: one per CPU)\n" \
	"raw-entropy=BITS|off  store blocks whose sampled byte entropy is at least BITS\n" \
	"                      uncompressed without trying zstd (default 7.2)\n" \
	"on-error=fail|gap     the journal cannot be written: fail the guest's writes\n" \
	"                      (default), or keep serving and start a new session later\n" \
	"session-size=SIZE     start a new session (a new capture) at the flush that finds\n" \
	"                      SIZE journalled since the capture (default: never)\n" \
	"keep-sessions=N       then remove the oldest sessions but N (default: keep all)\n" \
	"keep-age=DURATION     and the oldest whose last checkpoint is DURATION old (N, Ns,\n" \
	"                      Nm, Nh, Nd; default: no age cap)\n" \
	"session-age=DURATION  start a new session at the flush that finds the current one\n" \
	"                      DURATION old (default: keep-age's, else never)"

/* Unlock the key before serving: a wrong passphrase refuses to start. */
static int imgcdp_get_ready(int thread_model)
{
	struct ic_cdp_writer_opts o = { .chain_dir = chain_dir, .block_size = block_size,
					.level = level, .threads = (int)ic_thread_cap(threads, 16),
					.raw_bits = raw_bits };
	int ret;

	ic_progname = "imgcdp";
	ret = ic_key_unlock(chain_dir, pass_file, &key);
	if (!ret)       /* a key file older than the key holder saw is refused */
		ret = ic_state_check_key(chain_dir, key->chain_id, false);
	if (!ret)
		ret = ic_cdp_writer_new(&o, key, &writer);
	if (ret) {
		report(ret);
		return -1;
	}
	blockbuf = malloc(ic_cdp_block_size(writer));
	if (!blockbuf) {
		nbdkit_error("imgcdp: out of memory");
		return -1;
	}
	return 0;
}

static void imgcdp_unload(void)
{
	ic_cdp_writer_free(writer);
	ic_key_free(key);
	free(blockbuf);
	free(stage);
	free(chain_dir);
	free(pass_file);
}

static uint32_t blen(uint64_t size, uint64_t pos)
{
	uint64_t b = ic_cdp_block_size(writer), start = pos * b;

	return (uint32_t)(size - start < b ? size - start : b);
}

/* The journal failed (ret): fail the request, or (on-error=gap) note the gap and go on. */
static int journal_failed(int ret, int *err)
{
	report(ret);
	if (gap_policy) {
		if (!in_gap) {
			in_gap = true;
			clock_gettime(CLOCK_REALTIME, &gap_since);
			nbdkit_error("imgcdp: on-error=gap: journalling stopped; serving on, a new session will be tried at each flush");
		}
		return 0;
	}
	*err = EIO;
	return -1;
}

/* Deferred blocks at most (the flush that journals them reads and encodes them all):
 * a write that finds more journals them at once. */
#define DIRTY_MAX (32u << 20)

struct reader {
	nbdkit_next *next;
	int err;
};

static int read_block(void *arg, uint64_t pos, void *buf, uint32_t len)
{
	struct reader *r = arg;

	if (r->next->pread(r->next, buf, len, pos * ic_cdp_block_size(writer), 0, &r->err) == -1)
		return -EIO;
	return 0;
}

/* Journal the deferred blocks (before a checkpoint, or when too many). */
static int put_dirty(nbdkit_next *next, int *err)
{
	struct reader rd = { next, EIO };
	int ret;

	if (in_gap || !ic_cdp_dirty_count(writer))
		return 0;
	ret = ic_cdp_put_dirty(writer, read_block, &rd);
	if (ret == -EIO && !ic_cdp_failed(writer)) {
		*err = rd.err;          /* the disk beneath failed a read */
		return -1;
	}
	return ret ? journal_failed(ret, err) : 0;
}

/* Journal the whole of every block that [off, off + count) touches, as the disk beneath
 * now reads (buf: the bytes just written there, or NULL; zeroed: the range now reads as
 * zeros).  The blocks the request covers whole and whose content it gives (a write, a
 * zero) are encoded now by the writer's threads; the others (the edges of a write, a
 * trim) are deferred to the next flush, which reads them back from the disk beneath once
 * however often the guest wrote them, and encodes them all in parallel. */
static int capture(nbdkit_next *next, const void *buf, uint32_t count, uint64_t off, bool zeroed,
		   int *err)
{
	uint64_t b = ic_cdp_block_size(writer), size = (uint64_t)next->get_size(next);
	uint64_t first, end, wf, we, n;
	int ret = 0;

	if (!count || in_gap)
		return 0;
	first = off / b;
	end = (off + count - 1) / b;
	/* the whole blocks [wf, we): starting in the range, ending in it or at the disk's end */
	wf = (off + b - 1) / b;
	we = (off + count) / b;
	if (off + count == size)
		we = end + 1;
	if (!buf && !zeroed)
		wf = we = first;        /* a trim: what the disk now reads is its own */
	if (we <= wf)
		wf = we = end + 1;
	if (first < wf)
		ret = ic_cdp_mark_dirty(writer, first, (wf < end + 1 ? wf : end + 1) - first);
	if (!ret && we <= end)
		ret = ic_cdp_mark_dirty(writer, we, end + 1 - we);
	n = we - wf;
	if (!ret && n && buf) {
		ret = ic_cdp_put_range(writer, wf, n, (const uint8_t *)buf + (wf * b - off), false);
	} else if (!ret && n) {
		/* zeroed: zero frames, 64 blocks at a time */
		if (!stage && !(stage = calloc(64, b))) {
			*err = ENOMEM;
			return -1;
		}
		for (; !ret && wf < we; wf += 64)
			ret = ic_cdp_put_range(writer, wf, we - wf < 64 ? we - wf : 64, stage, false);
	}
	if (ret)
		return journal_failed(ret, err);
	if (ic_cdp_dirty_count(writer) * b > DIRTY_MAX)
		return put_dirty(next, err);
	return 0;
}

/* on-error=fail: once the journal failed, nothing more reaches the disk. */
static int refused(int *err)
{
	if (gap_policy || (!broken && !ic_cdp_failed(writer)))
		return 0;
	nbdkit_error("imgcdp: refused: the journal failed earlier (%s)", ic_cdp_path(writer));
	*err = EIO;
	return 1;
}

static int checkpoint(int *err)
{
	struct timespec t;
	int ret;

	if (in_gap)
		return 0;
	ret = ic_cdp_checkpoint(writer, &t);
	if (ret)
		return journal_failed(ret, err);
	nbdkit_debug("imgcdp: checkpoint at %lld.%09ld", (long long)t.tv_sec, t.tv_nsec);
	return 0;
}

/* A session's start: the disk as it is now (capture, interval 0), then checkpoint 0. */
static int capture_all(nbdkit_next *next, uint64_t size, int *err)
{
	struct timespec t;
	uint64_t pos, n;
	int ret;

	n = (size + ic_cdp_block_size(writer) - 1) / ic_cdp_block_size(writer);
	for (pos = 0; pos < n; pos++) {
		uint32_t len = blen(size, pos);

		if (next->pread(next, blockbuf, len, pos * ic_cdp_block_size(writer), 0, err) == -1)
			return -1;
		ret = ic_cdp_put_block(writer, pos, blockbuf, len, true);
		if (ret) {
			report(ret);
			return -1;
		}
	}
	ret = ic_cdp_checkpoint(writer, &t);
	if (ret) {
		report(ret);
		return -1;
	}
	session_t0 = t;
	nbdkit_debug("imgcdp: journal %s started", ic_cdp_path(writer));
	return 0;
}

/* After a session started: the oldest removed (keep-sessions=, keep-age=). */
static void prune(void)
{
	int ret;

	if (!keep_sessions && !keep_age)
		return;
	ret = ic_cdp_prune(writer, (unsigned)keep_sessions, keep_age);
	if (ret < 0)
		report(ret);
	else if (ret)
		nbdkit_debug("imgcdp: %d old sessions removed", ret);
}

/* Whether the current session is due for a new one (session-size=, session-age=). */
static bool session_full(void)
{
	struct timespec now;

	if (session_size && ic_cdp_session_bytes(writer) >= session_size)
		return true;
	clock_gettime(CLOCK_REALTIME, &now);
	return session_age && now.tv_sec - session_t0.tv_sec >= session_age;
}

/* The first connection starts the session. */
static int start(nbdkit_next *next, int *err)
{
	int64_t size = next->get_size(next);
	int ret;

	if (started)
		return 0;
	if (size <= 0) {
		nbdkit_error("imgcdp: the disk beneath has no size");
		return -1;
	}
	ret = ic_cdp_writer_start(writer, (uint64_t)size);
	if (ret) {
		report(ret);
		return -1;
	}
	if (capture_all(next, (uint64_t)size, err))
		return -1;
	started = true;
	prune();
	return 0;
}

/* At a flush: a new session, after a gap (on-error=gap) or when the current one is full
 * (session-size=), then the oldest removed (keep-sessions=). */
static void resume(nbdkit_next *next)
{
	int64_t size = next->get_size(next);
	int err = 0, ret;

	ret = ic_cdp_writer_restart(writer, (uint64_t)size, in_gap ? &gap_since : NULL);
	if (ret)
		report(ret);
	if (ret || capture_all(next, (uint64_t)size, &err)) {
		/* no checkpoint 0: nothing may be journalled into this session */
		if (gap_policy && !in_gap) {
			in_gap = true;
			clock_gettime(CLOCK_REALTIME, &gap_since);
		}
		broken = !gap_policy;
		return;
	}
	if (in_gap)
		nbdkit_error("imgcdp: journalling again after the gap: %s", ic_cdp_path(writer));
	in_gap = false;
	prune();
}

static int imgcdp_prepare(nbdkit_next *next, void *handle, int readonly)
{
	int err = 0, r;

	pthread_mutex_lock(&lock);
	r = start(next, &err);
	pthread_mutex_unlock(&lock);
	return r;
}

struct ckpt_job {
	int r, err;
};

static void *ckpt_thread(void *arg)
{
	struct ckpt_job *j = arg;

	j->r = checkpoint(&j->err);
	return NULL;
}

/* A flush: the disk's and the journal's checkpoint at once (two fdatasyncs of different
 * files overlap); acknowledged after both.  The journal holds every block itself, so a
 * checkpoint written while the disk's flush failed still restores what was written. */
static int do_flush(nbdkit_next *next, int *err)
{
	struct ckpt_job j = { 0, 0 };
	pthread_t t;
	int r = 0;

	if (in_gap) {
		r = next->can_flush(next) == 1 ? next->flush(next, 0, err) : 0;
		if (r != -1)
			resume(next);
		return r;
	}
	if (put_dirty(next, err))
		return -1;
	if (in_gap)             /* on-error=gap: the journal just failed */
		return next->can_flush(next) == 1 ? next->flush(next, 0, err) : 0;
	if (next->can_flush(next) != 1)
		return checkpoint(err);
	if (pthread_create(&t, NULL, ckpt_thread, &j)) {
		j.r = checkpoint(&j.err);
		r = next->flush(next, 0, err);
	} else {
		r = next->flush(next, 0, err);
		pthread_join(t, NULL);
	}
	if (j.r == -1) {
		*err = j.err;
		return -1;
	}
	/* rotation: a new session, the disk as it is now; a failure there is the journal's */
	if (r != -1 && !in_gap && session_full()) {
		resume(next);
		if (broken) {
			*err = EIO;
			return -1;
		}
	}
	return r;
}

enum change { WRITE, ZERO, TRIM };

/* A write, zero or trim: forwarded (FUA stripped), then its blocks journalled as the disk
 * beneath now reads, then with FUA a flush of both. */
static int change(nbdkit_next *next, enum change op, const void *buf, uint32_t count,
		  uint64_t off, uint32_t flags, int *err)
{
	uint32_t f = flags & ~NBDKIT_FLAG_FUA;
	int r;

	pthread_mutex_lock(&lock);
	r = refused(err) ? -1 : 0;
	if (r != -1)
		r = op == WRITE ? next->pwrite(next, buf, count, off, f, err)
		  : op == ZERO ? next->zero(next, count, off, f, err)
			       : next->trim(next, count, off, f, err);
	if (r != -1)
		r = capture(next, buf, count, off, op == ZERO, err);
	if (r != -1 && (flags & NBDKIT_FLAG_FUA))
		r = do_flush(next, err);
	pthread_mutex_unlock(&lock);
	return r;
}

static int imgcdp_pwrite(nbdkit_next *next, void *handle, const void *buf, uint32_t count,
			 uint64_t off, uint32_t flags, int *err)
{
	return change(next, WRITE, buf, count, off, flags, err);
}

static int imgcdp_zero(nbdkit_next *next, void *handle, uint32_t count, uint64_t off,
		       uint32_t flags, int *err)
{
	return change(next, ZERO, NULL, count, off, flags, err);
}

static int imgcdp_trim(nbdkit_next *next, void *handle, uint32_t count, uint64_t off,
		       uint32_t flags, int *err)
{
	return change(next, TRIM, NULL, count, off, flags, err);
}

static int imgcdp_flush(nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
	int r;

	pthread_mutex_lock(&lock);
	r = refused(err) ? -1 : do_flush(next, err);
	pthread_mutex_unlock(&lock);
	return r;
}

/* Flush and FUA are always offered: the journal makes them mean something even when
 * the disk beneath has no flush of its own. */
static int imgcdp_can_flush(nbdkit_next *next, void *handle)
{
	return 1;
}

static int imgcdp_can_fua(nbdkit_next *next, void *handle)
{
	return NBDKIT_FUA_NATIVE;
}

/* The disk must not change under the journal other than through this filter. */
static int imgcdp_can_cache(nbdkit_next *next, void *handle)
{
	return NBDKIT_CACHE_NONE;
}

static int imgcdp_can_fast_zero(nbdkit_next *next, void *handle)
{
	return 0;
}

static struct nbdkit_filter filter = {
	.name = "imgcdp",
	.longname = "imgchain continuous data protection filter",
	.config = imgcdp_config,
	.config_complete = imgcdp_config_complete,
	.config_help = imgcdp_config_help,
	.get_ready = imgcdp_get_ready,
	.unload = imgcdp_unload,
	.prepare = imgcdp_prepare,
	.can_flush = imgcdp_can_flush,
	.can_fua = imgcdp_can_fua,
	.can_cache = imgcdp_can_cache,
	.can_fast_zero = imgcdp_can_fast_zero,
	.pwrite = imgcdp_pwrite,
	.zero = imgcdp_zero,
	.trim = imgcdp_trim,
	.flush = imgcdp_flush,
};

NBDKIT_REGISTER_FILTER(filter)
