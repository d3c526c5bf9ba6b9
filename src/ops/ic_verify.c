/* ic_verify.c: whole-chain checks, keyless or with the key. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_keys.h"
#include "ic_progress.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"
#include "ic_verify.h"
#include "ic_view.h"

struct vctx {
	const struct ic_verify_opts *o;
	struct ic_verify_stats *st;
	struct ic_chain *c;
	struct ic_key *key;
	struct ic_codec *codec;
	bool *bad_index;            /* per point: its index was reported damaged */
	uint8_t *rec, *plain;
	struct ic_progress prog;
	uint64_t done, total;
};

static void problem(struct vctx *x, int err)
{
	x->st->problems++;
	ic_progress_done(&x->prog);
	ic_msg("%s", ic_last_error(err));
}

/* Check every record of one image (its own records only). */
static int verify_image(struct vctx *x, struct ic_point *p)
{
	struct ic_image *img = p->img;
	struct icf_entry e;
	bool *bad = &x->bad_index[p - x->c->points];
	int ret = ic_image_check_index(img);

	x->st->images++;
	if (ret) {
		*bad = true;
		problem(x, ret);
		return ret == IC_ECORRUPT ? 0 : ret;
	}
	for (uint64_t i = 0; i < img->slot.index_count; i++) {
		if (ic_interrupted)
			return ic_fail(-EINTR, "interrupted");
		ret = ic_image_entry(img, i, &e);
		if (ret) {
			*bad = true;
			problem(x, ret);
			continue;
		}
		if (e.kind == ICF_ENTRY_ZERO)
			continue;
		x->st->records++;
		x->st->bytes += e.stored_len;
		x->done += e.stored_len;
		ic_progress_update(&x->prog, x->done);
		ret = ic_image_read_record(img, &e, x->rec);
		if (!ret && x->key)
			ret = ic_codec_decode(x->codec, x->key, x->c->chain_id, img->hdr.version, &e,
					      x->rec, x->plain);
		if (ret == IC_ECORRUPT) {
			char why[512];

			snprintf(why, sizeof(why), "%s",
				 ic_view_damage_cause(ic_last_error(ret), img->path, e.pos));
			ic_fail(ret, "%s: point '%s', block %llu (disk bytes %llu..%llu): %s", img->path,
				img->slot.name, (unsigned long long)e.pos,
				(unsigned long long)e.pos * x->c->block_size,
				(unsigned long long)e.pos * x->c->block_size + e.plain_len - 1, why);
			problem(x, ret);
		} else if (ret) {
			return ret;
		}
	}
	return 0;
}

static bool index_reported(struct vctx *x, struct ic_point *p)
{
	for (struct ic_point *q = p; q; q = q->parent)
		if (x->bad_index[q - x->c->points])
			return true;
	return false;
}

static int verify_point_map(struct vctx *x, struct ic_point *p)
{
	struct ic_view *v = NULL;
	int ret;

	x->st->points++;
	if (p->broken) {
		ic_fail(IC_ECORRUPT, "%s: point '%s': its parent (sequence %u) is missing or damaged",
			p->img->path, p->img->slot.name, p->img->slot.parent_seq);
		problem(x, IC_ECORRUPT);
		return 0;
	}
	/* no per-block memory: a streaming walk of the path's private indexes */
	ret = ic_view_open_nomap(x->c, p, &v);
	if (!ret)
		ret = x->key ? ic_view_check_seal(v, x->key) : ic_view_check_map(v);
	ic_view_free(v);
	if (ret == IC_ECORRUPT && index_reported(x, p))
		return 0;    /* the damaged index on its path was reported already */
	if (ret == IC_ECORRUPT || ret == -ENOENT) {
		problem(x, ret);
		ret = 0;
	}
	return ret;
}

static bool selected(struct vctx *x, struct ic_point *p, struct ic_point *target)
{
	for (struct ic_point *q = target; q; q = q->parent)
		if (q == p)
			return true;
	return !x->o->name;
}

static int check_names(struct vctx *x)
{
	for (size_t i = 0; i < x->c->npoints; i++)
		for (size_t k = i + 1; k < x->c->npoints; k++)
			if (!strcmp(x->c->points[i].img->slot.name, x->c->points[k].img->slot.name)) {
				ic_fail(IC_ECORRUPT, "%s: two points are named '%s'", x->c->dir,
					x->c->points[i].img->slot.name);
				problem(x, IC_ECORRUPT);
			}
	return 0;
}

static int unlock(struct vctx *x)
{
	int ret = ic_key_unlock(x->o->chain_dir, x->o->passphrase_file, &x->key);

	if (ret)
		return ret;
	if (x->c->have_images && (memcmp(x->key->chain_id, x->c->chain_id, ICF_ID_LEN) ||
				  memcmp(x->key->key_check, x->c->key_check, ICF_CHECK_LEN)))
		return ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			       x->o->chain_dir);
	ret = ic_state_check(x->c, x->o->accept_rollback);
	if (ret)
		return ret;
	x->codec = ic_codec_new(x->c->block_size, 0);
	x->plain = malloc(x->c->block_size);
	return x->codec && x->plain ? 0 : -ENOMEM;
}

int ic_verify(const struct ic_verify_opts *o, struct ic_verify_stats *st)
{
	struct vctx x;
	struct ic_point *target = NULL;
	int ret;

	memset(&x, 0, sizeof(x));
	memset(st, 0, sizeof(*st));
	x.o = o;
	x.st = st;
	ret = ic_chain_open(o->chain_dir, &x.c);
	if (ret)
		return ret;
	if (o->name && (ret = ic_chain_lookup(x.c, o->name, &target)))
		goto out;
	if (!x.c->npoints && !x.c->nbad) {
		ret = ic_fail(-ENOENT, "%s: no restore points (not a chain?)", o->chain_dir);
		goto out;
	}
	if (o->data && (ret = unlock(&x)))
		goto out;
	x.rec = malloc(ic_codec_bound(x.c->block_size ? x.c->block_size : ICF_BLOCK_MIN));
	x.bad_index = calloc(x.c->npoints + 1, sizeof(*x.bad_index));
	if (!x.rec || !x.bad_index) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < x.c->npoints; i++)
		if (selected(&x, &x.c->points[i], target))
			x.total += x.c->points[i].img->slot.data_bytes;
	ic_progress_init(&x.prog, "verify", x.total, o->quiet);
	for (size_t i = 0; i < x.c->nbad; i++) {
		ic_fail(x.c->bad[i].err, "%s", x.c->bad[i].why);
		problem(&x, x.c->bad[i].err);
	}
	check_names(&x);
	for (size_t i = 0; i < x.c->npoints && !ret; i++)
		if (selected(&x, &x.c->points[i], target))
			ret = verify_image(&x, &x.c->points[i]);
	for (size_t i = 0; i < x.c->npoints && !ret; i++)
		if (!target || &x.c->points[i] == target)
			ret = verify_point_map(&x, &x.c->points[i]);
	ic_progress_done(&x.prog);
	if (!ret && st->problems)
		ret = ic_fail(IC_ECORRUPT, "%s: %llu problem%s found", o->chain_dir,
			      (unsigned long long)st->problems, st->problems == 1 ? "" : "s");
out:
	ic_codec_free(x.codec);
	free(x.bad_index);
	free(x.rec);
	free(x.plain);
	ic_key_free(x.key);
	ic_chain_free(x.c);
	return ret;
}
