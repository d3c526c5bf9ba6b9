/* ic_cons_check.c: the record checker of a consolidation target.
 *
 * The copier moves the bytes with copy_file_range (no read of ours); the checker reads
 * the same records and checks their XXH3-64, on the other core.  Every record is
 * checked before the step can commit: the copier waits for the checker at the end of
 * its pass, and a mismatch fails the step (the appended tail is cut by the rollback). */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ic_cons_int.h"
#include "ic_error.h"
#include "ic_image.h"
#include "ic_pool.h"

static void *checker_main(void *arg)
{
	struct checker *k = arg;

	pthread_mutex_lock(&k->mu);
	for (;;) {
		struct check_job *j;
		int ret;

		while (!k->head && !k->done)
			pthread_cond_wait(&k->cv, &k->mu);
		if (!k->head)
			break;
		j = k->head;
		k->head = j->next;
		if (!k->head)
			k->tail = &k->head;
		ret = k->err.code;
		pthread_mutex_unlock(&k->mu);
		if (!ret) {
			ret = ic_image_check_records(j->src, j->ents, j->n, k->buf, k->buflen);
			if (ret) {
				pthread_mutex_lock(&k->mu);
				ic_error_save(&k->err, ret);
				pthread_mutex_unlock(&k->mu);
			}
		}
		free(j);
		pthread_mutex_lock(&k->mu);
	}
	pthread_mutex_unlock(&k->mu);
	return NULL;
}

/* 0 and the thread running, or an error (the caller checks in line instead). */
int ic_checker_start(struct checker *k, size_t buflen)
{
	memset(k, 0, sizeof(*k));
	k->tail = &k->head;
	k->buflen = buflen;
	k->buf = malloc(buflen);
	if (!k->buf)
		return -ENOMEM;
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv, NULL);
	if (ic_pool_start(&k->pool, 1, checker_main, k)) {
		ic_pool_join(&k->pool);
		pthread_mutex_destroy(&k->mu);
		pthread_cond_destroy(&k->cv);
		free(k->buf);
		return -EAGAIN;
	}
	return 0;
}

/* Queue ents[0..n) of src; the checker's failure so far, if any (the copier stops). */
int ic_checker_push(struct checker *k, const struct ic_image *src,
			const struct icf_entry *ents, size_t n)
{
	struct check_job *j = malloc(sizeof(*j) + n * sizeof(*ents));
	int ret;

	if (!j)
		return -ENOMEM;
	j->next = NULL;
	j->src = src;
	j->n = n;
	memcpy(j->ents, ents, n * sizeof(*ents));
	pthread_mutex_lock(&k->mu);
	*k->tail = j;
	k->tail = &j->next;
	ret = ic_error_raise(&k->err);
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	return ret;
}

/* No more jobs: wait until every queued record was checked.  The first failure. */
int ic_checker_finish(struct checker *k)
{
	int ret;

	pthread_mutex_lock(&k->mu);
	k->done = true;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
	ic_pool_join(&k->pool);
	ret = ic_error_raise(&k->err);
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->cv);
	free(k->buf);
	return ret;
}
