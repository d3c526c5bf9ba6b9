/* ic_view.c: resolving a restore point's blocks through its ancestry. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_journal.h"
#include "ic_util.h"
#include "ic_view.h"

#define MAX_DEPTH 65534u

uint32_t ic_view_block_len(const struct ic_view *v, uint64_t pos)
{
	if (pos + 1 < v->nblocks)
		return v->block_size;
	return (uint32_t)(v->disk_size - pos * v->block_size);
}

/* ---- the streaming merge of the path's indexes ------------------------------------
 * Visits the point's mapped blocks (zero entries included) in ascending position with
 * one cursor per level and a heap of the levels ordered by (next position, deeper
 * first): O(depth) memory, O(entries x log depth) time, no per-block memory.  An entry
 * of level L at p counts only while p < lim[L], the smallest block count of L and the
 * points after it (FORMAT.md 3.4: a smaller disk hides what is older). */
struct merge {
	const struct ic_view *v;
	uint64_t *next;             /* per level: its next entry */
	uint32_t *heap;
	uint32_t nheap;
};

static uint64_t lvl_pos(const struct merge *m, uint32_t lvl)
{
	return ic_image_entry_pos(m->v->path[lvl], m->next[lvl]);
}

static bool before(const struct merge *m, uint32_t a, uint32_t b)
{
	uint64_t pa = lvl_pos(m, a), pb = lvl_pos(m, b);

	return pa < pb || (pa == pb && a > b);
}

static void sift_down(struct merge *m, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, best = i, t;

		if (l < m->nheap && before(m, m->heap[l], m->heap[best]))
			best = l;
		if (r < m->nheap && before(m, m->heap[r], m->heap[best]))
			best = r;
		if (best == i)
			return;
		t = m->heap[i];
		m->heap[i] = m->heap[best];
		m->heap[best] = t;
		i = best;
	}
}

/* Does level lvl still have a visible entry at its cursor? */
static bool lvl_live(const struct merge *m, uint32_t lvl)
{
	const struct ic_image *img = m->v->path[lvl];

	return m->next[lvl] < img->slot.index_count && lvl_pos(m, lvl) < m->v->lim[lvl];
}

static void merge_seek(struct merge *m, uint64_t pos);

static int merge_init(struct merge *m, const struct ic_view *v)
{
	memset(m, 0, sizeof(*m));
	m->v = v;
	m->next = calloc(v->depth, sizeof(*m->next));
	m->heap = calloc(v->depth, sizeof(*m->heap));
	if (!m->next || !m->heap) {
		free(m->next);
		free(m->heap);
		return -ENOMEM;
	}
	merge_seek(m, 0);
	return 0;
}

static void merge_free(struct merge *m)
{
	free(m->next);
	free(m->heap);
}

/* First entry of img at or after pos. */
static uint64_t lower_bound(const struct ic_image *img, uint64_t pos)
{
	uint64_t lo = 0, hi = img->slot.index_count;

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		if (ic_image_entry_pos(img, mid) < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Every level's cursor to its first entry at or after pos; the heap rebuilt. */
static void merge_seek(struct merge *m, uint64_t pos)
{
	m->nheap = 0;
	for (uint32_t lvl = 0; lvl < m->v->depth; lvl++) {
		m->next[lvl] = pos ? lower_bound(m->v->path[lvl], pos) : 0;
		if (lvl_live(m, lvl))
			m->heap[m->nheap++] = lvl;
	}
	for (uint32_t i = m->nheap / 2; i-- > 0;)
		sift_down(m, i);
}

/* The next mapped block: *lvl its level, *idx its entry there.  0 at the end, 1 found. */
static int merge_next(struct merge *m, uint32_t *lvl, uint64_t *idx)
{
	uint64_t pos;

	if (!m->nheap)
		return 0;
	*lvl = m->heap[0];
	*idx = m->next[*lvl];
	pos = lvl_pos(m, *lvl);
	/* every level with an entry at pos moves past it (the deepest one, on top, wins) */
	while (m->nheap && lvl_pos(m, m->heap[0]) == pos) {
		uint32_t top = m->heap[0];

		m->next[top]++;
		if (!lvl_live(m, top))
			m->heap[0] = m->heap[--m->nheap];
		sift_down(m, 0);
	}
	return 1;
}

/* ---- opening ------------------------------------------------------------------------ */

int ic_view_build_map(struct ic_view *v)
{
	struct merge m;
	uint32_t lvl;
	uint64_t idx;
	int ret;

	if (v->owner)
		return 0;
	v->owner = calloc(v->nblocks ? v->nblocks : 1, sizeof(*v->owner));
	if (!v->owner)
		return ic_fail(-ENOMEM, "%s: no memory for the block map of '%s'", v->chain->dir,
			       ic_point_name(v->point));
	ret = merge_init(&m, v);
	if (ret)
		return ret;
	while (merge_next(&m, &lvl, &idx) > 0)
		v->owner[ic_image_entry_pos(v->path[lvl], idx)] = (uint16_t)(lvl + 1);
	merge_free(&m);
	return 0;
}

int ic_view_open_nomap(struct ic_chain *c, struct ic_point *p, struct ic_view **out)
{
	struct ic_view *v;
	struct ic_point *q;
	uint64_t lim;
	int ret;

	if (p->broken)
		return ic_chain_explain_broken(c, p);
	if (p->depth > MAX_DEPTH)
		return ic_fail(-E2BIG, "%s: chain deeper than %u points", c->dir, MAX_DEPTH);
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->chain = c;
	v->point = p;
	v->depth = p->depth;
	v->block_size = c->block_size;
	v->disk_size = p->img->slot.disk_size;
	v->nblocks = (v->disk_size + v->block_size - 1) / v->block_size;
	v->path = calloc(v->depth, sizeof(*v->path));
	v->lim = calloc(v->depth, sizeof(*v->lim));
	if (!v->path || !v->lim) {
		ret = -ENOMEM;
		goto fail;
	}
	q = p;
	for (uint32_t lvl = v->depth; lvl-- > 0; q = q->parent) {
		v->path[lvl] = q->img;
		/* a chain never mixes format versions (FORMAT.md "Versions") */
		if (q->parent && q->parent->img->hdr.version != q->img->hdr.version) {
			ret = ic_fail(IC_ECORRUPT, "%s: format version %u differs from its parent's (%s, version %u)",
				      q->img->path, q->img->hdr.version, q->parent->img->path,
				      q->parent->img->hdr.version);
			goto fail;
		}
	}
	lim = UINT64_MAX;
	for (uint32_t lvl = v->depth; lvl-- > 0;) {
		uint64_t n = (v->path[lvl]->slot.disk_size + v->block_size - 1) / v->block_size;

		lim = n < lim ? n : lim;
		v->lim[lvl] = lim;
	}
	/* every index on the path read into private memory and checked, root first */
	for (uint32_t lvl = 0; lvl < v->depth; lvl++) {
		ret = ic_image_check_index(v->path[lvl]);
		if (ret)
			goto fail;
	}
	*out = v;
	return 0;
fail:
	ic_view_free(v);
	return ret;
}

int ic_view_open(struct ic_chain *c, struct ic_point *p, struct ic_view **out)
{
	struct ic_view *v;
	int ret = ic_view_open_nomap(c, p, &v);

	if (ret)
		return ret;
	ret = ic_view_build_map(v);
	if (ret) {
		ic_view_free(v);
		return ret;
	}
	*out = v;
	return 0;
}

int ic_view_open_sealed(struct ic_chain *c, struct ic_point *p, const struct ic_key *key,
			struct ic_view **out)
{
	struct ic_view *v;
	int ret = ic_view_open_nomap(c, p, &v);

	if (ret)
		return ret;
	ret = ic_view_check_seal(v, key);
	if (!ret)
		ret = ic_view_build_map(v);
	if (ret) {
		ic_view_free(v);
		return ret;
	}
	*out = v;
	return 0;
}

void ic_view_free(struct ic_view *v)
{
	if (!v)
		return;
	free(v->path);
	free(v->lim);
	free(v->owner);
	free(v);
}

/* ---- lookups ------------------------------------------------------------------------ */

/* Without an owner map: the deepest level with an entry, searched from the point up. */
static int lookup_nomap(const struct ic_view *v, uint64_t pos, struct ic_image **img, int64_t *i)
{
	for (uint32_t lvl = v->depth; lvl-- > 0;) {
		if (pos >= v->lim[lvl])
			return 0;
		*i = ic_image_find(v->path[lvl], pos, -1);
		if (*i >= 0) {
			*img = v->path[lvl];
			return 1;
		}
	}
	return 0;
}

int ic_view_lookup(const struct ic_view *v, uint64_t pos, struct ic_block_ref *ref)
{
	struct ic_image *img = NULL;
	int64_t i = -1;
	int ret;

	memset(ref, 0, sizeof(*ref));
	if (v->owner) {
		uint16_t o = v->owner[pos];

		if (o) {
			img = v->path[o - 1];
			i = ic_image_find(img, pos, -1);
			if (i < 0)
				return ic_fail(IC_ECORRUPT, "%s: block %llu vanished from the index",
					       img->path, (unsigned long long)pos);
		}
	} else {
		lookup_nomap(v, pos, &img, &i);
	}
	if (!img) {
		ref->e.pos = pos;
		ref->e.plain_len = ic_view_block_len(v, pos);
		return 0;
	}
	ret = ic_image_entry(img, (uint64_t)i, &ref->e);
	if (ret)
		return ret;
	if (ref->e.plain_len != ic_view_block_len(v, pos))
		return ic_fail(IC_ECORRUPT, "%s: block %llu: length %u does not fit the disk of '%s'",
			       img->path, (unsigned long long)pos, ref->e.plain_len,
			       ic_point_name(v->point));
	if (ref->e.kind != ICF_ENTRY_ZERO)
		ref->img = img;
	return 0;
}

/* ---- cursors: the merge for readers going forward through ranges ------------------- */

struct ic_view_cursor {
	struct merge m;
};

int ic_view_cursor_open(const struct ic_view *v, struct ic_view_cursor **out)
{
	struct ic_view_cursor *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	ret = merge_init(&c->m, v);
	if (ret) {
		free(c);
		return ret;
	}
	*out = c;
	return 0;
}

void ic_view_cursor_seek(struct ic_view_cursor *c, uint64_t pos)
{
	merge_seek(&c->m, pos);
}

int ic_view_cursor_next(struct ic_view_cursor *c, uint64_t end, struct ic_block_ref *ref)
{
	const struct ic_view *v = c->m.v;
	struct ic_image *img;
	uint32_t lvl;
	uint64_t idx;
	int ret;

	if (!c->m.nheap || lvl_pos(&c->m, c->m.heap[0]) >= end)
		return 0;
	merge_next(&c->m, &lvl, &idx);
	img = v->path[lvl];
	memset(ref, 0, sizeof(*ref));
	ret = ic_image_entry(img, idx, &ref->e);
	if (ret)
		return ret;
	if (ref->e.plain_len != ic_view_block_len(v, ref->e.pos))
		return ic_fail(IC_ECORRUPT, "%s: block %llu: length %u does not fit the disk of '%s'",
			       img->path, (unsigned long long)ref->e.pos, ref->e.plain_len,
			       ic_point_name(v->point));
	if (ref->e.kind != ICF_ENTRY_ZERO)
		ref->img = img;
	return 1;
}

void ic_view_cursor_free(struct ic_view_cursor *c)
{
	if (!c)
		return;
	merge_free(&c->m);
	free(c);
}

int ic_view_walk(const struct ic_view *v,
		 int (*fn)(void *arg, const struct ic_block_ref *ref), void *arg)
{
	struct ic_block_ref ref;
	struct merge m;
	uint32_t lvl;
	uint64_t idx;
	int ret = merge_init(&m, v);

	if (ret)
		return ret;
	while (!ret && merge_next(&m, &lvl, &idx) > 0) {
		struct ic_image *img = v->path[lvl];

		memset(&ref, 0, sizeof(ref));
		ret = ic_image_entry(img, idx, &ref.e);
		if (ret)
			break;
		if (ref.e.plain_len != ic_view_block_len(v, ref.e.pos)) {
			ret = ic_fail(IC_ECORRUPT, "%s: block %llu: index disagrees with the map",
				      img->path, (unsigned long long)ref.e.pos);
			break;
		}
		if (ref.e.kind == ICF_ENTRY_ZERO)
			continue;
		ref.img = img;
		ret = fn(arg, &ref);
	}
	merge_free(&m);
	return ret;
}

static int no_item(void *arg, const struct ic_block_ref *ref)
{
	(void)arg;
	(void)ref;
	return 0;
}

int ic_view_check_map(const struct ic_view *v)
{
	return ic_view_walk(v, no_item, NULL);
}

static int seal_item(void *arg, const struct ic_block_ref *ref)
{
	ic_seal_add(arg, &ref->e);
	return 0;
}

int ic_view_check_seal(const struct ic_view *v, const struct ic_key *key)
{
	const struct icf_slot *s = &v->point->img->slot;
	struct ic_seal seal;
	uint8_t mac[ICF_SEAL_LEN];
	int ret;

	if (s->flags & ICF_SLOT_FOLDED)
		return ic_fold_check_seal(v, key);
	ic_seal_begin(&seal, v->point->img->hdr.version);
	ret = ic_view_walk(v, seal_item, &seal);
	if (ret)
		return ret;
	ret = ic_seal_finish(&seal, key, v->chain->chain_id, v->block_size, s, mac);
	if (ret)
		return ret;
	if (sodium_memcmp(mac, s->seal, ICF_SEAL_LEN))
		return ic_fail(IC_ECORRUPT,
			       "%s: restore point '%s': seal mismatch (its block map or metadata was changed)",
			       v->point->img->path, s->name);
	return 0;
}

int ic_view_read_block(const struct ic_view *v, struct ic_codec *codec, const struct ic_key *key,
		       uint64_t pos, void *buf, void *rec)
{
	struct ic_block_ref ref;
	int ret = ic_view_lookup(v, pos, &ref);

	if (ret)
		return ret;
	return ic_view_read_ref(v, codec, key, &ref, buf, rec);
}

const char *ic_view_damage_cause(const char *msg, const char *path, uint64_t pos)
{
	size_t n = strlen(path);
	char pre[48];
	int k;

	if (strncmp(msg, path, n) || strncmp(msg + n, ": ", 2))
		return msg;
	k = snprintf(pre, sizeof(pre), "block %llu: ", (unsigned long long)pos);
	return strncmp(msg + n + 2, pre, (size_t)k) ? msg : msg + n + 2 + k;
}

int ic_view_read_ref(const struct ic_view *v, struct ic_codec *codec, const struct ic_key *key,
		     const struct ic_block_ref *refp, void *buf, void *rec)
{
	struct ic_block_ref ref = *refp;
	uint64_t pos = ref.e.pos;
	int ret;

	if (!ref.img) {
		memset(buf, 0, v->block_size);
		return (int)ref.e.plain_len;
	}
	ret = ic_image_read_record(ref.img, &ref.e, rec);
	if (!ret)
		ret = ic_codec_decode(codec, key, v->chain->chain_id, ref.img->hdr.version, &ref.e,
				      rec, buf);
	if (ret) {
		char why[512];

		snprintf(why, sizeof(why), "%s",
			 ic_view_damage_cause(ic_last_error(ret), ref.img->path, pos));
		if (ret == IC_ECORRUPT)
			ic_fail(ret, "%s: restore point '%s', block %llu (bytes %llu..%llu): %s",
				ref.img->path, ic_point_name(v->point), (unsigned long long)pos,
				(unsigned long long)pos * v->block_size,
				(unsigned long long)pos * v->block_size + ref.e.plain_len - 1, why);
		return ret;
	}
	if (ref.e.plain_len < v->block_size)
		memset((uint8_t *)buf + ref.e.plain_len, 0, v->block_size - ref.e.plain_len);
	return (int)ref.e.plain_len;
}
