/* test_vmdk_qemu.c: the synthesized VMDK files as qemu-img sees them (check, compare, map,
 * info): the flat pair and the compact sparse file of the test disk, one with nothing
 * stored, and a large, mostly empty disk with many grain tables.  Skipped (77) without
 * qemu-img. */
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
#include "vmdk_disk.h"

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
	/* nothing stored (an all-zero disk): the metadata alone is a valid disk of zeros */
	{
		struct ic_vmdk_sparse e;
		struct ic_rank none;
		uint8_t *z = calloc(1, DISK_SIZE);

		CHECK_EQ(ic_vmdk_sparse_init(&e, DISK_SIZE, GRAIN, "empty.vmdk", &id), 0);
		CHECK_EQ(ic_rank_init(&none, e.n_grains), 0);
		ic_rank_seal(&none);
		CHECK_EQ(ic_vmdk_sparse_set_alloc(&e, &none), 0);
		CHECK_EQ(e.file_size, e.overhead * 512);
		f = sparse_whole(&e);
		write_file(tmp, "empty.vmdk", f, e.file_size);
		write_file(tmp, "zero.raw", z, DISK_SIZE);
		free(f);
		free(z);
		ic_rank_free(&none);
		CHECK_EQ(run_expect(0, "qemu-img check -f vmdk empty.vmdk"), 0);
		CHECK_EQ(run_expect(0, "qemu-img compare -f raw -F vmdk zero.raw empty.vmdk"), 0);
	}
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
	if (sodium_init() < 0) {
		fprintf(stderr, "sodium_init failed\n");
		return 1;
	}
	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "skip test_vmdk_qemu: qemu-img is not installed\n");
		return 77;
	}
	disk_fill();
	RUN(test_qemu);
	RUN(test_qemu_big);
	disk_free();
	UNIT_EXIT();
}
