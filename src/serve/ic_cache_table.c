/* ic_cache_table.c: the block cache's table: shards of hashed entries with an LRU each,
 * block buffers from pre-faulted slabs, a decoder per thread, loading an entry, and
 * drop-behind when a reference ends. */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ic_cache_int.h"
#include "ic_util.h"

/* ---- per-thread decode state -------------------------------------------------- */

void cache_tctx_release(struct tctx_box *b)
{
	struct ic_cache *c = b->c;

	pthread_mutex_lock(&c->tls_mu);
	b->t.prev->next = b->t.next;
	b->t.next->prev = b->t.prev;
	pthread_mutex_unlock(&c->tls_mu);
	ic_codec_free(b->t.codec);
	free(b->t.rec);
	free(b);
}

void cache_tls_exit(void *p)
{
	cache_tctx_release(p);
}

static struct tctx *tctx_get(struct ic_cache *c)
{
	struct tctx_box *b = pthread_getspecific(c->tls);

	if (b)
		return &b->t;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->c = c;
	b->t.codec = ic_codec_new(c->bs, 0);
	b->t.rec = malloc(ic_codec_bound(c->bs));
	if (!b->t.codec || !b->t.rec) {
		ic_codec_free(b->t.codec);
		free(b->t.rec);
		free(b);
		return NULL;
	}
	pthread_mutex_lock(&c->tls_mu);
	b->t.next = c->tls_list.next;
	b->t.prev = &c->tls_list;
	c->tls_list.next->prev = &b->t;
	c->tls_list.next = &b->t;
	pthread_mutex_unlock(&c->tls_mu);
	pthread_setspecific(c->tls, b);
	return &b->t;
}

/* ---- block buffers ------------------------------------------------------------ */

static void *slab_take(struct ic_cache *c)
{
	void *b = NULL;

	pthread_mutex_lock(&c->slab_mu);
	if (c->slab_next == c->slab_end) {
		void **ns = realloc(c->slabs, (c->nslabs + 1) * sizeof(*ns));
		void *m = ns ? mmap(NULL, c->slab_len, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0) : MAP_FAILED;

		if (ns)
			c->slabs = ns;
		if (m == MAP_FAILED)
			goto out;
#ifdef MADV_DONTDUMP
		/* decoded blocks stay out of core dumps even if the process is dumpable */
		(void)madvise(m, c->slab_len, MADV_DONTDUMP);
#endif
		c->slabs[c->nslabs++] = m;
		c->slab_next = m;
		c->slab_end = (uint8_t *)m + c->slab_len;
	}
	b = c->slab_next;
	c->slab_next += c->bs;
out:
	pthread_mutex_unlock(&c->slab_mu);
	return b;
}

/* Under sh->mu. */
static void *buf_get(struct ic_cache *c, struct shard *sh)
{
	void *b = sh->free_bufs;

	if (b) {
		sh->free_bufs = *(void **)b;
		return b;
	}
	return slab_take(c);
}

static void buf_put(struct shard *sh, void *b)
{
	if (!b)
		return;
	*(void **)b = sh->free_bufs;
	sh->free_bufs = b;
}

/* ---- table and LRU -------------------------------------------------------------- */

static void lru_unlink(struct ic_centry *e)
{
	e->lprev->lnext = e->lnext;
	e->lnext->lprev = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push(struct shard *sh, struct ic_centry *e)
{
	e->lnext = sh->lru.lnext;
	e->lprev = &sh->lru;
	sh->lru.lnext->lprev = e;
	sh->lru.lnext = e;
}

static void table_remove(struct shard *sh, struct ic_centry *e, uint64_t h)
{
	struct ic_centry **pp = &sh->bucket[(h / NSHARDS) & (sh->nbuckets - 1)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	e->hashed = false;
	sh->bytes -= e->cost;
	sh->entries--;
}

static void entry_free(struct shard *sh, struct ic_centry *e)
{
	buf_put(sh, e->data);
	free(e);
}

/* Drop least recently used idle entries until the shard fits its budget. */
static void shard_trim(struct ic_cache *c, struct shard *sh)
{
	while (sh->bytes > c->shard_budget && sh->lru.lprev != &sh->lru) {
		struct ic_centry *e = sh->lru.lprev;

		lru_unlink(e);
		table_remove(sh, e, cache_key_hash(e->dev, e->ino, e->off));
		sh->evictions++;
		entry_free(sh, e);
	}
}

struct ic_centry *cache_table_find(struct shard *sh, uint64_t h, uint64_t dev, uint64_t ino,
				    uint64_t off, uint64_t rec_hash)
{
	struct ic_centry *e = sh->bucket[(h / NSHARDS) & (sh->nbuckets - 1)];

	for (; e; e = e->hnext)
		if (e->off == off && e->ino == ino && e->dev == dev && e->rec_hash == rec_hash)
			return e;
	return NULL;
}

static struct ic_centry *table_insert(struct ic_cache *c, struct shard *sh, uint64_t h,
				      uint64_t dev, uint64_t ino, const struct icf_entry *ie)
{
	struct ic_centry *e = calloc(1, sizeof(*e));
	size_t b = (h / NSHARDS) & (sh->nbuckets - 1);

	if (!e)
		return NULL;
	shard_trim(c, sh);      /* first, so that an evicted buffer is reused at once */
	e->data = buf_get(c, sh);
	if (!e->data) {
		free(e);
		return NULL;
	}
	e->dev = dev;
	e->ino = ino;
	e->off = ie->offset;
	e->rec_hash = ie->rec_hash;
	e->refs = 1;
	e->state = E_LOADING;
	e->hashed = true;
	e->cost = c->bs + (uint32_t)sizeof(*e);
	e->hnext = sh->bucket[b];
	sh->bucket[b] = e;
	sh->bytes += e->cost;
	sh->entries++;
	return e;
}

/* drop: a sequential stream consumed the block and nobody else used it: free it now
 * (drop-behind) rather than let the stream push the cache's other blocks out. */
void cache_entry_put(struct ic_cache *c, struct shard *sh, struct ic_centry *e, bool drop)
{
	pthread_mutex_lock(&sh->mu);
	e->drop |= drop;
	if (--e->refs == 0) {
		drop = e->drop;
		e->drop = false;        /* asked for by the references just ended only */
		if (drop && e->hashed && e->uses <= 1 && !e->err && e->state == E_READY) {
			buf_put(sh, e->data);
			e->data = NULL;
			e->state = E_GONE;
			sh->bytes -= e->cost - GHOST_COST;
			e->cost = GHOST_COST;
			sh->dropped++;
			lru_push(sh, e);
		} else if (!e->hashed) {
			entry_free(sh, e);
		} else {
			lru_push(sh, e);
			shard_trim(c, sh);
		}
	}
	pthread_mutex_unlock(&sh->mu);
}

/* ---- decoding ------------------------------------------------------------------------ */

void cache_report(struct ic_cache *c, int err)
{
	if (c->o.on_error)
		c->o.on_error(c->o.arg, err, ic_last_error(err));
}

/* Decode into the LOADING entry e (owned by this thread), then publish it. */
void cache_entry_load(struct ic_cache_src *s, struct shard *sh, struct ic_centry *e,
		       uint64_t pos)
{
	struct ic_cache *c = s->c;
	struct tctx *t = tctx_get(c);
	int ret;

	if (!t)
		ret = ic_fail(-ENOMEM, "no memory for a block decoder");
	else
		ret = ic_view_read_block(s->v, t->codec, c->key, pos, e->data, t->rec);
	if (ret < 0)
		cache_report(c, ret);
	pthread_mutex_lock(&sh->mu);
	sh->decoded++;
	if (ret < 0) {
		e->err = ret;
		buf_put(sh, e->data);
		e->data = NULL;
		if (e->hashed) {
			uint32_t cost = e->cost;

			/* only authentication failures are facts about the block worth keeping */
			if (ret == IC_ECORRUPT) {
				e->cost = ERR_COST;
				sh->bytes -= cost - ERR_COST;
				sh->errors++;
			} else {
				table_remove(sh, e, cache_key_hash(e->dev, e->ino, e->off));
			}
		}
	} else {
		e->len = (uint32_t)ret;
	}
	e->state = E_READY;
	if (e->waiters)
		pthread_cond_broadcast(entry_cv(sh, e));
	pthread_mutex_unlock(&sh->mu);
}

int cache_decode_direct(struct ic_cache_src *s, uint16_t level, const struct ic_block_ref *br,
			void *out)
{
	struct ic_cache *c = s->c;
	uint64_t dev = s->dev[level], ino = s->ino[level];
	uint64_t h = cache_key_hash(dev, ino, br->e.offset);
	struct shard *sh = &c->shards[h & (NSHARDS - 1)];
	struct tctx *t = tctx_get(c);
	struct ic_centry *e;
	size_t b = (h / NSHARDS) & (sh->nbuckets - 1);

	if (!t)
		return 1;
	pthread_mutex_lock(&sh->mu);
	e = cache_table_find(sh, h, dev, ino, br->e.offset, br->e.rec_hash);
	if (e && e->state != E_GONE) {
		pthread_mutex_unlock(&sh->mu);
		return 1;
	}
	if (!e && (e = calloc(1, sizeof(*e)))) {
		shard_trim(c, sh);
		e->dev = dev;
		e->ino = ino;
		e->off = br->e.offset;
		e->rec_hash = br->e.rec_hash;
		e->state = E_GONE;
		e->hashed = true;
		e->cost = GHOST_COST;
		e->hnext = sh->bucket[b];
		sh->bucket[b] = e;
		sh->bytes += e->cost;
		sh->entries++;
		lru_push(sh, e);
	}
	sh->misses++;
	sh->decoded++;
	sh->dropped++;
	sh->direct++;
	pthread_mutex_unlock(&sh->mu);
	return ic_view_read_ref(s->v, t->codec, c->key, br, out, t->rec) < 0;
}

/* Find or create the entry of a data block; *created tells the caller to load it.
 * With wait, a LOADING entry of another thread is waited for; without, NULL is
 * returned for it (readahead: someone already works on it). */
struct ic_centry *cache_entry_get(struct ic_cache_src *s, uint16_t level,
				   const struct icf_entry *ie, bool wait, bool *created,
				   struct shard **shp)
{
	struct ic_cache *c = s->c;
	uint64_t dev = s->dev[level], ino = s->ino[level];
	uint64_t h = cache_key_hash(dev, ino, ie->offset);
	struct shard *sh = &c->shards[h & (NSHARDS - 1)];
	struct ic_centry *e;

	*shp = sh;
	*created = false;
	pthread_mutex_lock(&sh->mu);
	e = cache_table_find(sh, h, dev, ino, ie->offset, ie->rec_hash);
	if (!e) {
		e = table_insert(c, sh, h, dev, ino, ie);
		*created = e != NULL;
		sh->misses += wait && e;
	} else if (e->state == E_GONE) {
		void *b;

		if (!wait) {
			e = NULL;
		} else {
			lru_unlink(e);          /* idle: ghosts have no references */
			sh->bytes += c->bs;
			e->cost += c->bs;
			shard_trim(c, sh);
			b = buf_get(c, sh);
			if (!b) {
				sh->bytes -= c->bs;
				e->cost -= c->bs;
				lru_push(sh, e);
				e = NULL;
			} else {
				e->data = b;
				e->refs = 1;
				e->uses = 0;
				e->state = E_LOADING;
				*created = true;
				sh->misses++;
			}
		}
	} else if (e->state == E_READY) {
		if (!wait) {
			e = NULL;
		} else {
			if (e->refs++ == 0)
				lru_unlink(e);
			sh->hits++;
		}
	} else if (!wait) {
		e = NULL;
	} else {
		e->refs++;
		sh->waits++;
		e->waiters++;
		while (e->state == E_LOADING)
			pthread_cond_wait(entry_cv(sh, e), &sh->mu);
		e->waiters--;
	}
	if (e && wait && e->uses < UINT8_MAX)
		e->uses++;
	pthread_mutex_unlock(&sh->mu);
	return e;
}

