/* fuzz_vhdx.c: VHD and VHDX synthesis on arbitrary disk sizes, block sizes, allocations and
 * read ranges; a read must equal the same range read in two pieces, and every payload byte
 * must be the disk's byte of the block the allocation map selects (zero past the disk). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ic_vhd.h"
#include "ic_vhdx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)((off * 2654435761u) >> 7) | 1;
}

static int read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	const uint64_t *disk_size = arg;
	uint8_t *p = buf;

	if (off + len > *disk_size)
		abort();                /* never asked past the disk */
	for (size_t i = 0; i < len; i++)
		p[i] = pattern(off + i);
	return 0;
}

static void check_vhdx(const struct ic_vhdx *x, const uint8_t *buf, size_t len, uint64_t off)
{
	uint64_t k = UINT64_MAX, b = 0;

	for (size_t i = 0; i < len; i++) {
		uint64_t fo = off + i, rel, pos;

		if (fo < x->data_offset)
			continue;
		if (fo >= x->file_size) {
			if (buf[i])
				abort();
			continue;
		}
		rel = fo - x->data_offset;
		if (rel / x->block != k) {      /* one select per block */
			k = rel / x->block;
			b = ic_rank_select(x->alloc, k);
		}
		pos = b * x->block + rel % x->block;
		if (buf[i] != (pos < x->disk_size ? pattern(pos) : 0))
			abort();
	}
}

/* The file of a VHD or a VHDX (one of the two set). */
struct file {
	const struct ic_vhd *v;
	const struct ic_vhdx *x;
	uint64_t *disk_size;
};

static int file_read(const struct file *f, uint8_t *buf, size_t len, uint64_t off)
{
	return f->v ? ic_vhd_read(f->v, buf, len, off, read_disk, f->disk_size) :
		      ic_vhdx_read(f->x, buf, len, off, read_disk, f->disk_size);
}

/* A read of [off, off+len) into a equals the same range read in two pieces. */
static void read_twice(const struct file *f, uint8_t *a, uint8_t *b, size_t len, uint64_t off,
		       size_t split)
{
	if (file_read(f, a, len, off) || file_read(f, b, split, off) ||
	    file_read(f, b + split, len - split, off + split) || memcmp(a, b, len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t a[1 << 20], b[1 << 20];
	static const struct ic_vhdx_ids ids = { .disk_id = { 1 } };
	static const uint8_t uuid[16] = { 2 };
	struct ic_vhdx x;
	struct ic_rank alloc;
	struct ic_vhd v;
	uint64_t disk, off;
	uint32_t len, split;
	uint8_t shift;

	if (size < 21)
		return 0;
	memcpy(&disk, data, 8);
	memcpy(&off, data + 8, 8);
	memcpy(&len, data + 16, 4);
	shift = data[20];
	data += 21;
	size -= 21;
	disk %= 1ull << 36;             /* up to 64 GiB: the map stays small, runs fast */
	len %= 1u << 18;                /* reads up to 256 KiB: many runs a second */
	split = len ? (uint32_t)(off % len) : 0;
	if (ic_vhd_init(&v, disk, (int64_t)off, uuid) == 0) {
		struct file f = { .v = &v, .disk_size = &disk };

		read_twice(&f, a, b, len, off % (v.file_size + 4096), split);
	}
	if (ic_vhdx_init(&x, disk, 1u << (20 + shift % 9), &ids) ||
	    ic_rank_init(&alloc, x.nblocks))
		return 0;
	/* the allocation: runs of blocks from the input (4 bytes each: first, length) */
	for (size_t i = 0; i + 4 <= size; i += 4) {
		uint64_t first = ((uint64_t)data[i] << 8 | data[i + 1]) % x.nblocks;

		ic_rank_set_range(&alloc, first, first + (uint64_t)(data[i + 2] + 1) * data[i + 3]);
	}
	ic_rank_seal(&alloc);
	if (ic_vhdx_set_alloc(&x, &alloc) == 0) {
		struct file f = { .x = &x, .disk_size = &disk };

		off %= x.file_size + 4096;
		read_twice(&f, a, b, len, off, split);
		check_vhdx(&x, a, len, off);
	}
	ic_rank_free(&alloc);
	return 0;
}
