/*
 * replay.h — reading the event log for WebSockets, off the hub threads.
 *
 * The window rule (cti_replay_plan) decides how a stream whose client has
 * everything up to `since` starts; the /ws handler (connect) and the replay
 * worker (subscribe with since) both use it.
 *
 * The replay worker is one thread (`cti-replay`) with its own database
 * connection and a FIFO of jobs. A job reads one page of an app's events
 * (seq > from; at most CTI_REPLAY_PAGE_EVENTS events or about
 * CTI_REPLAY_PAGE_BYTES of frames), framed as the hub sends them, and is
 * handed back through the done callback; a hub thread asks for the next page
 * only when its socket's queue has drained below the low-water mark, so a
 * socket holds about one page of replay whatever `since` it asked for. A
 * start job (subscribe with since) first reads the log's bounds and applies
 * the window rule. Once a second the worker also calls the tick callback
 * with its connection (the hub checks the credentials of its sockets there).
 *
 * Threads: submit from any thread; done and tick run on the worker.
 */
#ifndef CTI_STREAM_REPLAY_H
#define CTI_STREAM_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "stream/msgq.h"

#define CTI_WS_REPLAY_MAX      10000        /* further behind than this: reset */
#define CTI_REPLAY_PAGE_EVENTS 256          /* events read per page */
#define CTI_REPLAY_PAGE_BYTES  (256 * 1024) /* ... or about this many frame bytes */

typedef enum {
    CTI_REPLAY_NONE,  /* nothing to replay: since is at or ahead of the newest seq */
    CTI_REPLAY_FROM,  /* replay every event with seq > since */
    CTI_REPLAY_RESET, /* since is older than the log keeps or over CTI_WS_REPLAY_MAX behind:
                         send {"type":"reset"} and start after the newest */
} cti_replay_plan_t;

/* The window rule. oldest/newest: the app's oldest and newest seq in the log
 * (0 when it has none); since >= 0, up to INT64_MAX. */
cti_replay_plan_t cti_replay_plan(int64_t oldest, int64_t newest, int64_t since);

typedef struct cti_replay_job {
    /* in (the submitter's) */
    void *ws;     /* whom it is for (opaque here) */
    uint64_t gen; /* the submitter's replay generation, given back as is */
    bool start;   /* read the bounds and apply the window rule first */
    char app_id[37];
    int64_t from; /* events with seq > from */
    /* out */
    int rc; /* 0; a CTI_E* of the store; CTI_ELIMIT when not read (worker stopping) */
    cti_replay_plan_t plan; /* start jobs: what the window rule said */
    int64_t newest;         /* start jobs: the app's newest seq */
    cti_msg_t **msgs;       /* the page in seq order, a reference each (the job's) */
    int n;
    bool more; /* the page is full: the log may hold more after it */
    struct cti_replay_job *next;
} cti_replay_job_t;

/* Takes over the job (free it with cti_replay_job_free). */
typedef void (*cti_replay_done_fn)(cti_replay_job_t *job, void *ud);
typedef void (*cti_replay_tick_fn)(cti_db_t *db, void *ud);
typedef struct cti_replayer cti_replayer_t;

cti_replayer_t *cti_replayer_start(cti_store_t *store, cti_replay_done_fn done,
                                   cti_replay_tick_fn tick, void *ud);
/* Queues a job (the worker owns it until done hands it back). */
void cti_replayer_submit(cti_replayer_t *r, cti_replay_job_t *job);
/* Stops the thread; jobs it had not read are handed to done with CTI_ELIMIT. */
void cti_replayer_stop(cti_replayer_t *r);
/* Frees a job and drops the references of its page. */
void cti_replay_job_free(cti_replay_job_t *job);

#endif
