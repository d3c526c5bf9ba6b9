/* ic_cons_int.h: declarations shared by the modules of consolidation (internal).
 *
 *   ic_consolidate.c   the run: recovery first, then each step prepared and committed
 *   ic_cons_plan.c     planner: retention, merge and retention plans, the printed plan
 *   ic_cons_write.c    writer: a target's block map flattened, its records copied
 *   ic_cons_clone.c    its records cloned instead where the file system shares extents
 *   ic_cons_check.c    the thread checking the records copied
 *   ic_cons_finish.c   roll back / roll forward a step, hole punching, recovery
 *   ic_cons_reclaim.c  the ranges an in-place merge frees in the full, planned as it is written
 *   ic_cons_journal.c  CHAIN/journal, read and written
 *   ic_cons_rebase.c   points served with a writable overlay: kept, re-base requests
 *   ic_cons_util.c     crash test hook, paths, messages
 *
 * Dependencies point down this list; none of them knows the tools. */
#ifndef IC_CONS_INT_H
#define IC_CONS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#include "ic_array.h"
#include "ic_error.h"
#include "ic_pool.h"
#include "ic_consolidate.h"
#include "imgchain_format.h"

struct ic_chain;
struct ic_image;
struct ic_point;

#define IC_CONS_TMP_TARGET ".tmp-cons-"   /* + seq + ".img": a target written, not yet renamed */

/* ---- small helpers (ic_cons_util.c) ---- */

/* Lists of sequence numbers: ic_array_push (0 or -ENOMEM), ic_array_free. */
struct u32v IC_ARRAY_BODY(uint32_t);

static inline bool u32_has(const uint32_t *v, size_t n, uint32_t x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == x)
			return true;
	return false;
}

/* A point a server served writable and did not re-base (FORMAT.md 10.8): kept. */
struct cons_stale {
	uint32_t seq;
	uint8_t seal[ICF_SEAL_LEN];
};
struct stalev IC_ARRAY_BODY(struct cons_stale);

static inline bool in_set(const struct u32v *v, uint32_t seq)
{
	return u32_has(v->v, v->n, seq);
}

static inline int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

struct cons;
/* Step NAME of the run reached: the caller's step hook (ic_consolidate_opts.step). */
void ic_cons_step(struct cons *x, const char *name);
/* malloc'd paths of image seq and of its temporary target; NULL: no memory. */
char *ic_cons_seq_path(const char *dir, uint32_t seq);
char *ic_cons_tmp_path(const char *dir, uint32_t seq);
uint64_t ic_cons_dir_alloc(const char *dir);
/* ic_lock_describe on one line (a command line may hold newlines). */
void ic_cons_describe(pid_t pid, char *buf, size_t len);

/* ---- the journal (ic_cons_journal.c) ---- */

enum { J_IDLE, J_PREPARE, J_COMMIT };

struct journal {
	int phase;
	struct u32v remove;
	bool inplace;
	uint32_t ip_file, ip_target;
	uint64_t ip_d0;
	bool have_slot;
	struct icf_slot ip_slot;
	struct u32v tseq, tbase;
	struct u32v punch;
	struct u32v bg;             /* (not written) of punch: left to a background process */
};

void ic_cons_journal_reset_step(struct journal *j);
void ic_cons_journal_destroy(struct journal *j);
int ic_cons_journal_write(const char *dir, const struct journal *j);
/* Read CHAIN/journal; a missing journal is an idle one. */
int ic_cons_journal_read(const char *dir, struct journal *j);
/* Decode a journal's text (buf[len] is overwritten with a NUL: len + 1 bytes). */
int ic_cons_journal_decode(char *buf, size_t len, struct journal *j, const char *path);

/* ---- the space an in-place merge frees (ic_cons_reclaim.c) ---- */

struct ic_view;

struct rspan {
	uint64_t off, len;
};
struct reclaim_plan {
	bool valid;
	uint32_t seq;               /* the target whose slot it was planned for, */
	uint8_t index_hash[ICF_INDEX_HASH_LEN];    /* and that slot's index */
	uint32_t blk;               /* whole blocks of this size are punched */
	uint64_t bytes;             /* of the spans */
	IC_ARRAY(struct rspan) spans;       /* ascending, whole blocks */
};

void ic_reclaim_reset(struct reclaim_plan *rp);
/* The spans of the full (vt->path[0]) that an in-place merge leaves unused below limit
 * (its old data_end), given the full's records it relocates (reloc, may be NULL): the
 * stretches between two records it keeps, in file order, that lost a record to the merge,
 * and the stretch after the last kept record (the old index).  Valid only if the full had
 * no unused block left allocated before the merge (not on the journal's punch list). */
int ic_reclaim_plan(struct reclaim_plan *rp, const struct ic_view *vt, const uint8_t *reloc,
		    uint64_t limit, uint32_t blk);
/* Add the whole blocks inside [off, off + len) (a gap of a cluster cloned in place). */
int ic_reclaim_add(struct reclaim_plan *rp, uint64_t off, uint64_t len);
/* Does the plan describe img as it is now (its slot's seq and index)? */
bool ic_reclaim_applies(const struct reclaim_plan *rp, const struct ic_image *img);
/* Punch the plan's spans in img (open O_RDWR); *calls counts the fallocate calls. */
int ic_reclaim_run(const struct reclaim_plan *rp, struct ic_image *img, uint64_t *calls);

/* ---- a run (ic_consolidate.c) ---- */

struct cons {
	const struct ic_consolidate_opts *o;
	struct ic_consolidate_stats *st;
	const char *dir;
	struct journal j;
	uint64_t alloc0;
	uint64_t shared_alloc;      /* of the allocation: blocks shared with other files */
	double t0;                  /* when the run started */
	struct stalev stale;        /* points kept for servers that did not re-base */
	struct reclaim_plan rp;     /* what the last in-place step freed in the full */
};

void ic_cons_note(struct cons *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the planner (ic_cons_plan.c) ---- */

/* The plan of chain c for x's options, printed when asked; *nodes for the caller to free. */
int ic_cons_make_plan(struct cons *x, struct ic_chain *c, struct ic_cons_node **nodes,
		      struct ic_cons_plan *plan);

/* ---- the record checker (ic_cons_check.c) ---- */

struct check_job {
	struct check_job *next;
	const struct ic_image *src;
	size_t n;
	struct icf_entry ents[];
};

struct checker {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct check_job *head, **tail;
	bool done;                  /* no more jobs will come */
	struct ic_error err;        /* the first failure, raised by the copier */
	uint8_t *buf;
	size_t buflen;
	struct ic_pool pool;
};

/* 0 and the thread running, or an error (the caller checks in line instead). */
int ic_checker_start(struct checker *k, size_t buflen);
/* Queue ents[0..n) of src; the checker's failure so far, if any (the copier stops). */
int ic_checker_push(struct checker *k, const struct ic_image *src,
		    const struct icf_entry *ents, size_t n);
/* No more jobs: wait until every queued record was checked.  The first failure. */
int ic_checker_finish(struct checker *k);

/* ---- records shared rather than copied (ic_cons_clone.c) ---- */

struct ic_writer;
struct icf_entry;

struct crec {                   /* a record the target takes */
	uint64_t off, pos, hash;    /* in its source image (level lvl of the target's path) */
	uint64_t k;                 /* the order in which the flattening met it */
	uint32_t len, lvl;
};
struct cclus {                  /* recs [a, b): one cluster, cloned whole to dst */
	size_t a, b;
	uint64_t dst;
};
struct clone_plan {
	IC_ARRAY(struct crec) recs; /* added in the flattening's order, then sorted */
	IC_ARRAY(struct cclus) clus;
	uint64_t *dst;              /* by k: each record's offset in the target */
	struct icf_entry *run;      /* entries handed to a copy or a check */
	uint64_t shared, copied;    /* record bytes cloned, copied (the clone was refused) */
	uint64_t alloc;             /* bytes of the blocks cloned, less the gaps punched */
};
struct clone_ops {
	bool verify;                /* read and check the records cloned too */
	/* queue records for the checker thread; NULL: check them here (in buf) */
	int (*check)(void *arg, const struct ic_image *src, const struct icf_entry *ents,
		     size_t n);
	int (*done)(void *arg, uint64_t bytes);     /* after each cluster (progress, hook) */
	struct reclaim_plan *defer; /* valid: gaps added to it, punched after the commit */
	void *arg;
	void *buf;
	size_t buflen;
};

void ic_clone_reset(struct clone_plan *p);
void ic_clone_free(struct clone_plan *p);
/* The next record the target takes from level lvl (entry e of that level's index). */
int ic_clone_add(struct clone_plan *p, uint32_t lvl, const struct icf_entry *e);
/* Clusters and each record's place (p->dst), from start; *end: where the records end. */
int ic_clone_layout(struct clone_plan *p, const struct ic_writer *w, uint64_t start,
		    uint64_t *end);
/* Clone each cluster from levels[lvl] into w (punching its gaps, or adding them to
 * ops->defer), or copy and check its records where the file system refuses. */
int ic_clone_run(struct clone_plan *p, struct ic_writer *w, struct ic_image *const *levels,
		 const struct clone_ops *ops);

/* ---- the writer (ic_cons_write.c) ---- */

struct tgt {
	struct ic_point *p;
	uint32_t seq, base, fl;
	bool in_place;
	struct ic_image *rw;        /* in place: the full's image, opened O_RDWR */
	struct icf_slot slot;       /* the target's new slot (generation set on writing) */
};

/* Write target t: to CHAIN/.tmp-cons-SEQ.img, or appended to t->rw in place (the
 * slot is not switched here).  Adds the bytes written and the time taken to x->st. */
int ic_cons_write_target(struct cons *x, struct ic_chain *c, struct tgt *t);

/* ---- finishing a step, recovery (ic_cons_finish.c) ---- */

int ic_cons_rollback(struct cons *x);
int ic_cons_finish_commit(struct cons *x, bool recovering);
int ic_cons_punch(struct cons *x);
int ic_cons_recover(struct cons *x);

/* ---- points served with a writable overlay (ic_cons_rebase.c; FORMAT.md 10.8) ---- */

struct cons_served {
	uint32_t seq;
	uint8_t seal[ICF_SEAL_LEN];
	char name[ICF_NAME_MAX + 1];
	int fd;                     /* its image before the step (a target's: replaced), or -1 */
};

struct cons_rebase {
	IC_ARRAY(struct cons_served) pts;
};

/* Before a step: a point of c in the set to remove that a server holds with a writable
 * overlay (image byte 1) is kept (taken out of in_d, noted): the step rewrites it onto
 * the surviving ancestor instead (same content and seal). */
void ic_cons_rebase_pin(struct cons *x, struct ic_chain *c, bool *in_d);
/* Then: every served point whose path the step changes, for the request; of those whose
 * own image the step replaces (its parent removed), the old image kept open. */
int ic_cons_rebase_collect(struct ic_chain *c, const bool *in_d, struct cons_rebase *rb);
/* After the step: CHAIN/rebase written, then wait (bounded) until no server holds byte 1
 * of a replaced image any more; the request removed.  -ETIMEDOUT naming the server. */
int ic_cons_rebase_ask(struct cons *x, struct cons_rebase *rb);
void ic_cons_rebase_free(struct cons_rebase *rb);
/* At the start of a run: the points an earlier run's servers did not re-base onto (its
 * request's `stale` lines), kept by ic_cons_rebase_pin until their server answers. */
void ic_cons_rebase_load(struct cons *x);
/* Forget those that are gone from c, or whose new image a server locks (it re-based). */
void ic_cons_rebase_resolve(struct cons *x, struct ic_chain *c);
/* At the end: CHAIN/rebase holds only those `stale` lines, or is removed. */
void ic_cons_rebase_save(struct cons *x);

#endif
