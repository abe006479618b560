/* test_msgq.c — unit tests for src/stream/msgq.c: frames are framed once
 * (header in front of the payload), shared by reference, and a queue counts
 * its frames and their bytes (what a socket's limits are measured in),
 * through growth, wrap-around and clearing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "stream/msgq.h"

static void test_event_message(void **state)
{
    (void)state;
    cti_msg_t *m = cti_msg_event("app-1", 7, "{\"seq\":7,\"event\":\"call.ringing\"}");
    const char want[] = "{\"type\":\"event\",\"seq\":7,\"event\":\"call.ringing\"}";
    assert_int_equal(m->len, strlen(want));
    assert_memory_equal(m->data, want, m->len);
    assert_int_equal(m->frame_len, m->len + 2); /* a short text frame: 2-byte header */
    assert_int_equal(m->frame[0], 0x81);
    assert_int_equal(m->frame[1], m->len);
    assert_int_equal(m->seq, 7);
    cti_msg_parse(m);
    assert_string_equal(m->event, "call.ringing");
    cti_msg_unref(m);
}

static void test_queue_counts_frames_and_bytes(void **state)
{
    (void)state;
    cti_msgq_t q = {0};
    cti_msg_t *shared = cti_msg_event("app-1", 1, "{\"seq\":1}");
    size_t want = 0;
    for (int i = 0; i < 100; i++) { /* pongs of growing size, and a shared event */
        cti_msg_t *m =
            i % 2 ? cti_msg_ref(shared) : cti_msg_copy(CTI_WS_OP_PONG, "xxxxxxxx", (size_t)(i % 9));
        want += m->frame_len;
        cti_msgq_push(&q, m);
    }
    assert_int_equal(q.count, 100);
    assert_int_equal(q.bytes, want);
    for (int i = 0; i < 60; i++) { /* pop some, push more: the ring wraps */
        cti_msg_t *m = cti_msgq_pop(&q);
        want -= m->frame_len;
        cti_msg_unref(m);
        cti_msgq_push(&q, cti_msg_copy(CTI_WS_OP_PING, NULL, 0));
        want += 2;
    }
    assert_int_equal(q.count, 100);
    assert_int_equal(q.bytes, want);
    assert_int_equal(cti_msgq_at(&q, 99)->opcode, CTI_WS_OP_PING);
    cti_msgq_clear(&q);
    assert_int_equal(q.count, 0);
    assert_int_equal(q.bytes, 0);
    assert_null(q.items);
    assert_int_equal(atomic_load(&shared->refs), 1); /* every queue reference was dropped */
    cti_msg_unref(shared);
}

/* push_front puts a message first, also on an empty queue, a full ring and a
 * wrapped one, and the order of the rest stays. */
static void test_push_front_keeps_the_order(void **state)
{
    (void)state;
    cti_msgq_t q = {0};
    cti_msgq_push_front(&q, cti_msg_event("a", 5, "{\"seq\":5}")); /* empty */
    for (int i = 6; i < 16; i++)
        cti_msgq_push(&q, cti_msg_event("a", i, "{}"));
    cti_msg_unref(cti_msgq_pop(&q)); /* head moves: 6..15 */
    for (int i = 16; i < 23; i++)    /* 6..22: 17 in a ring of 32 after growing */
        cti_msgq_push(&q, cti_msg_event("a", i, "{}"));
    cti_msgq_push_front(&q, cti_msg_event("a", 4, "{}"));
    assert_int_equal(q.count, 18);
    for (int i = 0; i < q.count; i++)
        assert_int_equal(cti_msgq_at(&q, i)->seq, i ? 5 + i : 4);
    while (q.count < q.cap) /* full, then one more in front: the ring grows */
        cti_msgq_push(&q, cti_msg_event("a", 5 + q.count, "{}"));
    cti_msgq_push_front(&q, cti_msg_event("a", 3, "{}"));
    assert_int_equal(cti_msgq_at(&q, 0)->seq, 3);
    assert_int_equal(cti_msgq_at(&q, 1)->seq, 4);
    assert_int_equal(cti_msgq_at(&q, q.count - 1)->seq, 5 + q.count - 2); /* 3, 4, 6, ... */
    size_t bytes = 0;
    for (int i = 0; i < q.count; i++)
        bytes += cti_msgq_at(&q, i)->frame_len;
    assert_int_equal(q.bytes, bytes);
    cti_msgq_clear(&q);
}

static void test_empty_queue_holds_nothing(void **state)
{
    (void)state;
    cti_msgq_t q = {0};
    cti_msgq_push(&q, cti_msg_copy(CTI_WS_OP_TEXT, "{}", 2));
    assert_non_null(q.items);
    cti_msg_unref(cti_msgq_pop(&q));
    assert_null(q.items);
    assert_int_equal(q.bytes, 0);
    assert_null(cti_msgq_pop(&q));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_message),
        cmocka_unit_test(test_queue_counts_frames_and_bytes),
        cmocka_unit_test(test_push_front_keeps_the_order),
        cmocka_unit_test(test_empty_queue_holds_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
