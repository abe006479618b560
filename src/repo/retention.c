/* retention.c — see retention.h. The purger thread owns its own connection. */
#include "repo/retention.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "repo/dialpad.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

/* ---- batches ------------------------------------------------------------------------ */

typedef struct {
    int64_t *ids;
    int n, rows;
    int64_t cutoff, last_id;
    bool young; /* a row not old enough was seen: the walk ends there */
} rawwalk_t;

static int raw_row(const cti_row_t *row, void *ud)
{
    rawwalk_t *w = ud;
    w->rows++;
    if (cti_row_int(row, 1) >= w->cutoff) {
        w->young = true;
        return 1; /* the walk ends here: read no further */
    }
    w->last_id = cti_row_int(row, 0);
    if (cti_row_int(row, 2) != 0) /* pending events are never purged */
        w->ids[w->n++] = w->last_id;
    return 0;
}

/* DELETE ... WHERE <head> IN (ids) [tail], n ids after the fixed parameters. */
static int delete_ids(cti_db_t *db, const char *head, const cti_sql_val_t *fixed, int nfixed,
                      const int64_t *ids, int n)
{
    if (n == 0)
        return 0;
    cti_sql_val_t *list = cti_malloc((size_t)n * sizeof *list);
    for (int i = 0; i < n; i++)
        list[i] = CTI_SQL_INT(ids[i]);
    int rc = cti_db_exec_in(db, head, "", fixed, nfixed, list, n, NULL, NULL);
    free(list);
    return rc < 0 ? rc : 0;
}

int cti_purge_raw_events(cti_db_t *db, int64_t cutoff, int batch, int64_t *after_id,
                         int64_t *deleted, bool *done)
{
    rawwalk_t w = {
        .ids = cti_malloc((size_t)batch * sizeof(int64_t)), .cutoff = cutoff, .last_id = *after_id};
    cti_sql_val_t p[] = {CTI_SQL_INT(*after_id), CTI_SQL_INT(batch)};
    /* ids grow with received_at: the oldest come first in the primary key, and
     * the walk stops at the first row not old enough (no index on the time) */
    int rc = cti_db_exec(db,
                         "SELECT id, received_at, status FROM raw_events WHERE id > $1 "
                         "ORDER BY id LIMIT $2",
                         p, 2, raw_row, &w);
    *deleted = 0;
    if (rc >= 0)
        rc = delete_ids(db, "DELETE FROM raw_events WHERE id IN", NULL, 0, w.ids, w.n);
    if (rc >= 0)
        *deleted = w.n;
    *done = w.young || w.rows < batch;
    *after_id = w.last_id;
    free(w.ids);
    return rc < 0 ? rc : 0;
}

int cti_purge_call_events(cti_db_t *db, int64_t cutoff, int batch, int64_t *deleted)
{
    cti_sql_val_t p[] = {CTI_SQL_INT(cutoff), CTI_SQL_INT(batch)};
    return cti_db_exec_count(db,
                             "DELETE FROM call_events WHERE (app_id, call_id, event_timestamp, "
                             "state) IN (SELECT app_id, call_id, event_timestamp, state FROM "
                             "call_events WHERE received_at < $1 ORDER BY received_at LIMIT $2) "
                             "RETURNING 1",
                             p, 2, deleted);
}

int cti_purge_deliveries(cti_db_t *db, int64_t cutoff, int batch, int64_t *deleted)
{
    cti_sql_val_t p[] = {CTI_SQL_INT(cutoff), CTI_SQL_INT(batch)};
    return cti_db_exec_count(db,
                             "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM "
                             "webhook_deliveries WHERE created_at < $1 AND status <> 0 ORDER BY "
                             "created_at LIMIT $2) RETURNING 1",
                             p, 2, deleted);
}

typedef struct {
    int64_t cutoff, upto;
    int rows, batch;
    bool young;
} logwalk_t;

static int log_row(const cti_row_t *row, void *ud)
{
    logwalk_t *w = ud;
    if (++w->rows > w->batch) /* the extra row only says the log goes on */
        return 1;
    if (cti_row_int(row, 1) >= w->cutoff) {
        w->young = true;
        return 1; /* an app with nothing old costs one row */
    }
    w->upto = cti_row_int(row, 0);
    return 0;
}

int cti_purge_event_log(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                        int64_t *deleted)
{
    logwalk_t w = {.cutoff = cutoff, .batch = batch};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(batch + 1)};
    *deleted = 0;
    /* one more row than the batch: when the walk reaches the log's end, the
     * newest row stays (it keeps the log's oldest seq honest; retention.h) */
    int rc = cti_db_exec(db,
                         "SELECT seq, created_at FROM event_log WHERE app_id = $1 "
                         "ORDER BY seq LIMIT $2",
                         p, 2, log_row, &w);
    if (rc < 0 || w.upto == 0)
        return rc < 0 ? rc : 0;
    if (!w.young && w.rows <= batch) { /* every row old: keep the newest */
        if (w.rows <= 1)
            return 0;
        w.upto--; /* seqs are gapless: the row before the newest */
    }
    cti_sql_val_t d[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(w.upto)};
    return cti_db_exec_count(db,
                             "DELETE FROM event_log WHERE app_id = $1 AND seq <= $2 "
                             "RETURNING 1",
                             d, 2, deleted);
}

typedef struct {
    int64_t *ids;
    int n;
} idlist_t;

static int add_id(const cti_row_t *row, void *ud)
{
    idlist_t *l = ud;
    l->ids[l->n++] = cti_row_int(row, 0);
    return 0;
}

int cti_purge_calls(cti_db_t *db, const char *app_id, int64_t cutoff, int batch, int64_t *deleted)
{
    assert(cti_db_in_tx(db)); /* a call and its timeline go together */
    idlist_t l = {.ids = cti_malloc((size_t)batch * sizeof(int64_t))};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(cutoff), CTI_SQL_INT(batch)};
    int rc = cti_db_exec(db,
                         "SELECT call_id FROM calls WHERE app_id = $1 AND sort_at < $2 "
                         "ORDER BY sort_at LIMIT $3",
                         p, 3, add_id, &l);
    if (rc >= 0)
        rc = delete_ids(db, "DELETE FROM call_events WHERE app_id = $1 AND call_id IN", p, 1, l.ids,
                        l.n);
    if (rc >= 0)
        rc = delete_ids(db, "DELETE FROM calls WHERE app_id = $1 AND call_id IN", p, 1, l.ids, l.n);
    *deleted = rc >= 0 ? l.n : 0;
    free(l.ids);
    return rc < 0 ? rc : 0;
}

int cti_purge_voicemails(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                         int64_t *deleted)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(cutoff), CTI_SQL_INT(batch)};
    return cti_db_exec_count(db,
                             "DELETE FROM voicemails WHERE app_id = $1 AND call_id IN (SELECT "
                             "call_id FROM voicemails WHERE app_id = $1 AND created_at < $2 "
                             "ORDER BY created_at LIMIT $3) RETURNING 1",
                             p, 3, deleted);
}

typedef struct {
    int64_t *ids;
    char **from, **to; /* copies: the deletes run after the SELECT has ended */
    int n;
} msglist_t;

static int message_row(const cti_row_t *row, void *ud)
{
    msglist_t *l = ud;
    l->ids[l->n] = cti_row_int(row, 0);
    l->from[l->n] = cti_row_is_null(row, 1) ? NULL : cti_strdup(cti_row_text(row, 1));
    l->to[l->n] = cti_strdup(cti_row_is_null(row, 2) ? "[]" : cti_row_text(row, 2));
    l->n++;
    return 0;
}

static int unindex_number(cti_db_t *db, const char *app_id, const char *number, int64_t id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(number), CTI_SQL_INT(id)};
    return cti_db_exec(db,
                       "DELETE FROM message_numbers WHERE app_id = $1 AND number = $2 AND "
                       "message_id = $3",
                       p, 3, NULL, NULL);
}

/* A message's numbers: the from and to numbers it was indexed by (repo/calls.c). */
static int unindex_message(cti_db_t *db, const char *app_id, const msglist_t *l, int k)
{
    int rc = l->from[k] && l->from[k][0] ? unindex_number(db, app_id, l->from[k], l->ids[k]) : 0;
    json_t *to = json_loads(l->to[k], 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(to, i, v)
    {
        if (rc >= 0 && json_is_string(v))
            rc = unindex_number(db, app_id, json_string_value(v), l->ids[k]);
    }
    json_decref(to);
    return rc;
}

int cti_purge_messages(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                       int64_t *deleted)
{
    assert(cti_db_in_tx(db)); /* a message and its numbers go together */
    size_t cap = (size_t)batch;
    msglist_t l = {.ids = cti_malloc(cap * sizeof *l.ids),
                   .from = cti_calloc(cap, sizeof(char *)),
                   .to = cti_calloc(cap, sizeof(char *))};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(cutoff), CTI_SQL_INT(batch)};
    int rc = cti_db_exec(db,
                         "SELECT message_id, from_number, to_numbers FROM messages WHERE "
                         "app_id = $1 AND created_at < $2 ORDER BY created_at LIMIT $3",
                         p, 3, message_row, &l);
    for (int k = 0; rc >= 0 && k < l.n; k++)
        rc = unindex_message(db, app_id, &l, k);
    if (rc >= 0)
        rc = delete_ids(db, "DELETE FROM messages WHERE app_id = $1 AND message_id IN", p, 1, l.ids,
                        l.n);
    *deleted = rc >= 0 ? l.n : 0;
    for (int k = 0; k < l.n; k++) {
        free(l.from[k]);
        free(l.to[k]);
    }
    free(l.ids);
    free(l.from);
    free(l.to);
    return rc < 0 ? rc : 0;
}

/* ---- a whole purge ------------------------------------------------------------------ */

#define LEASE_NAME   "retention"
#define LEASE_TTL_MS 300000 /* renewed every batch: a holder silent this long died */

typedef enum { P_RAW, P_TIMELINES, P_DELIVERIES, P_LOG, P_CALLS, P_VOICEMAILS, P_MESSAGES } part_t;

typedef struct {
    cti_db_t *db;
    int batch;
    atomic_bool *stop;
    const char *owner; /* the lease's holder, renewed every batch; NULL: no lease */
    cti_purged_t *out;
} run_t;

/* One batch of part in its own transaction. */
static int one_batch(run_t *r, part_t part, const char *app, int64_t cutoff, int64_t *after,
                     int64_t *deleted, bool *done)
{
    int rc = r->owner ? cti_lease_take(r->db, LEASE_NAME, r->owner, cti_now_ms(), LEASE_TTL_MS) : 0;
    if (rc == 0)
        rc = cti_db_begin(r->db);
    if (rc != 0)
        return rc;
    *done = false;
    switch (part) {
    case P_RAW:
        rc = cti_purge_raw_events(r->db, cutoff, r->batch, after, deleted, done);
        break;
    case P_TIMELINES:
        rc = cti_purge_call_events(r->db, cutoff, r->batch, deleted);
        break;
    case P_DELIVERIES:
        rc = cti_purge_deliveries(r->db, cutoff, r->batch, deleted);
        break;
    case P_LOG:
        rc = cti_purge_event_log(r->db, app, cutoff, r->batch, deleted);
        break;
    case P_CALLS:
        rc = cti_purge_calls(r->db, app, cutoff, r->batch, deleted);
        break;
    case P_VOICEMAILS:
        rc = cti_purge_voicemails(r->db, app, cutoff, r->batch, deleted);
        break;
    case P_MESSAGES:
        rc = cti_purge_messages(r->db, app, cutoff, r->batch, deleted);
        break;
    }
    if (rc < 0) {
        cti_db_rollback(r->db);
        return rc;
    }
    rc = cti_db_commit(r->db);
    if (part != P_RAW)
        *done = *deleted < r->batch;
    if (rc == 0)
        cti_counter_add(&cti_metrics.retention_purged, (uint64_t)*deleted);
    return rc;
}

/* Batches of part until it is done (or stop); adds to *count. */
static int purge_part(run_t *r, part_t part, const char *app, int64_t cutoff, int64_t *count)
{
    int64_t after = 0, deleted = 0;
    bool done = false;
    int rc = 0;
    while (!done && rc == 0 && !(r->stop && atomic_load(r->stop))) {
        rc = one_batch(r, part, app, cutoff, &after, &deleted, &done);
        *count += rc == 0 ? deleted : 0;
    }
    return rc;
}

typedef struct {
    char (*ids)[37];
    int n;
} apps_t;

static int add_app(const cti_row_t *row, void *ud)
{
    apps_t *a = ud;
    a->ids = cti_realloc(a->ids, (size_t)(a->n + 1) * sizeof *a->ids);
    snprintf(a->ids[a->n++], sizeof a->ids[0], "%s", cti_row_text(row, 0));
    return 0;
}

static int purge_apps(run_t *r, int64_t now_ms, int days, int calls_days)
{
    apps_t a = {0};
    int rc = cti_db_exec(r->db, "SELECT app_id FROM app_seq UNION SELECT id FROM apps", NULL, 0,
                         add_app, &a);
    rc = rc < 0 ? rc : 0;
    int64_t cut = now_ms - days * CTI_DAY_MS, calls_cut = now_ms - calls_days * CTI_DAY_MS;
    for (int i = 0; rc == 0 && i < a.n; i++) {
        const char *app = a.ids[i];
        if (days)
            rc = purge_part(r, P_LOG, app, cut, &r->out->event_log);
        if (rc == 0 && calls_days)
            rc = purge_part(r, P_CALLS, app, calls_cut, &r->out->calls);
        if (rc == 0 && calls_days)
            rc = purge_part(r, P_VOICEMAILS, app, calls_cut, &r->out->voicemails);
        if (rc == 0 && calls_days)
            rc = purge_part(r, P_MESSAGES, app, calls_cut, &r->out->messages);
    }
    free(a.ids);
    return rc;
}

static int run(run_t *r, int64_t now_ms, int days, int calls_days)
{
    int rc = 0;
    int64_t cut = now_ms - days * CTI_DAY_MS;
    if (days)
        rc = purge_part(r, P_RAW, NULL, cut, &r->out->raw_events);
    if (rc == 0 && days)
        rc = purge_part(r, P_TIMELINES, NULL, cut, &r->out->call_events);
    if (rc == 0 && days)
        rc = purge_part(r, P_DELIVERIES, NULL, cut, &r->out->deliveries);
    if (rc == 0 && (days || calls_days))
        rc = purge_apps(r, now_ms, days, calls_days);
    return rc;
}

int cti_retention_run(cti_db_t *db, int64_t now_ms, int days, int calls_days, int batch,
                      atomic_bool *stop, cti_purged_t *out)
{
    run_t r = {.db = db, .batch = batch, .stop = stop, .out = out};
    return run(&r, now_ms, days, calls_days);
}

/* ---- the purger thread ---------------------------------------------------------------- */

struct cti_purger {
    cti_store_t *st;
    cti_db_t *db;
    int days, calls_days, tick_ms;
    int64_t wall0_ms, mono0_ms; /* the clocks at the start (cti_retention_clock) */
    bool warned;                /* the wall clock's step was logged */
    char owner[37];
    atomic_bool stop;
    pthread_mutex_t lock; /* with wake: the stop signal */
    pthread_cond_t wake;
    pthread_t thread;
};

static int64_t purged_total(const cti_purged_t *p)
{
    return p->raw_events + p->call_events + p->event_log + p->calls + p->voicemails + p->messages +
           p->deliveries;
}

/* SQLite files made with auto_vacuum=INCREMENTAL give freed pages back (a no-op otherwise). */
static void give_back_pages(cti_purger_t *p)
{
    if (strcmp(cti_store_backend(p->st), "sqlite") != 0)
        return;
    int rc = cti_db_script(p->db, "PRAGMA incremental_vacuum(2000)");
    if (rc != 0)
        cti_log(CTI_LOG_WARN, NULL, "retention: incremental_vacuum failed",
                CTI_LS("error", cti_db_errmsg(p->db)));
}

int64_t cti_retention_clock(int64_t wall_ms, int64_t wall0_ms, int64_t mono_ms, int64_t mono0_ms)
{
    int64_t trusted = wall0_ms + (mono_ms - mono0_ms);
    return wall_ms < trusted ? wall_ms : trusted;
}

/* The purge's now (cti_retention_clock); logs a forward step once. */
static int64_t purge_now(cti_purger_t *p)
{
    int64_t wall = cti_now_ms(),
            now = cti_retention_clock(wall, p->wall0_ms, cti_mono_ms(), p->mono0_ms);
    bool stepped = wall - now > 60000;
    if (stepped && !p->warned)
        cti_log(CTI_LOG_WARN, NULL,
                "retention: the wall clock moved ahead of the time elapsed since the start; "
                "purging by the elapsed time (restart to adopt the new clock)",
                CTI_LI("ahead_ms", wall - now));
    p->warned = stepped;
    return now;
}

static void purge_once(cti_purger_t *p)
{
    int rc = cti_lease_take(p->db, LEASE_NAME, p->owner, cti_now_ms(), LEASE_TTL_MS);
    if (rc == CTI_ELIMIT)
        return; /* another instance is purging */
    cti_purged_t got = {0};
    run_t r = {.db = p->db,
               .batch = CTI_RETENTION_BATCH,
               .stop = &p->stop,
               .owner = p->owner,
               .out = &got};
    if (rc == 0)
        rc = run(&r, purge_now(p), p->days, p->calls_days);
    cti_lease_release(p->db, LEASE_NAME, p->owner);
    if (rc == CTI_ELIMIT)
        rc = 0; /* the lease was lost mid-way (a long stall): another instance goes on */
    if (rc != 0)
        cti_log(CTI_LOG_WARN, NULL, "retention: purge stopped by a store error",
                CTI_LS("error", cti_strerror(rc)), CTI_LS("detail", cti_db_errmsg(p->db)));
    else
        cti_counter_add(&cti_metrics.retention_runs, 1);
    if (purged_total(&got) > 0) {
        give_back_pages(p);
        cti_log(CTI_LOG_INFO, NULL, "retention: purged", CTI_LI("raw_events", got.raw_events),
                CTI_LI("call_events", got.call_events), CTI_LI("event_log", got.event_log),
                CTI_LI("calls", got.calls), CTI_LI("voicemails", got.voicemails),
                CTI_LI("messages", got.messages), CTI_LI("webhook_deliveries", got.deliveries));
    }
}

static void *purger_main(void *arg)
{
    cti_purger_t *p = arg;
    pthread_setname_np(pthread_self(), "cti-purger");
    pthread_mutex_lock(&p->lock);
    while (!atomic_load(&p->stop)) {
        struct timespec ts = cti_mono_deadline(p->tick_ms);
        pthread_cond_timedwait(&p->wake, &p->lock, &ts);
        if (atomic_load(&p->stop))
            break;
        pthread_mutex_unlock(&p->lock);
        purge_once(p);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

cti_purger_t *cti_purger_start(cti_store_t *st, int days, int calls_days, int tick_ms)
{
    if (!days && !calls_days)
        return NULL;
    cti_purger_t *p = cti_calloc(1, sizeof *p);
    p->st = st;
    p->days = days;
    p->calls_days = calls_days;
    p->tick_ms = tick_ms > 0 ? tick_ms : 60000;
    p->wall0_ms = cti_now_ms();
    p->mono0_ms = cti_mono_ms();
    cti_uuid4(p->owner);
    cti_store_connect(st, &p->db); /* reconnects on use when the database is down now */
    pthread_mutex_init(&p->lock, NULL);
    cti_cond_init_mono(&p->wake);
    if (pthread_create(&p->thread, NULL, purger_main, p) != 0)
        cti_fatal("retention: cannot start the purger thread");
    return p;
}

void cti_purger_stop(cti_purger_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    cti_db_close(p->db);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
