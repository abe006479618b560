/* deliveries.c — SQL for webhook_deliveries. See deliveries.h. */
#include "repo/deliveries.h"
#include "core/common.h"
#include "core/jw.h"
#include "outbound/types.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- enqueue (the ingest transaction) ---------------------------------------------------- */

/* An enabled endpoint of one of the batch's apps. */
typedef struct {
    char id[37];
    const char *app_id; /* the batch's string (targets_t.apps) */
    char *types;        /* NULL: every event */
} target_t;

typedef struct {
    target_t *t;
    int n, cap;
    const char *const *apps; /* the batch's apps, sorted (strcmp), napps of them */
    int napps;
    const char *app_id; /* the app queried (per-app statements); NULL: column 0 says */
} targets_t;

static int by_text(const void *key, const void *elem)
{
    return strcmp(key, *(const char *const *)elem);
}

static int add_target(const cti_row_t *row, void *ud)
{
    targets_t *ts = ud;
    const char *app = ts->app_id;
    int c = 0;
    if (!app) {
        const char *const *hit = bsearch(cti_row_text(row, 0), ts->apps, (size_t)ts->napps,
                                         sizeof *ts->apps, by_text);
        assert(hit); /* the statement asked for these apps only */
        if (!hit)
            return 0;
        app = *hit;
        c = 1;
    }
    if (ts->n == ts->cap)
        ts->t = cti_realloc(ts->t, (size_t)(ts->cap = ts->cap ? 2 * ts->cap : 16) * sizeof *ts->t);
    target_t *t = &ts->t[ts->n++];
    t->app_id = app;
    snprintf(t->id, sizeof t->id, "%s", cti_row_text(row, c));
    const char *types = cti_row_text(row, c + 1);
    t->types = types ? cti_strdup(types) : NULL;
    return 0;
}

static void targets_free(targets_t *ts)
{
    for (int i = 0; i < ts->n; i++)
        free(ts->t[i].types);
    free(ts->t);
}

/* By app, then id: each app's endpoints side by side, in one order whatever
 * order the database gave them in. */
static int target_order(const void *x, const void *y)
{
    const target_t *a = x, *b = y;
    int c = strcmp(a->app_id, b->app_id);
    return c ? c : strcmp(a->id, b->id);
}

#define ENDPOINT_COLS "app_id, id, types FROM webhook_endpoints WHERE enabled = 1 AND app_id"

/* The enabled endpoints of ts's apps into ts, sorted by app: one statement
 * for them all where the backend takes arrays (one round trip on PostgreSQL
 * however many apps the batch spreads over), else one indexed read per app
 * (SQLite: in process, no round trip to save). */
static int load_targets(cti_db_t *db, targets_t *ts)
{
    int rc = 0;
    if (cti_store_has(cti_db_store(db), CTI_CAP_ARRAYS)) {
        cti_jw_t w = {0};
        cti_db_array_literal(&w, ts->apps, NULL, ts->napps);
        char *list = cti_jw_take(&w, NULL);
        cti_sql_val_t p[] = {CTI_SQL_TEXT(list)};
        rc = cti_db_exec(db, "SELECT " ENDPOINT_COLS " = ANY($1::text[])", p, 1, add_target, ts);
        free(list);
    } else {
        for (int i = 0; rc == 0 && i < ts->napps; i++) {
            cti_sql_val_t p[] = {CTI_SQL_TEXT(ts->apps[i])};
            ts->app_id = ts->apps[i];
            rc = cti_db_exec(db, "SELECT id, types FROM webhook_endpoints WHERE app_id = $1 AND "
                                 "enabled = 1",
                             p, 1, add_target, ts);
        }
        ts->app_id = NULL;
    }
    if (ts->n > 1)
        qsort(ts->t, (size_t)ts->n, sizeof *ts->t, target_order);
    return rc < 0 ? rc : 0;
}

/* A row of the batch, where it stands in it. */
typedef struct {
    const char *app_id;
    int i;
} rowref_t;

/* By app, then position: each app's rows side by side, in the batch's order. */
static int row_order(const void *x, const void *y)
{
    const rowref_t *a = x, *b = y;
    int c = strcmp(a->app_id, b->app_id);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

#define ENQ_COLS 7

/* The delivery of event r to endpoint_id into the next ENQ_COLS values at v. */
static void delivery_vals(cti_sql_val_t *v, const char *endpoint_id, const cti_logrow_t *r,
                          int64_t now)
{
    v[0] = CTI_SQL_TEXT(endpoint_id);
    v[1] = CTI_SQL_TEXT(r->app_id);
    v[2] = CTI_SQL_INT(r->seq);
    v[3] = CTI_SQL_TEXT(r->event);
    v[4] = r->call_id ? CTI_SQL_INT(r->call_id) : CTI_SQL_NULLV;
    v[5] = CTI_SQL_INT(now);
    v[6] = CTI_SQL_INT(now);
}

/* The n deliveries of vals (delivery_vals), in the caller's transaction. */
static int insert_deliveries(cti_db_t *db, const cti_sql_val_t *vals, int n)
{
    return cti_db_exec_rows(db, "INSERT INTO webhook_deliveries (endpoint_id, app_id, seq, "
                                "event, call_id, next_attempt_at, created_at)",
                            "", ENQ_COLS, vals, n, NULL, NULL);
}

int cti_deliveries_enqueue(cti_db_t *db, const cti_logrow_t *rows, int n, int64_t now)
{
    assert(cti_db_in_tx(db)); /* with the events, or not at all */
    if (n <= 0)
        return 0;
    /* rows come grouped by nothing in particular: sorted, each app is taken once */
    rowref_t *order = cti_malloc((size_t)n * sizeof *order);
    const char **apps = cti_malloc((size_t)n * sizeof *apps);
    for (int i = 0; i < n; i++)
        order[i] = (rowref_t){rows[i].app_id, i};
    qsort(order, (size_t)n, sizeof *order, row_order);
    int napps = 0;
    for (int i = 0; i < n; i++)
        if (!napps || strcmp(apps[napps - 1], order[i].app_id))
            apps[napps++] = order[i].app_id;
    targets_t ts = {.apps = apps, .napps = napps};
    cti_sql_val_t *vals = NULL;
    int nvals = 0, cap = 0;
    int rc = load_targets(db, &ts);
    /* both sorted by app: walk them side by side */
    for (int i = 0, e0 = 0; rc == 0 && i < n && e0 < ts.n; i++) {
        const cti_logrow_t *r = &rows[order[i].i];
        while (e0 < ts.n && strcmp(ts.t[e0].app_id, r->app_id) < 0)
            e0++;
        for (int e = e0; e < ts.n && !strcmp(ts.t[e].app_id, r->app_id); e++) {
            if (!cti_evtypes_match(ts.t[e].types, r->event))
                continue;
            if (nvals == cap)
                vals = cti_realloc(vals, (size_t)(cap = cap ? 2 * cap : 64) * ENQ_COLS *
                                             sizeof *vals);
            delivery_vals(vals + nvals++ * ENQ_COLS, ts.t[e].id, r, now);
        }
    }
    if (rc == 0 && nvals)
        rc = insert_deliveries(db, vals, nvals);
    targets_free(&ts);
    free(vals);
    free(apps);
    free(order);
    return rc < 0 ? rc : 0;
}

/* ---- the delivery log -------------------------------------------------------------------- */

typedef struct {
    cti_delivery_fn fn;
    void *ud;
} list_t;

static int each_delivery(const cti_row_t *row, void *ud)
{
    list_t *l = ud;
    cti_delivery_t d = {
        .id = cti_row_int(row, 0),
        .endpoint_id = cti_row_text(row, 1),
        .seq = cti_row_int(row, 2),
        .event = cti_row_text(row, 3),
        .status = (int)cti_row_int(row, 4),
        .attempts = (int)cti_row_int(row, 5),
        .last_attempt_at = cti_row_is_null(row, 6) ? 0 : cti_row_int(row, 6),
        .last_status_code = cti_row_is_null(row, 7) ? 0 : (int)cti_row_int(row, 7),
        .last_error = cti_row_text(row, 8),
        .created_at = cti_row_int(row, 10),
    };
    d.next_attempt_at = d.status == CTI_DLV_PENDING ? cti_row_int(row, 9) : 0;
    return l->fn(&d, l->ud);
}

#define DELIVERY_COLS                                                                              \
    "id, endpoint_id, seq, event, status, attempts, last_attempt_at, last_status_code, "           \
    "last_error, next_attempt_at, created_at"

int cti_deliveries_list(cti_db_t *db, const char *endpoint_id, int status, int64_t before,
                        int limit, cti_delivery_fn fn, void *ud)
{
    list_t l = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(endpoint_id), CTI_SQL_INT(before ? before : INT64_MAX),
                         CTI_SQL_INT(limit), CTI_SQL_INT(status)};
    if (status < 0)
        return cti_db_exec(db, "SELECT " DELIVERY_COLS " FROM webhook_deliveries WHERE "
                               "endpoint_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                           p, 3, each_delivery, &l);
    return cti_db_exec(db, "SELECT " DELIVERY_COLS " FROM webhook_deliveries WHERE "
                           "endpoint_id = $1 AND id < $2 AND status = $4 ORDER BY id DESC LIMIT $3",
                       p, 4, each_delivery, &l);
}

int cti_delivery_retry(cti_db_t *db, const char *endpoint_id, int64_t id, int64_t now)
{
    /* a lease being used is left alone: the attempt in flight ends first */
    cti_sql_val_t p[] = {CTI_SQL_TEXT(endpoint_id), CTI_SQL_INT(id), CTI_SQL_INT(now)};
    int64_t n = 0;
    int rc = cti_db_exec_count(db, "UPDATE webhook_deliveries SET status = 0, next_attempt_at = $3 "
                                   "WHERE endpoint_id = $1 AND id = $2 RETURNING id",
                               p, 3, &n);
    if (rc != 0)
        return rc;
    return n ? 0 : CTI_ENOTFOUND;
}

/* ---- replay ------------------------------------------------------------------------------ */

typedef struct {
    int64_t seq, call_id;
    char event[48];
} logref_t;

typedef struct {
    logref_t *r;
    int n, cap;
} logrefs_t;

static int add_ref(const cti_row_t *row, void *ud)
{
    logrefs_t *l = ud;
    if (l->n == l->cap)
        l->r = cti_realloc(l->r, (size_t)(l->cap = l->cap ? 2 * l->cap : 256) * sizeof *l->r);
    logref_t *r = &l->r[l->n++];
    r->seq = cti_row_int(row, 0);
    snprintf(r->event, sizeof r->event, "%s", cti_row_text(row, 1));
    r->call_id = cti_row_is_null(row, 2) ? 0 : cti_row_int(row, 2);
    return 0;
}

#define REPLAY_PAGE 1000

/* One page of a replay in its own transaction: the log's events after
 * *after (at most REPLAY_PAGE; *n of them, *after moved to the last) and the
 * deliveries of those whose types match (*nv). */
static int replay_page(cti_db_t *db, const char *app_id, const char *endpoint_id,
                       const char *types, int64_t now, logrefs_t *l, cti_sql_val_t *vals,
                       int64_t *after, int *n, int *nv)
{
    *n = *nv = 0;
    l->n = 0;
    int rc = cti_db_begin(db);
    if (rc != 0)
        return rc;
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(*after), CTI_SQL_INT(REPLAY_PAGE)};
    rc = cti_db_exec(db, "SELECT seq, event, call_id FROM event_log WHERE app_id = $1 AND "
                         "seq > $2 ORDER BY seq LIMIT $3",
                     p, 3, add_ref, l);
    for (int i = 0; rc == 0 && i < l->n; i++) {
        if (!cti_evtypes_match(types, l->r[i].event))
            continue;
        cti_logrow_t ev = {app_id, l->r[i].seq, l->r[i].event, l->r[i].call_id, NULL};
        delivery_vals(vals + (*nv)++ * ENQ_COLS, endpoint_id, &ev, now);
    }
    if (rc == 0 && *nv)
        rc = insert_deliveries(db, vals, *nv);
    if (rc == 0)
        rc = cti_db_commit(db);
    if (rc != 0) {
        cti_db_rollback(db);
        *nv = 0;
        return rc;
    }
    *n = l->n;
    if (l->n)
        *after = l->r[l->n - 1].seq;
    return 0;
}

int cti_deliveries_replay(cti_db_t *db, const char *app_id, const char *endpoint_id,
                          const char *types, int64_t since, int64_t now, int64_t *count)
{
    *count = 0;
    logrefs_t l = {0};
    cti_sql_val_t *vals = cti_malloc(REPLAY_PAGE * ENQ_COLS * sizeof *vals);
    int rc, n, nv;
    for (int64_t after = since;;) {
        rc = replay_page(db, app_id, endpoint_id, types, now, &l, vals, &after, &n, &nv);
        *count += nv;
        if (rc != 0 || n < REPLAY_PAGE)
            break;
    }
    free(l.r);
    free(vals);
    return rc < 0 ? rc : 0;
}

int cti_deliveries_pending_count(cti_db_t *db, int64_t *count)
{
    return cti_db_query_int(db, "SELECT count(*) FROM webhook_deliveries WHERE status = 0", NULL,
                            0, count);
}

/* ---- the sender's ------------------------------------------------------------------------ */

typedef struct {
    int64_t *ids;
    int n;
    cti_lease_fn fn;
    void *ud;
} leased_t;

static int each_lease(const cti_row_t *row, void *ud)
{
    leased_t *ls = ud;
    cti_lease_t l = {.id = cti_row_int(row, 0),
                     .seq = cti_row_int(row, 1),
                     .attempts = (int)cti_row_int(row, 2),
                     .body = cti_row_text(row, 3),
                     .created_at = cti_row_int(row, 4)};
    ls->ids[ls->n++] = l.id;
    return ls->fn(&l, ls->ud);
}

/* Due, not leased, and the first pending delivery of its call to its
 * endpoint (a call's events go in seq order). The head is found by a
 * correlated MIN over the call's pending rows (index webhook_deliveries_call),
 * run per candidate: a NOT EXISTS anti-join let PostgreSQL's generic plan,
 * made while few rows were pending, scan every pending row of the endpoint
 * per candidate (1,100 deliveries/s with 60,000 pending). An event purged by
 * retention comes with a NULL body. */
#define LEASE_SQL                                                                                  \
    "SELECT d.id, d.seq, d.attempts, e.body, d.created_at FROM webhook_deliveries d "            \
    "LEFT JOIN event_log e ON e.app_id = d.app_id AND e.seq = d.seq "                             \
    "WHERE d.endpoint_id = $1 AND d.status = 0 AND d.next_attempt_at <= $2 "                       \
    "AND d.lease_until <= $2 AND d.app_id = $4 AND (d.call_id IS NULL OR d.seq = (SELECT "         \
    "MIN(p.seq) FROM webhook_deliveries p WHERE p.endpoint_id = $1 AND p.call_id = d.call_id "      \
    "AND p.status = 0)) ORDER BY d.next_attempt_at LIMIT $3"

int cti_deliveries_lease(cti_db_t *db, const char *endpoint_id, const char *app_id, int64_t now,
                         int64_t lease_ms, int limit, cti_lease_fn fn, void *ud)
{
    assert(cti_db_in_tx(db)); /* the rows stay locked (SKIP LOCKED) until it ends */
    leased_t ls = {cti_malloc((size_t)(limit > 0 ? limit : 1) * sizeof *ls.ids), 0, fn, ud};
    bool skip_locked = cti_store_has(cti_db_store(db), CTI_CAP_SKIP_LOCKED);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(endpoint_id), CTI_SQL_INT(now), CTI_SQL_INT(limit),
                         CTI_SQL_TEXT(app_id)};
    int rc = cti_db_exec(db, skip_locked ? LEASE_SQL " FOR UPDATE OF d SKIP LOCKED" : LEASE_SQL, p,
                         4, each_lease, &ls);
    if (rc == 0 && ls.n) {
        cti_sql_val_t fixed[] = {CTI_SQL_INT(now + lease_ms)};
        cti_sql_val_t *ids = cti_malloc((size_t)ls.n * sizeof *ids);
        for (int i = 0; i < ls.n; i++)
            ids[i] = CTI_SQL_INT(ls.ids[i]);
        rc = cti_db_exec_in(db, "UPDATE webhook_deliveries SET lease_until = $1 WHERE id IN", "",
                            fixed, 1, ids, ls.n, NULL, NULL);
        free(ids);
    }
    free(ls.ids);
    return rc < 0 ? rc : 0;
}

int cti_deliveries_record(cti_db_t *db, const cti_attempt_t *a, int n)
{
    assert(cti_db_in_tx(db));
    int rc = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        /* status = 0: an attempt another instance finished meanwhile (its lease had
         * run out) keeps that instance's result */
        cti_sql_val_t p[] = {CTI_SQL_INT(a[i].id),
                             CTI_SQL_INT(a[i].status),
                             CTI_SQL_INT(a[i].attempts),
                             CTI_SQL_INT(a[i].attempted_at),
                             a[i].status_code ? CTI_SQL_INT(a[i].status_code) : CTI_SQL_NULLV,
                             CTI_SQL_TEXT(a[i].error),
                             CTI_SQL_INT(a[i].status == CTI_DLV_PENDING ? a[i].next_attempt_at
                                                                        : a[i].attempted_at)};
        rc = cti_db_exec(db, "UPDATE webhook_deliveries SET status = $2, attempts = $3, "
                             "last_attempt_at = $4, last_status_code = $5, last_error = $6, "
                             "next_attempt_at = $7, lease_until = 0 WHERE id = $1 AND status = 0",
                         p, 7, NULL, NULL);
    }
    return rc < 0 ? rc : 0;
}

int cti_deliveries_release_all(cti_db_t *db)
{
    int rc = cti_db_exec(db, "UPDATE webhook_deliveries SET lease_until = 0 WHERE status = 0 AND "
                             "lease_until > 0",
                         NULL, 0, NULL, NULL);
    return rc < 0 ? rc : 0;
}
