/*
 * dial.c — click-to-dial (API key; the key's app only):
 *   POST /api/calls/dial {"number", "dialpad_user_id" | "crm_user_id", "custom_data"?,
 *                         "outbound_caller_id"?}
 *     → Dialpad POST /api/v2/users/{id}/initiate_call with the app's token
 *     → 202 {"status": "initiated", "dialpad_user_id", "number", "custom_data", "device"}
 *
 * Everything that needs no Dialpad is checked on the pool thread (400, 404,
 * 409); the request to Dialpad runs on a job thread while the request is
 * suspended. Dialpad's answers map to: 429 rate_limited (+ Retry-After: it
 * allows 5 dials a minute per user), other 4xx 422 dialpad_rejected with its
 * words, 5xx or no answer 502 dialpad_unavailable, a refused token (after one
 * refresh) 409 not_connected. Each dial is in the audit log and on the stream
 * (call.dial_requested); custom_data (generated when absent) comes back in
 * the call's events, so GET /api/calls?custom_data= finds the call.
 */
#include "api/common.h"
#include "core/common.h"
#include "core/jobs.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/client.h"
#include "dialpad/connection.h"
#include "ingest/ingest.h"
#include "model/phone.h"
#include "repo/dialpad.h"
#include "repo/tenants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUSTOM_DATA_MAX 2000   /* characters */
#define DIAL_RETRY_AFTER_S 60 /* when Dialpad's 429 says nothing: its limit is per minute */

typedef struct {
    cti_http_req_t *req;
    cti_api_t *api;
    char app_id[37], actor[64];
    cti_api_origin_t from;
    int64_t user;
    char crm[CTI_CRM_ID_MAX * 4 + 1];
    char number[CTI_E164_MAX], caller_id[CTI_E164_MAX];
    char *custom_data;
} dial_t;

/* The audit entry and the stream event of a dial Dialpad accepted. */
static void record(dial_t *d)
{
    json_t *data = json_pack("{s:o, s:s?, s:s, s:s}", "dialpad_user_id", cti_api_id_json(d->user),
                             "crm_user_id", d->crm[0] ? d->crm : NULL, "number", d->number,
                             "custom_data", d->custom_data);
    char *detail = json_dumps(data, JSON_COMPACT);
    int rc = cti_audit_add(cti_store_db(d->api->store), d->app_id, d->actor, "call.dial_requested",
                           detail, d->from.client_addr, d->from.request_id, cti_now_ms());
    if (rc != 0)
        cti_log(CTI_LOG_WARN, d->from.request_id, "dial: audit entry not written", CTI_LS("error", cti_strerror(rc)));
    free(detail);
    rc = cti_ingest_server_event(d->api->ingest, d->app_id, "call.dial_requested", data);
    if (rc != 0)
        cti_log(CTI_LOG_WARN, d->from.request_id, "dial: stream event not stored", CTI_LS("error", cti_strerror(rc)));
}

static void answer_dialpad(dial_t *d, cti_dp_response_t *r)
{
    cti_http_req_t *req = d->req;
    if (r->err || r->status >= 500) {
        cti_http_error(req, 502, "dialpad_unavailable", "Dialpad could not place the call: %s",
                       r->message[0] ? r->message : "no answer");
    } else if (r->status == 429) {
        char after[16];
        snprintf(after, sizeof after, "%d", r->retry_after_s >= 0 ? r->retry_after_s : DIAL_RETRY_AFTER_S);
        cti_http_add_header(req, "Retry-After", after);
        cti_http_error(req, 429, "rate_limited",
                       "Dialpad allows 5 dials a minute per user; retry after %s s", after);
    } else if (r->status == 401) {
        cti_http_error(req, 409, "not_connected",
                       "Dialpad refused the app's token; reconnect the app (GET /api/dialpad/connection)");
    } else if (!cti_dp_ok(r)) {
        cti_http_error(req, 422, "dialpad_rejected", "Dialpad refused the dial: %s",
                       r->error.message[0] ? r->error.message : r->message);
    } else {
        json_t *body = json_loadb(r->body, r->body_len, 0, NULL);
        json_t *device = json_object_get(body, "device");
        cti_http_json(req, 202,
                      json_pack("{s:s, s:o, s:s, s:s, s:O}", "status", "initiated",
                                "dialpad_user_id", cti_api_id_json(d->user), "number", d->number,
                                "custom_data", d->custom_data,
                                "device", json_is_object(device) ? device : json_null()));
        json_decref(body);
        record(d);
        cti_log(CTI_LOG_INFO, d->from.request_id, "dial: initiated", CTI_LS("app_id", d->app_id),
                CTI_LI("dialpad_user_id", d->user));
    }
}

static void dial_job(void *ud)
{
    dial_t *d = ud;
    char path[96];
    snprintf(path, sizeof path, "/api/v2/users/%lld/initiate_call", (long long)d->user);
    json_t *body = json_pack("{s:s, s:s}", "phone_number", d->number, "custom_data", d->custom_data);
    if (d->caller_id[0])
        json_object_set_new(body, "outbound_caller_id", json_string(d->caller_id));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    /* not idempotent: a dial repeated after a lost answer would ring twice */
    cti_dp_request_t r = {.method = "POST", .path = path, .body_kind = CTI_DP_BODY_JSON,
                          .body = text, .body_len = strlen(text), .operation = "users.initiate_call",
                          .request_id = d->from.request_id};
    int err = 0;
    cti_dp_response_t *resp = cti_dpconn_call(d->api->dpconn, d->app_id, &r, &err);
    if (!resp)
        cti_http_error(d->req, err == CTI_ENOTFOUND ? 409 : 503,
                       err == CTI_ENOTFOUND ? "not_connected" : "unavailable", "%s",
                       err == CTI_ENOTFOUND ? "the app is not connected to Dialpad"
                                            : "the database cannot be reached; retry");
    else
        answer_dialpad(d, resp);
    cti_dp_response_free(resp);
    free(text);
    cti_http_resume(d->req);
    free(d->custom_data);
    free(d);
}

/* Reads and checks the body into d; false after a 4xx. */
static bool read_dial(cti_http_req_t *req, cti_api_t *api, json_t *body, dial_t *d)
{
    static const char *const allowed[] = {"number", "dialpad_user_id", "crm_user_id",
                                          "custom_data", "outbound_caller_id", NULL};
    const char *number, *crm, *custom, *caller;
    if (!cti_api_only_fields(req, body, allowed) ||
        !cti_api_string_field(req, body, "number", true, 64, &number) ||
        !cti_api_string_field(req, body, "crm_user_id", false, CTI_CRM_ID_MAX, &crm) ||
        !cti_api_string_field(req, body, "custom_data", false, CUSTOM_DATA_MAX, &custom) ||
        !cti_api_string_field(req, body, "outbound_caller_id", false, 64, &caller))
        return false;
    bool has_user = json_object_get(body, "dialpad_user_id") != NULL;
    if (has_user == (crm != NULL)) {
        cti_http_error(req, 400, "invalid_request",
                       "give exactly one of 'dialpad_user_id' and 'crm_user_id'");
        return false;
    }
    if (has_user && !cti_api_id_field(req, body, "dialpad_user_id", &d->user))
        return false;
    if (cti_phone_e164(number, api->cfg->default_country_code, d->number) != 0) {
        cti_http_error(req, 400, "invalid_request",
                       "'number' must be a phone number, e.g. +14155550123 or (415) 555-0123");
        return false;
    }
    if (caller && strcmp(caller, "blocked") &&
        cti_phone_e164(caller, api->cfg->default_country_code, d->caller_id) != 0) {
        cti_http_error(req, 400, "invalid_request",
                       "'outbound_caller_id' must be a phone number or \"blocked\"");
        return false;
    }
    if (caller && !strcmp(caller, "blocked"))
        snprintf(d->caller_id, sizeof d->caller_id, "blocked");
    if (crm) {
        cti_mapping_t m;
        int rc = cti_mappings_find_crm(cti_store_db(api->store), d->app_id, crm, &m);
        if (rc != 0) {
            if (rc == CTI_ENOTFOUND)
                cti_http_error(req, 404, "not_found", "no Dialpad user is mapped to crm_user_id %s", crm);
            else
                cti_api_store_error(req, rc, "reading the user mappings");
            return false;
        }
        d->user = m.dialpad_user_id;
        snprintf(d->crm, sizeof d->crm, "%s", crm);
    }
    if (custom) {
        d->custom_data = cti_strdup(custom);
    } else {
        unsigned char raw[8];
        char hex[17];
        cti_random_bytes(raw, sizeof raw);
        cti_hex(raw, sizeof raw, hex);
        d->custom_data = cti_malloc(32);
        snprintf(d->custom_data, 32, "dial_%s", hex);
    }
    return true;
}

/* 409 unless the app is connected (the cheap check before waiting on Dialpad). */
static bool connected(cti_http_req_t *req, cti_api_t *api, const char *app_id)
{
    cti_dpconn_row_t row;
    int rc = cti_dpconn_get(cti_store_db(api->store), app_id, &row);
    bool ok = rc == 0 && !strcmp(row.status, "connected");
    if (rc != 0 && rc != CTI_ENOTFOUND)
        cti_api_store_error(req, rc, "reading the Dialpad connection");
    else if (!ok)
        cti_http_error(req, 409, "not_connected", "the app is not connected to Dialpad%s%s",
                       rc == 0 ? " (broken: " : "", rc == 0 ? row.reason : "");
    cti_dpconn_row_free(&row);
    return ok;
}

static void dial(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    if (!cti_api_tenant(req, api, &who))
        return;
    json_t *body = cti_http_json_object_body(req);
    if (!body)
        return;
    dial_t *d = cti_calloc(1, sizeof *d);
    d->req = req;
    d->api = api;
    snprintf(d->app_id, sizeof d->app_id, "%s", who.app_id);
    snprintf(d->actor, sizeof d->actor, "key:%s", who.key_id);
    cti_api_origin(req, &d->from);
    bool ok = read_dial(req, api, body, d) && connected(req, api, d->app_id);
    json_decref(body);
    if (ok && cti_api_defer(req, api, dial_job, d))
        return;
    free(d->custom_data);
    free(d);
}

void cti_api_dial_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/api/calls/dial", dial, api);
}
