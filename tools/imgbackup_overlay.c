/* imgbackup_overlay.c: imgbackup --from-overlay DIR: what a VM wrote through
 * `imgmount --overlay` to a point's disk becomes a new point, a child of that point.
 *
 * The orchestration lives here, at the top, because it joins two layers that may not
 * include each other: the overlay (src/serve) and the backup (src/ops).
 *   1. The point the overlay was made on: --parent, else the overlay directory's name (how
 *      imgmount lays out DIR/NAME/); its view is opened with the key and its seal checked.
 *   2. A consistent cut of DIR/disk.raw's overlay (ic_overlay_snapshot, FORMAT.md 10.6),
 *      checked against the point's binding (chain id and seal): the mount keeps serving.
 *   3. Every chain block the cut touches (present overlay blocks, a changed size), and the
 *      last one, is written whole (the point's bytes under the overlay's) into an unlinked
 *      private file in DIR, sparse; their ranges into a changed-blocks list (a memfd).
 *   4. ic_backup with that file as SOURCE, the list as --changed-blocks, the point as
 *      parent and the key already unlocked: an incremental like any other, encrypted and
 *      sealed, which inherits every block the overlay did not touch. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "imgbackup_overlay.h"
#include "ic_overlay.h"

struct base_ctx {
	struct ic_view *v;
	struct ic_key *key;
	struct ic_codec *codec;
	uint8_t *blk, *rec;
};

/* The point's bytes [off, off + len): the overlay's base. */
static int base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	struct base_ctx *b = arg;
	uint32_t bs = b->v->block_size;
	uint8_t *out = buf;

	while (len) {
		uint64_t pos = off / bs, in = off % bs;
		size_t n = bs - in < len ? bs - in : len;
		int ret = ic_view_read_block(b->v, b->codec, b->key, pos, b->blk, b->rec);

		if (ret < 0)
			return ret;
		memcpy(out, b->blk + in, n);
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

/* Chain block k as the cut shows it into the source file, its range into the list. */
static int put_block(struct ic_overlay *snap, struct base_ctx *b, int src, FILE *list, uint64_t k,
		     uint64_t size, uint8_t *buf, const char *dir)
{
	uint32_t bs = b->v->block_size;
	uint64_t off = k * bs, len = size - off < bs ? size - off : bs;
	ssize_t n = ic_overlay_read(snap, buf, (size_t)len, off, base_read, b);
	int ret;

	if (n < 0)
		return (int)n;
	if (!ic_is_zero(buf, (size_t)n)) {
		ret = ic_pwrite_full(src, buf, (size_t)n, off, dir);
		if (ret)
			return ret;
	}
	fprintf(list, "%llu %llu\n", (unsigned long long)off, (unsigned long long)len);
	return 0;
}

/* Step 3: the source file and the list.  ic_backup reads the listed blocks, and the
 * parent's last block and everything past it (their length may change); the others it
 * inherits from the point.  So: each chain block holding a present overlay block, and
 * every block from the one where the base stops being shown, or the point's last one. */
static int materialise(struct ic_overlay *snap, const struct ic_overlay_snap_info *in,
		       struct base_ctx *b, int src, FILE *list, const char *dir)
{
	uint32_t bs = b->v->block_size;
	uint64_t size = in->size, nb = (size + bs - 1) / bs, per = bs / IC_OVERLAY_BLOCK;
	uint64_t nob = (size + IC_OVERLAY_BLOCK - 1) / IC_OVERLAY_BLOCK, next = 0, k;
	uint64_t tail = in->base_limit / bs;
	uint8_t *buf = malloc(bs);
	int ret = buf ? 0 : -ENOMEM;

	if (b->v->nblocks && b->v->nblocks - 1 < tail)
		tail = b->v->nblocks - 1;
	if (nb && nb - 1 < tail)
		tail = nb - 1;
	for (uint64_t ob = 0; !ret && ob < nob;) {
		uint64_t a = ic_overlay_run(snap, ob, nob, false);
		uint64_t e = ic_overlay_run(snap, a, nob, true);
		uint64_t k1 = (e + per - 1) / per < tail ? (e + per - 1) / per : tail;

		for (k = a / per > next ? a / per : next; !ret && a < e && k < k1; k++)
			ret = put_block(snap, b, src, list, k, size, buf, dir);
		if (a < e && k1 > next)
			next = k1;
		ob = e;
	}
	for (k = tail; !ret && k < nb; k++)
		ret = put_block(snap, b, src, list, k, size, buf, dir);
	if (!ret && ftruncate(src, (off_t)size) < 0)
		ret = ic_fail(-errno, "%s: private copy: %s", dir, strerror(errno));
	if (!ret && fflush(list))
		ret = ic_fail(-errno, "changed-blocks list: %s", strerror(errno));
	free(buf);
	return ret;
}

/* Steps 1 and 2. */
static int open_point(struct ic_backup_opts *o, const char *dir, struct ic_chain **c,
		      struct base_ctx *b, struct ic_overlay **snap, struct ic_overlay_snap_info *info)
{
	struct ic_overlay_bind bind;
	struct ic_point *p;
	char *prefix = NULL;
	int ret = ic_chain_open(o->chain_dir, c);

	if (!ret)
		ret = ic_chain_lookup(*c, o->parent, &p);
	if (!ret)
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, &b->key);
	if (!ret && (memcmp(b->key->chain_id, (*c)->chain_id, ICF_ID_LEN) ||
		     memcmp(b->key->key_check, (*c)->key_check, ICF_CHECK_LEN)))
		ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
			      o->chain_dir);
	if (!ret)
		ret = ic_view_open_sealed(*c, p, b->key, &b->v);
	if (ret)
		return ret;
	ic_overlay_bind_point(&bind, (*c)->chain_id, p->img->slot.seal, ic_point_name(p), p->seq);
	if (asprintf(&prefix, "%s/disk.raw", dir) < 0)
		return -ENOMEM;
	ret = ic_overlay_snapshot(prefix, b->v->disk_size, &bind, snap, info);
	if (ret == -ENOENT)
		ret = ic_fail(-ENOENT, "%s: no overlay of disk.raw here (%s.map)", dir, prefix);
	free(prefix);
	return ret;
}

int ic_backup_from_overlay(struct ic_backup_opts *o, const char *dir, struct ic_backup_stats *st,
			   struct ic_overlay_snap_info *info)
{
	struct base_ctx b = { 0 };
	struct ic_chain *c = NULL;
	struct ic_overlay *snap = NULL;
	char srcpath[64], listpath[64], *base = NULL;
	FILE *list = NULL;
	int src = -1, lfd = -1, ret;

	memset(st, 0, sizeof(*st));
	if (!o->parent) {    /* imgmount's layout: DIR/NAME/disk.raw.map */
		size_t n = strlen(dir);

		while (n > 1 && dir[n - 1] == '/')
			n--;
		base = strndup(dir, n);
		if (!base)
			return -ENOMEM;
		o->parent = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
	}
	ret = open_point(o, dir, &c, &b, &snap, info);
	if (ret)
		goto out;
	b.codec = ic_codec_new(b.v->block_size, 0);
	b.blk = malloc(b.v->block_size);
	b.rec = malloc(ic_codec_bound(b.v->block_size));
	if (!b.codec || !b.blk || !b.rec) {
		ret = -ENOMEM;
		goto out;
	}
	/* the decrypted blocks stay beside the overlay's own plaintext, unlinked */
	src = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	lfd = memfd_create("imgbackup-changed-blocks", MFD_CLOEXEC);
	if (src < 0 || lfd < 0) {
		ret = ic_fail(-errno, "%s: private copy: %s", dir, strerror(errno));
		goto out;
	}
	list = fdopen(lfd, "w");
	if (!list) {
		ret = -ENOMEM;
		goto out;
	}
	lfd = -1;
	ret = materialise(snap, info, &b, src, list, dir);
	if (ret)
		goto out;
	snprintf(srcpath, sizeof(srcpath), "/proc/self/fd/%d", src);
	snprintf(listpath, sizeof(listpath), "/proc/self/fd/%d", fileno(list));
	o->source = srcpath;
	o->changed_blocks = listpath;
	o->key = b.key;
	o->full = false;
	ret = ic_backup(o, st);
	o->source = dir;
out:
	if (list)
		fclose(list);
	if (lfd >= 0)
		close(lfd);
	if (src >= 0)
		close(src);
	ic_overlay_snap_free(snap);
	ic_codec_free(b.codec);
	free(b.blk);
	free(b.rec);
	ic_view_free(b.v);
	ic_key_free(b.key);
	o->key = NULL;
	ic_chain_free(c);
	if (base)
		o->parent = NULL;
	free(base);
	return ret;
}
