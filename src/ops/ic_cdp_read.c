/* ic_cdp_read.c: the CDP journal's reader (FORMAT.md 15.3): the checkpoints of every
 * session, and the disk as of one of them (imgrestore --at). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ic_array.h"
#include "ic_cdp.h"
#include "ic_cdp_int.h"
#include "ic_codec.h"
#include "ic_mem.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"

/* Decoding every record up to the checkpoint into DEST. */
struct apply {
	int dest;
	const char *dest_name;
	struct ic_codec *codec;
	const struct ic_key *key;
	uint8_t *plain;
	uint64_t records;
	ic_cdp_acc *terms, acc;     /* the map seal's sum (FORMAT.md 15.5) */
};

static int apply_rec(void *arg, const struct ic_journal *j, uint64_t k, uint64_t off,
		     const struct icf_cdp_rec *r, const uint8_t *rec)
{
	struct apply *a = arg;
	uint64_t at = r->pos * (uint64_t)j->h.block_size;
	int ret;

	(void)off;
	a->acc -= a->terms[r->pos];
	a->terms[r->pos] = rec ? ic_cdp_map_term(j->kcdp, &j->h, k, r) : 0;
	a->acc += a->terms[r->pos];
	if (!rec) {
		memset(a->plain, 0, r->plain_len);
	} else {
		struct icf_entry e;

		ic_cdp_entry(&j->h, k, r->pos, r->plain_len, &e);
		e.kind = r->kind;
		e.stored_len = r->stored_len;
		e.rec_hash = r->rec_hash;
		ret = ic_codec_decode(a->codec, a->key, j->h.chain_id, ICF_IMAGE_V2, &e, rec,
				      a->plain);
		if (ret)
			return ic_fail(ret, "%s: interval %llu, block %llu: %s", j->path,
				       (unsigned long long)k, (unsigned long long)r->pos,
				       ic_last_error(ret));
	}
	ret = ic_pwrite_full(a->dest, a->plain, r->plain_len, at, a->dest_name);
	if (!ret)
		a->records++;
	return ret;
}

/* The disk restored must be the one the checkpoint's map seal names (what a fold would
 * make of it, FORMAT.md 15.5). */
static int check_mseal(const struct ic_journal *j, const struct ic_jckpt *t, ic_cdp_acc acc,
		       const uint8_t mseal[32])
{
	struct icf_cdp_ckpt c = { .interval = t->interval, .time_s = t->when.tv_sec,
				  .time_ns = (uint32_t)t->when.tv_nsec };
	uint8_t want[32];

	ic_cdp_mseal(j->kcdp, &j->h, &c, acc, want);
	if (sodium_memcmp(want, mseal, 32))
		return ic_fail(IC_ECORRUPT, "%s: checkpoint %llu: its map seal does not match the disk its records make",
			       j->path, (unsigned long long)t->interval);
	return 0;
}

static int apply(const struct ic_cdp_restore_opts *o, const char *dir, const struct ic_key *key,
		 const struct ic_jckpt *target, struct ic_cdp_restore_stats *st)
{
	struct ic_journal j = { 0 };
	struct apply a = { .key = key, .dest_name = o->dest };
	struct ic_jwalk w = { .stop = target->interval, .on_rec = apply_rec, .arg = &a };
	char *tmp = NULL;
	int ret, fd = -1;

	ret = ic_journal_open(dir, target->session, key, &j);
	if (ret)
		goto out;
	tmp = malloc(strlen(o->dest) + 32);
	a.codec = ic_codec_new(j.h.block_size, 1);
	a.plain = malloc(j.h.block_size);
	a.terms = j.nblocks <= SIZE_MAX / sizeof(*a.terms) ? calloc(j.nblocks, sizeof(*a.terms))
							    : NULL;
	if (!tmp || !a.codec || !a.plain || !a.terms) {
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
	a.dest = fd;
	ret = ic_journal_walk(&j, &w);
	if (!ret && w.has_mseal)
		ret = check_mseal(&j, target, a.acc, w.mseal);
	if (!ret)
		ret = ic_fsync(fd, o->dest);
	if (!ret)
		ret = ic_rename_noreplace(tmp, o->dest);
	if (!ret) {
		st->disk_size = j.h.disk_size;
		st->records = a.records;
	}
out:
	if (fd >= 0)
		close(fd);
	if (ret && tmp)
		unlink(tmp);
	free(tmp);
	free(a.plain);
	free(a.terms);
	ic_codec_free(a.codec);
	ic_array_free(&w.ck);
	ic_journal_close(&j);
	return ret;
}

/* Unlock, then scan every session of dir (the checkpoints, verified). */
static int scan_all(const struct ic_cdp_restore_opts *o, const char *dir, struct ic_key **keyp,
		    struct ic_jckpts *ck)
{
	struct ic_cdp_sessions sessions = { 0 };
	struct ic_key *key = NULL;
	int ret;

	ret = ic_cdp_list_sessions(dir, &sessions);     /* no journal: said before the key */
	ic_array_free(&sessions);
	if (!ret && o->dest && access(o->dest, F_OK) == 0)
		ret = ic_fail(-EEXIST, "%s: exists (--at writes a new file)", o->dest);
	if (!ret)
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, &key);
	if (!ret)       /* the key file's generation, as every keyed tool checks it */
		ret = ic_state_check_key(o->chain_dir, key->chain_id, o->accept_rollback);
	if (!ret)
		ret = ic_journal_scan(dir, key, o->quiet, ck);
	*keyp = key;
	return ret;
}

int ic_cdp_checkpoints(const struct ic_cdp_restore_opts *o,
		       int (*fn)(void *arg, const struct ic_cdp_ckpt_info *c), void *arg)
{
	struct ic_key *key = NULL;
	struct ic_jckpts ck = { 0 };
	char *dir = ic_path_join(o->chain_dir, ICF_CDP_DIR);
	size_t i;
	int ret;

	if (!dir)
		return -ENOMEM;
	ret = scan_all(o, dir, &key, &ck);
	for (i = 0; !ret && i < ck.n; i++) {
		const struct ic_jckpt *c = &ck.v[i];
		struct ic_cdp_ckpt_info info = {
			.session = c->session, .interval = c->interval, .when = c->when,
			.ok = c->ok, .time_ok = c->time_ok,
			.gap_prev = (i == 0 || ck.v[i - 1].session != c->session) ? c->gap_prev : 0,
			.gap_since = c->gap_since,
		};

		ret = fn(arg, &info);
	}
	ic_array_free(&ck);
	ic_key_free(key);
	free(dir);
	return ret;
}

int ic_cdp_restore(const struct ic_cdp_restore_opts *o, struct ic_cdp_restore_stats *st)
{
	struct ic_key *key = NULL;
	struct ic_jckpts ck = { 0 };
	char *dir = ic_path_join(o->chain_dir, ICF_CDP_DIR), tb[64];
	double t0 = ic_now();
	size_t c = 0;
	int ret;

	memset(st, 0, sizeof(*st));
	if (!dir)
		return -ENOMEM;
	ret = scan_all(o, dir, &key, &ck);
	if (!ret)
		ret = ic_journal_choose(&ck, dir, &o->at, &c);
	if (!ret) {
		st->session = ck.v[c].session;
		st->interval = ck.v[c].interval;
		st->when = ck.v[c].when;
		ret = apply(o, dir, key, &ck.v[c], st);
		if (ret == IC_ECORRUPT)
			ret = ic_fail(ret, "%s (restoring checkpoint %llu of session %u, %s)",
				      ic_last_error(ret), (unsigned long long)st->interval, st->session,
				      ic_journal_fmt_time(&st->when, tb, sizeof(tb)));
	}
	st->seconds = ic_now() - t0;
	ic_array_free(&ck);
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
