/* ic_util.h: careful file I/O and small helpers shared by every module (and, through
 * ic_error.h, error reporting). */
#ifndef IC_UTIL_H
#define IC_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ic_error.h"      /* every module reports failures through ic_fail() */

/* Read exactly len bytes at off.  A short file gives IC_ECORRUPT with a "truncated"
 * message naming path; other failures -errno.  path is only used in messages. */
int ic_pread_full(int fd, void *buf, size_t len, uint64_t off, const char *path);
/* Write exactly len bytes at off; -errno (ENOSPC included) with a message. */
int ic_pwrite_full(int fd, const void *buf, size_t len, uint64_t off, const char *path);
/* fsync(fd) with a message on failure. */
int ic_fsync(int fd, const char *path);
/* fsync the directory dir so that a rename or unlink in it is durable. */
int ic_fsync_dir(const char *dir);
/* malloc'd "dir/name", or NULL when out of memory (callers return -ENOMEM). */
char *ic_path_join(const char *dir, const char *name);
/* Write buf to dir/name atomically: dir/.tmp-name created O_EXCL (a leftover regular
 * file or symlink of that name is removed first, never followed), fsync, rename, fsync
 * dir.  A name that is not a regular file (a symlink, FIFO, device...) is refused. */
int ic_write_file_atomic(const char *dir, const char *name, const void *buf, size_t len,
			 int mode);

/* Open a file of a directory the storage controls (a chain, an overlay, the state
 * directory): dirfd/name, or dir/name when dirfd is AT_FDCWD and dir is not NULL, or the
 * path name itself when dir is NULL (only its last component is untrusted).  Only a
 * regular file is opened: the name is looked at first without opening what it holds
 * (openat O_PATH | O_NOFOLLOW, fstat), so that a FIFO or device node is never opened, and
 * that inode is then opened through /proc/self/fd (by name with O_NOFOLLOW where /proc is
 * missing), with O_NONBLOCK | O_CLOEXEC | O_NOCTTY; fstat again; O_NONBLOCK cleared.  A
 * missing file with O_CREAT is created with O_EXCL (never through a name that appeared
 * meanwhile).  Anything else is IC_ECORRUPT "PATH: not a regular file
 * (symlink|FIFO|device|directory|socket): refused".
 * flags may hold O_CREAT (with mode) and O_EXCL; a symlink is never followed, with or
 * without O_CREAT.  A missing file without O_CREAT is -ENOENT with the message "PATH: No
 * such file or directory".  *fd = -1 on failure. */
int ic_open_regular(int dirfd, const char *dir, const char *name, int flags, mode_t mode,
		    int *fd);
/* Create a temporary file dir/name (or dirfd/name, as ic_open_regular) with O_CREAT |
 * O_EXCL: a regular file or symlink already there (a leftover, a plant) is unlinked
 * first, never followed; anything else there is refused as ic_open_regular does. */
int ic_create_tmp(int dirfd, const char *dir, const char *name, int flags, mode_t mode,
		  int *fd);
/* rename(from, to) that never replaces: renameat2(RENAME_NOREPLACE), or link and unlink
 * where the file system does not support it.  -EEXIST naming to when a file is there. */
int ic_rename_noreplace(const char *from, const char *to);
/* "symlink", "FIFO", "device", "directory", "socket" or "regular file" for st_mode. */
const char *ic_file_kind(mode_t mode);
/* Copy the bytes s[0..n) (or up to a NUL) for printing: every byte outside 0x20..0x7e,
 * and the backslash, is written as \xNN, so that text from the storage cannot drive the
 * terminal.  Stops at the first newline; cut where buf is full.  Returns buf (always
 * NUL-terminated; len >= 1). */
char *ic_sanitize(const char *s, size_t n, char *buf, size_t len);

/* Little-endian helpers (the format is LE; these are no-ops on x86). */
uint32_t ic_le32(uint32_t v);
uint64_t ic_le64(uint64_t v);

/* Set by the SIGINT/SIGTERM handler of ic_install_signals(); long loops check it
 * and stop with -EINTR, cleaning up what they started. */
#include <signal.h>
extern volatile sig_atomic_t ic_interrupted;
void ic_install_signals(void);

/* Monotonic seconds, for rates. */
double ic_now(void);
/* The n bytes that the 2n lowercase hex digits at hex spell, into out: 0, or -EINVAL
 * for any other character (out then partly written). */
int ic_hex_decode(const char *hex, size_t n, uint8_t *out);
/* "1.5 GiB" style, into buf of at least 16 bytes; returns buf. */
char *ic_human_bytes(uint64_t n, char *buf, size_t len);
/* Parse "64K", "4M", "65536" (binary multiples).  0 or -EINVAL. */
int ic_parse_size(const char *s, uint64_t *out);
/* A restore point name: 1..127 bytes of [A-Za-z0-9._+:-], not starting with . or -, not "latest". */
bool ic_name_valid(const char *name);
/* Make the process non-dumpable (no core dumps, no same-user ptrace): every tool calls it
 * first, before any key or block is in memory. */
void ic_no_dumps(void);

#endif
