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
 *   413 over 1 MiB (http/)                          503 cannot be stored now, or the
 *                                                       app's secret cannot be decrypted
 * Verifying and routing are dialpad/webhook.c's; this handler answers its
 * verdict, or queues the event and suspends the request: it is answered only
 * after the group commit that stores it (ingest.h), by the ingest worker.
 */
#include "api/common.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "dialpad/webhook.h"
#include "ingest/ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- answering after the commit ----------------------------------------------------------- */

/* On the ingest worker, once per webhook: the answer is one of two fixed texts. */
static void stored(void *ctx, int status, bool duplicate)
{
    static const char fresh[] = "{\"status\":\"ok\",\"duplicate\":false}";
    static const char again[] = "{\"status\":\"ok\",\"duplicate\":true}";
    cti_http_req_t *req = ctx;
    CTI_METRIC_INC(webhooks[status != 200 ? CTI_WH_UNAVAILABLE
                            : duplicate   ? CTI_WH_DUPLICATE
                                          : CTI_WH_STORED]);
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
    cti_webhook_config_t cfg = {.global_secret = api->cfg->dialpad_webhook_secret,
                                .default_app_id = api->cfg->dialpad_default_app_id,
                                .keys = api->keys};
    cti_webhook_t v;
    int rc = cti_webhook_verify(cti_store_db(api->store), &cfg, body, len, app_id, &v);
    if (rc != 0) {
        CTI_METRIC_INC(webhooks[CTI_WH_UNAVAILABLE]); /* a 5xx: Dialpad retries */
        cti_api_store_error(req, rc, v.message);
        return;
    }
    if (v.status != 200) {
        /* 503: a secret that does not open (logged by repo/tenants.c); Dialpad retries */
        CTI_METRIC_INC(webhooks[v.status >= 500 ? CTI_WH_UNAVAILABLE : CTI_WH_REJECTED]);
        cti_log(v.status >= 500 ? CTI_LOG_WARN : CTI_LOG_INFO, cti_http_request_id(req),
                "webhook rejected", CTI_LI("status", v.status), CTI_LS("reason", v.message),
                CTI_LS("app_id", v.app_id[0] ? v.app_id : NULL));
        cti_http_error(req, v.status, v.code, "%s", v.message);
        return;
    }
    cti_ingest_item_t item = {.payload = v.payload, .doc = v.doc,
                              .received_at = cti_now_ms(), .done = stored, .ctx = req};
    cti_ev_classify(&v.doc, v.payload, v.len, &item.info);
    snprintf(item.app_id, sizeof item.app_id, "%s", v.app_id);
    cti_http_suspend(req); /* before submit: the worker may answer at once */
    if (cti_ingest_submit(api->ingest, &item) != 0) {
        CTI_METRIC_INC(webhooks[CTI_WH_UNAVAILABLE]);
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
