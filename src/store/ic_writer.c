/* ic_writer.c: the one writer of image files (FORMAT.md section 7).
 *
 * Records are appended from offset 4096 on (or, in place, from the end of the image's
 * current data), the index follows the last record directly, and the slot's totals
 * and index hash are computed here only.  Three uses:
 *   ic_writer_new       a new point in CHAIN/.tmp-SEQ-PID.img, committed by a
 *                       no-replace rename (imgbackup);
 *   ic_writer_create    a new image at a temporary path the caller renames itself
 *                       (consolidation, after its journal says so);
 *   ic_writer_in_place  records and index appended to an existing image whose other
 *                       slot the caller switches to later (consolidation into a full).
 * Records come from the caller (ic_writer_append) or are moved from another image
 * (ic_writer_copy: copy_file_range, checked here or by the caller's checker). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "ic_image.h"
#include "ic_util.h"

#define WBUF_SIZE (4u << 20)
#define IBUF_ENTRIES 16384u
#define ALIGN_RUN (256u << 10)      /* copied runs this long are placed reflink-friendly */
#define KICK_BYTES (8u << 20)       /* writeback is started every this many bytes copied */

struct ic_writer {
	char *dir;                  /* ic_writer_new: the chain directory commit renames into */
	char *path;                 /* the file written */
	char *ipath;                /* the side file of an index not placed (ic_writer_new) */
	int fd, ifd;
	int dfd;                    /* fd again with O_DIRECT (ic_writer_new), or -1 */
	bool own_fd;                /* false in place: the image's descriptor */
	bool remove;                /* abort removes path and ipath (ic_writer_new) */
	uint32_t seq;
	uint64_t off;               /* file offset of wbuf[0]: the end of the records */
	uint8_t *wbuf;
	size_t wlen;
	uint8_t *ibuf;
	size_t ilen;
	uint64_t nentries, n_data, n_zero, data_bytes;
	uint64_t last_pos;
	uint64_t idx_off;           /* a placed index: its offset (0: in the side file) */
	uint64_t kicked;            /* writeback started up to here */
	uint64_t start;             /* the first byte this writer may write */
	uint32_t clone_blk;         /* records are cloned in blocks of this size (0: copied) */
	XXH3_state_t *ih;
	struct icf_header hdr;
};

static struct ic_writer *writer_alloc(const struct icf_header *hdr, bool wbuf)
{
	struct ic_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->fd = w->ifd = w->dfd = -1;
	w->own_fd = true;
	w->hdr = *hdr;
	/* aligned: whole buffers at aligned offsets go through dfd */
	w->wbuf = wbuf ? aligned_alloc(4096, WBUF_SIZE) : NULL;
	w->ibuf = malloc(IBUF_ENTRIES * sizeof(struct icf_entry));
	w->ih = XXH3_createState();
	if ((wbuf && !w->wbuf) || !w->ibuf || !w->ih) {
		ic_writer_abort(w);
		return NULL;
	}
	XXH3_128bits_reset(w->ih);
	return w;
}

/* The header with both slots empty: until a slot is written the file is not an image. */
static int write_header(struct ic_writer *w)
{
	uint8_t *hb;
	int ret;

	w->kicked = ICF_HEADER_SIZE;
	if (w->wbuf) {    /* buffered with the first records */
		memset(w->wbuf, 0, ICF_HEADER_SIZE);
		ic_header_encode(&w->hdr, w->wbuf);
		w->wlen = ICF_HEADER_SIZE;
		return 0;
	}
	hb = calloc(1, ICF_HEADER_SIZE);
	if (!hb)
		return -ENOMEM;
	ic_header_encode(&w->hdr, hb);
	ret = ic_pwrite_full(w->fd, hb, ICF_HEADER_SIZE, 0, w->path);
	free(hb);
	w->off = w->start = ICF_HEADER_SIZE;
	return ret;
}

int ic_writer_new(const char *chain_dir, const struct icf_header *hdr, uint32_t seq,
		  struct ic_writer **out)
{
	struct ic_writer *w = writer_alloc(hdr, true);
	char name[64];
	int ret;

	if (!w)
		return -ENOMEM;
	w->remove = true;
	w->dir = strdup(chain_dir);
	w->seq = seq;
	snprintf(name, sizeof(name), "%s%u-%d.img", ICF_TMP_PREFIX, seq, (int)getpid());
	w->path = ic_path_join(chain_dir, name);
	snprintf(name, sizeof(name), "%s%u-%d.idx", ICF_TMP_PREFIX, seq, (int)getpid());
	w->ipath = ic_path_join(chain_dir, name);
	if (!w->dir || !w->path || !w->ipath) {
		ret = -ENOMEM;
		goto fail;
	}
	w->fd = open(w->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->fd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", w->path, strerror(errno));
		goto fail;
	}
	w->ifd = open(w->ipath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->ifd < 0) {
		ret = ic_fail(-errno, "%s: create: %s", w->ipath, strerror(errno));
		goto fail;
	}
	/* Appended records bypass the page cache when the file system allows: its copy of
	 * them cost the calling thread 0.5 s of a 2 GiB full (doc/PERFORMANCE.md "Backup
	 * over NBD"), and the commit's fsync finds them on the device already. */
#ifdef O_DIRECT
	w->dfd = open(w->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
#endif
	ret = write_header(w);
	if (ret)
		goto fail;
	*out = w;
	return 0;
fail:
	ic_writer_abort(w);
	return ret;
}

int ic_writer_create(const char *path, const struct icf_header *hdr, struct ic_writer **out)
{
	struct ic_writer *w = writer_alloc(hdr, false);
	int ret;

	if (!w)
		return -ENOMEM;
	w->path = strdup(path);
	if (!w->path) {
		ic_writer_abort(w);
		return -ENOMEM;
	}
	ret = ic_create_tmp(AT_FDCWD, NULL, path, O_RDWR, 0600, &w->fd);
	if (!ret)
		ret = write_header(w);
	if (ret) {
		ic_writer_abort(w);
		return ret;
	}
	*out = w;
	return 0;
}

int ic_writer_in_place(struct ic_image *img, struct ic_writer **out)
{
	struct ic_writer *w = writer_alloc(&img->hdr, false);

	if (!w)
		return -ENOMEM;
	w->path = strdup(img->path);
	if (!w->path) {
		ic_writer_abort(w);
		return -ENOMEM;
	}
	w->fd = img->fd;
	w->own_fd = false;
	w->off = w->kicked = w->start = img->slot.data_end;
	*out = w;
	return 0;
}

uint64_t ic_writer_offset(const struct ic_writer *w)
{
	return w->off + w->wlen;
}

uint64_t ic_writer_run_start(uint64_t end, uint64_t src_off, uint64_t len)
{
	if (len >= ALIGN_RUN)
		end += ((src_off & 4095) - (end & 4095)) & 4095;
	return end;
}

int ic_writer_place_index(struct ic_writer *w, uint64_t off)
{
	if (w->ifd >= 0 || w->nentries || off < ic_writer_offset(w))
		return ic_fail(-EINVAL, "%s: index placed after entries or over records", w->path);
	w->idx_off = off;
	return 0;
}

static void kick_writeback(struct ic_writer *w);

/* Whole pages at a page offset straight to the device (dfd); what it refuses (EINVAL:
 * a file system without O_DIRECT, or other alignment rules) and the rest go through fd. */
static int wflush(struct ic_writer *w)
{
	size_t done = 0;
	int ret;

	if (!w->wlen)
		return 0;
	if (w->dfd >= 0 && !(w->off & 4095) && !(w->wlen & 4095)) {
		ssize_t r = pwrite(w->dfd, w->wbuf, w->wlen, (off_t)w->off);

		if (r < 0 && errno == EINVAL) {
			close(w->dfd);
			w->dfd = -1;
		}
		done = r > 0 ? (size_t)r & ~(size_t)4095 : 0;
		if (done == w->wlen)
			w->kicked = w->off + done;    /* nothing of it in the page cache */
	}
	ret = done == w->wlen ? 0 : ic_pwrite_full(w->fd, w->wbuf + done, w->wlen - done,
						   w->off + done, w->path);
	if (ret)
		return ret;
	w->off += w->wlen;
	w->wlen = 0;
	kick_writeback(w);    /* the commit's fsync then finds most of the image written */
	return 0;
}

/* The buffer is filled to the brim (a record may span two flushes): every flush but the
 * last then starts and ends on a page boundary. */
int ic_writer_append(struct ic_writer *w, const void *rec, uint32_t len, uint64_t *offset)
{
	const uint8_t *p = rec;
	int ret;

	if (!w->wbuf)
		return ic_fail(-EINVAL, "%s: records of this writer are copied", w->path);
	*offset = w->off + w->wlen;
	while (len) {
		size_t n = WBUF_SIZE - w->wlen < len ? WBUF_SIZE - w->wlen : len;

		memcpy(w->wbuf + w->wlen, p, n);
		w->wlen += n;
		p += n;
		len -= (uint32_t)n;
		if (w->wlen == WBUF_SIZE) {
			ret = wflush(w);
			if (ret)
				return ret;
		}
	}
	return 0;
}

/* Start the writeback of what was copied since the last call, without waiting for it:
 * the device writes while the next records are read and checked, and the fsync that
 * makes the image durable finds most of the data on its way.  Only a hint: errors are
 * reported by that fsync. */
static void kick_writeback(struct ic_writer *w)
{
#ifdef HAVE_SYNC_FILE_RANGE
	if (w->off - w->kicked >= KICK_BYTES) {
		(void)sync_file_range(w->fd, (off_t)w->kicked, (off_t)(w->off - w->kicked),
				      SYNC_FILE_RANGE_WRITE);
		w->kicked = w->off;
	}
#else
	(void)w;
#endif
}

int ic_writer_copy_at(struct ic_writer *w, const struct ic_image *src,
		      const struct icf_entry *ents, size_t n, bool check, void *buf, size_t buflen,
		      uint64_t dst)
{
	uint64_t len = 0;
	int ret = wflush(w);

	if (ret)
		return ret;
	if (dst < w->off)
		return ic_fail(-EINVAL, "%s: records copied over records", w->path);
	for (size_t k = 0; k < n; k++)
		len += ents[k].stored_len;
	if (!n)
		return 0;
	w->off = dst;
	if (check)
		ret = ic_image_copy_records(src, ents, n, w->fd, w->off, w->path, buf, buflen);
	else
		ret = ic_image_copy_bytes(src, ents[0].offset, len, w->fd, w->off, w->path, buf,
					  buflen);
	if (ret)
		return ret;
	w->off += len;
	kick_writeback(w);
	return 0;
}

int ic_writer_copy(struct ic_writer *w, const struct ic_image *src, const struct icf_entry *ents,
		   size_t n, bool check, void *buf, size_t buflen, uint64_t *offset)
{
	uint64_t len = 0, at;

	for (size_t k = 0; k < n; k++)
		len += ents[k].stored_len;
	at = ic_writer_run_start(ic_writer_offset(w), n ? ents[0].offset : 0, len);
	*offset = at;
	return ic_writer_copy_at(w, src, ents, n, check, buf, buflen, at);
}

/* ---- clones ---- */

uint32_t ic_writer_clone_probe(struct ic_writer *w, const struct ic_image *src)
{
	w->clone_blk = wflush(w) ? 0 : ic_image_clone_probe(src, w->fd);
	return w->clone_blk;
}

uint32_t ic_writer_clone_blk(const struct ic_writer *w)
{
	return w->clone_blk;
}

uint64_t ic_writer_clone_place(const struct ic_writer *w, uint64_t end, uint64_t src_off)
{
	uint64_t b = w->clone_blk;

	if (!b)
		return end;
	return ((end + b - 1) & ~(b - 1)) + (src_off & (b - 1));
}

int ic_writer_clone(struct ic_writer *w, const struct ic_image *src, uint64_t off, uint64_t len,
		    uint64_t dst)
{
	uint64_t b = w->clone_blk;
	int ret;

	if (!b)
		return -EOPNOTSUPP;
	/* the block that dst starts in must hold nothing of ours yet */
	if (dst < w->off || (dst & ~(b - 1)) < ((w->off + b - 1) & ~(b - 1)) ||
	    (dst & (b - 1)) != (off & (b - 1)))
		return ic_fail(-EINVAL, "%s: clone placed over records", w->path);
	ret = ic_image_clone_range(src, off, len, w->fd, dst, w->clone_blk, w->path);
	if (ret == -EOPNOTSUPP)
		w->clone_blk = 0;
	if (ret)
		return ret;
	w->off = dst + len;
	return 0;
}

int ic_writer_punch(struct ic_writer *w, uint64_t off, uint64_t len)
{
	if (off < w->start)
		return ic_fail(-EINVAL, "%s: punch below the bytes written", w->path);
	return ic_image_punch_range(w->fd, off, len, w->clone_blk, w->path);
}

static int iflush(struct ic_writer *w)
{
	uint64_t at = w->nentries * sizeof(struct icf_entry) - w->ilen;
	int ret;

	if (!w->ilen)
		return 0;
	XXH3_128bits_update(w->ih, w->ibuf, w->ilen);
	if (w->ifd >= 0)
		ret = ic_pwrite_full(w->ifd, w->ibuf, w->ilen, at, w->ipath);
	else
		ret = ic_pwrite_full(w->fd, w->ibuf, w->ilen, w->idx_off + at, w->path);
	w->ilen = 0;
	return ret;
}

int ic_writer_add_entry(struct ic_writer *w, const struct icf_entry *e)
{
	if (w->ifd < 0 && !w->idx_off)
		return ic_fail(-EINVAL, "%s: index not placed", w->path);
	if (w->nentries && e->pos <= w->last_pos)
		return ic_fail(-EINVAL, "%s: entries out of order", w->path);
	ic_entry_encode(e, w->ibuf + w->ilen, w->hdr.version);
	w->ilen += sizeof(struct icf_entry);
	w->nentries++;
	w->last_pos = e->pos;
	if (e->kind == ICF_ENTRY_ZERO) {
		w->n_zero++;
	} else {
		w->n_data++;
		w->data_bytes += e->stored_len;
	}
	if (w->ilen == IBUF_ENTRIES * sizeof(struct icf_entry))
		return iflush(w);
	return 0;
}

/* Copy the side index file to the end of the image. */
static int copy_index(struct ic_writer *w, uint64_t dst)
{
	uint64_t len = w->nentries * sizeof(struct icf_entry), done = 0;
	int ret;

	while (done < len) {
		size_t n = len - done > WBUF_SIZE ? WBUF_SIZE : (size_t)(len - done);

		ret = ic_pread_full(w->ifd, w->wbuf, n, done, w->ipath);
		if (!ret)
			ret = ic_pwrite_full(w->fd, w->wbuf, n, dst + done, w->path);
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

/* Everything but the slot written and durable; slot's totals filled in. */
static int finish(struct ic_writer *w, struct icf_slot *slot)
{
	XXH128_canonical_t c;
	int ret = wflush(w);

	if (!ret)
		ret = iflush(w);
	if (ret)
		return ret;
	/* one layout: the index follows the last record */
	if (w->ifd < 0 && w->idx_off != w->off)
		return ic_fail(-EINVAL, "%s: index placed at %llu, records end at %llu", w->path,
			       (unsigned long long)w->idx_off, (unsigned long long)w->off);
	slot->generation = 1;
	slot->index_offset = w->off;
	slot->index_count = w->nentries;
	slot->n_data = w->n_data;
	slot->n_zero = w->n_zero;
	slot->data_bytes = w->data_bytes;
	slot->data_end = w->off + w->nentries * sizeof(struct icf_entry);
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(w->ih));
	memcpy(slot->index_hash, c.digest, ICF_INDEX_HASH_LEN);
	ret = ic_slot_validate(slot, w->hdr.version, w->path);
	if (!ret && w->ifd >= 0)
		ret = copy_index(w, w->off);
	if (!ret)
		ret = ic_fsync(w->fd, w->path);
	return ret;
}

static int write_slot_a(struct ic_writer *w, const struct icf_slot *slot)
{
	uint8_t sbuf[ICF_SLOT_SIZE];
	int ret;

	ic_slot_encode(slot, sbuf);
	ret = ic_pwrite_full(w->fd, sbuf, sizeof(sbuf), ICF_SLOT_A_OFF, w->path);
	return ret ? ret : ic_fsync(w->fd, w->path);
}

int ic_writer_finish(struct ic_writer *w, struct icf_slot *slot)
{
	int ret = finish(w, slot);

	if (!ret && w->own_fd)
		ret = write_slot_a(w, slot);
	ic_writer_abort(w);
	return ret;
}

int ic_writer_commit(struct ic_writer *w, struct icf_slot *slot)
{
	char fname[32];
	char *final = NULL;
	int ret;

	if (!w->dir) {
		ic_writer_abort(w);
		return ic_fail(-EINVAL, "commit of an image not started by ic_writer_new");
	}
	ret = finish(w, slot);
	if (!ret)
		ret = write_slot_a(w, slot);
	if (ret)
		goto out;
	ic_image_filename(w->seq, fname, sizeof(fname));
	final = ic_path_join(w->dir, fname);
	/* never replace a file: even a damaged image there is someone's data */
	ret = final ? ic_rename_noreplace(w->path, final) : -ENOMEM;
	if (ret)
		goto out;
	free(w->path);
	w->path = NULL;    /* committed: nothing for abort to remove but the side index */
	ret = ic_fsync_dir(w->dir);
out:
	free(final);
	ic_writer_abort(w);
	return ret;
}

void ic_writer_abort(struct ic_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0 && w->own_fd)
		close(w->fd);
	if (w->ifd >= 0)
		close(w->ifd);
	if (w->dfd >= 0)
		close(w->dfd);
	if (w->remove && w->path)
		unlink(w->path);
	if (w->remove && w->ipath)
		unlink(w->ipath);
	free(w->path);
	free(w->ipath);
	free(w->dir);
	free(w->wbuf);
	free(w->ibuf);
	if (w->ih)
		XXH3_freeState(w->ih);
	free(w);
}
