/* ic_error.c: per-thread failures (code and message together), their hand-off across
 * threads, exit codes and the tools' messages. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ic_error.h"

const char *ic_progname = "imgchain";

static __thread struct ic_error last;     /* code 0: nothing recorded */

int ic_exit_code(int err)
{
	if (err >= 0)
		return IC_EXIT_OK;
	if (err == IC_ECORRUPT)
		return IC_EXIT_CORRUPT;
	if (err == IC_EKEY)
		return IC_EXIT_KEY;
	return IC_EXIT_ERROR;
}

int ic_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last.msg, sizeof(last.msg), fmt, ap);
	va_end(ap);
	last.code = err;
	return err;
}

const char *ic_last_error(int err)
{
	if (err && last.code == err)
		return last.msg;
	return strerror(err < 0 ? -err : err);
}

void ic_clear_error(void)
{
	last.code = 0;
	last.msg[0] = '\0';
}

void ic_error_save(struct ic_error *e, int err)
{
	e->code = err;
	snprintf(e->msg, sizeof(e->msg), "%s", ic_last_error(err));
}

int ic_error_raise(const struct ic_error *e)
{
	if (e->code)
		last = *e;
	return e->code;
}

void ic_msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", ic_progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int ic_report(int err)
{
	ic_msg("%s", ic_last_error(err));
	return ic_exit_code(err);
}
