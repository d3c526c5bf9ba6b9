/* ic_backup_head.c: the head start.  While the machine runs, the blocks dirty since the
 * parent are read from the live disk, encoded and appended to the new (still temporary,
 * invisible) image; their entries are kept in memory.  Then the snapshot is taken (the
 * caller's command) and only the blocks written since the head start began (the late
 * bitmap, started when the dirty bitmap was frozen) are read from the snapshot; every
 * other staged block keeps what the head start made.  The point equals the snapshot:
 * a staged block not marked late was not written between its copy and the snapshot. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "ic_backup_int.h"
#include "ic_util.h"

const struct staged *ic_backup_staged(const struct job *j, uint64_t pos)
{
	size_t lo = 0, hi = j->staged.n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (j->staged.v[mid].pos < pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < j->staged.n && j->staged.v[lo].pos == pos ? &j->staged.v[lo] : NULL;
}

static int run_cmd(const char *cmd)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return ic_fail(-errno, "--snapshot-cmd: fork: %s", strerror(errno));
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return ic_fail(-errno, "--snapshot-cmd: wait: %s", strerror(errno));
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return ic_fail(-EIO, "--snapshot-cmd '%s' exited %d: no point made", cmd,
			       WEXITSTATUS(status));
	return ic_fail(-EIO, "--snapshot-cmd '%s' was killed by signal %d: no point made", cmd,
		       WTERMSIG(status));
}

int ic_backup_head_start(struct job *j, struct ic_writer *w, struct ic_seal *seal,
			 struct ic_backup_stats *st)
{
	const struct ic_backup_opts *o = j->o;
	uint8_t *late = NULL, *zero = NULL;
	int ret;

	j->staging = true;
	ret = ic_backup_pipeline(j, w, seal, st);
	j->staging = false;
	st->bytes_read_head = st->bytes_read;
	ic_source_close(j->src);
	j->src = NULL;
	if (ret)
		return ret;
	if (ic_interrupted)
		return ic_fail(-EINTR, "interrupted");
	if (o->snapshot_cmd) {
		ret = run_cmd(o->snapshot_cmd);
		if (ret)
			return ret;
	}
	ret = ic_source_open(o->source, o->late_bitmap, &j->src);
	if (ret)
		return ret;
	if (ic_source_size(j->src) != j->disk_size)
		return ic_fail(-EINVAL, "%s: the snapshot has %llu bytes, the live disk had %llu",
			       o->source, (unsigned long long)ic_source_size(j->src),
			       (unsigned long long)j->disk_size);
	late = calloc(j->nblocks, 1);
	zero = calloc(j->nblocks, 1);
	if (!late || !zero) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ic_source_dirty_blocks(j->src, j->bs, late);
	if (!ret)
		ret = ic_source_zero_blocks(j->src, j->bs, zero, 1);
	if (ret)
		goto out;
	/* late: from the snapshot; staged: as staged; neither: the parent's */
	for (uint64_t b = 0; b < j->nblocks; b++) {
		if (late[b])
			j->plan[b] = zero[b] ? PLAN_HOLE : PLAN_READ;
		else if (j->plan[b] != PLAN_SKIP)
			j->plan[b] = PLAN_STAGED;
	}
out:
	free(late);
	free(zero);
	return ret;
}
