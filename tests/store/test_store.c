/*
 * test_store.c — the storage conformance suite: the same tests against
 * whichever backend CTI_TEST_DB names ("sqlite:PATH" or a postgres:// URL).
 * tests/run-store-tests.sh runs it once per backend.
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

static int64_t calls_where(const char *cond)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM calls WHERE app_id = 'app_upsert' AND %s", cond);
    return count(sql);
}

/* A leg saved with keys_same (SQLite: an upsert that leaves the key indexes
 * alone) and without: either way the row ends as the leg is, and the indexes
 * find it by its current keys only. */
static void test_call_upserts_keep_rows_and_indexes_true(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_call_t c;
    cti_call_init(&c, 9007199254740993LL);
    snprintf(c.external_number, sizeof c.external_number, "+14155550100");
    snprintf(c.internal_number, sizeof c.internal_number, "+14155550199");
    c.dialpad_user_id = 42;
    c.started_at = 1000;
    c.fields_ts = 1000;
    cti_call_t *calls[] = {&c};
    const char *docs[] = {"{\"v\":1}"};
    bool no[] = {false}, yes[] = {true};
    assert_int_equal(cti_calls_save_many(db, "app_upsert", calls, docs, no, 1, 5), 0);

    c.status = CTI_STATUS_ENDED; /* keys as stored */
    c.ended_at = 2000;
    docs[0] = "{\"v\":2}";
    assert_int_equal(cti_calls_save_many(db, "app_upsert", calls, docs, yes, 1, 6), 0);
    assert_int_equal(calls_where("status = 'ended' AND ended_at = 2000 AND doc = '{\"v\":2}' "
                                 "AND updated_at = 6 AND external_number = '+14155550100'"),
                     1);

    snprintf(c.external_number, sizeof c.external_number, "+14155550111"); /* keys changed */
    c.started_at = 900;
    c.dialpad_user_id = 43;
    docs[0] = "{\"v\":3}";
    assert_int_equal(cti_calls_save_many(db, "app_upsert", calls, docs, no, 1, 7), 0);
    assert_int_equal(calls_where("external_number = '+14155550111' AND dialpad_user_id = 43 "
                                 "AND sort_at = 900 AND doc = '{\"v\":3}'"),
                     1);
    assert_int_equal(calls_where("external_number = '+14155550100'"), 0);
    assert_int_equal(calls_where("dialpad_user_id = 42"), 0);
    assert_int_equal(calls_where("status = 'ended'"), 1);
    if (!is_pg) /* every index agrees with its table */
        assert_int_equal(count("SELECT COUNT(*) FROM pragma_integrity_check "
                               "WHERE integrity_check <> 'ok'"),
                         0);
    cti_call_clear(&c);
}

/* The two upserts are different statements even when the light one runs first
 * for a row count (statement texts are built once and kept). */
static void test_light_upsert_first_does_not_stand_for_the_full_one(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_call_t c[3];
    cti_call_t *calls[3];
    bool same[3] = {true, true, true}, changed[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        cti_call_init(&c[i], 800 + i);
        snprintf(c[i].external_number, sizeof c[i].external_number, "+1415555020%d", i);
        c[i].dialpad_user_id = 7;
        c[i].fields_ts = 100;
        calls[i] = &c[i];
    }
    /* new rows through the light statement (3 rows: a count no other test uses) */
    assert_int_equal(cti_calls_save_many(db, "app_first", calls, NULL, same, 3, 1), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(c[i].external_number, sizeof c[i].external_number, "+1415555030%d", i);
        c[i].dialpad_user_id = 8;
    }
    assert_int_equal(cti_calls_save_many(db, "app_first", calls, NULL, changed, 3, 2), 0);
    assert_int_equal(count("SELECT COUNT(*) FROM calls WHERE app_id = 'app_first' AND "
                           "dialpad_user_id = 8 AND external_number LIKE '+1415555030%'"),
                     3);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);
}

/* Raw events are inserted in key order (so instances never deadlock on the
 * unique index); which item was stored and which was a duplicate still
 * follows the order given: the first of a key twice in one call is stored. */
static void test_raw_insert_marks_follow_the_items(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_raw_new_t items[] = {
        {"app_raw", "k2", "call", "{\"n\":2}", 1, false, 0},
        {"app_raw", "k1", "call", "{\"n\":1}", 1, false, 0},
        {"app_raw", "k1", "call", "{\"n\":11}", 1, false, 0},
        {"app_raw", "k0", "call", "{\"n\":0}", 1, false, 0},
    };
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 4, CTI_RAW_PENDING), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_true(items[0].inserted && items[1].inserted && items[3].inserted);
    assert_false(items[2].inserted);
    assert_int_equal(count("SELECT COUNT(*) FROM raw_events WHERE app_id = 'app_raw' AND "
                           "dedupe_key = 'k1' AND payload = '{\"n\":1}'"),
                     1);
    char sql[160];
    for (int i = 0; i < 4; i++) {
        if (!items[i].inserted)
            continue;
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM raw_events WHERE id = %lld AND dedupe_key = '%s'",
                 (long long)items[i].id, items[i].dedupe_key);
        assert_int_equal(count(sql), 1);
    }
    /* again: all duplicates */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 4, CTI_RAW_PENDING), 0);
    assert_int_equal(cti_db_commit(db), 0);
    for (int i = 0; i < 4; i++)
        assert_false(items[i].inserted);
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
    cti_raw_new_t items[5];
    char keys[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(keys[i], sizeof keys[i], "p%d", i);
        items[i] = (cti_raw_new_t){"app_pad", keys[i], "call", "{}", 1, false, 0};
    }
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 5, CTI_RAW_PENDING), 0); /* 5: sent as 8 */
    assert_int_equal(cti_db_commit(db), 0);
    for (int i = 0; i < 5; i++)
        assert_true(items[i].inserted && items[i].id > 0);
    assert_int_equal(count("SELECT COUNT(*) FROM raw_events WHERE app_id = 'app_pad'"), 5);

    cti_call_t c[3];
    cti_call_t *calls[3];
    for (int i = 0; i < 3; i++) {
        cti_call_init(&c[i], 900 + i);
        c[i].fields_ts = 1;
        calls[i] = &c[i];
    }
    assert_int_equal(cti_calls_save_many(db, "app_pad", calls, NULL, NULL, 3, 1), 0);
    int64_t ids[] = {900, 901, 902};
    int seen = 0;
    assert_int_equal(cti_calls_load_many(db, "app_pad", ids, 3, count_leg, &seen), 0); /* as 4 */
    assert_int_equal(seen, 3);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);
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
        cmocka_unit_test(test_call_upserts_keep_rows_and_indexes_true),
        cmocka_unit_test(test_light_upsert_first_does_not_stand_for_the_full_one),
        cmocka_unit_test(test_raw_insert_marks_follow_the_items),
        cmocka_unit_test(test_padded_chunks_store_and_find_each_once),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
