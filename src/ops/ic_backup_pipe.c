/* ic_backup_pipe.c: the backup pipeline: workers read, digest, compress and encrypt
 * batches of blocks in parallel (a ring of batches, 2 x threads + 2); the calling thread
 * writes them in order. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "ic_backup_int.h"
#include "ic_pool.h"
#include "ic_progress.h"
#include "ic_util.h"

/* A batch spans at most SPAN_BATCHES times the blocks it may read, and SPAN_BLOCKS
 * (a bound on its entries: 1 MiB) unless it may read more */
#define SPAN_BATCHES 64u
#define SPAN_BLOCKS 16384u

/* ---- workers ------------------------------------------------------------- */

static uint32_t block_len(const struct job *j, uint64_t b)
{
	return b + 1 < j->nblocks ? j->bs : (uint32_t)(j->disk_size - b * j->bs);
}

/* pref: the parent's block at this position (zero ref when unmapped or past its end);
 * slot: how many blocks of the batch before this one were read (its place in plain). */
static int process_block(struct job *j, struct ic_codec *codec, struct batch *bt, uint32_t i,
			 uint32_t slot, const struct ic_block_ref *prefp)
{
	uint64_t pos = bt->first + i;
	uint32_t len = block_len(j, pos);
	uint8_t *plain = bt->plain + (size_t)slot * j->bs;
	struct icf_entry *e = &bt->ents[i];
	struct ic_block_ref pref = *prefp;
	bool pzero = true, zero;    /* beyond the parent's end nothing is inherited */
	uint8_t d[ICF_DIGEST_LEN];
	int ret;

	if (j->pv && pos < j->pv->nblocks)
		pzero = pref.img == NULL && pref.e.plain_len == len;
	if (j->plan[pos] == PLAN_STAGED) {
		const struct staged *sg = ic_backup_staged(j, pos);

		if (!sg)
			return ic_fail(-EINVAL, "head start: block %llu was not staged",
				       (unsigned long long)pos);
		*e = sg->e;
		bt->act[i] = sg->act == ACT_DATA ? ACT_STAGED : sg->act;
		return 0;
	}
	if (j->plan[pos] == PLAN_SKIP) {
		bt->act[i] = ACT_INHERIT;
		*e = pref.e;
		return 0;
	}
	zero = j->plan[pos] == PLAN_HOLE || ic_is_zero(plain, len);
	if (zero) {
		bt->act[i] = pzero ? ACT_INHERIT : ACT_ZERO;
		memset(e, 0, sizeof(*e));
		e->pos = pos;
		e->plain_len = len;
		e->origin = j->seq;
		e->origin_id = j->point_id;
		e->keygen = j->keygen;
		return 0;
	}
	if (pref.img && pref.e.plain_len == len) {
		/* the parent's digest, under its own key: only compared, never written anew */
		ic_codec_digest(j->key, j->version, &pref.e, plain, d);
		if (!sodium_memcmp(d, pref.e.digest, ICF_DIGEST_LEN)) {
			bt->act[i] = ACT_INHERIT;
			*e = pref.e;
			return 0;
		}
	}
	memset(e, 0, sizeof(*e));
	e->pos = pos;
	e->origin = j->seq;
	e->origin_id = j->point_id;    /* fresh: no one-time digest key is used twice */
	e->keygen = j->keygen;         /* the newest generation: revoked keys cannot read it */
	ret = ic_codec_encode(codec, j->key, j->chain_id, j->version, plain, len,
			      bt->rec + (size_t)slot * j->bound, e);
	if (ret)
		return ret;
	ic_codec_digest(j->key, j->version, e, plain, e->digest);
	bt->act[i] = ACT_DATA;
	return 0;
}

static int process_batch(struct job *j, struct ic_codec *codec, struct ic_view_cursor *cur,
			 struct batch *bt)
{
	struct ic_block_ref next, pref;
	uint64_t pend = 0, len = 0;
	uint32_t i = 0, slot = 0, nrd = 0;
	int have = 0, ret;

	/* the runs of blocks to read, packed into plain, asked of the source together */
	while (i < bt->n) {
		uint32_t n = 0;
		size_t rlen = 0;

		while (i + n < bt->n && j->plan[bt->first + i + n] == PLAN_READ)
			rlen += block_len(j, bt->first + i + n++);
		if (n) {
			bt->rd[nrd++] = (struct ic_source_rd){ .buf = bt->plain + (size_t)slot * j->bs,
							       .len = rlen,
							       .off = (bt->first + i) * j->bs };
			slot += n;
			len += rlen;
		}
		i += n ? n : 1;
	}
	ret = nrd ? ic_source_read_many(j->src, bt->rd, nrd) : 0;
	if (ret)
		return ret;
	bt->bytes_read = len;
	slot = 0;
	/* the parent's blocks of this batch, in order, from a cursor over its private
	 * indexes (checked against its seal before any batch started) */
	if (cur) {
		pend = bt->first + bt->n < j->pv->nblocks ? bt->first + bt->n : j->pv->nblocks;
		ic_view_cursor_seek(cur, bt->first);
		have = ic_view_cursor_next(cur, pend, &next);
	}
	for (i = 0; i < bt->n; i++) {
		uint64_t pos = bt->first + i;

		if (have < 0)
			return have;
		memset(&pref, 0, sizeof(pref));
		if (have && next.e.pos == pos) {
			pref = next;
			have = ic_view_cursor_next(cur, pend, &next);
		} else if (cur && pos < j->pv->nblocks) {
			pref.e.pos = pos;
			pref.e.plain_len = ic_view_block_len(j->pv, pos);
		}
		ret = process_block(j, codec, bt, i, slot, &pref);
		if (ret)
			return ret;
		slot += j->plan[pos] == PLAN_READ;
	}
	return have < 0 ? have : 0;
}

/* The batch from block first: up to per_batch blocks to read and span_max in all (the
 * blocks not read, holes and the parent's of an incremental, cost only their entries: a
 * 1% dirty bitmap's scattered blocks come per_batch to a batch, asked at once). */
static uint32_t batch_span(const struct job *j, uint64_t first)
{
	uint64_t left = j->nblocks - first;
	uint32_t max = left < j->span_max ? (uint32_t)left : j->span_max, n = 0, reads = 0;

	while (n < max && reads < j->per_batch)
		reads += j->plan[first + n++] == PLAN_READ;
	return n;
}

static void *worker(void *arg)
{
	struct job *j = arg;
	struct ic_codec *codec = ic_codec_new(j->bs, j->o->level);
	struct ic_view_cursor *cur = NULL;
	int cret = j->pv ? ic_view_cursor_open(j->pv, &cur) : 0, ret;

	pthread_mutex_lock(&j->mu);
	while (!j->stop && j->next_first < j->nblocks) {
		uint64_t k = j->next;
		struct batch *bt = &j->ring[k % j->nring];

		if (bt->state != 0) {
			pthread_cond_wait(&j->cv, &j->mu);
			continue;
		}
		j->next++;
		bt->state = 1;
		bt->k = k;
		bt->first = j->next_first;
		bt->n = batch_span(j, bt->first);
		j->next_first += bt->n;
		pthread_mutex_unlock(&j->mu);

		ret = codec && !cret ? process_batch(j, codec, cur, bt) : -ENOMEM;
		ic_error_save(&bt->err, ret);

		pthread_mutex_lock(&j->mu);
		bt->state = 2;
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	ic_view_cursor_free(cur);
	ic_codec_free(codec);
	return NULL;
}

/* ---- the writer (calling thread) ------------------------------------------ */

/* Head start: append the new records, keep every processed block's entry for later. */
static int stage(struct job *j, struct batch *bt, struct ic_writer *w)
{
	for (uint32_t i = 0, slot = 0; i < bt->n; i++) {
		uint64_t pos = bt->first + i, off;
		uint32_t s = slot;
		struct staged *sg;
		int ret;

		slot += j->plan[pos] == PLAN_READ;
		if (j->plan[pos] == PLAN_SKIP)
			continue;
		sg = ic_array_add(&j->staged);
		if (!sg)
			return ic_fail(-ENOMEM, "out of memory");
		sg->pos = pos;
		sg->act = bt->act[i];
		sg->e = bt->ents[i];
		if (bt->act[i] == ACT_DATA) {
			ret = ic_writer_append(w, bt->rec + (size_t)s * j->bound, sg->e.stored_len,
					       &off);
			if (ret)
				return ret;
			sg->e.offset = off;
		}
	}
	return 0;
}

static int consume(struct job *j, struct batch *bt, struct ic_writer *w, struct ic_seal *seal,
		   struct ic_backup_stats *st)
{
	int ret;

	st->bytes_read += bt->bytes_read;
	if (j->staging)
		return stage(j, bt, w);
	for (uint32_t i = 0, slot = 0; i < bt->n; i++) {
		struct icf_entry *e = &bt->ents[i];
		uint32_t s = slot;
		uint64_t off;

		slot += j->plan[bt->first + i] == PLAN_READ;
		switch (bt->act[i]) {
		case ACT_DATA:
			ret = ic_writer_append(w, bt->rec + (size_t)s * j->bound, e->stored_len, &off);
			if (ret)
				return ret;
			/* the record is in the file now, as a staged one is */
			e->offset = off;
			/* fall through */
		case ACT_STAGED:
			ret = ic_writer_add_entry(w, e);
			if (ret)
				return ret;
			st->blocks_changed++;
			st->bytes_changed += e->plain_len;
			st->bytes_stored += e->stored_len;
			ic_seal_add(seal, e);
			break;
		case ACT_ZERO:
			ret = ic_writer_add_entry(w, e);
			if (ret)
				return ret;
			st->blocks_zeroed++;
			break;
		default:
			ic_seal_add(seal, e);    /* inherited: a no-op for zero blocks */
			break;
		}
	}
	return 0;
}

int ic_backup_pipeline(struct job *j, struct ic_writer *w, struct ic_seal *seal,
		       struct ic_backup_stats *st)
{
	unsigned nthreads = j->threads;
	struct ic_pool pool = { 0 };
	struct ic_progress prog;
	int ret = 0;

	bool last = false;

	j->next = j->next_first = 0;    /* the head start runs the pipeline twice */
	j->stop = false;
	j->nring = nthreads * 2 + 2;
	j->per_batch = BATCH_BYTES / j->bs ? BATCH_BYTES / j->bs : 1;
	j->span_max = j->per_batch * SPAN_BATCHES < SPAN_BLOCKS ? j->per_batch * SPAN_BATCHES
								 : SPAN_BLOCKS;
	if (j->span_max < j->per_batch)
		j->span_max = j->per_batch;
	j->ring = calloc(j->nring, sizeof(*j->ring));
	if (!j->ring)
		return -ENOMEM;
	for (unsigned r = 0; r < j->nring; r++) {
		struct batch *bt = &j->ring[r];

		bt->plain = malloc((size_t)j->per_batch * j->bs);
		bt->rec = malloc((size_t)j->per_batch * j->bound);
		bt->rd = calloc(j->per_batch, sizeof(*bt->rd));
		bt->ents = calloc(j->span_max, sizeof(*bt->ents));
		bt->act = calloc(j->span_max, 1);
		if (!bt->plain || !bt->rec || !bt->rd || !bt->ents || !bt->act) {
			ret = -ENOMEM;
			goto out;
		}
	}
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	if (ic_pool_start(&pool, nthreads, worker, j))
		ret = -EAGAIN;
	ic_progress_init(&prog, "backup", j->disk_size, j->o->quiet);
	for (uint64_t k = 0; !ret && !last; k++) {
		struct batch *bt = &j->ring[k % j->nring];

		pthread_mutex_lock(&j->mu);
		while (!(bt->state == 2 && bt->k == k) && pool.n)
			pthread_cond_wait(&j->cv, &j->mu);
		pthread_mutex_unlock(&j->mu);
		if (!pool.n)
			break;
		if (bt->err.code)
			ret = ic_error_raise(&bt->err);
		else if (ic_interrupted)
			ret = ic_fail(-EINTR, "interrupted");
		else
			ret = consume(j, bt, w, seal, st);
		/* before the slot is handed back: a worker refills bt->first and bt->n */
		ic_progress_update(&prog, (bt->first + bt->n) * (uint64_t)j->bs > j->disk_size
					  ? j->disk_size : (bt->first + bt->n) * (uint64_t)j->bs);
		last = bt->first + bt->n >= j->nblocks;
		pthread_mutex_lock(&j->mu);
		bt->state = 0;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->mu);
	}
	ic_progress_done(&prog);
	pthread_mutex_lock(&j->mu);
	j->stop = true;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	ic_pool_join(&pool);
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
out:
	for (unsigned r = 0; r < j->nring; r++) {
		free(j->ring[r].plain);
		free(j->ring[r].rec);
		free(j->ring[r].rd);
		free(j->ring[r].ents);
		free(j->ring[r].act);
	}
	free(j->ring);
	return ret;
}

