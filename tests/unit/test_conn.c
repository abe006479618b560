/* test_conn.c — unit tests for src/stream/conn.c (one socket's protocol),
 * included whole to reach its static functions, with no hub thread and no
 * socket: what the client sends is fed to the reader and the socket's queue
 * is looked at. Every frame the server queues counts toward the socket's
 * limit (a ping flood is closed with 4008, its queue bounded); subscribes
 * with since are rate-limited and each hands one job to the replay worker;
 * a replay page is delivered once, dropped by seq at the seam with held
 * live events. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <unistd.h>

#include "../../src/stream/conn.c"

/* ---- what conn.c needs of the hub and the replay worker ------------------------------------ */

bool cti_hub_owns(const cti_ws_t *ws)
{
    (void)ws;
    return true;
}

/* No hub thread: live events are written with send(), or, when a test says
 * so, "batched" (counted; the test then plays the outcome). */
static bool batching;
static int batched;

bool cti_hub_batch_send(cti_ws_t *ws, cti_msg_t *m)
{
    (void)ws, (void)m;
    batched += batching;
    return batching;
}

static int submitted;
static cti_replay_job_t *last_job;

void cti_replayer_submit(cti_replayer_t *r, cti_replay_job_t *job)
{
    (void)r;
    submitted++;
    free(last_job);
    last_job = job;
}

static const cti_ws_env_t env = {.ping_interval_s = 30, .replayer = NULL};

static cti_ws_t *live_ws(void)
{
    cti_ws_t *ws = calloc(1, sizeof *ws);
    ws->env = &env;
    ws->fd = -1;
    ws->state = WS_LIVE;
    snprintf(ws->app_id, sizeof ws->app_id, "app-1");
    ws->resub_at_us = cti_mono_us();
    ws->resub_credit_us = (int64_t)CTI_WS_RESUB_BURST * 1000000;
    submitted = 0;
    return ws;
}

static void free_ws(cti_ws_t *ws)
{
    cti_conn_release(ws);
    free(ws);
    free(last_job);
    last_job = NULL;
}

static size_t client_frame(uint8_t *out, int op, const char *payload)
{
    static const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
    size_t len = strlen(payload), n = 0;
    out[n++] = (uint8_t)(0x80 | op);
    out[n++] = (uint8_t)(0x80 | len); /* < 126 here */
    memcpy(out + n, key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = (uint8_t)payload[i] ^ key[i & 3];
    return n + len;
}

static unsigned close_code_queued(const cti_ws_t *ws)
{
    const cti_msg_t *m = cti_msgq_at(&ws->out, ws->out.count - 1);
    assert_int_equal(m->opcode, CTI_WS_OP_CLOSE);
    return (unsigned)((uint8_t)m->data[0] << 8 | (uint8_t)m->data[1]);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_ping_flood_is_closed_with_a_bounded_queue(void **state)
{
    (void)state;
    cti_ws_t *ws = live_ws();
    uint8_t buf[16];
    for (int i = 0; i < 5000; i++) { /* a client that never reads */
        size_t n = client_frame(buf, CTI_WS_OP_PING, "");
        feed(ws, buf, n);
    }
    assert_true(ws->close_queued);
    assert_true(ws->out.count <= CTI_WS_QUEUE_MAX + 1);
    assert_int_equal(close_code_queued(ws), 4008);
    free_ws(ws);
}

static void test_error_replies_count_too(void **state)
{
    (void)state;
    cti_ws_t *ws = live_ws();
    uint8_t buf[16];
    for (int i = 0; i < 3000; i++) {
        size_t n = client_frame(buf, CTI_WS_OP_TEXT, "x"); /* not JSON: an error reply */
        feed(ws, buf, n);
    }
    assert_true(ws->close_queued);
    assert_true(ws->out.count <= CTI_WS_QUEUE_MAX + 1);
    assert_true(ws->out.bytes <= CTI_WS_QUEUE_BYTES + 128);
    assert_int_equal(close_code_queued(ws), 4008);
    free_ws(ws);
}

static void test_subscribes_with_since_are_rate_limited(void **state)
{
    (void)state;
    cti_ws_t *ws = live_ws();
    uint8_t buf[64];
    for (int i = 0; i < 20; i++) {
        size_t n = client_frame(buf, CTI_WS_OP_TEXT, "{\"type\":\"subscribe\",\"since\":0}");
        feed(ws, buf, n);
    }
    assert_int_equal(submitted, CTI_WS_RESUB_BURST); /* one replay job each, no more */
    assert_true(last_job->start && last_job->from == 0 && last_job->gen == ws->replay_gen);
    int errors = 0;
    for (int i = 0; i < ws->out.count; i++) {
        const cti_msg_t *m = cti_msgq_at(&ws->out, i);
        errors += m->len > 20 && !memcmp(m->data, "{\"type\":\"error\"", 15);
    }
    assert_int_equal(errors, 20 - CTI_WS_RESUB_BURST);
    assert_false(ws->close_queued);
    free_ws(ws);
}

static cti_msg_t *event(int64_t seq)
{
    char body[64];
    snprintf(body, sizeof body, "{\"seq\":%lld,\"event\":\"call.ringing\"}", (long long)seq);
    return cti_msg_event("app-1", seq, body);
}

/* The seqs of the event frames the server wrote to the peer's end of a socketpair. */
static int read_seqs(int fd, int64_t *out, int max)
{
    uint8_t buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    int k = 0;
    for (ssize_t i = 0; n > 0 && i + 2 <= n && k < max;) {
        size_t len = buf[i + 1]; /* short frames only here */
        assert_true(len < 126);
        const char *p = (const char *)buf + i + 2;
        const char *s = memmem(p, len, "\"seq\":", 6);
        if (buf[i] == 0x81 && s)
            out[k++] = strtoll(s + 6, NULL, 10);
        i += 2 + (ssize_t)len;
    }
    return k;
}

static void test_replay_page_then_held_events_without_duplicates(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cti_ws_t *ws = live_ws();
    ws->fd = sv[0];
    ws->epfd = -1;
    ws->replaying = true;
    ws->log_done = false;
    cti_conn_pump(ws); /* asks the worker for the first page */
    assert_int_equal(submitted, 1);
    assert_int_equal(last_job->from, 0);
    for (int64_t s = 3; s <= 6; s++) { /* live events 3..6 arrive meanwhile: held */
        cti_msg_t *m = event(s);
        cti_conn_live(ws, m);
        cti_msg_unref(m);
    }
    assert_int_equal(ws->held.count, 4);
    /* the page: 1..4, short (the log ended at 4 when it was read) */
    cti_msg_t *page[4];
    for (int i = 0; i < 4; i++)
        page[i] = event(i + 1);
    cti_replay_job_t job = {.ws = ws, .gen = ws->replay_gen, .msgs = page, .n = 4};
    ws->inflight = 0;
    cti_conn_page(ws, &job);
    assert_false(ws->replaying); /* caught up: live from here */
    assert_false(ws->closing);
    cti_msg_t *m = event(7);
    cti_conn_live(ws, m);
    cti_msg_unref(m);
    int64_t got[16];
    int n = read_seqs(sv[1], got, 16);
    assert_int_equal(n, 7); /* 1..4 from the log, 5..6 held (3, 4 dropped), 7 live */
    for (int i = 0; i < n; i++)
        assert_int_equal(got[i], i + 1);
    for (int i = 0; i < 4; i++)
        cti_msg_unref(page[i]);
    free_ws(ws);
    close(sv[0]);
    close(sv[1]);
}

/* A user filter clears with null, 0 or "" (clients have sent each); other
 * shapes are refused. */
static void test_subscribe_clears_or_refuses_user_filter(void **state)
{
    const char *clear[] = {"null", "0", "\"\""};
    for (size_t i = 0; i < sizeof clear / sizeof *clear; i++) {
        char text[96];
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"dialpad_user_id\":%s}", clear[i]);
        json_t *o = json_loads(text, 0, NULL);
        cti_ws_filter_t f = {.dialpad_user_id = 42};
        int64_t since;
        assert_null(parse_subscribe(o, &f, &since));
        assert_int_equal(f.dialpad_user_id, 0);
        json_decref(o);
    }
    const char *bad[] = {"-5", "true", "\"0042\"", "\"12abc\""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char text[96];
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"dialpad_user_id\":%s}", bad[i]);
        json_t *o = json_loads(text, 0, NULL);
        cti_ws_filter_t f = {.dialpad_user_id = 42};
        int64_t since;
        assert_non_null(parse_subscribe(o, &f, &since));
        json_decref(o);
    }
}

/* The outcomes of a batched write: while it is out nothing else is written
 * (a second event queues behind it); what it did not write goes first, before
 * that second event; a hard error closes. The bytes on the socket are the
 * frames whole and in order. */
static void test_batched_write_outcomes(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    cti_ws_t *ws = live_ws();
    ws->fd = sv[0];
    batching = true;
    batched = 0;
    cti_msg_t *m1 = cti_msg_event("app-1", 1, "{\"seq\":1,\"event\":\"call.ringing\"}");
    cti_msg_t *m2 = cti_msg_event("app-1", 2, "{\"seq\":2,\"event\":\"call.ringing\"}");
    cti_conn_live(ws, m1);
    assert_true(ws->send_pending);
    assert_int_equal(batched, 1);
    cti_conn_live(ws, m2); /* while m1's write is out */
    assert_int_equal(batched, 1);
    assert_int_equal(ws->out.count, 1);
    cti_conn_pump(ws); /* writes nothing while it is out */
    uint8_t got[512];
    assert_true(recv(sv[1], got, sizeof got, MSG_DONTWAIT) < 0);
    /* the kernel took 3 bytes of m1 (the test writes them itself) */
    assert_int_equal(write(sv[0], m1->frame, 3), 3);
    cti_conn_sent(ws, m1, 3);
    assert_false(ws->send_pending);
    assert_false(ws->closing);
    ssize_t n = recv(sv[1], got, sizeof got, MSG_DONTWAIT);
    assert_int_equal(n, (ssize_t)(m1->frame_len + m2->frame_len));
    assert_memory_equal(got, m1->frame, m1->frame_len);
    assert_memory_equal(got + m1->frame_len, m2->frame, m2->frame_len);
    assert_int_equal(ws->written_seq, 2);
    assert_int_equal(ws->out.count, 0);

    /* EAGAIN: all of it queued, written by the pump */
    cti_msg_t *m3 = cti_msg_event("app-1", 3, "{\"seq\":3,\"event\":\"call.ringing\"}");
    cti_conn_live(ws, m3);
    cti_conn_sent(ws, m3, -EAGAIN);
    n = recv(sv[1], got, sizeof got, MSG_DONTWAIT);
    assert_int_equal(n, (ssize_t)m3->frame_len);
    assert_int_equal(ws->written_seq, 3);
    /* whole: written */
    cti_msg_t *m4 = cti_msg_event("app-1", 4, "{\"seq\":4,\"event\":\"call.ringing\"}");
    cti_conn_live(ws, m4);
    cti_conn_sent(ws, m4, (int)m4->frame_len);
    assert_int_equal(ws->written_seq, 4);
    assert_int_equal(ws->out.count, 0);
    /* a hard error: the socket is to be closed */
    cti_msg_t *m5 = cti_msg_event("app-1", 5, "{\"seq\":5,\"event\":\"call.ringing\"}");
    cti_conn_live(ws, m5);
    cti_conn_sent(ws, m5, -EPIPE);
    assert_true(ws->closing);
    batching = false;
    cti_msg_t *all[] = {m1, m2, m3, m4, m5};
    for (int i = 0; i < 5; i++)
        cti_msg_unref(all[i]);
    close(sv[0]);
    close(sv[1]);
    ws->fd = -1;
    free_ws(ws);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_flood_is_closed_with_a_bounded_queue),
        cmocka_unit_test(test_batched_write_outcomes),
        cmocka_unit_test(test_error_replies_count_too),
        cmocka_unit_test(test_subscribes_with_since_are_rate_limited),
        cmocka_unit_test(test_subscribe_clears_or_refuses_user_filter),
        cmocka_unit_test(test_replay_page_then_held_events_without_duplicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
