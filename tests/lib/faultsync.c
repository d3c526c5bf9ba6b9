/* faultsync.c: an LD_PRELOAD shim for tests that makes one fsync/fdatasync fail with EIO,
 * as a device that lost a write does.  IMGCHAIN_FAULT_SYNC=TRIGGER:SUFFIX: while the file
 * TRIGGER exists, the next fsync or fdatasync of a file whose path ends with SUFFIX
 * removes TRIGGER and fails with EIO without syncing (one failure per trigger; the pages
 * stay dirty, as after a real writeback error a later sync may still succeed: the
 * error must not be lost by the program in between).  Any other call goes through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int inject(int fd)
{
	const char *spec = getenv("IMGCHAIN_FAULT_SYNC"), *colon;
	char trigger[PATH_MAX], link[64], path[PATH_MAX];
	size_t tl, pl, sl;
	ssize_t n;

	if (!spec || !(colon = strchr(spec, ':')))
		return 0;
	tl = (size_t)(colon - spec);
	if (tl == 0 || tl >= sizeof(trigger))
		return 0;
	memcpy(trigger, spec, tl);
	trigger[tl] = '\0';
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return 0;
	path[n] = '\0';
	pl = (size_t)n;
	sl = strlen(colon + 1);
	if (sl > pl || strcmp(path + pl - sl, colon + 1))
		return 0;
	return unlink(trigger) == 0;    /* exactly one caller wins the trigger */
}

/* Fail with EIO when inject() says so, else call the real function called name. */
static int sync_call(int fd, const char *name, int (**real)(int))
{
	if (inject(fd)) {
		errno = EIO;
		return -1;
	}
	if (!*real)
		*real = (int (*)(int))dlsym(RTLD_NEXT, name);
	return (*real)(fd);
}

int fsync(int fd)
{
	static int (*real)(int);

	return sync_call(fd, "fsync", &real);
}

int fdatasync(int fd)
{
	static int (*real)(int);

	return sync_call(fd, "fdatasync", &real);
}
