/* ic_cdp_range.c: journalling a range of blocks (a large write) with the blocks encoded
 * by worker threads, each with its own codec, and appended in position order. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cdp.h"
#include "ic_array.h"
#include "ic_cdp_int.h"
#include "ic_error.h"
#include "ic_pool.h"

#define CHUNK 64u                   /* blocks encoded between two appends */

struct job {
	struct ic_cdp_writer *w;
	uint64_t pos0;
	const uint64_t *posv;           /* the blocks' positions; NULL: pos0 + i */
	uint32_t n;
	const uint8_t *buf;
	bool skip_zero;
	atomic_uint next, tid, erred;
	struct ic_error err;            /* the first worker's failure */
};

static size_t slot_size(const struct ic_cdp_writer *w)
{
	return sizeof(struct icf_cdp_rec) + ic_codec_bound(w->h.block_size);
}

static void *worker(void *arg)
{
	struct job *j = arg;
	struct ic_cdp_writer *w = j->w;
	const struct ic_cdp_codec *codec = &w->codecs[atomic_fetch_add(&j->tid, 1) % w->nthreads];
	unsigned i;

	while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
		uint64_t pos = j->posv ? j->posv[i] : j->pos0 + i;
		int r = ic_cdp_encode_frame(w, codec, pos, j->buf + (size_t)i * w->h.block_size,
					    ic_cdp_block_len(w, pos), j->skip_zero,
					    w->slots + i * slot_size(w));

		if (r < 0) {
			if (!atomic_exchange(&j->erred, 1))
				ic_error_save(&j->err, r);
			atomic_store(&j->next, j->n);
			break;
		}
		w->lens[i] = (uint32_t)r;
	}
	return NULL;
}

static int setup(struct ic_cdp_writer *w)
{
	unsigned t;

	if (w->codecs)
		return 0;
	w->codecs = calloc(w->nthreads, sizeof(*w->codecs));
	w->slots = malloc(CHUNK * slot_size(w));
	w->lens = calloc(CHUNK, sizeof(*w->lens));
	if (!w->codecs || !w->slots || !w->lens)
		goto nomem;
	for (t = 0; t < w->nthreads; t++)
		if (ic_cdp_codec_new(w, &w->codecs[t]))
			goto nomem;
	return 0;
nomem:
	ic_cdp_range_free(w);
	return -ENOMEM;
}

/* Encode the n (<= CHUNK) blocks of buf (block i at i x block size: pos0 + i, or posv[i])
 * with the workers, then append them in order. */
static int put_chunk(struct ic_cdp_writer *w, uint64_t pos0, const uint64_t *posv, uint32_t n,
		     const uint8_t *buf, bool skip_zero)
{
	struct job j = { .w = w, .pos0 = pos0, .posv = posv, .n = n, .skip_zero = skip_zero,
			 .buf = buf };
	struct ic_pool p = { 0 };
	uint32_t i;
	int ret;

	atomic_init(&j.next, 0);
	atomic_init(&j.tid, 0);
	atomic_init(&j.erred, 0);
	memset(w->lens, 0, CHUNK * sizeof(*w->lens));
	if (n > 1 && w->nthreads > 1)
		ic_pool_start(&p, n < w->nthreads ? n : w->nthreads, worker, &j);
	if (p.n == 0)
		worker(&j);         /* no thread started: encode here */
	ic_pool_join(&p);
	ret = ic_error_raise(&j.err);
	if (ret) {
		if (!w->failed)
			w->failed = ret;
		return ret;
	}
	for (i = 0; i < n; i++)
		if (w->lens[i] && (ret = ic_cdp_append_frame(w, w->slots + i * slot_size(w))))
			return ret;
	return 0;
}

int ic_cdp_put_range(struct ic_cdp_writer *w, uint64_t pos0, uint64_t n, const uint8_t *buf,
		     bool skip_zero)
{
	uint64_t done;
	int ret;

	if (w->failed)
		return w->failed;
	if (n < 2 || w->nthreads < 2) {
		for (done = 0; done < n; done++) {
			ret = ic_cdp_put_block(w, pos0 + done, buf + done * w->h.block_size,
					       ic_cdp_block_len(w, pos0 + done), skip_zero);
			if (ret)
				return ret;
		}
		return 0;
	}
	ret = setup(w);
	if (ret)
		return ret;
	for (done = 0; done < n; done += CHUNK) {
		ret = put_chunk(w, pos0 + done, NULL, (uint32_t)(n - done < CHUNK ? n - done : CHUNK),
				buf + done * w->h.block_size, skip_zero);
		if (ret)
			return ret;
	}
	return 0;
}

int ic_cdp_dirty_reset(struct ic_cdp_writer *w)
{
	size_t words = (size_t)((w->nblocks + 63) / 64);

	free(w->dirty_bits);
	w->dirty.n = 0;
	w->ndirty = 0;
	w->dirty_bits = calloc(words ? words : 1, sizeof(*w->dirty_bits));
	return w->dirty_bits ? 0 : -ENOMEM;
}

int ic_cdp_mark_dirty(struct ic_cdp_writer *w, uint64_t pos0, uint64_t n)
{
	uint64_t pos;

	if (w->failed)
		return w->failed;
	/* a block changed but not marked would be missing from the next checkpoint: every
	 * failure here is the writer's (sticky) */
	if (!w->dirty_bits || pos0 > w->nblocks || n > w->nblocks - pos0)
		return w->failed = ic_fail(-EINVAL, "%s: blocks %llu+%llu outside the disk",
					   ic_cdp_path(w), (unsigned long long)pos0,
					   (unsigned long long)n);
	for (pos = pos0; pos < pos0 + n; pos++) {
		if (w->dirty_bits[pos / 64] >> (pos % 64) & 1)
			continue;
		if (ic_array_push(&w->dirty, pos))
			return w->failed = ic_fail(-ENOMEM, "%s: no memory for a deferred block",
						   ic_cdp_path(w));
		w->dirty_bits[pos / 64] |= 1ull << (pos % 64);
		w->ndirty++;
	}
	return 0;
}

void ic_cdp_dirty_free(struct ic_cdp_writer *w)
{
	free(w->dirty_bits);
	ic_array_free(&w->dirty);
	free(w->dirty_buf);
	w->dirty_buf = NULL;
	w->dirty_bits = NULL;
	w->ndirty = 0;
}

uint64_t ic_cdp_dirty_count(const struct ic_cdp_writer *w)
{
	return w->ndirty;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int ic_cdp_put_dirty(struct ic_cdp_writer *w,
		     int (*read)(void *arg, uint64_t pos, void *buf, uint32_t len), void *arg)
{
	uint64_t posv[CHUNK];
	size_t i = 0, k = 0;
	/* blocks read between two encodes: 64, at most 16 MiB */
	uint32_t most = w->h.block_size >= (16u << 20) / CHUNK ? (16u << 20) / w->h.block_size
							       : CHUNK;
	uint8_t *buf;
	int ret = 0;

	if (w->failed)
		return w->failed;
	if (!w->ndirty) {
		w->dirty.n = 0;
		return 0;
	}
	ret = setup(w);
	if (!ret && !w->dirty_buf)
		w->dirty_buf = malloc((size_t)most * w->h.block_size);
	if (ret || !w->dirty_buf)
		return -ENOMEM;
	buf = w->dirty_buf;
	/* in position order, the blocks still dirty (a block journalled since is not) */
	for (i = 0; i < w->dirty.n; i++)
		if (w->dirty_bits[w->dirty.v[i] / 64] >> (w->dirty.v[i] % 64) & 1)
			w->dirty.v[k++] = w->dirty.v[i];
	w->dirty.n = k;
	qsort(w->dirty.v, k, sizeof(*w->dirty.v), cmp_u64);
	for (i = 0; !ret && i < k;) {
		uint32_t n = 0;

		for (; n < most && i < k; n++, i++) {
			posv[n] = w->dirty.v[i];
			ret = read(arg, posv[n], buf + (size_t)n * w->h.block_size,
				   ic_cdp_block_len(w, posv[n]));
			if (ret)
				break;
		}
		if (!ret)
			ret = put_chunk(w, 0, posv, n, buf, false);
	}
	if (ret)        /* the dirty blocks not journalled stay dirty (the list is rebuilt) */
		return ret;
	w->dirty.n = 0;
	return 0;
}

void ic_cdp_range_free(struct ic_cdp_writer *w)
{
	unsigned t;

	if (w->codecs)
		for (t = 0; t < w->nthreads; t++)
			ic_cdp_codec_free(&w->codecs[t]);
	free(w->codecs);
	free(w->slots);
	free(w->lens);
	w->codecs = NULL;
	w->slots = NULL;
	w->lens = NULL;
}
