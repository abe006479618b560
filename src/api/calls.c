/*
 * calls.c — call legs for tenants (API key; the key's app only):
 *   GET /api/calls?state=&status=&outcome=&direction=&dialpad_user_id=&crm_user_id=&custom_data=
 *                 &number=&from=&to=&root_only=&limit=&cursor=     newest first, keyset pages
 *   GET /api/calls/active                                           ringing, active, on hold
 *   GET /api/calls/{call_id}        the leg + "legs" (linked legs) + "timeline"
 * A bad filter value is a 400 naming the parameter; another app's call is a 404.
 */
#include "api/common.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"
#include "model/phone.h"
#include "repo/calls.h"

#include <stdio.h>
#include <string.h>

static bool one_of(const char *v, const char *const *allowed)
{
    for (; *allowed; allowed++)
        if (!strcmp(v, *allowed))
            return true;
    return false;
}

static bool enum_param(cti_http_req_t *req, const char *name, const char *const *allowed,
                       const char **out)
{
    *out = cti_http_query(req, name);
    if (!*out || one_of(*out, allowed))
        return true;
    char list[200] = "";
    for (const char *const *a = allowed; *a; a++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", *a);
    cti_http_error(req, 400, "invalid_request", "'%s' must be one of: %s", name, list);
    return false;
}

/* Reads every filter of GET /api/calls; false after a 400. */
static bool read_filter(cti_http_req_t *req, cti_api_t *api, cti_call_filter_t *f, char *e164)
{
    static const char *const statuses[] = {"ringing", "active", "on_hold", "ended", NULL};
    static const char *const outcomes[] = {"answered", "voicemail", "missed", "unanswered", NULL};
    static const char *const directions[] = {"inbound", "outbound", NULL};
    static const char *const bools[] = {"true", "false", NULL};
    const char *v, *root;
    memset(f, 0, sizeof *f);
    if (!enum_param(req, "status", statuses, &f->status) ||
        !enum_param(req, "outcome", outcomes, &f->outcome) ||
        !enum_param(req, "direction", directions, &f->direction) ||
        !enum_param(req, "root_only", bools, &root) || !cti_api_time_param(req, "from", &f->from) ||
        !cti_api_time_param(req, "to", &f->to))
        return false;
    f->root_only = root && !strcmp(root, "true");
    f->state = cti_http_query(req, "state");
    if (f->state && (!*f->state || strlen(f->state) > 48)) {
        cti_http_error(req, 400, "invalid_request", "'state' must be a Dialpad call state");
        return false;
    }
    if ((v = cti_http_query(req, "dialpad_user_id")) &&
        !cti_api_id_param(req, "dialpad_user_id", v, &f->dialpad_user_id))
        return false;
    f->crm_user_id = cti_http_query(req, "crm_user_id");
    f->custom_data = cti_http_query(req, "custom_data");
    if (f->custom_data && (!*f->custom_data || strlen(f->custom_data) > 2000)) {
        cti_http_error(req, 400, "invalid_request",
                       "'custom_data' must be 1 to 2000 bytes (what a dial was given)");
        return false;
    }
    if ((v = cti_http_query(req, "number"))) {
        if (cti_phone_e164(v, api->cfg->default_country_code, e164) != 0) {
            cti_http_error(req, 400, "invalid_request",
                           "'number' must be a phone number, e.g. +14155550123 or (415) 555-0123");
            return false;
        }
        f->number = e164;
    }
    return true;
}

static int add_call(const cti_calldoc_t *d, void *ud)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)d->call_id);
    cti_jw_t *w = cti_api_page_item(ud, d->sort_at, id);
    cti_jw_raw(w, d->doc, strlen(d->doc));
    cti_call_close(w, d->crm_user_id);
    return 0;
}

static void list(cti_http_req_t *req, cti_api_t *api, bool active_only)
{
    cti_principal_t who;
    cti_call_filter_t f;
    char e164[CTI_E164_MAX], tie[32] = "";
    int limit;
    if (!cti_api_tenant(req, api, &who) || !read_filter(req, api, &f, e164) ||
        !cti_api_paging(req, &limit, &f.has_cursor, &f.cursor_at, tie, sizeof tie))
        return;
    if (f.has_cursor && cti_parse_i64(tie, &f.cursor_id) != 0) {
        cti_http_error(req, 400, "invalid_request", "'cursor' is not valid for this list");
        return;
    }
    f.active_only = active_only;
    cti_api_page_t page = cti_api_page();
    cti_call_walk_t walk = {.max = api->cfg->calls_scan_max};
    int rc = cti_calls_query_walk(cti_store_db(api->store), who.app_id, &f, limit, &walk,
                                  add_call, &page);
    if (rc == 0 && walk.cut) {
        snprintf(tie, sizeof tie, "%lld", (long long)walk.id);
        cti_api_page_resume(&page, walk.at, tie);
    }
    cti_api_answer_page(req, rc, &page, limit, "listing calls");
}

static void list_calls(cti_http_req_t *req, void *ud)
{
    list(req, ud, false);
}

static void list_active(cti_http_req_t *req, void *ud)
{
    list(req, ud, true);
}

/* ---- one call ---------------------------------------------------------------------- */

typedef struct {
    cti_jw_t out;
    cti_call_t ids; /* what linking needs: the ids */
    bool found;
} found_t;

static int take_call(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    found_t *f = ud;
    cti_call_render(&f->out, c);
    cti_jw_key(&f->out, "crm_user_id"), cti_jw_text(&f->out, crm);
    f->ids.call_id = c->call_id;
    f->ids.master_call_id = c->master_call_id;
    f->ids.entry_point_call_id = c->entry_point_call_id;
    f->ids.operator_call_id = c->operator_call_id;
    f->found = true;
    return 0;
}

static int add_leg(const cti_calldoc_t *d, void *ud)
{
    cti_jw_item(ud);
    cti_jw_raw(ud, d->doc, strlen(d->doc));
    cti_call_close(ud, d->crm_user_id);
    return 0;
}

static int add_step(const char *state, int64_t ts, int64_t received_at, bool late, bool reconciled,
                    void *ud)
{
    cti_jw_t *w = ud;
    cti_jw_item(w);
    cti_jw_lit(w, "{");
    cti_jw_key(w, "state"), cti_jw_str(w, state);
    cti_jw_key(w, "event_timestamp"), cti_jw_time(w, ts);
    cti_jw_key(w, "received_at"), cti_jw_time(w, received_at);
    cti_jw_key(w, "late"), cti_jw_bool(w, late);
    cti_jw_key(w, "source"), cti_jw_str(w, reconciled ? "reconciled" : "webhook");
    cti_jw_lit(w, "}");
    return 0;
}

/* The leg with its linked legs ("legs") and its timeline: one text. */
static void get_call(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    int64_t id;
    if (!cti_api_tenant(req, api, &who) ||
        !cti_api_id_param(req, "call_id", cti_http_param(req, "call_id"), &id))
        return;
    cti_db_t *db = cti_store_db(api->store);
    found_t f = {0};
    int rc = cti_calls_get(db, who.app_id, id, take_call, &f);
    if (rc == 0 && f.found) {
        cti_jw_key(&f.out, "legs"), cti_jw_lit(&f.out, "[");
        rc = cti_calls_linked(db, who.app_id, &f.ids, add_leg, &f.out);
    }
    if (rc == 0 && f.found) {
        cti_jw_lit(&f.out, "]");
        cti_jw_key(&f.out, "timeline"), cti_jw_lit(&f.out, "[");
        rc = cti_calls_timeline(db, who.app_id, id, add_step, &f.out);
    }
    if (rc == 0 && f.found) {
        cti_jw_lit(&f.out, "]}");
        cti_api_answer_text(req, &f.out);
        return;
    }
    cti_jw_free(&f.out);
    cti_api_answer_one(req, rc, NULL, "call", id); /* not found, or an error */
}

void cti_api_calls_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/api/calls", list_calls, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/calls/active", list_active, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/calls/{call_id}", get_call, api);
}
