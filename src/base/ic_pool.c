/* ic_pool.c: worker threads started and joined together; the thread count. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "ic_pool.h"

unsigned ic_thread_cap(int asked, unsigned max)
{
	long ncpu;
	unsigned n;

	if (asked > 0) {
		n = (unsigned)asked;
	} else {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		n = ncpu > 0 ? (unsigned)ncpu : 2;
	}
	if (max && n > max)
		n = max;
	return n ? n : 1;
}

int ic_pool_start(struct ic_pool *p, unsigned n, void *(*fn)(void *), void *arg)
{
	p->n = 0;
	p->tids = calloc(n ? n : 1, sizeof(*p->tids));
	if (!p->tids)
		return -ENOMEM;
	for (; p->n < n; p->n++) {
		int r = pthread_create(&p->tids[p->n], NULL, fn, arg);

		if (r) {
			if (!p->n) {
				free(p->tids);
				p->tids = NULL;
			}
			return -r;
		}
	}
	return 0;
}

void ic_pool_join(struct ic_pool *p)
{
	for (unsigned i = 0; i < p->n; i++)
		pthread_join(p->tids[i], NULL);
	free(p->tids);
	p->tids = NULL;
	p->n = 0;
}
