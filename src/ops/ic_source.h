/* ic_source.h: what a backup reads: a raw image file or block device, or an NBD export
 * (nbd://, nbds://, nbd+unix://... through libnbd).  The backup pipeline reads only
 * through this: the size, ranges (from any worker thread), the blocks that read as zero
 * (holes, zero extents: recorded without being read), and the blocks a qemu dirty bitmap
 * marks (qemu:dirty-bitmap:NAME). */
#ifndef IC_SOURCE_H
#define IC_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ic_source;

/* True when spec is an NBD URI (nbd:, nbds:, nbd+unix:, nbds+unix:, nbd+vsock:...). */
bool ic_source_is_uri(const char *spec);

/* Open spec read-only.  bitmap: NULL, or the name of a qemu dirty bitmap the export
 * must offer (a file source refuses it).  Errors name spec and the cause. */
int ic_source_open(const char *spec, const char *bitmap, struct ic_source **sp);
void ic_source_close(struct ic_source *s);

uint64_t ic_source_size(const struct ic_source *s);
/* Worker threads worth running beside the CPU-bound ones to hide the read latency
 * (an NBD source: requests wait on the network and on the server). */
bool ic_source_remote(const struct ic_source *s);

/* Set map[b] = mark for every block b (of bs bytes; the last may be shorter) that
 * lies wholly in ranges known to read as zero.  Best effort: what the source cannot
 * tell is left alone. */
int ic_source_zero_blocks(struct ic_source *s, uint32_t bs, uint8_t *map, uint8_t mark);

/* Set map[b] = 1 for every block that a range marked dirty in the bitmap given to
 * ic_source_open touches. */
int ic_source_dirty_blocks(struct ic_source *s, uint32_t bs, uint8_t *map);

/* Read exactly len bytes at off (any thread, concurrently).  A source that ends early
 * fails with a message saying it shrank. */
int ic_source_read(struct ic_source *s, void *buf, size_t len, uint64_t off);

/* Read the n ranges of rd (each as ic_source_read), the source's requests for all of them
 * in flight at once where it can. */
struct ic_source_rd {
	void *buf;
	size_t len;
	uint64_t off;
};
int ic_source_read_many(struct ic_source *s, const struct ic_source_rd *rd, size_t n);

/* After the last read: fail if the source shrank meanwhile (a regular file whose
 * holes past a new end would have read as zeros). */
int ic_source_check_end(struct ic_source *s);

#endif
