/* ic_cons_fold.c: fold the CDP journal into restore points without the key (FORMAT.md
 * 15.5, `imgconsolidate --fold-cdp KEEP:EVERY`).  For each session old enough (not the
 * newest, version 2, its last checkpoint more than KEEP ago), oldest first: the last
 * checkpoint of every EVERY-long slice of time (UTC-aligned) becomes a point whose
 * records are the journal's, copied as they are, and whose seal is the checkpoint's
 * map seal; the first of a session a full (synthetic), each next one an incremental of
 * the blocks that changed.  Each point is committed (written, renamed, directory
 * synced) before the next; the session's file is removed once all are.  A checkpoint
 * already folded (a point with its session id and interval) is not written again, so
 * a run killed anywhere is finished by the next.  Under the chain's writer lock. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_array.h"
#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_consolidate.h"
#include "ic_image.h"
#include "ic_journal.h"
#include "ic_util.h"

struct u64s IC_ARRAY_BODY(uint64_t);

/* A block of the disk as of the walk so far: its last record. */
struct blk {
	uint64_t off;               /* the frame's offset; 0: never journalled (zero) */
	uint64_t rec_hash;
	uint64_t k;
	uint32_t stored_len;        /* 0: zero */
	uint16_t kind;
};

struct fold {
	const struct ic_fold_opts *o;
	struct ic_fold_stats *st;
	struct ic_chain *c;
	const struct icf_header *hdr;   /* a v2 image's: the chain's */
	struct blk *cur, *prev;         /* prev: as of the last point written or found */
	bool have_prev;
	uint32_t prev_seq, next_seq;
	const uint64_t *chosen;         /* intervals to fold, ascending */
	size_t nchosen, at;
	uint8_t *rec;
};

static void step(const struct fold *f, const char *name)
{
	if (f->o->step)
		f->o->step(name);
}

static int fold_rec(void *arg, const struct ic_journal *j, uint64_t k, uint64_t off,
		    const struct icf_cdp_rec *r, const uint8_t *rec)
{
	struct fold *f = arg;
	struct blk *b = &f->cur[r->pos];

	(void)j;
	b->off = off;
	b->k = k;
	b->rec_hash = r->rec_hash;
	b->stored_len = rec ? r->stored_len : 0;
	b->kind = r->kind;
	return 0;
}

static const struct ic_point *folded(const struct ic_chain *c, uint64_t session_id, uint64_t k)
{
	for (size_t i = 0; i < c->npoints; i++) {
		const struct icf_slot *s = &c->points[i].img->slot;

		if ((s->flags & ICF_SLOT_FOLDED) && s->fold_session_id == session_id &&
		    s->fold_interval == k)
			return &c->points[i];
	}
	return NULL;
}

static bool differs(const struct blk *a, const struct blk *b)
{
	if (!a->stored_len || !b->stored_len)
		return a->stored_len != b->stored_len;
	return a->off != b->off;
}

/* Write checkpoint c's disk as a point (the blocks that changed since prev). */
static int write_point(struct fold *f, const struct ic_journal *j, const struct icf_cdp_ckpt *c)
{
	struct ic_writer *w = NULL;
	struct icf_slot slot;
	uint64_t pos;
	uint32_t seq = f->next_seq;
	int ret;

	memset(&slot, 0, sizeof(slot));
	do
		randombytes_buf(&slot.point_id, sizeof(slot.point_id));
	while (!slot.point_id);
	ret = ic_writer_new(f->o->chain_dir, f->hdr, seq, &w);
	for (pos = 0; !ret && pos < j->nblocks; pos++) {
		const struct blk *b = &f->cur[pos];
		struct icf_entry e = { .pos = pos, .plain_len = ic_journal_block_len(j, pos) };
		uint64_t at = 0;

		if (f->have_prev ? !differs(b, &f->prev[pos]) : !b->stored_len)
			continue;
		if (!b->stored_len) {           /* became zero since the parent */
			e.origin = seq;
			e.origin_id = slot.point_id;
			ret = ic_writer_add_entry(w, &e);
			continue;
		}
		ret = ic_pread_full(j->fd, f->rec, b->stored_len, b->off + sizeof(struct icf_cdp_rec),
				    j->path);
		if (!ret && XXH3_64bits(f->rec, b->stored_len) != b->rec_hash)
			ret = ic_fail(IC_ECORRUPT, "%s: interval %llu, block %llu: the record fails its checksum",
				      j->path, (unsigned long long)b->k, (unsigned long long)pos);
		if (!ret)
			ret = ic_writer_append(w, f->rec, b->stored_len, &at);
		if (ret)
			break;
		e.offset = at;
		e.stored_len = b->stored_len;
		e.origin = ICF_CDP_ORIGIN;
		e.kind = b->kind;
		e.keygen = j->h.keygen;
		e.rec_hash = b->rec_hash;
		e.origin_id = ic_cdp_interval_id(j->h.session_id, b->k);
		ret = ic_writer_add_entry(w, &e);
		f->st->bytes += b->stored_len;
		step(f, "fold-record");
	}
	if (ret) {
		ic_writer_abort(w);
		return ret;
	}
	slot.seq = seq;
	slot.parent_seq = f->have_prev ? f->prev_seq : 0;
	slot.kind = f->have_prev ? ICF_KIND_CONSOLIDATED : ICF_KIND_SYNTHETIC_FULL;
	slot.created = c->time_s;
	slot.disk_size = j->h.disk_size;
	ic_cdp_fold_name(c->time_s, c->time_ns, slot.name, sizeof(slot.name));
	memcpy(slot.seal, c->tail, ICF_SEAL_LEN);       /* the map seal (version 2) */
	slot.seal_keygen = j->h.keygen;
	slot.flags = ICF_SLOT_FOLDED;
	slot.fold_session_id = j->h.session_id;
	slot.fold_interval = c->interval;
	slot.fold_time_ns = c->time_ns;
	ret = ic_writer_commit(w, &slot);
	if (ret)
		return ret;
	if (!f->o->quiet)
		printf("%s: folded checkpoint %llu of session %u into point %s (%08u)\n",
		       f->o->chain_dir, (unsigned long long)c->interval, j->h.session, slot.name, seq);
	f->st->points++;
	f->prev_seq = seq;
	f->next_seq++;
	step(f, "fold-written");
	return 0;
}

static int fold_ckpt(void *arg, const struct ic_journal *j, const struct icf_cdp_ckpt *c)
{
	struct fold *f = arg;
	const struct ic_point *p;
	int ret = 0;

	if (f->at >= f->nchosen || f->chosen[f->at] != c->interval)
		return 0;
	f->at++;
	p = folded(f->c, j->h.session_id, c->interval);
	if (p) {
		f->prev_seq = p->seq;
		f->st->skipped++;
	} else {
		ret = f->o->dry_run ? 0 : write_point(f, j, c);
	}
	if (!ret) {
		memcpy(f->prev, f->cur, j->nblocks * sizeof(*f->prev));
		f->have_prev = true;
	}
	return ret;
}

/* The checkpoints of a session to fold: the last of each slice of every_s seconds. */
static int choose(const struct ic_jckpts *ck, int64_t every, struct u64s *out)
{
	for (size_t i = 0; i < ck->n; i++) {
		const struct ic_jckpt *c = &ck->v[i];
		bool last = i + 1 == ck->n ||
			    ck->v[i + 1].when.tv_sec / every != c->when.tv_sec / every;

		if (c->time_ok && last && ic_array_push(out, c->interval))
			return -ENOMEM;
	}
	return 0;
}

static int fold_session(struct fold *f, const char *dir, uint32_t session, time_t now)
{
	struct ic_journal j = { 0 };
	struct ic_jwalk scan = { 0 }, w = { 0 };
	struct u64s chosen = { 0 };
	int ret;

	ret = ic_journal_open_keyless(dir, session, f->c->chain_id, f->c->key_check, &j);
	if (ret == IC_ECORRUPT && j.fd >= 0 && j.size <= ICF_CDP_HEADER_SIZE) {
		ret = 0;        /* a session that died while its header was written: no checkpoint */
		goto out;
	}
	if (!ret && j.h.version < 2) {
		if (!f->o->quiet)
			printf("%s: version 1 (no map seal): not folded\n", j.path);
		goto out;
	}
	if (!ret)
		ret = ic_journal_walk(&j, &scan);
	if (ret || !scan.ck.n)
		goto out;
	if (scan.ck.v[scan.ck.n - 1].when.tv_sec + f->o->keep_s > now) {
		ret = 1;        /* too young: it and every later session stay */
		goto out;
	}
	ret = choose(&scan.ck, f->o->every_s, &chosen);
	f->cur = calloc(j.nblocks, sizeof(*f->cur));
	f->prev = calloc(j.nblocks, sizeof(*f->prev));
	f->rec = malloc(ic_codec_bound(j.h.block_size));
	if (!ret && (!f->cur || !f->prev || !f->rec))
		ret = -ENOMEM;
	if (ret || !chosen.n)
		goto out;
	f->have_prev = false;
	f->chosen = chosen.v;
	f->nchosen = chosen.n;
	f->at = 0;
	w.stop = chosen.v[chosen.n - 1];
	w.on_rec = fold_rec;
	w.on_ckpt = fold_ckpt;
	w.arg = f;
	ret = ic_journal_walk(&j, &w);
	if (!ret && !f->o->dry_run) {
		step(f, "fold-remove");
		if (unlink(j.path) < 0)
			ret = ic_fail(-errno, "%s: remove: %s", j.path, strerror(errno));
		else
			ret = ic_fsync_dir(dir);
		f->st->sessions++;
	}
out:
	ic_array_free(&scan.ck);
	ic_array_free(&w.ck);
	ic_array_free(&chosen);
	free(f->cur);
	free(f->prev);
	free(f->rec);
	f->cur = f->prev = NULL;
	f->rec = NULL;
	ic_journal_close(&j);
	return ret;
}

int ic_fold_cdp(const struct ic_fold_opts *o, struct ic_fold_stats *st)
{
	struct ic_cdp_sessions sessions = { 0 };
	struct fold f = { .o = o, .st = st };
	char *dir = ic_path_join(o->chain_dir, ICF_CDP_DIR);
	int ret, lock = -1;

	memset(st, 0, sizeof(*st));
	if (!dir)
		return -ENOMEM;
	ret = ic_chain_lock(o->chain_dir, true, &lock);
	if (!ret)
		ret = ic_chain_cleanup_tmp(o->chain_dir);
	if (!ret)
		ret = ic_chain_open(o->chain_dir, &f.c);
	for (size_t i = 0; !ret && i < f.c->npoints && !f.hdr; i++)
		if (f.c->points[i].img->hdr.version == ICF_IMAGE_V2)
			f.hdr = &f.c->points[i].img->hdr;
	if (!ret && !f.hdr)
		ret = ic_fail(-ENOENT, "%s: no version 2 image to fold the journal beside (imgbackup --full first)",
			      o->chain_dir);
	if (!ret)
		ret = ic_chain_next_seq(f.c, &f.next_seq);
	if (!ret && f.next_seq < 2)
		f.next_seq = 2;         /* a folded entry's origin 1 is never the point's own */
	if (!ret)
		ret = ic_cdp_list_sessions(dir, &sessions);
	/* never the newest session: the filter may be writing it */
	for (size_t i = 0; !ret && i + 1 < sessions.n; i++)
		ret = fold_session(&f, dir, sessions.v[i], time(NULL));
	if (ret == 1)
		ret = 0;
	ic_array_free(&sessions);
	ic_chain_free(f.c);
	if (lock >= 0)
		ic_chain_unlock(lock);
	free(dir);
	return ret;
}
