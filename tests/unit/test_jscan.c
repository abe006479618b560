/* test_jscan.c — unit tests for src/core/jscan.c (the ingest path's JSON
 * reader): what it accepts and refuses (against jansson: the same, plus what
 * jscan.h says it deliberately accepts beyond it — \u0000, lone surrogates,
 * numbers beyond int64/double, nesting past 64 — each checked here to be
 * refused by jansson, so the list stays honest), what it reads, and what it
 * writes back (always JSON jansson reads). tests/fuzz/fuzz_jscan.c compares
 * the two on arbitrary input. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/jscan.h"
#include "dialpad/normalize.h"

static bool jscan_ok(const char *s, size_t n)
{
    cti_jdoc_t d;
    char err[128];
    int rc = cti_jdoc_parse(&d, s, n, err, sizeof err);
    if (rc == 0)
        cti_jdoc_free(&d);
    else
        assert_non_null(strstr(err, " at byte "));
    return rc == 0;
}

static bool jansson_ok(const char *s, size_t n)
{
    json_t *v = json_loadb(s, n, JSON_REJECT_DUPLICATES, NULL);
    json_decref(v);
    return v != NULL;
}

static void test_accepts_what_jansson_accepts(void **state)
{
    (void)state;
    static const char *const valid[] = {
        "{}", "[]", " {\"a\":1} ", "{\"a\":{\"b\":[1,2,{\"c\":null}]}}", "[true,false,null]",
        "[-0,0,1e5,1E+5,1.5e-3,-12.25,9223372036854775807,-9223372036854775808]",
        "[\"\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\b\\f\\r\"]", "[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x93\x9e\"]",
        "{\"\":1,\"a\":2}", "{\"a\":1,\"A\":2,\"b\":{\"a\":3}}", "\t\r\n[1]\n",
    };
    static const char *const invalid[] = {
        "", " ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[1 2]", "[01]", "[1.]",
        "[.5]", "[-]", "[1e]", "[+1]", "[\"\\x\"]", "[\"\\u00\"]", "[\"\\ud8\"]",
        "[\"\\ud800\\u00\"]", "[\"\\uzzzz\"]", "[\"a\nb\"]",
        "[\"\xc3\x28\"]", "[\"\xc0\xaf\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]",
        "[\"\xe2\x82\"]", "[1e+]", "[1.e5]", "[-01]", "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}", "{} x", "{}{}", "[tru]", "[nul]",
        "\"x\"", "1", "null", "[\"unterminated]",
    };
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        assert_true(jansson_ok(valid[i], strlen(valid[i])));
        if (!jscan_ok(valid[i], strlen(valid[i])))
            fail_msg("refused: %s", valid[i]);
    }
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        if (jscan_ok(invalid[i], strlen(invalid[i])))
            fail_msg("accepted: %s", invalid[i]);
        if (strcmp(invalid[i], "\"x\"") && strcmp(invalid[i], "1") && strcmp(invalid[i], "null"))
            assert_false(jansson_ok(invalid[i], strlen(invalid[i])));
    }
    assert_false(jscan_ok("[1]\0", 4)); /* a NUL byte is never JSON */
    assert_false(jscan_ok("[\"a\0\"]", 6));
}

/* String values are scanned eight bytes at a time: put each kind of byte that
 * ends a plain run at every offset of two words, and agree with jansson. */
static void test_string_words(void **state)
{
    (void)state;
    static const char *const bytes[] = {"\"", "\\n", "\\u00e9", "\x01", "\x1f", "\x7f",
                                        "\xc3\xa9", "\xff", "\x80", " ", "~", "\\"};
    for (size_t b = 0; b < sizeof bytes / sizeof *bytes; b++)
        for (int at = 0; at < 17; at++) {
            char s[64];
            int n = snprintf(s, sizeof s, "[\"%.*s%s%.*s\"]", at, "abcdefghijklmnopq", bytes[b],
                             17 - at, "ABCDEFGHIJKLMNOPQ");
            bool want = jansson_ok(s, (size_t)n);
            if (jscan_ok(s, (size_t)n) != want)
                fail_msg("%s: jansson %s", s, want ? "accepts" : "refuses");
            if (want) { /* and reads the same text back */
                cti_jdoc_t d;
                assert_int_equal(cti_jdoc_parse(&d, s, (size_t)n, NULL, 0), 0);
                json_t *j = json_loadb(s, (size_t)n, 0, NULL);
                char buf[64];
                cti_jdoc_str(&d, cti_jdoc_first(&d, 0, NULL), buf, sizeof buf);
                assert_string_equal(buf, json_string_value(json_array_get(j, 0)));
                json_decref(j);
                cti_jdoc_free(&d);
            }
        }
}

/* Duplicate keys are found among many (the key filter fills up), escaped or not. */
static void test_many_keys(void **state)
{
    (void)state;
    char s[8192];
    for (int dup = -1; dup < 200; dup += 37) {
        for (int esc = 0; esc < 2; esc++) {
            size_t n = (size_t)snprintf(s, sizeof s, "{");
            for (int k = 0; k < 200; k++)
                n += (size_t)snprintf(s + n, sizeof s - n, "\"key_%d\":%d,", k, k);
            /* the last key repeats key <dup> (none when dup is -1), its "k" maybe escaped */
            n += (size_t)snprintf(s + n, sizeof s - n, "\"%sey_%d\":0}", esc ? "\\u006b" : "k",
                                  dup < 0 ? 999 : dup);
            bool want = jansson_ok(s, n);
            assert_true(want == (dup < 0));
            assert_true(jscan_ok(s, n) == want);
        }
    }
}

/* The flags of every token of a document, or'd. */
static int all_flags(const cti_jdoc_t *d)
{
    int f = 0;
    for (int i = 0; i < d->n; i++)
        f |= d->tok[i].flags;
    return f;
}

/* What jscan deliberately accepts beyond jansson (jscan.h): each is refused by
 * jansson (so the list stays honest), accepted by jscan with the flag that
 * says why, and written back (cti_jw_jdoc) as JSON that jansson reads, without
 * any flag. */
static void test_accepts_more_than_jansson(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int flag;
        const char *rewritten;
    } more[] = {
        {"[\"a\\u0000b\"]", CTI_JF_ODD, "[\"a\xef\xbf\xbd" "b\"]"},
        {"[\"\\ud83d\"]", CTI_JF_ODD, "[\"\xef\xbf\xbd\"]"}, /* a cut-off emoji */
        {"[\"x\\ud83d\\u0041\"]", CTI_JF_ODD, "[\"x\xef\xbf\xbd" "A\"]"},
        {"[\"\\ude00\\ud83d\"]", CTI_JF_ODD, "[\"\xef\xbf\xbd\xef\xbf\xbd\"]"},
        {"[\"\\ud83d\\ud83d\\ude00\"]", CTI_JF_ODD, "[\"\xef\xbf\xbd\xf0\x9f\x98\x80\"]"},
        {"{\"k\\u0000\":1}", CTI_JF_ODD, "{\"k\xef\xbf\xbd\":1}"},
        {"[12345678901234567890]", CTI_JF_BIG, "[\"12345678901234567890\"]"},
        {"[9223372036854775808]", CTI_JF_BIG, "[\"9223372036854775808\"]"},
        {"[-9223372036854775809]", CTI_JF_BIG, "[\"-9223372036854775809\"]"},
        {"[1e400]", CTI_JF_BIG, "[\"1e400\"]"},
        {"[-1.5E+999]", CTI_JF_BIG, "[\"-1.5E+999\"]"},
        {"[0.00001e00000000000000000000400]", CTI_JF_BIG, "[\"0.00001e00000000000000000000400\"]"},
    };
    for (size_t i = 0; i < sizeof more / sizeof *more; i++) {
        const char *t = more[i].text;
        assert_false(jansson_ok(t, strlen(t)));
        cti_jdoc_t d;
        if (cti_jdoc_parse(&d, t, strlen(t), NULL, 0) != 0)
            fail_msg("refused: %s", t);
        assert_true(all_flags(&d) & more[i].flag);
        cti_jw_t w = {0};
        cti_jw_jdoc(&w, &d, 0);
        assert_string_equal(w.p, more[i].rewritten);
        json_t *v = json_loads(w.p, 0, NULL);
        assert_non_null(v);
        json_decref(v);
        cti_jw_free(&w);
        cti_jdoc_free(&d);
    }
    /* real numbers near the edge: what a double holds is no CTI_JF_BIG */
    static const char *const fine[] = {"[1e308]", "[1e-400]", "[0.0001e310]", "[-0e99999]"};
    for (size_t i = 0; i < sizeof fine / sizeof *fine; i++) {
        cti_jdoc_t d;
        assert_int_equal(cti_jdoc_parse(&d, fine[i], strlen(fine[i]), NULL, 0), 0);
        assert_false(all_flags(&d) & CTI_JF_BIG);
        assert_true(jansson_ok(fine[i], strlen(fine[i])));
        cti_jdoc_free(&d);
    }
}

/* Odd strings read as valid UTF-8 with U+FFFD, but as keys they are exactly
 * themselves: "a\u0000" and "a\ufffd" are two keys, "a\u0000" twice is one. */
static void test_odd_strings(void **state)
{
    (void)state;
    const char *text = "{\"s\":\"hi\\ud83d\", \"z\":\"a\\u0000b\", "
                       "\"a\\u0000\":1, \"a\\ufffd\":2, \"\\ud800\":3, \"\\udbff\":4}";
    cti_jdoc_t d;
    assert_int_equal(cti_jdoc_parse(&d, text, strlen(text), NULL, 0), 0);
    char buf[32];
    assert_int_equal(cti_jdoc_str(&d, cti_jdoc_get(&d, 0, "s"), buf, sizeof buf), 5);
    assert_string_equal(buf, "hi\xef\xbf\xbd");
    assert_int_equal(cti_jdoc_str(&d, cti_jdoc_get(&d, 0, "z"), buf, sizeof buf), 5);
    assert_string_equal(buf, "a\xef\xbf\xbd" "b");
    assert_true(cti_jdoc_str_eq(&d, cti_jdoc_get(&d, 0, "z"), "a\xef\xbf\xbd" "b"));
    assert_int_equal(cti_jdoc_size(&d, 0), 6);
    cti_jdoc_free(&d);
    static const char *const dups[] = {"{\"a\\u0000\":1,\"a\\u0000\":2}",
                                       "{\"\\ud83d\":1,\"\\uD83D\":2}",
                                       "{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"};
    for (size_t i = 0; i < sizeof dups / sizeof *dups; i++)
        if (jscan_ok(dups[i], strlen(dups[i])))
            fail_msg("accepted: %s", dups[i]);
}

/* Nesting: 64 levels are read; deeper containers are checked without
 * recursion (a million levels would overflow a recursive parser's stack),
 * kept as one CTI_JF_DEEP token that reads as empty and is written as null,
 * and still refused when they are not JSON. */
static void test_depth(void **state)
{
    (void)state;
    size_t big = 300000; /* a recursive parser would need ~30 MB of stack */
    char *deep = malloc(6 * big + 64);
    for (size_t n = CTI_JSON_MAX_DEPTH; n <= CTI_JSON_MAX_DEPTH + 1; n++) {
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        cti_jdoc_t d;
        assert_int_equal(cti_jdoc_parse(&d, deep, 2 * n, NULL, 0), 0);
        assert_int_equal((int)(n <= CTI_JSON_MAX_DEPTH ? n : CTI_JSON_MAX_DEPTH + 1), d.n);
        assert_int_equal(!!(all_flags(&d) & CTI_JF_DEEP), n > CTI_JSON_MAX_DEPTH);
        cti_jdoc_free(&d);
    }
    /* an event with extras 300,000 levels deep: its fields still read */
    size_t k = (size_t)sprintf(deep, "{\"state\":\"ringing\",\"x\":");
    for (size_t i = 0; i < big; i++) { /* objects and arrays in turn */
        if (i % 2) {
            deep[k++] = '[';
        } else {
            memcpy(deep + k, "{\"k\":", 5);
            k += 5;
        }
    }
    deep[k++] = '1';
    for (size_t i = big; i-- > 0;)
        deep[k++] = i % 2 ? ']' : '}';
    k += (size_t)sprintf(deep + k, ",\"call_id\":7}");
    cti_jdoc_t d;
    char err[128];
    if (cti_jdoc_parse(&d, deep, k, err, sizeof err) != 0)
        fail_msg("refused: %s", err);
    assert_true(cti_jdoc_str_eq(&d, cti_jdoc_get(&d, 0, "state"), "ringing"));
    int64_t id;
    assert_true(cti_jdoc_int(&d, cti_jdoc_get(&d, 0, "call_id"), &id) && id == 7);
    cti_jw_t w = {0};
    cti_jw_jdoc(&w, &d, 0);
    json_t *v = json_loads(w.p, 0, NULL); /* 64 levels, then null */
    assert_non_null(v);
    assert_true(strstr(w.p, "null") != NULL);
    json_decref(v);
    cti_jw_free(&w);
    cti_jdoc_free(&d);
    free(deep);
    /* broken deep input is still refused, whatever is wrong and where */
    static const char *const bad[] = {"1,]", "1 2]", "{1:2}]", "{\"a\" 1}]", "{\"a\":1,}]",
                                      "[1,]]", "\"\\x\"]", "01]", "tru]", "\"\xc3\x28\"]", "1",
                                      "1]]", "{\"a\":[}]"};
    char buf[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(buf, '[', 70);
        size_t n = 70 + (size_t)snprintf(buf + 70, sizeof buf - 70, "%s", bad[i]);
        /* close what is open: every bad text above opened at most one more */
        while (n < 70 + strlen(bad[i]) + 69)
            buf[n++] = ']';
        if (jscan_ok(buf, n))
            fail_msg("accepted: %.*s", (int)n, buf);
    }
    memset(buf, '[', 70);
    memset(buf + 70, ']', 70);
    assert_true(jscan_ok(buf, 140));
    assert_false(jscan_ok(buf, 139)); /* one bracket left open */
}

static void test_reading(void **state)
{
    (void)state;
    const char *text = "{ \"call_id\" : 6019124213350400123, \"state\":\"hangup\", "
                       "\"d\\u0061te\": 1.5e3, \"name\": \"Jos\\u00e9 \\ud83d\\ude00\", "
                       "\"list\": [ 1, \"two\", { } ], \"nested\": {\"id\": 7}, \"t\": true }";
    cti_jdoc_t d;
    assert_int_equal(cti_jdoc_parse(&d, text, strlen(text), NULL, 0), 0);
    int64_t v;
    double r;
    assert_true(cti_jdoc_int(&d, cti_jdoc_get(&d, 0, "call_id"), &v));
    assert_true(v == INT64_C(6019124213350400123));
    assert_true(cti_jdoc_str_eq(&d, cti_jdoc_get(&d, 0, "state"), "hangup"));
    int date = cti_jdoc_get(&d, 0, "date"); /* an escaped key is found by its value */
    assert_false(cti_jdoc_int(&d, date, &v));
    assert_true(cti_jdoc_real(&d, date, &r) && r == 1500.0);
    char buf[64];
    int name = cti_jdoc_get(&d, 0, "name");
    assert_int_equal(cti_jdoc_str(&d, name, buf, sizeof buf), 10);
    assert_string_equal(buf, "Jos\xc3\xa9 \xf0\x9f\x98\x80");
    assert_int_equal(cti_jdoc_str(&d, name, buf, 6), 10); /* cut before the é, not in it */
    assert_string_equal(buf, "Jos\xc3\xa9");
    cti_jdoc_str(&d, name, buf, 5);
    assert_string_equal(buf, "Jos");
    int list = cti_jdoc_get(&d, 0, "list");
    assert_int_equal(cti_jdoc_size(&d, list), 3);
    int e = cti_jdoc_first(&d, list, NULL);
    e = cti_jdoc_after(&d, list, e, NULL);
    assert_true(cti_jdoc_str_eq(&d, e, "two"));
    e = cti_jdoc_after(&d, list, e, NULL);
    assert_int_equal(cti_jdoc_type(&d, e), CTI_JT_OBJECT);
    assert_int_equal(cti_jdoc_first(&d, e, NULL), -1);
    assert_int_equal(cti_jdoc_after(&d, list, e, NULL), -1);
    assert_int_equal(cti_jdoc_get(&d, 0, "missing"), -1);
    assert_int_equal(cti_jdoc_get(&d, list, "x"), -1);
    assert_int_equal(cti_jdoc_type(&d, cti_jdoc_get(&d, 0, "t")), CTI_JT_TRUE);
    assert_int_equal(cti_jdoc_get(&d, -1, "x"), -1);

    cti_jw_t w = {0};
    cti_jw_jdoc(&w, &d, list);
    assert_string_equal(w.p, "[1,\"two\",{}]");
    cti_jw_free(&w);
    cti_jw_jdoc(&w, &d, 0); /* compact, and the same document again */
    json_t *a = json_loads(w.p, 0, NULL), *b = json_loads(text, 0, NULL);
    assert_non_null(a);
    assert_true(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    assert_null(strstr(w.p, ": "));
    assert_null(strstr(w.p, ", "));
    cti_jw_free(&w);
    cti_jdoc_free(&d);
}

static void test_normalized_ids(void **state)
{
    (void)state;
    const char *text = "{\"id\": 5188674325413888, \"office_id\":1, \"name\":\"x\", \"x_id\":\"s\", "
                       "\"_id\": 3, \"big\": 2, \"nested\": {\"id\": 2}, \"grid\": 1.0}";
    cti_jdoc_t d;
    assert_int_equal(cti_jdoc_parse(&d, text, strlen(text), NULL, 0), 0);
    cti_jw_t w = {0};
    cti_jw_normalized(&w, &d, 0);
    assert_string_equal(w.p, "{\"id\":\"5188674325413888\",\"office_id\":\"1\",\"name\":\"x\","
                             "\"x_id\":\"s\",\"_id\":3,\"big\":2,\"nested\":{\"id\":2},\"grid\":1.0}");
    cti_jw_free(&w);
    cti_jdoc_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_what_jansson_accepts),
        cmocka_unit_test(test_string_words),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_accepts_more_than_jansson),
        cmocka_unit_test(test_odd_strings),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_reading),
        cmocka_unit_test(test_normalized_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
