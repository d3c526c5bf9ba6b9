/* ic_pool.h: worker threads: how many, started together, joined together.
 *
 * Each module keeps its own work distribution (the backup's ring of batches, the
 * restore's chunk counter, the cache's readahead queue), which its hot path needs
 * without an extra lock; what they share is the thread count and the start/join. */
#ifndef IC_POOL_H
#define IC_POOL_H

#include <pthread.h>

#define IC_THREADS_MAX 64u  /* the most workers a backup or restore runs (-j 1..64) */

/* Worker threads for a request: asked when > 0, else one per online CPU (2 when that
 * is unknown); then at least 1 and at most max (0: no upper bound). */
unsigned ic_thread_cap(int asked, unsigned max);

struct ic_pool {
	pthread_t *tids;
	unsigned n;                 /* threads running (to be joined) */
};

/* Start n threads, each running fn(arg).  0 when all started; else -errno of the first
 * failure, with p->n the threads that did start (they run and must be joined: the
 * caller decides whether fewer will do).  ic_pool_join is safe after any outcome. */
int ic_pool_start(struct ic_pool *p, unsigned n, void *(*fn)(void *), void *arg);
/* Join the threads started (the caller has told them to stop) and free the pool. */
void ic_pool_join(struct ic_pool *p);

#endif
