/* mount_fs_points.c: the restore point table, kept in step with the chain directory
 * (scans, generations, identity of each point, image locks). */
#include "config.h"

#include <stdio.h>
#include <sys/types.h>

#include "ic_array.h"
#include "ic_lock.h"

#include "mount_fs_int.h"

/* ---- generations, locks ---------------------------------------------------------- */

/* POSIX record locks vanish when ANY descriptor of the file is closed by this process,
 * so after closing images (a scan dropped, a damaged file skipped) take them all again. */
static void relock(const struct ic_image *img, int which)
{
	int ret = ic_lock_hold(img->fd, which);

	/* taken at open, so only a lock someone else took since (or a lost NFS lock) */
	if (ret)
		mount_log(LOG_WARNING, "%s: cannot take the %s lock again: %s", img->path,
			  which == IC_LOCK_READER ? "reader" : "overlay", strerror(-ret));
}

static void relock_all(struct mount_fs *fs)
{
	for (struct gen *g = fs->gens; g; g = g->next)
		for (size_t i = 0; i < g->chain->npoints; i++)
			relock(g->chain->points[i].img, IC_LOCK_READER);
	for (size_t i = 0; i < fs->npts; i++)
		if (fs->pts[i]->ov_locked)
			relock(fs->pts[i]->pt->img, IC_LOCK_OVERLAY);
}

void mfs_gen_unref(struct mount_fs *fs, struct gen *g)
{
	if (--g->refs > 0)
		return;
	for (struct gen **pp = &fs->gens; *pp; pp = &(*pp)->next) {
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

/* ---- points ------------------------------------------------------------------------ */

static int cmp_mp(const void *a, const void *b)
{
	return strcmp((*(struct mpoint *const *)a)->name, (*(struct mpoint *const *)b)->name);
}

/* Index of the point called name[len] among the first n of the table (sorted), or -1. */
static ssize_t find_mp_in(struct mount_fs *fs, size_t n, const char *name, size_t len)
{
	size_t lo = 0, hi = n;

	if (len > ICF_NAME_MAX)
		return -1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(fs->pts[mid]->name, name, len);

		if (!c && fs->pts[mid]->name[len])
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

struct mpoint *mfs_find_point(struct mount_fs *fs, const char *name, size_t len)
{
	ssize_t i = find_mp_in(fs, fs->npts, name, len);

	return i < 0 ? NULL : fs->pts[i];
}

static void mp_close_overlays(struct mpoint *mp)
{
	for (int k = 0; k < OV_N; k++) {
		ic_overlay_close(mp->ov[k]);
		__atomic_store_n(&mp->ov[k], NULL, __ATOMIC_RELAXED);    /* read by mfs_ov_load() */
		mp->ov_probed[k] = false;
		mp->ov_refused[k] = false;
	}
	mp->ov_locked = false;
}

/* Give mp the identity of point p of generation g (mp idle).  Under fs->lock. */
static int mp_set_identity(struct mount_fs *fs, struct mpoint *mp, struct gen *g,
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
	mp_close_overlays(mp);
	ic_disk_free(mp->disk);
	mp->disk = disk;
	if (mp->gen)
		mfs_gen_unref(fs, mp->gen);
	g->refs++;
	mp->gen = g;
	mp->pt = p;
	mp->dev = sb.st_dev;
	mp->ino = sb.st_ino;
	mp->slot_gen = p->img->slot.generation;
	mp->seal_ok = false;
	mp->gone = false;
	return 0;
}

void mfs_point_free(struct mount_fs *fs, struct mpoint *mp)
{
	mp_close_overlays(mp);
	ic_disk_free(mp->disk);
	ic_view_free(mp->view);
	pthread_mutex_destroy(&mp->mu);
	if (mp->gen)
		mfs_gen_unref(fs, mp->gen);
	free(mp);
}

static bool same_identity(const struct mpoint *mp, const struct ic_point *p)
{
	struct stat sb;

	if (!mp->gen || mp->pt->seq != p->seq || mp->slot_gen != p->img->slot.generation)
		return false;
	if (fstat(p->img->fd, &sb) < 0)
		return false;
	return (uint64_t)sb.st_dev == mp->dev && (uint64_t)sb.st_ino == mp->ino;
}

/* NULL (logged; the next refresh tries again) when the point cannot be served. */
static struct mpoint *mp_new(struct mount_fs *fs, struct gen *g, struct ic_point *p)
{
	struct mpoint *mp = calloc(1, sizeof(*mp));
	int ret;

	if (!mp) {
		mount_log(LOG_ERR, "restore point '%s': %s", ic_point_name(p), strerror(ENOMEM));
		fs->force_rescan = true;
		return NULL;
	}
	snprintf(mp->name, sizeof(mp->name), "%s", ic_point_name(p));
	pthread_mutex_init(&mp->mu, NULL);
	ret = mp_set_identity(fs, mp, g, p);
	if (ret) {
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(ret));
		pthread_mutex_destroy(&mp->mu);
		free(mp);
		return NULL;
	}
	return mp;
}

/* Fold point p of the new scan g into the existing entry mp (same name). */
static void mp_update(struct mount_fs *fs, struct mpoint *mp, struct gen *g, struct ic_point *p)
{
	if (same_identity(mp, p)) {
		mp->gone = false;
		return;
	}
	/* A new image for this name (consolidation rewrote it): swap when nothing is open. */
	if (mp->handles) {
		fs->force_rescan = true;
		return;
	}
	int ret = mp_set_identity(fs, mp, g, p);

	if (ret)
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(ret));
}

static void set_latest(struct mount_fs *fs, const struct ic_chain *c)
{
	const struct ic_point *p = ic_chain_latest(c);

	fs->latest[0] = '\0';
	if (p) {
		snprintf(fs->latest, sizeof(fs->latest), "%s", ic_point_name(p));
		fs->latest_time.tv_sec = p->img->slot.created;
	}
}

/* Merge the new scan g into the table.  Under fs->lock.  -ENOMEM: nothing changed. */
static int merge_scan(struct mount_fs *fs, struct gen *g)
{
	struct ic_chain *c = g->chain;
	size_t old_n = fs->npts, j = 0;
	bool *seen = calloc(old_n + 1, sizeof(*seen));

	/* room for every point of the scan: adding one below cannot fail */
	if (!seen || ic_array_grow(&fs->pts, &fs->pts_cap, old_n + c->npoints, sizeof(*fs->pts))) {
		free(seen);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_point *p = &c->points[i];
		const char *name = ic_point_name(p);
		ssize_t k;

		if (p->broken) {
			mount_log(LOG_WARNING, "restore point '%s' not shown: an ancestor is missing or damaged",
				  name);
			continue;
		}
		if (ic_chain_find(c, name) != p)
			continue;   /* a name used twice: the newest point has it */
		k = find_mp_in(fs, old_n, name, strlen(name));
		if (k >= 0) {
			seen[k] = true;
			mp_update(fs, fs->pts[k], g, p);
		} else {
			struct mpoint *mp = mp_new(fs, g, p);

			if (mp)
				fs->pts[fs->npts++] = mp;
		}
	}
	/* points that left the chain: freed when idle, hidden while busy */
	for (size_t k = 0; k < fs->npts; k++) {
		struct mpoint *mp = fs->pts[k];

		if (k < old_n && !seen[k]) {
			if (!mp->handles) {
				mfs_point_free(fs, mp);
				continue;
			}
			mp->gone = true;
			fs->force_rescan = true;
		}
		fs->pts[j++] = mp;
	}
	fs->npts = j;
	free(seen);
	qsort(fs->pts, fs->npts, sizeof(*fs->pts), cmp_mp);
	set_latest(fs, c);
	return 0;
}

static bool dir_changed(struct mount_fs *fs, const struct stat *sb)
{
	return sb->st_mtim.tv_sec != fs->dir_mtime.tv_sec ||
	       sb->st_mtim.tv_nsec != fs->dir_mtime.tv_nsec ||
	       sb->st_ctim.tv_sec != fs->dir_ctime.tv_sec ||
	       sb->st_ctim.tv_nsec != fs->dir_ctime.tv_nsec;
}

/* Rescan the chain directory when it changed (a backup or consolidation renamed
 * files in or out); cheap otherwise (one stat). */
int mfs_refresh(struct mount_fs *fs, bool force)
{
	struct ic_chain *c;
	struct gen *g;
	struct stat sb;
	int ret;

	if (stat(fs->o.chain_dir, &sb) < 0)
		return -errno;
	pthread_mutex_lock(&fs->lock);
	force |= fs->force_rescan;
	if (!force && !dir_changed(fs, &sb)) {
		pthread_mutex_unlock(&fs->lock);
		return 0;
	}
	pthread_mutex_unlock(&fs->lock);
	pthread_mutex_lock(&fs->refresh_mu);
	ret = ic_chain_open(fs->o.chain_dir, &c);
	if (ret) {
		pthread_mutex_unlock(&fs->refresh_mu);
		mount_log(LOG_ERR, "rescan: %s", ic_last_error(ret));
		return ret;
	}
	if (c->have_images && fs->gens && fs->gens->chain->have_images && memcmp(c->chain_id, fs->gens->chain->chain_id, ICF_ID_LEN)) {
		mount_log(LOG_ERR, "%s: the chain was replaced by another one; keeping the old view",
			  fs->o.chain_dir);
		ic_chain_free(c);
		pthread_mutex_lock(&fs->lock);
		relock_all(fs);
		pthread_mutex_unlock(&fs->lock);
		pthread_mutex_unlock(&fs->refresh_mu);
		return -ESTALE;
	}
	for (size_t i = 0; i < c->nbad; i++)
		mount_log(LOG_WARNING, "skipping %s", c->bad[i].why);
	g = calloc(1, sizeof(*g));
	if (!g) {
		ic_chain_free(c);
		pthread_mutex_lock(&fs->lock);
		relock_all(fs);    /* closing c's images dropped locks the table still needs */
		pthread_mutex_unlock(&fs->lock);
		pthread_mutex_unlock(&fs->refresh_mu);
		mount_log(LOG_ERR, "rescan: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	g->chain = c;
	g->refs = 1;
	pthread_mutex_lock(&fs->lock);
	fs->force_rescan = false;
	fs->dir_mtime = sb.st_mtim;
	fs->dir_ctime = sb.st_ctim;
	g->next = fs->gens;
	fs->gens = g;
	ret = merge_scan(fs, g);
	if (ret) {
		mfs_gen_unref(fs, g);           /* the table still serves the previous scan */
		mount_log(LOG_ERR, "rescan: %s", strerror(ENOMEM));
	} else if (g->next) {
		mfs_gen_unref(fs, g->next);     /* no longer current */
	}
	relock_all(fs);
	pthread_mutex_unlock(&fs->lock);
	pthread_mutex_unlock(&fs->refresh_mu);
	return ret;
}
