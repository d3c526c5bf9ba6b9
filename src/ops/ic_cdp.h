/* ic_cdp.h: continuous data protection, the journal of every write to a disk
 * (FORMAT.md section 15): the writer the nbdkit filter drives, and the reader behind
 * `imgrestore --at`.  Nothing here knows nbdkit. */
#ifndef IC_CDP_H
#define IC_CDP_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ic_keys.h"

/* ---- writer ---- */
#define IC_CDP_RAW_BITS 7200
struct ic_cdp_writer;

struct ic_cdp_writer_opts {
	const char *chain_dir;
	uint32_t block_size;        /* 0: the chain's (its images'), else 65536 */
	int level;                  /* zstd level, 0: the default (3) */
	int threads;                /* encoders of ic_cdp_put_range, 0: 1 */
	/* a block whose sampled byte entropy is at least raw_bits / 1000 bits a byte is
	 * stored uncompressed without trying zstd; 0: IC_CDP_RAW_BITS, above 8000: never */
	unsigned raw_bits;
	uint32_t version;           /* 0: ICF_CDP_VERSION; 1: the old format (tests: still read) */
};

/* Prepare a writer for chain_dir with key (unlocked by the caller; borrowed until
 * ic_cdp_writer_free): checks the chain directory, the key against the chain's images,
 * and creates CHAIN/cdp if missing.  No journal file yet. */
int ic_cdp_writer_new(const struct ic_cdp_writer_opts *o, const struct ic_key *key,
		      struct ic_cdp_writer **out);
/* Start the session: a new journal file CHAIN/cdp/NNNNNNNN.cdp for a disk of
 * disk_size bytes, header written and synced.  Then interval 0 (the capture) is open. */
int ic_cdp_writer_start(struct ic_cdp_writer *w, uint64_t disk_size);
/* Close the session and start a new one (as ic_cdp_writer_start): after a failure
 * (on-error=gap) with gap_since, when journalling stopped, which the new header records
 * with the session before it (FORMAT.md 15.4); NULL for a rotation without a gap. */
int ic_cdp_writer_restart(struct ic_cdp_writer *w, uint64_t disk_size,
			  const struct timespec *gap_since);
/* Bytes the session journalled after its checkpoint 0 (the capture not counted). */
uint64_t ic_cdp_session_bytes(const struct ic_cdp_writer *w);
/* Remove the oldest sessions of the chain's journal (never the writer's own), oldest
 * first: while more than keep remain (0: no count cap), and while the session's last
 * checkpoint is max_age seconds old or older (0: no age cap; read without the key, a
 * session without a checkpoint by its header's time, an unreadable one stops it).
 * Returns how many were removed, or a negative errno. */
int ic_cdp_prune(struct ic_cdp_writer *w, unsigned keep, int64_t max_age);
/* The writer's sticky failure (0: none). */
int ic_cdp_failed(const struct ic_cdp_writer *w);
uint32_t ic_cdp_block_size(const struct ic_cdp_writer *w);
/* The session's file (after start), for messages. */
const char *ic_cdp_path(const struct ic_cdp_writer *w);
/* Journal block pos's whole content buf[len] (len: the block's length in the disk's
 * geometry): a zero frame when it is all zero (unless skip_zero: nothing), else a
 * record.  Not yet durable. */
int ic_cdp_put_block(struct ic_cdp_writer *w, uint64_t pos, const void *buf, uint32_t len,
		     bool skip_zero);
/* The same for the n consecutive whole blocks from pos0 in buf (each at (p - pos0) x
 * block size; the disk's short last block shorter), encoded by the writer's threads
 * and journalled in position order. */
int ic_cdp_put_range(struct ic_cdp_writer *w, uint64_t pos0, uint64_t n, const uint8_t *buf,
		     bool skip_zero);
/* Deferred capture: blocks pos0 .. pos0 + n - 1 changed on the disk beneath; their
 * content is journalled by ic_cdp_put_dirty (before the next checkpoint), as the disk
 * then reads, unless journalled before (a block journalled is no longer dirty). */
int ic_cdp_mark_dirty(struct ic_cdp_writer *w, uint64_t pos0, uint64_t n);
/* How many blocks are dirty. */
uint64_t ic_cdp_dirty_count(const struct ic_cdp_writer *w);
/* Journal every dirty block in position order, its content read by read(arg, pos, buf,
 * len) (the whole block, len bytes), encoded by the writer's threads.  A read failure
 * is returned as is (the blocks stay dirty); a journal failure is the writer's. */
int ic_cdp_put_dirty(struct ic_cdp_writer *w,
		     int (*read)(void *arg, uint64_t pos, void *buf, uint32_t len), void *arg);
/* End the interval: a checkpoint frame with the current time, then fdatasync.  Only
 * when it returned 0 is everything journalled before it durable.  *when gets the
 * checkpoint's time (may be NULL).  After any failure the writer refuses everything
 * (the journal would have a gap). */
int ic_cdp_checkpoint(struct ic_cdp_writer *w, struct timespec *when);
void ic_cdp_writer_free(struct ic_cdp_writer *w);

/* ---- reader ---- */
struct ic_cdp_restore_opts {
	const char *chain_dir;
	const char *dest;               /* a new regular file */
	const char *passphrase_file;
	struct timespec at;             /* the last checkpoint at or before it */
	bool quiet;
	bool accept_rollback;           /* a key file older than the key holder saw */
};

struct ic_cdp_restore_stats {
	uint32_t session;
	uint64_t interval;
	struct timespec when;           /* the checkpoint restored */
	uint64_t disk_size, records;
	double seconds;
};

/* Write the disk as of the last checkpoint at or before o->at to o->dest.  -ENOENT
 * "no checkpoint at or before TIME"; IC_ECORRUPT (naming the checkpoints affected) when
 * the journal fails authentication on the way; no DEST is left on failure. */
int ic_cdp_restore(const struct ic_cdp_restore_opts *o, struct ic_cdp_restore_stats *st);

/* Every checkpoint of every session, in order (sessions ascending), after the unlock
 * and a scan that verifies them (o->at and o->dest unused). */
struct ic_cdp_ckpt_info {
	uint32_t session;
	uint64_t interval;
	struct timespec when;
	bool ok;                        /* the MAC chain verified up to it: restorable */
	bool time_ok;                   /* its time verified */
	uint32_t gap_prev;              /* the first of a session after a gap: the session before */
	struct timespec gap_since;      /* with gap_prev: when journalling stopped */
};
int ic_cdp_checkpoints(const struct ic_cdp_restore_opts *o,
		       int (*fn)(void *arg, const struct ic_cdp_ckpt_info *c), void *arg);

/* Parse TIME: seconds since the epoch "[@]S[.FRACTION]" or UTC "YYYY-MM-DD[T ]HH:MM:SS[.F][Z]". */
int ic_cdp_parse_time(const char *s, struct timespec *out);

#endif
