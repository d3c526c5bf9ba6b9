/* ic_disk.h: the files that show one restore point's disk, as pure byte views:
 *   disk.raw          the disk, byte for byte (through the block cache)
 *   disk-flat.vmdk    the same bytes, then zeros to a whole sector: the flat extent of
 *                     disk.vmdk, which counts whole sectors
 *   disk.vmdk         a descriptor (createType "vmfs") naming disk-flat.vmdk
 *   disk-sparse.vmdk  a compact monolithicSparse VMDK computed on the fly: metadata, then
 *                     the 64 KiB grains that hold data one after another; zero grains are
 *                     not stored (only below the format's limit of about 2 TiB)
 *   info.json         the point's metadata
 * CIDs and UUIDs derive from the chain id and the point's sequence, so a remount shows
 * identical bytes.  Knows nothing of FUSE or overlays.
 *
 * Sizes, the descriptor and info.json are computed without key or I/O (ic_disk_new), from
 * the point's slot, which only its seal authenticates: reading any file, the metadata ones
 * included, needs a view attached (ic_disk_attach), which a caller does only once the
 * point's seal passed; sizes (and names) before that are unverified.  The size of
 * disk-sparse.vmdk depends on which grains hold data: it is known from the first attach
 * on (ic_disk_sized), and the same on every later attach and every mount.  A read over a block that
 * fails authentication returns that error (IC_ECORRUPT) for the whole range, and the
 * cache reports it once, naming the point and the position.
 */
#ifndef IC_DISK_H
#define IC_DISK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ic_cache.h"
#include "ic_chain.h"
#include "ic_view.h"

enum ic_disk_file {
	IC_DISK_RAW,
	IC_DISK_FLAT,
	IC_DISK_DESC,
	IC_DISK_SPARSE,
	IC_DISK_INFO,
	IC_DISK_NFILES
};

#define IC_DISK_SPARSE_GRAIN 65536u

/* What a disk needs to know of its point (copied: nothing of the chain is kept). */
struct ic_disk_info {
	char name[ICF_NAME_MAX + 1];
	char parent[ICF_NAME_MAX + 1]; /* "" for none */
	uint32_t seq, parent_seq, kind;
	int64_t created;
	uint64_t disk_size;
	uint32_t block_size;
	uint8_t chain_id[ICF_ID_LEN];
};

void ic_disk_info_from_point(const struct ic_chain *c, const struct ic_point *p,
			     struct ic_disk_info *out);

struct ic_disk;

/* Compute the metadata files and the sparse layout.  -ENOMEM, -EINVAL. */
int ic_disk_new(const struct ic_disk_info *info, struct ic_disk **out);
/* Detaches first if needed (NULL is fine). */
void ic_disk_free(struct ic_disk *d);
const struct ic_disk_info *ic_disk_get_info(const struct ic_disk *d);

/* File names, and the file of a name (-1 when none). */
const char *ic_disk_file_name(enum ic_disk_file f);
int ic_disk_file_from_name(const char *name);
/* Is the file offered for this disk (disk-sparse.vmdk is not past the 2 TiB limit)? */
bool ic_disk_has(const struct ic_disk *d, enum ic_disk_file f);
/* Do reads of the file need a view attached (every file does: see above)? */
bool ic_disk_needs_view(enum ic_disk_file f);
/* Size of file f: for disk-sparse.vmdk before any attach, the size with every grain stored
 * (an upper bound; not the file's size). */
uint64_t ic_disk_size(const struct ic_disk *d, enum ic_disk_file f);
/* Is ic_disk_size final (all but disk-sparse.vmdk always; it once a view was attached)?
 * A caller that must know the size (a stat, an overlay over the file) attaches first. */
bool ic_disk_sized(const struct ic_disk *d, enum ic_disk_file f);

/* Serve disk reads from view v through cache (neither owned; both must outlive the
 * attachment).  The caller serialises attach/detach against reads: reads of the
 * files that need a view happen only while attached.  The first attach also finds the
 * grains of disk-sparse.vmdk (one pass over the view's map, no disk read).  0, -ENOMEM,
 * -EINVAL, or IC_ECORRUPT for a map that disagrees with the point's geometry. */
int ic_disk_attach(struct ic_disk *d, struct ic_cache *cache, const struct ic_view *v);
void ic_disk_detach(struct ic_disk *d);

/* Read up to len bytes of file f at off into buf (short at end of file, 0 past it).
 * st (may be NULL) is the reader's readahead state.  Returns the byte count or a
 * negative errno (IC_ECORRUPT for a damaged block, -ENXIO if not attached). */
ssize_t ic_disk_read(struct ic_disk *d, enum ic_disk_file f, struct ic_cache_stream *st,
		     void *buf, size_t len, uint64_t off);

#endif
