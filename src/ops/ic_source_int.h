/* ic_source_int.h: one kind of source (not installed): ic_source.c (files, block
 * devices) and ic_source_nbd.c (libnbd) fill the operations ic_source.c dispatches. */
#ifndef IC_SOURCE_INT_H
#define IC_SOURCE_INT_H

#include "ic_source.h"

struct ic_source_ops {
	int (*zero_blocks)(struct ic_source *s, uint32_t bs, uint8_t *map, uint8_t mark);
	int (*dirty_blocks)(struct ic_source *s, uint32_t bs, uint8_t *map);
	int (*read)(struct ic_source *s, void *buf, size_t len, uint64_t off);
	/* optional: several ranges at once (else read, one after the other) */
	int (*read_many)(struct ic_source *s, const struct ic_source_rd *rd, size_t n);
	int (*check_end)(struct ic_source *s);
	void (*close)(struct ic_source *s);
};

struct ic_source {
	const struct ic_source_ops *ops;
	const char *spec;       /* as given: every message names it */
	uint64_t size;
	bool remote;
	void *priv;
};

int ic_source_nbd_open(struct ic_source *s, const char *bitmap);

/* Blocks wholly inside [a, b) of a disk of size bytes: first and end (exclusive); the
 * last, shorter block counts when b reaches the end. */
void ic_source_inner_blocks(uint64_t a, uint64_t b, uint64_t size, uint32_t bs,
			    uint64_t *first, uint64_t *end);

#endif
