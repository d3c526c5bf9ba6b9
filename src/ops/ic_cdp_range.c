/* ic_cdp_range.c: journalling a range of blocks (a large write) with the blocks encoded
 * by worker threads, each with its own codec, and appended in position order. */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cdp.h"
#include "ic_cdp_int.h"
#include "ic_error.h"
#include "ic_pool.h"

#define CHUNK 64u                   /* blocks encoded between two appends */

struct job {
	struct ic_cdp_writer *w;
	uint64_t pos0;
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
		uint64_t pos = j->pos0 + i;
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
		struct job j = { .w = w, .pos0 = pos0 + done, .skip_zero = skip_zero,
				 .buf = buf + done * w->h.block_size };
		struct ic_pool p = { 0 };
		uint32_t i;

		j.n = (uint32_t)(n - done < CHUNK ? n - done : CHUNK);
		atomic_init(&j.next, 0);
		atomic_init(&j.tid, 0);
		atomic_init(&j.erred, 0);
		memset(w->lens, 0, CHUNK * sizeof(*w->lens));
		ic_pool_start(&p, w->nthreads, worker, &j);
		if (p.n == 0)
			worker(&j);         /* no thread started: encode here */
		ic_pool_join(&p);
		ret = ic_error_raise(&j.err);
		if (ret) {
			if (!w->failed)
				w->failed = ret;
			return ret;
		}
		for (i = 0; i < j.n; i++)
			if (w->lens[i] && (ret = ic_cdp_append_frame(w, w->slots + i * slot_size(w))))
				return ret;
	}
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
