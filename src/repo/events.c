/* events.c — SQL for raw_events, event_log and app_seq. See events.h. */
#include "repo/events.h"
#include "core/common.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLS 6

typedef struct {
    cti_raw_new_t *items;
    int n;
} inserted_t;

/* RETURNING gives back the keys that were new; mark those items. */
static int note_inserted(const cti_row_t *row, void *ud)
{
    inserted_t *in = ud;
    const char *app = cti_row_text(row, 0), *key = cti_row_text(row, 1);
    for (int i = 0; i < in->n; i++)
        if (!in->items[i].inserted && !strcmp(in->items[i].dedupe_key, key) &&
            !strcmp(in->items[i].app_id, app)) {
            in->items[i].inserted = true;
            in->items[i].id = cti_row_int(row, 2);
            break;
        }
    return 0;
}

static int by_key(const void *x, const void *y)
{
    const cti_raw_new_t *a = *(const cti_raw_new_t *const *)x, *b = *(const cti_raw_new_t *const *)y;
    int c = strcmp(a->app_id, b->app_id);
    if (!c)
        c = strcmp(a->dedupe_key, b->dedupe_key);
    /* a key twice in a batch: the first given is the one stored (note_inserted) */
    return c ? c : (a > b) - (a < b);
}

int cti_raw_insert(cti_db_t *db, cti_raw_new_t *items, int n, int status)
{
    /* stored as applied only with what applying them wrote, in one transaction */
    assert(cti_db_in_tx(db));
    /* In key order: two instances storing the same keys (a webhook delivered to
     * both) then take the unique index's locks in one order and never deadlock. */
    cti_raw_new_t **order = cti_malloc((size_t)(n ? n : 1) * sizeof *order);
    for (int i = 0; i < n; i++)
        order[i] = &items[i];
    qsort(order, (size_t)n, sizeof *order, by_key);
    cti_sql_val_t *p = cti_malloc((size_t)n * COLS * sizeof *p);
    for (int i = 0; i < n; i++) {
        cti_sql_val_t *row = p + i * COLS;
        cti_raw_new_t *it = order[i];
        row[0] = CTI_SQL_TEXT(it->app_id);
        row[1] = CTI_SQL_TEXT(it->dedupe_key);
        row[2] = CTI_SQL_TEXT(it->kind);
        row[3] = CTI_SQL_TEXT(it->payload);
        row[4] = CTI_SQL_INT(it->received_at);
        row[5] = CTI_SQL_INT(status);
        it->inserted = false;
        it->id = 0;
    }
    free(order);
    inserted_t in = {items, n};
    int rc = cti_db_insert_new_rows(db, "INSERT INTO raw_events (app_id, dedupe_key, kind, "
                                        "payload, received_at, status)",
                                    "ON CONFLICT (app_id, dedupe_key) DO NOTHING RETURNING "
                                    "app_id, dedupe_key, id",
                                    COLS, p, n, note_inserted, &in);
    free(p);
    return rc < 0 ? rc : 0;
}

int cti_raw_mark_applied_many(cti_db_t *db, const int64_t *ids, int n)
{
    cti_sql_val_t *p = cti_malloc((size_t)(n ? n : 1) * sizeof *p);
    for (int i = 0; i < n; i++)
        p[i] = CTI_SQL_INT(ids[i]);
    int rc = cti_db_exec_in(db, "UPDATE raw_events SET status = 1, error = NULL WHERE id IN", "",
                            NULL, 0, p, n, NULL, NULL);
    free(p);
    return rc < 0 ? rc : 0;
}

int cti_eventlog_append_many(cti_db_t *db, const cti_logrow_t *rows, int n, int64_t now)
{
    assert(cti_db_in_tx(db)); /* under the app_seq locks that made the seqs */
    cti_sql_val_t *p = cti_malloc((size_t)(n ? n : 1) * 6 * sizeof *p);
    for (int i = 0; i < n; i++) {
        cti_sql_val_t *r = p + i * 6;
        r[0] = CTI_SQL_TEXT(rows[i].app_id);
        r[1] = CTI_SQL_INT(rows[i].seq);
        r[2] = CTI_SQL_TEXT(rows[i].event);
        r[3] = rows[i].call_id ? CTI_SQL_INT(rows[i].call_id) : CTI_SQL_NULLV;
        r[4] = CTI_SQL_INT(now);
        r[5] = CTI_SQL_TEXT(rows[i].body);
    }
    int rc = cti_db_exec_rows(db, "INSERT INTO event_log (app_id, seq, event, call_id, "
                                  "created_at, body)",
                              "", 6, p, n, NULL, NULL);
    free(p);
    return rc < 0 ? rc : 0;
}

typedef struct {
    cti_raw_fn fn;
    void *ud;
} raw_iter_t;

static int each_raw(const cti_row_t *row, void *ud)
{
    raw_iter_t *it = ud;
    cti_raw_t ev;
    ev.id = cti_row_int(row, 0);
    snprintf(ev.app_id, sizeof ev.app_id, "%s", cti_row_text(row, 1));
    snprintf(ev.kind, sizeof ev.kind, "%s", cti_row_text(row, 2));
    ev.payload = cti_row_text(row, 3);
    ev.received_at = cti_row_int(row, 4);
    ev.attempts = (int)cti_row_int(row, 5);
    return it->fn(&ev, it->ud);
}

int cti_raw_pending(cti_db_t *db, int64_t now, int limit, cti_raw_fn fn, void *ud)
{
    /* the row locks that keep other instances off these events end with it */
    assert(cti_db_in_tx(db));
    raw_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_INT(now), CTI_SQL_INT(limit)};
    bool skip_locked = cti_store_has(cti_db_store(db), CTI_CAP_SKIP_LOCKED);
    return cti_db_exec(db,
                       skip_locked ? "SELECT id, app_id, kind, payload, received_at, attempts FROM raw_events "
                            "WHERE status = 0 AND next_attempt_at <= $1 ORDER BY id LIMIT $2 "
                            "FOR UPDATE SKIP LOCKED"
                          : "SELECT id, app_id, kind, payload, received_at, attempts FROM raw_events "
                            "WHERE status = 0 AND next_attempt_at <= $1 ORDER BY id LIMIT $2",
                       p, 2, each_raw, &it);
}

int cti_raw_mark_failed(cti_db_t *db, int64_t id, const char *error, int64_t next_attempt_at,
                        bool dead)
{
    cti_sql_val_t p[] = {CTI_SQL_INT(id), CTI_SQL_TEXT(error), CTI_SQL_INT(next_attempt_at),
                         CTI_SQL_INT(dead ? CTI_RAW_DEAD : CTI_RAW_PENDING)};
    return cti_db_exec(db,
                       "UPDATE raw_events SET status = $4, attempts = attempts + 1, error = $2, "
                       "next_attempt_at = $3 WHERE id = $1",
                       p, 4, NULL, NULL);
}

typedef struct {
    cti_dead_fn fn;
    void *ud;
} dead_iter_t;

static int each_dead(const cti_row_t *row, void *ud)
{
    dead_iter_t *it = ud;
    cti_dead_t d;
    d.id = cti_row_int(row, 0);
    snprintf(d.app_id, sizeof d.app_id, "%s", cti_row_text(row, 1));
    snprintf(d.kind, sizeof d.kind, "%s", cti_row_text(row, 2));
    snprintf(d.dedupe_key, sizeof d.dedupe_key, "%s", cti_row_text(row, 3));
    d.payload = cti_row_text(row, 4);
    d.error = cti_row_text(row, 5);
    d.attempts = (int)cti_row_int(row, 6);
    d.received_at = cti_row_int(row, 7);
    return it->fn(&d, it->ud);
}

#define DEAD_SELECT                                                                        \
    "SELECT id, app_id, kind, dedupe_key, payload, error, attempts, received_at FROM "    \
    "raw_events WHERE status = 2 "

int cti_dead_list(cti_db_t *db, const char *app_id, int64_t before, int limit, cti_dead_fn fn,
                  void *ud)
{
    dead_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_INT(before ? before : INT64_MAX), CTI_SQL_INT(limit),
                         CTI_SQL_TEXT(app_id)};
    /* one text each, so each finds its index (raw_events_dead, raw_events_dead_all):
     * "$3 IS NULL OR app_id = $3" is planned once for both and served by neither */
    return cti_db_exec(db,
                       app_id ? DEAD_SELECT "AND app_id = $3 AND id < $1 ORDER BY id DESC LIMIT $2"
                              : DEAD_SELECT "AND id < $1 ORDER BY id DESC LIMIT $2",
                       p, app_id ? 3 : 2, each_dead, &it);
}

int cti_dead_replay(cti_db_t *db, int64_t id, const char *app_id, int64_t *count)
{
    cti_sql_val_t p[] = {CTI_SQL_INT(id), CTI_SQL_TEXT(app_id)};
    return cti_db_exec_count(db,
                             "UPDATE raw_events SET status = 0, attempts = 0, next_attempt_at = 0 "
                             "WHERE status = 2 AND ($1 = 0 OR id = $1) AND "
                             "(CAST($2 AS TEXT) IS NULL OR app_id = $2) RETURNING id",
                             p, 2, count);
}

/* ---- event log --------------------------------------------------------------------- */

int cti_seq_lock(cti_db_t *db, const char *app_id, int64_t *last)
{
    /* An upsert that changes nothing still takes the row lock (PostgreSQL), so
     * instances appending for the same app serialise here and seqs stay gapless. */
    assert(cti_db_in_tx(db)); /* the lock ends with the statement otherwise */
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    return cti_db_query_int(db,
                            "INSERT INTO app_seq (app_id, last_seq) VALUES ($1, 0) "
                            "ON CONFLICT (app_id) DO UPDATE SET last_seq = app_seq.last_seq "
                            "RETURNING last_seq",
                            p, 1, last);
}

int cti_seq_set_many(cti_db_t *db, const char *const *apps, const int64_t *last, int n)
{
    assert(cti_db_in_tx(db)); /* with the rows it numbers, under cti_seq_lock_many */
    cti_sql_val_t *p = cti_malloc((size_t)(n ? n : 1) * 2 * sizeof *p);
    for (int i = 0; i < n; i++) {
        p[2 * i] = CTI_SQL_TEXT(apps[i]);
        p[2 * i + 1] = CTI_SQL_INT(last[i]);
    }
    /* the VALUES' second column arrives as text on PostgreSQL: CAST for both.
     * Sent as one statement padded with copies of its last row (as an insert
     * of new rows is): a row given twice sets the same value. */
    int rc = n == 0 ? 0
                    : cti_db_insert_new_rows(db,
                                       "UPDATE app_seq SET last_seq = CAST(v.column2 AS BIGINT) "
                                       "FROM (",
                                       ") AS v WHERE app_seq.app_id = v.column1", 2, p, n, NULL,
                                       NULL);
    free(p);
    return rc < 0 ? rc : 0;
}

typedef struct {
    cti_seq_fn fn;
    void *ud;
} seq_iter_t;

static int each_seq(const cti_row_t *row, void *ud)
{
    seq_iter_t *it = ud;
    return it->fn(cti_row_text(row, 0), cti_row_int(row, 1), it->ud);
}

int cti_seq_all(cti_db_t *db, cti_seq_fn fn, void *ud)
{
    seq_iter_t it = {fn, ud};
    int rc = cti_db_exec(db, "SELECT app_id, last_seq FROM app_seq", NULL, 0, each_seq, &it);
    return rc < 0 ? rc : 0;
}

int cti_seq_lock_many(cti_db_t *db, const char *const *apps, int n, cti_seq_fn fn, void *ud)
{
    assert(cti_db_in_tx(db)); /* the locks end with the statement otherwise */
    if (n == 0)
        return 0;
    cti_sql_val_t *p = cti_malloc((size_t)n * 2 * sizeof *p);
    for (int i = 0; i < n; i++) {
        p[2 * i] = CTI_SQL_TEXT(apps[i]);
        p[2 * i + 1] = CTI_SQL_INT(0);
    }
    /* New apps' rows first (no answer read: no round trip of its own), then
     * every row locked in one sorted order, the same in every transaction
     * (byte order: the chunks of 64 that cti_db_exec_in sends follow the
     * caller's strcmp order, and "C" makes PostgreSQL sort within a chunk alike). */
    int rc = cti_db_insert_new_rows(db, "INSERT INTO app_seq (app_id, last_seq)",
                                    "ON CONFLICT (app_id) DO NOTHING", 2, p, n, NULL, NULL);
    if (rc >= 0) {
        for (int i = 0; i < n; i++)
            p[i] = CTI_SQL_TEXT(apps[i]);
        bool row_locks = cti_store_has(cti_db_store(db), CTI_CAP_SKIP_LOCKED);
        seq_iter_t it = {fn, ud};
        rc = cti_db_exec_in(db, "SELECT app_id, last_seq FROM app_seq WHERE app_id IN",
                            row_locks ? "ORDER BY app_id COLLATE \"C\" FOR UPDATE"
                                      : "ORDER BY app_id",
                            NULL, 0, p, n, each_seq, &it);
    }
    free(p);
    return rc < 0 ? rc : 0;
}

typedef struct {
    cti_eventlog_fn fn;
    void *ud;
} log_iter_t;

static int each_log(const cti_row_t *row, void *ud)
{
    log_iter_t *it = ud;
    return it->fn(cti_row_int(row, 0), cti_row_text(row, 1), it->ud);
}

int cti_eventlog_since(cti_db_t *db, const char *app_id, int64_t since, int limit,
                       cti_eventlog_fn fn, void *ud)
{
    log_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(since), CTI_SQL_INT(limit)};
    return cti_db_exec(db,
                       "SELECT seq, body FROM event_log WHERE app_id = $1 AND seq > $2 "
                       "ORDER BY seq LIMIT $3",
                       p, 3, each_log, &it);
}

typedef struct {
    int64_t *oldest, *newest;
} bounds_t;

static int take_bounds(const cti_row_t *row, void *ud)
{
    bounds_t *b = ud;
    *b->oldest = cti_row_is_null(row, 0) ? 0 : cti_row_int(row, 0);
    *b->newest = cti_row_is_null(row, 1) ? 0 : cti_row_int(row, 1);
    return 1;
}

int cti_eventlog_bounds(cti_db_t *db, const char *app_id, int64_t *oldest, int64_t *newest)
{
    bounds_t b = {oldest, newest};
    *oldest = *newest = 0;
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    /* two ordered lookups, one from each end of the app's key range: an
     * aggregate over both ends read every row of the app's log on SQLite */
    int rc = cti_db_exec(db,
                         "SELECT (SELECT seq FROM event_log WHERE app_id = $1 ORDER BY seq "
                         "LIMIT 1), (SELECT seq FROM event_log WHERE app_id = $1 ORDER BY seq "
                         "DESC LIMIT 1)",
                         p, 1, take_bounds, &b);
    return rc < 0 ? rc : 0;
}

int cti_store_analyze_ingest(cti_db_t *db)
{
    static const char *const grown[] = {"raw_events", "calls", "call_events", "event_log",
                                        "webhook_deliveries"};
    return cti_db_analyze_stale(db, grown, (int)CTI_ARRAY_LEN(grown));
}
