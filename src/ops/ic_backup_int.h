/* ic_backup_int.h: what the backup's two halves share (not installed).
 * ic_backup.c plans and sets up a backup (source, holes, changed blocks, key, name,
 * parent, the new image's header and slot); ic_backup_pipe.c runs the pipeline. */
#ifndef IC_BACKUP_INT_H
#define IC_BACKUP_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ic_backup.h"
#include "ic_array.h"
#include "ic_codec.h"
#include "ic_error.h"
#include "ic_image.h"
#include "ic_keys.h"
#include "ic_source.h"
#include "ic_view.h"


enum plan { PLAN_READ = 0, PLAN_HOLE = 1, PLAN_SKIP = 2, PLAN_STAGED = 3 };
/* ACT_STAGED: a record the head start appended already; only its entry is added */
enum action { ACT_INHERIT = 0, ACT_ZERO = 1, ACT_DATA = 2, ACT_STAGED = 3 };

/* A block the head start processed: what it found and the entry it made. */
struct staged {
	uint64_t pos;
	uint8_t act;
	struct icf_entry e;
};

#define BATCH_BYTES (4u << 20)

struct batch {
	uint64_t k;                 /* batch number */
	int state;                  /* 0 free, 1 working, 2 done */
	uint64_t first;
	uint32_t n;                 /* blocks: at most per_batch of them read, span_max in all */
	uint8_t *plain;             /* the blocks read (PLAN_READ), one after the other */
	uint8_t *rec;               /* their records, the k-th block read's at k * bound */
	struct ic_source_rd *rd;    /* the runs read, all asked at once */
	struct icf_entry *ents;     /* n: new entry (DATA/ZERO) or the parent's (INHERIT) */
	uint8_t *act;
	uint64_t bytes_read;
	struct ic_error err;        /* the worker's failure, raised by the writer */
};

struct job {
	const struct ic_backup_opts *o;
	struct ic_source *src;
	unsigned threads;           /* workers */
	uint64_t disk_size, nblocks;
	uint32_t bs, bound, seq, per_batch, span_max;
	uint32_t version;           /* image format: the parent's, ICF_IMAGE_VERSION for a full */
	uint64_t point_id;          /* v2: this point's id, the origin_id of its records */
	uint16_t keygen;            /* v2: the key generation it encrypts and seals under */
	uint8_t *plan;
	struct ic_view *pv;         /* parent view or NULL */
	struct ic_key *key;
	uint8_t chain_id[ICF_ID_LEN];
	bool staging;               /* head start: records appended, entries kept in staged */
	IC_ARRAY(struct staged) staged;  /* ascending pos */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t next, next_first;  /* the next batch: its number, its first block */
	struct batch *ring;
	unsigned nring;
	bool stop;
};

/* The bitmap bookkeeping (ic_source_track.c, FORMAT.md section 16): refuse a dirty bitmap
 * that was not recorded for the parent point (seq, seal, name); record that bitmap name
 * tracks the writes made after point (seq, seal, name). */
int ic_bitmap_check(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t seq,
		    const uint8_t seal[ICF_SEAL_LEN], const char *name);
/* The sequence of the point bitmap was recorded for: 0, or -ENOENT (none, or no record). */
int ic_bitmap_point(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t *seq);
int ic_bitmap_record(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t seq,
		     const uint8_t seal[ICF_SEAL_LEN], const char *name);

/* The head start (ic_backup_head.c): with j->src the live disk and j->plan the blocks
 * dirty since the parent, stage them; run the snapshot command; switch j->src to the
 * snapshot and plan what is left: the late blocks, the staged ones, the parent's. */
int ic_backup_head_start(struct job *j, struct ic_writer *w, struct ic_seal *seal,
			 struct ic_backup_stats *st);
const struct staged *ic_backup_staged(const struct job *j, uint64_t pos);

/* The pipeline: workers (j->threads) read, digest, compress and encrypt batches of
 * blocks; the calling thread appends them to w in order and adds them to the seal. */
int ic_backup_pipeline(struct job *j, struct ic_writer *w, struct ic_seal *seal,
		       struct ic_backup_stats *st);

#endif
