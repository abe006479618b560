/*
 * fuzz_wsframe.c — libFuzzer target for src/stream/wsframe.[ch], the reader of
 * client WebSocket frames (bytes from the network, before any authentication
 * of their content).
 *
 * 1. The input as a client's byte stream, read by a reader with a 1 KiB
 *    message limit: whole, then split into pieces whose sizes come from the
 *    input's first byte. Both readings must hand over the same messages
 *    (opcode, length, bytes) and end with the same result; every text message
 *    is UTF-8, control payloads are at most 125 bytes, data messages at most
 *    the limit, and results are 0 or a close code.
 * 2. The input as a payload: framed by hand as a masked text message in
 *    fragments, it must come back byte-identical when it is UTF-8 and fail
 *    with 1007 when it is not.
 * Any violation is a deliberate __builtin_trap().
 *
 * Build and run: tests/fuzz/run.sh fuzz_wsframe.
 */
#include "stream/wsframe.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wsframe.c:%d: invariant failed: %s\n", __LINE__, #cond);        \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

#define LIMIT 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What a reading handed over: a running hash of every message, and a count. */
typedef struct {
    uint64_t hash;
    int count;
} trace_t;

static int record(int op, const uint8_t *p, size_t len, void *ud)
{
    trace_t *t = ud;
    if (op == CTI_WS_OP_TEXT || op == CTI_WS_OP_BINARY)
        CHECK(len <= LIMIT);
    else
        CHECK((op == CTI_WS_OP_PING || op == CTI_WS_OP_PONG || op == CTI_WS_OP_CLOSE) &&
              len <= 125);
    if (op == CTI_WS_OP_TEXT)
        CHECK(cti_utf8_valid(p, len));
    uint64_t h = t->hash ^ ((uint64_t)op << 56 ^ len);
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    t->hash = h * 1099511628211ull;
    t->count++;
    return 0;
}

static int read_stream(const uint8_t *data, size_t size, size_t step, trace_t *t)
{
    uint8_t *copy = malloc(size ? size : 1); /* payloads are unmasked in place */
    memcpy(copy, data, size);
    cti_wsr_t r = {0};
    int rc = 0;
    for (size_t off = 0; off < size && !rc; off += step) {
        size_t n = size - off < step ? size - off : step;
        rc = cti_wsr_feed(&r, copy + off, n, LIMIT, record, t);
    }
    cti_wsr_reset(&r);
    free(copy);
    return rc;
}

static void fuzz_stream(const uint8_t *data, size_t size)
{
    trace_t whole = {0}, split = {0};
    size_t step = size ? (size_t)data[0] % 17 + 1 : 1;
    int rc1 = read_stream(data, size, size ? size : 1, &whole);
    int rc2 = read_stream(data, size, step, &split);
    CHECK(rc1 == 0 || rc1 == CTI_WS_CLOSE_PROTOCOL || rc1 == CTI_WS_CLOSE_BAD_DATA ||
          rc1 == CTI_WS_CLOSE_TOO_BIG);
    CHECK(rc1 == rc2);
    CHECK(whole.count == split.count && whole.hash == split.hash);
}

/* Collects the one message the round trip expects. */
typedef struct {
    uint8_t *buf;
    size_t len;
    int count;
} one_t;

static int keep(int op, const uint8_t *p, size_t len, void *ud)
{
    one_t *o = ud;
    CHECK(op == CTI_WS_OP_TEXT);
    o->buf = malloc(len ? len : 1);
    memcpy(o->buf, p, len);
    o->len = len;
    o->count++;
    return 0;
}

static void fuzz_round_trip(const uint8_t *data, size_t size)
{
    if (size > LIMIT)
        size = LIMIT;
    /* fragments of up to 300 bytes (so every length form appears), mask from the input */
    uint8_t *raw = malloc(size + 14 * (size / 300 + 1) + 14), mask[4] = {0x5a, 0x01, 0xff, 0x80};
    if (size >= 4)
        memcpy(mask, data, 4);
    size_t n = 0, off = 0;
    do {
        size_t part = size - off < 300 ? size - off : 300;
        bool first = off == 0, last = off + part == size;
        raw[n++] = (uint8_t)((last ? 0x80 : 0) | (first ? CTI_WS_OP_TEXT : CTI_WS_OP_CONT));
        if (part < 126) {
            raw[n++] = (uint8_t)(0x80 | part);
        } else {
            raw[n++] = 0x80 | 126;
            raw[n++] = (uint8_t)(part >> 8);
            raw[n++] = (uint8_t)part;
        }
        memcpy(raw + n, mask, 4);
        n += 4;
        for (size_t i = 0; i < part; i++)
            raw[n + i] = data[off + i] ^ mask[i & 3];
        n += part;
        off += part;
    } while (off < size);
    cti_wsr_t r = {0};
    one_t got = {0};
    int rc = cti_wsr_feed(&r, raw, n, LIMIT, keep, &got);
    if (cti_utf8_valid(data, size)) {
        CHECK(rc == 0 && got.count == 1 && got.len == size);
        CHECK(size == 0 || memcmp(got.buf, data, size) == 0);
    } else {
        CHECK(rc == CTI_WS_CLOSE_BAD_DATA && got.count == 0);
    }
    cti_wsr_reset(&r);
    free(got.buf);
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_stream(data, size);
    fuzz_round_trip(data, size);
    return 0;
}
