/*
 * metrics.c (api) — GET /metrics: Prometheus text format 0.0.4.
 *
 * Auth: Authorization: Bearer <INTERNAL_API_SECRET> or Bearer <METRICS_TOKEN>.
 * METRICS_TOKEN opens this endpoint and nothing else (the admin guard of
 * every other endpoint knows only the admin token). Without a token: 401;
 * a wrong one: 403 (both JSON, as the admin API answers; a braked address
 * gets 429).
 *
 * The counters and histograms are core/metrics.c's; this file adds the
 * gauges an operator alerts on, read when scraped (pool thread, the API's
 * database connection): the database answering, the processing backlog and
 * its oldest event's age, dead letters parked, the ingest queue, WebSocket
 * sockets open, and on SQLite the WAL file's size.
 */
#include "api/common.h"
#include "api/limits.h"
#include "core/codec.h"
#include "core/metrics.h"
#include "core/util.h"
#include "ingest/ingest.h"
#include "repo/deliveries.h"
#include "stream/hub.h"

#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define PROM_TEXT "text/plain; version=0.0.4; charset=utf-8"

/* True when the request carries METRICS_TOKEN (compared in constant time). */
static bool metrics_token(cti_http_req_t *req, const cti_api_t *api)
{
    const char *want = api->cfg->metrics_token;
    const char *auth = cti_http_header(req, "Authorization");
    if (!want || !auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *token = auth + 7;
    while (*token == ' ')
        token++;
    unsigned char a[CTI_SHA256_LEN], b[CTI_SHA256_LEN];
    cti_sha256(token, strlen(token), a); /* equal-length digests: no length leak */
    cti_sha256(want, strlen(want), b);
    return cti_consttime_eq(a, sizeof a, b, sizeof b);
}

/* ---- gauges read at scrape time ------------------------------------------------------------ */

static void gauge(cti_metrics_out_t *o, const char *name, const char *help, double v)
{
    cti_metrics_family(o, name, "gauge", help);
    cti_metrics_sample(o, name, NULL, NULL, v);
}

/* The store's state. A query that fails leaves its family out of this scrape
 * (an absent series, which absent() alerts catch) rather than a false 0. */
static void collect_store(cti_metrics_out_t *o, void *ud)
{
    cti_api_t *api = ud;
    cti_db_t *db = cti_store_db(api->store);
    bool up = cti_db_ping(db) == 0;
    cti_metrics_family(o, "cti_database_up", "gauge",
                       "1 when the database answers a query (SQLite, or the PostgreSQL "
                       "connection of the scraping thread), else 0");
    cti_metrics_sample(o, "cti_database_up", "backend", cti_store_backend(api->store), up);
    if (!up)
        return;
    int64_t n = 0;
    if (cti_db_query_int(db, "SELECT COUNT(*) FROM raw_events WHERE status = 0", NULL, 0, &n) == 0)
        gauge(o, "cti_events_pending", "Stored webhooks not yet applied (the processing backlog)",
              (double)n);
    int64_t oldest = 0;
    int rc =
        cti_db_query_int(db,
                         "SELECT COALESCE((SELECT received_at FROM raw_events WHERE status = 0 "
                         "ORDER BY id LIMIT 1), 0)",
                         NULL, 0, &oldest);
    if (rc == 0) {
        int64_t age = oldest ? cti_now_ms() - oldest : 0;
        gauge(o, "cti_events_pending_oldest_age_seconds",
              "Age of the oldest stored webhook not yet applied (0: none pending): the "
              "processing lag",
              age > 0 ? (double)age / 1000.0 : 0);
    }
    if (cti_db_query_int(db, "SELECT COUNT(*) FROM raw_events WHERE status = 2", NULL, 0, &n) == 0)
        gauge(o, "cti_dead_letters", "Events parked as dead letters (not yet replayed)", (double)n);
    if (cti_deliveries_pending_count(db, &n) == 0)
        gauge(o, "cti_outbound_queue_depth",
              "Outbound webhook deliveries pending (due now, in flight, or waiting for a retry)",
              (double)n);
}

static void collect_process(cti_metrics_out_t *o, void *ud)
{
    cti_api_t *api = ud;
    if (api->ingest)
        gauge(o, "cti_ingest_queue_depth",
              "Webhooks verified and queued, waiting for the next group commit",
              cti_ingest_queued(api->ingest));
    if (api->hub)
        gauge(o, "cti_ws_connections", "WebSocket connections open (or upgrading)",
              cti_hub_connections(api->hub));
    if (api->cfg->db_kind == CTI_DB_SQLITE) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s-wal", api->cfg->db_conninfo);
        gauge(o, "cti_sqlite_wal_bytes",
              "Size of the SQLite write-ahead log file (checkpoints copy it back; it is "
              "bounded near 256 MiB)",
              stat(path, &st) == 0 ? (double)st.st_size : 0);
        cti_metrics_family(o, "cti_sqlite_checkpoints_total", "counter",
                           "SQLite WAL checkpoints, by who ran them: the checkpointer thread, or "
                           "a committing thread (inline: the WAL grew past 256 MiB, or the "
                           "checkpointer had caught up)");
        cti_metrics_sample(o, "cti_sqlite_checkpoints_total", "by", "checkpointer",
                           (double)cti_counter_get(&cti_metrics.sqlite_checkpoints));
        cti_metrics_sample(o, "cti_sqlite_checkpoints_total", "by", "inline",
                           (double)cti_counter_get(&cti_metrics.sqlite_inline_checkpoints));
    }
    gauge(o, "cti_uptime_seconds", "Seconds since this process started serving",
          (double)(cti_now_ms() - api->started_ms) / 1000.0);
}

/* ---- the endpoint ---------------------------------------------------------------------------- */

static void get_metrics(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    /* METRICS_TOKEN: the admin guard's per-address limit, without its token */
    if (metrics_token(req, api) ? !cti_api_limit_addr(req, api, CTI_LIMIT_ADMIN)
                                : !cti_api_admin(req, api))
        return;
    size_t len;
    char *text = cti_metrics_render(&len);
    cti_http_add_header(req, "Cache-Control", "no-store");
    cti_http_respond(req, 200, PROM_TEXT, text, len);
}

void cti_api_metrics_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_metrics_collector(collect_store, api);
    cti_metrics_collector(collect_process, api);
    cti_http_route(srv, CTI_HTTP_GET, "/metrics", get_metrics, api);
}
