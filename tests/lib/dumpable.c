/* dumpable.c: an LD_PRELOAD shim for tests.  When the process exits normally it appends
 * "COMM PID dumpable=N" (prctl(PR_GET_DUMPABLE)) to the file $IMGCHAIN_DUMPABLE_LOG, so a
 * test can see whether a tool made itself non-dumpable (1: core dumps possible, 0: none). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>

__attribute__((destructor)) static void dumpable_report(void)
{
	const char *log = getenv("IMGCHAIN_DUMPABLE_LOG");
	char comm[32] = "?", line[128];
	int fd, n;

	if (!log)
		return;
	prctl(PR_GET_NAME, comm, 0, 0, 0);
	n = snprintf(line, sizeof(line), "%s %d dumpable=%d\n", comm, (int)getpid(),
		     prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
	fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		if (write(fd, line, (size_t)n) < 0)
			(void)0;
		close(fd);
	}
}
