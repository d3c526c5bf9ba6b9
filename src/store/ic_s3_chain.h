/* ic_s3_chain.h: a chain in a bucket (s3://BUCKET/PREFIX, FORMAT.md section 14) served to
 * the tools through a local cache directory that mirrors it.  The bucket is the truth: a
 * pull makes the cache hold what the bucket holds (names, ETags), filling each image only
 * as far as the tool needs (header, index, or every byte) with parallel range GETs bound to
 * the object's ETag; a push uploads the images a writer added (multipart: a point appears
 * whole when its upload completes) and the key file.  Writers hold the chain's lease
 * (PREFIX/lease, conditional writes).  Every byte from the bucket lands in the cache and is
 * read by the same checked readers as a local chain's (doc/SECURITY.md). */
#ifndef IC_S3_CHAIN_H
#define IC_S3_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "ic_s3.h"

enum ic_s3_need {
	IC_S3_NEED_HEADER = 1,      /* the first 4 KiB: header and slots (imginfo) */
	IC_S3_NEED_INDEX = 2,       /* and the index (a backup's parent, seals) */
	IC_S3_NEED_FULL = 3,        /* every byte (restore, verify) */
};

struct ic_s3_chain;

/* Open the client for url and the cache directory of that chain ($IMGCHAIN_S3_CACHE, else
 * $XDG_CACHE_HOME/imgchain, else ~/.cache/imgchain; one subdirectory per endpoint, bucket
 * and prefix).  No request yet. */
int ic_s3_chain_open(const char *url, struct ic_s3_chain **out);
void ic_s3_chain_close(struct ic_s3_chain *sc);
/* The local chain directory the tools use. */
const char *ic_s3_chain_dir(const struct ic_s3_chain *sc);
struct ic_s3 *ic_s3_chain_client(struct ic_s3_chain *sc);

/* Make the cache mirror the bucket: the key file, every image at least to need.  Images the
 * bucket does not hold (any more, or with another ETag) are removed from the cache. */
int ic_s3_chain_pull(struct ic_s3_chain *sc, enum ic_s3_need need);
/* After a pull: fill to need the images on the path of point name (NULL: the newest). */
int ic_s3_chain_fetch_path(struct ic_s3_chain *sc, const char *name, enum ic_s3_need need);
/* Upload what the cache holds that the bucket does not: the key file (created, or replaced
 * only over the version pulled), then each new image, ascending.  Under the lease. */
int ic_s3_chain_push(struct ic_s3_chain *sc);

/* 0 when this run uploaded the image of point seq (pushed or pre-uploaded), else -EIO
 * naming it: a backup never reports a point the bucket does not hold. */
int ic_s3_chain_published(struct ic_s3_chain *sc, unsigned seq);

/* A backup's image uploaded while it is written (ic_s3_pre.c): start before ic_backup;
 * after it, finish with the new point's seq (the key file first, then the upload is
 * completed; 0 and nothing done when the image is left to ic_s3_chain_push), or abort. */
struct ic_s3_pre;
int ic_s3_pre_start(struct ic_s3_chain *sc, struct ic_s3_pre **out);
int ic_s3_pre_finish(struct ic_s3_pre *p, unsigned seq);
void ic_s3_pre_abort(struct ic_s3_pre *p);

/* The writers' lease (FORMAT.md 14.3): taken with If-None-Match, taken over only when
 * expired (or its holder, on this host, is dead) with If-Match, renewed by a thread, and
 * checked by reading it back.  -EBUSY naming the holder.  Taking it also aborts incomplete
 * uploads left under the prefix by killed writers. */
int ic_s3_lease_take(struct ic_s3_chain *sc);
void ic_s3_lease_drop(struct ic_s3_chain *sc);

/* The tools' one call for a chain argument: for a local directory *dir = arg and *sc =
 * NULL; for s3:// the chain opened, pulled to need (and the path of point filled to
 * path_need when path_need > need), *dir its cache directory.  writer: take the lease
 * first (released by ic_s3_chain_close). */
int ic_s3_chain_arg(const char *arg, bool writer, enum ic_s3_need need, const char *point,
		    enum ic_s3_need path_need, struct ic_s3_chain **sc, const char **dir);

/* Keyless merges in the bucket (imgconsolidate, FORMAT.md 14.5).  begin: after a pull to
 * IC_S3_NEED_INDEX under the lease, a scratch chain (*work) of the cached headers and
 * indexes, on which the caller runs the merge of a local chain with no target written in
 * place; while it runs, record clones are recorded rather than made (ic_clone_redirect).
 * publish: each image the merge rewrote replaces its object (the records copied by the
 * server from the objects they are in, UploadPartCopy; the rest sent), then the images it
 * removed are deleted, children first; the cache forgets both.  end: the scratch chain
 * removed, the redirection cleared (after publish or instead of it). */
struct ic_s3_cons;
struct ic_s3_cons_stats {
	unsigned rewritten, deleted;
	uint64_t bytes_server;      /* copied by the server (UploadPartCopy) */
	uint64_t bytes_composed;    /* parts assembled on the server from small pieces */
	uint64_t bytes_sent;        /* parts sent: headers, indexes, and ... */
	uint64_t bytes_fetched;     /* ... records fetched to fill parts below the minimum */
	uint64_t parts_copied, parts_sent;
	uint64_t net_sent, net_received;    /* the client's traffic over the whole merge */
};
int ic_s3_cons_begin(struct ic_s3_chain *sc, struct ic_s3_cons **out, const char **work);
/* step (NULL: none) is called at "s3-upload" (an image's parts all sent, before its
 * completion), "s3-replaced" (after it) and "s3-delete" (before each deletion): the
 * crash and stall hooks of the tests. */
int ic_s3_cons_publish(struct ic_s3_cons *k, struct ic_s3_cons_stats *st,
		       void (*step)(const char *name));
void ic_s3_cons_end(struct ic_s3_cons *k);

/* Images read on demand (imgmount: ic_s3_remote.c).  After a pull to IC_S3_NEED_INDEX:
 * record reads of the cache's images (ic_image_remote) fetch their chunks from the
 * bucket first, readahead prefetches them in parallel, the bytes fetched bounded by
 * IMGCHAIN_S3_CACHE_MAX.  The client is made at the first fetch (after a daemon's fork);
 * url is the chain's s3:// URL.  The remote outlives sc. */
struct ic_s3_remote;
int ic_s3_remote_open(struct ic_s3_chain *sc, const char *url, struct ic_s3_remote **out);
/* Chunks fetched (of them by readahead's workers) and their bytes so far. */
void ic_s3_remote_stats(struct ic_s3_remote *r, uint64_t *requests, uint64_t *prefetched,
			uint64_t *bytes);
void ic_s3_remote_close(struct ic_s3_remote *r);

/* Internal (ic_s3_chain.c <-> ic_s3_lease.c) */
const char *ic_s3_chain_prefix(const struct ic_s3_chain *sc);

#endif
