/* ic_state.c: the key holder's rollback memory (see ic_state.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "ic_state.h"
#include "ic_util.h"

struct state {
	uint32_t seq;
	char name[128];
	uint8_t seal[32];
};

static char *state_dir(void)
{
	const char *d = getenv("IMGCHAIN_STATE_DIR"), *x = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	char buf[4096];

	if (d && *d)
		return strdup(d);
	if (x && *x)
		snprintf(buf, sizeof(buf), "%s/imgchain", x);
	else
		snprintf(buf, sizeof(buf), "%s/.local/state/imgchain", home && *home ? home : "/root");
	return strdup(buf);
}

static void file_name(const uint8_t id[16], char *buf, size_t len)
{
	size_t n = 0;

	for (int i = 0; i < 16; i++)
		n += (size_t)snprintf(buf + n, len - n, "%02x", id[i]);
	snprintf(buf + n, len - n, ".state");
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* 1 = loaded, 0 = none, <0 error */
static int load(const uint8_t id[16], struct state *st)
{
	char fname[64], sealhex[65], line[300];
	char *dir = state_dir(), *path;
	FILE *f;
	int fd, ret = 0;

	file_name(id, fname, sizeof(fname));
	path = ic_path_join(dir, fname);
	ret = ic_open_regular(AT_FDCWD, dir, fname, O_RDONLY, 0, &fd);
	if (ret) {
		ret = ret == -ENOENT ? 0 : ret;
		goto out;
	}
	f = fdopen(fd, "r");
	if (!f) {
		ret = ic_fail(-errno, "%s: %s", path, strerror(errno));
		close(fd);
		goto out;
	}
	memset(st, 0, sizeof(*st));
	ret = 1;
	if (!fgets(line, sizeof(line), f) || sscanf(line, "seq %u", &st->seq) != 1 ||
	    !fgets(line, sizeof(line), f) || sscanf(line, "seal %64s", sealhex) != 1 ||
	    strlen(sealhex) != 64 || !fgets(line, sizeof(line), f) ||
	    sscanf(line, "name %127s", st->name) != 1)
		ret = ic_fail(-EINVAL, "%s: unreadable state file (remove it to start afresh)", path);
	for (int i = 0; ret == 1 && i < 32; i++) {
		unsigned v;

		if (sscanf(sealhex + 2 * i, "%2x", &v) != 1)
			ret = ic_fail(-EINVAL, "%s: unreadable state file", path);
		st->seal[i] = (uint8_t)v;
	}
	fclose(f);
out:
	free(path);
	free(dir);
	return ret;
}

static int mkdirs(const char *dir)
{
	char buf[4096];

	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return ic_fail(-errno, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return ic_fail(-errno, "%s: %s", buf, strerror(errno));
	return 0;
}

int ic_state_record(const uint8_t chain_id[16], uint32_t seq, const char *name,
		    const uint8_t seal[32])
{
	char fname[64], sealhex[65], text[400];
	char *dir = state_dir();
	int n, ret = mkdirs(dir);

	if (!ret) {
		file_name(chain_id, fname, sizeof(fname));
		hex(seal, 32, sealhex);
		n = snprintf(text, sizeof(text), "seq %u\nseal %s\nname %s\n", seq, sealhex, name);
		ret = ic_write_file_atomic(dir, fname, text, (size_t)n, 0600);
	}
	free(dir);
	return ret;
}

int ic_state_check(const struct ic_chain *c, bool accept)
{
	const struct ic_point *newest = ic_chain_newest(c), *seen;
	struct state st;
	int ret;

	if (!newest)
		return 0;
	ret = load(c->chain_id, &st);
	if (ret < 0)
		return ret;
	if (ret == 1 && !accept) {
		seen = ic_chain_find_seq(c, st.seq);
		if (!seen && newest->seq < st.seq)
			return ic_fail(IC_ECORRUPT,
				       "%s: rolled back or truncated: this machine last saw restore point '%s' (sequence %u), the newest now is '%s' (sequence %u); use --accept-rollback if that is expected",
				       c->dir, st.name, st.seq, newest->img->slot.name, newest->seq);
		if (seen && memcmp(seen->img->slot.seal, st.seal, 32))
			return ic_fail(IC_ECORRUPT,
				       "%s: restore point '%s' (sequence %u) is not the one this machine saw (its seal changed); use --accept-rollback if that is expected",
				       c->dir, seen->img->slot.name, st.seq);
		if (newest->seq == st.seq)
			return 0;
	}
	return ic_state_record(c->chain_id, newest->seq, newest->img->slot.name,
			       newest->img->slot.seal);
}
