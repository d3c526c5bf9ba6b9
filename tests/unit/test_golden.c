/* test_golden.c: golden chain files under tests/golden/v1 and tests/golden/v2 pin the
 * two image format versions (the same chain written in each).
 *
 * 1. The committed files must still restore to the expected disks and verify with
 *    the key (the reader did not drift).
 * 2. Writing the same chain again with a deterministic random source must give the
 *    committed files byte for byte (the writer did not drift: v1 is still written for
 *    the incrementals of v1 chains).  In v2 the point ids come from the same
 *    deterministic source, so they are fixed too.
 * `test_golden --write DIR VERSION` regenerates the files of a version after an intended
 * change (a format change gets a new version, described in FORMAT.md). */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "imgchain.h"
#include "unit.h"

#define BS 4096u
static const char *const files[] = { "imgchain.key", "00000001.img", "00000002.img", "00000003.img" };

/* ---- a deterministic random source (tests only) ---- */
static uint64_t det_ctr;

static void det_buf(void *buf, size_t n)
{
	uint8_t seed[randombytes_SEEDBYTES] = { 0 };

	memcpy(seed, &det_ctr, sizeof(det_ctr));
	det_ctr++;
	randombytes_buf_deterministic(buf, n, seed);
}

static uint32_t det_random(void)
{
	uint32_t v;

	det_buf(&v, sizeof(v));
	return v;
}

static const char *det_name(void)
{
	return "imgchain-test-deterministic";
}

static struct randombytes_implementation det_impl = {
	.implementation_name = det_name,
	.random = det_random,
	.buf = det_buf,
};

/* ---- the disks ---- */
static void make_disk(int which, uint8_t **out, size_t *len)
{
	size_t n = which == 0 ? 50 * BS + 123 : 53 * BS;
	uint8_t *d = calloc(1, n);
	uint32_t x = 12345;

	for (size_t b = 0; b * BS < n; b++) {
		size_t end = (b + 1) * BS < n ? (b + 1) * BS : n;

		for (size_t i = b * BS; i < end; i++) {
			x = x * 1103515245u + 12345u;
			if (b % 5 == 0)
				d[i] = 0;
			else if (b % 5 == 1)
				d[i] = (uint8_t)("golden chain "[i % 13]);
			else
				d[i] = (uint8_t)(x >> 16);
		}
	}
	if (which >= 1) {
		memset(d + 2 * BS, 0, BS);          /* a block becomes zero */
		memset(d + 7 * BS + 10, 'X', 100);  /* a block changes */
		memset(d + 50 * BS, 'Y', 3 * BS);   /* the disk grew */
	}
	if (which == 2)
		memset(d + 11 * BS, 'Z', BS);       /* the branch changes another block */
	*out = d;
	*len = n;
}

static int write_file(const char *path, const uint8_t *d, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int ret;

	if (fd < 0)
		return -errno;
	ret = ic_pwrite_full(fd, d, n, 0, path);
	close(fd);
	return ret;
}

static int write_chain(const char *chain, const char *tmp, uint32_t version)
{
	static const char *const names[] = { "mon", "tue", "branch" };
	struct ic_backup_opts o;
	struct ic_backup_stats st;
	char *src = ic_path_join(tmp, "src.raw");
	int ret = 0;

	for (int i = 0; i < 3 && !ret; i++) {
		uint8_t *d;
		size_t n;

		make_disk(i, &d, &n);
		ret = write_file(src, d, n);
		free(d);
		memset(&o, 0, sizeof(o));
		o.chain_dir = chain;
		o.source = src;
		o.name = names[i];
		o.parent = i == 2 ? "mon" : NULL;
		o.block_size = BS;
		o.level = 3;
		o.threads = 1;    /* one worker: nonces drawn in block order */
		o.quiet = true;
		o.created = 1795000000 + i * 86400;
		o.format_version = version;    /* of the full; the others inherit it */
		if (!ret)
			ret = ic_backup(&o, &st);
		if (ret)
			fprintf(stderr, "backup: %s\n", ic_last_error(ret));
	}
	free(src);
	return ret;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *b;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		return NULL;
	b = malloc((size_t)st.st_size + 1);
	if (ic_pread_full(fd, b, (size_t)st.st_size, 0, path)) {
		free(b);
		b = NULL;
	}
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static const char *golden_dir(uint32_t version)
{
	static char p[4096];
	const char *top = getenv("top_srcdir");

	snprintf(p, sizeof(p), "%s/tests/golden/v%u", top ? top : ".", version);
	return p;
}

/* The committed chain restores to the expected disks and verifies with the key; its
 * images are of the version. */
static void read_golden(uint32_t version)
{
	static const char *const names[] = { "mon", "tue", "branch" };
	char *tmp = unit_tmpdir(), cmd[8300];
	char *chain = ic_path_join(tmp, "chain"), *out = ic_path_join(tmp, "out.raw");
	struct ic_verify_opts vo = { .chain_dir = chain, .data = true, .quiet = true };
	struct ic_verify_stats vs;
	struct ic_chain *c;

	snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s'", golden_dir(version), chain);
	CHECK(system(cmd) == 0);
	CHECK_EQ(ic_chain_open(chain, &c), 0);
	CHECK_EQ(c->npoints, 3);
	for (size_t i = 0; i < c->npoints; i++) {
		CHECK_EQ(c->points[i].img->hdr.version, version);
		CHECK(version == ICF_IMAGE_V1 ? c->points[i].img->slot.point_id == 0
					      : c->points[i].img->slot.point_id != 0);
	}
	ic_chain_free(c);
	for (int i = 0; i < 3; i++) {
		struct ic_restore_opts ro = { .chain_dir = chain, .name = names[i], .dest = out,
					      .force = true, .quiet = true };
		struct ic_restore_stats rs;
		uint8_t *want, *got;
		size_t wn, gn = 0;
		int ret = ic_restore(&ro, &rs);

		if (ret)
			fprintf(stderr, "restore %s: %s\n", names[i], ic_last_error(ret));
		CHECK_EQ(ret, 0);
		make_disk(i, &want, &wn);
		got = slurp(out, &gn);
		CHECK(got && gn == wn && memcmp(got, want, wn) == 0);
		free(want);
		free(got);
	}
	CHECK_EQ(ic_verify(&vo, &vs), 0);
	CHECK_EQ(vs.points, 3);
	free(chain);
	free(out);
	unit_rmtree(tmp);
}

/* Writing the chain again gives the committed bytes. */
static void write_golden(uint32_t version)
{
	char *tmp = unit_tmpdir();
	char *chain = ic_path_join(tmp, "chain");

	det_ctr = 0;
	CHECK_EQ(write_chain(chain, tmp, version), 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *a = ic_path_join(chain, files[i]), *b = ic_path_join(golden_dir(version), files[i]);
		size_t an = 0, bn = 0;
		uint8_t *x = slurp(a, &an), *y = slurp(b, &bn);

		if (!x || !y || an != bn || memcmp(x, y, an))
			fprintf(stderr, "%s differs from the golden file %s\n", a, b);
		CHECK(x && y && an == bn && memcmp(x, y, an) == 0);
		free(x);
		free(y);
		free(a);
		free(b);
	}
	free(chain);
	unit_rmtree(tmp);
}

/* The point id of a new point avoids the ids of the points it can see: the random source
 * replayed from the start gives the first point's id again, and the backup draws anew. */
static void test_point_id_unique(void)
{
	char *tmp = unit_tmpdir();
	char *chain = ic_path_join(tmp, "chain"), *src = ic_path_join(tmp, "src.raw");
	struct ic_backup_opts o;
	struct ic_backup_stats st;
	struct ic_chain *c;
	uint8_t *d;
	size_t n;

	char *state = ic_path_join(tmp, "state"), *old = getenv("IMGCHAIN_STATE_DIR");

	/* a state of its own: the golden chain's state must not learn of a fourth point */
	old = old ? strdup(old) : NULL;
	setenv("IMGCHAIN_STATE_DIR", state, 1);
	det_ctr = 0;
	CHECK_EQ(write_chain(chain, tmp, ICF_IMAGE_V2), 0);
	make_disk(1, &d, &n);
	CHECK_EQ(write_file(src, d, n), 0);
	free(d);
	memset(&o, 0, sizeof(o));
	o.chain_dir = chain;
	o.source = src;
	o.name = "again";
	o.full = true;
	o.level = 3;
	o.threads = 1;
	o.quiet = true;
	det_ctr = 0;    /* the first draw is the first point's id */
	CHECK_EQ(ic_backup(&o, &st), 0);
	CHECK_EQ(ic_chain_open(chain, &c), 0);
	CHECK_EQ(c->npoints, 4);
	CHECK_EQ(c->points[3].img->hdr.version, ICF_IMAGE_V2);
	for (size_t i = 0; i < 3; i++)
		CHECK(c->points[3].img->slot.point_id != c->points[i].img->slot.point_id);
	CHECK(c->points[3].img->slot.point_id != 0);
	ic_chain_free(c);
	if (old)
		setenv("IMGCHAIN_STATE_DIR", old, 1);
	else
		unsetenv("IMGCHAIN_STATE_DIR");
	free(old);
	free(state);
	free(chain);
	free(src);
	unit_rmtree(tmp);
}

static void test_read_golden_v1(void) { read_golden(ICF_IMAGE_V1); }
static void test_write_golden_v1(void) { write_golden(ICF_IMAGE_V1); }
static void test_read_golden_v2(void) { read_golden(ICF_IMAGE_V2); }
static void test_write_golden_v2(void) { write_golden(ICF_IMAGE_V2); }

int main(int argc, char **argv)
{
	unsetenv("IMGCHAIN_KDF");
	unsetenv("IMGCHAIN_PASSPHRASE_FILE");
	setenv("IMGCHAIN_PASSPHRASE", "golden passphrase", 1);
	randombytes_set_implementation(&det_impl);
	if (sodium_init() < 0)
		return 1;
	if (argc == 4 && !strcmp(argv[1], "--write")) {
		char *tmp = unit_tmpdir();
		int ret;

		det_ctr = 0;
		ret = write_chain(argv[2], tmp, (uint32_t)atoi(argv[3]));

		unit_rmtree(tmp);
		return ret ? 1 : 0;
	}
	RUN(test_read_golden_v1);
	RUN(test_write_golden_v1);
	RUN(test_read_golden_v2);
	RUN(test_write_golden_v2);
	RUN(test_point_id_unique);
	UNIT_EXIT();
}
