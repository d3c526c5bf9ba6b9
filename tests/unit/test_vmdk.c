/* test_vmdk.c: identity, descriptors and the synthesized compact monolithicSparse file,
 * checked by an independent decoder here and by qemu-img (check, compare, map, info). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

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

static int t_read_disk(void *arg, void *buf, size_t len, uint64_t off)
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

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(((off >> 9) * 31 + off * 7) | 1);
}

/* The sealed map of the grains that are not zero. */
static void alloc_of(const bool *zero, uint64_t n, struct ic_rank *r)
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
static void disk_fill(void)
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

/* ---- helpers ---------------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
	return (a + b - 1) / b;
}

static void ident_of(const char *seed, struct ic_vmdk_ident *id)
{
	ic_vmdk_ident_derive(seed, strlen(seed), id);
}

/* A sparse file of the test disk: planned, then its grains given. */
static int sparse_of(struct ic_vmdk_sparse *s, const struct ic_vmdk_ident *id)
{
	int ret = ic_vmdk_sparse_init(s, DISK_SIZE, GRAIN, SPARSE_NAME, id);

	return ret ? ret : ic_vmdk_sparse_set_alloc(s, &disk.alloc);
}

static uint8_t *sparse_whole(const struct ic_vmdk_sparse *s)
{
	uint8_t *f = malloc(s->file_size);

	CHECK(f != NULL);
	CHECK_EQ(ic_vmdk_sparse_read(s, f, s->file_size, 0, &tsrc), 0);
	return f;
}

static void write_file(const char *dir, const char *name, const void *p, size_t len)
{
	char path[4200];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ(fwrite(p, 1, len, f), len);
	CHECK_EQ(fclose(f), 0);
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

/* ---- qemu-img ----------------------------------------------------------------------- */

static char *tmp;

/* Run a shell command in tmp with stdout to out.txt; returns the exit status, and
 * shows the output when it is not the expected one. */
static int run_expect(int want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run_expect(int want, const char *fmt, ...)
{
	char cmd[1024], full[6000];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && %s >out.txt 2>err.txt", tmp, cmd);
	rc = system(full);
	rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
	if (rc != want) {
		snprintf(full, sizeof(full), "cd '%s' && echo '$ %s' >&2 && cat err.txt out.txt >&2",
			 tmp, cmd);
		if (system(full) != 0)
			fprintf(stderr, "(could not show the output)\n");
	}
	return rc;
}

static char *slurp_out(void)
{
	char path[4200];
	FILE *f;
	char *buf = calloc(1, 1 << 20);
	size_t n;

	snprintf(path, sizeof(path), "%s/out.txt", tmp);
	f = fopen(path, "r");
	if (!f)
		return buf;
	n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static bool json_u64(const char *js, const char *key, uint64_t *v)
{
	const char *p = strstr(js, key);

	return p && sscanf(p + strlen(key), " : %" SCNu64, v) == 1;
}

/* Every map range: holes are zero and not data, data grains are data. */
static void check_map(const char *js, const bool *zero, uint32_t grain, uint64_t size)
{
	uint64_t covered = 0;

	for (const char *p = strstr(js, "{"); p; p = strstr(p + 1, "{")) {
		uint64_t start, length;
		char z[8], data[8];
		int m = sscanf(p, "{ \"start\": %" SCNu64 ", \"length\": %" SCNu64
			       ", \"depth\": %*d, \"present\": %*[a-z], \"zero\": %7[a-z]"
			       ", \"data\": %7[a-z]", &start, &length, z, data);

		CHECK_EQ(m, 4);
		if (m != 4)
			return;
		CHECK_EQ(start, covered);
		covered = start + length;
		for (uint64_t g = start / grain; g * grain < start + length; g++) {
			CHECK_EQ(!strcmp(data, "true"), !zero[g]);
			CHECK_EQ(!strcmp(z, "true"), zero[g]);
		}
	}
	CHECK_EQ(covered, div_up(size, 512) * 512);
}

static void check_info(const char *name, const char *create_type, uint32_t cid)
{
	uint64_t v;
	char *js;

	CHECK_EQ(run_expect(0, "qemu-img info --output=json %s", name), 0);
	js = slurp_out();
	CHECK(strstr(js, "\"format\": \"vmdk\"") != NULL);
	CHECK(json_u64(js, "\"virtual-size\"", &v) && v == div_up(DISK_SIZE, 512) * 512);
	CHECK(strstr(js, create_type) != NULL);
	CHECK(json_u64(js, "\"cid\"", &v) && v == cid);
	CHECK(json_u64(js, "\"parent-cid\"", &v) && v == 0xffffffffu);
	free(js);
}

static void test_qemu(void)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	char desc[2048];
	uint8_t *f;
	char *js;
	int n;

	tmp = unit_tmpdir();
	ident_of("rp-7", &id);
	CHECK_EQ(sparse_of(&s, &id), 0);
	f = sparse_whole(&s);
	write_file(tmp, SPARSE_NAME, f, s.file_size);
	free(f);
	/* exactly the disk's bytes, as disk.raw is exported: qemu rounds it up to sectors */
	write_file(tmp, "disk.raw", disk.bytes, DISK_SIZE);
	write_file(tmp, "disk-flat.vmdk", disk.bytes, DISK_SIZE);
	n = ic_vmdk_flat_descriptor(desc, sizeof(desc), DISK_SIZE, "disk-flat.vmdk", &id);
	CHECK(n > 0);
	write_file(tmp, "disk.vmdk", desc, (size_t)(n > 0 ? n : 0));

	CHECK_EQ(run_expect(0, "qemu-img check -f vmdk " SPARSE_NAME), 0);
	CHECK_EQ(run_expect(0, "qemu-img compare -f raw -F vmdk disk.raw " SPARSE_NAME), 0);
	CHECK_EQ(run_expect(0, "qemu-img compare -f vmdk -F vmdk disk.vmdk " SPARSE_NAME), 0);
	CHECK_EQ(run_expect(0, "qemu-img map --output=json -f vmdk " SPARSE_NAME), 0);
	js = slurp_out();
	check_map(js, disk.zero, GRAIN, DISK_SIZE);
	free(js);
	check_info(SPARSE_NAME, "\"create-type\": \"monolithicSparse\"", id.cid);
	check_info("disk.vmdk", "\"create-type\": \"vmfs\"", id.cid);
	CHECK_EQ(run_expect(0, "qemu-img compare -f raw -F vmdk disk.raw disk.vmdk"), 0);
	/* probed without -f: version=1 must come first for qemu's probe */
	CHECK_EQ(run_expect(0, "qemu-img info disk.vmdk | grep -q '^file format: vmdk$'"), 0);
	CHECK_EQ(run_expect(0, "qemu-img info " SPARSE_NAME " | grep -q '^file format: vmdk$'"), 0);
	/* and the comparison is not vacuous: one changed byte is seen */
	CHECK_EQ(run_expect(0, "printf x | dd of=disk.raw bs=1 seek=1400000 conv=notrunc "
				"status=none"), 0);
	CHECK_EQ(run_expect(1, "qemu-img compare -q -f raw -F vmdk disk.raw " SPARSE_NAME), 1);
	unit_rmtree(tmp);
}

/* ---- a large, mostly empty disk: 151 grain tables, a two-sector directory ---------- */

#define BIG_SIZE (300ull * 1024 * 1024 + 777)
#define BIG_GRAIN 4096u
#define BIG_NAME "big-sparse.vmdk"

static bool *big_zero;

/* Data across GT (512) and directory-sector (65536) boundaries, a run, and the end. */
static void big_fill(uint64_t n_grains)
{
	static const uint64_t data[] = { 0, 1, 511, 512, 513, 1000, 65535, 65536, 65537 };

	big_zero = malloc(n_grains * sizeof(bool));
	for (uint64_t g = 0; g < n_grains; g++)
		big_zero[g] = !(g % 9973 == 5 || (g >= 40000 && g < 40100) || g == n_grains - 1);
	for (size_t i = 0; i < sizeof(data) / sizeof(data[0]); i++)
		big_zero[data[i]] = false;
}

static int b_read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	(void)arg;
	CHECK(off + len <= BIG_SIZE);
	for (size_t i = 0; i < len; i++)
		p[i] = big_zero[(off + i) / BIG_GRAIN] ? 0 : pattern(off + i);
	return 0;
}

static const struct ic_vmdk_source bsrc = {
	.read_disk = b_read_disk,
};

static int open_in_tmp(const char *name)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmp, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	return fd;
}

/* Write the compact sparse file whole, and big.raw with holes where the disk has zero
 * grains. */
static void write_big(const struct ic_vmdk_sparse *s)
{
	int fd = open_in_tmp(BIG_NAME), raw = open_in_tmp("big.raw");
	uint8_t *f = malloc(s->file_size), buf[BIG_GRAIN];

	CHECK_EQ(ic_vmdk_sparse_read(s, f, s->file_size, 0, &bsrc), 0);
	CHECK_EQ(pwrite(fd, f, s->file_size, 0), (ssize_t)s->file_size);
	for (uint64_t g = 0; g < s->n_grains; g++) {
		uint64_t len = BIG_SIZE - g * BIG_GRAIN < BIG_GRAIN ? BIG_SIZE - g * BIG_GRAIN
								 : BIG_GRAIN;

		if (big_zero[g])
			continue;
		CHECK_EQ(b_read_disk(NULL, buf, len, g * BIG_GRAIN), 0);
		CHECK_EQ(pwrite(raw, buf, len, g * BIG_GRAIN), (ssize_t)len);
	}
	CHECK_EQ(ftruncate(raw, BIG_SIZE), 0);
	free(f);
	close(fd);
	close(raw);
}

static void test_qemu_big(void)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	struct ic_rank alloc;
	uint8_t *meta;
	char *js;

	tmp = unit_tmpdir();
	ident_of("rp-big", &id);
	CHECK_EQ(ic_vmdk_sparse_init(&s, BIG_SIZE, BIG_GRAIN, BIG_NAME, &id), 0);
	CHECK_EQ(s.n_gts, 151);
	CHECK_EQ(s.gd_sectors, 2);
	big_fill(s.n_grains);
	alloc_of(big_zero, s.n_grains, &alloc);
	CHECK_EQ(ic_vmdk_sparse_set_alloc(&s, &alloc), 0);
	CHECK_EQ(s.file_size, (s.overhead + s.grain * alloc.count) * 512);
	CHECK(s.file_size < (2u << 20));  /* of a 300 MiB disk */
	meta = malloc(s.overhead * 512);
	CHECK_EQ(ic_vmdk_sparse_read(&s, meta, s.overhead * 512, 0, &bsrc), 0);
	CHECK(memcmp(meta + s.rgd_offset * 512, meta + s.gd_offset * 512, 1024) != 0);
	CHECK(memcmp(meta + (s.rgd_offset + 2) * 512, meta + (s.gd_offset + 2) * 512,
		     4 * 151 * 512) == 0);
	free(meta);
	write_big(&s);
	CHECK_EQ(run_expect(0, "qemu-img check -f vmdk " BIG_NAME), 0);
	CHECK_EQ(run_expect(0, "qemu-img compare -f raw -F vmdk big.raw " BIG_NAME), 0);
	CHECK_EQ(run_expect(0, "qemu-img map --output=json -f vmdk " BIG_NAME), 0);
	js = slurp_out();
	check_map(js, big_zero, BIG_GRAIN, BIG_SIZE);
	free(js);
	free(big_zero);
	ic_rank_free(&alloc);
	unit_rmtree(tmp);
}

int main(void)
{
	bool have_qemu;

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
	have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;
	if (have_qemu) {
		RUN(test_qemu);
		RUN(test_qemu_big);
	} else {
		fprintf(stderr, "skip test_qemu: qemu-img is not installed\n");
	}
	free(disk.bytes);
	free(disk.zero);
	ic_rank_free(&disk.alloc);
	if (!have_qemu && !unit_failures)
		return 77;
	UNIT_EXIT();
}
