/*
 * webhooks.c — Dialpad webhooks in:
 *   POST /webhooks/dialpad/{app_id}   verified with that app's secret(s)
 *   POST /webhooks/dialpad            verified with DIALPAD_WEBHOOK_SECRET (routed to
 *                                     DIALPAD_DEFAULT_APP_ID or the only app), else with
 *                                     any app's own secret (routed to that app)
 *
 * The body is a JWT (HS256) or, for apps that allow it, plain JSON; the
 * format comes from the bytes. Answers, per the contract (Dialpad retries
 * only 5xx, so a 4xx is for requests that are truly bad):
 *   200 stored (or a duplicate of a stored event)   401 bad signature / alg / unsigned
 *   400 not a JWT or JSON object                    404 unknown or inactive app
 *   413 over 1 MiB (http/)                          503 cannot be stored now
 * The request is answered only after the group commit that stores it
 * (ingest.h): the handler suspends it and the ingest worker resumes it.
 */
#include "api/common.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "dialpad/jwt.h"
#include "ingest/ingest.h"
#include "repo/tenants.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what verifying an app's webhooks needs, cached ------------------------------------
 * An app's state and its valid secrets, kept for CACHE_TTL_MS so a webhook
 * costs no query. This instance forgets an entry at once when the app or its
 * secret changes (cti_api_webhooks_forget); a signature that fails against a
 * cached entry reloads it once, so a rotation made on another instance is
 * seen at once too, and a deactivation there within CACHE_TTL_MS. */
#define CACHE_TTL_MS 1000
#define CACHE_SLOTS 1024
#define CACHE_SECRETS 4

typedef struct {
    char app_id[37];
    bool exists, active, allow_unsigned;
    char secrets[CACHE_SECRETS][64];
    int nsecrets;
    int64_t loaded_at; /* 0: empty */
} app_cache_t;

static app_cache_t cache[CACHE_SLOTS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER; /* protects cache */

static app_cache_t *cache_slot(const char *app_id)
{
    uint32_t h = 2166136261u;
    for (const char *p = app_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &cache[h % CACHE_SLOTS];
}

void cti_api_webhooks_forget(const char *app_id)
{
    pthread_mutex_lock(&cache_lock);
    app_cache_t *c = cache_slot(app_id);
    if (!strcmp(c->app_id, app_id))
        c->loaded_at = 0;
    pthread_mutex_unlock(&cache_lock);
}

static int add_secret(const char *app_id, const char *secret, void *ud)
{
    app_cache_t *e = ud;
    if (e->nsecrets < CACHE_SECRETS)
        snprintf(e->secrets[e->nsecrets++], sizeof e->secrets[0], "%s", secret);
    return 0;
}

/* A copy of app_id's entry, loaded from the database when stale or when
 * fresh is asked. 0, or a store error. */
static int app_state(cti_db_t *db, const char *app_id, bool fresh, app_cache_t *out)
{
    int64_t now = cti_now_ms();
    pthread_mutex_lock(&cache_lock);
    app_cache_t *c = cache_slot(app_id);
    bool hit = !fresh && c->loaded_at && now - c->loaded_at < CACHE_TTL_MS &&
               !strcmp(c->app_id, app_id);
    if (hit)
        *out = *c;
    pthread_mutex_unlock(&cache_lock);
    if (hit)
        return 0;
    app_cache_t e;
    memset(&e, 0, sizeof e);
    snprintf(e.app_id, sizeof e.app_id, "%s", app_id);
    cti_app_t app;
    int rc = cti_apps_get(db, app_id, &app);
    if (rc != 0 && rc != CTI_ENOTFOUND)
        return rc;
    e.exists = rc == 0;
    e.active = e.exists && app.active;
    e.allow_unsigned = e.exists && app.allow_unsigned;
    if (e.active && (rc = cti_secrets_valid(db, app_id, now, add_secret, &e)) < 0)
        return rc;
    e.loaded_at = now;
    pthread_mutex_lock(&cache_lock);
    *cache_slot(app_id) = e;
    pthread_mutex_unlock(&cache_lock);
    *out = e;
    return 0;
}

/* The verified event, ready to store. */
typedef struct {
    char app_id[37];
    char *payload; /* exact JSON text */
    size_t len;
    cti_jdoc_t doc; /* the same, parsed (tokens owned; doc.text is payload) */
} verified_t;

static void reject(cti_http_req_t *req, int status, const char *code, const char *msg,
                   const char *app_id)
{
    cti_log(CTI_LOG_INFO, cti_http_request_id(req), "webhook rejected", CTI_LI("status", status),
            CTI_LS("reason", msg), CTI_LS("app_id", app_id));
    cti_http_error(req, status, code, "%s", msg);
}

/* ---- finding the secret that verifies ------------------------------------------------- */

typedef struct {
    const cti_jwt_t *jwt;
    char app_id[37];
    bool found;
} match_t;

static int try_secret(const char *app_id, const char *secret, void *ud)
{
    match_t *m = ud;
    if (!cti_jwt_verify(m->jwt, secret, strlen(secret)))
        return 0;
    snprintf(m->app_id, sizeof m->app_id, "%s", app_id);
    m->found = true;
    return 1;
}

static bool verify_cached(const app_cache_t *e, const cti_jwt_t *jwt)
{
    for (int i = 0; i < e->nsecrets; i++)
        if (cti_jwt_verify(jwt, e->secrets[i], strlen(e->secrets[i])))
            return true;
    return false;
}

/* Which app's secret verifies jwt (only app_id's, or any active app's when NULL).
 * 0 and app_id in out; CTI_EAUTH when none; a store error otherwise. */
static int verify_with_apps(cti_db_t *db, const cti_jwt_t *jwt, const char *app_id, char *out)
{
    if (app_id) {
        app_cache_t e;
        int rc = app_state(db, app_id, false, &e);
        if (rc == 0 && !verify_cached(&e, jwt)) /* rotated elsewhere since? look again */
            rc = app_state(db, app_id, true, &e);
        if (rc != 0)
            return rc;
        if (!verify_cached(&e, jwt))
            return CTI_EAUTH;
        snprintf(out, 37, "%s", app_id);
        return 0;
    }
    match_t m = {.jwt = jwt};
    int rc = cti_secrets_valid(db, app_id, cti_now_ms(), try_secret, &m);
    if (rc < 0)
        return rc;
    if (!m.found)
        return CTI_EAUTH;
    snprintf(out, 37, "%s", m.app_id);
    return 0;
}

/* The app POST /webhooks/dialpad routes to when it cannot tell from a secret:
 * DIALPAD_DEFAULT_APP_ID, or the only active app. */
static int default_app(cti_api_t *api, cti_db_t *db, char *out)
{
    if (api->cfg->dialpad_default_app_id) {
        snprintf(out, 37, "%s", api->cfg->dialpad_default_app_id);
        return 0;
    }
    int64_t n = 0;
    int rc = cti_apps_count_active(db, &n, out);
    return rc != 0 ? rc : n == 1 ? 0 : CTI_ENOTFOUND;
}

/* An app that must exist and be active (from the cache): 404 otherwise. */
static bool active_app(cti_http_req_t *req, cti_db_t *db, const char *id, app_cache_t *app)
{
    int rc = cti_is_uuid(id) ? app_state(db, id, false, app) : CTI_ENOTFOUND;
    if (rc == 0 && app->active)
        return true;
    if (rc == 0 || rc == CTI_ENOTFOUND)
        reject(req, 404, "not_found", "no such active app", id);
    else
        cti_api_store_error(req, rc, "looking up the app");
    return false;
}

/* ---- the two body formats --------------------------------------------------------------- */

/* Parses the event into out; it must be a JSON object. False after a 400. */
static bool parse_object(cti_http_req_t *req, const char *text, size_t len, const char *app,
                         cti_jdoc_t *out)
{
    char err[128], msg[200];
    int rc = cti_jdoc_parse(out, text, len, err, sizeof err);
    if (rc == 0 && cti_jdoc_type(out, 0) == CTI_JT_OBJECT)
        return true;
    snprintf(msg, sizeof msg, "the event must be a JSON object%s%s", rc ? ": " : "",
             rc ? err : "");
    reject(req, 400, "invalid_request", msg, app);
    cti_jdoc_free(out);
    return false;
}

/* A JWT body: parse, pin HS256, find the secret (for app_id, or by routing). */
static bool verify_jwt(cti_http_req_t *req, cti_api_t *api, const char *body, size_t len,
                       const char *app_id, verified_t *out)
{
    cti_db_t *db = cti_store_db(api->store);
    cti_jwt_t jwt;
    cti_jwt_result_t r = cti_jwt_parse(body, len, &jwt);
    bool ok = false;
    if (r == CTI_JWT_MALFORMED) {
        reject(req, 400, "invalid_request", "the body is not a valid JWT", app_id);
        return false;
    }
    if (r == CTI_JWT_BAD_ALG) {
        char msg[100];
        snprintf(msg, sizeof msg, "JWT alg \"%.20s\" is not accepted: Dialpad signs with HS256",
                 jwt.alg);
        reject(req, 401, "unauthorized", msg, app_id);
        goto done;
    }
    int rc;
    const char *global = api->cfg->dialpad_webhook_secret;
    if (app_id) {
        rc = verify_with_apps(db, &jwt, app_id, out->app_id);
    } else if (global && cti_jwt_verify(&jwt, global, strlen(global))) {
        app_cache_t app;
        rc = default_app(api, db, out->app_id);
        if (rc == CTI_ENOTFOUND) {
            reject(req, 404, "not_found",
                   "verified with DIALPAD_WEBHOOK_SECRET but no app to route to: set "
                   "DIALPAD_DEFAULT_APP_ID",
                   NULL);
            goto done;
        }
        if (rc == 0 && !active_app(req, db, out->app_id, &app)) /* unknown or deactivated */
            goto done;
    } else {
        rc = verify_with_apps(db, &jwt, NULL, out->app_id);
    }
    if (rc == CTI_EAUTH) {
        reject(req, 401, "unauthorized", "the JWT signature does not verify", app_id);
        goto done;
    }
    if (rc != 0) {
        cti_api_store_error(req, rc, "verifying the webhook");
        goto done;
    }
    if (!parse_object(req, jwt.payload, jwt.payload_len, out->app_id, &out->doc))
        goto done;
    out->payload = jwt.payload;
    out->len = jwt.payload_len;
    jwt.payload = NULL;
    ok = true;
done:
    cti_jwt_free(&jwt);
    return ok;
}

/* A plain JSON body: only for an app that allows unsigned events. */
static bool accept_json(cti_http_req_t *req, cti_api_t *api, const char *body, size_t len,
                        const char *app_id, verified_t *out)
{
    cti_db_t *db = cti_store_db(api->store);
    app_cache_t app;
    if (!app_id) {
        int rc = default_app(api, db, out->app_id);
        if (rc != 0) {
            if (rc == CTI_ENOTFOUND)
                reject(req, 401, "unauthorized",
                       "unsigned webhook and no app to route it to: use /webhooks/dialpad/{app_id}",
                       NULL);
            else
                cti_api_store_error(req, rc, "routing the webhook");
            return false;
        }
        app_id = out->app_id;
    }
    if (!active_app(req, db, app_id, &app))
        return false;
    if (!app.allow_unsigned) {
        reject(req, 401, "unauthorized",
               "unsigned (plain JSON) webhooks are not enabled for this app; sign them (JWT) or "
               "set allow_unsigned",
               app_id);
        return false;
    }
    if (!parse_object(req, body, len, app_id, &out->doc))
        return false;
    snprintf(out->app_id, sizeof out->app_id, "%s", app_id);
    out->payload = cti_strndup(body, len);
    out->len = len;
    out->doc.text = out->payload; /* the same bytes, where they will live */
    return true;
}

/* ---- answering after the commit ----------------------------------------------------------- */

/* On the ingest worker, once per webhook: the answer is one of two fixed texts. */
static void stored(void *ctx, int status, bool duplicate)
{
    static const char fresh[] = "{\"status\":\"ok\",\"duplicate\":false}";
    static const char again[] = "{\"status\":\"ok\",\"duplicate\":true}";
    cti_http_req_t *req = ctx;
    if (status == 200)
        cti_http_respond(req, 200, CTI_HTTP_JSON, cti_strdup(duplicate ? again : fresh),
                         duplicate ? sizeof again - 1 : sizeof fresh - 1);
    else
        cti_http_error(req, 503, "unavailable",
                       "the event could not be stored; retry (Dialpad retries 5xx by itself)");
    cti_http_resume(req);
}

static void receive(cti_http_req_t *req, cti_api_t *api, const char *app_id)
{
    size_t len;
    const char *body = cti_http_body(req, &len);
    verified_t v = {{0}, NULL, 0, {0}};
    app_cache_t app;
    if (app_id && !active_app(req, cti_store_db(api->store), app_id, &app))
        return;
    switch (cti_body_format(body, len)) {
    case CTI_BODY_JWT:
        if (!verify_jwt(req, api, body, len, app_id, &v))
            return;
        break;
    case CTI_BODY_JSON:
        if (!accept_json(req, api, body, len, app_id, &v))
            return;
        break;
    default:
        reject(req, 400, "invalid_request",
               len ? "the body is neither a JWT nor a JSON object" : "the body is empty", app_id);
        return;
    }
    cti_ingest_item_t item = {.payload = v.payload, .doc = v.doc,
                              .received_at = cti_now_ms(), .done = stored, .ctx = req};
    cti_ev_classify(&v.doc, v.payload, v.len, &item.info);
    snprintf(item.app_id, sizeof item.app_id, "%s", v.app_id);
    cti_http_suspend(req); /* before submit: the worker may answer at once */
    if (cti_ingest_submit(api->ingest, &item) != 0) {
        cti_log_msg(CTI_LOG_WARN, cti_http_request_id(req), "webhook refused: ingest queue full");
        cti_http_error(req, 503, "unavailable", "the server is busy; retry");
        cti_http_resume(req);
    }
}

static void post_for_app(cti_http_req_t *req, void *ud)
{
    receive(req, ud, cti_http_param(req, "app_id"));
}

static void post_routed(cti_http_req_t *req, void *ud)
{
    receive(req, ud, NULL);
}

void cti_api_webhooks_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/webhooks/dialpad/{app_id}", post_for_app, api);
    cti_http_route(srv, CTI_HTTP_POST, "/webhooks/dialpad", post_routed, api);
}
