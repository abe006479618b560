/*
 * apps.c — the admin API for tenants (/internal, admin token):
 *   POST   /internal/apps                                 create (key + webhook secret)
 *   GET    /internal/apps, /internal/apps/{app_id}        list, read
 *   PATCH  /internal/apps/{app_id}                        name, active, allow_unsigned
 *   DELETE /internal/apps/{app_id}                        deactivate
 *   POST   /internal/apps/{app_id}/api-key                new key; older ones end after grace
 *   POST   /internal/apps/{app_id}/api-key/revoke         one key or all
 *   GET    /internal/apps/{app_id}/api-key/status         keys, never their secrets
 *   POST   /internal/apps/{app_id}/webhook-secret/rotate  new secret; old one ends after grace
 *   GET    /internal/apps/{app_id}/audit                  who did what, newest first
 * Every change is written with its audit entry in one transaction.
 */
#include "api/common.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/log.h"
#include "core/tenant.h"
#include "core/util.h"
#include "repo/tenants.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_GRACE_S 86400
#define MAX_GRACE_S (30 * 86400)

static void webhook_url(const cti_api_t *api, const char *app_id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/webhooks/dialpad/%s", api->cfg->public_base_url, app_id);
}

static json_t *app_json(const cti_api_t *api, const cti_app_t *a, const char *secret)
{
    char url[600];
    webhook_url(api, a->id, url, sizeof url);
    json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:o, s:o}", "app_id", a->id, "name",
                          a->name, "active", a->active, "allow_unsigned", a->allow_unsigned,
                          "webhook_url", url, "created_at", cti_api_time_json(a->created_at),
                          "updated_at", cti_api_time_json(a->updated_at));
    if (secret)
        json_object_set_new(o, "webhook_secret", json_string(secret));
    return o;
}

/* Loads {app_id} from the path; sets 404 (or a store error) and returns false if absent. */
static bool load_app(cti_http_req_t *req, cti_api_t *api, cti_app_t *app)
{
    const char *id = cti_http_param(req, "app_id");
    int rc = cti_is_uuid(id) ? cti_apps_get(cti_store_db(api->store), id, app) : CTI_ENOTFOUND;
    if (rc == 0)
        return true;
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no such app: %s", id);
    else
        cti_api_store_error(req, rc, "reading the app");
    return false;
}

static void new_secret(char out[48], char id[17])
{
    unsigned char raw[32], rid[8];
    cti_random_bytes(raw, sizeof raw);
    cti_random_bytes(rid, sizeof rid);
    cti_b64url_encode(raw, sizeof raw, out);
    cti_hex(rid, sizeof rid, id);
}

/* Ends a transaction: commit, or roll back and answer the error. */
static bool finish(cti_http_req_t *req, cti_db_t *db, int rc, const char *what)
{
    if (rc == 0 && (rc = cti_db_commit(db)) == 0)
        return true;
    cti_db_rollback(db);
    cti_api_store_error(req, rc, what);
    return false;
}

/* Reads an optional grace_seconds (default one day). */
static bool grace_field(cti_http_req_t *req, json_t *body, int64_t *grace)
{
    bool present;
    *grace = DEFAULT_GRACE_S;
    return !body || cti_api_int_field(req, body, "grace_seconds", 0, MAX_GRACE_S, &present, grace);
}

/* ---- apps --------------------------------------------------------------------------------- */

static void create_app(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"name", "allow_unsigned", NULL};
    const char *name;
    bool has_unsigned, allow_unsigned = false;
    if (!cti_api_admin(req, api))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (!body)
        return;
    if (!cti_api_only_fields(req, body, allowed) ||
        !cti_api_string_field(req, body, "name", true, CTI_NAME_MAX, &name) ||
        !cti_api_bool_field(req, body, "allow_unsigned", &has_unsigned, &allow_unsigned))
        goto done;

    cti_app_t app = {.active = true, .allow_unsigned = allow_unsigned};
    app.created_at = app.updated_at = cti_now_ms();
    cti_uuid4(app.id);
    snprintf(app.name, sizeof app.name, "%s", name);
    cti_key_t key;
    char key_text[CTI_APIKEY_MAX], secret[48], secret_id[17];
    cti_apikey_generate(app.id, app.created_at, &key, key_text); /* bcrypt: outside the tx */
    new_secret(secret, secret_id);

    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_apps_insert(db, &app)) == 0 && (rc = cti_keys_insert(db, &key)) == 0)
        rc = cti_secrets_insert(db, api->keys, app.id, secret_id, secret, app.created_at);
    if (rc == 0)
        cti_api_audit(req, api, app.id, "admin", "app.created",
                      json_pack("{s:s, s:s}", "name", app.name, "key_id", key.key_id));
    if (!finish(req, db, rc, "creating the app"))
        goto done;
    cti_log(CTI_LOG_INFO, cti_http_request_id(req), "app created", CTI_LS("app_id", app.id),
            CTI_LS("key_id", key.key_id));
    json_t *out = app_json(api, &app, secret);
    json_object_set_new(out, "api_key", json_string(key_text));
    json_object_set_new(out, "key_id", json_string(key.key_id));
    cti_http_json(req, 201, out);
done:
    json_decref(body);
}

typedef struct {
    const cti_api_t *api; /* app_json needs it */
    cti_api_page_t page;
} app_page_t;

static int add_app(const cti_app_t *a, void *ud)
{
    app_page_t *p = ud;
    cti_api_page_add(&p->page, app_json(p->api, a, NULL), a->created_at, a->id);
    return 0;
}

static void list_apps(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    int limit;
    bool has_cursor;
    int64_t after = INT64_MIN;
    char after_id[64] = "";
    if (!cti_api_admin(req, api) ||
        !cti_api_paging(req, &limit, &has_cursor, &after, after_id, sizeof after_id))
        return;
    app_page_t page = {.api = api, .page = cti_api_page()};
    int rc = cti_apps_list(cti_store_db(api->store), after, after_id, limit, add_app, &page);
    cti_api_answer_page(req, rc, &page.page, limit, "listing apps");
}

static void get_app(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    char secret[64] = "";
    if (!cti_api_admin(req, api) || !load_app(req, api, &app))
        return;
    int rc =
        cti_secrets_current(cti_store_db(api->store), api->keys, app.id, secret, sizeof secret);
    if (rc == CTI_EAUTH) { /* logged by repo/tenants.c; rotating makes a new one */
        cti_http_error(req, 500, "internal_error",
                       "the webhook secret cannot be decrypted with TOKEN_ENCRYPTION_KEY or "
                       "TOKEN_ENCRYPTION_KEY_OLD (see the server log); set the key that sealed "
                       "it, or rotate the secret");
        return;
    }
    if (rc != 0 && rc != CTI_ENOTFOUND) {
        cti_api_store_error(req, rc, "reading the webhook secret");
        return;
    }
    cti_http_json(req, 200, app_json(api, &app, secret[0] ? secret : NULL));
    cti_seal_wipe(secret, sizeof secret);
}

/* Writes app (changed by PATCH or DELETE) with its audit entry; answers 200 with it. */
static void save_app(cti_http_req_t *req, cti_api_t *api, cti_app_t *app, const char *action,
                     json_t *detail)
{
    cti_db_t *db = cti_store_db(api->store);
    app->updated_at = cti_now_ms();
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_apps_update(db, app);
    if (rc == 0)
        cti_api_audit(req, api, app->id, "admin", action, json_incref(detail));
    json_decref(detail);
    if (!finish(req, db, rc, "updating the app"))
        return;
    cti_tenant_changed(app->id, CTI_TENANT_APP); /* a deactivated app's keys, webhooks stop now */
    cti_http_json(req, 200, app_json(api, app, NULL));
}

static void patch_app(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"name", "active", "allow_unsigned", NULL};
    cti_app_t app;
    const char *name;
    bool has_active, active, has_unsigned, allow_unsigned;
    if (!cti_api_admin(req, api))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (!body)
        return;
    if (cti_api_only_fields(req, body, allowed) &&
        cti_api_string_field(req, body, "name", false, CTI_NAME_MAX, &name) &&
        cti_api_bool_field(req, body, "active", &has_active, &active) &&
        cti_api_bool_field(req, body, "allow_unsigned", &has_unsigned, &allow_unsigned) &&
        load_app(req, api, &app)) {
        if (name)
            snprintf(app.name, sizeof app.name, "%s", name);
        if (has_active)
            app.active = active;
        if (has_unsigned)
            app.allow_unsigned = allow_unsigned;
        const char *action = has_active && !active ? "app.deactivated" : "app.updated";
        save_app(req, api, &app, action, json_deep_copy(body));
    }
    json_decref(body);
}

static void delete_app(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    if (!cti_api_admin(req, api) || !load_app(req, api, &app))
        return;
    app.active = false;
    save_app(req, api, &app, "app.deactivated", NULL);
}

/* The start both rotations share: admin, an optional {"grace_seconds"} body,
 * the app. False when the response is set; *body must be released either way. */
static bool rotation_request(cti_http_req_t *req, cti_api_t *api, cti_app_t *app,
                             int64_t *grace, json_t **body)
{
    static const char *const allowed[] = {"grace_seconds", NULL};
    *body = NULL;
    return cti_api_admin(req, api) && cti_api_optional_object_body(req, body) &&
           (!*body || cti_api_only_fields(req, *body, allowed)) &&
           grace_field(req, *body, grace) && load_app(req, api, app);
}

/* ---- API keys ------------------------------------------------------------------------------- */

static void create_key(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    json_t *body;
    int64_t grace;
    if (!rotation_request(req, api, &app, &grace, &body))
        goto done;
    cti_key_t key;
    char text[CTI_APIKEY_MAX];
    int64_t now = cti_now_ms(), ends = now + grace * 1000;
    cti_apikey_generate(app.id, now, &key, text);
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_keys_insert(db, &key)) == 0)
        rc = cti_keys_expire_others(db, app.id, key.key_id, ends);
    if (rc == 0)
        cti_api_audit(req, api, app.id, "admin", "key.rotated",
                      json_pack("{s:s, s:I}", "key_id", key.key_id, "grace_seconds",
                                (json_int_t)grace));
    if (!finish(req, db, rc, "creating the key"))
        goto done;
    cti_tenant_changed(app.id, CTI_TENANT_KEYS);
    cti_http_json(req, 201,
                  json_pack("{s:s, s:s, s:s, s:o, s:o}", "api_key", text, "key_id", key.key_id,
                            "app_id", app.id, "created_at", cti_api_time_json(now),
                            "previous_keys_expire_at", cti_api_time_json(ends)));
done:
    json_decref(body);
}

static void revoke_keys(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"key_id", NULL};
    cti_app_t app;
    json_t *body = NULL;
    const char *key_id = NULL;
    if (!cti_api_admin(req, api) || !cti_api_optional_object_body(req, &body))
        return;
    if ((body && (!cti_api_only_fields(req, body, allowed) ||
                  !cti_api_string_field(req, body, "key_id", false, 64, &key_id))) ||
        !load_app(req, api, &app))
        goto done;
    cti_db_t *db = cti_store_db(api->store);
    int64_t n = 0;
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_keys_revoke(db, app.id, key_id, cti_now_ms(), &n);
    if (rc == CTI_ENOTFOUND) {
        cti_db_rollback(db);
        cti_http_error(req, 404, "not_found", "no such key for this app: %s", key_id);
        goto done;
    }
    if (rc == 0)
        cti_api_audit(req, api, app.id, "admin", "key.revoked",
                      json_pack("{s:s?, s:I}", "key_id", key_id, "revoked", (json_int_t)n));
    if (!finish(req, db, rc, "revoking keys"))
        goto done;
    cti_tenant_changed(app.id, CTI_TENANT_KEYS);
    cti_http_json(req, 200, json_pack("{s:s, s:s?, s:I}", "app_id", app.id, "key_id", key_id,
                                      "revoked", (json_int_t)n));
done:
    json_decref(body);
}

static int add_key(const cti_key_t *k, void *ud)
{
    int64_t now = cti_now_ms();
    const char *status = k->revoked_at                       ? "revoked"
                         : k->expires_at && k->expires_at <= now ? "expired"
                         : k->expires_at                     ? "expiring"
                                                             : "active";
    json_array_append_new(
        ud, json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "key_id", k->key_id, "hint", k->hint,
                      "status", status, "created_at", cti_api_time_json(k->created_at),
                      "last_used_at", cti_api_time_json(k->last_used_at), "expires_at",
                      cti_api_time_json(k->expires_at), "revoked_at",
                      cti_api_time_json(k->revoked_at)));
    return 0;
}

static void key_status(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    if (!cti_api_admin(req, api) || !load_app(req, api, &app))
        return;
    json_t *keys = json_array();
    int rc = cti_keys_list(cti_store_db(api->store), app.id, add_key, keys);
    if (rc < 0) {
        json_decref(keys);
        cti_api_store_error(req, rc, "listing keys");
        return;
    }
    cti_http_json(req, 200, json_pack("{s:s, s:o}", "app_id", app.id, "keys", keys));
}

/* ---- webhook secret ---------------------------------------------------------------------------- */

static void rotate_secret(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    json_t *body;
    int64_t grace;
    if (!rotation_request(req, api, &app, &grace, &body))
        goto done;
    char secret[48], secret_id[17];
    new_secret(secret, secret_id);
    int64_t now = cti_now_ms(), ends = now + grace * 1000;
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_secrets_expire_current(db, app.id, ends)) == 0)
        rc = cti_secrets_insert(db, api->keys, app.id, secret_id, secret, now);
    if (rc == 0)
        cti_api_audit(req, api, app.id, "admin", "webhook_secret.rotated",
                      json_pack("{s:I}", "grace_seconds", (json_int_t)grace));
    if (!finish(req, db, rc, "rotating the webhook secret"))
        goto done;
    cti_tenant_changed(app.id, CTI_TENANT_SECRET);
    char url[600];
    webhook_url(api, app.id, url, sizeof url);
    cti_http_json(req, 200,
                  json_pack("{s:s, s:s, s:s, s:o}", "app_id", app.id, "webhook_secret", secret,
                            "webhook_url", url, "previous_secret_expires_at",
                            cti_api_time_json(ends)));
done:
    json_decref(body);
}

/* ---- audit --------------------------------------------------------------------------------------- */

static int add_audit(const cti_audit_t *a, void *ud)
{
    json_t *detail = a->detail ? json_loads(a->detail, 0, NULL) : NULL;
    cti_api_page_add(ud,
                     json_pack("{s:I, s:o, s:s, s:s, s:o, s:s, s:s}", "id", (json_int_t)a->id,
                               "at", cti_api_time_json(a->at), "actor", a->actor, "action",
                               a->action, "detail", detail ? detail : json_object(),
                               "client_addr", a->client_addr, "request_id", a->request_id),
                     a->id, NULL);
    return 0;
}

static void list_audit(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_app_t app;
    int limit;
    bool has_cursor;
    int64_t before = 0;
    char unused[8];
    if (!cti_api_admin(req, api) ||
        !cti_api_paging(req, &limit, &has_cursor, &before, unused, sizeof unused) ||
        !load_app(req, api, &app))
        return;
    cti_api_page_t page = cti_api_page();
    int rc = cti_audit_list(cti_store_db(api->store), app.id, before, limit, add_audit, &page);
    cti_api_answer_page(req, rc, &page, limit, "reading the audit log");
}

void cti_api_apps_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps", create_app, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps", list_apps, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}", get_app, api);
    cti_http_route(srv, CTI_HTTP_PATCH, "/internal/apps/{app_id}", patch_app, api);
    cti_http_route(srv, CTI_HTTP_DELETE, "/internal/apps/{app_id}", delete_app, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/api-key", create_key, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/api-key/revoke", revoke_keys, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/api-key/status", key_status, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/webhook-secret/rotate",
                   rotate_secret, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/audit", list_audit, api);
}
