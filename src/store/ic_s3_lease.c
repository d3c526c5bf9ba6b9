/* ic_s3_lease.c: the writers' lease of a chain in a bucket (FORMAT.md 14.3).
 * PREFIX/lease holds "imgchain-lease 1\nowner HEX\nhost NAME\npid N\nexpires T\n".  Taken
 * with If-None-Match: * (created only if absent); an expired lease, or one whose holder ran
 * on this host and is dead, is taken over with If-Match: its ETag (only one of two racing
 * writers wins).  Read back after every write: an endpoint that ignores the conditions is
 * caught when two writers overlap in time unluckily less often, not never (the single-writer
 * rule of 14.3 then applies).  A thread renews it every third of its time; a writer whose
 * renewal failed (lost or taken over) publishes nothing more. */
#include "config.h"

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_s3_chain_int.h"

#define LEASE_MAX 4096

struct ic_s3_lease {
	struct ic_s3_chain *sc;
	char *key;
	char owner[33];
	char etag[IC_S3_ETAG_MAX];
	unsigned ttl;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, lost;
	time_t renewed;             /* when the lease was last written (CLOCK_MONOTONIC s) */
};

static time_t mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static unsigned lease_ttl(void)
{
	const char *v = getenv("IMGCHAIN_S3_LEASE_SECONDS");
	long n = v ? strtol(v, NULL, 10) : 0;

	return n >= 3 && n <= 86400 ? (unsigned)n : 600;
}

static int lease_body(const struct ic_s3_lease *l, char *buf, size_t cap)
{
	char host[256] = "?";

	gethostname(host, sizeof(host) - 1);
	host[strcspn(host, " \n")] = '\0';
	return snprintf(buf, cap, "imgchain-lease 1\nowner %s\nhost %s\npid %ld\nexpires %lld\n",
			l->owner, host, (long)getpid(), (long long)time(NULL) + l->ttl);
}

struct holder {
	char owner[33], host[256];
	long pid;
	long long expires;
};

/* Parse a lease read from the bucket (untrusted): -EINVAL when not one. */
static int lease_parse(const char *buf, size_t len, struct holder *h)
{
	char tmp[LEASE_MAX + 1];

	if (len > LEASE_MAX)
		return -EINVAL;
	memcpy(tmp, buf, len);
	tmp[len] = '\0';
	if (sscanf(tmp, "imgchain-lease 1\nowner %32s\nhost %255s\npid %ld\nexpires %lld", h->owner,
		   h->host, &h->pid, &h->expires) != 4)
		return -EINVAL;
	return 0;
}

static int lease_read(struct ic_s3_lease *l, struct holder *h, char etag[IC_S3_ETAG_MAX])
{
	void *buf;
	size_t len;
	int err = ic_s3_get_all(l->sc->s3, l->key, LEASE_MAX, &buf, &len, etag);

	if (err)
		return err;
	err = lease_parse(buf, len, h);
	free(buf);
	if (err)
		return ic_fail(-EBUSY, "%s/%s: not a lease this version understands: remove it "
			       "only if no writer runs", ic_s3_name(l->sc->s3), l->key);
	return 0;
}

static bool holder_dead_here(const struct holder *h)
{
	char host[256] = "";

	gethostname(host, sizeof(host) - 1);
	return strcmp(host, h->host) == 0 && h->pid > 0 && kill((pid_t)h->pid, 0) != 0 &&
	       errno == ESRCH;
}

static void *renew_thread(void *arg)
{
	struct ic_s3_lease *l = arg;
	char body[512];

	pthread_mutex_lock(&l->mu);
	while (!l->stop && !l->lost) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += l->ttl / 3;
		if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0 || l->stop)
			continue;
		pthread_mutex_unlock(&l->mu);
		{
			struct ic_s3_cond cond = { .if_match = l->etag };
			char etag[IC_S3_ETAG_MAX];
			time_t now = mono_s();
			int n = lease_body(l, body, sizeof(body));
			int err = ic_s3_put(l->sc->s3, l->key, body, (size_t)n, &cond, etag);

			pthread_mutex_lock(&l->mu);
			if (err) {
				l->lost = true;
			} else {
				strcpy(l->etag, etag);
				l->renewed = now;
			}
		}
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static int abort_fn(void *arg, const char *key, const char *id)
{
	struct ic_s3_chain *sc = arg;

	return ic_s3_abort_upload(sc->s3, key, id);
}

int ic_s3_lease_take(struct ic_s3_chain *sc)
{
	struct ic_s3_lease *l = calloc(1, sizeof(*l));
	struct ic_s3_cond cond = { .if_none_match = true };
	unsigned char rnd[16];
	char body[512], etag[IC_S3_ETAG_MAX], *pfx = NULL;
	struct holder h;
	int n, err;

	if (!l)
		return -ENOMEM;
	l->sc = sc;
	l->ttl = lease_ttl();
	l->key = ic_s3_chain_key(sc, "lease");
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(l->owner, sizeof(l->owner), rnd, sizeof(rnd));
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	sc->lease = l;
	if (!l->key)
		return -ENOMEM;
	n = lease_body(l, body, sizeof(body));
	err = ic_s3_put(sc->s3, l->key, body, (size_t)n, &cond, l->etag);
	if (err == -EEXIST) {
		/* held (or our own first attempt, retried: the read-back decides) */
		err = lease_read(l, &h, etag);
		if (!err && strcmp(h.owner, l->owner) != 0) {
			if (h.expires >= (long long)time(NULL) && !holder_dead_here(&h)) {
				time_t t = (time_t)h.expires;
				char when[64];
				struct tm tm;

				strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
				err = ic_fail(-EBUSY, "%s/%s: another writer holds the chain: host %s "
					      "pid %ld, until %s", ic_s3_name(sc->s3), sc->prefix,
					      h.host, h.pid, when);
			} else {
				struct ic_s3_cond over = { .if_match = etag };

				err = ic_s3_put(sc->s3, l->key, body, (size_t)n, &over, l->etag);
				if (err == -EEXIST)
					err = ic_fail(-EBUSY, "%s/%s: another writer took the "
						      "expired lease first", ic_s3_name(sc->s3),
						      sc->prefix);
			}
		}
	}
	/* read back: on an endpoint that ignores the conditions, a racing writer shows here */
	if (!err)
		err = lease_read(l, &h, etag);
	if (!err && strcmp(h.owner, l->owner) != 0)
		err = ic_fail(-EBUSY, "%s/%s: another writer (host %s pid %ld) took the lease",
			      ic_s3_name(sc->s3), sc->prefix, h.host, h.pid);
	if (err) {
		free(l->key);
		l->key = NULL;          /* not ours: never deleted */
		ic_s3_lease_drop(sc);
		return err;
	}
	strcpy(l->etag, etag);
	l->renewed = mono_s();
	/* incomplete uploads under the prefix are killed writers' leftovers */
	if (*sc->prefix && asprintf(&pfx, "%s/", sc->prefix) < 0)
		pfx = NULL;
	err = ic_s3_list_uploads(sc->s3, pfx ? pfx : "", abort_fn, sc);
	free(pfx);
	if (!err) {
		err = -pthread_create(&l->thread, NULL, renew_thread, l);
		l->running = !err;
	}
	if (err)
		ic_s3_lease_drop(sc);
	return err;
}

int ic_s3_lease_check(struct ic_s3_chain *sc)
{
	struct ic_s3_lease *l = sc->lease;
	bool lost;

	if (!l)
		return ic_fail(-EINVAL, "%s/%s: writing without the lease", ic_s3_name(sc->s3),
			       sc->prefix);
	pthread_mutex_lock(&l->mu);
	/* a writer stopped (SIGSTOP, a suspended VM) past its lease's end has lost it even
	 * before its renewal thread finds out */
	if (mono_s() - l->renewed >= (time_t)l->ttl - 1)
		l->lost = true;
	lost = l->lost;
	pthread_mutex_unlock(&l->mu);
	if (lost)
		return ic_fail(-EBUSY, "%s/%s: the writers' lease was lost (renewal failed): "
			       "nothing more is published", ic_s3_name(sc->s3), sc->prefix);
	return 0;
}

void ic_s3_lease_drop(struct ic_s3_chain *sc)
{
	struct ic_s3_lease *l = sc->lease;
	struct holder h;
	char etag[IC_S3_ETAG_MAX];

	if (!l)
		return;
	if (l->running) {
		pthread_mutex_lock(&l->mu);
		l->stop = true;
		pthread_cond_signal(&l->cv);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	/* delete it only while it is ours (S3 has no conditional DELETE on RGW 16: a
	 * takeover between this read and the delete is the window 14.3 names) */
	ic_s3_quiet(true);
	if (l->key && lease_read(l, &h, etag) == 0 && strcmp(h.owner, l->owner) == 0)
		ic_s3_delete(sc->s3, l->key);
	ic_s3_quiet(false);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l->key);
	free(l);
	sc->lease = NULL;
}
