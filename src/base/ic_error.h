/* ic_error.h: an error is a code and its message, kept together per thread. */
#ifndef IC_ERROR_H
#define IC_ERROR_H

#include <errno.h>

/* Library calls return 0 (or a count) on success and a negative errno on failure.
 * Two errnos carry imgchain meanings, which the tools turn into their own exit codes: */
#define IC_ECORRUPT (-EBADMSG)      /* checksum, structure or authentication failure */
#define IC_EKEY (-EKEYREJECTED)     /* wrong passphrase, or a key that is not this chain's */

enum ic_exit {
	IC_EXIT_OK = 0,
	IC_EXIT_ERROR = 1,
	IC_EXIT_USAGE = 2,
	IC_EXIT_KEY = 3,
	IC_EXIT_CORRUPT = 4,
};

/* Map a negative errno from the library to a tool exit code. */
int ic_exit_code(int err);

#define IC_ERROR_MSG_MAX 1024

/* One failure: its code (a negative errno) and the message recorded with it. */
struct ic_error {
	int code;
	char msg[IC_ERROR_MSG_MAX];
};

/* Record the failure err with its message ("FILE: cause") for this thread and return err
 * unchanged, so that callers write `return ic_fail(-EIO, "%s: read: %s", ...)`.
 * The code and message are kept together until the next ic_fail() on the same thread. */
int ic_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message this thread recorded with err (by ic_fail or ic_error_raise), or
 * strerror(-err) when the last failure recorded here was another code: a message is
 * never reported for an error it was not written for.  Never NULL. */
const char *ic_last_error(int err);
/* Forget this thread's failure (ic_last_error then gives strerror for every code). */
void ic_clear_error(void);

/* Handing a failure across threads: the thread that failed with err keeps it in *e (code
 * and the message recorded with it, or strerror's) ...  */
void ic_error_save(struct ic_error *e, int err);
/* ... and the thread that reports it makes it its own, returning e->code (0: nothing
 * recorded; then nothing changes). */
int ic_error_raise(const struct ic_error *e);

/* Tools: the program name used in messages, and printing helpers to stderr. */
extern const char *ic_progname;
void ic_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "prog: <message of err>" and return ic_exit_code(err). */
int ic_report(int err);

#endif
