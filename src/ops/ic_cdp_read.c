/* ic_cdp_read.c: the CDP journal's reader (FORMAT.md 15.3): the checkpoints of every
 * session, and the disk as of one of them (imgrestore --at). */
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
#include "ic_cdp.h"
#include "ic_cdp_int.h"
#include "ic_codec.h"
#include "ic_mem.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"

struct ckpt {
	uint32_t session;
	uint32_t gap_prev;          /* the session's header's (14.4) */
	struct timespec gap_since;
	uint64_t interval;
	struct timespec when;
	bool ok;                    /* the MAC chain verified up to it */
	bool time_ok;               /* its own tmac verified: its time is the writer's */
};

struct journal {
	char *path;
	int fd;
	uint64_t size, nblocks;
	struct icf_cdp_header h;
	uint8_t kcdp[32];
};

static void journal_close(struct journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	sodium_memzero(j->kcdp, sizeof(j->kcdp));
	free(j->path);
	j->path = NULL;
	j->fd = -1;
}

static int journal_open(const char *dir, uint32_t session, const struct ic_key *key,
			struct journal *j)
{
	struct icf_cdp_header *h = &j->h;
	char name[32];
	uint8_t mac[32];
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
	if (h->version != ICF_CDP_VERSION || h->base_kind != 0 || h->session != session ||
	    h->gap_prev >= session || h->gap_since_ns > 999999999u ||
	    (!h->gap_prev && (h->gap_since || h->gap_since_ns)) ||
	    h->block_size < ICF_BLOCK_MIN || h->block_size > ICF_BLOCK_MAX ||
	    (h->block_size & (h->block_size - 1)) || !h->session_id || !h->disk_size ||
	    h->disk_size > ICF_DISK_MAX || h->keygen > ICF_KEY_GEN_MAX ||
	    !ic_is_zero(h->reserved0, sizeof(h->reserved0)) ||
	    !ic_is_zero(h->reserved1, sizeof(h->reserved1)))
		return ic_fail(IC_ECORRUPT, "%s: journal header fields out of bounds", j->path);
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

struct walk {
	/* apply mode: decode records of intervals <= stop into dest */
	int dest;
	const char *dest_name;
	uint64_t stop;
	struct ic_codec *codec;
	const struct ic_key *key;
	uint8_t *plain;
	uint64_t records;
	/* results */
	IC_ARRAY(struct ckpt) ck;
	uint32_t tail_dropped;      /* a session whose last checkpoint failed: taken for the
				     * torn tail (the flush was never acknowledged) */
};

static bool time_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

static uint32_t block_len(const struct journal *j, uint64_t pos)
{
	return pos + 1 < j->nblocks ? j->h.block_size
				    : (uint32_t)(j->h.disk_size - pos * (uint64_t)j->h.block_size);
}

/* Walk the frames of j (FORMAT.md 15.3).  Scan mode (w->dest < 0): list the
 * checkpoints.  Apply mode: also decode and write every record up to checkpoint w->stop,
 * which must verify; stops there. */
static int walk(struct journal *j, struct walk *w)
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
			    r->interval != k || r->plain_len != block_len(j, r->pos) ||
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
			if (w->dest >= 0 && k <= w->stop) {
				uint64_t at = r->pos * (uint64_t)j->h.block_size;

				if (zero) {
					memset(w->plain, 0, r->plain_len);
				} else {
					struct icf_entry e;

					ic_cdp_entry(&j->h, k, r->pos, r->plain_len, &e);
					e.kind = r->kind;
					e.stored_len = r->stored_len;
					e.rec_hash = r->rec_hash;
					ret = ic_codec_decode(w->codec, w->key, j->h.chain_id,
							      ICF_IMAGE_V2, &e, rec, w->plain);
					if (ret) {
						ret = ic_fail(ret, "%s: interval %llu, block %llu: %s",
							      j->path, (unsigned long long)k,
							      (unsigned long long)r->pos,
							      ic_last_error(ret));
						goto out;
					}
				}
				ret = ic_pwrite_full(w->dest, w->plain, r->plain_len, at, w->dest_name);
				if (ret)
					goto out;
				w->records++;
			}
			frames++;
			off += sizeof(*r) + r->stored_len;
		} else if (f.r.magic == ICF_CDP_CKPT_MAGIC) {
			struct icf_cdp_ckpt *c = &f.c;
			struct ckpt *ck;

			if (off + sizeof(*c) > j->size ||
			    ic_pread_full(j->fd, c, sizeof(*c), off, j->path) ||
			    c->frame_hash != XXH3_64bits(c, offsetof(struct icf_cdp_ckpt, frame_hash)) ||
			    c->reserved0 || c->reserved1 ||
			    !ic_is_zero(c->reserved2, sizeof(c->reserved2)) || c->interval != k ||
			    c->offset != off || c->frames != frames || c->time_ns > 999999999u)
				break;
			crypto_generichash_final(&hs, hk, 32);
			ic_cdp_ckpt_mac(j->kcdp, prev, c, hk, mac);
			if (damage || broken || sodium_memcmp(mac, c->mac, 32))
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
			ck->when.tv_sec = c->time_s;
			ck->when.tv_nsec = c->time_ns;
			ck->ok = !broken;
			ic_cdp_ckpt_tmac(j->kcdp, j->h.session_id, c, tmac);
			ck->time_ok = !sodium_memcmp(tmac, c->tmac, 32) && time_le(&last, &ck->when);
			if (ck->time_ok)
				last = ck->when;
			if (w->dest >= 0 && k == w->stop) {
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
			off += sizeof(*c);
		} else {
			break;
		}
	}
	if (w->dest >= 0) {
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

static const char *fmt_time(const struct timespec *t, char *buf, size_t len)
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
static int choose(const struct walk *w, const char *dir, const struct timespec *at, size_t *out)
{
	char tb[64];
	size_t i, c = SIZE_MAX, unsure = SIZE_MAX, bad = SIZE_MAX;

	for (i = 0; i < w->ck.n; i++) {
		if (!w->ck.v[i].time_ok) {
			if (unsure == SIZE_MAX)
				unsure = i;
		} else if (time_le(&w->ck.v[i].when, at)) {
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
			       fmt_time(at, tb, sizeof(tb)), w->ck.n ? "" : " (the journal is empty)");
	else if (!w->ck.v[c].ok)
		bad = c;
	/* a gap (14.4): a later session that says journalling stopped before at, and
	 * started again after it */
	for (i = 0; bad == SIZE_MAX && i < w->ck.n; i++) {
		const struct ckpt *g = &w->ck.v[i];
		const struct timespec since = g->gap_since;

		if (g->gap_prev && g->time_ok && (i == 0 || g->session != w->ck.v[i - 1].session) &&
		    time_le(&since, at) && !time_le(&g->when, at)) {
			char tb2[64], tb3[64];

			return ic_fail(-ENOENT, "%s: %s is in a gap of the journal: session %u stopped journalling at %s, session %u started again at %s",
				       dir, fmt_time(at, tb, sizeof(tb)), g->gap_prev,
				       fmt_time(&since, tb2, sizeof(tb2)), g->session,
				       fmt_time(&g->when, tb3, sizeof(tb3)));
		}
	}
	if (bad != SIZE_MAX) {
		const struct ckpt *b = &w->ck.v[bad];

		for (i = bad; i > 0 && w->ck.v[i - 1].session == b->session && !w->ck.v[i - 1].ok;)
			i--;
		for (c = bad; c + 1 < w->ck.n && w->ck.v[c + 1].session == b->session;)
			c++;
		return ic_fail(IC_ECORRUPT,
			       "%s/%08u%s: checkpoints %llu to %llu fail authentication (damaged or tampered journal)",
			       dir, b->session, ICF_CDP_SUFFIX,
			       (unsigned long long)w->ck.v[i].interval,
			       (unsigned long long)w->ck.v[c].interval);
	}
	*out = c;
	return 0;
}

static int apply(const struct ic_cdp_restore_opts *o, const char *dir, const struct ic_key *key,
		 const struct ckpt *target, struct ic_cdp_restore_stats *st)
{
	struct journal j = { 0 };
	struct walk w = { 0 };
	char *tmp = NULL;
	int ret, fd = -1;

	ret = journal_open(dir, target->session, key, &j);
	if (ret)
		goto out;
	tmp = malloc(strlen(o->dest) + 32);
	w.codec = ic_codec_new(j.h.block_size, 1);
	w.plain = malloc(j.h.block_size);
	if (!tmp || !w.codec || !w.plain) {
		ret = -ENOMEM;
		goto out;
	}
	sprintf(tmp, "%s.imgrestore-%d", o->dest, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", tmp, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if (ftruncate(fd, (off_t)j.h.disk_size) < 0) {
		ret = ic_fail(-errno, "%s: set size: %s", o->dest, strerror(errno));
		goto out;
	}
	w.dest = fd;
	w.dest_name = o->dest;
	w.stop = target->interval;
	w.key = key;
	ret = walk(&j, &w);
	if (!ret)
		ret = ic_fsync(fd, o->dest);
	if (!ret)
		ret = ic_rename_noreplace(tmp, o->dest);
	if (!ret) {
		st->disk_size = j.h.disk_size;
		st->records = w.records;
	}
out:
	if (fd >= 0)
		close(fd);
	if (ret && tmp)
		unlink(tmp);
	free(tmp);
	free(w.plain);
	ic_codec_free(w.codec);
	ic_array_free(&w.ck);
	journal_close(&j);
	return ret;
}

/* Unlock, then scan every session of dir into w (the checkpoints, verified). */
static int scan_all(const struct ic_cdp_restore_opts *o, const char *dir, struct ic_key **keyp,
		    struct walk *w)
{
	struct ic_cdp_sessions sessions = { 0 };
	struct ic_key *key = NULL;
	size_t i;
	int ret;

	ret = ic_cdp_list_sessions(dir, &sessions);
	if (!ret && o->dest && access(o->dest, F_OK) == 0)
		ret = ic_fail(-EEXIST, "%s: exists (--at writes a new file)", o->dest);
	if (!ret)
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, &key);
	if (!ret)       /* the key file's generation, as every keyed tool checks it */
		ret = ic_state_check_key(o->chain_dir, key->chain_id, o->accept_rollback);
	for (i = 0; !ret && i < sessions.n; i++) {
		struct journal j = { 0 };

		ret = journal_open(dir, sessions.v[i], key, &j);
		if (ret == IC_ECORRUPT && j.fd >= 0 && j.size <= ICF_CDP_HEADER_SIZE) {
			/* a session that died while its header was written: nothing acknowledged */
			ic_msg("%s: ignored (a session that never started)", ic_last_error(ret));
			ret = 0;
		} else if (!ret) {
			ret = walk(&j, w);
			if (!ret && w->tail_dropped == sessions.v[i] && !o->quiet)
				ic_msg("%s: its last checkpoint fails authentication: taken for an unacknowledged tail (a crash inside a flush) and ignored",
				       j.path);
		}
		journal_close(&j);
	}
	ic_array_free(&sessions);
	*keyp = key;
	return ret;
}

int ic_cdp_checkpoints(const struct ic_cdp_restore_opts *o,
		       int (*fn)(void *arg, const struct ic_cdp_ckpt_info *c), void *arg)
{
	struct ic_key *key = NULL;
	struct walk w = { .dest = -1 };
	char *dir = ic_path_join(o->chain_dir, ICF_CDP_DIR);
	size_t i;
	int ret;

	if (!dir)
		return -ENOMEM;
	ret = scan_all(o, dir, &key, &w);
	for (i = 0; !ret && i < w.ck.n; i++) {
		const struct ckpt *c = &w.ck.v[i];
		struct ic_cdp_ckpt_info info = {
			.session = c->session, .interval = c->interval, .when = c->when,
			.ok = c->ok, .time_ok = c->time_ok,
			.gap_prev = (i == 0 || w.ck.v[i - 1].session != c->session) ? c->gap_prev : 0,
			.gap_since = c->gap_since,
		};

		ret = fn(arg, &info);
	}
	ic_array_free(&w.ck);
	ic_key_free(key);
	free(dir);
	return ret;
}

int ic_cdp_restore(const struct ic_cdp_restore_opts *o, struct ic_cdp_restore_stats *st)
{
	struct ic_key *key = NULL;
	struct walk w = { .dest = -1 };
	char *dir = ic_path_join(o->chain_dir, ICF_CDP_DIR), tb[64];
	double t0 = ic_now();
	size_t c = 0;
	int ret;

	memset(st, 0, sizeof(*st));
	if (!dir)
		return -ENOMEM;
	ret = scan_all(o, dir, &key, &w);
	if (!ret)
		ret = choose(&w, dir, &o->at, &c);
	if (!ret) {
		st->session = w.ck.v[c].session;
		st->interval = w.ck.v[c].interval;
		st->when = w.ck.v[c].when;
		ret = apply(o, dir, key, &w.ck.v[c], st);
		if (ret == IC_ECORRUPT)
			ret = ic_fail(ret, "%s (restoring checkpoint %llu of session %u, %s)",
				      ic_last_error(ret), (unsigned long long)st->interval, st->session,
				      fmt_time(&st->when, tb, sizeof(tb)));
	}
	st->seconds = ic_now() - t0;
	ic_array_free(&w.ck);
	ic_key_free(key);
	free(dir);
	return ret;
}

int ic_cdp_parse_time(const char *s, struct timespec *out)
{
	const char *p = s[0] == '@' ? s + 1 : s;
	struct tm tm = { 0 };
	char *end;
	bool iso = false;
	long ns = 0;
	int n;

	if (*p >= '0' && *p <= '9' && strspn(p, "0123456789.") == strlen(p)) {
		errno = 0;
		out->tv_sec = (time_t)strtoll(p, &end, 10);
		if (errno)
			return ic_fail(-EINVAL, "%s: not a time", s);
	} else {
		end = strptime(s, "%Y-%m-%d", &tm);
		if (end && (*end == 'T' || *end == ' '))
			end = strptime(end + 1, "%H:%M:%S", &tm);
		else
			end = NULL;
		if (!end)
			return ic_fail(-EINVAL, "%s: not a time (seconds since 1970, or UTC YYYY-MM-DDTHH:MM:SS[.FRACTION][Z])",
				       s);
		out->tv_sec = timegm(&tm);
		iso = true;
	}
	if (*end == '.') {
		end++;
		for (n = 0; n < 9; n++)
			ns = ns * 10 + ((*end >= '0' && *end <= '9') ? *end++ - '0' : 0);
		while (*end >= '0' && *end <= '9')
			end++;
	}
	if (*end == 'Z' && iso)
		end++;
	if (*end)
		return ic_fail(-EINVAL, "%s: not a time (seconds since 1970, or UTC YYYY-MM-DDTHH:MM:SS[.FRACTION][Z])",
			       s);
	out->tv_nsec = ns;
	return 0;
}
