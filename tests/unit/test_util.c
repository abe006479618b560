/* test_util.c — unit tests for src/core/util.c: ISO time, integers, UUIDs, hex,
 * constant-time comparison. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/util.h"

/* 2026-01-05T16:00:00.123Z */
#define KNOWN_MS INT64_C(1767628800123)
#define KNOWN_S_MS INT64_C(1767628800000)

/* Formats into a heap buffer of exactly CTI_ISO_TIME_LEN bytes so ASan catches
 * any write past the documented size. Returns a copy the caller frees. */
static char *iso(int64_t ms)
{
    char *buf = malloc(CTI_ISO_TIME_LEN);
    assert_non_null(buf);
    cti_iso_time(ms, buf);
    assert_int_equal(strlen(buf), CTI_ISO_TIME_LEN - 1);
    return buf;
}

static void assert_iso(int64_t ms, const char *want)
{
    char *got = iso(ms);
    assert_string_equal(got, want);
    free(got);
}

static void assert_parses(const char *s, int64_t want)
{
    int64_t ms = -42;
    assert_int_equal(cti_parse_iso_time(s, &ms), 0);
    assert_true(ms == want);
}

static void assert_rejected(const char *s)
{
    int64_t ms = 0;
    if (cti_parse_iso_time(s, &ms) != CTI_EINVAL)
        fail_msg("cti_parse_iso_time accepted \"%s\"", s);
}

/* ---- cti_iso_time ------------------------------------------------------------ */

static void test_iso_time_epoch(void **state)
{
    assert_iso(0, "1970-01-01T00:00:00.000Z");
}

static void test_iso_time_known_value(void **state)
{
    assert_iso(KNOWN_MS, "2026-01-05T16:00:00.123Z");
    assert_iso(KNOWN_S_MS, "2026-01-05T16:00:00.000Z");
    assert_iso(KNOWN_S_MS + 999, "2026-01-05T16:00:00.999Z");
    assert_iso(KNOWN_S_MS + 1000, "2026-01-05T16:00:01.000Z");
    /* leap day, end of year */
    assert_iso(INT64_C(951782400000), "2000-02-29T00:00:00.000Z");
    assert_iso(INT64_C(1767225599999), "2025-12-31T23:59:59.999Z");
}

static void test_iso_time_negative(void **state)
{
    assert_iso(-1, "1969-12-31T23:59:59.999Z");
    assert_iso(-999, "1969-12-31T23:59:59.001Z");
    assert_iso(-1000, "1969-12-31T23:59:59.000Z");
    assert_iso(-1001, "1969-12-31T23:59:58.999Z");
    assert_iso(-INT64_C(86400000), "1969-12-31T00:00:00.000Z");
}

/* ---- cti_parse_iso_time ---------------------------------------------------------- */

static void test_parse_iso_zulu(void **state)
{
    assert_parses("2026-01-05T16:00:00Z", KNOWN_S_MS);
    assert_parses("1970-01-01T00:00:00Z", 0);
    assert_parses("2026-01-05T16:00:00.123Z", KNOWN_MS);
}

static void test_parse_iso_fraction(void **state)
{
    assert_parses("2026-01-05T16:00:00.5Z", KNOWN_S_MS + 500);
    assert_parses("2026-01-05T16:00:00.05Z", KNOWN_S_MS + 50);
    assert_parses("2026-01-05T16:00:00.123456Z", KNOWN_MS);
    assert_parses("2026-01-05T16:00:00.999999999Z", KNOWN_S_MS + 999);
    assert_rejected("2026-01-05T16:00:00.Z");
}

static void test_parse_iso_offsets(void **state)
{
    assert_parses("2026-01-05T18:00:00+02:00", KNOWN_S_MS);
    assert_parses("2026-01-05T10:30:00-05:30", KNOWN_S_MS);
    assert_parses("2026-01-05T16:00:00+00:00", KNOWN_S_MS);
    assert_parses("2026-01-05T18:00:00.123+02:00", KNOWN_MS);
    /* offset crossing midnight */
    assert_parses("2026-01-06T01:00:00+09:00", KNOWN_S_MS);
}

static void test_parse_iso_lowercase(void **state)
{
    assert_parses("2026-01-05t16:00:00z", KNOWN_S_MS);
    assert_parses("2026-01-05t16:00:00.123z", KNOWN_MS);
}

static void test_parse_iso_rejects(void **state)
{
    assert_rejected("");
    assert_rejected("2026");
    assert_rejected("2026-01-05");
    assert_rejected("2026-13-01T00:00:00Z");
    assert_rejected("2026-00-01T00:00:00Z");
    assert_rejected("2026-01-00T00:00:00Z");
    assert_rejected("2026-01-32T00:00:00Z");
    assert_rejected("2026-02-30T00:00:00Z");
    assert_rejected("2026-04-31T00:00:00Z");
    assert_rejected("2026-01-05T24:00:00Z");
    assert_rejected("2026-01-05T16:60:00Z");
    assert_rejected("2026-01-05T16:00:00");        /* missing zone */
    assert_rejected("2026-01-05T16:00:00.123");    /* missing zone */
    assert_rejected("2026-01-05T16:00:00Zjunk");   /* trailing junk */
    assert_rejected("2026-01-05T16:00:00Z ");      /* trailing space */
    assert_rejected("2026-01-05T16:00:00+02:00x"); /* trailing junk after offset */
    assert_rejected("2026-01-05T16:00:00+0200");   /* offset without colon */
    assert_rejected("2026-01-05T16:00:00+24:00");
    assert_rejected("2026-01-05T16:00:00+02:60");
    assert_rejected("2026-1-05T16:00:00Z");
    assert_rejected("2026-01-05X16:00:00Z");
    assert_rejected("2026-01-05T16:0:00Z");
    assert_rejected(" 2026-01-05T16:00:00Z");
}

/* February 29th exists only in leap years: 2026 is not one, so 2026-02-29 is
 * as invalid as 2026-02-30 (timegm would silently turn it into March 1st). */
static void test_parse_iso_rejects_feb29_in_common_year(void **state)
{
    assert_parses("2024-02-29T00:00:00Z", INT64_C(1709164800000));
    assert_rejected("2026-02-29T00:00:00Z");
    assert_rejected("2100-02-29T00:00:00Z");
}

static void test_iso_round_trip(void **state)
{
    const int64_t values[] = {0,          1,         999,       1000,     KNOWN_MS,
                              KNOWN_S_MS, -1,        -1001,     INT64_C(951782400000),
                              INT64_C(4102444799999) /* 2099-12-31T23:59:59.999Z */};
    for (size_t i = 0; i < CTI_ARRAY_LEN(values); i++) {
        char *s = iso(values[i]);
        int64_t back = 0;
        assert_int_equal(cti_parse_iso_time(s, &back), 0);
        if (back != values[i])
            fail_msg("%s parsed back as %lld, want %lld", s, (long long)back,
                     (long long)values[i]);
        free(s);
    }
}

/* ---- cti_parse_i64 -------------------------------------------------------------- */

static void assert_i64(const char *s, int64_t want)
{
    int64_t v = 12345;
    assert_int_equal(cti_parse_i64(s, &v), 0);
    assert_true(v == want);
}

static void assert_i64_rejected(const char *s)
{
    int64_t v = 0;
    if (cti_parse_i64(s, &v) != CTI_EINVAL)
        fail_msg("cti_parse_i64 accepted \"%s\"", s);
}

static void test_parse_i64_valid(void **state)
{
    assert_i64("0", 0);
    assert_i64("-0", 0);
    assert_i64("42", 42);
    assert_i64("-12", -12);
    assert_i64("007", 7);
    assert_i64("9223372036854775807", INT64_MAX);
    assert_i64("-9223372036854775808", INT64_MIN);
}

static void test_parse_i64_rejects(void **state)
{
    assert_i64_rejected("9223372036854775808");
    assert_i64_rejected("-9223372036854775809");
    assert_i64_rejected("99999999999999999999999");
    assert_i64_rejected("");
    assert_i64_rejected(" 1");
    assert_i64_rejected("\t1");
    assert_i64_rejected("1 ");
    assert_i64_rejected("+1");
    assert_i64_rejected("1x");
    assert_i64_rejected("0x10");
    assert_i64_rejected("-");
    assert_i64_rejected("--1");
    assert_i64_rejected("- 1");
    assert_i64_rejected("1.5");
    assert_i64_rejected("1e3");
    assert_i64_rejected(NULL);
}

/* ---- UUIDs ------------------------------------------------------------------------- */

static void test_uuid4_valid_v4(void **state)
{
    for (int i = 0; i < 200; i++) {
        char u[37];
        memset(u, 'X', sizeof u);
        cti_uuid4(u);
        assert_int_equal(strlen(u), 36);
        assert_true(cti_is_uuid(u));
        assert_int_equal(u[14], '4');
        assert_non_null(strchr("89ab", u[19]));
        for (int j = 0; j < 36; j++) /* lowercase */
            assert_false(u[j] >= 'A' && u[j] <= 'F');
    }
}

static void test_uuid4_differs(void **state)
{
    char a[37], b[37];
    cti_uuid4(a);
    cti_uuid4(b);
    assert_string_not_equal(a, b);
}

static void test_is_uuid(void **state)
{
    assert_true(cti_is_uuid("123e4567-e89b-42d3-a456-426614174000"));
    assert_true(cti_is_uuid("123E4567-E89B-42D3-A456-426614174ABC")); /* either case */
    assert_true(cti_is_uuid("00000000-0000-0000-0000-000000000000"));

    assert_false(cti_is_uuid(""));
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a456-42661417400"));   /* 35 chars */
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a456-4266141740000")); /* 37 chars */
    assert_false(cti_is_uuid("123e4567e89b-42d3-a456-426614174000-"));  /* dash moved */
    assert_false(cti_is_uuid("123e456-7e89b-42d3-a456-426614174000"));  /* dash moved */
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a4564-26614174000"));  /* dash moved */
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a456-42661417400g"));  /* not hex */
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a456_426614174000"));  /* not a dash */
    assert_false(cti_is_uuid("123e4567-e89b-42d3-a456-42661417400 "));
    assert_false(cti_is_uuid("{123e4567-e89b-42d3-a456-426614174000}"));
    assert_false(cti_is_uuid("123e4567e89b42d3a456426614174000"));
    assert_false(cti_is_uuid("------------------------------------"));
}

/* ---- hex, constant-time comparison --------------------------------------------------- */

static void test_hex(void **state)
{
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff, 0x10};
    char *out = malloc(2 * sizeof in + 1); /* exact size: ASan checks the bound */
    assert_non_null(out);
    cti_hex(in, sizeof in, out);
    assert_string_equal(out, "00017f80abff10");
    free(out);

    char empty[1] = {'X'};
    cti_hex(in, 0, empty);
    assert_string_equal(empty, "");
}

static void test_consttime_eq(void **state)
{
    assert_true(cti_consttime_eq("secret", 6, "secret", 6));
    assert_true(cti_consttime_eq("", 0, "", 0));
    assert_false(cti_consttime_eq("secret", 6, "secreT", 6));
    assert_false(cti_consttime_eq("secret", 6, "Secret", 6));
    assert_false(cti_consttime_eq("secret", 6, "secrets", 7));
    assert_false(cti_consttime_eq("secrets", 7, "secret", 6));
    assert_false(cti_consttime_eq("", 0, "a", 1));
    /* only the given lengths are compared */
    assert_true(cti_consttime_eq("abcX", 3, "abcY", 3));
    const unsigned char a[] = {1, 0, 2}, b[] = {1, 0, 3};
    assert_false(cti_consttime_eq(a, 3, b, 3)); /* bytes, not C strings */
}

/* ---- strict UTF-8 ---------------------------------------------------------- */

static bool utf8_ok(const char *s, size_t n)
{
    /* on the heap, exactly n bytes: ASan catches a read past the end */
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    bool ok = cti_utf8_valid(copy, n);
    free(copy);
    return ok;
}

/* Encodes cp the plain way (no checks), so out-of-range values can be built. */
static size_t enc(uint32_t cp, char *o)
{
    if (cp < 0x80)
        return o[0] = (char)cp, 1;
    if (cp < 0x800)
        return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3f)),
               o[2] = (char)(0x80 | (cp & 0x3f)), 3;
    return o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3f)),
           o[2] = (char)(0x80 | (cp >> 6 & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f)), 4;
}

static void test_utf8_every_boundary(void **state)
{
    /* the first and last code point of every length and around the surrogates */
    static const uint32_t valid[] = {0x0,    0x7f,   0x80,   0x7ff,  0x800,   0xfff,
                                     0x1000, 0xd7ff, 0xe000, 0xfffd, 0xffff,  0x10000,
                                     0x3ffff, 0x40000, 0xfffff, 0x100000, 0x10ffff};
    for (size_t i = 0; i < CTI_ARRAY_LEN(valid); i++) {
        char b[4];
        size_t n = enc(valid[i], b);
        assert_true(utf8_ok(b, n));
        assert_int_equal(cti_utf8_char_len((const unsigned char *)b, n), n);
        for (size_t cut = 1; cut < n; cut++) /* every truncation of it fails */
            assert_false(utf8_ok(b, cut));
    }
    /* every surrogate, and the first code points past Unicode */
    for (uint32_t cp = 0xd800; cp <= 0xdfff; cp++) {
        char b[4];
        assert_false(utf8_ok(b, enc(cp, b)));
    }
    for (uint32_t cp = 0x110000; cp < 0x110100; cp++) {
        char b[4];
        assert_false(utf8_ok(b, enc(cp, b)));
    }
    assert_true(utf8_ok("", 0));
}

static void test_utf8_overlong_and_stray(void **state)
{
    static const char *const bad[] = {
        "\xc0\x80", "\xc1\xbf",                 /* overlong 2-byte (NUL, U+7F) */
        "\xe0\x80\x80", "\xe0\x9f\xbf",         /* overlong 3-byte (< U+800) */
        "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", /* overlong 4-byte (< U+10000) */
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", /* beyond U+10FFFF */
        "\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80", "\xfe", "\xff",
        "\x80", "\xbf", "a\x80",                /* a continuation alone */
        "\xc3", "\xe2\x82", "\xf0\x9f\x98",     /* cut short */
        "\xc3\x28", "\xe2\x28\xa1", "\xe2\x82\x28", "\xf0\x9f\x28\x80", /* bad continuation */
        "\xed\xa0\x80\xed\xb0\x80",             /* a surrogate pair written as CESU-8 */
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++)
        assert_false(utf8_ok(bad[i], strlen(bad[i])));
    assert_true(utf8_ok("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 17));
    assert_true(utf8_ok("a\0b", 3)); /* NUL is a character (callers refuse it if they must) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iso_time_epoch),
        cmocka_unit_test(test_iso_time_known_value),
        cmocka_unit_test(test_iso_time_negative),
        cmocka_unit_test(test_parse_iso_zulu),
        cmocka_unit_test(test_parse_iso_fraction),
        cmocka_unit_test(test_parse_iso_offsets),
        cmocka_unit_test(test_parse_iso_lowercase),
        cmocka_unit_test(test_parse_iso_rejects),
        cmocka_unit_test(test_parse_iso_rejects_feb29_in_common_year),
        cmocka_unit_test(test_iso_round_trip),
        cmocka_unit_test(test_parse_i64_valid),
        cmocka_unit_test(test_parse_i64_rejects),
        cmocka_unit_test(test_uuid4_valid_v4),
        cmocka_unit_test(test_uuid4_differs),
        cmocka_unit_test(test_is_uuid),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_consttime_eq),
        cmocka_unit_test(test_utf8_every_boundary),
        cmocka_unit_test(test_utf8_overlong_and_stray),
    };
    return cmocka_run_group_tests_name("test_util", tests, NULL, NULL);
}
