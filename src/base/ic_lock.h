/* ic_lock.h: advisory record locks that tell writers which images readers use.
 *
 * Every process that reads an image (ic_image_open read-only: imgmount, imgrestore,
 * imgverify, imgbackup's parent) holds a POSIX read lock on byte 0 of
 * the image file for as long as it may read it; if it serves the point with a
 * writable overlay it also holds a read lock on byte 1.  imgconsolidate asks
 * (F_GETLK) before it punches holes in an image (byte 0: defer the punching) or
 * merges a point away (byte 1: refuse, naming the process).  The kernel drops the
 * locks when the process dies, so nothing can be left stuck.  FORMAT.md "Locks". */
#ifndef IC_LOCK_H
#define IC_LOCK_H

#include <stdbool.h>
#include <sys/types.h>

#define IC_LOCK_READER 0    /* byte 0: someone reads this image */
#define IC_LOCK_OVERLAY 1   /* byte 1: the point is served with a writable overlay */

/* Take a shared lock on byte `which` of the image open on fd. 0 or -errno. */
int ic_lock_hold(int fd, int which);
/* Drop this process's lock on byte `which` of the file open on fd (any descriptor of it:
 * POSIX locks belong to the process and the inode).  0 or -errno. */
int ic_lock_release(int fd, int which);
/* Who holds byte `which` of the image at fd (opened by the asker)?  Returns 0 and
 * *pid = 0 when nobody, 1 with *pid set when held by another process, or -errno. */
int ic_lock_holder(int fd, int which, pid_t *pid);
/* "imgmount /backups/x /mnt/x (pid 123)" from /proc, into buf. */
void ic_lock_describe(pid_t pid, char *buf, size_t len);

#endif
