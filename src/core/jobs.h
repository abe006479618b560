/*
 * jobs.h — a few threads that run blocking work off the HTTP pool: a request
 * that must wait for Dialpad suspends itself, queues a job here, and the job
 * answers and resumes it (http.h). Jobs run in the order queued, several at
 * once (one per thread).
 *
 * Threads: submit from any thread; start/stop from the main thread.
 */
#ifndef CTI_CORE_JOBS_H
#define CTI_CORE_JOBS_H

typedef struct cti_jobs cti_jobs_t;
typedef void (*cti_job_fn)(void *ud);

#define CTI_JOBS_QUEUE_MAX 1024

/* Starts n threads named name ("cti-jobs"). Never returns NULL. */
cti_jobs_t *cti_jobs_start(int n, const char *name);
/* Queues fn(ud). Returns 0, or CTI_ELIMIT (queue full) / CTI_EUNAVAILABLE
 * (stopping): fn is then not called and ud stays the caller's. */
int cti_jobs_submit(cti_jobs_t *j, cti_job_fn fn, void *ud);
/* Runs what is queued, waits for the threads, frees. NULL is ignored. */
void cti_jobs_stop(cti_jobs_t *j);

#endif
