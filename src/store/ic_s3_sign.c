/* ic_s3_sign.c: AWS SigV4 for the one request curl before 8.10 signs wrongly.
 *
 * Every request is signed by libcurl (CURLOPT_AWS_SIGV4) except UploadPartCopy with a
 * range: curl 7.88 (Debian 12) sorts the signed headers by "name:value" line rather than
 * by name, so x-amz-copy-source-range comes before x-amz-copy-source (':' sorts after
 * '-'), and the server's canonical request differs: SignatureDoesNotMatch (curl pull
 * request 14370, fixed in 8.10.0).  For that request only, and only with an older curl,
 * the signature is computed here as the AWS documentation specifies (Signature Version 4,
 * header-based, signed payload), with libsodium's SHA-256 and HMAC-SHA-256. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ic_s3_int.h"

#define SIGN_HDR_MAX 12

static void hex(const unsigned char *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, klen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, strlen(msg));
	crypto_auth_hmacsha256_final(&st, out);
}

struct hdr {
	char name[64];
	const char *value;
	size_t vlen;
};

static int cmp_hdr(const void *a, const void *b)
{
	return strcmp(((const struct hdr *)a)->name, ((const struct hdr *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical query: its parameters sorted ("k=v", already encoded). */
static char *canon_query(const char *q)
{
	char *dup = strdup(q), *save = NULL, *p, *v[16], *out;
	size_t n = 0, len = 0;

	if (!dup)
		return NULL;
	for (p = strtok_r(dup, "&", &save); p && n < 16; p = strtok_r(NULL, "&", &save))
		v[n++] = p;
	qsort(v, n, sizeof(v[0]), cmp_str);
	out = malloc(strlen(q) + n + 2);
	if (out) {
		out[0] = '\0';
		for (size_t i = 0; i < n; i++)
			len += (size_t)sprintf(out + len, "%s%s%s", i ? "&" : "", v[i],
					       strchr(v[i], '=') ? "" : "=");
	}
	free(dup);
	return out;
}

bool ic_s3_curl_sorts_by_line(void)
{
	return curl_version_info(CURLVERSION_NOW)->version_num < 0x080a00;
}

int ic_s3_sign(const struct ic_s3 *s, const char *method, const char *url,
	       const struct curl_slist *lines, const char *payload_hex, char **authz, char **date)
{
	const char *auth = strstr(url, "://"), *path, *q;
	struct hdr h[SIGN_HDR_MAX];
	char amz[32], day[16], *query = NULL, *canon = NULL, *sts = NULL, shex[65], sig[65];
	char signed_hdrs[512] = "", chdrs[8192] = "";
	unsigned char d[32], k[32];
	struct timespec ts;
	struct tm tm;
	size_t n = 0, cl = 0, sl = 0;
	int ret = -ENOMEM;
	char *key0 = NULL;

	*authz = *date = NULL;
	if (!auth)
		return -EINVAL;
	auth += 3;
	path = strchr(auth, '/');
	if (!path)
		return -EINVAL;
	q = strchr(path, '?');
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(amz, sizeof(amz), "%Y%m%dT%H%M%SZ", &tm);
	strftime(day, sizeof(day), "%Y%m%d", &tm);
	snprintf(h[n].name, sizeof(h[n].name), "host");
	h[n].value = auth;
	h[n++].vlen = (size_t)(path - auth);
	snprintf(h[n].name, sizeof(h[n].name), "x-amz-date");
	h[n].value = amz;
	h[n++].vlen = strlen(amz);
	for (; lines; lines = lines->next) {
		const char *c = strchr(lines->data, ':'), *v;
		size_t nl, i;

		if (!c || n == SIGN_HDR_MAX || (nl = (size_t)(c - lines->data)) >= sizeof(h[0].name))
			return -EINVAL;
		for (i = 0; i < nl; i++)
			h[n].name[i] = (char)tolower((unsigned char)lines->data[i]);
		h[n].name[nl] = '\0';
		for (v = c + 1; *v == ' ' || *v == '\t'; v++)
			;
		h[n].value = v;
		h[n].vlen = strlen(v);
		while (h[n].vlen && (v[h[n].vlen - 1] == ' ' || v[h[n].vlen - 1] == '\t'))
			h[n].vlen--;
		n++;
	}
	qsort(h, n, sizeof(h[0]), cmp_hdr);
	for (size_t i = 0; i < n; i++) {
		cl += (size_t)snprintf(chdrs + cl, sizeof(chdrs) - cl, "%s:%.*s\n", h[i].name,
				       (int)h[i].vlen, h[i].value);
		sl += (size_t)snprintf(signed_hdrs + sl, sizeof(signed_hdrs) - sl, "%s%s",
				       i ? ";" : "", h[i].name);
		if (cl >= sizeof(chdrs) || sl >= sizeof(signed_hdrs))
			return -EINVAL;
	}
	query = canon_query(q ? q + 1 : "");
	if (!query || asprintf(&canon, "%s\n%.*s\n%s\n%s\n%s\n%s", method,
			       (int)(q ? q - path : (ptrdiff_t)strlen(path)), path, query, chdrs,
			       signed_hdrs, payload_hex) < 0)
		goto out;
	crypto_hash_sha256(d, (const unsigned char *)canon, strlen(canon));
	hex(d, 32, shex);
	if (asprintf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", amz, day,
		     s->conf.region, shex) < 0 || asprintf(&key0, "AWS4%s", s->conf.secret_key) < 0)
		goto out;
	hmac(key0, strlen(key0), day, k);
	hmac(k, 32, s->conf.region, k);
	hmac(k, 32, "s3", k);
	hmac(k, 32, "aws4_request", k);
	hmac(k, 32, sts, d);
	hex(d, 32, sig);
	if (asprintf(authz, "Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/%s/s3/aws4_request, "
		     "SignedHeaders=%s, Signature=%s", s->conf.access_key, day, s->conf.region,
		     signed_hdrs, sig) < 0) {
		*authz = NULL;
		goto out;
	}
	if (asprintf(date, "x-amz-date: %s", amz) < 0) {
		*date = NULL;
		free(*authz);
		*authz = NULL;
		goto out;
	}
	ret = 0;
out:
	if (key0)
		sodium_memzero(key0, strlen(key0));
	sodium_memzero(k, sizeof(k));
	free(key0);
	free(query);
	free(canon);
	free(sts);
	return ret;
}
