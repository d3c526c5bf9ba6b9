/* vmdk_disk.h: the in-memory test disk of test_vmdk and test_vmdk_qemu (included by
 * both; everything static): grains of data, holes, a single byte, a short last grain. */
#ifndef VMDK_DISK_H
#define VMDK_DISK_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ic_vmdk.h"
#include "unit.h"

#define DISK_SIZE (5ull * 1024 * 1024 + 1234)   /* neither sector- nor grain-aligned */
#define GRAIN 65536u
#define GSECT (GRAIN / 512u)
#define SPARSE_NAME "disk-sparse.vmdk"

/* ---- the in-memory test disk ------------------------------------------------- */

struct tdisk {
	uint8_t *bytes;
	uint64_t size;
	bool *zero;                 /* per grain, found by scanning the bytes */
	uint64_t n_grains;
	struct ic_rank alloc;       /* the grains that are not zero */
	unsigned read_calls;
	int fail;                   /* read_disk returns this when non-zero */
};

static struct tdisk disk;

static inline int t_read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	struct tdisk *d = arg;

	d->read_calls++;
	if (d->fail)
		return d->fail;
	CHECK(off + len <= d->size);
	if (off + len > d->size)
		return -EIO;
	memcpy(buf, d->bytes + off, len);
	return 0;
}

static const struct ic_vmdk_source tsrc = {
	.read_disk = t_read_disk,
	.arg = &disk,
};

static inline uint8_t pattern(uint64_t off)
{
	return (uint8_t)(((off >> 9) * 31 + off * 7) | 1);
}

/* The sealed map of the grains that are not zero. */
static inline void alloc_of(const bool *zero, uint64_t n, struct ic_rank *r)
{
	CHECK_EQ(ic_rank_init(r, n), 0);
	for (uint64_t g = 0; g < n; g++)
		if (!zero[g])
			ic_rank_set_range(r, g, g + 1);
	ic_rank_seal(r);
}

/* Grains 20..39 are data (a long run); elsewhere every third grain is a hole; grain 5
 * holds a single byte at its end, grain 7 only its first sector; the last grain is
 * short (1234 bytes of disk, then capacity padding, then grain padding). */
static inline void disk_fill(void)
{
	disk.size = DISK_SIZE;
	disk.n_grains = (DISK_SIZE + GRAIN - 1) / GRAIN;
	disk.bytes = calloc(1, DISK_SIZE);
	disk.zero = calloc(disk.n_grains, sizeof(bool));
	for (uint64_t g = 0; g < disk.n_grains; g++) {
		uint64_t a = g * GRAIN, b = a + GRAIN < DISK_SIZE ? a + GRAIN : DISK_SIZE;

		if (g % 3 == 1 && !(g >= 20 && g < 40))
			continue;
		if (g == 5)
			a = b - 1;
		if (g == 7)
			b = a + 512;
		for (uint64_t o = a; o < b; o++)
			disk.bytes[o] = pattern(o);
	}
	for (uint64_t g = 0; g < disk.n_grains; g++) {
		uint64_t a = g * GRAIN, b = a + GRAIN < DISK_SIZE ? a + GRAIN : DISK_SIZE;

		disk.zero[g] = true;
		for (uint64_t o = a; o < b && disk.zero[g]; o++)
			disk.zero[g] = disk.bytes[o] == 0;
	}
	alloc_of(disk.zero, disk.n_grains, &disk.alloc);
}

static inline uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

static inline void ident_of(const char *seed, struct ic_vmdk_ident *id)
{
	ic_vmdk_ident_derive(seed, strlen(seed), id);
}

/* A sparse file of the test disk: planned, then its grains given. */
static inline int sparse_of(struct ic_vmdk_sparse *s, const struct ic_vmdk_ident *id)
{
	int ret = ic_vmdk_sparse_init(s, DISK_SIZE, GRAIN, SPARSE_NAME, id);

	return ret ? ret : ic_vmdk_sparse_set_alloc(s, &disk.alloc);
}

static inline uint8_t *sparse_whole(const struct ic_vmdk_sparse *s)
{
	uint8_t *f = malloc(s->file_size);

	CHECK(f != NULL);
	CHECK_EQ(ic_vmdk_sparse_read(s, f, s->file_size, 0, &tsrc), 0);
	return f;
}

static inline void disk_free(void)
{
	free(disk.bytes);
	free(disk.zero);
	ic_rank_free(&disk.alloc);
}

#endif
