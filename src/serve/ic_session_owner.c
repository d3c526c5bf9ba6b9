/* ic_session_owner.c: a served chain's side of the overlay hand-over (FORMAT.md 10.7).
 *
 *   claim    whoever takes a point directory's flock writes itself into DIR/POINT/owner;
 *            a newcomer opening for writing with take_over, finding the flock held, writes
 *            DIR/POINT/owner.request and waits (bounded) until the owner lets the lock go
 *   release  the session's watcher (ic_session_watch.c) looks for owner.request in every
 *            point directory this process holds (one fstatat each, every 200 ms): the
 *            owner then commits each overlay of the point and marks it released (writes
 *            fail with EROFS from then on), records the newcomer as the owner, removes the
 *            request and closes the directory, which drops the flock.  The newcomer's flock
 *            then succeeds.
 *   drop     a clean close removes the record when it still names this process
 *
 * The flock stays the only guarantee that there is one writer: a record or request, true or
 * planted, changes messages and whether this process lets go, never whether two write. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "ic_owner.h"
#include "ic_session.h"
#include "ic_util.h"

#define IC_OWNER_WAIT_DEFAULT 30u

static const char *server_of(const struct ic_session *s)
{
	return s->o.owner_server ? s->o.owner_server : "imgmount";
}

static char *point_dir(const struct ic_session *s, const struct ic_spoint *sp)
{
	return ic_path_join(s->o.overlay_dir, sp->name);
}

/* "imgmount (host ...) on ... since ..." or what stands in for an unreadable record. */
static void describe_owner(int fd, const char *dir, struct ic_owner_rec *r, int *rret,
			   char *buf, size_t len)
{
	*rret = ic_owner_read(fd, dir, IC_OWNER_RECORD, false, r);
	if (*rret == -ENOENT) {
		snprintf(buf, len, "an unknown process (no owner record)");
	} else if (*rret) {
		snprintf(buf, len, "an unknown process (%s)", ic_last_error(*rret));
	} else {
		ic_owner_describe(r, buf, len);
		if (ic_owner_alive(r) == IC_OWNER_GONE)
			snprintf(buf + strlen(buf), len - strlen(buf),
				 ", which is gone (the lock is held by another process)");
	}
}

/* Write this process into dir's record.  asked: the token of our request when we asked
 * (after a fork: our own token, whose record keeps its since). */
static int record_self(struct ic_session *s, struct ic_spoint *sp, int fd, const char *dir,
		       const char *asked)
{
	struct ic_owner_rec old, me;
	char desc[1400];
	int ret = ic_owner_read(fd, dir, IC_OWNER_RECORD, false, &old);
	uint64_t since = !ret && sp->ov_token[0] && !strcmp(old.token, sp->ov_token) ? old.since : 0;

	if (!ret && asked && !strcmp(old.token, asked)) {
		;   /* the owner named us: the normal hand-over */
	} else if (!ret && strcmp(old.token, sp->ov_token)) {
		ic_owner_describe(&old, desc, sizeof(desc));
		ic_session_log(s, LOG_NOTICE, "overlay %s: its previous owner %s left without releasing it (lock free): record replaced",
			       dir, desc);
	} else if (ret && ret != -ENOENT) {
		ic_session_log(s, LOG_WARNING, "%s: replaced", ic_last_error(ret));
	}
	ret = ic_owner_self(&me, server_of(s), s->o.owner_where);
	if (since)
		me.since = since;
	if (!ret)
		ret = ic_owner_write(fd, dir, IC_OWNER_RECORD, false, &me);
	if (ret) {
		/* the flock alone still keeps a second writer out */
		ic_session_log(s, LOG_WARNING, "overlay %s: cannot write the owner record: %s",
			       dir, ic_last_error(ret));
		sp->ov_token[0] = '\0';
		return 0;
	}
	memcpy(sp->ov_token, me.token, sizeof(sp->ov_token));
	return 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Remove dir's request if it is still the one with token. */
static void unrequest(int fd, const char *dir, const char *token)
{
	struct ic_owner_rec r;

	if (!ic_owner_read(fd, dir, IC_OWNER_REQUEST, true, &r) && !strcmp(r.token, token))
		unlinkat(fd, IC_OWNER_REQUEST, 0);
}

/* The flock is held elsewhere: refuse naming the owner, or ask it to release (take). */
static int take_over(struct ic_session *s, struct ic_spoint *sp, int fd, const char *dir,
		     bool take, char *token)
{
	unsigned wait = s->o.take_over_wait ? s->o.take_over_wait : IC_OWNER_WAIT_DEFAULT;
	struct ic_owner_rec owner, req;
	char desc[1400];
	double deadline;
	int rret, ret;

	describe_owner(fd, dir, &owner, &rret, desc, sizeof(desc));
	/* the kernel may retry an open that failed (FUSE's create, then open): do not ask
	 * and wait again at once */
	if (take && sp->ov_take_failed && ic_now() - sp->ov_take_failed < 2)
		return ic_fail(-EBUSY, "overlay %s is in use by another process: %s, which did not release it a moment ago",
			       dir, desc);
	if (!take)
		return ic_fail(-EBUSY, "overlay %s is in use by another process: %s, serving restore point '%s' writable%s",
			       dir, desc, sp->name, s->o.take_over ? "" :
			       "; --take-over (nbdkit: take-over=yes) asks it to release it");
	ret = ic_owner_self(&req, server_of(s), s->o.owner_where);
	req.wait = wait;
	if (!ret)
		ret = ic_owner_write(fd, dir, IC_OWNER_REQUEST, true, &req);
	if (ret)
		return ic_fail(ret, "overlay %s: cannot ask its owner to release it: %s", dir,
			       ic_last_error(ret));
	ic_session_log(s, LOG_NOTICE, "overlay %s: asking %s to release it (waiting up to %u s)",
		       dir, desc, wait);
	deadline = ic_now() + wait;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			ret = ic_fail(-errno, "%s: flock: %s", dir, strerror(errno));
			unrequest(fd, dir, req.token);
			return ret;
		}
		if (ic_now() > deadline) {
			unrequest(fd, dir, req.token);
			/* who holds it now, in case it changed hands meanwhile */
			describe_owner(fd, dir, &owner, &rret, desc, sizeof(desc));
			sp->ov_take_failed = ic_now();
			ret = ic_fail(-EBUSY, "overlay %s is in use by another process: %s, which did not release it within %u s (release request unanswered)",
				      dir, desc, wait);
			ic_session_log(s, LOG_ERR, "%s", ic_last_error(ret));
			return ret;
		}
		sleep_ms(50);
	}
	unrequest(fd, dir, req.token);
	ic_session_log(s, LOG_NOTICE, "overlay %s: released by %s", dir, desc);
	memcpy(token, req.token, 33);
	return 0;
}

int ic_session_dir_claim(struct ic_session *s, struct ic_spoint *sp, int fd, const char *dir,
			 bool take)
{
	char asked[33] = "";
	int ret = 0;

	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return ic_fail(-errno, "%s: flock: %s", dir, strerror(errno));
		ret = take_over(s, sp, fd, dir, take && s->o.take_over, asked);
	}
	if (!ret)
		ret = record_self(s, sp, fd, dir, asked[0] ? asked : NULL);
	return ret;
}

void ic_session_dir_drop(struct ic_session *s, struct ic_spoint *sp)
{
	struct ic_owner_rec r;
	char *dir;

	if (sp->ov_dir_fd < 0)
		return;
	dir = point_dir(s, sp);
	if (dir && sp->ov_token[0] &&
	    !ic_owner_read(sp->ov_dir_fd, dir, IC_OWNER_RECORD, false, &r) &&
	    !strcmp(r.token, sp->ov_token))
		unlinkat(sp->ov_dir_fd, IC_OWNER_RECORD, 0);
	free(dir);
	sp->ov_token[0] = '\0';
	close(sp->ov_dir_fd);       /* releases the point directory's flock */
	sp->ov_dir_fd = -1;
}

/* ---- the owner's side ------------------------------------------------------------------ */

/* A request seen in sp's directory: release to it, or drop it.  Under s->lock. */
static void answer(struct ic_session *s, struct ic_spoint *sp, const char *dir)
{
	struct ic_owner_rec req;
	char desc[1400];
	int ret = ic_owner_read(sp->ov_dir_fd, dir, IC_OWNER_REQUEST, true, &req);
	uint64_t now = (uint64_t)time(NULL);

	if (ret == -ENOENT)
		return;
	if (ret) {
		ic_session_log(s, LOG_WARNING, "%s: ignored and removed", ic_last_error(ret));
		unlinkat(sp->ov_dir_fd, IC_OWNER_REQUEST, 0);
		return;
	}
	ic_owner_describe(&req, desc, sizeof(desc));
	if (ic_owner_alive(&req) == IC_OWNER_GONE ||
	    req.since + req.wait + IC_OWNER_SKEW < now) {
		ic_session_log(s, LOG_WARNING, "overlay %s: release request of %s is left over (its sender is gone or gave up): ignored and removed",
			       dir, desc);
		unlinkat(sp->ov_dir_fd, IC_OWNER_REQUEST, 0);
		return;
	}
	if (__atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE)) {
		/* promoted (copying or switched): the overlay is not the disk of record, and the
		 * mirror or copier writes DEST; another server taking it over would make two
		 * writers of DEST or serve the stale overlay.  Refused: the asker gives up. */
		ic_session_log(s, LOG_WARNING, "overlay %s: %s asks for it: restore point '%s' is promoted (imgpromote): not released",
			       dir, desc, sp->name);
		unrequest(sp->ov_dir_fd, dir, req.token);
		return;
	}
	ic_session_log(s, LOG_NOTICE, "overlay %s: %s asks for it: flushing and releasing restore point '%s'",
		       dir, desc, sp->name);
	for (int k = 0; k < IC_SOV_N; k++) {
		ret = sp->ov[k] ? ic_overlay_release(sp->ov[k]) : 0;
		if (ret)
			ic_session_log(s, LOG_ERR, "overlay %s: flush before the release: %s", dir,
				       ic_last_error(ret));
	}
	__atomic_store_n(&sp->ov_released, true, __ATOMIC_RELAXED);   /* read by writers */
	req.since = now;
	ret = ic_owner_write(sp->ov_dir_fd, dir, IC_OWNER_RECORD, false, &req);
	if (ret)
		ic_session_log(s, LOG_WARNING, "overlay %s: cannot record the new owner: %s", dir,
			       ic_last_error(ret));
	unrequest(sp->ov_dir_fd, dir, req.token);
	sp->ov_token[0] = '\0';     /* the record is the newcomer's now */
	ic_session_dir_drop(s, sp);
	ic_session_log(s, LOG_NOTICE, "restore point '%s': overlay released to %s; served read-only from now on",
		       sp->name, desc);
}

void ic_session_owner_poll(struct ic_session *s)
{
	struct stat sb;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npts; i++) {
		struct ic_spoint *sp = s->pts[i];
		char *dir;

		if (sp->ov_dir_fd < 0 || sp->ov_released ||
		    fstatat(sp->ov_dir_fd, IC_OWNER_REQUEST, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		dir = point_dir(s, sp);
		if (dir)
			answer(s, sp, dir);
		free(dir);
	}
	pthread_mutex_unlock(&s->lock);
}

void ic_session_owner_adopt(struct ic_session *s)
{
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npts; i++) {
		struct ic_spoint *sp = s->pts[i];
		char *dir;

		if (sp->ov_dir_fd < 0 || sp->ov_released)
			continue;
		dir = point_dir(s, sp);
		if (dir)
			record_self(s, sp, sp->ov_dir_fd, dir, sp->ov_token);
		free(dir);
	}
	pthread_mutex_unlock(&s->lock);
}
