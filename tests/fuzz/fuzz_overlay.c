/* fuzz_overlay.c: the overlay map (format/FORMAT.md, "Overlay") on arbitrary bytes.
 * The input is the .map file; half the time its slot checksums are fixed up so that the
 * field checks are reached, and the open uses the binding the map records (or, half the
 * time, another one).  Open must succeed or fail cleanly; after a successful open, reads
 * stay within the size, and a write made and synced reads back after a reopen. */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "ic_overlay.h"
#include "ic_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOT 4096u

/* A failed expectation: say which, and the library's last message, then crash (libFuzzer
 * keeps the input).  "deadly signal" alone, as a bare trap gives, says nothing. */
#define CHECK(cond, what, err)                                                               \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "fuzz_overlay: %s (%s)\n", (what), ic_last_error(err)); \
			abort();                                                             \
		}                                                                            \
	} while (0)

static int base_read(void *arg, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	(void)arg;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((off + i) * 7);
	return 0;
}

/* The checksums of both header slots (at 56) and every page slot (at 24). */
static void fix_checksums(uint8_t *m, size_t size)
{
	for (size_t off = 0; off + SLOT <= size; off += SLOT) {
		size_t field = off < 2 * SLOT ? 56 : 24;
		uint64_t sum;

		memset(m + off + field, 0, 8);
		sum = htole64(XXH3_64bits(m + off, SLOT));
		memcpy(m + off + field, &sum, 8);
	}
}

static uint64_t le64_at(const uint8_t *m, size_t size, size_t off)
{
	uint64_t v = 0;

	if (off + 8 <= size)
		memcpy(&v, m + off, 8);
	return le64toh(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char dir[] = "/tmp/fuzz-overlay-XXXXXX";
	static char prefix[64], map[80], dat[80];
	static const char msg[] = "fuzz overlay write";
	struct ic_overlay_bind bind;
	struct ic_overlay *ov;
	uint8_t *m, buf[3 * 4096];
	uint64_t base_size, off;
	size_t hdr;
	ssize_t n;
	int fd, ret;

	if (!prefix[0]) {
		CHECK(mkdtemp(dir), "mkdtemp /tmp/fuzz-overlay-XXXXXX", -errno);
		snprintf(prefix, sizeof(prefix), "%s/ov", dir);
		snprintf(map, sizeof(map), "%s.map", prefix);
		snprintf(dat, sizeof(dat), "%s.data", prefix);
	}
	m = malloc(size ? size : 1);
	memcpy(m, data, size);
	if (size && (data[size - 1] & 1))
		fix_checksums(m, size);
	unlink(dat);
	fd = open(map, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "cannot create the map file (the harness's own directory)", -errno);
	CHECK(!size || write(fd, m, size) == (ssize_t)size, "cannot write the map file", -errno);
	close(fd);

	/* the binding and base size the map records (header slot 1 if slot 0 has no magic),
	 * or others */
	hdr = size >= 8 && !memcmp(m, "ICOVLMAP", 8) ? 0 : SLOT;
	memset(&bind, 0, sizeof(bind));
	if (size >= hdr + 112)
		memcpy(bind.id, m + hdr + 64, IC_OVERLAY_BIND_LEN);
	if (size && (data[size - 1] & 2))
		bind.id[0] ^= 1;
	snprintf(bind.label, sizeof(bind.label), "fuzz base");
	base_size = le64_at(m, size, hdr + 48) % (64u << 20);
	off = le64_at(m, size, hdr + 32) % (64u << 20);
	free(m);

	if (ic_overlay_open(prefix, base_size, &bind, &ov))
		return 0;
	CHECK(ic_overlay_size(ov) <= (1ull << 48), "overlay size beyond 2^48", 0);
	n = ic_overlay_read(ov, buf, sizeof(buf), off, base_read, NULL);
	CHECK(n <= (ssize_t)sizeof(buf), "a read returned more than asked", 0);
	if (ic_overlay_write(ov, msg, sizeof(msg), off, base_read, NULL) != (ssize_t)sizeof(msg) ||
	    ic_overlay_fsync(ov)) {
		ic_overlay_close(ov);
		return 0;
	}
	ic_overlay_close(ov);
	/* what was synced is there after a reopen with the same binding */
	ret = ic_overlay_open(prefix, base_size, &bind, &ov);
	CHECK(!ret, "the reopen of a synced overlay failed", ret);
	n = ic_overlay_read(ov, buf, sizeof(msg), off, base_read, NULL);
	CHECK(n == (ssize_t)sizeof(msg), "the reread of a synced write failed", (int)n);
	CHECK(!memcmp(buf, msg, sizeof(msg)), "a synced write reads back different bytes", 0);
	ic_overlay_close(ov);
	return 0;
}
