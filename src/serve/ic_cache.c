/* ic_cache.c: the shared decoded-block cache: its life, sources, block references and
 * statistics.  The table is ic_cache_table.c, readahead ic_cache_ra.c (ic_cache_int.h). */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "ic_cache_int.h"
#include "ic_util.h"

/* ---- public: blocks ------------------------------------------------------------------ */

int ic_cache_get(struct ic_cache_src *s, uint64_t pos, struct ic_cache_ref *ref)
{
	const struct ic_view *v = s->v;
	struct ic_block_ref br;
	struct ic_centry *e;
	struct shard *sh;
	bool created;
	uint16_t o;
	int ret;

	memset(ref, 0, sizeof(*ref));
	if (pos >= v->nblocks)
		return ic_fail(-EINVAL, "block %llu past the end of the disk",
			       (unsigned long long)pos);
	o = v->owner[pos];
	if (o) {
		ret = ic_view_lookup(v, pos, &br);
		if (ret) {
			cache_report(s->c, ret);
			return ret;
		}
	}
	if (!o || !br.img) {
		ref->data = s->c->zeros;
		ref->len = ic_view_block_len(v, pos);
		return 0;
	}
	e = cache_entry_get(s, (uint16_t)(o - 1), &br.e, true, &created, &sh);
	if (!e)
		return ic_fail(-ENOMEM, "no memory for the block cache");
	if (created)
		cache_entry_load(s, sh, e, pos);
	if (e->err) {
		ret = e->err;
		cache_entry_put(s->c, sh, e, false);
		return ret;
	}
	ref->e = e;
	ref->data = e->data;
	ref->len = e->len;
	return 0;
}

void cache_ref_put(struct ic_cache_src *s, struct ic_cache_ref *ref, bool drop)
{
	struct ic_centry *e = ref->e;

	if (e)
		cache_entry_put(s->c, &s->c->shards[cache_key_hash(e->dev, e->ino, e->off) & (NSHARDS - 1)], e,
			  drop);
	ref->e = NULL;
	ref->data = NULL;
}

void ic_cache_put(struct ic_cache_src *s, struct ic_cache_ref *ref)
{
	cache_ref_put(s, ref, false);
}

/* ---- sources -------------------------------------------------------------------------- */

struct ic_cache_src *ic_cache_src_new(struct ic_cache *c, const struct ic_view *v)
{
	struct ic_cache_src *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->c = c;
	s->v = v;
	s->dev = calloc(v->depth ? v->depth : 1, sizeof(*s->dev));
	s->ino = calloc(v->depth ? v->depth : 1, sizeof(*s->ino));
	if (!s->dev || !s->ino || v->block_size != c->bs) {
		free(s->dev);
		free(s->ino);
		free(s);
		errno = v->block_size != c->bs ? EINVAL : ENOMEM;
		return NULL;
	}
	for (uint32_t i = 0; i < v->depth; i++) {
		struct stat sb;

		if (fstat(v->path[i]->fd, &sb) < 0) {
			int e = errno;

			free(s->dev);
			free(s->ino);
			free(s);
			errno = e;
			return NULL;
		}
		s->dev[i] = sb.st_dev;
		s->ino[i] = sb.st_ino;
	}
	return s;
}

void ic_cache_src_free(struct ic_cache_src *s)
{
	struct ic_cache *c;

	if (!s)
		return;
	c = s->c;
	pthread_mutex_lock(&c->qmu);
	s->dying = true;
	for (size_t i = 0; i < c->qlen; i++) {
		struct job *j = &c->q[(c->qhead + i) % QUEUE_CAP];

		if (j->src == s) {
			j->src = NULL;
			s->jobs--;
		}
	}
	while (s->jobs)
		pthread_cond_wait(&c->qdone, &c->qmu);
	pthread_mutex_unlock(&c->qmu);
	free(s->dev);
	free(s->ino);
	free(s);
}

const struct ic_view *ic_cache_src_view(const struct ic_cache_src *s)
{
	return s->v;
}

/* ---- the cache ------------------------------------------------------------------------ */

static int shards_init(struct ic_cache *c)
{
	uint64_t per = c->shard_budget / c->bs + 1;
	size_t nb = 16;

	while (nb < per * 2 && nb < (1u << 22))
		nb <<= 1;
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		pthread_mutex_init(&sh->mu, NULL);
		for (unsigned k = 0; k < SHARD_CVS; k++)
			pthread_cond_init(&sh->cv[k], NULL);
		sh->lru.lnext = sh->lru.lprev = &sh->lru;
		sh->nbuckets = nb;
		sh->bucket = calloc(nb, sizeof(*sh->bucket));
		if (!sh->bucket)
			return -ENOMEM;
	}
	return 0;
}

struct ic_cache *ic_cache_new(uint32_t block_size, const struct ic_key *key,
			      const struct ic_cache_opts *o)
{
	struct ic_cache *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return NULL;
	c->bs = block_size;
	c->key = key;
	if (o)
		c->o = *o;
	if (!c->o.max_bytes)
		c->o.max_bytes = IC_CACHE_DEFAULT_BYTES;
	if (c->o.max_bytes < 16ull * block_size)
		c->o.max_bytes = 16ull * block_size;
	if (!c->o.readahead_bytes)
		c->o.readahead_bytes = IC_CACHE_DEFAULT_RA_BYTES;
	c->shard_budget = c->o.max_bytes / NSHARDS;
	pthread_mutex_init(&c->tls_mu, NULL);
	pthread_mutex_init(&c->slab_mu, NULL);
	c->slab_len = block_size > SLAB_BYTES ? block_size : SLAB_BYTES;
	pthread_mutex_init(&c->qmu, NULL);
	pthread_cond_init(&c->qcv, NULL);
	pthread_cond_init(&c->qdone, NULL);
	c->tls_list.next = c->tls_list.prev = &c->tls_list;
	c->zeros = calloc(1, block_size);
	ret = c->zeros ? shards_init(c) : -ENOMEM;
	if (!ret)
		ret = -pthread_key_create(&c->tls, cache_tls_exit);
	c->tls_ok = !ret;
	if (!ret)
		ret = cache_workers_start(c);
	if (ret) {
		ic_cache_free(c);
		errno = -ret;
		return NULL;
	}
	return c;
}

void ic_cache_free(struct ic_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->qmu);
	c->stop = true;
	pthread_cond_broadcast(&c->qcv);
	pthread_mutex_unlock(&c->qmu);
	ic_pool_join(&c->pool);
	if (c->tls_ok) {
		/* threads still alive (e.g. the caller) keep a decoder: free them here */
		while (c->tls_list.next != &c->tls_list) {
			struct tctx *t = c->tls_list.next;

			cache_tctx_release((struct tctx_box *)((char *)t - offsetof(struct tctx_box, t)));
		}
		pthread_setspecific(c->tls, NULL);
		pthread_key_delete(c->tls);
	}
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		for (size_t b = 0; sh->bucket && b < sh->nbuckets; b++) {
			struct ic_centry *e = sh->bucket[b], *n;

			for (; e; e = n) {
				n = e->hnext;
				free(e);    /* buffers go with the slabs */
			}
		}
		free(sh->bucket);
		pthread_mutex_destroy(&sh->mu);
		for (unsigned k = 0; k < SHARD_CVS; k++)
			pthread_cond_destroy(&sh->cv[k]);
	}
	for (size_t i = 0; i < c->nslabs; i++)
		munmap(c->slabs[i], c->slab_len);
	free(c->slabs);
	pthread_mutex_destroy(&c->slab_mu);
	free(c->q);
	free(c->zeros);
	free(c);
}

void ic_cache_get_stats(struct ic_cache *c, struct ic_cache_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < NSHARDS; i++) {
		struct shard *sh = &c->shards[i];

		pthread_mutex_lock(&sh->mu);
		st->hits += sh->hits;
		st->misses += sh->misses;
		st->waits += sh->waits;
		st->decoded += sh->decoded;
		st->errors += sh->errors;
		st->evictions += sh->evictions;
		st->dropped += sh->dropped;
		st->direct += sh->direct;
		st->entries += sh->entries;
		st->bytes += sh->bytes;
		pthread_mutex_unlock(&sh->mu);
	}
	pthread_mutex_lock(&c->qmu);
	st->ra_queued = c->ra_queued;
	st->ra_done = c->ra_done;
	st->ra_dropped = c->ra_dropped;
	pthread_mutex_unlock(&c->qmu);
	st->max_bytes = c->o.max_bytes;
}
