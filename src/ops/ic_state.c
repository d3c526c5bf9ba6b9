/* ic_state.c: the key holder's rollback memory (see ic_state.h, FORMAT.md "State file"). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_state.h"
#include "ic_util.h"

#define IC_STATE_MAGIC "imgchain-state 2\n"

/* The generations of the key last unlocked (ic_state_note_key). */
static struct {
	bool set;
	uint8_t chain_id[ICF_ID_LEN];
	uint32_t ngen;
	uint8_t check[ICF_KEY_GEN_MAX + 1][ICF_CHECK_LEN];
} noted;

static char *state_dir(void)
{
	const char *d = getenv("IMGCHAIN_STATE_DIR"), *x = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char buf[4096];

	if (d && *d)
		return strdup(d);
	if (x && *x)
		snprintf(buf, sizeof(buf), "%s/imgchain", x);
	else
		snprintf(buf, sizeof(buf), "%s/.local/state/imgchain", home && *home ? home : "/root");
	return strdup(buf);
}

static void file_name(const uint8_t id[ICF_ID_LEN], char *buf, size_t len)
{
	size_t n = 0;

	for (int i = 0; i < ICF_ID_LEN; i++)
		n += (size_t)snprintf(buf + n, len - n, "%02x", id[i]);
	snprintf(buf + n, len - n, ".state");
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* ---- the text ------------------------------------------------------------------------ */

struct cursor {
	const char *p, *end;
};

/* Next line (without its newline) into line and n; false at the end or on a line without
 * '\n' or holding a NUL. */
static bool next_line(struct cursor *c, const char **line, size_t *n)
{
	const char *nl;

	if (c->p >= c->end)
		return false;
	nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	if (!nl || memchr(c->p, '\0', (size_t)(nl - c->p)))
		return false;
	*line = c->p;
	*n = (size_t)(nl - c->p);
	c->p = nl + 1;
	return true;
}

/* A decimal uint32 as written by "%u" (no sign, no leading zero), then sep.  Advances. */
static bool take_u32(const char **p, const char *end, char sep, uint32_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s >= end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < end && s[1] >= '0' &&
						 s[1] <= '9'))
		return false;
	while (s < end && *s >= '0' && *s <= '9') {
		v = v * 10 + (uint64_t)(*s++ - '0');
		if (v > UINT32_MAX)
			return false;
	}
	if (sep) {
		if (s >= end || *s != sep)
			return false;
		s++;
	}
	*out = (uint32_t)v;
	*p = s;
	return true;
}

/* n bytes as 2n lowercase hex digits, then sep.  Advances. */
static bool take_hex(const char **p, const char *end, uint8_t *out, size_t n, char sep)
{
	const char *s = *p;

	if ((size_t)(end - s) < 2 * n)
		return false;
	for (size_t i = 0; i < 2 * n; i++) {
		char ch = s[i];
		int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;

		if (v < 0)
			return false;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(v << 4);
		else
			out[i / 2] |= (uint8_t)v;
	}
	s += 2 * n;
	if (sep) {
		if (s >= end || *s != sep)
			return false;
		s++;
	}
	*p = s;
	return true;
}

/* The rest of the line as a restore point name. */
static bool take_name(const char *p, const char *end, char *name)
{
	size_t n = (size_t)(end - p);

	if (n < 1 || n > ICF_NAME_MAX)
		return false;
	memcpy(name, p, n);
	name[n] = '\0';
	return ic_name_valid(name);
}

/* Version 1: "seq N\nseal HEX\nname NAME\n" (the newest point only). */
static bool decode_v1(struct cursor *c, struct ic_state *st)
{
	struct ic_state_point *pt = &st->points[0];
	const char *l, *p;
	size_t n;

	if (!next_line(c, &l, &n) || n < 4 || memcmp(l, "seq ", 4))
		return false;
	p = l + 4;
	if (!take_u32(&p, l + n, 0, &pt->seq) || p != l + n || !pt->seq)
		return false;
	if (!next_line(c, &l, &n) || n != 5 + 64 || memcmp(l, "seal ", 5))
		return false;
	p = l + 5;
	if (!take_hex(&p, l + n, pt->seal, ICF_SEAL_LEN, 0))
		return false;
	if (!next_line(c, &l, &n) || n < 5 || memcmp(l, "name ", 5) ||
	    !take_name(l + 5, l + n, pt->name))
		return false;
	st->npoints = 1;
	return c->p == c->end;
}

static bool decode_v2(struct cursor *c, struct ic_state *st)
{
	const char *l, *p;
	size_t n;

	while (next_line(c, &l, &n)) {
		if (n >= 7 && !memcmp(l, "keygen ", 7)) {
			p = l + 7;
			if (st->have_keygen || st->npoints ||
			    !take_u32(&p, l + n, ' ', &st->keygen) || st->keygen > ICF_KEY_GEN_MAX ||
			    !take_hex(&p, l + n, st->gen_check, ICF_CHECK_LEN, 0) || p != l + n)
				return false;
			st->have_keygen = true;
		} else if (n >= 6 && !memcmp(l, "point ", 6)) {
			struct ic_state_point *pt = &st->points[st->npoints];

			p = l + 6;
			if (st->npoints >= IC_STATE_POINTS || !take_u32(&p, l + n, ' ', &pt->seq) ||
			    !pt->seq || (st->npoints && pt->seq <= pt[-1].seq) ||
			    !take_hex(&p, l + n, pt->seal, ICF_SEAL_LEN, ' ') || !take_name(p, l + n, pt->name))
				return false;
			st->npoints++;
		} else {
			return false;
		}
	}
	return c->p == c->end;
}

int ic_state_decode(const char *buf, size_t len, struct ic_state *st, const char *path)
{
	struct cursor c = { buf, buf + len };
	size_t mlen = sizeof(IC_STATE_MAGIC) - 1;
	bool ok;

	memset(st, 0, sizeof(*st));
	if (len > IC_STATE_MAX_BYTES)
		ok = false;
	else if (len >= mlen && !memcmp(buf, IC_STATE_MAGIC, mlen)) {
		c.p += mlen;
		ok = decode_v2(&c, st);
	} else {
		ok = decode_v1(&c, st);
	}
	if (ok)
		return 0;
	memset(st, 0, sizeof(*st));
	return ic_fail(-EINVAL, "%s: unreadable state file (remove it to start afresh)", path);
}

size_t ic_state_encode(const struct ic_state *st, char *buf)
{
	char h[65];
	size_t n = 0;

	n += (size_t)snprintf(buf + n, IC_STATE_MAX_BYTES - n, "%s", IC_STATE_MAGIC);
	if (st->have_keygen) {
		hex(st->gen_check, ICF_CHECK_LEN, h);
		n += (size_t)snprintf(buf + n, IC_STATE_MAX_BYTES - n, "keygen %u %s\n",
				      st->keygen, h);
	}
	for (size_t i = 0; i < st->npoints; i++) {
		hex(st->points[i].seal, ICF_SEAL_LEN, h);
		n += (size_t)snprintf(buf + n, IC_STATE_MAX_BYTES - n, "point %u %s %s\n",
				      st->points[i].seq, h, st->points[i].name);
	}
	return n;
}

/* ---- the file ------------------------------------------------------------------------ */

/* 1 = loaded, 0 = none (st empty), <0 error */
static int load(const uint8_t id[ICF_ID_LEN], struct ic_state *st)
{
	char fname[64], *buf = NULL;
	char *dir = state_dir(), *path;
	size_t n;
	FILE *f;
	int fd, ret = 0;

	memset(st, 0, sizeof(*st));
	file_name(id, fname, sizeof(fname));
	path = dir ? ic_path_join(dir, fname) : NULL;
	if (!path) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ic_open_regular(AT_FDCWD, dir, fname, O_RDONLY, 0, &fd);
	if (ret) {
		ret = ret == -ENOENT ? 0 : ret;
		goto out;
	}
	f = fdopen(fd, "r");
	if (!f) {
		ret = ic_fail(-errno, "%s: %s", path, strerror(errno));
		close(fd);
		goto out;
	}
	buf = malloc(IC_STATE_MAX_BYTES + 1);
	if (!buf) {
		ret = ic_fail(-ENOMEM, "out of memory");
	} else {
		n = fread(buf, 1, IC_STATE_MAX_BYTES + 1, f);
		if (ferror(f))
			ret = ic_fail(-EIO, "%s: read error", path);
		else
			ret = ic_state_decode(buf, n, st, path) ?: 1;
	}
	fclose(f);
out:
	free(buf);
	free(path);
	free(dir);
	return ret;
}

static int mkdirs(const char *dir)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return ic_fail(-errno, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return ic_fail(-errno, "%s: %s", buf, strerror(errno));
	return 0;
}

static int store(const uint8_t chain_id[ICF_ID_LEN], const struct ic_state *st)
{
	char fname[64], *text = malloc(IC_STATE_MAX_BYTES);
	char *dir = state_dir();
	int ret = text && dir ? mkdirs(dir) : ic_fail(-ENOMEM, "out of memory");

	if (!ret) {
		file_name(chain_id, fname, sizeof(fname));
		ret = ic_write_file_atomic(dir, fname, text, ic_state_encode(st, text), 0600);
	}
	free(text);
	free(dir);
	return ret;
}

static struct ic_state *state_new(void)
{
	struct ic_state *st = malloc(sizeof(*st));

	if (!st)
		ic_fail(-ENOMEM, "out of memory");
	return st;
}

/* Add or replace point (seq, seal, name), keeping the newest IC_STATE_POINTS. */
static void put_point(struct ic_state *st, uint32_t seq, const uint8_t seal[ICF_SEAL_LEN],
		      const char *name)
{
	size_t i = 0;

	while (i < st->npoints && st->points[i].seq < seq)
		i++;
	if (i == st->npoints || st->points[i].seq != seq) {
		if (st->npoints == IC_STATE_POINTS) {
			if (i == 0)
				return;         /* older than everything remembered */
			memmove(&st->points[0], &st->points[1], --i * sizeof(st->points[0]));
			st->npoints--;
		}
		memmove(&st->points[i + 1], &st->points[i],
			(st->npoints - i) * sizeof(st->points[0]));
		st->npoints++;
	}
	st->points[i].seq = seq;
	memcpy(st->points[i].seal, seal, ICF_SEAL_LEN);
	snprintf(st->points[i].name, sizeof(st->points[i].name), "%s", name);
}

static void drop_point(struct ic_state *st, size_t i)
{
	memmove(&st->points[i], &st->points[i + 1], (st->npoints - i - 1) * sizeof(st->points[0]));
	st->npoints--;
}

/* ---- the checks ---------------------------------------------------------------------- */

void ic_state_note_key(const struct ic_key *key)
{
	memset(&noted, 0, sizeof(noted));
	memcpy(noted.chain_id, key->chain_id, ICF_ID_LEN);
	noted.ngen = key->ngen;
	for (uint16_t g = 0; g < key->ngen && g <= ICF_KEY_GEN_MAX; g++)
		memcpy(noted.check[g], ic_key_gen_check(key, g), ICF_CHECK_LEN);
	noted.set = true;
}

/* The key part of a check on a loaded state; *dirty when st changed. */
static int check_key(const char *dir, const uint8_t chain_id[ICF_ID_LEN], struct ic_state *st,
		     bool accept, bool *dirty)
{
	uint32_t cur;

	if (!noted.set || memcmp(noted.chain_id, chain_id, ICF_ID_LEN))
		return 0;
	cur = noted.ngen - 1;
	if (st->have_keygen && !accept) {
		if (cur < st->keygen)
			return ic_fail(IC_ECORRUPT,
				       "%s/%s: rolled back: this machine last saw key generation %u, the key file holds only generations 0 to %u (an older copy, which a revoked passphrase may open); use --accept-rollback if that is expected",
				       dir, ICF_KEYFILE_NAME, st->keygen, cur);
		if (memcmp(noted.check[st->keygen], st->gen_check, ICF_CHECK_LEN))
			return ic_fail(IC_ECORRUPT,
				       "%s/%s: key generation %u is not the one this machine saw (the key file was replaced); use --accept-rollback if that is expected",
				       dir, ICF_KEYFILE_NAME, st->keygen);
	}
	if (!st->have_keygen || st->keygen != cur ||
	    memcmp(st->gen_check, noted.check[cur], ICF_CHECK_LEN)) {
		st->have_keygen = true;
		st->keygen = cur;
		memcpy(st->gen_check, noted.check[cur], ICF_CHECK_LEN);
		*dirty = true;
	}
	return 0;
}

int ic_state_check_key(const char *dir, const uint8_t chain_id[ICF_ID_LEN], bool accept)
{
	struct ic_state *st = state_new();
	bool dirty = false;
	int ret;

	if (!st)
		return -ENOMEM;
	ret = load(chain_id, st);
	if (ret >= 0)
		ret = check_key(dir, chain_id, st, accept, &dirty);
	if (ret >= 0 && dirty)
		ret = store(chain_id, st);
	free(st);
	return ret < 0 ? ret : 0;
}

int ic_state_check(const struct ic_chain *c, bool accept)
{
	const struct ic_point *newest = ic_chain_newest(c), *seen;
	struct ic_state_point *top;
	struct ic_state *st = state_new();
	bool dirty = false;
	int ret;

	if (!st)
		return -ENOMEM;
	ret = load(c->chain_id, st);
	if (ret < 0)
		goto out;
	ret = check_key(c->dir, c->chain_id, st, accept, &dirty);
	if (ret < 0 || !newest)
		goto out_store;
	top = st->npoints ? &st->points[st->npoints - 1] : NULL;
	if (top && !accept) {
		seen = ic_chain_find_seq(c, top->seq);
		if (!seen && newest->seq < top->seq) {
			ret = ic_fail(IC_ECORRUPT,
				      "%s: rolled back or truncated: this machine last saw restore point '%s' (sequence %u), the newest now is '%s' (sequence %u); use --accept-rollback if that is expected",
				      c->dir, top->name, top->seq, newest->img->slot.name, newest->seq);
			goto out;
		}
		if (seen && memcmp(seen->img->slot.seal, top->seal, ICF_SEAL_LEN)) {
			ret = ic_fail(IC_ECORRUPT,
				      "%s: restore point '%s' (sequence %u) is not the one this machine saw (its seal changed); use --accept-rollback if that is expected",
				      c->dir, seen->img->slot.name, top->seq);
			goto out;
		}
	}
	if (accept) {
		/* forget what was rolled back, and a newest point that was replaced */
		while (st->npoints && st->points[st->npoints - 1].seq > newest->seq) {
			st->npoints--;
			dirty = true;
		}
	}
	top = st->npoints ? &st->points[st->npoints - 1] : NULL;
	if (!top || top->seq != newest->seq ||
	    memcmp(top->seal, newest->img->slot.seal, ICF_SEAL_LEN)) {
		put_point(st, newest->seq, newest->img->slot.seal, newest->img->slot.name);
		dirty = true;
	}
out_store:
	if (ret >= 0 && dirty)
		ret = store(c->chain_id, st);
out:
	free(st);
	return ret < 0 ? ret : 0;
}

int ic_state_record(const uint8_t chain_id[ICF_ID_LEN], uint32_t seq, const char *name,
		    const uint8_t seal[ICF_SEAL_LEN])
{
	struct ic_state *st = state_new();
	int ret;

	if (!st)
		return -ENOMEM;
	ret = load(chain_id, st);
	if (ret == -EINVAL)
		memset(st, 0, sizeof(*st));     /* unreadable: start afresh with this point */
	else if (ret < 0)
		goto out;
	/* the writer just made seq: whatever is remembered at or above it belongs to a
	 * history the chain no longer has (a rollback that was accepted) */
	while (st->npoints && st->points[st->npoints - 1].seq >= seq)
		st->npoints--;
	put_point(st, seq, seal, name);
	ret = store(chain_id, st);
out:
	free(st);
	return ret;
}

int ic_state_review(const struct ic_chain *c,
		    void (*report)(const struct ic_state_point *p, bool replaced, void *arg),
		    void *arg)
{
	struct ic_state *st = state_new();
	const struct ic_point *seen;
	int ret, n = 0;

	if (!st)
		return -ENOMEM;
	ret = load(c->chain_id, st);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < st->npoints;) {
		seen = ic_chain_find_seq(c, st->points[i].seq);
		if (seen && !memcmp(seen->img->slot.seal, st->points[i].seal, ICF_SEAL_LEN)) {
			i++;
			continue;
		}
		report(&st->points[i], seen != NULL, arg);
		drop_point(st, i);
		n++;
	}
	for (size_t i = 0; i < c->npoints; i++)
		put_point(st, c->points[i].seq, c->points[i].img->slot.seal,
			  c->points[i].img->slot.name);
	ret = store(c->chain_id, st);
out:
	free(st);
	return ret < 0 ? ret : n;
}

/* ---- side files (FORMAT.md section 16) ----------------------------------------------- */

static void side_name(const uint8_t id[ICF_ID_LEN], const char *suffix, char *buf, size_t len)
{
	file_name(id, buf, len);
	snprintf(strrchr(buf, '.') + 1, 32, "%s", suffix);
}

int ic_state_side_load(const uint8_t chain_id[ICF_ID_LEN], const char *suffix, char *buf,
		       size_t max, size_t *len, char *path, size_t pathlen)
{
	char fname[96], *dir = state_dir();
	ssize_t n;
	int fd, ret;

	*len = 0;
	if (!dir)
		return -ENOMEM;
	side_name(chain_id, suffix, fname, sizeof(fname));
	snprintf(path, pathlen, "%s/%s", dir, fname);
	ret = ic_open_regular(AT_FDCWD, dir, fname, O_RDONLY, 0, &fd);
	if (!ret) {
		n = read(fd, buf, max + 1);
		if (n < 0)
			ret = ic_fail(-errno, "%s/%s: %s", dir, fname, strerror(errno));
		else if ((size_t)n > max)
			ret = ic_fail(-EINVAL, "%s/%s: longer than %zu bytes", dir, fname, max);
		else
			*len = (size_t)n;
		close(fd);
	}
	free(dir);
	return ret;
}

int ic_state_side_store(const uint8_t chain_id[ICF_ID_LEN], const char *suffix,
			const char *buf, size_t len)
{
	char fname[96], *dir = state_dir();
	int ret = dir ? mkdirs(dir) : -ENOMEM;

	if (!ret) {
		side_name(chain_id, suffix, fname, sizeof(fname));
		ret = ic_write_file_atomic(dir, fname, buf, len, 0600);
	}
	free(dir);
	return ret;
}
