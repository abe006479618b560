/*
 * health.c — GET /health: is this instance able to do its job?
 * 200 {"status":"healthy","database":"ok",...} when the database answers a
 * query; 503 {"status":"unhealthy","database":"unavailable","error":...}
 * otherwise, so a load balancer takes the instance out while its database
 * is away and back when it returns. A database that answers but refuses
 * writes (a full disk, an I/O error: the last group commit failed, webhooks
 * are answered 503) is unhealthy too, for WRITE_FAILURE_HOLD_MS after that
 * failure unless a commit works before. pending_events is the processing
 * backlog: stored webhooks not yet applied (0 when keeping pace).
 */
#include "api/api.h"
#include "core/util.h"
#include "ingest/ingest.h"

/* How long a failed group commit keeps /health unhealthy when nothing else
 * is tried since. Dialpad's retries keep it so while writes fail; without
 * traffic the instance comes back (a load balancer sends it some, which
 * either works or marks it again), so it never stays out for want of a
 * write that would show it works. A small write of /health's own would not
 * tell: a full disk still takes a few pages into the WAL file's room. */
#define WRITE_FAILURE_HOLD_MS 5000

static void get_health(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    char now[CTI_ISO_TIME_LEN];
    int64_t ms = cti_now_ms();
    cti_iso_time(ms, now);
    int64_t t0 = cti_mono_us();
    cti_db_t *db = cti_store_db(api->store);
    bool answers = cti_db_ping(db) == 0;
    int64_t failed = api->ingest ? cti_ingest_store_failed_at(api->ingest) : 0;
    int64_t ago = cti_mono_ms() - failed;
    bool refuses_writes = answers && failed && ago < WRITE_FAILURE_HOLD_MS;
    bool healthy = answers && !refuses_writes;
    int64_t db_us = cti_mono_us() - t0;
    json_t *body = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:I}", "status", healthy ? "healthy" : "unhealthy", "timestamp",
        now, "database", healthy ? "ok" : "unavailable", "backend", cti_store_backend(api->store),
        "uptime_s", (json_int_t)((ms - api->started_ms) / 1000), "database_us", (json_int_t)db_us);
    int64_t pending = 0;
    if (answers && cti_db_query_int(db, "SELECT COUNT(*) FROM raw_events WHERE status = 0", NULL, 0,
                                    &pending) == 0)
        json_object_set_new(body, "pending_events", json_integer(pending));
    if (!healthy) {
        json_object_set_new(body, "error", json_string("unavailable"));
        json_object_set_new(body, "message",
                            refuses_writes
                                ? json_sprintf("the database refuses writes: webhooks could "
                                               "not be stored %lld ms ago",
                                               (long long)ago)
                                : json_string("the database does not answer"));
    }
    cti_http_json(req, healthy ? 200 : 503, body);
}

void cti_api_health_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/health", get_health, api);
}
