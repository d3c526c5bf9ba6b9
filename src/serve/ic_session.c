/* ic_session.c: a served chain: its life, the restore point table kept in step with the
 * chain directory (scans, generations, identity of each point, image locks).  Views,
 * overlays and the data path are ic_session_io.c. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ic_array.h"
#include "ic_lock.h"
#include "ic_rebase.h"
#include "ic_session.h"
#include "ic_session_cdp.h"
#include "ic_util.h"

void ic_session_log(struct ic_session *s, int prio, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!s->o.log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->o.log(s->o.log_arg, prio, msg);
}

/* ---- generations, locks ---------------------------------------------------------- */

/* POSIX record locks vanish when ANY descriptor of the file is closed by this process,
 * so after closing images (a scan dropped, a damaged file skipped) take them all again. */
static void relock(struct ic_session *s, const struct ic_image *img, int which)
{
	int ret = ic_lock_hold(img->fd, which);

	/* taken at open, so only a lock someone else took since (or a lost NFS lock) */
	if (ret)
		ic_session_log(s, LOG_WARNING, "%s: cannot take the %s lock again: %s", img->path,
			       which == IC_LOCK_READER ? "reader" : "overlay", strerror(-ret));
}

static void relock_all(struct ic_session *s)
{
	for (struct ic_sgen *g = s->gens; g; g = g->next)
		for (size_t i = 0; i < g->chain->npoints; i++)
			relock(s, g->chain->points[i].img, IC_LOCK_READER);
	for (size_t i = 0; i < s->npts; i++)
		if (s->pts[i]->ov_locked)
			relock(s, s->pts[i]->pt->img, IC_LOCK_OVERLAY);
}

static void gen_unref(struct ic_session *s, struct ic_sgen *g)
{
	if (--g->refs > 0)
		return;
	for (struct ic_sgen **pp = &s->gens; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	/* closing its images dropped our locks on the files other scans still serve:
	 * every caller ends with relock_all() */
	ic_chain_free(g->chain);
	free(g);
}

void ic_session_gen_put(struct ic_session *s, struct ic_sgen *g)
{
	gen_unref(s, g);
	relock_all(s);
}

/* ---- points ------------------------------------------------------------------------ */

static int cmp_sp(const void *a, const void *b)
{
	return strcmp((*(struct ic_spoint *const *)a)->name, (*(struct ic_spoint *const *)b)->name);
}

/* Index of the point called name[len] among the first n of the table (sorted), or -1. */
static ssize_t find_in(struct ic_session *s, size_t n, const char *name, size_t len)
{
	size_t lo = 0, hi = n;

	if (len > ICF_NAME_MAX)
		return -1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(s->pts[mid]->name, name, len);

		if (!c && s->pts[mid]->name[len])
			c = 1;
		if (!c)
			return (ssize_t)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

struct ic_spoint *ic_session_find(struct ic_session *s, const char *name, size_t len)
{
	ssize_t i = find_in(s, s->npts, name, len);

	return i < 0 ? NULL : s->pts[i];
}

static void sp_close_overlays(struct ic_session *s, struct ic_spoint *sp)
{
	for (int k = 0; k < IC_SOV_N; k++) {
		ic_overlay_close(sp->ov[k]);
		__atomic_store_n(&sp->ov[k], NULL, __ATOMIC_RELAXED);    /* read by ic_session_ov_load() */
		sp->ov_probed[k] = false;
		sp->ov_refused[k] = false;
	}
	/* its image may stay open (a scan other points use): say at once that it is no
	 * longer served writable (what a re-base request waits for, FORMAT.md 10.8) */
	if (sp->ov_locked && sp->pt)
		ic_lock_release(sp->pt->img->fd, IC_LOCK_OVERLAY);
	sp->ov_locked = false;
	sp->ov_released = false;
	ic_session_dir_drop(s, sp);     /* releases the point directory's flock */
}

/* Give sp the identity of point p of generation g (sp idle).  Under s->lock. */
static int sp_set_identity(struct ic_session *s, struct ic_spoint *sp, struct ic_sgen *g,
			   struct ic_point *p)
{
	struct ic_disk_info info;
	struct ic_disk *disk;
	struct stat sb;
	int ret;

	ic_disk_info_from_point(g->chain, p, &info);
	ret = ic_disk_new(&info, &disk);
	if (ret)
		return ret;
	if (fstat(p->img->fd, &sb) < 0)
		memset(&sb, 0, sizeof(sb));
	sp_close_overlays(s, sp);
	ic_disk_free(sp->disk);
	sp->disk = disk;
	if (sp->gen)
		gen_unref(s, sp->gen);
	g->refs++;
	sp->gen = g;
	sp->pt = p;
	sp->dev = sb.st_dev;
	sp->ino = sb.st_ino;
	sp->slot_gen = p->img->slot.generation;
	sp->seal_ok = false;
	sp->gone = false;
	return 0;
}

static void point_free(struct ic_session *s, struct ic_spoint *sp)
{
	sp_close_overlays(s, sp);
	ic_disk_free(sp->disk);
	ic_view_free(sp->view);
	pthread_mutex_destroy(&sp->mu);
	pthread_rwlock_destroy(&sp->io);
	if (sp->gen)
		gen_unref(s, sp->gen);
	free(sp);
}

static bool same_identity(const struct ic_spoint *sp, const struct ic_point *p)
{
	struct stat sb;

	if (!sp->gen || sp->pt->seq != p->seq || sp->slot_gen != p->img->slot.generation)
		return false;
	if (fstat(p->img->fd, &sb) < 0)
		return false;
	return (uint64_t)sb.st_dev == sp->dev && (uint64_t)sb.st_ino == sp->ino;
}

/* NULL (logged; the next refresh tries again) when the point cannot be served. */
static struct ic_spoint *sp_new(struct ic_session *s, struct ic_sgen *g, struct ic_point *p)
{
	struct ic_spoint *sp = calloc(1, sizeof(*sp));
	int ret;

	if (!sp) {
		ic_session_log(s, LOG_ERR, "restore point '%s': %s", ic_point_name(p), strerror(ENOMEM));
		s->force_rescan = true;
		return NULL;
	}
	snprintf(sp->name, sizeof(sp->name), "%s", ic_point_name(p));
	sp->ov_dir_fd = -1;
	pthread_mutex_init(&sp->mu, NULL);
	ic_rebase_io_init(&sp->io);
	ret = sp_set_identity(s, sp, g, p);
	if (ret) {
		ic_session_log(s, LOG_ERR, "restore point '%s': %s", sp->name, ic_last_error(ret));
		pthread_mutex_destroy(&sp->mu);
		pthread_rwlock_destroy(&sp->io);
		free(sp);
		return NULL;
	}
	return sp;
}

/* Fold point p of the new scan g into the existing entry sp (same name). */
static void sp_update(struct ic_session *s, struct ic_spoint *sp, struct ic_sgen *g,
		      struct ic_point *p)
{
	if (same_identity(sp, p)) {
		sp->gone = false;
		/* idle: onto the new scan, so that an old one is let go with the images only
		 * it still holds open (removed by a merge: their space is freed) */
		if (!sp->handles && sp->gen != g) {
			g->refs++;
			gen_unref(s, sp->gen);      /* the caller ends with relock_all() */
			sp->gen = g;
			sp->pt = p;
		}
		return;
	}
	/* A new image for this name (consolidation rewrote it): swap when nothing is open. */
	if (sp->handles) {
		s->force_rescan = true;
		return;
	}
	int ret = sp_set_identity(s, sp, g, p);

	if (ret)
		ic_session_log(s, LOG_ERR, "restore point '%s': %s", sp->name, ic_last_error(ret));
}

static void set_latest(struct ic_session *s, const struct ic_chain *c)
{
	const struct ic_point *p = ic_chain_latest(c);

	s->latest[0] = '\0';
	if (p) {
		snprintf(s->latest, sizeof(s->latest), "%s", ic_point_name(p));
		s->latest_time.tv_sec = p->img->slot.created;
	}
}

/* Merge the new scan g into the table.  Under s->lock.  -ENOMEM: nothing changed. */
static int merge_scan(struct ic_session *s, struct ic_sgen *g)
{
	struct ic_chain *c = g->chain;
	size_t old_n = s->npts, j = 0;
	bool *seen = calloc(old_n + 1, sizeof(*seen));

	/* room for every point of the scan: adding one below cannot fail */
	if (!seen || ic_array_grow(&s->pts, &s->pts_cap, old_n + c->npoints, sizeof(*s->pts))) {
		free(seen);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_point *p = &c->points[i];
		const char *name = ic_point_name(p);
		ssize_t k;

		if (p->broken) {
			ic_session_log(s, LOG_WARNING, "restore point '%s' not shown: an ancestor is missing or damaged",
				  name);
			continue;
		}
		if (ic_chain_find(c, name) != p)
			continue;   /* a name used twice: the newest point has it */
		k = find_in(s, old_n, name, strlen(name));
		if (k >= 0) {
			seen[k] = true;
			sp_update(s, s->pts[k], g, p);
		} else {
			struct ic_spoint *sp = sp_new(s, g, p);

			if (sp)
				s->pts[s->npts++] = sp;
		}
	}
	/* points that left the chain: freed when idle, hidden while busy */
	for (size_t k = 0; k < s->npts; k++) {
		struct ic_spoint *sp = s->pts[k];

		if (k < old_n && !seen[k]) {
			if (!sp->handles) {
				point_free(s, sp);
				continue;
			}
			sp->gone = true;
			s->force_rescan = true;
		}
		s->pts[j++] = sp;
	}
	s->npts = j;
	free(seen);
	qsort(s->pts, s->npts, sizeof(*s->pts), cmp_sp);
	set_latest(s, c);
	return 0;
}

static bool dir_changed(struct ic_session *s, const struct stat *sb)
{
	return sb->st_mtim.tv_sec != s->dir_mtime.tv_sec ||
	       sb->st_mtim.tv_nsec != s->dir_mtime.tv_nsec ||
	       sb->st_ctim.tv_sec != s->dir_ctime.tv_sec ||
	       sb->st_ctim.tv_nsec != s->dir_ctime.tv_nsec;
}

/* Rescan the chain directory when it changed (a backup or consolidation renamed
 * files in or out); cheap otherwise (one stat). */
int ic_session_refresh(struct ic_session *s, bool force)
{
	struct ic_chain *c;
	struct ic_sgen *g;
	struct stat sb;
	int ret;

	if (stat(s->o.chain_dir, &sb) < 0)
		return -errno;
	pthread_mutex_lock(&s->lock);
	force |= s->force_rescan;
	if (!force && !dir_changed(s, &sb)) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&s->refresh_mu);
	ret = ic_chain_open(s->o.chain_dir, &c);
	if (ret) {
		pthread_mutex_unlock(&s->refresh_mu);
		ic_session_log(s, LOG_ERR, "rescan: %s", ic_last_error(ret));
		return ret;
	}
	if (c->have_images && s->gens && s->gens->chain->have_images &&
	    memcmp(c->chain_id, s->gens->chain->chain_id, ICF_ID_LEN)) {
		ic_session_log(s, LOG_ERR, "%s: the chain was replaced by another one; keeping the old view",
			  s->o.chain_dir);
		ic_chain_free(c);
		pthread_mutex_lock(&s->lock);
		relock_all(s);
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->refresh_mu);
		return -ESTALE;
	}
	for (size_t i = 0; i < c->nbad; i++)
		ic_session_log(s, LOG_WARNING, "skipping %s", c->bad[i].why);
	g = calloc(1, sizeof(*g));
	if (!g) {
		ic_chain_free(c);
		pthread_mutex_lock(&s->lock);
		relock_all(s);    /* closing c's images dropped locks the table still needs */
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->refresh_mu);
		ic_session_log(s, LOG_ERR, "rescan: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	g->chain = c;
	g->refs = 1;
	pthread_mutex_lock(&s->lock);
	s->force_rescan = false;
	s->dir_mtime = sb.st_mtim;
	s->dir_ctime = sb.st_ctim;
	g->next = s->gens;
	s->gens = g;
	ret = merge_scan(s, g);
	if (ret) {
		gen_unref(s, g);           /* the table still serves the previous scan */
		ic_session_log(s, LOG_ERR, "rescan: %s", strerror(ENOMEM));
	} else if (g->next) {
		gen_unref(s, g->next);     /* no longer current */
	}
	relock_all(s);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->refresh_mu);
	return ret;
}

/* ---- life ---------------------------------------------------------------------------- */

static void on_cache_error(void *arg, int err, const char *msg)
{
	(void)err;
	ic_session_log(arg, LOG_ERR, "%s", msg);
}

int ic_session_new(const struct ic_session_opts *o, const struct ic_key *key,
		   struct ic_session **out)
{
	struct ic_session *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->key = key;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->refresh_mu, NULL);
	if (o->overlay_dir && mkdir(o->overlay_dir, 0700) < 0 && errno != EEXIST) {
		ret = ic_fail(-errno, "%s: %s", o->overlay_dir, strerror(errno));
		goto fail;
	}
	ret = ic_session_refresh(s, true);
	if (ret)
		goto fail;
	if (s->gens->chain->have_images &&
	    memcmp(s->gens->chain->chain_id, key->chain_id, ICF_ID_LEN)) {
		ret = ic_fail(IC_EKEY, "%s: the key does not belong to this chain", o->chain_dir);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	ic_session_free(s);
	return ret;
}

/* A sixteenth of the machine's memory, from 64 MiB to 1 GiB: random reads of a
 * backup hit the cache far more often once it holds a good share of the disk. */
static uint64_t default_cache_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t b = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 16 : 0;

	if (b < (64ull << 20))
		b = 64ull << 20;
	if (b > (1ull << 30))
		b = 1ull << 30;
	return b;
}

int ic_session_start(struct ic_session *s)
{
	struct ic_cache_opts co = {
		.max_bytes = s->o.cache_bytes ? s->o.cache_bytes : default_cache_bytes(),
		.on_error = on_cache_error,
		.arg = s,
	};
	uint32_t bs = s->gens && s->gens->chain->have_images ? s->gens->chain->block_size
							    : ICF_BLOCK_DEFAULT;

	pthread_mutex_lock(&s->lock);
	relock_all(s);
	pthread_mutex_unlock(&s->lock);
	s->cache = ic_cache_new(bs, s->key, &co);
	if (!s->cache)
		return ic_fail(-errno, "block cache: %s", strerror(errno));
	return ic_session_watch_start(s);
}

size_t ic_session_npoints(struct ic_session *s)
{
	size_t n = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npts; i++)
		n += !s->pts[i]->gone;
	pthread_mutex_unlock(&s->lock);
	return n;
}

void ic_session_free(struct ic_session *s)
{
	if (!s)
		return;
	ic_session_watch_stop(s);
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->npts; i++)
		point_free(s, s->pts[i]);
	free(s->pts);
	s->pts = NULL;
	s->npts = s->pts_cap = 0;
	while (s->gens)
		gen_unref(s, s->gens);
	pthread_mutex_unlock(&s->lock);
	if (s->cache) {
		struct ic_cache_stats st;

		ic_cache_get_stats(s->cache, &st);
		ic_session_log(s, LOG_INFO, "block cache: %llu hits, %llu misses, %llu waits, %llu blocks decoded, %llu by readahead (%llu dropped), %llu evicted, %llu dropped behind a sequential reader, %llu errors",
			       (unsigned long long)st.hits, (unsigned long long)st.misses,
			       (unsigned long long)st.waits, (unsigned long long)st.decoded,
			       (unsigned long long)st.ra_done, (unsigned long long)st.ra_dropped,
			       (unsigned long long)st.evictions, (unsigned long long)st.dropped,
			       (unsigned long long)st.errors);
	}
	ic_cache_free(s->cache);
	ic_scdp_free(s->cdp);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->refresh_mu);
	free(s);
}
