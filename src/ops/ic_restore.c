/* ic_restore.c: writing a restore point's disk to a file or block device, with
 * worker threads decoding and writing disjoint ranges in parallel; the opening of a point
 * and the chunk queue that the block-sync restore (ic_sync.c) shares. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_dest.h"
#include "ic_keys.h"
#include "ic_pool.h"
#include "ic_restore_int.h"
#include "ic_progress.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"
#include "ic_verify.h"
#include "ic_view.h"

struct rjob {
	struct ic_chunks q;
	struct ic_view *v;
	struct ic_key *key;
	int fd;
	const char *dest;
	bool write_zeros;
	uint64_t data_blocks, bytes_written;    /* under q.mu */
};

bool ic_chunks_take(struct ic_chunks *q, uint64_t *k)
{
	bool more;

	pthread_mutex_lock(&q->mu);
	if (ic_interrupted && !q->err.code)
		ic_error_save(&q->err, ic_fail(-EINTR, "interrupted"));
	more = !q->err.code && q->next < q->nchunks;
	if (more)
		*k = q->next++;
	pthread_mutex_unlock(&q->mu);
	return more;
}

void ic_chunks_range(const struct ic_chunks *q, uint64_t k, uint64_t *first, uint64_t *end)
{
	*first = k * q->per_chunk;
	*end = *first + q->per_chunk < q->nblocks ? *first + q->per_chunk : q->nblocks;
}

void ic_chunks_done_locked(struct ic_chunks *q, int ret)
{
	if (ret && !q->err.code)
		ic_error_save(&q->err, ret);
	q->done_blocks += q->per_chunk;
}

int ic_chunks_run(struct ic_chunks *q, uint64_t nblocks, uint32_t block_size, int threads,
		  bool quiet, const char *what, void *(*fn)(void *), void *arg)
{
	unsigned n = ic_thread_cap(threads, IC_THREADS_MAX);
	uint64_t total = nblocks * block_size;
	struct ic_pool pool;
	struct ic_progress prog;

	q->nblocks = nblocks;
	q->per_chunk = IC_RESTORE_CHUNK_BYTES / block_size ? IC_RESTORE_CHUNK_BYTES / block_size : 1;
	q->nchunks = (nblocks + q->per_chunk - 1) / q->per_chunk;
	pthread_mutex_init(&q->mu, NULL);
	ic_pool_start(&pool, n, fn, arg);    /* fewer threads will do */
	if (!pool.n)
		fn(arg);
	ic_progress_init(&prog, what, total, quiet);
	for (;;) {
		uint64_t d;
		bool fin;

		pthread_mutex_lock(&q->mu);
		d = q->done_blocks * block_size;
		fin = q->err.code || q->done_blocks >= q->nchunks * q->per_chunk;
		pthread_mutex_unlock(&q->mu);
		if (fin || !pool.n)
			break;
		ic_progress_update(&prog, d > total ? total : d);
		usleep(100000);
	}
	ic_pool_join(&pool);
	ic_progress_done(&prog);
	pthread_mutex_destroy(&q->mu);
	return ic_error_raise(&q->err);
}

static int write_block(struct rjob *j, struct ic_codec *codec, const struct ic_block_ref *ref,
		       uint8_t *buf, uint8_t *rec, uint64_t *ndata, uint64_t *nbytes)
{
	int n = ic_view_read_ref(j->v, codec, j->key, ref, buf, rec), ret;

	if (n < 0)
		return n;
	ret = ic_pwrite_full(j->fd, buf, (size_t)n, ref->e.pos * j->v->block_size, j->dest);
	if (ret)
		return ret;
	*ndata += ref->img != NULL;
	*nbytes += (uint64_t)n;
	return 0;
}

/* Blocks [first, end) of chunk k, from the merge of the path's private indexes: only the
 * mapped blocks are visited (every block with write_zeros). */
static int restore_chunk(struct rjob *j, struct ic_view_cursor *cur, struct ic_codec *codec,
			 uint8_t *buf, uint8_t *rec, uint64_t k, uint64_t *ndata, uint64_t *nbytes)
{
	struct ic_view *v = j->v;
	uint64_t first, end, pos;
	struct ic_block_ref ref;

	ic_chunks_range(&j->q, k, &first, &end);
	pos = first;
	ic_view_cursor_seek(cur, first);
	for (;;) {
		int got = ic_view_cursor_next(cur, end, &ref), ret;
		uint64_t upto = got > 0 ? ref.e.pos : end;

		if (got < 0)
			return got;
		for (; j->write_zeros && pos < upto; pos++) {    /* unmapped: zero */
			struct ic_block_ref z;

			memset(&z, 0, sizeof(z));
			z.e.pos = pos;
			z.e.plain_len = ic_view_block_len(v, pos);
			ret = write_block(j, codec, &z, buf, rec, ndata, nbytes);
			if (ret)
				return ret;
		}
		if (!got)
			return 0;
		pos = ref.e.pos + 1;
		if (!ref.img && !j->write_zeros)
			continue;    /* a hole of the new file */
		ret = write_block(j, codec, &ref, buf, rec, ndata, nbytes);
		if (ret)
			return ret;
	}
}

static void *rworker(void *arg)
{
	struct rjob *j = arg;
	struct ic_codec *codec = ic_codec_new(j->v->block_size, 0);
	uint8_t *buf = malloc(j->v->block_size);
	uint8_t *rec = malloc(ic_codec_bound(j->v->block_size));
	struct ic_view_cursor *cur = NULL;
	int cret = ic_view_cursor_open(j->v, &cur);
	uint64_t k;

	while (ic_chunks_take(&j->q, &k)) {
		uint64_t ndata = 0, nbytes = 0;
		int ret;

		if (!codec || !buf || !rec || cret)
			ret = -ENOMEM;
		else
			ret = restore_chunk(j, cur, codec, buf, rec, k, &ndata, &nbytes);
		pthread_mutex_lock(&j->q.mu);
		ic_chunks_done_locked(&j->q, ret);
		j->data_blocks += ndata;
		j->bytes_written += nbytes;
		pthread_mutex_unlock(&j->q.mu);
	}
	ic_view_cursor_free(cur);
	ic_codec_free(codec);
	free(buf);
	free(rec);
	return NULL;
}

static int open_dest(const struct ic_restore_opts *o, uint64_t size, int *fd, char **tmp,
		     bool *blockdev)
{
	struct stat st;
	mode_t mode = 0600;

	*tmp = NULL;
	*blockdev = false;
	if (stat(o->dest, &st) == 0 && S_ISBLK(st.st_mode)) {
		uint64_t devsize;

		*fd = open(o->dest, O_WRONLY | O_CLOEXEC);
		if (*fd < 0)
			return ic_fail(-errno, "%s: %s", o->dest, strerror(errno));
		if (ioctl(*fd, BLKGETSIZE64, &devsize) < 0 || devsize < size) {
			close(*fd);
			return ic_fail(-ENOSPC, "%s: device is smaller than the disk (%llu bytes)",
				       o->dest, (unsigned long long)size);
		}
		*blockdev = true;
		return 0;
	}
	if (stat(o->dest, &st) == 0) {
		if (!S_ISREG(st.st_mode))
			return ic_fail(-EINVAL, "%s: not a regular file or block device", o->dest);
		if (st.st_size > 0 && !o->force)
			return ic_fail(-EEXIST, "%s: exists and is not empty (use --force to replace it)",
				       o->dest);
		/* a decrypted disk: 0600, never wider than the file it replaces */
		mode &= st.st_mode;
	}
	*tmp = malloc(strlen(o->dest) + 32);
	if (!*tmp)
		return -ENOMEM;
	sprintf(*tmp, "%s.imgrestore-%d", o->dest, (int)getpid());
	/* O_EXCL: a file planted under the temporary name keeps neither its mode nor its inode */
	*fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (*fd < 0) {
		int e = errno;

		free(*tmp);
		*tmp = NULL;
		return ic_fail(-e, "%s: create: %s", o->dest, strerror(e));
	}
	if (mode != 0600 && fchmod(*fd, mode) < 0) {
		int e = errno;

		close(*fd);
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
		return ic_fail(-e, "%s: chmod: %s", o->dest, strerror(e));
	}
	if (ftruncate(*fd, (off_t)size) < 0) {
		int e = errno;

		close(*fd);
		unlink(*tmp);
		free(*tmp);
		*tmp = NULL;
		return ic_fail(-e, "%s: set size: %s", o->dest, strerror(e));
	}
	return 0;
}

void ic_restore_close(struct ic_restore_ctx *x)
{
	ic_key_free(x->key);
	ic_view_free(x->v);
	ic_chain_free(x->c);
	memset(x, 0, sizeof(*x));
}

static int open_nomap(struct ic_restore_ctx *x, const char *name, struct ic_view **out)
{
	struct ic_point *p;
	int ret = ic_chain_lookup(x->c, name, &p);

	*out = NULL;
	return ret ? ret : ic_view_open_nomap(x->c, p, out);
}

/* the seal (streaming, no per-block memory); the workers then resolve blocks with
 * cursors over the same private indexes: no owner map, nothing read twice */
int ic_restore_open_point(struct ic_restore_ctx *x, const char *name, struct ic_view **out)
{
	int ret = open_nomap(x, name, out);

	if (!ret)
		ret = ic_view_check_seal(*out, x->key);
	if (ret) {
		ic_view_free(*out);
		*out = NULL;
	}
	return ret;
}

int ic_restore_open(const struct ic_restore_opts *o, struct ic_restore_ctx *x)
{
	int ret;

	memset(x, 0, sizeof(*x));
	ret = ic_chain_open(o->chain_dir, &x->c);
	if (!ret)
		ret = open_nomap(x, o->name, &x->v);
	if (!ret)
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, &x->key);
	if (!ret && (memcmp(x->key->chain_id, x->c->chain_id, ICF_ID_LEN) ||
		     memcmp(x->key->key_check, x->c->key_check, ICF_CHECK_LEN)))
		ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			      o->chain_dir);
	if (!ret)
		ret = ic_view_check_seal(x->v, x->key);
	if (!ret)
		ret = ic_state_check(x->c, o->accept_rollback);
	if (ret)
		ic_restore_close(x);
	return ret;
}

int ic_restore(const struct ic_restore_opts *o, struct ic_restore_stats *st)
{
	struct ic_restore_ctx x;
	struct rjob j;
	char *tmp = NULL;
	bool blockdev;
	double t0 = ic_now();
	int ret;

	memset(st, 0, sizeof(*st));
	memset(&j, 0, sizeof(j));
	j.fd = -1;
	ret = ic_restore_open(o, &x);
	if (ret)
		goto out0;
	if (o->sync || o->sync_from) {
		ret = ic_restore_sync(o, &x, st);
		goto out;
	}
	if (ic_dest_is_uri(o->dest)) {
		ret = ic_fail(-EINVAL, "%s: an NBD export is written with --sync or --sync-from",
			      o->dest);
		goto out;
	}
	j.v = x.v;
	j.key = x.key;
	ret = open_dest(o, j.v->disk_size, &j.fd, &tmp, &blockdev);
	if (ret)
		goto out;
	j.dest = o->dest;
	j.write_zeros = blockdev;
	ret = ic_chunks_run(&j.q, j.v->nblocks, j.v->block_size, o->threads, o->quiet, "restore",
			    rworker, &j);
	if (!ret)
		ret = ic_fsync(j.fd, o->dest);
	if (!ret && tmp && rename(tmp, o->dest) < 0)
		ret = ic_fail(-errno, "%s: rename: %s", o->dest, strerror(errno));
	st->disk_size = j.v->disk_size;
	st->data_blocks = j.data_blocks;
	st->zero_blocks = j.v->nblocks - j.data_blocks;
	st->bytes_written = j.bytes_written;
out:
	if (j.fd >= 0)
		close(j.fd);
	if (ret && tmp)
		unlink(tmp);
	free(tmp);
	ic_restore_close(&x);
out0:
	st->seconds = ic_now() - t0;
	return ret;
}
