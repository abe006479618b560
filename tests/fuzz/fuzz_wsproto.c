/*
 * fuzz_wsproto.c — libFuzzer target for the WebSocket client protocol of
 * src/stream/conn.c: what a socket does with the frames a client sends
 * ({"type":"ping"}, {"type":"subscribe", ...}, anything else, binary, ping,
 * close, broken framing).
 *
 * conn.c runs inside a hub thread, but reading a client's bytes needs no hub:
 * this file #includes conn.c and drives its static feed() on a socket struct
 * of its own (no fd, no epoll), the replay worker replaced by a stub that
 * counts the replays asked for (a subscribe with since). Every frame the
 * socket queues for the client is then read back from its queue.
 *
 * The input's first byte picks the mode: even, the rest is split at '\n'
 * into text messages, each sent as one masked frame, one feed() each; odd,
 * the rest is the client's raw byte stream, fed in pieces whose sizes come
 * from the first byte. Checked:
 *   - each text message gets exactly one text answer (until the socket
 *     closes): pong for a ping, subscribed for a good subscribe, else an
 *     error with a message; every answer is a JSON object of one of those
 *     types; nothing is queued after our close frame, whose code is one a
 *     server may send (RFC 6455 7.4) or an echo of none;
 *   - a subscribe answered "subscribed" leaves exactly the filter it asked
 *     for (types from a list or a comma-separated string, dialpad_user_id
 *     from a number or a decimal string, crm_user_id whole, null clearing
 *     one, absent leaving it), and asks for a replay exactly when it has a
 *     since; one answered with an error changes no filter and asks for no replay.
 * A violation is a deliberate __builtin_trap(). Build and run: tests/fuzz/run.sh.
 */
#include "stream/conn.h"

#include <stdio.h>
#include <stdlib.h>

/* The replay worker, replaced: counts what is asked of it. */
static int replays_asked;
static void fuzz_replayer_submit(cti_replayer_t *r, cti_replay_job_t *job)
{
    (void)r;
    replays_asked++;
    free(job);
}
#define cti_replayer_submit fuzz_replayer_submit
#include "stream/conn.c"
#undef cti_replayer_submit

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wsproto.c:%d: invariant failed: %s\n", __LINE__, #cond);        \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const cti_ws_env_t ENV = {.ping_interval_s = 30, .replayer = NULL};

static cti_ws_t *new_ws(void)
{
    cti_ws_t *ws = calloc(1, sizeof *ws);
    CHECK(ws != NULL);
    ws->env = &ENV;
    ws->state = WS_LIVE;
    ws->fd = -1;
    snprintf(ws->app_id, sizeof ws->app_id, "00000000-0000-4000-8000-000000000000");
    return ws;
}

static void free_ws(cti_ws_t *ws)
{
    cti_msgq_clear(&ws->out);
    cti_msgq_clear(&ws->held);
    cti_wsr_reset(&ws->rx);
    free(ws->filter);
    free(ws);
}

/* A masked client frame of one text message. */
static uint8_t *client_frame(const uint8_t *p, size_t n, size_t *out_len)
{
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t *f = malloc(n + 14);
    CHECK(f != NULL);
    size_t h = 0;
    f[h++] = 0x81;
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = p[i] ^ key[i % 4];
    *out_len = h + n;
    return f;
}

/* The type of a text answer (checked to be one we send). */
static const char *answer_type(const cti_msg_t *m, char *buf, size_t cap)
{
    json_t *o = json_loadb(m->data, m->len, 0, NULL);
    CHECK(json_is_object(o));
    const char *t = json_string_value(json_object_get(o, "type"));
    CHECK(t && (!strcmp(t, "pong") || !strcmp(t, "subscribed") || !strcmp(t, "error")));
    if (!strcmp(t, "error"))
        CHECK(json_is_string(json_object_get(o, "message")));
    snprintf(buf, cap, "%s", t);
    json_decref(o);
    return buf;
}

static void check_queue(const cti_ws_t *ws)
{
    for (int i = 0; i < ws->out.count; i++) {
        const cti_msg_t *m = cti_msgq_at(&ws->out, i);
        if (m->opcode == CTI_WS_OP_CLOSE) {
            CHECK(i == ws->out.count - 1); /* nothing after our close */
            CHECK(ws->close_queued);
            CHECK(m->len == 0 || m->len >= 2);
            if (m->len >= 2) {
                unsigned code = (unsigned)(uint8_t)m->data[0] << 8 | (uint8_t)m->data[1];
                CHECK(cti_ws_close_code_ok(code));
            }
        } else if (m->opcode == CTI_WS_OP_TEXT) {
            char t[16];
            answer_type(m, t, sizeof t);
        } else {
            CHECK(m->opcode == CTI_WS_OP_PONG);
            CHECK(m->len <= 125);
        }
    }
}

/* A positive decimal id: digits only, no leading 0, within int64. */
static bool decimal_id(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || s[0] < '1' || s[0] > '9' || strspn(s, "0123456789") != n)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

/* The filter a subscribe message asks for, from the one before; false when
 * the message is not a subscribe this checker can predict. */
static bool expected_filter(json_t *o, const cti_ws_filter_t *before, cti_ws_filter_t *want)
{
    *want = *before;
    json_t *types = json_object_get(o, "types"), *uid = json_object_get(o, "dialpad_user_id");
    json_t *crm = json_object_get(o, "crm_user_id");
    if (types) {
        memset(want->types, 0, sizeof want->types);
        want->ntypes = 0;
        if (json_is_string(types)) {
            char *copy = strdup(json_string_value(types)), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (want->ntypes == CTI_WS_TYPES_MAX || strlen(t) >= sizeof want->types[0]) {
                    free(copy);
                    return false;
                }
                snprintf(want->types[want->ntypes++], sizeof want->types[0], "%s", t);
            }
            free(copy);
        } else if (json_is_array(types)) {
            size_t i;
            json_t *t;
            json_array_foreach(types, i, t)
            {
                if (!json_is_string(t) || want->ntypes == CTI_WS_TYPES_MAX ||
                    strlen(json_string_value(t)) >= sizeof want->types[0])
                    return false;
                snprintf(want->types[want->ntypes++], sizeof want->types[0], "%s",
                         json_string_value(t));
            }
        } else if (!json_is_null(types)) {
            return false;
        }
    }
    if (uid) {
        if (json_is_null(uid) || (json_is_integer(uid) && json_integer_value(uid) == 0) ||
            (json_is_string(uid) && !json_string_value(uid)[0]))
            want->dialpad_user_id = 0;
        else if (json_is_integer(uid) && json_integer_value(uid) > 0)
            want->dialpad_user_id = json_integer_value(uid);
        else if (!json_is_string(uid) || !decimal_id(json_string_value(uid), &want->dialpad_user_id))
            return false;
    }
    if (crm) {
        if (json_is_null(crm))
            want->crm_user_id[0] = '\0';
        else if (!json_is_string(crm) || json_string_length(crm) >= sizeof want->crm_user_id)
            return false;
        else
            memcpy(want->crm_user_id, json_string_value(crm), json_string_length(crm) + 1);
    }
    json_t *sv = json_object_get(o, "since");
    return !sv || (json_is_integer(sv) && json_integer_value(sv) >= 0);
}

static void filter_of(const cti_ws_t *ws, cti_ws_filter_t *f)
{
    memset(f, 0, sizeof *f);
    if (ws->filter)
        *f = *ws->filter;
}

static bool same_filter(const cti_ws_filter_t *a, const cti_ws_filter_t *b)
{
    if (a->ntypes != b->ntypes || a->dialpad_user_id != b->dialpad_user_id ||
        strcmp(a->crm_user_id, b->crm_user_id))
        return false;
    for (int i = 0; i < a->ntypes; i++)
        if (strcmp(a->types[i], b->types[i]))
            return false;
    return true;
}

/* One text message, fed as one frame: its answer and its effect. */
static void one_message(cti_ws_t *ws, const uint8_t *p, size_t n)
{
    if (ws->close_queued)
        return;
    cti_ws_filter_t before, after, want;
    filter_of(ws, &before);
    int count = ws->out.count, asked = replays_asked;
    size_t flen;
    uint8_t *frame = client_frame(p, n, &flen);
    feed(ws, frame, flen);
    free(frame);
    filter_of(ws, &after);
    check_queue(ws);
    if (ws->close_queued)
        return; /* over its limits, or not UTF-8: closed instead of answered */
    /* a subscribe with since drops what was queued before its answer */
    CHECK(ws->out.count == count + 1 || (replays_asked > asked && ws->out.count == 1));
    char type[16];
    answer_type(cti_msgq_at(&ws->out, ws->out.count - 1), type, sizeof type);

    json_t *o = json_loadb((const char *)p, n, 0, NULL);
    const char *t = json_string_value(json_object_get(o, "type"));
    if (t && !strcmp(t, "ping")) {
        CHECK(!strcmp(type, "pong"));
    } else if (t && !strcmp(t, "subscribe")) {
        bool valid = expected_filter(o, &before, &want);
        bool since = json_object_get(o, "since") != NULL;
        if (!strcmp(type, "subscribed")) {
            CHECK(valid);
            CHECK(same_filter(&after, &want));
            CHECK(replays_asked == asked + (since ? 1 : 0));
        } else {
            CHECK(!valid || since); /* a good one is refused only past the rate of since */
            CHECK(same_filter(&after, &before));
            CHECK(replays_asked == asked);
        }
    } else {
        CHECK(!strcmp(type, "error"));
        CHECK(same_filter(&after, &before));
    }
    json_decref(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cti_ws_t *ws = new_ws();
    uint8_t mode = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    if (!(mode & 1)) {
        while (p <= end) {
            const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
            const uint8_t *stop = nl ? nl : end;
            one_message(ws, p, (size_t)(stop - p));
            p = stop + 1;
        }
    } else {
        /* raw bytes, in pieces of 1 to 32 bytes (a copy: feed unmasks in place) */
        size_t n = (size_t)(end - p), piece = 1 + (mode >> 3);
        uint8_t *copy = malloc(n ? n : 1);
        CHECK(copy != NULL);
        memcpy(copy, p, n);
        for (size_t off = 0; off < n; off += piece)
            feed(ws, copy + off, n - off < piece ? n - off : piece);
        check_queue(ws);
        free(copy);
    }
    free_ws(ws);
    return 0;
}
