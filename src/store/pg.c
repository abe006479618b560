/*
 * pg.c — the PostgreSQL backend (libpq), for production and several instances.
 *
 * One PGconn per cti_db_t. Statements go out with PQexecParams, parameters
 * and results in text form. A connection the server dropped (restart,
 * failover, pg_terminate_backend) is reset on next use; a statement that
 * failed because the connection broke, outside a transaction, is retried
 * once on the fresh connection. Reconnect attempts are spaced (RETRY_GAP_US)
 * so a dead database costs a request microseconds, not a connect timeout.
 *
 * No wait is unbounded: connections are non-blocking, every statement is
 * sent (PQsend*) and its answer awaited with poll(2) until a deadline (the
 * store's query_timeout_ms, DB_QUERY_TIMEOUT_MS; cti_db_ping's shorter one;
 * none for migrations), and so is a connect (at most CONNECT_TIMEOUT_MS). A
 * connection that does not answer in time is closed and the statement fails
 * CTI_EUNAVAILABLE (webhooks 503, /health 503); the next use reconnects.
 * That is what bounds a network that silently stops passing packets (a
 * partition, a dead NAT entry, a frozen host): the kernel would retransmit
 * for ~15 minutes first, TCP keepalives do not probe while data is
 * unacknowledged, and a server-side statement_timeout cannot answer through
 * a dead network. TCP keepalives and TCP_USER_TIMEOUT are set as well, for
 * what no statement waits on: an idle connection (the LISTEN one, wakeup.c)
 * whose peer vanished is closed by the kernel.
 */
#include "store/backend.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define RETRY_GAP_US       250000
#define CONNECT_TIMEOUT_MS 3000
/* While the database is known silent, what any call waits at most */
#define SILENT_TIMEOUT_MS  1000
#define MIGRATION_LOCK_KEY 727274001

#define STMT_CACHE 128

typedef struct {
    char *sql;
    uint64_t hash;
} prepared_t;

/* Per store (be_state), shared by its connections: since when a call got no
 * answer in time (cti_mono_us), 0 once any call got one. While set, every
 * call waits at most SILENT_TIMEOUT_MS: one thread's timeout is the others'
 * warning, so requests on every thread answer 503 within a second instead of
 * each waiting out the full timeout; and only one connection at a time tries
 * to reconnect, the others failing at once (so /health answers in
 * milliseconds). The first answer clears it. */
typedef struct {
    _Atomic int64_t silent_since_us;
    atomic_bool probing; /* while silent: a connection is trying to connect (ensure) */
} pg_store_t;

typedef struct {
    PGconn *conn;
    pg_store_t *shared;
    int64_t last_attempt_us;
    prepared_t prepared[STMT_CACHE]; /* statement "s<i>" on this connection */
    int nprepared;
    bool piped;  /* in libpq's pipeline mode, with statements whose answers are not read yet */
    int pipe_rc; /* the first failure sending them */
    int64_t deadline_us; /* of the call in progress (cti_mono_us; 0: none) */
    int timeout_ms;      /* what it was set from, for messages */
    bool timed_out;      /* the call in progress closed the connection for want of an answer */
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

/* Sets the deadline of the call that starts: ms from now (db->timeout_ms, else
 * the store's option, else the default; -1: none). */
static void start_call(cti_db_t *db)
{
    pg_t *p = db->impl;
    int ms = db->timeout_ms ? db->timeout_ms : db->st->opts.query_timeout_ms;
    if (!ms)
        ms = CTI_DB_QUERY_TIMEOUT_MS;
    if (ms > SILENT_TIMEOUT_MS && atomic_load(&p->shared->silent_since_us))
        ms = SILENT_TIMEOUT_MS;
    p->timeout_ms = ms;
    p->deadline_us = ms < 0 ? 0 : cti_mono_us() + (int64_t)ms * 1000;
    p->timed_out = false;
}

/* Waits for events on the connection's socket until deadline_us (0: none).
 * 1: ready, 0: the deadline passed, -1: no socket or poll failed. */
static int wait_socket(PGconn *conn, short events, int64_t deadline_us)
{
    for (;;) {
        int ms = -1;
        if (deadline_us) {
            int64_t left = deadline_us - cti_mono_us();
            if (left <= 0)
                return 0;
            ms = (int)((left + 999) / 1000);
        }
        struct pollfd pfd = {.fd = PQsocket(conn), .events = events};
        if (pfd.fd < 0)
            return -1;
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* A connection, opened with libpq's non-blocking connect so that it too waits
 * at most timeout_ms (-1: CONNECT_TIMEOUT_MS), and left non-blocking. TCP
 * keepalives and TCP_USER_TIMEOUT close it when its peer is gone even while
 * nothing waits on it. NULL on failure, with err set. Free with PQfinish. */
PGconn *cti_pg_connect(const char *conninfo, const char *app_name, int timeout_ms, char *err,
                       size_t cap, bool *late)
{
    if (late)
        *late = false;
    if (timeout_ms < 0 || timeout_ms > CONNECT_TIMEOUT_MS)
        timeout_ms = CONNECT_TIMEOUT_MS;
    int64_t deadline_us = cti_mono_us() + (int64_t)timeout_ms * 1000;
    /* before dbname, so that the same settings in DATABASE_URL win */
    const char *keys[] = {
        "keepalives",       "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "dbname",          "application_name",    NULL};
    const char *vals[] = {"1", "10", "5", "3", "30000", conninfo, app_name, NULL};
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (!conn)
        cti_fatal("out of memory (PQconnectStartParams)");
    PQsetNoticeProcessor(conn, on_notice, NULL);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING; /* where libpq's loop starts */
    while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
           st != PGRES_POLLING_FAILED) {
        if (wait_socket(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_us) == 0) {
            snprintf(err, cap, "no connection to PostgreSQL within %d ms", timeout_ms);
            if (late)
                *late = true;
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK || PQsetnonblocking(conn, 1) != 0) {
        snprintf(err, cap, "%s", PQerrorMessage(conn));
        err[strcspn(err, "\n")] = '\0';
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static int open_conn(pg_t *p, const char *conninfo)
{
    forget_prepared(p);
    p->piped = false;
    p->last_attempt_us = cti_mono_us();
    if (p->conn)
        PQfinish(p->conn);
    int ms = -1; /* what is left of the call's time, so connect + statement stay within it */
    if (p->deadline_us) {
        int64_t left = (p->deadline_us - p->last_attempt_us) / 1000;
        ms = left < 1 ? 1 : left > CONNECT_TIMEOUT_MS ? CONNECT_TIMEOUT_MS : (int)left;
    }
    bool late;
    p->conn = cti_pg_connect(conninfo, "cti-server", ms, p->err, sizeof p->err, &late);
    if (late)
        atomic_store(&p->shared->silent_since_us, cti_mono_us());
    else if (p->conn)
        atomic_store(&p->shared->silent_since_us, 0);
    return p->conn ? 0 : CTI_EUNAVAILABLE;
}

static int pg_connect(cti_db_t *db)
{
    pg_t *p = cti_calloc(1, sizeof *p);
    db->impl = p;
    pthread_mutex_lock(&db->st->lock);
    if (!db->st->be_state)
        db->st->be_state = cti_calloc(1, sizeof(pg_store_t));
    p->shared = db->st->be_state;
    pthread_mutex_unlock(&db->st->lock);
    start_call(db);
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
    bool silent = atomic_load(&p->shared->silent_since_us) != 0;
    if (silent && atomic_exchange(&p->shared->probing, true)) {
        set_err(p, "PostgreSQL does not answer (another connection is trying to reach it)");
        return CTI_EUNAVAILABLE;
    }
    int rc = open_conn(p, db->st->opts.conninfo);
    if (silent)
        atomic_store(&p->shared->probing, false);
    if (rc == 0)
        cti_log_msg(CTI_LOG_INFO, NULL, "store: reconnected to PostgreSQL");
    return rc;
}

/* For want of an answer by the deadline: the connection is closed (what it
 * had sent may still run on the server, as after any network failure), the
 * next use reconnects, spaced like any reconnect. */
static void drop_silent(pg_t *p)
{
    snprintf(p->err, sizeof p->err, "no answer from PostgreSQL within %d ms (connection closed)",
             p->timeout_ms);
    cti_log(CTI_LOG_WARN, NULL, "store: PostgreSQL did not answer in time; connection closed",
            CTI_LI("timeout_ms", p->timeout_ms));
    PQfinish(p->conn);
    p->conn = NULL;
    forget_prepared(p);
    p->piped = false;
    p->timed_out = true;
    p->last_attempt_us = cti_mono_us();
    atomic_store(&p->shared->silent_since_us, p->last_attempt_us);
}

/* Waits until PQgetResult can run without blocking: sends what libpq has
 * queued, reads what arrives, until deadline_us (0: none). false: nothing
 * came in time. A failed connection is true: PQgetResult then reports it. */
static bool await_conn(PGconn *conn, int64_t deadline_us)
{
    for (;;) {
        int f = PQflush(conn); /* 0 all sent, 1 more to send, -1 failed */
        if (f < 0 || (f == 0 && !PQisBusy(conn)))
            return true;
        int w = wait_socket(conn, (short)(POLLIN | (f ? POLLOUT : 0)), deadline_us);
        if (w == 0)
            return false;
        if (w < 0 || !PQconsumeInput(conn))
            return true;
    }
}

/* The answer to what was just sent on conn (sent: PQsend*'s return): its
 * result (the first failed one when there are several), or NULL when
 * nothing was sent or no answer came by deadline_us (*late set). */
static PGresult *collect_on(PGconn *conn, int sent, int64_t deadline_us, bool *late)
{
    *late = false;
    if (!sent)
        return NULL;
    PGresult *res = NULL;
    for (;;) {
        if (!await_conn(conn, deadline_us)) {
            *late = true;
            PQclear(res);
            return NULL;
        }
        PGresult *r = PQgetResult(conn);
        if (!r)
            return res;
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_COMMAND_OK;
        if (!res || st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            PQclear(res);
            res = r;
        } else {
            PQclear(r);
        }
    }
}

PGresult *cti_pg_exec_within(PGconn *conn, const char *sql, int timeout_ms)
{
    bool late;
    return collect_on(conn, PQsendQuery(conn, sql), cti_mono_us() + (int64_t)timeout_ms * 1000,
                      &late);
}

static bool await_answer(pg_t *p)
{
    if (await_conn(p->conn, p->deadline_us))
        return true;
    drop_silent(p);
    return false;
}

static PGresult *collect(pg_t *p, int sent)
{
    bool late;
    PGresult *res = collect_on(p->conn, sent, p->deadline_us, &late);
    if (late)
        drop_silent(p);
    else if (res && atomic_load(&p->shared->silent_since_us))
        atomic_store(&p->shared->silent_since_us, 0); /* it answers again */
    return res;
}

static int map_result(pg_t *p, PGresult *res)
{
    if (!res && !p->conn) /* closed for want of an answer: p->err says so */
        return CTI_EUNAVAILABLE;
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
    if (i < 0 && p->nprepared == STMT_CACHE)
        return collect(p, PQsendQueryParams(p->conn, sql, n, NULL, v, NULL, NULL, 0));
    if (i < 0) {
        snprintf(name, sizeof name, "s%d", p->nprepared);
        PGresult *prep = collect(p, PQsendPrepare(p->conn, name, sql, n, NULL));
        if (!prep || PQresultStatus(prep) != PGRES_COMMAND_OK)
            return prep; /* the caller maps the error */
        PQclear(prep);
        i = p->nprepared++;
        p->prepared[i] = (prepared_t){cti_strdup(sql), cti_store_sql_hash(sql)};
    }
    snprintf(name, sizeof name, "s%d", i);
    return collect(p, PQsendQueryPrepared(p->conn, name, n, v, NULL, NULL, 0));
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
            if (!await_answer(p)) {
                rc = rc ? rc : CTI_EUNAVAILABLE;
                break;
            }
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
    if (p->conn && PQstatus(p->conn) == CONNECTION_OK)
        PQexitPipelineMode(p->conn);
    p->piped = false;
    return rc;
}

static int pg_exec(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                   cti_row_fn fn, void *ud)
{
    pg_t *p = db->impl;
    bool commit = !strcmp(sql, "COMMIT");
    start_call(db);
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
    if (rc == CTI_EUNAVAILABLE && PQstatus(p->conn) != CONNECTION_OK && !db->in_tx &&
        !p->timed_out) {
        /* The server dropped us (restart, failover): one fresh try. Not after
         * a timeout: the deadline is spent, and the network is the suspect. */
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
    start_call(db);
    int rc = ensure(db);
    if (rc != 0)
        return rc;
    PGresult *res = collect(p, PQsendQuery(p->conn, sql));
    rc = map_result(p, res);
    PQclear(res);
    return rc;
}

static void pg_close_store(cti_store_t *st)
{
    free(st->be_state);
    st->be_state = NULL;
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
    .caps = CTI_CAP_SKIP_LOCKED | CTI_CAP_NOTIFY | CTI_CAP_ANALYZE | CTI_CAP_ARRAYS,
    .identity_pk = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    .each_open = "jsonb_array_elements_text((",
    .each_close = ")::jsonb) AS j(value)",
    .analyze_stale = pg_analyze_stale,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .exec = pg_exec,
    .script = pg_script,
    .errmsg = pg_errmsg,
    .close_store = pg_close_store,
    .lock_migrations = pg_lock_migrations,
    .unlock_migrations = pg_unlock_migrations,
    .row_columns = pg_row_columns,
    .row_is_null = pg_row_is_null,
    .row_int = pg_row_int,
    .row_real = pg_row_real,
    .row_text = pg_row_text,
};
