/* ic_promote_state.c: the pure parts of the promote engine: the state file's codec
 * (FORMAT.md 18) and the range lock that orders the copier and guest writes. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ic_promote.h"
#include "ic_util.h"

/* ---- state file ------------------------------------------------------------------------ */

static const char *phase_word(int phase)
{
	return phase == IC_PROMOTE_SWITCHED ? "switched" : "copying";
}

static bool dest_ok(const char *d)
{
	if (d[0] != '/')
		return false;
	for (const unsigned char *p = (const unsigned char *)d; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

int ic_promote_state_encode(const struct ic_promote_state *st, char *buf, size_t cap)
{
	int n;

	if (!dest_ok(st->dest) ||
	    (st->phase != IC_PROMOTE_COPYING && st->phase != IC_PROMOTE_SWITCHED))
		return -EINVAL;
	n = snprintf(buf, cap,
		     "imgchain-promote 1\nphase %s\nsize %" PRIu64 "\ndev %" PRIu64 "\nino %" PRIu64
		     "\nrdev %" PRIu64 "\nrate %" PRIu64 "\ndest %s\n",
		     phase_word(st->phase), st->size, st->dev, st->ino, st->rdev, st->rate, st->dest);
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return n;
}

/* The line at *p (up to '\n', which must be there) if it starts with key and a space:
 * the value in val[cap].  Advances *p past the line. */
static bool take_line(const char **p, const char *end, const char *key, char *val, size_t cap)
{
	size_t kl = strlen(key);
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t vl;

	if (!nl || (size_t)(nl - *p) <= kl || memcmp(*p, key, kl) || (*p)[kl] != ' ')
		return false;
	vl = (size_t)(nl - *p) - kl - 1;
	if (vl == 0 || vl >= cap || memchr(*p + kl + 1, '\0', vl))
		return false;
	memcpy(val, *p + kl + 1, vl);
	val[vl] = '\0';
	*p = nl + 1;
	return true;
}

/* A decimal number as encode writes it: digits only, no leading zero, fits 64 bits. */
static bool take_num(const char **p, const char *end, const char *key, uint64_t *out)
{
	char v[24];
	uint64_t x = 0;

	if (!take_line(p, end, key, v, sizeof(v)) || (v[0] == '0' && v[1]))
		return false;
	for (const char *c = v; *c; c++) {
		if (*c < '0' || *c > '9' || x > (UINT64_MAX - (uint64_t)(*c - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(*c - '0');
	}
	*out = x;
	return true;
}

int ic_promote_state_decode(const char *buf, size_t len, struct ic_promote_state *st)
{
	const char *p = buf, *end = buf + len;
	char v[16];

	memset(st, 0, sizeof(*st));
	if (!take_line(&p, end, "imgchain-promote", v, sizeof(v)) || strcmp(v, "1"))
		return ic_fail(IC_ECORRUPT, "not a promote state of version 1");
	if (!take_line(&p, end, "phase", v, sizeof(v)) ||
	    (strcmp(v, "copying") && strcmp(v, "switched")))
		return ic_fail(IC_ECORRUPT, "bad or missing phase line");
	st->phase = strcmp(v, "switched") ? IC_PROMOTE_COPYING : IC_PROMOTE_SWITCHED;
	if (!take_num(&p, end, "size", &st->size) || !take_num(&p, end, "dev", &st->dev) ||
	    !take_num(&p, end, "ino", &st->ino) || !take_num(&p, end, "rdev", &st->rdev) ||
	    !take_num(&p, end, "rate", &st->rate))
		return ic_fail(IC_ECORRUPT, "bad or missing size, dev, ino, rdev or rate line");
	if (!take_line(&p, end, "dest", st->dest, sizeof(st->dest)) || !dest_ok(st->dest))
		return ic_fail(IC_ECORRUPT, "bad or missing dest line (an absolute path)");
	if (p != end)
		return ic_fail(IC_ECORRUPT, "bytes after the dest line");
	return 0;
}

/* ---- range lock ------------------------------------------------------------------------ */

void ic_range_lock_init(struct ic_range_lock *rl)
{
	memset(rl, 0, sizeof(*rl));
	pthread_mutex_init(&rl->mu, NULL);
	pthread_cond_init(&rl->cv, NULL);
}

void ic_range_lock_destroy(struct ic_range_lock *rl)
{
	pthread_mutex_destroy(&rl->mu);
	pthread_cond_destroy(&rl->cv);
}

/* A slot free and no held range overlapping [lo, hi): the free slot, else -1. */
static int free_slot(struct ic_range_lock *rl, uint64_t lo, uint64_t hi)
{
	int slot = -1;

	for (unsigned i = 0; i < IC_RANGE_MAX; i++) {
		if (!rl->used[i]) {
			if (slot < 0)
				slot = (int)i;
		} else if (lo < hi && rl->lo[i] < hi && lo < rl->hi[i]) {     /* empty: none */
			return -1;
		}
	}
	return slot;
}

int ic_range_lock(struct ic_range_lock *rl, uint64_t lo, uint64_t hi)
{
	int slot;
	bool waited = false;

	pthread_mutex_lock(&rl->mu);
	while ((slot = free_slot(rl, lo, hi)) < 0) {
		waited = true;
		pthread_cond_wait(&rl->cv, &rl->mu);
	}
	rl->used[slot] = true;
	rl->lo[slot] = lo;
	rl->hi[slot] = hi;
	rl->waits += waited;
	pthread_mutex_unlock(&rl->mu);
	return slot;
}

void ic_range_unlock(struct ic_range_lock *rl, int slot)
{
	pthread_mutex_lock(&rl->mu);
	rl->used[slot] = false;
	pthread_cond_broadcast(&rl->cv);
	pthread_mutex_unlock(&rl->mu);
}
