/* ic_lock.c: reader/overlay record locks on image files (see ic_lock.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ic_lock.h"

static void range(struct flock *fl, short type, int which)
{
	memset(fl, 0, sizeof(*fl));
	fl->l_type = type;
	fl->l_whence = SEEK_SET;
	fl->l_start = which;
	fl->l_len = 1;
}

static int setlk(int fd, short type, int which)
{
	struct flock fl;

	range(&fl, type, which);
	if (fcntl(fd, F_SETLK, &fl) < 0)
		return -errno;
	return 0;
}

int ic_lock_hold(int fd, int which)
{
	return setlk(fd, F_RDLCK, which);
}

int ic_lock_release(int fd, int which)
{
	return setlk(fd, F_UNLCK, which);
}

int ic_lock_holder(int fd, int which, pid_t *pid)
{
	struct flock fl;

	range(&fl, F_WRLCK, which);
	*pid = 0;
	if (fcntl(fd, F_GETLK, &fl) < 0)
		return -errno;
	if (fl.l_type == F_UNLCK)
		return 0;
	*pid = fl.l_pid;
	return 1;
}

void ic_lock_describe(pid_t pid, char *buf, size_t len)
{
	char path[64], cmd[512];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(buf, len, "pid %d", (int)pid);
		return;
	}
	cmd[n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (cmd[i] == '\0')
			cmd[i] = i < n - 1 ? ' ' : '\0';
		else if ((unsigned char)cmd[i] < ' ' || (unsigned char)cmd[i] >= 0x7f)
			cmd[i] = '?';    /* printed to a terminal */
	snprintf(buf, len, "%s (pid %d)", cmd, (int)pid);
}
