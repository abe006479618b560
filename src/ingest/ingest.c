/* ingest.c — the worker: group commit, then processing. See ingest.h. */
#include "ingest/ingest.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "repo/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_TICK_MS 500 /* how often pending events (retries coming due) are looked for */

struct cti_ingest {
    cti_store_t *store;
    cti_db_t *db; /* the worker's own connection */
    cti_publish_fn publish;
    void *publish_ud;
    pthread_t thread;
    pthread_mutex_t lock; /* protects everything below */
    pthread_cond_t cond;
    cti_ingest_item_t *queue; /* ring of CTI_INGEST_QUEUE_MAX */
    int head, count;
    size_t bytes;
    bool wake, stopping;
    /* worker only: events stored so far, and when to refresh planner statistics
     * (on a thread of its own, so the worker never waits for ANALYZE) */
    int64_t stored, analyze_at;
    pthread_t analyzer;
    bool analyzer_started;
    atomic_bool analyzing;
    _Atomic int64_t store_failed_ms; /* when the last group commit failed (monotonic); 0: it worked */
};

int64_t cti_ingest_store_failed_at(cti_ingest_t *ing)
{
    return atomic_load(&ing->store_failed_ms);
}

int cti_ingest_submit(cti_ingest_t *ing, cti_ingest_item_t *item)
{
    size_t len = strlen(item->payload);
    pthread_mutex_lock(&ing->lock);
    if (ing->stopping || ing->count == CTI_INGEST_QUEUE_MAX ||
        ing->bytes + len > CTI_INGEST_QUEUE_BYTES) {
        pthread_mutex_unlock(&ing->lock);
        free(item->payload);
        cti_jdoc_free(&item->doc);
        item->payload = NULL;
        return CTI_ELIMIT;
    }
    ing->queue[(ing->head + ing->count) % CTI_INGEST_QUEUE_MAX] = *item;
    ing->count++;
    ing->bytes += len;
    pthread_cond_signal(&ing->cond);
    pthread_mutex_unlock(&ing->lock);
    item->payload = NULL;
    memset(&item->doc, 0, sizeof item->doc);
    return 0;
}

/* ---- the server's own events ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, duplicate;
    int status;
} waiter_t;

static void waiter_done(void *ctx, int status, bool duplicate)
{
    waiter_t *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->status = status;
    w->duplicate = duplicate;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Parses and submits item (its payload set; classified by the caller after
 * parsing, through classify) and waits until it is stored. */
static int submit_wait(cti_ingest_t *ing, cti_ingest_item_t *item,
                       void (*classify)(cti_ingest_item_t *, const void *), const void *arg,
                       bool *duplicate)
{
    if (cti_jdoc_parse(&item->doc, item->payload, strlen(item->payload), NULL, 0) != 0) {
        free(item->payload);
        return CTI_EINVAL;
    }
    classify(item, arg);
    waiter_t w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    item->done = waiter_done;
    item->ctx = &w;
    int rc = cti_ingest_submit(ing, item);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (duplicate)
        *duplicate = w.duplicate;
    return w.status == 200 ? 0 : CTI_EUNAVAILABLE;
}

static void as_server(cti_ingest_item_t *item, const void *arg)
{
    cti_ev_classify_server(&item->doc, &item->info);
}

int cti_ingest_server_event(cti_ingest_t *ing, const char *app_id, const char *name,
                            json_t *data)
{
    char id[37];
    cti_uuid4(id);
    json_t *ev = json_pack("{s:s, s:s, s:I, s:o}", "event", name, "id", id, "occurred_at",
                           (json_int_t)cti_now_ms(), "data", data);
    cti_ingest_item_t item = {.payload = json_dumps(ev, JSON_COMPACT), .received_at = cti_now_ms()};
    json_decref(ev);
    snprintf(item.app_id, sizeof item.app_id, "%s", app_id);
    return submit_wait(ing, &item, as_server, NULL, NULL);
}

static void as_reconciled(cti_ingest_item_t *item, const void *arg)
{
    cti_ev_classify(&item->doc, item->payload, strlen(item->payload), &item->info);
    snprintf(item->info.dedupe_key, sizeof item->info.dedupe_key, "%s", (const char *)arg);
}

int cti_ingest_reconciled(cti_ingest_t *ing, const char *app_id, char *payload,
                          const char *dedupe_key, bool *duplicate)
{
    cti_ingest_item_t item = {.payload = payload, .received_at = cti_now_ms(), .reconciled = true};
    snprintf(item.app_id, sizeof item.app_id, "%s", app_id);
    return submit_wait(ing, &item, as_reconciled, dedupe_key, duplicate);
}

int cti_ingest_queued(cti_ingest_t *ing)
{
    pthread_mutex_lock(&ing->lock);
    int n = ing->count;
    pthread_mutex_unlock(&ing->lock);
    return n;
}

void cti_ingest_wake(cti_ingest_t *ing)
{
    pthread_mutex_lock(&ing->lock);
    ing->wake = true;
    pthread_cond_signal(&ing->cond);
    pthread_mutex_unlock(&ing->lock);
}

/* Takes up to max queued items into out; waits up to IDLE_TICK_MS for work.
 * Returns the count; *stop when stopping and nothing is left. */
static int take(cti_ingest_t *ing, cti_ingest_item_t *out, int max, bool *stop)
{
    pthread_mutex_lock(&ing->lock);
    if (ing->count == 0 && !ing->wake && !ing->stopping) {
        struct timespec until = cti_mono_deadline(IDLE_TICK_MS);
        pthread_cond_timedwait(&ing->cond, &ing->lock, &until);
    }
    int n = 0;
    for (; n < max && ing->count > 0; n++) {
        out[n] = ing->queue[ing->head];
        ing->head = (ing->head + 1) % CTI_INGEST_QUEUE_MAX;
        ing->count--;
        ing->bytes -= strlen(out[n].payload);
    }
    ing->wake = false;
    *stop = ing->stopping && ing->count == 0;
    pthread_mutex_unlock(&ing->lock);
    return n;
}

/* Stores the items, and (when apply) applies the new ones, in one transaction:
 * stored as applied, so nothing is written twice. Returns 0 or the error;
 * *done holds what was appended. */
static int store_tx(cti_ingest_t *ing, cti_ingest_item_t *items, cti_raw_new_t *rows, int n,
                    bool apply, cti_processed_t *done)
{
    int rc = cti_db_begin(ing->db);
    if (rc != 0)
        return rc;
    rc = cti_raw_insert(ing->db, rows, n, apply ? CTI_RAW_APPLIED : CTI_RAW_PENDING);
    if (rc == 0 && apply) {
        cti_stored_t *fresh = cti_malloc((size_t)n * sizeof *fresh);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (rows[i].inserted)
                fresh[m++] = (cti_stored_t){rows[i].id, items[i].app_id, items[i].payload,
                                            items[i].doc.tok ? &items[i].doc : NULL,
                                            items[i].doc.tok ? &items[i].info : NULL,
                                            items[i].received_at, items[i].reconciled};
        rc = cti_process_stored(ing->db, cti_now_ms(), fresh, m, done);
        free(fresh);
    }
    if (rc == 0)
        return cti_db_commit(ing->db); /* a failed commit rolls back */
    cti_db_rollback(ing->db);
    return rc;
}

/* Refreshes stale planner statistics on its own connection (PostgreSQL). */
static void *analyze(void *arg)
{
    cti_ingest_t *ing = arg;
    cti_db_t *db = NULL;
    int rc = cti_store_connect(ing->store, &db);
    if (rc == 0)
        rc = cti_store_analyze_ingest(db);
    if (rc != 0)
        cti_log(CTI_LOG_WARN, NULL, "ingest: could not refresh planner statistics",
                CTI_LS("error", db ? cti_db_errmsg(db) : cti_strerror(rc)));
    cti_db_close(db);
    atomic_store(&ing->analyzing, false);
    return NULL;
}

/* One group commit: store every item (and apply the new ones, in the same
 * transaction: one commit per batch), then answer each. If applying fails, the
 * items are stored alone (pending), so an acknowledgement never waits on
 * processing. Returns true when it left pending events (a processing pass is due). */
static bool store_batch(cti_ingest_t *ing, cti_ingest_item_t *items, int n)
{
    bool backlog = false;
    cti_raw_new_t *rows = cti_calloc((size_t)n, sizeof *rows);
    for (int i = 0; i < n; i++)
        rows[i] = (cti_raw_new_t){items[i].app_id, items[i].info.dedupe_key,
                                  items[i].reconciled ? CTI_RAW_KIND_RECONCILED
                                                      : cti_ev_kind_name(items[i].info.kind),
                                  items[i].payload, items[i].received_at, false, 0};
    cti_processed_t *done = cti_processed_new();
    int64_t t0 = cti_mono_us();
    int rc = store_tx(ing, items, rows, n, true, done);
    if (rc != 0) {
        CTI_METRIC_INC(ingest_apply_failures);
        CTI_METRIC_INC(store_errors[rc == CTI_EUNAVAILABLE ? CTI_STORE_ERR_UNAVAILABLE
                                                           : CTI_STORE_ERR_DB]);
        cti_log(CTI_LOG_WARN, NULL, "ingest: store-and-apply failed; storing only",
                CTI_LS("error", cti_db_errmsg(ing->db)));
        cti_processed_free(done);
        done = cti_processed_new();
        rc = store_tx(ing, items, rows, n, false, done);
        backlog = true;
    }
    cti_histogram_observe(&cti_metrics.ingest_batch_size, (uint64_t)n);
    cti_histogram_observe(&cti_metrics.ingest_commit_seconds, (uint64_t)(cti_mono_us() - t0));
    atomic_store(&ing->store_failed_ms, rc != 0 ? cti_mono_ms() : 0);
    if (rc != 0) {
        CTI_METRIC_INC(ingest_store_failures);
        CTI_METRIC_INC(store_errors[rc == CTI_EUNAVAILABLE ? CTI_STORE_ERR_UNAVAILABLE
                                                           : CTI_STORE_ERR_DB]);
    }
    if (rc != 0)
        cti_log(CTI_LOG_ERROR, NULL, "ingest: could not store webhooks; answered 503",
                CTI_LI("count", n), CTI_LS("error", cti_db_errmsg(ing->db)));
    for (int i = 0; i < n; i++) {
        items[i].done(items[i].ctx, rc == 0 ? 200 : 503, rc == 0 && !rows[i].inserted);
        free(items[i].payload);
        cti_jdoc_free(&items[i].doc);
    }
    if (rc == 0)
        cti_processed_publish(done, ing->publish, ing->publish_ud);
    cti_processed_free(done);
    free(rows);
    if (rc == 0 && (ing->stored += n) >= ing->analyze_at && !atomic_load(&ing->analyzing) &&
        cti_store_has(ing->store, CTI_CAP_ANALYZE)) {
        ing->analyze_at *= 10; /* at 1k, 10k, 100k... events */
        if (ing->analyzer_started)
            pthread_join(ing->analyzer, NULL);
        atomic_store(&ing->analyzing, true);
        ing->analyzer_started = pthread_create(&ing->analyzer, NULL, analyze, ing) == 0;
        if (!ing->analyzer_started)
            atomic_store(&ing->analyzing, false);
    }
    return backlog;
}

/* Applies pending events until none is due (bounded, so new webhooks wait
 * little). A pass that fails is nobody's fault when the database cannot be
 * reached (CTI_EUNAVAILABLE: the next pass retries); otherwise some event in it
 * is refused, and the passes narrow down to it, a binary search over the
 * oldest events due: the limit halves after each failure and holds after a
 * success (the events before the culprit commit in those passes), down to one
 * event, whose failed attempt is then counted (cti_process_refused: retried
 * at 1, 2, 4, 8 s, then a dead letter), and the limit is whole again. So one
 * event the database always refuses costs ~2 log2(CTI_PROCESS_BATCH) small
 * passes per attempt, and the events behind it flow on. */
static void process(cti_ingest_t *ing)
{
    int limit = CTI_PROCESS_BATCH; /* below it while narrowing down to a refused event */
    for (int round = 0; round < 32; round++) {
        cti_process_failure_t failure;
        int64_t now = cti_now_ms();
        int n = cti_process_batch(ing->db, now, limit, ing->publish, ing->publish_ud, &failure);
        if (n >= 0) {
            if (n < limit)
                return; /* nothing more due */
            continue;   /* (narrowing: the same limit, over the events after these) */
        }
        CTI_METRIC_INC(store_errors[n == CTI_EUNAVAILABLE ? CTI_STORE_ERR_UNAVAILABLE
                                                          : CTI_STORE_ERR_DB]);
        cti_log(CTI_LOG_WARN, NULL, "ingest: processing failed; will retry",
                CTI_LS("error", failure.error), CTI_LI("batch", limit));
        if (n == CTI_EUNAVAILABLE || !failure.first_id)
            return;
        if (limit > 1) {
            limit /= 2;
            continue;
        }
        if (cti_process_refused(ing->db, now, failure.first_id, failure.error) < 0)
            return;
        limit = CTI_PROCESS_BATCH;
    }
}

static void *worker(void *arg)
{
    cti_ingest_t *ing = arg;
    cti_ingest_item_t *batch = cti_malloc(CTI_INGEST_BATCH * sizeof *batch);
    bool stop = false;
    process(ing); /* what a previous run stored but did not apply */
    int64_t last_pass = cti_mono_us();
    while (!stop) {
        int n = take(ing, batch, CTI_INGEST_BATCH, &stop);
        /* a batch applies its new events in its own transaction; a pass over what
         * is pending (retries coming due, replays, what another instance or a
         * failed batch stored) when idle, after a failure, and at least every tick */
        bool due = n == 0 || store_batch(ing, batch, n) ||
                   cti_mono_us() - last_pass >= IDLE_TICK_MS * 1000;
        if (due) {
            process(ing);
            last_pass = cti_mono_us();
        }
    }
    free(batch);
    return NULL;
}

cti_ingest_t *cti_ingest_start(cti_store_t *store, cti_publish_fn publish, void *ud)
{
    cti_ingest_t *ing = cti_calloc(1, sizeof *ing);
    ing->store = store;
    ing->publish = publish;
    ing->publish_ud = ud;
    ing->analyze_at = 1000;
    ing->queue = cti_malloc(CTI_INGEST_QUEUE_MAX * sizeof *ing->queue);
    cti_store_connect(store, &ing->db); /* reconnects on use if the database is down */
    cti_db_pipeline(ing->db, true); /* a failed batch is rolled back and stored again whole */
    pthread_mutex_init(&ing->lock, NULL);
    cti_cond_init_mono(&ing->cond);
    if (pthread_create(&ing->thread, NULL, worker, ing) != 0)
        cti_fatal("cannot start the ingest worker thread");
    pthread_setname_np(ing->thread, "cti-ingest"); /* shown by top -H, ps -L */
    return ing;
}

void cti_ingest_stop(cti_ingest_t *ing)
{
    if (!ing)
        return;
    pthread_mutex_lock(&ing->lock);
    ing->stopping = true;
    pthread_cond_signal(&ing->cond);
    pthread_mutex_unlock(&ing->lock);
    pthread_join(ing->thread, NULL);
    if (ing->analyzer_started)
        pthread_join(ing->analyzer, NULL);
    cti_db_close(ing->db);
    ing->db = NULL;
}

void cti_ingest_free(cti_ingest_t *ing)
{
    if (!ing)
        return;
    pthread_mutex_destroy(&ing->lock);
    pthread_cond_destroy(&ing->cond);
    free(ing->queue);
    free(ing);
}
