/*
 * store.h — the storage interface: one API, two backends (SQLite, PostgreSQL).
 *
 * A cti_store_t is a database: which backend, how to reach it, its open
 * connections. A cti_db_t is one connection, used by one thread at a time.
 * cti_store_db() gives each thread its own connection, opened on first use
 * and closed when the thread exits or the store closes; long-lived workers
 * (the ingest writer, the stream listener) open dedicated ones with
 * cti_store_connect().
 *
 * SQL is written once, in the dialect both backends share (ON CONFLICT,
 * RETURNING, CTEs; integers for times and booleans), with $1..$n
 * placeholders; the SQLite backend rewrites them to ?1..?n. The domain's
 * queries (apps, events, calls, ... and the schema) live above, in src/repo/,
 * each written once and tested on both backends by tests/store/. The store
 * knows no table of theirs. Where the backends differ in what they can do,
 * callers ask cti_store_has(), never the backend's name.
 *
 * Errors: CTI_EUNAVAILABLE means "the database cannot be reached or is busy
 * right now; retry later" (a webhook answers 503); CTI_EEXIST a unique
 * constraint; CTI_EDB any other refusal (a bug). A connection whose server
 * went away reconnects on its next use (outside a transaction, the failed
 * statement is retried once on the new connection).
 *
 * Threads: cti_store_open/migrate/close on the main thread; everything else
 * from any thread, each thread with its own cti_db_t.
 */
#ifndef CTI_STORE_STORE_H
#define CTI_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/jw.h"

typedef struct cti_store cti_store_t;
typedef struct cti_db cti_db_t;
typedef struct cti_row cti_row_t;

typedef enum { CTI_SQL_NULL, CTI_SQL_INT, CTI_SQL_REAL, CTI_SQL_TEXT } cti_sql_type_t;

/* A statement parameter. Text is borrowed for the duration of the call. */
typedef struct {
    cti_sql_type_t type;
    int64_t i;
    double d;
    const char *s;
} cti_sql_val_t;

#define CTI_SQL_INT(v) ((cti_sql_val_t){.type = CTI_SQL_INT, .i = (int64_t)(v)})
#define CTI_SQL_REAL(v) ((cti_sql_val_t){.type = CTI_SQL_REAL, .d = (double)(v)})
/* NULL text binds SQL NULL. */
#define CTI_SQL_TEXT(v) ((cti_sql_val_t){.type = (v) ? CTI_SQL_TEXT : CTI_SQL_NULL, .s = (v)})
#define CTI_SQL_NULLV ((cti_sql_val_t){.type = CTI_SQL_NULL})
#define CTI_SQL_BOOL(v) CTI_SQL_INT((v) ? 1 : 0)

/* Called once per result row; return non-zero to stop early (cti_db_exec
 * then returns that value). The row and its text live only during the call. */
typedef int (*cti_row_fn)(const cti_row_t *row, void *ud);

/* PostgreSQL: the default longest wait for a statement's answer (DB_QUERY_TIMEOUT_MS),
 * and that of cti_db_ping (/health), which answers sooner when the store's is longer. */
#define CTI_DB_QUERY_TIMEOUT_MS 5000
#define CTI_DB_PING_TIMEOUT_MS  1000

typedef struct {
    cti_db_kind_t kind;
    const char *conninfo;     /* SQLite: path. PostgreSQL: URI or key=value conninfo. */
    const char *display;      /* safe to log */
    bool sqlite_sync_full;    /* synchronous=FULL (else NORMAL) */
    int query_timeout_ms;     /* PostgreSQL: longest wait for a statement's answer or a
                                 connect; then the connection is closed and the call fails
                                 CTI_EUNAVAILABLE (0: CTI_DB_QUERY_TIMEOUT_MS) */
} cti_store_options_t;

/* Opens the store and checks it can connect. Returns 0, or CTI_EUNAVAILABLE
 * (with a log line saying why) — the store is then still usable and will
 * connect when the database comes up. *out is always set; close it. */
int cti_store_open(const cti_store_options_t *opts, cti_store_t **out);
/* Closes every connection (SQLite: checkpoints the WAL) and frees the store. */
void cti_store_close(cti_store_t *st);
/* "sqlite" or "postgres": for logs and /health. Code above the store asks
 * what the backend can do (cti_store_has), never which one it is. */
const char *cti_store_backend(const cti_store_t *st);

/* What a backend can do, where the backends differ in a way callers must
 * choose by. Bits of the backend table's caps (src/store/backend.h):
 *
 *   cap                      sqlite  postgres  used by
 *   CTI_CAP_SKIP_LOCKED        -       yes     pending-event scan: instances share the work
 *   CTI_CAP_NOTIFY             -       yes     cross-instance wake-ups (cti_notify, wakeup.h)
 *   CTI_CAP_PARTIAL_UPDATE    yes       -      an UPDATE leaves alone the indexes of the
 *                                              columns it does not SET (call upserts)
 *   CTI_CAP_ANALYZE            -       yes     plans follow statistics: analyze grown tables
 *   CTI_CAP_WITHOUT_ROWID     yes       -      tables clustered on their primary key
 *   CTI_CAP_ARRAYS             -       yes     legs of many apps loaded in one round trip
 *                                              (also CRM users, a batch's webhook endpoints)
 */
typedef enum {
    CTI_CAP_SKIP_LOCKED = 1u << 0,    /* SELECT ... FOR UPDATE SKIP LOCKED */
    CTI_CAP_NOTIFY = 1u << 1,         /* NOTIFY in a transaction, LISTEN on another connection */
    CTI_CAP_PARTIAL_UPDATE = 1u << 2, /* leaving indexed columns out of SET spares their indexes */
    CTI_CAP_ANALYZE = 1u << 3,        /* cti_db_analyze_stale refreshes the planner's statistics */
    CTI_CAP_WITHOUT_ROWID = 1u << 4,  /* CREATE TABLE ... WITHOUT ROWID */
    CTI_CAP_ARRAYS = 1u << 5,         /* $1::text[] parameters and unnest(): a list in one value */
} cti_cap_t;

/* True when this store's backend has cap. */
bool cti_store_has(const cti_store_t *st, cti_cap_t cap);

/* CTI_CAP_ARRAYS: appends to w the array literal of n texts s ({"a","b"}: each
 * quoted, \ and " escaped) or, when s is NULL, of n integers ids ({1,2}), the
 * text of one $k::text[] or $k::bigint[] parameter. */
void cti_db_array_literal(cti_jw_t *w, const char *const *s, const int64_t *ids, int n);

/* ---- migrations: the runner (the schema itself is src/repo/schema.c) ---- */

/* A numbered schema change. sql is in the shared dialect, plus tokens each
 * backend's table expands: @ID@ (an auto-increment BIGINT primary key) and
 * @EACH(col)@ (a row j(value) per element of the JSON array in col). needs:
 * 0, or a capability (cti_cap_t) without which the migration is recorded but
 * not run (a change to how one kind of backend lays a table out). */
typedef struct {
    int version; /* 1, 2, 3... in list order, no gaps */
    const char *name;
    const char *sql;
    unsigned needs;
} cti_migration_t;

/* Applies the migrations of list not yet recorded in schema_migrations, in
 * order, each in its own transaction together with its row; safe to run
 * concurrently from several instances (PostgreSQL: advisory lock). Aborts
 * (cti_fatal) on a list not numbered 1..n. Main thread. Returns 0 or an error. */
int cti_store_apply_migrations(cti_store_t *st, const cti_migration_t *list, int n);

/* This thread's connection (opened on first use; never NULL). */
cti_db_t *cti_store_db(cti_store_t *st);
/* A dedicated connection for a long-lived worker. Returns 0 or
 * CTI_EUNAVAILABLE; *out is always set (it reconnects on use); close it. */
int cti_store_connect(cti_store_t *st, cti_db_t **out);
/* The same, for a worker whose commits may be lost with the machine (power,
 * kernel) but never with the process — whose work is redone when they are
 * (the outbound sender: a lost lease or result means one more attempt).
 * SQLite: synchronous=NORMAL on this connection; PostgreSQL:
 * synchronous_commit off in its transactions. Other connections' commits
 * stay as durable as they were. */
int cti_store_connect_relaxed(cti_store_t *st, cti_db_t **out);
void cti_db_close(cti_db_t *db);

/* PostgreSQL: inside transactions, writes whose rows are not read are sent
 * without waiting for their answers, which the next statement that needs one
 * (or COMMIT) collects; an error among them becomes that statement's error.
 * For a connection whose every failed transaction is rolled back and retried
 * whole (the ingest worker's). No effect on SQLite. */
void cti_db_pipeline(cti_db_t *db, bool on);

/* Runs one statement with $1..$n parameters, calling fn per row (fn may be NULL). */
int cti_db_exec(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n, cti_row_fn fn,
                void *ud);
/* Whether db is inside a transaction (between cti_db_begin and commit/rollback). */
bool cti_db_in_tx(const cti_db_t *db);
/* Every statement cti_db_exec runs on db is first shown to fn (NULL: none):
 * lets the conformance suite check the query plan of what a function runs.
 * Not for production paths. */
typedef void (*cti_db_trace_fn)(const char *sql, const cti_sql_val_t *params, int n, void *ud);
void cti_db_trace(cti_db_t *db, cti_db_trace_fn fn, void *ud);
/* CTI_CAP_ANALYZE: refreshes the planner's statistics of those of tables
 * (at most 8 names) never analyzed, or changed by more than half their rows
 * since they last were (a prepared statement keeps its generic plan until its
 * tables' statistics change). Does not block writers; call it off hot paths.
 * Without the capability: does nothing, returns 0. */
int cti_db_analyze_stale(cti_db_t *db, const char *const *tables, int n);
/* Runs SQL text with no parameters, possibly several statements (migrations). */
int cti_db_script(cti_db_t *db, const char *sql);
/* Transactions. begin takes the write lock at once on SQLite (BEGIN IMMEDIATE). */
int cti_db_begin(cti_db_t *db);
int cti_db_commit(cti_db_t *db);
void cti_db_rollback(cti_db_t *db);
/* SELECT 1 on this connection (reconnecting if needed): 0 or CTI_EUNAVAILABLE.
 * PostgreSQL: waits at most CTI_DB_PING_TIMEOUT_MS (or the store's timeout if shorter). */
int cti_db_ping(cti_db_t *db);
/* The backend's last error message for this connection (for logs). */
const char *cti_db_errmsg(const cti_db_t *db);
cti_store_t *cti_db_store(const cti_db_t *db);

/* Row accessors. Column numbers start at 0. */
int cti_row_columns(const cti_row_t *row);
bool cti_row_is_null(const cti_row_t *row, int col);
int64_t cti_row_int(const cti_row_t *row, int col);
double cti_row_real(const cti_row_t *row, int col);
/* Text of the column, or NULL when SQL NULL. */
const char *cti_row_text(const cti_row_t *row, int col);

/* Convenience: runs a query returning one integer in its first row/column.
 * Returns 0 and sets *out, CTI_ENOTFOUND if there is no row, or an error. */
int cti_db_query_int(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                     int64_t *out);

/* Like cti_db_query_int for text: copies the first column of the first row
 * into out ("" for NULL). CTI_ENOTFOUND when there is no row. */
int cti_db_query_text(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                      char *out, size_t cap);

/* Runs "head VALUES (...), (...), ... tail" for nrows rows of ncols values
 * (vals row after row), in chunks of power-of-two sizes so the statement
 * texts stay few and their prepared forms are reused. fn (may be NULL) sees
 * the rows of every chunk's RETURNING. */
int cti_db_exec_rows(cti_db_t *db, const char *head, const char *tail, int ncols,
                     const cti_sql_val_t *vals, int nrows, cti_row_fn fn, void *ud);
/* The same for an INSERT ... ON CONFLICT DO NOTHING (a row given twice is
 * inserted once): rows are sent in as few statements as can be (the last
 * padded with copies of its last row), each a round trip on PostgreSQL when
 * its answer is read (RETURNING). */
int cti_db_insert_new_rows(cti_db_t *db, const char *head, const char *tail, int ncols,
                           const cti_sql_val_t *vals, int nrows, cti_row_fn fn, void *ud);
/* Runs "head ($k, $k+1, ...) tail" with the n values listed after fixed
 * leading parameters (SELECT ... WHERE app_id = $1 AND id IN (...)): one
 * statement per 64 values, the list padded with its last value (IN matches
 * it once). */
int cti_db_exec_in(cti_db_t *db, const char *head, const char *tail, const cti_sql_val_t *fixed,
                   int nfixed, const cti_sql_val_t *list, int n, cti_row_fn fn, void *ud);

/* Runs a statement and counts the rows it returns (e.g. UPDATE ... RETURNING). */
int cti_db_exec_count(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                      int64_t *rows);

#endif
