/* test_router.c — unit tests for src/http/router.c: literal and {param}
 * segments, precedence of literals, trailing slashes, empty segments, wrong
 * methods, limits. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "http/router.h"

/* Distinct handlers (and distinct ud values) so a match can be identified. */
static int h_ud[4];
static void h_a(cti_http_req_t *req, void *ud)
{
    h_ud[0]++;
}
static void h_b(cti_http_req_t *req, void *ud)
{
    h_ud[1]++;
}
static void h_c(cti_http_req_t *req, void *ud)
{
    h_ud[2]++;
}

static int setup(void **state)
{
    cti_router_t *r = calloc(1, sizeof *r);
    *state = r;
    return r ? 0 : -1;
}

static int teardown(void **state)
{
    cti_router_t *r = *state;
    cti_router_free(r);
    free(r);
    return 0;
}

/* Matches a writable copy of path (the router splits it in place). The copy is
 * kept in a static buffer so m->values stay readable after the call. */
static char path_buf[4][512];
static int path_slot;

static int match(const cti_router_t *r, int method, const char *path, cti_route_match_t *m)
{
    char *copy = path_buf[path_slot++ % 4];
    assert_true(strlen(path) < sizeof path_buf[0]);
    strcpy(copy, path);
    return cti_router_match(r, method, copy, m);
}

/* Asserts path matches the route with this pattern. */
static void assert_route(const cti_router_t *r, int method, const char *path, const char *pattern,
                         cti_route_match_t *m)
{
    int rc = match(r, method, path, m);
    if (rc != 0)
        fail_msg("%s did not match (rc %d), want %s", path, rc, pattern);
    assert_non_null(m->route);
    assert_string_equal(m->route->pattern, pattern);
}

static void assert_not_found(const cti_router_t *r, int method, const char *path)
{
    cti_route_match_t m;
    int rc = match(r, method, path, &m);
    if (rc != CTI_ENOTFOUND)
        fail_msg("%s: rc %d (route %s), want CTI_ENOTFOUND", path, rc,
                 rc == 0 && m.route ? m.route->pattern : "-");
    assert_null(m.route);
}

/* The value of param name in m, or NULL. */
static const char *param(const cti_route_match_t *m, const char *name)
{
    for (int i = 0; i < m->nparams; i++)
        if (strlen(name) == m->name_lens[i] && strncmp(m->names[i], name, m->name_lens[i]) == 0)
            return m->values[i];
    return NULL;
}

/* ---- literal routes ---------------------------------------------------------------------- */

static void test_literal_match(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/health", h_a, &h_ud[0]);
    cti_router_add(r, CTI_HTTP_GET, "/api/calls", h_b, &h_ud[1]);
    cti_router_add(r, CTI_HTTP_POST, "/internal/apps", h_c, &h_ud[2]);
    assert_int_equal(r->n, 3);

    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/health", "/health", &m);
    assert_true(m.route->fn == h_a);
    assert_ptr_equal(m.route->ud, &h_ud[0]);
    assert_int_equal(m.nparams, 0);

    assert_route(r, CTI_HTTP_GET, "/api/calls", "/api/calls", &m);
    assert_true(m.route->fn == h_b);
    assert_ptr_equal(m.route->ud, &h_ud[1]);

    assert_route(r, CTI_HTTP_POST, "/internal/apps", "/internal/apps", &m);
    assert_true(m.route->fn == h_c);

    assert_not_found(r, CTI_HTTP_GET, "/healthz");
    assert_not_found(r, CTI_HTTP_GET, "/Health"); /* case-sensitive */
    assert_not_found(r, CTI_HTTP_GET, "/api");
    assert_not_found(r, CTI_HTTP_GET, "/api/calls/x");
    assert_not_found(r, CTI_HTTP_GET, "health");
}

static void test_unknown_path(void **state)
{
    cti_router_t *r = *state;
    cti_route_match_t m;
    assert_int_equal(match(r, CTI_HTTP_GET, "/anything", &m), CTI_ENOTFOUND); /* empty table */
    cti_router_add(r, CTI_HTTP_GET, "/health", h_a, NULL);
    assert_int_equal(match(r, CTI_HTTP_GET, "/nope", &m), CTI_ENOTFOUND);
    assert_null(m.route);
    assert_int_equal(m.allowed, 0);
}

static void test_root_route(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/", h_a, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/x", h_b, NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/", "/", &m);
    assert_true(m.route->fn == h_a);
    assert_route(r, CTI_HTTP_GET, "/x", "/x", &m);
    assert_true(m.route->fn == h_b);
    assert_not_found(r, CTI_HTTP_GET, "/y");
    assert_not_found(r, CTI_HTTP_GET, "");
}

static void test_no_root_route(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/x", h_a, NULL);
    assert_not_found(r, CTI_HTTP_GET, "/");
}

/* ---- parameters ------------------------------------------------------------------------------ */

static void test_param_extraction(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/internal/apps/{app_id}", h_a, NULL);
    cti_router_add(r, CTI_HTTP_POST, "/internal/apps/{app_id}/api-key", h_b, NULL);
    cti_route_match_t m;

    assert_route(r, CTI_HTTP_GET, "/internal/apps/abc-123", "/internal/apps/{app_id}", &m);
    assert_int_equal(m.nparams, 1);
    assert_int_equal(m.name_lens[0], strlen("app_id"));
    assert_memory_equal(m.names[0], "app_id", m.name_lens[0]);
    assert_string_equal(m.values[0], "abc-123");
    assert_string_equal(param(&m, "app_id"), "abc-123");

    assert_route(r, CTI_HTTP_POST, "/internal/apps/xyz/api-key", "/internal/apps/{app_id}/api-key",
                 &m);
    assert_int_equal(m.nparams, 1);
    assert_string_equal(param(&m, "app_id"), "xyz");

    assert_not_found(r, CTI_HTTP_GET, "/internal/apps");
    assert_not_found(r, CTI_HTTP_POST, "/internal/apps/xyz/other");
}

static void test_two_params(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET | CTI_HTTP_DELETE, "/api/apps/{app_id}/calls/{call_id}", h_a,
                   NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_DELETE, "/api/apps/A1/calls/C2", "/api/apps/{app_id}/calls/{call_id}",
                 &m);
    assert_int_equal(m.nparams, 2);
    assert_string_equal(param(&m, "app_id"), "A1");
    assert_string_equal(param(&m, "call_id"), "C2");
    /* in pattern order */
    assert_memory_equal(m.names[0], "app_id", 6);
    assert_memory_equal(m.names[1], "call_id", 7);
    assert_string_equal(m.values[0], "A1");
    assert_string_equal(m.values[1], "C2");
    assert_null(param(&m, "nope"));
}

static void test_max_params(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/{a}/{b}/{c}/{d}/{e}/{f}", h_a, NULL);
    assert_int_equal(CTI_ROUTE_MAX_PARAMS, 6);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/1/2/3/4/5/6", "/{a}/{b}/{c}/{d}/{e}/{f}", &m);
    assert_int_equal(m.nparams, 6);
    assert_string_equal(param(&m, "a"), "1");
    assert_string_equal(param(&m, "f"), "6");
}

/* ---- precedence ------------------------------------------------------------------------------- */

static void literal_beats_param(cti_router_t *r)
{
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/api/calls/active", "/api/calls/active", &m);
    assert_true(m.route->fn == h_a);
    assert_int_equal(m.nparams, 0);
    assert_route(r, CTI_HTTP_GET, "/api/calls/42", "/api/calls/{call_id}", &m);
    assert_true(m.route->fn == h_b);
    assert_string_equal(param(&m, "call_id"), "42");
    assert_route(r, CTI_HTTP_GET, "/api/calls/active/", "/api/calls/active", &m);
}

static void test_literal_beats_param_literal_first(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/api/calls/active", h_a, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/api/calls/{call_id}", h_b, NULL);
    literal_beats_param(r);
}

static void test_literal_beats_param_param_first(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/api/calls/{call_id}", h_b, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/api/calls/active", h_a, NULL);
    literal_beats_param(r);
}

static void test_more_literals_win_deeper(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/{x}/{y}/z", h_a, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/a/{y}/z", h_b, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/{x}/{y}/{z}", h_c, NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/a/b/z", "/a/{y}/z", &m);
    assert_route(r, CTI_HTTP_GET, "/q/b/z", "/{x}/{y}/z", &m);
    assert_route(r, CTI_HTTP_GET, "/q/b/c", "/{x}/{y}/{z}", &m);
}

/* ---- slashes ---------------------------------------------------------------------------------- */

static void test_trailing_slash(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/api/calls", h_a, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/api/apps/{app_id}", h_b, NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/api/calls/", "/api/calls", &m);
    assert_route(r, CTI_HTTP_GET, "/api/apps/7/", "/api/apps/{app_id}", &m);
    assert_string_equal(param(&m, "app_id"), "7"); /* the slash is not part of the value */
    /* only one trailing slash is forgiven */
    assert_not_found(r, CTI_HTTP_GET, "/api/calls//");
}

static void test_empty_segment_not_a_param(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/api/apps/{app_id}/calls", h_a, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/api/apps/{app_id}", h_b, NULL);
    cti_router_add(r, CTI_HTTP_GET, "/api/calls", h_c, NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/api/apps/x/calls", "/api/apps/{app_id}/calls", &m);
    assert_not_found(r, CTI_HTTP_GET, "/api/apps//calls");
    assert_not_found(r, CTI_HTTP_GET, "/api/apps//");
    assert_not_found(r, CTI_HTTP_GET, "/api//calls");
    assert_not_found(r, CTI_HTTP_GET, "//api/calls");
}

/* ---- methods ---------------------------------------------------------------------------------- */

static void test_wrong_method(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/internal/apps/{app_id}", h_a, NULL);
    cti_router_add(r, CTI_HTTP_DELETE | CTI_HTTP_PATCH, "/internal/apps/{app_id}", h_b, NULL);
    cti_router_add(r, CTI_HTTP_POST, "/internal/apps", h_c, NULL);
    cti_route_match_t m;

    assert_int_equal(match(r, CTI_HTTP_PUT, "/internal/apps/1", &m), CTI_EINVAL);
    assert_null(m.route);
    assert_int_equal(m.allowed, CTI_HTTP_GET | CTI_HTTP_DELETE | CTI_HTTP_PATCH);

    assert_int_equal(match(r, CTI_HTTP_GET, "/internal/apps", &m), CTI_EINVAL);
    assert_int_equal(m.allowed, CTI_HTTP_POST);

    /* each allowed method reaches its own route */
    assert_route(r, CTI_HTTP_GET, "/internal/apps/1", "/internal/apps/{app_id}", &m);
    assert_true(m.route->fn == h_a);
    assert_route(r, CTI_HTTP_PATCH, "/internal/apps/1", "/internal/apps/{app_id}", &m);
    assert_true(m.route->fn == h_b);
    assert_route(r, CTI_HTTP_DELETE, "/internal/apps/1", "/internal/apps/{app_id}", &m);
    assert_true(m.route->fn == h_b);
    assert_string_equal(param(&m, "app_id"), "1");
}

static void test_wrong_method_unmatched_path_is_not_found(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/a", h_a, NULL);
    cti_route_match_t m;
    assert_int_equal(match(r, CTI_HTTP_POST, "/b", &m), CTI_ENOTFOUND);
    assert_int_equal(m.allowed, 0);
}

/* ---- limits ----------------------------------------------------------------------------------- */

static void test_too_many_segments(void **state)
{
    cti_router_t *r = *state;
    assert_int_equal(CTI_ROUTE_MAX_SEGS, 12);
    cti_router_add(r, CTI_HTTP_GET, "/{a}/{b}/c/d/e/f/g/h/i/j/k/l", h_a, NULL); /* 12 segments */
    cti_router_add(r, CTI_HTTP_GET, "/{a}", h_b, NULL);
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/1/2/c/d/e/f/g/h/i/j/k/l", "/{a}/{b}/c/d/e/f/g/h/i/j/k/l", &m);
    assert_not_found(r, CTI_HTTP_GET, "/1/2/c/d/e/f/g/h/i/j/k/l/m");
    assert_not_found(r, CTI_HTTP_GET, "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17/18/19/20");
    /* still not found with lots of segments, none of them overflowing anything */
    char longp[400] = "";
    for (int i = 0; i < 100; i++)
        strcat(longp, "/x");
    assert_not_found(r, CTI_HTTP_GET, longp);
}

static void test_free_resets(void **state)
{
    cti_router_t *r = *state;
    cti_router_add(r, CTI_HTTP_GET, "/a/{b}", h_a, NULL);
    cti_router_free(r);
    assert_int_equal(r->n, 0);
    assert_null(r->routes);
    assert_not_found(r, CTI_HTTP_GET, "/a/1");
    cti_router_add(r, CTI_HTTP_GET, "/a/{b}", h_a, NULL); /* reusable */
    cti_route_match_t m;
    assert_route(r, CTI_HTTP_GET, "/a/1", "/a/{b}", &m);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_literal_match),
        T(test_unknown_path),
        T(test_root_route),
        T(test_no_root_route),
        T(test_param_extraction),
        T(test_two_params),
        T(test_max_params),
        T(test_literal_beats_param_literal_first),
        T(test_literal_beats_param_param_first),
        T(test_more_literals_win_deeper),
        T(test_trailing_slash),
        T(test_empty_segment_not_a_param),
        T(test_wrong_method),
        T(test_wrong_method_unmatched_path_is_not_found),
        T(test_too_many_segments),
        T(test_free_resets),
    };
#undef T
    return cmocka_run_group_tests_name("test_router", tests, NULL, NULL);
}
