/* ic_s3_ops.c: the S3 operations over ic_s3_request: GET (ranges), PUT (conditional),
 * HEAD, DELETE, ListObjectsV2, multipart uploads, bucket creation; the scanning of the
 * answers' XML (untrusted, bounded). */
#include "config.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_error.h"
#include "ic_s3_int.h"

#define LIST_ANSWER_MAX (16u << 20)   /* one page of a listing (1000 keys) is far less */

/* "If-Match: ETAG" into buf (the quotes dropped: RGW 16 compares without them). */
static int if_match_hdr(const char *etag, char *buf, size_t cap)
{
	size_t n = strlen(etag);

	if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
		etag++;
		n -= 2;
	}
	if (n >= IC_S3_ETAG_MAX)
		return -EINVAL;
	snprintf(buf, cap, "If-Match: %.*s", (int)n, etag);
	return 0;
}

int ic_s3_get(struct ic_s3 *s, const char *key, uint64_t off, size_t len, void *buf,
	      size_t *got)
{
	return ic_s3_get_if(s, key, NULL, off, len, buf, got);
}

int ic_s3_get_if(struct ic_s3 *s, const char *key, const char *etag, uint64_t off, size_t len,
		 void *buf, size_t *got)
{
	struct ic_s3_req r = { .method = "GET", .key = key, .out = buf, .out_cap = len,
			       .range = true, .off = off, .len = len };
	char im[IC_S3_ETAG_MAX + 16];
	int err;

	*got = 0;
	if (len == 0)
		return 0;
	if (etag && etag[0]) {
		if (if_match_hdr(etag, im, sizeof(im)))
			return -EINVAL;
		r.hdr[0] = im;
	}
	err = ic_s3_request(s, &r);
	if (err == -EIO && r.status == 416)
		return 0;               /* the range starts at or after the object's end */
	if (err)
		return err;
	if (r.status != 206 && !(r.status == 200 && off == 0))
		return ic_fail(-EIO, "%s/%s: the server ignored a range request (HTTP %ld)",
			       s->name, key, r.status);
	*got = r.out_len;
	return 0;
}

int ic_s3_get_all(struct ic_s3 *s, const char *key, size_t cap, void **buf, size_t *len,
		  char etag[IC_S3_ETAG_MAX])
{
	struct ic_s3_req r = { .method = "GET", .key = key, .out_cap = cap, .out_grow = true };
	int err = ic_s3_request(s, &r);

	if (err) {
		free(r.out);
		return err;
	}
	if (!r.out && !(r.out = malloc(1)))
		return -ENOMEM;
	*buf = r.out;
	*len = r.out_len;
	if (etag)
		strcpy(etag, r.etag);
	return 0;
}

int ic_s3_put(struct ic_s3 *s, const char *key, const void *buf, size_t len,
	      const struct ic_s3_cond *cond, char etag[IC_S3_ETAG_MAX])
{
	char im[IC_S3_ETAG_MAX + 16];
	struct ic_s3_req r = { .method = "PUT", .key = key, .body = buf, .body_len = len };
	int err;

	if (cond && cond->if_none_match)
		r.hdr[0] = "If-None-Match: *";
	if (cond && cond->if_match) {
		if (if_match_hdr(cond->if_match, im, sizeof(im)))
			return -EINVAL;
		r.hdr[1] = im;
	}
	err = ic_s3_request(s, &r);
	if (!err && etag)
		strcpy(etag, r.etag);
	return err;
}

int ic_s3_head(struct ic_s3 *s, const char *key, uint64_t *size, char etag[IC_S3_ETAG_MAX])
{
	struct ic_s3_req r = { .method = "HEAD", .key = key };
	int err = ic_s3_request(s, &r);

	if (err == -EIO && r.status == 404)
		err = ic_fail(-ENOENT, "%s/%s: not found", s->name, key);
	if (err)
		return err;
	if (size)
		*size = r.content_length;
	if (etag)
		strcpy(etag, r.etag);
	return 0;
}

int ic_s3_delete(struct ic_s3 *s, const char *key)
{
	struct ic_s3_req r = { .method = "DELETE", .key = key };
	int err = ic_s3_request(s, &r);

	return err == -ENOENT ? 0 : err;
}

int ic_s3_create_bucket(struct ic_s3 *s)
{
	char body[256];
	struct ic_s3_req r = { .method = "PUT", .key = NULL };
	int err;

	if (strcmp(s->conf.region, "us-east-1") != 0) {
		snprintf(body, sizeof(body), "<CreateBucketConfiguration><LocationConstraint>%s"
			 "</LocationConstraint></CreateBucketConfiguration>", s->conf.region);
		r.body = body;
		r.body_len = strlen(body);
	}
	err = ic_s3_request(s, &r);
	if (err == -EIO && r.status == 409 && strcmp(r.code, "BucketAlreadyOwnedByYou") == 0)
		return 0;
	return err;
}

/* ---- listing --------------------------------------------------------------------- */

static int text_dup(const char *v, size_t n, char *dst, size_t cap, const char *what,
		    struct ic_s3 *s)
{
	if (ic_s3_xml_text(v, n, dst, cap) != 0)
		return ic_fail(-EIO, "%s: listing: bad %s from the server", s->name, what);
	return 0;
}

int ic_s3_list(struct ic_s3 *s, const char *prefix,
	       int (*fn)(void *arg, const struct ic_s3_object *o), void *arg)
{
	char *token = NULL, *query = NULL, *pfx = ic_s3_encode(prefix, false);
	char key[IC_S3_KEY_MAX + 1], etag[IC_S3_ETAG_MAX], num[32];
	int err = 0;

	if (!pfx)
		return -ENOMEM;
	for (;;) {
		struct ic_s3_req r = { .method = "GET", .out_cap = LIST_ANSWER_MAX,
				       .out_grow = true };
		const char *p, *end, *v, *c;
		size_t n, cn;
		bool more;
		char *tenc = token ? ic_s3_encode(token, false) : NULL;

		free(query);
		if ((token && !tenc) ||
		    asprintf(&query, "%s%s%slist-type=2&prefix=%s", token ? "continuation-token=" : "",
			     token ? tenc : "", token ? "&" : "", pfx) < 0) {
			free(tenc);
			query = NULL;
			err = -ENOMEM;
			break;
		}
		free(tenc);
		r.query = query;
		err = ic_s3_request(s, &r);
		if (err) {
			free(r.out);
			break;
		}
		p = r.out;
		end = p + r.out_len;
		more = ic_s3_xml_find(p, end, "IsTruncated", &v, &n) && n == 4 &&
		       memcmp(v, "true", 4) == 0;
		while (!err && (p = ic_s3_xml_find(p, end, "Contents", &c, &cn))) {
			struct ic_s3_object o = { .key = key, .etag = etag };

			etag[0] = '\0';
			if (!ic_s3_xml_find(c, c + cn, "Key", &v, &n))
				err = ic_fail(-EIO, "%s: listing: an entry without a key", s->name);
			else
				err = text_dup(v, n, key, sizeof(key), "key", s);
			if (!err && ic_s3_xml_find(c, c + cn, "Size", &v, &n)) {
				err = text_dup(v, n, num, sizeof(num), "size", s);
				o.size = err ? 0 : strtoull(num, NULL, 10);
			}
			if (!err && ic_s3_xml_find(c, c + cn, "ETag", &v, &n))
				err = text_dup(v, n, etag, sizeof(etag), "ETag", s);
			if (!err && etag[0] && !ic_s3_etag_ok(etag, strlen(etag)))
				err = ic_fail(-EIO, "%s: listing: bad ETag from the server", s->name);
			if (!err)
				err = fn(arg, &o);
		}
		free(token);
		token = NULL;
		if (!err && more) {
			if (!ic_s3_xml_find(r.out, end, "NextContinuationToken", &v, &n) ||
			    !(token = malloc(n + 1)) || ic_s3_xml_text(v, n, token, n + 1) != 0)
				err = ic_fail(-EIO, "%s: listing: truncated without a continuation",
					      s->name);
		}
		free(r.out);
		if (err || !more)
			break;
	}
	free(token);
	free(query);
	free(pfx);
	return err;
}

/* ---- multipart uploads -------------------------------------------------------- */

struct ic_s3_upload {
	struct ic_s3 *s;
	char *key;
	char *id;                   /* upload id, encoded for a query */
	char (*etags)[IC_S3_ETAG_MAX];
	unsigned nparts;            /* highest part number sent */
	pthread_mutex_t mu;
};

int ic_s3_mp_start(struct ic_s3 *s, const char *key, struct ic_s3_upload **out)
{
	struct ic_s3_req r = { .method = "POST", .key = key, .query = "uploads=",
			       .out_cap = 64 << 10, .out_grow = true };
	struct ic_s3_upload *u;
	char id[1024];
	const char *v;
	size_t n;
	int err;

	*out = NULL;
	err = ic_s3_request(s, &r);
	if (!err && (!ic_s3_xml_find(r.out, (char *)r.out + r.out_len, "UploadId", &v, &n) ||
		     ic_s3_xml_text(v, n, id, sizeof(id)) != 0 || !id[0]))
		err = ic_fail(-EIO, "%s/%s: multipart upload: no upload id in the answer", s->name,
			      key);
	free(r.out);
	if (err)
		return err;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->s = s;
	u->key = strdup(key);
	u->id = ic_s3_encode(id, false);
	u->etags = calloc(IC_S3_PART_MAX, sizeof(*u->etags));
	pthread_mutex_init(&u->mu, NULL);
	if (!u->key || !u->id || !u->etags) {
		ic_s3_mp_abort(u);
		return -ENOMEM;
	}
	*out = u;
	return 0;
}

static int part_etag(struct ic_s3_upload *u, unsigned partno, const char *etag)
{
	if (!etag[0])
		return ic_fail(-EIO, "%s/%s: part %u: no ETag in the answer", u->s->name, u->key,
			       partno);
	pthread_mutex_lock(&u->mu);
	snprintf(u->etags[partno - 1], IC_S3_ETAG_MAX, "%s", etag);
	if (partno > u->nparts)
		u->nparts = partno;
	pthread_mutex_unlock(&u->mu);
	return 0;
}

int ic_s3_mp_part(struct ic_s3_upload *u, unsigned partno, const void *buf, size_t len)
{
	struct ic_s3_req r = { .method = "PUT", .key = u->key, .body = buf, .body_len = len };
	char *q;
	int err;

	if (partno < 1 || partno > IC_S3_PART_MAX)
		return ic_fail(-EFBIG, "%s/%s: more than %u parts", u->s->name, u->key,
			       IC_S3_PART_MAX);
	if (asprintf(&q, "partNumber=%u&uploadId=%s", partno, u->id) < 0)
		return -ENOMEM;
	r.query = q;
	err = ic_s3_request(u->s, &r);
	free(q);
	if (err)
		return err;
	return part_etag(u, partno, r.etag);
}

int ic_s3_mp_part_copy(struct ic_s3_upload *u, unsigned partno, const char *src_key,
		       const char *src_etag, uint64_t off, uint64_t len)
{
	struct ic_s3_req r = { .method = "PUT", .key = u->key, .out_cap = 64 << 10,
			       .out_grow = true };
	char *q = NULL, *src = ic_s3_encode(src_key, true), *h0 = NULL, *h1 = NULL;
	char h2[IC_S3_ETAG_MAX + 40], etag[IC_S3_ETAG_MAX] = "";
	const char *v;
	size_t n;
	int err = -ENOMEM;

	if (partno < 1 || partno > IC_S3_PART_MAX || !len)
		return ic_fail(-EINVAL, "%s/%s: copy part %u of %llu bytes", u->s->name, u->key,
			       partno, (unsigned long long)len);
	if (!src || asprintf(&q, "partNumber=%u&uploadId=%s", partno, u->id) < 0 ||
	    asprintf(&h0, "x-amz-copy-source: /%s/%s", u->s->bucket, src) < 0 ||
	    asprintf(&h1, "x-amz-copy-source-range: bytes=%llu-%llu", (unsigned long long)off,
		     (unsigned long long)(off + len - 1)) < 0)
		goto out;
	/* only the version planned: a replaced source fails the copy (412) */
	err = src_etag ? if_match_hdr(src_etag, h2, sizeof(h2)) : 0;
	if (err)
		goto out;
	memmove(h2 + 21, h2, strlen(h2) + 1);
	memcpy(h2, "x-amz-copy-source-if-", 21);
	r.query = q;
	r.hdr[0] = h0;
	r.hdr[1] = h1;
	r.hdr[2] = src_etag ? h2 : NULL;
	r.self_sign = ic_s3_curl_sorts_by_line();
	err = ic_s3_request(u->s, &r);
	/* the answer is 200 with the part's ETag in its body, or an error in it */
	if (!err && ic_s3_xml_find(r.out, (char *)r.out + r.out_len, "Code", &v, &n))
		err = ic_fail(-EIO, "%s/%s: copy of part %u failed: %.*s", u->s->name, u->key,
			      partno, (int)(n < 64 ? n : 64), v);
	if (!err && (!ic_s3_xml_find(r.out, (char *)r.out + r.out_len, "ETag", &v, &n) ||
		     ic_s3_xml_text(v, n, etag, sizeof(etag)) != 0 || !ic_s3_etag_ok(etag, strlen(etag))))
		etag[0] = '\0';
	if (!err)
		err = part_etag(u, partno, etag);
out:
	free(r.out);
	free(q);
	free(src);
	free(h0);
	free(h1);
	return err;
}

int ic_s3_mp_complete(struct ic_s3_upload *u, char etag[IC_S3_ETAG_MAX])
{
	struct ic_s3_req r = { .method = "POST", .key = u->key, .out_cap = 64 << 10,
			       .out_grow = true };
	size_t cap = 128 + (size_t)u->nparts * (64 + IC_S3_ETAG_MAX), len = 0;
	char *body = malloc(cap), *q = NULL;
	const char *v;
	size_t n;
	unsigned i;
	int err;

	if (!body || asprintf(&q, "uploadId=%s", u->id) < 0) {
		free(body);
		return -ENOMEM;
	}
	len += (size_t)snprintf(body + len, cap - len, "<CompleteMultipartUpload>");
	for (i = 0; i < u->nparts; i++) {
		if (!u->etags[i][0]) {
			free(body);
			free(q);
			return ic_fail(-EINVAL, "%s/%s: part %u was never sent", u->s->name, u->key,
				       i + 1);
		}
		len += (size_t)snprintf(body + len, cap - len,
					"<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>",
					i + 1, u->etags[i]);
	}
	len += (size_t)snprintf(body + len, cap - len, "</CompleteMultipartUpload>");
	r.query = q;
	r.body = body;
	r.body_len = len;
	err = ic_s3_request(u->s, &r);
	/* S3 may answer 200 and put an error in the body */
	if (!err && ic_s3_xml_find(r.out, (char *)r.out + r.out_len, "Code", &v, &n))
		err = ic_fail(-EIO, "%s/%s: completing the upload failed: %.*s", u->s->name, u->key,
			      (int)(n < 64 ? n : 64), v);
	/* a retried completion whose first attempt succeeded finds no upload any more */
	if (err == -ENOENT && r.attempts > 1 && ic_s3_head(u->s, u->key, NULL, etag) == 0)
		err = 0;
	else if (!err && etag &&
		 (!ic_s3_xml_find(r.out, (char *)r.out + r.out_len, "ETag", &v, &n) ||
		  ic_s3_xml_text(v, n, etag, IC_S3_ETAG_MAX) != 0))
		etag[0] = '\0';
	free(r.out);
	free(body);
	free(q);
	if (!err) {
		pthread_mutex_destroy(&u->mu);
		free(u->key);
		free(u->id);
		free(u->etags);
		free(u);
	}
	return err;
}

int ic_s3_abort_upload(struct ic_s3 *s, const char *key, const char *upload_id)
{
	char *id = ic_s3_encode(upload_id, false), *q = NULL;
	struct ic_s3_req r = { .method = "DELETE", .key = key };
	int err;

	if (!id || asprintf(&q, "uploadId=%s", id) < 0) {
		free(id);
		return -ENOMEM;
	}
	r.query = q;
	err = ic_s3_request(s, &r);
	free(q);
	free(id);
	return err == -ENOENT ? 0 : err;
}

void ic_s3_mp_abort(struct ic_s3_upload *u)
{
	struct ic_s3_req r = { .method = "DELETE" };
	char *q = NULL;

	if (!u)
		return;
	if (u->key && u->id && asprintf(&q, "uploadId=%s", u->id) >= 0) {
		r.key = u->key;
		r.query = q;
		ic_s3_quiet(true);
		ic_s3_request(u->s, &r);
		ic_s3_quiet(false);
		free(q);
	}
	pthread_mutex_destroy(&u->mu);
	free(u->key);
	free(u->id);
	free(u->etags);
	free(u);
}

int ic_s3_list_uploads(struct ic_s3 *s, const char *prefix,
		       int (*fn)(void *arg, const char *key, const char *upload_id), void *arg)
{
	char *pfx = ic_s3_encode(prefix, false), *q = NULL;
	char key[IC_S3_KEY_MAX + 1], id[1024];
	struct ic_s3_req r = { .method = "GET", .out_cap = LIST_ANSWER_MAX, .out_grow = true };
	const char *p, *end, *c;
	size_t cn;
	int err;

	/* one page (1000 uploads): the next writer cleans the rest */
	if (!pfx || asprintf(&q, "prefix=%s&uploads=", pfx) < 0) {
		free(pfx);
		return -ENOMEM;
	}
	r.query = q;
	err = ic_s3_request(s, &r);
	p = r.out;
	end = p ? p + r.out_len : NULL;
	while (!err && p && (p = ic_s3_xml_find(p, end, "Upload", &c, &cn))) {
		const char *kv, *iv;
		size_t kn, in;

		if (!ic_s3_xml_find(c, c + cn, "Key", &kv, &kn) ||
		    !ic_s3_xml_find(c, c + cn, "UploadId", &iv, &in) ||
		    ic_s3_xml_text(kv, kn, key, sizeof(key)) != 0 ||
		    ic_s3_xml_text(iv, in, id, sizeof(id)) != 0) {
			err = ic_fail(-EIO, "%s: bad upload listing from the server", s->name);
			break;
		}
		err = fn(arg, key, id);
	}
	free(r.out);
	free(q);
	free(pfx);
	return err;
}

/* ---- XML of an untrusted answer ------------------------------------------------ */

bool ic_s3_etag_ok(const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i] <= ' ' || v[i] > '~')
			return false;   /* it goes into headers and the cache's state lines */
	return n > 0;
}

const char *ic_s3_xml_find(const char *p, const char *end, const char *tag, const char **v,
			   size_t *vlen)
{
	size_t tl = strlen(tag);

	while (p && p < end) {
		const char *lt = memchr(p, '<', (size_t)(end - p)), *c;

		if (!lt || (size_t)(end - lt) < tl + 2)
			return NULL;
		if (memcmp(lt + 1, tag, tl) == 0 && lt[1 + tl] == '>') {
			const char *vs = lt + 2 + tl;

			for (c = vs; c + tl + 3 <= end; c++) {
				c = memchr(c, '<', (size_t)(end - c));
				if (!c || c + tl + 3 > end)
					return NULL;
				if (c[1] == '/' && memcmp(c + 2, tag, tl) == 0 && c[2 + tl] == '>') {
					*v = vs;
					*vlen = (size_t)(c - vs);
					return c + 3 + tl;
				}
			}
			return NULL;
		}
		p = lt + 1;
	}
	return NULL;
}

int ic_s3_xml_text(const char *v, size_t n, char *dst, size_t cap)
{
	static const struct { const char *ent; char ch; } ents[] = {
		{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' },
		{ "&apos;", '\'' }, { "&#34;", '"' }, { "&#39;", '\'' },
	};
	size_t i = 0, o = 0, k;

	while (i < n) {
		char ch = v[i];

		if (ch == '\0')
			return -EINVAL;
		if (ch == '&') {
			for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
				size_t el = strlen(ents[k].ent);

				if (n - i >= el && memcmp(v + i, ents[k].ent, el) == 0) {
					ch = ents[k].ch;
					i += el - 1;
					break;
				}
			}
			if (k == sizeof(ents) / sizeof(ents[0]))
				return -EINVAL;
		}
		if (o + 1 >= cap)
			return -EINVAL;
		dst[o++] = ch;
		i++;
	}
	if (o >= cap)
		return -EINVAL;
	dst[o] = '\0';
	return 0;
}
