/* test_s3.c: the S3 client against a real endpoint (tests/s3/client.sh starts a Ceph RGW and
 * runs "test_s3 unit s3://BUCKET"), and small commands the shell tests use to look into a
 * bucket: put KEY FILE, get KEY FILE, ls PREFIX, uploads PREFIX, rm KEY, mkbucket. */
#include "config.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ic_error.h"
#include "ic_s3.h"
#include "../unit/unit.h"

static struct ic_s3 *s3;

static int count_fn(void *arg, const struct ic_s3_object *o)
{
	(*(size_t *)arg)++;
	return 0;
}

static int print_fn(void *arg, const struct ic_s3_object *o)
{
	printf("%s %llu\n", o->key, (unsigned long long)o->size);
	return 0;
}

static int print_upload(void *arg, const char *key, const char *id)
{
	printf("%s %s\n", key, id);
	return 0;
}

static int abort_upload(void *arg, const char *key, const char *id)
{
	(*(size_t *)arg)++;
	return ic_s3_abort_upload(s3, key, id);
}

struct part_job {
	struct ic_s3_upload *u;
	unsigned partno;
	const unsigned char *buf;
	size_t len;
	int err;
};

static void *part_thread(void *arg)
{
	struct part_job *j = arg;

	j->err = ic_s3_mp_part(j->u, j->partno, j->buf, j->len);
	return NULL;
}

struct put_job {
	unsigned first, n;
	int err;
};

static void *put_thread(void *arg)
{
	struct put_job *j = arg;
	char key[64];
	unsigned i;

	for (i = j->first; i < j->first + j->n && !j->err; i++) {
		snprintf(key, sizeof(key), "many/k%05u", i);
		j->err = ic_s3_put(s3, key, key, strlen(key), NULL, NULL);
	}
	return NULL;
}

static void unit(void)
{
	static unsigned char big[3 * 65536 + 1000];
	char etag[IC_S3_ETAG_MAX], etag2[IC_S3_ETAG_MAX];
	struct ic_s3_cond create = { .if_none_match = true }, cond = { 0 };
	unsigned char buf[64];
	void *all;
	size_t got, len, n, i;
	uint64_t size;
	struct ic_s3_upload *u;
	struct part_job pj[4];
	struct put_job mj[4];
	pthread_t th[4];

	CHECK_EQ(ic_s3_create_bucket(s3), 0);
	CHECK_EQ(ic_s3_create_bucket(s3), 0);        /* ours already: fine */

	/* PUT, GET (ranges), HEAD, DELETE */
	CHECK_EQ(ic_s3_put(s3, "a/b c&d", "hello world", 11, NULL, etag), 0);
	CHECK(etag[0] == '"');
	CHECK_EQ(ic_s3_get(s3, "a/b c&d", 6, 5, buf, &got), 0);
	CHECK_EQ(got, 5);
	CHECK(memcmp(buf, "world", 5) == 0);
	CHECK_EQ(ic_s3_get(s3, "a/b c&d", 8, 10, buf, &got), 0);   /* short at the end */
	CHECK_EQ(got, 3);
	CHECK_EQ(ic_s3_get(s3, "a/b c&d", 11, 4, buf, &got), 0);   /* past the end */
	CHECK_EQ(got, 0);
	CHECK_EQ(ic_s3_head(s3, "a/b c&d", &size, etag2), 0);
	CHECK_EQ(size, 11);
	CHECK(strcmp(etag, etag2) == 0);
	CHECK_EQ(ic_s3_get_all(s3, "a/b c&d", 100, &all, &len, NULL), 0);
	CHECK(len == 11 && memcmp(all, "hello world", 11) == 0);
	free(all);
	CHECK_EQ(ic_s3_get_all(s3, "a/b c&d", 5, &all, &len, NULL), -EFBIG);
	CHECK_EQ(ic_s3_head(s3, "a/nothing", NULL, NULL), -ENOENT);
	CHECK_EQ(ic_s3_get(s3, "a/nothing", 0, 4, buf, &got), -ENOENT);
	CHECK_EQ(ic_s3_delete(s3, "a/b c&d"), 0);
	CHECK_EQ(ic_s3_delete(s3, "a/b c&d"), 0);       /* a missing key: fine */
	CHECK_EQ(ic_s3_head(s3, "a/b c&d", NULL, NULL), -ENOENT);

	/* conditional writes (what the lease relies on; RGW 16 honours both) */
	CHECK_EQ(ic_s3_put(s3, "lease", "one", 3, &create, etag), 0);
	CHECK_EQ(ic_s3_put(s3, "lease", "two", 3, &create, NULL), -EEXIST);
	cond.if_match = "\"0123456789abcdef0123456789abcdef\"";
	CHECK_EQ(ic_s3_put(s3, "lease", "two", 3, &cond, NULL), -EEXIST);
	cond.if_match = etag;
	CHECK_EQ(ic_s3_put(s3, "lease", "two", 3, &cond, etag2), 0);
	CHECK_EQ(ic_s3_put(s3, "lease", "six", 3, &cond, NULL), -EEXIST);   /* etag changed */
	CHECK_EQ(ic_s3_get(s3, "lease", 0, 3, buf, &got), 0);
	CHECK(got == 3 && memcmp(buf, "two", 3) == 0);
	/* range GETs bound to a version: another ETag is refused */
	CHECK_EQ(ic_s3_get_if(s3, "lease", etag2, 1, 2, buf, &got), 0);
	CHECK(got == 2 && memcmp(buf, "wo", 2) == 0);
	CHECK_EQ(ic_s3_get_if(s3, "lease", etag, 1, 2, buf, &got), -EEXIST);

	/* listing, paged (more than one page of 1000), by 4 threads at once */
	for (i = 0; i < 4; i++) {
		mj[i] = (struct put_job){ .first = (unsigned)i * 260, .n = 260 };
		CHECK_EQ(pthread_create(&th[i], NULL, put_thread, &mj[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ(mj[i].err, 0);
	}
	n = 0;
	CHECK_EQ(ic_s3_list(s3, "many/", count_fn, &n), 0);
	CHECK_EQ(n, 1040);
	n = 0;
	CHECK_EQ(ic_s3_list(s3, "many/k0000", count_fn, &n), 0);
	CHECK_EQ(n, 10);

	/* multipart: parts sent by threads in any order, invisible until completed */
	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 2654435761u >> 13);
	if (ic_s3_mp_start(s3, "mp/obj", &u) != 0) {
		CHECK(!"multipart upload started");
		return;
	}
	for (i = 0; i < 4; i++) {
		size_t off = i * 65536;

		pj[i] = (struct part_job){ .u = u, .partno = (unsigned)i + 1, .buf = big + off,
					   .len = i < 3 ? 65536 : sizeof(big) - off };
		CHECK_EQ(pthread_create(&th[i], NULL, part_thread, &pj[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ(pj[i].err, 0);
	}
	CHECK_EQ(ic_s3_head(s3, "mp/obj", NULL, NULL), -ENOENT);
	n = 0;
	CHECK_EQ(ic_s3_list(s3, "mp/", count_fn, &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(ic_s3_mp_complete(u, etag), 0);
	CHECK_EQ(ic_s3_get_all(s3, "mp/obj", sizeof(big), &all, &len, NULL), 0);
	CHECK(len == sizeof(big) && memcmp(all, big, len) == 0);
	free(all);

	/* an abandoned upload is found and aborted by the next writer */
	if (ic_s3_mp_start(s3, "mp/dead", &u) != 0) {
		CHECK(!"multipart upload started");
		return;
	}
	CHECK_EQ(ic_s3_mp_part(u, 1, big, 1000), 0);
	n = 0;
	CHECK_EQ(ic_s3_list_uploads(s3, "mp/", abort_upload, &n), 0);
	CHECK_EQ(n, 1);
	ic_s3_mp_abort(u);      /* (completing it: RGW 16 answers 500, AWS 404 NoSuchUpload) */
	n = 0;
	CHECK_EQ(ic_s3_list_uploads(s3, "mp/", abort_upload, &n), 0);
	CHECK_EQ(n, 0);
	CHECK_EQ(ic_s3_head(s3, "mp/dead", NULL, NULL), -ENOENT);
}

static int load(const char *path, void **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		return -1;
	*buf = malloc((size_t)n + 1);
	*len = (size_t)n;
	if (!*buf || fread(*buf, 1, *len, f) != *len)
		return -1;
	fclose(f);
	return 0;
}

int main(int argc, char **argv)
{
	char *prefix = NULL;
	void *buf;
	size_t len, n = 0;
	int err = 0;
	FILE *f;

	ic_progname = "test_s3";
	if (argc < 3) {
		fprintf(stderr, "usage: test_s3 unit|mkbucket|put|get|ls|uploads|rm|abort-all "
			"s3://BUCKET[/PREFIX] [ARGS]\n");
		return 2;
	}
	err = ic_s3_open(argv[2], &s3, &prefix);
	if (err)
		return ic_report(err);
	if (strcmp(argv[1], "unit") == 0) {
		unit();
		ic_s3_close(s3);
		free(prefix);
		return unit_failures ? 1 : 0;
	}
	if (strcmp(argv[1], "mkbucket") == 0) {
		err = ic_s3_create_bucket(s3);
	} else if (strcmp(argv[1], "put") == 0 && argc == 5) {
		if (load(argv[4], &buf, &len) != 0)
			return 1;
		err = ic_s3_put(s3, argv[3], buf, len, NULL, NULL);
		free(buf);
	} else if (strcmp(argv[1], "get") == 0 && argc == 5) {
		err = ic_s3_get_all(s3, argv[3], (size_t)1 << 34, &buf, &len, NULL);
		if (!err) {
			f = fopen(argv[4], "wb");
			if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0)
				err = -EIO;
			free(buf);
		}
	} else if (strcmp(argv[1], "ls") == 0) {
		err = ic_s3_list(s3, argc > 3 ? argv[3] : prefix, print_fn, NULL);
	} else if (strcmp(argv[1], "uploads") == 0) {
		err = ic_s3_list_uploads(s3, argc > 3 ? argv[3] : prefix, print_upload, NULL);
	} else if (strcmp(argv[1], "abort-all") == 0) {
		err = ic_s3_list_uploads(s3, argc > 3 ? argv[3] : prefix, abort_upload, &n);
	} else if (strcmp(argv[1], "rm") == 0 && argc == 4) {
		err = ic_s3_delete(s3, argv[3]);
	} else {
		fprintf(stderr, "test_s3: bad command\n");
		err = -EINVAL;
	}
	ic_s3_close(s3);
	free(prefix);
	return err ? ic_report(err) : 0;
}
