/* processor.c — see processor.h. */
#include "ingest/processor.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "model/call.h"
#include "store/calls.h"
#include "store/events.h"
#include "store/listen.h"
#include "store/tenants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id;
    char app_id[37];
    char *payload;
    int64_t received_at;
    int attempts;
} pending_t;

typedef struct {
    char app_id[37];
    int64_t first; /* the first seq this transaction appended */
    int64_t last;
} app_seq_t;

typedef struct {
    char app_id[37];
    int64_t seq;
    char *body;
} appended_t;

/* One transaction's worth of processing (the public cti_processed_t). */
struct cti_processed {
    cti_db_t *db;
    int64_t now;
    pending_t *items; /* the raw events of the current call, limit of them */
    int n;
    app_seq_t *seqs; /* apps touched in this transaction and their last seq */
    int nseqs, capseqs;
    appended_t *out; /* events appended, to publish after commit */
    int nout, capout;
};
typedef struct cti_processed batch_t;

static int collect(const cti_raw_t *ev, void *ud)
{
    batch_t *b = ud;
    pending_t *p = &b->items[b->n++];
    p->id = ev->id;
    snprintf(p->app_id, sizeof p->app_id, "%s", ev->app_id);
    p->payload = cti_strdup(ev->payload);
    p->received_at = ev->received_at;
    p->attempts = ev->attempts;
    return 0;
}

/* The app's next seq; the first use in a batch locks its counter row. */
static int next_seq(batch_t *b, const char *app_id, int64_t *seq)
{
    for (int i = 0; i < b->nseqs; i++)
        if (!strcmp(b->seqs[i].app_id, app_id)) {
            *seq = ++b->seqs[i].last;
            return 0;
        }
    if (b->nseqs == b->capseqs)
        b->seqs = cti_realloc(b->seqs, (size_t)(b->capseqs = b->capseqs ? 2 * b->capseqs : 16) *
                                           sizeof *b->seqs);
    app_seq_t *s = &b->seqs[b->nseqs];
    int rc = cti_seq_lock(b->db, app_id, &s->last);
    if (rc != 0)
        return rc;
    s->first = s->last + 1;
    snprintf(s->app_id, sizeof s->app_id, "%s", app_id);
    b->nseqs++;
    *seq = ++s->last;
    return 0;
}

/* Gives the event object its seq, stores it, and keeps it to publish after
 * commit. Steals the reference to event. */
static int append(batch_t *b, const char *app_id, json_t *event, int64_t call_id)
{
    int64_t seq;
    int rc = next_seq(b, app_id, &seq);
    if (rc != 0) {
        json_decref(event);
        return rc;
    }
    json_object_set_new(event, "seq", json_integer(seq));
    char *body = json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = cti_eventlog_append(b->db, app_id, seq, json_string_value(json_object_get(event, "event")),
                             call_id, body, b->now);
    json_decref(event);
    if (rc != 0) {
        free(body);
        return rc;
    }
    if (b->nout == b->capout)
        b->out = cti_realloc(b->out, (size_t)(b->capout = b->capout ? 2 * b->capout : 64) *
                                         sizeof *b->out);
    appended_t *a = &b->out[b->nout++];
    snprintf(a->app_id, sizeof a->app_id, "%s", app_id);
    a->seq = seq;
    a->body = body;
    return 0;
}

/* {"seq", "event", "occurred_at", "call_id", "late", "call", "data"} in that order. */
static json_t *event_object(const char *name, int64_t ts, int64_t call_id, bool late,
                            json_t *call, json_t *data)
{
    char when[CTI_ISO_TIME_LEN], id[24];
    cti_iso_time(ts, when);
    snprintf(id, sizeof id, "%lld", (long long)call_id);
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(0));
    json_object_set_new(o, "event", json_string(name));
    json_object_set_new(o, "occurred_at", json_string(when));
    json_object_set_new(o, "call_id", call_id ? json_string(id) : json_null());
    json_object_set_new(o, "late", json_boolean(late));
    json_object_set_new(o, "call", call ? call : json_null());
    json_object_set_new(o, "data", data ? data : json_object());
    return o;
}

/* ---- per kind ------------------------------------------------------------------------- */

static int apply_call(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info)
{
    int64_t call_id = 0;
    cti_dp_id(json_object_get(ev, "call_id"), &call_id);
    const char *state = json_string_value(json_object_get(ev, "state"));
    cti_call_t c;
    int rc = cti_calls_load(b->db, p->app_id, call_id, &c);
    if (rc != 0 && rc != CTI_ENOTFOUND) {
        cti_call_clear(&c);
        return rc;
    }
    cti_call_effect_t eff;
    cti_call_apply(&c, rc == CTI_ENOTFOUND, ev, state, info->event_timestamp, b->now, &eff);
    char crm[CTI_CRM_ID_MAX * 4 + 1];
    if ((rc = cti_calls_save(b->db, p->app_id, &c, b->now)) == 0 &&
        (rc = cti_calls_add_timeline(b->db, p->app_id, call_id, info->event_timestamp, state,
                                     p->received_at, eff.late, p->id)) == 0 &&
        (!(c.vm_url || c.vm_recording_id || c.vm_transcript) ||
         (rc = cti_voicemails_save(b->db, p->app_id, &c, b->now)) == 0) &&
        (rc = cti_crm_user(b->db, p->app_id, c.dialpad_user_id, crm, sizeof crm)) == 0) {
        json_t *data = json_object();
        if (eff.data_key[0])
            json_object_set_new(data, eff.data_key, json_string(eff.data_value));
        rc = append(b, p->app_id,
                    event_object(eff.event, info->event_timestamp, call_id, eff.late,
                                 cti_call_json(&c, crm), data),
                    call_id);
    }
    cti_call_clear(&c);
    return rc;
}

static json_t *message_json(const cti_message_t *m, json_t *ev)
{
    char id[24], when[CTI_ISO_TIME_LEN];
    snprintf(id, sizeof id, "%lld", (long long)m->message_id);
    cti_iso_time(m->created_at, when);
    json_t *text = json_object_get(ev, "text");
    return json_pack("{s:s, s:s?, s:s?, s:O, s:O, s:s?, s:o, s:o, s:s}", "id", id, "direction",
                     m->direction[0] ? m->direction : NULL, "from_number",
                     m->from_number[0] ? m->from_number : NULL, "to_numbers",
                     m->to_numbers ? m->to_numbers : json_array(), "text",
                     text ? text : json_null(), "status", m->status[0] ? m->status : NULL,
                     "dialpad_user_id",
                     m->dialpad_user_id ? json_sprintf("%lld", (long long)m->dialpad_user_id)
                                        : json_null(),
                     "contact", m->contact ? cti_dp_normalize_ids(m->contact) : json_null(),
                     "created_at", when);
}

/* Copies a string member of obj ("" when absent or not a string). */
static void copy_member(json_t *obj, const char *key, char *dst, size_t cap)
{
    const char *v = json_string_value(json_object_get(obj, key));
    snprintf(dst, cap, "%s", v ? v : "");
}

static int apply_sms(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info)
{
    cti_message_t m = {0};
    json_t *target = json_object_get(ev, "target");
    const char *ttype = json_string_value(json_object_get(target, "type"));
    cti_dp_id(json_object_get(ev, "id"), &m.message_id);
    copy_member(ev, "direction", m.direction, sizeof m.direction);
    copy_member(ev, "from_number", m.from_number, sizeof m.from_number);
    copy_member(ev, "message_status", m.status, sizeof m.status);
    json_t *to = json_object_get(ev, "to_number");
    m.to_numbers = json_is_array(to) ? json_incref(to)
                   : json_is_string(to) ? json_pack("[O]", to) : json_array();
    m.text = json_string_value(json_object_get(ev, "text"));
    if (ttype && !strcmp(ttype, "user"))
        cti_dp_id(json_object_get(target, "id"), &m.dialpad_user_id);
    m.contact = json_is_object(json_object_get(ev, "contact")) ? json_object_get(ev, "contact") : NULL;
    json_t *nt = cti_dp_normalize_ids(target);
    json_t *nc = cti_dp_normalize_ids(m.contact);
    m.target = nt;
    m.contact = nc;
    m.event_timestamp = info->event_timestamp;
    if (!cti_dp_ms(json_object_get(ev, "created_date"), &m.created_at))
        m.created_at = info->event_timestamp;
    bool existed = false;
    int rc = cti_messages_apply(b->db, p->app_id, &m, b->now, &existed);
    if (rc == 0) {
        const char *name = existed ? "sms.status"
                           : strcmp(m.direction, "outbound") ? "sms.received" : "sms.sent";
        json_t *o = event_object(name, info->event_timestamp, 0, false, NULL,
                                 json_pack("{s:s?}", "status", m.status[0] ? m.status : NULL));
        json_object_set_new(o, "message", message_json(&m, ev));
        rc = append(b, p->app_id, o, 0);
    }
    json_decref(m.to_numbers);
    json_decref(nt);
    json_decref(nc);
    return rc;
}

static int apply_agent(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info)
{
    int64_t target_id = 0;
    cti_dp_id(json_object_get(json_object_get(ev, "target"), "id"), &target_id);
    json_t *data = json_deep_copy(ev);
    json_object_del(data, "event_timestamp");
    json_t *t = cti_dp_normalize_ids(json_object_get(ev, "target"));
    if (t)
        json_object_set_new(data, "target", t);
    char *body = json_dumps(data, JSON_COMPACT);
    int rc = cti_agent_status_add(b->db, p->app_id, target_id, info->event_timestamp, body, b->now);
    free(body);
    if (rc == 0)
        return append(b, p->app_id,
                      event_object("agent.status", info->event_timestamp, 0, false, NULL, data), 0);
    json_decref(data);
    return rc;
}

static int apply_contact(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info)
{
    json_t *data = json_pack("{s:O?, s:o}", "action", json_object_get(ev, "event"), "contact",
                             cti_dp_normalize_ids(json_object_get(ev, "contact")));
    return append(b, p->app_id,
                  event_object("contact.changed", info->event_timestamp, 0, false, NULL, data), 0);
}

/* Applies one event. CTI_EINVAL (with *why) when the event itself is bad. */
static int apply_one(batch_t *b, const pending_t *p, const char **why)
{
    json_t *ev = json_loads(p->payload, 0, NULL);
    cti_ev_info_t info;
    if (!json_is_object(ev)) {
        json_decref(ev);
        *why = "payload is not a JSON object";
        return CTI_EINVAL;
    }
    cti_ev_classify(ev, p->payload, strlen(p->payload), &info);
    int rc;
    if (info.problem) {
        *why = info.problem;
        rc = CTI_EINVAL;
    } else if (info.kind == CTI_EV_CALL) {
        rc = apply_call(b, p, ev, &info);
    } else if (info.kind == CTI_EV_SMS) {
        rc = apply_sms(b, p, ev, &info);
    } else if (info.kind == CTI_EV_AGENT) {
        rc = apply_agent(b, p, ev, &info);
    } else {
        rc = apply_contact(b, p, ev, &info);
    }
    json_decref(ev);
    return rc;
}

static int64_t backoff_ms(int attempts)
{
    return 1000LL << (attempts < 1 ? 0 : attempts - 1 > 10 ? 10 : attempts - 1);
}

static int handle(batch_t *b, const pending_t *p)
{
    const char *why = NULL;
    int rc = apply_one(b, p, &why);
    if (rc == 0)
        return cti_raw_mark_applied(b->db, p->id);
    if (rc != CTI_EINVAL)
        return rc; /* the database: the whole batch is retried */
    int attempts = p->attempts + 1;
    bool dead = attempts >= CTI_MAX_ATTEMPTS;
    cti_log(dead ? CTI_LOG_WARN : CTI_LOG_INFO, NULL,
            dead ? "ingest: event parked as dead letter" : "ingest: event failed; will retry",
            CTI_LI("raw_event_id", p->id), CTI_LS("app_id", p->app_id), CTI_LS("error", why),
            CTI_LI("attempts", attempts));
    return cti_raw_mark_failed(b->db, p->id, why, b->now + backoff_ms(attempts), dead);
}

/* PostgreSQL: one NOTIFY per transaction, "app:first:last;..." (delivered at
 * commit, in commit order), so every instance's listener reads the new rows. */
static int notify_ranges(batch_t *b)
{
    if (strcmp(cti_store_backend(cti_db_store(b->db)), "postgres") != 0)
        return 0;
    char payload[7800];
    size_t len = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < b->nseqs; i++) {
        const app_seq_t *s = &b->seqs[i];
        if (s->last < s->first)
            continue;
        char one[128];
        int n = snprintf(one, sizeof one, "%s:%lld:%lld", s->app_id, (long long)s->first,
                         (long long)s->last);
        if (len + (size_t)n + 2 > sizeof payload) { /* full: send this part */
            rc = cti_notify(b->db, CTI_EVENTS_CHANNEL, payload);
            len = 0;
        }
        len += (size_t)snprintf(payload + len, sizeof payload - len, "%s%s", len ? ";" : "", one);
    }
    return rc == 0 && len ? cti_notify(b->db, CTI_EVENTS_CHANNEL, payload) : rc;
}

cti_processed_t *cti_processed_new(void)
{
    return cti_calloc(1, sizeof(cti_processed_t));
}

void cti_processed_publish(cti_processed_t *b, cti_publish_fn publish, void *ud)
{
    for (int i = 0; publish && i < b->nout; i++)
        publish(b->out[i].app_id, b->out[i].seq, b->out[i].body, ud);
}

void cti_processed_free(cti_processed_t *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->nout; i++)
        free(b->out[i].body);
    free(b->out);
    free(b->seqs);
    free(b);
}

int cti_process_pending(cti_db_t *db, int64_t now, int limit, cti_processed_t *b)
{
    b->db = db;
    b->now = now;
    b->n = 0;
    b->items = cti_malloc((size_t)limit * sizeof *b->items);
    int rc = cti_raw_pending(db, now, limit, collect, b);
    for (int i = 0; rc == 0 && i < b->n; i++)
        rc = handle(b, &b->items[i]);
    for (int i = 0; rc == 0 && i < b->nseqs; i++)
        rc = cti_seq_set(db, b->seqs[i].app_id, b->seqs[i].last);
    if (rc == 0)
        rc = notify_ranges(b);
    for (int i = 0; i < b->n; i++)
        free(b->items[i].payload);
    free(b->items);
    b->items = NULL;
    return rc < 0 ? rc : b->n;
}

int cti_process_batch(cti_db_t *db, int64_t now, cti_publish_fn publish, void *ud)
{
    cti_processed_t *b = cti_processed_new();
    int rc = cti_db_begin(db);
    int handled = rc == 0 ? cti_process_pending(db, now, CTI_PROCESS_BATCH, b) : rc;
    if (handled >= 0 && (rc = cti_db_commit(db)) == 0)
        cti_processed_publish(b, publish, ud);
    else if (handled < 0 && rc == 0)
        cti_db_rollback(db);
    cti_processed_free(b);
    return handled < 0 ? handled : rc < 0 ? rc : handled;
}
