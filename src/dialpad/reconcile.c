/* reconcile.c — see reconcile.h. */
#include "dialpad/reconcile.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "ingest/ingest.h"
#include "repo/calls.h"
#include "repo/dialpad.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEASE_TTL_MS (10 * 60 * 1000) /* extended at every page */
#define MAX_PAGES 500
#define MAX_REQUESTS 64

/* ---- one call ------------------------------------------------------------------------- */

/* The final state a concluded REST call's lost webhooks would have ended with. */
static const char *final_state(json_t *call)
{
    int64_t connected = 0;
    if (json_string_length(json_object_get(call, "voicemail_share_link")) > 0)
        return "voicemail";
    if (cti_dp_ms(json_object_get(call, "date_connected"), &connected) && connected > 0)
        return "hangup";
    const char *dir = json_string_value(json_object_get(call, "direction"));
    return dir && !strcmp(dir, "outbound") ? "hangup" : "missed";
}

/* A Dialpad call event made from a REST call (a malloc'd JSON text). */
static char *synthesize(json_t *call, int64_t ended_at)
{
    json_t *ev = json_deep_copy(call);
    json_object_set_new(ev, "state", json_string(final_state(call)));
    json_object_set_new(ev, "event_timestamp", json_integer(ended_at));
    json_t *vm = json_object_get(call, "voicemail_share_link");
    if (json_is_string(vm))
        json_object_set(ev, "voicemail_link", vm);
    char *text = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return text;
}

typedef struct {
    bool found, ended;
} known_t;

static int note_leg(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    known_t *k = ud;
    k->found = true;
    k->ended = c->status == CTI_STATUS_ENDED;
    return 0;
}

typedef struct {
    cti_store_t *store;
    struct cti_ingest *ing;
    const char *app_id;
    cti_reconcile_result_t *out;
    int rc;
} walk_t;

static int one_call(json_t *call, void *ud)
{
    walk_t *w = ud;
    int64_t id, ended_at;
    if (!cti_dp_get_id(call, "call_id", &id) ||
        !cti_dp_ms(json_object_get(call, "date_ended"), &ended_at) || ended_at <= 0)
        return 0; /* not concluded (or not a call): nothing to say about it yet */
    w->out->calls_seen++;
    known_t k = {0};
    int rc = cti_calls_load_many(cti_store_db(w->store), w->app_id, &id, 1, note_leg, &k);
    if (rc != 0)
        return w->rc = CTI_EUNAVAILABLE;
    if (k.found && k.ended)
        return 0;
    char key[48];
    snprintf(key, sizeof key, "rc:%lld", (long long)id);
    bool duplicate = false;
    rc = cti_ingest_reconciled(w->ing, w->app_id, synthesize(call, ended_at), key, &duplicate);
    if (rc != 0)
        return w->rc = CTI_EUNAVAILABLE;
    if (!duplicate) {
        if (k.found)
            w->out->calls_updated++;
        else
            w->out->calls_added++;
    }
    return 0;
}

/* ---- one app ---------------------------------------------------------------------------- */

static int lease(cti_dpconn_t *conn, cti_db_t *db, const char *app_id, bool take)
{
    char name[64];
    snprintf(name, sizeof name, "reconcile:%s", app_id);
    return take ? cti_lease_take(db, name, cti_dpconn_owner(conn), cti_now_ms(), LEASE_TTL_MS)
                : cti_lease_release(db, name, cti_dpconn_owner(conn));
}

/* Walks every page of the call list, applying each call. */
static int walk(cti_dpconn_t *conn, cti_db_t *db, walk_t *w, int64_t since, int64_t until,
                const char *rid, char *why, size_t cap)
{
    char base[160], path[1024], cursor[900] = "";
    snprintf(base, sizeof base, "/api/v2/call?started_after=%lld&started_before=%lld",
             (long long)since, (long long)until);
    for (int page = 0; page < MAX_PAGES; page++) {
        if (!cursor[0])
            snprintf(path, sizeof path, "%s", base);
        else if (cti_dp_page_path(base, cursor, path, sizeof path) != 0)
            return CTI_EUNAVAILABLE;
        cti_dp_request_t req = {.method = "GET", .path = path, .operation = "call.list",
                                .request_id = rid};
        int err = 0;
        cti_dp_response_t *r = cti_dpconn_call(conn, w->app_id, &req, &err);
        if (!r)
            return err;
        int rc = 0;
        json_t *root = NULL, *items = NULL;
        if (!cti_dp_ok(r)) {
            snprintf(why, cap, "%.380s", r->message);
            rc = r->status == 401 || r->status == 403 ? CTI_EAUTH : CTI_EUNAVAILABLE;
        } else if (!(root = json_loadb(r->body, r->body_len, 0, NULL)) ||
                   cti_dp_page_parse(root, &items, cursor, sizeof cursor) != 0) {
            snprintf(why, cap, "Dialpad's call list could not be read");
            rc = CTI_EUNAVAILABLE;
        }
        cti_dp_response_free(r);
        size_t i;
        json_t *call;
        json_array_foreach(items, i, call)
        {
            if (rc == 0 && one_call(call, w) != 0)
                rc = w->rc;
        }
        json_decref(root);
        if (rc != 0 && !why[0])
            snprintf(why, cap, "the database could not be used");
        if (rc != 0 || !cursor[0])
            return rc;
        lease(conn, db, w->app_id, true); /* still ours: a long walk keeps it */
    }
    snprintf(why, cap, "Dialpad's call list had more than %d pages", MAX_PAGES);
    return CTI_ELIMIT;
}

int cti_reconcile_app(cti_dpconn_t *conn, cti_store_t *store, struct cti_ingest *ing,
                      const char *app_id, int64_t since_ms, int64_t until_ms, const char *rid,
                      cti_reconcile_result_t *out, char *why, size_t whycap)
{
    cti_db_t *db = cti_store_db(store);
    memset(out, 0, sizeof *out);
    why[0] = '\0';
    cti_dpconn_row_t row;
    int rc = cti_dpconn_get(db, app_id, &row);
    bool connected = rc == 0 && !strcmp(row.status, "connected");
    cti_dpconn_row_free(&row);
    if (!connected)
        return rc == 0 || rc == CTI_ENOTFOUND ? CTI_ENOTFOUND : CTI_EUNAVAILABLE;
    if ((rc = lease(conn, db, app_id, true)) != 0)
        return rc == CTI_ELIMIT ? CTI_ELIMIT : CTI_EUNAVAILABLE;
    int64_t t0 = cti_mono_us();
    walk_t w = {store, ing, app_id, out, 0};
    rc = walk(conn, db, &w, since_ms, until_ms, rid, why, whycap);
    if (rc == CTI_ENOTFOUND)
        snprintf(why, whycap, "the app is not connected to Dialpad");
    cti_dpconn_set_reconciled(db, app_id, cti_now_ms(), rc == 0 ? NULL : why);
    CTI_METRIC_INC(reconcile_runs[rc == 0 ? CTI_RECON_OK : CTI_RECON_FAILED]);
    cti_counter_add(&cti_metrics.reconcile_calls_added, (uint64_t)out->calls_added);
    cti_counter_add(&cti_metrics.reconcile_calls_updated, (uint64_t)out->calls_updated);
    lease(conn, db, app_id, false);
    cti_log(rc == 0 ? CTI_LOG_INFO : CTI_LOG_WARN, rid,
            rc == 0 ? "dialpad: reconciled" : "dialpad: reconciliation failed",
            CTI_LS("app_id", app_id), CTI_LI("calls_seen", out->calls_seen),
            CTI_LI("calls_added", out->calls_added), CTI_LI("calls_updated", out->calls_updated),
            CTI_LD("ms", (double)(cti_mono_us() - t0) / 1000.0),
            CTI_LS("error", rc == 0 ? NULL : why));
    return rc;
}

/* ---- the reconciler thread ---------------------------------------------------------------- */

struct cti_reconciler {
    cti_dpconn_t *conn;
    cti_store_t *store;
    struct cti_ingest *ing;
    int interval_s, window_s;
    pthread_t thread;
    pthread_mutex_t mu; /* below */
    pthread_cond_t cv;
    bool stop;
    char requests[MAX_REQUESTS][37];
    int nrequests;
};

static void run_one(cti_reconciler_t *r, const char *app_id)
{
    cti_reconcile_result_t res;
    char why[400];
    int64_t now = cti_now_ms();
    cti_reconcile_app(r->conn, r->store, r->ing, app_id, now - (int64_t)r->window_s * 1000,
                      now + 60000, NULL, &res, why, sizeof why);
}

typedef struct {
    char (*ids)[37];
    int n, cap;
} apps_t;

static int note_app(const cti_dpconn_row_t *row, void *ud)
{
    apps_t *a = ud;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->ids = cti_realloc(a->ids, (size_t)a->cap * sizeof *a->ids);
    }
    memcpy(a->ids[a->n++], row->app_id, 37);
    return 0;
}

static void run_all(cti_reconciler_t *r)
{
    apps_t a = {0};
    if (cti_dpconn_list_connected(cti_store_db(r->store), note_app, &a) == 0)
        for (int i = 0; i < a.n && !r->stop; i++)
            run_one(r, a.ids[i]);
    free(a.ids);
}

static void *reconciler(void *arg)
{
    cti_reconciler_t *r = arg;
    pthread_setname_np(pthread_self(), "cti-reconcile");
    int64_t next = cti_mono_us(); /* start-up: at once */
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        if (r->nrequests > 0) {
            char app[37];
            memcpy(app, r->requests[--r->nrequests], sizeof app);
            pthread_mutex_unlock(&r->mu);
            run_one(r, app);
            pthread_mutex_lock(&r->mu);
            continue;
        }
        if (next && cti_mono_us() >= next) {
            pthread_mutex_unlock(&r->mu);
            run_all(r);
            pthread_mutex_lock(&r->mu);
            next = r->interval_s > 0 ? cti_mono_us() + (int64_t)r->interval_s * 1000000 : 0;
            continue;
        }
        /* wakes for requests and stop through the condition */
        struct timespec until = cti_mono_deadline(1000);
        pthread_cond_timedwait(&r->cv, &r->mu, &until);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

cti_reconciler_t *cti_reconciler_start(cti_dpconn_t *conn, cti_store_t *store,
                                       struct cti_ingest *ing, int interval_s, int window_s)
{
    cti_reconciler_t *r = cti_calloc(1, sizeof *r);
    *r = (cti_reconciler_t){.conn = conn, .store = store, .ing = ing, .interval_s = interval_s,
                            .window_s = window_s};
    pthread_mutex_init(&r->mu, NULL);
    cti_cond_init_mono(&r->cv);
    if (pthread_create(&r->thread, NULL, reconciler, r) != 0)
        cti_fatal("reconcile: cannot start its thread");
    return r;
}

void cti_reconciler_request(cti_reconciler_t *r, const char *app_id)
{
    pthread_mutex_lock(&r->mu);
    bool queued = false;
    for (int i = 0; i < r->nrequests && !queued; i++)
        queued = !strcmp(r->requests[i], app_id);
    if (!queued && r->nrequests < MAX_REQUESTS)
        snprintf(r->requests[r->nrequests++], 37, "%s", app_id);
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void cti_reconciler_stop(cti_reconciler_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
