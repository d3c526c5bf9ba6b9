/* ic_source_nbd.c: an NBD export as a backup source (libnbd).
 *
 * One connection (qemu-nbd serves one client at a time by default), many requests in
 * flight: the workers queue requests of at most REQ_BYTES and wait for them; one I/O
 * thread owns the handle once reading starts and runs libnbd's state machine (aio
 * calls, poll on the socket and an eventfd the workers ring).  Before that, the handle
 * answers block status queries synchronously: base:allocation for the zero extents,
 * qemu:dirty-bitmap:NAME for the dirty ones. */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <libnbd.h>

#include "ic_source_int.h"
#include "ic_util.h"

#define REQ_BYTES (1u << 20)    /* one request; workers read runs of up to 4 MiB */
#define REQ_BATCH 64            /* requests a worker queues before it waits */
#define BS_SPAN (1ull << 30)    /* bytes asked per block status query */
#define DIRTY_PREFIX "qemu:dirty-bitmap:"

struct req {
	struct nbd *n;
	struct req *next;
	void *buf;
	size_t len;
	uint64_t off;
	int err;                /* set when done: 0 or -errno */
	bool done;
	struct waiter *w;       /* the worker waiting for it */
};

/* One worker's wait for its requests: woken once, when the last is done (a shared
 * condition broadcast at every completion woke every worker for each MiB). */
struct waiter {
	pthread_cond_t cv;
	unsigned pending;
};

struct nbd {
	struct nbd_handle *h;
	char *bitmap_ctx;        /* "qemu:dirty-bitmap:NAME" or NULL */
	size_t req_max;
	pthread_mutex_t mu;
	struct req *queue, **queue_tail;
	struct req *inflight;   /* submitted to libnbd, not done (linked by next) */
	int evfd;
	bool started, stop;
	pthread_t io;
	int dead_err;           /* the connection failed: every request fails */
	char dead_msg[512];
};

static int nbd_err(const struct ic_source *s, const char *what)
{
	int e = nbd_get_errno();

	return ic_fail(e > 0 ? -e : -EIO, "%s: %s: %s", s->spec, what, nbd_get_error());
}

/* ---- block status (before reading starts) ---------------------------------------- */

struct walk {
	const char *ctx;
	uint64_t reached, size, run_start;
	bool in_run;             /* zero walk: inside a run of zero extents */
	uint32_t bs;
	uint8_t *map, mark;
	bool dirty;
};

static void zero_run_end(struct walk *w, uint64_t end)
{
	uint64_t first, last;

	if (!w->in_run)
		return;
	ic_source_inner_blocks(w->run_start, end, w->size, w->bs, &first, &last);
	for (uint64_t b = first; b < last; b++)
		w->map[b] = w->mark;
	w->in_run = false;
}

static int extent_cb(void *data, const char *ctx, uint64_t off, uint32_t *ents, size_t nr,
		     int *error)
{
	struct walk *w = data;
	uint64_t pos = off;

	if (strcmp(ctx, w->ctx))
		return 0;
	for (size_t i = 0; i + 1 < nr && pos < w->size; i += 2) {
		uint64_t end = pos + ents[i] < w->size ? pos + ents[i] : w->size;

		if (w->dirty) {
			if (ents[i + 1] & 1)
				for (uint64_t b = pos / w->bs; b * w->bs < end; b++)
					w->map[b] = 1;
		} else if (ents[i + 1] & LIBNBD_STATE_ZERO) {
			if (!w->in_run)
				w->run_start = pos;
			w->in_run = true;
		} else {
			zero_run_end(w, pos);
		}
		pos = end;
	}
	if (pos > w->reached)
		w->reached = pos;
	return 0;
}

static int walk(struct ic_source *s, struct walk *w)
{
	struct nbd *n = s->priv;
	uint64_t off = 0;

	if (n->started)
		return ic_fail(-EINVAL, "%s: block status asked after reading started", s->spec);
	w->size = s->size;
	w->reached = 0;
	while (off < s->size) {
		uint64_t len = s->size - off < BS_SPAN ? s->size - off : BS_SPAN;

		if (nbd_block_status(n->h, len, off, (nbd_extent_callback){ .callback = extent_cb,
			.user_data = w }, 0) < 0)
			return nbd_err(s, "block status");
		if (w->reached <= off)
			return ic_fail(-EPROTO, "%s: the server answered block status for nothing at offset %llu (%s)",
				       s->spec, (unsigned long long)off, w->ctx);
		off = w->reached;
	}
	return 0;
}

static int nbd_zero_blocks(struct ic_source *s, uint32_t bs, uint8_t *map, uint8_t mark)
{
	struct nbd *n = s->priv;
	struct walk w = { .ctx = LIBNBD_CONTEXT_BASE_ALLOCATION, .bs = bs, .map = map,
			  .mark = mark };
	int ret;

	if (nbd_can_meta_context(n->h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
		return 0;    /* no allocation information: everything is read */
	ret = walk(s, &w);
	if (!ret)
		zero_run_end(&w, s->size);
	return ret;
}

static int nbd_dirty_blocks(struct ic_source *s, uint32_t bs, uint8_t *map)
{
	struct nbd *n = s->priv;
	struct walk w = { .ctx = n->bitmap_ctx, .bs = bs, .map = map, .dirty = true };

	if (!n->bitmap_ctx)
		return ic_fail(-EINVAL, "%s: opened without a dirty bitmap", s->spec);
	return walk(s, &w);
}

/* ---- the I/O thread ------------------------------------------------------------------ */

/* Called with n->mu held. */
static void req_finish(struct nbd *n, struct req *r, int err)
{
	struct req **p;

	if (r->done)
		return;
	for (p = &n->inflight; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	r->done = true;
	r->err = err;
	if (--r->w->pending == 0)
		pthread_cond_signal(&r->w->cv);
}

static int req_done_cb(void *data, int *error)
{
	struct req *r = data;
	struct nbd *n = r->n;

	pthread_mutex_lock(&n->mu);
	req_finish(n, r, *error ? -*error : 0);
	pthread_mutex_unlock(&n->mu);
	return 1;
}

/* The connection is gone: close it (no callback runs after), fail what is left. */
static void io_dead(struct nbd *n, int err, const char *msg)
{
	nbd_close(n->h);
	n->h = NULL;
	pthread_mutex_lock(&n->mu);
	n->dead_err = err ? err : -EIO;
	snprintf(n->dead_msg, sizeof(n->dead_msg), "%s", msg);
	while (n->inflight)
		req_finish(n, n->inflight, n->dead_err);
	while (n->queue) {
		struct req *r = n->queue;

		n->queue = r->next;
		r->next = NULL;
		req_finish(n, r, n->dead_err);
	}
	n->queue_tail = &n->queue;
	pthread_mutex_unlock(&n->mu);
}

static void *io_thread(void *arg)
{
	struct nbd *n = arg;
	char msg[512];

	for (;;) {
		struct pollfd p[2];
		unsigned dir;
		int e = 0;

		pthread_mutex_lock(&n->mu);
		while (n->queue) {
			struct req *r = n->queue;

			n->queue = r->next;
			if (!n->queue)
				n->queue_tail = &n->queue;
			r->next = n->inflight;
			n->inflight = r;
			pthread_mutex_unlock(&n->mu);
			if (nbd_aio_pread(n->h, r->buf, r->len, r->off,
					  (nbd_completion_callback){ .callback = req_done_cb,
								     .user_data = r }, 0) < 0) {
				e = nbd_get_errno();
				snprintf(msg, sizeof(msg), "%s", nbd_get_error());
				pthread_mutex_lock(&n->mu);
				req_finish(n, r, e > 0 ? -e : -EIO);
				if (nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h))
					break;
				continue;
			}
			pthread_mutex_lock(&n->mu);
		}
		if (n->stop && !n->inflight && !n->queue) {
			pthread_mutex_unlock(&n->mu);
			return NULL;
		}
		pthread_mutex_unlock(&n->mu);
		if (nbd_aio_is_dead(n->h) || nbd_aio_is_closed(n->h)) {
			io_dead(n, e > 0 ? -e : -ENOTCONN, e ? msg : "the server closed the connection");
			return NULL;
		}
		dir = nbd_aio_get_direction(n->h);
		p[0].fd = nbd_aio_get_fd(n->h);
		p[0].events = (dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
			      (dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
		p[1].fd = n->evfd;
		p[1].events = POLLIN;
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			io_dead(n, -errno, strerror(errno));
			return NULL;
		}
		if (p[1].revents & POLLIN) {
			uint64_t v;

			if (read(n->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				continue;
		}
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(n->h) < 0) {
			e = nbd_get_errno();
			io_dead(n, e > 0 ? -e : -EIO, nbd_get_error());
			return NULL;
		}
		if ((p[0].revents & POLLOUT) && nbd_aio_notify_write(n->h) < 0) {
			e = nbd_get_errno();
			io_dead(n, e > 0 ? -e : -EIO, nbd_get_error());
			return NULL;
		}
	}
}

static void ring(struct nbd *n)
{
	uint64_t one = 1;

	if (write(n->evfd, &one, sizeof(one)) < 0) {
		/* an eventfd only fails when its counter is full: it is rung already */
	}
}

static int start_io(struct ic_source *s)
{
	struct nbd *n = s->priv;
	int ret = 0;

	pthread_mutex_lock(&n->mu);
	if (!n->started) {
		int e = pthread_create(&n->io, NULL, io_thread, n);

		if (e)
			ret = ic_fail(-e, "%s: cannot start the reading thread: %s", s->spec,
				      strerror(e));
		else
			n->started = true;
	}
	pthread_mutex_unlock(&n->mu);
	return ret;
}

/* Every range of rd at once: up to REQ_BATCH requests in flight, then wait for them (a
 * batch's scattered dirty blocks cost one round trip, not one each). */
static int nbd_read_many(struct ic_source *s, const struct ic_source_rd *rd, size_t nrd)
{
	struct nbd *n = s->priv;
	struct req reqs[REQ_BATCH];
	size_t x = 0, done = 0;    /* the next byte to ask: rd[x] + done */
	int ret = start_io(s);

	for (size_t i = 0; i < nrd; i++)
		if (rd[i].off > s->size || rd[i].len > s->size - rd[i].off)
			return ic_fail(-EIO, "%s: read past the end of the export (%llu + %zu)",
				       s->spec, (unsigned long long)rd[i].off, rd[i].len);
	while (!ret && x < nrd) {
		struct waiter w = { .pending = 0 };
		unsigned k = 0;

		pthread_cond_init(&w.cv, NULL);
		pthread_mutex_lock(&n->mu);
		while (k < REQ_BATCH && x < nrd) {
			struct req *r = &reqs[k];
			size_t left, l;

			if (!rd[x].len) {
				x++;
				continue;
			}
			k++;
			left = rd[x].len - done;
			l = left < n->req_max ? left : n->req_max;

			*r = (struct req){ .n = n, .buf = (uint8_t *)rd[x].buf + done, .len = l,
					   .off = rd[x].off + done, .w = &w };
			w.pending++;
			if (n->dead_err) {
				req_finish(n, r, n->dead_err);
			} else {
				*n->queue_tail = r;
				n->queue_tail = &r->next;
			}
			done += l;
			if (done == rd[x].len) {
				x++;
				done = 0;
			}
		}
		pthread_mutex_unlock(&n->mu);
		ring(n);
		pthread_mutex_lock(&n->mu);
		while (w.pending)
			pthread_cond_wait(&w.cv, &n->mu);
		for (unsigned i = 0; i < k && !ret; i++) {
			if (!reqs[i].err)
				continue;
			ret = ic_fail(reqs[i].err, "%s: read at offset %llu: %s%s", s->spec,
				      (unsigned long long)reqs[i].off,
				      reqs[i].err == -ENOTCONN ? "lost the connection to the server: " : "",
				      n->dead_err ? n->dead_msg : strerror(-reqs[i].err));
		}
		pthread_mutex_unlock(&n->mu);
		pthread_cond_destroy(&w.cv);
	}
	return ret;
}

static int nbd_read(struct ic_source *s, void *buf, size_t len, uint64_t off)
{
	struct ic_source_rd rd = { .buf = buf, .len = len, .off = off };

	return len ? nbd_read_many(s, &rd, 1) : 0;
}

static int nbd_check_end(struct ic_source *s)
{
	return 0;    /* an export's size is fixed while connected */
}

static void nbd_src_close(struct ic_source *s)
{
	struct nbd *n = s->priv;

	if (!n)
		return;
	if (n->started) {
		pthread_mutex_lock(&n->mu);
		n->stop = true;
		pthread_mutex_unlock(&n->mu);
		ring(n);
		pthread_join(n->io, NULL);
	}
	if (n->h) {
		nbd_shutdown(n->h, 0);
		nbd_close(n->h);
	}
	if (n->evfd >= 0)
		close(n->evfd);
	pthread_mutex_destroy(&n->mu);
	free(n->bitmap_ctx);
	free(n);
}

static const struct ic_source_ops nbd_ops = {
	.zero_blocks = nbd_zero_blocks,
	.dirty_blocks = nbd_dirty_blocks,
	.read = nbd_read,
	.read_many = nbd_read_many,
	.check_end = nbd_check_end,
	.close = nbd_src_close,
};

int ic_source_nbd_open(struct ic_source *s, const char *bitmap)
{
	struct nbd *n = calloc(1, sizeof(*n));
	int64_t size, max;

	if (!n)
		return -ENOMEM;
	s->ops = &nbd_ops;
	s->priv = n;
	s->remote = true;
	n->evfd = -1;
	pthread_mutex_init(&n->mu, NULL);
	n->queue_tail = &n->queue;
	n->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->evfd < 0)
		return ic_fail(-errno, "eventfd: %s", strerror(errno));
	if (bitmap) {
		n->bitmap_ctx = malloc(strlen(DIRTY_PREFIX) + strlen(bitmap) + 1);
		if (!n->bitmap_ctx)
			return -ENOMEM;
		strcpy(n->bitmap_ctx, DIRTY_PREFIX);
		strcat(n->bitmap_ctx, bitmap);
	}
	n->h = nbd_create();
	if (!n->h)
		return nbd_err(s, "libnbd");
	nbd_set_handle_name(n->h, "imgbackup");
	/* the URI is the user's: it may name a TLS key file (tls-psk-file=) */
	if (nbd_set_uri_allow_local_file(n->h, true) < 0 ||
	    nbd_add_meta_context(n->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    (n->bitmap_ctx && nbd_add_meta_context(n->h, n->bitmap_ctx) < 0))
		return nbd_err(s, "libnbd");
	if (nbd_connect_uri(n->h, s->spec) < 0)
		return nbd_err(s, "cannot connect");
	size = nbd_get_size(n->h);
	if (size < 0)
		return nbd_err(s, "export size");
	s->size = (uint64_t)size;
	if (n->bitmap_ctx && nbd_can_meta_context(n->h, n->bitmap_ctx) != 1)
		return ic_fail(-ENOENT, "%s: the server does not export dirty bitmap '%s' (%s)",
			       s->spec, bitmap, n->bitmap_ctx);
	max = nbd_get_block_size(n->h, LIBNBD_SIZE_MAXIMUM);
	n->req_max = max >= 4096 && max < REQ_BYTES ? (size_t)max : REQ_BYTES;
	return 0;
}
