/* nbdkit-imgchain-plugin: every restore point of a chain as an NBD export (nbdkit).
 *
 *   nbdkit imgchain CHAIN [point=NAME] [overlay=DIR] [passphrase-file=FILE]
 *                         [cache-size=SIZE] [accept-rollback=true]
 *                         [take-over=yes] [take-over-wait=SECONDS]
 *
 * A thin front end over the serve layer's session (src/serve/ic_session.h), the same
 * code imgmount serves its files with: export names are point names, the default export
 * the newest point (or point=); reads are authenticated block by block through the
 * shared cache (readahead, drop-behind); extents come from the block map; with overlay=
 * writes go copy-on-write into the overlay format imgmount uses (DIR/POINT/disk.raw.*).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "imgchain.h"
#include "ic_promote.h"
#include "ic_s3_chain.h"
#include "ic_session.h"
#include "ic_session_cdp.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static char *chain_dir, *overlay_dir, *passfile, *point_name;
static char *s3_url;                /* chain=s3://BUCKET/PREFIX: chain_dir is its cache */
static struct ic_s3_remote *remote; /* its records fetched on demand */
static uint64_t cache_bytes;
static bool accept_rollback, take_over;
static unsigned take_over_wait;
static char owner_where[4200];
static struct ic_key *key;
static struct ic_session *ss;
static char last_logged[1024];      /* before serving: the last message, not said twice */
static bool serving;

struct handle {
	struct ic_spoint *p;
	bool write;
	struct ic_cache_stream st;
	struct ic_scdp_disk *cdp;   /* export "cdp/TIME": a CDP checkpoint (p NULL), read-only */
};

static void session_log(void *arg, int prio, const char *msg)
{
	(void)arg;
	if (!serving)
		snprintf(last_logged, sizeof(last_logged), "%s", msg);
	if (prio <= LOG_NOTICE)     /* notices: an overlay handed over (FORMAT.md 10.7) */
		nbdkit_error("%s", msg);
	else
		nbdkit_debug("%s", msg);
}

/* errno for a client: damage and key trouble are I/O errors. */
static int nbd_errno(int err)
{
	if (err == IC_ECORRUPT || err == IC_EKEY || err == -ENXIO || err >= 0)
		return EIO;
	return -err;
}

static int fail_errno(int err)
{
	nbdkit_set_error(nbd_errno(err));
	return -1;
}

/* A refusal before serving: the tools' message and exit code (3 wrong passphrase or
 * key, 4 damage or rollback, 1 otherwise).  nbdkit itself would exit 1 whatever the
 * cause, so the plugin exits here, before any socket is bound or client served. */
static void refuse(int err)
{
	const char *msg = ic_last_error(err);

	if (!strstr(last_logged, msg))
		nbdkit_error("%s", msg);
	ic_session_free(ss);
	ic_key_free(key);
	exit(ic_exit_code(err));
}

static void imgchain_unload(void)
{
	if (ss)
		ic_promote_stop_all(ss);
	ic_session_free(ss);
	ic_key_free(key);
	ic_s3_remote_close(remote);
	free(s3_url);
	free(chain_dir);
	free(overlay_dir);
	free(passfile);
	free(point_name);
}

static int set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = strdup(v);
	if (!*dst) {
		nbdkit_error("%s", strerror(errno));
		return -1;
	}
	return 0;
}

static int imgchain_config(const char *k, const char *v)
{
	if (!strcmp(k, "chain") && ic_s3_is_url(v)) {
		free(chain_dir);
		chain_dir = NULL;
		return set_str(&s3_url, v);
	}
	if (!strcmp(k, "chain")) {
		free(s3_url);
		s3_url = NULL;
		free(chain_dir);
		chain_dir = nbdkit_realpath(v);
		return chain_dir ? 0 : -1;
	}
	if (!strcmp(k, "overlay")) {
		if (mkdir(v, 0700) < 0 && errno != EEXIST) {
			nbdkit_error("overlay %s: %s", v, strerror(errno));
			return -1;
		}
		free(overlay_dir);
		overlay_dir = nbdkit_realpath(v);
		return overlay_dir ? 0 : -1;
	}
	if (!strcmp(k, "passphrase-file") || !strcmp(k, "passphrase_file"))
		return set_str(&passfile, v);
	if (!strcmp(k, "point")) {
		if (!ic_name_valid(v)) {
			nbdkit_error("point=%s: not a restore point name", v);
			return -1;
		}
		return set_str(&point_name, v);
	}
	if (!strcmp(k, "cache-size") || !strcmp(k, "cache_size")) {
		if (ic_parse_size(v, &cache_bytes) || cache_bytes < (1u << 20)) {
			nbdkit_error("bad cache-size=%s (e.g. 512M, at least 1M)", v);
			return -1;
		}
		return 0;
	}
	if (!strcmp(k, "take-over") || !strcmp(k, "take_over")) {
		int b = nbdkit_parse_bool(v);

		if (b < 0)
			return -1;
		take_over = b;
		return 0;
	}
	if (!strcmp(k, "take-over-wait") || !strcmp(k, "take_over_wait")) {
		if (nbdkit_parse_unsigned("take-over-wait", v, &take_over_wait) < 0)
			return -1;
		if (take_over_wait < 1 || take_over_wait > 3600) {
			nbdkit_error("bad take-over-wait=%s (1..3600 seconds)", v);
			return -1;
		}
		return 0;
	}
	if (!strcmp(k, "accept-rollback") || !strcmp(k, "accept_rollback")) {
		int b = nbdkit_parse_bool(v);

		if (b < 0)
			return -1;
		accept_rollback = b;
		return 0;
	}
	nbdkit_error("unknown parameter '%s' (see nbdkit imgchain --help)", k);
	return -1;
}

static int imgchain_config_complete(void)
{
	if (!chain_dir && !s3_url) {
		nbdkit_error("the chain directory is missing: nbdkit imgchain CHAIN [point=NAME] ...");
		return -1;
	}
	return 0;
}

/* Before serving (and before nbdkit forks into the background): unlock the key, check
 * the chain, the point and the overlay, so that any of them refuses the start. */
static int imgchain_get_ready(void)
{
	struct ic_session_opts so = {
		.chain_dir = chain_dir,
		.overlay_dir = overlay_dir,
		.cache_bytes = cache_bytes,         /* 0: the session's default */
		.log = session_log,
		.owner_server = "nbdkit",
		.owner_where = owner_where,
		.take_over = take_over,
		.take_over_wait = take_over_wait,
	};
	struct ic_point *pt;
	int ret;

	ic_progname = "nbdkit-imgchain";
	ic_no_dumps();
	if (s3_url) {
		/* headers and indexes cached; records fetched as read, by the process that
		 * serves (the remote's client is made at its first fetch, after the fork) */
		struct ic_s3_chain *sc;
		const char *dir;

		ret = ic_s3_chain_arg(s3_url, false, IC_S3_NEED_INDEX, NULL, 0, &sc, &dir);
		if (!ret && !(chain_dir = strdup(dir)))
			ret = -ENOMEM;
		if (!ret)
			ret = ic_s3_remote_open(sc, s3_url, &remote);
		ic_s3_chain_close(sc);
		if (ret)
			refuse(ret);
		so.chain_dir = chain_dir;
	}
	snprintf(owner_where, sizeof(owner_where), "NBD export of %s", s3_url ? s3_url : chain_dir);
	ret = ic_key_unlock_chain(chain_dir, passfile, accept_rollback, &key);
	if (!ret)
		ret = ic_session_new(&so, key, &ss);
	if (ret)
		refuse(ret);
	if (point_name) {
		struct ic_spoint *p;

		ret = ic_chain_lookup(ss->gens->chain, point_name, &pt);
		if (!ret && pt->broken)
			ret = ic_chain_explain_broken(ss->gens->chain, pt);
		if (ret)
			refuse(ret);
		pthread_mutex_lock(&ss->lock);
		p = ic_session_find(ss, point_name, strlen(point_name));
		if (!p)
			ret = ic_fail(-ENOENT, "%s: restore point '%s' cannot be served", chain_dir,
				      point_name);
		else if (overlay_dir)
			ic_session_ov_get(ss, p, IC_DISK_RAW, true, &ret);
		pthread_mutex_unlock(&ss->lock);
		if (ret == -EROFS && p && p->ov_released)
			ret = ic_fail(-EBUSY, "overlay %s/%s was released", overlay_dir, point_name);
		else if (ret == -EROFS)
			ret = ic_fail(-ESTALE, "overlay %s/%s belongs to another restore point (see above)",
				      overlay_dir, point_name);
		if (ret)
			refuse(ret);
	} else if (!ss->latest[0]) {
		refuse(ic_fail(-ENOENT, "%s: the chain has no restore point to serve", chain_dir));
	}
	return 0;
}

/* After nbdkit forked: threads (the cache's workers) and the image locks again. */
static int imgchain_after_fork(void)
{
	int ret = ic_session_start(ss);

	serving = true;
	if (ret) {
		nbdkit_error("%s", ic_last_error(ret));
		return -1;
	}
	ic_promote_resume_all(ss);     /* a promoted disk is DEST's (ic_promote.h) */
	return 0;
}

/* The CDP journal's checkpoints as exports "cdp/TIME" (imgmount's cdp/TIME/disk.raw). */
static int add_cdp_export(void *arg, const struct ic_scdp_info *c)
{
	char name[sizeof(c->name) + 8];

	snprintf(name, sizeof(name), "%s/%s", IC_SCDP_DIR, c->name);
	return nbdkit_add_export(arg, name, NULL) < 0 ? -1 : 0;
}

static int open_cdp(struct handle *h, const char *name)
{
	size_t n = strlen(IC_SCDP_DIR);
	int ret;

	if (!ic_scdp_present(ss))
		ret = ic_fail(-ENOENT, "%s: no CDP journal", chain_dir);
	else
		ret = ic_scdp_open(ss, name + n + 1, strlen(name + n + 1), &h->cdp);
	if (ret == -ENOENT)
		ret = ic_fail(-ENOENT, "%s: no checkpoint '%s' (cdp/ and a time of `imgrestore --checkpoints`, as imgmount lists them)",
			      chain_dir, name + n + 1);
	return ret;
}

static int imgchain_list_exports(int readonly, int is_tls, struct nbdkit_exports *e)
{
	(void)readonly;
	(void)is_tls;
	if (point_name)
		return nbdkit_add_export(e, point_name, NULL);
	ic_session_refresh(ss, false);
	pthread_mutex_lock(&ss->lock);
	for (size_t i = 0; i < ss->npts; i++) {
		if (!ss->pts[i]->gone && nbdkit_add_export(e, ss->pts[i]->name, NULL) < 0) {
			pthread_mutex_unlock(&ss->lock);
			return -1;
		}
	}
	pthread_mutex_unlock(&ss->lock);
	if (ic_scdp_present(ss) && ic_scdp_each(ss, add_cdp_export, e))
		return -1;
	return 0;
}

static const char *imgchain_default_export(int readonly, int is_tls)
{
	const char *name;

	(void)readonly;
	(void)is_tls;
	if (point_name)
		return point_name;
	ic_session_refresh(ss, false);
	pthread_mutex_lock(&ss->lock);
	name = nbdkit_strdup_intern(ss->latest);
	pthread_mutex_unlock(&ss->lock);
	return name;
}

static void *imgchain_open(int readonly)
{
	const char *name = nbdkit_export_name();
	struct handle *h;
	int ret;

	if (!name || !*name || !strcmp(name, "latest"))    /* "latest" as in the tools */
		name = imgchain_default_export(readonly, 0);
	if (!name || !*name) {
		nbdkit_error("%s: no restore point to serve", chain_dir);
		return NULL;
	}
	if (point_name && strcmp(name, point_name)) {
		nbdkit_error("export '%s': only restore point '%s' is served", name, point_name);
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h) {
		nbdkit_error("%s", strerror(errno));
		return NULL;
	}
	if (!point_name && !strncmp(name, IC_SCDP_DIR "/", strlen(IC_SCDP_DIR) + 1)) {
		ret = open_cdp(h, name);
		if (ret) {
			nbdkit_error("%s", ic_last_error(ret));
			free(h);
			return NULL;
		}
		return h;
	}
	h->write = !readonly && overlay_dir;
	ic_session_refresh(ss, false);
	pthread_mutex_lock(&ss->lock);
	h->p = ic_session_find(ss, name, strlen(name));
	if (!h->p || h->p->gone)
		ret = ic_fail(-ENOENT, "%s: no restore point named '%s'", chain_dir, name);
	else    /* an existing overlay is opened (and locked); a new one is made by the first
		 * write, so that clients that only read leave nothing behind; with take-over a
		 * writable client asks the overlay's owner for it now (FORMAT.md 10.7) */
		ret = ic_session_open(ss, h->p, IC_DISK_RAW,
				      h->write && take_over && !h->p->ov_released);
	/* handed over to another server: this export is read-only from then on */
	if (!ret && h->p->ov_released)
		h->write = false;
	pthread_mutex_unlock(&ss->lock);
	if (ret) {
		nbdkit_error("%s", ic_last_error(ret));
		free(h);
		return NULL;
	}
	return h;
}

static void imgchain_close(void *hv)
{
	struct handle *h = hv;

	if (h->cdp)
		ic_scdp_close(h->cdp);
	else
		ic_session_close(ss, h->p, IC_DISK_RAW);
	free(h);
}

static const char *imgchain_export_description(void *hv)
{
	struct handle *h = hv;
	const struct ic_disk_info *in;

	if (h->cdp)
		return nbdkit_printf_intern("CDP checkpoint %s of %s", nbdkit_export_name(),
					    chain_dir);
	in = ic_disk_get_info(h->p->disk);
	return nbdkit_printf_intern("restore point '%s' (seq %u) of %s%s", in->name, in->seq,
				    chain_dir, h->write ? ", writable overlay" : "");
}

static int64_t imgchain_get_size(void *hv)
{
	struct handle *h = hv;

	return h->cdp ? (int64_t)ic_scdp_size(h->cdp) : (int64_t)ic_session_size(h->p, IC_DISK_RAW);
}

static int imgchain_block_size(void *hv, uint32_t *min, uint32_t *pref, uint32_t *max)
{
	struct handle *h = hv;

	*min = 1;
	*pref = h->cdp ? 65536 : ic_disk_get_info(h->p->disk)->block_size;
	*max = 0xffffffff;
	return 0;
}

static int imgchain_can_write(void *hv)
{
	return ((struct handle *)hv)->write;
}

static int imgchain_can_flush(void *hv)
{
	return ((struct handle *)hv)->write;
}

static int imgchain_can_fua(void *hv)
{
	return ((struct handle *)hv)->write ? NBDKIT_FUA_NATIVE : NBDKIT_FUA_NONE;
}

/* Every connection of one export reads and writes one overlay object in this process,
 * and a flush commits what every connection wrote: safe for any number of them. */
static int imgchain_can_multi_conn(void *hv)
{
	(void)hv;
	return 1;
}

static int imgchain_can_extents(void *hv)
{
	return !((struct handle *)hv)->cdp;
}

static int imgchain_is_rotational(void *hv)
{
	(void)hv;
	return 0;
}

static int imgchain_pread(void *hv, void *buf, uint32_t count, uint64_t off, uint32_t flags)
{
	struct handle *h = hv;
	ssize_t n;

	(void)flags;
	n = h->cdp ? ic_scdp_read(h->cdp, buf, count, off)
		   : ic_session_read(h->p, IC_DISK_RAW, &h->st, buf, count, off);
	if (n < 0)
		return fail_errno((int)n);
	if ((size_t)n < count)
		memset((char *)buf + n, 0, count - (size_t)n);
	return 0;
}

static int imgchain_flush(void *hv, uint32_t flags)
{
	struct handle *h = hv;
	int ret;

	(void)flags;
	ret = ic_session_fsync(ss, h->p, IC_DISK_RAW);
	return ret ? fail_errno(ret) : 0;
}

static int imgchain_pwrite(void *hv, const void *buf, uint32_t count, uint64_t off,
			   uint32_t flags)
{
	struct handle *h = hv;
	ssize_t n = ic_session_write(ss, h->p, IC_DISK_RAW, &h->st, buf, count, off);

	if (n < 0)
		return fail_errno((int)n);
	return flags & NBDKIT_FLAG_FUA ? imgchain_flush(hv, 0) : 0;
}

static int imgchain_extents(void *hv, uint32_t count, uint64_t off, uint32_t flags,
			    struct nbdkit_extents *e)
{
	struct handle *h = hv;
	uint64_t end = off + count;

	while (off < end) {
		bool zero;
		uint64_t n = ic_session_extent(h->p, off, end - off, &zero);

		if (nbdkit_add_extent(e, off, n, zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0))
			return -1;
		off += n;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static void imgchain_dump_plugin(void)
{
	printf("imgchain_version=%s\n", PACKAGE_VERSION);
}

static struct nbdkit_plugin plugin = {
	.name = "imgchain",
	.longname = "imgchain restore points",
	.version = PACKAGE_VERSION,
	.description = "Serve the restore points of an imgchain backup chain",
	.unload = imgchain_unload,
	.config = imgchain_config,
	.config_complete = imgchain_config_complete,
	.config_help =
		"[chain=]CHAIN          (required) the chain directory, or s3://BUCKET/PREFIX\n"
		"point=NAME             serve only this restore point (default: all of them)\n"
		"overlay=DIR            writable: copy-on-write into DIR (imgmount's format)\n"
		"passphrase-file=FILE   the passphrase (else IMGCHAIN_PASSPHRASE[_FILE], a terminal)\n"
		"cache-size=SIZE        decoded block cache (default: 1/16 of RAM, 64M..1G)\n"
		"accept-rollback=true   serve a chain older than this machine last saw\n"
		"take-over=yes          the overlay is served by another imgmount or nbdkit: ask it\n"
		"                       to release it (FORMAT.md 10.7)\n"
		"take-over-wait=SECONDS how long to wait for that (default 30)",
	.magic_config_key = "chain",
	.get_ready = imgchain_get_ready,
	.after_fork = imgchain_after_fork,
	.list_exports = imgchain_list_exports,
	.default_export = imgchain_default_export,
	.open = imgchain_open,
	.close = imgchain_close,
	.export_description = imgchain_export_description,
	.get_size = imgchain_get_size,
	.block_size = imgchain_block_size,
	.can_write = imgchain_can_write,
	.can_flush = imgchain_can_flush,
	.can_fua = imgchain_can_fua,
	.can_multi_conn = imgchain_can_multi_conn,
	.can_extents = imgchain_can_extents,
	.is_rotational = imgchain_is_rotational,
	.pread = imgchain_pread,
	.pwrite = imgchain_pwrite,
	.flush = imgchain_flush,
	.extents = imgchain_extents,
	.dump_plugin = imgchain_dump_plugin,
	.errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN(plugin)
