/* mount_fs.c: imgmount's file system: points, chain refresh, views, overlays, FUSE ops. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>

#include "ic_cache.h"
#include "ic_disk.h"
#include "ic_lock.h"
#include "ic_overlay.h"
#include "mount_fs.h"

#define LATEST "latest"
#define EXTRA_DIR "extra"
#define IO_MAX (1u << 20)

/* Overlays of a point: disk.raw and disk-flat.vmdk show one disk and share one. */
enum { OV_DISK, OV_DESC, OV_SPARSE, OV_N };

static const char *const ov_names[OV_N] = { "disk.raw", "disk.vmdk", "disk-sparse.vmdk" };

static int ov_of(int file)
{
	switch (file) {
	case IC_DISK_RAW:
	case IC_DISK_FLAT: return OV_DISK;
	case IC_DISK_DESC: return OV_DESC;
	case IC_DISK_SPARSE: return OV_SPARSE;
	default: return -1;
	}
}

/* One scan of the chain directory.  Kept while a point resolved in it is shown or open. */
struct gen {
	struct ic_chain *chain;
	int refs;                   /* points using it, +1 while current; under fs->lock */
	struct gen *next;
};

struct mpoint {
	char name[ICF_NAME_MAX + 1];
	/* identity, replaced by a refresh only while no handle is open (fs->lock) */
	struct gen *gen;
	struct ic_point *pt;
	uint64_t dev, ino, slot_gen;
	struct ic_disk *disk;
	int handles;                /* open files of this point (fs->lock) */
	bool gone;                  /* no longer in the chain: hidden, freed when idle */
	/* overlays, opened lazily and kept while the identity lasts (fs->lock to open;
	 * readers load the pointers atomically) */
	struct ic_overlay *ov[OV_N];
	bool ov_probed[OV_N];
	bool ov_locked;
	/* view (mu) */
	pthread_mutex_t mu;
	struct ic_view *view;
	int view_users;
	bool seal_ok;
};

struct mount_fs {
	struct mount_opts o;
	const struct ic_key *key;
	struct ic_cache *cache;
	uid_t uid;
	gid_t gid;
	pthread_mutex_t lock;
	pthread_mutex_t refresh_mu;
	pthread_mutex_t build_mu;
	struct gen *gens;           /* every live scan; the first is current */
	struct mpoint **pts;        /* sorted by name; gone ones included while busy */
	size_t npts;
	struct timespec dir_mtime, dir_ctime;
	bool force_rescan;
	char latest[ICF_NAME_MAX + 1];
	struct timespec latest_time;
	int ra_tuned;
};

struct mhandle {
	char *dir;                  /* a directory handle: its path (nothing else set) */
	struct mpoint *mp;          /* NULL for an extra file */
	int file;                   /* enum ic_disk_file */
	int fd;                     /* extra file */
	bool viewed;                /* holds the point's view */
	struct ic_cache_stream st;
};

/* ---- logging -------------------------------------------------------------------- */

static bool use_syslog;

void mount_log_syslog(void)
{
	openlog("imgmount", LOG_PID, LOG_DAEMON);
	use_syslog = true;
}

void mount_log(int prio, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (use_syslog) {
		vsyslog(prio, fmt, ap);
	} else {
		fprintf(stderr, "imgmount: ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
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
static int fuse_err(int err)
{
	if (err == IC_ECORRUPT || err == IC_EKEY || err == -ENXIO)
		return -EIO;
	return err < 0 ? err : -EIO;
}

static struct mount_fs *fs_get(void)
{
	return fuse_get_context()->private_data;
}

/* ---- generations, locks ---------------------------------------------------------- */

/* POSIX record locks vanish when ANY descriptor of the file is closed by this process,
 * so after closing images (a scan dropped, a damaged file skipped) take them all again. */
static void relock_all(struct mount_fs *fs)
{
	for (struct gen *g = fs->gens; g; g = g->next)
		for (size_t i = 0; i < g->chain->npoints; i++)
			(void)ic_lock_hold(g->chain->points[i].img->fd, IC_LOCK_READER);
	for (size_t i = 0; i < fs->npts; i++)
		if (fs->pts[i]->ov_locked)
			(void)ic_lock_hold(fs->pts[i]->pt->img->fd, IC_LOCK_OVERLAY);
}

static void gen_unref(struct mount_fs *fs, struct gen *g)
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

static struct mpoint *find_mp(struct mount_fs *fs, const char *name, size_t len)
{
	ssize_t i = find_mp_in(fs, fs->npts, name, len);

	return i < 0 ? NULL : fs->pts[i];
}

static void mp_close_overlays(struct mpoint *mp)
{
	for (int k = 0; k < OV_N; k++) {
		ic_overlay_close(mp->ov[k]);
		mp->ov[k] = NULL;
		mp->ov_probed[k] = false;
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
		gen_unref(fs, mp->gen);
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

static void mp_free(struct mount_fs *fs, struct mpoint *mp)
{
	mp_close_overlays(mp);
	ic_disk_free(mp->disk);
	ic_view_free(mp->view);
	pthread_mutex_destroy(&mp->mu);
	if (mp->gen)
		gen_unref(fs, mp->gen);
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

static void add_mp(struct mount_fs *fs, struct mpoint *mp)
{
	struct mpoint **n = realloc(fs->pts, (fs->npts + 1) * sizeof(*n));

	if (!n)
		abort();
	fs->pts = n;
	fs->pts[fs->npts++] = mp;
}

static struct mpoint *mp_new(struct mount_fs *fs, struct gen *g, struct ic_point *p)
{
	struct mpoint *mp = calloc(1, sizeof(*mp));

	if (!mp)
		abort();
	snprintf(mp->name, sizeof(mp->name), "%s", ic_point_name(p));
	pthread_mutex_init(&mp->mu, NULL);
	if (mp_set_identity(fs, mp, g, p)) {
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(-EINVAL));
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
	if (mp_set_identity(fs, mp, g, p))
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(-EINVAL));
}

static void set_latest(struct mount_fs *fs, const struct ic_chain *c)
{
	fs->latest[0] = '\0';
	for (size_t i = c->npoints; i-- > 0;) {
		if (!c->points[i].broken) {
			snprintf(fs->latest, sizeof(fs->latest), "%s", ic_point_name(&c->points[i]));
			fs->latest_time.tv_sec = c->points[i].img->slot.created;
			return;
		}
	}
}

/* Merge the new scan g into the table.  Under fs->lock. */
static void merge_scan(struct mount_fs *fs, struct gen *g)
{
	struct ic_chain *c = g->chain;
	size_t old_n = fs->npts, j = 0;
	bool *seen = calloc(old_n + 1, sizeof(*seen));

	if (!seen)
		abort();
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
				add_mp(fs, mp);
		}
	}
	/* points that left the chain: freed when idle, hidden while busy */
	for (size_t k = 0; k < fs->npts; k++) {
		struct mpoint *mp = fs->pts[k];

		if (k < old_n && !seen[k]) {
			if (!mp->handles) {
				mp_free(fs, mp);
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
static int refresh(struct mount_fs *fs, bool force)
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
	if (c->have_images && fs->gens && fs->gens->chain->have_images && memcmp(c->chain_id, fs->gens->chain->chain_id, 16)) {
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
	if (!g)
		abort();
	g->chain = c;
	g->refs = 1;
	pthread_mutex_lock(&fs->lock);
	fs->force_rescan = false;
	fs->dir_mtime = sb.st_mtim;
	fs->dir_ctime = sb.st_ctim;
	g->next = fs->gens;
	fs->gens = g;
	merge_scan(fs, g);
	if (g->next)
		gen_unref(fs, g->next);     /* no longer current */
	relock_all(fs);
	pthread_mutex_unlock(&fs->lock);
	pthread_mutex_unlock(&fs->refresh_mu);
	return 0;
}

/* ---- views and overlays ------------------------------------------------------------ */

/* Build (or share) the point's view and attach its disk; the handle's point is pinned. */
static int view_get(struct mount_fs *fs, struct mpoint *mp)
{
	struct ic_view *v = NULL;
	int ret = 0;

	pthread_mutex_lock(&mp->mu);
	if (mp->view) {
		mp->view_users++;
		goto out;
	}
	pthread_mutex_lock(&fs->build_mu);
	ic_clear_error();
	ret = ic_view_open(mp->gen->chain, mp->pt, &v);
	if (!ret && !mp->seal_ok)
		ret = ic_view_check_seal(v, fs->key);
	pthread_mutex_unlock(&fs->build_mu);
	if (!ret)
		ret = ic_disk_attach(mp->disk, fs->cache, v);
	if (ret) {
		mount_log(LOG_ERR, "restore point '%s': %s", mp->name, ic_last_error(ret));
		ic_view_free(v);
		goto out;
	}
	mp->seal_ok = true;
	mp->view = v;
	mp->view_users = 1;
out:
	pthread_mutex_unlock(&mp->mu);
	return ret;
}

static void view_put(struct mpoint *mp)
{
	pthread_mutex_lock(&mp->mu);
	if (--mp->view_users == 0) {
		ic_disk_detach(mp->disk);
		ic_view_free(mp->view);
		mp->view = NULL;
	}
	pthread_mutex_unlock(&mp->mu);
}

static char *ov_prefix(struct mount_fs *fs, const struct mpoint *mp, int k)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s", fs->o.overlay_dir, mp->name, ov_names[k]) < 0)
		abort();
	return p;
}

static bool ov_exists(const char *prefix)
{
	char path[PATH_MAX];
	struct stat sb;

	snprintf(path, sizeof(path), "%s.map", prefix);
	if (stat(path, &sb) == 0)
		return true;
	snprintf(path, sizeof(path), "%s.data", prefix);
	return stat(path, &sb) == 0;
}

/* The overlay of file f of mp: opened if it exists on disk, or created when create.
 * Returns NULL (ret 0) when there is none.  Under fs->lock. */
static struct ic_overlay *ov_get(struct mount_fs *fs, struct mpoint *mp, int file, bool create,
				 int *ret)
{
	int k = ov_of(file);
	char *prefix, *dir;

	*ret = 0;
	if (!fs->o.overlay_dir || k < 0)
		return NULL;
	if (mp->ov[k] || (mp->ov_probed[k] && !create))
		return mp->ov[k];
	prefix = ov_prefix(fs, mp, k);
	mp->ov_probed[k] = true;
	if (!create && !ov_exists(prefix)) {
		free(prefix);
		return NULL;
	}
	dir = ic_path_join(fs->o.overlay_dir, mp->name);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		*ret = ic_fail(-errno, "%s: %s", dir, strerror(errno));
	free(dir);
	if (!*ret)
		*ret = ic_overlay_open(prefix, ic_disk_size(mp->disk, file), &mp->ov[k]);
	if (*ret) {
		mount_log(LOG_ERR, "overlay %s: %s", prefix, ic_last_error(*ret));
		mp->ov[k] = NULL;
	} else if (!mp->ov_locked) {
		/* tell imgconsolidate not to merge this point away while we serve it writable */
		if (ic_lock_hold(mp->pt->img->fd, IC_LOCK_OVERLAY) == 0)
			mp->ov_locked = true;
	}
	free(prefix);
	return mp->ov[k];
}

static struct ic_overlay *ov_load(struct mpoint *mp, int file)
{
	int k = ov_of(file);

	return k < 0 ? NULL : __atomic_load_n(&mp->ov[k], __ATOMIC_ACQUIRE);
}

/* ---- paths -------------------------------------------------------------------------- */

enum node { N_NONE, N_ROOT, N_LATEST, N_POINT, N_FILE, N_EXTRA };

struct where {
	enum node node;
	struct mpoint *mp;
	int file;
	const char *rest;           /* N_EXTRA: path below the point directory */
};

/* Resolve path under fs->lock. */
static void resolve(struct mount_fs *fs, const char *path, struct where *w)
{
	const char *name = path + 1, *slash;

	memset(w, 0, sizeof(*w));
	if (!strcmp(path, "/")) {
		w->node = N_ROOT;
		return;
	}
	slash = strchr(name, '/');
	if (!slash && !strcmp(name, LATEST)) {
		w->node = fs->latest[0] ? N_LATEST : N_NONE;
		return;
	}
	w->mp = find_mp(fs, name, slash ? (size_t)(slash - name) : strlen(name));
	if (!w->mp || w->mp->gone) {
		w->mp = NULL;
		return;
	}
	if (!slash || !slash[1]) {
		w->node = N_POINT;
		return;
	}
	w->file = ic_disk_file_from_name(slash + 1);
	if (w->file >= 0 && ic_disk_has(w->mp->disk, w->file)) {
		w->node = N_FILE;
		return;
	}
	if (fs->o.overlay_dir) {
		w->node = N_EXTRA;
		w->rest = slash + 1;
	}
}

static char *extra_path(struct mount_fs *fs, const struct mpoint *mp, const char *rest)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s%s%s", fs->o.overlay_dir, mp->name, EXTRA_DIR, rest ? "/" : "",
		     rest ? rest : "") < 0)
		abort();
	return p;
}

/* mkdir -p OVERLAY/POINT/extra */
static int extra_dir_make(struct mount_fs *fs, const struct mpoint *mp)
{
	char *p = ic_path_join(fs->o.overlay_dir, mp->name);
	int ret = 0;

	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		ret = -errno;
	free(p);
	p = extra_path(fs, mp, NULL);
	if (!ret && mkdir(p, 0755) < 0 && errno != EEXIST)
		ret = -errno;
	free(p);
	return ret;
}

/* ---- attributes ---------------------------------------------------------------------- */

static void fill_common(struct mount_fs *fs, struct stat *st, mode_t mode, time_t t)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 65536;
	st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = t;
}

static int file_attr(struct mount_fs *fs, struct mpoint *mp, int file, struct stat *st)
{
	const struct ic_disk_info *in = ic_disk_get_info(mp->disk);
	bool rw = fs->o.overlay_dir && file != IC_DISK_INFO;
	struct ic_overlay *ov;
	uint64_t size = ic_disk_size(mp->disk, file);
	int ret;

	ov = ov_get(fs, mp, file, false, &ret);
	if (ov)
		size = ic_overlay_size(ov);
	fill_common(fs, st, S_IFREG | (rw ? 0644 : 0444), in->created);
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	return 0;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	int ret = 0;

	struct mhandle *h = fi ? (struct mhandle *)(uintptr_t)fi->fh : NULL;

	if (h && h->dir)
		path = h->dir;
	else if (h && h->fd >= 0)
		return fstat(h->fd, st) < 0 ? -errno : 0;
	if (path && !strchr(path + 1, '/'))
		refresh(fs, false);
	pthread_mutex_lock(&fs->lock);
	if (h && !h->dir) {
		w.node = N_FILE;
		w.mp = h->mp;
		w.file = h->file;
	} else if (path) {
		resolve(fs, path, &w);
	} else {
		w.node = N_NONE;
	}
	switch (w.node) {
	case N_ROOT:
		fill_common(fs, st, S_IFDIR | 0555, fs->dir_mtime.tv_sec);
		st->st_nlink = 2 + fs->npts;
		break;
	case N_LATEST:
		fill_common(fs, st, S_IFLNK | 0777, fs->latest_time.tv_sec);
		st->st_size = (off_t)strlen(fs->latest);
		break;
	case N_POINT:
		fill_common(fs, st, S_IFDIR | (fs->o.overlay_dir ? 0755 : 0555),
			    ic_disk_get_info(w.mp->disk)->created);
		break;
	case N_FILE:
		ret = file_attr(fs, w.mp, w.file, st);
		break;
	case N_EXTRA: {
		char *p = extra_path(fs, w.mp, w.rest);

		ret = lstat(p, st) < 0 ? -errno : 0;
		free(p);
		break;
	}
	default:
		ret = -ENOENT;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fs_readlink(const char *path, char *buf, size_t size)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	int ret = 0;

	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	if (w.node == N_LATEST) {
		snprintf(buf, size, "%s", fs->latest);
	} else if (w.node == N_EXTRA) {
		char *p = extra_path(fs, w.mp, w.rest);
		ssize_t n = readlink(p, buf, size - 1);

		ret = n < 0 ? -errno : 0;
		if (n >= 0)
			buf[n] = '\0';
		free(p);
	} else {
		ret = w.node == N_NONE ? -ENOENT : -EINVAL;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fill_extras(struct mount_fs *fs, const char *dir, void *buf, fuse_fill_dir_t filler,
		       bool skip_dots)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (skip_dots && (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")))
			continue;
		filler(buf, de->d_name, NULL, 0, 0);
	}
	closedir(d);
	(void)fs;
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	int ret = 0;

	(void)off;
	(void)flags;
	if (!path && fi && fi->fh)
		path = ((struct mhandle *)(uintptr_t)fi->fh)->dir;
	if (!path)
		return -EBADF;
	if (!strcmp(path, "/"))
		refresh(fs, false);
	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	switch (w.node) {
	case N_ROOT:
		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (size_t i = 0; i < fs->npts; i++)
			if (!fs->pts[i]->gone)
				filler(buf, fs->pts[i]->name, NULL, 0, 0);
		if (fs->latest[0])
			filler(buf, LATEST, NULL, 0, 0);
		break;
	case N_POINT: {
		char *p;

		filler(buf, ".", NULL, 0, 0);
		filler(buf, "..", NULL, 0, 0);
		for (int f = 0; f < IC_DISK_NFILES; f++)
			if (ic_disk_has(w.mp->disk, f))
				filler(buf, ic_disk_file_name(f), NULL, 0, 0);
		if (!fs->o.overlay_dir)
			break;
		p = extra_path(fs, w.mp, NULL);
		fill_extras(fs, p, buf, filler, true);
		free(p);
		break;
	}
	case N_EXTRA: {
		char *p = extra_path(fs, w.mp, w.rest);

		ret = fill_extras(fs, p, buf, filler, false);
		free(p);
		break;
	}
	case N_NONE:
		ret = -ENOENT;
		break;
	default:
		ret = -ENOTDIR;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct mhandle *h = calloc(1, sizeof(*h));

	if (!h || !(h->dir = strdup(path))) {
		free(h);
		return -ENOMEM;
	}
	h->fd = -1;
	fi->fh = (uintptr_t)h;
	return 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;

	(void)path;
	if (h)
		free(h->dir);
	free(h);
	return 0;
}

/* The kernel reads ahead 128 KiB on a FUSE mount whatever max_readahead says; 1 MiB
 * requests halve the per-request cost of sequential reads.  Done once after the INIT
 * exchange (which would reset it), by root only: a failure changes nothing else. */
static void tune_readahead(struct mount_fs *fs)
{
	char line[4096], mp[PATH_MAX], dev[64], path[128];
	FILE *f;
	int fd;

	if (__atomic_exchange_n(&fs->ra_tuned, 1, __ATOMIC_RELAXED) || !fs->o.mountpoint)
		return;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	dev[0] = '\0';
	while (fgets(line, sizeof(line), f)) {
		char d[64];

		if (sscanf(line, "%*d %*d %63s %*s %4095s", d, mp) == 2 && !strcmp(mp, fs->o.mountpoint))
			snprintf(dev, sizeof(dev), "%s", d);    /* the last one is ours */
	}
	fclose(f);
	if (!dev[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1024", 4) < 0)
			(void)0;
		close(fd);
	}
}

/* ---- open / read / write -------------------------------------------------------------- */

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static int open_extra(struct mount_fs *fs, struct where *w, struct fuse_file_info *fi,
		      mode_t mode, bool create)
{
	struct mhandle *h;
	char *p;
	int fd, ret = 0;

	if (create)
		ret = extra_dir_make(fs, w->mp);
	if (ret)
		return ret;
	p = extra_path(fs, w->mp, w->rest);
	fd = create ? open(p, fi->flags | O_CREAT | O_CLOEXEC, mode) : open(p, fi->flags | O_CLOEXEC);
	free(p);
	if (fd < 0)
		return -errno;
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	h->file = -1;
	fi->fh = (uintptr_t)h;
	return 0;
}

/* Open a disk file: pin the point, attach its view when the file's bytes need it
 * (a seal or index failure is EIO here), and open or create the overlay. */
static int open_file(struct mount_fs *fs, struct where *w, struct fuse_file_info *fi)
{
	bool wr = wants_write(fi->flags);
	struct mpoint *mp = w->mp;
	struct mhandle *h;
	int ret = 0;

	if (wr && (!fs->o.overlay_dir || w->file == IC_DISK_INFO))
		return -EROFS;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->mp = mp;
	h->file = w->file;
	h->fd = -1;
	mp->handles++;
	ov_get(fs, mp, w->file, wr, &ret);
	pthread_mutex_unlock(&fs->lock);
	if (!ret && ic_disk_needs_view(w->file)) {
		ret = view_get(fs, mp);
		h->viewed = ret == 0;
	}
	pthread_mutex_lock(&fs->lock);
	if (ret) {
		mp->handles--;
		free(h);
		return fuse_err(ret);
	}
	fi->fh = (uintptr_t)h;
	if (!fs->o.overlay_dir) {
		fi->keep_cache = 1;     /* the bytes of a restore point never change */
	} else if (ov_of(w->file) == OV_DISK) {
		/* two names, one overlay: the page cache of one would miss writes via the other */
		fi->direct_io = 1;
	} else {
		fi->keep_cache = 1;     /* every write comes through this inode's page cache */
	}
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	int ret;

	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, 0, false);
	else if (w.node == N_NONE)
		ret = -ENOENT;
	else
		ret = -EISDIR;
	pthread_mutex_unlock(&fs->lock);
	if (w.node == N_FILE && !ret && !fs->ra_tuned)
		tune_readahead(fs);
	return ret;
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	int ret;

	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	if (w.node == N_EXTRA)
		ret = open_extra(fs, &w, fi, mode, true);
	else if (w.node == N_FILE)
		ret = open_file(fs, &w, fi);
	else
		ret = fs->o.overlay_dir && w.node != N_NONE ? -EPERM : -EROFS;
	if (w.node == N_NONE && fs->o.overlay_dir)
		ret = -EPERM;
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;

	(void)path;
	if (h->fd >= 0) {
		close(h->fd);
	} else {
		bool rescan;

		if (h->viewed)
			view_put(h->mp);
		pthread_mutex_lock(&fs->lock);
		h->mp->handles--;
		rescan = fs->force_rescan;
		pthread_mutex_unlock(&fs->lock);
		if (rescan)
			refresh(fs, true);
	}
	free(h);
	return 0;
}

/* The base of an overlay: the point's own bytes of that file. */
struct base_arg {
	struct mhandle *h;
};

static int base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct mhandle *h = ((struct base_arg *)arg)->h;
	ssize_t n = ic_disk_read(h->mp->disk, h->file, &h->st, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct base_arg a = { .h = h };
	struct ic_overlay *ov;
	ssize_t n;

	(void)path;
	if (h->fd >= 0) {
		n = pread(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (off < 0)
		return -EINVAL;
	ov = ov_load(h->mp, h->file);
	if (ov)
		n = ic_overlay_read(ov, buf, size, (uint64_t)off, base_read, &a);
	else
		n = ic_disk_read(h->mp->disk, h->file, &h->st, buf, size, (uint64_t)off);
	return n < 0 ? fuse_err((int)n) : (int)n;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct base_arg a = { .h = h };
	struct ic_overlay *ov;
	ssize_t n;
	int ret = 0;

	(void)path;
	if (h->fd >= 0) {
		n = pwrite(h->fd, buf, size, off);
		return n < 0 ? -errno : (int)n;
	}
	if (!fs->o.overlay_dir || h->file == IC_DISK_INFO)
		return -EROFS;
	ov = ov_load(h->mp, h->file);
	if (!ov) {
		pthread_mutex_lock(&fs->lock);
		ov = ov_get(fs, h->mp, h->file, true, &ret);
		pthread_mutex_unlock(&fs->lock);
		if (!ov)
			return fuse_err(ret ? ret : -EIO);
	}
	n = ic_overlay_write(ov, buf, size, (uint64_t)off, base_read, &a);
	if (n < 0)
		mount_log(LOG_ERR, "restore point '%s': write to %s: %s", h->mp->name,
			  ic_disk_file_name(h->file), ic_last_error((int)n));
	return n < 0 ? fuse_err((int)n) : (int)n;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct mhandle *h = (struct mhandle *)(uintptr_t)fi->fh;
	struct ic_overlay *ov;
	int ret;

	(void)path;
	if (h->fd >= 0)
		return (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
	ov = ov_load(h->mp, h->file);
	if (!ov)
		return 0;
	ret = ic_overlay_fsync(ov);
	if (ret)
		mount_log(LOG_ERR, "restore point '%s': fsync of %s: %s", h->mp->name,
			  ic_disk_file_name(h->file), ic_last_error(ret));
	return ret ? fuse_err(ret) : 0;
}

static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	(void)fi;
	return 0;
}

/* ---- namespace changes (overlay mode, extra files only) ------------------------------- */

/* Resolve path for a change: the real path of an extra entry, or an errno. */
static int change_path(struct mount_fs *fs, const char *path, char **out)
{
	struct where w;
	int ret = 0;

	*out = NULL;
	if (!fs->o.overlay_dir)
		return -EROFS;
	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	if (w.node == N_EXTRA) {
		ret = extra_dir_make(fs, w.mp);
		if (!ret)
			*out = extra_path(fs, w.mp, w.rest);
	} else {
		ret = -EPERM;
	}
	pthread_mutex_unlock(&fs->lock);
	return ret;
}

static int fs_mkdir(const char *path, mode_t mode)
{
	char *p;
	int ret = change_path(fs_get(), path, &p);

	if (!ret && mkdir(p, mode) < 0)
		ret = -errno;
	free(p);
	return ret;
}

static int fs_rmdir(const char *path)
{
	char *p;
	int ret = change_path(fs_get(), path, &p);

	if (!ret && rmdir(p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

static int fs_unlink(const char *path)
{
	char *p;
	int ret = change_path(fs_get(), path, &p);

	if (!ret && unlink(p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

static int fs_symlink(const char *target, const char *path)
{
	char *p;
	int ret = change_path(fs_get(), path, &p);

	if (!ret && symlink(target, p) < 0)
		ret = -errno;
	free(p);
	return ret;
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	struct mount_fs *fs = fs_get();
	char *a = NULL, *b = NULL;
	const char *sa, *sb;
	int ret;

	/* only within one point's directory: each point keeps its own extra files */
	sa = strchr(from + 1, '/');
	sb = strchr(to + 1, '/');
	if (!sa || !sb || sa - from != sb - to || strncmp(from, to, (size_t)(sa - from)))
		return fs->o.overlay_dir ? -EXDEV : -EROFS;
	ret = change_path(fs, from, &a);
	if (!ret)
		ret = change_path(fs, to, &b);
	if (!ret && renameat2(AT_FDCWD, a, AT_FDCWD, b, flags) < 0)
		ret = -errno;
	free(a);
	free(b);
	return ret;
}

/* Truncate: a disk file's overlay, or an extra file. */
static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct mount_fs *fs = fs_get();
	struct mhandle *h = fi ? (struct mhandle *)(uintptr_t)fi->fh : NULL;
	struct ic_overlay *ov = NULL;
	struct where w;
	char *p;
	int ret = 0;

	if (h && h->fd >= 0)
		return ftruncate(h->fd, size) < 0 ? -errno : 0;
	if (!fs->o.overlay_dir)
		return -EROFS;
	if (size < 0)
		return -EINVAL;
	pthread_mutex_lock(&fs->lock);
	if (h) {
		w.node = N_FILE;
		w.mp = h->mp;
		w.file = h->file;
	} else {
		resolve(fs, path, &w);
	}
	if (w.node == N_FILE && w.file != IC_DISK_INFO) {
		ov = ov_get(fs, w.mp, w.file, true, &ret);
		if (ov)
			ret = ic_overlay_truncate(ov, (uint64_t)size);
		else if (!ret)
			ret = -EIO;
		pthread_mutex_unlock(&fs->lock);
		return ret ? fuse_err(ret) : 0;
	}
	pthread_mutex_unlock(&fs->lock);
	if (w.node == N_FILE)
		return -EROFS;
	ret = change_path(fs, path, &p);
	if (!ret && truncate(p, size) < 0)
		ret = -errno;
	free(p);
	return ret;
}

/* chmod, chown and utimens: real on extra files; accepted and ignored on the disk
 * files of a writable mount (copy tools and hypervisors set them), EROFS otherwise. */
static int attr_change(const char *path, int (*fn)(const char *p, const void *arg),
		       const void *arg)
{
	struct mount_fs *fs = fs_get();
	struct where w;
	char *p;
	int ret;

	if (!path)
		return 0;
	pthread_mutex_lock(&fs->lock);
	resolve(fs, path, &w);
	pthread_mutex_unlock(&fs->lock);
	if (w.node == N_NONE)
		return -ENOENT;
	if (w.node != N_EXTRA)
		return fs->o.overlay_dir ? 0 : -EROFS;
	ret = change_path(fs, path, &p);
	if (!ret)
		ret = fn(p, arg);
	free(p);
	return ret;
}

static int do_chmod(const char *p, const void *arg)
{
	return chmod(p, *(const mode_t *)arg) < 0 ? -errno : 0;
}

static int do_chown(const char *p, const void *arg)
{
	const unsigned *ids = arg;

	return lchown(p, (uid_t)ids[0], (gid_t)ids[1]) < 0 ? -errno : 0;
}

static int do_utimens(const char *p, const void *arg)
{
	return utimensat(AT_FDCWD, p, arg, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	return attr_change(path, do_chmod, &mode);
}

static int fs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
	unsigned ids[2] = { (unsigned)uid, (unsigned)gid };

	(void)fi;
	return attr_change(path, do_chown, ids);
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
	(void)fi;
	return attr_change(path, do_utimens, tv);
}

static int fs_statfs(const char *path, struct statvfs *st)
{
	struct mount_fs *fs = fs_get();

	(void)path;
	if (statvfs(fs->o.overlay_dir ? fs->o.overlay_dir : fs->o.chain_dir, st) < 0)
		return -errno;
	st->f_namemax = ICF_NAME_MAX;
	return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct mount_fs *fs = fs_get();

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
	.init = fs_init,
	.getattr = fs_getattr,
	.readlink = fs_readlink,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.create = fs_create,
	.read = fs_read,
	.write = fs_write,
	.fsync = fs_fsync,
	.flush = fs_flush,
	.release = fs_release,
	.mkdir = fs_mkdir,
	.rmdir = fs_rmdir,
	.unlink = fs_unlink,
	.symlink = fs_symlink,
	.rename = fs_rename,
	.truncate = fs_truncate,
	.chmod = fs_chmod,
	.chown = fs_chown,
	.utimens = fs_utimens,
	.statfs = fs_statfs,
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
	pthread_mutex_init(&fs->build_mu, NULL);
	if (o->overlay_dir && mkdir(o->overlay_dir, 0700) < 0 && errno != EEXIST) {
		ret = ic_fail(-errno, "%s: %s", o->overlay_dir, strerror(errno));
		goto fail;
	}
	ret = refresh(fs, true);
	if (ret)
		goto fail;
	if (fs->gens->chain->have_images &&
	    memcmp(fs->gens->chain->chain_id, key->chain_id, 16)) {
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
		mp_free(fs, fs->pts[i]);
	free(fs->pts);
	fs->pts = NULL;
	fs->npts = 0;
	while (fs->gens)
		gen_unref(fs, fs->gens);
	pthread_mutex_unlock(&fs->lock);
	ic_cache_free(fs->cache);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->refresh_mu);
	pthread_mutex_destroy(&fs->build_mu);
	free(fs);
}
