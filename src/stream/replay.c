/* replay.c — see replay.h. One thread, its own connection; never touches a socket. */
#include "stream/replay.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "repo/events.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICK_MS 1000

struct cti_replayer {
    cti_store_t *store;
    cti_db_t *db;
    cti_replay_done_fn done;
    cti_replay_tick_fn tick;
    void *ud;
    pthread_t thread;
    pthread_mutex_t lock; /* protects jobs, tail, stop */
    pthread_cond_t cond;
    cti_replay_job_t *jobs, *tail;
    bool stop;
};

cti_replay_plan_t cti_replay_plan(int64_t oldest, int64_t newest, int64_t since)
{
    assert(since >= 0 && oldest >= 0 && newest >= oldest);
    if (since >= newest) /* at the head, or ahead of it: nothing yet */
        return CTI_REPLAY_NONE;
    /* here since < newest, so neither subtraction below can overflow */
    if ((oldest && since < oldest - 1) || newest - since > CTI_WS_REPLAY_MAX)
        return CTI_REPLAY_RESET;
    return CTI_REPLAY_FROM;
}

void cti_replay_job_free(cti_replay_job_t *job)
{
    if (!job)
        return;
    for (int i = 0; i < job->n; i++)
        cti_msg_unref(job->msgs[i]);
    free(job->msgs);
    free(job);
}

typedef struct {
    cti_replay_job_t *job;
    size_t bytes;
} page_t;

static int add_row(int64_t seq, const char *body, void *ud)
{
    page_t *p = ud;
    cti_msg_t *m = cti_msg_event(p->job->app_id, seq, body);
    p->job->msgs[p->job->n++] = m;
    p->bytes += m->frame_len;
    return p->bytes >= CTI_REPLAY_PAGE_BYTES; /* a full page: stop here */
}

static void read_page(cti_db_t *db, cti_replay_job_t *job)
{
    page_t p = {job, 0};
    job->msgs = cti_calloc(CTI_REPLAY_PAGE_EVENTS, sizeof *job->msgs);
    int rc = cti_eventlog_since(db, job->app_id, job->from, CTI_REPLAY_PAGE_EVENTS, add_row, &p);
    job->rc = rc < 0 ? rc : 0;
    job->more = job->n == CTI_REPLAY_PAGE_EVENTS || p.bytes >= CTI_REPLAY_PAGE_BYTES;
}

static void run_job(cti_db_t *db, cti_replay_job_t *job)
{
    if (job->start) {
        int64_t oldest, newest;
        job->rc = cti_eventlog_bounds(db, job->app_id, &oldest, &newest);
        if (job->rc != 0)
            return;
        job->newest = newest;
        job->plan = cti_replay_plan(oldest, newest, job->from);
        if (job->plan != CTI_REPLAY_FROM)
            return;
    }
    read_page(db, job);
    if (job->rc != 0)
        cti_log(CTI_LOG_WARN, NULL, "ws: could not read the event log for a replay",
                CTI_LS("app_id", job->app_id), CTI_LS("error", cti_db_errmsg(db)));
}

static void *replay_main(void *arg)
{
    cti_replayer_t *r = arg;
    int64_t next_tick = cti_mono_ms() + TICK_MS;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        cti_replay_job_t *job = r->jobs;
        if (job) {
            r->jobs = job->next;
            if (!r->jobs)
                r->tail = NULL;
            pthread_mutex_unlock(&r->lock);
            job->next = NULL;
            run_job(r->db, job);
            r->done(job, r->ud);
            pthread_mutex_lock(&r->lock);
        }
        int64_t now = cti_mono_ms();
        if (now >= next_tick) {
            pthread_mutex_unlock(&r->lock);
            if (r->tick)
                r->tick(r->db, r->ud);
            next_tick = cti_mono_ms() + TICK_MS;
            pthread_mutex_lock(&r->lock);
            continue;
        }
        if (!r->jobs && !r->stop) {
            struct timespec ts = cti_mono_deadline(next_tick - now);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        }
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

cti_replayer_t *cti_replayer_start(cti_store_t *store, cti_replay_done_fn done,
                                   cti_replay_tick_fn tick, void *ud)
{
    cti_replayer_t *r = cti_calloc(1, sizeof *r);
    r->store = store;
    r->done = done;
    r->tick = tick;
    r->ud = ud;
    pthread_mutex_init(&r->lock, NULL);
    cti_cond_init_mono(&r->cond);
    if (store && cti_store_connect(store, &r->db) != 0)
        cti_log_msg(CTI_LOG_WARN, NULL,
                    "ws: the replay worker could not connect yet; it retries on use");
    if (pthread_create(&r->thread, NULL, replay_main, r) != 0)
        cti_fatal("cannot start the WebSocket replay thread");
    pthread_setname_np(r->thread, "cti-replay"); /* shown by top -H, ps -L */
    return r;
}

void cti_replayer_submit(cti_replayer_t *r, cti_replay_job_t *job)
{
    job->next = NULL;
    pthread_mutex_lock(&r->lock);
    if (r->tail)
        r->tail->next = job;
    else
        r->jobs = job;
    r->tail = job;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

void cti_replayer_stop(cti_replayer_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    while (r->jobs) { /* their sockets are waiting for an answer to be freed */
        cti_replay_job_t *job = r->jobs;
        r->jobs = job->next;
        job->next = NULL;
        job->rc = CTI_ELIMIT;
        r->done(job, r->ud);
    }
    if (r->db)
        cti_db_close(r->db);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}
