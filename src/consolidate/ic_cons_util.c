/* ic_cons_util.c: consolidation helpers shared by its modules: the crash test hook,
 * image paths, the allocation of the chain directory, messages. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_lock.h"
#include "ic_store.h"
#include "ic_util.h"

/* ---- test hook ------------------------------------------------------------------- */

const char *const ic_cons_crash_points[] = {
	"prepare", "copy", "written", "commit", "rename", "renamed", "switch", "dup",
	"moved", "delete", "deleted", "punch", "done", NULL,
};

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
		for (;;)
			pause();
	}
}

void ic_cons_crash_point(const char *name)
{
	static unsigned crash_hits, stall_hits;

	hook_one("IMGCHAIN_TEST_CRASH_AT", false, name, &crash_hits);
	hook_one("IMGCHAIN_TEST_STALL_AT", true, name, &stall_hits);
}

/* ---- small helpers ------------------------------------------------------------------ */

char *ic_cons_seq_path(const char *dir, uint32_t seq)
{
	char name[32];

	ic_image_filename(seq, name, sizeof(name));
	return ic_path_join(dir, name);
}

char *ic_cons_tmp_path(const char *dir, uint32_t seq)
{
	char name[64];

	snprintf(name, sizeof(name), "%s%u.img", IC_CONS_TMP_TARGET, seq);
	return ic_path_join(dir, name);
}

/* Bytes allocated to the files of the chain directory. */
uint64_t ic_cons_dir_alloc(const char *dir)
{
	return ic_store_allocated(dir);
}

void ic_cons_note(struct cons *x, const char *fmt, ...)
{
	va_list ap;

	if (x->o->quiet)
		return;
	fprintf(stderr, "%s: ", ic_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void ic_cons_describe(pid_t pid, char *buf, size_t len)
{
	ic_lock_describe(pid, buf, len);
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < ' ')
			*p = ' ';
}
