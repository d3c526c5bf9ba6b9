/* ic_s3_cons_compose.c: a part of a rewritten image assembled on the server from pieces
 * below S3's least part (FORMAT.md 14.5).
 *
 * Only the last part of a multipart upload may be smaller than the least part (5 MiB).
 * So a part made of small pieces (the new header, ranges of records below the least part,
 * the start of a large range borrowed to reach the least part) is built in temporary
 * objects PREFIX/.compose/NAME.K.I, one piece appended per object: object 1 is a range of
 * the least part of some object of the chain (a base: bytes nobody reads) followed by
 * piece 1 as its last part; object i is object i-1 copied whole, then piece i.  The part
 * is then copied from the last object, past the base.  A piece copied from an object of
 * the chain is copied by the server (bound to its listed ETag); a piece of new bytes
 * (header, index, zeros) is sent.  Each temporary object is deleted once the next one
 * holds it; a killed run's are deleted by the next consolidation (ic_s3_cons_begin), and
 * readers never look at keys below the prefix's own level.  The server copies about
 * (least part + part) per piece: parts of more than COMPOSE_MAX pieces are sent instead
 * (their copied pieces fetched first). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_s3_cons_int.h"

#define COMPOSE_MAX 16

struct piece {
	uint64_t a, b;              /* bytes of the image */
	const struct s3c_seg *s;    /* the copied segment, NULL: new bytes */
};

/* New bytes [a, b) of the image: local or zero segments from seg on. */
static int new_bytes(const struct s3c_plan *pl, size_t seg, int fd, uint64_t a, uint64_t b,
		     uint8_t *buf)
{
	for (size_t i = seg; i < pl->segs.n && pl->segs.v[i].dst < b; i++) {
		const struct s3c_seg *s = &pl->segs.v[i];
		uint64_t x = s->dst > a ? s->dst : a, y = s->dst + s->len < b ? s->dst + s->len : b;

		if (y <= x)
			continue;
		if (s->kind == S3C_ZERO)
			memset(buf + (x - a), 0, y - x);
		else if (pread(fd, buf + (x - a), y - x, (off_t)x) != (ssize_t)(y - x))
			return ic_fail(-EIO, "%s: short read of the merged image", pl->name);
	}
	return 0;
}

/* One temporary object: the previous one (or the base) whole, then the piece. */
static int append(struct ic_s3_chain *sc, const struct s3c_plan *pl, size_t seg, int fd,
		  const char *key, const char *prev, uint64_t prev_len, const struct s3c_file *base,
		  uint64_t least, const struct piece *pc, uint64_t *sent)
{
	struct ic_s3_upload *u = NULL;
	char *bkey = NULL, etag[IC_S3_ETAG_MAX];
	uint8_t *buf = NULL;
	int ret = ic_s3_mp_start(sc->s3, key, &u);

	if (!ret && !prev && !(bkey = ic_s3_chain_key(sc, base->name)))
		ret = -ENOMEM;
	if (!ret)
		ret = prev ? ic_s3_mp_part_copy(u, 1, prev, NULL, 0, prev_len) :
			     ic_s3_mp_part_copy(u, 1, bkey, base->remote->etag, 0, least);
	if (!ret && pc->s) {
		char *skey = ic_s3_chain_key(sc, pc->s->src->name);

		ret = skey ? ic_s3_mp_part_copy(u, 2, skey, pc->s->src->remote->etag,
						pc->s->src_off + (pc->a - pc->s->dst), pc->b - pc->a) :
			     -ENOMEM;
		free(skey);
	} else if (!ret) {
		buf = malloc(pc->b - pc->a);
		ret = buf ? new_bytes(pl, seg, fd, pc->a, pc->b, buf) : -ENOMEM;
		if (!ret)
			ret = ic_s3_mp_part(u, 2, buf, pc->b - pc->a);
		if (!ret)
			*sent += pc->b - pc->a;
	}
	if (!ret)
		ret = ic_s3_mp_complete(u, etag);
	else
		ic_s3_mp_abort(u);
	free(buf);
	free(bkey);
	return ret;
}

int ic_s3c_compose(struct ic_s3_chain *sc, const struct s3c_plan *pl, size_t k, int fd,
		   struct ic_s3_upload *up, const struct s3c_file *base, uint64_t least,
		   uint64_t *sent)
{
	const struct s3c_part *p = &pl->parts.v[k];
	struct piece pcs[COMPOSE_MAX];
	char *keys[2] = { NULL, NULL };
	uint64_t len = least;
	size_t n = 0;
	int ret = 0;

	if (!base)
		return -EAGAIN;
	for (size_t i = p->seg; i < pl->segs.n && pl->segs.v[i].dst < p->d1; i++) {
		const struct s3c_seg *s = &pl->segs.v[i];
		uint64_t a = s->dst > p->d0 ? s->dst : p->d0;
		uint64_t b = s->dst + s->len < p->d1 ? s->dst + s->len : p->d1;
		bool copy = s->kind == S3C_COPY;

		if (b <= a)
			continue;
		if (n && !copy && !pcs[n - 1].s) {
			pcs[n - 1].b = b;   /* new bytes joined */
			continue;
		}
		if (n == COMPOSE_MAX)
			return -EAGAIN;
		pcs[n++] = (struct piece){ .a = a, .b = b, .s = copy ? s : NULL };
	}
	if (n == 1 && !pcs[0].s)
		return -EAGAIN;         /* new bytes only: sent as they are */
	for (size_t i = 0; !ret && i < n; i++) {
		char name[64];

		snprintf(name, sizeof(name), ".compose/%s.%zu.%zu", pl->name, k + 1, i + 1);
		free(keys[i % 2]);
		keys[i % 2] = ic_s3_chain_key(sc, name);
		if (!keys[i % 2]) {
			ret = -ENOMEM;
			break;
		}
		ret = append(sc, pl, p->seg, fd, keys[i % 2], i ? keys[(i + 1) % 2] : NULL, len,
			     base, least, &pcs[i], sent);
		if (!ret && i) {
			ic_s3_quiet(true);
			ic_s3_delete(sc->s3, keys[(i + 1) % 2]);
			ic_s3_quiet(false);
		}
		len += pcs[i].b - pcs[i].a;
	}
	if (!ret)
		ret = ic_s3_mp_part_copy(up, (unsigned)k + 1, keys[(n + 1) % 2], NULL, least,
					 p->d1 - p->d0);
	if (n) {
		ic_s3_quiet(true);
		ic_s3_delete(sc->s3, keys[(n + 1) % 2]);
		ic_s3_quiet(false);
	}
	free(keys[0]);
	free(keys[1]);
	return ret;
}
