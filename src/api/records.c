/*
 * records.c — voicemails, messages and screen pop for tenants (API key):
 *   GET /api/voicemails?dialpad_user_id=&number=&from=&to=&limit=&cursor=
 *   GET /api/voicemails/{id}          (the id is the call's id)
 *   GET /api/messages?direction=&dialpad_user_id=&number=&from=&to=&limit=&cursor=
 *   GET /api/messages/{id}
 *   GET /api/screen-pop?number=        everything known about a number, while it rings
 */
#include "api/common.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"
#include "model/phone.h"
#include "store/calls.h"
#include "store/records.h"
#include "store/tenants.h"

#include <stdio.h>
#include <string.h>

static json_t *json_text(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *json_parsed(const char *s)
{
    json_t *v = s ? json_loads(s, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_null();
}

static json_t *voicemail_json(const cti_voicemail_t *v)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                     cti_api_id_json(v->call_id), "call_id", cti_api_id_json(v->call_id), "url",
                     json_text(v->url), "recording_id",
                     v->recording_id ? cti_api_id_json(v->recording_id) : json_null(),
                     "transcript", json_text(v->transcript), "duration_ms",
                     v->duration_ms >= 0 ? json_integer(v->duration_ms) : json_null(),
                     "external_number", json_text(v->external_number), "dialpad_user_id",
                     v->dialpad_user_id ? cti_api_id_json(v->dialpad_user_id) : json_null(),
                     "created_at", cti_api_time_json(v->created_at));
}

static json_t *message_json(const cti_message_row_t *m)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "id",
                     cti_api_id_json(m->id), "direction", json_text(m->direction), "from_number",
                     json_text(m->from_number), "to_numbers", json_parsed(m->to_numbers), "text",
                     json_text(m->text), "status", json_text(m->status), "dialpad_user_id",
                     m->dialpad_user_id ? cti_api_id_json(m->dialpad_user_id) : json_null(),
                     "contact", json_parsed(m->contact), "created_at",
                     cti_api_time_json(m->created_at));
}

/* ---- shared filter parsing -------------------------------------------------------------- */

static bool number_param(cti_http_req_t *req, cti_api_t *api, char *e164, const char **out)
{
    const char *v = cti_http_query(req, "number");
    *out = NULL;
    if (!v)
        return true;
    if (cti_phone_e164(v, api->cfg->default_country_code, e164) == 0) {
        *out = e164;
        return true;
    }
    cti_http_error(req, 400, "invalid_request",
                   "'number' must be a phone number, e.g. +14155550123 or (415) 555-0123");
    return false;
}

/* Reads the filters and paging common to both lists. False after a 400. */
static bool read_filter(cti_http_req_t *req, cti_api_t *api, cti_record_filter_t *f,
                        char *e164, int *limit)
{
    char tie[32] = "";
    const char *v;
    memset(f, 0, sizeof *f);
    if (!number_param(req, api, e164, &f->number) || !cti_api_time_param(req, "from", &f->from) ||
        !cti_api_time_param(req, "to", &f->to) ||
        !cti_api_paging(req, limit, &f->has_cursor, &f->cursor_at, tie, sizeof tie))
        return false;
    if (f->has_cursor && cti_parse_i64(tie, &f->cursor_id) != 0) {
        cti_http_error(req, 400, "invalid_request", "'cursor' is not valid for this list");
        return false;
    }
    if ((v = cti_http_query(req, "dialpad_user_id")) &&
        !cti_api_id_param(req, "dialpad_user_id", v, &f->dialpad_user_id))
        return false;
    return true;
}

/* ---- voicemails ------------------------------------------------------------------------ */

static int add_vm(const cti_voicemail_t *v, void *ud)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)v->call_id);
    cti_api_page_add(ud, voicemail_json(v), v->created_at, id);
    return 0;
}

static void list_voicemails(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    cti_record_filter_t f;
    char e164[CTI_E164_MAX];
    int limit;
    if (!cti_api_tenant(req, api, &who) || !read_filter(req, api, &f, e164, &limit))
        return;
    cti_api_page_t page = cti_api_page();
    int rc = cti_voicemails_query(cti_store_db(api->store), who.app_id, &f, limit, add_vm, &page);
    cti_api_answer_page(req, rc, &page, limit, "listing voicemails");
}

static int take_vm(const cti_voicemail_t *v, void *ud)
{
    *(json_t **)ud = voicemail_json(v);
    return 0;
}

static void get_voicemail(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    int64_t id;
    json_t *out = NULL;
    if (!cti_api_tenant(req, api, &who) ||
        !cti_api_id_param(req, "id", cti_http_param(req, "id"), &id))
        return;
    int rc = cti_voicemails_get(cti_store_db(api->store), who.app_id, id, take_vm, &out);
    cti_api_answer_one(req, rc, out, "voicemail", id);
}

/* ---- messages ------------------------------------------------------------------------- */

static int add_msg(const cti_message_row_t *m, void *ud)
{
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)m->id);
    cti_api_page_add(ud, message_json(m), m->created_at, id);
    return 0;
}

static void list_messages(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    cti_record_filter_t f;
    char e164[CTI_E164_MAX];
    int limit;
    if (!cti_api_tenant(req, api, &who) || !read_filter(req, api, &f, e164, &limit))
        return;
    f.direction = cti_http_query(req, "direction");
    if (f.direction && strcmp(f.direction, "inbound") && strcmp(f.direction, "outbound")) {
        cti_http_error(req, 400, "invalid_request", "'direction' must be one of: inbound, outbound");
        return;
    }
    cti_api_page_t page = cti_api_page();
    int rc = cti_messages_query(cti_store_db(api->store), who.app_id, &f, limit, add_msg, &page);
    cti_api_answer_page(req, rc, &page, limit, "listing messages");
}

static int take_msg(const cti_message_row_t *m, void *ud)
{
    *(json_t **)ud = message_json(m);
    return 0;
}

static void get_message(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    int64_t id;
    json_t *out = NULL;
    if (!cti_api_tenant(req, api, &who) ||
        !cti_api_id_param(req, "id", cti_http_param(req, "id"), &id))
        return;
    int rc = cti_messages_get(cti_store_db(api->store), who.app_id, id, take_msg, &out);
    cti_api_answer_one(req, rc, out, "message", id);
}

/* ---- screen pop ------------------------------------------------------------------------- */

typedef struct {
    json_t *calls;
    json_t *contact; /* from the newest call that named one */
    int64_t users[32];
    int nusers;
} pop_t;

static int add_pop_call(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    pop_t *p = ud;
    json_array_append_new(p->calls, cti_call_json(c, crm));
    if (!p->contact && c->contact)
        p->contact = json_incref(c->contact);
    bool seen = false;
    for (int i = 0; i < p->nusers; i++)
        seen |= p->users[i] == c->dialpad_user_id;
    if (c->dialpad_user_id && !seen && p->nusers < 32)
        p->users[p->nusers++] = c->dialpad_user_id;
    return 0;
}

static int take_vm_into(const cti_voicemail_t *v, void *ud)
{
    json_decref(*(json_t **)ud);
    *(json_t **)ud = voicemail_json(v);
    return 1;
}

static int take_msg_into(const cti_message_row_t *m, void *ud)
{
    json_decref(*(json_t **)ud);
    *(json_t **)ud = message_json(m);
    return 1;
}

static void screen_pop(cti_http_req_t *req, void *ud)
{
    cti_api_t *api = ud;
    cti_principal_t who;
    char e164[CTI_E164_MAX];
    const char *number;
    if (!cti_api_tenant(req, api, &who) || !number_param(req, api, e164, &number))
        return;
    if (!number) {
        cti_http_error(req, 400, "invalid_request", "'number' is required");
        return;
    }
    cti_db_t *db = cti_store_db(api->store);
    pop_t recent = {.calls = json_array()}, active = {.calls = json_array()};
    cti_call_filter_t cf = {.number = number};
    cti_record_filter_t rf = {.number = number};
    json_t *vm = json_null(), *msg = json_null(), *crm = json_array();
    int rc = cti_calls_query(db, who.app_id, &cf, 10, add_pop_call, &recent);
    cf.active_only = true;
    if (rc >= 0)
        rc = cti_calls_query(db, who.app_id, &cf, 50, add_pop_call, &active);
    if (rc >= 0)
        rc = cti_voicemails_query(db, who.app_id, &rf, 1, take_vm_into, &vm);
    if (rc >= 0)
        rc = cti_messages_query(db, who.app_id, &rf, 1, take_msg_into, &msg);
    for (int i = 0; rc >= 0 && i < recent.nusers + active.nusers; i++) {
        int64_t user = i < recent.nusers ? recent.users[i] : active.users[i - recent.nusers];
        char id[CTI_CRM_ID_MAX * 4 + 1];
        rc = cti_crm_user(db, who.app_id, user, id, sizeof id);
        if (rc == 0 && id[0])
            json_array_append_new(crm, json_pack("{s:o, s:s}", "dialpad_user_id",
                                                 cti_api_id_json(user), "crm_user_id", id));
    }
    if (!recent.contact && json_is_object(msg))
        recent.contact = json_incref(json_object_get(msg, "contact"));
    json_decref(active.contact);
    if (rc < 0) {
        json_decref(recent.calls), json_decref(active.calls), json_decref(vm);
        json_decref(msg), json_decref(crm), json_decref(recent.contact);
        cti_api_store_error(req, rc, "looking up the number");
        return;
    }
    cti_http_json(req, 200,
                  json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "number", number, "contact",
                            recent.contact && !json_is_null(recent.contact) ? recent.contact
                                                                              : json_null(),
                            "active_calls", active.calls, "recent_calls", recent.calls,
                            "last_voicemail", vm, "last_message", msg, "crm_users", crm));
}

void cti_api_records_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/api/voicemails", list_voicemails, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/voicemails/{id}", get_voicemail, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/messages", list_messages, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/messages/{id}", get_message, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/screen-pop", screen_pop, api);
}
