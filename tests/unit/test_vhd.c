/* test_vhd.c: the fixed VHD and the compact dynamic VHDX synthesized from an in-memory disk:
 * CRC-32C and CHS against known values, sizes and limits, the allocation's rank and order,
 * reads at every alignment equal to one whole-file read, one disk read per run of consecutive
 * blocks, and qemu-img (check, compare) on the files written out. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ic_cache.h"
#include "ic_disk.h"
#include "ic_vhd.h"
#include "ic_vhdx.h"
#include "unit.h"

#define MIB (1u << 20)
#define DISK_SIZE (9ull * MIB + 1234)      /* neither sector- nor MiB-aligned */
#define NBLK 10u                           /* 1 MiB payload blocks of DISK_SIZE */

static uint8_t *disk;
static unsigned read_calls;

/* Blocks 1, 4, 5 and 6 hold data (4..6 in one run), the last (partial) one too; the others are
 * zero. */
static const bool data_block[NBLK] = { 0, 1, 0, 0, 1, 1, 1, 0, 0, 1 };

static void disk_fill(void)
{
	disk = calloc(1, DISK_SIZE);
	for (unsigned b = 0; b < NBLK; b++) {
		if (!data_block[b])
			continue;
		for (uint64_t i = (uint64_t)b * MIB; i < (uint64_t)(b + 1) * MIB && i < DISK_SIZE;
		     i += 7)
			disk[i] = (uint8_t)(i * 2654435761u >> 13) | 1;
	}
}

static int t_read(void *arg, void *buf, size_t len, uint64_t off)
{
	(void)arg;
	read_calls++;
	CHECK(off + len <= DISK_SIZE);
	if (off + len > DISK_SIZE)
		return -EIO;
	memcpy(buf, disk + off, len);
	return 0;
}

static int t_fail(void *arg, void *buf, size_t len, uint64_t off)
{
	(void)arg;
	(void)buf;
	(void)len;
	(void)off;
	return -EIO;
}

static const struct ic_vhdx_ids ids = {
	.disk_id = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 },
	.file_write = { 0x21, 0x22 },
	.data_write = { 0x31, 0x32 },
};

static const uint8_t uuid[16] = { 0xaa, 0xbb, 0xcc };

static void test_crc32c(void)
{
	CHECK_EQ(ic_crc32c(0, "123456789", 9), 0xe3069283u);
	CHECK_EQ(ic_crc32c(ic_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
	CHECK_EQ(ic_crc32c(0, "", 0), 0);
}

static void test_chs(void)
{
	uint16_t c;
	uint8_t h, s;

	ic_vhd_chs(64 * 2048, &c, &h, &s);          /* 64 MiB: what qemu-img create shows */
	CHECK(c == 963 && h == 8 && s == 17);
	ic_vhd_chs(10 * 2048, &c, &h, &s);
	CHECK(c == 301 && h == 4 && s == 17);
	ic_vhd_chs(65535ull * 16 * 255, &c, &h, &s);
	CHECK(c == 65535 && h == 16 && s == 255);
	ic_vhd_chs(4080ull << 21, &c, &h, &s);     /* 2040 GiB: the maximum geometry */
	CHECK(c == 65535 && h == 16 && s == 255);
}

static void test_vhd(void)
{
	struct ic_vhd v;
	uint8_t *buf, f[512];
	uint32_t sum = 0, stored;

	CHECK_EQ(ic_vhd_init(&v, 0, 0, uuid), -EINVAL);
	CHECK_EQ(ic_vhd_init(&v, IC_VHD_MAX_SIZE + 1, 0, uuid), -EFBIG);
	CHECK_EQ(ic_vhd_init(&v, IC_VHD_MAX_SIZE, 0, uuid), 0);
	CHECK_EQ(v.file_size, IC_VHD_MAX_SIZE + 512);
	CHECK_EQ(ic_vhd_init(&v, DISK_SIZE, 946684800 + 1000, uuid), 0);
	CHECK_EQ(v.cur_size, 10ull * MIB);
	CHECK_EQ(v.file_size, 10ull * MIB + 512);
	memcpy(f, v.footer, 512);
	stored = (uint32_t)f[64] << 24 | (uint32_t)f[65] << 16 | (uint32_t)f[66] << 8 | f[67];
	memset(f + 64, 0, 4);
	for (int i = 0; i < 512; i++)
		sum += f[i];
	CHECK_EQ(stored, ~sum);
	CHECK(!memcmp(f, "conectix", 8) && f[63] == 2 && !memcmp(f + 68, uuid, 16));
	CHECK(f[24] == 0 && f[25] == 0 && f[26] == 0x03 && f[27] == 0xe8);   /* timestamp 1000 */
	/* any creation time a slot can hold: before 2000 clamps to 0 (INT64_MIN overflowed
	 * created - epoch: found by fuzz_vhdx under UBSan), after 2136 to the maximum */
	CHECK_EQ(ic_vhd_init(&v, DISK_SIZE, INT64_MIN, uuid), 0);
	CHECK(!memcmp(v.footer + 24, "\0\0\0\0", 4));
	CHECK_EQ(ic_vhd_init(&v, DISK_SIZE, INT64_MAX, uuid), 0);
	CHECK(!memcmp(v.footer + 24, "\xff\xff\xff\xff", 4));
	CHECK_EQ(ic_vhd_init(&v, DISK_SIZE, 946684800 + 1000, uuid), 0);
	/* one read across the disk's end, the padding and the footer, and past the file */
	buf = malloc(v.file_size + 100);
	memset(buf, 0xee, v.file_size + 100);
	read_calls = 0;
	CHECK_EQ(ic_vhd_read(&v, buf, v.file_size + 100, 0, t_read, NULL), 0);
	CHECK_EQ(read_calls, 1);
	CHECK(!memcmp(buf, disk, DISK_SIZE));
	for (uint64_t i = DISK_SIZE; i < v.cur_size; i++)
		if (buf[i]) {
			CHECK(!"padding not zero");
			break;
		}
	CHECK(!memcmp(buf + v.cur_size, v.footer, 512));
	CHECK(buf[v.file_size] == 0 && buf[v.file_size + 99] == 0);
	CHECK_EQ(ic_vhd_read(&v, buf, 10, 5, t_fail, NULL), -EIO);
	CHECK_EQ(ic_vhd_read(&v, buf, 10, v.cur_size, t_fail, NULL), 0);     /* footer: no read */
	free(buf);
}

static struct ic_rank alloc;       /* the data blocks, as ic_disk finds them */

static void vhdx_alloc(struct ic_vhdx *x)
{
	CHECK_EQ(ic_vhdx_init(x, DISK_SIZE, MIB, &ids), 0);
	if (!alloc.bits) {
		CHECK_EQ(ic_rank_init(&alloc, NBLK), 0);
		for (unsigned b = 0; b < NBLK; b++)
			if (data_block[b])
				ic_rank_set_range(&alloc, b, b + 1);
		ic_rank_seal(&alloc);
	}
	CHECK_EQ(ic_vhdx_set_alloc(x, &alloc), 0);
}

static void test_vhdx_layout(void)
{
	struct ic_vhdx x;
	uint64_t k = 0;

	CHECK_EQ(ic_vhdx_init(&x, 0, MIB, &ids), -EINVAL);
	CHECK_EQ(ic_vhdx_init(&x, MIB, MIB / 2, &ids), -EINVAL);
	CHECK_EQ(ic_vhdx_init(&x, MIB, 3 * MIB, &ids), -EINVAL);
	CHECK_EQ(ic_vhdx_init(&x, IC_VHDX_MAX_SIZE + 1, MIB, &ids), -EFBIG);
	CHECK_EQ(ic_vhdx_init(&x, IC_VHDX_MAX_SIZE, MIB, &ids), 0);
	CHECK_EQ(x.nblocks, 64u << 20);
	CHECK_EQ(x.chunk_ratio, 4096);
	CHECK_EQ(x.bat_entries, (64ull << 20) + ((64ull << 20) - 1) / 4096);
	CHECK_EQ(x.bat_len % MIB, 0);
	CHECK_EQ(x.data_offset, 3ull * MIB + x.bat_len);
	CHECK_EQ(ic_vhdx_init(&x, 5000ull * 4 * MIB, 4 * MIB, &ids), 0);
	CHECK_EQ(x.chunk_ratio, 1024);
	CHECK_EQ(x.bat_entries, 5000 + 4);
	vhdx_alloc(&x);
	CHECK_EQ(x.virt_size, DISK_SIZE - 1234 + 1536);
	CHECK_EQ(x.nblocks, NBLK);
	CHECK_EQ(x.alloc->count, 5);
	CHECK_EQ(x.data_offset, 4ull * MIB);
	CHECK_EQ(x.file_size, 4ull * MIB + 5ull * MIB);
	for (unsigned b = 0; b < NBLK; b++) {
		CHECK_EQ(ic_vhdx_present(&x, b), data_block[b]);
		if (data_block[b]) {
			CHECK_EQ(ic_vhdx_block_offset(&x, b), x.data_offset + k * MIB);
			k++;
		}
	}
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_vhdx_bytes(void)
{
	struct ic_vhdx x, y;
	uint8_t *whole, *part;
	uint64_t k = 0;
	static const size_t lens[] = { 1, 7, 512, 4096, 65536, 1000001, 3 * MIB };

	vhdx_alloc(&x);
	whole = malloc(x.file_size + 4096);
	part = malloc(x.file_size + 4096);
	read_calls = 0;
	CHECK_EQ(ic_vhdx_read(&x, whole, x.file_size + 4096, 0, t_read, NULL), 0);
	CHECK_EQ(read_calls, 3);                    /* runs: block 1, blocks 4-6, block 9 */
	CHECK(!memcmp(whole, "vhdxfile", 8) && whole[8] == 'i' && whole[9] == 0);
	CHECK(!memcmp(whole + 65536, "head", 4) && !memcmp(whole + 131072, "head", 4));
	CHECK(!memcmp(whole + 196608, "regi", 4) && !memcmp(whole + 262144, "regi", 4));
	CHECK(!memcmp(whole + 2 * MIB, "metadata", 8));
	for (unsigned b = 0; b < NBLK; b++) {
		uint64_t e = get64(whole + 3 * MIB + 8 * b), at = (uint64_t)b * MIB;
		uint64_t n = at + MIB <= DISK_SIZE ? MIB : DISK_SIZE - at;

		if (!data_block[b]) {
			CHECK_EQ(e, 2);     /* PAYLOAD_BLOCK_ZERO */
			continue;
		}
		CHECK_EQ(e, (4ull * MIB + k * MIB) | 6);
		CHECK(!memcmp(whole + 4 * MIB + k * MIB, disk + at, n));
		if (n < MIB)
			CHECK(whole[4 * MIB + k * MIB + n] == 0 && whole[x.file_size - 1] == 0);
		k++;
	}
	CHECK(whole[x.file_size] == 0);
	/* any read is the same bytes as the whole-file read */
	for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++)
		for (uint64_t off = 0; off < x.file_size; off += lens[li] * 3 + 4093) {
			size_t n = lens[li] < x.file_size + 4096 - off ? lens[li] :
				   (size_t)(x.file_size + 4096 - off);

			memset(part, 0xee, n);
			CHECK_EQ(ic_vhdx_read(&x, part, n, off, t_read, NULL), 0);
			if (memcmp(part, whole + off, n)) {
				fprintf(stderr, "read of %zu at %llu differs\n", n,
					(unsigned long long)off);
				CHECK(0);
				break;
			}
		}
	CHECK_EQ(ic_vhdx_read(&x, part, 100, 4 * MIB, t_fail, NULL), -EIO);
	CHECK_EQ(ic_vhdx_read(&x, part, 100, 3 * MIB, t_fail, NULL), 0);   /* BAT: no read */
	/* identical bytes for the same ids, other GUIDs for others */
	vhdx_alloc(&y);
	CHECK(!memcmp(x.header, y.header, sizeof(x.header)));
	CHECK(!memcmp(x.meta, y.meta, sizeof(x.meta)));
	CHECK_EQ(ic_vhdx_init(&y, DISK_SIZE, MIB, &(struct ic_vhdx_ids){ .disk_id = { 9 } }), 0);
	CHECK(memcmp(x.header, y.header, sizeof(x.header)));
	CHECK(memcmp(x.items, y.items, sizeof(x.items)));
	CHECK_EQ(ic_vhdx_read(&y, part, 1, 0, t_read, NULL), -ENXIO);     /* no allocation yet */
	free(whole);
	free(part);
}

static int write_file(const char *path, const uint8_t *p, uint64_t n)
{
	FILE *f = fopen(path, "wb");
	int ok = f && fwrite(p, 1, n, f) == n;

	if (f && fclose(f))
		ok = 0;
	return ok ? 0 : -1;
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void test_qemu(void)
{
	char *dir = unit_tmpdir(), path[4200];
	struct ic_vhdx x;
	struct ic_vhd v;
	uint8_t *buf;

	vhdx_alloc(&x);
	CHECK_EQ(ic_vhd_init(&v, DISK_SIZE, 0, uuid), 0);
	buf = malloc(v.file_size > x.file_size ? v.file_size : x.file_size);
	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	CHECK_EQ(write_file(path, disk, DISK_SIZE), 0);
	CHECK_EQ(ic_vhdx_read(&x, buf, x.file_size, 0, t_read, NULL), 0);
	snprintf(path, sizeof(path), "%s/disk.vhdx", dir);
	CHECK_EQ(write_file(path, buf, x.file_size), 0);
	CHECK_EQ(ic_vhd_read(&v, buf, v.file_size, 0, t_read, NULL), 0);
	snprintf(path, sizeof(path), "%s/disk.vhd", dir);
	CHECK_EQ(write_file(path, buf, v.file_size), 0);
	CHECK_EQ(sh("qemu-img check -q -f vhdx %s/disk.vhdx", dir), 0);
	CHECK_EQ(sh("qemu-img compare -q -f raw -F vhdx %s/disk.raw %s/disk.vhdx", dir, dir), 0);
	CHECK_EQ(sh("qemu-img compare -q -f raw -F vpc %s/disk.raw %s/disk.vhd", dir, dir), 0);
	CHECK_EQ(sh("qemu-img info -f vpc %s/disk.vhd | grep -q '(10485760 bytes)'", dir), 0);
	CHECK_EQ(sh("qemu-img info -f vhdx %s/disk.vhdx | grep -q '(9438720 bytes)'", dir), 0);
	/* a damaged region table is refused: the checksums are what qemu checks */
	CHECK_EQ(sh("printf x | dd of=%s/disk.vhdx bs=1 seek=196700 conv=notrunc status=none &&"
		    "printf x | dd of=%s/disk.vhdx bs=1 seek=262236 conv=notrunc status=none &&"
		    "! qemu-img info -f vhdx %s/disk.vhdx >/dev/null 2>&1", dir, dir, dir), 0);
	free(buf);
	unit_rmtree(dir);
}

/* ic_disk's registration: names, limits (VHD 2040 GiB, VHDX 64 TiB), the VHDX size known from
 * the first attach on (and kept after a detach), identities per point.  A view without images
 * stands for a point of zero blocks whose seal passed. */
static struct ic_disk *disk_new(uint64_t size, uint32_t seq)
{
	struct ic_disk_info info = { .name = "p", .seq = seq, .kind = ICF_KIND_FULL,
				     .created = 1700000000, .disk_size = size,
				     .block_size = 65536 };
	struct ic_disk *d = NULL;

	CHECK_EQ(ic_disk_new(&info, &d), 0);
	return d;
}

static void test_disk_files(void)
{
	struct ic_view fake = { .disk_size = 64 * MIB, .block_size = 65536, .nblocks = 1024 };
	struct ic_cache *cache = ic_cache_new(65536, NULL, NULL);
	struct ic_disk *a = disk_new(64 * MIB, 3), *b = disk_new(64 * MIB, 3);
	struct ic_disk *c = disk_new(64 * MIB, 4);
	uint8_t fa[512], fb[512], fc[512];
	char json[2048];

	CHECK(cache && a && b && c);
	CHECK_EQ(ic_disk_file_from_name("disk.vhd"), IC_DISK_VHD);
	CHECK_EQ(ic_disk_file_from_name("disk.vhdx"), IC_DISK_VHDX);
	CHECK(ic_disk_has(a, IC_DISK_VHD) && ic_disk_has(a, IC_DISK_VHDX));
	CHECK_EQ(ic_disk_size(a, IC_DISK_VHD), 64 * MIB + 512);
	CHECK(ic_disk_sized(a, IC_DISK_VHD) && ic_disk_sized(a, IC_DISK_RAW));
	CHECK(!ic_disk_sized(a, IC_DISK_VHDX));
	CHECK_EQ(ic_disk_read(a, IC_DISK_VHD, NULL, fa, 512, 64 * MIB), -ENXIO);
	CHECK_EQ(ic_disk_attach(a, cache, &fake), 0);
	CHECK_EQ(ic_disk_attach(b, cache, &fake), 0);
	CHECK_EQ(ic_disk_attach(c, cache, &fake), 0);
	CHECK(ic_disk_sized(a, IC_DISK_VHDX));
	CHECK_EQ(ic_disk_size(a, IC_DISK_VHDX), 4 * MIB);   /* all zero: metadata only */
	CHECK_EQ(ic_disk_read(a, IC_DISK_VHD, NULL, fa, 512, 64 * MIB), 512);
	CHECK_EQ(ic_disk_read(b, IC_DISK_VHD, NULL, fb, 512, 64 * MIB), 512);
	CHECK_EQ(ic_disk_read(c, IC_DISK_VHD, NULL, fc, 512, 64 * MIB), 512);
	CHECK(!memcmp(fa, "conectix", 8) && !memcmp(fa, fb, 512));
	CHECK(memcmp(fa + 68, fc + 68, 16) != 0);             /* another point, another UUID */
	CHECK_EQ(ic_disk_read(a, IC_DISK_VHDX, NULL, fa, 8, 0), 8);
	CHECK(!memcmp(fa, "vhdxfile", 8));
	ic_disk_detach(a);
	CHECK(ic_disk_sized(a, IC_DISK_VHDX));
	CHECK_EQ(ic_disk_size(a, IC_DISK_VHDX), 4 * MIB);
	ic_disk_free(a);
	ic_disk_free(b);
	ic_disk_free(c);
	/* the limits */
	a = disk_new(IC_VHD_MAX_SIZE, 1);
	b = disk_new(IC_VHD_MAX_SIZE + 1, 1);
	c = disk_new(IC_VHDX_MAX_SIZE + 1, 1);
	CHECK(ic_disk_has(a, IC_DISK_VHD) && ic_disk_has(a, IC_DISK_VHDX));
	CHECK(!ic_disk_has(b, IC_DISK_VHD) && ic_disk_has(b, IC_DISK_VHDX));
	CHECK(!ic_disk_has(c, IC_DISK_VHD) && !ic_disk_has(c, IC_DISK_VHDX));
	CHECK(ic_disk_sized(c, IC_DISK_VHDX));     /* not offered: nothing to wait for */
	CHECK_EQ(ic_disk_read(c, IC_DISK_VHDX, NULL, fa, 8, 0), -ENOENT);
	/* info.json says which are offered */
	fake.disk_size = IC_VHD_MAX_SIZE + 1;
	fake.nblocks = (fake.disk_size + 65535) / 65536;
	CHECK_EQ(ic_disk_attach(b, cache, &fake), 0);
	memset(json, 0, sizeof(json));
	CHECK(ic_disk_read(b, IC_DISK_INFO, NULL, json, sizeof(json) - 1, 0) > 0);
	CHECK(strstr(json, "\"vhd\": false,") && strstr(json, "\"vhdx\": true\n"));
	ic_disk_free(a);
	ic_disk_free(b);
	ic_disk_free(c);
	ic_cache_free(cache);
}

int main(void)
{
	bool have_qemu;

	if (sodium_init() < 0) {        /* ic_disk's identities hash with BLAKE2b */
		fprintf(stderr, "sodium_init failed\n");
		return 1;
	}
	disk_fill();
	RUN(test_crc32c);
	RUN(test_chs);
	RUN(test_vhd);
	RUN(test_vhdx_layout);
	RUN(test_vhdx_bytes);
	RUN(test_disk_files);
	have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;
	if (have_qemu)
		RUN(test_qemu);
	else
		fprintf(stderr, "skip test_qemu: qemu-img is not installed\n");
	free(disk);
	ic_rank_free(&alloc);
	if (!have_qemu && !unit_failures)
		return 77;
	UNIT_EXIT();
}
