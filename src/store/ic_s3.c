/* ic_s3.c: the S3 client's connections and its one request loop (signing by libcurl,
 * retries with backoff, timeouts, the answer's status mapped to an errno). */
#include "config.h"
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_s3_int.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool ic_s3_is_url(const char *s)
{
	return s && strncmp(s, "s3://", 5) == 0;
}

const char *ic_s3_name(const struct ic_s3 *s)
{
	return s->name;
}

/* A bucket name as S3 allows it (3-63 of [a-z0-9.-]); anything else would change the URL. */
static bool bucket_valid(const char *b, size_t n)
{
	size_t i;

	if (n < 3 || n > 63)
		return false;
	for (i = 0; i < n; i++)
		if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '-' ||
		      b[i] == '.'))
			return false;
	return true;
}

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *arg)
{
	struct ic_s3 *s = arg;

	pthread_mutex_lock(&s->share_mu[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *arg)
{
	struct ic_s3 *s = arg;

	pthread_mutex_unlock(&s->share_mu[d]);
}

int ic_s3_open(const char *url, struct ic_s3 **out, char **prefix)
{
	struct ic_s3 *s;
	const char *b, *slash;
	size_t blen, plen;
	int err, i;

	*out = NULL;
	*prefix = NULL;
	if (!ic_s3_is_url(url))
		return ic_fail(-EINVAL, "%s: not an s3://BUCKET/PREFIX URL", url);
	b = url + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (!bucket_valid(b, blen))
		return ic_fail(-EINVAL, "%s: bad bucket name (3-63 of a-z 0-9 . -)", url);
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return ic_fail(-EIO, "S3: libcurl: %s", curl_easy_strerror(curl_init_rc));
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->mu, NULL);
	for (i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s->share_mu[i], NULL);
	err = ic_s3_conf_load(&s->conf);
	if (err) {
		free(s);
		return err;
	}
	s->bucket = strndup(b, blen);
	plen = slash ? strlen(slash + 1) : 0;
	while (plen && slash[plen] == '/')
		plen--;
	*prefix = strndup(slash ? slash + 1 : "", plen);
	if (!s->bucket || !*prefix || asprintf(&s->name, "s3://%s", s->bucket) < 0 ||
	    asprintf(&s->sigv4, "aws:amz:%s:s3", s->conf.region) < 0) {
		s->name = s->sigv4 = NULL;
		err = -ENOMEM;
		goto fail;
	}
	if (plen >= IC_S3_KEY_MAX / 2 || strstr(*prefix, "//")) {
		err = ic_fail(-EINVAL, "%s: bad prefix", url);
		goto fail;
	}
	s->share = curl_share_init();
	if (!s->share) {
		err = -ENOMEM;
		goto fail;
	}
	curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	*out = s;
	return 0;
fail:
	free(*prefix);
	*prefix = NULL;
	ic_s3_close(s);
	return err;
}

void ic_s3_close(struct ic_s3 *s)
{
	size_t i;
	int j;

	if (!s)
		return;
	for (i = 0; i < s->nidle; i++)
		curl_easy_cleanup(s->idle[i]);
	free(s->idle);
	if (s->share)
		curl_share_cleanup(s->share);
	for (j = 0; j < CURL_LOCK_DATA_LAST; j++)
		pthread_mutex_destroy(&s->share_mu[j]);
	pthread_mutex_destroy(&s->mu);
	ic_s3_conf_free(&s->conf);
	free(s->bucket);
	free(s->name);
	free(s->sigv4);
	free(s);
}

void ic_s3_stats(const struct ic_s3 *s, uint64_t *requests, uint64_t *retries, uint64_t *sent,
		 uint64_t *received)
{
	pthread_mutex_lock((pthread_mutex_t *)&s->mu);
	*requests = s->requests;
	*retries = s->retries;
	*sent = s->sent;
	*received = s->received;
	pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}

/* ---- connections --------------------------------------------------------------- */

static CURL *conn_get(struct ic_s3 *s)
{
	CURL *h = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->nidle)
		h = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->mu);
	if (!h) {
		h = curl_easy_init();
		if (h)
			curl_easy_setopt(h, CURLOPT_SHARE, s->share);
	}
	return h;
}

static void conn_put(struct ic_s3 *s, CURL *h)
{
	pthread_mutex_lock(&s->mu);
	if (s->nidle == s->idle_cap) {
		size_t cap = s->idle_cap ? 2 * s->idle_cap : 8;
		CURL **n = realloc(s->idle, cap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&s->mu);
			curl_easy_cleanup(h);
			return;
		}
		s->idle = n;
		s->idle_cap = cap;
	}
	s->idle[s->nidle++] = h;
	pthread_mutex_unlock(&s->mu);
}

/* ---- encoding -------------------------------------------------------------------- */

char *ic_s3_encode(const char *src, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(src), i, o = 0;
	char *d = malloc(3 * n + 1);

	if (!d)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)src[i];

		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
		    (keep_slash && ch == '/')) {
			d[o++] = (char)ch;
		} else {
			d[o++] = '%';
			d[o++] = hex[ch >> 4];
			d[o++] = hex[ch & 15];
		}
	}
	d[o] = '\0';
	return d;
}

static char *build_url(struct ic_s3 *s, const struct ic_s3_req *r)
{
	char *key = ic_s3_encode(r->key ? r->key : "", true), *url = NULL;
	const char *ep = s->conf.endpoint, *host = strstr(ep, "://") + 3;
	const char *q = r->query ? r->query : "";
	int n;

	if (!key)
		return NULL;
	if (s->conf.path_style)
		n = asprintf(&url, "%s/%s/%s%s%s", ep, s->bucket, key, *q ? "?" : "", q);
	else
		n = asprintf(&url, "%.*s%s.%s/%s%s%s", (int)(host - ep), ep, s->bucket, host, key,
			     *q ? "?" : "", q);
	free(key);
	return n < 0 ? NULL : url;
}

/* ---- one transfer ------------------------------------------------------------------ */

struct xfer {
	struct ic_s3_req *r;
	CURL *h;
	size_t sent;
};

static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb, left = x->r->body_len - x->sent;

	if (n > left)
		n = left;
	memcpy(buf, (const char *)x->r->body + x->sent, n);
	x->sent += n;
	return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	struct ic_s3_req *r = x->r;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 300) {
		size_t room = sizeof(r->errbody) - 1 - r->errlen;

		memcpy(r->errbody + r->errlen, data, n < room ? n : room);
		r->errlen += n < room ? n : room;
		r->errbody[r->errlen] = '\0';
		return n;
	}
	if (r->out_len + n > r->out_cap) {
		r->overflow = true;
		return 0;                   /* stops the transfer: CURLE_WRITE_ERROR */
	}
	if (r->out_grow) {
		size_t want = r->out_len + n, cap = r->out_len ? r->out_len : 4096;
		void *p;

		while (cap < want)
			cap *= 2;
		if (cap > r->out_cap)
			cap = r->out_cap;
		p = realloc(r->out, cap);
		if (!p)
			return 0;
		r->out = p;
	}
	memcpy((char *)r->out + r->out_len, data, n);
	r->out_len += n;
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb, vlen;
	const char *v;

	if (n > 5 && strncasecmp(data, "ETag:", 5) == 0) {
		v = data + 5;
		vlen = n - 5;
		while (vlen && (*v == ' ' || *v == '\t')) {
			v++;
			vlen--;
		}
		while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
			vlen--;
		if (vlen < IC_S3_ETAG_MAX && ic_s3_etag_ok(v, vlen)) {
			memcpy(x->r->etag, v, vlen);
			x->r->etag[vlen] = '\0';
		}
	} else if (n > 15 && strncasecmp(data, "Content-Length:", 15) == 0) {
		x->r->content_length = strtoull(data + 15, NULL, 10);
	}
	return n;
}

static int attempt(struct ic_s3 *s, struct ic_s3_req *r, CURL *h, const char *url,
		   CURLcode *rc)
{
	char hsha[64 + 32], range[64], tok[2048];
	unsigned char sha[crypto_hash_sha256_BYTES];
	struct curl_slist *hl = NULL, *t;
	struct xfer x = { .r = r, .h = h };
	size_t i;
	curl_off_t up = 0, down = 0;

	r->out_len = 0;
	r->errlen = 0;
	r->errbody[0] = '\0';
	r->etag[0] = '\0';
	r->status = 0;
	r->overflow = false;
	r->content_length = 0;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_SHARE, s->share);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (getenv("IMGCHAIN_S3_DEBUG"))
		curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, s->conf.allow_http ? "http,https" : "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (s->conf.ca_bundle)
		curl_easy_setopt(h, CURLOPT_CAINFO, s->conf.ca_bundle);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)s->conf.stall_seconds);
	if (!r->self_sign) {
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, s->conf.access_key);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s->conf.secret_key);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
	/* the payload's SHA-256 is signed: the server checks the body arrived unchanged
	 * (curl 7.88 neither computes nor sends it, and RGW refuses requests without it) */
	crypto_hash_sha256(sha, r->body, r->body ? r->body_len : 0);
	strcpy(hsha, "x-amz-content-sha256: ");
	for (i = 0; i < sizeof(sha); i++)
		sprintf(hsha + 22 + 2 * i, "%02x", sha[i]);
	hl = curl_slist_append(hl, hsha);
	if (hl && s->conf.token) {
		snprintf(tok, sizeof(tok), "x-amz-security-token: %s", s->conf.token);
		hl = (t = curl_slist_append(hl, tok)) ? t : NULL;
	}
	if (hl && r->range) {
		snprintf(range, sizeof(range), "Range: bytes=%llu-%llu", (unsigned long long)r->off,
			 (unsigned long long)(r->off + r->len - 1));
		hl = (t = curl_slist_append(hl, range)) ? t : NULL;
	}
	for (i = 0; hl && i < sizeof(r->hdr) / sizeof(r->hdr[0]); i++)
		if (r->hdr[i])
			hl = (t = curl_slist_append(hl, r->hdr[i])) ? t : NULL;
	if (hl && r->self_sign) {
		char *az = NULL, *dt = NULL;

		if (ic_s3_sign(s, r->method, url, hl, hsha + 22, &az, &dt) == 0 &&
		    (t = curl_slist_append(hl, dt)) && (t = curl_slist_append(hl, az)))
			hl = t;
		else
			curl_slist_free_all(hl), hl = NULL;
		free(az);
		free(dt);
	}
	if (!hl)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	} else if (strcmp(r->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	}
	*rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up);
	curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &down);
	curl_slist_free_all(hl);
	pthread_mutex_lock(&s->mu);
	s->requests++;
	s->sent += (uint64_t)up;
	s->received += (uint64_t)down;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static bool transient(CURLcode rc, const struct ic_s3_req *r)
{
	switch (rc) {
	case CURLE_OK:
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
	return r->status >= 500 || r->status == 429 ||
	       (r->status == 400 && strcmp(r->code, "RequestTimeout") == 0);
}

static void error_code(struct ic_s3_req *r)
{
	const char *v;
	size_t n;

	r->code[0] = '\0';
	if (r->status < 300 || !ic_s3_xml_find(r->errbody, r->errbody + r->errlen, "Code", &v, &n))
		return;
	if (ic_s3_xml_text(v, n, r->code, sizeof(r->code)) != 0)
		strcpy(r->code, "?");
}

static void backoff(unsigned k)
{
	/* equal jitter: half of 0.2 s x 2^k (at most 5 s) fixed, the other half random */
	double full = 0.2 * (double)(1u << (k < 5 ? k : 5));
	struct timespec ts;

	if (full > 5.0)
		full = 5.0;
	full = full / 2 + full / 2 * (double)randombytes_uniform(1000) / 1000.0;
	ts.tv_sec = (time_t)full;
	ts.tv_nsec = (long)((full - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Cleanups after a failure (aborting an upload, dropping the lease) make requests whose
 * own failures must not replace the message of the failure being reported. */
static __thread int quiet;

void ic_s3_quiet(bool on)
{
	quiet += on ? 1 : -1;
}

#define S3_FAIL(code, ...) (quiet ? (code) : ic_fail(code, __VA_ARGS__))

int ic_s3_request(struct ic_s3 *s, struct ic_s3_req *r)
{
	char *url = build_url(s, r);
	CURL *h = url ? conn_get(s) : NULL;
	double start = mono();
	CURLcode rc = CURLE_OK;
	const char *key = r->key ? r->key : "";
	int err;

	if (!h) {
		free(url);
		return -ENOMEM;
	}
	for (r->attempts = 1;; r->attempts++) {
		err = attempt(s, r, h, url, &rc);
		if (err)
			break;
		error_code(r);
		if (!transient(rc, r) || mono() - start > s->conf.retry_seconds)
			break;
		pthread_mutex_lock(&s->mu);
		s->retries++;
		pthread_mutex_unlock(&s->mu);
		backoff(r->attempts - 1);
	}
	conn_put(s, h);
	free(url);
	if (err)
		return err;
	if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r->overflow))
		return S3_FAIL(-EIO, "%s/%s: %s %s (after %u attempts)", s->name, key, r->method,
			       curl_easy_strerror(rc), r->attempts);
	if (r->overflow)
		return S3_FAIL(-EFBIG, "%s/%s: answer larger than %zu bytes", s->name, key,
			       r->out_cap);
	if (r->status >= 200 && r->status < 300)
		return 0;
	if (r->status == 404)
		return S3_FAIL(-ENOENT, "%s/%s: not found (%s)", s->name, key,
			       r->code[0] ? r->code : "404");
	if (r->status == 403)
		return S3_FAIL(-EACCES, "%s/%s: access denied (%s): check the credentials "
			       "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE)", s->name,
			       key, r->code[0] ? r->code : "403");
	if (r->status == 412)
		return S3_FAIL(-EEXIST, "%s/%s: precondition failed", s->name, key);
	return S3_FAIL(-EIO, "%s/%s: %s: HTTP %ld %s (after %u attempts)", s->name, key,
		       r->method, r->status, r->code, r->attempts);
}
