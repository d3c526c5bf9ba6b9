/* ic_s3.h: an S3 client (libcurl; requests signed by curl's CURLOPT_AWS_SIGV4).
 * Credentials and endpoint by the AWS conventions (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE with ~/.aws/credentials and
 * ~/.aws/config).  Thread-safe: every call takes a connection of the client's pool, so N
 * threads run N requests at once.  Transient failures (5xx, SlowDown, 429, connection
 * errors, stalls) are retried with exponential backoff and jitter.  Everything a server
 * answers is untrusted: sizes and lists are bounded, XML is scanned, never trusted.
 * Errors: -ENOENT (404), -EACCES (403: the server's code in the message), -EEXIST (412: a
 * condition failed), -EIO (anything else, after the retries), -ENOMEM, -EINVAL (usage). */
#ifndef IC_S3_H
#define IC_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IC_S3_ETAG_MAX 80           /* an ETag as the server quoted it, NUL included */
#define IC_S3_KEY_MAX 1024          /* S3's limit on a key, in bytes */
#define IC_S3_PART_MAX 10000        /* parts of one multipart upload */

struct ic_s3;

/* Is s an s3:// URL? */
bool ic_s3_is_url(const char *s);

/* Parse s3://BUCKET[/PREFIX] and connect (no request yet): credentials, region, endpoint
 * and addressing from the environment and the AWS files.  *prefix (malloc'd, may be
 * empty, never ending with '/') is PREFIX.  Plain http:// endpoints are refused unless
 * IMGCHAIN_S3_ALLOW_HTTP=1. */
int ic_s3_open(const char *url, struct ic_s3 **out, char **prefix);
void ic_s3_close(struct ic_s3 *s);
/* "s3://BUCKET" (for messages). */
const char *ic_s3_name(const struct ic_s3 *s);

/* Conditions of a PUT: none, create only (If-None-Match: *), replace only that version. */
struct ic_s3_cond {
	bool if_none_match;         /* the key must not exist */
	const char *if_match;       /* the key's current ETag must be this one (or NULL) */
};

/* GET bytes [off, off + len) of key into buf; *got gets the bytes received (less than len
 * only at the object's end).  len 0: the whole object, at most cap bytes (-EFBIG beyond). */
int ic_s3_get(struct ic_s3 *s, const char *key, uint64_t off, size_t len, void *buf,
	      size_t *got);
/* The same, only while the object's ETag is etag (-EEXIST when it changed). */
int ic_s3_get_if(struct ic_s3 *s, const char *key, const char *etag, uint64_t off, size_t len,
		 void *buf, size_t *got);
/* GET a whole small object (at most cap bytes) into a malloc'd buffer. */
int ic_s3_get_all(struct ic_s3 *s, const char *key, size_t cap, void **buf, size_t *len,
		  char etag[IC_S3_ETAG_MAX]);
int ic_s3_put(struct ic_s3 *s, const char *key, const void *buf, size_t len,
	      const struct ic_s3_cond *cond, char etag[IC_S3_ETAG_MAX]);
/* -ENOENT when absent.  size/etag may be NULL. */
int ic_s3_head(struct ic_s3 *s, const char *key, uint64_t *size, char etag[IC_S3_ETAG_MAX]);
/* Deleting a missing key succeeds (S3 semantics). */
int ic_s3_delete(struct ic_s3 *s, const char *key);

struct ic_s3_object {
	const char *key;
	uint64_t size;
	const char *etag;
};
/* List every key under prefix (ListObjectsV2, paged), calling fn for each; fn's non-zero
 * return stops the listing and is returned. */
int ic_s3_list(struct ic_s3 *s, const char *prefix,
	       int (*fn)(void *arg, const struct ic_s3_object *o), void *arg);

/* Multipart upload: start, parts 1..10000 (each at least the server's minimum, 5 MiB on
 * AWS, except the last; parts may be sent by several threads at once), complete (the
 * object appears whole and at once), abort. */
struct ic_s3_upload;
int ic_s3_mp_start(struct ic_s3 *s, const char *key, struct ic_s3_upload **out);
int ic_s3_mp_part(struct ic_s3_upload *u, unsigned partno, const void *buf, size_t len);
/* Part partno copied by the server from bytes [off, off + len) of src_key (this bucket)
 * while its ETag is src_etag (NULL: any version) (UploadPartCopy with
 * x-amz-copy-source-range): no byte goes through the client.  The same size rules as a part sent. */
int ic_s3_mp_part_copy(struct ic_s3_upload *u, unsigned partno, const char *src_key,
		       const char *src_etag, uint64_t off, uint64_t len);
int ic_s3_mp_complete(struct ic_s3_upload *u, char etag[IC_S3_ETAG_MAX]);
/* Abort the upload on the server (best effort) and free u; NULL is fine. */
void ic_s3_mp_abort(struct ic_s3_upload *u);
/* Incomplete multipart uploads under prefix: fn(key, upload id); non-zero stops. */
int ic_s3_list_uploads(struct ic_s3 *s, const char *prefix,
		       int (*fn)(void *arg, const char *key, const char *upload_id), void *arg);
int ic_s3_abort_upload(struct ic_s3 *s, const char *key, const char *upload_id);

/* Create the bucket (tests and first use; an existing bucket of ours is fine). */
int ic_s3_create_bucket(struct ic_s3 *s);

/* Requests sent, retried, and bytes sent and received since open (benchmarks). */
void ic_s3_stats(const struct ic_s3 *s, uint64_t *requests, uint64_t *retries,
		 uint64_t *sent, uint64_t *received);

#endif
