/* ic_session_watch.c: the one watcher thread of a writable session.
 *
 * A served chain with an overlay directory answers two kinds of request that arrive as
 * files: a newcomer's release request in a held point directory (FORMAT.md 10.7,
 * ic_session_owner.c) and imgconsolidate's re-base request in the chain directory
 * (FORMAT.md 10.8, ic_rebase.c).  One thread polls both: every IC_WATCH_TICK_MS the
 * re-base side, every IC_WATCH_OWNER_TICKS ticks the release side.  Each works under the
 * session's locks as it did on a thread of its own; this file only owns the thread.
 * A read-only session has nothing to watch and starts no thread.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ic_rebase.h"
#include "ic_session.h"
#include "ic_util.h"

struct ic_swatch {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stop;
};

static void *watcher(void *arg)
{
	struct ic_session *s = arg;
	struct ic_swatch *w = s->watch;
	unsigned tick = 0;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += IC_WATCH_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->cond, &w->mu, &ts);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->mu);
		if (++tick % IC_WATCH_OWNER_TICKS == 0)
			ic_session_owner_poll(s);
		ic_rebase_tick(s);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int ic_session_watch_start(struct ic_session *s)
{
	struct ic_swatch *w;
	pthread_condattr_t ca;
	int ret;

	if (!s->o.overlay_dir || s->watch)
		return 0;
	/* a fork changed our pid: the records of what we already hold say so */
	ic_session_owner_adopt(s);
	ret = ic_rebase_init(s);
	if (ret)
		return ret;
	w = calloc(1, sizeof(*w));
	if (!w) {
		ic_rebase_fini(s);
		return ic_fail(-ENOMEM, "session watcher: %s", strerror(ENOMEM));
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->watch = w;
	ret = -pthread_create(&w->thread, NULL, watcher, s);
	if (ret) {
		s->watch = NULL;
		pthread_cond_destroy(&w->cond);
		pthread_mutex_destroy(&w->mu);
		free(w);
		ic_rebase_fini(s);
		return ic_fail(ret, "session watcher: %s", strerror(-ret));
	}
	return 0;
}

void ic_session_watch_stop(struct ic_session *s)
{
	struct ic_swatch *w = s->watch;

	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->mu);
	free(w);
	s->watch = NULL;
	ic_rebase_fini(s);
}
