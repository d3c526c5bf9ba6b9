/* ic_cache_ra.c: the block cache's readahead: worker threads decoding queued blocks,
 * records asked of the kernel ahead (POSIX_FADV_WILLNEED), sequential streams whose
 * window grows and whose consumed blocks are dropped behind them (ic_cache_read). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cache_int.h"
#include "ic_util.h"

/* A worker's job: decode block pos unless it is a zero block or cached already. */
static void job_run(struct ic_cache_src *s, uint64_t pos)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct ic_centry *e;
	struct shard *sh;
	bool created;
	uint16_t o;

	if (pos >= v->nblocks || !(o = v->owner[pos]))
		return;
	if (ic_view_lookup(v, pos, &br) || !br.img)
		return;    /* a damaged entry is reported to the reader that needs it */
	e = cache_entry_get(s, (uint16_t)(o - 1), &br.e, false, &created, &sh);
	if (!e)
		return;
	if (created)
		cache_entry_load(s, sh, e, pos);
	cache_entry_put(s->c, sh, e, false);
}

static void *worker_main(void *arg)
{
	struct ic_cache *c = arg;

	pthread_mutex_lock(&c->qmu);
	for (;;) {
		struct job j;

		while (!c->stop && !c->qlen)
			pthread_cond_wait(&c->qcv, &c->qmu);
		if (c->stop)
			break;
		j = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % QUEUE_CAP;
		c->qlen--;
		if (!j.src)
			continue;
		pthread_mutex_unlock(&c->qmu);
		job_run(j.src, j.pos);
		pthread_mutex_lock(&c->qmu);
		c->ra_done++;
		if (--j.src->jobs == 0 && j.src->dying)
			pthread_cond_broadcast(&c->qdone);
	}
	pthread_mutex_unlock(&c->qmu);
	return NULL;
}

/* Is block pos worth queueing: a data block not yet in the table?  *br: its record. */
static bool wants_decode(struct ic_cache_src *s, uint64_t pos, struct ic_block_ref *brp)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct shard *sh;
	uint16_t o = v->owner[pos];
	uint64_t h, dev, ino;
	bool found;

	if (!o || ic_view_lookup(v, pos, &br) || !br.img)
		return false;
	dev = s->dev[o - 1];
	ino = s->ino[o - 1];
	h = cache_key_hash(dev, ino, br.e.offset);
	sh = &s->c->shards[h & (NSHARDS - 1)];
	pthread_mutex_lock(&sh->mu);
	found = cache_table_find(sh, h, dev, ino, br.e.offset, br.e.rec_hash) != NULL;
	pthread_mutex_unlock(&sh->mu);
	*brp = br;
	return !found;
}

/* Records about to be decoded are asked of the kernel at once (POSIX_FADV_WILLNEED),
 * ranges of one image a little apart joined: the kernel's own readahead follows one
 * file, while a deep chain's newest blocks are single records spread over many. */
#define WILLNEED_GAP (128u << 10)
struct willneed {
	int fd;
	uint64_t start, end;
};

static void willneed_flush(struct willneed *w)
{
	if (w->fd >= 0 && w->end > w->start && ic_image_remote)
		ic_image_remote->prefetch(ic_image_remote->arg, w->fd, w->start, w->end - w->start);
	else if (w->fd >= 0 && w->end > w->start)
		(void)posix_fadvise(w->fd, (off_t)w->start, (off_t)(w->end - w->start),
				    POSIX_FADV_WILLNEED);
	w->fd = -1;
}

static void willneed_add(struct willneed *w, const struct ic_block_ref *br)
{
	uint64_t s = br->e.offset, e = br->e.offset + br->e.stored_len;

	if (w->fd == br->img->fd && s >= w->start && s <= w->end + WILLNEED_GAP) {
		if (e > w->end)
			w->end = e;
		return;
	}
	willneed_flush(w);
	w->fd = br->img->fd;
	w->start = s;
	w->end = e;
}

/* Queue n jobs of s under one lock, waking as many workers as there are jobs: false when
 * the queue is full (the rest dropped) or the source is going away. */
static bool queue_jobs(struct ic_cache_src *s, const uint64_t *pos, unsigned n)
{
	struct ic_cache *c = s->c;
	unsigned i = 0;

	if (!n)
		return true;
	pthread_mutex_lock(&c->qmu);
	for (; i < n && c->qlen < QUEUE_CAP && !s->dying; i++) {
		c->q[(c->qhead + c->qlen) % QUEUE_CAP] = (struct job){ .src = s, .pos = pos[i] };
		c->qlen++;
		s->jobs++;
		c->ra_queued++;
	}
	if (i < n)
		c->ra_dropped++;
	if (i >= c->pool.n)
		pthread_cond_broadcast(&c->qcv);
	else
		for (unsigned k = 0; k < i; k++)
			pthread_cond_signal(&c->qcv);
	pthread_mutex_unlock(&c->qmu);
	return i == n;
}

void ic_cache_prefetch(struct ic_cache_src *s, uint64_t first, uint64_t count)
{
	struct ic_cache *c = s->c;
	struct willneed w = { .fd = -1 };
	uint64_t end = first + count, batch[PREFETCH_BATCH];
	unsigned n = 0;

	if (!c->pool.n)
		return;
	if (end > s->v->nblocks || end < first)
		end = s->v->nblocks;
	for (uint64_t pos = first; pos < end; pos++) {
		struct ic_block_ref br;

		if (!wants_decode(s, pos, &br))
			continue;
		willneed_add(&w, &br);
		batch[n++] = pos;
		if (n < PREFETCH_BATCH)
			continue;
		/* the kernel first, so that the records are on their way when a worker starts */
		willneed_flush(&w);
		if (!queue_jobs(s, batch, n))
			return;
		n = 0;
	}
	willneed_flush(&w);
	queue_jobs(s, batch, n);
}

/* Sequential detection: a read starting near where the previous one ended.  True when
 * the stream is steady (its readahead window grew to the largest). */
static bool stream_advance(struct ic_cache_src *s, struct ic_cache_stream *st, uint64_t off,
			   uint64_t len, uint64_t last)
{
	struct ic_cache *c = s->c;
	uint64_t prev = __atomic_load_n(&st->next_off, __ATOMIC_RELAXED);
	uint32_t max_win = c->o.readahead_bytes / c->bs;
	uint32_t win = __atomic_load_n(&st->window, __ATOMIC_RELAXED);
	uint64_t ra_end = __atomic_load_n(&st->ra_end, __ATOMIC_RELAXED);
	bool seq = prev && off + RA_SLACK >= prev && off <= prev + RA_SLACK;
	uint64_t from, to;

	if (off + len > prev || !seq)
		__atomic_store_n(&st->next_off, off + len, __ATOMIC_RELAXED);
	if (!seq) {
		__atomic_store_n(&st->window, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&st->hits, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&st->ra_end, 0, __ATOMIC_RELAXED);
		return false;
	}
	if (max_win < 1)
		max_win = 1;
	if (!win)
		win = RA_START_BYTES / c->bs ? RA_START_BYTES / c->bs : 1;
	else if (win < max_win)
		win *= 2;
	if (win > max_win)
		win = max_win;
	__atomic_store_n(&st->window, win, __ATOMIC_RELAXED);
	__atomic_add_fetch(&st->hits, 1, __ATOMIC_RELAXED);
	from = ra_end > last + 1 ? ra_end : last + 1;
	to = last + 1 + win;
	if (to > s->v->nblocks)
		to = s->v->nblocks;
	/* top the window up only when half of it was consumed, so jobs go out in batches */
	if (from >= to || (ra_end > last + 1 && ra_end - (last + 1) > win / 2))
		return win == max_win;
	__atomic_store_n(&st->ra_end, to, __ATOMIC_RELAXED);
	ic_cache_prefetch(s, from, to - from);
	return win == max_win;
}

/* A whole data block a steady stream wants and nobody has decoded: straight into the
 * reader's buffer (cache_decode_direct).  0: done, else the table's path. */
static int read_direct(struct ic_cache_src *s, uint64_t pos, void *out)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	uint16_t o = v->owner[pos];

	if (!o || ic_view_lookup(v, pos, &br) || !br.img || br.e.plain_len != s->c->bs)
		return 1;
	return cache_decode_direct(s, (uint16_t)(o - 1), &br, out);
}

int ic_cache_read(struct ic_cache_src *s, struct ic_cache_stream *st, void *buf, size_t len,
		  uint64_t off)
{
	const uint32_t bs = s->c->bs;
	uint8_t *p = buf;
	uint64_t first, last;
	bool steady = false;

	if (!len)
		return 0;
	if (off > s->v->disk_size || len > s->v->disk_size - off)
		return ic_fail(-EINVAL, "read past the end of the disk");
	first = off / bs;
	last = (off + len - 1) / bs;
	if (st)
		steady = stream_advance(s, st, off, len, last);
	if (last > first)
		ic_cache_prefetch(s, first + 1, last - first);
	for (uint64_t pos = first; pos <= last; pos++) {
		struct ic_cache_ref ref;
		uint64_t boff = pos == first ? off % bs : 0;
		size_t n = bs - boff < len ? (size_t)(bs - boff) : len;
		int ret;

		if (steady && n == bs && !read_direct(s, pos, p)) {
			p += n;
			len -= n;
			continue;
		}
		ret = ic_cache_get(s, pos, &ref);
		if (ret)
			return ret;
		memcpy(p, ref.data + boff, n);
		/* a steady stream read the block to its end: drop-behind (blocks used by
		 * other readers stay) */
		cache_ref_put(s, &ref, steady && boff + n == bs);
		p += n;
		len -= n;
	}
	return 0;
}

int cache_workers_start(struct ic_cache *c)
{
	unsigned n = c->o.workers < 0 ? 0 : ic_thread_cap(c->o.workers, 0);

	c->q = calloc(QUEUE_CAP, sizeof(*c->q));
	if (!c->q)
		return -ENOMEM;
	return ic_pool_start(&c->pool, n, worker_main, c);
}

