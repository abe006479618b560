/*
 * dashboard.c — the live board, served by the server itself (no CDN, works
 * offline):
 *   GET /dashboard          the page (web/dashboard/index.html)
 *   GET /dashboard/{asset}  its stylesheet and script, and the JavaScript
 *                           client (clients/js/index.js) as client.js
 * The files are compiled in: the Makefile turns them into byte arrays with
 * tools/embed.sh (build/gen/dashboard_assets.h), so the binary alone serves
 * them. The page holds no secret and needs no authentication; it signs in
 * with an API key typed in or read from the URL fragment (#key=...), which
 * browsers never send, and then talks to /api and /ws like any client.
 *
 * Every answer carries a strict Content-Security-Policy (scripts, styles and
 * connections from this origin only, no inline script, no framing), nosniff,
 * no referrer, and an ETag with `Cache-Control: no-cache` so a browser
 * revalidates (304) and picks up a new build at once.
 *
 * Threads: any pool thread; the table is read-only after registration.
 */
#include "api/api.h"
#include "core/common.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    const unsigned char *data;
    size_t len;
} cti_embedded_t;

#include "dashboard_assets.h"

#define DASHBOARD_CSP                                                                              \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; "        \
    "frame-ancestors 'none'"

typedef struct {
    const cti_embedded_t *file;
    const char *content_type;
    char etag[24]; /* "\"" 16 hex digits "\"" */
} asset_t;

static asset_t assets[16];
static size_t nassets;

static const char *content_type_of(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".svg", "image/svg+xml"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* FNV-1a: an ETag that changes when the file does. */
static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static const asset_t *find_asset(const char *name)
{
    for (size_t i = 0; i < nassets; i++)
        if (strcmp(assets[i].file->name, name) == 0)
            return &assets[i];
    return NULL;
}

static void add_security_headers(cti_http_req_t *req)
{
    cti_http_add_header(req, "Content-Security-Policy", DASHBOARD_CSP);
    cti_http_add_header(req, "X-Content-Type-Options", "nosniff");
    cti_http_add_header(req, "Referrer-Policy", "no-referrer");
    cti_http_add_header(req, "X-Frame-Options", "DENY");
}

static void serve(cti_http_req_t *req, const asset_t *a)
{
    add_security_headers(req);
    cti_http_add_header(req, "Cache-Control", "no-cache");
    cti_http_add_header(req, "ETag", a->etag);
    const char *inm = cti_http_header(req, "If-None-Match");
    if (inm && strstr(inm, a->etag)) {
        cti_http_respond(req, 304, NULL, NULL, 0);
        return;
    }
    char *body = cti_malloc(a->file->len + 1); /* the server frees what it sends */
    memcpy(body, a->file->data, a->file->len);
    cti_http_respond(req, 200, a->content_type, body, a->file->len);
}

static void get_page(cti_http_req_t *req, void *ud)
{
    const asset_t *a = find_asset("index.html");
    assert(a);
    serve(req, a);
}

static void get_asset(cti_http_req_t *req, void *ud)
{
    const asset_t *a = find_asset(cti_http_param(req, "asset"));
    if (!a || strcmp(a->file->name, "index.html") == 0) {
        add_security_headers(req);
        cti_http_error(req, 404, "not_found", "no such dashboard file");
        return;
    }
    serve(req, a);
}

void cti_api_dashboard_register(cti_http_server_t *srv, cti_api_t *api)
{
    assert(cti_embedded_count <= sizeof assets / sizeof assets[0]);
    nassets = 0;
    for (size_t i = 0; i < cti_embedded_count; i++) {
        asset_t *a = &assets[nassets++];
        a->file = &cti_embedded[i];
        a->content_type = content_type_of(a->file->name);
        snprintf(a->etag, sizeof a->etag, "\"%016" PRIx64 "\"", fnv1a(a->file->data, a->file->len));
    }
    cti_http_route(srv, CTI_HTTP_GET, "/dashboard", get_page, api);
    cti_http_route(srv, CTI_HTTP_GET, "/dashboard/{asset}", get_asset, api);
}
