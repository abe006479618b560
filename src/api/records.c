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
#include "repo/calls.h"
#include "repo/records.h"
#include "repo/tenants.h"

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
    cti_jw_t calls;   /* [call, ...] */
    char *contact;    /* JSON text, from the newest call that named one */
    struct {
        int64_t dialpad_user_id;
        char *crm_user_id;
    } users[32];      /* the mapped Dialpad users of these calls */
    int nusers;
} pop_t;

static int add_pop_call(const cti_calldoc_t *d, void *ud)
{
    pop_t *p = ud;
    cti_jw_item(&p->calls);
    cti_jw_raw(&p->calls, d->doc, strlen(d->doc));
    cti_call_close(&p->calls, d->crm_user_id);
    if (!p->contact && d->contact && strcmp(d->contact, "null"))
        p->contact = cti_strdup(d->contact);
    bool seen = false;
    for (int i = 0; i < p->nusers; i++)
        seen |= p->users[i].dialpad_user_id == d->dialpad_user_id;
    if (d->crm_user_id && d->dialpad_user_id && !seen && p->nusers < 32) {
        p->users[p->nusers].dialpad_user_id = d->dialpad_user_id;
        p->users[p->nusers++].crm_user_id = cti_strdup(d->crm_user_id);
    }
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

/* {"number", "contact", "active_calls", "recent_calls", "last_voicemail",
 *  "last_message", "crm_users"} — four indexed queries, the calls copied as stored. */
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
    pop_t *pop = cti_calloc(1, sizeof *pop); /* recent calls, then active ones */
    cti_jw_t *out = &pop->calls;
    cti_call_filter_t cf = {.number = number, .active_only = true};
    cti_record_filter_t rf = {.number = number};
    json_t *vm = json_null(), *msg = json_null();
    cti_jw_lit(out, "{");
    cti_jw_key(out, "number"), cti_jw_str(out, number);
    cti_jw_key(out, "active_calls"), cti_jw_lit(out, "[");
    int rc = cti_calls_query(db, who.app_id, &cf, 50, add_pop_call, pop);
    cti_jw_lit(out, "]");
    cti_jw_key(out, "recent_calls"), cti_jw_lit(out, "[");
    cf.active_only = false;
    if (rc >= 0) /* recent calls come newest first: the first one with a contact wins */
        free(pop->contact), pop->contact = NULL;
    if (rc >= 0)
        rc = cti_calls_query(db, who.app_id, &cf, 10, add_pop_call, pop);
    cti_jw_lit(out, "]");
    if (rc >= 0)
        rc = cti_voicemails_query(db, who.app_id, &rf, 1, take_vm_into, &vm);
    if (rc >= 0)
        rc = cti_messages_query(db, who.app_id, &rf, 1, take_msg_into, &msg);
    cti_jw_key(out, "last_voicemail"), cti_jw_json(out, vm);
    cti_jw_key(out, "last_message"), cti_jw_json(out, msg);
    cti_jw_key(out, "contact");
    if (pop->contact)
        cti_jw_raw(out, pop->contact, strlen(pop->contact));
    else /* no call named one: the newest message's */
        cti_jw_json(out, json_is_object(msg) ? json_object_get(msg, "contact") : json_null());
    cti_jw_key(out, "crm_users"), cti_jw_lit(out, "[");
    for (int i = 0; i < pop->nusers; i++) {
        cti_jw_item(out);
        cti_jw_lit(out, "{");
        cti_jw_key(out, "dialpad_user_id"), cti_jw_id(out, pop->users[i].dialpad_user_id);
        cti_jw_key(out, "crm_user_id"), cti_jw_str(out, pop->users[i].crm_user_id);
        cti_jw_lit(out, "}");
        free(pop->users[i].crm_user_id);
    }
    cti_jw_lit(out, "]}");
    json_decref(vm);
    json_decref(msg);
    free(pop->contact);
    if (rc < 0) {
        cti_jw_free(out);
        cti_api_store_error(req, rc, "looking up the number");
    } else {
        cti_api_answer_text(req, out);
    }
    free(pop);
}

void cti_api_records_register(cti_http_server_t *srv, cti_api_t *api)
{
    cti_http_route(srv, CTI_HTTP_GET, "/api/voicemails", list_voicemails, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/voicemails/{id}", get_voicemail, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/messages", list_messages, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/messages/{id}", get_message, api);
    cti_http_route(srv, CTI_HTTP_GET, "/api/screen-pop", screen_pop, api);
}
