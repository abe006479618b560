/*
 * ws.c — the WebSocket stream's door:
 *   POST /api/ws-ticket   (API key) → {"ticket", "expires_at"}: one connection, 60 s
 *   GET  /ws              upgrade; auth by X-API-Key (or Authorization: Bearer,
 *                         x-app-api-key), ?ticket=, or ?api_key= (old clients;
 *                         redacted from logs). Query: since, types,
 *                         dialpad_user_id, crm_user_id.
 * Everything is checked before the 101 (wrong credentials are an HTTP 401;
 * a ticket counts only while the key that issued it still works). The log's
 * bounds are read here, on the pool thread, and the window rule applied
 * (stream/replay.h); the replay itself is read a page at a time by the hub's
 * replay worker as the socket takes it (stream/hub.h explains the seam).
 */
#include "api/common.h"
#include "api/limits.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "repo/events.h"
#include "repo/tenants.h"
#include "stream/hub.h"
#include "stream/keywatch.h"
#include "stream/replay.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static void post_ticket(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    char ticket[CTI_TICKET_LEN + 1];
    int64_t expires;
    if (!cti_api_tenant(req, api, &who))
        return;
    cti_ticket_issue(api->auth, &who, ticket, &expires);
    cti_http_json(req, 201, json_pack("{s:s, s:o}", "ticket", ticket, "expires_at",
                                      cti_api_time_json(expires)));
}

/* A ticket dies with the key (or app) that issued it. */
static bool ticket_key_ok(cti_http_req_t *req, cti_api_t *api, const cti_principal_t *who)
{
    cti_key_t k;
    int code;
    const char *why;
    int rc = cti_keys_get(cti_store_db(api->store), who->key_id, &k);
    if (rc == 0 && cti_keywatch_usable(&k, cti_now_ms(), &code, &why))
        return true;
    if (rc == 0 || rc == CTI_ENOTFOUND)
        cti_http_error(req, 401, "unauthorized", "the key that issued the ticket no longer works");
    else
        cti_api_store_error(req, rc, "checking the ticket's key");
    return false;
}

/* Credentials for /ws, in the order the contract lists them. */
static bool ws_auth(cti_http_req_t *req, cti_api_t *api, cti_principal_t *who)
{
    const char *ticket = cti_http_query(req, "ticket"), *key = cti_api_presented_key(req);
    if (ticket) {
        if (cti_ticket_redeem(api->auth, ticket, who) == 0)
            return ticket_key_ok(req, api, who) && cti_api_limit_app(req, api, who->app_id);
        cti_http_error(req, 401, "unauthorized", "the ticket is unknown, used or expired");
        return false;
    }
    /* a header key wins; ?api_key= is for old clients (the access log redacts it) */
    return cti_api_tenant_key(req, api, key ? key : cti_http_query(req, "api_key"), who);
}

static bool origin_ok(cti_http_req_t *req, const cti_config_t *cfg)
{
    const char *origin = cti_http_header(req, "Origin");
    if (!origin || cfg->allowed_origins.n == 0)
        return true;
    for (size_t i = 0; i < cfg->allowed_origins.n; i++)
        if (!strcmp(cfg->allowed_origins.items[i], "*") ||
            !strcasecmp(cfg->allowed_origins.items[i], origin))
            return true;
    cti_http_error(req, 403, "forbidden", "Origin %.100s is not in ALLOWED_ORIGINS", origin);
    return false;
}

/* Checks the RFC 6455 handshake and computes Sec-WebSocket-Accept. */
static bool handshake(cti_http_req_t *req, char accept[64])
{
    const char *up = cti_http_header(req, "Upgrade"), *conn = cti_http_header(req, "Connection");
    const char *key = cti_http_header(req, "Sec-WebSocket-Key");
    const char *ver = cti_http_header(req, "Sec-WebSocket-Version");
    if (!up || strcasecmp(up, "websocket") || !conn || !strcasestr(conn, "upgrade") || !key) {
        cti_http_add_header(req, "Upgrade", "websocket");
        cti_http_error(req, 426, "upgrade_required", "/ws is a WebSocket endpoint");
        return false;
    }
    if (!ver || strcmp(ver, "13")) {
        cti_http_add_header(req, "Sec-WebSocket-Version", "13");
        cti_http_error(req, 400, "invalid_request", "Sec-WebSocket-Version must be 13");
        return false;
    }
    char buf[128];
    unsigned char sha[20];
    unsigned int n = 0;
    snprintf(buf, sizeof buf, "%.60s%s", key, WS_GUID);
    EVP_Digest(buf, strlen(buf), sha, &n, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)accept, sha, 20);
    return true;
}

static bool read_params(cti_http_req_t *req, cti_ws_filter_t *f, int64_t *since, bool *has_since)
{
    const char *s = cti_http_query(req, "since"), *types = cti_http_query(req, "types");
    const char *uid = cti_http_query(req, "dialpad_user_id"), *crm = cti_http_query(req, "crm_user_id");
    memset(f, 0, sizeof *f);
    *has_since = s != NULL;
    if (s && (cti_parse_i64(s, since) != 0 || *since < 0)) {
        cti_http_error(req, 400, "invalid_request", "'since' must be a seq: a whole number >= 0");
        return false;
    }
    if (types && !cti_ws_filter_types(f, types)) {
        cti_http_error(req, 400, "invalid_request", "'types' has too many or too long names");
        return false;
    }
    if (uid && !cti_api_id_param(req, "dialpad_user_id", uid, &f->dialpad_user_id))
        return false;
    if (crm)
        snprintf(f->crm_user_id, sizeof f->crm_user_id, "%s", crm);
    return true;
}

/* Where the stream starts (registered first, so nothing falls between the
 * bounds read here and the live events held from registration on). */
static int prepare_start(cti_db_t *db, const char *app_id, cti_ws_t *ws, bool has_since,
                         int64_t since)
{
    int64_t oldest, newest;
    int rc = cti_eventlog_bounds(db, app_id, &oldest, &newest);
    if (rc != 0)
        return rc;
    if (!has_since)
        cti_ws_set_start(ws, newest, newest, CTI_REPLAY_NONE);
    else
        cti_ws_set_start(ws, newest, since, cti_replay_plan(oldest, newest, since));
    return 0;
}

static void upgraded(void *cls, int fd, const char *extra, size_t extra_len,
                     struct MHD_UpgradeResponseHandle *urh)
{
    cti_ws_t *ws = cls;
    cti_ws_attach(ws, fd, extra, extra_len, urh);
}

static void get_ws(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    cti_ws_filter_t f;
    int64_t since = 0;
    bool has_since;
    char accept[64];
    cti_ws_t *ws;
    /* everything else first: a ticket is used up only by a request that upgrades */
    if (!origin_ok(req, api->cfg) || !handshake(req, accept) ||
        !read_params(req, &f, &since, &has_since) || !ws_auth(req, api, &who))
        return;
    if (cti_hub_register(api->hub, who.app_id, who.key_id, &f, &ws) != 0) {
        cti_http_error(req, 503, "unavailable", "too many WebSocket connections; retry later");
        return;
    }
    int rc = prepare_start(cti_store_db(api->store), who.app_id, ws, has_since, since);
    if (rc != 0) {
        cti_hub_abandon(api->hub, ws);
        cti_api_store_error(req, rc, "reading the event log");
        return;
    }
    /* MHD adds "Connection: Upgrade" to every upgrade response itself */
    const char *headers[] = {"Upgrade", "websocket", "Sec-WebSocket-Accept", accept, NULL};
    cti_http_upgrade(req, upgraded, ws, headers);
}

void cti_api_ws_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_POST, "/api/ws-ticket", post_ticket, api);
    cti_http_route(srv, CTI_HTTP_GET, "/ws", get_ws, api);
}
