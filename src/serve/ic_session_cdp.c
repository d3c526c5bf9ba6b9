/* ic_session_cdp.c: the CDP journal's checkpoints served read-only beside the restore
 * points (ic_session_cdp.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_array.h"
#include "ic_codec.h"
#include "ic_journal.h"
#include "ic_session.h"
#include "ic_session_cdp.h"
#include "ic_util.h"

/* What a listing was made from: every journal file's size and change time. */
struct jfile {
	uint64_t session;           /* 64 bits: no padding (compared with memcmp) */
	uint64_t size;
	struct timespec mtime;
};

struct ic_scdp {
	pthread_mutex_t mu;
	char *dir;                  /* CHAIN/cdp */
	bool scanned;
	struct jfiles IC_ARRAY_BODY(struct jfile) sig;
	IC_ARRAY(struct ic_scdp_info) list;
};

/* Per block of the open checkpoint: where its last record is, and what the walk verified. */
struct slot {
	uint64_t off;               /* the frame's offset */
	uint64_t interval;
	uint64_t rec_hash;
	uint32_t stored_len;        /* 0: a zero frame */
	uint16_t kind;
	uint8_t tag[ICF_TAG_LEN];
};

struct ic_scdp_disk {
	struct ic_journal j;
	const struct ic_key *key;
	uint32_t *map;              /* block -> 1 + index in slots; 0: never journalled (zero) */
	IC_ARRAY(struct slot) slots;
	pthread_mutex_t mu;         /* codec, rec, plain, cached */
	struct ic_codec *codec;
	uint8_t *rec, *plain;
	uint64_t cached;            /* the block in plain, or UINT64_MAX */
};

static struct ic_scdp *get(struct ic_session *s)
{
	struct ic_scdp *c = __atomic_load_n(&s->cdp, __ATOMIC_ACQUIRE), *none = NULL;

	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->dir = ic_path_join(s->o.chain_dir, ICF_CDP_DIR);
	if (!c->dir) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	if (!__atomic_compare_exchange_n(&s->cdp, &none, c, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		ic_scdp_free(c);
		return none;
	}
	return c;
}

void ic_scdp_free(struct ic_scdp *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->mu);
	ic_array_free(&c->sig);
	ic_array_free(&c->list);
	free(c->dir);
	free(c);
}

bool ic_scdp_present(struct ic_session *s)
{
	struct ic_scdp *c = get(s);
	struct stat st;

	return c && lstat(c->dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The journal files as they are now; whether they differ from c->sig (then c->sig = them). */
static int changed(struct ic_scdp *c, bool *out)
{
	struct ic_cdp_sessions sessions = { 0 };
	struct jfiles IC_ARRAY_BODY(struct jfile) now = { 0 };
	int ret;

	ret = ic_cdp_list_sessions(c->dir, &sessions);
	for (size_t i = 0; !ret && i < sessions.n; i++) {
		struct jfile f = { .session = sessions.v[i] };
		char name[32], *p;
		struct stat st;

		snprintf(name, sizeof(name), "%08u%s", sessions.v[i], ICF_CDP_SUFFIX);
		p = ic_path_join(c->dir, name);
		if (p && lstat(p, &st) == 0) {
			f.size = (uint64_t)st.st_size;
			f.mtime = st.st_mtim;
		}
		free(p);
		ret = ic_array_push(&now, f);
	}
	ic_array_free(&sessions);
	if (ret) {
		ic_array_free(&now);
		return ret;
	}
	*out = !c->scanned || now.n != c->sig.n ||
	       (now.n && memcmp(now.v, c->sig.v, now.n * sizeof(*now.v)));
	ic_array_free(&c->sig);
	c->sig.v = now.v;
	c->sig.n = now.n;
	c->sig.cap = now.cap;
	return 0;
}

/* Rescan when a journal file changed.  Under c->mu. */
static int refresh(struct ic_session *s, struct ic_scdp *c)
{
	struct ic_jckpts ck = { 0 };
	bool diff = false, *offered = NULL;
	int ret = changed(c, &diff);

	if (ret || !diff)
		return ret;
	ret = ic_journal_scan(c->dir, s->key, true, &ck);
	if (!ret && !(offered = calloc(ck.n + 1, sizeof(*offered))))
		ret = -ENOMEM;
	if (!ret)
		ret = ic_journal_offered(&ck, offered);
	c->list.n = 0;
	for (size_t i = 0; !ret && i < ck.n; i++) {
		struct ic_scdp_info *in;

		if (!offered[i])
			continue;
		in = ic_array_add(&c->list);
		if (!in) {
			ret = -ENOMEM;
			break;
		}
		memset(in, 0, sizeof(*in));
		ic_journal_fmt_time(&ck.v[i].when, in->name, sizeof(in->name));
		in->session = ck.v[i].session;
		in->interval = ck.v[i].interval;
		in->disk_size = ck.v[i].disk_size;
		in->when = ck.v[i].when;
	}
	c->scanned = !ret;
	if (ret) {
		c->list.n = 0;
		ic_session_log(s, LOG_ERR, "%s: %s", c->dir, ic_last_error(ret));
	}
	free(offered);
	ic_array_free(&ck);
	return ret;
}

int ic_scdp_each(struct ic_session *s, int (*fn)(void *arg, const struct ic_scdp_info *c),
		 void *arg)
{
	struct ic_scdp *c = get(s);
	int ret;

	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&c->mu);
	ret = refresh(s, c);
	for (size_t i = 0; !ret && i < c->list.n; i++)
		ret = fn(arg, &c->list.v[i]);
	pthread_mutex_unlock(&c->mu);
	return ret;
}

static ssize_t find_in(struct ic_scdp *c, const char *name, size_t len)
{
	for (size_t i = 0; i < c->list.n; i++)
		if (strlen(c->list.v[i].name) == len && !memcmp(c->list.v[i].name, name, len))
			return (ssize_t)i;
	return -1;
}

int ic_scdp_find(struct ic_session *s, const char *name, size_t len, struct ic_scdp_info *out)
{
	struct ic_scdp *c = get(s);
	ssize_t i;
	int ret = 0;

	if (!c)
		return -ENOMEM;
	pthread_mutex_lock(&c->mu);
	i = c->scanned ? find_in(c, name, len) : -1;
	if (i < 0) {            /* a checkpoint written since the last listing? */
		ret = refresh(s, c);
		i = find_in(c, name, len);
	}
	if (!ret && i < 0)
		ret = -ENOENT;
	if (!ret)
		*out = c->list.v[i];
	pthread_mutex_unlock(&c->mu);
	return ret;
}

/* ---- one open checkpoint ------------------------------------------------------------ */

static int index_rec(void *arg, const struct ic_journal *j, uint64_t k, uint64_t off,
		     const struct icf_cdp_rec *r, const uint8_t *rec)
{
	struct ic_scdp_disk *d = arg;
	struct slot *sl;

	if (!d->map[r->pos]) {
		if (!ic_array_add(&d->slots))
			return -ENOMEM;
		d->map[r->pos] = (uint32_t)d->slots.n;
	}
	sl = &d->slots.v[d->map[r->pos] - 1];
	sl->off = off;
	sl->interval = k;
	sl->rec_hash = r->rec_hash;
	sl->stored_len = rec ? r->stored_len : 0;
	sl->kind = r->kind;
	if (rec)
		memcpy(sl->tag, rec + r->stored_len - ICF_TAG_LEN, ICF_TAG_LEN);
	(void)j;
	return 0;
}

/* The map seal of a version 2 checkpoint over the blocks indexed, as imgrestore --at
 * checks it (FORMAT.md 15.5). */
static int check_mseal(const struct ic_scdp_disk *d, const struct ic_scdp_info *in,
		       const uint8_t mseal[32])
{
	struct icf_cdp_ckpt c = { .interval = in->interval, .time_s = in->when.tv_sec,
				  .time_ns = (uint32_t)in->when.tv_nsec };
	struct icf_cdp_rec r = { 0 };
	ic_cdp_acc a = 0;
	uint8_t want[32];

	for (uint64_t pos = 0; pos < d->j.nblocks; pos++) {
		const struct slot *sl = d->map[pos] ? &d->slots.v[d->map[pos] - 1] : NULL;

		if (!sl || !sl->stored_len)
			continue;
		r.pos = pos;
		r.kind = sl->kind;
		r.plain_len = ic_journal_block_len(&d->j, pos);
		r.rec_hash = sl->rec_hash;
		a += ic_cdp_map_term(d->j.kcdp, &d->j.h, sl->interval, &r);
	}
	ic_cdp_mseal(d->j.kcdp, &d->j.h, &c, a, want);
	if (sodium_memcmp(want, mseal, 32))
		return ic_fail(IC_ECORRUPT, "%s: checkpoint %llu: its map seal does not match the disk its records make",
			       d->j.path, (unsigned long long)in->interval);
	return 0;
}

int ic_scdp_open(struct ic_session *s, const char *name, size_t len, struct ic_scdp_disk **out)
{
	struct ic_scdp *c = get(s);
	struct ic_jckpts ck = { 0 };
	struct ic_scdp_info in;
	struct ic_scdp_disk *d = NULL;
	struct ic_jwalk w = { 0 };
	size_t pick = 0;
	int ret;

	if (!c)
		return -ENOMEM;
	ret = ic_scdp_find(s, name, len, &in);
	/* the same choice imgrestore --at makes, on the journal as it is now */
	if (!ret)
		ret = ic_journal_scan(c->dir, s->key, true, &ck);
	if (!ret)
		ret = ic_journal_choose(&ck, c->dir, &in.when, &pick);
	if (!ret && (ck.v[pick].session != in.session || ck.v[pick].interval != in.interval))
		ret = ic_fail(-ENOENT, "%s: checkpoint %s is no longer the one its time names",
			      c->dir, in.name);
	ic_array_free(&ck);
	if (!ret && !(d = calloc(1, sizeof(*d))))
		ret = -ENOMEM;
	if (ret)
		return ret;
	d->key = s->key;
	d->cached = UINT64_MAX;
	d->j.fd = -1;
	pthread_mutex_init(&d->mu, NULL);
	ret = ic_journal_open(c->dir, in.session, s->key, &d->j);
	if (!ret && (d->j.nblocks > UINT32_MAX - 1 ||
		     !(d->map = calloc(d->j.nblocks, sizeof(*d->map)))))
		ret = -ENOMEM;
	if (!ret) {
		w.stop = in.interval;
		w.on_rec = index_rec;
		w.arg = d;
		ret = ic_journal_walk(&d->j, &w);
		ic_array_free(&w.ck);
	}
	if (!ret && w.has_mseal)
		ret = check_mseal(d, &in, w.mseal);
	if (!ret) {
		d->codec = ic_codec_new(d->j.h.block_size, 1);
		d->rec = malloc(ic_codec_bound(d->j.h.block_size));
		d->plain = malloc(d->j.h.block_size);
		if (!d->codec || !d->rec || !d->plain)
			ret = -ENOMEM;
	}
	if (ret) {
		ic_session_log(s, LOG_ERR, "%s/%s: %s", IC_SCDP_DIR, in.name, ic_last_error(ret));
		ic_scdp_close(d);
		return ret;
	}
	*out = d;
	return 0;
}

uint64_t ic_scdp_size(const struct ic_scdp_disk *d)
{
	return d->j.h.disk_size;
}

/* Decode block pos into d->plain.  Under d->mu. */
static int load(struct ic_scdp_disk *d, uint64_t pos)
{
	const struct slot *sl = d->map[pos] ? &d->slots.v[d->map[pos] - 1] : NULL;
	uint32_t len = ic_journal_block_len(&d->j, pos);
	struct icf_entry e;
	int ret;

	if (d->cached == pos)
		return 0;
	d->cached = UINT64_MAX;
	if (!sl || !sl->stored_len) {
		memset(d->plain, 0, len);
		d->cached = pos;
		return 0;
	}
	ret = ic_pread_full(d->j.fd, d->rec, sl->stored_len, sl->off + sizeof(struct icf_cdp_rec),
			    d->j.path);
	if (ret)
		return ret;
	/* the storage may have changed the file since the walk verified it */
	if (XXH3_64bits(d->rec, sl->stored_len) != sl->rec_hash ||
	    sodium_memcmp(d->rec + sl->stored_len - ICF_TAG_LEN, sl->tag, ICF_TAG_LEN))
		return ic_fail(IC_ECORRUPT, "%s: interval %llu, block %llu: the record changed since it was verified",
			       d->j.path, (unsigned long long)sl->interval, (unsigned long long)pos);
	ic_cdp_entry(&d->j.h, sl->interval, pos, len, &e);
	e.kind = sl->kind;
	e.stored_len = sl->stored_len;
	e.rec_hash = sl->rec_hash;
	ret = ic_codec_decode(d->codec, d->key, d->j.h.chain_id, ICF_IMAGE_V2, &e, d->rec,
			      d->plain);
	if (ret)
		return ic_fail(ret, "%s: interval %llu, block %llu: %s", d->j.path,
			       (unsigned long long)sl->interval, (unsigned long long)pos,
			       ic_last_error(ret));
	d->cached = pos;
	return 0;
}

ssize_t ic_scdp_read(struct ic_scdp_disk *d, void *buf, size_t len, uint64_t off)
{
	uint64_t size = d->j.h.disk_size, bs = d->j.h.block_size;
	uint8_t *out = buf;
	size_t done = 0;
	int ret = 0;

	if (off >= size)
		return 0;
	if (len > size - off)
		len = (size_t)(size - off);
	pthread_mutex_lock(&d->mu);
	while (done < len) {
		uint64_t at = off + done, pos = at / bs, in = at % bs;
		size_t n = (size_t)(bs - in);

		if (n > len - done)
			n = len - done;
		ret = load(d, pos);
		if (ret)
			break;
		memcpy(out + done, d->plain + in, n);
		done += n;
	}
	pthread_mutex_unlock(&d->mu);
	return ret ? ret : (ssize_t)len;
}

void ic_scdp_close(struct ic_scdp_disk *d)
{
	if (!d)
		return;
	ic_journal_close(&d->j);
	ic_codec_free(d->codec);
	free(d->rec);
	free(d->plain);
	free(d->map);
	ic_array_free(&d->slots);
	pthread_mutex_destroy(&d->mu);
	free(d);
}
