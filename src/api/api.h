/*
 * api.h — the endpoints. Each file in api/ registers its routes with the
 * HTTP server and turns requests into calls on services and the store.
 * Handlers run on HTTP pool threads (see http/http.h).
 */
#ifndef CTI_API_API_H
#define CTI_API_API_H

#include <stdint.h>

#include "auth/auth.h"
#include "core/config.h"
#include "http/http.h"
#include "store/store.h"

/* What handlers share: read-only after start-up (auth is internally locked). */
typedef struct cti_api {
    const cti_config_t *cfg;
    cti_store_t *store;
    cti_auth_t *auth;
    const struct cti_seal_keys *keys; /* seal secrets at rest (core/seal.h) */
    struct cti_ingest *ingest;
    struct cti_dpconn *dpconn; /* Dialpad connections (dialpad/connection.h) */
    struct cti_jobs *jobs;     /* blocking work off the pool threads (core/jobs.h) */
    struct cti_reconciler *reconciler; /* dialpad/reconcile.h */
    struct cti_hub *hub;
    struct cti_limits *limits; /* rate limits (api/limits.h); NULL: none */
    struct cti_outbound *outbound; /* the outbound webhook sender (outbound/outbound.h); may be NULL */
    int64_t started_ms;
} cti_api_t;

/* Registers every endpoint. api must outlive the server. */
void cti_api_register(cti_http_server_t *srv, cti_api_t *api);

/* Per-area registration, called by cti_api_register. */
void cti_api_health_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_apps_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_mappings_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_webhooks_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_deadletters_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_calls_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_events_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_records_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_ws_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_dialpad_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_dial_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_metrics_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_dashboard_register(cti_http_server_t *srv, cti_api_t *api);
void cti_api_endpoints_register(cti_http_server_t *srv, cti_api_t *api);

#endif
