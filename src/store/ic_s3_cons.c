/* ic_s3_cons.c: keyless merges of a chain in a bucket without its records passing through
 * this host (FORMAT.md 14.5).
 *
 * The merge itself is the local one (src/consolidate), run on a scratch chain: the cache
 * directory's base/cons/, holding for every image of the bucket a sparse file of the
 * object's size with its first 4 KiB and its index (what the planner and the flattening
 * read), and the key file.  The merge shares records rather than copying them, as on a
 * file system with reflinks; here every clone is recorded (source file and range,
 * destination) and leaves a hole.  After the merge, the scratch chain is compared with what
 * was prepared: an image with a new inode was rewritten (a target, which keeps its name),
 * an image gone was merged away.  Publication: each rewritten image replaces its object by
 * a multipart upload whose parts are mostly copied by the server from the objects the
 * records are in (ic_s3_cons_up.c), then the merged images are deleted, highest sequence
 * first (children before their parents: no point is ever left without its parent).
 *
 * Crash safety: before publication nothing in the bucket changed (a killed run leaves an
 * incomplete upload, aborted by the next writer, and a scratch chain, removed by the next
 * run).  Each replacement is atomic and leaves a chain holding the same points with the
 * same content (a target holds its point's disk and seal, on an older ancestor); points
 * left undeleted by a killed run are points like others, planned again by the next run. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_image.h"
#include "ic_s3_cons_int.h"
#include "ic_util.h"

#define COPY_BUF (1u << 20)

struct ic_s3_cons {
	struct ic_s3_chain *sc;
	char *work;                 /* base/cons: the scratch chain */
	struct ic_clone_redirect redir;
	pthread_mutex_t mu;
	struct s3c_copies copies;
	struct s3c_file *files;     /* as prepared */
	size_t nfiles;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* Remove the scratch chain a run left (killed or not). */
static int rm_work(const char *dir)
{
	int ret = nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);

	if (ret && errno != ENOENT)
		return ic_fail(-errno, "%s: cannot remove: %s", dir, strerror(errno));
	return 0;
}

/* The record of a clone the merge asked for (ic_clone_redirect). */
static int on_clone(void *arg, const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
		    uint64_t dst_off)
{
	struct ic_s3_cons *k = arg;
	struct stat ss, ds;
	struct s3c_copy *c;

	if (fstat(src->fd, &ss) < 0 || fstat(dst_fd, &ds) < 0)
		return ic_fail(-errno, "%s: stat: %s", src->path, strerror(errno));
	if (off + len > (uint64_t)ss.st_size)
		return ic_fail(IC_ECORRUPT, "%s: records end past the end of the file", src->path);
	pthread_mutex_lock(&k->mu);
	c = ic_array_add(&k->copies);
	if (c)
		*c = (struct s3c_copy){ .dst_ino = ds.st_ino, .src_ino = ss.st_ino, .dst = dst_off,
					.src_off = off, .len = len };
	pthread_mutex_unlock(&k->mu);
	return c ? 0 : -ENOMEM;
}

static int copy_span(int from, int to, uint64_t off, uint64_t len, void *buf, const char *path)
{
	while (len) {
		size_t n = len < COPY_BUF ? len : COPY_BUF;
		ssize_t r = pread(from, buf, n, (off_t)off);

		if (r != (ssize_t)n)
			return ic_fail(-EIO, "%s: short read of the cached image", path);
		if (pwrite(to, buf, n, (off_t)off) != (ssize_t)n)
			return ic_fail(-errno, "%s: write: %s", path, strerror(errno));
		off += n;
		len -= n;
	}
	return 0;
}

/* work/name: the cached file's first 4 KiB and index (an image) or all of it (the key). */
static int prepare_file(struct ic_s3_cons *k, const struct ic_s3_obj *o, void *buf)
{
	struct ic_s3_chain *sc = k->sc;
	char *src = ic_path_join(sc->dir, o->name);
	struct s3c_file *f = &k->files[k->nfiles];
	struct ic_image *img = NULL;
	int in = -1, out = -1, ret;
	struct stat st;
	bool key = strcmp(o->name, "imgchain.key") == 0;

	if (!src)
		return -ENOMEM;
	ret = ic_open_regular(AT_FDCWD, sc->dir, o->name, O_RDONLY, 0, &in);
	if (!ret)
		ret = ic_open_regular(AT_FDCWD, k->work, o->name, O_RDWR | O_CREAT | O_EXCL, 0600, &out);
	if (!ret && fstat(in, &st) < 0)
		ret = ic_fail(-errno, "%s: %s", src, strerror(errno));
	if (!ret && !key && (o->have < IC_S3_NEED_INDEX || (uint64_t)st.st_size != o->size))
		ret = ic_fail(-EIO, "%s: not pulled to its index", src);
	if (!ret && ftruncate(out, st.st_size) < 0)
		ret = ic_fail(-errno, "%s/%s: %s", k->work, o->name, strerror(errno));
	if (!ret && key)
		ret = copy_span(in, out, 0, (uint64_t)st.st_size, buf, src);
	if (!ret && !key)
		ret = ic_image_open(src, O_RDONLY, &img);
	if (!ret && !key) {
		uint64_t i0 = img->slot.index_offset, i1 = img->slot.data_end;

		ret = copy_span(in, out, 0, o->size < 4096 ? o->size : 4096, buf, src);
		if (!ret && (i0 > i1 || i1 > o->size))
			ret = ic_fail(IC_ECORRUPT, "%s: its slot places the index outside the image", src);
		if (!ret)
			ret = copy_span(in, out, i0, i1 - i0, buf, src);
	}
	if (!ret && fstat(out, &st) < 0)
		ret = ic_fail(-errno, "%s/%s: %s", k->work, o->name, strerror(errno));
	if (!ret) {
		memcpy(f->name, o->name, sizeof(f->name));
		f->ino = st.st_ino;
		f->size = o->size;
		f->remote = NULL;
		for (size_t i = 0; i < sc->nremote; i++)
			if (strcmp(sc->remote[i].name, o->name) == 0)
				f->remote = &sc->remote[i];
		if (!f->remote || strcmp(f->remote->etag, o->etag) != 0)
			ret = ic_fail(-EIO, "%s: changed in the bucket since the pull", src);
		k->nfiles++;
	}
	ic_image_close(img);
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	free(src);
	return ret;
}

static int rm_object(void *arg, const struct ic_s3_object *o)
{
	return ic_s3_delete(arg, o->key);
}

/* Temporary objects a killed run left (PREFIX/.compose/: ic_s3_cons_compose.c). */
static int rm_compose(struct ic_s3_chain *sc)
{
	char *pfx = ic_s3_chain_key(sc, ".compose/");
	int ret = pfx ? ic_s3_list(sc->s3, pfx, rm_object, sc->s3) : -ENOMEM;

	free(pfx);
	return ret;
}

int ic_s3_cons_begin(struct ic_s3_chain *sc, struct ic_s3_cons **out, const char **work)
{
	struct ic_s3_cons *k = calloc(1, sizeof(*k));
	void *buf = malloc(COPY_BUF);
	int ret = 0;

	*out = NULL;
	if (!k || !buf || !(k->work = ic_path_join(sc->base, "cons")) ||
	    !(k->files = calloc(sc->nobjs + 1, sizeof(*k->files)))) {
		ret = -ENOMEM;
		goto fail;
	}
	k->sc = sc;
	pthread_mutex_init(&k->mu, NULL);
	ret = rm_work(k->work);
	if (!ret)
		ret = rm_compose(sc);
	if (!ret && mkdir(k->work, 0700) < 0)
		ret = ic_fail(-errno, "%s: %s", k->work, strerror(errno));
	for (size_t i = 0; !ret && i < sc->nobjs; i++)
		ret = prepare_file(k, &sc->objs[i], buf);
	if (ret)
		goto fail;
	free(buf);
	k->redir = (struct ic_clone_redirect){ .blk = 1, .fn = on_clone, .arg = k };
	ic_clone_redirect = &k->redir;
	*out = k;
	*work = k->work;
	return 0;
fail:
	free(buf);
	ic_s3_cons_end(k);
	return ret;
}

void ic_s3_cons_end(struct ic_s3_cons *k)
{
	if (!k)
		return;
	if (ic_clone_redirect == &k->redir)
		ic_clone_redirect = NULL;
	if (k->work)
		rm_work(k->work);
	if (k->files)
		pthread_mutex_destroy(&k->mu);
	ic_array_free(&k->copies);
	free(k->files);
	free(k->work);
	free(k);
}

static int cmp_copy(const void *a, const void *b)
{
	const struct s3c_copy *x = a, *y = b;

	if (x->dst_ino != y->dst_ino)
		return x->dst_ino < y->dst_ino ? -1 : 1;
	return x->dst < y->dst ? -1 : x->dst > y->dst;
}

static int cmp_name_desc(const void *a, const void *b)
{
	return -strcmp(((const struct s3c_file *)a)->name, ((const struct s3c_file *)b)->name);
}

/* Was work/name (same inode as prepared) changed in place?  Only its first 4 KiB can
 * tell (a slot switched), and a merge with no target in place never does it. */
static int same_header(struct ic_s3_cons *k, const char *name)
{
	char *a = ic_path_join(k->sc->dir, name), *b = ic_path_join(k->work, name);
	uint8_t x[4096], y[4096];
	ssize_t nx = -1, ny = -2;
	int fa = -1, fb = -1;

	if (a && b && (fa = open(a, O_RDONLY | O_NOFOLLOW)) >= 0 &&
	    (fb = open(b, O_RDONLY | O_NOFOLLOW)) >= 0) {
		nx = pread(fa, x, sizeof(x), 0);
		ny = pread(fb, y, sizeof(y), 0);
	}
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	free(a);
	free(b);
	if (nx == ny && nx >= 0 && memcmp(x, y, (size_t)nx) == 0)
		return 0;
	return ic_fail(-EIO, "%s/%s: changed in place by the merge: not published", k->work, name);
}

/* The scratch chain's images now: *rw the rewritten ones (name and inode), *gone those
 * merged away (as prepared). */
static int compare(struct ic_s3_cons *k, struct s3c_file *rw, size_t *nrw, struct s3c_file *gone,
		   size_t *ngone)
{
	DIR *d = opendir(k->work);
	struct dirent *de;
	int ret = 0;

	*nrw = *ngone = 0;
	if (!d)
		return ic_fail(-errno, "%s: %s", k->work, strerror(errno));
	while (!ret && (de = readdir(d))) {
		const struct s3c_file *f = NULL;
		struct stat st;

		if (!ic_s3_chain_file(de->d_name) || strcmp(de->d_name, "imgchain.key") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
			ret = ic_fail(-EIO, "%s/%s: not a regular file", k->work, de->d_name);
			break;
		}
		for (size_t i = 0; i < k->nfiles; i++)
			if (strcmp(k->files[i].name, de->d_name) == 0)
				f = &k->files[i];
		if (!f) {
			ret = ic_fail(-EIO, "%s/%s: a new name after the merge", k->work, de->d_name);
		} else if (f->ino != st.st_ino) {
			rw[*nrw] = *f;
			rw[*nrw].ino = st.st_ino;
			rw[(*nrw)++].size = (uint64_t)st.st_size;
		} else {
			ret = same_header(k, de->d_name);
		}
	}
	closedir(d);
	for (size_t i = 0; !ret && i < k->nfiles; i++) {
		char *p = ic_path_join(k->work, k->files[i].name);

		if (!p)
			return -ENOMEM;
		if (access(p, F_OK) < 0 && errno == ENOENT)
			gone[(*ngone)++] = k->files[i];
		free(p);
	}
	return ret;
}

/* Forget name in the cache (state and file): the next pull fetches it again if kept. */
static void forget(struct ic_s3_chain *sc, const char *name)
{
	char *p = ic_path_join(sc->dir, name);
	size_t o = 0;

	if (p)
		unlink(p);
	free(p);
	for (size_t i = 0; i < sc->nobjs; i++)
		if (strcmp(sc->objs[i].name, name) != 0)
			sc->objs[o++] = sc->objs[i];
	sc->nobjs = o;
}

/* Does rewritten image r copy records from object name (another rewritten image)? */
static bool reads_from(struct ic_s3_cons *k, const struct s3c_file *r, const struct s3c_file *of)
{
	for (size_t i = 0; i < k->copies.n; i++)
		if (k->copies.v[i].dst_ino == r->ino && k->copies.v[i].src_ino == of->ino)
			return true;
	return false;
}

/* An image whose records come from the object another rewritten image replaces is
 * uploaded before it (else the copy finds the object replaced: 412, nothing published). */
static void order(struct ic_s3_cons *k, struct s3c_file *rw, size_t n)
{
	for (size_t pass = 0; pass < n; pass++) {
		bool moved = false;

		for (size_t i = 0; i < n; i++)
			for (size_t j = i + 1; j < n; j++) {
				const struct s3c_file *orig = NULL;

				for (size_t f = 0; f < k->nfiles; f++)
					if (strcmp(k->files[f].name, rw[i].name) == 0)
						orig = &k->files[f];
				if (orig && reads_from(k, &rw[j], orig)) {
					struct s3c_file t = rw[j];

					memmove(&rw[i + 1], &rw[i], (j - i) * sizeof(*rw));
					rw[i] = t;
					moved = true;
				}
			}
		if (!moved)
			break;
	}
}

int ic_s3_cons_publish(struct ic_s3_cons *k, struct ic_s3_cons_stats *st,
		       void (*step)(const char *name))
{
	struct ic_s3_chain *sc = k->sc;
	struct s3c_file *rw = calloc(k->nfiles + 1, sizeof(*rw));
	struct s3c_file *gone = calloc(k->nfiles + 1, sizeof(*gone));
	uint64_t q, t, s1, r1;
	size_t nrw = 0, ngone = 0, i;
	int ret = rw && gone ? 0 : -ENOMEM;

	if (ic_clone_redirect == &k->redir)
		ic_clone_redirect = NULL;
	qsort(k->copies.v, k->copies.n, sizeof(*k->copies.v), cmp_copy);
	if (!ret)
		ret = compare(k, rw, &nrw, gone, &ngone);
	if (!ret)
		order(k, rw, nrw);
	for (i = 0; !ret && i < nrw; i++) {
		char *p = ic_path_join(k->work, rw[i].name);
		int fd = -1;

		ret = p ? ic_open_regular(AT_FDCWD, k->work, rw[i].name, O_RDONLY, 0, &fd) : -ENOMEM;
		if (!ret)
			ret = ic_s3c_upload(sc, rw[i].name, fd, rw[i].ino, rw[i].size, &k->copies,
					    k->files, k->nfiles, st, step);
		if (fd >= 0)
			close(fd);
		free(p);
		if (!ret)
			forget(sc, rw[i].name);
		if (!ret && step)
			step("s3-replaced");
	}
	/* children before parents */
	qsort(gone, ngone, sizeof(*gone), cmp_name_desc);
	for (i = 0; !ret && i < ngone; i++) {
		char *key = ic_s3_chain_key(sc, gone[i].name);

		if (step)
			step("s3-delete");
		ret = key ? ic_s3_lease_check(sc) : -ENOMEM;
		if (!ret)
			ret = ic_s3_delete(sc->s3, key);
		free(key);
		if (!ret) {
			st->deleted++;
			forget(sc, gone[i].name);
		}
	}
	if (nrw || ngone) {
		int r2 = ic_s3_state_save(sc);

		ret = ret ? ret : r2;
	}
	ic_s3_stats(sc->s3, &q, &t, &s1, &r1);
	st->net_sent = s1;          /* since the chain was opened: the whole run */
	st->net_received = r1;
	free(rw);
	free(gone);
	return ret;
}
