/* ic_sync.c: block-sync restore: bring a destination that already holds some version of
 * the disk to a restore point by writing only the blocks that differ.
 *
 * --sync: each block of the destination is digested with the chain's keyed change digest
 * (FORMAT.md 4.3) under the point's entry for that block and compared with the entry's
 * digest; an equal block is skipped without its record being read or decrypted.
 * --sync-from POINT0: the destination holds POINT0 exactly; the two points' sealed block
 * maps alone say which blocks differ, and the destination is never read.
 * Workers take 4 MiB chunks as imgrestore's do (ic_chunks, ic_restore.c).  The destination
 * is a file, a block device or an NBD export (ic_dest.c). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_codec.h"
#include "ic_dest.h"
#include "ic_mem.h"
#include "ic_restore_int.h"
#include "ic_util.h"

struct counts {
	uint64_t skipped, written, zeroed, chain_bytes, bytes_written;
};

struct sjob {
	struct ic_chunks q;
	const struct ic_view *v;    /* the point restored */
	const struct ic_view *v0;   /* --sync-from: the point dest holds; NULL for --sync */
	const struct ic_key *key;
	struct ic_dest d;
	bool tail_zero;             /* v0: dest's bytes past v0's disk read as zeros (grown file) */
	struct counts tot;          /* under q.mu */
};

/* A forward walk over one view's blocks: the mapped ones from a cursor, the others zero. */
struct walk {
	const struct ic_view *v;
	struct ic_view_cursor *cur;
	struct ic_block_ref next;
	int have;                   /* next is valid (1), none left below end (0), error (<0) */
	uint64_t end;
};

struct sworker {
	struct sjob *j;
	struct ic_codec *codec;
	uint8_t *buf, *rec, *dbuf;
	bool punch;                 /* dest makes zeros without writing them (until it cannot) */
	struct walk w, w0;
	struct counts c;
};

static void walk_seek(struct walk *w, uint64_t first, uint64_t end)
{
	w->end = end;
	ic_view_cursor_seek(w->cur, first);
	w->have = first < end ? ic_view_cursor_next(w->cur, end, &w->next) : 0;
}

/* The block at pos (ascending calls, first <= pos < end): mapped or zero. */
static int walk_at(struct walk *w, uint64_t pos, struct ic_block_ref *ref)
{
	if (w->have > 0 && w->next.e.pos < pos)
		w->have = ic_view_cursor_next(w->cur, w->end, &w->next);
	if (w->have < 0)
		return w->have;
	if (w->have > 0 && w->next.e.pos == pos) {
		*ref = w->next;
		return 0;
	}
	memset(ref, 0, sizeof(*ref));
	ref->e.pos = pos;
	ref->e.plain_len = ic_view_block_len(w->v, pos);
	return 0;
}

/* --sync: does dest's block d hold the point's block ref?  A data block is compared by its
 * keyed digest; a digest that is missing (all zero) or under a key generation this key does
 * not hold never matches (the block is read, and its record authenticated). */
static bool same_bytes(const struct sjob *j, const struct ic_block_ref *ref, const uint8_t *d)
{
	uint8_t dg[ICF_DIGEST_LEN];

	if (!ref->img)
		return ic_is_zero(d, ref->e.plain_len);
	if (ic_is_zero(ref->e.digest, ICF_DIGEST_LEN) || !ic_key_gen(j->key, ref->e.keygen))
		return false;
	ic_codec_digest(j->key, ref->img->hdr.version, &ref->e, d, dg);
	return !sodium_memcmp(dg, ref->e.digest, ICF_DIGEST_LEN);
}

/* --sync-from: do two sealed entries of one position give the same bytes?  Zero both, or
 * the same record: the one the same point (origin, v2: its point id) wrote there, with
 * the same checksum and lengths.  A record copied by consolidation to another file or
 * offset is the same record. */
static bool same_entry(const struct ic_block_ref *a, const struct ic_block_ref *b)
{
	if (a->e.plain_len != b->e.plain_len)
		return false;
	if (!a->img || !b->img)
		return !a->img && !b->img;
	return a->e.origin == b->e.origin && a->e.origin_id == b->e.origin_id &&
	       a->e.kind == b->e.kind && a->e.keygen == b->e.keygen &&
	       a->e.rec_hash == b->e.rec_hash && a->e.stored_len == b->e.stored_len;
}

static int zero_block(struct sworker *w, uint64_t pos, uint32_t len)
{
	struct sjob *j = w->j;
	uint64_t off = pos * j->v->block_size;
	int ret;

	w->c.zeroed++;
	if (w->punch) {
		ret = ic_dest_zero(&j->d, len, off);
		if (ret)
			return ret < 0 ? ret : 0;
		w->punch = false;
	}
	memset(w->buf, 0, len);
	ret = ic_dest_pwrite(&j->d, w->buf, len, off);
	if (!ret)
		w->c.bytes_written += len;
	return ret;
}

static int write_ref(struct sworker *w, const struct ic_block_ref *ref)
{
	struct sjob *j = w->j;
	int n;

	if (!ref->img)
		return zero_block(w, ref->e.pos, ref->e.plain_len);
	n = ic_view_read_ref(j->v, w->codec, j->key, ref, w->buf, w->rec);
	if (n < 0)
		return n;
	w->c.written++;
	w->c.chain_bytes += ref->e.stored_len;
	w->c.bytes_written += (uint64_t)n;
	return ic_dest_pwrite(&j->d, w->buf, (size_t)n, ref->e.pos * j->v->block_size);
}

/* Is dest's block pos, which holds v0's, already the point's block ref? */
static int same_as_v0(struct sworker *w, const struct ic_block_ref *ref, bool *same)
{
	const struct sjob *j = w->j;
	struct ic_block_ref r0;
	int ret;

	if (ref->e.pos >= j->v0->nblocks) {    /* past v0's disk: zeros in a grown file */
		*same = !ref->img && j->tail_zero;
		return 0;
	}
	ret = walk_at(&w->w0, ref->e.pos, &r0);
	if (!ret)
		*same = same_entry(ref, &r0);
	return ret;
}

static int sync_chunk(struct sworker *w, uint64_t k)
{
	struct sjob *j = w->j;
	const struct ic_view *v = j->v;
	uint64_t first, end, pos;
	int ret;

	ic_chunks_range(&j->q, k, &first, &end);
	walk_seek(&w->w, first, end);
	if (j->v0) {
		walk_seek(&w->w0, first < j->v0->nblocks ? first : j->v0->nblocks,
			  end < j->v0->nblocks ? end : j->v0->nblocks);
	} else {
		uint64_t lim = end * v->block_size < v->disk_size ? end * v->block_size : v->disk_size;

		ret = ic_dest_pread(&j->d, w->dbuf, lim - first * v->block_size,
				    first * v->block_size);
		if (ret)
			return ret;
	}
	for (pos = first; pos < end; pos++) {
		struct ic_block_ref ref;
		bool same;

		ret = walk_at(&w->w, pos, &ref);
		if (ret)
			return ret;
		if (j->v0)
			ret = same_as_v0(w, &ref, &same);
		else
			same = same_bytes(j, &ref, w->dbuf + (pos - first) * v->block_size);
		if (!ret && same)
			w->c.skipped++;
		else if (!ret)
			ret = write_ref(w, &ref);
		if (ret)
			return ret;
	}
	return 0;
}

static void *sworker_main(void *arg)
{
	struct sjob *j = arg;
	struct sworker w;
	uint32_t bs = j->v->block_size;
	uint64_t k;
	int oret = 0;

	memset(&w, 0, sizeof(w));
	w.j = j;
	w.punch = true;
	w.w.v = j->v;
	w.w0.v = j->v0;
	w.codec = ic_codec_new(bs, 0);
	w.buf = malloc(bs);
	w.rec = malloc(ic_codec_bound(bs));
	if (!j->v0)
		w.dbuf = malloc((size_t)j->q.per_chunk * bs);
	if (!w.codec || !w.buf || !w.rec || (!j->v0 && !w.dbuf))
		oret = -ENOMEM;
	if (!oret)
		oret = ic_view_cursor_open(j->v, &w.w.cur);
	if (!oret && j->v0)
		oret = ic_view_cursor_open(j->v0, &w.w0.cur);
	while (ic_chunks_take(&j->q, &k)) {
		int ret = oret ? oret : sync_chunk(&w, k);

		pthread_mutex_lock(&j->q.mu);
		ic_chunks_done_locked(&j->q, ret);
		j->tot.skipped += w.c.skipped;
		j->tot.written += w.c.written;
		j->tot.zeroed += w.c.zeroed;
		j->tot.chain_bytes += w.c.chain_bytes;
		j->tot.bytes_written += w.c.bytes_written;
		pthread_mutex_unlock(&j->q.mu);
		memset(&w.c, 0, sizeof(w.c));
	}
	ic_view_cursor_free(w.w.cur);
	ic_view_cursor_free(w.w0.cur);
	ic_codec_free(w.codec);
	free(w.buf);
	free(w.rec);
	free(w.dbuf);
	return NULL;
}

/* dest opened in place: read-write for --sync (created when absent), write-only for
 * --sync-from (it is never read); a regular file is given the point's size, a device or
 * export must hold it. */
static int open_dest(const struct ic_restore_opts *o, struct sjob *j)
{
	int ret = ic_dest_open(&j->d, o->dest, !j->v0, !j->v0, j->v->disk_size);

	if (ret || !j->d.regular)
		return ret;
	if (j->v0 && j->d.size != j->v0->disk_size)
		return ic_fail(-EINVAL, "%s: %llu bytes, not the size of '%s' (%llu bytes): it does not hold "
			       "that point (use --sync)", o->dest, (unsigned long long)j->d.size,
			       o->sync_from, (unsigned long long)j->v0->disk_size);
	j->tail_zero = true;    /* a file of v0's size grown below: the new bytes read as zeros */
	return ic_dest_resize(&j->d, j->v->disk_size);
}

int ic_restore_sync(const struct ic_restore_opts *o, struct ic_restore_ctx *x,
		    struct ic_restore_stats *st)
{
	struct ic_view *v0 = NULL;
	struct sjob j;
	int ret = 0;

	memset(&j, 0, sizeof(j));
	j.d.fd = -1;
	j.v = x->v;
	j.key = x->key;
	if (o->sync_from) {
		/* its seal too: which blocks are equal is decided on sealed maps only */
		ret = ic_restore_open_point(x, o->sync_from, &v0);
		if (!ret && v0->block_size != j.v->block_size)
			ret = ic_fail(-EINVAL, "'%s' and '%s' have different block sizes",
				      o->sync_from, o->name);
		j.v0 = v0;
	}
	if (!ret)
		ret = open_dest(o, &j);
	if (!ret)
		ret = ic_chunks_run(&j.q, j.v->nblocks, j.v->block_size, o->threads, o->quiet,
				    "sync", sworker_main, &j);
	if (!ret)
		ret = ic_dest_flush(&j.d);
	st->disk_size = j.v->disk_size;
	st->compared = j.v->nblocks;
	st->skipped = j.tot.skipped;
	st->written = j.tot.written;
	st->zeroed = j.tot.zeroed;
	st->chain_bytes = j.tot.chain_bytes;
	st->bytes_written = j.tot.bytes_written;
	st->data_blocks = j.tot.written;
	ic_dest_close(&j.d);
	ic_view_free(v0);
	return ret;
}
