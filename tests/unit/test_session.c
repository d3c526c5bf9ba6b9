/* test_session.c: the serve layer's session (what imgmount and the nbdkit plugin share)
 * over a real two-point chain made by ic_backup(): the point table and `latest`, reads of
 * each point byte for byte, extents exactly at the zero blocks, writes through an overlay
 * (shown as data by the extents, back after a new session), and one server per overlay (a
 * second session on the same overlay directory gets EBUSY).  Runs under ASan and valgrind
 * with the other unit tests, which the NBD shell tests (nbdkit loads the plugin) cannot. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "imgchain.h"
#include "ic_session.h"
#include "unit.h"

#define BS 65536u
#define DISK (4ull * 1024 * 1024 + 5000)   /* 64 blocks and a short last one */

static char *dir;

static uint8_t *make_disk(uint64_t seed)
{
	uint8_t *d = calloc(1, DISK);

	for (uint64_t b = 0; b * BS < DISK; b++) {
		if (b % 3 == 1 || (b >= 20 && b < 30))
			continue;       /* zero blocks, and one longer run */
		for (uint64_t k = b * BS; k < (b + 1) * BS && k < DISK; k++)
			d[k] = (uint8_t)unit_rnd(&seed);
	}
	return d;
}

static void backup(const char *chain, const char *name, const uint8_t *src)
{
	struct ic_backup_opts o = { .quiet = true, .level = 3, .name = name };
	struct ic_backup_stats st;
	char *source = ic_path_join(dir, "source");
	int fd = open(source, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK_EQ(ic_pwrite_full(fd, src, DISK, 0, source), 0);
	close(fd);
	o.chain_dir = chain;
	o.source = source;
	CHECK_EQ(ic_backup(&o, &st), 0);
	free(source);
}

static struct ic_session *session(const char *chain, const char *overlay,
				  const struct ic_key *key)
{
	struct ic_session_opts so = { .chain_dir = chain, .overlay_dir = overlay,
				      .cache_bytes = 8u << 20 };
	struct ic_session *s = NULL;

	CHECK_EQ(ic_session_new(&so, key, &s), 0);
	CHECK_EQ(ic_session_start(s), 0);
	return s;
}

static struct ic_spoint *open_point(struct ic_session *s, const char *name, int expect)
{
	struct ic_spoint *p;

	pthread_mutex_lock(&s->lock);
	p = ic_session_find(s, name, strlen(name));
	CHECK(p != NULL);
	if (p)
		CHECK_EQ(ic_session_open(s, p, IC_DISK_RAW, false), expect);
	pthread_mutex_unlock(&s->lock);
	return p;
}

/* The disk through the session equals src; the extents are zero exactly at its zero blocks
 * (exact), or at least only where src is zero (an overlay's blocks are data). */
static void check_point(struct ic_spoint *p, const uint8_t *src, bool exact)
{
	uint8_t *buf = malloc(DISK);
	struct ic_cache_stream st = { 0 };
	uint64_t off = 0;

	CHECK_EQ(ic_session_size(p, IC_DISK_RAW), DISK);
	for (uint64_t o = 0; o < DISK; o += 100000) {
		size_t n = DISK - o < 100000 ? (size_t)(DISK - o) : 100000;

		CHECK_EQ(ic_session_read(p, IC_DISK_RAW, &st, buf + o, n, o), n);
	}
	CHECK(memcmp(buf, src, DISK) == 0);
	while (off < DISK) {
		bool zero;
		uint64_t n = ic_session_extent(p, off, DISK - off, &zero);

		CHECK(n > 0 && off + n <= DISK);
		if (!n || off + n > DISK)
			break;
		if (zero)
			CHECK(ic_is_zero(src + off, n));
		for (uint64_t b = off / BS; exact && b * BS < off + n; b++) {
			uint64_t len = DISK - b * BS < BS ? DISK - b * BS : BS;

			CHECK_EQ(ic_is_zero(src + b * BS, len), zero);
		}
		if (exact)
			CHECK_EQ(off % BS, 0);
		off += n;
	}
	free(buf);
}

static void test_session(void)
{
	char *chain = ic_path_join(dir, "chain"), *ov = ic_path_join(dir, "overlay");
	uint8_t *d1 = make_disk(1), *d2 = malloc(DISK), data[8192], back[8192];
	struct ic_session *s, *s2;
	struct ic_spoint *p1, *p2, *q;
	struct ic_key *key;
	bool zero;

	memcpy(d2, d1, DISK);
	memset(d2 + 3 * BS, 0, BS);             /* a data block zeroed */
	memset(d2 + 4 * BS + 100, 0x5a, 3000);  /* a zero block written */
	backup(chain, "p1", d1);
	backup(chain, "p2", d2);
	CHECK_EQ(ic_key_unlock_chain(chain, NULL, false, &key), 0);

	s = session(chain, ov, key);
	CHECK_EQ(ic_session_npoints(s), 2);
	CHECK(!strcmp(s->latest, "p2"));
	p1 = open_point(s, "p1", 0);
	p2 = open_point(s, "p2", 0);
	check_point(p1, d1, true);
	check_point(p2, d2, true);

	/* a write into a zero block of p2, through the overlay (made by the write) */
	CHECK_EQ(ic_session_extent(p2, 7 * BS, BS, &zero), BS);
	CHECK(zero);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	CHECK_EQ(ic_session_write(s, p2, IC_DISK_RAW, NULL, data, sizeof(data), 7 * BS + 4096),
		 sizeof(data));
	CHECK_EQ(ic_session_fsync(s, p2, IC_DISK_RAW), 0);
	CHECK_EQ(ic_session_extent(p2, 7 * BS, BS, &zero), 4096);
	CHECK(zero);
	CHECK_EQ(ic_session_extent(p2, 7 * BS + 4096, BS, &zero), 8192);
	CHECK(!zero);
	CHECK_EQ(ic_session_read(p2, IC_DISK_RAW, NULL, back, sizeof(back), 7 * BS + 4096),
		 sizeof(back));
	CHECK(memcmp(back, data, sizeof(data)) == 0);
	/* p1 has no overlay, and writes without an overlay directory are refused */
	CHECK(ic_session_ov_load(p1, IC_DISK_RAW) == NULL);

	/* one server per overlay: a second session gets EBUSY for p2, not for p1 */
	s2 = session(chain, ov, key);
	q = open_point(s2, "p2", -EBUSY);
	(void)q;
	q = open_point(s2, "p1", 0);
	if (q)
		ic_session_close(s2, q, IC_DISK_RAW);
	ic_session_free(s2);

	ic_session_close(s, p1, IC_DISK_RAW);
	ic_session_close(s, p2, IC_DISK_RAW);
	ic_session_free(s);

	/* a new session finds the write; a read-only one does not take writes */
	s = session(chain, ov, key);
	p2 = open_point(s, "p2", 0);
	memcpy(d2 + 7 * BS + 4096, data, sizeof(data));
	check_point(p2, d2, false);
	ic_session_close(s, p2, IC_DISK_RAW);
	ic_session_free(s);
	s = session(chain, NULL, key);
	p1 = open_point(s, "p1", 0);
	CHECK_EQ(ic_session_write(s, p1, IC_DISK_RAW, NULL, data, 10, 0), -EROFS);
	ic_session_close(s, p1, IC_DISK_RAW);
	ic_session_free(s);

	ic_key_free(key);
	free(d1);
	free(d2);
	free(chain);
	free(ov);
}

int main(void)
{
	dir = unit_tmpdir();
	setenv("IMGCHAIN_PASSPHRASE", "session test passphrase", 1);
	setenv("IMGCHAIN_KDF", "interactive", 1);
	setenv("IMGCHAIN_STATE_DIR", dir, 1);
	RUN(test_session);
	unit_rmtree(dir);
	UNIT_EXIT();
}
