/* ic_mountinfo.h: the one reader of /proc/self/mountinfo. */
#ifndef IC_MOUNTINFO_H
#define IC_MOUNTINFO_H

#include <stdbool.h>

/* One line: "id parent major:minor root mountpoint options [optional...] - fstype source
 * superoptions".  Strings point into the line being read (valid during the call only);
 * names are as the kernel writes them (octal escapes such as \040 not undone). */
struct ic_mount_ent {
	unsigned major, minor;
	const char *dev;            /* "major:minor" */
	const char *root, *mountpoint, *options;
	const char *fstype, *source, *super_options;
};

/* Call fn for each mount in /proc/self/mountinfo, in the kernel's order, until it returns
 * non-zero (that value is returned); malformed lines are skipped.  0, or -errno when the
 * file cannot be read. */
int ic_mountinfo_each(int (*fn)(const struct ic_mount_ent *m, void *arg), void *arg);

/* Does the comma-separated option list opts hold option name (exactly)? */
bool ic_mount_opt_has(const char *opts, const char *name);

#endif
