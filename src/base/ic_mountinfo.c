/* ic_mountinfo.c: the one reader of /proc/self/mountinfo. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ic_mountinfo.h"

/* Split line into its fields; false when it is not a mountinfo line. */
static bool parse_line(char *line, struct ic_mount_ent *m)
{
	char *f[6], *sv = NULL, *tok;
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	for (tok = strtok_r(line, " ", &sv); tok && n < 6; tok = strtok_r(NULL, " ", &sv))
		f[n++] = tok;
	if (n < 6 || sscanf(f[2], "%u:%u", &m->major, &m->minor) != 2)
		return false;
	m->dev = f[2];
	m->root = f[3];
	m->mountpoint = f[4];
	m->options = f[5];
	/* optional fields up to the "-" separator */
	while (tok && strcmp(tok, "-"))
		tok = strtok_r(NULL, " ", &sv);
	if (!tok)
		return false;
	m->fstype = strtok_r(NULL, " ", &sv);
	m->source = strtok_r(NULL, " ", &sv);
	m->super_options = strtok_r(NULL, " ", &sv);
	return m->fstype && m->source && m->super_options;
}

int ic_mountinfo_each(int (*fn)(const struct ic_mount_ent *m, void *arg), void *arg)
{
	char line[4096 * 2];
	int ret = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -errno;
	while (!ret && fgets(line, sizeof(line), f)) {
		struct ic_mount_ent m;

		if (parse_line(line, &m))
			ret = fn(&m, arg);
	}
	fclose(f);
	return ret;
}

bool ic_mount_opt_has(const char *opts, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = opts; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}
