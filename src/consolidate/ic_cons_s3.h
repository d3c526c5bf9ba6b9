/* ic_cons_s3.h: imgconsolidate on a chain in a bucket (s3://BUCKET/PREFIX, FORMAT.md 14.5):
 * the local merge run on a scratch chain of the cached headers and indexes, its records
 * copied by the server (src/store/ic_s3_cons.c). */
#ifndef IC_CONS_S3_H
#define IC_CONS_S3_H

#include "ic_consolidate.h"
#include "ic_s3_chain.h"

/* As ic_consolidate for o->chain_dir an s3:// URL: the writers' lease taken, the chain
 * pulled to its indexes, planned and merged, then published.  A dry run takes no lease
 * and writes nothing.  o->verify is refused (-EINVAL: the records never reach this host;
 * imgverify reads them).  *s3 the bucket's side of the run. */
int ic_consolidate_s3(const struct ic_consolidate_opts *o, struct ic_consolidate_stats *st,
		      struct ic_s3_cons_stats *s3);

#endif
