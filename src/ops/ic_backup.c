/* ic_backup.c: one backup: the source (ic_source) and what to read of it (zero extents,
 * changed blocks, a dirty bitmap),
 * the chain, key, name and parent, then the new image around the pipeline
 * (ic_backup_pipe.c) and its slot. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sodium.h>

#include "ic_backup_int.h"
#include "ic_chain.h"
#include "ic_codec.h"
#include "ic_keys.h"
#include "ic_pool.h"
#include "ic_source.h"
#include "ic_state.h"
#include "ic_store.h"
#include "ic_unlock.h"
#include "ic_util.h"
#include "ic_view.h"

/* ---- what to read ------------------------------------------------------------- */

/*
 * One number of a changed-blocks line: decimal, or hexadecimal after "0x".
 * A leading zero is decimal (a zero-padded "0100" is 100, not octal 64).
 */
static unsigned long long parse_cbt_num(const char *p, char **end)
{
	while (*p == ' ' || *p == '\t')
		p++;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		return strtoull(p, end, 16);
	return strtoull(p, end, 10);
}

int ic_parse_changed_blocks(const char *path, uint64_t disk_size, uint32_t block_size,
			    uint8_t *map)
{
	FILE *f = fopen(path, "r");
	char line[256];
	unsigned lineno = 0;
	int ret = 0;

	if (!f)
		return ic_fail(-errno, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long long off, len;
		char *p = line, *end;

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		errno = 0;
		off = parse_cbt_num(p, &end);
		if (errno || end == p || *p == '-')
			goto bad;
		p = end;
		len = parse_cbt_num(p, &end);
		if (errno || end == p || strchr(p, '-'))
			goto bad;
		while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
			end++;
		if (*end)
			goto bad;
		if (off > disk_size || len > disk_size - off) {
			ret = ic_fail(-EINVAL, "%s:%u: range %llu+%llu is past the end of the source (%llu bytes)",
				      path, lineno, off, len, (unsigned long long)disk_size);
			goto out;
		}
		for (uint64_t b = off / block_size; len && b * block_size < off + len; b++)
			map[b] = 1;
		continue;
bad:
		ret = ic_fail(-EINVAL, "%s:%u: expected \"OFFSET LENGTH\" in bytes", path, lineno);
		goto out;
	}
	if (ferror(f))
		ret = ic_fail(-EIO, "%s: read error", path);
out:
	fclose(f);
	return ret;
}

/* What the parent holds need not be read: only the blocks a changed-blocks file or the
 * dirty bitmap lists, and the parent's last block and anything past it (their length
 * may differ). */
static int plan_changed(struct job *j)
{
	uint8_t *listed = calloc(j->nblocks, 1);
	uint64_t pn = j->pv->nblocks;
	int ret;

	if (!listed)
		return -ENOMEM;
	if (j->o->dirty_bitmap)
		ret = ic_source_dirty_blocks(j->src, j->bs, listed);
	else
		ret = ic_parse_changed_blocks(j->o->changed_blocks, j->disk_size, j->bs, listed);
	if (!ret) {
		for (uint64_t b = 0; b < j->nblocks; b++) {
			if (b + 1 < pn && !listed[b])
				j->plan[b] = PLAN_SKIP;
		}
	}
	free(listed);
	return ret;
}

/* ---- setting up ----------------------------------------------------------- */

static int get_key(const struct ic_backup_opts *o, struct ic_chain *c, struct ic_key **key,
		   bool *created)
{
	struct ic_keyfile kf;
	char *kpath = ic_path_join(o->chain_dir, ICF_KEYFILE_NAME);
	char *pass = NULL;
	size_t plen;
	uint8_t chain_id[ICF_ID_LEN];
	int ret;

	*created = false;
	if (o->key) {
		*key = o->key;
		free(kpath);
		return 0;
	}
	if (!kpath)
		return -ENOMEM;
	if (ic_store_exists(o->chain_dir, ICF_KEYFILE_NAME) || c->have_images) {
		ret = ic_key_unlock(o->chain_dir, o->passphrase_file, key);
		if (!ret && c->have_images &&
		    (memcmp((*key)->chain_id, c->chain_id, ICF_ID_LEN) ||
		     memcmp((*key)->key_check, c->key_check, ICF_CHECK_LEN))) {
			ic_key_free(*key);
			*key = NULL;
			ret = ic_fail(IC_EKEY, "%s: wrong key: the key file does not belong to this chain's images",
				      kpath);
		}
		goto out;
	}
	ret = ic_passphrase_get(o->passphrase_file, true, "New passphrase for the chain", &pass,
				&plen);
	if (ret)
		goto out;
	randombytes_buf(chain_id, sizeof(chain_id));
	ret = ic_keyfile_create(chain_id, pass, plen, &kf, key);
	if (!ret) {
		ret = ic_keyfile_store(o->chain_dir, &kf);
		if (ret) {
			ic_key_free(*key);
			*key = NULL;
		}
	}
	*created = !ret;
out:
	ic_passphrase_free(pass);
	free(kpath);
	return ret;
}

static int pick_name(const struct ic_backup_opts *o, struct ic_chain *c, char *name, size_t len)
{
	if (o->name) {
		if (!ic_name_valid(o->name))
			return ic_fail(-EINVAL, "'%s': invalid name (1-127 of A-Z a-z 0-9 . _ + : -, not starting with . or -)",
				       o->name);
		if (ic_chain_find(c, o->name))
			return ic_fail(-EEXIST, "%s: a restore point named '%s' exists already",
				       o->chain_dir, o->name);
		snprintf(name, len, "%s", o->name);
		return 0;
	} else {
		time_t t = o->created ? (time_t)o->created : time(NULL);
		struct tm tm;
		char base[64];

		gmtime_r(&t, &tm);
		strftime(base, sizeof(base), "%Y%m%dT%H%M%SZ", &tm);
		snprintf(name, len, "%s", base);
		for (int n = 2; ic_chain_find(c, name); n++)
			snprintf(name, len, "%s-%d", base, n);
		return 0;
	}
}

static int pick_parent(const struct ic_backup_opts *o, struct ic_chain *c, struct ic_point **p)
{
	*p = NULL;
	if (o->full)
		return 0;
	if (o->post_snapshot_of || o->parent)
		return ic_chain_lookup(c, o->post_snapshot_of ? o->post_snapshot_of : o->parent, p);
	/* change tracking goes on from the point its bitmap was recorded for, not from a
	 * side branch made since (a quiesced snapshot's own writes); checked later */
	if (o->dirty_bitmap && c->have_images) {
		uint32_t seq;

		if (!ic_bitmap_point(c->chain_id, o->dirty_bitmap, &seq))
			*p = ic_chain_find_seq(c, seq);
		if (*p)
			return 0;
	}
	/* the chain goes on from a snapshot point, not from its quiesced form (FORMAT.md 3.2) */
	for (*p = ic_chain_newest(c); *p && (*p)->parent &&
	     ((*p)->img->slot.flags & ICF_SLOT_POST_SNAPSHOT);)
		*p = (*p)->parent;
	return 0;
}

/* A random non-zero point id that no point, stale or superseded image of the chain
 * directory uses (FORMAT.md "Versions"). */
static uint64_t pick_point_id(const struct ic_chain *c)
{
	uint64_t id;
	bool used;

	do {
		randombytes_buf(&id, sizeof(id));
		used = id == 0;
		for (size_t i = 0; i < c->npoints && !used; i++)
			used = c->points[i].img->slot.point_id == id;
		for (size_t i = 0; i < c->nstale && !used; i++)
			used = c->stale[i]->slot.point_id == id;
	} while (used);
	return id;
}

static int backup_locked(const struct ic_backup_opts *o, struct ic_backup_stats *st)
{
	struct job j;
	struct ic_chain *c = NULL;
	struct ic_point *parent;
	struct ic_writer *w = NULL;
	struct icf_header hdr;
	struct icf_slot slot;
	struct ic_seal seal;
	bool key_created = false;
	double t0 = ic_now(), t_key;
	int ret;

	memset(&j, 0, sizeof(j));
	j.o = o;
	ret = ic_chain_open(o->chain_dir, &c);
	if (ret)
		return ret;
	ret = pick_parent(o, c, &parent);
	if (!ret && o->head_start && !parent)
		ret = ic_fail(-EINVAL, "%s: --head-start needs a parent point (it reads what changed since)",
			      o->chain_dir);
	if (!ret && o->block_size && c->have_images && o->block_size != c->block_size)
		ret = ic_fail(-EINVAL, "%s: the chain uses a block size of %u; --block-size %u does not match",
			      o->chain_dir, c->block_size, o->block_size);
	if (!ret)
		ret = pick_name(o, c, st->name, sizeof(st->name));
	if (!ret)
		ret = ic_source_open(o->head_start && parent ? o->head_start : o->source,
				     !parent ? NULL : o->bitmap_export ? o->bitmap_export
								       : o->dirty_bitmap, &j.src);
	if (ret)
		goto out;
	j.disk_size = ic_source_size(j.src);
	/* an NBD source: twice the workers, so that one computes while another waits */
	j.threads = ic_thread_cap(o->threads ? o->threads
				  : (int)ic_thread_cap(0, IC_THREADS_MAX) * (ic_source_remote(j.src) ? 2 : 1),
				  IC_THREADS_MAX);
	j.bs = c->have_images ? c->block_size : (o->block_size ? o->block_size : ICF_BLOCK_DEFAULT);
	j.bound = ic_codec_bound(j.bs);
	j.nblocks = (j.disk_size + j.bs - 1) / j.bs;
	ret = ic_chain_next_seq(c, &j.seq);
	if (ret)
		goto out;
	/* a chain keeps its version: a child is written in its parent's (a v1 chain goes
	 * on as v1, with v1's limits); a new full in the current one */
	j.version = parent ? parent->img->hdr.version
			   : o->format_version ? o->format_version : ICF_IMAGE_VERSION;
	if (j.version != ICF_IMAGE_V1 && j.version != ICF_IMAGE_V2) {
		ret = ic_fail(-EINVAL, "format version %u: not one this imgbackup writes", j.version);
		goto out;
	}
	if (o->post_snapshot_of && j.version == ICF_IMAGE_V1) {
		ret = ic_fail(-EINVAL, "%s: '%s' is a version 1 point, which cannot record a post-snapshot child (a new full, imgbackup --full, starts a version 2 tree)",
			      o->chain_dir, o->post_snapshot_of);
		goto out;
	}
	if (j.version != ICF_IMAGE_V1)
		j.point_id = pick_point_id(c);
	if (parent) {
		ret = ic_view_open_nomap(c, parent, &j.pv);
		if (ret)
			goto out;
	}
	t_key = ic_now();
	ret = get_key(o, c, &j.key, &key_created);
	st->seconds_key = ic_now() - t_key;
	if (ret)
		goto out;
	st->created_chain = key_created;
	memcpy(j.chain_id, j.key->chain_id, ICF_ID_LEN);
	/* v2: records and seal under the newest key generation (a revocation's); v1 images
	 * have no field for it and stay on generation 0 (FORMAT.md "Versions") */
	if (j.version != ICF_IMAGE_V1)
		j.keygen = ic_key_current_gen(j.key);
	if (parent) {
		/* the parent's entries and digests inherited below come from the private
		 * indexes this checks (workers' cursors), never from the files again */
		ret = ic_view_check_seal(j.pv, j.key);
		if (ret)
			goto out;
	}
	ret = ic_state_check(c, o->accept_rollback);
	if (!ret && parent && o->dirty_bitmap)
		ret = ic_bitmap_check(j.chain_id, o->dirty_bitmap, parent->seq, parent->img->slot.seal,
				      ic_point_name(parent));
	if (ret)
		goto out;
	j.plan = calloc(j.nblocks, 1);
	if (!j.plan) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ic_source_zero_blocks(j.src, j.bs, j.plan, PLAN_HOLE);
	if (ret)
		goto out;
	if ((o->changed_blocks || o->dirty_bitmap) && parent)
		ret = plan_changed(&j);
	else if (o->changed_blocks || o->dirty_bitmap)
		ic_msg("warning: no parent point: %s ignored, reading the whole source",
		       o->changed_blocks ? "--changed-blocks" : "--dirty-bitmap");
	if (ret)
		goto out;

	memset(&hdr, 0, sizeof(hdr));
	hdr.version = j.version;
	hdr.header_size = ICF_HEADER_SIZE;
	memcpy(hdr.chain_id, j.key->chain_id, ICF_ID_LEN);
	memcpy(hdr.key_check, j.key->key_check, ICF_CHECK_LEN);
	hdr.block_size = j.bs;
	hdr.cipher = ICF_CIPHER_XCHACHA20POLY1305;
	hdr.compress = ICF_COMPRESS_ZSTD;
	ret = ic_writer_new(o->chain_dir, &hdr, j.seq, &w);
	if (ret)
		goto out;
	ic_seal_begin(&seal, j.version);
	st->disk_size = j.disk_size;
	if (o->head_start && parent)
		ret = ic_backup_head_start(&j, w, &seal, st);
	if (!ret)
		ret = ic_backup_pipeline(&j, w, &seal, st);
	if (!ret)
		ret = ic_source_check_end(j.src);
	if (ret)
		goto out;

	memset(&slot, 0, sizeof(slot));
	slot.seq = j.seq;
	slot.parent_seq = parent ? parent->seq : 0;
	slot.kind = parent ? ICF_KIND_INCREMENTAL : ICF_KIND_FULL;
	slot.flags = o->post_snapshot_of ? ICF_SLOT_POST_SNAPSHOT : 0;
	slot.created = o->created ? o->created : (int64_t)time(NULL);
	slot.disk_size = j.disk_size;
	snprintf(slot.name, sizeof(slot.name), "%s", st->name);
	slot.point_id = j.point_id;
	slot.seal_keygen = j.keygen;
	ret = ic_seal_finish(&seal, j.key, j.chain_id, j.bs, &slot, slot.seal);
	if (ret)
		goto out;
	ret = ic_writer_commit(w, &slot);
	w = NULL;
	if (ret)
		goto out;
	st->seq = j.seq;
	memcpy(st->chain_id, j.chain_id, ICF_ID_LEN);
	memcpy(st->seal, slot.seal, ICF_SEAL_LEN);
	ret = o->record_later ? 0 : ic_state_record(j.chain_id, j.seq, slot.name, slot.seal);
	if (ret)
		ic_msg("warning: %s (rollback detection will not know this point)", ic_last_error(ret));
	if (o->next_bitmap) {
		ret = ic_bitmap_record(j.chain_id, o->next_bitmap, j.seq, slot.seal, slot.name);
		if (ret)
			ic_msg("warning: %s (the next --dirty-bitmap %s will be refused)",
			       ic_last_error(ret), o->next_bitmap);
	}
	ret = 0;
	if (parent)
		snprintf(st->parent, sizeof(st->parent), "%s", ic_point_name(parent));
	st->post_snapshot = o->post_snapshot_of != NULL;
out:
	ic_writer_abort(w);
	st->seconds = ic_now() - t0;
	free(j.plan);
	ic_array_free(&j.staged);
	ic_view_free(j.pv);
	if (j.key != o->key)
		ic_key_free(j.key);
	ic_source_close(j.src);
	ic_chain_free(c);
	return ret;
}

int ic_backup(const struct ic_backup_opts *o, struct ic_backup_stats *st)
{
	bool created;
	int lock = -1, ret;

	memset(st, 0, sizeof(*st));
	if (o->block_size && (o->block_size < ICF_BLOCK_MIN || o->block_size > ICF_BLOCK_MAX ||
			      (o->block_size & (o->block_size - 1))))
		return ic_fail(-EINVAL, "block size %u: must be a power of two from 4K to 4M",
			       o->block_size);
	ret = ic_store_create(o->chain_dir, &created);
	if (!ret && !created)
		ret = ic_chain_check_dir(o->chain_dir);
	if (ret)
		return ret;
	ret = ic_chain_lock(o->chain_dir, false, &lock);
	if (!ret)
		ret = ic_chain_cleanup_tmp(o->chain_dir);
	if (!ret)
		ret = backup_locked(o, st);
	ic_chain_unlock(lock);
	if (ret && created)
		ic_store_discard(o->chain_dir);    /* a chain this run created leaves nothing */
	return ret;
}
