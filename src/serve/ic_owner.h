/* ic_owner.h: who serves an overlay, and how another server asks for it (FORMAT.md 10.7).
 *
 * An overlay directory DIR/POINT is written by one server at a time: the flock of 10.4 is
 * the guarantee.  Beside it, two small text files make the hand-over a conversation:
 *
 *   DIR/POINT/owner          the owner record: host, boot, pid namespace, pid, process start,
 *                            since, server kind, where (mount point or export), token; written
 *                            only by the holder of the flock (or, at a release, by the holder
 *                            naming its successor just before it lets the lock go)
 *   DIR/POINT/owner.request  a release request: the same fields for the newcomer, plus the
 *                            time it was sent and how long it waits
 *
 * Both come from storage that may be shared and untrusted: they are read with bounds (a
 * regular file of at most IC_OWNER_MAX bytes, fixed fields, each checked), and nothing in
 * them is ever acted on beyond messages and the release itself: no signal is sent, no lock
 * is skipped.  Knows nothing of sessions, FUSE or NBD. */
#ifndef IC_OWNER_H
#define IC_OWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IC_OWNER_RECORD "owner"
#define IC_OWNER_REQUEST "owner.request"
#define IC_OWNER_MAX 4096u
#define IC_OWNER_WHERE_MAX 1024u
#define IC_OWNER_WAIT_MAX 3600u
/* A request older than its wait plus this (the owner's clock) is left over: ignored. */
#define IC_OWNER_SKEW 30u

struct ic_owner_rec {
	char host[65];              /* [A-Za-z0-9._-], 1..64 */
	char boot[37];              /* the kernel's boot_id, or "-" */
	uint64_t pidns;             /* inode of the pid namespace, 0: unknown */
	uint64_t pid;
	uint64_t start;             /* process start, clock ticks after boot (pid reuse) */
	uint64_t since;             /* owner: when it took the overlay; request: when sent */
	char server[16];            /* "imgmount" or "nbdkit" */
	char where[IC_OWNER_WHERE_MAX + 1];   /* printable ASCII */
	char token[33];             /* 32 lowercase hex digits, random */
	uint32_t wait;              /* request only: seconds it waits, 1..IC_OWNER_WAIT_MAX */
};

/* This process as an owner or requester: server kind and where (sanitised), a fresh token,
 * since = now.  0 or -errno. */
int ic_owner_self(struct ic_owner_rec *r, const char *server, const char *where);

/* The text of r (FORMAT.md 10.7) into buf: its length, or -1 when it does not fit. */
int ic_owner_encode(const struct ic_owner_rec *r, bool request, char *buf, size_t len);
/* Decode data[0..len) (any bytes, any length) into r: NULL, or the rule it breaks with
 * *line the line (0: the whole file).  What decodes encodes back to the same bytes. */
const char *ic_owner_decode(const void *data, size_t len, bool request, struct ic_owner_rec *r,
			    int *line);

/* Read dirfd/name (dir names it in messages): 0, -ENOENT when there is none, IC_ECORRUPT
 * with a message ("DIR/NAME: damaged owner record: line N: CAUSE") when it breaks a rule,
 * or another -errno.  request: a release request (the wait line). */
int ic_owner_read(int dirfd, const char *dir, const char *name, bool request,
		  struct ic_owner_rec *r);
/* Replace dirfd/name atomically with r (a temporary file, fsync, rename).  0 or -errno. */
int ic_owner_write(int dirfd, const char *dir, const char *name, bool request,
		   const struct ic_owner_rec *r);

/* Is the process r names alive?  IC_OWNER_GONE only when it ran on this kernel (same boot
 * and pid namespace) and that pid is gone or is another process now; IC_OWNER_ALIVE when it
 * runs here; IC_OWNER_ELSEWHERE when another host or namespace (cannot tell). */
enum { IC_OWNER_GONE, IC_OWNER_ALIVE, IC_OWNER_ELSEWHERE };
int ic_owner_alive(const struct ic_owner_rec *r);

/* "imgmount (host H, pid P) on /mnt/x since 2026-12-03 11:32:37 UTC" */
void ic_owner_describe(const struct ic_owner_rec *r, char *buf, size_t len);

#endif
