/* test_dpclient.c — unit tests for src/dialpad/client.c.
 *
 * Pure part: the retry policy, Retry-After, Dialpad's error envelope and OAuth error
 * shape, token responses (odd inputs included), ids, list pages, form bodies.
 *
 * End-to-end part: the real client thread against the fake Dialpad
 * (tests/fakedialpad/fakedialpad.py, started here as a subprocess with
 * /usr/bin/python3 from the repository root, as make runs the tests): an OAuth
 * code exchange, GET /api/v2/users/me, a 401 envelope, 5xx with and without retry,
 * Retry-After on 429, cursor paging, timeouts, refused connections, stopping with
 * requests in flight, and that no token reaches the log. Nothing is skipped: without
 * python3 or the fake, the group fails and says why. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/client.h"

#define FAKE_SCRIPT   "tests/fakedialpad/fakedialpad.py"
#define PYTHON        "/usr/bin/python3"
#define CLIENT_ID     "cid-test"
#define CLIENT_SECRET "csecret-test-value"
#define REDIRECT      "http://localhost:4000/auth/dialpad/callback"

/* ==== pure: retry policy ===================================================================== */

static void test_retry_policy(void **state)
{
    cti_dp_options_t o;
    cti_dp_options_default(&o, "https://dialpad.com");
    assert_int_equal(o.connect_timeout_ms, 5000);
    assert_int_equal(o.total_timeout_ms, 15000);
    /* safe request, 503: backoff doubles, jitter spreads the upper half */
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 503, true, 1, 3, -1, 0.0), 250);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 503, true, 1, 3, -1, 0.5), 375);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 500, true, 2, 3, -1, 0.0), 500);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 503, true, 3, 3, -1, 0.0), -1);
    int64_t capped = cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 502, true, 12, 20, -1, 0.99);
    assert_true(capped >= 4000 && capped <= 8000);
    /* 4xx other than 429 never */
    int no[] = {400, 401, 403, 404, 409, 422, 501};
    for (size_t i = 0; i < CTI_ARRAY_LEN(no); i++)
        assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, no[i], true, 1, 3, -1, 0), -1);
    /* not safe to repeat: never after an answer or a lost attempt */
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 503, false, 1, 3, -1, 0), -1);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 429, false, 1, 3, 1, 0), -1);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_LOST, 0, false, 1, 3, -1, 0), -1);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_LOST, 0, true, 1, 3, -1, 0), 250);
    /* nothing was sent: repeating is harmless even for a POST */
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_NOT_SENT, 0, false, 1, 3, -1, 0), 250);
    /* Retry-After: waited for when it is longer than the backoff, up to the limit */
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 429, true, 1, 3, 2, 0), 2000);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 503, true, 1, 3, 0, 0), 250);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 429, true, 1, 3, 30, 0), 30000);
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_ANSWERED, 429, true, 1, 3, 31, 0), -1);
    /* one attempt allowed: none */
    assert_int_equal(cti_dp_retry_delay(&o, CTI_DP_NOT_SENT, 0, true, 1, 1, -1, 0), -1);
}

static void test_method_idempotent(void **state)
{
    assert_true(cti_dp_method_idempotent("GET"));
    assert_true(cti_dp_method_idempotent("DELETE"));
    assert_true(cti_dp_method_idempotent("PUT"));
    assert_false(cti_dp_method_idempotent("POST"));
    assert_false(cti_dp_method_idempotent("PATCH"));
    assert_false(cti_dp_method_idempotent("get"));
    assert_false(cti_dp_method_idempotent(NULL));
}

static void test_retry_after_parse(void **state)
{
    assert_int_equal(cti_dp_parse_retry_after("5", 0), 5);
    assert_int_equal(cti_dp_parse_retry_after(" 7 ", 0), 7);
    assert_int_equal(cti_dp_parse_retry_after("0", 0), 0);
    assert_int_equal(cti_dp_parse_retry_after("", 0), -1);
    assert_int_equal(cti_dp_parse_retry_after(NULL, 0), -1);
    assert_int_equal(cti_dp_parse_retry_after("soon", 0), -1);
    assert_int_equal(cti_dp_parse_retry_after("-1", 0), -1);
    assert_int_equal(cti_dp_parse_retry_after("1.5", 0), -1);
    assert_int_equal(cti_dp_parse_retry_after("99999999999999", 0), 86400 * 365);
    /* 784111777 = Sun, 06 Nov 1994 08:49:37 GMT */
    assert_int_equal(cti_dp_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 30), 30);
    assert_int_equal(cti_dp_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 5), 0);
    assert_int_equal(cti_dp_parse_retry_after("Sun, 06 Nov 1994 08:49:37 PST", 0), -1);
}

/* ==== pure: errors ============================================================================ */

static void error_text(int status, const char *body, const char *ctype, char *out, size_t cap)
{
    cti_dp_error_text(status, body, body ? strlen(body) : 0, ctype, out, cap);
}

static void test_error_envelope(void **state)
{
    cti_dp_error_t e;
    const char *env = "{\"error\": {\"code\": 400, \"errors\": [{\"domain\": \"global\", "
                      "\"message\": \"bad_request\", \"reason\": \"badRequest\"}], "
                      "\"message\": \"bad_request\"}}";
    assert_int_equal(cti_dp_parse_error(env, strlen(env), &e), 0);
    assert_string_equal(e.code, "badRequest");
    assert_string_equal(e.message, "bad_request");
    char t[400];
    error_text(400, env, "application/json", t, sizeof t);
    assert_string_equal(t, "Dialpad answered 400 (badRequest): bad_request");

    const char *human = "{\"error\": {\"code\": 400, \"errors\": [{\"message\": \"User is "
                        "currently on a call\", \"reason\": \"badRequest\"}]}}";
    assert_int_equal(cti_dp_parse_error(human, strlen(human), &e), 0);
    assert_string_equal(e.message, "User is currently on a call"); /* from errors[0] */
    error_text(400, human, NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 400 (badRequest): User is currently on a call");

    const char *no_reason = "{\"error\": {\"code\": 404, \"message\": \"Call not found\"}}";
    error_text(404, no_reason, NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 404: Call not found");
}

static void test_error_oauth_and_others(void **state)
{
    cti_dp_error_t e;
    char t[400];
    const char *oauth =
        "{\"error\": \"invalid_grant\", \"error_description\": \"code already used\"}";
    assert_int_equal(cti_dp_parse_error(oauth, strlen(oauth), &e), 0);
    assert_string_equal(e.code, "invalid_grant");
    assert_string_equal(e.message, "code already used");
    error_text(400, oauth, NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 400 (invalid_grant): code already used");
    error_text(401, "{\"error\": \"invalid_client\"}", NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 401: invalid_client");
    error_text(500, "{\"message\": \"oops\"}", NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 500: oops");
    /* not Dialpad's format */
    error_text(502, "<html><body>Bad gateway</body></html>", "text/html; charset=utf-8", t,
               sizeof t);
    assert_string_equal(t, "Dialpad answered 502 (Bad Gateway) with a text/html body Dialpad's "
                           "error format does not describe");
    error_text(503, "", NULL, t, sizeof t);
    assert_string_equal(t, "Dialpad answered 503 (Service Unavailable) with an empty body");
    const char *odd[] = {"[]",
                         "\"x\"",
                         "null",
                         "{\"error\": 5}",
                         "{\"error\": {}}",
                         "{\"error\": {\"message\": 7}}",
                         "{",
                         "{\"errors\": []}"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(odd); i++) {
        if (cti_dp_parse_error(odd[i], strlen(odd[i]), &e) != CTI_EINVAL)
            fail_msg("%s read as an error", odd[i]);
        assert_string_equal(e.code, "");
        assert_string_equal(e.message, "");
    }
    assert_int_equal(cti_dp_parse_error(NULL, 0, &e), CTI_EINVAL);
}

static void test_error_text_sanitised(void **state)
{
    cti_dp_error_t e;
    /* control characters become blanks; a long message is cut at a character boundary */
    const char *ctl =
        "{\"error\": \"x\", \"error_description\": \"line1\\nline2\\u0000\\u001b[31m\"}";
    assert_int_equal(cti_dp_parse_error(ctl, strlen(ctl), &e), 0);
    assert_null(strchr(e.message, '\n'));
    assert_null(strchr(e.message, '\x1b'));
    assert_string_equal(e.message, "line1 line2  [31m");
    char body[2048] = "{\"error\": {\"message\": \"";
    for (int i = 0; i < 300; i++)
        strcat(body, "\xc3\xa9"); /* é: two bytes each, 600 bytes */
    strcat(body, "\"}}");
    assert_int_equal(cti_dp_parse_error(body, strlen(body), &e), 0);
    size_t n = strlen(e.message);
    assert_true(n <= sizeof e.message - 1 && n % 2 == 0); /* never half a character */
}

/* ==== pure: tokens ============================================================================ */

static int token(const char *body, cti_dp_token_t *t, char *why)
{
    return cti_dp_parse_token(body, strlen(body), t, why, 200);
}

static void test_token_response_forms(void **state)
{
    cti_dp_token_t t;
    char why[200];
    assert_int_equal(token("{\"access_token\": \"dpat_abc\", \"token_type\": \"bearer\", "
                           "\"expires_in\": 3600, \"refresh_token\": \"dprt_xyz\"}",
                           &t, why),
                     0);
    assert_string_equal(t.access_token, "dpat_abc");
    assert_string_equal(t.refresh_token, "dprt_xyz");
    assert_int_equal(t.expires_in_s, 3600);
    cti_dp_token_free(&t);
    assert_null(t.access_token);
    static const struct {
        const char *body;
        int64_t expires;
        bool refresh;
    } ok[] = {
        {"{\"access_token\": \"a\", \"expires_in\": \"3600\"}", 3600, false},
        {"{\"access_token\": \"a\", \"expires_in\": \"003600\"}", 3600, false},
        {"{\"access_token\": \"a\"}", -1, false},
        {"{\"access_token\": \"a\", \"expires_in\": null, \"refresh_token\": null}", -1, false},
        {"{\"access_token\": \"a\", \"expires_in\": \"\", \"refresh_token\": \"\"}", -1, false},
        {"{\"access_token\": \"a\", \"expires_in\": 3600.0, \"refresh_token\": \"r\"}", 3600, true},
        {"{\"access_token\": \"a\", \"expires_in\": 0}", 0, false},
        {"{\"access_token\": \"a\", \"token_type\": \"Bearer\"}", -1, false},
        {"{\"access_token\": \"a\", \"token_type\": \"BEARER\"}", -1, false},
        {"{\"access_token\": \"a\", \"token_type\": null, \"id_token\": \"x.y.z\", \"scope\": 5}",
         -1, false},
        {"{\"access_token\": \"a+/b=_~.-\", \"expires_in\": 9007199254740993}", -2, false},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(ok); i++) {
        if (token(ok[i].body, &t, why) != 0) {
            if (ok[i].expires == -2) { /* beyond a century: refused, with the reason */
                assert_non_null(strstr(why, "expires_in"));
                continue;
            }
            fail_msg("%s refused: %s", ok[i].body, why);
        }
        assert_int_not_equal(ok[i].expires, -2);
        assert_int_equal(t.expires_in_s, ok[i].expires);
        assert_int_equal(t.refresh_token != NULL, ok[i].refresh);
        cti_dp_token_free(&t);
    }
}

static void test_token_response_refused(void **state)
{
    static const struct {
        const char *body, *says;
    } bad[] = {
        {"", "not a JSON object"},
        {"[]", "not a JSON object"},
        {"\"dpat_abc\"", "not a JSON object"},
        {"{\"access_token\": \"a\"", "not a JSON object"},
        {"{}", "access_token is missing"},
        {"{\"access_token\": null}", "access_token is missing"},
        {"{\"access_token\": \"\"}", "access_token is empty"},
        {"{\"access_token\": 12345}", "access_token is not a string"},
        {"{\"access_token\": \"has space\"}", "not printable"},
        {"{\"access_token\": \"line\\r\\nX-Injected: 1\"}", "not printable"},
        {"{\"access_token\": \"caf\\u00e9\"}", "not printable"},
        {"{\"access_token\": \"a\", \"token_type\": \"mac\"}", "\"mac\", not bearer"},
        {"{\"access_token\": \"a\", \"token_type\": 1}", "not bearer"},
        {"{\"access_token\": \"a\", \"expires_in\": -1}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": \"-1\"}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": \"3600.5\"}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": \" 3600\"}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": 3600.5}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": 1e30}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": true}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": \"99999999999999999999\"}", "expires_in"},
        {"{\"access_token\": \"a\", \"expires_in\": 99999999999999999999}", "not a JSON object"},
        {"{\"access_token\": \"a\", \"refresh_token\": 5}", "refresh_token is not a string"},
        {"{\"access_token\": \"a\", \"access_token\": \"b\"}", "not a JSON object"},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        cti_dp_token_t t;
        char why[200] = "";
        if (token(bad[i].body, &t, why) != CTI_EINVAL || !strstr(why, bad[i].says))
            fail_msg("%s: expected a refusal mentioning \"%s\", got \"%s\"", bad[i].body,
                     bad[i].says, why);
        assert_null(t.access_token);
        assert_null(t.refresh_token);
    }
    /* too long; and a refusal never quotes the token */
    char *big = malloc(CTI_DP_TOKEN_MAX + 64);
    strcpy(big, "{\"access_token\": \"");
    size_t at = strlen(big);
    memset(big + at, 'a', CTI_DP_TOKEN_MAX + 1);
    strcpy(big + at + CTI_DP_TOKEN_MAX + 1, "\"}");
    cti_dp_token_t t;
    char why[200];
    assert_int_equal(token(big, &t, why), CTI_EINVAL);
    assert_non_null(strstr(why, "longer than 4096"));
    free(big);
    assert_int_equal(
        token("{\"access_token\": \"dpat_SECRET\", \"refresh_token\": \"bad token\"}", &t, why),
        CTI_EINVAL);
    assert_null(strstr(why, "SECRET"));
    assert_null(strstr(why, "bad token"));
}

/* ==== pure: ids, pages, forms
 * ======================================================================= */

static void test_ids(void **state)
{
    static const struct {
        const char *json;
        bool ok;
        int64_t want;
    } cases[] = {
        {"{\"id\": \"1000\"}", true, 1000},
        {"{\"id\": 1000}", true, 1000},
        {"{\"id\": \"4508591728425653\"}", true, 4508591728425653LL},
        {"{\"id\": \"9007199254740993\"}", true, 9007199254740993LL}, /* 2^53 + 1: no double */
        {"{\"id\": 9007199254740993}", true, 9007199254740993LL},
        {"{\"id\": \"9223372036854775807\"}", true, INT64_MAX},
        {"{\"id\": \"9223372036854775808\"}", false, 0},
        {"{\"id\": \"0\"}", false, 0},
        {"{\"id\": 0}", false, 0},
        {"{\"id\": \"-5\"}", false, 0},
        {"{\"id\": -5}", false, 0},
        {"{\"id\": \"007\"}", false, 0},
        {"{\"id\": \"1e3\"}", false, 0},
        {"{\"id\": \" 1\"}", false, 0},
        {"{\"id\": \"1 \"}", false, 0},
        {"{\"id\": \"+1\"}", false, 0},
        {"{\"id\": \"\"}", false, 0},
        {"{\"id\": 1.5}", false, 0},
        {"{\"id\": true}", false, 0},
        {"{\"id\": null}", false, 0},
        {"{\"id\": [1]}", false, 0},
        {"{}", false, 0},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(cases); i++) {
        json_t *o = json_loads(cases[i].json, 0, NULL);
        assert_non_null(o);
        int64_t v = 0;
        bool ok = cti_dp_get_id(o, "id", &v);
        if (ok != cases[i].ok || (ok && v != cases[i].want))
            fail_msg("%s: ok %d value %lld", cases[i].json, ok, (long long)v);
        json_decref(o);
    }
    int64_t v;
    json_t *arr = json_loads("[1]", 0, NULL);
    assert_false(cti_dp_get_id(arr, "id", &v));
    assert_false(cti_dp_get_id(NULL, "id", &v));
    json_decref(arr);
}

static void test_page_parse(void **state)
{
    char cur[16];
    json_t *items;
    json_t *p = json_loads("{\"items\": [1, 2], \"cursor\": \"abc\"}", 0, NULL);
    assert_int_equal(cti_dp_page_parse(p, &items, cur, sizeof cur), 0);
    assert_int_equal(json_array_size(items), 2);
    assert_string_equal(cur, "abc");
    json_decref(p);
    const char *last[] = {"{\"items\": []}", "{\"items\": [1], \"cursor\": null}",
                          "{\"items\": [1], \"cursor\": \"\"}", "{}"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(last); i++) {
        p = json_loads(last[i], 0, NULL);
        strcpy(cur, "stale");
        assert_int_equal(cti_dp_page_parse(p, &items, cur, sizeof cur), 0);
        assert_string_equal(cur, "");
        json_decref(p);
    }
    const char *bad[] = {"[]", "{\"items\": {}}", "{\"items\": \"x\"}", "{\"cursor\": 5}",
                         "{\"items\": [], \"cursor\": \"0123456789abcdef\"}"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        p = json_loads(bad[i], 0, NULL);
        if (cti_dp_page_parse(p, &items, cur, sizeof cur) != CTI_EINVAL)
            fail_msg("%s accepted as a page", bad[i]);
        json_decref(p);
    }
}

static void test_page_path_and_form(void **state)
{
    char out[64];
    assert_int_equal(cti_dp_page_path("/api/v2/call", "a b/+=", out, sizeof out), 0);
    assert_string_equal(out, "/api/v2/call?cursor=a%20b%2F%2B%3D");
    assert_int_equal(cti_dp_page_path("/api/v2/call?started_after=1", "Zz-_.~", out, sizeof out),
                     0);
    assert_string_equal(out, "/api/v2/call?started_after=1&cursor=Zz-_.~");
    assert_int_equal(
        cti_dp_page_path("/api/v2/call", "0123456789012345678901234567890123456789", out, 48),
        CTI_ELIMIT);
    assert_int_equal(cti_dp_page_path("/api/v2/call", "%%%%%%%%%%%%%%%%", out, 48), CTI_ELIMIT);
    char *form = NULL;
    cti_dp_form_add(&form, "grant_type", "authorization_code");
    cti_dp_form_add(&form, "redirect_uri", "https://x.example/cb?a=1&b=2");
    cti_dp_form_add(&form, "code", "");
    assert_string_equal(form, "grant_type=authorization_code&redirect_uri=https%3A%2F%2F"
                              "x.example%2Fcb%3Fa%3D1%26b%3D2&code=");
    free(form);
}

static void test_submit_refuses_bad_requests(void **state)
{
    cti_dp_options_t o;
    cti_dp_options_default(&o, "http://127.0.0.1:1");
    cti_dp_client_t *c;
    assert_int_equal(cti_dp_client_start(&o, &c), 0);
    static const cti_dp_request_t bad[] = {
        {.method = "TRACE", .path = "/x"},
        {.method = "get", .path = "/x"},
        {.method = NULL, .path = "/x"},
        {.method = "GET", .path = "x"},
        {.method = "GET", .path = "/x y"},
        {.method = "GET", .path = "/x\r\nHost: evil"},
        {.method = "GET", .path = "/x", .bearer = "tok\r\nX-Evil: 1"},
        {.method = "GET", .path = "/x", .bearer = "tok en"},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        cti_dp_response_t *r = cti_dp_call(c, &bad[i]);
        assert_int_equal(r->err, CTI_EINVAL);
        assert_int_equal(r->attempts, 0);
        cti_dp_response_free(r);
    }
    cti_dp_client_stop(c);
    cti_dp_options_t bado = o;
    bado.base_url = "ftp://x";
    assert_int_equal(cti_dp_client_start(&bado, &c), CTI_EINVAL);
}

/* ==== end to end, against the fake Dialpad
 * ========================================================= */

static pid_t fake_pid = -1;
static char fake_base[128];
static cti_dp_client_t *g; /* talks to the fake: quick backoff so retries fit in a test */
static char log_path[64];
static int log_fd = -1;

static int start_fake(void)
{
    if (access(PYTHON, X_OK) != 0) {
        fprintf(stderr,
                "test_dpclient: %s is required for the end-to-end tests against the fake "
                "Dialpad (apt-get install python3); not skipping them\n",
                PYTHON);
        return -1;
    }
    if (access(FAKE_SCRIPT, R_OK) != 0) {
        fprintf(stderr,
                "test_dpclient: %s not found: run from the repository root "
                "(make does)\n",
                FAKE_SCRIPT);
        return -1;
    }
    int p[2];
    if (pipe(p) != 0)
        return -1;
    fake_pid = fork();
    if (fake_pid < 0)
        return -1;
    if (fake_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlives this test, even if it crashes */
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl(PYTHON, PYTHON, FAKE_SCRIPT, "--port", "0", "--client-id", CLIENT_ID,
              "--client-secret", CLIENT_SECRET, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[512] = "";
    size_t n = 0;
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    int64_t deadline = cti_mono_us() + 20 * 1000000LL;
    while (!memchr(line, '\n', n) && n + 1 < sizeof line && cti_mono_us() < deadline) {
        if (poll(&pf, 1, 200) <= 0)
            continue;
        ssize_t r = read(p[0], line + n, sizeof line - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        line[n] = '\0';
    }
    close(p[0]);
    json_t *j = json_loads(line, 0, NULL);
    const char *base = json_string_value(json_object_get(j, "base_url"));
    if (!base) {
        fprintf(stderr, "test_dpclient: the fake Dialpad did not start (printed \"%s\")\n", line);
        json_decref(j);
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        fake_pid = -1;
        return -1;
    }
    snprintf(fake_base, sizeof fake_base, "%s", base);
    json_decref(j);
    return 0;
}

static int e2e_setup(void **state)
{
    /* every log line of the client goes to a file the last test reads */
    strcpy(log_path, "/tmp/cti-test-dplog-XXXXXX");
    log_fd = mkstemp(log_path);
    if (log_fd < 0 || start_fake() != 0)
        return -1;
    cti_log_set_fd(log_fd);
    cti_dp_options_t o;
    cti_dp_options_default(&o, fake_base);
    o.backoff_base_ms = 200;
    return cti_dp_client_start(&o, &g);
}

static int e2e_teardown(void **state)
{
    cti_dp_client_stop(g);
    cti_log_set_fd(2);
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
    }
    if (log_fd >= 0)
        close(log_fd);
    unlink(log_path);
    return 0;
}

/* A request to the fake (control API or Dialpad's), JSON body or none. */
static cti_dp_response_t *req(const char *method, const char *path, const char *json,
                              const char *bearer)
{
    cti_dp_request_t r = {.method = method,
                          .path = path,
                          .bearer = bearer,
                          .body_kind = CTI_DP_BODY_JSON,
                          .body = json,
                          .body_len = json ? strlen(json) : 0};
    return cti_dp_call(g, &r);
}

static void fake_ok(const char *method, const char *path, const char *json)
{
    cti_dp_response_t *r = req(method, path, json, NULL);
    if (!cti_dp_ok(r))
        fail_msg("fake control %s %s: %d %s", method, path, r->status, r->message);
    cti_dp_response_free(r);
}

/* Before each end-to-end test: the fake's switches, clock and records back to their
 * defaults, so one failing test cannot leave a switch on for the next. */
static int reset_fake(void **state)
{
    cti_dp_response_t *r = req("POST", "/_fake/reset", NULL, NULL);
    int rc = cti_dp_ok(r) ? 0 : -1;
    cti_dp_response_free(r);
    return rc;
}

/* How many requests the fake recorded in one of its state lists. */
static size_t fake_count(const char *list)
{
    cti_dp_response_t *r = req("GET", "/_fake/state", NULL, NULL);
    assert_true(cti_dp_ok(r));
    json_t *s = json_loadb(r->body, r->body_len, 0, NULL);
    size_t n = json_array_size(json_object_get(s, list));
    json_decref(s);
    cti_dp_response_free(r);
    return n;
}

/* Walks the browser's half of OAuth: GET /oauth2/authorize, the code from Location. */
static void authorize_code(const char *scope, char *code, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path,
             "/oauth2/authorize?response_type=code&client_id=" CLIENT_ID
             "&redirect_uri=http%%3A%%2F%%2Flocalhost%%3A4000%%2Fauth%%2Fdialpad%%2Fcallback"
             "&state=st1&scope=%s",
             scope);
    cti_dp_response_t *r = req("GET", path, NULL, NULL);
    assert_int_equal(r->status, 302);
    const char *c = strstr(r->location, "code=");
    if (!c)
        fail_msg("no code in the redirect: %s", r->location);
    snprintf(code, cap, "%.*s", (int)strcspn(c + 5, "&"), c + 5);
    assert_non_null(strstr(r->location, "state=st1"));
    cti_dp_response_free(r);
}

static cti_dp_request_t token_request(char **form, const char *grant, const char *name,
                                      const char *value)
{
    *form = NULL;
    cti_dp_form_add(form, "grant_type", grant);
    cti_dp_form_add(form, name, value);
    cti_dp_form_add(form, "client_id", CLIENT_ID);
    cti_dp_form_add(form, "client_secret", CLIENT_SECRET);
    if (!strcmp(grant, "authorization_code"))
        cti_dp_form_add(form, "redirect_uri", REDIRECT);
    return (cti_dp_request_t){.method = "POST",
                              .path = "/oauth2/token",
                              .body_kind = CTI_DP_BODY_FORM,
                              .body = *form,
                              .body_len = strlen(*form),
                              .operation = "oauth.token"};
}

/* A fresh token pair from the fake, through the code exchange. */
static void get_tokens(const char *scope, cti_dp_token_t *t)
{
    char code[128], *form, why[200];
    authorize_code(scope, code, sizeof code);
    cti_dp_request_t rq = token_request(&form, "authorization_code", "code", code);
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    free(form);
    if (r->status != 200)
        fail_msg("token exchange: %d %s", r->status, r->message);
    if (cti_dp_parse_token(r->body, r->body_len, t, why, sizeof why) != 0)
        fail_msg("token response: %s", why);
    cti_dp_response_free(r);
}

static void test_e2e_code_exchange(void **state)
{
    cti_dp_token_t t;
    char code[128], *form, why[200];
    authorize_code("calls%3Alist", code, sizeof code);
    cti_dp_request_t rq = token_request(&form, "authorization_code", "code", code);
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->attempts, 1);
    assert_int_equal(cti_dp_parse_token(r->body, r->body_len, &t, why, sizeof why), 0);
    assert_int_equal(strncmp(t.access_token, "dpat_", 5), 0);
    assert_non_null(t.refresh_token);
    assert_int_equal(t.expires_in_s, 3600);
    cti_dp_response_free(r);
    /* a code works once: the second exchange gets OAuth's error, read for a person */
    r = cti_dp_call(g, &rq);
    free(form);
    assert_int_equal(r->status, 400);
    assert_string_equal(r->error.code, "invalid_grant");
    assert_string_equal(r->message, "Dialpad answered 400 (invalid_grant): code already used");
    cti_dp_response_free(r);
    /* the refresh grant gives a new pair (expires_in as a string, as Dialpad may send it) */
    fake_ok("POST", "/_fake/switches", "{\"expires_in\": \"string\"}");
    rq = token_request(&form, "refresh_token", "refresh_token", t.refresh_token);
    r = cti_dp_call(g, &rq);
    free(form);
    cti_dp_token_t t2;
    assert_int_equal(r->status, 200);
    assert_int_equal(cti_dp_parse_token(r->body, r->body_len, &t2, why, sizeof why), 0);
    assert_int_equal(t2.expires_in_s, 3600);
    assert_string_not_equal(t2.access_token, t.access_token);
    cti_dp_response_free(r);
    fake_ok("POST", "/_fake/switches", "{\"expires_in\": \"int\"}");
    cti_dp_token_free(&t);
    cti_dp_token_free(&t2);
}

static void test_e2e_users_me(void **state)
{
    cti_dp_token_t t;
    get_tokens("", &t);
    cti_dp_request_t rq = {.method = "GET",
                           .path = "/api/v2/users/me",
                           .bearer = t.access_token,
                           .operation = "users.me"};
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->attempts, 1);
    assert_string_equal(r->message, "");
    assert_non_null(strstr(r->content_type, "application/json"));
    json_t *u = json_loadb(r->body, r->body_len, 0, NULL);
    int64_t id, company, office;
    assert_true(cti_dp_get_id(u, "id", &id));
    assert_true(cti_dp_get_id(u, "company_id", &company));
    assert_true(cti_dp_get_id(u, "office_id", &office));
    /* Dialpad sends int64 as strings: the number read is exactly the text */
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)company);
    assert_string_equal(text, json_string_value(json_object_get(u, "company_id")));
    json_decref(u);
    cti_dp_response_free(r);
    cti_dp_token_free(&t);
}

static void test_e2e_401_envelope(void **state)
{
    cti_dp_request_t rq = {.method = "GET", .path = "/api/v2/users/me", .bearer = "dpat_bogus"};
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 401);
    assert_int_equal(r->err, 0);
    assert_int_equal(r->attempts, 1); /* a 401 is not retried */
    assert_false(cti_dp_ok(r));
    assert_string_equal(r->error.code, "unauthorized");
    assert_string_equal(r->error.message, "unauthorized: invalid token");
    assert_string_equal(r->message,
                        "Dialpad answered 401 (unauthorized): unauthorized: invalid token");
    cti_dp_response_free(r);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cti_dp_response_t *resp;
    int calls;
} done_t;

static void on_done(cti_dp_response_t *resp, void *ud)
{
    done_t *d = ud;
    pthread_mutex_lock(&d->mu);
    d->resp = resp;
    d->calls++;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static cti_dp_response_t *wait_done(done_t *d)
{
    pthread_mutex_lock(&d->mu);
    while (!d->resp)
        pthread_cond_wait(&d->cv, &d->mu);
    cti_dp_response_t *r = d->resp;
    pthread_mutex_unlock(&d->mu);
    return r;
}

static void test_e2e_5xx_retry(void **state)
{
    cti_dp_token_t t;
    get_tokens("", &t);
    fake_ok("POST", "/_fake/switches", "{\"token_fail\": \"server_error\"}");
    char *form;
    cti_dp_request_t rq = token_request(&form, "refresh_token", "refresh_token", t.refresh_token);

    /* not safe to repeat (a refresh token may be single use): one attempt, the 500 returned */
    size_t before = fake_count("token_requests");
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 500);
    assert_int_equal(r->attempts, 1);
    assert_int_equal(fake_count("token_requests"), before + 1);
    assert_string_equal(r->message, "Dialpad answered 500 (backendError): internal_error");
    cti_dp_response_free(r);

    /* marked idempotent, Dialpad stays down: every attempt made, with backoff between */
    rq.idempotent = true;
    before = fake_count("token_requests");
    r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 500);
    assert_int_equal(r->attempts, 3);
    assert_int_equal(fake_count("token_requests"), before + 3);
    assert_true(r->elapsed_ms >= 100 + 200); /* at least half of each backoff step */
    cti_dp_response_free(r);

    /* marked idempotent, Dialpad recovers after the first failure: the retry succeeds */
    rq.max_attempts = 8; /* ~25 s of retries: room for a slow machine to flip the switch */
    before = fake_count("token_requests");
    done_t d = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    assert_int_equal(cti_dp_submit(g, &rq, on_done, &d), 0);
    int64_t deadline = cti_mono_us() + 10 * 1000000LL;
    while (fake_count("token_requests") == before && cti_mono_us() < deadline)
        usleep(5000);
    fake_ok("POST", "/_fake/switches", "{\"token_fail\": null}");
    r = wait_done(&d);
    free(form);
    assert_int_equal(r->status, 200);
    assert_true(r->attempts >= 2);
    assert_int_equal(d.calls, 1);
    cti_dp_token_t t2;
    char why[200];
    assert_int_equal(cti_dp_parse_token(r->body, r->body_len, &t2, why, sizeof why), 0);
    cti_dp_token_free(&t2);
    cti_dp_response_free(r);
    cti_dp_token_free(&t);
}

static void test_e2e_retry_after_on_429(void **state)
{
    cti_dp_token_t t;
    get_tokens("", &t);
    fake_ok("POST", "/_fake/switches", "{\"retry_after\": 1}");
    fake_ok("POST", "/_fake/advance", "{\"seconds\": 120}"); /* fresh rate-limit windows */
    cti_dp_request_t rq = {.method = "GET", .path = "/api/v2/call/1", .bearer = t.access_token};
    for (int i = 0; i < 10; i++) { /* GET /call/{id}: 10 a minute */
        cti_dp_response_t *r = cti_dp_call(g, &rq);
        assert_int_equal(r->status, 404);
        cti_dp_response_free(r);
    }
    rq.max_attempts = 2;
    cti_dp_response_t *r = cti_dp_call(g, &rq);
    assert_int_equal(r->status, 429);
    assert_int_equal(r->attempts, 2);
    assert_int_equal(r->retry_after_s, 1);
    assert_true(r->elapsed_ms >= 1000); /* waited as told, not the 100-200 ms backoff */
    assert_string_equal(r->error.code, "rateLimitExceeded");
    cti_dp_response_free(r);
    fake_ok("POST", "/_fake/switches", "{\"retry_after\": null}");
    cti_dp_token_free(&t);
}

static int count_item(json_t *item, void *ud)
{
    int64_t id;
    if (!cti_dp_get_id(item, "call_id", &id))
        return CTI_EINVAL;
    (*(int *)ud)++;
    return 0;
}

static void test_e2e_paging(void **state)
{
    cti_dp_token_t t;
    get_tokens("calls%3Alist", &t);
    fake_ok("POST", "/_fake/switches", "{\"page_size\": 2}");
    cti_dp_response_t *r = req("GET", "/_fake/state", NULL, NULL);
    json_t *s = json_loadb(r->body, r->body_len, 0, NULL);
    size_t existing = json_array_size(json_object_get(s, "calls"));
    json_decref(s);
    cti_dp_response_free(r);
    for (int i = 0; i < 5; i++)
        fake_ok("POST", "/_fake/calls", "{\"kind\": \"inbound_missed\", \"deliver\": false}");
    size_t total = existing + 5, pages = (total + 1) / 2;
    cti_dp_request_t rq = {.method = "GET", .path = "/api/v2/call", .bearer = t.access_token};
    int seen = 0;
    cti_dp_response_t *failed = NULL;
    assert_int_equal(cti_dp_list_all(g, &rq, 100, count_item, &seen, &failed), 0);
    assert_null(failed);
    assert_int_equal(seen, (int)total);
    /* a bound on pages is honoured */
    seen = 0;
    assert_int_equal(cti_dp_list_all(g, &rq, (int)pages - 1, count_item, &seen, NULL), CTI_ELIMIT);
    assert_int_equal(seen, (int)(pages - 1) * 2);
    /* a failing page comes back to the caller: no scope, 403 */
    cti_dp_token_t nos;
    get_tokens("", &nos);
    rq.bearer = nos.access_token;
    assert_int_equal(cti_dp_list_all(g, &rq, 100, count_item, &seen, &failed), CTI_EAUTH);
    assert_non_null(failed);
    assert_int_equal(failed->status, 403);
    assert_non_null(strstr(failed->message, "calls:list"));
    cti_dp_response_free(failed);
    fake_ok("POST", "/_fake/switches", "{\"page_size\": 20}");
    cti_dp_token_free(&t);
    cti_dp_token_free(&nos);
}

static void test_e2e_body_limit(void **state)
{
    cti_dp_token_t t;
    get_tokens("", &t);
    cti_dp_options_t o;
    cti_dp_options_default(&o, fake_base);
    o.max_body_bytes = 64;
    cti_dp_client_t *c;
    assert_int_equal(cti_dp_client_start(&o, &c), 0);
    cti_dp_request_t rq = {.method = "GET", .path = "/api/v2/users/me", .bearer = t.access_token};
    cti_dp_response_t *r = cti_dp_call(c, &rq);
    assert_int_equal(r->err, CTI_ELIMIT);
    assert_int_equal(r->attempts, 1);
    assert_non_null(strstr(r->message, "larger than 64 bytes"));
    cti_dp_response_free(r);
    cti_dp_client_stop(c);
    cti_dp_token_free(&t);
}

/* A socket that listens and never accepts: connections open, answers never come. */
static int black_hole(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    getsockname(s, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return s;
}

static cti_dp_client_t *client_for(const char *scheme, int port, int total_ms)
{
    char base[64];
    snprintf(base, sizeof base, "%s://127.0.0.1:%d", scheme, port);
    cti_dp_options_t o;
    cti_dp_options_default(&o, base);
    o.total_timeout_ms = total_ms;
    o.backoff_base_ms = 100;
    cti_dp_client_t *c;
    assert_int_equal(cti_dp_client_start(&o, &c), 0);
    return c;
}

static void test_e2e_timeout(void **state)
{
    int port, s = black_hole(&port);
    cti_dp_client_t *c = client_for("http", port, 300);
    /* a GET is repeated after a timeout; each attempt gets its own 300 ms */
    cti_dp_request_t rq = {
        .method = "GET", .path = "/api/v2/users/me", .bearer = "t", .max_attempts = 2};
    cti_dp_response_t *r = cti_dp_call(c, &rq);
    assert_int_equal(r->err, CTI_EUNAVAILABLE);
    assert_true(r->timed_out);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->attempts, 2);
    assert_true(r->elapsed_ms >= 600 && r->elapsed_ms < 5000);
    assert_non_null(strstr(r->message, "did not answer in time"));
    cti_dp_response_free(r);
    /* a POST that may have arrived is not repeated */
    cti_dp_request_t post = {.method = "POST",
                             .path = "/api/v2/webhooks",
                             .bearer = "t",
                             .body_kind = CTI_DP_BODY_JSON,
                             .body = "{}",
                             .body_len = 2};
    r = cti_dp_call(c, &post);
    assert_true(r->timed_out);
    assert_int_equal(r->attempts, 1);
    cti_dp_response_free(r);
    cti_dp_client_stop(c);
    /* over https the TLS handshake never ends: the request was never sent, so even
     * the POST is tried again */
    c = client_for("https", port, 300);
    r = cti_dp_call(c, &post);
    assert_true(r->timed_out);
    assert_int_equal(r->attempts, 3);
    cti_dp_response_free(r);
    cti_dp_client_stop(c);
    close(s);
}

static void test_e2e_refused_connection(void **state)
{
    int port, s = black_hole(&port);
    close(s); /* nothing listens there now: connect is refused */
    cti_dp_client_t *c = client_for("http", port, 2000);
    cti_dp_request_t post = {.method = "POST",
                             .path = "/api/v2/webhooks",
                             .bearer = "t",
                             .body_kind = CTI_DP_BODY_JSON,
                             .body = "{}",
                             .body_len = 2};
    cti_dp_response_t *r = cti_dp_call(c, &post);
    assert_int_equal(r->err, CTI_EUNAVAILABLE);
    assert_false(r->timed_out);
    assert_int_equal(r->attempts, 3); /* nothing was sent: even a POST is tried again */
    assert_non_null(strstr(r->message, "could not be reached"));
    cti_dp_response_free(r);
    cti_dp_client_stop(c);
}

static void test_e2e_stop_completes_everything(void **state)
{
    int port, s = black_hole(&port);
    cti_dp_client_t *c = client_for("http", port, 10000);
    enum { N = 5 };
    done_t d[N];
    cti_dp_request_t rq = {.method = "GET", .path = "/slow"};
    for (int i = 0; i < N; i++) {
        d[i] = (done_t){.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
        assert_int_equal(cti_dp_submit(c, &rq, on_done, &d[i]), 0);
    }
    usleep(100 * 1000); /* in flight by now */
    int64_t t0 = cti_mono_us();
    cti_dp_client_stop(c);
    assert_true(cti_mono_us() - t0 < 2000000); /* does not wait for the 10 s timeouts */
    for (int i = 0; i < N; i++) {
        assert_int_equal(d[i].calls, 1); /* each completion exactly once, before stop returned */
        assert_int_equal(d[i].resp->err, CTI_EUNAVAILABLE);
        assert_string_equal(d[i].resp->message, "the Dialpad client stopped");
        cti_dp_response_free(d[i].resp);
    }
    close(s);
}

/* Runs last: everything above logged through the client; no token or secret is there,
 * and each line names method, path and status. */
static void test_e2e_log_has_no_secrets(void **state)
{
    cti_dp_token_t t;
    get_tokens("", &t);
    char path[64];
    snprintf(path, sizeof path, "/api/v2/users/me?apikey=%s", "query-secret");
    cti_dp_request_t rq = {.method = "GET", .path = path, .bearer = t.access_token};
    cti_dp_response_free(cti_dp_call(g, &rq));
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[4096];
    int lines = 0, me = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        if (strstr(line, t.access_token) || strstr(line, t.refresh_token) ||
            strstr(line, CLIENT_SECRET) || strstr(line, "query-secret") || strstr(line, "dpat_") ||
            strstr(line, "dprt_") || strstr(line, "code="))
            fail_msg("a secret in the log: %s", line);
        if (strstr(line, "\"msg\":\"dialpad request\"") &&
            strstr(line, "\"path\":\"/api/v2/users/me\"") && strstr(line, "\"method\":\"GET\"") &&
            strstr(line, "\"status\":200") && strstr(line, "\"ms\":"))
            me++;
    }
    fclose(f);
    assert_true(lines > 20);
    assert_true(me >= 2);
    cti_dp_token_free(&t);
}

int main(void)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_retry_policy),
        cmocka_unit_test(test_method_idempotent),
        cmocka_unit_test(test_retry_after_parse),
        cmocka_unit_test(test_error_envelope),
        cmocka_unit_test(test_error_oauth_and_others),
        cmocka_unit_test(test_error_text_sanitised),
        cmocka_unit_test(test_token_response_forms),
        cmocka_unit_test(test_token_response_refused),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_page_parse),
        cmocka_unit_test(test_page_path_and_form),
        cmocka_unit_test(test_submit_refuses_bad_requests),
    };
    const struct CMUnitTest e2e[] = {
        cmocka_unit_test_setup(test_e2e_code_exchange, reset_fake),
        cmocka_unit_test_setup(test_e2e_users_me, reset_fake),
        cmocka_unit_test_setup(test_e2e_401_envelope, reset_fake),
        cmocka_unit_test_setup(test_e2e_5xx_retry, reset_fake),
        cmocka_unit_test_setup(test_e2e_retry_after_on_429, reset_fake),
        cmocka_unit_test_setup(test_e2e_paging, reset_fake),
        cmocka_unit_test_setup(test_e2e_body_limit, reset_fake),
        cmocka_unit_test_setup(test_e2e_timeout, reset_fake),
        cmocka_unit_test_setup(test_e2e_refused_connection, reset_fake),
        cmocka_unit_test_setup(test_e2e_stop_completes_everything, reset_fake),
        cmocka_unit_test_setup(test_e2e_log_has_no_secrets, reset_fake),
    };
    int failed = cmocka_run_group_tests_name("test_dpclient (pure)", pure, NULL, NULL);
    failed += cmocka_run_group_tests_name("test_dpclient (against the fake Dialpad)", e2e,
                                          e2e_setup, e2e_teardown);
    return failed ? 1 : 0;
}
