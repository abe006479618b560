/* test_walbuf.c — unit tests for src/store/walbuf.c (the VFS that gathers WAL
 * writes): transactions larger than one write, pages read back from the WAL in
 * the middle of a transaction, and what another connection (the default VFS)
 * and a reopened database see. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/walbuf.h"

static char path[64];

static sqlite3 *open_db(const char *vfs)
{
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    return h;
}

static int64_t scalar(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void exec(sqlite3 *h, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
}

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof path, "/tmp/cti-walbuf-%d.db", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[80];
    const char *ext[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", path, ext[i]);
        unlink(p);
    }
    return 0;
}

/* Several MiB in one transaction (far more than one 128 KiB write), with a page
 * cache small enough that pages are written to the WAL and read back before
 * the commit; then each of 50 small transactions. Another connection through
 * the default VFS sees every row, and so does the database reopened. */
static void test_large_and_small_transactions(void **state)
{
    (void)state;
    assert_string_equal(cti_walbuf_vfs(), CTI_WALBUF_VFS);
    sqlite3 *w = open_db(CTI_WALBUF_VFS), *r = open_db(NULL);
    exec(w, "PRAGMA cache_size=20; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, n INT);"
            "CREATE INDEX t_n ON t (n);");
    exec(w, "BEGIN IMMEDIATE;"
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)"
            "  INSERT INTO t (v, n) SELECT randomblob(1500), i * 7919 % 3001 FROM s;");
    /* read back inside the transaction: pages already spilled to the WAL */
    assert_int_equal(scalar(w, "SELECT sum(length(v)) FROM t"), 3000 * 1500);
    assert_int_equal(scalar(w, "SELECT count(*) FROM t WHERE n < 100"), 99);
    exec(w, "COMMIT");
    assert_int_equal(scalar(r, "SELECT count(*) FROM t"), 3000);
    for (int i = 0; i < 50; i++) {
        exec(w, "INSERT INTO t (v, n) VALUES (randomblob(300), -1)");
        assert_int_equal(scalar(r, "SELECT count(*) FROM t WHERE n = -1"), i + 1);
    }
    int log = -1, done = -1;
    assert_int_equal(sqlite3_wal_checkpoint_v2(r, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done),
                     SQLITE_OK);
    assert_true(log > 0 && done == log);
    exec(w, "INSERT INTO t (v, n) VALUES (zeroblob(10), -2)"); /* the WAL starts over */
    sqlite3_close(w);
    sqlite3_close(r);
    sqlite3 *again = open_db(NULL);
    assert_int_equal(scalar(again, "SELECT count(*) FROM t"), 3051);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(again, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_large_and_small_transactions, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
