/* ic_s3_pre.c: a backup's image uploaded while it is being written (FORMAT.md 14.2).
 * The writer (ic_writer_new) appends records to CHAIN/.tmp-SEQ-PID.img from offset 4096 on
 * and writes nothing behind them until its commit, which puts the index after the last
 * record and slot A into the first 4 KiB.  So while the backup runs, every 16 MiB part
 * but the first lies below the file's size only once its bytes are final: they are sent
 * as parts of a multipart upload as soon as they are there.  After the commit the rest
 * (the tail with the index, and part 1 with the slot) is sent and the upload completed:
 * the point appears whole, as with ic_s3_chain_push, which skips it then.  Anything
 * unexpected (another file, a commit under another inode, more than 10,000 parts) aborts
 * the upload and leaves the image to ic_s3_chain_push. */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_s3_chain_int.h"
#include "ic_util.h"

#define PART (16ull << 20)
#define WORKERS_MAX 8

struct ic_s3_pre {
	struct ic_s3_chain *sc;
	pthread_t watcher, workers[WORKERS_MAX];
	unsigned nworkers;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	unsigned seq;
	struct ic_s3_upload *u;
	uint64_t ready;             /* bytes of the file known final (its size while written) */
	unsigned next;              /* next part to send (2.. while written; then 1 last) */
	unsigned nparts;            /* known once final */
	bool final, part1_taken, stop, failed;
	unsigned busy;              /* parts being sent */
	struct ic_error err;
};

static void fail_locked(struct ic_s3_pre *p, int err)
{
	if (!p->failed)
		ic_error_save(&p->err, err);
	p->failed = true;
	pthread_cond_broadcast(&p->cv);
}

/* Find our writer's temporary image and start its upload (*fd, *u, *seq). */
static int find_tmp(struct ic_s3_pre *p, int *fd, struct ic_s3_upload **u, unsigned *seqp)
{
	char want[64];
	DIR *d = opendir(p->sc->dir);
	struct dirent *de;
	int err = 0;

	if (!d)
		return 0;
	snprintf(want, sizeof(want), "-%d.img", (int)getpid());
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name), w = strlen(want);
		unsigned seq;
		char *key, name[16];

		if (strncmp(de->d_name, ".tmp-", 5) != 0 || n <= w + 5 ||
		    strcmp(de->d_name + n - w, want) != 0 || sscanf(de->d_name + 5, "%u-", &seq) != 1)
			continue;
		err = ic_open_regular(AT_FDCWD, p->sc->dir, de->d_name, O_RDONLY, 0, fd);
		if (err)
			break;
		snprintf(name, sizeof(name), "%08u.img", seq);
		key = ic_s3_chain_key(p->sc, name);
		err = key ? ic_s3_mp_start(p->sc->s3, key, u) : -ENOMEM;
		free(key);
		*seqp = seq;
		break;
	}
	closedir(d);
	return err;
}

static void *watcher(void *arg)
{
	struct ic_s3_pre *p = arg;
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	pthread_mutex_lock(&p->mu);
	while (!p->stop && !p->final && !p->failed) {
		int err = 0, fd = p->fd;
		struct ic_s3_upload *u = NULL;
		unsigned seq = 0;
		struct stat st;

		pthread_mutex_unlock(&p->mu);
		if (fd < 0)
			err = find_tmp(p, &fd, &u, &seq);
		else if (fstat(fd, &st) == 0)
			__atomic_store_n(&p->ready, (uint64_t)st.st_size, __ATOMIC_RELAXED);
		if (!u)
			nanosleep(&ts, NULL);
		pthread_mutex_lock(&p->mu);
		if (fd >= 0 && p->fd < 0) {
			p->fd = fd;
			p->u = u;
			p->seq = seq;
		}
		if (err)
			fail_locked(p, err);
		else
			pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* The next part whose bytes are final, or 0. */
static unsigned take_part(struct ic_s3_pre *p)
{
	uint64_t ready = __atomic_load_n(&p->ready, __ATOMIC_RELAXED);

	if (!p->u)
		return 0;
	if (!p->final)
		return (uint64_t)p->next * PART <= ready && p->next < IC_S3_PART_MAX ? p->next++ : 0;
	if (p->next <= p->nparts)
		return p->next++;
	if (!p->part1_taken) {
		p->part1_taken = true;
		return 1;
	}
	return 0;
}

static void *worker(void *arg)
{
	struct ic_s3_pre *p = arg;
	void *buf = malloc(PART);
	unsigned k = 0;

	pthread_mutex_lock(&p->mu);
	if (!buf)
		fail_locked(p, -ENOMEM);
	for (;;) {
		uint64_t off, len, size;
		int err;

		k = 0;
		while (!p->stop && !p->failed && !(k = take_part(p)) &&
		       !(p->final && p->part1_taken))
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop || p->failed || !k)
			break;
		p->busy++;
		size = p->final ? p->ready : (uint64_t)k * PART;
		pthread_mutex_unlock(&p->mu);
		off = (uint64_t)(k - 1) * PART;
		len = size - off < PART ? size - off : PART;
		err = pread(p->fd, buf, len, (off_t)off) == (ssize_t)len ? 0 :
		      ic_fail(-EIO, "%s: short read of the image being uploaded", p->sc->dir);
		if (!err)
			err = ic_s3_mp_part(p->u, k, buf, len);
		pthread_mutex_lock(&p->mu);
		p->busy--;
		if (err)
			fail_locked(p, err);
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->mu);
	free(buf);
	return NULL;
}

int ic_s3_pre_start(struct ic_s3_chain *sc, struct ic_s3_pre **out)
{
	struct ic_s3_pre *p = calloc(1, sizeof(*p));
	unsigned i, n = ic_s3_threads() < WORKERS_MAX ? ic_s3_threads() : WORKERS_MAX;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->sc = sc;
	p->fd = -1;
	p->next = 2;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (pthread_create(&p->watcher, NULL, watcher, p) != 0) {
		free(p);
		return -EAGAIN;
	}
	for (i = 0; i < n; i++)
		if (pthread_create(&p->workers[p->nworkers], NULL, worker, p) == 0)
			p->nworkers++;
	*out = p;
	return 0;
}

static void join_all(struct ic_s3_pre *p)
{
	unsigned i;

	pthread_join(p->watcher, NULL);
	for (i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i], NULL);
}

static void pre_free(struct ic_s3_pre *p)
{
	if (p->fd >= 0)
		close(p->fd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void ic_s3_pre_abort(struct ic_s3_pre *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	join_all(p);
	ic_s3_mp_abort(p->u);
	pre_free(p);
}

int ic_s3_pre_finish(struct ic_s3_pre *p, unsigned seq)
{
	struct ic_s3_obj o = { 0 }, *c;
	char name[16], *path = NULL;
	struct stat st, st2;
	int err = 0;

	snprintf(name, sizeof(name), "%08u.img", seq);
	path = ic_path_join(p->sc->dir, name);
	pthread_mutex_lock(&p->mu);
	/* the committed image must be the file we read, and worth parts */
	if (!path || !p->u || p->failed || p->seq != seq || fstat(p->fd, &st) != 0 ||
	    lstat(path, &st2) != 0 || st.st_ino != st2.st_ino || st.st_dev != st2.st_dev ||
	    (uint64_t)st.st_size <= PART || ((uint64_t)st.st_size + PART - 1) / PART > IC_S3_PART_MAX) {
		pthread_mutex_unlock(&p->mu);
		free(path);
		ic_s3_pre_abort(p);
		return 0;               /* ic_s3_chain_push uploads it */
	}
	p->ready = (uint64_t)st.st_size;
	p->nparts = (unsigned)((p->ready + PART - 1) / PART);
	p->final = true;
	pthread_cond_broadcast(&p->cv);
	while (!p->failed && (p->busy || p->next <= p->nparts || !p->part1_taken))
		pthread_cond_wait(&p->cv, &p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	join_all(p);
	free(path);
	if (p->failed)
		err = ic_error_raise(&p->err);
	/* the key file first: no point is visible before it (FORMAT.md 14.2) */
	if (!err)
		err = ic_s3_push_keyfile(p->sc);
	if (!err)
		err = ic_s3_lease_check(p->sc);
	if (!err)
		err = ic_s3_mp_complete(p->u, o.etag);
	if (err) {
		ic_s3_mp_abort(p->u);
		pre_free(p);
		return err;
	}
	snprintf(o.name, sizeof(o.name), "%s", name);
	o.size = (uint64_t)st.st_size;
	o.have = IC_S3_NEED_FULL;
	if (!o.etag[0]) {
		char *key = ic_s3_chain_key(p->sc, name);

		err = key ? ic_s3_head(p->sc->s3, key, NULL, o.etag) : -ENOMEM;
		free(key);
	}
	if (!err && !(c = ic_s3_obj_put(p->sc, &o)))
		err = -ENOMEM;
	pre_free(p);
	return err;
}
