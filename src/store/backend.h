/*
 * backend.h — what a storage backend implements (internal to src/store/).
 * A table of function pointers chosen once at open, as SQLite's VFS is.
 */
#ifndef CTI_STORE_BACKEND_H
#define CTI_STORE_BACKEND_H

#include <pthread.h>

#include "store/store.h"

typedef struct cti_backend {
    const char *name;
    const char *begin_sql; /* "BEGIN IMMEDIATE" / "BEGIN" */
    const char *relaxed_sql; /* run after begin_sql on a relaxed connection, or NULL */
    unsigned caps;         /* cti_cap_t bits: what callers may choose by (store.h) */
    /* The dialect of migrations: what the runner's tokens become. */
    const char *identity_pk;            /* @ID@ */
    const char *each_open, *each_close; /* @EACH( and )@ */
    /* Opens db->impl. On failure still sets db->impl when the connection can
     * be retried later, and returns CTI_EUNAVAILABLE. */
    int (*connect)(cti_db_t *db);
    void (*disconnect)(cti_db_t *db);
    int (*exec)(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n, cti_row_fn fn,
                void *ud);
    int (*script)(cti_db_t *db, const char *sql);
    const char *(*errmsg)(const cti_db_t *db);
    /* CTI_CAP_ANALYZE: see cti_db_analyze_stale; NULL without it. */
    int (*analyze_stale)(cti_db_t *db, const char *const *tables, int n);
    /* Serialises migrations across processes; may be NULL. */
    int (*lock_migrations)(cti_db_t *db);
    void (*unlock_migrations)(cti_db_t *db);
    /* Row access for this backend's row representation. */
    int (*row_columns)(const cti_row_t *row);
    bool (*row_is_null)(const cti_row_t *row, int col);
    int64_t (*row_int)(const cti_row_t *row, int col);
    double (*row_real)(const cti_row_t *row, int col);
    const char *(*row_text)(const cti_row_t *row, int col);
    /* Called once at store close with the last connection (SQLite: checkpoint). */
    void (*flush)(cti_db_t *db);
    /* Called once at store close, before flush: frees be_state. May be NULL. */
    void (*close_store)(cti_store_t *st);
} cti_backend_t;

struct cti_store {
    const cti_backend_t *be;
    cti_store_options_t opts; /* strings owned (copied) */
    pthread_key_t tls_key;
    pthread_mutex_t lock; /* protects conns */
    cti_db_t *conns;      /* every open connection, for closing at the end */
    void *be_state;       /* the backend's, per store (set under lock) */
};

struct cti_db {
    cti_store_t *st;
    void *impl;
    bool in_tx;
    cti_db_trace_fn trace; /* cti_db_trace: NULL, or shown every statement */
    void *trace_ud;
    bool thread_local;
    bool relaxed; /* cti_store_connect_relaxed: set before connect */
    bool pipeline; /* PostgreSQL: send writes inside transactions without waiting (cti_db_pipeline) */
    int timeout_ms; /* PostgreSQL: the longest wait for an answer or a connect; 0: the store's
                       query_timeout_ms, -1: none (migrations); set around a call (cti_db_ping) */
    cti_db_t *prev, *next; /* in st->conns, under st->lock */
};

/* A row as the backends hand it to callbacks: impl points at backend state. */
struct cti_row {
    const cti_backend_t *be;
    void *impl;
    int index;
};

/* A hash of SQL text: the key of the backends' prepared-statement caches (texts compared too). */
uint64_t cti_store_sql_hash(const char *sql);

/* PostgreSQL connections for others than the backend (wakeup.c), bounded as
 * its own are (pg.c): a connect waiting at most timeout_ms (-1 or over 3 s:
 * 3 s), non-blocking, with TCP keepalives and TCP_USER_TIMEOUT; NULL on
 * failure with err set. And one statement whose answer waits at most
 * timeout_ms: its result, or NULL without an answer (then close conn). */
struct pg_conn;
struct pg_result;
struct pg_conn *cti_pg_connect(const char *conninfo, const char *app_name, int timeout_ms,
                               char *err, size_t cap, bool *late /* NULL, or: timed out */);
struct pg_result *cti_pg_exec_within(struct pg_conn *conn, const char *sql, int timeout_ms);

extern const cti_backend_t cti_backend_sqlite;
extern const cti_backend_t cti_backend_postgres;

#endif
