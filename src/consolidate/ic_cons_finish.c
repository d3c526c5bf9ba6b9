/* ic_cons_finish.c: what follows the copies of a step, and recovery: roll back a step
 * before its commit point, roll a committed one forward (slot switch, renames,
 * removals), free the space of superseded records.  Each action re-checks the state,
 * so that all of it can be repeated after a crash anywhere. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <xxhash.h>

#include "ic_chain.h"
#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_lock.h"
#include "ic_pool.h"
#include "ic_store.h"
#include "ic_util.h"

/* 1: the non-current slot describes the current slot's index, 0: it does not, or -errno. */
static int slots_agree(struct ic_image *img)
{
	uint8_t raw[ICF_SLOT_SIZE];
	struct icf_slot other;
	int ret = ic_pread_full(img->fd, raw, sizeof(raw),
				img->slot_index ? ICF_SLOT_A_OFF : ICF_SLOT_B_OFF, img->path);

	if (ret)
		return ret;
	return !ic_slot_decode(raw, &other, img->hdr.version, img->path) &&
	       other.seq == img->slot.seq && other.index_offset == img->slot.index_offset &&
	       other.index_count == img->slot.index_count &&
	       !memcmp(other.index_hash, img->slot.index_hash, ICF_INDEX_HASH_LEN);
}

/* Make the non-current slot a copy of the current one, so that the file can only ever
 * be read as the point it now holds. */
static int dup_slot(struct ic_image *img)
{
	uint8_t raw[ICF_SLOT_SIZE];
	struct icf_slot s;
	int ret = slots_agree(img);

	if (ret)
		return ret < 0 ? ret : 0;
	/* not synced: the current slot decides; this copy only keeps the file from ever
	 * falling back to the point it held before */
	s = img->slot;
	s.generation = img->slot.generation + 1;
	ic_slot_encode(&s, raw);
	ret = ic_pwrite_full(img->fd, raw, sizeof(raw),
			     img->slot_index ? ICF_SLOT_A_OFF : ICF_SLOT_B_OFF, img->path);
	if (!ret) {
		img->slot = s;
		img->slot_index ^= 1;
	}
	return ret;
}

/* Undo a step that had not reached its commit point: drop the temporary files, cut
 * what was appended to the full, forget the step.  Safe to repeat. */
int ic_cons_rollback(struct cons *x)
{
	struct journal *j = &x->j;
	int ret = ic_chain_cleanup_tmp(x->dir), r2;

	if (j->inplace) {
		char *path = ic_cons_seq_path(x->dir, j->ip_file);
		struct ic_image *img;

		if (!path && !ret)
			ret = -ENOMEM;
		if (path && !ic_image_open(path, O_RDWR, &img)) {
			if (img->slot.seq == j->ip_file && img->slot.data_end == j->ip_d0 &&
			    img->file_size > j->ip_d0) {
				r2 = ic_store_truncate(img, j->ip_d0);
				if (!ret)
					ret = r2;
			}
			ic_image_close(img);
		}
		free(path);
	}
	ic_cons_journal_reset_step(j);
	r2 = ic_cons_journal_write(x->dir, j);
	return ret ? ret : r2;
}

/* The in-place target: switch the full's slot to the target, copy it to the other
 * slot, rename the file over the target's.  Each action is checked first, so this
 * can be repeated after a crash at any point. */
static int finish_inplace(struct cons *x)
{
	struct journal *j = &x->j;
	char *fpath = ic_cons_seq_path(x->dir, j->ip_file), *tpath = ic_cons_seq_path(x->dir, j->ip_target);
	struct ic_image *img = NULL;
	int ret = fpath && tpath ? ic_image_open(fpath, O_RDWR, &img) : -ENOMEM;

	if (ret == -ENOENT) {    /* already renamed */
		ret = ic_image_open(tpath, O_RDONLY, &img);
		if (!ret && (img->slot.seq != j->ip_target || img->slot.parent_seq))
			ret = ic_fail(IC_ECORRUPT, "%s: expected the merged full of sequence %u", tpath,
				      j->ip_target);
		goto out;
	}
	if (ret)
		goto out;
	if (img->slot.seq == j->ip_file) {
		struct icf_slot s = j->ip_slot;
		uint64_t len = s.index_count * sizeof(struct icf_entry);
		uint8_t *idx = malloc(len ? len : 1);
		XXH128_canonical_t c;

		if (!j->have_slot || img->slot.data_end != j->ip_d0 || !idx) {
			free(idx);
			ret = ic_fail(IC_ECORRUPT, "%s: does not match the journal", fpath);
			goto out;
		}
		ret = ic_pread_full(img->fd, idx, len, s.index_offset, fpath);
		XXH128_canonicalFromHash(&c, XXH3_128bits(idx, len));
		free(idx);
		if (!ret && memcmp(c.digest, s.index_hash, ICF_INDEX_HASH_LEN))
			ret = ic_fail(IC_ECORRUPT, "%s: the merged index appended to it is damaged", fpath);
		if (!ret)    /* the journal's copy was decoded without the file's version */
			ret = ic_slot_validate(&s, img->hdr.version, fpath);
		if (!ret)
			ret = ic_image_switch_slot(img, &s);
		if (ret)
			goto out;
		ic_cons_step(x, "switch");
	}
	if (img->slot.seq != j->ip_target) {
		ret = ic_fail(IC_ECORRUPT, "%s: holds sequence %u, expected %u or %u", fpath,
			      img->slot.seq, j->ip_file, j->ip_target);
		goto out;
	}
	ret = dup_slot(img);
	if (ret)
		goto out;
	ic_cons_step(x, "dup");
	/* made durable with the removals that follow (one directory sync): until then a
	 * crash leaves both files claiming the target, and the chain takes this one */
	ret = ic_store_rename(fpath, tpath);
	if (ret)
		goto out;
	ic_cons_step(x, "moved");
out:
	ic_image_close(img);
	free(fpath);
	free(tpath);
	return ret;
}

/* A point that depends on a point to remove and that the step does not rewrite
 * (made since the step was planned)?  Then the step cannot finish. */
static bool unexpected_dependents(struct cons *x)
{
	struct ic_chain *c;
	bool bad = false;

	if (ic_chain_open(x->dir, &c))
		return true;
	for (size_t i = 0; i < c->npoints && !bad; i++) {
		struct ic_point *p = &c->points[i];

		if (p->parent && in_set(&x->j.remove, p->parent->seq) &&
		    !in_set(&x->j.remove, p->seq) && !(x->j.inplace && p->seq == x->j.ip_target)) {
			ic_cons_note(x, "restore point '%s' depends on a point to remove", ic_point_name(p));
			bad = true;
		}
	}
	ic_chain_free(c);
	return bad;
}

static int remove_points(struct cons *x)
{
	struct journal *j = &x->j;
	int ret = 0;

	for (size_t i = 0; i < j->remove.n; i++) {
		char *path = ic_cons_seq_path(x->dir, j->remove.v[i]), who[600];
		struct ic_image *img;
		pid_t pid;

		if (!path)
			return -ENOMEM;
		ret = ic_image_open(path, O_RDONLY, &img);
		if (ret) {
			if (ret != -ENOENT)
				ic_cons_note(x, "%s: left in place: %s", path, ic_last_error(ret));
			free(path);
			ret = 0;
			continue;
		}
		if (img->slot.seq != j->remove.v[i]) {
			ic_image_close(img);
			free(path);
			continue;
		}
		if (ic_lock_holder(img->fd, IC_LOCK_OVERLAY, &pid) == 1) {
			ic_cons_describe(pid, who, sizeof(who));
			ret = ic_fail(-EBUSY, "%s: restore point '%s' is served with a writable overlay by %s: not removing it",
				      path, img->slot.name, who);
			ic_image_close(img);
			free(path);
			return ret;
		}
		ic_image_close(img);
		ret = ic_store_remove(path);
		free(path);
		if (ret)
			return ret;
		ic_cons_step(x, "delete");
	}
	ret = ic_store_sync(x->dir);
	ic_cons_step(x, "deleted");
	return ret;
}

static int punch_one(struct cons *x, uint32_t seq, bool bg, bool *keep, double *secs);

/* The hole punching of the in-place target, run in a thread while the merged points
 * are removed: both wait mostly on the device (a file system mounted with "discard"
 * trims each freed range before the call returns). */
struct bg_punch {
	struct cons *x;
	uint32_t seq;
	bool keep;                  /* not done: left to the punch list */
	double secs, took;
	struct ic_pool pool;
};

static void *bg_punch_run(void *arg)
{
	struct bg_punch *b = arg;
	double t0 = ic_now();

	punch_one(b->x, b->seq, true, &b->keep, &b->secs);
	b->took = ic_now() - t0;
	return NULL;
}

/* IMGCHAIN_CONS_RECLAIM=background: the superseded records of an in-place target are
 * punched by a detached process once the run is over (reclaim_spawn), not by the run. */
static bool reclaim_detached(void)
{
	const char *v = getenv("IMGCHAIN_CONS_RECLAIM");

	return v && !strcmp(v, "background");
}

/* Roll a committed step forward to its end.  Safe to repeat after a crash anywhere.
 * recovering: the lock was released since the step was planned (a backup may have
 * added a point on a point to remove). */
int ic_cons_finish_commit(struct cons *x, bool recovering)
{
	struct journal *j = &x->j;
	struct bg_punch bg = { .x = x, .keep = true };
	bool cannot = false, bg_on = false;
	int ret;

	for (size_t i = 0; i < j->tseq.n; i++) {
		char *tmp = ic_cons_tmp_path(x->dir, j->tseq.v[i]), *dst = ic_cons_seq_path(x->dir, j->tseq.v[i]);
		struct ic_image *img;

		if (!tmp || !dst) {
			free(tmp);
			free(dst);
			return -ENOMEM;
		}
		/* only the regular file this step wrote is put in place, never a plant */
		ret = ic_store_put(tmp, dst);
		if (ret != -ENOENT) {
			x->st->points_rewritten++;
			ic_cons_step(x, "rename");
		} else {
			ret = ic_image_open(dst, O_RDONLY, &img);
			if (!ret) {
				cannot |= img->slot.parent_seq != j->tbase.v[i];
				ic_image_close(img);
			}
			cannot |= ret != 0;
			ret = 0;
		}
		free(tmp);
		free(dst);
		if (ret)
			return ret;
	}
	/* the renamed points no longer depend on the points to remove: durable before
	 * the full's slot switch makes those vanish */
	if (j->tseq.n && (ret = ic_store_sync(x->dir)))
		return ret;
	ic_cons_step(x, "renamed");
	if (cannot || (recovering && unexpected_dependents(x))) {
		ic_cons_note(x, "the interrupted consolidation cannot be finished (its files were removed, or a point was added); rolled back, every point kept");
		return ic_cons_rollback(x);
	}
	if (j->inplace) {
		ret = finish_inplace(x);
		if (ret)
			return ret;
		/* the target's slot is durable and its copy fills the other slot: the
		 * records it superseded are referenced by nothing any more */
		bg.seq = j->ip_target;
		if (!recovering && reclaim_detached()) {
			/* on the punch list (below) for a crash; punched after the run */
			if (!in_set(&j->bg, j->ip_target) && (ret = ic_array_push(&j->bg, j->ip_target)))
				return ret;
		} else {
			bg_on = ic_pool_start(&bg.pool, 1, bg_punch_run, &bg) == 0;
			if (!bg_on)
				ic_pool_join(&bg.pool);
		}
	}
	ret = remove_points(x);
	if (bg_on) {
		double t0 = ic_now();

		ic_pool_join(&bg.pool);
		x->st->punch_seconds += bg.secs;
		x->st->phase_seconds[IC_CONS_T_PUNCH] += bg.took;
		x->st->phase_seconds[IC_CONS_T_FINISH] -= ic_now() - t0;    /* counted as punch */
	}
	if (ret)
		return ret;
	if (j->inplace && bg.keep && !in_set(&j->punch, j->ip_target) &&
	    (ret = ic_array_push(&j->punch, j->ip_target)))
		return ret;
	ic_cons_journal_reset_step(j);
	return ic_cons_journal_write(x->dir, j);
}

/* ---- hole punching ---------------------------------------------------------------- */

/* Free the space of records no longer referenced in the images listed in the journal,
 * unless a reader holds one (its punching waits for a later run). */
/* Free the unused space of image seq, unless a reader holds it.  *keep: it stays on
 * the punch list (a reader, or an error to retry).  bg: run by the thread that
 * overlaps the removals: silent, and any outcome but success is left to the punch
 * list (the error message of a thread is its own). */
static int punch_one(struct cons *x, uint32_t seq, bool bg, bool *keep, double *secs)
{
	char *path = ic_cons_seq_path(x->dir, seq), who[600];
	struct ic_image *img;
	uint64_t freed;
	pid_t pid;
	int r = path ? ic_image_open(path, O_RDWR, &img) : -ENOMEM;

	free(path);
	*keep = false;
	if (r)
		return bg ? (*keep = true, 0) : 0;    /* gone: nothing to free */
	if (img->slot.seq != seq) {
		ic_image_close(img);
		*keep = bg;
		return 0;
	}
	if (ic_lock_holder(img->fd, IC_LOCK_READER, &pid) == 1) {
		if (!bg) {
			ic_cons_describe(pid, who, sizeof(who));
			ic_cons_note(x, "%s: in use by %s: its unused space will be freed by a later run",
				     img->path, who);
		}
		ic_image_close(img);
		*keep = true;
		return 0;
	}
	r = dup_slot(img);
	if (!r) {
		double t0 = ic_now();

		ic_cons_step(x, "punch");
		/* the ranges this run's merge freed, or the whole file scanned */
		if (ic_reclaim_applies(&x->rp, img))
			r = ic_reclaim_run(&x->rp, img, &x->st->punch_calls);
		else
			r = ic_image_punch_unused(img, &freed);
		*secs += ic_now() - t0;
	}
	ic_image_close(img);
	if (bg) {
		*keep = r != 0;
		return 0;
	}
	if (r == -EOPNOTSUPP || r == IC_ECORRUPT) {
		ic_cons_note(x, "%s", ic_last_error(r));
		return 0;
	}
	*keep = r != 0;
	return r;
}

static int punch_images(struct cons *x)
{
	struct journal *j = &x->j;
	size_t keep = 0, before = j->punch.n;
	int ret = 0;

	x->st->punches_pending = 0;
	for (size_t i = 0; i < j->punch.n; i++) {
		bool k = true;
		int r = 0;

		if (!in_set(&j->bg, j->punch.v[i])) {
			r = punch_one(x, j->punch.v[i], false, &k, &x->st->punch_seconds);
			x->st->punches_pending += k;
		}

		if (r && !ret)
			ret = r;
		if (k)
			j->punch.v[keep++] = j->punch.v[i];
	}
	j->punch.n = keep;
	if (keep != before || (!keep && j->phase == J_IDLE)) {
		int r = ic_cons_journal_write(x->dir, j);

		if (!ret)
			ret = r;
	}
	return ret;
}

/* The detached process: frees the unused space below data_end of each image, if its two
 * slots agree and no reader holds it, and exits.  It takes no lock and writes no slot and
 * no journal (that needs the writers' lock, which others must find free): what is
 * unreferenced below data_end stays so whatever a writer appends later, and punching it
 * twice is harmless; the journal's punch line, left in place, has the next run redo it
 * (holes skipped), also after a crash of this process. */
static void __attribute__((noreturn)) reclaim_child(struct cons *x, const uint32_t *seqs,
						    size_t n)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	for (size_t i = 0; i < n; i++) {
		char *path = ic_cons_seq_path(x->dir, seqs[i]);
		struct ic_image *img;
		uint64_t freed;
		pid_t pid;

		if (!path || ic_image_open(path, O_RDWR, &img)) {
			free(path);
			continue;
		}
		if (img->slot.seq == seqs[i] && slots_agree(img) == 1 &&
		    ic_lock_holder(img->fd, IC_LOCK_READER, &pid) != 1) {
			ic_cons_step(x, "reclaim");
			if (ic_reclaim_applies(&x->rp, img))
				(void)ic_reclaim_run(&x->rp, img, &x->st->punch_calls);
			else
				(void)ic_image_punch_below(img, img->slot.data_end, &freed);
		}
		ic_image_close(img);
		free(path);
	}
	_exit(0);
}

/* Start reclaim_child for the images of j->bg, detached (a grandchild: nothing to reap,
 * nothing to wait for), and forget them; they stay on the punch list.  false: it could
 * not be started (the caller punches them itself). */
static bool reclaim_spawn(struct cons *x)
{
	struct journal *j = &x->j;
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		/* the writers' lock and every other descriptor of the run, before the run
		 * goes on (it waits for this process) */
		close_range(3, ~0u, 0);
		setsid();
		pid = fork();
		if (pid == 0)
			reclaim_child(x, j->bg.v, j->bg.n);
		_exit(pid < 0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		ic_cons_note(x, "cannot start the background reclaim (%s): freeing the space now",
			     pid < 0 ? strerror(errno) : "fork");
		j->bg.n = 0;
		return false;
	}
	ic_cons_note(x, "the superseded records of %u image%s are freed in the background; if that is interrupted, the next run frees them",
		     (unsigned)j->bg.n, j->bg.n == 1 ? "" : "s");
	j->bg.n = 0;
	return true;
}

int ic_cons_punch(struct cons *x)
{
	double t0 = ic_now();
	int ret = punch_images(x);

	if (!ret && x->j.bg.n && x->j.phase == J_IDLE && !reclaim_spawn(x))
		ret = punch_images(x);
	x->st->phase_seconds[IC_CONS_T_PUNCH] += ic_now() - t0;
	return ret;
}

int ic_cons_recover(struct cons *x)
{
	int ret = ic_cons_journal_read(x->dir, &x->j);

	if (ret)
		return ret;
	if (x->j.phase == J_PREPARE) {
		ic_cons_note(x, "rolling back an interrupted consolidation (it had changed nothing visible)");
		x->st->recovered = true;
		return ic_cons_rollback(x);
	}
	if (x->j.phase == J_COMMIT) {
		double t0 = ic_now();

		ic_cons_note(x, "finishing an interrupted consolidation");
		x->st->recovered = true;
		ret = ic_cons_finish_commit(x, true);
		x->st->phase_seconds[IC_CONS_T_FINISH] += ic_now() - t0;
		return ret;
	}
	return 0;
}
