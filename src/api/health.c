/*
 * health.c — GET /health: is this instance able to do its job?
 * 200 {"status":"healthy","database":"ok",...} when the database answers a
 * query; 503 {"status":"unhealthy","database":"unavailable","error":...}
 * otherwise, so a load balancer takes the instance out while its database
 * is away and back when it returns. pending_events is the processing
 * backlog: stored webhooks not yet applied (0 when keeping pace).
 */
#include "api/api.h"
#include "core/util.h"

static void get_health(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    char now[CTI_ISO_TIME_LEN];
    int64_t ms = cti_now_ms();
    cti_iso_time(ms, now);
    int64_t t0 = cti_mono_us();
    cti_db_t *db = cti_store_db(api->store);
    int rc = cti_db_ping(db);
    int64_t db_us = cti_mono_us() - t0;
    json_t *body = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "status",
                             rc == 0 ? "healthy" : "unhealthy", "timestamp", now, "database",
                             rc == 0 ? "ok" : "unavailable", "backend",
                             cti_store_backend(api->store), "uptime_s",
                             (json_int_t)((ms - api->started_ms) / 1000), "database_us", (json_int_t)db_us);
    int64_t pending = 0;
    if (rc == 0 && cti_db_query_int(db, "SELECT COUNT(*) FROM raw_events WHERE status = 0", NULL,
                                    0, &pending) == 0)
        json_object_set_new(body, "pending_events", json_integer(pending));
    if (rc != 0) {
        json_object_set_new(body, "error", json_string("unavailable"));
        json_object_set_new(body, "message", json_string("the database does not answer"));
    }
    cti_http_json(req, rc == 0 ? 200 : 503, body);
}

void cti_api_health_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/health", get_health, api);
}
