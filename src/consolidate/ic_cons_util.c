/* ic_cons_util.c: consolidation helpers shared by its modules: the step hook,
 * image paths, the allocation of the chain directory, messages. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
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

void ic_cons_step(struct cons *x, const char *name)
{
	if (x->o->step)
		x->o->step(name);
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
