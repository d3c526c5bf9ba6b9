/* test_pool.c: the shared base helpers: thread count, worker pool, all-zero check, mountinfo. */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "ic_mem.h"
#include "ic_mountinfo.h"
#include "ic_pool.h"
#include "unit.h"

static void test_thread_cap(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned def = ncpu > 0 ? (unsigned)ncpu : 2;

	CHECK_EQ(ic_thread_cap(3, IC_THREADS_MAX), 3);
	CHECK_EQ(ic_thread_cap(1, IC_THREADS_MAX), 1);
	CHECK_EQ(ic_thread_cap(100, IC_THREADS_MAX), IC_THREADS_MAX);
	CHECK_EQ(ic_thread_cap(1000, 0), 1000);        /* 0: no upper bound */
	CHECK_EQ(ic_thread_cap(0, 0), def);            /* one per online CPU */
	CHECK_EQ(ic_thread_cap(-5, 0), def);
	CHECK_EQ(ic_thread_cap(0, 1), 1);
	CHECK(ic_thread_cap(0, IC_THREADS_MAX) >= 1 && ic_thread_cap(0, IC_THREADS_MAX) <= 64);
}

struct work {
	pthread_mutex_t mu;
	pthread_barrier_t all;      /* every worker runs at once, or this never returns */
	unsigned ran;
	uint64_t sum;
};

static void *count_main(void *arg)
{
	struct work *w = arg;

	pthread_barrier_wait(&w->all);
	pthread_mutex_lock(&w->mu);
	w->ran++;
	w->sum += w->ran;
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void test_pool_runs_all(void)
{
	struct work w = { .ran = 0 };
	struct ic_pool p;

	pthread_mutex_init(&w.mu, NULL);
	pthread_barrier_init(&w.all, NULL, 8);
	CHECK_EQ(ic_pool_start(&p, 8, count_main, &w), 0);
	CHECK_EQ(p.n, 8);
	ic_pool_join(&p);
	CHECK_EQ(w.ran, 8);
	CHECK_EQ(w.sum, 36);
	CHECK_EQ(p.n, 0);
	CHECK(p.tids == NULL);
	ic_pool_join(&p);               /* twice is harmless */
	pthread_barrier_destroy(&w.all);
	pthread_mutex_destroy(&w.mu);
}

static void test_pool_empty(void)
{
	struct ic_pool p;

	CHECK_EQ(ic_pool_start(&p, 0, count_main, NULL), 0);
	CHECK_EQ(p.n, 0);
	ic_pool_join(&p);
}

/* A pool of workers sharing a queue the caller fills, as the cache's readahead does. */
struct queue {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned next, end, done;
	bool stop;
	uint64_t total;
};

static void *queue_main(void *arg)
{
	struct queue *q = arg;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (!q->stop && q->next == q->end)
			pthread_cond_wait(&q->cv, &q->mu);
		if (q->next == q->end)
			break;
		q->total += q->next++;
		q->done++;
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void test_pool_queue(void)
{
	struct queue q = { .next = 0 };
	struct ic_pool p;

	pthread_mutex_init(&q.mu, NULL);
	pthread_cond_init(&q.cv, NULL);
	CHECK_EQ(ic_pool_start(&p, ic_thread_cap(4, IC_THREADS_MAX), queue_main, &q), 0);
	for (unsigned i = 0; i < 1000; i++) {
		pthread_mutex_lock(&q.mu);
		q.end++;
		pthread_cond_signal(&q.cv);
		pthread_mutex_unlock(&q.mu);
	}
	pthread_mutex_lock(&q.mu);
	q.stop = true;
	pthread_cond_broadcast(&q.cv);
	pthread_mutex_unlock(&q.mu);
	ic_pool_join(&p);
	CHECK_EQ(q.done, 1000);
	CHECK_EQ(q.total, 999 * 1000 / 2);
	pthread_cond_destroy(&q.cv);
	pthread_mutex_destroy(&q.mu);
}

static void test_is_zero(void)
{
	static uint8_t b[4096 + 64];

	CHECK(ic_is_zero(b, 0));
	CHECK(ic_is_zero(b, sizeof(b)));
	for (size_t len = 1; len <= 200; len++) {
		for (size_t at = 0; at < len; at += 7) {
			b[at] = 0x80;
			CHECK(!ic_is_zero(b, len));
			CHECK(ic_is_zero(b + at + 1, len - at - 1));
			b[at] = 0;
		}
	}
	b[4095] = 1;
	CHECK(!ic_is_zero(b, 4096));
	CHECK(ic_is_zero(b, 4095));
	b[4095] = 0;
}

struct find_root {
	unsigned seen;
	bool root;
};

static int see_mount(const struct ic_mount_ent *m, void *arg)
{
	struct find_root *f = arg;

	f->seen++;
	CHECK(m->dev && m->mountpoint[0] == '/' && m->fstype[0] && m->super_options[0]);
	if (!strcmp(m->mountpoint, "/"))
		f->root = true;
	return 0;
}

static int stop_at_first(const struct ic_mount_ent *m, void *arg)
{
	(void)m;
	++*(unsigned *)arg;
	return 42;
}

static void test_mountinfo(void)
{
	struct find_root f = { 0 };
	unsigned calls = 0;

	if (access("/proc/self/mountinfo", R_OK) == 0) {
		CHECK_EQ(ic_mountinfo_each(see_mount, &f), 0);
		CHECK(f.seen > 0 && f.root);
		CHECK_EQ(ic_mountinfo_each(stop_at_first, &calls), 42);
		CHECK_EQ(calls, 1);
	}
	CHECK(ic_mount_opt_has("rw,discard,noatime", "discard"));
	CHECK(ic_mount_opt_has("discard", "discard"));
	CHECK(ic_mount_opt_has("rw,discard", "discard"));
	CHECK(!ic_mount_opt_has("rw,nodiscard", "discard"));
	CHECK(!ic_mount_opt_has("rw,discard=async", "discard"));
	CHECK(!ic_mount_opt_has("rw,discar", "discard"));
	CHECK(!ic_mount_opt_has("", "discard"));
}

int main(void)
{
	RUN(test_thread_cap);
	RUN(test_pool_runs_all);
	RUN(test_pool_empty);
	RUN(test_pool_queue);
	RUN(test_is_zero);
	RUN(test_mountinfo);
	UNIT_EXIT();
}
