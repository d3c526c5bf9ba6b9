/* ic_s3_cons_int.h: the merge of a chain in a bucket (internal to src/store).
 *
 *   ic_s3_cons.c     the scratch chain the merge runs on, the clones it records, the
 *                    publication (images replaced, merged points deleted, the cache)
 *   ic_s3_cons_up.c  one image rewritten in the bucket: its bytes as segments (copied by
 *                    the server from other objects, or sent), the parts, the upload
 *
 * Dependencies point down this list. */
#ifndef IC_S3_CONS_INT_H
#define IC_S3_CONS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ic_array.h"
#include "ic_s3_chain_int.h"

/* Bytes [dst, dst + len) of the file with inode dst_ino are bytes [src_off, src_off + len)
 * of the file with inode src_ino (a clone the merge asked for). */
struct s3c_copy {
	ino_t dst_ino, src_ino;
	uint64_t dst, src_off, len;
};

/* A file of the scratch chain as prepared: a cached image (or the key file) and its inode. */
struct s3c_file {
	char name[16];
	ino_t ino;
	uint64_t size;
	const struct ic_s3_obj *remote;     /* the bucket's object (name, ETag) */
};

struct s3c_copies IC_ARRAY_BODY(struct s3c_copy);

/* An image's bytes in order: sent from the scratch file, zeros, or copied from an object. */
enum { S3C_LOCAL, S3C_ZERO, S3C_COPY };
struct s3c_seg {
	uint64_t dst, len, src_off;
	int kind;
	const struct s3c_file *src;         /* S3C_COPY: the object */
};
/* A part of its upload: [d0, d1) copied by the server (within segment seg) or sent (from
 * segment seg on). */
struct s3c_part {
	uint64_t d0, d1;
	size_t seg;
	bool copy;
};
struct s3c_plan {
	const char *name;                   /* for messages */
	IC_ARRAY(struct s3c_seg) segs;
	IC_ARRAY(struct s3c_part) parts;
};
/* Append a segment (joined to the last one when it continues it). */
int ic_s3c_add_seg(struct s3c_plan *pl, int kind, uint64_t dst, uint64_t len,
		   const struct s3c_file *src, uint64_t src_off);
/* The parts of an image of size bytes whose segments are pl->segs (ic_s3_cons_up.c's
 * header comment), every part but the last at least least bytes; -EFBIG past 10,000. */
int ic_s3c_plan_parts(struct s3c_plan *pl, uint64_t size, uint64_t least);
/* Part k of pl (not a copy) assembled on the server into upload up from its pieces
 * (ic_s3_cons_compose.c), base an object of at least least bytes; the new bytes sent are
 * added to *sent.  -EAGAIN when it is better sent (no base, only new bytes, too many
 * pieces). */
struct ic_s3_upload;
int ic_s3c_compose(struct ic_s3_chain *sc, const struct s3c_plan *pl, size_t k, int fd,
		   struct ic_s3_upload *up, const struct s3c_file *base, uint64_t least,
		   uint64_t *sent);

/* Rewrite object name of the bucket as the scratch file fd (inode ino, size bytes): the
 * bytes the clones of copies[] name are copied by the server from the objects they come
 * from (resolved through intermediate scratch files), the rest is sent.  Counts into st.
 * copies[] sorted by destination inode and offset.  -EFBIG when it would need more than
 * 10,000 parts. */
int ic_s3c_upload(struct ic_s3_chain *sc, const char *name, int fd, ino_t ino, uint64_t size,
		  const struct s3c_copies *copies, const struct s3c_file *files, size_t nfiles,
		  struct ic_s3_cons_stats *st, void (*step)(const char *name));

#endif
