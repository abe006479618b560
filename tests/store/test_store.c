/*
 * test_store.c — the storage conformance suite, framework part: the same
 * tests against whichever backend CTI_TEST_DB names ("sqlite:PATH" or a
 * postgres:// URL): parameters, errors, transactions, connections, the
 * capability table, multi-row and IN-list statements, pipelining, the
 * migration runner. The domain's SQL has its own files (test_tenants.c,
 * test_events.c, test_calls.c, test_plans.c); tests/run-store-tests.sh
 * runs each once per backend.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "repo/calls.h"
#include "repo/events.h"
#include "repo/schema.h"
#include "harness.h"
#include "store/store.h"

static void test_backend_name(void **state)
{
    assert_string_equal(cti_store_backend(store), is_pg ? "postgres" : "sqlite");
}

static void test_migrations_are_recorded_once(void **state)
{
    int64_t n = count("SELECT COUNT(*) FROM schema_migrations");
    assert_int_equal(n, cti_store_migration_count());
    assert_int_equal(cti_store_migrate(store), 0);
    assert_int_equal(cti_store_migrate(store), 0);
    assert_int_equal(count("SELECT COUNT(*) FROM schema_migrations"), n);
    assert_int_equal(count("SELECT COUNT(DISTINCT version) FROM schema_migrations"), n);
    /* the tables of the last migration exist */
    assert_int_equal(count("SELECT COUNT(*) FROM server_meta"), 0);
}

typedef struct {
    int64_t i;
    double r;
    char s[128];
    bool s_null;
} row_t;

static int read_row(const cti_row_t *row, void *ud)
{
    row_t *out = ud;
    assert_int_equal(cti_row_columns(row), 3);
    out->i = cti_row_int(row, 0);
    out->r = cti_row_real(row, 1);
    out->s_null = cti_row_is_null(row, 2);
    snprintf(out->s, sizeof out->s, "%s", out->s_null ? "" : cti_row_text(row, 2));
    return 1;
}

static void roundtrip(int64_t i, double r, const char *s)
{
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_db_exec(db, "DELETE FROM t_params", NULL, 0, NULL, NULL), 0);
    cti_sql_val_t p[] = {CTI_SQL_INT(i), CTI_SQL_REAL(r), CTI_SQL_TEXT(s)};
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_params (i, r, s) VALUES ($1, $2, $3)", p, 3,
                                 NULL, NULL),
                     0);
    row_t got = {0};
    assert_int_equal(cti_db_exec(db, "SELECT i, r, s FROM t_params", NULL, 0, read_row, &got), 1);
    assert_true(got.i == i);
    assert_true(got.r == r);
    if (s) {
        assert_false(got.s_null);
        assert_string_equal(got.s, s);
    } else {
        assert_true(got.s_null);
    }
}

static void test_parameters_round_trip(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_params");
    script_ok("CREATE TABLE t_params (i BIGINT, r DOUBLE PRECISION, s TEXT)");
    roundtrip(INT64_MAX, 0.5, "plain");
    roundtrip(INT64_MIN, -1.25, "quotes ' and \" and $1 and ?");
    roundtrip(6019124213350400, 143391.0, "unicode: héllo ☎ 日本");
    roundtrip(9007199254740993, 8951.029999999999, NULL); /* above 2^53: exact */
    roundtrip(0, 0, "");
}

static void test_placeholders_out_of_order_and_reused(void **state)
{
    cti_sql_val_t p[] = {CTI_SQL_INT(7), CTI_SQL_INT(5)};
    int64_t v = 0;
    assert_int_equal(cti_db_query_int(cti_store_db(store), "SELECT $2 * 10 + $1 + $2", p, 2, &v),
                     0);
    assert_int_equal(v, 62);
}

static void test_dollar_in_string_literal_is_not_a_placeholder(void **state)
{
    row_t got = {0};
    assert_int_equal(cti_db_exec(cti_store_db(store), "SELECT 1, 2.0, '$1 costs $2'", NULL, 0,
                                 read_row, &got),
                     1);
    assert_string_equal(got.s, "$1 costs $2");
}

static void test_unique_violation_is_eexist(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_unique");
    script_ok("CREATE TABLE t_unique (k TEXT PRIMARY KEY)");
    cti_sql_val_t k = CTI_SQL_TEXT("a");
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_unique (k) VALUES ($1)", &k, 1, NULL, NULL), 0);
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_unique (k) VALUES ($1)", &k, 1, NULL, NULL),
                     CTI_EEXIST);
    /* ON CONFLICT DO NOTHING is the portable way to ignore it */
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_unique (k) VALUES ($1) ON CONFLICT DO NOTHING",
                                 &k, 1, NULL, NULL),
                     0);
}

static void test_bad_sql_is_edb(void **state)
{
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_db_exec(db, "SELEC nonsense", NULL, 0, NULL, NULL), CTI_EDB);
    assert_true(strlen(cti_db_errmsg(db)) > 0);
    assert_int_equal(cti_db_ping(db), 0); /* the connection is still fine */
}

static void test_transactions_commit_and_rollback(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_tx");
    script_ok("CREATE TABLE t_tx (v BIGINT)");
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_tx VALUES (1)", NULL, 0, NULL, NULL), 0);
    cti_db_rollback(db);
    assert_int_equal(count("SELECT COUNT(*) FROM t_tx"), 0);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_tx VALUES (2)", NULL, 0, NULL, NULL), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_int_equal(count("SELECT SUM(v) FROM t_tx"), 2);
}

static int count_rows(const cti_row_t *row, void *ud)
{
    int *n = ud;
    return ++*n == 3 ? 42 : 0; /* stop at the third row */
}

static void test_row_callback_can_stop_early(void **state)
{
    int n = 0;
    int rc = cti_db_exec(cti_store_db(store),
                         "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4", NULL,
                         0, count_rows, &n);
    assert_int_equal(rc, 42);
    assert_int_equal(n, 3);
    int64_t v;
    assert_int_equal(cti_db_query_int(cti_store_db(store), "SELECT 1 WHERE 1 = 0", NULL, 0, &v),
                     CTI_ENOTFOUND);
}

static void test_returning_works(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_ret");
    script_ok("CREATE TABLE t_ret (k TEXT PRIMARY KEY, n BIGINT NOT NULL)");
    cti_sql_val_t p[] = {CTI_SQL_TEXT("x"), CTI_SQL_INT(5)};
    int64_t v = 0;
    const char *upsert = "INSERT INTO t_ret (k, n) VALUES ($1, $2) "
                         "ON CONFLICT (k) DO UPDATE SET n = t_ret.n + excluded.n RETURNING n";
    assert_int_equal(cti_db_query_int(cti_store_db(store), upsert, p, 2, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(cti_db_query_int(cti_store_db(store), upsert, p, 2, &v), 0);
    assert_int_equal(v, 10);
}

#define THREADS 4
#define PER_THREAD 100

static void *writer(void *arg)
{
    cti_db_t *db = cti_store_db(store); /* this thread's own connection */
    intptr_t failures = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        cti_sql_val_t v = CTI_SQL_INT(i);
        if (cti_db_begin(db) != 0 ||
            cti_db_exec(db, "INSERT INTO t_threads (v) VALUES ($1)", &v, 1, NULL, NULL) != 0 ||
            cti_db_commit(db) != 0)
            failures++;
    }
    return (void *)failures;
}

static void test_threads_have_their_own_connections(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_threads");
    script_ok("CREATE TABLE t_threads (v BIGINT)");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, writer, NULL);
    for (int i = 0; i < THREADS; i++) {
        void *failures;
        pthread_join(t[i], &failures);
        assert_int_equal((intptr_t)failures, 0);
    }
    assert_int_equal(count("SELECT COUNT(*) FROM t_threads"), THREADS * PER_THREAD);
}

static void test_dedicated_connection(void **state)
{
    cti_db_t *db = NULL;
    assert_int_equal(cti_store_connect(store, &db), 0);
    assert_non_null(db);
    assert_ptr_not_equal(db, cti_store_db(store));
    assert_int_equal(cti_db_ping(db), 0);
    cti_db_close(db);
}

/* PostgreSQL: a connection the server killed comes back on next use. */
static void test_reconnects_after_server_drops_connection(void **state)
{
    if (!is_pg)
        skip();
    cti_db_t *victim = NULL, *killer = cti_store_db(store);
    assert_int_equal(cti_store_connect(store, &victim), 0);
    int64_t pid = 0, ok = 0;
    assert_int_equal(cti_db_query_int(victim, "SELECT pg_backend_pid()", NULL, 0, &pid), 0);
    cti_sql_val_t p = CTI_SQL_INT(pid);
    assert_int_equal(cti_db_query_int(killer, "SELECT pg_terminate_backend($1::int)::int", &p, 1,
                                      &ok),
                     0);
    assert_int_equal(ok, 1);
    /* outside a transaction the statement is retried on a new connection */
    int64_t newpid = 0;
    assert_int_equal(cti_db_query_int(victim, "SELECT pg_backend_pid()", NULL, 0, &newpid), 0);
    assert_true(newpid != pid);

    /* inside a transaction the failure is reported, not hidden */
    assert_int_equal(cti_db_begin(victim), 0);
    p = CTI_SQL_INT(newpid);
    assert_int_equal(cti_db_query_int(killer, "SELECT pg_terminate_backend($1::int)::int", &p, 1,
                                      &ok),
                     0);
    assert_int_equal(cti_db_exec(victim, "SELECT 1", NULL, 0, NULL, NULL), CTI_EUNAVAILABLE);
    cti_db_rollback(victim);
    /* and after it, the connection recovers (reconnects are spaced 250 ms apart) */
    int rc = CTI_EUNAVAILABLE;
    for (int i = 0; i < 50 && rc != 0; i++) {
        rc = cti_db_ping(victim);
        if (rc != 0)
            usleep(20000);
    }
    assert_int_equal(rc, 0);
    cti_db_close(victim);
}

static int count_leg(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    (void)c, (void)crm, (void)sort_at;
    (*(int *)ud)++;
    return 0;
}

/* A batch is sent in as few statements as can be: the last chunk padded with
 * copies of its last row (inserts that skip what exists) or value (IN lists);
 * nothing comes back or is stored twice. */
static void test_padded_chunks_store_and_find_each_once(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    new_app(app, "pad");
    cti_raw_new_t items[5];
    char keys[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(keys[i], sizeof keys[i], "p%d", i);
        items[i] = (cti_raw_new_t){app, keys[i], "call", "{}", 1, false, 0};
    }
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 5, CTI_RAW_PENDING), 0); /* 5: sent as 8 */
    assert_int_equal(cti_db_commit(db), 0);
    for (int i = 0; i < 5; i++)
        assert_true(items[i].inserted && items[i].id > 0);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM raw_events WHERE app_id = '%s'", app);
    assert_int_equal(count(sql), 5);

    cti_call_t c[3];
    cti_call_t *calls[3];
    for (int i = 0; i < 3; i++) {
        cti_call_init(&c[i], 900 + i);
        c[i].fields_ts = 1;
        calls[i] = &c[i];
    }
    assert_int_equal(cti_calls_save_apps(db, NULL, app, calls, NULL, NULL, 3, 1), 0);
    int64_t ids[] = {900, 901, 902};
    int seen = 0;
    assert_int_equal(cti_calls_load_many(db, app, ids, 3, count_leg, &seen), 0); /* as 4 */
    assert_int_equal(seen, 3);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);
}


/* ---- what the backends can do -------------------------------------------------------------- */

/* The capability table is the backends' (src/store/sqlite.c, pg.c): this pins
 * it, so a change to it is a decision, not an accident. */
static void test_capabilities(void **state)
{
    assert_true(cti_store_has(store, CTI_CAP_SKIP_LOCKED) == is_pg);
    assert_true(cti_store_has(store, CTI_CAP_NOTIFY) == is_pg);
    assert_true(cti_store_has(store, CTI_CAP_ANALYZE) == is_pg);
    assert_true(cti_store_has(store, CTI_CAP_PARTIAL_UPDATE) == !is_pg);
    assert_true(cti_store_has(store, CTI_CAP_WITHOUT_ROWID) == !is_pg);
    assert_true(cti_db_store(cti_store_db(store)) == store);
}

static void test_in_tx_follows_begin_commit_rollback(void **state)
{
    cti_db_t *db = cti_store_db(store);
    assert_false(cti_db_in_tx(db));
    assert_int_equal(cti_db_begin(db), 0);
    assert_true(cti_db_in_tx(db));
    assert_int_equal(cti_db_commit(db), 0);
    assert_false(cti_db_in_tx(db));
    assert_int_equal(cti_db_begin(db), 0);
    cti_db_rollback(db);
    assert_false(cti_db_in_tx(db));
}

typedef struct {
    char sql[128];
    int n, calls;
} traced_t;

static void note_sql(const char *sql, const cti_sql_val_t *p, int n, void *ud)
{
    traced_t *t = ud;
    snprintf(t->sql, sizeof t->sql, "%s", sql);
    t->n = n;
    t->calls++;
}

static void test_trace_shows_each_statement(void **state)
{
    cti_db_t *db = cti_store_db(store);
    traced_t t = {.calls = 0};
    cti_db_trace(db, note_sql, &t);
    int64_t v = 0;
    cti_sql_val_t p[] = {CTI_SQL_INT(2), CTI_SQL_INT(3)};
    assert_int_equal(cti_db_query_int(db, "SELECT CAST($1 AS BIGINT) + $2", p, 2, &v), 0);
    cti_db_trace(db, NULL, NULL);
    assert_int_equal(v, 5);
    assert_int_equal(cti_db_query_int(db, "SELECT 1", NULL, 0, &v), 0);
    assert_int_equal(t.calls, 1);
    assert_string_equal(t.sql, "SELECT CAST($1 AS BIGINT) + $2");
    assert_int_equal(t.n, 2);
}

/* ---- many rows, IN lists, counts, text ------------------------------------------------------ */

static int sum_col(const cti_row_t *row, void *ud)
{
    *(int64_t *)ud += cti_row_int(row, 0);
    return 0;
}

static void test_exec_rows_and_insert_new_rows_in_chunks(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_rows");
    script_ok("CREATE TABLE t_rows (k BIGINT PRIMARY KEY, v TEXT NOT NULL)");
    cti_db_t *db = cti_store_db(store);
    enum { N = 100 }; /* chunks of 64, 32, 4 */
    cti_sql_val_t vals[2 * N];
    char texts[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "v%d", i);
        vals[2 * i] = CTI_SQL_INT(i), vals[2 * i + 1] = CTI_SQL_TEXT(texts[i]);
    }
    int64_t returned = 0;
    assert_true(cti_db_exec_rows(db, "INSERT INTO t_rows (k, v)", "RETURNING k", 2, vals, N,
                                 sum_col, &returned) >= 0);
    assert_int_equal(returned, N * (N - 1) / 2); /* every chunk's RETURNING seen */
    assert_int_equal(count("SELECT COUNT(*) FROM t_rows"), N);
    assert_int_equal(count("SELECT COUNT(*) FROM t_rows WHERE v = 'v' || CAST(k AS TEXT)"), N);

    /* 5 rows, 2 of them new, one new given twice: padded to 8, each stored once */
    cti_sql_val_t more[] = {CTI_SQL_INT(1),   CTI_SQL_TEXT("x"), CTI_SQL_INT(200), CTI_SQL_TEXT("n"),
                            CTI_SQL_INT(2),   CTI_SQL_TEXT("x"), CTI_SQL_INT(201), CTI_SQL_TEXT("m"),
                            CTI_SQL_INT(200), CTI_SQL_TEXT("again")};
    returned = 0;
    assert_true(cti_db_insert_new_rows(db, "INSERT INTO t_rows (k, v)",
                                       "ON CONFLICT DO NOTHING RETURNING k", 2, more, 5, sum_col,
                                       &returned) >= 0);
    assert_int_equal(returned, 401);
    assert_int_equal(count("SELECT COUNT(*) FROM t_rows"), N + 2);
    assert_int_equal(count("SELECT COUNT(*) FROM t_rows WHERE k = 200 AND v = 'n'"), 1);
    assert_int_equal(count("SELECT COUNT(*) FROM t_rows WHERE k = 1 AND v = 'v1'"), 1);
}

static void test_exec_in_and_exec_count(void **state)
{
    cti_db_t *db = cti_store_db(store); /* t_rows from the test before: k 0..99, 200, 201 */
    enum { N = 70 };                    /* two statements: 64 values, then 6 padded to 8 */
    cti_sql_val_t list[N];
    for (int i = 0; i < N; i++)
        list[i] = CTI_SQL_INT(i * 3); /* 0, 3, ..., 207: 34 of them exist (0..99), and 201 */
    cti_sql_val_t fixed = CTI_SQL_TEXT("v%");
    int64_t sum = 0;
    assert_true(cti_db_exec_in(db, "SELECT k FROM t_rows WHERE v LIKE $1 AND k IN", "", &fixed,
                               1, list, N, sum_col, &sum) >= 0);
    int64_t want = 201; /* 201 = 67 * 3: v is 'm', not like 'v%': excluded */
    want = 0;
    for (int i = 0; i < N; i++)
        if (i * 3 < 100)
            want += i * 3;
    assert_int_equal(sum, want);
    int64_t rows = -1;
    cti_sql_val_t p = CTI_SQL_INT(50);
    assert_int_equal(cti_db_exec_count(db, "UPDATE t_rows SET v = 'big' WHERE k >= $1 RETURNING k",
                                       &p, 1, &rows),
                     0);
    assert_int_equal(rows, 52);
    assert_int_equal(cti_db_exec_count(db, "SELECT k FROM t_rows WHERE k < 0", NULL, 0, &rows), 0);
    assert_int_equal(rows, 0);
}

static void test_query_text(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char out[8];
    assert_int_equal(cti_db_query_text(db, "SELECT 'hello'", NULL, 0, out, sizeof out), 0);
    assert_string_equal(out, "hello");
    assert_int_equal(cti_db_query_text(db, "SELECT 'truncated text'", NULL, 0, out, sizeof out), 0);
    assert_string_equal(out, "truncat"); /* cut to the buffer, terminated */
    assert_int_equal(cti_db_query_text(db, "SELECT NULL", NULL, 0, out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(cti_db_query_text(db, "SELECT 'x' WHERE 1 = 0", NULL, 0, out, sizeof out),
                     CTI_ENOTFOUND);
    assert_string_equal(out, "");
}

/* A pipelined connection (the ingest worker's) commits what it sent without
 * waiting, and an error among the statements fails the whole transaction. */
static void test_pipelined_writes(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_pipe");
    script_ok("CREATE TABLE t_pipe (k BIGINT PRIMARY KEY)");
    cti_db_t *db = NULL;
    assert_int_equal(cti_store_connect(store, &db), 0);
    cti_db_pipeline(db, true);
    const char *ins = "INSERT INTO t_pipe (k) VALUES ($1)";
    for (int round = 0; round < 2; round++) { /* the first prepares, the second pipes */
        assert_int_equal(cti_db_begin(db), 0);
        for (int i = 0; i < 3; i++) {
            cti_sql_val_t k = CTI_SQL_INT(round * 10 + i);
            assert_int_equal(cti_db_exec(db, ins, &k, 1, NULL, NULL), 0);
        }
        assert_int_equal(cti_db_commit(db), 0);
    }
    assert_int_equal(count("SELECT COUNT(*) FROM t_pipe"), 6);
    /* a duplicate among piped writes: COMMIT (or the statement) reports it; nothing kept */
    assert_int_equal(cti_db_begin(db), 0);
    cti_sql_val_t k = CTI_SQL_INT(100);
    int rc = cti_db_exec(db, ins, &k, 1, NULL, NULL);
    k = CTI_SQL_INT(10);
    if (rc == 0)
        rc = cti_db_exec(db, ins, &k, 1, NULL, NULL);
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    assert_int_equal(rc, CTI_EEXIST);
    assert_false(cti_db_in_tx(db));
    assert_int_equal(count("SELECT COUNT(*) FROM t_pipe"), 6);
    assert_int_equal(cti_db_ping(db), 0); /* and the connection goes on */
    cti_db_close(db);
}

static void test_analyze_stale(void **state)
{
    script_ok("DROP TABLE IF EXISTS t_stats");
    script_ok("CREATE TABLE t_stats (k BIGINT)");
    script_ok("INSERT INTO t_stats SELECT 1 UNION ALL SELECT 2");
    static const char *const tables[] = {"t_stats"};
    assert_int_equal(cti_db_analyze_stale(cti_store_db(store), tables, 1), 0);
    if (!cti_store_has(store, CTI_CAP_ANALYZE))
        return; /* a no-op there */
    int64_t analyzed = 0;
    for (int i = 0; i < 100 && !analyzed; i++) {
        analyzed = count("SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = 't_stats' "
                         "AND last_analyze IS NOT NULL");
        if (!analyzed)
            usleep(20000);
    }
    assert_int_equal(analyzed, 1);
}

/* ---- the migration runner, on a database of its own ----------------------------------------- */

static cti_store_t *fresh_store(void)
{
    const char *url = getenv("CTI_TEST_DB");
    char conninfo[512];
    if (is_pg) {
        script_ok("DROP SCHEMA IF EXISTS runner_test CASCADE");
        script_ok("CREATE SCHEMA runner_test");
        snprintf(conninfo, sizeof conninfo, "%s%coptions=-csearch_path%%3Drunner_test", url,
                 strchr(url, '?') ? '&' : '?');
    } else {
        snprintf(conninfo, sizeof conninfo, "%s.runner", url + 7);
        unlink(conninfo);
    }
    cti_store_options_t o = {.kind = is_pg ? CTI_DB_POSTGRES : CTI_DB_SQLITE,
                             .conninfo = conninfo,
                             .display = "runner test",
                             .sqlite_sync_full = false};
    cti_store_t *st = NULL;
    assert_int_equal(cti_store_open(&o, &st), 0);
    return st;
}

static int64_t count_in(cti_store_t *st, const char *sql)
{
    int64_t n = -1;
    int rc = cti_db_query_int(cti_store_db(st), sql, NULL, 0, &n);
    return rc == 0 ? n : rc;
}

static void test_migration_runner(void **state)
{
    cti_store_t *st = fresh_store();
    /* a text whose tokens grow it past twice its length (the old buffer's size) */
    char ids[4096];
    size_t len = (size_t)snprintf(ids, sizeof ids, "CREATE TABLE t_run (id @ID@, v TEXT);\n-- ");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(ids + len, sizeof ids - len, "@ID@");
    snprintf(ids + len, sizeof ids - len, "\n");
    cti_migration_t list[] = {
        {1, "identity", ids, 0},
        {2, "json arrays",
         "CREATE TABLE t_arr (a TEXT);\n"
         "INSERT INTO t_arr VALUES ('[\"x\", \"y\"]');\n"
         "CREATE TABLE t_el AS SELECT j.value AS v FROM t_arr, @EACH(t_arr.a)@;\n",
         0},
        {3, "clustered", "CREATE TABLE t_clustered (k TEXT PRIMARY KEY) WITHOUT ROWID;\n",
         CTI_CAP_WITHOUT_ROWID},
    };
    assert_int_equal(cti_store_apply_migrations(st, list, 2), 0);
    assert_int_equal(count_in(st, "SELECT COUNT(*) FROM schema_migrations"), 2);
    assert_int_equal(cti_store_apply_migrations(st, list, 3), 0); /* only the new one runs */
    assert_int_equal(cti_store_apply_migrations(st, list, 3), 0);
    assert_int_equal(count_in(st, "SELECT COUNT(*) FROM schema_migrations"), 3);
    assert_int_equal(count_in(st, "SELECT COUNT(*) FROM t_el WHERE v IN ('x', 'y')"), 2);
    cti_db_t *db = cti_store_db(st);
    assert_int_equal(cti_db_exec(db, "INSERT INTO t_run (v) VALUES ('a'), ('b')", NULL, 0, NULL,
                                 NULL),
                     0);
    assert_int_equal(count_in(st, "SELECT COUNT(DISTINCT id) FROM t_run"), 2); /* identity */
    /* recorded either way; run only where the backend has the capability */
    assert_true((count_in(st, "SELECT COUNT(*) FROM t_clustered") == 0) ==
                cti_store_has(st, CTI_CAP_WITHOUT_ROWID));

    /* a failing migration: an error, not recorded, the ones before it kept */
    cti_migration_t bad[] = {list[0], list[1], list[2], {4, "bad", "CREATE TABLE (;", 0}};
    assert_true(cti_store_apply_migrations(st, bad, 4) < 0);
    assert_int_equal(count_in(st, "SELECT COUNT(*) FROM schema_migrations"), 3);
    cti_store_close(st);
}

/* A list not numbered 1..n is a bug of the build: it stops there. */
static void test_migration_runner_refuses_gaps(void **state)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cti_migration_t gap[] = {{1, "one", "SELECT 1;", 0}, {3, "three", "SELECT 1;", 0}};
        cti_store_apply_migrations(store, gap, 2);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_name),
        cmocka_unit_test(test_migrations_are_recorded_once),
        cmocka_unit_test(test_parameters_round_trip),
        cmocka_unit_test(test_placeholders_out_of_order_and_reused),
        cmocka_unit_test(test_dollar_in_string_literal_is_not_a_placeholder),
        cmocka_unit_test(test_unique_violation_is_eexist),
        cmocka_unit_test(test_bad_sql_is_edb),
        cmocka_unit_test(test_transactions_commit_and_rollback),
        cmocka_unit_test(test_row_callback_can_stop_early),
        cmocka_unit_test(test_returning_works),
        cmocka_unit_test(test_threads_have_their_own_connections),
        cmocka_unit_test(test_dedicated_connection),
        cmocka_unit_test(test_reconnects_after_server_drops_connection),
        cmocka_unit_test(test_padded_chunks_store_and_find_each_once),
        cmocka_unit_test(test_capabilities),
        cmocka_unit_test(test_in_tx_follows_begin_commit_rollback),
        cmocka_unit_test(test_trace_shows_each_statement),
        cmocka_unit_test(test_exec_rows_and_insert_new_rows_in_chunks),
        cmocka_unit_test(test_exec_in_and_exec_count),
        cmocka_unit_test(test_query_text),
        cmocka_unit_test(test_pipelined_writes),
        cmocka_unit_test(test_analyze_stale),
        cmocka_unit_test(test_migration_runner),
        cmocka_unit_test(test_migration_runner_refuses_gaps),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
