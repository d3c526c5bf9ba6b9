/* ic_promote_int.h: what the promote engine's halves share (not installed):
 * ic_promote.c (DEST, state file, copy thread, switch, life) and ic_promote_io.c (the
 * data path of a promoted disk, its status, info.json). */
#ifndef IC_PROMOTE_INT_H
#define IC_PROMOTE_INT_H

#include "ic_promote.h"

struct ic_promote {
	struct ic_session *s;
	struct ic_spoint *sp;
	char *dir;                  /* OVERLAY/POINT: the state file's directory */
	struct ic_promote_state st;
	int fd;                     /* DEST, -1 when it could not be reopened after the switch */
	bool regular;               /* DEST is a regular file: zero chunks punched */
	bool dest_bad;              /* atomic: an fdatasync of DEST failed once switched */
	bool unsure;                /* atomic: recording the switch failed, maybe after the
				     * rename: DEST is flushed with the overlay until it passes */
	int phase;                  /* enum ic_promote_phase, atomic */
	uint64_t copied;            /* bytes of this run of the copy, atomic */
	bool stop;                  /* atomic: the copier ends */
	pthread_t thr;
	bool thr_started;
	pthread_rwlock_t sw;        /* I/O shared, the switch exclusive */
	struct ic_range_lock rl;
	pthread_mutex_t mu;         /* err */
	char err[256];
	struct ic_promote *prev;    /* a failed one this replaced (readers may hold it) */
};

/* DEST failed while copying: stop mirroring, the overlay stays the disk (ic_promote.c).
 * False when the promote was no longer copying (switched meanwhile, or failed already). */
bool ic_promote_fail_copy(struct ic_promote *pr, const char *what, int ret);

#endif
