/* ic_restore.c: writing a restore point's disk to a file or block device, with
 * worker threads decoding and writing disjoint ranges in parallel. */
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
#include "ic_keys.h"
#include "ic_pool.h"
#include "ic_progress.h"
#include "ic_state.h"
#include "ic_unlock.h"
#include "ic_util.h"
#include "ic_verify.h"
#include "ic_view.h"

#define CHUNK_BLOCKS_BYTES (4u << 20)

struct rjob {
	struct ic_view *v;
	struct ic_key *key;
	int fd;
	const char *dest;
	bool write_zeros;
	uint64_t per_chunk, nchunks;
	pthread_mutex_t mu;
	uint64_t next, done_blocks, data_blocks, zero_blocks, bytes_written;
	struct ic_error err;        /* the first worker's failure */
};

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
	uint64_t first = k * j->per_chunk, pos = first;
	uint64_t end = first + j->per_chunk < v->nblocks ? first + j->per_chunk : v->nblocks;
	struct ic_block_ref ref;

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

	for (;;) {
		uint64_t k, ndata = 0, nbytes = 0;
		int ret;

		pthread_mutex_lock(&j->mu);
		if (j->err.code || j->next >= j->nchunks || ic_interrupted) {
			if (ic_interrupted && !j->err.code)
				ic_error_save(&j->err, ic_fail(-EINTR, "interrupted"));
			pthread_mutex_unlock(&j->mu);
			break;
		}
		k = j->next++;
		pthread_mutex_unlock(&j->mu);
		if (!codec || !buf || !rec || cret)
			ret = -ENOMEM;
		else
			ret = restore_chunk(j, cur, codec, buf, rec, k, &ndata, &nbytes);
		pthread_mutex_lock(&j->mu);
		if (ret && !j->err.code)
			ic_error_save(&j->err, ret);
		j->data_blocks += ndata;
		j->bytes_written += nbytes;
		j->done_blocks += j->per_chunk;
		pthread_mutex_unlock(&j->mu);
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

static int run_restore(struct rjob *j, const struct ic_restore_opts *o)
{
	unsigned n = ic_thread_cap(o->threads, IC_THREADS_MAX);
	struct ic_pool pool;
	struct ic_progress prog;

	j->per_chunk = CHUNK_BLOCKS_BYTES / j->v->block_size ? CHUNK_BLOCKS_BYTES / j->v->block_size : 1;
	j->nchunks = (j->v->nblocks + j->per_chunk - 1) / j->per_chunk;
	pthread_mutex_init(&j->mu, NULL);
	ic_pool_start(&pool, n, rworker, j);    /* fewer threads will do */
	if (!pool.n)
		rworker(j);
	ic_progress_init(&prog, "restore", j->v->disk_size, o->quiet);
	for (;;) {
		uint64_t d;
		bool fin;

		pthread_mutex_lock(&j->mu);
		d = j->done_blocks * j->v->block_size;
		fin = j->err.code || j->done_blocks >= j->nchunks * j->per_chunk;
		pthread_mutex_unlock(&j->mu);
		if (fin || !pool.n)
			break;
		ic_progress_update(&prog, d > j->v->disk_size ? j->v->disk_size : d);
		usleep(100000);
	}
	ic_pool_join(&pool);
	ic_progress_done(&prog);
	pthread_mutex_destroy(&j->mu);
	return ic_error_raise(&j->err);
}

int ic_restore(const struct ic_restore_opts *o, struct ic_restore_stats *st)
{
	struct ic_chain *c = NULL;
	struct ic_point *p;
	struct rjob j;
	char *tmp = NULL;
	bool blockdev;
	double t0 = ic_now();
	int ret;

	memset(st, 0, sizeof(*st));
	memset(&j, 0, sizeof(j));
	j.fd = -1;
	ret = ic_chain_open(o->chain_dir, &c);
	if (ret)
		return ret;
	ret = ic_chain_lookup(c, o->name, &p);
	if (!ret)
		ret = ic_view_open_nomap(c, p, &j.v);
	if (!ret)
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, &j.key);
	if (ret)
		goto out;
	if (memcmp(j.key->chain_id, c->chain_id, ICF_ID_LEN) || memcmp(j.key->key_check, c->key_check, ICF_CHECK_LEN)) {
		ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			      o->chain_dir);
		goto out;
	}
	/* the seal (streaming, no per-block memory); the workers then resolve blocks with
	 * cursors over the same private indexes: no owner map, nothing read twice */
	ret = ic_view_check_seal(j.v, j.key);
	if (!ret)
		ret = ic_state_check(c, o->accept_rollback);
	if (!ret)
		ret = open_dest(o, j.v->disk_size, &j.fd, &tmp, &blockdev);
	if (ret)
		goto out;
	j.dest = o->dest;
	j.write_zeros = blockdev;
	ret = run_restore(&j, o);
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
	ic_key_free(j.key);
	ic_view_free(j.v);
	ic_chain_free(c);
	st->seconds = ic_now() - t0;
	return ret;
}
