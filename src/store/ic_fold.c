/* ic_fold.c: points folded from the CDP journal (FORMAT.md 15.5): their seal is the
 * checkpoint's map seal, checked here with the key over the point's block map. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "ic_journal.h"
#include "ic_util.h"
#include "ic_view.h"

void ic_cdp_fold_name(int64_t time_s, uint32_t time_ns, char *buf, size_t len)
{
	struct timespec t = { .tv_sec = (time_t)time_s, .tv_nsec = (long)time_ns };
	char tb[64];

	snprintf(buf, len, "cdp-%s", ic_journal_fmt_time(&t, tb, sizeof(tb)));
}

struct sum {
	const uint8_t *kcdp;
	ic_cdp_acc a;
};

static int add_item(void *arg, const struct ic_block_ref *ref)
{
	struct sum *s = arg;
	const struct icf_entry *e = &ref->e;
	struct icf_map_item_v2 it = {
		.pos = e->pos, .origin = e->origin, .kind = e->kind, .keygen = e->keygen,
		.plain_len = e->plain_len, .rec_hash = e->rec_hash, .origin_id = e->origin_id,
	};

	if (e->kind != ICF_ENTRY_ZERO)
		s->a += ic_cdp_item_term(s->kcdp, &it);
	return 0;
}

int ic_fold_check_seal(const struct ic_view *v, const struct ic_key *key)
{
	const struct icf_slot *sl = &v->point->img->slot;
	struct icf_cdp_header h = { 0 };
	struct icf_cdp_ckpt c = { 0 };
	uint8_t kcdp[32], mac[32];
	struct sum s = { kcdp, 0 };
	char name[ICF_NAME_MAX + 1];
	int ret;

	ic_cdp_fold_name(sl->created, sl->fold_time_ns, name, sizeof(name));
	if (v->point->img->hdr.version != ICF_IMAGE_V2 || strcmp(name, sl->name))
		return ic_fail(IC_ECORRUPT, "%s: restore point '%s': seal mismatch (a folded point must be named %s)",
			       v->point->img->path, sl->name, name);
	ret = ic_cdp_mac_key(key, sl->seal_keygen, kcdp);
	if (ret)
		return ret;
	ret = ic_view_walk(v, add_item, &s);
	if (!ret) {
		h.session_id = sl->fold_session_id;
		h.disk_size = sl->disk_size;
		h.block_size = v->block_size;
		c.interval = sl->fold_interval;
		c.time_s = sl->created;
		c.time_ns = sl->fold_time_ns;
		ic_cdp_mseal(kcdp, &h, &c, s.a, mac);
		if (sodium_memcmp(mac, sl->seal, ICF_SEAL_LEN))
			ret = ic_fail(IC_ECORRUPT,
				      "%s: restore point '%s': seal mismatch (its block map is not the journal checkpoint's it was folded from)",
				      v->point->img->path, sl->name);
	}
	sodium_memzero(kcdp, sizeof(kcdp));
	return ret;
}
