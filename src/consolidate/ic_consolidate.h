/* ic_consolidate.h: keyless, crash-safe merging of restore points (imgconsolidate):
 * the planner (merge ranges, retention rules), the executor and the recovery of
 * interrupted runs.  Nothing here decrypts: records are copied byte for byte. */
#ifndef IC_CONSOLIDATE_H
#define IC_CONSOLIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- retention ------------------------------------------------------------------
 *
 * The rules and their order (borg 1.2 "prune" semantics; Proxmox and restic differ
 * only in the details noted):
 *
 *  - The points of the chain that can be read (no missing ancestor) are sorted by
 *    creation time, newest first; equal times by sequence, higher first.
 *  - Each rule has a period function over the creation time in UTC:
 *      last     every point is its own period
 *      hourly   YYYY-MM-DD HH
 *      daily    YYYY-MM-DD
 *      weekly   ISO 8601 week-based year and week (Monday first, week 1 holds the
 *               year's first Thursday), as strftime %G-%V
 *      monthly  YYYY-MM
 *      yearly   YYYY
 *  - The rules run in that order.  A rule with count N walks the sorted list; at the
 *    first point of each new period (the newest point of that period) it keeps the
 *    point and counts it, unless an earlier rule kept that same point, in which case
 *    the period is passed over and not counted.  It stops once N points are counted.
 *  - If a rule ran out of points before counting N, it also keeps the oldest point
 *    (the last of the sorted list), so that the oldest backup ages until newer ones
 *    fill the rule (borg >= 1.2; restic >= 0.16 does the same; Proxmox does not).
 *  - A rule not given (count 0) keeps nothing.  Every given rule keeps the newest
 *    point, so the newest point is always kept.
 *  - A post-snapshot point (the quiesced form of its parent, FORMAT.md 3.2) is not
 *    counted by the rules: its parent is, and the two are kept or dropped together
 *    (also when one of them is kept as a branch).
 *  - A point that is not kept but has kept points in two or more of its child
 *    subtrees is kept too ("branch"): merging it would copy its blocks into every
 *    branch.
 *  - Every other point is merged into its nearest kept descendant, or removed when
 *    it has none.  The base full is a point like the others: when the rules keep it,
 *    it stays; when they do not, it is merged forward into its nearest kept
 *    descendant, which becomes a synthetic full (written in place in the full's file).
 */

enum ic_keep_rule {
	IC_KEEP_LAST,
	IC_KEEP_HOURLY,
	IC_KEEP_DAILY,
	IC_KEEP_WEEKLY,
	IC_KEEP_MONTHLY,
	IC_KEEP_YEARLY,
	IC_KEEP_NRULES,
};

struct ic_retention {
	unsigned keep[IC_KEEP_NRULES];      /* 0: rule not used */
};

bool ic_retention_empty(const struct ic_retention *r);

/* One restore point as the planner sees it.  The caller fills the inputs. */
struct ic_cons_node {
	uint32_t seq;
	uint32_t parent_seq;                /* 0: a full */
	int64_t created;                    /* seconds since the epoch, UTC */
	const char *name;                   /* not owned */
	bool broken;                        /* an ancestor is missing: left alone */
	bool post_snapshot;                 /* the quiesced form of its parent (FORMAT.md 3.2):
					     * the rules count the pair once, by the parent,
					     * and keep or drop both */
	/* outputs */
	bool keep;
	char why[48];                       /* "daily #2, weekly #1", "branch", "oldest" ... */
};

/* Mark nodes[].keep and why[] by the rules above.  The nodes may be in any order.
 * -EINVAL when no rule is given. */
int ic_retention_select(struct ic_cons_node *nodes, size_t n, const struct ic_retention *r);

/* ---- plans ----------------------------------------------------------------------
 *
 * A plan is a list of steps, each run and journaled on its own.  A step removes the
 * set `remove` of points.  Every other point whose parent is in that set (the
 * step's targets) is rewritten to hold the very same disk, seal, sequence, name and
 * creation time, with the blocks of its removed ancestors folded in (newest wins) and
 * the nearest surviving ancestor as its new parent (none: a synthetic full).
 * Targets are computed again when the step runs, so a point added since the plan was
 * made is never lost. */
struct ic_cons_step {
	uint32_t target;                    /* main target, 0 for a removal-only step */
	uint32_t from;                      /* topmost point merged into target */
	uint32_t base;                      /* target's parent afterwards, 0 = none */
	bool in_place;                      /* target written into from's (a full's) file */
	uint32_t *remove;                   /* descending sequence */
	size_t nremove;
	uint32_t *rebase;                   /* other targets (points with other children) */
	size_t nrebase;
};

struct ic_cons_plan {
	struct ic_cons_step *steps;
	size_t nsteps, steps_cap;
};

void ic_cons_plan_free(struct ic_cons_plan *p);

/* Plan from nodes[] whose keep[] is set (ic_retention_select). */
int ic_cons_plan_retention(const struct ic_cons_node *nodes, size_t n, struct ic_cons_plan *p);

/* Plan "--merge FROM..TO": from must be an ancestor of to (or to itself: an empty
 * plan).  The points from .. parent(to) are removed; their other children are rebased.
 * -EINVAL with a message when from is not an ancestor of to. */
int ic_cons_plan_merge(const struct ic_cons_node *nodes, size_t n, uint32_t from, uint32_t to,
		       struct ic_cons_plan *p);

/* ---- running -------------------------------------------------------------------- */

struct ic_consolidate_opts {
	const char *chain_dir;
	const char *merge;                  /* "FROM..TO" or NULL */
	struct ic_retention keep;           /* used when merge is NULL */
	bool dry_run;                       /* print the plan, change nothing */
	bool quiet;                         /* no progress, no plan listing */
	FILE *out;                          /* plan listing (dry run, or before running); NULL: none */
	/* In place, also move the small islands of the full's records left between superseded
	 * ones (fewer, larger holes): 0 where the file system discards the blocks it frees
	 * (mount option "discard"), 1 always, -1 never. */
	int islands;
	bool no_copy_file_range;            /* copy records with pread/pwrite (comparisons) */
	/* Read and check every record moved, also those a file system that shares extents
	 * (XFS reflink, btrfs) clones instead of copying, which are otherwise not read. */
	bool verify;
	/* Seconds to wait for the servers of a point served with a writable overlay to
	 * re-base onto its rewritten image (FORMAT.md 10.8); 0: 60. */
	double rebase_wait;
	/* Never write a target into the full's file (a chain in a bucket, whose objects are
	 * replaced whole: ic_cons_s3.c); the target is a new file like the others. */
	bool no_in_place;
	const char *chain_name;             /* the chain as the plan names it (NULL: chain_dir) */
	/* Called at each named step of a run, NULL: none.  The steps: prepare, copy, written,
	 * commit, rename, renamed, switch, dup, moved, delete, deleted, rebase, punch,
	 * done.  Only the
	 * test build of imgconsolidate sets it (tests/lib/cons_hooks.c: crash and stall). */
	void (*step)(const char *name);
};

/* Where the time of a run goes (wall clock, summed over the steps). */
enum ic_cons_phase {
	IC_CONS_T_PLAN,     /* lock, recovery, chain and plan */
	IC_CONS_T_COPY,     /* flattening: records read, checked, copied; indexes written */
	IC_CONS_T_SYNC,     /* the written targets made durable (fsync) */
	IC_CONS_T_COMMIT,   /* the journal's commit record, durable */
	IC_CONS_T_FINISH,   /* renames, the full's slot switch, removal of merged points */
	IC_CONS_T_PUNCH,    /* holes punched over superseded records */
	IC_CONS_NPHASES
};
extern const char *const ic_cons_phase_names[IC_CONS_NPHASES];

struct ic_consolidate_stats {
	uint32_t steps;
	uint32_t points_merged;             /* removed, their blocks folded into a kept point */
	uint32_t points_removed;            /* removed, no kept point depended on them */
	uint32_t points_rewritten;          /* targets written anew (same content) */
	uint64_t bytes_copied;              /* record bytes copied */
	uint64_t bytes_shared;              /* record bytes cloned (extents shared, not copied) */
	uint64_t bytes_index;               /* index bytes written */
	uint64_t bytes_relocated;           /* of bytes_copied: the full's own records moved */
	int64_t space_freed;                /* allocation of the chain before minus after */
	uint64_t peak_extra;                /* most allocation above the start, at any time */
	uint32_t punches_pending;           /* images whose holes wait for their readers */
	double punch_seconds;               /* of seconds, spent punching holes */
	uint64_t punch_calls;               /* ranges punched as planned by the merge (not
					     * counted: those of a scan of the whole file) */
	double phase_seconds[IC_CONS_NPHASES];  /* of seconds, per phase (ic_cons_phase_names) */
	bool recovered;                     /* an interrupted run was finished or rolled back */
	double seconds;
};

/* Take the chain's lock (refusing with -EBUSY when another writer has it), finish
 * or roll back an interrupted run from CHAIN/journal, retry pending hole punching,
 * then plan and run.  Needs no key.  IC_ECORRUPT when a record, index or header is
 * damaged (nothing visible changed by the step that met it).  A point to remove that is
 * served with a writable overlay is kept and rewritten, and its servers asked to re-base
 * onto the new image; -ETIMEDOUT (naming the server) when one does not within
 * opts.rebase_wait (the merge is done; that server keeps serving the old images).
 * With opts.dry_run: plans and prints only, takes no lock, writes nothing. */
int ic_consolidate(const struct ic_consolidate_opts *o, struct ic_consolidate_stats *st);

/* ---- folding the CDP journal into points, keyless (ic_cons_fold.c; FORMAT.md 15.5) ---- */
struct ic_fold_opts {
	const char *chain_dir;
	int64_t keep_s;             /* sessions with a checkpoint less than this old stay */
	int64_t every_s;            /* older ones: the last checkpoint of each slice this long */
	bool dry_run, quiet;
	/* test build: fold-record (each record copied), fold-written (each point
	 * committed), fold-remove (before a folded session's file is removed) */
	void (*step)(const char *name);
};

struct ic_fold_stats {
	unsigned points, skipped, sessions;
	uint64_t bytes;
};

/* Fold every session of CHAIN/cdp old enough, oldest first, never the newest (the
 * filter's): see ic_cons_fold.c.  Needs no key. */
int ic_fold_cdp(const struct ic_fold_opts *o, struct ic_fold_stats *st);

#endif
