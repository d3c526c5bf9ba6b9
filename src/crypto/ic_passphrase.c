/* ic_passphrase.c: obtain a passphrase from a file, the environment or the terminal. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "ic_keys.h"
#include "ic_util.h"

/* Longest passphrase accepted, bytes (a line longer than this is refused, not cut). */
#define IC_PASS_MAX 1024

#define IC_NO_PASS_HINT                                                                  \
	"no passphrase: use --passphrase-file FILE, IMGCHAIN_PASSPHRASE_FILE or "        \
	"IMGCHAIN_PASSPHRASE, or run on a terminal"
#define IC_NO_NEW_PASS_HINT                                                              \
	"no new passphrase: use --new-passphrase-file FILE or IMGCHAIN_NEW_PASSPHRASE, " \
	"or run on a terminal"

/* Signal caught while the terminal's echo is off (0: none). */
static volatile sig_atomic_t ic_pass_signo;

static const int ic_pass_signals[] = { SIGINT, SIGHUP, SIGQUIT, SIGTERM };
#define IC_PASS_NSIG (sizeof(ic_pass_signals) / sizeof(ic_pass_signals[0]))

static char *ic_pass_alloc(void)
{
	/* room for IC_PASS_MAX bytes, a '\n' that tells the line ended, and the NUL */
	char *buf = sodium_malloc(IC_PASS_MAX + 2);

	if (!buf)
		ic_fail(-ENOMEM, "sodium_malloc: out of memory for a passphrase");
	return buf;
}

void ic_passphrase_free(char *pass)
{
	sodium_free(pass);
}

/* Read the first line of fd into buf (at most IC_PASS_MAX + 1 bytes read).  *n gets
 * the line's length without its '\n'; -E2BIG if the line is too long. */
static int ic_pass_read_line(int fd, char *buf, size_t *n)
{
	size_t got = 0;
	char *nl;

	while (got < IC_PASS_MAX + 1) {
		ssize_t r = read(fd, buf + got, IC_PASS_MAX + 1 - got);

		if (r < 0) {
			if (errno == EINTR && !ic_pass_signo)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		nl = memchr(buf + got, '\n', (size_t)r);
		got += (size_t)r;
		if (nl) {
			*n = (size_t)(nl - buf);
			return 0;
		}
	}
	if (got > IC_PASS_MAX)
		return -E2BIG;
	*n = got;
	return 0;
}

/* Strip the line end, refuse empty and NUL-carrying passphrases, hand buf over. */
static int ic_pass_finish(char *buf, size_t n, const char *src, char **out, size_t *len)
{
	while (n && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
		n--;
	sodium_memzero(buf + n, IC_PASS_MAX + 2 - n);
	if (n == 0)
		return ic_fail(-EINVAL, "%s: empty passphrase refused", src);
	if (memchr(buf, '\0', n))
		return ic_fail(-EINVAL, "%s: passphrase contains a NUL byte", src);
	*out = buf;
	*len = n;
	return 0;
}

static int ic_pass_from_file(const char *path, char **out, size_t *len)
{
	char *buf;
	size_t n;
	int fd, ret;

	buf = ic_pass_alloc();
	if (!buf)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = ic_fail(-errno, "%s: open passphrase file: %s", path, strerror(errno));
		goto out_free;
	}
	ret = ic_pass_read_line(fd, buf, &n);
	close(fd);
	if (ret == -E2BIG) {
		ret = ic_fail(-EINVAL, "%s: passphrase longer than %d bytes", path, IC_PASS_MAX);
		goto out_free;
	}
	if (ret < 0) {
		ret = ic_fail(ret, "%s: read passphrase file: %s", path, strerror(-ret));
		goto out_free;
	}
	ret = ic_pass_finish(buf, n, path, out, len);
	if (!ret)
		return 0;
out_free:
	sodium_free(buf);
	return ret;
}

static int ic_pass_from_string(const char *s, const char *src, char **out, size_t *len)
{
	size_t n = strlen(s);
	char *buf;
	int ret;

	if (n > IC_PASS_MAX)
		return ic_fail(-EINVAL, "%s: passphrase longer than %d bytes", src, IC_PASS_MAX);
	buf = ic_pass_alloc();
	if (!buf)
		return -ENOMEM;
	memcpy(buf, s, n);
	ret = ic_pass_finish(buf, n, src, out, len);
	if (ret < 0)
		sodium_free(buf);
	return ret;
}

/* ---- terminal ------------------------------------------------------------- */

static void ic_pass_on_signal(int sig)
{
	ic_pass_signo = sig;
}

static void ic_pass_catch(struct sigaction old[IC_PASS_NSIG])
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = ic_pass_on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;            /* no SA_RESTART: read() must return EINTR */
	ic_pass_signo = 0;
	for (size_t i = 0; i < IC_PASS_NSIG; i++)
		sigaction(ic_pass_signals[i], &sa, &old[i]);
}

static void ic_pass_uncatch(const struct sigaction old[IC_PASS_NSIG])
{
	for (size_t i = 0; i < IC_PASS_NSIG; i++)
		sigaction(ic_pass_signals[i], &old[i], NULL);
}

static void ic_pass_write(int fd, const char *s)
{
	size_t n = strlen(s);

	while (n) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

/* Print prompt on out and read one line from in with echo off.  A signal that would
 * end the program restores the terminal first, then is delivered as before. */
static int ic_pass_tty_line(int in, int out, const char *prompt, char *buf, size_t *n)
{
	struct sigaction old_sa[IC_PASS_NSIG];
	struct termios old_tio, tio;
	int ret, sig;

	if (tcgetattr(in, &old_tio) < 0)
		return ic_fail(-errno, "terminal: tcgetattr: %s", strerror(errno));
	tio = old_tio;
	tio.c_lflag &= ~(tcflag_t)ECHO;
	tio.c_lflag |= ECHONL;
	ic_pass_catch(old_sa);
	/* echo off before the prompt: typeahead flushed after it would be lost */
	if (tcsetattr(in, TCSAFLUSH, &tio) < 0) {
		ret = ic_fail(-errno, "terminal: cannot turn echo off: %s", strerror(errno));
		ic_pass_uncatch(old_sa);
		return ret;
	}
	ic_pass_write(out, prompt);
	ret = ic_pass_read_line(in, buf, n);
	tcsetattr(in, TCSAFLUSH, &old_tio);
	sig = ic_pass_signo;
	ic_pass_uncatch(old_sa);
	ic_pass_signo = 0;
	if (sig) {
		ic_pass_write(out, "\n");
		raise(sig);
		return ic_fail(-EINTR, "passphrase prompt interrupted");
	}
	if (ret == -E2BIG)
		return ic_fail(-EINVAL, "passphrase longer than %d bytes", IC_PASS_MAX);
	if (ret < 0)
		return ic_fail(ret, "terminal: read: %s", strerror(-ret));
	return 0;
}

/* One or, with confirm, two readings that must match. */
static int ic_pass_ask(int in, int fd_out, const char *prompt, bool confirm, char **out,
		       size_t *len)
{
	char *a, *b = NULL, *pass;
	size_t na, nb, passlen;
	int ret;

	a = ic_pass_alloc();
	if (!a)
		return -ENOMEM;
	ret = ic_pass_tty_line(in, fd_out, prompt, a, &na);
	if (ret < 0)
		goto out_free;
	ret = ic_pass_finish(a, na, "terminal", &pass, &passlen);
	if (ret < 0 || !confirm)
		goto out_free;
	b = ic_pass_alloc();
	if (!b) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = ic_pass_tty_line(in, fd_out, "Repeat passphrase: ", b, &nb);
	if (ret < 0)
		goto out_free;
	while (nb && (b[nb - 1] == '\r' || b[nb - 1] == '\n'))
		nb--;
	if (nb != passlen || sodium_memcmp(a, b, nb) != 0)
		ret = ic_fail(-EINVAL, "passphrases do not match");
out_free:
	sodium_free(b);
	if (ret < 0) {
		sodium_free(a);
		return ret;
	}
	*out = pass;
	*len = passlen;
	return 0;
}

static int ic_pass_from_tty(const char *prompt, bool confirm, const char *hint, char **out,
			    size_t *len)
{
	size_t n = strlen(prompt);
	char text[512];
	int fd, ret;

	if (!isatty(STDIN_FILENO))
		return ic_fail(-EINVAL, "%s", hint);
	/* "Passphrase" and "Passphrase: " both read as a prompt */
	snprintf(text, sizeof(text), "%s%s", prompt, n && prompt[n - 1] == ' ' ? "" : ": ");
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return ic_pass_ask(STDIN_FILENO, STDERR_FILENO, text, confirm, out, len);
	ret = ic_pass_ask(fd, fd, text, confirm, out, len);
	close(fd);
	return ret;
}

/* ---- the sources, in order ------------------------------------------------- */

extern char **environ;

/* What a variable held when it was read and removed (sodium memory: locked, not in core
 * dumps), so that a process that unlocks more than once (a library user) still finds
 * it.  0: IMGCHAIN_PASSPHRASE, 1: IMGCHAIN_NEW_PASSPHRASE. */
static struct {
	char *pass;
	size_t len;
} ic_pass_env_kept[2];

/* The passphrase of variable var (slot kept), then the variable removed from the
 * environment and its "NAME=value" bytes wiped where they lie: a daemon's
 * /proc/PID/environ shows the bytes of its initial environment, which unsetenv()
 * alone leaves in place.  Once removed, the kept copy answers for it. */
static int ic_pass_from_env(const char *var, int kept, char **out, size_t *len)
{
	size_t vlen = strlen(var);
	const char *val = getenv(var);
	char *entry = NULL, *copy;
	int ret;

	if (!val) {
		if (!ic_pass_env_kept[kept].pass)
			return 1;
		copy = ic_pass_alloc();
		if (!copy)
			return -ENOMEM;
		memcpy(copy, ic_pass_env_kept[kept].pass, ic_pass_env_kept[kept].len + 1);
		*out = copy;
		*len = ic_pass_env_kept[kept].len;
		return 0;
	}
	for (char **e = environ; e && *e; e++)
		if (!strncmp(*e, var, vlen) && (*e)[vlen] == '=') {
			entry = *e;
			break;
		}
	ret = ic_pass_from_string(val, var, out, len);
	unsetenv(var);
	if (entry)
		sodium_memzero(entry, strlen(entry));
	sodium_free(ic_pass_env_kept[kept].pass);
	ic_pass_env_kept[kept].pass = NULL;
	if (ret == 0 && (copy = ic_pass_alloc())) {
		memcpy(copy, *out, *len + 1);
		ic_pass_env_kept[kept].pass = copy;
		ic_pass_env_kept[kept].len = *len;
	}
	return ret;
}

static int ic_pass_from_env_file(const char *var, const char **path)
{
	*path = getenv(var);
	if (*path && !**path)
		return ic_fail(-EINVAL, "%s is set but empty", var);
	return 0;
}

int ic_passphrase_get(const char *passphrase_file, bool confirm, const char *prompt,
		      char **out, size_t *len)
{
	const char *s;
	int ret;

	if (sodium_init() < 0)
		return ic_fail(-EIO, "sodium_init failed");
	if (passphrase_file)
		return ic_pass_from_file(passphrase_file, out, len);
	ret = ic_pass_from_env_file("IMGCHAIN_PASSPHRASE_FILE", &s);
	if (ret < 0)
		return ret;
	if (s)
		return ic_pass_from_file(s, out, len);
	ret = ic_pass_from_env("IMGCHAIN_PASSPHRASE", 0, out, len);
	if (ret <= 0)
		return ret;
	return ic_pass_from_tty(prompt ? prompt : "Passphrase: ", confirm, IC_NO_PASS_HINT, out,
				len);
}

int ic_passphrase_get_new(const char *passphrase_file, const char *prompt, char **out,
			  size_t *len)
{
	int ret;

	if (sodium_init() < 0)
		return ic_fail(-EIO, "sodium_init failed");
	if (passphrase_file)
		return ic_pass_from_file(passphrase_file, out, len);
	ret = ic_pass_from_env("IMGCHAIN_NEW_PASSPHRASE", 1, out, len);
	if (ret <= 0)
		return ret;
	return ic_pass_from_tty(prompt ? prompt : "New passphrase: ", true, IC_NO_NEW_PASS_HINT,
				out, len);
}
