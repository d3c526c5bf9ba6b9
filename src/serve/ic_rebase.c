/* ic_rebase.c: re-basing busy points onto the chain's rewritten images (see ic_rebase.h;
 * FORMAT.md 10.8): the request's reader, the watcher thread, the swap. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_array.h"
#include "ic_lock.h"
#include "ic_rebase.h"
#include "ic_session.h"
#include "ic_util.h"

#define REQ_MAX (64 << 10)          /* a request is at most this long (FORMAT.md 10.8) */
/* the request file is looked at every tick of the session's watcher (IC_WATCH_TICK_MS), and
 * the chain directory every SCAN_TICKS ticks */
#define SCAN_TICKS 10

struct req_point {
	uint32_t seq;
	uint8_t seal[ICF_SEAL_LEN];
};

struct ic_rebase {
	struct ic_session *s;
	unsigned tick;              /* ticks of the session's watcher */
	struct stat last;           /* the request last acted on */
	IC_ARRAY(struct req_point) req;
};

void ic_rebase_io_init(pthread_rwlock_t *io)
{
	pthread_rwlockattr_t a;

	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(io, &a);
	pthread_rwlockattr_destroy(&a);
}

/* ---- the swap ---------------------------------------------------------------------- */

static bool same_point(const struct ic_point *a, const struct ic_point *b)
{
	const struct icf_slot *x = &a->img->slot, *y = &b->img->slot;

	return x->seq == y->seq && x->disk_size == y->disk_size &&
	       !memcmp(x->seal, y->seal, ICF_SEAL_LEN) && !strcmp(x->name, y->name);
}

static bool same_image(const struct ic_image *a, const struct ic_image *b)
{
	struct stat x, y;

	if (a == b)
		return true;
	if (fstat(a->fd, &x) < 0 || fstat(b->fd, &y) < 0)
		return false;
	return x.st_dev == y.st_dev && x.st_ino == y.st_ino &&
	       a->slot.generation == b->slot.generation && a->slot.seq == b->slot.seq;
}

/* Does p (the current scan) read sp's point through other images than sp does: its own
 * file or slot replaced, or an image on its path (a merge of its ancestors)? */
static bool moved(const struct ic_spoint *sp, const struct ic_point *p)
{
	const struct ic_point *q = sp->pt;

	for (; p && q; p = p->parent, q = q->parent)
		if (!same_image(p->img, q->img))
			return true;
	return p || q;
}

/* Does scan g hold an image open that a merge removed since (no name left)?  Then a
 * point still read through g keeps that space allocated. */
static bool holds_removed(const struct ic_sgen *g)
{
	struct stat sb;

	for (size_t i = 0; i < g->chain->npoints; i++)
		if (fstat(g->chain->points[i].img->fd, &sb) == 0 && sb.st_nlink == 0)
			return true;
	return false;
}

int ic_rebase_point(struct ic_session *s, struct ic_spoint *sp)
{
	struct ic_sgen *g, *old_gen;
	struct ic_point *p, *old_pt;
	struct ic_disk_info info;
	struct ic_disk *nd = NULL, *old_disk;
	struct ic_view *v = NULL, *old_view;
	struct stat sb;
	double t0 = ic_now(), t1, t2;
	int ret;

	pthread_mutex_lock(&s->lock);
	g = s->gens;
	p = g ? ic_chain_find(g->chain, sp->name) : NULL;
	if (!p || p->broken || !same_point(p, sp->pt)) {
		pthread_mutex_unlock(&s->lock);
		ic_session_log(s, LOG_WARNING, "restore point '%s': no point with its seal in the chain now: not re-based, its old images stay in use",
			       sp->name);
		return -ENOENT;
	}
	if (p == sp->pt) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	g->refs++;          /* p stays valid */
	sp->handles++;      /* sp stays */
	pthread_mutex_unlock(&s->lock);

	ic_disk_info_from_point(g->chain, p, &info);
	ret = ic_disk_new(&info, &nd);
	/* 1. the new view, built beside the old one: the guest's requests go on */
	pthread_mutex_lock(&sp->mu);
	if (!ret && sp->view) {
		ret = ic_view_open_nomap(g->chain, p, &v);
		if (!ret)   /* the storage is not trusted: the new images must carry the seal */
			ret = ic_view_check_seal(v, s->key);
		if (!ret)
			ret = ic_view_build_map(v);
		if (!ret)
			ret = ic_disk_attach(nd, s->cache, v);
	}
	if (ret) {
		pthread_mutex_unlock(&sp->mu);
		ic_session_log(s, LOG_ERR, "restore point '%s': re-base: %s; its old images stay in use",
			       sp->name, ic_last_error(ret));
		ic_disk_free(nd);
		ic_view_free(v);
		pthread_mutex_lock(&s->lock);
		sp->handles--;
		ic_session_gen_put(s, g);
		pthread_mutex_unlock(&s->lock);
		return ret;
	}
	if (fstat(p->img->fd, &sb) < 0)
		memset(&sb, 0, sizeof(sb));
	/* 2. the requests in flight finish on the old images; new ones wait */
	t1 = ic_now();
	pthread_rwlock_wrlock(&sp->io);
	pthread_mutex_lock(&s->lock);
	/* 3. the swap */
	old_disk = sp->disk;
	old_view = sp->view;
	old_gen = sp->gen;
	old_pt = sp->pt;
	sp->disk = nd;
	if (old_view)
		sp->view = v;
	sp->gen = g;        /* the reference taken above */
	sp->pt = p;
	sp->dev = sb.st_dev;
	sp->ino = sb.st_ino;
	sp->slot_gen = p->img->slot.generation;
	sp->seal_ok = old_view != NULL;     /* else checked by the next view_get */
	if (sp->ov_locked) {
		/* release first: the new image may be the same file (a slot switched) */
		ic_lock_release(old_pt->img->fd, IC_LOCK_OVERLAY);
		if (ic_lock_hold(p->img->fd, IC_LOCK_OVERLAY))
			sp->ov_locked = false;
	}
	pthread_mutex_unlock(&s->lock);
	pthread_rwlock_unlock(&sp->io);
	t2 = ic_now();
	pthread_mutex_unlock(&sp->mu);
	/* 4. nobody can reach the old view and disk any more */
	ic_disk_free(old_disk);
	ic_view_free(old_view);
	pthread_mutex_lock(&s->lock);
	sp->handles--;
	ic_session_gen_put(s, old_gen);     /* also takes the new images' locks */
	pthread_mutex_unlock(&s->lock);
	ic_session_log(s, LOG_INFO, "restore point '%s': re-based onto %s (same seal); the old images released (new view %.3f s, requests held %.3f ms)",
		       sp->name, p->img->path, t1 - t0, (t2 - t1) * 1e3);
	return 0;
}

/* ---- the request ------------------------------------------------------------------- */

/* Parse the request (untrusted bytes: a damaged one is ignored, logged). */
static int parse_req(struct ic_rebase *rb, char *buf, size_t len)
{
	char *line, *save = NULL;
	bool first = true;

	rb->req.n = 0;
	if (memchr(buf, '\0', len))
		return -EINVAL;
	buf[len] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct req_point rp;
		unsigned seq;
		char hex[2 * ICF_SEAL_LEN + 2];
		int n = 0;

		if (first) {
			if (strcmp(line, "imgchain-rebase 1"))
				return -EINVAL;
			first = false;
			continue;
		}
		/* "stale": a point an earlier server did not re-base onto; asked again */
		if (strncmp(line, "point ", 6) && strncmp(line, "stale ", 6))
			return -EINVAL;
		if (sscanf(line + 6, "%u %65s%n", &seq, hex, &n) != 2 || line[6 + n] ||
		    strlen(hex) != 2 * ICF_SEAL_LEN)
			return -EINVAL;
		rp.seq = seq;
		if (ic_hex_decode(hex, ICF_SEAL_LEN, rp.seal))
			return -EINVAL;
		if (ic_array_push(&rb->req, rp))
			return -ENOMEM;
	}
	return first ? -EINVAL : 0;
}

/* A new request?  Read it into rb->req.  1 when there is one to act on. */
static int read_req(struct ic_rebase *rb)
{
	const char *dir = rb->s->o.chain_dir;
	char *buf;
	struct stat sb;
	ssize_t n;
	int fd, ret;

	ret = ic_open_regular(AT_FDCWD, dir, IC_REBASE_FILE, 0, 0, &fd);
	if (ret)
		return 0;
	if (fstat(fd, &sb) < 0 ||
	    (sb.st_ino == rb->last.st_ino && sb.st_dev == rb->last.st_dev &&
	     sb.st_mtim.tv_sec == rb->last.st_mtim.tv_sec &&
	     sb.st_mtim.tv_nsec == rb->last.st_mtim.tv_nsec && sb.st_size == rb->last.st_size)) {
		close(fd);
		return 0;
	}
	rb->last = sb;
	buf = malloc(REQ_MAX + 1);
	n = buf ? pread(fd, buf, REQ_MAX, 0) : -1;
	close(fd);
	ret = n < 0 || n >= REQ_MAX ? -EINVAL : parse_req(rb, buf, (size_t)n);
	free(buf);
	if (ret) {
		ic_session_log(rb->s, LOG_WARNING, "%s/%s: not a re-base request: ignored", dir,
			       IC_REBASE_FILE);
		return 0;
	}
	return 1;
}

static bool asked(const struct ic_rebase *rb, const struct ic_point *p)
{
	for (size_t i = 0; i < rb->req.n; i++)
		if (rb->req.v[i].seq == p->img->slot.seq &&
		    !memcmp(rb->req.v[i].seal, p->img->slot.seal, ICF_SEAL_LEN))
			return true;
	return false;
}

/* Re-base every busy point served with an overlay that the request names, whose point
 * moved to other images, or whose scan holds a removed image open.  The names are collected first; each point is looked
 * up again before its re-base (the table may change meanwhile). */
static void rebase_busy(struct ic_rebase *rb, bool use_req)
{
	struct ic_session *s = rb->s;
	IC_ARRAY(char *) names = { 0 };

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npts && s->gens; i++) {
		struct ic_spoint *q = s->pts[i];
		struct ic_point *p;
		char *name;

		if (!q->handles || q->ov_dir_fd < 0 || q->gone)
			continue;
		p = ic_chain_find(s->gens->chain, q->name);
		if (!p || p == q->pt || !same_point(p, q->pt) ||
		    !((use_req && asked(rb, q->pt)) || moved(q, p) || holds_removed(q->gen)))
			continue;
		name = strdup(q->name);
		if (!name || ic_array_push(&names, name)) {
			free(name);
			ic_session_log(s, LOG_ERR, "re-base: %s", strerror(ENOMEM));
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < names.n; i++) {
		struct ic_spoint *sp;

		/* pinned (handles) from here to the end of its re-base */
		pthread_mutex_lock(&s->lock);
		sp = ic_session_find(s, names.v[i], strlen(names.v[i]));
		if (sp && !sp->handles)
			sp = NULL;
		if (sp)
			sp->handles++;
		pthread_mutex_unlock(&s->lock);
		if (sp) {
			ic_rebase_point(s, sp);
			pthread_mutex_lock(&s->lock);
			sp->handles--;
			pthread_mutex_unlock(&s->lock);
		}
		free(names.v[i]);
	}
	ic_array_free(&names);
}

void ic_rebase_tick(struct ic_session *s)
{
	struct ic_rebase *rb = s->rebase;
	int req;

	if (!rb)
		return;
	req = read_req(rb);
	if (req || ++rb->tick % SCAN_TICKS == 0) {
		/* a request means the chain changed: rescan even if the directory's times did
		 * not move (a coarse clock) */
		ic_session_refresh(s, req > 0);
		rebase_busy(rb, req > 0);
	}
}

int ic_rebase_init(struct ic_session *s)
{
	struct ic_rebase *rb = calloc(1, sizeof(*rb));
	char *path;

	if (!rb)
		return ic_fail(-ENOMEM, "re-base watcher: %s", strerror(ENOMEM));
	rb->s = s;
	/* a request left by an earlier run is not acted on (the directory scan still
	 * re-bases a point whose images moved) */
	path = ic_path_join(s->o.chain_dir, IC_REBASE_FILE);
	if (!path || lstat(path, &rb->last) < 0)
		memset(&rb->last, 0, sizeof(rb->last));
	free(path);
	s->rebase = rb;
	return 0;
}

void ic_rebase_fini(struct ic_session *s)
{
	struct ic_rebase *rb = s->rebase;

	if (!rb)
		return;
	ic_array_free(&rb->req);
	free(rb);
	s->rebase = NULL;
}
