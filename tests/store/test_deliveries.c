/*
 * test_deliveries.c — conformance of src/repo/deliveries.c on both backends:
 * enqueue writes a delivery per matching enabled endpoint of the event's app
 * (types, disabled endpoints, other apps), also for a batch spread over many
 * apps, whose endpoints it reads in one statement where the backend has
 * CTI_CAP_ARRAYS (else one per app); leasing gives a call's events one
 * at a time in seq order, never a leased row again before its lease ends,
 * and a retry only when it is due; records end leases; replay re-sends the
 * matching events above a seq; retry and the delivery log stay within their
 * endpoint; the retention purge keeps pending deliveries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "harness.h"
#include "repo/deliveries.h"
#include "repo/events.h"
#include "repo/retention.h"

#define NOW ((int64_t)1800000000000)

static char sqlbuf[1024];

static void app_row(const char *app)
{
    snprintf(sqlbuf, sizeof sqlbuf,
             "INSERT INTO apps (id, name, active, allow_unsigned, created_at, updated_at) VALUES "
             "('%s', 'deliveries', 1, 0, 0, 0)",
             app);
    script_ok(sqlbuf);
}

/* An endpoint row (its secret is not read here). */
static void endpoint_row(const char *id, const char *app, const char *types, int enabled)
{
    char t[128];
    snprintf(t, sizeof t, types ? "'%s'" : "NULL", types);
    snprintf(sqlbuf, sizeof sqlbuf,
             "INSERT INTO webhook_endpoints (id, app_id, url, types, secret, enabled, created_at, "
             "updated_at) VALUES ('%s', '%s', 'http://127.0.0.1:9/x', %s, 'sealed', %d, 0, 0)",
             id, app, t, enabled);
    script_ok(sqlbuf);
}

/* A new app (its row too) named after name, and the id its first endpoint takes. */
static void app_and_endpoint_id(char app[37], char ep[37], const char *name)
{
    new_app(app, name);
    app_row(app);
    snprintf(ep, 37, "%.28s-ep", app);
}

/* Appends events to app's log (seq from, each given its event name and call)
 * and enqueues them in one transaction, as the processor does. */
static void append(const char *app, int64_t from, int n, const char *const *events,
                   const int64_t *calls)
{
    cti_db_t *db = cti_store_db(store);
    cti_logrow_t rows[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++)
        rows[i] = (cti_logrow_t){app, from + i, events[i], calls[i], "{\"x\":1}"};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_eventlog_append_many(db, rows, n, NOW), 0);
    assert_int_equal(cti_deliveries_enqueue(db, rows, n, NOW), 0);
    assert_int_equal(cti_db_commit(db), 0);
}

static int64_t deliveries_of(const char *endpoint)
{
    snprintf(sqlbuf, sizeof sqlbuf,
             "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = '%s'", endpoint);
    return count(sqlbuf);
}

typedef struct {
    int64_t ids[64], seqs[64];
    int attempts[64];
    int n;
    bool bodies;
} leased_t;

static int on_lease(const cti_lease_t *l, void *ud)
{
    leased_t *ls = ud;
    ls->ids[ls->n] = l->id;
    ls->attempts[ls->n] = l->attempts;
    ls->seqs[ls->n++] = l->seq;
    ls->bodies = ls->bodies || (l->body && !strcmp(l->body, "{\"x\":1}"));
    return 0;
}

static leased_t lease(const char *endpoint, const char *app, int64_t now, int limit)
{
    cti_db_t *db = cti_store_db(store);
    leased_t ls = {0};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_deliveries_lease(db, endpoint, app, now, 15000, limit, on_lease, &ls), 0);
    assert_int_equal(cti_db_commit(db), 0);
    return ls;
}

static void record(int64_t id, int status, int attempts, int64_t at, int64_t next)
{
    cti_db_t *db = cti_store_db(store);
    cti_attempt_t a = {.id = id, .status = status, .attempts = attempts, .attempted_at = at,
                       .status_code = status == CTI_DLV_SUCCEEDED ? 204 : 500,
                       .error = status == CTI_DLV_SUCCEEDED ? NULL : "HTTP 500: no",
                       .next_attempt_at = next};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_deliveries_record(db, &a, 1), 0);
    assert_int_equal(cti_db_commit(db), 0);
}

static bool has_seq(const leased_t *ls, int64_t seq)
{
    for (int i = 0; i < ls->n; i++)
        if (ls->seqs[i] == seq)
            return true;
    return false;
}

static void enqueue_follows_endpoints_and_their_types(void **state)
{
    (void)state;
    char app[37], other[37];
    new_app(app, "dlv-enq");
    new_app(other, "dlv-enq2");
    app_row(app);
    app_row(other);
    char all[37], calls[37], sms[37], off[37], others[37];
    snprintf(all, sizeof all, "%.28s-all", app);
    snprintf(calls, sizeof calls, "%.28s-cal", app);
    snprintf(sms, sizeof sms, "%.28s-sms", app);
    snprintf(off, sizeof off, "%.28s-off", app);
    snprintf(others, sizeof others, "%.28s-oth", other);
    endpoint_row(all, app, NULL, 1);
    endpoint_row(calls, app, "call.*", 1);
    endpoint_row(sms, app, "sms.received call.ended", 1);
    endpoint_row(off, app, NULL, 0);
    endpoint_row(others, other, NULL, 1);
    const char *ev[] = {"call.ringing", "call.ended", "sms.received", "agent.status"};
    const int64_t call[] = {7, 7, 0, 0};
    append(app, 1, 4, ev, call);
    assert_int_equal(deliveries_of(all), 4);
    assert_int_equal(deliveries_of(calls), 2);
    assert_int_equal(deliveries_of(sms), 2);
    assert_int_equal(deliveries_of(off), 0);
    assert_int_equal(deliveries_of(others), 0);
    /* an app without endpoints: nothing, and no error */
    char lonely[37];
    new_app(lonely, "dlv-none");
    append(lonely, 1, 1, ev, call);
}

/* Statements that read webhook_endpoints, counted by the trace hook. */
static void count_endpoint_reads(const char *sql, const cti_sql_val_t *params, int n, void *ud)
{
    (void)params;
    (void)n;
    if (strstr(sql, "FROM webhook_endpoints"))
        ++*(int *)ud;
}

typedef struct {
    int64_t seq[64];
    int n;
} seqs_t;

static int add_seq(const cti_row_t *row, void *ud)
{
    seqs_t *s = ud;
    assert_true(s->n < 64);
    s->seq[s->n++] = cti_row_int(row, 0);
    return 0;
}

/* The seqs of the endpoint's deliveries, in the order they were written. */
static seqs_t seqs_of(const char *endpoint)
{
    seqs_t s = {0};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(endpoint)};
    assert_int_equal(cti_db_exec(cti_store_db(store), "SELECT seq FROM webhook_deliveries WHERE "
                                                      "endpoint_id = $1 ORDER BY id",
                                 p, 1, add_seq, &s),
                     0);
    return s;
}

#define NAPPS 7

static void a_batch_over_many_apps_reads_their_endpoints_at_once(void **state)
{
    (void)state;
    /* app 0: two endpoints (all; call.*) and a disabled one; 1: sms.received;
     * 2: a disabled endpoint only; 3: none; 4: two filters; 5: "*", its id
     * with the characters an array literal escapes; 6: all (not in the batch) */
    char app[NAPPS][37], ep[8][37];
    for (int a = 0; a < NAPPS; a++) {
        new_app(app[a], a == 5 ? "dlv\"q\\" : "dlv-many");
        app_row(app[a]);
    }
    static const struct {
        int app;
        const char *types;
        int enabled;
    } eps[8] = {{0, NULL, 1}, {0, "call.*", 1},
                {0, NULL, 0}, {1, "sms.received", 1},
                {2, NULL, 0}, {4, "call.ended agent.*", 1},
                {5, "*", 1},  {6, NULL, 1}};
    for (int e = 0; e < 8; e++) {
        snprintf(ep[e], sizeof ep[e], "dlv-many-%.20s-%c", app[0] + 13, (char)('0' + e));
        endpoint_row(ep[e], app[eps[e].app], eps[e].types, eps[e].enabled);
    }
    /* 18 rows, the apps interleaved as a batch of calls spread over them comes */
    static const char *const ev[] = {"call.ringing", "sms.received", "call.ended", "agent.status"};
    cti_logrow_t rows[18];
    int64_t seq[NAPPS] = {0};
    for (int i = 0; i < 18; i++) {
        int a = i % 6;
        rows[i] = (cti_logrow_t){app[a], ++seq[a], ev[(i / 6 + a) % 4], i % 4 ? 100 + a : 0,
                                 "{\"x\":1}"};
    }
    cti_db_t *db = cti_store_db(store);
    int reads = 0;
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_eventlog_append_many(db, rows, 18, NOW), 0);
    cti_db_trace(db, count_endpoint_reads, &reads);
    int rc = cti_deliveries_enqueue(db, rows, 18, NOW);
    cti_db_trace(db, NULL, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(cti_db_commit(db), 0);
    /* one statement for the six apps with arrays; else one each */
    assert_int_equal(reads, cti_store_has(store, CTI_CAP_ARRAYS) ? 1 : 6);

    /* each app's rows are seqs 1, 2, 3 with events ev[(0 + a) % 4],
     * ev[(1 + a) % 4], ev[(2 + a) % 4] */
    seqs_t s = seqs_of(ep[0]); /* app 0, all: ringing, sms, ended */
    assert_int_equal(s.n, 3);
    assert_true(s.seq[0] == 1 && s.seq[1] == 2 && s.seq[2] == 3); /* the batch's order */
    s = seqs_of(ep[1]); /* app 0, call.*: ringing, ended */
    assert_int_equal(s.n, 2);
    assert_true(s.seq[0] == 1 && s.seq[1] == 3);
    assert_int_equal(deliveries_of(ep[2]), 0); /* disabled */
    s = seqs_of(ep[3]); /* app 1: sms, ended, agent: sms.received only */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq[0], 1);
    assert_int_equal(deliveries_of(ep[4]), 0); /* app 2's, disabled */
    s = seqs_of(ep[5]); /* app 4: ringing, sms, ended: call.ended */
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq[0], 3);
    assert_int_equal(deliveries_of(ep[6]), 3); /* app 5, "*": sms, ended, agent */
    assert_int_equal(deliveries_of(ep[7]), 0); /* app 6: not in the batch */
    /* every delivery carries its own event's app, seq, name and call */
    snprintf(sqlbuf, sizeof sqlbuf,
             "SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = "
             "d.endpoint_id JOIN event_log l ON l.app_id = d.app_id AND l.seq = d.seq WHERE "
             "d.endpoint_id LIKE 'dlv-many-%%' AND d.app_id = e.app_id AND d.event = l.event "
             "AND ((d.call_id IS NULL AND l.call_id IS NULL) OR d.call_id = l.call_id)");
    assert_int_equal(count(sqlbuf), 3 + 2 + 1 + 1 + 3);
    assert_int_equal(count("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id LIKE "
                           "'dlv-many-%'"),
                     3 + 2 + 1 + 1 + 3);
}

static void a_calls_events_are_leased_in_seq_order(void **state)
{
    (void)state;
    char app[37], ep[37];
    app_and_endpoint_id(app, ep, "dlv-order");
    endpoint_row(ep, app, NULL, 1);
    /* call 1: seqs 1, 3, 5; call 2: seqs 2, 4; seq 6 has no call */
    const char *ev[] = {"call.ringing", "call.ringing", "call.connected", "call.ended",
                        "call.ended", "sms.received"};
    const int64_t call[] = {1, 2, 1, 2, 1, 0};
    append(app, 1, 6, ev, call);

    leased_t a = lease(ep, app, NOW, 32);
    assert_int_equal(a.n, 3); /* the head of each call, and the call-less event */
    assert_true(has_seq(&a, 1) && has_seq(&a, 2) && has_seq(&a, 6));
    assert_true(a.bodies);
    /* leased: not again while the lease lasts, nor the calls' next events */
    assert_int_equal(lease(ep, app, NOW + 1000, 32).n, 0);

    for (int i = 0; i < a.n; i++)
        if (a.seqs[i] == 1)
            record(a.ids[i], CTI_DLV_SUCCEEDED, 1, NOW + 1, 0);
    leased_t b = lease(ep, app, NOW + 2000, 32);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.seqs[0], 3);

    /* call 2's head fails and is retried later: its next event waits for it */
    for (int i = 0; i < a.n; i++)
        if (a.seqs[i] == 2)
            record(a.ids[i], CTI_DLV_PENDING, 1, NOW + 3, NOW + 60000);
    assert_int_equal(lease(ep, app, NOW + 3000, 32).n, 0);
    leased_t c = lease(ep, app, NOW + 60000, 32); /* due again; leases of 3 and 6 ran out */
    assert_int_equal(c.n, 3);
    assert_true(has_seq(&c, 2) && has_seq(&c, 3) && has_seq(&c, 6));
    for (int i = 0; i < c.n; i++)
        if (c.seqs[i] == 2) {
            assert_int_equal(c.attempts[i], 1);
            /* it fails for good: the call's next event goes */
            record(c.ids[i], CTI_DLV_FAILED, 2, NOW + 60001, 0);
        }
    leased_t d = lease(ep, app, NOW + 60002, 32);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.seqs[0], 4);

    /* a lease that ran out (its instance died) is given again */
    leased_t e = lease(ep, app, NOW + 60002 + 15000, 32);
    assert_true(has_seq(&e, 4) && has_seq(&e, 6) && has_seq(&e, 3));
    /* the limit holds */
    assert_true(lease(ep, app, NOW + 200000, 1).n <= 1);
}

typedef struct {
    int n;
    int64_t ids[16];
    int statuses[16];
    char last_error[64];
} listed_t;

static int on_listed(const cti_delivery_t *d, void *ud)
{
    listed_t *l = ud;
    l->ids[l->n] = d->id;
    l->statuses[l->n++] = d->status;
    if (d->last_error)
        snprintf(l->last_error, sizeof l->last_error, "%s", d->last_error);
    return 0;
}

static void log_retry_and_replay_stay_within_their_endpoint(void **state)
{
    (void)state;
    cti_db_t *db = cti_store_db(store);
    char app[37], ep[37], ep2[37];
    app_and_endpoint_id(app, ep, "dlv-log");
    snprintf(ep2, sizeof ep2, "%.28s-e2", app);
    endpoint_row(ep, app, NULL, 1);
    const char *ev[] = {"call.ringing", "sms.received", "call.ended"};
    const int64_t call[] = {5, 0, 5};
    append(app, 1, 3, ev, call);
    endpoint_row(ep2, app, "call.*", 1); /* made after the events */

    leased_t a = lease(ep, app, NOW, 32);
    assert_int_equal(a.n, 2);
    record(a.ids[0], CTI_DLV_FAILED, 8, NOW + 5, 0);

    listed_t l = {0};
    assert_int_equal(cti_deliveries_list(db, ep, -1, 0, 10, on_listed, &l), 0);
    assert_int_equal(l.n, 3);
    assert_true(l.ids[0] > l.ids[1] && l.ids[1] > l.ids[2]); /* newest first */
    listed_t failed = {0};
    assert_int_equal(cti_deliveries_list(db, ep, CTI_DLV_FAILED, 0, 10, on_listed, &failed), 0);
    assert_int_equal(failed.n, 1);
    assert_string_equal(failed.last_error, "HTTP 500: no");
    listed_t page = {0};
    assert_int_equal(cti_deliveries_list(db, ep, -1, l.ids[0], 10, on_listed, &page), 0);
    assert_int_equal(page.n, 2);

    /* retry: only through its own endpoint */
    assert_int_equal(cti_delivery_retry(db, ep2, a.ids[0], NOW + 10), CTI_ENOTFOUND);
    assert_int_equal(cti_delivery_retry(db, ep, a.ids[0], NOW + 10), 0);
    listed_t pending = {0};
    assert_int_equal(cti_deliveries_list(db, ep, CTI_DLV_PENDING, 0, 10, on_listed, &pending), 0);
    assert_int_equal(pending.n, 3);

    /* replay to the later endpoint: call events above seq 0 (its types) */
    int64_t n = -1;
    assert_int_equal(cti_deliveries_replay(db, app, ep2, "call.*", 0, NOW + 20, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(deliveries_of(ep2), 2);
    assert_int_equal(cti_deliveries_replay(db, app, ep2, NULL, 2, NOW + 20, &n), 0);
    assert_int_equal(n, 1); /* seq 3 only */
    assert_int_equal(cti_deliveries_replay(db, app, ep2, NULL, 3, NOW + 20, &n), 0);
    assert_int_equal(n, 0);
    int64_t pend = -1;
    assert_int_equal(cti_deliveries_pending_count(db, &pend), 0);
    assert_true(pend >= 6);
}

/* A replay longer than one page (1,000 events) goes on page after page, one
 * transaction each, and leaves no transaction open. */
static void replay_spans_pages(void **state)
{
    (void)state;
    cti_db_t *db = cti_store_db(store);
    char app[37], ep[37];
    app_and_endpoint_id(app, ep, "dlv-pages");
    const int total = 2345;
    cti_logrow_t rows[64];
    assert_int_equal(cti_db_begin(db), 0);
    for (int from = 1; from <= total; from += 64) {
        int n = total - from + 1 < 64 ? total - from + 1 : 64;
        for (int i = 0; i < n; i++)
            rows[i] = (cti_logrow_t){app, from + i, (from + i) % 3 ? "call.ringing" : "sms.received",
                                     from + i, "{\"x\":1}"};
        assert_int_equal(cti_eventlog_append_many(db, rows, n, NOW), 0);
    }
    assert_int_equal(cti_db_commit(db), 0);
    endpoint_row(ep, app, "call.*", 1);
    int64_t n = -1;
    assert_int_equal(cti_deliveries_replay(db, app, ep, "call.*", 0, NOW, &n), 0);
    int64_t calls = 0;
    for (int s = 1; s <= total; s++)
        calls += s % 3 != 0;
    assert_int_equal(n, calls);
    assert_int_equal(deliveries_of(ep), calls);
    assert_int_equal(cti_deliveries_replay(db, app, ep, NULL, total - 10, NOW, &n), 0);
    assert_int_equal(n, 10);
    /* nothing left open: a new transaction begins */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_db_commit(db), 0);
}

static void the_purge_keeps_pending_deliveries(void **state)
{
    (void)state;
    cti_db_t *db = cti_store_db(store);
    char app[37], ep[37];
    app_and_endpoint_id(app, ep, "dlv-purge");
    endpoint_row(ep, app, NULL, 1);
    const char *ev[] = {"sms.received", "sms.received", "sms.received"};
    const int64_t call[] = {0, 0, 0};
    append(app, 1, 3, ev, call);
    leased_t a = lease(ep, app, NOW, 32);
    assert_int_equal(a.n, 3);
    record(a.ids[0], CTI_DLV_SUCCEEDED, 1, NOW + 1, 0);
    record(a.ids[1], CTI_DLV_FAILED, 8, NOW + 1, 0);
    int64_t deleted = -1;
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_purge_deliveries(db, NOW, 100, &deleted), 0); /* not older than NOW */
    assert_int_equal(cti_db_commit(db), 0);
    assert_int_equal(deleted, 0);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_purge_deliveries(db, NOW + 1, 100, &deleted), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_true(deleted >= 2);
    assert_int_equal(deliveries_of(ep), 1); /* the pending one */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(enqueue_follows_endpoints_and_their_types),
        cmocka_unit_test(a_batch_over_many_apps_reads_their_endpoints_at_once),
        cmocka_unit_test(a_calls_events_are_leased_in_seq_order),
        cmocka_unit_test(log_retry_and_replay_stay_within_their_endpoint),
        cmocka_unit_test(replay_spans_pages),
        cmocka_unit_test(the_purge_keeps_pending_deliveries),
    };
    return cmocka_run_group_tests(tests, store_setup, store_teardown);
}
