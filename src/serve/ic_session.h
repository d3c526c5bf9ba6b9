/* ic_session.h: a chain served to readers: what every front end (imgmount's FUSE file
 * system, the nbdkit plugin) needs, in one place.
 *
 *   chain scans      the directory rescanned when it changes (a backup or consolidation
 *                    renamed files); every scan still used by an open point kept alive
 *   point table      restore points by name, sorted, `latest` the newest; each point's
 *                    identity (image file, slot generation) and its disk files (ic_disk)
 *   views            built on first use: private indexes, the seal checked with the key,
 *                    the owner map (depth-independent lookups), attached to the cache
 *   cache            one decoded-block cache (readahead, drop-behind) for every point
 *   overlays         OVERLAY/POINT/disk.raw|disk.vmdk|disk-sparse.vmdk .map/.data,
 *                    bound to the point's seal, the point directory locked (flock,
 *                    exclusive) while one is open, so two servers never write one
 *   reads, writes    through the overlay when there is one, else the disk views
 *   extents          a point's zero blocks (block map) minus what its overlay holds
 *
 * The key is checked by the caller (ic_key_unlock_chain); the session only borrows it.
 * Knows nothing of FUSE or NBD.  Threads: s->lock guards the point table, each point's
 * identity, handle count and overlays; a point's view is built under its own mutex.
 * Reads and writes take no session-wide lock.
 */
#ifndef IC_SESSION_H
#define IC_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "ic_cache.h"
#include "ic_disk.h"
#include "ic_overlay.h"

/* Overlays of a point: disk.raw and disk-flat.vmdk show one disk and share one. */
enum { IC_SOV_DISK, IC_SOV_DESC, IC_SOV_SPARSE, IC_SOV_VHD, IC_SOV_VHDX, IC_SOV_N };

static inline int ic_session_ov_of(int file)
{
	switch (file) {
	case IC_DISK_RAW:
	case IC_DISK_FLAT: return IC_SOV_DISK;
	case IC_DISK_DESC: return IC_SOV_DESC;
	case IC_DISK_SPARSE: return IC_SOV_SPARSE;
	case IC_DISK_VHD: return IC_SOV_VHD;
	case IC_DISK_VHDX: return IC_SOV_VHDX;
	default: return -1;
	}
}

struct ic_promote;

/* One scan of the chain directory.  Kept while a point resolved in it is shown or open. */
struct ic_sgen {
	struct ic_chain *chain;
	int refs;                   /* points using it, +1 while current; under s->lock */
	struct ic_sgen *next;
};

struct ic_spoint {
	char name[ICF_NAME_MAX + 1];
	/* identity, replaced by a refresh only while no handle is open, or by a re-base
	 * (ic_rebase.h: s->lock, and mu and io held) */
	struct ic_sgen *gen;
	struct ic_point *pt;
	uint64_t dev, ino, slot_gen;
	struct ic_disk *disk;
	int handles;                /* open handles of this point (s->lock) */
	bool gone;                  /* no longer in the chain: hidden, freed when idle */
	/* overlays, opened lazily and kept while the identity lasts (s->lock to open;
	 * readers load the pointers atomically) */
	struct ic_overlay *ov[IC_SOV_N];
	bool ov_probed[IC_SOV_N];
	bool ov_refused[IC_SOV_N];  /* made on another point: never opened again */
	bool ov_locked;             /* the image's IC_LOCK_OVERLAY byte held */
	int ov_dir_fd;              /* OVERLAY/POINT, flock'ed while an overlay is open; -1 */
	bool ov_busy_said;          /* "in use by another process" logged (once, not per stat) */
	/* live promote of the disk to DEST (ic_promote.h): set once, loaded atomically */
	struct ic_promote *promote;
	bool promote_pin;           /* ic_promote's resume is opening it (under s->lock) */
	/* held shared by each read, write, fsync and extent; exclusive while a re-base
	 * swaps the point's images (ic_rebase.c) */
	pthread_rwlock_t io;
	bool ov_released;           /* handed over to another server: read-only (10.7) */
	char ov_token[33];          /* token of our owner record of OVERLAY/POINT, "" if none */
	double ov_take_failed;      /* ic_now() of the last unanswered take-over, 0: none */
	/* view (mu) */
	pthread_mutex_t mu;
	struct ic_view *view;
	int view_users;
	bool seal_ok;
};

struct ic_session_opts {
	const char *chain_dir;      /* absolute */
	const char *overlay_dir;    /* absolute (created if needed), or NULL: read-only */
	uint64_t cache_bytes;       /* 0: a sixteenth of the memory, 64 MiB to 1 GiB */
	/* Messages (syslog priorities), from any thread; NULL: none. */
	void (*log)(void *arg, int prio, const char *msg);
	void *log_arg;
	/* the owner record and the hand-over (FORMAT.md 10.7, ic_session_owner.c) */
	const char *owner_server;   /* "imgmount" (NULL) or "nbdkit" */
	const char *owner_where;    /* the mount point or the export, for the record */
	bool take_over;             /* an overlay held elsewhere: ask its owner to release it */
	unsigned take_over_wait;    /* seconds to wait for that (0: 30) */
};

struct ic_session {
	struct ic_session_opts o;
	const struct ic_key *key;
	struct ic_cache *cache;
	pthread_mutex_t lock;
	pthread_mutex_t refresh_mu;
	struct ic_sgen *gens;       /* every live scan; the first is current */
	struct ic_spoint **pts;     /* sorted by name; gone ones included while busy */
	size_t npts, pts_cap;
	struct timespec dir_mtime, dir_ctime;
	bool force_rescan;
	char latest[ICF_NAME_MAX + 1];  /* "" when the chain has no point */
	struct timespec latest_time;
	struct ic_rebase *rebase;   /* the re-base requests (writable sessions), or NULL */
	struct ic_swatch *watch;    /* the watcher thread (ic_session_watch.c), or NULL */
	struct ic_scdp *cdp;        /* the CDP journal's checkpoints (ic_session_cdp.h), on first use */
};

/* Scan the chain (keyless: headers and slots only) and check that key (borrowed for the
 * session's life) is this chain's (IC_EKEY).  Creates the overlay directory. */
int ic_session_new(const struct ic_session_opts *o, const struct ic_key *key,
		   struct ic_session **out);
/* Start what needs threads (the cache and its workers) and take the image locks again:
 * call after daemonizing (a fork drops POSIX record locks). */
int ic_session_start(struct ic_session *s);
/* Close every overlay and image, log the cache's statistics (NULL is fine). */
void ic_session_free(struct ic_session *s);
/* Rescan the chain directory when it changed, or always with force (one stat when
 * nothing changed).  Takes s->lock itself. */
int ic_session_refresh(struct ic_session *s, bool force);
/* The point called name[len], or NULL.  Under s->lock. */
struct ic_spoint *ic_session_find(struct ic_session *s, const char *name, size_t len);
/* Points shown (not gone).  Takes s->lock. */
size_t ic_session_npoints(struct ic_session *s);
/* A message through o.log (printf style). */
void ic_session_log(struct ic_session *s, int prio, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Drop a reference to scan g (its images closed when it was the last) and take the
 * image locks of every scan still used again.  Under s->lock (ic_rebase.c). */
void ic_session_gen_put(struct ic_session *s, struct ic_sgen *g);
/* ic_session_owner.c (FORMAT.md 10.7).  OVERLAY/POINT is open on fd: take its flock, or,
 * held elsewhere, refuse (-EBUSY naming the owner) or with take (an open for writing) and
 * o.take_over ask the owner to release it and wait up to o.take_over_wait; then record
 * this process as the owner.  Under s->lock. */
int ic_session_dir_claim(struct ic_session *s, struct ic_spoint *p, int fd, const char *dir,
			 bool take);
/* Close p's point directory (dropping the flock), removing the record if still ours. */
void ic_session_dir_drop(struct ic_session *s, struct ic_spoint *p);
/* After a fork: re-record the held directories under this pid. */
void ic_session_owner_adopt(struct ic_session *s);
/* Answer the release requests of the held directories (commit, EROFS from then on, record
 * the newcomer, drop the flock): every IC_WATCH_OWNER_TICKS ticks of the watcher. */
void ic_session_owner_poll(struct ic_session *s);

/* ic_session_watch.c: the one thread of a writable session (started by ic_session_start,
 * after daemonizing; stopped by ic_session_free) that answers release requests
 * (ic_session_owner_poll) and re-base requests (ic_rebase_tick). */
#define IC_WATCH_TICK_MS 100
#define IC_WATCH_OWNER_TICKS 2
int ic_session_watch_start(struct ic_session *s);
void ic_session_watch_stop(struct ic_session *s);

/* Open file of point p for a reader: pin p (handles), open its overlay (created when
 * write), build its view (seal checked once per identity).  Called under s->lock, which
 * it drops while the view is built.  0 or -errno (-EROFS: write without an overlay,
 * -EBUSY: the overlay is served by another process). */
int ic_session_open(struct ic_session *s, struct ic_spoint *p, int file, bool write);
/* Make ic_disk_size(p->disk, file) final (disk-sparse.vmdk's depends on which grains hold
 * data: the point's view is built once if needed).  Under s->lock, dropped meanwhile with
 * the point pinned; 0 or the view's error. */
int ic_session_size_file(struct ic_session *s, struct ic_spoint *p, int file);
/* Undo ic_session_open (takes s->lock; rescans when one waited for p to be idle). */
void ic_session_close(struct ic_session *s, struct ic_spoint *p, int file);

/* The overlay of file of p: opened if it exists on disk, or created when create.  NULL
 * (*ret 0) when there is none.  Under s->lock. */
struct ic_overlay *ic_session_ov_get(struct ic_session *s, struct ic_spoint *p, int file,
				     bool create, int *ret);
/* The overlay of file of p if open (no lock: an atomic load). */
struct ic_overlay *ic_session_ov_load(struct ic_spoint *p, int file);
/* Size of file as its reader sees it (the overlay's when there is one; disk-flat.vmdk over
 * the disk's overlay padded to whole sectors). */
uint64_t ic_session_size(struct ic_spoint *p, int file);

/* Read up to len bytes of file of open point p at off (short at EOF); st is the
 * reader's readahead state (may be NULL).  The byte count or -errno (IC_ECORRUPT for a
 * block that failed authentication: the whole request fails). */
ssize_t ic_session_read(struct ic_spoint *p, int file, struct ic_cache_stream *st, void *buf,
			size_t len, uint64_t off);
/* ic_session_read for a caller that already holds p->io shared (the promote's copier,
 * which takes it before its range lock: the lock order is io, then range). */
ssize_t ic_session_read_held(struct ic_spoint *p, int file, struct ic_cache_stream *st,
			     void *buf, size_t len, uint64_t off);
/* Write through the overlay (created if needed); -EROFS without one.  len or -errno. */
ssize_t ic_session_write(struct ic_session *s, struct ic_spoint *p, int file,
			 struct ic_cache_stream *st, const void *buf, size_t len, uint64_t off);
/* Make every write to file's overlay durable (0 without an overlay). */
int ic_session_fsync(struct ic_session *s, struct ic_spoint *p, int file);

/* From off, the run of disk.raw bytes (<= len, > 0) of open point p that read as zero
 * without being stored (*zero true: a zero block of the map that no overlay block
 * covers) or that are data.  Block-map granularity; O(1) per block. */
uint64_t ic_session_extent(struct ic_spoint *p, uint64_t off, uint64_t len, bool *zero);

#endif
