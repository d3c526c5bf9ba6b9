/* test_disk.c: a restore point's disk files over real chains made by ic_backup():
 * disk.raw byte for byte, disk-flat.vmdk the same bytes padded to a whole sector, the
 * descriptor and info.json, the compact sparse VMDK decoded independently (holes exactly
 * where the disk's blocks are zero, in a full and in an incremental that zeroed blocks;
 * the stored grains one after another; its size known from the first attach and the
 * same on the next) for block sizes below, at and above the 64 KiB grain, the 2 TiB
 * limit, and damage reported as an error for the range, never as bytes. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "imgchain.h"
#include "ic_cache.h"
#include "ic_disk.h"
#include "unit.h"

#define GRAIN 65536u
#define DISK (6ull * 1024 * 1024 + 3 * 4096 + 1000)   /* a short last block and grain */
#define DISK_SECTORS ((DISK + 511) / 512 * 512)       /* disk-flat.vmdk's size */

static char *dir;

/* 4 KiB pages: runs of zero pages of every length, so that grains and blocks of each
 * size are sometimes wholly zero and sometimes partly. */
static uint8_t *make_disk(uint64_t seed)
{
	uint8_t *d = calloc(1, DISK);

	for (uint64_t page = 0; page * 4096 < DISK; page++) {
		uint64_t x = unit_rnd(&seed);

		if ((page / 16) % 3 == 1 || (page % 37) == 5 || (page >= 512 && page < 1024))
			continue;
		for (uint64_t k = page * 4096; k < (page + 1) * 4096 && k < DISK; k += 8) {
			size_t n = DISK - k < 8 ? (size_t)(DISK - k) : 8;

			x = x * 6364136223846793005ull + 1442695040888963407ull;
			memcpy(d + k, &x, n);
		}
	}
	return d;
}

struct fixture;
static void disk_open(struct fixture *f, size_t p);

struct fixture {
	char *chain;
	uint8_t *src;
	struct ic_chain *ch;
	struct ic_key *key;
	struct ic_view *v;
	struct ic_cache *cache;
	struct ic_disk *disk;
};

static void fixture_open(struct fixture *f, uint32_t block_size, const char *tag)
{
	struct ic_backup_opts o = { .quiet = true, .level = 3, .name = "p1",
				    .block_size = block_size };
	struct ic_backup_stats st;
	char *source;
	int fd;

	memset(f, 0, sizeof(*f));
	f->chain = ic_path_join(dir, tag);
	source = ic_path_join(dir, "source");
	f->src = make_disk(block_size);
	fd = open(source, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(ic_pwrite_full(fd, f->src, DISK, 0, source), 0);
	close(fd);
	o.chain_dir = f->chain;
	o.source = source;
	CHECK_EQ(ic_backup(&o, &st), 0);
	CHECK_EQ(ic_chain_open(f->chain, &f->ch), 0);
	CHECK_EQ(ic_key_unlock(f->chain, NULL, &f->key), 0);
	CHECK_EQ(ic_view_open(f->ch, &f->ch->points[0], &f->v), 0);
	f->cache = ic_cache_new(block_size, f->key, NULL);
	CHECK(f->cache != NULL);
	disk_open(f, 0);
	free(source);
}

/* The disk of point p of f's chain, attached to its view.  The sparse file's size is an
 * upper bound until the first attach, then final: the same after another attach. */
static void disk_open(struct fixture *f, size_t p)
{
	struct ic_disk_info info;
	uint64_t max, size;

	ic_disk_info_from_point(f->ch, &f->ch->points[p], &info);
	CHECK_EQ(ic_disk_new(&info, &f->disk), 0);
	CHECK(ic_disk_sized(f->disk, IC_DISK_RAW) && ic_disk_sized(f->disk, IC_DISK_FLAT));
	CHECK(!ic_disk_sized(f->disk, IC_DISK_SPARSE));
	max = ic_disk_size(f->disk, IC_DISK_SPARSE);
	CHECK_EQ(max % GRAIN, 0);
	CHECK_EQ(ic_disk_attach(f->disk, f->cache, f->v), 0);
	CHECK(ic_disk_sized(f->disk, IC_DISK_SPARSE));
	size = ic_disk_size(f->disk, IC_DISK_SPARSE);
	CHECK(size < max);
	ic_disk_detach(f->disk);
	CHECK_EQ(ic_disk_size(f->disk, IC_DISK_SPARSE), size);
	CHECK_EQ(ic_disk_attach(f->disk, f->cache, f->v), 0);
	CHECK_EQ(ic_disk_size(f->disk, IC_DISK_SPARSE), size);
}

static void fixture_close(struct fixture *f)
{
	ic_disk_free(f->disk);
	ic_cache_free(f->cache);
	ic_view_free(f->v);
	ic_key_free(f->key);
	ic_chain_free(f->ch);
	free(f->src);
	free(f->chain);
}

/* Read all of file fl in chunks of n. */
static uint8_t *read_file(struct ic_disk *d, enum ic_disk_file fl, size_t n, uint64_t *size)
{
	uint64_t sz = ic_disk_size(d, fl);
	uint8_t *buf = malloc(sz + n);
	struct ic_cache_stream st = { 0 };

	for (uint64_t off = 0; off < sz; off += n) {
		ssize_t r = ic_disk_read(d, fl, &st, buf + off, n, off);

		CHECK_EQ(r, sz - off < n ? sz - off : n);
		if (r < 0)
			break;
	}
	CHECK_EQ(ic_disk_read(d, fl, NULL, buf, n, sz), 0);   /* at EOF */
	*size = sz;
	return buf;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Decode the sparse file the way a hypervisor would and compare with the source. */
static void check_sparse(const uint8_t *f, uint64_t fsize, const uint8_t *src)
{
	uint64_t cap, grain, gd, rgd, over, ngrains, holes = 0;

	CHECK_EQ(le32(f), 0x564d444bu);
	cap = le64(f + 12);
	grain = le64(f + 20);
	rgd = le64(f + 48);
	gd = le64(f + 56);
	over = le64(f + 64);
	CHECK_EQ(cap, (DISK + 511) / 512);
	CHECK_EQ(grain, GRAIN / 512);
	CHECK(strstr((const char *)f + 512, "createType=\"monolithicSparse\"") != NULL);
	CHECK(strstr((const char *)f + 512, "SPARSE \"disk-sparse.vmdk\"") != NULL);
	ngrains = (cap + grain - 1) / grain;
	for (uint64_t g = 0; g < ngrains; g++) {
		uint32_t gt = le32(f + gd * 512 + (g / 512) * 4);
		uint32_t rgt = le32(f + rgd * 512 + (g / 512) * 4);
		uint32_t ent = le32(f + (uint64_t)gt * 512 + (g % 512) * 4);
		uint32_t rent = le32(f + (uint64_t)rgt * 512 + (g % 512) * 4);
		uint64_t off = g * GRAIN, n = DISK - off < GRAIN ? DISK - off : GRAIN;

		CHECK_EQ(ent, rent);
		if (!ent) {
			holes++;
			CHECK(ic_is_zero(src + off, n));
			continue;
		}
		/* stored one after another in disk order: the file has no gap */
		CHECK_EQ(ent, over + grain * (g - holes));
		CHECK(!memcmp(f + (uint64_t)ent * 512, src + off, n));
		CHECK(ic_is_zero(f + (uint64_t)ent * 512 + n, GRAIN - n));
	}
	CHECK(holes > 0);
	CHECK_EQ(fsize, (over + grain * (ngrains - holes)) * 512);
}

/* Grains that are zero on the source but fall into a block with data are allowed to
 * be allocated (they read as zeros); with 64 KiB blocks, holes are exactly the zero
 * grains. */
static uint64_t count_zero_grains(const uint8_t *src)
{
	uint64_t n = 0;

	for (uint64_t off = 0; off < DISK; off += GRAIN)
		n += ic_is_zero(src + off, DISK - off < GRAIN ? DISK - off : GRAIN);
	return n;
}

static uint64_t count_holes(const uint8_t *f)
{
	uint64_t gd = le64(f + 56), grain = le64(f + 20);
	uint64_t ngrains = ((DISK + 511) / 512 + grain - 1) / grain, n = 0;

	for (uint64_t g = 0; g < ngrains; g++) {
		uint32_t gt = le32(f + gd * 512 + (g / 512) * 4);

		n += le32(f + (uint64_t)gt * 512 + (g % 512) * 4) == 0;
	}
	return n;
}

static void check_files(uint32_t block_size, const char *tag)
{
	struct fixture f;
	uint64_t sz;
	uint8_t *buf;
	const char *text;

	fixture_open(&f, block_size, tag);
	CHECK_EQ(ic_disk_size(f.disk, IC_DISK_RAW), DISK);
	CHECK_EQ(ic_disk_size(f.disk, IC_DISK_FLAT), DISK_SECTORS);
	CHECK(ic_disk_has(f.disk, IC_DISK_SPARSE));
	CHECK(ic_disk_sized(f.disk, IC_DISK_SPARSE));
	for (size_t n = 4093; n <= (1u << 20); n *= 4) {
		buf = read_file(f.disk, IC_DISK_RAW, n, &sz);
		CHECK_EQ(sz, DISK);
		CHECK(!memcmp(buf, f.src, DISK));
		free(buf);
		buf = read_file(f.disk, IC_DISK_FLAT, n + 1, &sz);
		CHECK_EQ(sz, DISK_SECTORS);
		CHECK(!memcmp(buf, f.src, DISK));
		CHECK(ic_is_zero(buf + DISK, DISK_SECTORS - DISK));
		free(buf);
	}
	buf = read_file(f.disk, IC_DISK_DESC, 100, &sz);
	buf[sz] = '\0';
	text = (const char *)buf;
	CHECK(!strncmp(text, "# Disk DescriptorFile\nversion=1\n", 32));
	CHECK(strstr(text, "createType=\"vmfs\"") != NULL);
	CHECK(strstr(text, "VMFS \"disk-flat.vmdk\"") != NULL);
	free(buf);
	buf = read_file(f.disk, IC_DISK_INFO, 7, &sz);
	buf[sz] = '\0';
	text = (const char *)buf;
	CHECK(strstr(text, "\"name\": \"p1\"") != NULL);
	CHECK(strstr(text, "\"parent\": null") != NULL);
	CHECK(strstr(text, "\"kind\": \"full\"") != NULL);
	CHECK(strstr(text, "\"created\": \"20") != NULL);
	free(buf);
	for (size_t n = 511; n <= 3 * 65536; n = n * 8 + 1) {
		buf = read_file(f.disk, IC_DISK_SPARSE, n, &sz);
		check_sparse(buf, sz, f.src);
		if (block_size <= GRAIN)
			CHECK_EQ(count_holes(buf), count_zero_grains(f.src));
		else
			CHECK(count_holes(buf) > 0 && count_holes(buf) < count_zero_grains(f.src));
		free(buf);
	}
	fixture_close(&f);
}

static void test_block_64k(void)
{
	check_files(65536, "c64k");
}

static void test_block_4k(void)
{
	check_files(4096, "c4k");
}

static void test_block_256k(void)
{
	check_files(256 * 1024, "c256k");
}

/* An incremental that zeroed grains of its parent (zero entries over data) and wrote
 * others: its sparse file stores exactly its own non-zero grains. */
static void test_incremental_zeroed(void)
{
	struct ic_backup_opts o = { .quiet = true, .level = 3, .name = "p2",
				    .block_size = GRAIN };
	struct ic_backup_stats st;
	struct fixture f;
	uint64_t sz, zeroed = 0;
	uint8_t *buf;
	char *source;
	int fd;

	fixture_open(&f, GRAIN, "cinc");
	for (uint64_t g = 3; g * GRAIN < DISK; g += 5) {
		uint64_t n = DISK - g * GRAIN < GRAIN ? DISK - g * GRAIN : GRAIN;

		zeroed += !ic_is_zero(f.src + g * GRAIN, n);
		memset(f.src + g * GRAIN, 0, n);
	}
	memset(f.src + 512 * 4096 + 77, 0x5a, 3);    /* data in a grain that was zero */
	CHECK(zeroed > 5);
	source = ic_path_join(dir, "source");
	fd = open(source, O_WRONLY | O_TRUNC);
	CHECK(fd >= 0);
	CHECK_EQ(ic_pwrite_full(fd, f.src, DISK, 0, source), 0);
	close(fd);
	o.chain_dir = f.chain;
	o.source = source;
	CHECK_EQ(ic_backup(&o, &st), 0);
	free(source);
	ic_disk_free(f.disk);
	ic_view_free(f.v);
	ic_chain_free(f.ch);
	CHECK_EQ(ic_chain_open(f.chain, &f.ch), 0);
	CHECK_EQ(f.ch->npoints, 2);
	CHECK_EQ(ic_view_open(f.ch, &f.ch->points[1], &f.v), 0);
	CHECK_EQ(f.ch->points[1].img->slot.kind, ICF_KIND_INCREMENTAL);
	disk_open(&f, 1);
	buf = read_file(f.disk, IC_DISK_SPARSE, 65536, &sz);
	check_sparse(buf, sz, f.src);
	CHECK_EQ(count_holes(buf), count_zero_grains(f.src));
	free(buf);
	fixture_close(&f);
}

/* Identity: deterministic per point, distinct between points and between the pair
 * and the sparse file; past 2 TiB no sparse file; no view, no bytes of any file, the
 * metadata ones included (they show the slot, which only the seal authenticates).  A view
 * with no image (nothing to read) stands for a point whose seal passed. */
static void test_identity_and_limits(void)
{
	struct ic_disk_info info = { .name = "x", .seq = 7, .kind = ICF_KIND_FULL,
				     .created = 1700000000, .disk_size = 1ull << 30,
				     .block_size = 65536 };
	struct ic_view fake = { .disk_size = 1ull << 30, .block_size = 65536,
				.nblocks = (1ull << 30) / 65536 };
	struct ic_cache *cache = ic_cache_new(65536, NULL, NULL);
	struct ic_disk *a, *b, *c;
	char da[1024], db[1024], dc[1024], sp[2048];
	ssize_t na, nb, nc;

	CHECK(cache != NULL);
	CHECK_EQ(ic_disk_new(&info, &a), 0);
	CHECK_EQ(ic_disk_new(&info, &b), 0);
	info.seq = 8;
	CHECK_EQ(ic_disk_new(&info, &c), 0);
	/* nothing before the view is attached */
	CHECK(ic_disk_size(a, IC_DISK_DESC) > 0 && ic_disk_size(a, IC_DISK_INFO) > 0);
	CHECK_EQ(ic_disk_read(a, IC_DISK_DESC, NULL, da, sizeof(da) - 1, 0), -ENXIO);
	CHECK_EQ(ic_disk_read(a, IC_DISK_INFO, NULL, da, sizeof(da) - 1, 0), -ENXIO);
	CHECK_EQ(ic_disk_attach(a, cache, &fake), 0);
	CHECK_EQ(ic_disk_attach(b, cache, &fake), 0);
	CHECK_EQ(ic_disk_attach(c, cache, &fake), 0);
	na = ic_disk_read(a, IC_DISK_DESC, NULL, da, sizeof(da) - 1, 0);
	nb = ic_disk_read(b, IC_DISK_DESC, NULL, db, sizeof(db) - 1, 0);
	nc = ic_disk_read(c, IC_DISK_DESC, NULL, dc, sizeof(dc) - 1, 0);
	CHECK(na > 0 && na == nb && na == nc);
	CHECK(!memcmp(da, db, (size_t)na));
	CHECK(memcmp(da, dc, (size_t)na) != 0);
	da[na] = '\0';
	/* the sparse file's embedded descriptor has another CID */
	ic_disk_detach(a);
	CHECK_EQ(ic_disk_read(a, IC_DISK_SPARSE, NULL, sp, 0, 0), 0);
	CHECK_EQ(ic_disk_read(a, IC_DISK_RAW, NULL, sp, 10, 0), -ENXIO);
	CHECK_EQ(ic_disk_read(a, IC_DISK_SPARSE, NULL, sp, 10, 0), -ENXIO);
	CHECK_EQ(ic_disk_read(a, IC_DISK_DESC, NULL, sp, 10, 0), -ENXIO);
	CHECK_EQ(ic_disk_file_from_name("disk.raw"), IC_DISK_RAW);
	CHECK_EQ(ic_disk_file_from_name("disk-sparse.vmdk"), IC_DISK_SPARSE);
	CHECK_EQ(ic_disk_file_from_name("nope"), -1);
	ic_disk_free(a);
	ic_disk_free(b);
	ic_disk_free(c);
	info.disk_size = fake.disk_size = 3ull << 40;
	fake.nblocks = fake.disk_size / 65536;
	CHECK_EQ(ic_disk_new(&info, &a), 0);
	CHECK_EQ(ic_disk_read(a, IC_DISK_INFO, NULL, sp, sizeof(sp) - 1, 0), -ENXIO);
	CHECK_EQ(ic_disk_attach(a, cache, &fake), 0);
	CHECK(!ic_disk_has(a, IC_DISK_SPARSE));
	CHECK(ic_disk_has(a, IC_DISK_RAW));
	CHECK_EQ(ic_disk_size(a, IC_DISK_RAW), 3ull << 40);
	CHECK_EQ(ic_disk_read(a, IC_DISK_SPARSE, NULL, sp, 10, 0), -ENOENT);
	na = ic_disk_read(a, IC_DISK_INFO, NULL, sp, sizeof(sp) - 1, 0);
	CHECK(na > 0);
	sp[na > 0 ? na : 0] = '\0';
	CHECK(strstr(sp, "\"sparse_vmdk\": false") != NULL);
	ic_disk_free(a);
	ic_cache_free(cache);
}

/* Where disk grain g is stored in the sparse file (0: nowhere), from its grain tables. */
static uint64_t sparse_grain_at(struct ic_disk *d, uint64_t g)
{
	uint8_t h[512], e[4] = { 0 };

	CHECK_EQ(ic_disk_read(d, IC_DISK_SPARSE, NULL, h, sizeof(h), 0), (ssize_t)sizeof(h));
	CHECK_EQ(ic_disk_read(d, IC_DISK_SPARSE, NULL, e, 4, le64(h + 56) * 512 + g / 512 * 4), 4);
	CHECK_EQ(ic_disk_read(d, IC_DISK_SPARSE, NULL, e, 4, le32(e) * 512ull + g % 512 * 4), 4);
	return le32(e) * 512ull;
}

/* A damaged block: reads covering it fail (raw, flat and the sparse grain), reads
 * beside it return the right bytes. */
static void test_damage(void)
{
	struct fixture f;
	struct ic_block_ref ref;
	uint8_t *buf = malloc(4 * GRAIN), byte;
	uint64_t pos = 0, at, next;
	int fd;

	fixture_open(&f, 65536, "cdmg");
	while (ic_view_lookup(f.v, pos, &ref) == 0 && !ref.img)
		pos++;
	pos += 2;
	CHECK_EQ(ic_view_lookup(f.v, pos, &ref), 0);
	CHECK(ref.img != NULL);
	fd = open(ref.img->path, O_RDWR);
	CHECK(pread(fd, &byte, 1, (off_t)(ref.e.offset + 30)) == 1);
	byte ^= 1;
	CHECK(pwrite(fd, &byte, 1, (off_t)(ref.e.offset + 30)) == 1);
	close(fd);
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_RAW, NULL, buf, 3 * GRAIN, (pos - 1) * GRAIN),
		 IC_ECORRUPT);
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_FLAT, NULL, buf, 1, pos * GRAIN + 5), IC_ECORRUPT);
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_RAW, NULL, buf, GRAIN, (pos - 1) * GRAIN), GRAIN);
	CHECK(!memcmp(buf, f.src + (pos - 1) * GRAIN, GRAIN));
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_RAW, NULL, buf, 2 * GRAIN, (pos + 1) * GRAIN),
		 2 * GRAIN);
	CHECK(!memcmp(buf, f.src + (pos + 1) * GRAIN, 2 * GRAIN));
	/* the sparse file: its grain tables still read, the grain itself does not */
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_SPARSE, NULL, buf, GRAIN, 0), GRAIN);
	at = sparse_grain_at(f.disk, pos);
	next = sparse_grain_at(f.disk, pos + 1);
	CHECK(at != 0 && next == at + GRAIN);
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_SPARSE, NULL, buf, 10, at), IC_ECORRUPT);
	CHECK_EQ(ic_disk_read(f.disk, IC_DISK_SPARSE, NULL, buf, GRAIN, next), GRAIN);
	CHECK(!memcmp(buf, f.src + (pos + 1) * GRAIN, GRAIN));
	fixture_close(&f);
	free(buf);
}

int main(void)
{
	dir = unit_tmpdir();
	setenv("IMGCHAIN_PASSPHRASE", "disk test passphrase", 1);
	RUN(test_block_64k);
	RUN(test_block_4k);
	RUN(test_block_256k);
	RUN(test_incremental_zeroed);
	RUN(test_identity_and_limits);
	RUN(test_damage);
	unit_rmtree(dir);
	UNIT_EXIT();
}
