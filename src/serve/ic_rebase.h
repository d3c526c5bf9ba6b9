/* ic_rebase.h: a served point moved onto the chain's rewritten images while it is in use
 * (FORMAT.md 10.8, "Re-base request").
 *
 * imgconsolidate rewrites a point it merges into (same content, same seal, new image
 * file) and removes the points merged into it.  A server that keeps the point open
 * (a guest's disk through imgmount --overlay or the nbdkit plugin's overlay) would read
 * the old, unlinked images for as long as it runs.  When it sees a re-base request
 * (CHAIN/rebase) or the chain directory changed, the watcher thread of a writable
 * session rescans the chain and, for every busy point served with an overlay whose
 * point the new scan holds with the same sequence and seal in other images:
 *
 *   1. builds the new view (private indexes, the seal checked with the key, owner map)
 *      and a disk on it, while the guest's requests go on against the old one;
 *   2. takes the point's io lock exclusively: the requests in flight finish on the old
 *      images, new ones wait (the swap itself is a few pointer stores);
 *   3. swaps disk, view and identity, moves the overlay lock (image byte 1) from the old
 *      image to the new one: what imgconsolidate waits for;
 *   4. frees the old view and disk, and drops its reference to the old scan.
 *
 * The overlays stay open: their binding is the seal (FORMAT.md 10.3), which the new
 * images carry unchanged, so nothing of the overlay is rewritten. */
#ifndef IC_REBASE_H
#define IC_REBASE_H

#include <pthread.h>

struct ic_session;
struct ic_spoint;

#define IC_REBASE_FILE "rebase"     /* CHAIN/rebase: the request (FORMAT.md 10.8) */

/* A point's io lock: shared by requests, exclusive for a swap; writers preferred, so
 * that a steady stream of guest requests cannot starve a re-base. */
void ic_rebase_io_init(pthread_rwlock_t *io);

/* The re-base side of session s's watcher (ic_session_watch.c; writable sessions):
 * init (0 or -errno) before its thread starts, tick on every tick of that thread (a new
 * request acted on; the chain directory rescanned every few ticks and busy points whose
 * images moved re-based), fini after it stopped.  tick and fini do nothing without init. */
int ic_rebase_init(struct ic_session *s);
void ic_rebase_tick(struct ic_session *s);
void ic_rebase_fini(struct ic_session *s);

/* Re-base busy point sp onto the current scan's point of the same name, sequence and
 * seal.  0 (also when it already is there), -ENOENT when the scan has no such point
 * (sp keeps serving its old images), or the error of the new view. */
int ic_rebase_point(struct ic_session *s, struct ic_spoint *sp);

#endif
