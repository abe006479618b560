/*
 * test_processor.c — the processor (src/ingest/processor.c) on a real store,
 * both backends: what one transaction of many events leaves.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jscan.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "harness.h"
#include "ingest/processor.h"
#include "repo/events.h"

#define N 200 /* past 64, where the list of appended events first grows */

/* One transaction storing and applying N call events (as tools/seed.c and the
 * ingest worker do): every event-log row belongs to the app. The rows took
 * their app_id from the list of appended events kept for publishing, which
 * moved when it grew: a use after free (ASan), garbage app ids (PostgreSQL
 * refused them as invalid UTF-8). */
static void many_events_in_one_transaction_keep_their_app(void **state)
{
    char app[37], sql[512];
    new_app(app, "proc-many");
    snprintf(sql, sizeof sql,
             "INSERT INTO apps (id, name, created_at, updated_at) VALUES ('%s', 'p', 1, 1)", app);
    script_ok(sql);
    static char payload[N][512];
    cti_jdoc_t docs[N];
    cti_ev_info_t info[N];
    cti_raw_new_t rows[N];
    cti_stored_t fresh[N];
    char err[128];
    for (int i = 0; i < N; i++) {
        int len = snprintf(payload[i], sizeof payload[i],
                           "{\"call_id\":%d,\"state\":\"ringing\",\"direction\":\"inbound\","
                           "\"external_number\":\"+14155550%03d\",\"internal_number\":"
                           "\"+14155550199\",\"date_started\":1767628800000,"
                           "\"event_timestamp\":%lld}",
                           9000 + i, i, 1767628800000LL + i);
        assert_int_equal(cti_jdoc_parse(&docs[i], payload[i], (size_t)len, err, sizeof err), 0);
        cti_ev_classify(&docs[i], payload[i], (size_t)len, &info[i]);
        assert_null(info[i].problem);
        rows[i] = (cti_raw_new_t){app, info[i].dedupe_key, "call", payload[i], 1000, false, 0};
    }
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, rows, N, CTI_RAW_APPLIED), 0);
    for (int i = 0; i < N; i++) {
        assert_true(rows[i].inserted);
        fresh[i] = (cti_stored_t){rows[i].id, app, payload[i], &docs[i], &info[i], 1000, false};
    }
    cti_processed_t *done = cti_processed_new();
    assert_int_equal(cti_process_stored(db, cti_now_ms(), fresh, N, done), 0);
    assert_int_equal(cti_db_commit(db), 0);
    cti_processed_free(done);
    for (int i = 0; i < N; i++)
        cti_jdoc_free(&docs[i]);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM event_log WHERE app_id = '%s'", app);
    assert_int_equal(count(sql), N);
    snprintf(sql, sizeof sql, "SELECT MAX(seq) FROM event_log WHERE app_id = '%s'", app);
    assert_int_equal(count(sql), N);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(many_events_in_one_transaction_keep_their_app),
    };
    return cmocka_run_group_tests(tests, store_setup, store_teardown);
}
