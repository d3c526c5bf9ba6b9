/* ic_chain.c: scanning a chain directory into a tree of restore points; the lock. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "ic_array.h"
#include "ic_chain.h"
#include "ic_util.h"

static int add_bad(struct ic_chain *c, const char *path, int err)
{
	struct ic_bad_file *b;
	const char *base = strrchr(path, '/');

	if (ic_array_grow(&c->bad, &c->bad_cap, c->nbad + 1, sizeof(*c->bad)))
		return -ENOMEM;
	b = &c->bad[c->nbad];
	b->path = strdup(path);
	b->why = strdup(ic_last_error(err));
	b->err = err;
	b->name_seq = (uint32_t)strtoul(base ? base + 1 : path, NULL, 10);
	if (!b->path || !b->why) {
		free(b->path);
		free(b->why);
		return -ENOMEM;
	}
	c->nbad++;
	return 0;
}

static bool image_name(const char *n)
{
	size_t len = strlen(n);

	if (len != 12 || strcmp(n + 8, ICF_IMAGE_SUFFIX))
		return false;
	for (int i = 0; i < 8; i++)
		if (n[i] < '0' || n[i] > '9')
			return false;
	return true;
}

/* Does img belong with the chain's first image? */
static int same_chain(struct ic_chain *c, struct ic_image *img)
{
	if (!c->have_images) {
		c->have_images = true;
		c->block_size = img->hdr.block_size;
		memcpy(c->chain_id, img->hdr.chain_id, ICF_ID_LEN);
		memcpy(c->key_check, img->hdr.key_check, ICF_CHECK_LEN);
		return 0;
	}
	if (memcmp(c->chain_id, img->hdr.chain_id, ICF_ID_LEN) || memcmp(c->key_check, img->hdr.key_check, ICF_CHECK_LEN))
		return ic_fail(IC_ECORRUPT, "%s: belongs to another chain (chain id differs)",
			       img->path);
	if (c->block_size != img->hdr.block_size)
		return ic_fail(IC_ECORRUPT, "%s: block size %u differs from the chain's %u", img->path,
			       img->hdr.block_size, c->block_size);
	return 0;
}

static int cmp_point(const void *a, const void *b)
{
	const struct ic_point *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	/* Same seq (an interrupted in-place merge): the one with the older parent first. */
	if (x->img->slot.parent_seq != y->img->slot.parent_seq)
		return x->img->slot.parent_seq < y->img->slot.parent_seq ? -1 : 1;
	return 0;
}

static int add_stale(struct ic_chain *c, struct ic_image *img)
{
	if (ic_array_grow(&c->stale, &c->stale_cap, c->nstale + 1, sizeof(*c->stale)))
		return -ENOMEM;
	c->stale[c->nstale++] = img;
	return 0;
}

/* Sort, drop duplicates of a seq, link parents, compute depth and broken.  -ENOMEM leaves
 * every image in points[] or stale[] (freed by ic_chain_free). */
static int build_tree(struct ic_chain *c)
{
	size_t j = 0;

	if (c->npoints)
		qsort(c->points, c->npoints, sizeof(*c->points), cmp_point);
	if (ic_array_grow(&c->stale, &c->stale_cap, c->nstale + c->npoints, sizeof(*c->stale)))
		return -ENOMEM;
	for (size_t i = 0; i < c->npoints; i++) {
		if (j && c->points[j - 1].seq == c->points[i].seq) {
			add_stale(c, c->points[i].img);    /* room was made above */
			continue;
		}
		c->points[j++] = c->points[i];
	}
	c->npoints = j;
	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_point *p = &c->points[i];
		uint32_t ps = p->img->slot.parent_seq;

		p->parent = NULL;
		p->nchildren = 0;
		p->broken = false;
		p->depth = 1;
		if (!ps)
			continue;
		/* parents have lower seq, so they are already linked */
		p->parent = ic_chain_find_seq(c, ps);
		if (!p->parent || p->parent->broken) {
			p->broken = true;
			continue;
		}
		p->parent->nchildren++;
		p->depth = p->parent->depth + 1;
	}
	return 0;
}

int ic_chain_open(const char *dir, struct ic_chain **out)
{
	struct ic_chain *c;
	struct dirent *de;
	DIR *d = opendir(dir);
	int ret = 0;

	if (!d)
		return ic_fail(-errno, "%s: %s", dir, strerror(errno));
	c = calloc(1, sizeof(*c));
	if (!c || !(c->dir = strdup(dir))) {
		free(c);
		closedir(d);
		return -ENOMEM;
	}
	while (!ret && (de = readdir(d))) {
		struct ic_image *img;
		char *path;

		if (!image_name(de->d_name))
			continue;
		path = ic_path_join(dir, de->d_name);
		if (!path) {
			ret = -ENOMEM;
			break;
		}
		if ((uint32_t)strtoul(de->d_name, NULL, 10) > c->name_max || !c->name_max_path) {
			c->name_max = (uint32_t)strtoul(de->d_name, NULL, 10);
			free(c->name_max_path);
			c->name_max_path = strdup(path);
			if (!c->name_max_path)
				ret = -ENOMEM;
		}
		/* a name that is not a regular file is a bad file, never opened (ic_open_regular) */
		if (!ret)
			ret = ic_image_open(path, O_RDONLY, &img);
		if (!ret) {
			ret = same_chain(c, img);
			if (ret)
				ic_image_close(img);
		}
		if (ret == -ENOMEM) {
			/* out of memory is not a fact about the file: the scan fails */
		} else if (ret) {
			ret = add_bad(c, path, ret);
		} else if (ic_array_grow(&c->points, &c->points_cap, c->npoints + 1,
					 sizeof(*c->points))) {
			ic_image_close(img);
			ret = -ENOMEM;
		} else {
			memset(&c->points[c->npoints], 0, sizeof(*c->points));
			c->points[c->npoints].img = img;
			c->points[c->npoints].seq = img->slot.seq;
			c->npoints++;
		}
		free(path);
	}
	closedir(d);
	if (!ret)
		ret = build_tree(c);
	if (ret) {
		ic_chain_free(c);
		return ret == -ENOMEM ? ic_fail(ret, "%s: scan: %s", dir, strerror(ENOMEM)) : ret;
	}
	*out = c;
	return 0;
}

void ic_chain_free(struct ic_chain *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->npoints; i++)
		ic_image_close(c->points[i].img);
	for (size_t i = 0; i < c->nstale; i++)
		ic_image_close(c->stale[i]);
	for (size_t i = 0; i < c->nbad; i++) {
		free(c->bad[i].path);
		free(c->bad[i].why);
	}
	free(c->points);
	free(c->stale);
	free(c->bad);
	free(c->name_max_path);
	free(c->dir);
	free(c);
}

struct ic_point *ic_chain_find(const struct ic_chain *c, const char *name)
{
	for (size_t i = c->npoints; i-- > 0;)
		if (!strcmp(c->points[i].img->slot.name, name))
			return &c->points[i];
	return NULL;
}

struct ic_point *ic_chain_find_seq(const struct ic_chain *c, uint32_t seq)
{
	size_t lo = 0, hi = c->npoints;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->points[mid].seq == seq)
			return &c->points[mid];
		if (c->points[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

int ic_chain_lookup(const struct ic_chain *c, const char *name, struct ic_point **out)
{
	*out = strcmp(name, ICF_NAME_RESERVED) ? ic_chain_find(c, name) : ic_chain_latest(c);
	if (*out)
		return 0;
	if (!c->nbad)
		return ic_fail(-ENOENT, "%s: no restore point named '%s'", c->dir, name);
	return ic_fail(IC_ECORRUPT, "%s: no readable restore point named '%s'; %zu damaged file%s: %s",
		       c->dir, name, c->nbad, c->nbad == 1 ? "" : "s", c->bad[0].why);
}

int ic_chain_explain_broken(const struct ic_chain *c, const struct ic_point *p)
{
	const struct ic_point *q = p;
	uint32_t missing;

	while (q->parent && q->parent->broken)
		q = q->parent;
	missing = q->img->slot.parent_seq;
	for (size_t i = 0; i < c->nbad; i++)
		if (c->bad[i].name_seq == missing)
			return ic_fail(IC_ECORRUPT, "restore point '%s' cannot be read: its ancestor's image is damaged: %s",
				       ic_point_name(p), c->bad[i].why);
	return ic_fail(-ENOENT, "%s: restore point '%s' cannot be read: its ancestor (sequence %u) is missing",
		       c->dir, ic_point_name(p), missing);
}

struct ic_point *ic_chain_newest(const struct ic_chain *c)
{
	return c->npoints ? &c->points[c->npoints - 1] : NULL;
}

struct ic_point *ic_chain_latest(const struct ic_chain *c)
{
	for (size_t i = c->npoints; i-- > 0;)
		if (!c->points[i].broken)
			return &c->points[i];
	return NULL;
}

uint32_t ic_chain_max_seq(const struct ic_chain *c)
{
	uint32_t m = c->npoints ? c->points[c->npoints - 1].seq : 0;

	for (size_t i = 0; i < c->nstale; i++)
		if (c->stale[i]->slot.seq > m)
			m = c->stale[i]->slot.seq;
	for (size_t i = 0; i < c->nbad; i++)
		if (c->bad[i].name_seq > m)
			m = c->bad[i].name_seq;
	if (c->name_max > m)
		m = c->name_max;
	return m;
}

int ic_chain_next_seq(const struct ic_chain *c, uint32_t *seq)
{
	uint32_t m = ic_chain_max_seq(c);
	const char *who = c->name_max_path;

	if (m < ICF_SEQ_MAX) {
		*seq = m + 1;
		return 0;
	}
	/* name the file that claims the top: a slot (a name above is impossible) or a name */
	for (size_t i = 0; i < c->npoints; i++)
		if (c->points[i].seq == m)
			who = c->points[i].img->path;
	for (size_t i = 0; i < c->nstale; i++)
		if (c->stale[i]->slot.seq == m)
			who = c->stale[i]->path;
	return ic_fail(-EOVERFLOW, "%s: no sequence number left for a new point: %s claims %u, the largest the format allows; move that file away if it is not a restore point you keep",
		       c->dir, who ? who : "a file", m);
}

const char *ic_kind_name(uint32_t kind)
{
	switch (kind) {
	case ICF_KIND_FULL: return "full";
	case ICF_KIND_INCREMENTAL: return "incremental";
	case ICF_KIND_SYNTHETIC_FULL: return "synthetic-full";
	case ICF_KIND_CONSOLIDATED: return "consolidated";
	}
	return "unknown";
}

const char *ic_point_name(const struct ic_point *p)
{
	return p->img->slot.name;
}

/* What a holder overwrote with its name, put back when it lets go: the lock file is
 * never truncated below its size before, and is byte-identical after a run.  A process
 * holds one chain lock at a time; a few slots are plenty. */
static struct held_lock {
	bool used;
	int fd;
	off_t size;                 /* the file's size before */
	size_t n;                   /* bytes of saved[] overwritten */
	char saved[300];
} held[4];

int ic_chain_lock(const char *dir, bool wait, int *fd_out)
{
	char *path = ic_path_join(dir, ICF_LOCK_NAME);
	char who[300], host[256], safe[1200];
	struct held_lock *h = NULL;
	struct stat st;
	int fd = -1;
	int ret;

	/* a regular file only, created if missing, never truncated: what is there may be
	 * a link to someone else's file, which must not be touched */
	ret = path ? ic_open_regular(AT_FDCWD, dir, ICF_LOCK_NAME, O_RDWR | O_CREAT, 0600, &fd)
		   : -ENOMEM;
	if (ret)
		goto out;
	if (flock(fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB) < 0) {
		ssize_t n;

		if (errno != EWOULDBLOCK) {
			ret = ic_fail(-errno, "%s: lock: %s", path, strerror(errno));
		} else {
			/* the holder's text comes from the storage: printed sanitised */
			n = pread(fd, who, sizeof(who) - 1, 0);
			ic_sanitize(who, n > 0 ? (size_t)n : 0, safe, sizeof(safe));
			ret = ic_fail(-EBUSY, "%s: chain is locked by another writer (%s)", dir,
				      *safe ? safe : "unknown holder");
		}
		close(fd);
		goto out;
	}
	if (gethostname(host, sizeof(host)) < 0)
		strcpy(host, "?");
	host[sizeof(host) - 1] = '\0';
	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]) && !h; i++)
		if (!held[i].used)
			h = &held[i];
	/* name the holder in the first line, unless the file has other names (a hard link:
	 * its bytes are someone else's too) */
	if (h && fstat(fd, &st) == 0 && st.st_nlink == 1) {
		int len = snprintf(who, sizeof(who), "pid %d on %s\n", (int)getpid(), host);
		ssize_t n = pread(fd, h->saved, (size_t)len, 0);

		if (n >= 0) {
			h->used = true;
			h->fd = fd;
			h->size = st.st_size;
			h->n = (size_t)n;
			if (pwrite(fd, who, (size_t)len, 0) < 0)
				(void)0;    /* the holder text is informational only */
		}
	}
	*fd_out = fd;
out:
	free(path);
	return ret;
}

void ic_chain_unlock(int fd)
{
	if (fd < 0)
		return;
	for (size_t i = 0; i < sizeof(held) / sizeof(held[0]); i++) {
		struct held_lock *h = &held[i];
		struct stat st;

		if (!h->used || h->fd != fd)
			continue;
		/* put back what was there: the bytes, and the size when the name made it
		 * longer (only bytes this holder added are cut) */
		if (pwrite(fd, h->saved, h->n, 0) < 0)
			(void)0;
		if (fstat(fd, &st) == 0 && st.st_size > h->size && ftruncate(fd, h->size) < 0)
			(void)0;
		h->used = false;
	}
	close(fd);
}

int ic_chain_check_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char other[1200] = "";

	if (!d)
		return ic_fail(-errno, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		const char *n = de->d_name;

		if (!strcmp(n, ICF_KEYFILE_NAME) || image_name(n)) {
			closedir(d);
			return 0;
		}
		if (strcmp(n, ".") && strcmp(n, "..") && strcmp(n, ICF_LOCK_NAME) &&
		    strncmp(n, ICF_TMP_PREFIX, strlen(ICF_TMP_PREFIX)) && !other[0])
			ic_sanitize(n, strlen(n), other, sizeof(other));
	}
	closedir(d);
	if (other[0])
		return ic_fail(-ENOTEMPTY, "%s: not a chain and not empty (it holds '%s'): a new chain is only created in an absent or empty directory",
			       dir, other);
	return 0;
}

int ic_chain_cleanup_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char safe[1200];

	if (!d)
		return ic_fail(-errno, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		struct stat st;

		if (strncmp(de->d_name, ICF_TMP_PREFIX, strlen(ICF_TMP_PREFIX)))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		ic_sanitize(de->d_name, strlen(de->d_name), safe, sizeof(safe));
		/* a link is removed itself, never followed; anything else is not ours */
		if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
			ic_msg("warning: %s/%s: a %s, not a temporary file: left alone", dir, safe,
			       ic_file_kind(st.st_mode));
			continue;
		}
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
			int e = errno;

			closedir(d);
			return ic_fail(-e, "%s/%s: remove: %s", dir, safe, strerror(e));
		}
	}
	closedir(d);
	return 0;
}
