/* ic_session_io.c: a served point's data: opening it (pin, overlay, view), the views
 * behind it, its overlays (bound to the point, the point directory locked), the read,
 * write and fsync paths and the extents of its disk. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "ic_lock.h"
#include "ic_promote.h"
#include "ic_session.h"
#include "ic_util.h"

/* ---- views ---------------------------------------------------------------------------- */

/* Build (or share) the point's view and attach its disk; the point is pinned. */
static int view_get(struct ic_session *s, struct ic_spoint *sp)
{
	struct ic_view *v = NULL;
	int ret = 0;

	pthread_mutex_lock(&sp->mu);
	if (sp->view) {
		sp->view_users++;
		goto out;
	}
	/* Views of several points may be built at once: each image reads its index into
	 * private memory once, under its own lock (ic_image_check_index).  The seal is
	 * checked on those private copies before any per-block memory; a view rebuilt
	 * later (the point closed and reopened) uses the same copies, which is why the
	 * seal need not be checked again while the point keeps its identity. */
	ret = ic_view_open_nomap(sp->gen->chain, sp->pt, &v);
	if (!ret && !sp->seal_ok)
		ret = ic_view_check_seal(v, s->key);
	if (!ret)
		ret = ic_view_build_map(v);
	if (!ret)
		ret = ic_disk_attach(sp->disk, s->cache, v);
	if (ret) {
		ic_session_log(s, LOG_ERR, "restore point '%s': %s", sp->name, ic_last_error(ret));
		ic_view_free(v);
		goto out;
	}
	sp->seal_ok = true;
	sp->view = v;
	sp->view_users = 1;
out:
	pthread_mutex_unlock(&sp->mu);
	return ret;
}

static void view_put(struct ic_spoint *sp)
{
	pthread_mutex_lock(&sp->mu);
	if (--sp->view_users == 0) {
		ic_disk_detach(sp->disk);
		ic_view_free(sp->view);
		sp->view = NULL;
	}
	pthread_mutex_unlock(&sp->mu);
}

int ic_session_open(struct ic_session *s, struct ic_spoint *sp, int file, bool write)
{
	int ret = 0;

	bool viewed = false;

	if (write && (!s->o.overlay_dir || ic_session_ov_of(file) < 0))
		return -EROFS;
	sp->handles++;
	pthread_mutex_unlock(&s->lock);
	if (ic_disk_needs_view(file)) {
		ret = view_get(s, sp);
		viewed = ret == 0;
	}
	pthread_mutex_lock(&s->lock);
	/* after the view: the seal passed, and the file's size (the overlay's base) is known */
	if (!ret)
		ic_session_ov_get(s, sp, file, write, &ret);
	if (ret) {
		if (viewed) {
			pthread_mutex_unlock(&s->lock);
			view_put(sp);
			pthread_mutex_lock(&s->lock);
		}
		sp->handles--;
	}
	return ret;
}

int ic_session_size_file(struct ic_session *s, struct ic_spoint *sp, int file)
{
	int ret;

	if (ic_disk_sized(sp->disk, file))
		return 0;
	sp->handles++;
	pthread_mutex_unlock(&s->lock);
	ret = view_get(s, sp);
	if (!ret)
		view_put(sp);
	pthread_mutex_lock(&s->lock);
	sp->handles--;
	return ret;
}

void ic_session_close(struct ic_session *s, struct ic_spoint *sp, int file)
{
	bool rescan;

	if (ic_disk_needs_view(file))
		view_put(sp);
	pthread_mutex_lock(&s->lock);
	sp->handles--;
	rescan = s->force_rescan;
	pthread_mutex_unlock(&s->lock);
	if (rescan)
		ic_session_refresh(s, true);
}

/* ---- overlays ------------------------------------------------------------------------- */

static const char *const ov_names[IC_SOV_N] = { "disk.raw", "disk.vmdk", "disk-sparse.vmdk",
						  "disk.vhd", "disk.vhdx" };

static char *ov_prefix(struct ic_session *s, const struct ic_spoint *sp, int k)
{
	char *p;

	if (asprintf(&p, "%s/%s/%s", s->o.overlay_dir, sp->name, ov_names[k]) < 0)
		return NULL;
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

static bool ov_exists_k(struct ic_session *s, const struct ic_spoint *sp, int k)
{
	char *prefix = ov_prefix(s, sp, k);
	bool there = !prefix || ov_exists(prefix);

	free(prefix);
	return there;
}

/* What an overlay of sp belongs to: the chain and the point's seal, which authenticates the
 * point's whole block map, name, seq, creation time and disk size.  A merge that keeps the
 * point's content keeps its seal, so its overlays stay; another point of the same name has
 * another seal.  The seal is the slot's, checked with the key before any byte is served. */
static void ov_binding(const struct ic_spoint *sp, struct ic_overlay_bind *b)
{
	const struct icf_slot *sl = &sp->pt->img->slot;

	ic_overlay_bind_point(b, ic_disk_get_info(sp->disk)->chain_id, sl->seal, sp->name, sl->seq);
}

/* OVERLAY/POINT, made if needed (never through a link) and locked exclusively while any
 * overlay of the point is open: a second server (imgmount, nbdkit) gets -EBUSY, or with
 * take (opening for writing) and take_over asks the owner to release it (10.7). */
static int ov_dir_lock(struct ic_session *s, struct ic_spoint *sp, bool take)
{
	char *dir;
	struct stat sb;
	int fd, ret = 0;

	if (sp->ov_dir_fd >= 0)
		return 0;
	dir = ic_path_join(s->o.overlay_dir, sp->name);
	if (!dir)
		return ic_fail(-ENOMEM, "%s/%s: %s", s->o.overlay_dir, sp->name, strerror(ENOMEM));
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		ret = ic_fail(-errno, "%s: %s", dir, strerror(errno));
	} else if (lstat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
		ret = ic_fail(IC_ECORRUPT, "%s: not a directory (%s): refused", dir,
			      ic_file_kind(sb.st_mode));
	} else {
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			ret = ic_fail(-errno, "%s: %s", dir, strerror(errno));
		else
			ret = ic_session_dir_claim(s, sp, fd, dir, take);
		if (ret && fd >= 0)
			close(fd);
		else if (!ret)
			sp->ov_dir_fd = fd;
	}
	/* a promote's state (FORMAT.md 18) not resumed by this server: the disk is DEST's and
	 * the overlay stale; only a server that resumes it at its start serves the disk (the
	 * checks a front end makes before ic_session_start, which resumes it, pass) */
	if (!ret && s->cache && !__atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE) &&
	    !__atomic_load_n(&sp->promote_pin, __ATOMIC_RELAXED) &&
	    faccessat(sp->ov_dir_fd, IC_PROMOTE_STATE, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		ic_session_dir_drop(s, sp);
		ret = ic_fail(-EBUSY, "%s/%s: the disk is promoted (%s): restart the server to serve it from its DEST",
			      s->o.overlay_dir, sp->name, IC_PROMOTE_STATE);
	}
	free(dir);
	return ret;
}

/* The overlay of file f of sp: opened if it exists on disk, or created when create.
 * Returns NULL (ret 0) when there is none.  An overlay made on another point (or of the
 * unbound version 1) is refused once, logged, and never touched: the point is then served
 * without it, read-only (ret -EROFS when create).  Under s->lock. */
struct ic_overlay *ic_session_ov_get(struct ic_session *s, struct ic_spoint *sp, int file,
				     bool create, int *ret)
{
	struct ic_overlay *ov = NULL;
	int k = ic_session_ov_of(file);
	char *prefix;

	*ret = 0;
	if (!s->o.overlay_dir || k < 0)
		return NULL;
	/* an overlay's base size must be the file's final one (ic_session_size_file first) */
	if (!ic_disk_sized(sp->disk, file)) {
		*ret = create ? -EIO : 0;
		return NULL;
	}
	if (sp->ov_refused[k] || sp->ov_released)
		*ret = create ? -EROFS : 0;
	if (sp->ov_released && !sp->ov[k] && !*ret && ov_exists_k(s, sp, k))
		*ret = -EBUSY;      /* handed over: another server writes it now */
	if (sp->ov_released)
		return sp->ov[k];
	if (sp->ov[k] || sp->ov_refused[k] || (sp->ov_probed[k] && !create))
		return sp->ov[k];
	prefix = ov_prefix(s, sp, k);
	if (!prefix) {
		*ret = -ENOMEM;
		return NULL;
	}
	if (!create && !ov_exists(prefix)) {
		sp->ov_probed[k] = true;
		free(prefix);
		return NULL;
	}
	*ret = ov_dir_lock(s, sp, create);
	if (!*ret) {
		struct ic_overlay_bind b;

		sp->ov_probed[k] = true;
		ov_binding(sp, &b);
		/* disk.raw's size for both names of the disk (disk-flat.vmdk pads it) */
		*ret = ic_overlay_open(prefix, ic_disk_size(sp->disk, k == IC_SOV_DISK ? IC_DISK_RAW :
							    file), &b, &ov);
	}
	if (*ret == -ESTALE) {
		ic_session_log(s, LOG_ERR, "%s: not applied, '%s' is served read-only",
			       ic_last_error(*ret), sp->name);
		sp->ov_refused[k] = true;
		*ret = create ? -EROFS : 0;
		ov = NULL;
	} else if (*ret) {
		if (*ret != -EBUSY || !sp->ov_busy_said)
			ic_session_log(s, LOG_ERR, "overlay %s: %s", prefix, ic_last_error(*ret));
		sp->ov_busy_said = *ret == -EBUSY;
		ov = NULL;
	} else {
		sp->ov_busy_said = false;
		/* readers and writers load it without s->lock: publish it fully built */
		__atomic_store_n(&sp->ov[k], ov, __ATOMIC_RELEASE);
		/* tell imgconsolidate not to merge this point away while we serve it writable */
		if (!sp->ov_locked && ic_lock_hold(sp->pt->img->fd, IC_LOCK_OVERLAY) == 0)
			sp->ov_locked = true;
	}
	if (!ov && sp->ov_dir_fd >= 0) {
		bool any = false;

		for (int i = 0; i < IC_SOV_N; i++)
			any |= sp->ov[i] != NULL;
		if (!any)
			ic_session_dir_drop(s, sp);
	}
	free(prefix);
	return ov;
}

struct ic_overlay *ic_session_ov_load(struct ic_spoint *sp, int file)
{
	int k = ic_session_ov_of(file);

	return k < 0 ? NULL : __atomic_load_n(&sp->ov[k], __ATOMIC_ACQUIRE);
}

/* disk-flat.vmdk over an overlay of size bytes: whole sectors, the tail zeros. */
static uint64_t flat_size(uint64_t size)
{
	return (size + 511) / 512 * 512;
}

uint64_t ic_session_size(struct ic_spoint *sp, int file)
{
	struct ic_overlay *ov = ic_session_ov_load(sp, file);
	struct ic_promote *pr = ic_promote_of(sp, file);

	if (pr)
		return ic_promote_size(pr, file);
	if (file == IC_DISK_INFO && __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE))
		return ic_promote_info_size(sp);
	if (!ov)
		return ic_disk_size(sp->disk, file);
	return file == IC_DISK_FLAT ? flat_size(ic_overlay_size(ov)) : ic_overlay_size(ov);
}

/* ---- data ------------------------------------------------------------------------------ */

struct base_arg {
	struct ic_spoint *sp;
	int file;
	struct ic_cache_stream *st;
};

/* The base of an overlay: the point's own bytes of that file, zero past its end. */
static int base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct base_arg *a = arg;
	ssize_t n = ic_disk_read(a->sp->disk, a->file, a->st, buf, len, off);

	if (n < 0)
		return (int)n;
	if ((size_t)n < len)
		memset((char *)buf + n, 0, len - (size_t)n);
	return 0;
}

/* disk-flat.vmdk over the disk's overlay: its bytes, then zeros to a whole sector (the
 * descriptor counts sectors; the overlay, shared with disk.raw, is sized in bytes). */
static ssize_t flat_read(struct ic_overlay *ov, char *buf, size_t size, uint64_t off,
			 struct base_arg *a)
{
	uint64_t end = flat_size(ic_overlay_size(ov));
	ssize_t n = ic_overlay_read(ov, buf, size, off, base_read, a);
	size_t want = off < end ? (end - off < size ? (size_t)(end - off) : size) : 0;

	if (n < 0 || (size_t)n >= want)
		return n;
	memset(buf + n, 0, want - (size_t)n);
	return (ssize_t)want;
}

ssize_t ic_session_read_held(struct ic_spoint *sp, int file, struct ic_cache_stream *st,
			     void *buf, size_t len, uint64_t off)
{
	struct base_arg a = { .sp = sp, .file = file, .st = st };
	struct ic_overlay *ov = ic_session_ov_load(sp, file);
	struct ic_promote *pr = ic_promote_of(sp, file);

	if (pr && ic_promote_switched(pr))
		return ic_promote_read(pr, file, buf, len, off);
	if (file == IC_DISK_INFO && __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE))
		return ic_promote_info_read(sp, buf, len, off);
	if (ov && file == IC_DISK_FLAT)
		return flat_read(ov, buf, len, off, &a);
	if (ov)
		return ic_overlay_read(ov, buf, len, off, base_read, &a);
	return ic_disk_read(sp->disk, file, st, buf, len, off);
}

/* The data paths hold sp->io shared: a re-base (ic_rebase.c) swaps the point's images
 * only between requests. */
ssize_t ic_session_read(struct ic_spoint *sp, int file, struct ic_cache_stream *st, void *buf,
			size_t len, uint64_t off)
{
	ssize_t n;

	pthread_rwlock_rdlock(&sp->io);
	n = ic_session_read_held(sp, file, st, buf, len, off);
	pthread_rwlock_unlock(&sp->io);
	return n;
}

struct write_arg {
	struct ic_session *s;
	struct base_arg a;
};

static ssize_t write_ov(void *arg, const void *buf, size_t len, uint64_t off)
{
	struct write_arg *w = arg;
	struct ic_overlay *ov = ic_session_ov_load(w->a.sp, w->a.file);
	int ret = 0;

	if (!ov) {
		pthread_mutex_lock(&w->s->lock);
		ov = ic_session_ov_get(w->s, w->a.sp, w->a.file, true, &ret);
		pthread_mutex_unlock(&w->s->lock);
		if (!ov)
			return ret ? ret : -EIO;
	}
	return ic_overlay_write(ov, buf, len, off, base_read, &w->a);
}

static ssize_t write_locked(struct ic_session *s, struct ic_spoint *sp, int file,
			    struct ic_cache_stream *st, const void *buf, size_t len, uint64_t off)
{
	struct write_arg w = { .s = s, .a = { .sp = sp, .file = file, .st = st } };
	struct ic_promote *pr = ic_promote_of(sp, file);
	ssize_t n;

	if (!s->o.overlay_dir || ic_session_ov_of(file) < 0)
		return -EROFS;
	if (pr)     /* mirrored to DEST while copying, DEST alone once switched */
		n = ic_promote_write(pr, file, buf, len, off, write_ov, &w);
	else
		n = write_ov(&w, buf, len, off);
	/* handed over (the watcher sets it under s->lock): not news */
	if (n < 0 && !(n == -EROFS && __atomic_load_n(&sp->ov_released, __ATOMIC_RELAXED)))
		ic_session_log(s, LOG_ERR, "restore point '%s': write to %s: %s", sp->name,
			       ic_disk_file_name(file), ic_last_error((int)n));
	return n;
}

ssize_t ic_session_write(struct ic_session *s, struct ic_spoint *sp, int file,
			 struct ic_cache_stream *st, const void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	pthread_rwlock_rdlock(&sp->io);
	n = write_locked(s, sp, file, st, buf, len, off);
	pthread_rwlock_unlock(&sp->io);
	return n;
}

int ic_session_fsync(struct ic_session *s, struct ic_spoint *sp, int file)
{
	struct ic_overlay *ov = ic_session_ov_load(sp, file);
	struct ic_promote *pr = ic_promote_of(sp, file);
	int ret;

	if (pr && ic_promote_switched(pr))
		return ic_promote_fsync(pr);
	if (!ov)
		return 0;
	ret = ic_overlay_fsync(ov);
	if (!ret && pr)
		ret = ic_promote_fsync(pr);
	if (ret)
		ic_session_log(s, LOG_ERR, "restore point '%s': fsync of %s: %s", sp->name,
			       ic_disk_file_name(file), ic_last_error(ret));
	return ret;
}

/* Does block b read as zero without being stored (no entry, or a zero entry)?  A lookup
 * is owner[b] plus one binary search; one that fails counts as data (its read fails). */
static bool block_zero(const struct ic_view *v, uint64_t b)
{
	struct ic_block_ref ref;

	if (v->owner && !v->owner[b])
		return true;
	return ic_view_lookup(v, b, &ref) == 0 && !ref.img;
}

/* The block map's run from off: zero blocks or stored ones. */
static uint64_t map_extent(const struct ic_view *v, uint64_t off, uint64_t len, bool *zero)
{
	uint64_t bs = v->block_size, b = off / bs, end = off + len, last, stop;

	if (b >= v->nblocks) {
		*zero = false;
		return len;
	}
	*zero = block_zero(v, b);
	last = (end + bs - 1) / bs;
	if (last > v->nblocks)
		last = v->nblocks;
	while (++b < last && block_zero(v, b) == *zero)
		;
	stop = b * bs;
	return (stop < end ? stop : end) - off;
}

static uint64_t extent_locked(struct ic_spoint *sp, uint64_t off, uint64_t len, bool *zero)
{
	struct ic_overlay *ov = ic_session_ov_load(sp, IC_DISK_RAW);
	uint64_t n;

	if (ic_promote_of(sp, IC_DISK_RAW)) {      /* DEST's bytes are not mapped: data */
		*zero = false;
		return len;
	}
	if (ov) {
		bool present;

		n = ic_overlay_extent(ov, off, len, &present);
		if (present) {
			*zero = false;
			return n;
		}
		len = n;
	}
	return map_extent(sp->view, off, len, zero);
}

uint64_t ic_session_extent(struct ic_spoint *sp, uint64_t off, uint64_t len, bool *zero)
{
	uint64_t n;

	pthread_rwlock_rdlock(&sp->io);
	n = extent_locked(sp, off, len, zero);
	pthread_rwlock_unlock(&sp->io);
	return n;
}
