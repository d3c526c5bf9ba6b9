/* ic_cons_rebase.c: merging under a writable overlay (FORMAT.md 10.8).  A point a server
 * (imgmount, the nbdkit plugin) holds with a writable overlay is kept by the step that
 * would remove it and rewritten instead, with the same content and seal; after the step
 * the servers are asked to re-base onto the rewritten images (CHAIN/rebase), and the run
 * waits, bounded, until none serves a replaced image any more.  Keyless: the servers
 * check the new images' seal with their key. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ic_chain.h"
#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_lock.h"
#include "ic_util.h"

#define REBASE_FILE "rebase"
#define REBASE_WAIT_DEFAULT 60.0    /* seconds: a view of a large disk takes a while */
#define REBASE_MAX (64 << 10)       /* a request's bytes are fewer */
#define REBASE_LINE (16 + 2 * ICF_SEAL_LEN)     /* a line's bytes at most */

static bool served(const struct ic_point *p, pid_t *pid)
{
	return ic_lock_holder(p->img->fd, IC_LOCK_OVERLAY, pid) == 1;
}

static bool same_seal(const struct ic_point *p, const uint8_t *seal)
{
	return !memcmp(p->img->slot.seal, seal, ICF_SEAL_LEN);
}

/* The stale point of entry k in c, or NULL when it is gone or a server locks its image
 * (it re-based: pinned like any served point). */
static struct ic_point *stale_point(struct cons *x, struct ic_chain *c, size_t k)
{
	struct ic_point *p = ic_chain_find_seq(c, x->stale.v[k].seq);
	pid_t pid;

	if (!p || !same_seal(p, x->stale.v[k].seal) || served(p, &pid))
		return NULL;
	return p;
}

void ic_cons_rebase_resolve(struct cons *x, struct ic_chain *c)
{
	size_t keep = 0;

	for (size_t k = 0; k < x->stale.n; k++)
		if (stale_point(x, c, k))
			x->stale.v[keep++] = x->stale.v[k];
	x->stale.n = keep;
}

void ic_cons_rebase_pin(struct cons *x, struct ic_chain *c, bool *in_d)
{
	char who[600];
	size_t keep = 0;
	pid_t pid;

	/* an earlier run's server that did not re-base may still serve these from their old
	 * images, which nobody here can see: kept until a server locks the new image */
	for (size_t k = 0; k < x->stale.n; k++) {
		struct ic_point *p = stale_point(x, c, k);

		if (!p)
			continue;
		x->stale.v[keep++] = x->stale.v[k];
		if (!in_d[p - c->points])
			continue;
		in_d[p - c->points] = false;
		ic_cons_note(x, "restore point '%s' is kept: a server that did not re-base onto it (an earlier run's error named it) may still serve it writable; remove %s/%s once that server is gone",
			     ic_point_name(p), x->dir, REBASE_FILE);
	}
	x->stale.n = keep;
	for (size_t i = 0; i < c->npoints; i++) {
		if (!in_d[i] || !served(&c->points[i], &pid))
			continue;
		in_d[i] = false;
		ic_cons_describe(pid, who, sizeof(who));
		ic_cons_note(x, "restore point '%s' is served with a writable overlay by %s: kept, rewritten with the points merged into it (same content and seal); the server re-bases onto it, a later run merges it",
			     ic_point_name(&c->points[i]), who);
	}
}

int ic_cons_rebase_collect(struct ic_chain *c, const bool *in_d, struct cons_rebase *rb)
{
	pid_t pid;

	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_point *p = &c->points[i], *q;
		struct cons_served *sv;

		if (in_d[i] || p->broken || !served(p, &pid))
			continue;
		for (q = p->parent; q && !in_d[q - c->points]; q = q->parent)
			;
		if (!q)
			continue;   /* nothing on its path changes */
		sv = ic_array_add(&rb->pts);
		if (!sv)
			return -ENOMEM;
		sv->seq = p->seq;
		memcpy(sv->seal, p->img->slot.seal, ICF_SEAL_LEN);
		snprintf(sv->name, sizeof(sv->name), "%s", ic_point_name(p));
		sv->fd = -1;
		/* a target (its parent removed): its image is replaced; what to wait on */
		if (in_d[p->parent - c->points]) {
			sv->fd = fcntl(p->img->fd, F_DUPFD_CLOEXEC, 0);
			if (sv->fd < 0)
				return ic_fail(-errno, "%s: %s", p->img->path, strerror(errno));
		}
	}
	return 0;
}

/* "stale SEQ SEAL" into *st; 0, or -EINVAL for any other line. */
static int parse_stale(const char *line, struct cons_stale *st)
{
	char hex[2 * ICF_SEAL_LEN + 2];
	unsigned seq;
	int n = 0;

	if (sscanf(line, "stale %u %65s%n", &seq, hex, &n) != 2 || line[n] ||
	    strlen(hex) != 2 * ICF_SEAL_LEN)
		return -EINVAL;
	st->seq = seq;
	return ic_hex_decode(hex, ICF_SEAL_LEN, st->seal);
}

void ic_cons_rebase_load(struct cons *x)
{
	char *buf = malloc(REBASE_MAX + 1), *line, *save = NULL;
	ssize_t n = -1;
	int fd, ret;

	x->stale.n = 0;
	ret = buf ? ic_open_regular(AT_FDCWD, x->dir, REBASE_FILE, 0, 0, &fd) : -ENOMEM;
	if (!ret) {
		n = pread(fd, buf, REBASE_MAX, 0);
		close(fd);
	} else if (ret == IC_ECORRUPT) {    /* planted (a link, a FIFO...): the name only */
		char *path = ic_path_join(x->dir, REBASE_FILE);

		if (path)
			unlink(path);
		free(path);
	}
	if (n < 0 || n >= REBASE_MAX) {
		free(buf);
		return;     /* none (or planted: the next save replaces it) */
	}
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		struct cons_stale st;

		if (!strncmp(line, "stale ", 6) && !parse_stale(line, &st) &&
		    ic_array_push(&x->stale, st))
			break;
	}
	free(buf);
}

static void put_line(char *buf, size_t cap, size_t *len, const char *what, uint32_t seq,
		     const uint8_t *seal)
{
	*len += (size_t)snprintf(buf + *len, cap - *len, "%s %u ", what, seq);
	for (int k = 0; k < ICF_SEAL_LEN; k++)
		*len += (size_t)snprintf(buf + *len, cap - *len, "%02x", seal[k]);
	*len += (size_t)snprintf(buf + *len, cap - *len, "\n");
}

/* The request: rb's points (NULL: none), then the stale points, newest first; at most
 * REBASE_MAX bytes (the oldest stale points beyond are dropped). */
static int write_request(struct cons *x, const struct cons_rebase *rb)
{
	size_t np = rb ? rb->pts.n : 0, cap = 32 + (np + x->stale.n) * REBASE_LINE;
	size_t len;
	char *buf;
	int ret;

	if (cap > REBASE_MAX - 1)
		cap = REBASE_MAX - 1;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "imgchain-rebase 1\n");
	for (size_t i = 0; i < np && len + REBASE_LINE <= cap; i++)
		put_line(buf, cap, &len, "point", rb->pts.v[i].seq, rb->pts.v[i].seal);
	for (size_t i = x->stale.n; i-- > 0 && len + REBASE_LINE <= cap;)
		put_line(buf, cap, &len, "stale", x->stale.v[i].seq, x->stale.v[i].seal);
	ret = ic_write_file_atomic(x->dir, REBASE_FILE, buf, len, 0644);
	free(buf);
	return ret;
}

void ic_cons_rebase_save(struct cons *x)
{
	char *path;

	if (x->stale.n) {
		write_request(x, NULL);
		return;
	}
	path = ic_path_join(x->dir, REBASE_FILE);
	if (path)
		unlink(path);   /* a directory or nothing there: left alone */
	free(path);
}

int ic_cons_rebase_ask(struct cons *x, struct cons_rebase *rb)
{
	double wait = x->o->rebase_wait > 0 ? x->o->rebase_wait : REBASE_WAIT_DEFAULT;
	double t0 = ic_now(), deadline = t0 + wait;
	const struct timespec tick = { 0, 20 * 1000000L };
	char who[600];
	pid_t pid = 0;
	int ret;

	if (!rb->pts.n)
		return 0;
	ret = write_request(x, rb);
	if (ret)
		return ret;
	ic_cons_step(x, "rebase");
	for (size_t i = 0; i < rb->pts.n; i++) {
		struct cons_served *sv = &rb->pts.v[i];

		while (sv->fd >= 0 && ic_lock_holder(sv->fd, IC_LOCK_OVERLAY, &pid) == 1) {
			if (ic_now() >= deadline) {
				struct cons_stale st = { .seq = sv->seq };

				memcpy(st.seal, sv->seal, ICF_SEAL_LEN);
				ic_array_push(&x->stale, st);   /* -ENOMEM: not kept, said below */
				ic_cons_describe(pid, who, sizeof(who));
				ret = ic_fail(-ETIMEDOUT, "%s: restore point '%s' was merged, but %s, which serves it with a writable overlay, did not re-base onto its new image within %.0f s: it keeps serving the old images (correct bytes, their space held); stop it or run imgconsolidate again",
					      x->dir, sv->name, who, wait);
				break;
			}
			nanosleep(&tick, NULL);
		}
		if (ret)
			break;
		if (sv->fd >= 0)
			ic_cons_note(x, "restore point '%s': its server re-based onto the merged image (%.2f s)",
				     sv->name, ic_now() - t0);
	}
	ic_cons_rebase_save(x);     /* kept while a server did not answer */
	return ret;
}

void ic_cons_rebase_free(struct cons_rebase *rb)
{
	for (size_t i = 0; i < rb->pts.n; i++)
		if (rb->pts.v[i].fd >= 0)
			close(rb->pts.v[i].fd);
	ic_array_free(&rb->pts);
}
