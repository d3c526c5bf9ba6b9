/* unit.h: a tiny test harness for the unit tests (TAP-free: exit 0 pass, 1 fail, 77 skip). */
#ifndef IC_UNIT_H
#define IC_UNIT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int unit_failures;

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,  \
				#cond);                                              \
			unit_failures++;                                             \
		}                                                                    \
	} while (0)

#define CHECK_EQ(a, b)                                                               \
	do {                                                                         \
		long long _a = (long long)(a), _b = (long long)(b);                  \
		if (_a != _b) {                                                      \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n", \
				__FILE__, __LINE__, #a, _a, #b, _b);                 \
			unit_failures++;                                             \
		}                                                                    \
	} while (0)

#define RUN(fn)                                                                      \
	do {                                                                         \
		int _before = unit_failures;                                         \
		fn();                                                                \
		fprintf(stderr, "%s %s\n", unit_failures == _before ? "ok  " : "FAIL", #fn); \
	} while (0)

#define UNIT_EXIT() return unit_failures ? 1 : 0

/* A fresh empty directory under $TMPDIR (or /tmp), removed by unit_rmtree(). */
static inline char *unit_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *p = malloc(4096);
	snprintf(p, 4096, "%s/ic-unit-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(p)) {
		perror("mkdtemp");
		exit(1);
	}
	return p;
}

static inline void unit_rmtree(char *dir)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
	free(dir);
}

/* The unit tests' one pseudo-random generator (splitmix64): deterministic for a seed, so a
 * failure reproduces.  *s is the state; unit_rnd_below(s, n) is in [0, n) (0 when n is 0). */
static inline uint64_t unit_rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t unit_rnd_below(uint64_t *s, uint64_t n)
{
	return n ? unit_rnd(s) % n : 0;
}

#endif
