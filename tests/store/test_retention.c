/*
 * test_retention.c — conformance of src/repo/retention.c on both backends:
 * what each purge deletes and what it keeps. Raw events: applied and dead
 * ones older than the cutoff go, pending ones never, and the walk stops at
 * the first young row. Timelines: by age. The event log: a prefix of old
 * seqs, never an app's newest row, so its oldest seq (the 410 / reset
 * window) moves up gaplessly. Calls (with their timelines), voicemails and
 * messages (with their numbers) only in a run with calls_days. Batches:
 * a batch smaller than the work leaves the rest for the next one. The
 * purger thread purges only under the lease "retention".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "core/util.h"
#include "harness.h"
#include "repo/events.h"
#include "repo/dialpad.h"
#include "repo/retention.h"

#include <unistd.h>

#define DAY CTI_DAY_MS
#define NOW ((int64_t)400 * DAY) /* a fake "now": 400 days after the epoch */

/* COUNT(*) of a query naming one app (fmt: a literal with one %s). */
static char sqlbuf[512];
#define countf(fmt, app) (snprintf(sqlbuf, sizeof sqlbuf, fmt, app), count(sqlbuf))

static void log_rows(const char *app, int64_t first, int64_t last, int64_t created_at)
{
    char sql[512];
    for (int64_t s = first; s <= last; s++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO event_log (app_id, seq, event, call_id, created_at, body) VALUES "
                 "('%s', %lld, 'call.ringing', NULL, %lld, '{}')",
                 app, (long long)s, (long long)created_at);
        script_ok(sql);
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO app_seq (app_id, last_seq) VALUES ('%s', %lld) ON CONFLICT (app_id) "
             "DO UPDATE SET last_seq = excluded.last_seq",
             app, (long long)last);
    script_ok(sql);
}

static void event_log_is_purged_as_a_prefix_keeping_the_newest(void **state)
{
    char app[37], idle[37];
    cti_db_t *db = cti_store_db(store);
    int64_t n = -1, oldest, newest;
    new_app(app, "ret-log");
    log_rows(app, 1, 5, NOW - 100 * DAY); /* old */
    log_rows(app, 6, 7, NOW - 1 * DAY);   /* young */
    /* batches of 2: 1-2, 3-4, 5 */
    assert_int_equal(cti_purge_event_log(db, app, NOW - 90 * DAY, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cti_eventlog_bounds(db, app, &oldest, &newest), 0);
    assert_int_equal(oldest, 3);
    assert_int_equal(cti_purge_event_log(db, app, NOW - 90 * DAY, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cti_purge_event_log(db, app, NOW - 90 * DAY, 2, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cti_purge_event_log(db, app, NOW - 90 * DAY, 2, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(cti_eventlog_bounds(db, app, &oldest, &newest), 0);
    assert_int_equal(oldest, 6);
    assert_int_equal(newest, 7);

    /* an app idle for longer than the window keeps its newest row: its oldest
     * seq still tells a client at since=1 that 2..9 are gone */
    new_app(idle, "ret-idle");
    log_rows(idle, 1, 10, NOW - 200 * DAY);
    assert_int_equal(cti_purge_event_log(db, idle, NOW - 90 * DAY, 1000, &n), 0);
    assert_int_equal(n, 9);
    assert_int_equal(cti_eventlog_bounds(db, idle, &oldest, &newest), 0);
    assert_int_equal(oldest, 10);
    assert_int_equal(newest, 10);
    assert_int_equal(cti_purge_event_log(db, idle, NOW - 90 * DAY, 1000, &n), 0);
    assert_int_equal(n, 0);
}

static void raw(const char *app, const char *key, int64_t received_at, int status)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO raw_events (app_id, dedupe_key, kind, payload, received_at, status) "
             "VALUES ('%s', '%s', 'call', '{}', %lld, %d)",
             app, key, (long long)received_at, status);
    script_ok(sql);
}

static void raw_events_keep_pending_and_young_ones(void **state)
{
    char app[37];
    cti_db_t *db = cti_store_db(store);
    /* cutoff far ahead of every other file's rows, so only this file's young
     * rows stop the walk */
    const int64_t cut = INT64_MAX / 4, young = INT64_MAX / 2;
    new_app(app, "ret-raw");
    raw(app, "applied-old", 1000, CTI_RAW_APPLIED);
    raw(app, "dead-old", 1000, CTI_RAW_DEAD);
    raw(app, "pending-old", 1000, CTI_RAW_PENDING);
    raw(app, "applied-old-2", 1000, CTI_RAW_APPLIED);
    raw(app, "applied-young", young, CTI_RAW_APPLIED);
    raw(app, "applied-old-after-young", 1000, CTI_RAW_APPLIED); /* past the stop */
    int64_t after = 0, n, total = 0;
    bool done = false;
    for (int i = 0; !done && i < 100000; i++) {
        assert_int_equal(cti_purge_raw_events(db, cut, 3, &after, &n, &done), 0);
        total += n;
    }
    assert_true(done);
    assert_true(total >= 3);
    assert_int_equal(countf("SELECT COUNT(*) FROM raw_events WHERE app_id = '%s'", app), 3);
    assert_int_equal(countf("SELECT COUNT(*) FROM raw_events WHERE app_id = '%s' AND "
                            "dedupe_key IN ('pending-old', 'applied-young', "
                            "'applied-old-after-young')",
                            app),
                     3);
    assert_int_equal(
        countf("SELECT COUNT(*) FROM raw_events WHERE status = 0 AND app_id = '%s'", app), 1);
}

static void timeline(const char *app, int64_t call_id, int64_t ts, int64_t received_at)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO call_events (app_id, call_id, event_timestamp, state, received_at, "
             "late, raw_event_id) VALUES ('%s', %lld, %lld, 'ringing', %lld, 0, 0)",
             app, (long long)call_id, (long long)ts, (long long)received_at);
    script_ok(sql);
}

static void timelines_are_purged_by_age(void **state)
{
    char app[37];
    cti_db_t *db = cti_store_db(store);
    new_app(app, "ret-tl");
    for (int i = 0; i < 5; i++)
        timeline(app, 77, i, 2000 + i); /* old */
    timeline(app, 77, 10, NOW);         /* young */
    int64_t n;
    do
        assert_int_equal(cti_purge_call_events(db, 5000, 2, &n), 0);
    while (n == 2);
    assert_int_equal(countf("SELECT COUNT(*) FROM call_events WHERE app_id = '%s'", app), 1);
    assert_int_equal(countf("SELECT COUNT(*) FROM call_events WHERE app_id = '%s' AND "
                            "event_timestamp = 10",
                            app),
                     1);
}

static void call_row(const char *app, int64_t call_id, int64_t sort_at)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO calls (app_id, call_id, status, recording_urls, progress_ts, fields_ts, "
             "fields_state, active_ts, active_state, flags, sort_at, created_at, updated_at) "
             "VALUES ('%s', %lld, 'ended', '[]', 0, 0, '', 0, '', 0, %lld, %lld, %lld)",
             app, (long long)call_id, (long long)sort_at, (long long)sort_at, (long long)sort_at);
    script_ok(sql);
}

static void message_row(const char *app, int64_t id, int64_t created_at)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "INSERT INTO messages (app_id, message_id, from_number, to_numbers, latest_ts, "
             "created_at, updated_at) VALUES ('%s', %lld, '+15550000001', "
             "'[\"+15550000002\", \"+15550000003\"]', 0, %lld, %lld)",
             app, (long long)id, (long long)created_at, (long long)created_at);
    script_ok(sql);
    const char *nums[] = {"+15550000001", "+15550000002", "+15550000003"};
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO message_numbers (app_id, number, message_id) VALUES ('%s', '%s', "
                 "%lld)",
                 app, nums[i], (long long)id);
        script_ok(sql);
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO voicemails (app_id, call_id, created_at, updated_at) VALUES ('%s', "
             "%lld, %lld, %lld)",
             app, (long long)id, (long long)created_at, (long long)created_at);
    script_ok(sql);
}

static void a_run_purges_calls_only_with_calls_days(void **state)
{
    char app[37];
    cti_db_t *db = cti_store_db(store);
    new_app(app, "ret-run");
    log_rows(app, 1, 3, NOW - 100 * DAY);
    log_rows(app, 4, 4, NOW - 10 * DAY);
    call_row(app, 1, NOW - 400 * DAY + 5);
    timeline(app, 1, 1, NOW - 400 * DAY + 5);
    call_row(app, 2, NOW - 10 * DAY);
    timeline(app, 2, 1, NOW - 10 * DAY);
    message_row(app, 1, NOW - 400 * DAY + 5);
    message_row(app, 2, NOW - 10 * DAY);

    cti_purged_t got = {0};
    assert_int_equal(cti_retention_run(db, NOW, 90, 0, 1000, NULL, &got), 0);
    assert_true(got.event_log >= 3);
    assert_int_equal(got.calls + got.messages + got.voicemails, 0); /* calls kept forever */
    assert_int_equal(countf("SELECT COUNT(*) FROM event_log WHERE app_id = '%s'", app), 1);
    assert_int_equal(countf("SELECT COUNT(*) FROM calls WHERE app_id = '%s'", app), 2);
    assert_int_equal(countf("SELECT COUNT(*) FROM message_numbers WHERE app_id = '%s'", app), 6);

    memset(&got, 0, sizeof got);
    assert_int_equal(cti_db_begin(db), 0); /* the multi-table purges assert a transaction */
    int64_t n;
    assert_int_equal(cti_purge_calls(db, app, NOW - 365 * DAY, 1000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cti_purge_messages(db, app, NOW - 365 * DAY, 1000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cti_db_commit(db), 0);
    assert_int_equal(cti_retention_run(db, NOW, 90, 365, 1000, NULL, &got), 0);
    assert_true(got.voicemails >= 1); /* (other files' apps have old ones too) */
    assert_int_equal(countf("SELECT COUNT(*) FROM calls WHERE app_id = '%s'", app), 1);
    assert_int_equal(countf("SELECT COUNT(*) FROM calls WHERE app_id = '%s' AND call_id = 2", app),
                     1);
    assert_int_equal(countf("SELECT COUNT(*) FROM call_events WHERE app_id = '%s'", app), 1);
    assert_int_equal(countf("SELECT COUNT(*) FROM messages WHERE app_id = '%s'", app), 1);
    assert_int_equal(countf("SELECT COUNT(*) FROM message_numbers WHERE app_id = '%s'", app), 3);
    assert_int_equal(countf("SELECT COUNT(*) FROM message_numbers WHERE app_id = '%s' AND "
                            "message_id = 1",
                            app),
                     0);
    assert_int_equal(countf("SELECT COUNT(*) FROM voicemails WHERE app_id = '%s'", app), 1);
}

/* The purger thread purges only while it holds the lease "retention": with
 * another instance holding it, nothing goes; once released, the rows go. */
static void the_purger_waits_for_the_lease(void **state)
{
    char app[37];
    cti_db_t *db = cti_store_db(store);
    int64_t oldest, newest;
    new_app(app, "ret-lease");
    log_rows(app, 1, 4, 1000); /* 1970: older than any window */
    assert_int_equal(cti_lease_take(db, "retention", "another-instance", cti_now_ms(), 60000), 0);
    cti_purger_t *p = cti_purger_start(store, 1, 0, 50);
    assert_non_null(p);
    usleep(400 * 1000); /* eight ticks */
    assert_int_equal(countf("SELECT COUNT(*) FROM event_log WHERE app_id = '%s'", app), 4);
    assert_int_equal(cti_lease_release(db, "retention", "another-instance"), 0);
    for (int i = 0;
         i < 200 && countf("SELECT COUNT(*) FROM event_log WHERE app_id = '%s'", app) > 1; i++)
        usleep(50 * 1000);
    cti_purger_stop(p);
    assert_int_equal(cti_eventlog_bounds(db, app, &oldest, &newest), 0);
    assert_int_equal(oldest, 4);
    assert_int_equal(newest, 4);
    /* the purger gave the lease back */
    assert_int_equal(countf("SELECT COUNT(*) FROM leases WHERE name = '%s'", "retention"), 0);
    assert_null(cti_purger_start(store, 0, 0, 50)); /* nothing to keep: no thread */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(event_log_is_purged_as_a_prefix_keeping_the_newest),
        cmocka_unit_test(raw_events_keep_pending_and_young_ones),
        cmocka_unit_test(timelines_are_purged_by_age),
        cmocka_unit_test(a_run_purges_calls_only_with_calls_days),
        cmocka_unit_test(the_purger_waits_for_the_lease),
    };
    return cmocka_run_group_tests(tests, store_setup, store_teardown);
}
