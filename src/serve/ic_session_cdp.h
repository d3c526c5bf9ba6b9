/* ic_session_cdp.h: the checkpoints of a chain's CDP journal (FORMAT.md section 15)
 * served beside its restore points: `cdp/<UTC time>/disk.raw` in imgmount, read-only,
 * byte for byte the disk `imgrestore --at <UTC time>` writes.
 *
 *   list     the checkpoints a keyed reader may offer by their time (ic_journal_offered:
 *            verified, not across a gap, the one --at that time picks), named by their
 *            time "YYYY-MM-DDTHH:MM:SS.NNNNNNNNNZ"; rescanned when a journal file changed
 *   open     a fresh scan (the journal may have changed since it was listed), the same
 *            choice imgrestore --at makes, then one walk up to the checkpoint that
 *            verifies its MAC chain and keeps, per block, the last record's place and
 *            its authenticated tag
 *   read     each block's record read again, its tag compared with the one the walk
 *            verified, decoded (AEAD) with the key: a record changed since is EIO
 *
 * Knows nothing of FUSE or NBD; the session (ic_session.h) owns one, made on first use. */
#ifndef IC_SESSION_CDP_H
#define IC_SESSION_CDP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct ic_session;
struct ic_scdp;                 /* the listing, in s->cdp */
struct ic_scdp_disk;            /* one open checkpoint */

/* The directory name of the view, and its one file. */
#define IC_SCDP_DIR "cdp"
#define IC_SCDP_FILE "disk.raw"

struct ic_scdp_info {
	char name[48];
	uint32_t session;
	uint64_t interval;
	uint64_t disk_size;
	struct timespec when;
};

/* Whether the chain has a journal directory (the view is shown).  No key use. */
bool ic_scdp_present(struct ic_session *s);
/* Every checkpoint offered, oldest first (rescanned first when the journal changed).
 * fn's non-zero return stops and is returned. */
int ic_scdp_each(struct ic_session *s, int (*fn)(void *arg, const struct ic_scdp_info *c),
		 void *arg);
/* The checkpoint called name[len]: 0, or -ENOENT. */
int ic_scdp_find(struct ic_session *s, const char *name, size_t len, struct ic_scdp_info *out);
/* Open the checkpoint called name[len] for reading (see above): 0, -ENOENT, IC_ECORRUPT
 * (the journal no longer verifies up to it), -ENOMEM. */
int ic_scdp_open(struct ic_session *s, const char *name, size_t len, struct ic_scdp_disk **out);
uint64_t ic_scdp_size(const struct ic_scdp_disk *d);
/* Read up to len bytes at off (short at the end): the count or -errno (IC_ECORRUPT). */
ssize_t ic_scdp_read(struct ic_scdp_disk *d, void *buf, size_t len, uint64_t off);
void ic_scdp_close(struct ic_scdp_disk *d);
/* The session's listing (ic_session_free). */
void ic_scdp_free(struct ic_scdp *c);

#endif
