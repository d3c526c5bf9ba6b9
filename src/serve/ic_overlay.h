/* ic_overlay.h: a persistent copy-on-write overlay over one read-only file.
 *
 * Writes land in files under the overlay directory, never in the base; reads merge
 * the overlay's blocks with the base's bytes.  Block granular (IC_OVERLAY_BLOCK).
 * The overlay may grow past the base (a sparse VMDK allocating grains) or be
 * truncated.  Reopening the same paths brings every write back; after
 * ic_overlay_fsync() returns, every write before it survives a crash or SIGKILL.
 * Thread-safe: concurrent reads and writes on one overlay are serialised inside.
 * Knows nothing of FUSE, chains or keys. */
#ifndef IC_OVERLAY_H
#define IC_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define IC_OVERLAY_BLOCK 4096u

/* Reads base bytes [off, off+len) into buf; never called past base_size.
 * Returns 0 or -errno (e.g. -EIO for a block that failed authentication). */
typedef int (*ic_base_read_fn)(void *arg, void *buf, size_t len, uint64_t off);

struct ic_overlay;

/* What an overlay belongs to.  The id is opaque here (imgmount: the chain id and the
 * point's seal) and compared byte for byte; the label only names it in messages
 * (printable ASCII, e.g. "restore point 'tue' (seq 3, seal 1a2b3c4d5e6f7a8b)"). */
#define IC_OVERLAY_BIND_LEN 48u
#define IC_OVERLAY_LABEL_MAX 255u
struct ic_overlay_bind {
	uint8_t id[IC_OVERLAY_BIND_LEN];
	char label[IC_OVERLAY_LABEL_MAX + 1];
};

/* The binding of a restore point's overlays (FORMAT.md 10.3): id = the chain id (16 bytes)
 * and the point's seal (32), label "restore point 'NAME' (seq N, seal 16 hex digits)". */
void ic_overlay_bind_point(struct ic_overlay_bind *b, const uint8_t chain_id[16],
			   const uint8_t seal[32], const char *name, uint32_t seq);

/* Open or create the overlay whose files are prefix + ".data" / ".map" (the
 * directory must exist).  base_size is the size of the base file; bind (NULL: an
 * all-zero id, no label) is what the overlay belongs to: a new overlay records it at
 * its first commit, an existing one must carry the same id and base size.
 * -ESTALE, with a message naming the overlay and both bindings, when it belongs to
 * another base (or is of version 1, which recorded none); nothing is written then. */
int ic_overlay_open(const char *prefix, uint64_t base_size, const struct ic_overlay_bind *bind,
		    struct ic_overlay **out);
void ic_overlay_close(struct ic_overlay *ov);

/* Current size of the file seen through the overlay. */
uint64_t ic_overlay_size(struct ic_overlay *ov);
/* True once anything was written or truncated (the overlay differs from the base). */
bool ic_overlay_modified(struct ic_overlay *ov);

/* Read up to len bytes at off (short at EOF); returns bytes read or -errno. */
ssize_t ic_overlay_read(struct ic_overlay *ov, void *buf, size_t len, uint64_t off,
			ic_base_read_fn base, void *arg);
/* Write len bytes at off, extending the file if needed; partial blocks are
 * completed from the base.  Returns len or -errno. */
ssize_t ic_overlay_write(struct ic_overlay *ov, const void *buf, size_t len, uint64_t off,
			 ic_base_read_fn base, void *arg);
/* From off, the length (<= len, > 0) of the run of bytes whose blocks the overlay holds
 * (*present true: written, or past what the base still shows) or the base shows. */
uint64_t ic_overlay_extent(struct ic_overlay *ov, uint64_t off, uint64_t len, bool *present);
int ic_overlay_truncate(struct ic_overlay *ov, uint64_t size);
/* Make every completed write durable (data, then the block map and size). */
int ic_overlay_fsync(struct ic_overlay *ov);
/* Hand the files to another process (FORMAT.md 10.7): wait for the writes in progress,
 * commit them, and from then on never change the files again: writes and truncates fail
 * with -EROFS, fsync and close commit nothing (0, or the commit's error).  Reads go on,
 * from this process's map (blocks it held read from the shared data file).  0 or -errno
 * (the commit's error; released anyway). */
int ic_overlay_release(struct ic_overlay *ov);

/* A consistent cut of an overlay that another process (imgmount) may be writing
 * (FORMAT.md 10.6): waits for the overlay's cut lock, reads its committed map and copies
 * its data file into a private unlinked file beside it (a reflink where the file system
 * has them, else the overlay's blocks copied), then lets the writer go on.  The cut is
 * the files as they were at that instant, which is what the overlay would hold after a
 * crash there: every write flushed before it, never half a write.  -ENOENT when there is
 * no overlay; -ESTALE (nothing read) when it belongs to another base than bind/base_size.
 * The snapshot reads like an overlay (ic_overlay_read, ic_overlay_size) and is freed with
 * ic_overlay_snap_free; it never writes to the overlay's files. */
struct ic_overlay_snap_info {
	uint64_t size;              /* of the file seen through the overlay at the cut */
	uint64_t base_limit;        /* base bytes below it, zeros above */
	uint64_t generation;        /* of the committed map taken */
	uint64_t blocks;            /* overlay blocks present */
	double frozen;              /* seconds the writers waited */
	bool cloned;                /* the data was reflinked (else copied) */
};
int ic_overlay_snapshot(const char *prefix, uint64_t base_size, const struct ic_overlay_bind *bind,
			struct ic_overlay **out, struct ic_overlay_snap_info *info);
/* The first overlay block in [blk, limit) whose presence differs from present, or limit. */
uint64_t ic_overlay_run(struct ic_overlay *snap, uint64_t blk, uint64_t limit, bool present);
void ic_overlay_snap_free(struct ic_overlay *snap);

#endif
