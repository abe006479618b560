/* test_stall.c — PostgreSQL behind a network that stalls: a TCP proxy (here,
 * in a thread) between the store and the server stops forwarding in either
 * direction without closing anything, as a partition, a dead NAT entry or a
 * frozen host does. Every call must then fail CTI_EUNAVAILABLE within the
 * store's query timeout (not hang until TCP gives up, ~15 minutes), and the
 * same store must work again, without reopening, once packets flow.
 * SQLite has no network: the tests skip there. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/common.h"
#include "core/util.h"
#include "store/wakeup.h"
#include "harness.h"

#define TIMEOUT_MS 400
/* what "within the timeout" allows past it on a slow, shared machine */
#define SLACK_MS 1500

/* ---- the proxy --------------------------------------------------------------------------- */

typedef struct {
    int listen_fd;
    int port, target_port;
    atomic_bool stalled, closing;
    pthread_t acceptor;
} proxy_t;

typedef struct {
    proxy_t *px;
    int a, b;
} pair_t;

static void *pump(void *arg)
{
    pair_t *pr = arg;
    char buf[65536];
    while (!atomic_load(&pr->px->closing)) {
        if (atomic_load(&pr->px->stalled)) { /* read nothing, send nothing, close nothing */
            usleep(10000);
            continue;
        }
        struct pollfd f[2] = {{.fd = pr->a, .events = POLLIN}, {.fd = pr->b, .events = POLLIN}};
        if (poll(f, 2, 50) <= 0)
            continue;
        if (atomic_load(&pr->px->stalled))
            continue;
        for (int i = 0; i < 2; i++) {
            if (!f[i].revents)
                continue;
            ssize_t n = read(f[i].fd, buf, sizeof buf);
            if (n <= 0 || write(i ? pr->a : pr->b, buf, (size_t)n) != n)
                goto out;
        }
    }
out:
    close(pr->a);
    close(pr->b);
    free(pr);
    return NULL;
}

static void *accept_loop(void *arg)
{
    proxy_t *px = arg;
    while (!atomic_load(&px->closing)) {
        struct pollfd f = {.fd = px->listen_fd, .events = POLLIN};
        if (poll(&f, 1, 50) <= 0)
            continue;
        int c = accept(px->listen_fd, NULL, NULL);
        if (c < 0)
            continue;
        int u = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)px->target_port)};
        inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
        if (connect(u, (struct sockaddr *)&to, sizeof to) != 0) {
            close(c);
            close(u);
            continue;
        }
        pair_t *pr = malloc(sizeof *pr);
        *pr = (pair_t){px, c, u};
        pthread_t t;
        pthread_create(&t, NULL, pump, pr);
        pthread_detach(t);
    }
    return NULL;
}

static void proxy_start(proxy_t *px, int target_port)
{
    memset(px, 0, sizeof *px);
    px->target_port = target_port;
    px->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(px->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(px->listen_fd, 64), 0);
    socklen_t len = sizeof a;
    getsockname(px->listen_fd, (struct sockaddr *)&a, &len);
    px->port = ntohs(a.sin_port);
    pthread_create(&px->acceptor, NULL, accept_loop, px);
}

/* Stops accepting and, within 50 ms, every pump closes its pair. */
static void proxy_stop(proxy_t *px)
{
    atomic_store(&px->closing, true);
    pthread_join(px->acceptor, NULL);
    close(px->listen_fd);
    usleep(100000);
}

/* ---- a store that reaches PostgreSQL through the proxy --------------------------------------- */

static proxy_t px;
static cti_store_t *via; /* the store under test, through px */

/* CTI_TEST_DB (postgres://user@127.0.0.1:PORT/db) with the proxy's port. */
static void proxy_url(char *out, size_t cap, int *pg_port)
{
    const char *url = getenv("CTI_TEST_DB");
    const char *host = strstr(url, "://") + 3;
    const char *slash = strchr(host, '/');
    const char *colon = slash;
    while (colon > host && *colon != ':')
        colon--;
    assert_true(*colon == ':');
    *pg_port = atoi(colon + 1);
    snprintf(out, cap, "%.*s:%d%s", (int)(colon - url), url, px.port, slash);
}

/* A store through px with this query timeout. */
static cti_store_t *store_via(int timeout_ms)
{
    char url[512];
    int pg_port = 0;
    proxy_url(url, sizeof url, &pg_port);
    px.target_port = pg_port;
    cti_store_options_t o = {.kind = CTI_DB_POSTGRES,
                             .conninfo = url,
                             .display = "via proxy",
                             .query_timeout_ms = timeout_ms};
    cti_store_t *st = NULL;
    assert_int_equal(cti_store_open(&o, &st), 0);
    return st;
}

static int open_via(void **state)
{
    (void)state;
    if (!is_pg)
        return 0;
    proxy_start(&px, 0);
    via = store_via(TIMEOUT_MS);
    return 0;
}

static int close_via(void **state)
{
    (void)state;
    if (!is_pg)
        return 0;
    atomic_store(&px.stalled, false);
    cti_store_close(via);
    proxy_stop(&px);
    return 0;
}

static int64_t ms_since(int64_t t0_us)
{
    return (cti_mono_us() - t0_us) / 1000;
}

/* Pings until it works (reconnects are spaced 250 ms apart): the ms it took,
 * or fails the test past 5 s. */
static int64_t until_up(cti_db_t *db)
{
    int64_t t0 = cti_mono_us();
    while (cti_db_ping(db) != 0) {
        if (ms_since(t0) > 5000)
            fail_msg("no recovery within 5 s: %s", cti_db_errmsg(db));
        usleep(20000);
    }
    return ms_since(t0);
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* A statement on a stalled connection: CTI_EUNAVAILABLE after the timeout, the
 * connection closed; the next calls fail fast (or within the timeout, when
 * they try a new connection through the stall); all recover once it passes. */
static void test_statement_fails_within_the_timeout(void **state)
{
    (void)state;
    if (!is_pg)
        skip();
    cti_db_t *db = cti_store_db(via);
    assert_int_equal(cti_db_ping(db), 0);
    atomic_store(&px.stalled, true);
    int64_t t0 = cti_mono_us();
    int64_t one = 0;
    assert_int_equal(cti_db_query_int(db, "SELECT 1", NULL, 0, &one), CTI_EUNAVAILABLE);
    int64_t took = ms_since(t0);
    if (took < TIMEOUT_MS - 50 || took > TIMEOUT_MS + SLACK_MS)
        fail_msg("failed after %lld ms, not about %d", (long long)took, TIMEOUT_MS);
    assert_non_null(strstr(cti_db_errmsg(db), "no answer from PostgreSQL within 400 ms"));
    /* the next tries: at once (reconnects spaced), or a connect through the stall */
    for (int i = 0; i < 4; i++) {
        t0 = cti_mono_us();
        assert_int_equal(cti_db_exec(db, "SELECT 1", NULL, 0, NULL, NULL), CTI_EUNAVAILABLE);
        assert_true(ms_since(t0) <= TIMEOUT_MS + SLACK_MS);
        usleep(150000);
    }
    atomic_store(&px.stalled, false);
    int64_t rec = until_up(db);
    assert_true(rec < 2000);
    assert_int_equal(cti_db_query_int(db, "SELECT 1", NULL, 0, &one), 0);
    assert_int_equal(one, 1);
}

/* cti_db_ping (/health) waits min(timeout, CTI_DB_PING_TIMEOUT_MS), the
 * connect included. */
static void test_ping_fails_within_the_timeout(void **state)
{
    (void)state;
    if (!is_pg)
        skip();
    cti_db_t *db = NULL;
    assert_int_equal(cti_store_connect(via, &db), 0);
    atomic_store(&px.stalled, true);
    for (int i = 0; i < 3; i++) { /* on the open connection, then on new ones */
        int64_t t0 = cti_mono_us();
        assert_int_equal(cti_db_ping(db), CTI_EUNAVAILABLE);
        assert_true(ms_since(t0) <= TIMEOUT_MS + SLACK_MS);
        usleep(300000);
    }
    atomic_store(&px.stalled, false);
    until_up(db);
    cti_db_close(db);
}

/* Inside a transaction, and with pipelined writes (the ingest worker's
 * connection): the failure comes within the timeout, the transaction is
 * over, and the connection comes back. */
static void test_transaction_and_pipeline_fail_within_the_timeout(void **state)
{
    (void)state;
    if (!is_pg)
        skip();
    script_ok("DROP TABLE IF EXISTS t_stall");
    script_ok("CREATE TABLE t_stall (k BIGINT PRIMARY KEY)");
    cti_db_t *db = NULL;
    assert_int_equal(cti_store_connect(via, &db), 0);
    cti_db_pipeline(db, true);
    const char *ins = "INSERT INTO t_stall (k) VALUES ($1)";
    for (int round = 0; round < 2; round++) {
        /* round 0 prepares the insert (waiting), round 1 pipes it */
        assert_int_equal(cti_db_begin(db), 0);
        cti_sql_val_t k = CTI_SQL_INT(round * 10);
        assert_int_equal(cti_db_exec(db, ins, &k, 1, NULL, NULL), 0);
        atomic_store(&px.stalled, true);
        int64_t t0 = cti_mono_us();
        int rc = 0;
        for (int i = 1; i < 4 && rc == 0; i++) {
            k = CTI_SQL_INT(round * 10 + i);
            rc = cti_db_exec(db, ins, &k, 1, NULL, NULL);
        }
        if (rc == 0)
            rc = cti_db_commit(db);
        else
            cti_db_rollback(db);
        int64_t took = ms_since(t0);
        assert_int_equal(rc, CTI_EUNAVAILABLE);
        assert_false(cti_db_in_tx(db));
        if (took > TIMEOUT_MS + SLACK_MS)
            fail_msg("round %d: failed after %lld ms", round, (long long)took);
        atomic_store(&px.stalled, false);
        until_up(db);
    }
    /* and it commits again */
    assert_int_equal(cti_db_begin(db), 0);
    cti_sql_val_t k = CTI_SQL_INT(100);
    assert_int_equal(cti_db_exec(db, ins, &k, 1, NULL, NULL), 0);
    assert_int_equal(cti_db_commit(db), 0);
    assert_int_equal(count("SELECT COUNT(*) FROM t_stall WHERE k = 100"), 1);
    cti_db_close(db);
}

static void *ping_in_thread(void *db)
{
    cti_db_ping(db);
    return NULL;
}

/* Once one connection got no answer in time, the others of the store wait at
 * most a second (not their full timeout) until the database answers again,
 * and only one at a time tries to reconnect; then the full timeout applies
 * again. */
static void test_a_timeout_warns_the_other_connections(void **state)
{
    (void)state;
    if (!is_pg)
        skip();
    cti_store_t *st = store_via(3000);
    cti_db_t *a = NULL, *b = NULL;
    assert_int_equal(cti_store_connect(st, &a), 0);
    assert_int_equal(cti_store_connect(st, &b), 0);
    atomic_store(&px.stalled, true);
    int64_t t0 = cti_mono_us();
    assert_int_equal(cti_db_exec(a, "SELECT 1", NULL, 0, NULL, NULL), CTI_EUNAVAILABLE);
    int64_t took_a = ms_since(t0);
    t0 = cti_mono_us();
    assert_int_equal(cti_db_exec(b, "SELECT 1", NULL, 0, NULL, NULL), CTI_EUNAVAILABLE);
    int64_t took_b = ms_since(t0);
    if (took_a < 2900 || took_b < 900 || took_b > 1000 + SLACK_MS)
        fail_msg("the first waited %lld ms (want ~3000), the next %lld (want ~1000)",
                 (long long)took_a, (long long)took_b);
    /* both closed; while one tries to reconnect (a connect through the stall,
     * up to a second), the other fails at once */
    pthread_t t;
    pthread_create(&t, NULL, ping_in_thread, a);
    usleep(300000);
    t0 = cti_mono_us();
    assert_int_equal(cti_db_ping(b), CTI_EUNAVAILABLE);
    int64_t took = ms_since(t0);
    assert_non_null(strstr(cti_db_errmsg(b), "another connection is trying"));
    pthread_join(t, NULL);
    if (took > 200)
        fail_msg("the second connection waited %lld ms while the first probed", (long long)took);
    atomic_store(&px.stalled, false);
    until_up(b);
    /* answered again: a statement of 1.5 s is within the (full) timeout */
    assert_int_equal(cti_db_exec(b, "SELECT pg_sleep(1.5)", NULL, 0, NULL, NULL), 0);
    cti_db_close(a);
    cti_db_close(b);
    cti_store_close(st);
}

static void on_note(const char *payload, void *ud)
{
    if (!strcmp(payload, "after the stall"))
        (*(int *)ud)++;
}

/* The LISTEN connection (the stream relay's): a wait or a (re)connect
 * through a stall returns within its bounds; after it, notifications come. */
static void test_listener_under_a_stall(void **state)
{
    (void)state;
    if (!is_pg)
        skip();
    cti_wakeup_t *l = cti_wakeup_open(via, "stall_test");
    bool fresh = false;
    int got = 0;
    int64_t t0 = cti_mono_us();
    while (!fresh && ms_since(t0) < 5000)
        cti_wakeup_wait(l, 100, on_note, &got, &fresh);
    assert_true(fresh);
    atomic_store(&px.stalled, true);
    t0 = cti_mono_us();
    cti_wakeup_wait(l, 200, on_note, &got, &fresh); /* an idle wait: nothing to notice */
    assert_true(ms_since(t0) < 200 + SLACK_MS);
    cti_wakeup_close(l);
    /* a new listener connecting through the stall: bounded (3 s connect) */
    l = cti_wakeup_open(via, "stall_test");
    t0 = cti_mono_us();
    assert_int_equal(cti_wakeup_wait(l, 100, on_note, &got, &fresh), CTI_EUNAVAILABLE);
    assert_true(ms_since(t0) < 3000 + SLACK_MS);
    atomic_store(&px.stalled, false);
    t0 = cti_mono_us();
    fresh = false;
    while (!fresh && ms_since(t0) < 5000)
        cti_wakeup_wait(l, 100, on_note, &got, &fresh);
    assert_true(fresh);
    cti_db_t *db = cti_store_db(store); /* directly, not through the proxy */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_notify(db, "stall_test", "after the stall"), 0);
    assert_int_equal(cti_db_commit(db), 0);
    t0 = cti_mono_us();
    while (!got && ms_since(t0) < 5000)
        cti_wakeup_wait(l, 100, on_note, &got, &fresh);
    assert_int_equal(got, 1);
    cti_wakeup_close(l);
}

int main(void)
{
    alarm(120); /* a wait that is not bounded hangs: fail instead (SIGALRM) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_statement_fails_within_the_timeout, open_via,
                                        close_via),
        cmocka_unit_test_setup_teardown(test_ping_fails_within_the_timeout, open_via, close_via),
        cmocka_unit_test_setup_teardown(test_transaction_and_pipeline_fail_within_the_timeout,
                                        open_via, close_via),
        cmocka_unit_test_setup_teardown(test_a_timeout_warns_the_other_connections, open_via,
                                        close_via),
        cmocka_unit_test_setup_teardown(test_listener_under_a_stall, open_via, close_via),
    };
    return cmocka_run_group_tests(tests, store_setup, store_teardown);
}
