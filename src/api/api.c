/* api.c — one place that lists every area of endpoints. */
#include "api/api.h"

void cti_api_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_api_health_register(srv, api);
    cti_api_apps_register(srv, api);
    cti_api_mappings_register(srv, api);
    cti_api_webhooks_register(srv, api);
    cti_api_deadletters_register(srv, api);
    cti_api_calls_register(srv, api);
    cti_api_events_register(srv, api);
    cti_api_records_register(srv, api);
    cti_api_ws_register(srv, api);
    cti_api_dialpad_register(srv, api);
    cti_api_dial_register(srv, api);
    cti_api_metrics_register(srv, api);
    cti_api_dashboard_register(srv, api);
    cti_api_endpoints_register(srv, api);
}
