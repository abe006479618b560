/*
 * dialpad.c (api) — connecting an app to Dialpad (OAuth 2.0 + PKCE):
 *   POST   /internal/apps/{app_id}/dialpad/connect   admin: a one-use connect link
 *   POST   /api/dialpad/connect                      the app's key: the same
 *   GET    /authorize?app_id=&token=                 the link: 302 to Dialpad + cookie
 *   GET    /auth/dialpad/callback?code=&state=       Dialpad's redirect: finish (HTML)
 *   GET    /internal/apps/{app_id}/dialpad           status
 *   GET    /api/dialpad/connection                   status
 *   DELETE /internal/apps/{app_id}/dialpad           disconnect
 *   DELETE /api/dialpad/connection                   disconnect
 *
 * The link's token, the OAuth state and the browser's cookie are random
 * 256-bit values stored only as SHA-256 hashes; the PKCE verifier is sealed.
 * The state is good once, for 10 minutes, and only with the cookie set by
 * /authorize in the same browser: someone else's link or state gets nothing.
 * Whatever waits for Dialpad (the callback, disconnect) runs on a job thread
 * (core/jobs.h) while the request is suspended.
 */
#include "api/common.h"
#include "api/limits.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/seal.h"
#include "core/util.h"
#include "dialpad/client.h"
#include "dialpad/connection.h"
#include "dialpad/reconcile.h"
#include "repo/dialpad.h"
#include "repo/tenants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINK_TTL_MS (10 * 60 * 1000)
#define STATE_TTL_MS (10 * 60 * 1000)
#define COOKIE "cti_dialpad_oauth"
#define RANDOM_LEN 32 /* bytes of every link token, state, cookie and verifier */
#define RANDOM_TEXT 44 /* their base64url text, with the NUL */

/* A fresh random value as base64url (43 characters). */
static void random_text(char out[RANDOM_TEXT])
{
    unsigned char raw[RANDOM_LEN];
    cti_random_bytes(raw, sizeof raw);
    cti_b64url_encode(raw, sizeof raw, out);
    cti_seal_wipe(raw, sizeof raw);
}

/* SHA-256 of s as 64 hex digits: how links, states and cookies are stored. */
static void hash_text(const char *s, char out[65])
{
    unsigned char h[CTI_SHA256_LEN];
    cti_sha256(s, strlen(s), h);
    cti_hex(h, sizeof h, out);
}

/* ---- HTML pages (the browser endpoints) ----------------------------------------------- */

static void html_escape(cti_jw_t *w, const char *s)
{
    for (; *s; s++) {
        const char *e = *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '&' ? "&amp;"
                      : *s == '"' ? "&quot;" : *s == '\'' ? "&#39;" : NULL;
        if (e)
            cti_jw_raw(w, e, strlen(e));
        else
            cti_jw_raw(w, s, 1);
    }
}

/* A small page: a title and a sentence (both escaped). Never cached, never
 * sent as a referrer (the callback's URL holds the code). */
static void page(cti_http_req_t *req, int status, const char *title, const char *text)
{
    cti_jw_t w = {0};
    cti_jw_lit(&w, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                   "<meta name=\"viewport\" content=\"width=device-width\"><title>");
    html_escape(&w, title);
    cti_jw_lit(&w, "</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;"
                   "margin:4em auto;padding:0 1em;color:#222}</style></head><body><h1>");
    html_escape(&w, title);
    cti_jw_lit(&w, "</h1><p>");
    html_escape(&w, text);
    cti_jw_lit(&w, "</p></body></html>\n");
    size_t len;
    char *body = cti_jw_take(&w, &len);
    cti_http_add_header(req, "Cache-Control", "no-store");
    cti_http_add_header(req, "Referrer-Policy", "no-referrer");
    cti_http_add_header(req, "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
    cti_http_add_header(req, "X-Content-Type-Options", "nosniff");
    cti_http_respond(req, status, "text/html; charset=utf-8", body, len);
}

/* An error for a browser (HTML) or a program (JSON), as the client asks. */
static void browser_error(cti_http_req_t *req, int status, const char *code, const char *title,
                          const char *text)
{
    const char *accept = cti_http_header(req, "Accept");
    if (accept && strstr(accept, "text/html"))
        page(req, status, title, text);
    else
        cti_http_error(req, status, code, "%s", text);
}

/* ---- connect links ------------------------------------------------------------------------- */

static void make_link(cti_http_req_t *req, cti_api_t *api, const char *app_id, const char *actor)
{
    cti_app_t app;
    cti_db_t *db = cti_store_db(api->store);
    if (!cti_dpconn_configured(api->dpconn)) {
        cti_http_error(req, 409, "not_configured",
                       "no Dialpad OAuth client is configured (DIALPAD_SANDBOX_CLIENT_ID / "
                       "DIALPAD_PROD_CLIENT_ID and its secret)");
        return;
    }
    int rc = cti_apps_get(db, app_id, &app);
    if (rc == 0 && !app.active) {
        cti_http_error(req, 409, "app_inactive", "the app is deactivated: it cannot connect");
        return;
    }
    char token[RANDOM_TEXT], hash[65];
    random_text(token);
    hash_text(token, hash);
    int64_t now = cti_now_ms();
    if (rc == 0 && (rc = cti_db_begin(db)) == 0) {
        if ((rc = cti_dpflow_create(db, hash, app_id, actor, now, now + LINK_TTL_MS)) == 0)
            rc = cti_audit_add(db, app_id, actor, "connection.link_created", NULL,
                               cti_http_client_addr(req), cti_http_request_id(req), now);
        if (rc == 0)
            rc = cti_db_commit(db);
        else
            cti_db_rollback(db);
    }
    if (rc == CTI_ENOTFOUND) {
        cti_http_error(req, 404, "not_found", "no such app: %s", app_id);
        return;
    }
    if (rc != 0) {
        cti_api_store_error(req, rc, "creating the connect link");
        return;
    }
    char url[1024], expires[CTI_ISO_TIME_LEN];
    snprintf(url, sizeof url, "%s/authorize?app_id=%s&token=%s", api->cfg->public_base_url,
             app_id, token);
    cti_iso_time(now + LINK_TTL_MS, expires);
    cti_seal_wipe(token, sizeof token);
    cti_http_json(req, 201, json_pack("{s:s, s:s}", "authorize_url", url, "expires_at", expires));
    cti_seal_wipe(url, sizeof url);
}

static void admin_connect(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    const char *app_id = cti_http_param(req, "app_id");
    if (!cti_api_admin(req, api))
        return;
    if (!cti_is_uuid(app_id)) {
        cti_http_error(req, 404, "not_found", "no such app: %s", app_id);
        return;
    }
    make_link(req, api, app_id, "admin");
}

static void tenant_connect(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    if (!cti_api_tenant(req, api, &who))
        return;
    char actor[64];
    snprintf(actor, sizeof actor, "key:%s", who.key_id);
    make_link(req, api, who.app_id, actor);
}

/* ---- GET /authorize: the link, opened in the approver's browser ---------------------------- */

static void authorize(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    const char *app_id = cti_http_query(req, "app_id"), *token = cti_http_query(req, "token");
    if (!cti_api_limit_addr(req, api, CTI_LIMIT_ANON)) /* a link is a credential to guess */
        return;
    if (!cti_dpconn_configured(api->dpconn)) {
        browser_error(req, 409, "not_configured", "Dialpad is not configured",
                      "This server has no Dialpad OAuth client configured.");
        return;
    }
    if (!app_id || !token || !cti_is_uuid(app_id) || strlen(token) != RANDOM_TEXT - 1) {
        browser_error(req, 401, "unauthorized", "This link does not work",
                      "A connect link needs app_id and token. Ask for a new link.");
        return;
    }
    char link_hash[65], state[RANDOM_TEXT], cookie[RANDOM_TEXT], verifier[RANDOM_TEXT];
    char state_hash[65], cookie_hash[65];
    hash_text(token, link_hash);
    random_text(state);
    random_text(cookie);
    random_text(verifier);
    hash_text(state, state_hash);
    hash_text(cookie, cookie_hash);
    char *sealed = cti_seal(api->keys, verifier, strlen(verifier), state_hash);
    int64_t now = cti_now_ms();
    int rc = cti_dpflow_use_link(cti_store_db(api->store), link_hash, app_id, now, state_hash,
                                 cookie_hash, sealed, now + STATE_TTL_MS);
    free(sealed);
    if (rc == CTI_ENOTFOUND) {
        cti_log(CTI_LOG_INFO, cti_http_request_id(req), "dialpad: connect link refused",
                CTI_LS("app_id", app_id));
        browser_error(req, 401, "unauthorized", "This link does not work",
                      "The connect link is unknown, already used, expired or for another app. "
                      "Ask for a new link.");
        goto done;
    }
    if (rc != 0) {
        cti_api_store_error(req, rc, "using the connect link");
        goto done;
    }
    unsigned char digest[CTI_SHA256_LEN];
    char challenge[RANDOM_TEXT + 4], *q = NULL;
    cti_sha256(verifier, strlen(verifier), digest);
    cti_b64url_encode(digest, sizeof digest, challenge);
    cti_dp_form_add(&q, "response_type", "code");
    cti_dp_form_add(&q, "client_id", api->cfg->dialpad_client_id);
    cti_dp_form_add(&q, "redirect_uri", cti_dpconn_redirect_uri(api->dpconn));
    cti_dp_form_add(&q, "scope", api->cfg->dialpad_scopes);
    cti_dp_form_add(&q, "state", state);
    cti_dp_form_add(&q, "code_challenge", challenge);
    cti_dp_form_add(&q, "code_challenge_method", "S256");
    size_t n = strlen(api->cfg->dialpad_base_url) + strlen(q) + 32;
    char *location = cti_malloc(n), set_cookie[256];
    snprintf(location, n, "%s/oauth2/authorize?%s", api->cfg->dialpad_base_url, q);
    snprintf(set_cookie, sizeof set_cookie,
             COOKIE "=%s; Path=/auth/dialpad; Max-Age=600; HttpOnly; SameSite=Lax%s", cookie,
             strncmp(api->cfg->public_base_url, "https://", 8) ? "" : "; Secure");
    cti_http_add_header(req, "Location", location);
    cti_http_add_header(req, "Set-Cookie", set_cookie);
    cti_http_add_header(req, "Cache-Control", "no-store");
    cti_http_add_header(req, "Referrer-Policy", "no-referrer");
    cti_log(CTI_LOG_INFO, cti_http_request_id(req), "dialpad: connect started",
            CTI_LS("app_id", app_id));
    cti_http_respond(req, 302, "text/plain; charset=utf-8", cti_strdup("Redirecting to Dialpad\n"),
                     strlen("Redirecting to Dialpad\n"));
    free(location);
    free(q);
    cti_seal_wipe(set_cookie, sizeof set_cookie);
done:
    cti_seal_wipe(state, sizeof state);
    cti_seal_wipe(cookie, sizeof cookie);
    cti_seal_wipe(verifier, sizeof verifier);
}

/* ---- GET /auth/dialpad/callback: Dialpad sends the browser back ------------------------------ */

/* The value of our cookie in the request's Cookie header, copied into out. */
static bool read_cookie(cti_http_req_t *req, char *out, size_t cap)
{
    const char *h = cti_http_header(req, "Cookie");
    for (const char *p = h; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        size_t len = strcspn(p, ";");
        if (!strncmp(p, COOKIE "=", sizeof COOKIE) && len - sizeof COOKIE < cap) {
            memcpy(out, p + sizeof COOKIE, len - sizeof COOKIE);
            out[len - sizeof COOKIE] = '\0';
            return out[0] != '\0';
        }
        p += len;
    }
    return false;
}

typedef struct {
    cti_http_req_t *req;
    cti_api_t *api;
    char app_id[37];
    char actor[64];
    char *code, *verifier;
    cti_api_origin_t from;
} finish_job_t;

static void finish_free(finish_job_t *j)
{
    cti_seal_wipe_free(j->code);
    cti_seal_wipe_free(j->verifier);
    free(j);
}

static void finish_job(void *ud)
{
    finish_job_t *j = ud;
    cti_dpconn_outcome_t out;
    cti_dpconn_who_t who = {j->actor, j->from.client_addr, j->from.request_id};
    cti_dpconn_complete(j->api->dpconn, j->app_id, j->code, j->verifier, &who, &out);
    if (out.status == 200 && j->api->reconciler)
        cti_reconciler_request(j->api->reconciler, j->app_id); /* what it missed before */
    if (out.status == 200)
        page(j->req, 200, "Dialpad connected",
             "This app is now connected to your Dialpad account: calls and messages will reach "
             "it from now on. You can close this page.");
    else
        page(j->req, out.status, "Dialpad could not be connected", out.message);
    cti_http_resume(j->req);
    finish_free(j);
}

static void callback(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    const char *error = cti_http_query(req, "error"), *code = cti_http_query(req, "code");
    const char *state = cti_http_query(req, "state");
    if (!cti_api_limit_addr(req, api, CTI_LIMIT_ANON)) /* states too */
        return;
    cti_http_add_header(req, "Set-Cookie", COOKIE "=; Path=/auth/dialpad; Max-Age=0; HttpOnly; "
                                                  "SameSite=Lax");
    if (error && !strcmp(error, "access_denied")) {
        page(req, 200, "Connection declined",
             "The Dialpad connection was declined, so nothing was connected. To connect later, "
             "ask for a new connect link.");
        return;
    }
    if (error) {
        char text[300];
        snprintf(text, sizeof text, "Dialpad answered with an error (%.100s). Nothing was "
                                    "connected; ask for a new connect link and try again.", error);
        page(req, 502, "Dialpad could not be connected", text);
        return;
    }
    char cookie[128], state_hash[65], cookie_hash[65], app_id[37], created_by[64], sealed[512];
    if (!code || !*code || !state || !*state) {
        page(req, 400, "This page cannot be used",
             "The link from Dialpad lacks its code or state. Start again from a new connect link.");
        return;
    }
    if (!read_cookie(req, cookie, sizeof cookie)) {
        page(req, 400, "This page cannot be used",
             "This browser did not start this connection (no cookie). Open the connect link in "
             "this browser and try again.");
        return;
    }
    hash_text(state, state_hash);
    hash_text(cookie, cookie_hash);
    cti_seal_wipe(cookie, sizeof cookie);
    int rc = cti_dpflow_use_state(cti_store_db(api->store), state_hash, cookie_hash, cti_now_ms(),
                                  app_id, created_by, sealed, sizeof sealed);
    if (rc == CTI_ENOTFOUND) {
        page(req, 400, "This page cannot be used",
             "This connection attempt is unknown, already finished, expired, or was started in "
             "another browser. Start again from a new connect link.");
        return;
    }
    if (rc != 0) {
        page(req, 503, "Try again", "The server cannot reach its database right now.");
        return;
    }
    char *verifier = NULL;
    size_t n;
    if (cti_seal_open(api->keys, sealed, state_hash, &verifier, &n) != 0) {
        page(req, 500, "Dialpad could not be connected",
             "The connection attempt could not be read back. Start again from a new link.");
        return;
    }
    finish_job_t *j = cti_calloc(1, sizeof *j);
    *j = (finish_job_t){.req = req, .api = api, .code = cti_strdup(code), .verifier = verifier};
    snprintf(j->app_id, sizeof j->app_id, "%s", app_id);
    snprintf(j->actor, sizeof j->actor, "%s", created_by);
    cti_api_origin(req, &j->from);
    if (!cti_api_defer(req, api, finish_job, j))
        finish_free(j);
}

/* ---- status and disconnect ------------------------------------------------------------------- */

static void answer_status(cti_http_req_t *req, cti_api_t *api, const char *app_id)
{
    json_t *st;
    int rc = cti_dpconn_status_json(api->dpconn, cti_store_db(api->store), app_id, &st);
    if (rc != 0)
        cti_api_store_error(req, rc, "reading the Dialpad connection");
    else
        cti_http_json(req, 200, st);
}

/* {app_id} of an admin path, when it is an app: else the response is set. */
static bool admin_app(cti_http_req_t *req, cti_api_t *api, const char **app_id)
{
    cti_app_t app;
    *app_id = cti_http_param(req, "app_id");
    if (!cti_api_admin(req, api))
        return false;
    int rc = cti_is_uuid(*app_id) ? cti_apps_get(cti_store_db(api->store), *app_id, &app)
                                  : CTI_ENOTFOUND;
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no such app: %s", *app_id);
    else if (rc != 0)
        cti_api_store_error(req, rc, "reading the app");
    return rc == 0;
}

static void admin_status(cti_http_req_t *req, void *ud)
{
    const char *app_id;
    if (admin_app(req, ud, &app_id))
        answer_status(req, ud, app_id);
}

static void tenant_status(cti_http_req_t *req, void *ud)
{
    cti_principal_t who;
    if (cti_api_tenant(req, ud, &who))
        answer_status(req, ud, who.app_id);
}

typedef struct {
    cti_http_req_t *req;
    cti_api_t *api;
    char app_id[37], actor[64];
    cti_api_origin_t from;
} disconnect_job_t;

static void disconnect_job(void *ud)
{
    disconnect_job_t *j = ud;
    json_t *st;
    cti_dpconn_who_t who = {j->actor, j->from.client_addr, j->from.request_id};
    int rc = cti_dpconn_disconnect(j->api->dpconn, j->app_id, &who, &st);
    if (rc != 0)
        cti_api_store_error(j->req, rc, "disconnecting from Dialpad");
    else
        cti_http_json(j->req, 200, st);
    cti_http_resume(j->req);
    free(j);
}

static void disconnect(cti_http_req_t *req, cti_api_t *api, const char *app_id, const char *actor)
{
    disconnect_job_t *j = cti_calloc(1, sizeof *j);
    j->req = req;
    j->api = api;
    snprintf(j->app_id, sizeof j->app_id, "%s", app_id);
    snprintf(j->actor, sizeof j->actor, "%s", actor);
    cti_api_origin(req, &j->from);
    if (!cti_api_defer(req, api, disconnect_job, j))
        free(j);
}

static void admin_disconnect(cti_http_req_t *req, void *ud)
{
    const char *app_id;
    if (admin_app(req, ud, &app_id))
        disconnect(req, ud, app_id, "admin");
}

static void tenant_disconnect(cti_http_req_t *req, void *ud)
{
    cti_principal_t who;
    char actor[64];
    if (!cti_api_tenant(req, ud, &who))
        return;
    snprintf(actor, sizeof actor, "key:%s", who.key_id);
    disconnect(req, ud, who.app_id, actor);
}

/* ---- POST /internal/apps/{app_id}/dialpad/reconcile {"since"?, "until"?} ------------------ */

typedef struct {
    cti_http_req_t *req;
    cti_api_t *api;
    char app_id[37], rid[64];
    int64_t since, until;
} reconcile_job_t;

static void reconcile_job(void *ud)
{
    reconcile_job_t *j = ud;
    cti_reconcile_result_t res;
    char why[400];
    int rc = cti_reconcile_app(j->api->dpconn, j->api->store, j->api->ingest, j->app_id,
                               j->since, j->until, j->rid, &res, why, sizeof why);
    if (rc == 0)
        cti_http_json(j->req, 200,
                      json_pack("{s:I, s:I, s:I}", "calls_seen", (json_int_t)res.calls_seen,
                                "calls_added", (json_int_t)res.calls_added, "calls_updated",
                                (json_int_t)res.calls_updated));
    else if (rc == CTI_ENOTFOUND)
        cti_http_error(j->req, 409, "not_connected", "the app is not connected to Dialpad");
    else if (rc == CTI_ELIMIT && !why[0])
        cti_http_error(j->req, 409, "busy", "a reconciliation of this app is already under way");
    else if (rc == CTI_EAUTH)
        cti_http_error(j->req, 422, "dialpad_rejected",
                       "Dialpad refused its call list (reconciliation needs the calls:list scope "
                       "and a company admin's connection): %s", why);
    else
        cti_http_error(j->req, 502, "dialpad_unavailable", "reconciliation failed: %s", why);
    cti_http_resume(j->req);
    free(j);
}

static bool time_field(cti_http_req_t *req, json_t *body, const char *name, int64_t *out)
{
    json_t *v = body ? json_object_get(body, name) : NULL;
    if (!v)
        return true;
    if (!json_is_string(v) || cti_parse_iso_time(json_string_value(v), out) != 0) {
        cti_http_error(req, 400, "invalid_request", "'%s' must be an ISO 8601 time", name);
        return false;
    }
    return true;
}

static void admin_reconcile(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"since", "until", NULL};
    const char *app_id;
    if (!admin_app(req, api, &app_id))
        return;
    size_t len;
    cti_http_body(req, &len);
    json_t *body = len ? cti_http_json_object_body(req) : NULL;
    if (len && !body)
        return;
    int64_t now = cti_now_ms(), since = now - (int64_t)api->cfg->reconcile_window_s * 1000,
            until = now + 60000;
    bool ok = (!body || cti_api_only_fields(req, body, allowed)) &&
              time_field(req, body, "since", &since) && time_field(req, body, "until", &until);
    json_decref(body);
    if (!ok)
        return;
    if (since >= until) {
        cti_http_error(req, 400, "invalid_request", "'since' must be before 'until'");
        return;
    }
    reconcile_job_t *j = cti_calloc(1, sizeof *j);
    *j = (reconcile_job_t){.req = req, .api = api, .since = since, .until = until};
    snprintf(j->app_id, sizeof j->app_id, "%s", app_id);
    snprintf(j->rid, sizeof j->rid, "%s", cti_http_request_id(req));
    if (!cti_api_defer(req, api, reconcile_job, j))
        free(j);
}

void cti_api_dialpad_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/dialpad/reconcile", admin_reconcile,
                   api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/dialpad/connect", admin_connect, api);
    cti_http_route(srv, CTI_HTTP_POST, "/api/dialpad/connect", tenant_connect, api);
    cti_http_route(srv, CTI_HTTP_GET, "/authorize", authorize, api);
    cti_http_route(srv, CTI_HTTP_GET, "/auth/dialpad/callback", callback, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/dialpad", admin_status, api);
    cti_http_route(srv, CTI_HTTP_DELETE, "/internal/apps/{app_id}/dialpad", admin_disconnect, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/dialpad/connection", tenant_status, api);
    cti_http_route(srv, CTI_HTTP_DELETE, "/api/dialpad/connection", tenant_disconnect, api);
}
