/* pool.c: a small fork-join thread pool.  tm_pool_run hands out task indices through an atomic
 * counter; the calling thread works too, so a pool of n threads starts n-1 pthreads. */
#include "engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct tm_pool {
	int nthreads;           /* including the caller */
	pthread_t *threads;     /* (nthreads - 1) */
	pthread_mutex_t mu;
	pthread_cond_t wake;    /* workers wait for a new generation */
	pthread_cond_t done;    /* the caller waits for all workers to finish */
	uint64_t generation;    /* bumped per tm_pool_run */
	int active;             /* workers still inside the current generation */
	bool stop;
	tm_task_fn fn;
	void *arg;
	int ntasks;
	atomic_int next;        /* next task index to hand out */
};

static void pool_drain(tm_pool *p)
{
	for (;;) {
		int i = atomic_fetch_add(&p->next, 1);
		if (i >= p->ntasks)
			return;
		p->fn(p->arg, i);
	}
}

static void *pool_worker(void *arg)
{
	tm_pool *p = arg;
	uint64_t seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->generation == seen)
			pthread_cond_wait(&p->wake, &p->mu);
		if (p->stop)
			break;
		seen = p->generation;
		pthread_mutex_unlock(&p->mu);
		pool_drain(p);
		pthread_mutex_lock(&p->mu);
		if (--p->active == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

tm_pool *tm_pool_new(int nthreads)
{
	if (nthreads < 1)
		nthreads = 1;
	tm_pool *p = tm_xcalloc(1, sizeof(*p));
	p->nthreads = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	pthread_cond_init(&p->done, NULL);
	p->threads = tm_xcalloc((size_t)nthreads, sizeof(pthread_t));
	for (int i = 0; i < nthreads - 1; i++) {
		if (pthread_create(&p->threads[i], NULL, pool_worker, p) != 0) {
			p->nthreads = i + 1;
			break;
		}
	}
	return p;
}

void tm_pool_free(tm_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->nthreads - 1; i++)
		pthread_join(p->threads[i], NULL);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->done);
	pthread_mutex_destroy(&p->mu);
	free(p->threads);
	free(p);
}

int tm_pool_threads(const tm_pool *p)
{
	return p ? p->nthreads : 1;
}

void tm_pool_run(tm_pool *p, int ntasks, tm_task_fn fn, void *arg)
{
	if (!p || p->nthreads == 1 || ntasks <= 1) {
		for (int i = 0; i < ntasks; i++)
			fn(arg, i);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = ntasks;
	atomic_store(&p->next, 0);
	p->active = p->nthreads - 1;
	p->generation++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	pool_drain(p);
	pthread_mutex_lock(&p->mu);
	while (p->active > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
