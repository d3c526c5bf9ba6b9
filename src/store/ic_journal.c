/* ic_journal.c: the CDP journal's reader (FORMAT.md 15.3, 15.4): a session's header and
 * frames verified with the key, the checkpoints of every session, which one a time
 * names; and what the writer shares with it (keys, ids, MACs). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "ic_array.h"
#include "ic_codec.h"
#include "ic_journal.h"
#include "ic_mem.h"
#include "ic_util.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the CDP journal is written in host order, which is little-endian only"
#endif

int ic_cdp_mac_key(const struct ic_key *key, uint16_t g, uint8_t out[32])
{
	const struct ic_subkeys *sk = ic_key_gen(key, g);
	uint8_t in[8 + ICF_ID_LEN];

	if (!sk)
		return ic_fail(IC_EKEY, "journal written under key generation %u, which this key file does not hold",
			       g);
	memcpy(in, "ICCDPKEY", 8);
	memcpy(in + 8, key->chain_id, ICF_ID_LEN);
	crypto_generichash(out, 32, in, sizeof(in), sk->k_seal, ICF_KEY_LEN);
	return 0;
}

uint64_t ic_cdp_interval_id(uint64_t session_id, uint64_t k)
{
	uint8_t in[24], h[8];
	uint64_t id;

	memcpy(in, "ICCDPJID", 8);
	memcpy(in + 8, &session_id, 8);
	memcpy(in + 16, &k, 8);
	crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
	memcpy(&id, h, 8);
	return id ? id : 1;
}

void ic_cdp_header_mac(const uint8_t kcdp[32], const struct icf_cdp_header *h, uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, kcdp, 32, 32);
	crypto_generichash_update(&st, (const uint8_t *)"ICCDPHD1", 8);
	crypto_generichash_update(&st, (const uint8_t *)h, offsetof(struct icf_cdp_header, mac0));
	crypto_generichash_final(&st, out, 32);
}

void ic_cdp_ckpt_mac(const uint8_t kcdp[32], const uint8_t prev[32], const struct icf_cdp_ckpt *c,
		     const uint8_t hk[32], uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, kcdp, 32, 32);
	crypto_generichash_update(&st, (const uint8_t *)"ICCDPCK1", 8);
	crypto_generichash_update(&st, prev, 32);
	crypto_generichash_update(&st, (const uint8_t *)c, offsetof(struct icf_cdp_ckpt, mac));
	crypto_generichash_update(&st, hk, 32);
	crypto_generichash_final(&st, out, 32);
}

void ic_cdp_ckpt_tmac(const uint8_t kcdp[32], uint64_t session_id, const struct icf_cdp_ckpt *c,
		      uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, kcdp, 32, 32);
	crypto_generichash_update(&st, (const uint8_t *)"ICCDPTM1", 8);
	crypto_generichash_update(&st, (const uint8_t *)&session_id, 8);
	/* interval, time_s, time_ns: not the offset or count, which records before it move */
	crypto_generichash_update(&st, (const uint8_t *)c + offsetof(struct icf_cdp_ckpt, interval),
				  offsetof(struct icf_cdp_ckpt, reserved1) -
					  offsetof(struct icf_cdp_ckpt, interval));
	crypto_generichash_final(&st, out, 32);
}

bool ic_cdp_ckpt_hash_ok(const struct icf_cdp_ckpt *c, uint32_t version)
{
	uint32_t n = icf_cdp_ckpt_size(version) - 8;
	uint64_t h;

	memcpy(&h, (const uint8_t *)c + n, 8);
	return h == XXH3_64bits(c, n);
}

void ic_cdp_ckpt_hash_set(struct icf_cdp_ckpt *c, uint32_t version)
{
	uint32_t n = icf_cdp_ckpt_size(version) - 8;
	uint64_t h = XXH3_64bits(c, n);

	memcpy((uint8_t *)c + n, &h, 8);
}

ic_cdp_acc ic_cdp_item_term(const uint8_t kcdp[32], const struct icf_map_item_v2 *it)
{
	crypto_generichash_state st;
	ic_cdp_acc a;

	crypto_generichash_init(&st, kcdp, 32, sizeof(a));
	crypto_generichash_update(&st, (const uint8_t *)"ICCDPFI1", 8);
	crypto_generichash_update(&st, (const uint8_t *)it, sizeof(*it));
	crypto_generichash_final(&st, (uint8_t *)&a, sizeof(a));
	return a;
}

ic_cdp_acc ic_cdp_map_term(const uint8_t kcdp[32], const struct icf_cdp_header *h, uint64_t k,
			   const struct icf_cdp_rec *r)
{
	struct icf_map_item_v2 it = {
		.pos = r->pos, .origin = ICF_CDP_ORIGIN, .kind = r->kind, .keygen = h->keygen,
		.plain_len = r->plain_len, .rec_hash = r->rec_hash,
		.origin_id = ic_cdp_interval_id(h->session_id, k),
	};

	return ic_cdp_item_term(kcdp, &it);
}

void ic_cdp_mseal(const uint8_t kcdp[32], const struct icf_cdp_header *h,
		  const struct icf_cdp_ckpt *c, ic_cdp_acc a, uint8_t out[32])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, kcdp, 32, 32);
	crypto_generichash_update(&st, (const uint8_t *)"ICCDPMS1", 8);
	crypto_generichash_update(&st, (const uint8_t *)&h->session_id, 8);
	/* interval, time_s, time_ns */
	crypto_generichash_update(&st, (const uint8_t *)c + offsetof(struct icf_cdp_ckpt, interval),
				  offsetof(struct icf_cdp_ckpt, reserved1) -
					  offsetof(struct icf_cdp_ckpt, interval));
	crypto_generichash_update(&st, (const uint8_t *)&h->disk_size, 8);
	crypto_generichash_update(&st, (const uint8_t *)&h->block_size, 4);
	crypto_generichash_update(&st, (const uint8_t *)&a, sizeof(a));
	crypto_generichash_final(&st, out, 32);
}

void ic_cdp_h_add(crypto_generichash_state *h, const struct icf_cdp_rec *r, const uint8_t *rec)
{
	crypto_generichash_update(h, (const uint8_t *)r, offsetof(struct icf_cdp_rec, frame_hash));
	if (r->stored_len) {
		crypto_generichash_update(h, rec, ICF_NONCE_LEN);
		crypto_generichash_update(h, rec + r->stored_len - ICF_TAG_LEN, ICF_TAG_LEN);
	}
}

void ic_cdp_entry(const struct icf_cdp_header *h, uint64_t k, uint64_t pos, uint32_t plain_len,
		  struct icf_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->pos = pos;
	e->plain_len = plain_len;
	e->origin = ICF_CDP_ORIGIN;
	e->origin_id = ic_cdp_interval_id(h->session_id, k);
	e->keygen = h->keygen;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int ic_cdp_list_sessions(const char *dir, struct ic_cdp_sessions *out)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int ret = 0;

	if (lstat(dir, &st) < 0)
		return ic_fail(-errno, "%s: %s (no journal: was the chain written through the imgcdp filter?)",
			       dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return ic_fail(IC_ECORRUPT, "%s: not a directory (%s): refused", dir,
			       ic_file_kind(st.st_mode));
	d = opendir(dir);
	if (!d)
		return ic_fail(-errno, "%s: %s", dir, strerror(errno));
	while (!ret && (de = readdir(d))) {
		unsigned s;
		char tail[8];

		if (strlen(de->d_name) == 12 && strspn(de->d_name, "0123456789") == 8 &&
		    sscanf(de->d_name, "%8u%7s", &s, tail) == 2 &&
		    !strcmp(tail, ICF_CDP_SUFFIX) && s >= 1 && s <= ICF_SEQ_MAX)
			ret = ic_array_push(out, s);
	}
	closedir(d);
	if (!ret && out->n)
		qsort(out->v, out->n, sizeof(*out->v), cmp_u32);
	return ret;
}

void ic_journal_close(struct ic_journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	sodium_memzero(j->kcdp, sizeof(j->kcdp));
	free(j->path);
	j->path = NULL;
	j->fd = -1;
}

static int open_header(const char *dir, uint32_t session, struct ic_journal *j)
{
	struct icf_cdp_header *h = &j->h;
	char name[32];
	struct stat st;
	int ret;

	j->fd = -1;
	snprintf(name, sizeof(name), "%08u%s", session, ICF_CDP_SUFFIX);
	j->path = ic_path_join(dir, name);
	if (!j->path)
		return -ENOMEM;
	ret = ic_open_regular(AT_FDCWD, dir, name, O_RDONLY, 0, &j->fd);
	if (ret)
		return ret;
	if (fstat(j->fd, &st) < 0)
		return ic_fail(-errno, "%s: %s", j->path, strerror(errno));
	j->size = (uint64_t)st.st_size;
	ret = ic_pread_full(j->fd, h, sizeof(*h), 0, j->path);
	if (ret)
		return ret;
	if (memcmp(h->magic, ICF_CDP_MAGIC, 8) ||
	    h->hdr_hash != XXH3_64bits(h, offsetof(struct icf_cdp_header, hdr_hash)))
		return ic_fail(IC_ECORRUPT, "%s: not a journal header (magic or checksum)", j->path);
	if (h->version < 1 || h->version > ICF_CDP_VERSION || h->base_kind != 0 || h->session != session ||
	    h->gap_prev >= session || h->gap_since_ns > 999999999u ||
	    (!h->gap_prev && (h->gap_since || h->gap_since_ns)) ||
	    h->block_size < ICF_BLOCK_MIN || h->block_size > ICF_BLOCK_MAX ||
	    (h->block_size & (h->block_size - 1)) || !h->session_id || !h->disk_size ||
	    h->disk_size > ICF_DISK_MAX || h->keygen > ICF_KEY_GEN_MAX ||
	    !ic_is_zero(h->reserved0, sizeof(h->reserved0)) ||
	    !ic_is_zero(h->reserved1, sizeof(h->reserved1)))
		return ic_fail(IC_ECORRUPT, "%s: journal header fields out of bounds", j->path);
	return 0;
}

int ic_journal_open(const char *dir, uint32_t session, const struct ic_key *key,
		    struct ic_journal *j)
{
	struct icf_cdp_header *h = &j->h;
	uint8_t mac[32];
	int ret = open_header(dir, session, j);

	if (ret)
		return ret;
	if (memcmp(h->chain_id, key->chain_id, ICF_ID_LEN) ||
	    memcmp(h->key_check, key->key_check, ICF_CHECK_LEN))
		return ic_fail(IC_EKEY, "%s: wrong key: the journal belongs to another chain or key",
			       j->path);
	ret = ic_cdp_mac_key(key, h->keygen, j->kcdp);
	if (ret)
		return ic_fail(ret, "%s: %s", j->path, ic_last_error(ret));
	ic_cdp_header_mac(j->kcdp, h, mac);
	if (sodium_memcmp(mac, h->mac0, 32))
		return ic_fail(IC_ECORRUPT, "%s: journal header fails authentication", j->path);
	j->nblocks = (h->disk_size + h->block_size - 1) / h->block_size;
	return 0;
}

int ic_journal_open_keyless(const char *dir, uint32_t session, const uint8_t *chain_id,
			    const uint8_t *key_check, struct ic_journal *j)
{
	int ret = open_header(dir, session, j);

	if (ret)
		return ret;
	if (memcmp(j->h.chain_id, chain_id, ICF_ID_LEN) ||
	    memcmp(j->h.key_check, key_check, ICF_CHECK_LEN))
		return ic_fail(IC_ECORRUPT, "%s: the journal belongs to another chain or key", j->path);
	j->keyless = true;
	j->nblocks = (j->h.disk_size + j->h.block_size - 1) / j->h.block_size;
	return 0;
}

static bool time_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

uint32_t ic_journal_block_len(const struct ic_journal *j, uint64_t pos)
{
	return pos + 1 < j->nblocks ? j->h.block_size
				    : (uint32_t)(j->h.disk_size - pos * (uint64_t)j->h.block_size);
}

/* Walk the frames of j (FORMAT.md 15.3): ic_journal.h. */
int ic_journal_walk(struct ic_journal *j, struct ic_jwalk *w)
{
	uint32_t bound = ic_codec_bound(j->h.block_size);
	uint8_t *rec = malloc(bound), mac[32], prev[32], hk[32], tmac[32];
	struct timespec last = { 0, 0 };
	crypto_generichash_state hs;
	uint64_t off = ICF_CDP_HEADER_SIZE, k = 0, frames = 0;
	size_t first = w->ck.n;
	bool damage = false, broken = false;
	int ret = 0;

	if (!rec)
		return -ENOMEM;
	memcpy(prev, j->h.mac0, 32);
	crypto_generichash_init(&hs, NULL, 0, 32);
	while (off + sizeof(struct icf_cdp_rec) <= j->size) {
		union {
			struct icf_cdp_rec r;
			struct icf_cdp_ckpt c;
		} f;

		if (ic_pread_full(j->fd, &f.r, sizeof(f.r), off, j->path))
			break;
		if (f.r.magic == ICF_CDP_REC_MAGIC) {
			struct icf_cdp_rec *r = &f.r;
			bool zero = r->kind == ICF_ENTRY_ZERO;

			if (r->frame_hash != XXH3_64bits(r, offsetof(struct icf_cdp_rec, frame_hash)) ||
			    r->kind > ICF_ENTRY_ZSTD || r->reserved0 ||
			    !ic_is_zero(r->reserved1, sizeof(r->reserved1)) || r->pos >= j->nblocks ||
			    r->interval != k || r->plain_len != ic_journal_block_len(j, r->pos) ||
			    (zero ? r->stored_len || r->rec_hash
				  : r->stored_len <= ICF_RECORD_OVERHEAD || r->stored_len > bound) ||
			    off + sizeof(*r) + r->stored_len > j->size)
				break;      /* the end of the journal */
			if (!zero) {
				ret = ic_pread_full(j->fd, rec, r->stored_len, off + sizeof(*r), j->path);
				if (ret)
					break;
				if (XXH3_64bits(rec, r->stored_len) != r->rec_hash)
					damage = true;
			}
			ic_cdp_h_add(&hs, r, rec);
			if (w->on_rec && k <= w->stop) {
				if (damage) {
					ret = ic_fail(IC_ECORRUPT, "%s: interval %llu, block %llu: the record fails its checksum",
						      j->path, (unsigned long long)k,
						      (unsigned long long)r->pos);
					goto out;
				}
				ret = w->on_rec(w->arg, j, k, off, r, zero ? NULL : rec);
				if (ret)
					goto out;
			}
			frames++;
			off += sizeof(*r) + r->stored_len;
		} else if (f.r.magic == ICF_CDP_CKPT_MAGIC) {
			struct icf_cdp_ckpt *c = &f.c;
			uint32_t csize = icf_cdp_ckpt_size(j->h.version);
			struct ic_jckpt *ck;

			memset(c, 0, sizeof(*c));
			if (off + csize > j->size || ic_pread_full(j->fd, c, csize, off, j->path) ||
			    !ic_cdp_ckpt_hash_ok(c, j->h.version) || c->reserved0 || c->reserved1 ||
			    !ic_is_zero(c->tail + (j->h.version == 1 ? 0 : 32), 8) ||
			    c->interval != k || c->offset != off || c->frames != frames ||
			    c->time_ns > 999999999u)
				break;
			crypto_generichash_final(&hs, hk, 32);
			ic_cdp_ckpt_mac(j->kcdp, prev, c, hk, mac);
			if (damage || broken || (!j->keyless && sodium_memcmp(mac, c->mac, 32)))
				broken = true;
			ck = ic_array_add(&w->ck);
			if (!ck) {
				ret = -ENOMEM;
				goto out;
			}
			ck->session = j->h.session;
			ck->gap_prev = j->h.gap_prev;
			ck->gap_since.tv_sec = j->h.gap_since;
			ck->gap_since.tv_nsec = j->h.gap_since_ns;
			ck->interval = k;
			ck->disk_size = j->h.disk_size;
			ck->when.tv_sec = c->time_s;
			ck->when.tv_nsec = c->time_ns;
			ck->ok = !broken;
			ic_cdp_ckpt_tmac(j->kcdp, j->h.session_id, c, tmac);
			ck->time_ok = (j->keyless || !sodium_memcmp(tmac, c->tmac, 32)) &&
				      time_le(&last, &ck->when);
			if (ck->time_ok)
				last = ck->when;
			if (w->on_rec && w->on_ckpt && k <= w->stop && !broken) {
				ret = w->on_ckpt(w->arg, j, c);
				if (ret)
					goto out;
			}
			if (w->on_rec && k == w->stop) {
				w->has_mseal = j->h.version >= 2;
				if (w->has_mseal)
					memcpy(w->mseal, c->tail, 32);
				if (broken)
					ret = ic_fail(IC_ECORRUPT, "%s: checkpoint %llu fails authentication: the journal changed while it was read",
						      j->path, (unsigned long long)k);
				goto out;
			}
			memcpy(prev, c->mac, 32);
			crypto_generichash_init(&hs, NULL, 0, 32);
			damage = false;
			frames = 0;
			k++;
			off += csize;
		} else {
			break;
		}
	}
	if (w->on_rec) {
		ret = ic_fail(IC_ECORRUPT, "%s: checkpoint %llu is gone: the journal changed while it was read",
			      j->path, (unsigned long long)w->stop);
		goto out;
	}
	/* a failing last checkpoint after sound ones: a crash inside its fdatasync */
	if (w->ck.n > first && !w->ck.v[w->ck.n - 1].ok &&
	    (w->ck.n - 1 == first || w->ck.v[w->ck.n - 2].ok)) {
		w->ck.n--;
		w->tail_dropped = j->h.session;
	}
out:
	sodium_memzero(hk, sizeof(hk));
	free(rec);
	return ret;
}

const char *ic_journal_fmt_time(const struct timespec *t, char *buf, size_t len)
{
	struct tm tm;
	time_t s = t->tv_sec;

	if (!gmtime_r(&s, &tm))
		snprintf(buf, len, "@%lld", (long long)t->tv_sec);
	else
		snprintf(buf + strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm), 16, ".%09ldZ",
			 t->tv_nsec);
	return buf;
}

/* The checkpoint to restore: the last whose time is at or before at, among those whose
 * time verified (tmac), up to the first verified time after at.  A checkpoint between
 * them whose time did not verify might be the last one before at: refused.  The one
 * chosen must have verified (the MAC chain up to it). */
static bool is_gap(const struct ic_jckpts *ck, size_t j)
{
	const struct ic_jckpt *g = &ck->v[j];

	return g->gap_prev && g->time_ok && (j == 0 || g->session != ck->v[j - 1].session);
}

int ic_journal_choose(const struct ic_jckpts *ck, const char *dir, const struct timespec *at,
		      size_t *out)
{
	char tb[64];
	size_t i, c = SIZE_MAX, unsure = SIZE_MAX, bad = SIZE_MAX;

	for (i = 0; i < ck->n; i++) {
		if (!ck->v[i].time_ok) {
			if (unsure == SIZE_MAX)
				unsure = i;
		} else if (time_le(&ck->v[i].when, at)) {
			c = i;
			unsure = SIZE_MAX;
		} else {
			break;
		}
	}
	if (unsure != SIZE_MAX)
		bad = unsure;
	else if (c == SIZE_MAX)
		return ic_fail(-ENOENT, "%s: no checkpoint at or before %s%s", dir,
			       ic_journal_fmt_time(at, tb, sizeof(tb)), ck->n ? "" : " (the journal is empty)");
	else if (!ck->v[c].ok)
		bad = c;
	/* a gap (14.4): a later session that says journalling stopped before at, and
	 * started again after it */
	for (i = 0; bad == SIZE_MAX && i < ck->n; i++) {
		const struct ic_jckpt *g = &ck->v[i];
		const struct timespec since = g->gap_since;

		if (is_gap(ck, i) && time_le(&since, at) && !time_le(&g->when, at)) {
			char tb2[64], tb3[64];

			return ic_fail(-ENOENT, "%s: %s is in a gap of the journal: session %u stopped journalling at %s, session %u started again at %s",
				       dir, ic_journal_fmt_time(at, tb, sizeof(tb)), g->gap_prev,
				       ic_journal_fmt_time(&since, tb2, sizeof(tb2)), g->session,
				       ic_journal_fmt_time(&g->when, tb3, sizeof(tb3)));
		}
	}
	if (bad != SIZE_MAX) {
		const struct ic_jckpt *b = &ck->v[bad];

		for (i = bad; i > 0 && ck->v[i - 1].session == b->session && !ck->v[i - 1].ok;)
			i--;
		for (c = bad; c + 1 < ck->n && ck->v[c + 1].session == b->session;)
			c++;
		return ic_fail(IC_ECORRUPT,
			       "%s/%08u%s: checkpoints %llu to %llu fail authentication (damaged or tampered journal)",
			       dir, b->session, ICF_CDP_SUFFIX,
			       (unsigned long long)ck->v[i].interval,
			       (unsigned long long)ck->v[c].interval);
	}
	*out = c;
	return 0;
}


int ic_journal_offered(const struct ic_jckpts *ck, bool *offered)
{
	struct timespec pm = { 0, 0 };     /* the latest verified time before i */
	size_t i, j, ngaps = 0, *gaps;

	gaps = malloc((ck->n + 1) * sizeof(*gaps));
	if (!gaps)
		return -ENOMEM;
	for (j = 0; j < ck->n; j++)
		if (is_gap(ck, j))
			gaps[ngaps++] = j;
	for (i = 0; i < ck->n; i++) {
		const struct ic_jckpt *c = &ck->v[i];
		bool ok = c->time_ok && c->ok && time_le(&pm, &c->when);

		/* choose() stops at the first verified time after i's: none may equal it, and
		 * none whose time did not verify may come before it */
		for (j = i + 1; ok && j < ck->n; j++) {
			if (ck->v[j].time_ok) {
				ok = !time_le(&ck->v[j].when, &c->when);
				break;
			}
			ok = false;
		}
		for (j = 0; ok && j < ngaps; j++) {
			const struct ic_jckpt *g = &ck->v[gaps[j]];

			if (time_le(&g->gap_since, &c->when) && !time_le(&g->when, &c->when))
				ok = false;
		}
		offered[i] = ok;
		if (c->time_ok && time_le(&pm, &c->when))
			pm = c->when;
	}
	free(gaps);
	return 0;
}

int ic_journal_scan(const char *dir, const struct ic_key *key, bool quiet, struct ic_jckpts *out)
{
	struct ic_cdp_sessions sessions = { 0 };
	struct ic_jwalk w = { .ck = *out };
	size_t i;
	int ret;

	ret = ic_cdp_list_sessions(dir, &sessions);
	for (i = 0; !ret && i < sessions.n; i++) {
		struct ic_journal j = { 0 };

		ret = ic_journal_open(dir, sessions.v[i], key, &j);
		if (ret == IC_ECORRUPT && j.fd >= 0 && j.size <= ICF_CDP_HEADER_SIZE) {
			/* a session that died while its header was written: nothing acknowledged */
			if (!quiet)
				ic_msg("%s: ignored (a session that never started)", ic_last_error(ret));
			ret = 0;
		} else if (!ret) {
			ret = ic_journal_walk(&j, &w);
			if (!ret && w.tail_dropped == sessions.v[i] && !quiet)
				ic_msg("%s: its last checkpoint fails authentication: taken for an unacknowledged tail (a crash inside a flush) and ignored",
				       j.path);
		}
		ic_journal_close(&j);
	}
	ic_array_free(&sessions);
	*out = w.ck;
	return ret;
}
