/* ic_chain.h: a chain directory: its images as a tree of restore points, and the
 * writers' lock.  Opening a chain needs no key. */
#ifndef IC_CHAIN_H
#define IC_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "ic_image.h"

struct ic_point {
	struct ic_image *img;       /* open image; img->slot describes the point */
	uint32_t seq;
	struct ic_point *parent;    /* NULL for a full, or when broken */
	bool broken;                /* an ancestor is missing or damaged */
	uint32_t depth;             /* images on the path from the root, itself included */
	uint32_t nchildren;
};

/* A file of the chain directory that could not be used, with the reason. */
struct ic_bad_file {
	char *path;
	char *why;
	int err;
	uint32_t name_seq;          /* the sequence its file name claims */
};

struct ic_chain {
	char *dir;
	bool have_images;
	uint32_t block_size;
	uint8_t chain_id[ICF_ID_LEN];
	uint8_t key_check[ICF_CHECK_LEN];
	struct ic_point *points;    /* ascending seq */
	size_t npoints, points_cap;
	struct ic_bad_file *bad;    /* damaged or foreign files, skipped */
	size_t nbad, bad_cap;
	struct ic_image **stale;    /* images superseded by another file with the same seq */
	size_t nstale, stale_cap;
	uint32_t name_max;          /* the highest seq any image file's name claims */
	char *name_max_path;        /* that file */
};

/* Scan dir (keyless).  -ENOENT with a message if dir does not exist; an existing
 * empty directory is an empty chain.  Damaged files are listed in bad[], not fatal. */
int ic_chain_open(const char *dir, struct ic_chain **out);
void ic_chain_free(struct ic_chain *c);

struct ic_point *ic_chain_find(const struct ic_chain *c, const char *name);
struct ic_point *ic_chain_find_seq(const struct ic_chain *c, uint32_t seq);
/* Find point name for a tool ("latest": ic_chain_latest): -ENOENT "no restore point named" when the chain has
 * no damaged files, else IC_ECORRUPT naming the damaged files (the point may be in
 * one of them). */
int ic_chain_lookup(const struct ic_chain *c, const char *name, struct ic_point **out);
/* Why point p is broken: the damaged image of an ancestor (IC_ECORRUPT) or a
 * missing one (-ENOENT); the message names it. */
int ic_chain_explain_broken(const struct ic_chain *c, const struct ic_point *p);
/* The point with the highest sequence, or NULL. */
struct ic_point *ic_chain_newest(const struct ic_chain *c);
/* The readable (not broken) point with the highest sequence, or NULL: what the name
 * "latest" (ICF_NAME_RESERVED) means to ic_chain_lookup and the mount's link. */
struct ic_point *ic_chain_latest(const struct ic_chain *c);
/* Highest sequence in use by any image, stale file or image file's name (0 if none). */
uint32_t ic_chain_max_seq(const struct ic_chain *c);
/* The sequence number of the next point: above every one in use (ic_chain_max_seq), so
 * that neither a damaged file's nor any image file's name is reused.  -EOVERFLOW naming
 * the file that claims the top when nothing is left up to ICF_SEQ_MAX. */
int ic_chain_next_seq(const struct ic_chain *c, uint32_t *seq);
/* Human name of a slot kind: "full", "incremental", "synthetic-full", "consolidated". */
const char *ic_kind_name(uint32_t kind);
/* A point's name (convenience). */
const char *ic_point_name(const struct ic_point *p);

/* Take the chain's writer lock (CHAIN/lock, flock, released when the process dies).
 * wait=false: -EBUSY naming the holder if taken.  *fd gets the lock descriptor.  The
 * lock file is opened as a regular file only (ic_open_regular) and never truncated. */
int ic_chain_lock(const char *dir, bool wait, int *fd);
void ic_chain_unlock(int fd);
/* Under the lock: remove leftovers of interrupted writers (.tmp-* files): regular files
 * and symlinks (the link, never its target); anything else is left with a warning. */
int ic_chain_cleanup_tmp(const char *dir);
/* A directory a backup may write to: a chain (a key file or an image file is there) or
 * an empty one (nothing but the lock and leftovers of an interrupted first backup).
 * -ENOTEMPTY naming a file otherwise: a mistyped path never mixes images into a user's
 * files. */
int ic_chain_check_dir(const char *dir);

#endif
