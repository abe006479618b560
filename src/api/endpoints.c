/*
 * endpoints.c (api) — customers' outbound webhook endpoints: where the
 * server POSTs the app's events (outbound/), and their delivery log. The
 * same operations behind two doors, with the same shapes:
 *   tenant (API key; the key's app only)   /api/webhook-endpoints...
 *   admin  (admin token, app in the path)  /internal/apps/{app_id}/webhook-endpoints...
 * under which:
 *   POST   ""                                   create {"url", "types"?, "description"?}
 *   GET    "", "/{endpoint_id}"                 list, read (never the secret)
 *   PATCH  "/{endpoint_id}"                     url, types, description, enabled
 *   DELETE "/{endpoint_id}"                     the endpoint and its deliveries
 *   POST   "/{endpoint_id}/rotate-secret"       new secret; the old one signs during a grace
 *   GET    "/{endpoint_id}/deliveries"          the delivery log, newest first
 *   POST   "/{endpoint_id}/replay"              every event after since_seq, again
 *   POST   "/{endpoint_id}/deliveries/{delivery_id}/retry"
 * The secret is in the answers of create and rotate only; never in a log or
 * an audit entry. Every change is written with its audit entry, then the
 * sender is told (cti_outbound_reload / cti_outbound_wake). Pool threads.
 */
#include "api/common.h"
#include "core/common.h"
#include "core/seal.h"
#include "core/util.h"
#include "outbound/outbound.h"
#include "outbound/sign.h"
#include "outbound/types.h"
#include "outbound/url.h"
#include "repo/deliveries.h"
#include "repo/endpoints.h"
#include "repo/tenants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENDPOINTS_MAX 20    /* per app: each event is sent to every one */
#define TYPES_MAX 32        /* patterns in "types" */
#define DESCRIPTION_MAX 200 /* characters */
#define DEFAULT_GRACE_S 86400
#define MAX_GRACE_S (7 * 86400)

/* Who is acting on which app: filled by the door the request came through. */
typedef struct {
    char app_id[37];
    char actor[64];
} scope_t;

/* The door is told by the path: /internal/... is the admin's. */
static bool scope(cti_http_req_t *req, cti_api_t *api, scope_t *s)
{
    if (strncmp(cti_http_path(req), "/internal/", 10) != 0) {
        cti_principal_t who;
        if (!cti_api_tenant(req, api, &who))
            return false;
        snprintf(s->app_id, sizeof s->app_id, "%s", who.app_id);
        snprintf(s->actor, sizeof s->actor, "key:%s", who.key_id);
        return true;
    }
    if (!cti_api_admin(req, api))
        return false;
    const char *id = cti_http_param(req, "app_id");
    cti_app_t app;
    int rc = cti_is_uuid(id) ? cti_apps_get(cti_store_db(api->store), id, &app) : CTI_ENOTFOUND;
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no such app: %s", id);
    else if (rc != 0)
        cti_api_store_error(req, rc, "reading the app");
    if (rc != 0)
        return false;
    snprintf(s->app_id, sizeof s->app_id, "%s", app.id);
    snprintf(s->actor, sizeof s->actor, "admin");
    return true;
}

/* Loads the {endpoint_id} of the path (without secrets); false after a 404
 * (also for another app's) or a store error. Clear e either way. */
static bool load(cti_http_req_t *req, cti_api_t *api, const scope_t *s, cti_endpoint_t *e)
{
    const char *id = cti_http_param(req, "endpoint_id");
    memset(e, 0, sizeof *e);
    int rc = cti_is_uuid(id) ? cti_endpoint_get(cti_store_db(api->store), NULL, s->app_id, id, e)
                             : CTI_ENOTFOUND;
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no such webhook endpoint: %s", id);
    else if (rc != 0)
        cti_api_store_error(req, rc, "reading the webhook endpoint");
    return rc == 0;
}

/* ---- output ----------------------------------------------------------------------------------- */

static json_t *types_json(const char *types)
{
    if (!types)
        return json_null();
    json_t *a = json_array();
    for (const char *p = types; *p;) {
        size_t n = strcspn(p, " ");
        if (n)
            json_array_append_new(a, json_stringn(p, n));
        p += n;
        p += strspn(p, " ");
    }
    return a;
}

static json_t *endpoint_json(const cti_endpoint_t *e)
{
    return json_pack("{s:s, s:s, s:o, s:o, s:b, s:o, s:o, s:o}", "id", e->id, "url", e->url,
                     "types", types_json(e->types), "description",
                     e->description ? json_string(e->description) : json_null(), "enabled",
                     e->enabled, "disabled_reason",
                     e->disabled_reason ? json_string(e->disabled_reason) : json_null(),
                     "created_at", cti_api_time_json(e->created_at), "updated_at",
                     cti_api_time_json(e->updated_at));
}

static const char *status_name(int status)
{
    return status == CTI_DLV_SUCCEEDED ? "succeeded" : status == CTI_DLV_FAILED ? "failed"
                                                                              : "pending";
}

static json_t *delivery_json(const cti_delivery_t *d)
{
    return json_pack("{s:o, s:I, s:s, s:s, s:i, s:o, s:o, s:o, s:o}", "id", cti_api_id_json(d->id),
                     "event_seq", (json_int_t)d->seq, "event", d->event, "status",
                     status_name(d->status), "attempts", d->attempts, "last_attempt_at",
                     cti_api_time_json(d->last_attempt_at), "last_status_code",
                     d->last_status_code ? json_integer(d->last_status_code) : json_null(),
                     "last_error", d->last_error ? json_string(d->last_error) : json_null(),
                     "next_attempt_at", cti_api_time_json(d->next_attempt_at));
}

/* ---- input ------------------------------------------------------------------------------------- */

static bool url_field(cti_http_req_t *req, cti_api_t *api, json_t *body, bool required,
                      const char **out)
{
    char why[300];
    if (!cti_api_string_field(req, body, "url", required, CTI_ENDPOINT_URL_MAX, out))
        return false;
    if (*out && cti_outbound_url_check(*out, api->cfg->env == CTI_ENV_PRODUCTION,
                                       api->cfg->outbound_allow_private, why, sizeof why) != 0) {
        cti_http_error(req, 400, "invalid_request", "%s", why);
        return false;
    }
    return true;
}

/* "types": absent (*present false), null (every event: *out NULL), or an
 * array of 1 to TYPES_MAX patterns, stored space-separated without repeats
 * (*out: the caller frees it). */
static bool types_field(cti_http_req_t *req, json_t *body, bool *present, char **out)
{
    json_t *v = json_object_get(body, "types"), *it;
    size_t i, n = json_array_size(v);
    char why[200];
    *out = NULL;
    *present = v != NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_array(v) || n == 0 || n > TYPES_MAX) {
        cti_http_error(req, 400, "invalid_request",
                       "'types' must be an array of 1 to %d event names or families (e.g. "
                       "[\"call.ringing\", \"sms.*\"]), or null for every event",
                       TYPES_MAX);
        return false;
    }
    json_array_foreach(v, i, it) {
        const char *p = json_string_value(it);
        if (!p || cti_evtypes_check(p, why, sizeof why) != 0) {
            cti_http_error(req, 400, "invalid_request", "types[%zu]: %s", i,
                           p ? why : "must be a string");
            return false;
        }
    }
    size_t cap = 1;
    json_array_foreach(v, i, it) {
        cap += strlen(json_string_value(it)) + 1;
    }
    char *s = cti_malloc(cap), *at = s;
    *s = '\0';
    json_array_foreach(v, i, it) {
        const char *p = json_string_value(it);
        size_t len = strlen(p);
        bool again = false;
        for (const char *q = s; *q && !again; q += strcspn(q, " "), q += strspn(q, " "))
            again = strcspn(q, " ") == len && !strncmp(q, p, len);
        if (!again)
            at += sprintf(at, "%s%s", at == s ? "" : " ", p);
    }
    *out = s;
    return true;
}

/* "description": absent (*present false), null (none), or 1-200 characters. */
static bool description_field(cti_http_req_t *req, json_t *body, bool *present, const char **out)
{
    json_t *v = json_object_get(body, "description");
    *present = v != NULL;
    *out = NULL;
    return !v || json_is_null(v) ||
           cti_api_string_field(req, body, "description", false, DESCRIPTION_MAX, out);
}

/* Ends a transaction: commit, or roll back and answer the error (what: for
 * the log). True when committed. */
static bool finish(cti_http_req_t *req, cti_db_t *db, int rc, const char *what)
{
    if (rc == 0 && (rc = cti_db_commit(db)) == 0)
        return true;
    cti_db_rollback(db);
    if (rc == CTI_ENOTFOUND) /* deleted meanwhile */
        cti_http_error(req, 404, "not_found", "no such webhook endpoint: %s",
                       cti_http_param(req, "endpoint_id"));
    else
        cti_api_store_error(req, rc, what);
    return false;
}

static json_t *audit_detail(const char *endpoint_id)
{
    return json_pack("{s:s}", "endpoint_id", endpoint_id);
}

/* ---- create, read, list ------------------------------------------------------------------------ */

static int count_one(const cti_endpoint_t *e, void *ud)
{
    ++*(int *)ud;
    return 0;
}

/* Inserts e (a new secret is made) with its audit entry, unless the app has
 * ENDPOINTS_MAX; answers 201 with the secret. */
static void insert(cti_http_req_t *req, cti_api_t *api, const scope_t *s, cti_endpoint_t *e)
{
    cti_db_t *db = cti_store_db(api->store);
    int n = 0, rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_endpoint_list(db, s->app_id, count_one, &n);
    if (rc == 0 && n >= ENDPOINTS_MAX) {
        cti_db_rollback(db);
        cti_http_error(req, 409, "too_many_endpoints",
                       "an app has at most %d webhook endpoints: delete one first", ENDPOINTS_MAX);
        return;
    }
    e->secret = cti_whsec_new();
    if (rc == 0)
        rc = cti_endpoint_insert(db, api->keys, e);
    if (rc == 0)
        cti_api_audit(req, api, s->app_id, s->actor, "webhook_endpoint.created",
                      json_pack("{s:s, s:o}", "endpoint_id", e->id, "types",
                                types_json(e->types)));
    if (finish(req, db, rc, "creating the webhook endpoint")) {
        cti_outbound_reload(api->outbound);
        json_t *o = endpoint_json(e);
        json_object_set_new(o, "secret", json_string(e->secret));
        cti_http_json(req, 201, o);
    }
}

static void create(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"url", "types", "description", NULL};
    scope_t s;
    if (!scope(req, api, &s))
        return;
    json_t *body = cti_http_json_object_body(req);
    const char *url = NULL, *description = NULL;
    char *types = NULL;
    bool has_types, has_description;
    if (body && cti_api_only_fields(req, body, allowed) && url_field(req, api, body, true, &url) &&
        types_field(req, body, &has_types, &types) &&
        description_field(req, body, &has_description, &description)) {
        cti_endpoint_t e = {.enabled = true};
        cti_uuid4(e.id);
        snprintf(e.app_id, sizeof e.app_id, "%s", s.app_id);
        e.url = cti_strdup(url);
        e.description = cti_strdup(description);
        e.types = types;
        types = NULL;
        e.created_at = e.updated_at = cti_now_ms();
        insert(req, api, &s, &e);
        cti_endpoint_clear(&e);
    }
    free(types);
    json_decref(body);
}

static void get_one(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    if (scope(req, api, &s) && load(req, api, &s, &e))
        cti_http_json(req, 200, endpoint_json(&e));
    cti_endpoint_clear(&e);
}

typedef struct {
    cti_api_page_t page;
    int64_t after_created;
    char after_id[40];
    bool has_cursor;
    int limit;
} list_t;

/* Keyset paging over the few endpoints of an app: (created_at, id). */
static int add_endpoint(const cti_endpoint_t *e, void *ud)
{
    list_t *l = ud;
    if (l->has_cursor && (e->created_at < l->after_created ||
                          (e->created_at == l->after_created && strcmp(e->id, l->after_id) <= 0)))
        return 0;
    if (l->page.n == l->limit)
        return 1;
    cti_api_page_add(&l->page, endpoint_json(e), e->created_at, e->id);
    return 0;
}

static void list(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    list_t l = {.after_created = 0};
    if (!scope(req, api, &s) || !cti_api_paging(req, &l.limit, &l.has_cursor, &l.after_created,
                                                l.after_id, sizeof l.after_id))
        return;
    l.page = cti_api_page();
    int rc = cti_endpoint_list(cti_store_db(api->store), s.app_id, add_endpoint, &l);
    cti_api_answer_page(req, rc, &l.page, l.limit, "listing webhook endpoints");
}

/* ---- change, delete, rotate -------------------------------------------------------------------- */

/* Applies the body's fields to e (false after a 400); *what lists them. */
static bool apply_patch(cti_http_req_t *req, cti_api_t *api, json_t *body, cti_endpoint_t *e,
                        json_t *what)
{
    static const char *const allowed[] = {"url", "types", "description", "enabled", NULL};
    const char *url, *description;
    char *types;
    bool has_types, has_description, has_enabled, enabled;
    if (!cti_api_only_fields(req, body, allowed) || !url_field(req, api, body, false, &url) ||
        !types_field(req, body, &has_types, &types))
        return false;
    if (!description_field(req, body, &has_description, &description) ||
        !cti_api_bool_field(req, body, "enabled", &has_enabled, &enabled)) {
        free(types);
        return false;
    }
    if (!url && !has_types && !has_description && !has_enabled) {
        cti_http_error(req, 400, "invalid_request",
                       "give at least one of 'url', 'types', 'description', 'enabled'");
        return false;
    }
    if (url) {
        free(e->url);
        e->url = cti_strdup(url);
        json_array_append_new(what, json_string("url"));
    }
    if (has_types) {
        free(e->types);
        e->types = types;
        json_array_append_new(what, json_string("types"));
    }
    if (has_description) {
        free(e->description);
        e->description = cti_strdup(description);
        json_array_append_new(what, json_string("description"));
    }
    if (has_enabled) {
        e->enabled = enabled;
        json_array_append_new(what, json_string("enabled"));
    }
    return true;
}

/* Reads, changes and writes the endpoint in one transaction (on SQLite it
 * holds the write lock from the read on, so two PATCHes do not interleave). */
static void patch(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    json_t *body = NULL, *what = json_array();
    cti_db_t *db = cti_store_db(api->store);
    int rc;
    if (!scope(req, api, &s) || !(body = cti_http_json_object_body(req)))
        goto done;
    const char *id = cti_http_param(req, "endpoint_id");
    /* the row locked before it is read: two PATCHes of different fields at
     * once both land (the second reads what the first wrote) */
    if ((rc = cti_db_begin(db)) != 0 ||
        (cti_is_uuid(id) && (rc = cti_endpoint_lock(db, s.app_id, id)) != 0)) {
        finish(req, db, rc, "changing the webhook endpoint");
        goto done;
    }
    if (!load(req, api, &s, &e) || !apply_patch(req, api, body, &e, what)) {
        cti_db_rollback(db);
        goto done;
    }
    e.updated_at = cti_now_ms();
    if ((rc = cti_endpoint_update(db, &e)) == 0)
        cti_api_audit(req, api, s.app_id, s.actor, "webhook_endpoint.updated",
                      json_pack("{s:s, s:O, s:b}", "endpoint_id", e.id, "fields", what,
                                "enabled", e.enabled));
    if (!finish(req, db, rc, "changing the webhook endpoint"))
        goto done;
    cti_outbound_reload(api->outbound);
    cti_endpoint_clear(&e);
    if (load(req, api, &s, &e)) /* as stored: enabling cleared disabled_reason */
        cti_http_json(req, 200, endpoint_json(&e));
done:
    cti_endpoint_clear(&e);
    json_decref(what);
    json_decref(body);
}

static void delete_one(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    if (!scope(req, api, &s) || !load(req, api, &s, &e))
        goto done;
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_endpoint_delete(db, s.app_id, e.id)) == 0)
        cti_api_audit(req, api, s.app_id, s.actor, "webhook_endpoint.deleted",
                      audit_detail(e.id));
    if (finish(req, db, rc, "deleting the webhook endpoint")) {
        cti_outbound_reload(api->outbound);
        cti_http_json(req, 200, json_pack("{s:s, s:b}", "id", e.id, "deleted", 1));
    }
done:
    cti_endpoint_clear(&e);
}

/* Answers a rotation: the endpoint, its new secret, and until when the
 * previous one signs too (null: it does not). */
static void answer_rotated(cti_http_req_t *req, cti_api_t *api, const scope_t *s, const char *id)
{
    cti_endpoint_t e = {.enabled = false};
    int rc = cti_endpoint_get(cti_store_db(api->store), api->keys, s->app_id, id, &e);
    if (rc != 0) {
        cti_api_store_error(req, rc, "reading the rotated webhook endpoint");
        return;
    }
    json_t *o = endpoint_json(&e);
    json_object_set_new(o, "secret", json_string(e.secret));
    json_object_set_new(o, "old_secret_expires_at",
                        cti_api_time_json(e.old_secret ? e.old_secret_expires_at : 0));
    cti_endpoint_clear(&e);
    cti_http_json(req, 200, o);
}

static void rotate(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"grace_seconds", NULL};
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    json_t *body = NULL;
    int64_t grace = DEFAULT_GRACE_S;
    bool present;
    if (!scope(req, api, &s) || !load(req, api, &s, &e) || !cti_api_optional_object_body(req, &body) ||
        (body && (!cti_api_only_fields(req, body, allowed) ||
                  !cti_api_int_field(req, body, "grace_seconds", 0, MAX_GRACE_S, &present,
                                     &grace))))
        goto done;
    char *secret = cti_whsec_new();
    int64_t now = cti_now_ms();
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 &&
        (rc = cti_endpoint_rotate(db, api->keys, s.app_id, e.id, secret, now + grace * 1000,
                                  now)) == 0)
        cti_api_audit(req, api, s.app_id, s.actor, "webhook_endpoint.secret_rotated",
                      json_pack("{s:s, s:I}", "endpoint_id", e.id, "grace_seconds",
                                (json_int_t)grace));
    cti_seal_wipe_free(secret);
    if (finish(req, db, rc, "rotating the webhook endpoint's secret")) {
        cti_outbound_reload(api->outbound);
        answer_rotated(req, api, &s, e.id);
    }
done:
    cti_endpoint_clear(&e);
    json_decref(body);
}

/* ---- deliveries --------------------------------------------------------------------------------- */

static int add_delivery(const cti_delivery_t *d, void *ud)
{
    cti_api_page_add(ud, delivery_json(d), d->id, NULL);
    return 0;
}

static bool status_param(cti_http_req_t *req, int *status)
{
    const char *v = cti_http_query(req, "status");
    *status = !v                        ? -1
            : !strcmp(v, "pending")   ? CTI_DLV_PENDING
            : !strcmp(v, "succeeded") ? CTI_DLV_SUCCEEDED
            : !strcmp(v, "failed")    ? CTI_DLV_FAILED
                                      : -2;
    if (*status == -2)
        cti_http_error(req, 400, "invalid_request",
                       "'status' must be pending, succeeded or failed");
    return *status != -2;
}

static void deliveries(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    int limit, status;
    bool has_cursor;
    int64_t before = 0;
    char unused[8];
    if (scope(req, api, &s) && load(req, api, &s, &e) && status_param(req, &status) &&
        cti_api_paging(req, &limit, &has_cursor, &before, unused, sizeof unused)) {
        cti_api_page_t page = cti_api_page();
        int rc = cti_deliveries_list(cti_store_db(api->store), e.id, status,
                                     has_cursor ? before : 0, limit, add_delivery, &page);
        cti_api_answer_page(req, rc, &page, limit, "listing deliveries");
    }
    cti_endpoint_clear(&e);
}

static void replay(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"since_seq", NULL};
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    json_t *body = NULL;
    int64_t since = 0, count = 0;
    bool present;
    if (!scope(req, api, &s) || !load(req, api, &s, &e) ||
        !(body = cti_http_json_object_body(req)) || !cti_api_only_fields(req, body, allowed) ||
        !cti_api_int_field(req, body, "since_seq", 0, INT64_MAX, &present, &since))
        goto done;
    if (!present) {
        cti_http_error(req, 400, "invalid_request",
                       "'since_seq' is required: every event with a greater seq is sent again "
                       "(0: the whole log kept)");
        goto done;
    }
    /* a transaction per page of the log (repo/deliveries.c), then its audit entry */
    int rc = cti_deliveries_replay(cti_store_db(api->store), s.app_id, e.id, e.types, since,
                                   cti_now_ms(), &count);
    if (rc != 0) {
        cti_api_store_error(req, rc, "replaying events");
        goto done;
    }
    cti_api_audit(req, api, s.app_id, s.actor, "webhook_endpoint.replayed",
                  json_pack("{s:s, s:I, s:I}", "endpoint_id", e.id, "since_seq",
                            (json_int_t)since, "replayed", (json_int_t)count));
    cti_outbound_wake(api->outbound);
    cti_http_json(req, 202, json_pack("{s:I}", "replayed", (json_int_t)count));
done:
    cti_endpoint_clear(&e);
    json_decref(body);
}

typedef struct {
    int64_t id;
    json_t *out;
} find_t;

static int find_delivery(const cti_delivery_t *d, void *ud)
{
    find_t *f = ud;
    if (d->id == f->id)
        f->out = delivery_json(d);
    return 1;
}

static void retry(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    cti_endpoint_t e = {.enabled = false};
    const char *text = cti_http_param(req, "delivery_id");
    find_t f = {0, NULL};
    if (!scope(req, api, &s) || !load(req, api, &s, &e))
        goto done;
    if (!text || text[0] < '1' || text[0] > '9' || cti_parse_i64(text, &f.id) != 0) {
        cti_http_error(req, 404, "not_found", "no such delivery: %s", text);
        goto done;
    }
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_delivery_retry(db, e.id, f.id, cti_now_ms())) == 0)
        cti_api_audit(req, api, s.app_id, s.actor, "webhook_endpoint.delivery_retried",
                      json_pack("{s:s, s:o}", "endpoint_id", e.id, "delivery_id",
                                cti_api_id_json(f.id)));
    if (rc == CTI_ENOTFOUND) {
        cti_db_rollback(db);
        cti_http_error(req, 404, "not_found", "no such delivery of this endpoint: %s", text);
        goto done;
    }
    if (!finish(req, db, rc, "retrying the delivery"))
        goto done;
    cti_outbound_wake(api->outbound);
    rc = cti_deliveries_list(db, e.id, -1, f.id + 1, 1, find_delivery, &f);
    if (rc >= 0 && f.out)
        cti_http_json(req, 202, f.out);
    else if (rc >= 0) /* deleted meanwhile */
        cti_http_error(req, 404, "not_found", "no such delivery of this endpoint: %s", text);
    else
        cti_api_store_error(req, rc, "reading the delivery");
done:
    cti_endpoint_clear(&e);
}

void cti_api_endpoints_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/api/webhook-endpoints", create, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/webhook-endpoints", list, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/webhook-endpoints/{endpoint_id}", get_one, api);
    cti_http_route(srv, CTI_HTTP_PATCH, "/api/webhook-endpoints/{endpoint_id}", patch, api);
    cti_http_route(srv, CTI_HTTP_DELETE, "/api/webhook-endpoints/{endpoint_id}", delete_one, api);
    cti_http_route(srv, CTI_HTTP_POST, "/api/webhook-endpoints/{endpoint_id}/rotate-secret",
                   rotate, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/webhook-endpoints/{endpoint_id}/deliveries",
                   deliveries, api);
    cti_http_route(srv, CTI_HTTP_POST, "/api/webhook-endpoints/{endpoint_id}/replay", replay,
                   api);
    cti_http_route(srv, CTI_HTTP_POST,
                   "/api/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", retry,
                   api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/webhook-endpoints", create, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/webhook-endpoints", list, api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}",
                   get_one, api);
    cti_http_route(srv, CTI_HTTP_PATCH,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}", patch, api);
    cti_http_route(srv, CTI_HTTP_DELETE,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}", delete_one, api);
    cti_http_route(srv, CTI_HTTP_POST,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}/rotate-secret",
                   rotate, api);
    cti_http_route(srv, CTI_HTTP_GET,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}/deliveries",
                   deliveries, api);
    cti_http_route(srv, CTI_HTTP_POST,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}/replay", replay, api);
    /* one literal per pattern: tests/blackbox/test_openapi.py reads them */
    cti_http_route(srv, CTI_HTTP_POST,
                   "/internal/apps/{app_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry",
                   retry, api);
}
