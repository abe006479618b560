/*
 * pg.c — the PostgreSQL backend (libpq), for production and several instances.
 *
 * One PGconn per cti_db_t. Statements go out with PQexecParams, parameters
 * and results in text form. A connection the server dropped (restart,
 * failover, pg_terminate_backend) is reset on next use; a statement that
 * failed because the connection broke, outside a transaction, is retried
 * once on the fresh connection. Reconnect attempts are spaced (RETRY_GAP_US)
 * so a dead database costs a request microseconds, not a connect timeout.
 */
#include "store/backend.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define RETRY_GAP_US 250000
#define MIGRATION_LOCK_KEY 727274001

#define STMT_CACHE 128

typedef struct {
    char *sql;
    uint64_t hash;
} prepared_t;

typedef struct {
    PGconn *conn;
    int64_t last_attempt_us;
    prepared_t prepared[STMT_CACHE]; /* statement "s<i>" on this connection */
    int nprepared;
    bool piped;  /* in libpq's pipeline mode, with statements whose answers are not read yet */
    int pipe_rc; /* the first failure sending them */
    char err[512];
} pg_t;

typedef struct {
    PGresult *res;
} pg_row_t;

static void set_err(pg_t *p, const char *msg)
{
    snprintf(p->err, sizeof p->err, "%s", msg ? msg : "unknown error");
    p->err[strcspn(p->err, "\n")] = '\0';
}

/* NOTICEs ("relation already exists, skipping") are for debugging only. */
static void on_notice(void *arg, const char *msg)
{
    if (cti_log_enabled(CTI_LOG_DEBUG)) {
        char line[512];
        snprintf(line, sizeof line, "%s", msg);
        line[strcspn(line, "\n")] = '\0';
        cti_log(CTI_LOG_DEBUG, NULL, "store: postgres notice", CTI_LS("notice", line));
    }
}

/* Prepared statements live on a server connection: forget them with it. */
static void forget_prepared(pg_t *p)
{
    for (int i = 0; i < p->nprepared; i++)
        free(p->prepared[i].sql);
    p->nprepared = 0;
}

static int open_conn(pg_t *p, const char *conninfo)
{
    forget_prepared(p);
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {conninfo, "3", "cti-server", NULL};
    p->last_attempt_us = cti_mono_us();
    if (p->conn)
        PQfinish(p->conn);
    p->conn = PQconnectdbParams(keys, vals, 1);
    PQsetNoticeProcessor(p->conn, on_notice, NULL);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        set_err(p, PQerrorMessage(p->conn));
        return CTI_EUNAVAILABLE;
    }
    return 0;
}

static int pg_connect(cti_db_t *db)
{
    pg_t *p = cti_calloc(1, sizeof *p);
    db->impl = p;
    return open_conn(p, db->st->opts.conninfo);
}

static void pg_disconnect(cti_db_t *db)
{
    pg_t *p = db->impl;
    if (!p)
        return;
    PQfinish(p->conn);
    forget_prepared(p);
    free(p);
    db->impl = NULL;
}

/* Makes sure the connection is up, reconnecting (spaced out) when it is not. */
static int ensure(cti_db_t *db)
{
    pg_t *p = db->impl;
    if (p->conn && PQstatus(p->conn) == CONNECTION_OK)
        return 0;
    if (db->in_tx) /* the transaction died with the connection */
        return CTI_EUNAVAILABLE;
    if (cti_mono_us() - p->last_attempt_us < RETRY_GAP_US)
        return CTI_EUNAVAILABLE;
    int rc = open_conn(p, db->st->opts.conninfo);
    if (rc == 0)
        cti_log_msg(CTI_LOG_INFO, NULL, "store: reconnected to PostgreSQL");
    return rc;
}

static int map_result(pg_t *p, PGresult *res)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return 0;
    set_err(p, res ? PQresultErrorMessage(res) : PQerrorMessage(p->conn));
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(p->conn) != CONNECTION_OK || !state)
        return CTI_EUNAVAILABLE;
    if (!strcmp(state, "23505"))
        return CTI_EEXIST;
    if (!strncmp(state, "23", 2))
        return CTI_EINVAL;
    /* connection exceptions, shutdown, too many connections, serialization/deadlock */
    if (!strncmp(state, "08", 2) || !strncmp(state, "57", 2) || !strncmp(state, "53", 2) ||
        !strcmp(state, "40001") || !strcmp(state, "40P01"))
        return CTI_EUNAVAILABLE;
    return CTI_EDB;
}

static int find_prepared(const pg_t *p, const char *sql)
{
    uint64_t h = cti_store_sql_hash(sql);
    for (int i = 0; i < p->nprepared; i++)
        if (p->prepared[i].hash == h && !strcmp(p->prepared[i].sql, sql))
            return i;
    return -1;
}

/* Runs sql as a prepared statement of this connection, preparing it on first
 * use (parse and plan once, not per call). Past STMT_CACHE distinct texts it
 * falls back to unnamed statements. */
static PGresult *exec_prepared(pg_t *p, const char *sql, int n, const char *const *v)
{
    char name[16];
    int i = find_prepared(p, sql);
    if (i >= 0) {
        snprintf(name, sizeof name, "s%d", i);
        return PQexecPrepared(p->conn, name, n, v, NULL, NULL, 0);
    }
    if (p->nprepared == STMT_CACHE)
        return PQexecParams(p->conn, sql, n, NULL, v, NULL, NULL, 0);
    snprintf(name, sizeof name, "s%d", p->nprepared);
    PGresult *prep = PQprepare(p->conn, name, sql, n, NULL);
    if (!prep || PQresultStatus(prep) != PGRES_COMMAND_OK)
        return prep; /* the caller maps the error */
    PQclear(prep);
    p->prepared[p->nprepared++] = (prepared_t){cti_strdup(sql), cti_store_sql_hash(sql)};
    return PQexecPrepared(p->conn, name, n, v, NULL, NULL, 0);
}

/* Parameters as the text libpq sends (on the stack up to PARAMS_ON_STACK). */
#define PARAMS_ON_STACK 16
typedef struct {
    char numbuf[PARAMS_ON_STACK][32];
    const char *vals[PARAMS_ON_STACK];
    char (*nums)[32];
    const char **v;
} params_t;

static const char *const *params_text(params_t *t, const cti_sql_val_t *params, int n)
{
    t->nums = n <= PARAMS_ON_STACK ? t->numbuf : cti_malloc((size_t)n * 32);
    t->v = n <= PARAMS_ON_STACK ? t->vals : cti_malloc((size_t)n * sizeof *t->v);
    for (int i = 0; i < n; i++) {
        switch (params[i].type) {
        case CTI_SQL_INT:
            snprintf(t->nums[i], 32, "%lld", (long long)params[i].i);
            t->v[i] = t->nums[i];
            break;
        case CTI_SQL_REAL:
            snprintf(t->nums[i], 32, "%.17g", params[i].d);
            t->v[i] = t->nums[i];
            break;
        case CTI_SQL_TEXT: t->v[i] = params[i].s; break;
        default: t->v[i] = NULL; break;
        }
    }
    return t->v;
}

static void params_free(params_t *t)
{
    if (t->nums != t->numbuf)
        free(t->nums);
    if (t->v != t->vals)
        free(t->v);
}

static PGresult *run(pg_t *p, const char *sql, const cti_sql_val_t *params, int n)
{
    params_t t;
    PGresult *res = exec_prepared(p, sql, n, params_text(&t, params, n));
    params_free(&t);
    return res;
}

/* ---- pipelined writes -------------------------------------------------------------------
 * On a connection marked with cti_db_pipeline (the ingest worker's), a statement
 * inside a transaction whose rows nobody reads is sent without waiting for its
 * answer (libpq's pipeline mode); the next statement that needs an answer, or
 * COMMIT, collects them all in one round trip, and the first error among them
 * is its error. In PostgreSQL an error inside a transaction aborts it anyway,
 * so the transaction fails either way; only the moment it is known moves.
 * Only statements already prepared are piped (the first use prepares, waiting). */

/* Sends prepared statement idx (or COMMIT when idx < 0) into the pipeline. */
static bool pipe_send(pg_t *p, int idx, const cti_sql_val_t *params, int n)
{
    if (!p->piped) {
        if (PQenterPipelineMode(p->conn) != 1)
            return false;
        p->piped = true;
        p->pipe_rc = 0;
    }
    int ok;
    if (idx < 0) {
        ok = PQsendQueryParams(p->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
    } else {
        char name[16];
        snprintf(name, sizeof name, "s%d", idx);
        params_t t;
        ok = PQsendQueryPrepared(p->conn, name, n, params_text(&t, params, n), NULL, NULL, 0);
        params_free(&t);
    }
    if (!ok && !p->pipe_rc) {
        set_err(p, PQerrorMessage(p->conn));
        p->pipe_rc = CTI_EUNAVAILABLE;
    }
    return true;
}

/* Collects every answer in the pipeline and leaves pipeline mode; returns the
 * first error. */
static int pipe_flush(pg_t *p)
{
    if (!p->piped)
        return 0;
    int rc = p->pipe_rc;
    if (PQpipelineSync(p->conn) != 1) {
        if (!rc)
            set_err(p, PQerrorMessage(p->conn));
        rc = rc ? rc : CTI_EUNAVAILABLE;
    } else {
        for (;;) {
            PGresult *res = PQgetResult(p->conn);
            if (!res) { /* between two statements' answers, or the connection is gone */
                if (PQstatus(p->conn) != CONNECTION_OK) {
                    rc = rc ? rc : CTI_EUNAVAILABLE;
                    break;
                }
                continue;
            }
            ExecStatusType st = PQresultStatus(res);
            if (st != PGRES_PIPELINE_SYNC && st != PGRES_PIPELINE_ABORTED && !rc)
                rc = map_result(p, res); /* aborted ones only follow an error already kept */
            PQclear(res);
            if (st == PGRES_PIPELINE_SYNC)
                break;
        }
    }
    if (PQstatus(p->conn) == CONNECTION_OK)
        PQexitPipelineMode(p->conn);
    p->piped = false;
    return rc;
}

static int pg_exec(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                   cti_row_fn fn, void *ud)
{
    pg_t *p = db->impl;
    bool commit = !strcmp(sql, "COMMIT");
    if (db->pipeline && db->in_tx && !fn && p->conn && PQstatus(p->conn) == CONNECTION_OK &&
        strcmp(sql, "ROLLBACK") != 0) {
        int idx = commit ? -1 : find_prepared(p, sql);
        if ((commit ? p->piped : idx >= 0) && pipe_send(p, idx, params, n))
            return commit ? pipe_flush(p) : 0;
    }
    if (p->piped) { /* this one needs an answer: first the ones piped before it */
        int prc = pipe_flush(p);
        if (prc != 0 && strcmp(sql, "ROLLBACK") != 0)
            return prc;
    }
    int rc = ensure(db);
    if (rc != 0)
        return rc;
    PGresult *res = run(p, sql, params, n);
    rc = map_result(p, res);
    if (rc == CTI_EUNAVAILABLE && PQstatus(p->conn) != CONNECTION_OK && !db->in_tx) {
        /* The server dropped us (restart, failover): one fresh try. */
        PQclear(res);
        res = NULL;
        p->last_attempt_us = 0;
        if ((rc = ensure(db)) == 0) {
            res = run(p, sql, params, n);
            rc = map_result(p, res);
        }
    }
    if (rc == 0 && fn) {
        pg_row_t pr = {res};
        cti_row_t row = {.be = db->st->be, .impl = &pr};
        int rows = PQntuples(res);
        for (row.index = 0; row.index < rows; row.index++)
            if ((rc = fn(&row, ud)) != 0)
                break;
    }
    PQclear(res);
    return rc;
}

static int pg_script(cti_db_t *db, const char *sql)
{
    pg_t *p = db->impl;
    int rc = ensure(db);
    if (rc != 0)
        return rc;
    PGresult *res = PQexec(p->conn, sql);
    rc = map_result(p, res);
    PQclear(res);
    return rc;
}

static const char *pg_errmsg(const cti_db_t *db)
{
    const pg_t *p = db->impl;
    return p ? p->err : "not connected";
}

typedef struct {
    char names[8][64];
    int n;
} stale_t;

static int note_stale(const cti_row_t *row, void *ud)
{
    stale_t *st = ud;
    if (st->n < 8)
        snprintf(st->names[st->n++], sizeof st->names[0], "%s", cti_row_text(row, 0));
    return 0;
}

static int pg_analyze_stale(cti_db_t *db, const char *const *tables, int n)
{
    cti_sql_val_t list[8];
    for (int i = 0; i < n; i++)
        list[i] = CTI_SQL_TEXT(tables[i]);
    /* these counters reach pg_stat a second or so late */
    stale_t st = {.n = 0};
    int rc = n ? cti_db_exec_in(db, "SELECT relname FROM pg_stat_user_tables WHERE relname IN",
                                "AND ((last_analyze IS NULL AND last_autoanalyze IS NULL) OR "
                                "n_mod_since_analyze > GREATEST(n_live_tup / 2, 500))",
                                NULL, 0, list, n, note_stale, &st)
               : 0;
    for (int i = 0; rc >= 0 && i < st.n; i++) {
        char sql[96];
        snprintf(sql, sizeof sql, "ANALYZE \"%s\"", st.names[i]);
        rc = pg_script(db, sql);
    }
    return rc < 0 ? rc : 0;
}

static int pg_lock_migrations(cti_db_t *db)
{
    cti_sql_val_t k = CTI_SQL_INT(MIGRATION_LOCK_KEY);
    return pg_exec(db, "SELECT pg_advisory_lock($1)", &k, 1, NULL, NULL);
}

static void pg_unlock_migrations(cti_db_t *db)
{
    cti_sql_val_t k = CTI_SQL_INT(MIGRATION_LOCK_KEY);
    pg_exec(db, "SELECT pg_advisory_unlock($1)", &k, 1, NULL, NULL);
}

static PGresult *res_of(const cti_row_t *row)
{
    return ((const pg_row_t *)row->impl)->res;
}

static int pg_row_columns(const cti_row_t *row)
{
    return PQnfields(res_of(row));
}

static bool pg_row_is_null(const cti_row_t *row, int col)
{
    return PQgetisnull(res_of(row), row->index, col) != 0;
}

static int64_t pg_row_int(const cti_row_t *row, int col)
{
    const char *v = PQgetvalue(res_of(row), row->index, col);
    if (v[0] == 't' || v[0] == 'f') /* boolean columns */
        return v[0] == 't';
    return strtoll(v, NULL, 10);
}

static double pg_row_real(const cti_row_t *row, int col)
{
    return strtod(PQgetvalue(res_of(row), row->index, col), NULL);
}

static const char *pg_row_text(const cti_row_t *row, int col)
{
    if (PQgetisnull(res_of(row), row->index, col))
        return NULL;
    return PQgetvalue(res_of(row), row->index, col);
}

const cti_backend_t cti_backend_postgres = {
    .name = "postgres",
    .begin_sql = "BEGIN",
    .relaxed_sql = "SET LOCAL synchronous_commit TO off",
    .caps = CTI_CAP_SKIP_LOCKED | CTI_CAP_NOTIFY | CTI_CAP_ANALYZE,
    .identity_pk = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    .each_open = "jsonb_array_elements_text((",
    .each_close = ")::jsonb) AS j(value)",
    .analyze_stale = pg_analyze_stale,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .exec = pg_exec,
    .script = pg_script,
    .errmsg = pg_errmsg,
    .lock_migrations = pg_lock_migrations,
    .unlock_migrations = pg_unlock_migrations,
    .row_columns = pg_row_columns,
    .row_is_null = pg_row_is_null,
    .row_int = pg_row_int,
    .row_real = pg_row_real,
    .row_text = pg_row_text,
};
