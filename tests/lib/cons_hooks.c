/* cons_hooks.c: the crash and stall hooks of imgconsolidate's test build
 * (tests/hooks/imgconsolidate, built by `make check`; the installed tool has none).
 * With IMGCHAIN_TEST_CRASH_AT=NAME[:N] in the environment the process kills itself
 * (SIGKILL) the N-th time (default 1) it reaches the step NAME of a run; with
 * IMGCHAIN_TEST_STALL_AT=NAME[:N] it prints "stalled at NAME" and stops there until
 * killed; with IMGCHAIN_TEST_PAUSE_AT=NAME[:N] it prints the same and stops itself (SIGSTOP)
 * until the test sends SIGCONT, then goes on.  The step names: ic_consolidate_opts.step in ic_consolidate.h. */
#include "config.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ic_test_cons_step(const char *name);

static void hook_one(const char *var, bool stall, const char *name, unsigned *hits)
{
	const char *spec = getenv(var), *colon;
	size_t len;
	unsigned n = 1;

	if (!spec || !*spec)
		return;
	colon = strchr(spec, ':');
	len = colon ? (size_t)(colon - spec) : strlen(spec);
	if (len != strlen(name) || strncmp(spec, name, len))
		return;
	if (colon)
		n = (unsigned)strtoul(colon + 1, NULL, 10);
	if (++*hits != n)
		return;
	if (!stall) {
		raise(SIGKILL);
	} else {
		fprintf(stderr, "stalled at %s\n", name);
		if (strcmp(var, "IMGCHAIN_TEST_PAUSE_AT") == 0) {
			raise(SIGSTOP);         /* until the test sends SIGCONT */
			return;
		}
		for (;;)
			pause();
	}
}

void ic_test_cons_step(const char *name)
{
	static unsigned crash_hits, stall_hits, pause_hits;

	hook_one("IMGCHAIN_TEST_CRASH_AT", false, name, &crash_hits);
	hook_one("IMGCHAIN_TEST_STALL_AT", true, name, &stall_hits);
	hook_one("IMGCHAIN_TEST_PAUSE_AT", true, name, &pause_hits);
}
