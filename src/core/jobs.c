/* jobs.c — see jobs.h. A mutex and a condition variable guard the queue. */
#include "core/jobs.h"
#include "core/common.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct job {
    struct job *next;
    cti_job_fn fn;
    void *ud;
} job_t;

struct cti_jobs {
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    job_t *head, *tail;
    int queued;
    bool stopping;
    int n;
    pthread_t *threads;
    char name[16];
};

static void *run(void *arg)
{
    cti_jobs_t *j = arg;
    pthread_setname_np(pthread_self(), j->name);
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->head && !j->stopping)
            pthread_cond_wait(&j->cv, &j->mu);
        job_t *job = j->head;
        if (!job)
            break; /* stopping, and nothing left */
        j->head = job->next;
        if (!j->head)
            j->tail = NULL;
        j->queued--;
        pthread_mutex_unlock(&j->mu);
        job->fn(job->ud);
        free(job);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

cti_jobs_t *cti_jobs_start(int n, const char *name)
{
    cti_jobs_t *j = cti_calloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    snprintf(j->name, sizeof j->name, "%s", name);
    j->n = n < 1 ? 1 : n;
    j->threads = cti_calloc((size_t)j->n, sizeof *j->threads);
    for (int i = 0; i < j->n; i++)
        if (pthread_create(&j->threads[i], NULL, run, j) != 0)
            cti_fatal("jobs: cannot start a thread");
    return j;
}

int cti_jobs_submit(cti_jobs_t *j, cti_job_fn fn, void *ud)
{
    pthread_mutex_lock(&j->mu);
    int rc = j->stopping ? CTI_EUNAVAILABLE : j->queued >= CTI_JOBS_QUEUE_MAX ? CTI_ELIMIT : 0;
    if (rc == 0) {
        job_t *job = cti_malloc(sizeof *job);
        *job = (job_t){NULL, fn, ud};
        if (j->tail)
            j->tail->next = job;
        else
            j->head = job;
        j->tail = job;
        j->queued++;
        pthread_cond_signal(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void cti_jobs_stop(cti_jobs_t *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < j->n; i++)
        pthread_join(j->threads[i], NULL);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->threads);
    free(j);
}
