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

static bool served(const struct ic_point *p, pid_t *pid)
{
	return ic_lock_holder(p->img->fd, IC_LOCK_OVERLAY, pid) == 1;
}

void ic_cons_rebase_pin(struct cons *x, struct ic_chain *c, bool *in_d)
{
	char who[600];
	pid_t pid;

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

void ic_cons_rebase_cleanup(const char *dir)
{
	char *path = ic_path_join(dir, REBASE_FILE);

	if (path)
		unlink(path);   /* a directory or nothing there: left alone */
	free(path);
}

static int write_request(struct cons *x, struct cons_rebase *rb)
{
	size_t cap = 32 + rb->pts.n * (32 + 2 * ICF_SEAL_LEN), len;
	char *buf = malloc(cap);
	int ret;

	if (!buf)
		return -ENOMEM;
	len = (size_t)snprintf(buf, cap, "imgchain-rebase 1\n");
	for (size_t i = 0; i < rb->pts.n; i++) {
		len += (size_t)snprintf(buf + len, cap - len, "point %u ", rb->pts.v[i].seq);
		for (int k = 0; k < ICF_SEAL_LEN; k++)
			len += (size_t)snprintf(buf + len, cap - len, "%02x", rb->pts.v[i].seal[k]);
		len += (size_t)snprintf(buf + len, cap - len, "\n");
	}
	ret = ic_write_file_atomic(x->dir, REBASE_FILE, buf, len, 0644);
	free(buf);
	return ret;
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
	ic_cons_rebase_cleanup(x->dir);
	return ret;
}

void ic_cons_rebase_free(struct cons_rebase *rb)
{
	for (size_t i = 0; i < rb->pts.n; i++)
		if (rb->pts.v[i].fd >= 0)
			close(rb->pts.v[i].fd);
	ic_array_free(&rb->pts);
}
