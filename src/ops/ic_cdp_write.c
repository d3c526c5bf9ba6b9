/* ic_cdp_write.c: the CDP journal's writer (FORMAT.md section 15), and what the
 * writer and the reader share (keys, ids, MACs). */
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
#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_mem.h"
#include "ic_util.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the CDP journal is written in host order, which is little-endian only"
#endif


static int fail(struct ic_cdp_writer *w, int err)
{
	if (!w->failed)
		w->failed = err;
	return err;
}

int ic_cdp_writer_new(const struct ic_cdp_writer_opts *o, const struct ic_key *key,
		      struct ic_cdp_writer **out)
{
	struct ic_cdp_writer *w;
	struct ic_chain *c = NULL;
	struct stat st;
	int ret;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->key = key;
	w->chain_dir = strdup(o->chain_dir);
	w->cdp_dir = ic_path_join(o->chain_dir, ICF_CDP_DIR);
	if (!w->chain_dir || !w->cdp_dir) {
		ret = -ENOMEM;
		goto err;
	}
	ret = ic_chain_open(o->chain_dir, &c);
	if (ret)
		goto err;
	if (c->have_images && (memcmp(key->chain_id, c->chain_id, ICF_ID_LEN) ||
			       memcmp(key->key_check, c->key_check, ICF_CHECK_LEN))) {
		ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			      o->chain_dir);
		goto err;
	}
	w->h.block_size = o->block_size ? o->block_size
					: c->have_images ? c->block_size : ICF_BLOCK_DEFAULT;
	if (c->have_images && w->h.block_size != c->block_size) {
		ret = ic_fail(-EINVAL, "%s: block size %u differs from the chain's %u", o->chain_dir,
			      w->h.block_size, c->block_size);
		goto err;
	}
	if (w->h.block_size < ICF_BLOCK_MIN || w->h.block_size > ICF_BLOCK_MAX ||
	    (w->h.block_size & (w->h.block_size - 1))) {
		ret = ic_fail(-EINVAL, "block size %u: must be a power of two from 4096 to 4 MiB",
			      w->h.block_size);
		goto err;
	}
	if (mkdir(w->cdp_dir, 0700) < 0 && errno != EEXIST) {
		ret = ic_fail(-errno, "%s: %s", w->cdp_dir, strerror(errno));
		goto err;
	}
	if (lstat(w->cdp_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		ret = ic_fail(IC_ECORRUPT, "%s: not a directory (%s): refused", w->cdp_dir,
			      ic_file_kind(st.st_mode));
		goto err;
	}
	w->level = o->level ? o->level : 3;
	w->nthreads = o->threads ? (unsigned)o->threads : 1;
	w->version = o->version == 1 ? 1 : ICF_CDP_VERSION;
	/* the probe: 7.2 bits unless told (o->raw_bits; above 8000 never), none without zstd */
	w->raw_bits = w->level < 0 ? 0 : o->raw_bits ? o->raw_bits : IC_CDP_RAW_BITS;
	if (w->raw_bits > 8000)
		w->raw_bits = 0;
	ret = ic_cdp_codec_new(w, &w->codec);
	w->frame = malloc(sizeof(struct icf_cdp_rec) + ic_codec_bound(w->h.block_size));
	if (ret || !w->frame) {
		ret = -ENOMEM;
		goto err;
	}
	ic_chain_free(c);
	*out = w;
	return 0;
err:
	ic_chain_free(c);
	ic_cdp_writer_free(w);
	return ret;
}

uint32_t ic_cdp_block_size(const struct ic_cdp_writer *w)
{
	return w->h.block_size;
}

const char *ic_cdp_path(const struct ic_cdp_writer *w)
{
	return w->path ? w->path : w->cdp_dir;
}

int ic_cdp_writer_start(struct ic_cdp_writer *w, uint64_t disk_size)
{
	char name[32];
	int ret, tries;

	if (w->fd >= 0)
		return w->failed;
	if (disk_size == 0 || disk_size > ICF_DISK_MAX)
		return fail(w, ic_fail(-EINVAL, "disk size %llu out of range",
				       (unsigned long long)disk_size));
	memcpy(w->h.magic, ICF_CDP_MAGIC, 8);
	w->h.version = w->version ? w->version : ICF_CDP_VERSION;
	memcpy(w->h.chain_id, w->key->chain_id, ICF_ID_LEN);
	memcpy(w->h.key_check, w->key->key_check, ICF_CHECK_LEN);
	w->h.keygen = ic_key_current_gen(w->key);
	w->h.base_kind = 0;
	do
		randombytes_buf(&w->h.session_id, sizeof(w->h.session_id));
	while (!w->h.session_id);
	w->h.disk_size = disk_size;
	w->h.created = time(NULL);
	w->nblocks = (disk_size + w->h.block_size - 1) / w->h.block_size;
	/* the map seal's terms, 16 bytes a block: the disk starts empty (base kind 0) */
	free(w->terms);
	w->acc = 0;
	w->terms = w->nblocks <= SIZE_MAX / sizeof(*w->terms) ?
			   calloc(w->nblocks ? w->nblocks : 1, sizeof(*w->terms)) : NULL;
	if (!w->terms)
		return fail(w, ic_fail(-ENOMEM, "%s: no memory for the map seal of %llu blocks",
				       w->cdp_dir, (unsigned long long)w->nblocks));
	ret = ic_cdp_mac_key(w->key, w->h.keygen, w->kcdp);
	if (!ret)
		ret = ic_cdp_dirty_reset(w);
	if (ret)
		return fail(w, ret);
	for (tries = 0;; tries++) {
		struct ic_cdp_sessions all = { 0 };

		ret = ic_cdp_list_sessions(w->cdp_dir, &all);
		if (!ret && all.n && all.v[all.n - 1] >= ICF_SEQ_MAX)
			ret = ic_fail(-ENOSPC, "%s: no session number left", w->cdp_dir);
		w->h.session = all.n ? all.v[all.n - 1] + 1 : 1;
		ic_array_free(&all);
		if (ret)
			return fail(w, ret);
		snprintf(name, sizeof(name), "%08u%s", w->h.session, ICF_CDP_SUFFIX);
		ret = ic_open_regular(AT_FDCWD, w->cdp_dir, name, O_RDWR | O_CREAT | O_EXCL, 0600,
				      &w->fd);
		if (ret != -EEXIST || tries > 100)
			break;
	}
	if (ret)
		return fail(w, ret);
	w->path = ic_path_join(w->cdp_dir, name);
	if (!w->path)
		return fail(w, -ENOMEM);
	ic_cdp_header_mac(w->kcdp, &w->h, w->h.mac0);
	w->h.hdr_hash = XXH3_64bits(&w->h, offsetof(struct icf_cdp_header, hdr_hash));
	ret = ic_pwrite_full(w->fd, &w->h, sizeof(w->h), 0, w->path);
	if (!ret)
		ret = ic_fsync(w->fd, w->path);
	if (!ret)
		ret = ic_fsync_dir(w->cdp_dir);
	if (ret)
		return fail(w, ret);
	memcpy(w->mac, w->h.mac0, 32);
	w->off = ICF_CDP_HEADER_SIZE;
	w->k = 0;
	crypto_generichash_init(&w->hk, NULL, 0, 32);
	return 0;
}

uint32_t ic_cdp_block_len(const struct ic_cdp_writer *w, uint64_t pos)
{
	return pos + 1 < w->nblocks ? w->h.block_size
				    : (uint32_t)(w->h.disk_size - pos * (uint64_t)w->h.block_size);
}

int ic_cdp_codec_new(const struct ic_cdp_writer *w, struct ic_cdp_codec *cc)
{
	cc->z = ic_codec_new(w->h.block_size, w->level);
	cc->raw = ic_codec_new(w->h.block_size, -1);
	if (cc->z && cc->raw)
		return 0;
	ic_cdp_codec_free(cc);
	return -ENOMEM;
}

void ic_cdp_codec_free(struct ic_cdp_codec *cc)
{
	ic_codec_free(cc->z);
	ic_codec_free(cc->raw);
	cc->z = cc->raw = NULL;
}

/* The sample: 16 pieces of 256 bytes evenly spread (the whole block when smaller).
 * Its entropy estimate of random bytes is about 7.95 bits, of fio's buffers 7.35. */
#define PROBE_PIECES 16u
#define PROBE_PIECE 256u

/* log2(c) for c >= 1 within 3e-4 (no libm): the exponent, then the series of atanh */
static double ilog2(uint32_t c)
{
	int e = 31 - __builtin_clz(c);
	double m = (double)c / (double)(1u << e), t = (m - 1) / (m + 1), t2 = t * t;

	return e + 2.8853900817779268 * t * (1 + t2 / 3 + t2 * t2 / 5);
}

bool ic_cdp_probe(const uint8_t *buf, uint32_t len, unsigned bits_milli)
{
	uint32_t cnt[256] = { 0 }, n = 0, i, j, step;
	double h = 0;

	if (!bits_milli)
		return false;
	if (len <= PROBE_PIECES * PROBE_PIECE) {
		for (i = 0; i < len; i++)
			cnt[buf[i]]++;
		n = len;
	} else {
		step = len / PROBE_PIECES;
		for (i = 0; i < PROBE_PIECES; i++)
			for (j = 0; j < PROBE_PIECE; j++)
				cnt[buf[(size_t)i * step + j]]++;
		n = PROBE_PIECES * PROBE_PIECE;
	}
	/* n H = n log2 n - sum c log2 c */
	for (i = 0; i < 256; i++)
		if (cnt[i] > 1)
			h += cnt[i] * ilog2(cnt[i]);
	return n * ilog2(n) - h >= (double)bits_milli / 1000 * n;
}

int ic_cdp_encode_frame(const struct ic_cdp_writer *w, const struct ic_cdp_codec *codec,
			uint64_t pos, const void *buf, uint32_t len, bool skip_zero, uint8_t *frame)
{
	struct icf_cdp_rec *r = (struct icf_cdp_rec *)frame;
	uint8_t *rec = frame + sizeof(*r);
	struct icf_entry e;
	int ret;

	if (w->fd < 0 || pos >= w->nblocks)
		return ic_fail(-EINVAL, "%s: block %llu outside the disk", ic_cdp_path(w),
			       (unsigned long long)pos);
	if (len != ic_cdp_block_len(w, pos))
		return ic_fail(-EINVAL, "block %llu: %u bytes, not %u", (unsigned long long)pos,
			       len, ic_cdp_block_len(w, pos));
	memset(r, 0, sizeof(*r));
	r->magic = ICF_CDP_REC_MAGIC;
	r->pos = pos;
	r->interval = w->k;
	r->plain_len = len;
	if (ic_is_zero(buf, len)) {
		if (skip_zero)
			return 0;
		r->kind = ICF_ENTRY_ZERO;
	} else {
		ic_cdp_entry(&w->h, w->k, pos, len, &e);
		/* kind 1 (raw) is what the codec stores when zstd does not shrink the block:
		 * the probe only saves zstd's attempt on blocks that look incompressible */
		ret = ic_codec_encode(ic_cdp_probe(buf, len, w->raw_bits) ? codec->raw : codec->z,
				      w->key, w->h.chain_id, ICF_IMAGE_V2, buf, len, rec, &e);
		if (ret)
			return ret;
		r->kind = e.kind;
		r->stored_len = e.stored_len;
		r->rec_hash = e.rec_hash;
	}
	r->frame_hash = XXH3_64bits(r, offsetof(struct icf_cdp_rec, frame_hash));
	return (int)(sizeof(*r) + r->stored_len);
}

int ic_cdp_append_frame(struct ic_cdp_writer *w, const uint8_t *frame)
{
	const struct icf_cdp_rec *r = (const struct icf_cdp_rec *)frame;
	int ret;

	if (w->failed)
		return w->failed;
	ret = ic_pwrite_full(w->fd, frame, sizeof(*r) + r->stored_len, w->off, w->path);
	if (ret)
		return fail(w, ret);
	ic_cdp_h_add(&w->hk, r, frame + sizeof(*r));
	/* the map seal's sum: the block's old term out, its new one in (zero: none) */
	ic_cdp_dirty_clear(w, r->pos);
	w->acc -= w->terms[r->pos];
	w->terms[r->pos] = r->stored_len ? ic_cdp_map_term(w->kcdp, &w->h, w->k, r) : 0;
	w->acc += w->terms[r->pos];
	w->off += sizeof(*r) + r->stored_len;
	w->frames++;
	return 0;
}

int ic_cdp_put_block(struct ic_cdp_writer *w, uint64_t pos, const void *buf, uint32_t len,
		     bool skip_zero)
{
	int n;

	if (w->failed)
		return w->failed;
	n = ic_cdp_encode_frame(w, &w->codec, pos, buf, len, skip_zero, w->frame);
	if (n < 0)
		return fail(w, n);
	return n ? ic_cdp_append_frame(w, w->frame) : 0;
}

int ic_cdp_checkpoint(struct ic_cdp_writer *w, struct timespec *when)
{
	struct icf_cdp_ckpt c;
	struct timespec now;
	uint8_t hk[32];
	int ret;

	if (w->failed)
		return w->failed;
	if (w->fd < 0)
		return fail(w, ic_fail(-EINVAL, "journal not started"));
	clock_gettime(CLOCK_REALTIME, &now);
	/* times never go back inside a session: the reader picks by time */
	if (now.tv_sec < w->last.tv_sec ||
	    (now.tv_sec == w->last.tv_sec && now.tv_nsec < w->last.tv_nsec))
		now = w->last;
	memset(&c, 0, sizeof(c));
	c.magic = ICF_CDP_CKPT_MAGIC;
	c.interval = w->k;
	c.time_s = now.tv_sec;
	c.time_ns = (uint32_t)now.tv_nsec;
	c.frames = w->frames;
	c.offset = w->off;
	crypto_generichash_final(&w->hk, hk, 32);
	ic_cdp_ckpt_mac(w->kcdp, w->mac, &c, hk, c.mac);
	ic_cdp_ckpt_tmac(w->kcdp, w->h.session_id, &c, c.tmac);
	if (w->h.version >= 2)
		ic_cdp_mseal(w->kcdp, &w->h, &c, w->acc, c.tail);
	ic_cdp_ckpt_hash_set(&c, w->h.version);
	ret = ic_pwrite_full(w->fd, &c, icf_cdp_ckpt_size(w->h.version), w->off, w->path);
	if (!ret && fdatasync(w->fd) < 0)
		ret = ic_fail(-errno, "%s: fdatasync: %s", w->path, strerror(errno));
	if (ret)
		return fail(w, ret);
	memcpy(w->mac, c.mac, 32);
	w->off += icf_cdp_ckpt_size(w->h.version);
	if (w->k == 0)
		w->off0 = w->off;
	w->k++;
	w->frames = 0;
	w->last = now;
	crypto_generichash_init(&w->hk, NULL, 0, 32);
	if (when)
		*when = now;
	return 0;
}

uint64_t ic_cdp_session_bytes(const struct ic_cdp_writer *w)
{
	return w->k ? w->off - w->off0 : 0;
}

/* When session's last checkpoint was made (read without the key: the storage host, which
 * could remove the file anyway, is trusted with its age), or its header's creation time
 * when it has none; 1 when the file cannot be read (never removed by age). */
static int session_time(const struct ic_cdp_writer *w, uint32_t session, int64_t *t)
{
	struct ic_journal j = { 0 };
	struct ic_jwalk scan = { 0 };
	int ret;

	ret = ic_journal_open_keyless(w->cdp_dir, session, w->h.chain_id, w->h.key_check, &j);
	if (ret == IC_ECORRUPT && j.fd >= 0 && j.size <= ICF_CDP_HEADER_SIZE) {
		struct stat st;

		/* a session that died while its header was written: by the file's time */
		ret = fstat(j.fd, &st) < 0 ? -errno : 0;
		*t = st.st_mtime;
		goto out;
	}
	if (!ret)
		ret = ic_journal_walk(&j, &scan);
	if (!ret)
		*t = scan.ck.n ? scan.ck.v[scan.ck.n - 1].when.tv_sec : (int64_t)j.h.created;
out:
	ic_array_free(&scan.ck);
	ic_journal_close(&j);
	return ret == -ENOMEM ? ret : ret ? 1 : 0;
}

int ic_cdp_prune(struct ic_cdp_writer *w, unsigned keep, int64_t max_age)
{
	struct ic_cdp_sessions s = { 0 };
	time_t now = time(NULL);
	char name[32];
	size_t i;
	int ret, n = 0;

	ret = ic_cdp_list_sessions(w->cdp_dir, &s);
	/* the oldest, while more than keep remain (the writer's own, the newest, among them)
	 * or while their last checkpoint is at least max_age seconds old */
	for (i = 0; !ret && i < s.n && s.v[i] != w->h.session; i++) {
		int64_t t = 0;
		char *path;

		if (!(keep && i + keep < s.n)) {
			if (!max_age)
				break;
			ret = session_time(w, s.v[i], &t);
			if (ret || t > (int64_t)now - max_age)
				break;
		}
		snprintf(name, sizeof(name), "%08u%s", s.v[i], ICF_CDP_SUFFIX);
		path = ic_path_join(w->cdp_dir, name);
		if (!path)
			ret = -ENOMEM;
		else if (unlink(path) < 0 && errno != ENOENT)
			ret = ic_fail(-errno, "%s: remove: %s", path, strerror(errno));
		else
			n++;
		free(path);
	}
	if (ret == 1)
		ret = 0;        /* an unreadable session stays, and every later one */
	ic_array_free(&s);
	if (!ret && n)
		ret = ic_fsync_dir(w->cdp_dir);
	return ret ? ret : n;
}

int ic_cdp_failed(const struct ic_cdp_writer *w)
{
	return w->failed;
}

int ic_cdp_writer_restart(struct ic_cdp_writer *w, uint64_t disk_size,
			  const struct timespec *gap_since)
{
	uint32_t prev = w->h.session;

	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	free(w->path);
	w->path = NULL;
	w->failed = 0;
	w->frames = 0;
	memset(w->h.mac0, 0, sizeof(w->h.mac0));
	w->h.gap_prev = gap_since ? prev : 0;
	w->h.gap_since = w->h.gap_prev ? (int64_t)gap_since->tv_sec : 0;
	w->h.gap_since_ns = w->h.gap_prev ? (uint32_t)gap_since->tv_nsec : 0;
	return ic_cdp_writer_start(w, disk_size);
}

void ic_cdp_writer_free(struct ic_cdp_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	ic_cdp_codec_free(&w->codec);
	ic_cdp_range_free(w);
	ic_cdp_dirty_free(w);
	sodium_memzero(w->kcdp, sizeof(w->kcdp));
	free(w->frame);
	free(w->terms);
	free(w->path);
	free(w->cdp_dir);
	free(w->chain_dir);
	free(w);
}
