/*
 * fuzz_http.c — libFuzzer target for the request path of src/http/server.c
 * and src/http/router.c, and the strict body and query reading of
 * src/api/common.c, without a socket.
 *
 * This file #includes server.c (to build a request the way MHD's callbacks
 * do) and stands in for the three MHD calls that need a live connection or
 * hide what was answered: the GET arguments come from the input's query
 * string (split and decoded as MHD 0.9.75 does: '&', the first '=', '+' and
 * %XX with two hex digits), and each response body is kept to be checked.
 * The route table is the server's own (cti_api_register), every handler
 * replaced by one that reads the request as handlers do.
 *
 * Input: byte 0 picks the method (GET HEAD POST PUT PATCH DELETE OPTIONS),
 * then the request target up to '\n', then the body (a target with %00 is
 * refused before routing, by framing_problem: only its redaction is checked).
 * Checked:
 *   - cti_http_redact_uri: the output is the target with the value of every
 *     credential argument (api_key apikey key ticket token access_token
 *     secret code password, names decoded and in any case, as MHD looks
 *     them up) replaced by REDACTED, nothing else changed, cut only at cap;
 *   - routing: the answer is 404 exactly when no pattern fits the decoded
 *     path (or it is not UTF-8), 405 with the right Allow when one fits but
 *     not the method, else the handler of the fitting route with most
 *     literal segments (the first registered among equals) runs with every
 *     {param} bound to its segment;
 *   - a route's handler is not run for a query that is not UTF-8 (400);
 *   - the handler's reading: ?limit= taken exactly when a whole number in
 *     1..500, ?cursor= when it decodes (and re-encodes to the same); a body
 *     taken exactly when jansson reads it as an object without duplicate
 *     keys, each field accepted exactly when it has the right type and
 *     bounds (strings: no control characters, 1..N UTF-8 characters);
 *   - exactly one response per request; every error body is JSON
 *     {"error": code, "message": text}, never a 500.
 * A violation is a deliberate __builtin_trap(). Build and run: tests/fuzz/run.sh.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <microhttpd.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_http.c:%d: invariant failed: %s\n", __LINE__, #cond);           \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* ---- the connection, as MHD would have it ---- */

#define MAX_ARGS 64
static struct {
    int n;
    char *key[MAX_ARGS], *value[MAX_ARGS]; /* value NULL: "?name" without '=' */
    size_t key_len[MAX_ARGS];
} args;

/* MHD's decoding of an argument: '+' is a space, %XX (two hex digits) a byte. */
static size_t mhd_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], '\0'};
            *w++ = (char)strtoul(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static void args_free(void)
{
    for (int i = 0; i < args.n; i++) {
        free(args.key[i]);
        free(args.value[i]);
    }
    args.n = 0;
}

static void args_parse(const char *query)
{
    args_free();
    for (const char *p = query; *p && args.n < MAX_ARGS;) {
        size_t len = strcspn(p, "&"), klen = strcspn(p, "=&");
        if (len > 0 || p[len] == '&') {
            args.key[args.n] = strndup(p, klen);
            args.key_len[args.n] = mhd_unescape(args.key[args.n]);
            args.value[args.n] = NULL;
            if (klen < len) {
                args.value[args.n] = strndup(p + klen + 1, len - klen - 1);
                mhd_unescape(args.value[args.n]);
            }
            args.n++;
        }
        p += len + (p[len] == '&');
    }
}

static const char *fuzz_lookup(struct MHD_Connection *c, enum MHD_ValueKind kind, const char *key)
{
    (void)c;
    if (kind != MHD_GET_ARGUMENT_KIND)
        return NULL;
    for (int i = 0; i < args.n; i++)
        if (args.key_len[i] == strlen(key) && !strncasecmp(args.key[i], key, strlen(key)))
            return args.value[i];
    return NULL;
}

static int fuzz_get_values(struct MHD_Connection *c, enum MHD_ValueKind kind,
                           MHD_KeyValueIterator it, void *cls)
{
    (void)c;
    if (kind != MHD_GET_ARGUMENT_KIND)
        return 0;
    int n = 0;
    for (int i = 0; i < args.n; i++) {
        n++;
        if (it && it(cls, MHD_GET_ARGUMENT_KIND, args.key[i], args.value[i]) != MHD_YES)
            break;
    }
    return n;
}

/* Each response: how many, and the last one's body. */
static int responses;
static char *resp_body;
static struct MHD_Response *fuzz_response(size_t size, void *buffer,
                                          enum MHD_ResponseMemoryMode mode)
{
    responses++;
    free(resp_body);
    resp_body = malloc(size + 1);
    CHECK(resp_body != NULL);
    memcpy(resp_body, buffer, size);
    resp_body[size] = '\0';
    return MHD_create_response_from_buffer(size, buffer, mode);
}

#define MHD_create_response_from_buffer fuzz_response
#define MHD_lookup_connection_value fuzz_lookup
#define MHD_get_connection_values fuzz_get_values
#include "http/server.c"
#undef MHD_create_response_from_buffer
#undef MHD_lookup_connection_value
#undef MHD_get_connection_values

#include "api/common.h"
#include "core/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the redactor ---- */

static bool credential_name(const char *raw, size_t n)
{
    /* the server's list (src/http/server.c), the OAuth ones included */
    static const char *const names[] = {"api_key", "apikey", "key", "ticket", "token",
                                        "access_token", "secret", "code", "password", "state",
                                        "refresh_token", "code_verifier"};
    char *k = strndup(raw, n);
    CHECK(k != NULL);
    size_t len = mhd_unescape(k);
    bool hit = false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        hit |= strlen(names[i]) == len && !strncasecmp(names[i], k, len);
    free(k);
    return hit;
}

static void check_redact(const char *target)
{
    size_t tlen = strlen(target), cap = tlen + 64;
    char *out = malloc(cap), *want = malloc(2 * tlen + 16);
    CHECK(out && want);
    memset(out, '#', cap);
    cti_http_redact_uri(target, out, cap);
    CHECK(memchr(out, '\0', cap) != NULL);
    /* the expected text, whole */
    const char *q = strchr(target, '?');
    size_t n = q ? (size_t)(q - target) : tlen;
    memcpy(want, target, n);
    for (const char *p = q; p && *p;) {
        size_t part = strcspn(p + 1, "&"), name = strcspn(p + 1, "=&");
        bool hide = name < part && credential_name(p + 1, name);
        memcpy(want + n, p, hide ? name + 1 : part + 1);
        n += hide ? name + 1 : part + 1;
        if (hide) {
            memcpy(want + n, "=REDACTED", 9);
            n += 9;
        }
        p += part + 1;
    }
    want[n] = '\0';
    size_t got = strlen(out);
    CHECK(got == (n < cap ? n : cap - 1));
    CHECK(memcmp(out, want, got) == 0);
    free(out);
    free(want);
}

/* ---- the router, as documented ---- */

typedef struct {
    int route; /* index, -1: none */
    int allowed;
    int nsegs;
    char *segs[CTI_ROUTE_MAX_SEGS + 1];
} model_t;

static void model_route(const cti_router_t *r, const char *url, int method, model_t *m)
{
    memset(m, 0, sizeof *m);
    m->route = -1;
    size_t len = strlen(url);
    if (url[0] != '/' || !strcmp(url, "//"))
        return;
    char *path = strdup(url + 1);
    CHECK(path != NULL);
    if (len > 2 && path[len - 2] == '/' && path[len - 3] != '/')
        path[len - 2] = '\0'; /* one trailing slash */
    int n = 0;
    bool bad = false;
    for (char *p = path; *path;) {
        char *slash = strchr(p, '/');
        if (n == CTI_ROUTE_MAX_SEGS) {
            bad = true;
            break;
        }
        m->segs[n++] = strndup(p, slash ? (size_t)(slash - p) : strlen(p));
        if (!slash)
            break;
        p = slash + 1;
    }
    free(path);
    m->nsegs = n;
    if (bad)
        return;
    int best = -1;
    for (size_t i = 0; i < r->n; i++) {
        const cti_route_t *rt = &r->routes[i];
        if (rt->nsegs != n)
            continue;
        int literal = 0;
        bool fits = true;
        for (int s = 0; s < n && fits; s++) {
            size_t sl = strlen(rt->segs[s]);
            bool param = sl > 2 && rt->segs[s][0] == '{' && rt->segs[s][sl - 1] == '}';
            fits = param ? m->segs[s][0] != '\0' : !strcmp(rt->segs[s], m->segs[s]);
            literal += !param;
        }
        if (!fits)
            continue;
        if (!(rt->methods & method)) {
            m->allowed |= rt->methods;
        } else if (literal > best) {
            best = literal;
            m->route = (int)i;
        }
    }
}

static void model_free(model_t *m)
{
    for (int i = 0; i < m->nsegs; i++)
        free(m->segs[i]);
}

/* ---- the handler every route gets ---- */

static const cti_route_t *ran;
static int ran_count;

static bool is_whole(const char *s, int64_t lo, int64_t hi)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return false;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    return !*end && !errno && v >= lo && v <= hi;
}

static void read_query(cti_http_req_t *req)
{
    int limit = 0;
    bool has_cursor = false;
    int64_t key = 0;
    char tie[64] = "";
    const char *l = fuzz_lookup(NULL, MHD_GET_ARGUMENT_KIND, "limit");
    const char *c = fuzz_lookup(NULL, MHD_GET_ARGUMENT_KIND, "cursor");
    bool ok = cti_api_paging(req, &limit, &has_cursor, &key, tie, sizeof tie);
    if (l && !is_whole(l, 1, 500)) {
        CHECK(!ok);
        return;
    }
    if (!ok) {
        CHECK(c != NULL); /* only the cursor may be what was wrong */
        return;
    }
    CHECK(limit == (l ? (int)strtoll(l, NULL, 10) : 50));
    CHECK(has_cursor == (c != NULL));
    if (c) { /* what decodes encodes to a cursor that decodes the same */
        char again[CTI_CURSOR_MAX], tie2[64];
        int64_t key2;
        cti_cursor_encode(key, tie, again);
        CHECK(cti_cursor_decode(again, &key2, tie2, sizeof tie2) == 0);
        CHECK(key2 == key && !strcmp(tie2, tie));
    }
    cti_http_json(req, 200, json_pack("{s:i}", "limit", limit));
}

static bool text_ok(json_t *v, size_t max_chars)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return false;
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return false;
        chars += (*p & 0xc0) != 0x80;
    }
    return chars >= 1 && chars <= max_chars;
}

/* Reads the body as a handler of {name?, enabled?, limit?, dialpad_user_id?} does. */
static void read_body(cti_http_req_t *req, const char *body, size_t len)
{
    static const char *const allowed[] = {"name", "enabled", "limit", "dialpad_user_id", NULL};
    json_t *want = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *o = cti_http_json_object_body(req);
    CHECK(!o == !json_is_object(want));
    if (!o) {
        json_decref(want);
        return;
    }
    bool known = true;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool a = false;
        for (const char *const *p = allowed; *p; p++)
            a |= !strcmp(*p, k);
        known &= a;
    }
    const char *name = NULL;
    bool has_enabled = false, enabled = false, has_limit = false;
    int64_t limit = 0, uid = 0;
    json_t *jn = json_object_get(o, "name"), *je = json_object_get(o, "enabled");
    json_t *jl = json_object_get(o, "limit"), *ju = json_object_get(o, "dialpad_user_id");
    bool ok_only = cti_api_only_fields(req, o, allowed);
    CHECK(ok_only == known);
    bool ok_name = ok_only && cti_api_string_field(req, o, "name", false, 64, &name);
    if (ok_only)
        CHECK(ok_name == (!jn || json_is_null(jn) || text_ok(jn, 64)));
    bool ok_enabled = ok_name && cti_api_bool_field(req, o, "enabled", &has_enabled, &enabled);
    if (ok_name)
        CHECK(ok_enabled == (!je || json_is_boolean(je)));
    bool ok_limit =
        ok_enabled && cti_api_int_field(req, o, "limit", 1, 500, &has_limit, &limit);
    if (ok_enabled)
        CHECK(ok_limit == (!jl || json_is_null(jl) ||
                           (json_is_integer(jl) && json_integer_value(jl) >= 1 &&
                            json_integer_value(jl) <= 500)));
    bool ok_uid = ok_limit && (!ju || cti_api_id_value(ju, &uid));
    if (ok_limit && ju) {
        bool good = json_is_integer(ju) ? json_integer_value(ju) > 0
                    : json_is_string(ju) && json_string_value(ju)[0] >= '1' &&
                          json_string_value(ju)[0] <= '9' &&
                          is_whole(json_string_value(ju), 1, INT64_MAX);
        CHECK(ok_uid == good);
        if (good && json_is_string(ju))
            CHECK(uid == strtoll(json_string_value(ju), NULL, 10));
    }
    if (ok_uid) {
        CHECK(!req->response); /* no check answered */
        json_t *echo = json_pack("{s:s?, s:b, s:I, s:I}", "name", name, "enabled", enabled,
                                 "limit", (json_int_t)limit, "dialpad_user_id", (json_int_t)uid);
        CHECK(echo != NULL);
        cti_http_json(req, 200, echo);
    } else if (!ok_limit) {
        CHECK(req->response && req->status == 400); /* the failing check answered */
    }
    if (!ok_uid && !req->response)
        cti_http_error(req, 400, "invalid_request", "'dialpad_user_id' must be a Dialpad id");
    json_decref(o);
    json_decref(want);
}

static void record(cti_http_req_t *req, void *ud)
{
    (void)ud;
    ran = req->match.route;
    ran_count++;
    size_t len;
    const char *body = cti_http_body(req, &len);
    if (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"))
        read_query(req);
    else if (!strcmp(req->method, "DELETE"))
        cti_http_respond(req, 204, NULL, NULL, 0);
    else
        read_body(req, body, len);
}

/* ---- one request ---- */

static cti_http_server_t *srv;
static cti_api_t api;

static void setup(void)
{
    cti_http_options_t opts = {.max_body = 1024 * 1024};
    srv = cti_http_server_new(&opts);
    cti_api_register(srv, &api);
    for (size_t i = 0; i < srv->router.n; i++)
        srv->router.routes[i].fn = record;
}

/* MHD's decoding of the path: %XX with two hex digits (no '+'), up to a NUL. */
static char *decode_path(const char *s, size_t n)
{
    char *out = strndup(s, n);
    CHECK(out != NULL);
    char *w = out;
    for (char *r = out; *r; r++) {
        if (*r == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], '\0'};
            *w++ = (char)strtoul(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
    return out;
}

static void check_answer(cti_http_req_t *req, const char *url, int method)
{
    CHECK(responses == 1 && req->response != NULL);
    CHECK(req->status != 500);
    model_t m;
    model_route(&srv->router, url, method, &m);
    bool utf8_path = cti_utf8_valid((const uint8_t *)url, strlen(url)), utf8_query = true;
    for (int i = 0; i < args.n; i++)
        utf8_query &= cti_utf8_valid((const uint8_t *)args.key[i], strlen(args.key[i])) &&
                      (!args.value[i] ||
                       cti_utf8_valid((const uint8_t *)args.value[i], strlen(args.value[i])));
    if (m.route < 0 && !m.allowed) {
        CHECK(req->status == 404 && ran_count == 0);
    } else if (m.route < 0) {
        CHECK(req->status == 405 && ran_count == 0);
        char want[64] = "";
        const char *names[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
        for (int i = 0; i < 5; i++)
            if (m.allowed & (1 << i))
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s",
                         want[0] ? ", " : "", names[i]);
        const char *allow = MHD_get_response_header(req->response, "Allow");
        CHECK(allow && !strcmp(allow, want));
    } else if (!utf8_path) {
        CHECK(req->status == 404 && ran_count == 0);
    } else if (!utf8_query) {
        CHECK(req->status == 400 && ran_count == 0);
    } else {
        const cti_route_t *rt = &srv->router.routes[m.route];
        CHECK(ran_count == 1 && ran == rt);
        for (int i = 0; i < rt->nsegs; i++) {
            size_t sl = strlen(rt->segs[i]);
            if (sl > 2 && rt->segs[i][0] == '{' && rt->segs[i][sl - 1] == '}') {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(sl - 2), rt->segs[i] + 1);
                const char *v = cti_http_param(req, name);
                CHECK(v && !strcmp(v, m.segs[i]));
            }
        }
    }
    if (req->status >= 400) {
        json_t *o = json_loads(resp_body, 0, NULL);
        CHECK(json_is_object(o) && json_is_string(json_object_get(o, "error")) &&
              json_is_string(json_object_get(o, "message")));
        json_decref(o);
    }
    model_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                          "OPTIONS"};
    if (size < 1)
        return 0;
    if (!srv)
        setup();
    const char *method = methods[data[0] % 7];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *tend = nl ? nl : end;
    char *target = strndup(p, (size_t)(tend - p)); /* MHD's request line has no NUL */
    CHECK(target != NULL);
    check_redact(target);

    if (strstr(target, "%00")) { /* refused before routing (see framing_problem) */
        free(target);
        return 0;
    }
    const char *q = strchr(target, '?');
    char *url = decode_path(target, q ? (size_t)(q - target) : strlen(target));
    args_parse(q ? q + 1 : "");

    cti_http_req_t *req = calloc(1, sizeof *req);
    CHECK(req != NULL);
    req->srv = srv;
    req->method = method;
    req->state = REQ_DONE;
    snprintf(req->request_id, sizeof req->request_id, "fuzz");
    size_t cap = strlen(target) + 64;
    req->log_uri = malloc(cap);
    CHECK(req->log_uri != NULL);
    cti_http_redact_uri(target, req->log_uri, cap);
    const char *body = nl ? nl + 1 : end;
    req->body_len = (size_t)(end - body);
    req->body = malloc(req->body_len ? req->body_len : 1);
    CHECK(req->body != NULL);
    memcpy(req->body, body, req->body_len);

    responses = 0;
    ran = NULL;
    ran_count = 0;
    dispatch(req, url);
    check_answer(req, url, method_bit(method));

    req_free(req); /* server.c's own */
    free(url);
    free(target);
    args_free();
    free(resp_body);
    resp_body = NULL;
    return 0;
}
