/* ic_s3_int.h: what the parts of the S3 client share (ic_s3.c: configuration, connections,
 * the request loop with its retries; ic_s3_ops.c: the S3 operations; ic_s3_conf.c: the
 * AWS environment and files). */
#ifndef IC_S3_INT_H
#define IC_S3_INT_H

#include <curl/curl.h>
#include <pthread.h>

#include "ic_s3.h"

#define IC_S3_ERRBODY_MAX 4096      /* an error answer's body kept for its <Code> */

struct ic_s3_conf {
	char *endpoint;             /* scheme://host[:port], no trailing '/' */
	char *region;
	char *access_key, *secret_key, *token;
	char *ca_bundle;            /* AWS_CA_BUNDLE or NULL */
	bool path_style;
	bool allow_http;
	unsigned retry_seconds;     /* budget of retries of one request */
	unsigned stall_seconds;     /* a transfer below 1 KiB/s that long fails */
};

struct ic_s3 {
	struct ic_s3_conf conf;
	char *bucket;
	char *name;                 /* "s3://bucket" */
	char *sigv4;                /* "aws:amz:REGION:s3" */
	pthread_mutex_t mu;         /* guards the pool and the statistics */
	CURL **idle;                /* connections not in use */
	size_t nidle, idle_cap;
	CURLSH *share;              /* DNS, TLS sessions and connections shared by the pool */
	pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
	uint64_t requests, retries, sent, received;
};

/* One request.  The caller fills the first part; ic_s3_request fills the rest. */
struct ic_s3_req {
	const char *method;         /* GET PUT POST DELETE HEAD */
	const char *key;            /* object key (unencoded) or NULL for the bucket */
	const char *query;          /* encoded, parameters in sorted order, or NULL */
	const void *body;           /* PUT/POST body */
	size_t body_len;
	bool range;                 /* GET bytes [off, off + len) */
	uint64_t off;
	size_t len;
	const char *hdr[3];         /* extra headers ("Name: value") or NULL */
	bool self_sign;             /* signed by ic_s3_sign, not by curl (ic_s3_sign.c) */
	void *out;                  /* the answer's body: fixed buffer of out_cap bytes ... */
	size_t out_cap;
	bool out_grow;              /* ... or malloc'd and grown up to out_cap */
	/* answer */
	size_t out_len;
	long status;
	char etag[IC_S3_ETAG_MAX];
	uint64_t content_length;    /* from the header, 0 when absent */
	bool overflow;              /* the body was longer than out_cap */
	char code[64];              /* <Code> of an error answer */
	char errbody[IC_S3_ERRBODY_MAX];
	size_t errlen;
	unsigned attempts;
};

/* Send r (retrying transient failures) and map the final status: 2xx -> 0, 404 -> -ENOENT,
 * 403 -> -EACCES, 412 -> -EEXIST, others -EIO; the message names s3://bucket/key and the
 * server's code.  r->status etc. are set whatever the outcome. */
int ic_s3_request(struct ic_s3 *s, struct ic_s3_req *r);

/* While on (nested), failed requests of this thread record no message (cleanups). */
void ic_s3_quiet(bool on);

/* Percent-encode src (AWS style: unreserved kept, '/' kept when keep_slash) into a new
 * string. */
char *ic_s3_encode(const char *src, bool keep_slash);

/* XML scanning of an untrusted answer: the first <tag>...</tag> in [p, end): *v, *vlen its
 * raw content; returns the position after it, or NULL. */
const char *ic_s3_xml_find(const char *p, const char *end, const char *tag, const char **v,
			   size_t *vlen);
/* An ETag as a server may send it: printable ASCII without spaces, not empty. */
bool ic_s3_etag_ok(const char *v, size_t n);
/* Decode the five XML entities of [v, v + n) into dst[cap] (NUL-terminated); -EINVAL
 * when it does not fit or holds an unknown entity or a NUL byte. */
int ic_s3_xml_text(const char *v, size_t n, char *dst, size_t cap);

/* Does this libcurl sort the signed headers by line (before 8.10: x-amz-copy-source-range
 * signed before x-amz-copy-source, which servers refuse)? */
bool ic_s3_curl_sorts_by_line(void);
/* SigV4 of a request to url whose headers are lines (each signed) and whose payload's
 * SHA-256 is payload_hex: *authz and *date, the two header lines to add (malloc'd). */
int ic_s3_sign(const struct ic_s3 *s, const char *method, const char *url,
	       const struct curl_slist *lines, const char *payload_hex, char **authz, char **date);

/* Read the configuration (ic_s3_conf.c).  -EINVAL with a message when incomplete. */
int ic_s3_conf_load(struct ic_s3_conf *c);
void ic_s3_conf_free(struct ic_s3_conf *c);

#endif
