/* test_vmdk.c: identity, descriptors and the synthesized compact monolithicSparse file,
 * checked by an independent decoder here (test_vmdk_qemu: by qemu-img). */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ic_vmdk.h"
#include "unit.h"
#include "vmdk_disk.h"

/* ---- helpers ---------------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* ---- identity and layout numbers ------------------------------------------------ */

static void test_ident(void)
{
	struct ic_vmdk_ident a, b, c;

	ident_of("restore-point-1", &a);
	ident_of("restore-point-1", &b);
	ident_of("restore-point-2", &c);
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);
	CHECK(a.cid != 0 && a.cid != 0xffffffffu);
	CHECK(a.cid != c.cid);
	CHECK(memcmp(a.uuid, c.uuid, 16) != 0);
	CHECK(memcmp(a.uuid_image, c.uuid_image, 16) != 0);
	CHECK(memcmp(a.uuid_modification, c.uuid_modification, 16) != 0);
	CHECK(memcmp(a.long_content_id, c.long_content_id, 16) != 0);
	/* distinct personalisation: the fields are not copies of each other */
	CHECK(memcmp(a.uuid, a.uuid_image, 16) != 0);
	CHECK(memcmp(a.uuid_image, a.uuid_modification, 16) != 0);
	CHECK_EQ((uint32_t)a.long_content_id[12] << 24 | (uint32_t)a.long_content_id[13] << 16 |
		 (uint32_t)a.long_content_id[14] << 8 | a.long_content_id[15], a.cid);
	for (int i = 0; i < 2000; i++) {
		char seed[32];

		snprintf(seed, sizeof(seed), "s%d", i);
		ident_of(seed, &c);
		CHECK(c.cid != 0 && c.cid != 0xffffffffu);
	}
}

/* VMDK.md's recipe, generalised to any grain, written out independently of ic_vmdk.c. */
static void check_formulas(uint64_t size, uint32_t grain_bytes)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	uint64_t g = grain_bytes / 512, cap = div_up(size, 512);
	uint64_t ng = div_up(cap, g), ngt = div_up(ng, 512), gds = div_up(ngt * 4, 512);
	uint64_t gd = 21 + gds + 4 * ngt, oh = div_up(gd + gds + 4 * ngt, g) * g;

	ident_of("x", &id);
	CHECK_EQ(ic_vmdk_sparse_init(&s, size, grain_bytes, SPARSE_NAME, &id), 0);
	CHECK_EQ(s.disk_size, size);
	CHECK_EQ(s.capacity, cap);
	CHECK_EQ(s.grain, g);
	CHECK_EQ(s.n_grains, ng);
	CHECK_EQ(s.n_gts, ngt);
	CHECK_EQ(s.gd_sectors, gds);
	CHECK_EQ(s.rgd_offset, 21);
	CHECK_EQ(s.gd_offset, gd);
	CHECK_EQ(s.overhead, oh);
	CHECK_EQ(s.max_file_size, (oh + g * ng) * 512);
	CHECK_EQ(s.file_size, s.max_file_size);
	CHECK(s.alloc == NULL);
	CHECK_EQ(s.descriptor_len, strlen(s.descriptor));
	/* stored: metadata and a third of the grains (the size counts nothing else) */
	{
		struct ic_rank r;
		uint8_t b;

		CHECK_EQ(ic_vmdk_sparse_read(&s, &b, 1, 0, NULL), -ENXIO);
		CHECK_EQ(ic_rank_init(&r, ng + 1), 0);
		CHECK_EQ(ic_vmdk_sparse_set_alloc(&s, &r), -EINVAL);
		ic_rank_free(&r);
		CHECK_EQ(ic_rank_init(&r, ng), 0);
		for (uint64_t i = 0; i < ng; i += 3)
			ic_rank_set_range(&r, i, i + 1);
		ic_rank_seal(&r);
		CHECK_EQ(ic_vmdk_sparse_set_alloc(&s, &r), 0);
		CHECK_EQ(s.file_size, (oh + g * ((ng + 2) / 3)) * 512);
		ic_rank_free(&r);
	}
}

static void test_layout_numbers(void)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;

	ident_of("x", &id);
	CHECK_EQ(ic_vmdk_sparse_init(&s, 1ull << 30, GRAIN, SPARSE_NAME, &id), 0);
	CHECK_EQ(s.capacity, 2097152);
	CHECK_EQ(s.n_grains, 16384);
	CHECK_EQ(s.n_gts, 32);
	CHECK_EQ(s.gd_sectors, 1);
	CHECK_EQ(s.rgd_offset, 21);
	CHECK_EQ(s.gd_offset, 21 + 1 + 4 * 32);
	CHECK_EQ(s.overhead, 384);  /* roundup(150 + 1 + 128, 128) */
	CHECK_EQ(s.max_file_size, (384ull + 128 * 16384) * 512);
	check_formulas(1ull << 30, GRAIN);
	check_formulas(DISK_SIZE, GRAIN);
	check_formulas(1, GRAIN);
	check_formulas(12345678901ull, 4096);
	check_formulas(12345678901ull, 1u << 20);
	check_formulas((1ull << 41) - (1ull << 30), GRAIN);
}

static void test_limits(void)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	uint64_t d = 1ull << 41;    /* 2 TiB: 2^32 sectors plus metadata cannot fit */
	char buf[16];

	ident_of("x", &id);
	CHECK_EQ(ic_vmdk_sparse_init(&s, d, GRAIN, SPARSE_NAME, &id), -EFBIG);
	CHECK_EQ(ic_vmdk_sparse_init(&s, UINT64_MAX, GRAIN, SPARSE_NAME, &id), -EFBIG);
	/* walk down a grain at a time to the largest disk that fits in 32-bit offsets */
	while (ic_vmdk_sparse_init(&s, d, GRAIN, SPARSE_NAME, &id) == -EFBIG)
		d -= GRAIN;
	CHECK(s.overhead + s.grain * s.n_grains <= UINT32_MAX);
	CHECK_EQ(s.max_file_size, (s.overhead + s.grain * s.n_grains) * 512);
	CHECK(s.overhead + s.grain * (s.n_grains + 1) > UINT32_MAX);
	CHECK_EQ(ic_vmdk_sparse_init(&s, d + GRAIN, GRAIN, SPARSE_NAME, &id), -EFBIG);
	CHECK(d > (1ull << 41) - (1ull << 30));
	CHECK_EQ(ic_vmdk_sparse_init(&s, 0, GRAIN, SPARSE_NAME, &id), -EINVAL);
	CHECK_EQ(ic_vmdk_sparse_init(&s, 1 << 20, 3000, SPARSE_NAME, &id), -EINVAL);
	CHECK_EQ(ic_vmdk_sparse_init(&s, 1 << 20, 2048, SPARSE_NAME, &id), -EINVAL);
	CHECK_EQ(ic_vmdk_sparse_init(&s, 1 << 20, 2u << 20, SPARSE_NAME, &id), -EINVAL);
	CHECK_EQ(ic_vmdk_sparse_init(&s, 1 << 20, GRAIN, "a\"b", &id), -EINVAL);
	CHECK_EQ(ic_vmdk_flat_descriptor(buf, sizeof(buf), 1 << 20, "disk-flat.vmdk", &id),
		 -ENOSPC);
}

/* ---- the synthesized sparse file -------------------------------------------------- */

/* Decode the file as a reader would: header, both directories, every grain. */
static void check_decoded(const struct ic_vmdk_sparse *s, const uint8_t *f)
{
	uint64_t gd = le64(f + 56), rgd = le64(f + 48), oh = le64(f + 64), stored = 0;

	CHECK(memcmp(f, "KDMV", 4) == 0);
	CHECK_EQ(le32(f + 4), 1);
	CHECK_EQ(le32(f + 8), 3);
	CHECK_EQ(le64(f + 12), div_up(DISK_SIZE, 512));
	CHECK_EQ(le64(f + 20), GSECT);
	CHECK_EQ(le64(f + 28), 1);
	CHECK_EQ(le64(f + 36), 20);
	CHECK_EQ(le32(f + 44), 512);
	CHECK_EQ(rgd, 21);
	CHECK_EQ(gd, s->gd_offset);
	CHECK_EQ(oh, s->overhead);
	CHECK(memcmp(f + 72, "\0\n \r\n\0\0", 7) == 0);
	for (int i = 79; i < 512; i++)
		CHECK_EQ(f[i], 0);
	CHECK(memcmp(f + 512, "# Disk DescriptorFile\n", 22) == 0);
	for (uint64_t g = 0; g < s->n_grains; g++) {
		uint32_t gte_sec = le32(f + gd * 512 + 4 * (g / 512));
		uint32_t rgte_sec = le32(f + rgd * 512 + 4 * (g / 512));
		uint32_t e = le32(f + (uint64_t)gte_sec * 512 + 4 * (g % 512));

		CHECK(gte_sec != rgte_sec);
		CHECK_EQ(le32(f + (uint64_t)rgte_sec * 512 + 4 * (g % 512)), e);
		if (disk.zero[g]) {
			CHECK_EQ(e, 0);
			continue;
		}
		/* stored grains one after another, in disk order */
		CHECK_EQ(e, oh + GSECT * stored);
		for (uint64_t o = 0; o < GRAIN; o++) {
			uint64_t at = g * GRAIN + o;

			if (f[(uint64_t)e * 512 + o] != (at < DISK_SIZE ? disk.bytes[at] : 0)) {
				CHECK(!"grain data differs from the disk");
				break;
			}
		}
		stored++;
	}
	/* the file is exactly the metadata and the stored grains */
	CHECK_EQ(s->file_size, (oh + GSECT * stored) * 512);
	CHECK_EQ(stored, disk.alloc.count);
	for (uint64_t o = le32(f + gd * 512) * 512ull + 4 * 512 * s->n_gts; o < oh * 512; o++)
		CHECK_EQ(f[o], 0);
}

static void read_chunks(const struct ic_vmdk_sparse *s, const uint8_t *whole)
{
	const size_t chunk = 4096 + 7;
	uint8_t *f = malloc(s->file_size + chunk);

	for (uint64_t off = 0; off < s->file_size; off += chunk)
		CHECK_EQ(ic_vmdk_sparse_read(s, f + off, chunk, off, &tsrc), 0);
	CHECK(memcmp(f, whole, s->file_size) == 0);
	/* the last read ran past the end: those bytes are zeros */
	for (size_t i = s->file_size; i < (s->file_size + chunk - 1) / chunk * chunk; i++)
		CHECK_EQ(f[i], 0);
	free(f);
}

static void read_random(const struct ic_vmdk_sparse *s, const uint8_t *whole)
{
	uint64_t seed = 1, x;
	uint8_t *buf = malloc(300000);
	int bad = 0;

	for (int i = 0; i < 3000 && !bad; i++) {
		x = unit_rnd(&seed);
		uint64_t off = x % (s->file_size + 4096);
		size_t len = (size_t)((x >> 32) % (i % 4 ? 3000 : 300000));

		memset(buf, 0xa5, len);
		CHECK_EQ(ic_vmdk_sparse_read(s, buf, len, off, &tsrc), 0);
		for (size_t j = 0; j < len && !bad; j++)
			bad = buf[j] != (off + j < s->file_size ? whole[off + j] : 0);
	}
	CHECK(!bad);
	free(buf);
}

/* Runs of stored grains [k, k + count) that are neighbours on the disk too. */
static unsigned runs_of(uint64_t k, uint64_t count)
{
	unsigned runs = 0;
	uint64_t prev = UINT64_MAX;

	for (uint64_t i = k; i < k + count; i++) {
		uint64_t g = ic_rank_select(&disk.alloc, i);

		runs += g != prev + 1;
		prev = g;
	}
	return runs;
}

/* One read_disk per run of stored grains that follow each other on the disk, none for
 * metadata. */
static void read_efficiency(const struct ic_vmdk_sparse *s)
{
	uint8_t *buf = malloc(4 << 20);
	uint64_t grains = s->overhead * 512, at20 = grains + ic_rank_of(&disk.alloc, 20) * GRAIN;

	disk.read_calls = 0;
	CHECK_EQ(ic_vmdk_sparse_read(s, buf, 1 << 20, at20, &tsrc), 0);
	CHECK_EQ(disk.read_calls, 1);
	disk.read_calls = 0;
	CHECK_EQ(ic_vmdk_sparse_read(s, buf, 1 << 20, at20 + 333, &tsrc), 0);
	CHECK_EQ(disk.read_calls, 1);
	/* stored grains 10..41: 17-18 | 20-39 | 41-42 | 44-45 | ... */
	disk.read_calls = 0;
	CHECK_EQ(ic_vmdk_sparse_read(s, buf, 32 * GRAIN, grains + 10ull * GRAIN, &tsrc), 0);
	CHECK_EQ(disk.read_calls, runs_of(10, 32));
	CHECK(runs_of(10, 32) > 3);
	disk.read_calls = 0;
	CHECK_EQ(ic_vmdk_sparse_read(s, buf, grains, 0, &tsrc), 0);
	CHECK_EQ(disk.read_calls, 0);
	disk.fail = -EIO;
	CHECK_EQ(ic_vmdk_sparse_read(s, buf, 4096, grains, &tsrc), -EIO);
	disk.fail = 0;
	free(buf);
}

/* VirtualBox's strictness points and qemu's string searches, by inspection. */
static void check_descriptor_text(const char *d, const char *extent_line)
{
	const char *v = strstr(d, "\nversion=1\n"), *cid = strstr(d, "\nCID=");
	const char *pcid = strstr(d, "\nparentCID=ffffffff\n"), *ext = strstr(d, extent_line);
	const char *ddb = strstr(d, "\nddb.");

	CHECK(strncmp(d, "# Disk DescriptorFile\nversion=1\n", 32) == 0);
	CHECK(v && cid && pcid && ext && ddb);
	if (!(v && cid && pcid && ext && ddb))
		return;
	CHECK(v < cid && cid < pcid && pcid < ext && ext < ddb);
	CHECK(strstr(d, "ddb.uuid = \"") && strstr(d, "ddb.uuid.image = \""));
	CHECK(strstr(d, "ddb.uuid.modification = \"") && strstr(d, "ddb.uuid.parent = \""));
	CHECK(strstr(d, "ddb.uuid.parentmodification = \""));
	CHECK(strstr(d, "ddb.adapterType = \"lsilogic\"\n"));
	CHECK(strstr(d, "ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n"));
	CHECK(strstr(d, "  ") == NULL);
	CHECK(strchr(d, '\r') == NULL);
}

static void check_ident_text(const char *d, const struct ic_vmdk_ident *id)
{
	char want[64];

	snprintf(want, sizeof(want), "\nCID=%08" PRIx32 "\n", id->cid);
	CHECK(strstr(d, want) != NULL);
	snprintf(want, sizeof(want), "%08" PRIx32 "\"\n", id->cid);
	CHECK(strstr(strstr(d, "ddb.longContentID = \""), want) ==
	      strstr(d, "ddb.longContentID = \"") + 21 + 24);
}

static void test_sparse_bytes(void)
{
	struct ic_vmdk_ident id, id2;
	struct ic_vmdk_sparse s, s2;
	uint8_t *f, *f2;

	ident_of("rp-7", &id);
	CHECK_EQ(sparse_of(&s, &id), 0);
	f = sparse_whole(&s);
	check_decoded(&s, f);
	check_descriptor_text((const char *)f + 512, "\nRW 10243 SPARSE \"" SPARSE_NAME "\"\n");
	check_ident_text((const char *)f + 512, &id);
	CHECK(strstr((const char *)f + 512, "createType=\"monolithicSparse\"\n") != NULL);
	/* the two directories differ, their tables are byte-identical */
	CHECK(memcmp(f + s.rgd_offset * 512, f + s.gd_offset * 512, s.gd_sectors * 512) != 0);
	CHECK(memcmp(f + (s.rgd_offset + s.gd_sectors) * 512, f + (s.gd_offset + s.gd_sectors) * 512,
		     4 * s.n_gts * 512) == 0);
	read_chunks(&s, f);
	read_random(&s, f);
	read_efficiency(&s);

	/* determinism: same seed, same bytes; another seed, another identity */
	CHECK_EQ(sparse_of(&s2, &id), 0);
	f2 = sparse_whole(&s2);
	CHECK(memcmp(f, f2, s.file_size) == 0);
	free(f2);
	ident_of("rp-8", &id2);
	CHECK_EQ(sparse_of(&s2, &id2), 0);
	f2 = sparse_whole(&s2);
	CHECK(memcmp(f, f2, s.file_size) != 0);
	CHECK(memcmp(f + 1024 * 11, f2 + 1024 * 11, s.file_size - 1024 * 11) == 0);
	free(f2);
	free(f);
}

static void test_flat_descriptor(void)
{
	struct ic_vmdk_ident id;
	char d[2048];
	int n;

	ident_of("rp-7", &id);
	n = ic_vmdk_flat_descriptor(d, sizeof(d), DISK_SIZE, "disk-flat.vmdk", &id);
	CHECK(n > 0 && (size_t)n == strlen(d));
	check_descriptor_text(d, "\nRW 10243 VMFS \"disk-flat.vmdk\"\n");
	check_ident_text(d, &id);
	CHECK(strstr(d, "createType=\"vmfs\"\n") != NULL);
	CHECK(strstr(d, "ddb.thinProvisioned = \"1\"\n") != NULL);
	CHECK(strstr(d, "ddb.geometry.cylinders = \"1\"\n") != NULL);
	n = ic_vmdk_flat_descriptor(d, sizeof(d), 1ull << 40, "disk-flat.vmdk", &id);
	CHECK(strstr(d, "ddb.geometry.cylinders = \"65535\"\n") != NULL);
	n = ic_vmdk_flat_descriptor(d, sizeof(d), 1ull << 30, "disk-flat.vmdk", &id);
	CHECK(strstr(d, "ddb.geometry.cylinders = \"130\"\n") != NULL);
	CHECK_EQ(ic_vmdk_flat_descriptor(d, (size_t)n, 1ull << 30, "disk-flat.vmdk", &id),
		 -ENOSPC);
	CHECK_EQ(ic_vmdk_flat_descriptor(d, (size_t)n + 1, 1ull << 30, "disk-flat.vmdk", &id), n);
}

int main(void)
{
	if (sodium_init() < 0) {
		fprintf(stderr, "sodium_init failed\n");
		return 1;
	}
	disk_fill();
	RUN(test_ident);
	RUN(test_layout_numbers);
	RUN(test_limits);
	RUN(test_flat_descriptor);
	RUN(test_sparse_bytes);
	disk_free();
	UNIT_EXIT();
}
