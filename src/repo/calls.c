/* calls.c — SQL for call legs, timelines, voicemails, messages, agent status. */
#include "repo/calls.h"
#include "core/common.h"
#include "core/jw.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_COLS                                                                            \
    "call_id, direction, state, status, outcome, external_number, internal_number, contact, " \
    "target, dialpad_user_id, master_call_id, entry_point_call_id, operator_call_id, "       \
    "is_transferred, started_at, connected_at, ended_at, duration_ms, total_duration_ms, "   \
    "talk_time_ms, hold_time_ms, recording_urls, vm_url, vm_transcript, vm_recording_id, "   \
    "vm_duration_ms, progress_ts, fields_ts, fields_state, active_ts, active_state, flags, " \
    "sort_at, created_at, updated_at, custom_data"
#define NCOLS 36

enum { F_ENDED = 1, F_CONNECTED = 2, F_VOICEMAIL = 4, F_POST_CALL_ENDED = 8, F_RECONCILED = 16 };

static int64_t opt(const cti_row_t *r, int col, int64_t unknown)
{
    return cti_row_is_null(r, col) ? unknown : cti_row_int(r, col);
}

static void text(const cti_row_t *r, int col, char *dst, size_t cap)
{
    const char *v = cti_row_text(r, col);
    snprintf(dst, cap, "%s", v ? v : "");
}

static json_t *json_col(const cti_row_t *r, int col)
{
    const char *v = cti_row_text(r, col);
    return v ? json_loads(v, JSON_DECODE_ANY, NULL) : NULL;
}

static int read_call(const cti_row_t *r, void *ud)
{
    cti_call_t *c = ud;
    int st = cti_call_status_parse(cti_row_text(r, 3));
    c->call_id = cti_row_int(r, 0);
    text(r, 1, c->direction, sizeof c->direction);
    text(r, 2, c->state, sizeof c->state);
    c->status = st < 0 ? CTI_STATUS_RINGING : (cti_call_status_t)st;
    text(r, 5, c->external_number, sizeof c->external_number);
    text(r, 6, c->internal_number, sizeof c->internal_number);
    c->contact = cti_strdup(cti_row_text(r, 7));
    c->target = cti_strdup(cti_row_text(r, 8));
    c->dialpad_user_id = opt(r, 9, 0);
    c->master_call_id = opt(r, 10, 0);
    c->entry_point_call_id = opt(r, 11, 0);
    c->operator_call_id = opt(r, 12, 0);
    c->is_transferred = (int)opt(r, 13, -1);
    c->started_at = opt(r, 14, 0);
    c->connected_at = opt(r, 15, 0);
    c->ended_at = opt(r, 16, 0);
    c->duration_ms = opt(r, 17, CTI_NO_DURATION);
    c->total_duration_ms = opt(r, 18, CTI_NO_DURATION);
    c->talk_time_ms = opt(r, 19, CTI_NO_DURATION);
    c->hold_time_ms = opt(r, 20, CTI_NO_DURATION);
    json_decref(c->recording_urls);
    c->recording_urls = json_col(r, 21);
    if (!json_is_array(c->recording_urls)) {
        json_decref(c->recording_urls);
        c->recording_urls = json_array();
    }
    c->vm_url = cti_strdup(cti_row_text(r, 22));
    c->vm_transcript = cti_strdup(cti_row_text(r, 23));
    c->vm_recording_id = opt(r, 24, 0);
    c->vm_duration_ms = opt(r, 25, CTI_NO_DURATION);
    c->progress_ts = cti_row_int(r, 26);
    c->fields_ts = cti_row_int(r, 27);
    text(r, 28, c->fields_state, sizeof c->fields_state);
    c->active_ts = cti_row_int(r, 29);
    text(r, 30, c->active_state, sizeof c->active_state);
    int64_t flags = cti_row_int(r, 31);
    c->had_ended = flags & F_ENDED;
    c->had_connected = flags & F_CONNECTED;
    c->had_voicemail = flags & F_VOICEMAIL;
    c->post_call_ended = flags & F_POST_CALL_ENDED;
    c->reconciled = flags & F_RECONCILED;
    c->updated_at = cti_row_int(r, 34);
    c->custom_data = cti_strdup(cti_row_text(r, 35));
    return 1;
}

static cti_sql_val_t nz(int64_t v, int64_t unknown)
{
    return v == unknown ? CTI_SQL_NULLV : CTI_SQL_INT(v);
}

static cti_sql_val_t str_or_null(const char *s)
{
    return s && *s ? CTI_SQL_TEXT(s) : CTI_SQL_NULLV;
}

typedef struct {
    cti_call_fn fn;
    void *ud;
} call_iter_t;

static int each_call(const cti_row_t *row, void *ud)
{
    call_iter_t *it = ud;
    cti_call_t c;
    cti_call_init(&c, 0);
    read_call(row, &c);
    int rc = it->fn(&c, cti_row_text(row, NCOLS), cti_row_int(row, 32), it->ud);
    cti_call_clear(&c);
    return rc;
}

#define SELECT_CALLS "SELECT " CALL_COLUMNS CALLS_OF_APP
#define CALL_COLUMNS                                                                        \
    "c.call_id, c.direction, c.state, c.status, c.outcome, c.external_number, "    \
    "c.internal_number, c.contact, c.target, c.dialpad_user_id, c.master_call_id, "        \
    "c.entry_point_call_id, c.operator_call_id, c.is_transferred, c.started_at, "          \
    "c.connected_at, c.ended_at, c.duration_ms, c.total_duration_ms, c.talk_time_ms, "     \
    "c.hold_time_ms, c.recording_urls, c.vm_url, c.vm_transcript, c.vm_recording_id, "     \
    "c.vm_duration_ms, c.progress_ts, c.fields_ts, c.fields_state, c.active_ts, "          \
    "c.active_state, c.flags, c.sort_at, c.created_at, c.updated_at, c.custom_data, "    \
    "m.crm_user_id "
#define CALLS_OF_APP                                                                        \
    "FROM calls c LEFT JOIN user_mappings m ON m.app_id = c.app_id AND "                   \
    "m.dialpad_user_id = c.dialpad_user_id WHERE c.app_id = $1"

/* What reads need: the rendered call object, and the CRM user at read time. */
#define SELECT_DOCS                                                                         \
    "SELECT c.call_id, c.doc, c.sort_at, m.crm_user_id, c.dialpad_user_id, c.contact "     \
    "FROM calls c LEFT JOIN user_mappings m ON m.app_id = c.app_id AND "                   \
    "m.dialpad_user_id = c.dialpad_user_id WHERE c.app_id = $1"

typedef struct {
    cti_calldoc_fn fn;
    void *ud;
} doc_iter_t;

static int each_doc(const cti_row_t *row, void *ud)
{
    doc_iter_t *it = ud;
    cti_calldoc_t d = {cti_row_int(row, 0), cti_row_int(row, 2), opt(row, 4, 0),
                       cti_row_text(row, 1), cti_row_text(row, 3), cti_row_text(row, 5)};
    if (!d.doc) /* only before cti_calls_backfill_docs() ran: never served half-made */
        return CTI_EDB;
    return it->fn(&d, it->ud);
}

/* The upsert's SET list: every column but the key and created_at. The columns
 * of the indexes other than status (numbers, Dialpad user, sort_at) come apart:
 * SQLite maintains an index on an UPDATE only when a column it covers is SET,
 * so a leg whose keys are as stored leaves them out (CALL_UPSERT_LIGHT_TAIL)
 * and spares four index rewrites (and their pages). */
#define CALL_SET_KEYS                                                                        \
    "external_number = excluded.external_number, internal_number = excluded.internal_number, " \
    "dialpad_user_id = excluded.dialpad_user_id, sort_at = excluded.sort_at, "
#define CALL_SET_REST                                                                        \
    "direction = excluded.direction, state = excluded.state, status = excluded.status, "    \
    "outcome = excluded.outcome, contact = excluded.contact, target = excluded.target, "     \
    "master_call_id = excluded.master_call_id, "                                             \
    "entry_point_call_id = excluded.entry_point_call_id, "                                   \
    "operator_call_id = excluded.operator_call_id, is_transferred = excluded.is_transferred, " \
    "started_at = excluded.started_at, connected_at = excluded.connected_at, "               \
    "ended_at = excluded.ended_at, duration_ms = excluded.duration_ms, "                     \
    "total_duration_ms = excluded.total_duration_ms, talk_time_ms = excluded.talk_time_ms, " \
    "hold_time_ms = excluded.hold_time_ms, recording_urls = excluded.recording_urls, "       \
    "vm_url = excluded.vm_url, vm_transcript = excluded.vm_transcript, "                     \
    "vm_recording_id = excluded.vm_recording_id, vm_duration_ms = excluded.vm_duration_ms, " \
    "progress_ts = excluded.progress_ts, fields_ts = excluded.fields_ts, "                   \
    "fields_state = excluded.fields_state, active_ts = excluded.active_ts, "                 \
    "active_state = excluded.active_state, flags = excluded.flags, "                         \
    "updated_at = excluded.updated_at, custom_data = excluded.custom_data, doc = excluded.doc"
#define CALL_UPSERT_TAIL "ON CONFLICT (app_id, call_id) DO UPDATE SET " CALL_SET_KEYS CALL_SET_REST
#define CALL_UPSERT_LIGHT_TAIL "ON CONFLICT (app_id, call_id) DO UPDATE SET " CALL_SET_REST

#define ROW_VALUES (NCOLS + 2) /* app_id, the NCOLS columns, doc */
#define OWNED 2                /* strings a row's values point into */

/* The ROW_VALUES values of a leg's row (doc: its rendered call object, or NULL
 * to render it here); owned[OWNED] receive strings to free. */
static void call_row(const char *app_id, const cti_call_t *c, const char *doc, int64_t now,
                     cti_sql_val_t *p, char **owned)
{
    owned[0] = json_dumps(c->recording_urls, JSON_COMPACT);
    if (!doc) {
        cti_jw_t w = {0};
        cti_call_render(&w, c);
        doc = owned[1] = cti_jw_take(&w, NULL);
    }
    int64_t flags = (c->had_ended ? F_ENDED : 0) | (c->had_connected ? F_CONNECTED : 0) |
                    (c->had_voicemail ? F_VOICEMAIL : 0) |
                    (c->post_call_ended ? F_POST_CALL_ENDED : 0) |
                    (c->reconciled ? F_RECONCILED : 0);
    cti_sql_val_t row[ROW_VALUES] = {
        CTI_SQL_TEXT(app_id),
        CTI_SQL_INT(c->call_id),
        str_or_null(c->direction),
        str_or_null(c->state),
        CTI_SQL_TEXT(cti_call_status_name(c->status)),
        CTI_SQL_TEXT(cti_call_outcome(c)),
        str_or_null(c->external_number),
        str_or_null(c->internal_number),
        CTI_SQL_TEXT(c->contact),
        CTI_SQL_TEXT(c->target),
        nz(c->dialpad_user_id, 0),
        nz(c->master_call_id, 0),
        nz(c->entry_point_call_id, 0),
        nz(c->operator_call_id, 0),
        nz(c->is_transferred, -1),
        nz(c->started_at, 0),
        nz(c->connected_at, 0),
        nz(c->ended_at, 0),
        nz(c->duration_ms, CTI_NO_DURATION),
        nz(c->total_duration_ms, CTI_NO_DURATION),
        nz(c->talk_time_ms, CTI_NO_DURATION),
        nz(c->hold_time_ms, CTI_NO_DURATION),
        CTI_SQL_TEXT(owned[0]),
        CTI_SQL_TEXT(c->vm_url),
        CTI_SQL_TEXT(c->vm_transcript),
        nz(c->vm_recording_id, 0),
        nz(c->vm_duration_ms, CTI_NO_DURATION),
        CTI_SQL_INT(c->progress_ts),
        CTI_SQL_INT(c->fields_ts),
        CTI_SQL_TEXT(c->fields_state),
        CTI_SQL_INT(c->active_ts),
        CTI_SQL_TEXT(c->active_state),
        CTI_SQL_INT(flags),
        CTI_SQL_INT(cti_calls_sort_at(c)),
        CTI_SQL_INT(now),
        CTI_SQL_INT(now),
        CTI_SQL_TEXT(c->custom_data),
        CTI_SQL_TEXT(doc),
    };
    memcpy(p, row, sizeof row);
}

int64_t cti_calls_sort_at(const cti_call_t *c)
{
    return c->started_at ? c->started_at : c->fields_ts;
}

/* One upsert of the legs whose keys_same entry is want (all of them when
 * keys_same is NULL), with the SET list that fits. */
/* apps: each leg's app, or NULL for app_id's legs all. */
static int upsert(cti_db_t *db, const char *app_id, const char *const *apps,
                  cti_call_t *const *calls, const char *const *docs, const bool *keys_same,
                  bool want, int n, int64_t now)
{
    cti_sql_val_t *p = cti_malloc((size_t)(n ? n : 1) * ROW_VALUES * sizeof *p);
    char **owned = cti_calloc((size_t)(n ? n : 1) * OWNED, sizeof *owned);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!keys_same || keys_same[i] == want) {
            call_row(apps ? apps[i] : app_id, calls[i], docs ? docs[i] : NULL, now,
                     p + m * ROW_VALUES,
                     owned + m * OWNED);
            m++;
        }
    int rc = m == 0 ? 0
                    : cti_db_exec_rows(db, "INSERT INTO calls (app_id, " CALL_COLS ", doc)",
                                       keys_same && want ? CALL_UPSERT_LIGHT_TAIL
                                                         : CALL_UPSERT_TAIL,
                                       ROW_VALUES, p, m, NULL, NULL);
    for (int i = 0; i < OWNED * m; i++)
        free(owned[i]);
    free(owned);
    free(p);
    return rc < 0 ? rc : 0;
}

int cti_calls_save_apps(cti_db_t *db, const char *const *apps, const char *app_id,
                        cti_call_t *const *calls, const char *const *docs, const bool *keys_same,
                        int n, int64_t now)
{
    /* Where the SET list decides which indexes an update rewrites (SQLite),
     * legs whose keys are as stored take the statement that leaves them out;
     * elsewhere (PostgreSQL decides by value: HOT) one statement does. */
    if (!keys_same || !cti_store_has(cti_db_store(db), CTI_CAP_PARTIAL_UPDATE))
        return upsert(db, app_id, apps, calls, docs, NULL, false, n, now);
    int rc = upsert(db, app_id, apps, calls, docs, keys_same, false, n, now);
    return rc != 0 ? rc : upsert(db, app_id, apps, calls, docs, keys_same, true, n, now);
}

int cti_calls_add_timeline_apps(cti_db_t *db, const char *const *apps, const char *app_id,
                                const cti_timeline_row_t *rows, int n)
{
    cti_sql_val_t *p = cti_malloc((size_t)(n ? n : 1) * 8 * sizeof *p);
    for (int i = 0; i < n; i++) {
        cti_sql_val_t *r = p + i * 8;
        r[0] = CTI_SQL_TEXT(apps ? apps[i] : app_id);
        r[1] = CTI_SQL_INT(rows[i].call_id);
        r[2] = CTI_SQL_INT(rows[i].ts);
        r[3] = CTI_SQL_TEXT(rows[i].state);
        r[4] = CTI_SQL_INT(rows[i].received_at);
        r[5] = CTI_SQL_BOOL(rows[i].late);
        r[6] = CTI_SQL_INT(rows[i].raw_id);
        r[7] = CTI_SQL_TEXT(rows[i].reconciled ? "reconciled" : NULL);
    }
    int rc = cti_db_insert_new_rows(db, "INSERT INTO call_events (app_id, call_id, "
                                        "event_timestamp, state, received_at, late, raw_event_id, "
                                        "source)",
                                    "ON CONFLICT DO NOTHING", 8, p, n, NULL, NULL);
    free(p);
    return rc < 0 ? rc : 0;
}

int cti_calls_load_many(cti_db_t *db, const char *app_id, const int64_t *ids, int n,
                        cti_call_fn fn, void *ud)
{
    cti_sql_val_t fixed = CTI_SQL_TEXT(app_id);
    cti_sql_val_t *list = cti_malloc((size_t)(n ? n : 1) * sizeof *list);
    for (int i = 0; i < n; i++)
        list[i] = CTI_SQL_INT(ids[i]);
    call_iter_t it = {fn, ud};
    int rc = cti_db_exec_in(db, SELECT_CALLS " AND c.call_id IN", "", &fixed, 1, list, n,
                            each_call, &it);
    free(list);
    return rc < 0 ? rc : 0;
}

typedef struct {
    cti_call_app_fn fn;
    void *ud;
    const char *app_id; /* NULL: the row's last column says */
} call_app_iter_t;

static int each_call_app(const cti_row_t *row, void *ud)
{
    call_app_iter_t *it = ud;
    cti_call_t c;
    cti_call_init(&c, 0);
    read_call(row, &c);
    int rc = it->fn(it->app_id ? it->app_id : cti_row_text(row, NCOLS + 1), &c,
                    cti_row_text(row, NCOLS), cti_row_int(row, 32), it->ud);
    cti_call_clear(&c);
    return rc;
}

typedef struct {
    const char *app;
    int64_t id;
} pair_t;

static int by_app(const void *x, const void *y)
{
    return strcmp(((const pair_t *)x)->app, ((const pair_t *)y)->app);
}

/* What a per-app fallback of over_pairs runs for one app and its ids. */
typedef int (*per_app_fn)(cti_db_t *db, const char *app_id, const cti_sql_val_t *ids, int n,
                          void *ud);

/* Runs sql over n (apps[i], ids[i]) pairs in one statement where the backend
 * has arrays ($1 the apps, $2 the ids, each as an array literal; row_fn sees
 * the rows); else per_app once per app with that app's ids. */
static int over_pairs(cti_db_t *db, const char *const *apps, const int64_t *ids, int n,
                      const char *sql, cti_row_fn row_fn, per_app_fn per_app, void *ud)
{
    if (n == 0)
        return 0;
    if (cti_store_has(cti_db_store(db), CTI_CAP_ARRAYS)) {
        cti_jw_t a = {0}, b = {0};
        cti_db_array_literal(&a, apps, NULL, n);
        cti_db_array_literal(&b, NULL, ids, n);
        char *at = cti_jw_take(&a, NULL), *bt = cti_jw_take(&b, NULL);
        cti_sql_val_t p[] = {CTI_SQL_TEXT(at), CTI_SQL_TEXT(bt)};
        int rc = cti_db_exec(db, sql, p, 2, row_fn, ud);
        free(at);
        free(bt);
        return rc < 0 ? rc : 0;
    }
    /* one statement per app (in-process on SQLite: no round trips to save) */
    pair_t *pairs = cti_malloc((size_t)n * sizeof *pairs);
    cti_sql_val_t *vals = cti_malloc((size_t)n * sizeof *vals);
    for (int i = 0; i < n; i++)
        pairs[i] = (pair_t){apps[i], ids[i]};
    qsort(pairs, (size_t)n, sizeof *pairs, by_app);
    int rc = 0;
    for (int i = 0; rc == 0 && i < n;) {
        int k = 0;
        const char *app = pairs[i].app;
        while (i < n && !strcmp(pairs[i].app, app))
            vals[k++] = CTI_SQL_INT(pairs[i++].id);
        rc = per_app(db, app, vals, k, ud);
    }
    free(pairs);
    free(vals);
    return rc < 0 ? rc : 0;
}

static int legs_of_app(cti_db_t *db, const char *app_id, const cti_sql_val_t *ids, int n,
                       void *ud)
{
    call_app_iter_t it = *(call_app_iter_t *)ud;
    it.app_id = app_id;
    cti_sql_val_t fixed = CTI_SQL_TEXT(app_id);
    return cti_db_exec_in(db, SELECT_CALLS " AND c.call_id IN", "", &fixed, 1, ids, n,
                          each_call_app, &it);
}

int cti_calls_load_pairs(cti_db_t *db, const char *const *apps, const int64_t *ids, int n,
                         cti_call_app_fn fn, void *ud)
{
    call_app_iter_t it = {fn, ud, NULL};
    return over_pairs(db, apps, ids, n,
                      "SELECT " CALL_COLUMNS ", c.app_id FROM unnest($1::text[], $2::bigint[]) "
                      "AS k(app_id, call_id) JOIN calls c ON c.app_id = k.app_id AND c.call_id = "
                      "k.call_id LEFT JOIN user_mappings m ON m.app_id = c.app_id AND "
                      "m.dialpad_user_id = c.dialpad_user_id",
                      each_call_app, legs_of_app, &it);
}

#define CRM_USERS_OF_APP                                                                    \
    "SELECT dialpad_user_id, crm_user_id FROM user_mappings WHERE app_id = $1 AND "          \
    "dialpad_user_id IN"

typedef struct {
    cti_crm_app_fn fn;
    void *ud;
    const char *app_id; /* NULL: the row's first column says */
} crm_app_iter_t;

static int each_crm_app(const cti_row_t *row, void *ud)
{
    crm_app_iter_t *it = ud;
    return it->app_id ? it->fn(it->app_id, cti_row_int(row, 0), cti_row_text(row, 1), it->ud)
                      : it->fn(cti_row_text(row, 0), cti_row_int(row, 1), cti_row_text(row, 2),
                               it->ud);
}

static int crm_users_of_app(cti_db_t *db, const char *app_id, const cti_sql_val_t *ids, int n,
                            void *ud)
{
    crm_app_iter_t it = *(crm_app_iter_t *)ud;
    it.app_id = app_id;
    cti_sql_val_t fixed = CTI_SQL_TEXT(app_id);
    return cti_db_exec_in(db, CRM_USERS_OF_APP, "", &fixed, 1, ids, n, each_crm_app, &it);
}

int cti_crm_users_pairs(cti_db_t *db, const char *const *apps, const int64_t *users, int n,
                        cti_crm_app_fn fn, void *ud)
{
    crm_app_iter_t it = {fn, ud, NULL};
    return over_pairs(db, apps, users, n,
                      "SELECT m.app_id, m.dialpad_user_id, m.crm_user_id FROM "
                      "unnest($1::text[], $2::bigint[]) AS k(app_id, user_id) JOIN "
                      "user_mappings m ON m.app_id = k.app_id AND m.dialpad_user_id = k.user_id",
                      each_crm_app, crm_users_of_app, &it);
}

int cti_voicemails_save(cti_db_t *db, const char *app_id, const cti_call_t *c, int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id),
                         CTI_SQL_INT(c->call_id),
                         CTI_SQL_TEXT(c->vm_url),
                         nz(c->vm_recording_id, 0),
                         CTI_SQL_TEXT(c->vm_transcript),
                         nz(c->vm_duration_ms, CTI_NO_DURATION),
                         str_or_null(c->external_number),
                         nz(c->dialpad_user_id, 0),
                         CTI_SQL_INT(now),
                         /* when it was left: the call's end, else its newest event */
                         CTI_SQL_INT(c->ended_at ? c->ended_at : c->fields_ts)};
    return cti_db_exec(db,
                       "INSERT INTO voicemails (app_id, call_id, url, recording_id, transcript, "
                       "duration_ms, external_number, dialpad_user_id, created_at, updated_at) "
                       "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9) "
                       "ON CONFLICT (app_id, call_id) DO UPDATE SET url = excluded.url, "
                       "recording_id = excluded.recording_id, transcript = excluded.transcript, "
                       "duration_ms = excluded.duration_ms, "
                       "external_number = excluded.external_number, "
                       "dialpad_user_id = excluded.dialpad_user_id, "
                       "created_at = excluded.created_at, updated_at = excluded.updated_at",
                       p, 10, NULL, NULL);
}

/* Every number of a message (from and to), for lookups by number. */
static int index_numbers(cti_db_t *db, const char *app_id, const cti_message_t *m)
{
    size_t nto = json_array_size(m->to_numbers), n = 0, i;
    cti_sql_val_t *p = cti_malloc((nto + 1) * 3 * sizeof *p);
    json_t *v;
    if (m->from_number[0]) {
        p[0] = CTI_SQL_TEXT(app_id), p[1] = CTI_SQL_TEXT(m->from_number);
        p[2] = CTI_SQL_INT(m->message_id);
        n++;
    }
    json_array_foreach(m->to_numbers, i, v) if (json_is_string(v)) {
        p[3 * n] = CTI_SQL_TEXT(app_id), p[3 * n + 1] = CTI_SQL_TEXT(json_string_value(v));
        p[3 * n + 2] = CTI_SQL_INT(m->message_id);
        n++;
    }
    int rc = n ? cti_db_exec_rows(db, "INSERT INTO message_numbers (app_id, number, message_id)",
                                  "ON CONFLICT DO NOTHING", 3, p, (int)n, NULL, NULL)
               : 0;
    free(p);
    return rc < 0 ? rc : 0;
}

int cti_messages_apply(cti_db_t *db, const char *app_id, const cti_message_t *m, int64_t now,
                       bool *existed)
{
    int64_t latest = 0;
    cti_sql_val_t k[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(m->message_id)};
    int rc = cti_db_query_int(db,
                              "SELECT latest_ts FROM messages WHERE app_id = $1 AND message_id = $2",
                              k, 2, &latest);
    if (rc != 0 && rc != CTI_ENOTFOUND)
        return rc;
    *existed = rc == 0;
    if (*existed && m->event_timestamp < latest)
        return 0; /* an older state of a known message: the newest one wins */
    char *to = m->to_numbers ? json_dumps(m->to_numbers, JSON_COMPACT) : cti_strdup("[]");
    char *contact = m->contact ? json_dumps(m->contact, JSON_COMPACT) : NULL;
    char *target = m->target ? json_dumps(m->target, JSON_COMPACT) : NULL;
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id),          CTI_SQL_INT(m->message_id),
                         str_or_null(m->direction),     str_or_null(m->from_number),
                         CTI_SQL_TEXT(to),              CTI_SQL_TEXT(m->text),
                         str_or_null(m->status),        nz(m->dialpad_user_id, 0),
                         CTI_SQL_TEXT(contact),         CTI_SQL_TEXT(target),
                         CTI_SQL_INT(m->event_timestamp), CTI_SQL_INT(m->created_at),
                         CTI_SQL_INT(now)};
    rc = cti_db_exec(db,
                     "INSERT INTO messages (app_id, message_id, direction, from_number, "
                     "to_numbers, text, status, dialpad_user_id, contact, target, latest_ts, "
                     "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                     "$11, $12, $13) ON CONFLICT (app_id, message_id) DO UPDATE SET "
                     "direction = COALESCE(excluded.direction, messages.direction), "
                     "from_number = COALESCE(excluded.from_number, messages.from_number), "
                     /* a status event may name no recipient: keep the known ones */
                     "to_numbers = CASE WHEN excluded.to_numbers = '[]' "
                     "THEN messages.to_numbers ELSE excluded.to_numbers END, "
                     "text = COALESCE(excluded.text, messages.text), status = excluded.status, "
                     "dialpad_user_id = COALESCE(excluded.dialpad_user_id, messages.dialpad_user_id), "
                     "contact = COALESCE(excluded.contact, messages.contact), "
                     "target = COALESCE(excluded.target, messages.target), "
                     "latest_ts = excluded.latest_ts, updated_at = excluded.updated_at",
                     p, 13, NULL, NULL);
    free(to);
    free(contact);
    free(target);
    return rc == 0 ? index_numbers(db, app_id, m) : rc;
}

int cti_agent_status_add(cti_db_t *db, const char *app_id, int64_t target_id, int64_t ts,
                         const char *body, int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(target_id), CTI_SQL_INT(ts),
                         CTI_SQL_TEXT(body), CTI_SQL_INT(now)};
    return cti_db_exec(db,
                       "INSERT INTO agent_status (app_id, target_id, event_timestamp, body, "
                       "received_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                       p, 5, NULL, NULL);
}

/* ---- reading ---------------------------------------------------------------------- */

/* A WHERE clause under construction, with its parameters; hit holds the
 * conditions no index serves when a bounded walk tests them (see calls_query). */
typedef struct {
    char sql[2048];
    size_t len;
    char hit[512];
    size_t hit_len;
    cti_sql_val_t p[24];
    int n;
} query_t;

/* Appends " AND <cond>" to buf, each '?' in cond standing for parameter $param. */
static void cond_add(char *buf, size_t cap, size_t *len, const char *cond, int param)
{
    *len += (size_t)snprintf(buf + *len, cap - *len, " AND ");
    for (const char *c = cond; *c && *len + 4 < cap; c++) {
        if (*c == '?')
            *len += (size_t)snprintf(buf + *len, cap - *len, "$%d", param);
        else
            buf[(*len)++] = *c;
    }
    buf[*len] = '\0';
}

/* A condition of the WHERE clause, with v as its parameter. */
static void q_add(query_t *q, const char *cond, cti_sql_val_t v)
{
    q->p[q->n++] = v;
    cond_add(q->sql, sizeof q->sql, &q->len, cond, q->n);
}

/* A condition no index serves (v: its parameter, or none when NULL). */
static void q_hit(query_t *q, const char *cond, const cti_sql_val_t *v)
{
    if (v)
        q->p[q->n++] = *v;
    cond_add(q->hit, sizeof q->hit, &q->hit_len, cond, q->n);
}

typedef struct {
    int n;
    int64_t id;
} users_t;

static int each_user(const cti_row_t *row, void *ud)
{
    users_t *u = ud;
    u->id = cti_row_int(row, 0);
    return ++u->n > 1; /* two are enough to know it is not one */
}

static int calls_query(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                       cti_call_walk_t *walk, cti_calldoc_fn fn, void *ud);

int cti_calls_query(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                    cti_calldoc_fn fn, void *ud)
{
    return cti_calls_query_walk(db, app_id, f, limit, NULL, fn, ud);
}

int cti_calls_query_walk(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                         cti_call_walk_t *walk, cti_calldoc_fn fn, void *ud)
{
    if (walk)
        walk->cut = false;
    if (!f->crm_user_id || f->dialpad_user_id)
        return calls_query(db, app_id, f, limit, walk, fn, ud);
    /* A CRM user is usually one Dialpad user: then the legs are that user's, read
     * newest first from calls_by_user until the page is full. Through the mappings
     * in the query, every leg of the users was read and sorted (83 ms for an agent's
     * ~5,000 legs in 1 M; make bench-scale). Several users keep that. */
    users_t u = {0};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(f->crm_user_id)};
    int rc = cti_db_exec(db,
                         "SELECT dialpad_user_id FROM user_mappings WHERE app_id = $1 AND "
                         "crm_user_id = $2 LIMIT 2",
                         p, 2, each_user, &u);
    if (rc < 0)
        return rc;
    if (u.n == 0)
        return 0;
    if (u.n > 1)
        return calls_query(db, app_id, f, limit, walk, fn, ud);
    cti_call_filter_t one = *f;
    one.crm_user_id = NULL;
    one.dialpad_user_id = u.id;
    return calls_query(db, app_id, &one, limit, walk, fn, ud);
}

/* The legs a bounded walk answers: each newer than the last (the walk's order),
 * counted, so that a short page knows it is short. */
typedef struct {
    doc_iter_t it;
    int n;
    int64_t at, id;
} walked_t;

static int each_walked(const cti_row_t *row, void *ud)
{
    walked_t *w = ud;
    int64_t id = cti_row_int(row, 0), at = cti_row_int(row, 2);
    /* the outer query keeps its subquery's order (pinned by tests/store/test_plans.c);
     * a planner that did not would be found here, not answered out of order */
    if (w->n > 0 && (at > w->at || (at == w->at && id >= w->id)))
        return CTI_EDB;
    w->n++, w->at = at, w->id = id;
    return each_doc(row, &w->it);
}

static int last_walked(const cti_row_t *row, void *ud)
{
    cti_call_walk_t *walk = ud;
    walk->cut = true;
    walk->at = cti_row_int(row, 0);
    walk->id = cti_row_int(row, 1);
    return 0;
}

static int calls_query(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                       cti_call_walk_t *walk, cti_calldoc_fn fn, void *ud)
{
    query_t q = {.n = 1};
    q.p[0] = CTI_SQL_TEXT(app_id);
    /* the conditions an index serves first: a bounded walk's last leg is found
     * with these parameters alone ($1..$nwhere) */
    if (f->status)
        q_add(&q, "c.status = ?", CTI_SQL_TEXT(f->status));
    if (f->active_only)
        q.len += (size_t)snprintf(q.sql + q.len, sizeof q.sql - q.len,
                                  " AND c.status IN ('ringing', 'active', 'on_hold')");
    if (f->dialpad_user_id)
        q_add(&q, "c.dialpad_user_id = ?", CTI_SQL_INT(f->dialpad_user_id));
    if (f->custom_data)
        q_add(&q, /* through its own (partial) index, not the recency walk */
              "c.call_id IN (SELECT call_id FROM calls WHERE app_id = $1 AND custom_data = ? "
              "AND custom_data IS NOT NULL)",
              CTI_SQL_TEXT(f->custom_data));
    if (f->crm_user_id)
        q_add(&q,
              "c.dialpad_user_id IN (SELECT dialpad_user_id FROM user_mappings WHERE "
              "app_id = $1 AND crm_user_id = ?)",
              CTI_SQL_TEXT(f->crm_user_id));
    if (f->number) /* each side through its own index (an OR would scan by recency) */
        q_add(&q,
              "c.call_id IN (SELECT call_id FROM calls WHERE app_id = $1 AND "
              "external_number = ? UNION SELECT call_id FROM calls WHERE app_id = $1 AND "
              "internal_number = ?)",
              CTI_SQL_TEXT(f->number));
    if (f->from)
        q_add(&q, "c.sort_at >= ?", CTI_SQL_INT(f->from));
    if (f->to)
        q_add(&q, "c.sort_at < ?", CTI_SQL_INT(f->to));
    if (f->has_cursor) { /* keyset: strictly after (cursor_at, cursor_id), newest first */
        q.p[q.n++] = CTI_SQL_INT(f->cursor_at);
        q.p[q.n++] = CTI_SQL_INT(f->cursor_id);
        /* "sort_at <=" first: the bound of the index range on both backends
         * (PostgreSQL takes the OR alone as a filter, walking every newer leg) */
        q.len += (size_t)snprintf(q.sql + q.len, sizeof q.sql - q.len,
                                  " AND c.sort_at <= $%d AND (c.sort_at < $%d OR "
                                  "(c.sort_at = $%d AND c.call_id < $%d))",
                                  q.n - 1, q.n - 1, q.n - 1, q.n);
    }
    int nwhere = q.n;
    /* no index: tested on each leg of the walk */
    cti_sql_val_t v;
    if (f->state)
        v = CTI_SQL_TEXT(f->state), q_hit(&q, "c.state = ?", &v);
    if (f->outcome)
        v = CTI_SQL_TEXT(f->outcome), q_hit(&q, "c.outcome = ?", &v);
    if (f->direction)
        v = CTI_SQL_TEXT(f->direction), q_hit(&q, "c.direction = ?", &v);
    if (f->root_only)
        q_hit(&q, "c.master_call_id IS NULL AND c.entry_point_call_id IS NULL", NULL);
    /* Which index drives the query (tests/store/test_plans.c checks). The legs
     * of a number, of the live statuses, of a custom_data (no walk over every
     * leg when none has it) or of a CRM user's Dialpad users are
     * found by their own indexes, several ranges, and sorted: "+sort_at" keeps
     * SQLite from walking the recency index over every call instead. One status
     * or one user has an index in sort_at order: "+call_id" leaves the recency
     * index no better at the order, so SQLite reads that one newest first,
     * sorting only ties. Otherwise the recency index, newest first, until the
     * page is full. */
    const char *sort_at = "", *call_id = "";
    if (f->number || f->active_only || f->crm_user_id || f->custom_data)
        sort_at = "+";
    else if (f->status || f->dialpad_user_id)
        call_id = "+";
    char order[96];
    snprintf(order, sizeof order, " ORDER BY %sc.sort_at DESC, %sc.call_id DESC", sort_at,
             call_id);
    if (!q.hit_len || !walk || walk->max <= 0) { /* one query: the walk ends with the page */
        q.p[q.n++] = CTI_SQL_INT(limit);
        char sql[3072];
        snprintf(sql, sizeof sql, "%s%s%s%s LIMIT $%d", SELECT_DOCS, q.sql, q.hit, order, q.n);
        doc_iter_t it = {fn, ud};
        return cti_db_exec(db, sql, q.p, q.n, each_doc, &it);
    }
    /* A bounded walk. Conditions no index serves are tested on each leg of the
     * walk, which reads at most walk->max legs for one page: a filter that few
     * legs match read every leg of the app before it answered (linear in the
     * data: 2.4 s at 1 M legs; docs/PERFORMANCE.md). Each leg is tested in the
     * subquery, which reads only the columns of the test, its order and, for a
     * match, its doc; the outer query stops with the page full, and the
     * subquery (SQLite's co-routine, PostgreSQL's pulled rows) with it. */
    q.p[q.n++] = CTI_SQL_INT(walk->max);
    q.p[q.n++] = CTI_SQL_INT(limit);
    char sql[8192];
    snprintf(sql, sizeof sql,
             "SELECT call_id, doc, sort_at, crm_user_id, dialpad_user_id, contact FROM ("
             "SELECT c.call_id, c.sort_at, c.dialpad_user_id, (TRUE%s) AS hit, "
             "CASE WHEN TRUE%s THEN c.doc END AS doc, "
             "CASE WHEN TRUE%s THEN (SELECT m.crm_user_id FROM user_mappings m WHERE "
             "m.app_id = c.app_id AND m.dialpad_user_id = c.dialpad_user_id) END AS crm_user_id, "
             "CASE WHEN TRUE%s THEN c.contact END AS contact "
             "FROM calls c WHERE c.app_id = $1%s%s LIMIT $%d) w WHERE hit LIMIT $%d",
             q.hit, q.hit, q.hit, q.hit, q.sql, order, q.n - 1, q.n);
    walked_t w = {{fn, ud}, 0, 0, 0};
    int rc = cti_db_exec(db, sql, q.p, q.n, each_walked, &w);
    if (rc != 0 || w.n == limit)
        return rc;
    /* A short page: the walk ended with the legs, or at its bound. Which one,
     * and where: the walk's last leg, by the index alone. */
    q.p[nwhere] = CTI_SQL_INT(walk->max - 1);
    snprintf(sql, sizeof sql, "SELECT c.sort_at, c.call_id FROM calls c WHERE c.app_id = $1%s%s "
             "LIMIT 1 OFFSET $%d", q.sql, order, nwhere + 1);
    rc = cti_db_exec(db, sql, q.p, nwhere + 1, last_walked, walk);
    if (rc < 0)
        return rc;
    /* Legs stored between the two statements (newer ones, on a first page) move
     * that position up. Never resume at or above a leg this page answered: the
     * next page would answer it again. Below it, the legs tested twice are ones
     * the page did not answer. */
    if (walk->cut && w.n > 0 && (walk->at > w.at || (walk->at == w.at && walk->id >= w.id)))
        walk->at = w.at, walk->id = w.id;
    return 0;
}

int cti_calls_get(cti_db_t *db, const char *app_id, int64_t call_id, cti_call_fn fn, void *ud)
{
    call_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(call_id)};
    int rc = cti_db_exec(db, SELECT_CALLS " AND c.call_id = $2", p, 2, each_call, &it);
    return rc < 0 ? rc : 0;
}

int cti_calls_linked(cti_db_t *db, const char *app_id, const cti_call_t *c, cti_calldoc_fn fn,
                     void *ud)
{
    doc_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(c->call_id),
                         CTI_SQL_INT(c->master_call_id), CTI_SQL_INT(c->entry_point_call_id),
                         CTI_SQL_INT(c->operator_call_id)};
    /* each link through its own index (calls_by_master, _by_entry_point,
     * _by_operator; an OR of them walked the app's calls), then by key */
    int rc = cti_db_exec(db,
                         SELECT_DOCS " AND c.call_id <> $2 AND c.call_id IN ("
                                     "SELECT call_id FROM calls WHERE app_id = $1 AND "
                                     "master_call_id = $2 UNION ALL "
                                     "SELECT call_id FROM calls WHERE app_id = $1 AND "
                                     "entry_point_call_id = $2 UNION ALL "
                                     "SELECT call_id FROM calls WHERE app_id = $1 AND "
                                     "operator_call_id = $2 UNION ALL SELECT CAST($3 AS BIGINT) "
                                     "UNION ALL SELECT CAST($4 AS BIGINT) UNION ALL "
                                     "SELECT CAST($5 AS BIGINT)) ORDER BY +c.sort_at, c.call_id",
                         p, 5, each_doc, &it);
    return rc < 0 ? rc : 0;
}

typedef struct {
    cti_timeline_fn fn;
    void *ud;
} timeline_iter_t;

static int each_timeline(const cti_row_t *row, void *ud)
{
    timeline_iter_t *it = ud;
    return it->fn(cti_row_text(row, 0), cti_row_int(row, 1), cti_row_int(row, 2),
                  cti_row_int(row, 3) != 0, !cti_row_is_null(row, 4), it->ud);
}

int cti_calls_timeline(cti_db_t *db, const char *app_id, int64_t call_id, cti_timeline_fn fn,
                       void *ud)
{
    timeline_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(call_id)};
    int rc = cti_db_exec(db,
                         "SELECT state, event_timestamp, received_at, late, source FROM call_events "
                         "WHERE app_id = $1 AND call_id = $2 ORDER BY event_timestamp, state",
                         p, 2, each_timeline, &it);
    return rc < 0 ? rc : 0;
}

/* ---- rows stored before the doc column ---------------------------------------------- */

#define BACKFILL_BATCH 500

typedef struct {
    char app_id[37];
    int64_t call_id, updated_at;
    char *doc;
} filled_t;

typedef struct {
    filled_t rows[BACKFILL_BATCH];
    int n;
} backfill_t;

static int render_old(const cti_row_t *row, void *ud)
{
    backfill_t *b = ud;
    filled_t *f = &b->rows[b->n++];
    cti_call_t c;
    cti_call_init(&c, 0);
    read_call(row, &c);
    cti_jw_t doc = {0};
    cti_call_render(&doc, &c);
    snprintf(f->app_id, sizeof f->app_id, "%s", cti_row_text(row, NCOLS));
    f->call_id = c.call_id;
    f->updated_at = c.updated_at;
    f->doc = cti_jw_take(&doc, NULL);
    cti_call_clear(&c);
    return 0;
}

int cti_calls_backfill_docs(cti_db_t *db)
{
    assert(!cti_db_in_tx(db)); /* its batches are transactions of their own */
    backfill_t *b = cti_malloc(sizeof *b);
    int rc = 0, total = 0;
    do { /* batches, each its own transaction */
        b->n = 0;
        if ((rc = cti_db_begin(db)) != 0)
            break;
        cti_sql_val_t limit = CTI_SQL_INT(BACKFILL_BATCH);
        rc = cti_db_exec(db, "SELECT " CALL_COLS ", app_id FROM calls WHERE doc IS NULL LIMIT $1",
                         &limit, 1, render_old, b);
        for (int i = 0; i < b->n; i++) {
            /* only if unchanged since it was read (another instance may be writing it) */
            cti_sql_val_t p[] = {CTI_SQL_TEXT(b->rows[i].app_id), CTI_SQL_INT(b->rows[i].call_id),
                                 CTI_SQL_TEXT(b->rows[i].doc), CTI_SQL_INT(b->rows[i].updated_at)};
            int64_t changed = 0;
            if (rc >= 0)
                rc = cti_db_exec_count(db,
                                       "UPDATE calls SET doc = $3 WHERE app_id = $1 AND "
                                       "call_id = $2 AND doc IS NULL AND updated_at = $4 "
                                       "RETURNING call_id",
                                       p, 4, &changed);
            total += (int)changed;
            free(b->rows[i].doc);
        }
        if (rc < 0) {
            cti_db_rollback(db);
            break;
        }
        rc = cti_db_commit(db);
    } while (rc == 0 && b->n == BACKFILL_BATCH);
    free(b);
    return rc < 0 ? rc : total;
}
