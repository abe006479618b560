/*
 * store.c — the backend-independent half of the store: connection registry,
 * per-thread connections, transactions, row accessors. See store.h.
 */
#include "store/backend.h"
#include "core/common.h"
#include "core/jw.h"
#include "core/log.h"
#include "core/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void unlink_conn(cti_db_t *db)
{
    cti_store_t *st = db->st;
    pthread_mutex_lock(&st->lock);
    if (db->prev)
        db->prev->next = db->next;
    else
        st->conns = db->next;
    if (db->next)
        db->next->prev = db->prev;
    pthread_mutex_unlock(&st->lock);
}

static void free_conn(cti_db_t *db)
{
    db->st->be->disconnect(db);
    free(db);
}

/* Thread exit: close that thread's connection. */
static void tls_destructor(void *p)
{
    cti_db_t *db = p;
    unlink_conn(db);
    free_conn(db);
}

static int connect_db(cti_store_t *st, bool relaxed, cti_db_t **out)
{
    cti_db_t *db = cti_calloc(1, sizeof *db);
    db->st = st;
    db->relaxed = relaxed;
    int rc = st->be->connect(db);
    pthread_mutex_lock(&st->lock);
    db->next = st->conns;
    if (st->conns)
        st->conns->prev = db;
    st->conns = db;
    pthread_mutex_unlock(&st->lock);
    *out = db;
    return rc;
}

int cti_store_connect(cti_store_t *st, cti_db_t **out)
{
    return connect_db(st, false, out);
}

int cti_store_connect_relaxed(cti_store_t *st, cti_db_t **out)
{
    return connect_db(st, true, out);
}

void cti_db_close(cti_db_t *db)
{
    if (!db)
        return;
    unlink_conn(db);
    free_conn(db);
}

cti_db_t *cti_store_db(cti_store_t *st)
{
    cti_db_t *db = pthread_getspecific(st->tls_key);
    if (db)
        return db;
    cti_store_connect(st, &db); /* a failed connect retries on use */
    db->thread_local = true;
    pthread_setspecific(st->tls_key, db);
    return db;
}

int cti_store_open(const cti_store_options_t *opts, cti_store_t **out)
{
    cti_store_t *st = cti_calloc(1, sizeof *st);
    st->be = opts->kind == CTI_DB_POSTGRES ? &cti_backend_postgres : &cti_backend_sqlite;
    st->opts = *opts;
    st->opts.conninfo = cti_strdup(opts->conninfo);
    st->opts.display = cti_strdup(opts->display ? opts->display : st->be->name);
    pthread_mutex_init(&st->lock, NULL);
    if (pthread_key_create(&st->tls_key, tls_destructor) != 0)
        cti_fatal("pthread_key_create failed");
    *out = st;
    cti_db_t *db = cti_store_db(st);
    int rc = cti_db_ping(db);
    if (rc != 0)
        cti_log(CTI_LOG_ERROR, NULL, "store: cannot reach the database (will keep retrying)",
                CTI_LS("database", st->opts.display), CTI_LS("error", cti_db_errmsg(db)));
    return rc;
}

void cti_store_close(cti_store_t *st)
{
    if (!st)
        return;
    /* This thread's connection is the one flushed; other threads have stopped. */
    cti_db_t *mine = pthread_getspecific(st->tls_key);
    if (st->be->close_store)
        st->be->close_store(st);
    if (mine) {
        pthread_setspecific(st->tls_key, NULL);
        if (st->be->flush)
            st->be->flush(mine);
    }
    pthread_mutex_lock(&st->lock);
    cti_db_t *db = st->conns;
    st->conns = NULL;
    pthread_mutex_unlock(&st->lock);
    while (db) {
        cti_db_t *next = db->next;
        free_conn(db);
        db = next;
    }
    pthread_key_delete(st->tls_key);
    pthread_mutex_destroy(&st->lock);
    free((char *)st->opts.conninfo);
    free((char *)st->opts.display);
    free(st);
}

const char *cti_store_backend(const cti_store_t *st)
{
    return st->be->name;
}

bool cti_store_has(const cti_store_t *st, cti_cap_t cap)
{
    return (st->be->caps & (unsigned)cap) == (unsigned)cap;
}

bool cti_db_in_tx(const cti_db_t *db)
{
    return db->in_tx;
}

void cti_db_trace(cti_db_t *db, cti_db_trace_fn fn, void *ud)
{
    db->trace = fn;
    db->trace_ud = ud;
}

int cti_db_analyze_stale(cti_db_t *db, const char *const *tables, int n)
{
    assert(n >= 0 && n <= 8);
    if (!db->st->be->analyze_stale)
        return 0;
    return db->st->be->analyze_stale(db, tables, n);
}

cti_store_t *cti_db_store(const cti_db_t *db)
{
    return db->st;
}

int cti_db_exec(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n, cti_row_fn fn,
                void *ud)
{
    if (db->trace)
        db->trace(sql, params, n, db->trace_ud);
    return db->st->be->exec(db, sql, params, n, fn, ud);
}

int cti_db_script(cti_db_t *db, const char *sql)
{
    return db->st->be->script(db, sql);
}

void cti_db_pipeline(cti_db_t *db, bool on)
{
    db->pipeline = on;
}

int cti_db_begin(cti_db_t *db)
{
    if (db->in_tx)
        cti_fatal("cti_db_begin: already in a transaction");
    int rc = cti_db_exec(db, db->st->be->begin_sql, NULL, 0, NULL, NULL);
    db->in_tx = rc == 0;
    if (rc == 0 && db->relaxed && db->st->be->relaxed_sql &&
        (rc = cti_db_exec(db, db->st->be->relaxed_sql, NULL, 0, NULL, NULL)) != 0)
        cti_db_rollback(db);
    return rc;
}

int cti_db_commit(cti_db_t *db)
{
    int rc = cti_db_exec(db, "COMMIT", NULL, 0, NULL, NULL);
    if (rc != 0)
        cti_db_rollback(db);
    db->in_tx = false;
    return rc;
}

void cti_db_rollback(cti_db_t *db)
{
    cti_db_exec(db, "ROLLBACK", NULL, 0, NULL, NULL);
    db->in_tx = false;
}

int cti_db_ping(cti_db_t *db)
{
    int64_t one = 0;
    int store_ms =
        db->st->opts.query_timeout_ms ? db->st->opts.query_timeout_ms : CTI_DB_QUERY_TIMEOUT_MS;
    int saved = db->timeout_ms;
    db->timeout_ms = store_ms < CTI_DB_PING_TIMEOUT_MS ? store_ms : CTI_DB_PING_TIMEOUT_MS;
    int rc = cti_db_query_int(db, "SELECT 1", NULL, 0, &one);
    db->timeout_ms = saved;
    return rc == 0 && one == 1 ? 0 : CTI_EUNAVAILABLE;
}

const char *cti_db_errmsg(const cti_db_t *db)
{
    return db->st->be->errmsg(db);
}

int cti_row_columns(const cti_row_t *row)
{
    return row->be->row_columns(row);
}

bool cti_row_is_null(const cti_row_t *row, int col)
{
    return row->be->row_is_null(row, col);
}

int64_t cti_row_int(const cti_row_t *row, int col)
{
    return row->be->row_int(row, col);
}

double cti_row_real(const cti_row_t *row, int col)
{
    return row->be->row_real(row, col);
}

const char *cti_row_text(const cti_row_t *row, int col)
{
    return row->be->row_text(row, col);
}

typedef struct {
    int64_t v;
    bool found;
} int_result_t;

static int take_int(const cti_row_t *row, void *ud)
{
    int_result_t *r = ud;
    r->v = cti_row_int(row, 0);
    r->found = true;
    return 1; /* first row only */
}

int cti_db_query_int(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                     int64_t *out)
{
    int_result_t r = {0, false};
    int rc = cti_db_exec(db, sql, params, n, take_int, &r);
    if (rc < 0)
        return rc;
    if (!r.found)
        return CTI_ENOTFOUND;
    *out = r.v;
    return 0;
}

static int count_one(const cti_row_t *row, void *ud)
{
    ++*(int64_t *)ud;
    return 0;
}

int cti_db_exec_count(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                      int64_t *rows)
{
    *rows = 0;
    return cti_db_exec(db, sql, params, n, count_one, rows);
}

/* Eight bytes a step (cti_hash_bytes): a batch's statements run to a few KiB
 * of text, hashed on every execution (byte-wise FNV-1a was 2% of the worker). */
uint64_t cti_store_sql_hash(const char *sql)
{
    return cti_hash_bytes(sql, strlen(sql));
}

typedef struct {
    char *out;
    size_t cap;
    bool found;
} text_result_t;

static int take_text(const cti_row_t *row, void *ud)
{
    text_result_t *t = ud;
    const char *v = cti_row_text(row, 0);
    snprintf(t->out, t->cap, "%s", v ? v : "");
    t->found = true;
    return 1;
}

int cti_db_query_text(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                      char *out, size_t cap)
{
    text_result_t t = {out, cap, false};
    out[0] = '\0';
    int rc = cti_db_exec(db, sql, params, n, take_text, &t);
    return rc < 0 ? rc : t.found ? 0 : CTI_ENOTFOUND;
}

/* Rows for the next statement of a list with `left` rows to go: the largest
 * power of two <= left and <= max (a power of two), so the statement texts stay
 * few; with pad and left <= max, the smallest power of two >= left instead (the
 * caller fills the rest with copies of the last row: one statement, where each
 * is a round trip on PostgreSQL when its answer is read). */
static int chunk_rows(int left, int max, bool pad)
{
    int c = 1;
    if (pad && left <= max) {
        while (c < left)
            c *= 2;
        return c;
    }
    while (c * 2 <= left && c * 2 <= max)
        c *= 2;
    return c;
}

/* Built statement texts, kept for the life of the process: each is built once
 * instead of per call. Guarded by texts_lock. */
typedef struct text {
    const char *head, *sep, *tail; /* compared as pointers: callers pass literals */
    int rows, ncols, first;
    char *sql;
    struct text *next;
} text_t;
static text_t *texts;
static pthread_mutex_t texts_lock = PTHREAD_MUTEX_INITIALIZER;

/* "head<sep>($first, ...), (...) tail": rows groups of ncols placeholders. Both
 * the multi-row VALUES and the IN list are this shape. Each distinct set of
 * arguments is built once and kept for the life of the process (texts_lock). */
static const char *list_sql(const char *head, const char *sep, const char *tail, int rows,
                            int ncols, int first)
{
    pthread_mutex_lock(&texts_lock);
    for (text_t *t = texts; t; t = t->next)
        if (t->head == head && t->sep == sep && t->tail == tail && t->rows == rows &&
            t->ncols == ncols && t->first == first) {
            pthread_mutex_unlock(&texts_lock);
            return t->sql;
        }
    size_t cap = strlen(head) + strlen(tail) + (size_t)rows * (size_t)ncols * 8 + 32;
    char *sql = cti_malloc(cap);
    size_t len = (size_t)snprintf(sql, cap, "%s%s", head, sep);
    for (int r = 0; r < rows; r++) {
        len += (size_t)snprintf(sql + len, cap - len, "%s(", r ? ", " : "");
        for (int c = 0; c < ncols; c++)
            len += (size_t)snprintf(sql + len, cap - len, "%s$%d", c ? ", " : "",
                                    first + r * ncols + c);
        len += (size_t)snprintf(sql + len, cap - len, ")");
    }
    snprintf(sql + len, cap - len, " %s", tail);
    text_t *t = cti_malloc(sizeof *t);
    *t = (text_t){head, sep, tail, rows, ncols, first, sql, texts};
    texts = t;
    pthread_mutex_unlock(&texts_lock);
    return sql;
}

/* pad: see chunk_rows. */
static int exec_rows(cti_db_t *db, const char *head, const char *tail, int ncols,
                     const cti_sql_val_t *vals, int nrows, bool pad, cti_row_fn fn, void *ud)
{
    int max = chunk_rows(8192 / ncols, 64, false), rc = 0;
    cti_sql_val_t *padded = NULL;
    for (int off = 0; rc >= 0 && off < nrows;) {
        int left = nrows - off, rows = chunk_rows(left, max, pad);
        int take = rows < left ? rows : left;
        const cti_sql_val_t *v = vals + (size_t)off * (size_t)ncols;
        if (take < rows) { /* the last chunk, padded */
            if (!padded)
                padded = cti_malloc((size_t)max * (size_t)ncols * sizeof *padded);
            memcpy(padded, v, (size_t)take * (size_t)ncols * sizeof *padded);
            for (int r = take; r < rows; r++)
                memcpy(padded + (size_t)r * (size_t)ncols, v + (size_t)(take - 1) * (size_t)ncols,
                       (size_t)ncols * sizeof *padded);
            v = padded;
        }
        rc = cti_db_exec(db, list_sql(head, " VALUES ", tail, rows, ncols, 1), v, rows * ncols,
                         fn, ud);
        off += take;
    }
    free(padded);
    return rc;
}

int cti_db_exec_rows(cti_db_t *db, const char *head, const char *tail, int ncols,
                     const cti_sql_val_t *vals, int nrows, cti_row_fn fn, void *ud)
{
    return exec_rows(db, head, tail, ncols, vals, nrows, false, fn, ud);
}

int cti_db_insert_new_rows(cti_db_t *db, const char *head, const char *tail, int ncols,
                           const cti_sql_val_t *vals, int nrows, cti_row_fn fn, void *ud)
{
    return exec_rows(db, head, tail, ncols, vals, nrows, true, fn, ud);
}

int cti_db_exec_in(cti_db_t *db, const char *head, const char *tail, const cti_sql_val_t *fixed,
                   int nfixed, const cti_sql_val_t *list, int n, cti_row_fn fn, void *ud)
{
    int rc = 0;
    cti_sql_val_t p[128];
    assert(nfixed <= 64); /* with at most 64 listed values per chunk, p is large enough */
    for (int off = 0; rc >= 0 && off < n;) {
        /* padded with the last value: a value twice in IN matches its rows once */
        int left = n - off, k = chunk_rows(left, 64, true), take = left < k ? left : k;
        if (nfixed)
            memcpy(p, fixed, (size_t)nfixed * sizeof *p);
        memcpy(p + nfixed, list + off, (size_t)take * sizeof *p);
        for (int i = take; i < k; i++)
            p[nfixed + i] = list[off + take - 1];
        rc = cti_db_exec(db, list_sql(head, " ", tail, 1, k, nfixed + 1), p, nfixed + k, fn, ud);
        off += take;
    }
    return rc;
}

void cti_db_array_literal(cti_jw_t *w, const char *const *s, const int64_t *ids, int n)
{
    cti_jw_lit(w, "{");
    for (int i = 0; i < n; i++) {
        if (i)
            cti_jw_lit(w, ",");
        if (!s) {
            char num[24];
            cti_jw_raw(w, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)ids[i]));
            continue;
        }
        cti_jw_lit(w, "\"");
        for (const char *p = s[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                cti_jw_lit(w, "\\");
            cti_jw_raw(w, p, 1);
        }
        cti_jw_lit(w, "\"");
    }
    cti_jw_lit(w, "}");
}
