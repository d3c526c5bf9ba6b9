/* ic_s3_chain_int.h: what the parts of the bucket mirror share (ic_s3_chain.c: cache,
 * listing, parallel fills, the bound; ic_s3_sync.c: the state file, pull, push, the
 * tools' entry; ic_s3_lease.c: the writers' lease). */
#ifndef IC_S3_CHAIN_INT_H
#define IC_S3_CHAIN_INT_H

#include "ic_error.h"
#include "ic_s3_chain.h"
#include "ic_s3_int.h"

/* An object of the chain, as listed (remote) or as the cache holds it (objs). */
struct ic_s3_obj {
	char name[16];              /* "imgchain.key" or "NNNNNNNN.img" */
	char etag[IC_S3_ETAG_MAX];
	uint64_t size;
	int have;                   /* enum ic_s3_need reached in the cache; 0 nothing */
	char sum[65];               /* key file: SHA-256 (hex) of the content pulled or pushed */
};

struct ic_s3_chain {
	struct ic_s3 *s3;
	char *prefix;
	char *base;                 /* the cache of this chain */
	char *dir;                  /* base/chain: the local chain directory */
	struct ic_s3_obj *objs;     /* the cache's state (base/objects) */
	size_t nobjs, objs_cap;
	struct ic_s3_obj *remote;   /* the last listing */
	size_t nremote, remote_cap;
	struct ic_s3_lease *lease;
	int lockfd;                 /* base/lock, flock: one process uses the cache at a
				     * time (ic_s3_chain_arg to ic_s3_chain_close) */
};

/* Is n a name of the chain's objects ("imgchain.key", "NNNNNNNN.img")? */
bool ic_s3_chain_file(const char *n);
/* A worker's failure kept once (the first) for the thread that reports it. */
void ic_s3_fail_once(pthread_mutex_t *mu, struct ic_error *e, bool *failed, int err);
/* PREFIX/name (malloc'd). */
char *ic_s3_chain_key(const struct ic_s3_chain *sc, const char *name);
int ic_s3_state_load(struct ic_s3_chain *sc);
int ic_s3_state_save(struct ic_s3_chain *sc);
int ic_s3_fill(struct ic_s3_chain *sc, struct ic_s3_obj **objs, size_t n, enum ic_s3_need need);
int ic_s3_list_remote(struct ic_s3_chain *sc);
/* 0 while this writer holds the lease, -EBUSY once a renewal failed. */
int ic_s3_lease_check(struct ic_s3_chain *sc);
/* Bring the cache under IMGCHAIN_S3_CACHE_MAX (default 16G): images not held by a reader
 * back to their header, largest first. */
void ic_s3_cache_trim(struct ic_s3_chain *sc);
/* Upload the cache's key file if the bucket lacks it or it changed (ic_s3_sync.c). */
int ic_s3_push_keyfile(struct ic_s3_chain *sc);
/* Record o in the cache's state (replacing an entry of that name); NULL without memory. */
struct ic_s3_obj *ic_s3_obj_put(struct ic_s3_chain *sc, const struct ic_s3_obj *o);
/* The cache's lock (waits for the holder); unlock is a no-op when not held. */
int ic_s3_cache_lock(struct ic_s3_chain *sc);
void ic_s3_cache_unlock(struct ic_s3_chain *sc);
/* Parallel requests of a mirror operation: IMGCHAIN_S3_THREADS, default 8. */
unsigned ic_s3_threads(void);

#endif
