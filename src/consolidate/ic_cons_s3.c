/* ic_cons_s3.c: imgconsolidate on a chain in a bucket: the merge of a local chain on the
 * scratch chain that src/store/ic_s3_cons.c prepares, then published by it. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "ic_cons_s3.h"
#include "ic_error.h"

int ic_consolidate_s3(const struct ic_consolidate_opts *o, struct ic_consolidate_stats *st,
		      struct ic_s3_cons_stats *s3)
{
	struct ic_consolidate_opts lo = *o;
	struct ic_s3_chain *sc = NULL;
	struct ic_s3_cons *k = NULL;
	const char *dir;
	int ret;

	memset(s3, 0, sizeof(*s3));
	memset(st, 0, sizeof(*st));
	if (o->verify)
		return ic_fail(-EINVAL, "%s: --verify reads every record moved, and in a bucket "
			       "they are copied by the server: check the chain with imgverify",
			       o->chain_dir);
	ret = ic_s3_chain_arg(o->chain_dir, !o->dry_run, IC_S3_NEED_INDEX, NULL, 0, &sc, &dir);
	if (ret)
		return ret;
	lo.no_in_place = true;
	lo.chain_name = o->chain_dir;
	if (o->dry_run) {
		lo.chain_dir = dir;
		ret = ic_consolidate(&lo, st);
		goto out;
	}
	ret = ic_s3_cons_begin(sc, &k, &lo.chain_dir);
	if (!ret)
		ret = ic_consolidate(&lo, st);
	if (!ret)
		ret = ic_s3_cons_publish(k, s3, o->step);
out:
	ic_s3_cons_end(k);
	ic_s3_chain_close(sc);
	return ret;
}
