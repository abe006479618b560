/*
 * test_events.c — conformance of src/repo/events.c on both backends: the
 * durable log of webhooks (raw_events: insert, pending, applied, failed,
 * dead letters, replay), the per-app seqs, the event log customers read,
 * and the cross-instance wake-ups (store/wakeup.h, where the backend has
 * them). Also: the functions that only make sense inside a transaction
 * refuse to run outside one (asserts, checked in a forked child).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "harness.h"
#include "repo/events.h"
#include "store/wakeup.h"

static char APP[37], OTHER[37];

static int events_setup(void **state)
{
    if (store_setup(state) != 0)
        return -1;
    new_app(APP, "ev");
    new_app(OTHER, "ev2");
    /* pending rows other files left: out of the way of the oldest-first scans */
    return cti_db_script(cti_store_db(store), "UPDATE raw_events SET status = 1 WHERE status = 0");
}

static void store_raw(const char *app, const char *key, int status, cti_raw_new_t *out)
{
    cti_db_t *db = cti_store_db(store);
    *out = (cti_raw_new_t){app, key, "call", "{\"k\":1}", 123, false, 0};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, out, 1, status), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_true(out->inserted && out->id > 0);
}

typedef struct {
    int64_t ids[64];
    int attempts[64];
    int n;
    const char *app;
} seen_raw_t;

static int note_raw(const cti_raw_t *ev, void *ud)
{
    seen_raw_t *s = ud;
    if (strcmp(ev->app_id, s->app) != 0 || s->n == 64)
        return 0;
    assert_string_equal(ev->kind, "call");
    assert_string_equal(ev->payload, "{\"k\":1}");
    assert_int_equal(ev->received_at, 123);
    s->attempts[s->n] = ev->attempts;
    s->ids[s->n++] = ev->id;
    return 0;
}

static seen_raw_t pending(cti_db_t *db, int64_t now, int limit)
{
    seen_raw_t s = {.n = 0, .app = APP};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_pending(db, now, limit, note_raw, &s), 0);
    cti_db_rollback(db);
    return s;
}

static void test_raw_pending_applied_failed(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_raw_new_t a, b, c, applied;
    store_raw(APP, "pa", CTI_RAW_PENDING, &a);
    store_raw(APP, "pb", CTI_RAW_PENDING, &b);
    store_raw(APP, "pc", CTI_RAW_PENDING, &c);
    store_raw(APP, "pd", CTI_RAW_APPLIED, &applied);
    seen_raw_t s = pending(db, 1000, 100);
    assert_int_equal(s.n, 3); /* oldest first, applied ones not among them */
    assert_true(s.ids[0] == a.id && s.ids[1] == b.id && s.ids[2] == c.id);
    assert_int_equal(pending(db, 1000, 2).n, 2); /* limit */

    /* b fails: retried from 5,000 on, one attempt counted */
    assert_int_equal(cti_raw_mark_failed(db, b.id, "bad field", 5000, false), 0);
    s = pending(db, 4999, 100);
    assert_int_equal(s.n, 2);
    assert_true(s.ids[0] == a.id && s.ids[1] == c.id);
    s = pending(db, 5000, 100);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.attempts[1], 1);

    int64_t ids[] = {a.id, b.id};
    assert_int_equal(cti_raw_mark_applied_many(db, ids, 2), 0);
    s = pending(db, 9999, 100);
    assert_int_equal(s.n, 1);
    assert_true(s.ids[0] == c.id);
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM raw_events WHERE id = %lld AND status = 1 "
             "AND error IS NULL",
             (long long)b.id);
    assert_int_equal(count(sql), 1); /* applied clears the error */
    assert_int_equal(cti_raw_mark_applied_many(db, &c.id, 1), 0);
}

/* Where the backend can skip locked rows, two transactions reading pending
 * events at once get disjoint sets (instances share the work). */
static void test_raw_pending_is_shared_between_instances(void **state)
{
    cti_db_t *db = cti_store_db(store), *other = NULL;
    if (!cti_store_has(store, CTI_CAP_SKIP_LOCKED))
        skip(); /* SQLite: one writer at a time, one process */
    cti_raw_new_t r[4];
    char keys[4][16];
    for (int i = 0; i < 4; i++) {
        snprintf(keys[i], sizeof keys[i], "sk%d", i);
        store_raw(APP, keys[i], CTI_RAW_PENDING, &r[i]);
    }
    assert_int_equal(cti_store_connect(store, &other), 0);
    seen_raw_t first = {.n = 0, .app = APP}, second = {.n = 0, .app = APP};
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_pending(db, 1000, 2, note_raw, &first), 0);
    assert_int_equal(cti_db_begin(other), 0);
    assert_int_equal(cti_raw_pending(other, 1000, 10, note_raw, &second), 0);
    assert_int_equal(first.n, 2);
    assert_int_equal(second.n, 2);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            assert_true(first.ids[i] != second.ids[k]);
    cti_db_rollback(other);
    cti_db_rollback(db);
    cti_db_close(other);
    int64_t ids[] = {r[0].id, r[1].id, r[2].id, r[3].id};
    assert_int_equal(cti_raw_mark_applied_many(db, ids, 4), 0);
}

typedef struct {
    int64_t ids[16];
    char apps[16][37], errors[16][32], keys[16][32];
    int attempts[16];
    int n;
    const char *only;
} seen_dead_t;

static int note_dead(const cti_dead_t *d, void *ud)
{
    seen_dead_t *s = ud;
    if ((s->only && strcmp(d->app_id, s->only)) || s->n == 16)
        return 0;
    s->ids[s->n] = d->id;
    s->attempts[s->n] = d->attempts;
    snprintf(s->apps[s->n], 37, "%s", d->app_id);
    snprintf(s->keys[s->n], 32, "%.30s", d->dedupe_key);
    snprintf(s->errors[s->n++], 32, "%s", d->error ? d->error : "");
    assert_string_equal(d->payload, "{\"k\":1}");
    return 0;
}

static void test_dead_letters_list_and_replay(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_raw_new_t d1, d2, d3, live;
    store_raw(APP, "d1", CTI_RAW_PENDING, &d1);
    store_raw(APP, "d2", CTI_RAW_PENDING, &d2);
    store_raw(OTHER, "d3", CTI_RAW_PENDING, &d3);
    store_raw(APP, "d4", CTI_RAW_PENDING, &live);
    assert_int_equal(cti_raw_mark_failed(db, d1.id, "no leg", 0, true), 0);
    assert_int_equal(cti_raw_mark_failed(db, d2.id, "no leg 2", 0, true), 0);
    assert_int_equal(cti_raw_mark_failed(db, d3.id, "other", 0, true), 0);

    seen_dead_t s = {.n = 0};
    assert_true(cti_dead_list(db, APP, 0, 10, note_dead, &s) >= 0);
    assert_int_equal(s.n, 2); /* the app's, newest first */
    assert_true(s.ids[0] == d2.id && s.ids[1] == d1.id);
    assert_string_equal(s.errors[0], "no leg 2");
    assert_string_equal(s.keys[1], "d1");
    assert_int_equal(s.attempts[1], 1);
    s = (seen_dead_t){.n = 0};
    assert_true(cti_dead_list(db, APP, d2.id, 10, note_dead, &s) >= 0); /* before d2 */
    assert_int_equal(s.n, 1);
    assert_true(s.ids[0] == d1.id);
    s = (seen_dead_t){.n = 0};
    assert_true(cti_dead_list(db, NULL, 0, 1000, note_dead, &s) >= 0); /* every app's */
    int ours = 0;
    for (int i = 0; i < s.n; i++)
        ours += s.ids[i] == d1.id || s.ids[i] == d2.id || s.ids[i] == d3.id;
    assert_int_equal(ours, 3);
    assert_true(s.ids[0] > s.ids[s.n - 1]);

    int64_t n = -1;
    assert_int_equal(cti_dead_replay(db, d1.id, APP, &n), 0); /* one */
    assert_int_equal(n, 1);
    assert_int_equal(cti_dead_replay(db, d3.id, APP, &n), 0); /* not APP's: nothing */
    assert_int_equal(n, 0);
    assert_int_equal(cti_dead_replay(db, 0, APP, &n), 0); /* the rest of APP's */
    assert_int_equal(n, 1);
    seen_raw_t p = pending(db, 0, 100);
    assert_int_equal(p.n, 3); /* d1, d2 back to pending (attempts reset), and d4 */
    for (int i = 0; i < p.n; i++)
        assert_int_equal(p.attempts[i], 0);
    s = (seen_dead_t){.n = 0, .only = OTHER};
    assert_true(cti_dead_list(db, OTHER, 0, 10, note_dead, &s) >= 0);
    assert_int_equal(s.n, 1);                              /* OTHER's untouched */
    assert_int_equal(cti_dead_replay(db, 0, NULL, &n), 0); /* every app's */
    assert_true(n >= 1);
    int64_t ids[] = {d1.id, d2.id, d3.id, live.id};
    assert_int_equal(cti_raw_mark_applied_many(db, ids, 4), 0);
}

/* Raw events are inserted in key order (so instances never deadlock on the
 * unique index); which item was stored and which was a duplicate still
 * follows the order given: the first of a key twice in one call is stored. */
static void test_raw_insert_marks_follow_the_items(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    new_app(app, "raw");
    cti_raw_new_t items[] = {
        {app, "k2", "call", "{\"n\":2}", 1, false, 0},
        {app, "k1", "call", "{\"n\":1}", 1, false, 0},
        {app, "k1", "call", "{\"n\":11}", 1, false, 0},
        {app, "k0", "call", "{\"n\":0}", 1, false, 0},
    };
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 4, CTI_RAW_PENDING), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_true(items[0].inserted && items[1].inserted && items[3].inserted);
    assert_false(items[2].inserted);
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM raw_events WHERE app_id = '%s' AND "
             "dedupe_key = 'k1' AND payload = '{\"n\":1}'",
             app);
    assert_int_equal(count(sql), 1);
    for (int i = 0; i < 4; i++) {
        if (!items[i].inserted)
            continue;
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM raw_events WHERE id = %lld AND dedupe_key = '%s'",
                 (long long)items[i].id, items[i].dedupe_key);
        assert_int_equal(count(sql), 1);
    }
    /* again: all duplicates */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_raw_insert(db, items, 4, CTI_RAW_PENDING), 0);
    assert_int_equal(cti_db_commit(db), 0);
    for (int i = 0; i < 4; i++)
        assert_false(items[i].inserted);
    snprintf(sql, sizeof sql, "UPDATE raw_events SET status = 1 WHERE app_id = '%s'", app);
    script_ok(sql); /* out of the way of the pending scans below */
}

/* ---- seqs and the event log ---------------------------------------------------------------- */

typedef struct {
    const char *app;
    int64_t last;
    bool found;
} seq_find_t;

static int find_seq(const char *app_id, int64_t last, void *ud)
{
    seq_find_t *f = ud;
    if (!strcmp(app_id, f->app))
        f->last = last, f->found = true;
    return 0;
}

static void test_seqs_lock_set_all(void **state)
{
    cti_db_t *db = cti_store_db(store);
    int64_t last = -1;
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_seq_lock(db, APP, &last), 0);
    assert_int_equal(last, 0); /* a new app */
    const char *apps[] = {APP};
    assert_int_equal(cti_seq_set_many(db, apps, (int64_t[]){7}, 1), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_seq_lock(db, APP, &last), 0);
    assert_int_equal(last, 7);
    assert_int_equal(cti_seq_set_many(db, apps, (int64_t[]){9}, 1), 0);
    cti_db_rollback(db); /* not kept */
    seq_find_t f = {APP, -1, false};
    assert_int_equal(cti_seq_all(db, find_seq, &f), 0);
    assert_true(f.found);
    assert_int_equal(f.last, 7);
}

#define MANY 70 /* more than one chunk of cti_db_exec_in's 64 */

typedef struct {
    char ids[MANY][48];
    int64_t last[MANY];
    int calls[MANY];
} many_t;

static int note_many(const char *app_id, int64_t last, void *ud)
{
    many_t *m = ud;
    for (int i = 0; i < MANY; i++)
        if (!strcmp(m->ids[i], app_id)) {
            m->last[i] = last;
            m->calls[i]++;
        }
    return 0;
}

/* cti_seq_lock_many: every app's last seq (new apps at 0), each once, and on
 * PostgreSQL the rows stay locked to the end of the transaction;
 * cti_seq_set_many: every app's new last seq in one statement. */
static void test_seq_lock_many(void **state)
{
    cti_db_t *db = cti_store_db(store);
    many_t m;
    memset(&m, 0, sizeof m);
    char base[37];
    new_app(base, "lm");
    const char *apps[MANY];
    for (int i = 0; i < MANY; i++) { /* zero-padded: strcmp order is the index order */
        snprintf(m.ids[i], sizeof m.ids[i], "%.30s-%03d", base, i);
        apps[i] = m.ids[i];
    }
    int64_t last = -1;
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_seq_lock(db, apps[66], &last), 0);
    assert_int_equal(cti_seq_set_many(db, &apps[66], (int64_t[]){5}, 1), 0);
    assert_int_equal(cti_db_commit(db), 0);

    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_seq_lock_many(db, apps, MANY, note_many, &m), 0);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(m.calls[i], 1);
        assert_int_equal(m.last[i], i == 66 ? 5 : 0);
    }
    if (cti_store_has(store, CTI_CAP_SKIP_LOCKED)) { /* another connection must wait */
        cti_db_t *other = NULL;
        assert_int_equal(cti_store_connect(store, &other), 0);
        assert_int_equal(cti_db_begin(other), 0);
        assert_int_equal(cti_db_exec(other, "SET LOCAL lock_timeout = '200ms'", NULL, 0, NULL,
                                     NULL),
                         0);
        many_t o;
        memset(&o, 0, sizeof o);
        assert_true(cti_seq_lock_many(other, apps + 66, 1, note_many, &o) < 0); /* a row that existed */
        cti_db_rollback(other);
        cti_db_close(other);
    }
    int64_t lasts[MANY]; /* and cti_seq_set_many moves them all on */
    for (int i = 0; i < MANY; i++)
        lasts[i] = 100 + i;
    assert_int_equal(cti_seq_set_many(db, apps, lasts, MANY), 0);
    assert_int_equal(cti_db_commit(db), 0);
    many_t all; /* the new apps' rows were made, and hold what was set */
    memset(&all, 0, sizeof all);
    memcpy(all.ids, m.ids, sizeof all.ids);
    assert_int_equal(cti_seq_all(db, note_many, &all), 0);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(all.calls[i], 1);
        assert_int_equal(all.last[i], 100 + i);
    }
}

typedef struct {
    int64_t seqs[16];
    char bodies[16][32];
    int n;
} seen_log_t;

static int note_log(int64_t seq, const char *body, void *ud)
{
    seen_log_t *s = ud;
    if (s->n < 16) {
        snprintf(s->bodies[s->n], 32, "%s", body);
        s->seqs[s->n++] = seq;
    }
    return 0;
}

static void test_event_log_append_since_bounds(void **state)
{
    cti_db_t *db = cti_store_db(store);
    int64_t oldest = -1, newest = -1;
    assert_int_equal(cti_eventlog_bounds(db, OTHER, &oldest, &newest), 0);
    assert_true(oldest == 0 && newest == 0); /* none */
    cti_logrow_t rows[] = {
        {APP, 1, "call.ringing", 9007199254740993LL, "{\"seq\":1}"},
        {APP, 2, "call.connected", 9007199254740993LL, "{\"seq\":2}"},
        {APP, 3, "sms.received", 0, "{\"seq\":3}"},
        {OTHER, 1, "call.ended", 5, "{\"other\":1}"},
    };
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_eventlog_append_many(db, rows, 4, 777), 0);
    assert_int_equal(cti_db_commit(db), 0);
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM event_log WHERE app_id = '%s' AND created_at = "
             "777 AND call_id IS NULL AND event = 'sms.received'",
             APP);
    assert_int_equal(count(sql), 1); /* call_id 0 is stored as none */

    seen_log_t s = {.n = 0};
    assert_int_equal(cti_eventlog_since(db, APP, 0, 2, note_log, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(s.seqs[0] == 1 && s.seqs[1] == 2);
    assert_string_equal(s.bodies[1], "{\"seq\":2}");
    s.n = 0;
    assert_int_equal(cti_eventlog_since(db, APP, 2, 100, note_log, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.seqs[0] == 3);
    assert_int_equal(cti_eventlog_bounds(db, APP, &oldest, &newest), 0);
    assert_true(oldest == 1 && newest == 3);
    /* the oldest retained is what is left at the low end */
    snprintf(sql, sizeof sql, "DELETE FROM event_log WHERE app_id = '%s' AND seq = 1", APP);
    script_ok(sql);
    assert_int_equal(cti_eventlog_bounds(db, APP, &oldest, &newest), 0);
    assert_true(oldest == 2 && newest == 3);
    /* a seq twice is refused: the log never holds two events under one number */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_eventlog_append_many(db, &rows[2], 1, 778), CTI_EEXIST);
    cti_db_rollback(db);
}

static void test_analyze_ingest(void **state)
{
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_store_analyze_ingest(db), 0);
    if (!cti_store_has(store, CTI_CAP_ANALYZE))
        return; /* nothing to see: the backend plans without statistics */
    /* every table ingest grows has statistics now (reported a moment later) */
    int64_t never = -1;
    for (int i = 0; i < 100 && never != 0; i++) {
        never = count("SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname IN ('raw_events', "
                      "'calls', 'call_events', 'event_log') AND last_analyze IS NULL AND "
                      "last_autoanalyze IS NULL");
        if (never)
            usleep(20000);
    }
    assert_int_equal(never, 0);
}

/* ---- wake-ups between instances ---------------------------------------------------------------
 */

typedef struct {
    char payload[64];
    int n;
} woken_t;

static void on_wakeup(const char *payload, void *ud)
{
    woken_t *w = ud;
    snprintf(w->payload, sizeof w->payload, "%s", payload);
    w->n++;
}

static void test_wakeups_reach_a_listener_at_commit(void **state)
{
    if (!cti_store_has(store, CTI_CAP_NOTIFY))
        skip(); /* SQLite: one process, nobody to wake */
    cti_db_t *db = cti_store_db(store);
    cti_wakeup_t *w = cti_wakeup_open(store, "cti_test_wakeups");
    woken_t got = {.n = 0};
    bool fresh = false;
    int rc = CTI_EUNAVAILABLE;
    for (int i = 0; i < 20 && rc < 0; i++) /* the first call connects and LISTENs */
        rc = cti_wakeup_wait(w, 10, on_wakeup, &got, &fresh);
    assert_true(rc >= 0);
    assert_true(fresh); /* the caller must catch up: earlier wake-ups were not heard */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_notify(db, "cti_test_wakeups", "app:1:2"), 0);
    assert_int_equal(cti_wakeup_wait(w, 50, on_wakeup, &got, &fresh), 0); /* not before commit */
    assert_false(fresh);
    assert_int_equal(cti_db_commit(db), 0);
    for (int i = 0; i < 100 && got.n == 0; i++)
        assert_true(cti_wakeup_wait(w, 20, on_wakeup, &got, &fresh) >= 0);
    assert_int_equal(got.n, 1);
    assert_string_equal(got.payload, "app:1:2");
    /* rolled back: never delivered */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_notify(db, "cti_test_wakeups", "lost"), 0);
    cti_db_rollback(db);
    assert_int_equal(cti_wakeup_wait(w, 100, on_wakeup, &got, &fresh), 0);
    assert_int_equal(got.n, 1);
    cti_wakeup_close(w);
}

/* ---- outside a transaction they would corrupt silently: they abort -----------------------------
 */

static void seq_lock_outside(void)
{
    int64_t last;
    cti_seq_lock(cti_store_db(store), APP, &last);
}

static void append_outside(void)
{
    cti_logrow_t row = {APP, 100, "call.ended", 0, "{}"};
    cti_eventlog_append_many(cti_store_db(store), &row, 1, 1);
}

static void pending_outside(void)
{
    seen_raw_t s = {.n = 0, .app = APP};
    cti_raw_pending(cti_store_db(store), 0, 1, note_raw, &s);
}

static void insert_outside(void)
{
    cti_raw_new_t r = {APP, "outside", "call", "{}", 1, false, 0};
    cti_raw_insert(cti_store_db(store), &r, 1, CTI_RAW_APPLIED);
}

static void aborts(void (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

static void test_in_transaction_functions_assert_it(void **state)
{
    aborts(seq_lock_outside);
    aborts(append_outside);
    aborts(pending_outside);
    aborts(insert_outside);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_insert_marks_follow_the_items),
        cmocka_unit_test(test_raw_pending_applied_failed),
        cmocka_unit_test(test_raw_pending_is_shared_between_instances),
        cmocka_unit_test(test_dead_letters_list_and_replay),
        cmocka_unit_test(test_seqs_lock_set_all),
        cmocka_unit_test(test_seq_lock_many),
        cmocka_unit_test(test_event_log_append_since_bounds),
        cmocka_unit_test(test_analyze_ingest),
        cmocka_unit_test(test_wakeups_reach_a_listener_at_commit),
        cmocka_unit_test(test_in_transaction_functions_assert_it),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, events_setup, store_teardown);
}
