/* ic_s3_cons_up.c: one image of a merge rewritten in the bucket (FORMAT.md 14.5).
 *
 * The scratch file holds the new image's header, slots and index; its records are holes,
 * and the clones recorded say which bytes of which object each one is.  The image is cut
 * into segments in file order: copied (bytes of one object of the bucket, as listed),
 * local (sent from the scratch file) or zero (bytes of a clone cluster that no record
 * uses, held by no object any more).  The parts of the multipart upload follow them:
 *
 *  - a copied segment of at least the least part (IMGCHAIN_S3_MIN_PART, 5 MiB) becomes
 *    parts copied by the server (UploadPartCopy with x-amz-copy-source-range and
 *    x-amz-copy-source-if-match of the listed ETag), at most COPY_MAX each;
 *  - everything else is gathered into parts (SEND_PART each), assembled on the server
 *    from their pieces (ic_s3_cons_compose.c) or, when that cannot be, sent by the
 *    client: local bytes read, copied bytes fetched by range GETs bound to the ETag;
 *  - a part being gathered that is still below the least part when a large copied segment
 *    follows borrows that segment's first bytes (fetched) up to the least part, unless
 *    what is left would fall below it (then the whole segment is gathered).
 *
 * So the client sends the header and the index; the records stay in the bucket. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_pool.h"
#include "ic_s3_cons_int.h"
#include "ic_util.h"

#define COPY_MAX (4ull << 30)       /* one copied part (S3: 5 GiB) */
#define SEND_PART (16ull << 20)     /* one part sent */
#define DEPTH_MAX 8                 /* scratch files between a clone and its object */

struct up {
	struct ic_s3_chain *sc;
	const char *name;
	int fd;
	struct s3c_plan pl;
	const struct s3c_file *base;        /* of the chain, at least least bytes, or NULL */
	uint64_t least;
	uint64_t composed;                  /* bytes of parts assembled on the server */
	struct ic_s3_upload *u;
	pthread_mutex_t mu;
	size_t next;
	bool failed;
	struct ic_error err;
	uint64_t sent, fetched, server;
};

static uint64_t min_part(void)
{
	const char *e = getenv("IMGCHAIN_S3_MIN_PART");
	unsigned long long v = e && *e ? strtoull(e, NULL, 10) : 0;

	return v >= 4096 && v <= (5ull << 20) ? v : 5ull << 20;
}

static const struct s3c_file *file_of(const struct s3c_file *f, size_t n, ino_t ino)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].ino == ino)
			return &f[i];
	return NULL;
}

int ic_s3c_add_seg(struct s3c_plan *pl, int kind, uint64_t dst, uint64_t len, const struct s3c_file *src,
		   uint64_t src_off)
{
	struct s3c_seg *p = pl->segs.n ? &pl->segs.v[pl->segs.n - 1] : NULL;

	if (!len)
		return 0;
	if (p && p->kind == kind && p->dst + p->len == dst &&
	    (kind != S3C_COPY || (p->src == src && p->src_off + p->len == src_off))) {
		p->len += len;
		return 0;
	}
	p = ic_array_add(&pl->segs);
	if (!p)
		return -ENOMEM;
	*p = (struct s3c_seg){ .dst = dst, .len = len, .src_off = src_off, .kind = kind, .src = src };
	return 0;
}

/* Bytes [off, off + len) of the scratch file ino, landing at dst: segments of the objects
 * they are in.  A file the merge wrote earlier (and maybe removed since) is resolved
 * through its own clones; its bytes no clone covers are gaps of a cluster: zeros. */
static int resolve(struct up *j, const struct s3c_copies *cp, const struct s3c_file *files,
		   size_t nfiles, ino_t ino, uint64_t off, uint64_t len, uint64_t dst, int depth)
{
	const struct s3c_file *f = file_of(files, nfiles, ino);
	uint64_t at = off, end = off + len;
	int ret = 0;

	if (f)
		return ic_s3c_add_seg(&j->pl, S3C_COPY, dst, len, f, off);
	if (depth >= DEPTH_MAX)
		return ic_fail(-ELOOP, "%s: records cloned through too many files", j->name);
	for (size_t i = 0; !ret && i < cp->n && at < end; i++) {
		const struct s3c_copy *c = &cp->v[i];
		uint64_t a, b;

		if (c->dst_ino != ino || c->dst + c->len <= at || c->dst >= end)
			continue;
		a = c->dst > at ? c->dst : at;
		b = c->dst + c->len < end ? c->dst + c->len : end;
		ret = ic_s3c_add_seg(&j->pl, S3C_ZERO, dst + (at - off), a - at, NULL, 0);
		if (!ret)
			ret = resolve(j, cp, files, nfiles, c->src_ino, c->src_off + (a - c->dst), b - a,
				      dst + (a - off), depth + 1);
		at = b;
	}
	if (!ret && at < end)
		ret = ic_s3c_add_seg(&j->pl, S3C_ZERO, dst + (at - off), end - at, NULL, 0);
	return ret;
}

static int segments(struct up *j, const struct s3c_copies *cp, const struct s3c_file *files,
		    size_t nfiles, ino_t ino, uint64_t size)
{
	uint64_t at = 0;
	int ret = 0;

	for (size_t i = 0; !ret && i < cp->n; i++) {
		const struct s3c_copy *c = &cp->v[i];

		if (c->dst_ino != ino)
			continue;
		if (c->dst < at || c->dst + c->len > size)
			return ic_fail(-EINVAL, "%s: clones overlap or pass the end", j->name);
		ret = ic_s3c_add_seg(&j->pl, S3C_LOCAL, at, c->dst - at, NULL, 0);
		if (!ret)
			ret = resolve(j, cp, files, nfiles, c->src_ino, c->src_off, c->len, c->dst, 0);
		at = c->dst + c->len;
	}
	if (!ret)
		ret = ic_s3c_add_seg(&j->pl, S3C_LOCAL, at, size - at, NULL, 0);
	return ret;
}

static int add_part(struct s3c_plan *pl, uint64_t d0, uint64_t d1, bool copy, size_t seg)
{
	struct s3c_part *p;

	if (d1 <= d0)
		return 0;
	if (pl->parts.n == IC_S3_PART_MAX)
		return ic_fail(-EFBIG, "%s: the merged image would need more than %u parts", pl->name,
			       IC_S3_PART_MAX);
	p = ic_array_add(&pl->parts);
	if (!p)
		return -ENOMEM;
	/* a part sent starts in the segment holding d0: search back from seg */
	while (!copy && seg > 0 && pl->segs.v[seg].dst > d0)
		seg--;
	*p = (struct s3c_part){ .d0 = d0, .d1 = d1, .copy = copy, .seg = seg };
	return 0;
}

/* The parts, as the header comment says. */
int ic_s3c_plan_parts(struct s3c_plan *pl, uint64_t size, uint64_t least)
{
	uint64_t send = SEND_PART > least ? SEND_PART : least, pend = 0;
	int ret = 0;

	for (size_t i = 0; !ret && i < pl->segs.n; i++) {
		const struct s3c_seg *s = &pl->segs.v[i];
		uint64_t a = s->dst, b = s->dst + s->len, c = a, n;

		if (s->kind == S3C_COPY && s->len >= least) {
			if (pend < a && a - pend < least) {
				c = a + (least - (a - pend));
				if (b - c < least)
					goto gather;     /* too little left: gathered whole */
			}
			ret = add_part(pl, pend, c, false, i);
			n = (b - c + COPY_MAX - 1) / COPY_MAX;
			for (uint64_t k = 0; !ret && k < n; k++)
				ret = add_part(pl, c + (b - c) * k / n, c + (b - c) * (k + 1) / n, true, i);
			pend = b;
			continue;
		}
gather:
		while (!ret && b - pend >= send) {
			ret = add_part(pl, pend, pend + send, false, i);
			pend += send;
		}
	}
	if (!ret)
		ret = add_part(pl, pend, size, false, pl->segs.n ? pl->segs.n - 1 : 0);
	return ret;
}

/* Part k's bytes gathered into buf: local, zeros, or fetched from their object. */
static int gather(struct up *j, const struct s3c_part *p, uint8_t *buf)
{
	for (size_t i = p->seg; i < j->pl.segs.n && j->pl.segs.v[i].dst < p->d1; i++) {
		const struct s3c_seg *s = &j->pl.segs.v[i];
		uint64_t a = s->dst > p->d0 ? s->dst : p->d0;
		uint64_t b = s->dst + s->len < p->d1 ? s->dst + s->len : p->d1;
		uint8_t *to = buf + (a - p->d0);
		size_t got;
		char *key;
		int ret;

		if (b <= a)
			continue;
		if (s->kind == S3C_ZERO) {
			memset(to, 0, b - a);
		} else if (s->kind == S3C_LOCAL) {
			if (pread(j->fd, to, b - a, (off_t)a) != (ssize_t)(b - a))
				return ic_fail(-EIO, "%s: short read of the merged image", j->name);
		} else {
			key = ic_s3_chain_key(j->sc, s->src->name);
			if (!key)
				return -ENOMEM;
			ret = ic_s3_get_if(j->sc->s3, key, s->src->remote->etag, s->src_off + (a - s->dst),
					   b - a, to, &got);
			free(key);
			if (!ret && got != b - a)
				ret = ic_fail(IC_ECORRUPT, "%s: %s ends before its records", j->name,
					      s->src->name);
			if (ret)
				return ret;
			pthread_mutex_lock(&j->mu);
			j->fetched += b - a;
			pthread_mutex_unlock(&j->mu);
		}
	}
	return 0;
}

static int run_part(struct up *j, size_t k)
{
	const struct s3c_part *p = &j->pl.parts.v[k];
	const struct s3c_seg *s = &j->pl.segs.v[p->seg];
	uint8_t *buf;
	char *key;
	int ret;

	if (p->copy) {
		key = ic_s3_chain_key(j->sc, s->src->name);
		if (!key)
			return -ENOMEM;
		ret = ic_s3_mp_part_copy(j->u, (unsigned)k + 1, key, s->src->remote->etag,
					 s->src_off + (p->d0 - s->dst), p->d1 - p->d0);
		free(key);
		pthread_mutex_lock(&j->mu);
		j->server += ret ? 0 : p->d1 - p->d0;
		pthread_mutex_unlock(&j->mu);
		return ret;
	}
	if (getenv("IMGCHAIN_S3_NO_COMPOSE") == NULL) {
		uint64_t sent = 0;

		ret = ic_s3c_compose(j->sc, &j->pl, k, j->fd, j->u, j->base, j->least, &sent);
		if (ret != -EAGAIN) {
			pthread_mutex_lock(&j->mu);
			j->sent += ret ? 0 : sent;
			j->composed += ret ? 0 : p->d1 - p->d0;
			pthread_mutex_unlock(&j->mu);
			return ret;
		}
	}
	buf = malloc(p->d1 - p->d0);
	if (!buf)
		return -ENOMEM;
	ret = gather(j, p, buf);
	if (!ret)
		ret = ic_s3_mp_part(j->u, (unsigned)k + 1, buf, p->d1 - p->d0);
	free(buf);
	pthread_mutex_lock(&j->mu);
	j->sent += ret ? 0 : p->d1 - p->d0;
	pthread_mutex_unlock(&j->mu);
	return ret;
}

static void *up_worker(void *arg)
{
	struct up *j = arg;

	for (;;) {
		size_t k;
		int ret;

		pthread_mutex_lock(&j->mu);
		k = j->failed ? j->pl.parts.n : j->next;
		if (k < j->pl.parts.n)
			j->next++;
		pthread_mutex_unlock(&j->mu);
		if (k >= j->pl.parts.n)
			break;
		ret = run_part(j, k);
		if (ret)
			ic_s3_fail_once(&j->mu, &j->err, &j->failed, ret);
	}
	return NULL;
}

int ic_s3c_upload(struct ic_s3_chain *sc, const char *name, int fd, ino_t ino, uint64_t size,
		  const struct s3c_copies *copies, const struct s3c_file *files, size_t nfiles,
		  struct ic_s3_cons_stats *st, void (*step)(const char *name))
{
	struct up j = { .sc = sc, .name = name, .fd = fd, .pl.name = name };
	char *key = ic_s3_chain_key(sc, name), etag[IC_S3_ETAG_MAX];
	struct ic_pool pool;
	unsigned nt;
	int ret;

	if (!key)
		return -ENOMEM;
	j.least = min_part();
	for (size_t i = 0; i < nfiles; i++)
		if (files[i].remote && strcmp(files[i].name, "imgchain.key") != 0 &&
		    files[i].remote->size >= j.least && (!j.base || files[i].size > j.base->size))
			j.base = &files[i];
	ret = segments(&j, copies, files, nfiles, ino, size);
	if (!ret)
		ret = ic_s3c_plan_parts(&j.pl, size, j.least);
	if (!ret)
		ret = ic_s3_mp_start(sc->s3, key, &j.u);
	if (ret)
		goto out;
	pthread_mutex_init(&j.mu, NULL);
	nt = ic_s3_threads();
	ret = ic_pool_start(&pool, j.pl.parts.n < nt ? (unsigned)j.pl.parts.n : nt, up_worker, &j);
	ic_pool_join(&pool);
	pthread_mutex_destroy(&j.mu);
	if (!ret && j.failed)
		ret = ic_error_raise(&j.err);
	if (!ret && step)
		step("s3-upload");
	/* the commit: the object replaced whole, at once */
	if (!ret)
		ret = ic_s3_lease_check(sc);
	if (!ret)
		ret = ic_s3_mp_complete(j.u, etag);
	if (ret)
		ic_s3_mp_abort(j.u);
	if (!ret) {
		st->rewritten++;
		st->bytes_server += j.server;
		st->bytes_composed += j.composed;
		st->bytes_sent += j.sent;
		st->bytes_fetched += j.fetched;
		for (size_t k = 0; k < j.pl.parts.n; k++)
			*(j.pl.parts.v[k].copy ? &st->parts_copied : &st->parts_sent) += 1;
	}
out:
	ic_array_free(&j.pl.segs);
	ic_array_free(&j.pl.parts);
	free(key);
	return ret;
}
