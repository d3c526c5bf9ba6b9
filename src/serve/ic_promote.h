/* ic_promote.h: live promote of a served disk to production storage (a block device or a
 * file, DEST), while the guest keeps writing through the mount.
 *
 *   copying    a thread copies the disk (chain plus overlay, as the guest reads it) to
 *              DEST chunk by chunk; every guest write goes to the overlay AND to DEST
 *              before it is acknowledged (write-blocking mirror, as qemu's blockdev-mirror
 *              copy-mode=write-blocking); a chunk is range-locked while the copier reads
 *              and writes it and while a guest write to it lands, so the copier never
 *              writes DEST bytes older than a write it already mirrored.  A guest fsync
 *              flushes the overlay, the disk of record until the switch (a crash before
 *              it copies again from the overlay): DEST is flushed once, at the switch.
 *   switched   once the copy passed the end: writes paused, the overlay committed (its
 *              files never change again), DEST flushed, the state file
 *              says switched (then, as block-job-complete, the disk is DEST's alone):
 *              reads, writes and fsyncs of disk.raw and disk-flat.vmdk go to DEST; the
 *              chain and the overlay are no longer read or written for that disk.
 *   failed     DEST could not be written (or reopened): the promote stops, the overlay
 *              stays the disk (it holds every write); the state file is removed, except
 *              after the switch, where the disk then fails every I/O rather than serve
 *              the stale overlay.
 *
 * The state file OVERLAY/POINT/promote.state (FORMAT.md 18) is written atomically (fsync,
 * rename, fsync of the directory) when a promote starts and at the switch; a daemon that
 * restarts with the same overlay resumes: copying starts again from the first byte,
 * switched serves DEST (its identity checked).  Knows nothing of FUSE. */
#ifndef IC_PROMOTE_H
#define IC_PROMOTE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ic_session.h"

#define IC_PROMOTE_CHUNK (1u << 20)     /* copied under one range lock */
#define IC_PROMOTE_PIECE (64u << 10)    /* read through the session at once */
#define IC_PROMOTE_STATE "promote.state"
#define IC_PROMOTE_DEST_MAX 4000u

enum ic_promote_phase {
	IC_PROMOTE_NONE,
	IC_PROMOTE_COPYING,
	IC_PROMOTE_SWITCHED,
	IC_PROMOTE_FAILED,
};

/* ---- pure parts (unit-tested) ---------------------------------------------------------- */

/* The state file's content (FORMAT.md 18). */
struct ic_promote_state {
	int phase;                  /* IC_PROMOTE_COPYING or IC_PROMOTE_SWITCHED */
	uint64_t size;              /* bytes of the disk promoted */
	uint64_t dev, ino, rdev;    /* DEST's st_dev, st_ino, st_rdev when it was opened */
	uint64_t rate;              /* copy limit, bytes a second (0: none) */
	char dest[IC_PROMOTE_DEST_MAX + 1];     /* absolute path */
};

/* The text of st, NUL-terminated, in buf; its length, or -ENAMETOOLONG/-EINVAL (a dest
 * that is not absolute or holds a control byte). */
int ic_promote_state_encode(const struct ic_promote_state *st, char *buf, size_t cap);
/* Parse the text buf[len]: 0, or IC_ECORRUPT (a message naming what) for anything that is
 * not exactly what encode writes. */
int ic_promote_state_decode(const char *buf, size_t len, struct ic_promote_state *st);

/* Ranges [lo, hi) held by threads; a lock waits until no held range overlaps its own. */
#define IC_RANGE_MAX 64u
struct ic_range_lock {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t lo[IC_RANGE_MAX], hi[IC_RANGE_MAX];
	bool used[IC_RANGE_MAX];
	uint64_t waits;             /* locks that had to wait (statistics) */
};
void ic_range_lock_init(struct ic_range_lock *rl);
void ic_range_lock_destroy(struct ic_range_lock *rl);
/* The slot held, for ic_range_unlock. */
int ic_range_lock(struct ic_range_lock *rl, uint64_t lo, uint64_t hi);
void ic_range_unlock(struct ic_range_lock *rl, int slot);

/* ---- the engine ------------------------------------------------------------------------ */

struct ic_promote;

/* The promote of sp's disk when file is disk.raw or disk-flat.vmdk (no lock). */
static inline struct ic_promote *ic_promote_of(struct ic_spoint *sp, int file)
{
	if (file != IC_DISK_RAW && file != IC_DISK_FLAT)
		return NULL;
	return __atomic_load_n(&sp->promote, __ATOMIC_ACQUIRE);
}

/* Start promoting sp's disk to dest (absolute; a file is created if missing and grown to
 * the disk's size, a block device must be at least that large), copying at most rate
 * bytes a second (0: no limit; guest writes are never limited).  The disk's overlay is
 * created and the point pinned for the daemon's life.  0, -EALREADY (a promote to that
 * dest already runs or ran), -EBUSY (one to another dest), or -errno with a message.
 * Takes s->lock. */
int ic_promote_start(struct ic_session *s, struct ic_spoint *sp, const char *dest,
		      uint64_t rate);
/* After the session started: resume every promote whose state file the overlay directory
 * holds (logged; a failure leaves that disk as the state says: see failed above). */
void ic_promote_resume_all(struct ic_session *s);
/* Stop the copy threads and close DEST of every promote (before ic_session_free). */
void ic_promote_stop_all(struct ic_session *s);

/* The status line "phase=P copied=N size=N dest=PATH[ error=MESSAGE]", or "phase=none". */
int ic_promote_status(struct ic_spoint *sp, char *buf, size_t cap);
enum ic_promote_phase ic_promote_phase(struct ic_promote *pr);

/* The data path of a promoted disk (pr from ic_promote_of).  ov_write writes through the
 * overlay (arg its argument); used only while copying. */
typedef ssize_t (*ic_promote_write_fn)(void *arg, const void *buf, size_t len, uint64_t off);
bool ic_promote_switched(struct ic_promote *pr);
ssize_t ic_promote_read(struct ic_promote *pr, int file, void *buf, size_t len, uint64_t off);
ssize_t ic_promote_write(struct ic_promote *pr, int file, const void *buf, size_t len,
			 uint64_t off, ic_promote_write_fn ov_write, void *arg);
/* After the overlay's fsync (copying) or instead of it (switched): flush DEST when it
 * must be (switched, or a failed attempt to record the switch); else 0. */
int ic_promote_fsync(struct ic_promote *pr);
/* Size of file while promoted (fixed: the disk's size when the promote started). */
uint64_t ic_promote_size(struct ic_promote *pr, int file);
/* Truncate: 0 to the same size, -EPERM otherwise (the size is fixed while promoted). */
int ic_promote_truncate(struct ic_promote *pr, int file, uint64_t size);

/* info.json of a point with a promote: the point's own, with a "promote" member. */
ssize_t ic_promote_info_read(struct ic_spoint *sp, void *buf, size_t len, uint64_t off);
uint64_t ic_promote_info_size(struct ic_spoint *sp);

#endif
