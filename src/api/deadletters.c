/*
 * deadletters.c — events that could not be applied (admin token):
 *   GET  /internal/dead-letters?app_id=        list, newest first (paged)
 *   POST /internal/dead-letters/{id}/replay    put one back to pending
 *   POST /internal/dead-letters/replay         all (of {"app_id"} if given)
 * A replayed event is applied by the ingest worker at once; if it still
 * fails it is retried and parked again, with its new error.
 */
#include "api/common.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"
#include "ingest/ingest.h"
#include "repo/events.h"

#include <stdio.h>

static int add_dead(const cti_dead_t *d, void *ud)
{
    /* the event as stored; one the JSON library cannot read back (a number
     * beyond 64 bits: often why it is a dead letter) shown as its text */
    json_t *payload = d->payload ? json_loads(d->payload, 0, NULL) : NULL;
    if (!payload && d->payload)
        payload = json_string(d->payload);
    cti_api_page_add(ud,
                     json_pack("{s:o, s:s, s:s, s:s, s:s?, s:i, s:o, s:o}", "id",
                               cti_api_id_json(d->id), "app_id", d->app_id, "kind", d->kind,
                               "dedupe_key", d->dedupe_key, "error", d->error, "attempts",
                               d->attempts, "received_at", cti_api_time_json(d->received_at),
                               "payload", payload ? payload : json_null()),
                     d->id, NULL);
    return 0;
}

static void list_dead(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    int limit;
    bool has_cursor;
    int64_t before = 0;
    char unused[8];
    const char *app_id = cti_http_query(req, "app_id");
    if (!cti_api_admin(req, api) ||
        !cti_api_paging(req, &limit, &has_cursor, &before, unused, sizeof unused))
        return;
    if (app_id && !cti_is_uuid(app_id)) {
        cti_http_error(req, 400, "invalid_request", "'app_id' must be an app id (a UUID)");
        return;
    }
    cti_api_page_t page = cti_api_page();
    int rc = cti_dead_list(cti_store_db(api->store), app_id, before, limit, add_dead, &page);
    cti_api_answer_page(req, rc, &page, limit, "listing dead letters");
}

static void replay(cti_http_req_t *req, cti_api_t *api, int64_t id, const char *app_id)
{
    int64_t n = 0;
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_dead_replay(db, id, app_id, &n);
    if (rc < 0) {
        cti_api_store_error(req, rc, "replaying dead letters");
        return;
    }
    if (id && n == 0) {
        cti_http_error(req, 404, "not_found", "no dead letter with id %lld", (long long)id);
        return;
    }
    cti_api_audit(req, api, app_id, "admin", "dead_letter.replayed",
                  json_pack("{s:o, s:I}", "id", id ? cti_api_id_json(id) : json_null(),
                            "replayed", (json_int_t)n));
    cti_ingest_wake(api->ingest);
    cti_http_json(req, 200, json_pack("{s:I}", "replayed", (json_int_t)n));
}

static void replay_one(cti_http_req_t *req, void *ud)
{
    int64_t id;
    if (cti_api_admin(req, ud) && cti_api_id_param(req, "id", cti_http_param(req, "id"), &id))
        replay(req, ud, id, NULL);
}

static void replay_all(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    static const char *const allowed[] = {"app_id", NULL};
    const char *app_id = NULL;
    size_t len;
    if (!cti_api_admin(req, api))
        return;
    cti_http_body(req, &len);
    json_t *body = len ? cti_http_json_object_body(req) : NULL;
    if (len && !body)
        return;
    if (body && (!cti_api_only_fields(req, body, allowed) ||
                 !cti_api_string_field(req, body, "app_id", false, 36, &app_id)))
        goto done;
    if (app_id && !cti_is_uuid(app_id)) {
        cti_http_error(req, 400, "invalid_request", "'app_id' must be an app id (a UUID)");
        goto done;
    }
    replay(req, api, 0, app_id);
done:
    json_decref(body);
}

void cti_api_deadletters_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/internal/dead-letters", list_dead, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/dead-letters/{id}/replay", replay_one, api);
    cti_http_route(srv, CTI_HTTP_POST, "/internal/dead-letters/replay", replay_all, api);
}
