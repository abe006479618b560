/* test_guard.c — unit tests for src/http/guard.c: the per-address cap, shedding
 * order, deadlines and closed peers. Connections are socketpairs: the guard
 * shuts "our" end down, and the test reads EOF at the peer's end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/guard.h"

typedef struct {
    int mine, peer; /* mine: the server's end, given to the guard */
    cti_guard_conn_t *c;
} conn_t;

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    return sa;
}

static struct sockaddr_in6 v6(const char *ip)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, ip, &sa.sin6_addr);
    return sa;
}

static void open_conn(cti_guard_t *g, conn_t *k, const void *sa)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    k->mine = sv[0];
    k->peer = sv[1];
    fcntl(k->peer, F_SETFL, O_NONBLOCK);
    k->c = cti_guard_open(g, k->mine, sa);
}

static void close_conn(cti_guard_t *g, conn_t *k)
{
    cti_guard_close(g, k->c);
    close(k->mine);
    close(k->peer);
}

/* Whether the guard shut k down (the peer reads end of stream). */
static bool was_cut(const conn_t *k)
{
    char b;
    return recv(k->peer, &b, 1, MSG_DONTWAIT) == 0;
}

static cti_guard_t *guard(int max, int per_address, int header_s, int rate)
{
    cti_guard_options_t o = {.max_connections = max, .per_address = per_address,
                             .header_timeout_s = header_s, .idle_timeout_s = 30,
                             .min_body_rate = rate};
    return cti_guard_new(&o);
}

static void test_per_address_cap(void **state)
{
    cti_guard_t *g = guard(1024, 2, 10, 0);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    conn_t k[3];
    open_conn(g, &k[0], &a);
    open_conn(g, &k[1], &a);
    assert_false(cti_guard_admit(g, (struct sockaddr *)&a));
    assert_true(cti_guard_admit(g, (struct sockaddr *)&b));
    /* a WebSocket leaves the count */
    cti_guard_upgraded(g, k[1].c);
    assert_true(cti_guard_admit(g, (struct sockaddr *)&a));
    open_conn(g, &k[2], &a);
    assert_false(cti_guard_admit(g, (struct sockaddr *)&a));
    close_conn(g, &k[0]);
    assert_true(cti_guard_admit(g, (struct sockaddr *)&a));
    cti_guard_stats_t st;
    cti_guard_stats(g, &st);
    assert_int_equal(st.refused, 2);
    assert_int_equal(st.open, 1);
    assert_int_equal(st.upgraded, 1);
    close_conn(g, &k[1]);
    close_conn(g, &k[2]);
    cti_guard_free(g);
}

static void test_ipv6_counts_by_64(void **state)
{
    cti_guard_t *g = guard(1024, 1, 10, 0);
    struct sockaddr_in6 a = v6("2001:db8:1:2::1"), same64 = v6("2001:db8:1:2:ffff::9"),
                        other64 = v6("2001:db8:1:3::1"), mapped = v6("::ffff:10.0.0.1");
    struct sockaddr_in plain = v4("10.0.0.1");
    conn_t k[2];
    open_conn(g, &k[0], &a);
    assert_false(cti_guard_admit(g, (struct sockaddr *)&same64));
    assert_true(cti_guard_admit(g, (struct sockaddr *)&other64));
    open_conn(g, &k[1], &mapped); /* an IPv4-mapped address is that IPv4 address */
    assert_false(cti_guard_admit(g, (struct sockaddr *)&plain));
    close_conn(g, &k[0]);
    close_conn(g, &k[1]);
    cti_guard_free(g);
}

/* From 7/8 of max_connections, each new connection sheds the one waiting
 * longest with no request under way; requests in progress are never shed. */
static void test_shedding_order(void **state)
{
    cti_guard_t *g = guard(16, 0, 60, 0); /* shedding from 14 open */
    struct sockaddr_in a = v4("10.0.0.3");
    conn_t k[16];
    for (int i = 0; i < 13; i++)
        open_conn(g, &k[i], &a);
    cti_guard_head_done(g, k[0].c); /* 0: a request under way */
    cti_guard_handling(g, k[0].c);
    cti_guard_head_done(g, k[1].c); /* 1: answered, now idle (newer than 2..12) */
    cti_guard_handling(g, k[1].c);
    cti_guard_idle(g, k[1].c);
    for (int i = 0; i < 13; i++)
        assert_false(was_cut(&k[i]));
    open_conn(g, &k[13], &a); /* 14 open: sheds the oldest waiting, 2 */
    assert_true(was_cut(&k[2]));
    assert_false(was_cut(&k[0]));
    assert_false(was_cut(&k[13]));
    open_conn(g, &k[14], &a); /* then 3 */
    assert_true(was_cut(&k[3]));
    assert_false(was_cut(&k[1]));
    cti_guard_stats_t st;
    cti_guard_stats(g, &st);
    assert_int_equal(st.shed, 2);
    for (int i = 0; i < 15; i++)
        close_conn(g, &k[i]);
    cti_guard_stats(g, &st);
    assert_int_equal(st.open, 0);
    cti_guard_free(g);
}

static void test_head_deadline_and_closed_peer(void **state)
{
    cti_guard_t *g = guard(1024, 0, 1, 0);
    struct sockaddr_in a = v4("10.0.0.4");
    conn_t slow, done, gone;
    open_conn(g, &slow, &a);
    open_conn(g, &done, &a);
    open_conn(g, &gone, &a);
    cti_guard_head_done(g, done.c);
    cti_guard_handling(g, done.c);
    shutdown(gone.peer, SHUT_WR); /* the peer closes its side */
    usleep(600 * 1000);
    assert_true(was_cut(&gone)); /* found closed, well before the deadline */
    assert_false(was_cut(&slow));
    usleep(800 * 1000);
    assert_true(was_cut(&slow)); /* the head deadline (1 s) passed */
    assert_false(was_cut(&done)); /* a request under way has none */
    cti_guard_stats_t st;
    cti_guard_stats(g, &st);
    assert_int_equal(st.peer_closed, 1);
    assert_int_equal(st.timeouts, 1);
    close_conn(g, &slow);
    close_conn(g, &done);
    close_conn(g, &gone);
    cti_guard_free(g);
}

static void test_min_body_rate(void **state)
{
    cti_guard_t *g = guard(1024, 0, 1, 1000); /* 1 s of grace, then 1,000 B/s */
    struct sockaddr_in a = v4("10.0.0.5");
    conn_t slow, steady;
    open_conn(g, &slow, &a);
    open_conn(g, &steady, &a);
    cti_guard_head_done(g, slow.c);
    cti_guard_head_done(g, steady.c);
    cti_guard_body(g, slow.c, 100); /* allowed 1.1 s in all */
    for (int i = 0; i < 8; i++) {
        cti_guard_body(g, steady.c, 400); /* 2,000 B/s */
        usleep(200 * 1000);
    }
    assert_true(was_cut(&slow));
    assert_false(was_cut(&steady));
    close_conn(g, &slow);
    close_conn(g, &steady);
    cti_guard_free(g);
}

/* A loopback TCP connection, as MHD has them: mine is the accepted end. */
static void open_tcp(cti_guard_t *g, conn_t *k, const void *sa)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = v4("127.0.0.1");
    socklen_t len = sizeof addr;
    assert_int_equal(bind(l, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&addr, &len), 0);
    k->peer = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(k->peer, (struct sockaddr *)&addr, sizeof addr), 0);
    k->mine = accept(l, NULL, NULL);
    assert_true(k->mine >= 0);
    close(l);
    fcntl(k->mine, F_SETFL, O_NONBLOCK);
    k->c = cti_guard_open(g, k->mine, sa);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libmicrohttpd 0.9.75 can sleep in epoll_wait() with ready connections not
 * yet handled (exactly 128 events: guard.c, RESHUT_AFTER_US), so a cut that
 * MHD does not act on is repeated until MHD's close event: each shutdown(2)
 * is a new edge on the thread's edge-triggered epoll set, even on a socket
 * already shut down and closed by the peer. Before, one cut was all: the
 * connection stayed open until MHD's 30 s timeout. */
static void test_cut_is_repeated_until_closed(void **state)
{
    cti_guard_t *g = guard(1024, 0, 10, 0);
    struct sockaddr_in a = v4("10.0.0.6");
    conn_t k;
    open_tcp(g, &k, &a);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET}, got[4];
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, k.mine, &ev), 0);
    assert_int_equal(send(k.peer, "GET /he", 7, 0), 7);
    usleep(20 * 1000);
    char buf[16];
    assert_int_equal(recv(k.mine, buf, sizeof buf, 0), 7); /* as MHD reads it */
    close(k.peer); /* the FIN: MHD's stuck thread would not look at it */
    k.peer = -1;
    cti_guard_stats_t st = {0};
    for (int64_t t = mono_ms(); st.peer_closed == 0 && mono_ms() - t < 3000;) {
        usleep(10 * 1000);
        cti_guard_stats(g, &st);
    }
    assert_int_equal(st.peer_closed, 1); /* cut (found closed) */
    assert_int_equal(st.cutting, 1);
    while (epoll_wait(ep, got, 4, 0) > 0) /* the events so far: taken, not acted on */
        ;
    int64_t t = mono_ms();
    assert_true(epoll_wait(ep, got, 4, 2000) >= 1); /* a new edge: shut down again */
    int64_t waited = mono_ms() - t;
    assert_true(waited < 1000);
    cti_guard_stats(g, &st);
    assert_true(st.reshut >= 1);
    assert_int_equal(st.cutting, 1);
    /* MHD's close event ends it: nothing is shut down after that */
    cti_guard_close(g, k.c);
    cti_guard_stats(g, &st);
    uint64_t reshut = st.reshut;
    assert_int_equal(st.cutting, 0);
    usleep(700 * 1000);
    cti_guard_stats(g, &st);
    assert_int_equal(st.reshut, reshut);
    close(ep);
    close(k.mine);
    cti_guard_free(g);
}

/* Bytes left unread 200 ms after a connection started waiting: MHD's thread
 * may be stuck with that connection's event taken and not handled (the same
 * 0.9.75 stall), so the guard signals it readable again — a new edge — and
 * does not cut it (the bytes may complete the request). Once read, nothing. */
static void test_unread_bytes_are_signalled_again(void **state)
{
    cti_guard_t *g = guard(1024, 0, 10, 0);
    struct sockaddr_in a = v4("10.0.0.9");
    conn_t k;
    open_tcp(g, &k, &a);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET}, got[4];
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, k.mine, &ev), 0);
    static const char req[] = "GET / HTTP/1.1\r\nHo";
    assert_int_equal(send(k.peer, req, sizeof req - 1, 0), sizeof req - 1);
    usleep(20 * 1000);
    while (epoll_wait(ep, got, 4, 0) > 0) /* taken, not acted on: nothing read */
        ;
    int64_t t = mono_ms();
    assert_true(epoll_wait(ep, got, 4, 2000) >= 1); /* a new edge */
    assert_true(mono_ms() - t < 1000);
    assert_true(got[0].events & EPOLLIN);
    cti_guard_stats_t st;
    cti_guard_stats(g, &st);
    assert_true(st.nudged >= 1);
    assert_int_equal(st.peer_closed + st.timeouts, 0); /* not cut */
    char buf[64];
    assert_int_equal(recv(k.mine, buf, sizeof buf, 0), sizeof req - 1); /* MHD reads it */
    usleep(300 * 1000);
    cti_guard_stats(g, &st);
    uint64_t nudged = st.nudged;
    usleep(300 * 1000);
    cti_guard_stats(g, &st);
    assert_int_equal(st.nudged, nudged);
    assert_int_equal(st.peer_closed + st.timeouts, 0);
    close(ep);
    close_conn(g, &k);
    cti_guard_free(g);
}

/* Many cut connections left open are shut down again one a tick, in turn:
 * all at once made the next batch of exactly 128 epoll events, and the
 * stall again. */
static void test_cuts_are_repeated_one_at_a_time(void **state)
{
    enum { N = 130 };
    cti_guard_t *g = guard(1024, 0, 1, 0);
    struct sockaddr_in a = v4("10.0.0.8");
    static conn_t k[N];
    for (int i = 0; i < N; i++)
        open_conn(g, &k[i], &a);
    cti_guard_stats_t st = {0};
    for (int64_t t = mono_ms(); st.timeouts < N && mono_ms() - t < 3000;) {
        usleep(10 * 1000);
        cti_guard_stats(g, &st);
    }
    assert_int_equal(st.timeouts, N); /* all cut at the head deadline */
    usleep(700 * 1000);
    cti_guard_stats(g, &st);
    /* 300 ms after the cut, one a 100 ms tick: at most 5 by now */
    assert_true(st.reshut >= 1);
    assert_true(st.reshut <= 8);
    assert_int_equal(st.cutting, N);
    for (int i = 0; i < N; i++)
        close_conn(g, &k[i]);
    cti_guard_stats(g, &st);
    assert_int_equal(st.cutting, 0);
    assert_int_equal(st.open, 0);
    cti_guard_free(g);
}

/* A cut connection that MHD closes at once is shut down once only. */
static void test_cut_closed_at_once_is_not_repeated(void **state)
{
    cti_guard_t *g = guard(1024, 0, 1, 0);
    struct sockaddr_in a = v4("10.0.0.7");
    conn_t k;
    open_conn(g, &k, &a);
    cti_guard_stats_t st = {0};
    for (int i = 0; i < 300 && !was_cut(&k); i++)
        usleep(10 * 1000);
    close_conn(g, &k);
    usleep(500 * 1000);
    cti_guard_stats(g, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.reshut, 0);
    assert_int_equal(st.cutting, 0);
    cti_guard_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_address_cap),
        cmocka_unit_test(test_ipv6_counts_by_64),
        cmocka_unit_test(test_shedding_order),
        cmocka_unit_test(test_head_deadline_and_closed_peer),
        cmocka_unit_test(test_min_body_rate),
        cmocka_unit_test(test_cut_is_repeated_until_closed),
        cmocka_unit_test(test_cuts_are_repeated_one_at_a_time),
        cmocka_unit_test(test_unread_bytes_are_signalled_again),
        cmocka_unit_test(test_cut_closed_at_once_is_not_repeated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
