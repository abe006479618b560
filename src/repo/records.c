/* records.c — SQL for reading voicemails and messages. See records.h. */
#include "repo/records.h"
#include "core/common.h"

#include <stdio.h>
#include <string.h>

/* A query under construction: base SQL, then AND-ed conditions. */
typedef struct {
    char sql[1536];
    size_t len;
    cti_sql_val_t p[16];
    int n;
} q_t;

/* Appends " AND <sql with $N for the new parameter>", N being its number. */
static void cond1(q_t *q, const char *before, cti_sql_val_t v, const char *after)
{
    q->p[q->n++] = v;
    q->len += (size_t)snprintf(q->sql + q->len, sizeof q->sql - q->len, " AND %s$%d%s", before,
                               q->n, after);
}

/* The filters both lists share; col_time/col_id name the keyset columns. */
static void common_filters(q_t *q, const cti_record_filter_t *f, const char *col_time,
                           const char *col_id)
{
    char a[64], b[64];
    if (f->dialpad_user_id)
        cond1(q, "dialpad_user_id = ", CTI_SQL_INT(f->dialpad_user_id), "");
    snprintf(a, sizeof a, "%s >= ", col_time);
    if (f->from)
        cond1(q, a, CTI_SQL_INT(f->from), "");
    snprintf(a, sizeof a, "%s < ", col_time);
    if (f->to)
        cond1(q, a, CTI_SQL_INT(f->to), "");
    if (f->has_cursor) {
        q->p[q->n++] = CTI_SQL_INT(f->cursor_at);
        q->p[q->n++] = CTI_SQL_INT(f->cursor_id);
        snprintf(a, sizeof a, "%s", col_time);
        snprintf(b, sizeof b, "%s", col_id);
        /* "<=" first: the bound of the index range on both backends (PostgreSQL
         * takes the OR alone as a filter, walking every newer row; make bench-scale) */
        q->len += (size_t)snprintf(q->sql + q->len, sizeof q->sql - q->len,
                                   " AND %s <= $%d AND (%s < $%d OR (%s = $%d AND %s < $%d))", a,
                                   q->n - 1, a, q->n - 1, a, q->n - 1, b, q->n);
    }
}

/* few_rows: a condition picks few rows by its own index; "+" keeps SQLite from
 * walking the recency index over every row instead. */
static void finish(q_t *q, const char *col_time, const char *col_id, int limit, bool few_rows)
{
    q->p[q->n++] = CTI_SQL_INT(limit);
    snprintf(q->sql + q->len, sizeof q->sql - q->len, " ORDER BY %s%s DESC, %s DESC LIMIT $%d",
             few_rows ? "+" : "", col_time, col_id, q->n);
}

static int64_t opt(const cti_row_t *r, int col, int64_t none)
{
    return cti_row_is_null(r, col) ? none : cti_row_int(r, col);
}

/* ---- voicemails -------------------------------------------------------------------- */

#define VM_SELECT                                                                          \
    "SELECT call_id, url, recording_id, transcript, duration_ms, external_number, "       \
    "dialpad_user_id, created_at FROM voicemails WHERE app_id = $1"

typedef struct {
    cti_voicemail_fn fn;
    void *ud;
    int rows;
} vm_iter_t;

static int each_vm(const cti_row_t *r, void *ud)
{
    vm_iter_t *it = ud;
    cti_voicemail_t v = {cti_row_int(r, 0), opt(r, 2, 0), opt(r, 4, -1), opt(r, 6, 0),
                         cti_row_int(r, 7), cti_row_text(r, 1), cti_row_text(r, 3),
                         cti_row_text(r, 5)};
    it->rows++;
    return it->fn(&v, it->ud);
}

int cti_voicemails_query(cti_db_t *db, const char *app_id, const cti_record_filter_t *f,
                         int limit, cti_voicemail_fn fn, void *ud)
{
    q_t q = {.n = 1};
    q.p[0] = CTI_SQL_TEXT(app_id);
    q.len = (size_t)snprintf(q.sql, sizeof q.sql, "%s", VM_SELECT);
    if (f->number)
        cond1(&q, "external_number = ", CTI_SQL_TEXT(f->number), "");
    common_filters(&q, f, "created_at", "call_id");
    finish(&q, "created_at", "call_id", limit, false);
    vm_iter_t it = {fn, ud, 0};
    int rc = cti_db_exec(db, q.sql, q.p, q.n, each_vm, &it);
    return rc < 0 ? rc : 0;
}

int cti_voicemails_get(cti_db_t *db, const char *app_id, int64_t call_id, cti_voicemail_fn fn,
                       void *ud)
{
    vm_iter_t it = {fn, ud, 0};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(call_id)};
    int rc = cti_db_exec(db, VM_SELECT " AND call_id = $2", p, 2, each_vm, &it);
    return rc < 0 ? rc : it.rows ? 0 : CTI_ENOTFOUND;
}

/* ---- messages ------------------------------------------------------------------------- */

#define MSG_SELECT                                                                         \
    "SELECT message_id, direction, from_number, to_numbers, text, status, dialpad_user_id, " \
    "contact, created_at FROM messages WHERE app_id = $1"

typedef struct {
    cti_message_fn fn;
    void *ud;
    int rows;
} msg_iter_t;

static int each_msg(const cti_row_t *r, void *ud)
{
    msg_iter_t *it = ud;
    cti_message_row_t m = {cti_row_int(r, 0),  opt(r, 6, 0),       cti_row_int(r, 8),
                           cti_row_text(r, 1), cti_row_text(r, 2), cti_row_text(r, 3),
                           cti_row_text(r, 4), cti_row_text(r, 5), cti_row_text(r, 7)};
    it->rows++;
    return it->fn(&m, it->ud);
}

int cti_messages_query(cti_db_t *db, const char *app_id, const cti_record_filter_t *f, int limit,
                       cti_message_fn fn, void *ud)
{
    q_t q = {.n = 1};
    q.p[0] = CTI_SQL_TEXT(app_id);
    q.len = (size_t)snprintf(q.sql, sizeof q.sql, "%s", MSG_SELECT);
    if (f->direction)
        cond1(&q, "direction = ", CTI_SQL_TEXT(f->direction), "");
    if (f->number) /* from or to: message_numbers holds both */
        cond1(&q,
              "message_id IN (SELECT message_id FROM message_numbers WHERE app_id = $1 AND "
              "number = ",
              CTI_SQL_TEXT(f->number), ")");
    common_filters(&q, f, "created_at", "message_id");
    finish(&q, "created_at", "message_id", limit, f->number != NULL);
    msg_iter_t it = {fn, ud, 0};
    int rc = cti_db_exec(db, q.sql, q.p, q.n, each_msg, &it);
    return rc < 0 ? rc : 0;
}

int cti_messages_get(cti_db_t *db, const char *app_id, int64_t id, cti_message_fn fn, void *ud)
{
    msg_iter_t it = {fn, ud, 0};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(id)};
    int rc = cti_db_exec(db, MSG_SELECT " AND message_id = $2", p, 2, each_msg, &it);
    return rc < 0 ? rc : it.rows ? 0 : CTI_ENOTFOUND;
}
