/* ic_view.c: resolving a restore point's blocks through its ancestry. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_util.h"
#include "ic_view.h"

#define MAX_DEPTH 65534u

uint32_t ic_view_block_len(const struct ic_view *v, uint64_t pos)
{
	if (pos + 1 < v->nblocks)
		return v->block_size;
	return (uint32_t)(v->disk_size - pos * v->block_size);
}

static int fill_owner(struct ic_view *v)
{
	for (uint32_t lvl = 0; lvl < v->depth; lvl++) {
		struct ic_image *img = v->path[lvl];
		uint64_t lvl_blocks = (img->slot.disk_size + v->block_size - 1) / v->block_size;
		int ret = ic_image_check_index(img);

		if (ret)
			return ret;
		/* a point whose disk was smaller ended there: nothing older shows through */
		for (uint64_t pos = lvl_blocks; pos < v->nblocks; pos++)
			v->owner[pos] = 0;
		for (uint64_t i = 0; i < img->slot.index_count; i++) {
			uint64_t pos = ic_image_entry_pos(img, i);

			if (pos >= v->nblocks)
				break;    /* ascending: the rest is past this disk's end */
			v->owner[pos] = (uint16_t)(lvl + 1);
		}
	}
	return 0;
}

int ic_view_open(struct ic_chain *c, struct ic_point *p, struct ic_view **out)
{
	struct ic_view *v;
	struct ic_point *q;
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
	v->owner = calloc(v->nblocks, sizeof(*v->owner));
	if (!v->path || !v->owner) {
		ret = ic_fail(-ENOMEM, "%s: no memory for the block map of '%s'", c->dir,
			      ic_point_name(p));
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
	ret = fill_owner(v);
	if (ret)
		goto fail;
	*out = v;
	return 0;
fail:
	ic_view_free(v);
	return ret;
}

void ic_view_free(struct ic_view *v)
{
	if (!v)
		return;
	free(v->path);
	free(v->owner);
	free(v);
}

int ic_view_lookup(const struct ic_view *v, uint64_t pos, struct ic_block_ref *ref)
{
	uint16_t o = v->owner[pos];
	struct ic_image *img;
	int64_t i;
	int ret;

	memset(ref, 0, sizeof(*ref));
	if (!o) {
		ref->e.pos = pos;
		ref->e.plain_len = ic_view_block_len(v, pos);
		return 0;
	}
	img = v->path[o - 1];
	i = ic_image_find(img, pos, -1);
	if (i < 0)
		return ic_fail(IC_ECORRUPT, "%s: block %llu vanished from the index", img->path,
			       (unsigned long long)pos);
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

int ic_view_walk(const struct ic_view *v,
		 int (*fn)(void *arg, const struct ic_block_ref *ref), void *arg)
{
	int64_t *cursor = calloc(v->depth, sizeof(*cursor));
	struct ic_block_ref ref;
	int ret = 0;

	if (!cursor)
		return -ENOMEM;
	for (uint64_t pos = 0; pos < v->nblocks && !ret; pos++) {
		uint16_t o = v->owner[pos];
		struct ic_image *img;
		int64_t i;

		if (!o)
			continue;
		img = v->path[o - 1];
		/* positions ascend, so each level's cursor only moves forward */
		i = cursor[o - 1];
		while ((uint64_t)i < img->slot.index_count && ic_image_entry_pos(img, (uint64_t)i) < pos)
			i++;
		cursor[o - 1] = i;
		memset(&ref, 0, sizeof(ref));
		ret = ic_image_entry(img, (uint64_t)i, &ref.e);
		if (ret)
			break;
		if (ref.e.pos != pos || ref.e.plain_len != ic_view_block_len(v, pos)) {
			ret = ic_fail(IC_ECORRUPT, "%s: block %llu: index disagrees with the map",
				      img->path, (unsigned long long)pos);
			break;
		}
		if (ref.e.kind == ICF_ENTRY_ZERO)
			continue;
		ref.img = img;
		ret = fn(arg, &ref);
	}
	free(cursor);
	return ret;
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
	uint8_t mac[32];
	int ret;

	ic_seal_begin(&seal, v->point->img->hdr.version);
	ret = ic_view_walk(v, seal_item, &seal);
	if (ret)
		return ret;
	ic_seal_finish(&seal, key, v->chain->chain_id, v->block_size, s, mac);
	if (sodium_memcmp(mac, s->seal, 32))
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

		snprintf(why, sizeof(why), "%s", ic_last_error(ret));
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
