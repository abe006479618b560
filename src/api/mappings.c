/*
 * mappings.c — user mappings: a Dialpad user id ↔ the tenant's CRM user id.
 * The same operations behind two doors:
 *   admin  (admin token, app in the path)
 *     POST   /internal/apps/{app_id}/users/map          {"dialpad_user_id", "crm_user_id"}
 *     POST   /internal/apps/{app_id}/users/batch-map    {"mappings": [...]} (all or nothing)
 *     GET    /internal/apps/{app_id}/users/mappings
 *     DELETE /internal/apps/{app_id}/users/mappings/dialpad/{dialpad_user_id}
 *   tenant (API key; the key's app only)
 *     GET    /api/user-mappings, GET|PUT|DELETE /api/user-mappings/{dialpad_user_id}
 */
#include "api/common.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/tenant.h"
#include "core/util.h"
#include "repo/tenants.h"

#include <stdio.h>
#include <string.h>

#define CRM_ID_MAX CTI_CRM_ID_MAX
#define BATCH_MAX 1000

/* Who is acting on which app: filled by the door the request came through. */
typedef struct {
    char app_id[37];
    char actor[64];
} scope_t;

static bool admin_scope(cti_http_req_t *req, cti_api_t *api, scope_t *s)
{
    if (!cti_api_admin(req, api))
        return false;
    const char *id = cti_http_param(req, "app_id");
    cti_app_t app;
    int rc = cti_is_uuid(id) ? cti_apps_get(cti_store_db(api->store), id, &app) : CTI_ENOTFOUND;
    if (rc == CTI_ENOTFOUND) {
        cti_http_error(req, 404, "not_found", "no such app: %s", id);
        return false;
    }
    if (rc != 0) {
        cti_api_store_error(req, rc, "reading the app");
        return false;
    }
    snprintf(s->app_id, sizeof s->app_id, "%s", app.id);
    snprintf(s->actor, sizeof s->actor, "admin");
    return true;
}

static bool tenant_scope(cti_http_req_t *req, cti_api_t *api, scope_t *s)
{
    cti_principal_t who;
    if (!cti_api_tenant(req, api, &who))
        return false;
    snprintf(s->app_id, sizeof s->app_id, "%s", who.app_id);
    snprintf(s->actor, sizeof s->actor, "key:%s", who.key_id);
    return true;
}

static json_t *mapping_json(const cti_mapping_t *m)
{
    return json_pack("{s:o, s:s, s:o, s:o}", "dialpad_user_id",
                     cti_api_id_json(m->dialpad_user_id), "crm_user_id", m->crm_user_id,
                     "created_at", cti_api_time_json(m->created_at), "updated_at",
                     cti_api_time_json(m->updated_at));
}

/* Stores one mapping with its audit entry and answers 201 (new) or 200 (replaced). */
static void put_one(cti_http_req_t *req, cti_api_t *api, const scope_t *s, int64_t dialpad_id,
                    const char *crm_id)
{
    cti_db_t *db = cti_store_db(api->store);
    bool created = false;
    int64_t now = cti_now_ms();
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_mappings_put(db, s->app_id, dialpad_id, crm_id, now, &created);
    if (rc == 0)
        cti_api_audit(req, api, s->app_id, s->actor, "mapping.set",
                      json_pack("{s:o, s:s}", "dialpad_user_id", cti_api_id_json(dialpad_id),
                                "crm_user_id", crm_id));
    if (rc == 0) {
        if ((rc = cti_db_commit(db)) == 0)
            cti_tenant_changed(s->app_id, CTI_TENANT_MAPPINGS);
    } else {
        cti_db_rollback(db);
    }
    cti_mapping_t m;
    if (rc == 0)
        rc = cti_mappings_get(db, s->app_id, dialpad_id, &m);
    if (rc != 0) {
        cti_api_store_error(req, rc, "saving the mapping");
        return;
    }
    cti_http_json(req, created ? 201 : 200, mapping_json(&m));
}

static void delete_one(cti_http_req_t *req, cti_api_t *api, const scope_t *s, int64_t dialpad_id)
{
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_mappings_delete(db, s->app_id, dialpad_id);
    if (rc == 0)
        cti_api_audit(req, api, s->app_id, s->actor, "mapping.deleted",
                      json_pack("{s:o}", "dialpad_user_id", cti_api_id_json(dialpad_id)));
    if (rc == 0 && (rc = cti_db_commit(db)) == 0) {
        cti_tenant_changed(s->app_id, CTI_TENANT_MAPPINGS);
        cti_http_json(req, 200, json_pack("{s:o, s:b}", "dialpad_user_id",
                                          cti_api_id_json(dialpad_id), "deleted", 1));
        return;
    }
    cti_db_rollback(db);
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no mapping for Dialpad user %lld",
                       (long long)dialpad_id);
    else
        cti_api_store_error(req, rc, "deleting the mapping");
}

static int add_mapping(const cti_mapping_t *m, void *ud)
{
    cti_api_page_add(ud, mapping_json(m), m->dialpad_user_id, NULL);
    return 0;
}

static void list(cti_http_req_t *req, cti_api_t *api, const scope_t *s)
{
    int limit;
    bool has_cursor;
    int64_t after = 0;
    char unused[8];
    if (!cti_api_paging(req, &limit, &has_cursor, &after, unused, sizeof unused))
        return;
    cti_api_page_t page = cti_api_page();
    int rc = cti_mappings_list(cti_store_db(api->store), s->app_id, after, limit, add_mapping,
                               &page);
    cti_api_answer_page(req, rc, &page, limit, "listing mappings");
}

/* ---- admin door ---------------------------------------------------------------------------- */

static void admin_map(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"dialpad_user_id", "crm_user_id", NULL};
    scope_t s;
    int64_t id;
    const char *crm;
    if (!admin_scope(req, api, &s))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (body && cti_api_only_fields(req, body, allowed) &&
        cti_api_id_field(req, body, "dialpad_user_id", &id) &&
        cti_api_string_field(req, body, "crm_user_id", true, CRM_ID_MAX, &crm))
        put_one(req, api, &s, id, crm);
    json_decref(body);
}

/* What is wrong with one batch item, or NULL when it is a good
 * {"dialpad_user_id": id, "crm_user_id": "..."}. */
static const char *batch_item_problem(json_t *it)
{
    const char *key;
    json_t *v, *crm = json_object_get(it, "crm_user_id");
    int64_t id;
    if (!json_is_object(it))
        return "must be an object {dialpad_user_id, crm_user_id}";
    json_object_foreach(it, key, v) {
        if (strcmp(key, "dialpad_user_id") && strcmp(key, "crm_user_id"))
            return "only dialpad_user_id and crm_user_id are allowed";
    }
    if (!cti_api_id_value(json_object_get(it, "dialpad_user_id"), &id))
        return "'dialpad_user_id' must be a Dialpad id (a positive number or numeric string)";
    size_t chars = json_is_string(crm) ? cti_api_utf8_len(json_string_value(crm)) : 0;
    if (!json_is_string(crm) || chars == 0 || chars > CRM_ID_MAX ||
        json_string_length(crm) != strlen(json_string_value(crm)))
        return "'crm_user_id' must be a string of 1 to 255 characters";
    return NULL;
}

/* Validates every item first (400 names the first bad one), then stores all in one tx. */
static void admin_batch(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"mappings", NULL};
    scope_t s;
    if (!admin_scope(req, api, &s))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (!body || !cti_api_only_fields(req, body, allowed))
        goto done;
    json_t *items = json_object_get(body, "mappings"), *it;
    size_t n = json_array_size(items), i;
    if (!json_is_array(items) || n == 0 || n > BATCH_MAX) {
        cti_http_error(req, 400, "invalid_request",
                       "'mappings' must be an array of 1 to %d {dialpad_user_id, crm_user_id}",
                       BATCH_MAX);
        goto done;
    }
    json_array_foreach(items, i, it) {
        const char *why = batch_item_problem(it);
        if (why) {
            cti_http_error(req, 400, "invalid_request", "mappings[%zu]: %s", i, why);
            goto done;
        }
    }
    cti_db_t *db = cti_store_db(api->store);
    int64_t now = cti_now_ms(), created = 0;
    int rc = cti_db_begin(db);
    json_array_foreach(items, i, it) {
        int64_t id = 0;
        bool was_new = false;
        cti_api_id_value(json_object_get(it, "dialpad_user_id"), &id);
        if (rc == 0)
            rc = cti_mappings_put(db, s.app_id, id,
                                  json_string_value(json_object_get(it, "crm_user_id")), now,
                                  &was_new);
        created += was_new;
    }
    if (rc == 0)
        cti_api_audit(req, api, s.app_id, s.actor, "mapping.batch",
                      json_pack("{s:I}", "count", (json_int_t)n));
    if (rc == 0 && (rc = cti_db_commit(db)) == 0) {
        cti_tenant_changed(s.app_id, CTI_TENANT_MAPPINGS);
        cti_http_json(req, 200, json_pack("{s:I, s:I, s:I}", "mapped", (json_int_t)n, "created",
                                          (json_int_t)created, "updated",
                                          (json_int_t)((int64_t)n - created)));
    } else {
        cti_db_rollback(db);
        cti_api_store_error(req, rc, "saving the mappings");
    }
done:
    json_decref(body);
}

static void admin_list(cti_http_req_t *req, void *ud)
{
    scope_t s;
    if (admin_scope(req, ud, &s))
        list(req, ud, &s);
}

static void admin_delete(cti_http_req_t *req, void *ud)
{
    scope_t s;
    int64_t id;
    if (admin_scope(req, ud, &s) &&
        cti_api_id_param(req, "dialpad_user_id", cti_http_param(req, "dialpad_user_id"), &id))
        delete_one(req, ud, &s, id);
}

/* ---- tenant door ---------------------------------------------------------------------------- */

static void tenant_list(cti_http_req_t *req, void *ud)
{
    scope_t s;
    if (tenant_scope(req, ud, &s))
        list(req, ud, &s);
}

static void tenant_get(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    scope_t s;
    int64_t id;
    cti_mapping_t m;
    if (!tenant_scope(req, api, &s) ||
        !cti_api_id_param(req, "dialpad_user_id", cti_http_param(req, "dialpad_user_id"), &id))
        return;
    int rc = cti_mappings_get(cti_store_db(api->store), s.app_id, id, &m);
    if (rc == 0)
        cti_http_json(req, 200, mapping_json(&m));
    else if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 404, "not_found", "no mapping for Dialpad user %lld", (long long)id);
    else
        cti_api_store_error(req, rc, "reading the mapping");
}

static void tenant_put(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"crm_user_id", NULL};
    scope_t s;
    int64_t id;
    const char *crm;
    if (!tenant_scope(req, api, &s) ||
        !cti_api_id_param(req, "dialpad_user_id", cti_http_param(req, "dialpad_user_id"), &id))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (body && cti_api_only_fields(req, body, allowed) &&
        cti_api_string_field(req, body, "crm_user_id", true, CRM_ID_MAX, &crm))
        put_one(req, api, &s, id, crm);
    json_decref(body);
}

static void tenant_delete(cti_http_req_t *req, void *ud)
{
    scope_t s;
    int64_t id;
    if (tenant_scope(req, ud, &s) &&
        cti_api_id_param(req, "dialpad_user_id", cti_http_param(req, "dialpad_user_id"), &id))
        delete_one(req, ud, &s, id);
}

void cti_api_mappings_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/users/map", admin_map, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/apps/{app_id}/users/batch-map", admin_batch,
                   api);
    cti_http_route(srv, CTI_HTTP_GET, "/internal/apps/{app_id}/users/mappings", admin_list, api);
    cti_http_route(srv, CTI_HTTP_DELETE,
                   "/internal/apps/{app_id}/users/mappings/dialpad/{dialpad_user_id}",
                   admin_delete, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/user-mappings", tenant_list, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/user-mappings/{dialpad_user_id}", tenant_get, api);
    cti_http_route(srv, CTI_HTTP_PUT, "/api/user-mappings/{dialpad_user_id}", tenant_put, api);
    cti_http_route(srv, CTI_HTTP_DELETE, "/api/user-mappings/{dialpad_user_id}", tenant_delete,
                   api);
}
