/* ic_vhdx.c: the compact dynamic VHDX of a disk (headers, region table, metadata, BAT,
 * payload blocks of data one after another). */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "ic_vhdx.h"

#define KIB64 (64u << 10)
#define MIB (1u << 20)
#define OFF_HEADER1 (1 * KIB64)
#define OFF_HEADER2 (2 * KIB64)
#define OFF_REGION1 (3 * KIB64)
#define OFF_REGION2 (4 * KIB64)
#define OFF_LOG (1ull * MIB)
#define LOG_LEN MIB
#define OFF_META (2ull * MIB)
#define META_LEN MIB
#define OFF_BAT (3ull * MIB)
#define ITEMS_AT KIB64              /* metadata items, relative to the region */
#define SECTOR 512u
#define SECTORS_PER_CHUNK (1ull << 23) /* chunk ratio = 2^23 x sector / block */
#define BAT_ZERO 2u                 /* PAYLOAD_BLOCK_ZERO: reads as zeros, no file offset */
#define BAT_FULLY_PRESENT 6u
#define META_VIRTUAL 0x2u
#define META_REQUIRED 0x4u
#define CREATOR "imgchain"

/* ---- CRC-32C ------------------------------------------------------------------------ */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t ic_crc32c(uint32_t crc, const void *p, size_t n)
{
	const uint8_t *b = p;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* CRC-32C of the first len bytes of a structure of total bytes whose rest is zero. */
static uint32_t crc_padded(const uint8_t *p, size_t len, size_t total)
{
	static const uint8_t zero[4096];
	uint32_t crc = ic_crc32c(0, p, len);

	for (total -= len; total; ) {
		size_t n = total < sizeof(zero) ? total : sizeof(zero);

		crc = ic_crc32c(crc, zero, n);
		total -= n;
	}
	return crc;
}

/* ---- little-endian fields and GUIDs --------------------------------------------------- */

/* An n-byte little-endian field at p. */
static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

#define put16(p, v) put_le(p, v, 2)
#define put32(p, v) put_le(p, v, 4)
#define put64(p, v) put_le(p, v, 8)

/* A GUID written as text d1-d2-d3-d4 (d4: its last 16 hex digits), stored as Microsoft's
 * GUID structure: three little-endian fields, then 8 bytes in order. */
static void put_guid(uint8_t *p, uint32_t d1, uint16_t d2, uint16_t d3, uint64_t d4)
{
	put32(p, d1);
	put16(p + 4, d2);
	put16(p + 6, d3);
	for (int i = 7; i >= 0; i--, d4 >>= 8)
		p[8 + i] = (uint8_t)d4;
}

#define GUID_BAT(p) put_guid(p, 0x2dc27766, 0xf623, 0x4200, 0x9d64115e9bfd4a08ull)
#define GUID_META(p) put_guid(p, 0x8b7ca206, 0x4790, 0x4b9a, 0xb8fe575f050f886eull)
#define GUID_FILE_PARAMS(p) put_guid(p, 0xcaa16737, 0xfa36, 0x4d43, 0xb3b633f0aa44e76bull)
#define GUID_VIRT_SIZE(p) put_guid(p, 0x2fa54224, 0xcd1b, 0x4876, 0xb2115dbed83bf4b8ull)
#define GUID_PAGE83(p) put_guid(p, 0xbeca12ab, 0xb2e6, 0x4523, 0x93efc309e000c746ull)
#define GUID_LOGICAL(p) put_guid(p, 0x8141bf1d, 0xa96f, 0x4709, 0xba47f233a8faab5full)
#define GUID_PHYSICAL(p) put_guid(p, 0xcda348c7, 0x445d, 0x4471, 0x9cc9e9885251c556ull)

/* ---- layout ---------------------------------------------------------------------------- */

static void build_header(struct ic_vhdx *x, int i, const struct ic_vhdx_ids *ids)
{
	uint8_t *h = x->header[i];

	memset(h, 0, sizeof(x->header[i]));
	memcpy(h, "head", 4);
	put64(h + 8, (uint64_t)i + 1);          /* header 2 (sequence 2) is current */
	memcpy(h + 16, ids->file_write, 16);
	memcpy(h + 32, ids->data_write, 16);
	/* log GUID (48) zero: nothing to replay; log version (64) 0 */
	put16(h + 66, 1);                       /* version */
	put32(h + 68, LOG_LEN);
	put64(h + 72, OFF_LOG);
	put32(h + 4, ic_crc32c(0, h, sizeof(x->header[i])));
}

static void build_region(struct ic_vhdx *x)
{
	uint8_t *r = x->region;

	memset(r, 0, sizeof(x->region));
	memcpy(r, "regi", 4);
	put32(r + 8, 2);                        /* entry count */
	GUID_BAT(r + 16);
	put64(r + 32, OFF_BAT);
	put32(r + 40, (uint32_t)x->bat_len);
	put32(r + 44, 1);                       /* required */
	GUID_META(r + 48);
	put64(r + 64, OFF_META);
	put32(r + 72, META_LEN);
	put32(r + 76, 1);
	put32(r + 4, crc_padded(r, sizeof(x->region), KIB64));
}

/* The metadata table (five required items) and the items it points at. */
static void build_meta(struct ic_vhdx *x, const struct ic_vhdx_ids *ids)
{
	static const struct { uint32_t at, len, flags; } it[5] = {
		{ 0, 8, META_REQUIRED },                        /* file parameters */
		{ 8, 8, META_VIRTUAL | META_REQUIRED },         /* virtual disk size */
		{ 16, 16, META_VIRTUAL | META_REQUIRED },       /* page 83 data (disk id) */
		{ 32, 4, META_VIRTUAL | META_REQUIRED },        /* logical sector size */
		{ 36, 4, META_VIRTUAL | META_REQUIRED },        /* physical sector size */
	};
	uint8_t *m = x->meta;

	memset(m, 0, sizeof(x->meta));
	memcpy(m, "metadata", 8);
	put16(m + 10, 5);
	GUID_FILE_PARAMS(m + 32);
	GUID_VIRT_SIZE(m + 64);
	GUID_PAGE83(m + 96);
	GUID_LOGICAL(m + 128);
	GUID_PHYSICAL(m + 160);
	for (int i = 0; i < 5; i++) {
		put32(m + 32 * (i + 1) + 16, ITEMS_AT + it[i].at);
		put32(m + 32 * (i + 1) + 20, it[i].len);
		put32(m + 32 * (i + 1) + 24, it[i].flags);
	}
	memset(x->items, 0, sizeof(x->items));
	put32(x->items, x->block);              /* flags 0: dynamic, no parent */
	put64(x->items + 8, x->virt_size);
	memcpy(x->items + 16, ids->disk_id, 16);
	put32(x->items + 32, SECTOR);
	put32(x->items + 36, SECTOR);
}

int ic_vhdx_init(struct ic_vhdx *x, uint64_t disk_size, uint32_t block_bytes,
		 const struct ic_vhdx_ids *ids)
{
	memset(x, 0, sizeof(*x));
	if (disk_size == 0 || block_bytes < IC_VHDX_BLOCK_MIN || block_bytes > IC_VHDX_BLOCK_MAX ||
	    (block_bytes & (block_bytes - 1)))
		return -EINVAL;
	if (disk_size > IC_VHDX_MAX_SIZE)
		return -EFBIG;
	x->disk_size = disk_size;
	x->virt_size = (disk_size + SECTOR - 1) / SECTOR * SECTOR;
	x->block = block_bytes;
	x->nblocks = (uint32_t)((x->virt_size + block_bytes - 1) / block_bytes);
	x->chunk_ratio = (uint32_t)(SECTORS_PER_CHUNK * SECTOR / block_bytes);
	x->bat_entries = x->nblocks + (x->nblocks - 1) / x->chunk_ratio;
	x->bat_len = (x->bat_entries * 8 + MIB - 1) / MIB * MIB;
	x->data_offset = OFF_BAT + x->bat_len;
	build_header(x, 0, ids);
	build_header(x, 1, ids);
	build_region(x);
	build_meta(x, ids);
	return 0;
}

/* ---- allocation ------------------------------------------------------------------------ */

int ic_vhdx_set_alloc(struct ic_vhdx *x, const struct ic_rank *alloc)
{
	if (alloc->n != x->nblocks)
		return -EINVAL;
	x->alloc = alloc;
	x->file_size = x->data_offset + alloc->count * x->block;
	x->ready = true;
	return 0;
}

bool ic_vhdx_present(const struct ic_vhdx *x, uint64_t b)
{
	return b < x->nblocks && ic_rank_test(x->alloc, b);
}

uint64_t ic_vhdx_block_offset(const struct ic_vhdx *x, uint64_t b)
{
	return x->data_offset + ic_rank_of(x->alloc, b) * x->block;
}

/* ---- reads ---------------------------------------------------------------------------- */

/* Copy the part of [at, at+n) of src that falls in the buffer's range [off, off+len). */
static void copy_part(uint8_t *p, size_t len, uint64_t off, uint64_t at, const void *src,
		      size_t n)
{
	uint64_t from = at > off ? at : off;
	uint64_t to = at + n < off + len ? at + n : off + len;

	if (from < to)
		memcpy(p + (from - off), (const uint8_t *)src + (from - at), (size_t)(to - from));
}

static uint64_t bat_entry(const struct ic_vhdx *x, uint64_t i)
{
	uint64_t group = (uint64_t)x->chunk_ratio + 1, b;

	if (i % group == x->chunk_ratio)
		return 0;                       /* sector bitmap: not present (no parent) */
	b = i / group * x->chunk_ratio + i % group;
	if (!ic_vhdx_present(x, b))
		return BAT_ZERO;    /* not NOT_PRESENT (0), whose contents are undefined */
	return ic_vhdx_block_offset(x, b) | BAT_FULLY_PRESENT;
}

/* Metadata bytes [off, off+len), all below data_offset. */
static void read_meta(const struct ic_vhdx *x, uint8_t *p, size_t len, uint64_t off)
{
	uint8_t id[8 + 2 * sizeof(CREATOR)] = "vhdxfile";
	uint64_t first, last;

	memset(p, 0, len);
	for (size_t i = 0; i < sizeof(CREATOR) - 1; i++)
		id[8 + 2 * i] = (uint8_t)CREATOR[i];        /* UTF-16LE */
	copy_part(p, len, off, 0, id, sizeof(id));
	copy_part(p, len, off, OFF_HEADER1, x->header[0], sizeof(x->header[0]));
	copy_part(p, len, off, OFF_HEADER2, x->header[1], sizeof(x->header[1]));
	copy_part(p, len, off, OFF_REGION1, x->region, sizeof(x->region));
	copy_part(p, len, off, OFF_REGION2, x->region, sizeof(x->region));
	copy_part(p, len, off, OFF_META, x->meta, sizeof(x->meta));
	copy_part(p, len, off, OFF_META + ITEMS_AT, x->items, sizeof(x->items));
	if (off + len <= OFF_BAT || off >= OFF_BAT + x->bat_entries * 8)
		return;
	first = off > OFF_BAT ? (off - OFF_BAT) / 8 : 0;
	last = (off + len - OFF_BAT + 7) / 8;
	if (last > x->bat_entries)
		last = x->bat_entries;
	for (uint64_t i = first; i < last; i++) {
		uint8_t e[8];

		put64(e, bat_entry(x, i));
		copy_part(p, len, off, OFF_BAT + 8 * i, e, 8);
	}
}

/* Disk bytes [pos, pos+n), zeros past the disk's end. */
static int read_tail(const struct ic_vhdx *x, uint8_t *p, size_t n, uint64_t pos,
		     ic_vhd_read_fn read_disk, void *arg)
{
	size_t have = pos >= x->disk_size ? 0 :
		      x->disk_size - pos < n ? (size_t)(x->disk_size - pos) : n;
	int ret = have ? read_disk(arg, p, have, pos) : 0;

	memset(p + have, 0, n - have);
	return ret;
}

/* Payload bytes: the file's bytes from data_offset + rel, one read per run of payload
 * blocks that are consecutive on the disk too. */
static int read_payload(const struct ic_vhdx *x, uint8_t *p, size_t len, uint64_t rel,
			ic_vhd_read_fn read_disk, void *arg)
{
	struct ic_rank_walk w;
	uint64_t at;
	size_t n;

	ic_rank_walk_start(&w, x->alloc, x->block, rel, len);
	while (ic_rank_walk_next(&w, &at, &n)) {
		int ret = read_tail(x, p, n, at, read_disk, arg);

		if (ret)
			return ret;
		p += n;
	}
	return 0;
}

int ic_vhdx_read(const struct ic_vhdx *x, void *buf, size_t len, uint64_t off,
		 ic_vhd_read_fn read_disk, void *arg)
{
	uint8_t *p = buf;
	size_t n;

	if (!x->ready)
		return -ENXIO;
	n = off >= x->file_size ? 0 : x->file_size - off < len ? (size_t)(x->file_size - off) : len;
	memset(p + n, 0, len - n);      /* past the end of the file */
	len = n;
	if (off < x->data_offset) {
		n = x->data_offset - off < len ? (size_t)(x->data_offset - off) : len;
		read_meta(x, p, n, off);
		p += n;
		off += n;
		len -= n;
	}
	return len ? read_payload(x, p, len, off - x->data_offset, read_disk, arg) : 0;
}
