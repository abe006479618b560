/* test_redact.c — unit tests for cti_http_redact_uri (src/http/server.c): the
 * values of credential-bearing query arguments never reach the access log. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "http/http.h"

static char out[1024];

static const char *redact(const char *uri)
{
    memset(out, '#', sizeof out);
    cti_http_redact_uri(uri, out, sizeof out);
    assert_non_null(memchr(out, '\0', sizeof out));
    return out;
}

static void assert_redacts(const char *uri, const char *want)
{
    const char *got = redact(uri);
    if (strcmp(got, want) != 0)
        fail_msg("redact(\"%s\") = \"%s\", want \"%s\"", uri, got, want);
}

static void test_api_key_redacted(void **state)
{
    const char *got = redact("/ws?api_key=SECRET&since=5");
    assert_null(strstr(got, "SECRET"));
    assert_non_null(strstr(got, "api_key=REDACTED"));
    assert_non_null(strstr(got, "since=5"));
    assert_string_equal(got, "/ws?api_key=REDACTED&since=5");
}

static void test_credential_names_redacted(void **state)
{
    assert_redacts("/ws?ticket=T1", "/ws?ticket=REDACTED");
    assert_redacts("/x?token=abc", "/x?token=REDACTED");
    assert_redacts("/x?secret=abc", "/x?secret=REDACTED");
    /* the OAuth state binds a browser to a connect flow: not for logs either */
    assert_redacts("/oauth/callback?code=abc&state=s1", "/oauth/callback?code=REDACTED&state=REDACTED");
    assert_redacts("/x?refresh_token=abc&code_verifier=v", "/x?refresh_token=REDACTED&code_verifier=REDACTED");
    assert_redacts("/x?access_token=abc", "/x?access_token=REDACTED");
    assert_redacts("/x?password=abc", "/x?password=REDACTED");
    assert_redacts("/x?apikey=abc", "/x?apikey=REDACTED");
    assert_redacts("/x?key=abc", "/x?key=REDACTED");
}

static void test_several_secrets_in_one_query(void **state)
{
    const char *got = redact("/ws?a=1&api_key=K1&ticket=T1&b=2&token=T2&secret=S1&code=C1&c=3");
    assert_string_equal(got, "/ws?a=1&api_key=REDACTED&ticket=REDACTED&b=2&token=REDACTED"
                             "&secret=REDACTED&code=REDACTED&c=3");
    assert_null(strstr(got, "K1"));
    assert_null(strstr(got, "T1"));
    assert_null(strstr(got, "T2"));
    assert_null(strstr(got, "S1"));
    assert_null(strstr(got, "C1"));
}

static void test_names_case_insensitive(void **state)
{
    const char *got = redact("/ws?API_KEY=SECRET&Token=SECRET2");
    assert_null(strstr(got, "SECRET"));
    assert_string_equal(got, "/ws?API_KEY=REDACTED&Token=REDACTED");
}

/* libmicrohttpd percent-decodes argument names as well as values, so
 * cti_http_query(req, "api_key") also answers "?api%5Fkey=..." or "?%61pi_key=...":
 * the log must not show those values either. */
static void test_percent_encoded_name_redacted(void **state)
{
    static const char *const uris[] = {"/ws?api%5Fkey=SECRET", "/ws?api%5fkey=SECRET",
                                       "/ws?%61pi_key=SECRET", "/ws?x=1&tick%65t=SECRET"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(uris); i++) {
        const char *got = redact(uris[i]);
        if (strstr(got, "SECRET"))
            fail_msg("redact(\"%s\") = \"%s\" shows the secret", uris[i], got);
    }
}

static void test_value_with_equals_sign_fully_hidden(void **state)
{
    /* base64 padding: the whole value goes, not just up to the next '=' */
    const char *got = redact("/ws?ticket=abc==&x=1");
    assert_null(strstr(got, "abc"));
    assert_string_equal(got, "/ws?ticket=REDACTED&x=1");
}

static void test_other_params_untouched(void **state)
{
    assert_redacts("/api/calls?since=5&limit=10&cursor=abc",
                   "/api/calls?since=5&limit=10&cursor=abc");
    /* names that merely contain a credential name are not credentials */
    assert_redacts("/x?keyboard=1&monkey=2&codec=opus&api_keys=3&my_token=4",
                   "/x?keyboard=1&monkey=2&codec=opus&api_keys=3&my_token=4");
    /* a credential name in a value or a path is left alone */
    assert_redacts("/token/secret?name=api_key", "/token/secret?name=api_key");
    /* no value: nothing to hide */
    assert_redacts("/x?flag&y", "/x?flag&y");
    assert_redacts("/x?a=&&b=2", "/x?a=&&b=2");
}

static void test_no_query_unchanged(void **state)
{
    assert_redacts("/health", "/health");
    assert_redacts("/", "/");
    assert_redacts("", "");
    assert_redacts("/internal/apps/123e4567-e89b-42d3-a456-426614174000/api-key",
                   "/internal/apps/123e4567-e89b-42d3-a456-426614174000/api-key");
    assert_redacts("/x?", "/x?");
}

/* Output into a heap buffer of exactly cap bytes (ASan traps any write past it),
 * for every cap: never overflows, always NUL-terminated, a prefix of the full
 * result, and never shows the secret. */
static void test_small_buffers(void **state)
{
    static const char *const uris[] = {
        "/ws?api_key=SECRET&since=5",
        "/ws?since=5&ticket=SECRET",
        "/a/long/path/without/query",
        "/x?code=SECRET&code=SECRET&code=SECRET&code=SECRET&code=SECRET&code=SECRET",
    };
    for (size_t u = 0; u < CTI_ARRAY_LEN(uris); u++) {
        char full[512];
        cti_http_redact_uri(uris[u], full, sizeof full);
        size_t full_len = strlen(full);
        assert_true(full_len < sizeof full - 1);
        for (size_t cap = 1; cap <= full_len + 2; cap++) {
            char *buf = malloc(cap);
            assert_non_null(buf);
            memset(buf, '#', cap);
            cti_http_redact_uri(uris[u], buf, cap);
            size_t len = strnlen(buf, cap);
            if (len == cap)
                fail_msg("cap %zu: not NUL-terminated for %s", cap, uris[u]);
            assert_memory_equal(buf, full, len);
            assert_true(len == full_len || len == cap - 1);
            assert_null(strstr(buf, "SECRET"));
            free(buf);
        }
    }
}

/* The server sizes the buffer as strlen(uri) + 64; many short secrets grow the
 * text, and the cut must still hide every secret. */
static void test_growth_beyond_server_cap(void **state)
{
    char uri[600] = "/ws?";
    for (int i = 0; i < 40; i++)
        strcat(uri, i ? "&key=S" : "key=S");
    size_t cap = strlen(uri) + 64;
    char *buf = malloc(cap);
    assert_non_null(buf);
    cti_http_redact_uri(uri, buf, cap);
    assert_true(strlen(buf) < cap);
    assert_null(strstr(buf, "=S"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_key_redacted),
        cmocka_unit_test(test_credential_names_redacted),
        cmocka_unit_test(test_several_secrets_in_one_query),
        cmocka_unit_test(test_names_case_insensitive),
        cmocka_unit_test(test_percent_encoded_name_redacted),
        cmocka_unit_test(test_value_with_equals_sign_fully_hidden),
        cmocka_unit_test(test_other_params_untouched),
        cmocka_unit_test(test_no_query_unchanged),
        cmocka_unit_test(test_small_buffers),
        cmocka_unit_test(test_growth_beyond_server_cap),
    };
    return cmocka_run_group_tests_name("test_redact", tests, NULL, NULL);
}
