/* test_wsframe.c — unit tests for src/stream/wsframe.c (RFC 6455 framing):
 * server frame headers at each length boundary; client frames read whole,
 * split anywhere, fragmented, with control frames between fragments; every
 * protocol error with its close code; UTF-8 validation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "stream/wsframe.h"

#define MAX_MSG 65536

/* ---- a client frame, masked ------------------------------------------------------------- */

static size_t client_frame(uint8_t *out, int op, const void *payload, size_t len, bool fin)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | op);
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ key[i & 3];
    return n + len;
}

/* ---- what the reader hands over ------------------------------------------------------------ */

typedef struct {
    int ops[16];
    char texts[16][256];
    size_t lens[16];
    int n;
    int stop_at; /* answer non-zero for this message (1-based), 0 = never */
} got_t;

static int collect(int op, const uint8_t *data, size_t len, void *ud)
{
    got_t *g = ud;
    if (g->n < 16) {
        g->ops[g->n] = op;
        g->lens[g->n] = len;
        memcpy(g->texts[g->n], data, len < 255 ? len : 255);
        g->texts[g->n][len < 255 ? len : 255] = '\0';
    }
    g->n++;
    return g->n == g->stop_at ? 7 : 0;
}

/* Feeds buf in pieces of `step` bytes (0: all at once). */
static int feed_in_steps(cti_wsr_t *r, uint8_t *buf, size_t len, size_t step, got_t *g)
{
    if (!step)
        return cti_wsr_feed(r, buf, len, MAX_MSG, collect, g);
    for (size_t off = 0; off < len; off += step) {
        size_t n = len - off < step ? len - off : step;
        int rc = cti_wsr_feed(r, buf + off, n, MAX_MSG, collect, g);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------------ */

static void test_server_headers(void **state)
{
    uint8_t h[CTI_WSF_HEADER_MAX];
    assert_int_equal(cti_wsf_header(h, CTI_WS_OP_TEXT, 0), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 0);
    assert_int_equal(cti_wsf_header(h, CTI_WS_OP_TEXT, 125), 2);
    assert_int_equal(h[1], 125);
    assert_int_equal(cti_wsf_header(h, CTI_WS_OP_CLOSE, 126), 4);
    assert_int_equal(h[0], 0x88);
    assert_int_equal(h[1], 126);
    assert_int_equal(h[2] << 8 | h[3], 126);
    assert_int_equal(cti_wsf_header(h, CTI_WS_OP_TEXT, 65535), 4);
    assert_int_equal(h[2] << 8 | h[3], 65535);
    assert_int_equal(cti_wsf_header(h, CTI_WS_OP_PING, 65536), 10);
    assert_int_equal(h[0], 0x89);
    assert_int_equal(h[1], 127);
    uint64_t len = 0;
    for (int i = 0; i < 8; i++)
        len = len << 8 | h[2 + i];
    assert_int_equal(len, 65536);
}

static void test_messages_split_anywhere(void **state)
{
    /* a text, a ping, a fragmented text with a pong between its fragments, a close */
    uint8_t buf[1024];
    size_t n = 0;
    n += client_frame(buf + n, CTI_WS_OP_TEXT, "{\"type\":\"ping\"}", 15, true);
    n += client_frame(buf + n, CTI_WS_OP_PING, "hi", 2, true);
    n += client_frame(buf + n, CTI_WS_OP_TEXT, "hel", 3, false);
    n += client_frame(buf + n, CTI_WS_OP_PONG, "", 0, true);
    n += client_frame(buf + n, CTI_WS_OP_CONT, "", 0, false);
    n += client_frame(buf + n, CTI_WS_OP_CONT, "lo \xc3\xa9", 5, true);
    n += client_frame(buf + n, CTI_WS_OP_TEXT, "", 0, true);
    n += client_frame(buf + n, CTI_WS_OP_CLOSE, "\x03\xe8ok", 4, true);
    for (size_t step = 0; step <= 9; step++) {
        uint8_t copy[1024];
        memcpy(copy, buf, n); /* payloads are unmasked in place */
        cti_wsr_t r = {0};
        got_t g = {0};
        assert_int_equal(feed_in_steps(&r, copy, n, step, &g), 0);
        assert_int_equal(g.n, 6);
        assert_int_equal(g.ops[0], CTI_WS_OP_TEXT);
        assert_string_equal(g.texts[0], "{\"type\":\"ping\"}");
        assert_int_equal(g.ops[1], CTI_WS_OP_PING);
        assert_string_equal(g.texts[1], "hi");
        assert_int_equal(g.ops[2], CTI_WS_OP_PONG);
        assert_int_equal(g.lens[2], 0);
        assert_int_equal(g.ops[3], CTI_WS_OP_TEXT);
        assert_string_equal(g.texts[3], "hello \xc3\xa9");
        assert_int_equal(g.ops[4], CTI_WS_OP_TEXT);
        assert_int_equal(g.lens[4], 0);
        assert_int_equal(g.ops[5], CTI_WS_OP_CLOSE);
        assert_int_equal(g.lens[5], 4);
        assert_memory_equal(g.texts[5], "\x03\xe8ok", 4);
        assert_null(r.msg); /* nothing held between messages */
        cti_wsr_reset(&r);
    }
}

static void test_callback_stops_reading(void **state)
{
    uint8_t buf[256];
    size_t n = client_frame(buf, CTI_WS_OP_CLOSE, "", 0, true);
    n += client_frame(buf + n, CTI_WS_OP_TEXT, "after", 5, true);
    cti_wsr_t r = {0};
    got_t g = {.stop_at = 1};
    assert_int_equal(cti_wsr_feed(&r, buf, n, MAX_MSG, collect, &g), 7);
    assert_int_equal(g.n, 1);
    cti_wsr_reset(&r);
}

static void test_large_lengths(void **state)
{
    size_t len = 70000;
    uint8_t *payload = malloc(len), *buf = malloc(len + 28); /* two frames' headers */
    memset(payload, 'a', len);
    /* 126-form: 300 bytes, read whole and split */
    size_t n = client_frame(buf, CTI_WS_OP_BINARY, payload, 300, true);
    cti_wsr_t r = {0};
    got_t g = {0};
    assert_int_equal(feed_in_steps(&r, buf, n, 7, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.ops[0], CTI_WS_OP_BINARY);
    assert_int_equal(g.lens[0], 300);
    /* exactly the limit is fine; one byte over is 1009 before any payload arrives */
    n = client_frame(buf, CTI_WS_OP_TEXT, payload, MAX_MSG, true);
    g = (got_t){0};
    assert_int_equal(cti_wsr_feed(&r, buf, n, MAX_MSG, collect, &g), 0);
    assert_int_equal(g.lens[0], MAX_MSG);
    n = client_frame(buf, CTI_WS_OP_TEXT, payload, MAX_MSG + 1, true);
    assert_int_equal(cti_wsr_feed(&r, buf, 14, MAX_MSG, collect, &g), CTI_WS_CLOSE_TOO_BIG);
    cti_wsr_reset(&r);
    /* fragments adding up past the limit */
    n = client_frame(buf, CTI_WS_OP_TEXT, payload, 40000, false);
    n += client_frame(buf + n, CTI_WS_OP_CONT, payload, 30000, true);
    g = (got_t){0};
    assert_int_equal(cti_wsr_feed(&r, buf, n, MAX_MSG, collect, &g), CTI_WS_CLOSE_TOO_BIG);
    assert_int_equal(g.n, 0);
    cti_wsr_reset(&r);
    /* a 64-bit length with the top bit set */
    uint8_t huge[14] = {0x81, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    assert_int_equal(cti_wsr_feed(&r, huge, sizeof huge, MAX_MSG, collect, &g),
                     CTI_WS_CLOSE_PROTOCOL);
    cti_wsr_reset(&r);
    free(payload);
    free(buf);
}

/* Feeds one raw sequence to a fresh reader; returns what cti_wsr_feed said. */
static int feed_raw(const uint8_t *raw, size_t n)
{
    uint8_t copy[512];
    memcpy(copy, raw, n);
    cti_wsr_t r = {0};
    got_t g = {0};
    int rc = cti_wsr_feed(&r, copy, n, MAX_MSG, collect, &g);
    cti_wsr_reset(&r);
    return rc;
}

static void test_protocol_errors(void **state)
{
    uint8_t buf[512];
    size_t n;
    /* unmasked */
    const uint8_t unmasked[] = {0x81, 0x02, 'h', 'i'};
    assert_int_equal(feed_raw(unmasked, sizeof unmasked), CTI_WS_CLOSE_PROTOCOL);
    /* RSV1 */
    n = client_frame(buf, CTI_WS_OP_TEXT, "x", 1, true);
    buf[0] |= 0x40;
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    /* reserved opcodes, data and control */
    n = client_frame(buf, 0x3, "x", 1, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    n = client_frame(buf, 0xB, "x", 1, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    /* continuation with nothing open; a new message while one is open */
    n = client_frame(buf, CTI_WS_OP_CONT, "x", 1, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    n = client_frame(buf, CTI_WS_OP_TEXT, "x", 1, false);
    n += client_frame(buf + n, CTI_WS_OP_BINARY, "y", 1, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    /* control frames: fragmented, or over 125 bytes */
    n = client_frame(buf, CTI_WS_OP_PING, "x", 1, false);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    char big[126];
    memset(big, 'p', sizeof big);
    n = client_frame(buf, CTI_WS_OP_PONG, big, sizeof big, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    /* close: one byte, a code no peer may send, a reason that is not UTF-8 */
    n = client_frame(buf, CTI_WS_OP_CLOSE, "\x03", 1, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    n = client_frame(buf, CTI_WS_OP_CLOSE, "\x03\xed", 2, true); /* 1005 */
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_PROTOCOL);
    n = client_frame(buf, CTI_WS_OP_CLOSE, "\x03\xe8\xff", 3, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_BAD_DATA);
    n = client_frame(buf, CTI_WS_OP_CLOSE, "\x0f\xa0", 2, true); /* 4000: an application's */
    assert_int_equal(feed_raw(buf, n), 0);
    /* text that is not UTF-8, whole or split between fragments */
    n = client_frame(buf, CTI_WS_OP_TEXT, "a\xc3", 2, true);
    assert_int_equal(feed_raw(buf, n), CTI_WS_CLOSE_BAD_DATA);
    n = client_frame(buf, CTI_WS_OP_TEXT, "a\xc3", 2, false);
    n += client_frame(buf + n, CTI_WS_OP_CONT, "\xa9", 1, true); /* é split: fine */
    assert_int_equal(feed_raw(buf, n), 0);
    /* binary is not checked */
    n = client_frame(buf, CTI_WS_OP_BINARY, "\xff", 1, true);
    assert_int_equal(feed_raw(buf, n), 0);
}

static void test_utf8(void **state)
{
    const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"", true},
        {"plain ascii", true},
        {"\xc3\xa9", true},           /* é */
        {"\xe2\x82\xac", true},       /* € */
        {"\xf0\x9f\x98\x80", true},   /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", true},   /* U+10FFFF */
        {"\xc0\xaf", false},          /* overlong / */
        {"\xe0\x80\xaf", false},      /* overlong / */
        {"\xed\xa0\x80", false},      /* surrogate D800 */
        {"\xf4\x90\x80\x80", false},  /* above U+10FFFF */
        {"\xf8\x88\x80\x80\x80", false},
        {"\x80", false},              /* a continuation alone */
        {"\xe2\x82", false},          /* cut short */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_true(cti_utf8_valid((const uint8_t *)cases[i].s, strlen(cases[i].s)) ==
                    cases[i].ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_headers),   cmocka_unit_test(test_messages_split_anywhere),
        cmocka_unit_test(test_callback_stops_reading), cmocka_unit_test(test_large_lengths),
        cmocka_unit_test(test_protocol_errors),  cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
