/* test_log.c — unit tests for src/core/log.c: one JSON object per line, typed
 * fields, level filtering, escaping and truncation. Output is captured through
 * a pipe handed to cti_log_set_fd(). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

static int pipe_fds[2] = {-1, -1};
static char captured[1 << 16];
static size_t captured_len;

/* Heap blocks a test allocates, freed by the teardown even when the test fails
 * part-way (cmocka jumps out of a failing test). */
static void *tracked[8];

static void *track(void *p)
{
    assert_non_null(p);
    for (size_t i = 0; i < CTI_ARRAY_LEN(tracked); i++)
        if (!tracked[i]) {
            tracked[i] = p;
            return p;
        }
    fail_msg("too many tracked blocks");
    return NULL;
}

static int capture_setup(void **state)
{
    if (pipe(pipe_fds) != 0)
        return -1;
    if (fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK) != 0)
        return -1;
    captured_len = 0;
    captured[0] = '\0';
    cti_log_set_level(CTI_LOG_INFO);
    cti_log_set_fd(pipe_fds[1]);
    return 0;
}

static int capture_teardown(void **state)
{
    cti_log_set_fd(2);
    cti_log_set_level(CTI_LOG_INFO);
    for (size_t i = 0; i < CTI_ARRAY_LEN(tracked); i++) {
        free(tracked[i]);
        tracked[i] = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (pipe_fds[i] >= 0)
            close(pipe_fds[i]);
        pipe_fds[i] = -1;
    }
    return 0;
}

/* Reads everything written so far (appending to captured) and returns it. */
static const char *drain(void)
{
    for (;;) {
        ssize_t r = read(pipe_fds[0], captured + captured_len, sizeof captured - 1 - captured_len);
        if (r > 0) {
            captured_len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        break;
    }
    captured[captured_len] = '\0';
    return captured;
}

static void reset_capture(void)
{
    drain();
    captured_len = 0;
    captured[0] = '\0';
}

static size_t count_char(const char *s, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == c;
    return k;
}

/* Drains the pipe, checks exactly one line was written and that it is one JSON
 * object; returns it (caller decrefs). */
static json_t *one_line(void)
{
    drain();
    if (captured_len == 0)
        fail_msg("nothing was logged");
    assert_int_equal(captured[captured_len - 1], '\n');
    if (count_char(captured, captured_len, '\n') != 1)
        fail_msg("expected one line, got: %s", captured);
    assert_int_equal(strlen(captured), captured_len); /* no NUL bytes in the line */
    json_error_t err;
    json_t *v = json_loadb(captured, captured_len - 1, 0, &err);
    if (!v)
        fail_msg("not valid JSON (%s at column %d): %.300s", err.text, err.column, captured);
    assert_true(json_is_object(v));
    reset_capture();
    return v;
}

static const char *str_field(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("field %s is missing or not a string", key);
    return json_string_value(v);
}

/* Makes one log call in a forked child, so that a sanitizer abort inside the
 * logger fails this test instead of killing the whole test program. The line
 * goes to the same pipe, to be read by the parent. */
static void log_isolated(const char *rid, const char *msg, const cti_log_field_t *fields,
                         size_t n)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cti_log_fields(CTI_LOG_INFO, rid, msg, fields, n);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("cti_log_fields crashed (msg of %zu bytes, request_id %s): see the sanitizer "
                 "report above",
                 strlen(msg), rid ? "set" : "NULL");
}

#define LOG_ISOLATED(rid, msg, ...)                                                              \
    log_isolated((rid), (msg), (cti_log_field_t[]){__VA_ARGS__},                                 \
                 sizeof((cti_log_field_t[]){__VA_ARGS__}) / sizeof(cti_log_field_t))

/* ---- line shape and typed fields ------------------------------------------------------ */

static void test_line_is_json_with_standard_keys(void **state)
{
    int64_t before = cti_now_ms();
    cti_log_msg(CTI_LOG_INFO, "req-1", "hello");
    int64_t after = cti_now_ms();
    json_t *o = one_line();
    assert_string_equal(str_field(o, "level"), "info");
    assert_string_equal(str_field(o, "msg"), "hello");
    assert_string_equal(str_field(o, "request_id"), "req-1");
    const char *t = str_field(o, "time");
    assert_int_equal(strlen(t), CTI_ISO_TIME_LEN - 1);
    int64_t ms;
    assert_int_equal(cti_parse_iso_time(t, &ms), 0);
    assert_true(ms >= before && ms <= after);
    assert_int_equal(json_object_size(o), 4);
    json_decref(o);
}

static void test_no_request_id_key_when_null(void **state)
{
    cti_log_msg(CTI_LOG_WARN, NULL, "no rid");
    json_t *o = one_line();
    assert_null(json_object_get(o, "request_id"));
    assert_string_equal(str_field(o, "level"), "warn");
    assert_string_equal(str_field(o, "msg"), "no rid");
    json_decref(o);

    cti_log_msg(CTI_LOG_ERROR, NULL, "err");
    o = one_line();
    assert_string_equal(str_field(o, "level"), "error");
    json_decref(o);
}

static void test_typed_fields(void **state)
{
    cti_log(CTI_LOG_INFO, "rid", "request", CTI_LS("method", "GET"), CTI_LI("status", 200),
            CTI_LI("big", INT64_MIN), CTI_LB("ok", 1), CTI_LB("cached", 0),
            CTI_LD("ms", 12.5), CTI_LS("user", NULL));
    json_t *o = one_line();
    assert_string_equal(str_field(o, "method"), "GET");

    json_t *status = json_object_get(o, "status");
    assert_true(json_is_integer(status));
    assert_int_equal(json_integer_value(status), 200);

    json_t *big = json_object_get(o, "big");
    assert_true(json_is_integer(big));
    assert_true(json_integer_value(big) == INT64_MIN);

    assert_true(json_is_true(json_object_get(o, "ok")));
    assert_true(json_is_false(json_object_get(o, "cached")));

    json_t *d = json_object_get(o, "ms");
    assert_true(json_is_number(d));
    assert_true(fabs(json_number_value(d) - 12.5) < 1e-9);

    json_t *user = json_object_get(o, "user");
    assert_non_null(user); /* present, as null */
    assert_true(json_is_null(user));
    json_decref(o);
}

/* A double that printf renders as "nan" or "inf" is not a JSON number: the line
 * must stay valid JSON whatever the value. */
static void test_non_finite_double_keeps_line_valid(void **state)
{
    cti_log(CTI_LOG_INFO, NULL, "nan", CTI_LD("x", NAN));
    json_t *o = one_line();
    assert_string_equal(str_field(o, "msg"), "nan");
    json_decref(o);

    cti_log(CTI_LOG_INFO, NULL, "inf", CTI_LD("x", INFINITY), CTI_LD("y", -INFINITY));
    o = one_line();
    assert_string_equal(str_field(o, "msg"), "inf");
    json_decref(o);
}

/* ---- levels ------------------------------------------------------------------------------ */

static void test_level_filtering(void **state)
{
    cti_log_set_level(CTI_LOG_INFO);
    assert_false(cti_log_enabled(CTI_LOG_DEBUG));
    assert_true(cti_log_enabled(CTI_LOG_INFO));
    assert_true(cti_log_enabled(CTI_LOG_ERROR));
    cti_log_msg(CTI_LOG_DEBUG, NULL, "hidden");
    assert_int_equal(strlen(drain()), 0);
    cti_log_msg(CTI_LOG_INFO, NULL, "shown");
    json_t *o = one_line();
    assert_string_equal(str_field(o, "msg"), "shown");
    json_decref(o);

    cti_log_set_level(CTI_LOG_DEBUG);
    assert_true(cti_log_enabled(CTI_LOG_DEBUG));
    cti_log(CTI_LOG_DEBUG, NULL, "now shown", CTI_LI("n", 1));
    o = one_line();
    assert_string_equal(str_field(o, "level"), "debug");
    assert_string_equal(str_field(o, "msg"), "now shown");
    json_decref(o);

    cti_log_set_level(CTI_LOG_ERROR);
    assert_false(cti_log_enabled(CTI_LOG_WARN));
    cti_log_msg(CTI_LOG_INFO, NULL, "a");
    cti_log_msg(CTI_LOG_WARN, NULL, "b");
    assert_int_equal(strlen(drain()), 0);
    cti_log_msg(CTI_LOG_ERROR, NULL, "c");
    o = one_line();
    assert_string_equal(str_field(o, "msg"), "c");
    json_decref(o);
}

static void test_parse_level(void **state)
{
    static const struct {
        const char *s;
        cti_log_level_t want;
    } ok[] = {
        {"debug", CTI_LOG_DEBUG}, {"info", CTI_LOG_INFO},     {"warn", CTI_LOG_WARN},
        {"warning", CTI_LOG_WARN}, {"error", CTI_LOG_ERROR},  {"DEBUG", CTI_LOG_DEBUG},
        {"Info", CTI_LOG_INFO},   {"WARNING", CTI_LOG_WARN},  {"eRRoR", CTI_LOG_ERROR},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(ok); i++) {
        cti_log_level_t lvl = (cti_log_level_t)-1;
        assert_int_equal(cti_log_parse_level(ok[i].s, &lvl), 0);
        assert_int_equal(lvl, ok[i].want);
    }
    static const char *const bad[] = {"verbose", "", "inf", "debugx", " info", "err", "fatal"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        cti_log_level_t lvl = CTI_LOG_INFO;
        if (cti_log_parse_level(bad[i], &lvl) != CTI_EINVAL)
            fail_msg("cti_log_parse_level accepted \"%s\"", bad[i]);
    }
}

/* ---- escaping ----------------------------------------------------------------------------- */

static void test_escaping_round_trips(void **state)
{
    static const char nasty[] = "say \"hi\" \\ back\\slash\nnew line\r\tcr tab \x01\x02\x1f\x7f end";
    static const char key[] = "k\"e\\y\n";
    cti_log(CTI_LOG_INFO, "rid\"\n", nasty, CTI_LS("value", nasty), CTI_LS(key, "v"));
    drain();
    /* the raw line has no control characters: only the final newline */
    for (size_t i = 0; i + 1 < captured_len; i++)
        if ((unsigned char)captured[i] < 0x20)
            fail_msg("raw control character 0x%02x at byte %zu", captured[i], i);
    json_t *o = one_line();
    assert_string_equal(str_field(o, "msg"), nasty);
    assert_string_equal(str_field(o, "value"), nasty);
    assert_string_equal(str_field(o, "request_id"), "rid\"\n");
    assert_string_equal(str_field(o, key), "v");
    json_decref(o);
}

static void test_json_str_helper(void **state)
{
    char buf[64];
    size_t n = cti_log_json_str(buf, 0, sizeof buf, "a\"b\\c\n\x01");
    buf[n] = '\0';
    assert_string_equal(buf, "\"a\\\"b\\\\c\\n\\u0001\"");

    /* appends after len */
    memcpy(buf, "xy", 2);
    n = cti_log_json_str(buf, 2, sizeof buf, "z");
    buf[n] = '\0';
    assert_string_equal(buf, "xy\"z\"");
}

static void test_json_str_helper_truncates_within_cap(void **state)
{
    char buf[32];
    memset(buf, '#', sizeof buf);
    size_t cap = 16;
    size_t n = cti_log_json_str(buf, 0, cap, "0123456789012345678901234567890123456789");
    assert_true(n < cap);
    assert_int_equal(buf[0], '"');
    assert_int_equal(buf[n - 1], '"'); /* closed despite the cut */
    for (size_t i = cap; i < sizeof buf; i++)
        assert_int_equal(buf[i], '#');
    buf[n] = '\0';
    json_t *v = json_loads(buf, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    assert_true(json_is_string(v));
    json_decref(v);

    /* an escape sequence is never cut in half */
    memset(buf, '#', sizeof buf);
    n = cti_log_json_str(buf, 0, cap, "\x01\x01\x01\x01\x01\x01");
    assert_true(n < cap);
    buf[n] = '\0';
    v = json_loads(buf, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    json_decref(v);
}

/* Whatever room is left before cap, the helper appends either nothing or a
 * complete string literal: never a lone opening quote. */
static void test_json_str_helper_near_cap_never_unbalanced(void **state)
{
    enum { CAP = 24 };
    for (size_t start = 0; start < CAP; start++) {
        char buf[CAP + 8];
        memset(buf, '#', sizeof buf);
        size_t n = cti_log_json_str(buf, start, CAP, "abcdefghijklmnopqrstuvwxyz");
        assert_true(n >= start);
        assert_true(n < CAP);
        for (size_t i = CAP; i < sizeof buf; i++)
            assert_int_equal(buf[i], '#');
        if (n == start)
            continue;
        json_t *v = json_loadb(buf + start, n - start, JSON_DECODE_ANY, NULL);
        if (!v || !json_is_string(v))
            fail_msg("from len %zu (cap %d) appended %.*s, not a JSON string", start, CAP,
                     (int)(n - start), buf + start);
        json_decref(v);
    }
}

/* ---- long input ---------------------------------------------------------------------------- */

static char *repeat(char c, size_t n)
{
    char *s = track(malloc(n + 1));
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_long_field_truncated_single_line(void **state)
{
    char *big = repeat('x', 20000);
    LOG_ISOLATED("rid", "long", CTI_LS("big", big), CTI_LI("after", 7));
    json_t *o = one_line();
    assert_string_equal(str_field(o, "msg"), "long");
    assert_string_equal(str_field(o, "request_id"), "rid");
    const char *v = str_field(o, "big");
    assert_true(strlen(v) > 1000);  /* kept a useful prefix */
    assert_true(strlen(v) < 20000); /* but cut */
    assert_memory_equal(v, big, strlen(v));
    json_decref(o);
}

static void test_long_escaped_field_truncated_single_line(void **state)
{
    char *big = repeat('\n', 20000); /* each byte becomes two */
    LOG_ISOLATED(NULL, "long", CTI_LS("big", big));
    json_t *o = one_line();
    const char *v = str_field(o, "big");
    assert_true(strlen(v) > 1000);
    assert_memory_equal(v, big, strlen(v));
    json_decref(o);
}

static void test_long_msg_truncated_single_line(void **state)
{
    char *big = repeat('m', 20000);
    LOG_ISOLATED(NULL, big, CTI_LS("k", "v"), CTI_LI("n", 1));
    json_t *o = one_line();
    const char *m = str_field(o, "msg");
    assert_true(strlen(m) > 1000);
    assert_memory_equal(m, big, strlen(m));
    json_decref(o);
}

/* The same with a request_id: the request_id (and fields) no longer fit. */
static void test_long_msg_with_request_id_single_line(void **state)
{
    char *big = repeat('m', 20000);
    LOG_ISOLATED("rid", big, CTI_LS("k", "v"));
    json_t *o = one_line();
    const char *m = str_field(o, "msg");
    assert_true(strlen(m) > 1000);
    assert_memory_equal(m, big, strlen(m));
    json_decref(o);
}

static void test_many_fields_single_line(void **state)
{
    char *val = repeat('v', 3000);
    LOG_ISOLATED(NULL, "many", CTI_LS("a", val), CTI_LS("b", val), CTI_LS("c", val),
            CTI_LS("d", val), CTI_LI("e", 5));
    json_t *o = one_line();
    assert_string_equal(str_field(o, "a"), val); /* first ones kept whole */
    assert_string_equal(str_field(o, "b"), val);
    json_decref(o);
}

/* Whatever the length of msg, every field after it is either written whole
 * (string possibly shortened) or dropped: the line stays valid JSON. Walks msg
 * lengths across the end of the line buffer. */
static void sweep_long_msgs(const char *rid)
{
    char *big = repeat('m', 8200);
    for (size_t len = 7900; len <= 8200; len += 1) {
        char saved = big[len];
        big[len] = '\0';
        LOG_ISOLATED(rid, big, CTI_LS("k", "value"), CTI_LI("n", 12345), CTI_LB("b", 1),
                     CTI_LD("d", 1.5));
        big[len] = saved;
        drain();
        json_error_t err;
        json_t *o = captured_len ? json_loadb(captured, captured_len - 1, 0, &err) : NULL;
        if (!o)
            fail_msg("msg of %zu bytes: invalid line ending in: %s", len,
                     captured_len > 40 ? captured + captured_len - 40 : captured);
        json_decref(o);
        reset_capture();
    }
}

static void test_fields_after_long_msg_keep_line_valid(void **state)
{
    sweep_long_msgs(NULL);
}

static void test_fields_after_long_msg_and_request_id_keep_line_valid(void **state)
{
    sweep_long_msgs("req-0123456789");
}

/* Cutting a long string must not split a multi-byte UTF-8 character: JSON text
 * is UTF-8, and a consumer (jansson, jq) rejects the whole line otherwise. */
static void test_truncation_keeps_utf8_valid(void **state)
{
    const char *e_acute = "\xc3\xa9";
    size_t n = 6000;
    char *s = track(malloc(2 * n + 2));
    for (int shift = 0; shift < 2; shift++) {
        char *p = s;
        if (shift)
            *p++ = 'x';
        for (size_t i = 0; i < n; i++, p += 2)
            memcpy(p, e_acute, 2);
        *p = '\0';
        LOG_ISOLATED(NULL, "utf8", CTI_LS("s", s));
        json_t *o = one_line();
        json_decref(o);
    }
}

/* Bytes that are not strict UTF-8 (overlong forms, surrogates, beyond
 * U+10FFFF, stray or cut sequences) become U+FFFD, one per byte, and valid
 * characters around them pass unchanged: the line stays valid UTF-8 JSON. */
static void test_invalid_utf8_is_replaced(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\xc0\x80" "b", "\"a\\ufffd\\ufffdb\""},           /* overlong NUL */
        {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},       /* overlong '/' */
        {"\xed\xa0\xbd", "\"\\ufffd\\ufffd\\ufffd\""},       /* surrogate U+D83D */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* U+110000 */
        {"\xff", "\"\\ufffd\""},
        {"\xe2\x82", "\"\\ufffd\\ufffd\""}, /* cut at the end */
        {"\xc3\xa9\xf0\x9f\x98\x80", "\"\xc3\xa9\xf0\x9f\x98\x80\""},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(cases); i++) {
        char buf[64];
        size_t n = cti_log_json_str(buf, 0, sizeof buf, cases[i].in);
        buf[n] = '\0';
        assert_string_equal(buf, cases[i].out);
        assert_true(cti_utf8_valid((const uint8_t *)buf, n));
    }
    /* and jansson reads the whole line (it refuses invalid UTF-8) */
    LOG_ISOLATED(NULL, "bad \xed\xa0\x80 msg", CTI_LS("s", "\xc0\xaf"));
    json_t *o = one_line();
    assert_string_equal(str_field(o, "msg"), "bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd msg");
    assert_string_equal(str_field(o, "s"), "\xef\xbf\xbd\xef\xbf\xbd");
    json_decref(o);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, capture_setup, capture_teardown)
    const struct CMUnitTest tests[] = {
        T(test_line_is_json_with_standard_keys),
        T(test_no_request_id_key_when_null),
        T(test_typed_fields),
        T(test_non_finite_double_keeps_line_valid),
        T(test_level_filtering),
        T(test_parse_level),
        T(test_escaping_round_trips),
        T(test_json_str_helper),
        T(test_json_str_helper_truncates_within_cap),
        T(test_json_str_helper_near_cap_never_unbalanced),
        T(test_long_field_truncated_single_line),
        T(test_long_escaped_field_truncated_single_line),
        T(test_long_msg_truncated_single_line),
        T(test_long_msg_with_request_id_single_line),
        T(test_many_fields_single_line),
        T(test_fields_after_long_msg_keep_line_valid),
        T(test_fields_after_long_msg_and_request_id_keep_line_valid),
        T(test_truncation_keeps_utf8_valid),
        T(test_invalid_utf8_is_replaced),
    };
#undef T
    return cmocka_run_group_tests_name("test_log", tests, NULL, NULL);
}
