/*
 * processor.c — the pipeline that applies a batch of raw events, in the
 * caller's transaction (see processor.h):
 *
 *   prepare     parse (unless the HTTP thread did), classify, find each call
 *               event's leg
 *   lock apps   cti_seqs_lock: the apps' seq rows, in sorted order
 *   load legs   one query per app for the legs the batch touches
 *   apply       call events to their legs in memory (cti_call_apply);
 *               SMS / agent status with their own SQL; contact events
 *   resolve CRM the CRM user of every call event's Dialpad user (crmcache)
 *   save legs   legs, timeline rows and voicemails, per app
 *   append      event-log rows with their seqs; bodies kept to publish
 *   mark        raw events applied, or failed (retry / dead letter)
 *   save seqs   cti_seqs_save (and NOTIFY on PostgreSQL)
 *
 * A batch in progress is a batch_t (private); what it leaves to publish
 * after commit is a cti_processed_t (public). Call events, the volume, are
 * read from jscan tokens end to end: nothing is parsed twice.
 *
 * Thread: the ingest worker.
 */
#include "ingest/processor.h"
#include "core/common.h"
#include "core/jw.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "dialpad/normalize.h"
#include "ingest/crmcache.h"
#include "ingest/seqs.h"
#include "model/call.h"
#include "repo/calls.h"
#include "repo/deliveries.h"
#include "repo/events.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the result: events appended, published after commit ------------------------------- */

typedef struct {
    char app_id[37];
    int64_t seq;
    char *body;
} appended_t;

struct cti_processed {
    appended_t *out;
    int nout, capout;
    int applied, failed, dead; /* raw events, for /metrics once committed */
};

cti_processed_t *cti_processed_new(void)
{
    return cti_calloc(1, sizeof(cti_processed_t));
}

/* Keeps an appended event's body (taken) to publish. */
static void processed_add(cti_processed_t *p, const char *app_id, int64_t seq,
                                       char *body)
{
    if (p->nout == p->capout)
        p->out = cti_realloc(p->out,
                             (size_t)(p->capout = p->capout ? 2 * p->capout : 64) * sizeof *p->out);
    appended_t *a = &p->out[p->nout++];
    snprintf(a->app_id, sizeof a->app_id, "%s", app_id);
    a->seq = seq;
    a->body = body;
}

void cti_processed_publish(cti_processed_t *p, cti_publish_fn publish, void *ud)
{
    cti_counter_add(&cti_metrics.events_applied, (uint64_t)p->applied);
    cti_counter_add(&cti_metrics.events_failed, (uint64_t)p->failed);
    cti_counter_add(&cti_metrics.dead_letters_parked, (uint64_t)p->dead);
    cti_counter_add(&cti_metrics.eventlog_appends, (uint64_t)p->nout);
    if (!publish || !p->nout)
        return;
    cti_logrow_t *rows = cti_malloc((size_t)p->nout * sizeof *rows);
    for (int i = 0; i < p->nout; i++)
        rows[i] = (cti_logrow_t){
            .app_id = p->out[i].app_id, .seq = p->out[i].seq, .body = p->out[i].body};
    publish(rows, p->nout, ud);
    free(rows);
}

void cti_processed_free(cti_processed_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nout; i++)
        free(p->out[i].body);
    free(p->out);
    free(p);
}

/* ---- a batch in progress ---------------------------------------------------------------- */

/* A call leg touched by the batch: loaded once, changed in memory, saved once. */
typedef struct {
    char app_id[37];
    int64_t call_id;
    cti_call_t call;
    bool stored;  /* it was in the database before this batch */
    bool applied; /* an event of this batch has been applied to it */
    /* as stored: the columns besides status that the calls indexes cover */
    char stored_external[sizeof(((cti_call_t *)0)->external_number)];
    char stored_internal[sizeof(((cti_call_t *)0)->internal_number)];
    int64_t stored_user, stored_sort_at;
    const char *doc; /* its call object after the last event applied (an item's) */
} leg_t;

/* One raw event of the batch and what applying it produced. */
typedef struct {
    /* the raw event */
    int64_t id;
    char app_id[37];
    char *payload; /* owned when read back from the store, else borrowed */
    bool owned;
    bool server; /* stored with kind "server": the server's own event (event.h) */
    bool reconciled; /* a call's final event made by reconciliation */
    const cti_jdoc_t *given;         /* the payload already parsed (borrowed), or NULL */
    const cti_ev_info_t *info_given; /* given already classified (borrowed), or NULL */
    int64_t received_at;
    int attempts;
    bool fresh; /* stored as applied in this transaction: nothing to mark */
    /* read from it */
    const cti_jdoc_t *d; /* the payload parsed: given, or own */
    cti_jdoc_t own;
    cti_ev_info_t info;
    const char *why;              /* set when the event itself is bad */
    char small_state[72], *state; /* a call event's state, whole (small_state or owned) */
    leg_t *leg;
    /* what applying it produced: call events */
    cti_timeline_row_t step;
    cti_call_effect_t eff;
    char *call; /* the call after it (open text, see cti_call_render) */
    int64_t user;
    char *crm; /* the CRM user mapped to its Dialpad user */
    /* other kinds: the event's name and its data (and message) as JSON */
    const char *name;
    char *own_name; /* a server event's name (name points here) */
    char *data, *message;
} item_t;

typedef struct {
    cti_db_t *db;
    int64_t now;
    item_t *items;
    int n, cap;
    leg_t *legs;
    int nlegs;
    cti_seqs_t *seqs;
    cti_processed_t *done;
} batch_t;

/* Room for n items in all, allocated once (items are not moved after prepare()). */
static void batch_reserve(batch_t *b, int n)
{
    if (n > b->cap) {
        b->cap = n;
        b->items = cti_realloc(b->items, (size_t)b->cap * sizeof *b->items);
    }
}

static item_t *batch_add(batch_t *b)
{
    if (b->n == b->cap)
        batch_reserve(b, b->cap ? 2 * b->cap : 64);
    item_t *it = &b->items[b->n++];
    memset(it, 0, sizeof *it);
    return it;
}

static int collect(const cti_raw_t *ev, void *ud)
{
    item_t *it = batch_add(ud);
    it->id = ev->id;
    snprintf(it->app_id, sizeof it->app_id, "%s", ev->app_id);
    it->payload = cti_strdup(ev->payload);
    it->owned = true;
    it->server = !strcmp(ev->kind, "server");
    it->reconciled = !strcmp(ev->kind, CTI_RAW_KIND_RECONCILED);
    it->received_at = ev->received_at;
    it->attempts = ev->attempts;
    return 0;
}

/* Whether applying the event produced a normalized event. */
static bool produced(const item_t *it)
{
    return it->call || it->data;
}

static leg_t *leg_for(batch_t *b, const char *app_id, int64_t call_id)
{
    for (int i = 0; i < b->nlegs; i++)
        if (b->legs[i].call_id == call_id && !strcmp(b->legs[i].app_id, app_id))
            return &b->legs[i];
    assert(b->nlegs < (b->n ? b->n : 1)); /* room for one per item (prepare) */
    leg_t *l = &b->legs[b->nlegs++];
    memset(l, 0, sizeof *l);
    snprintf(l->app_id, sizeof l->app_id, "%s", app_id);
    l->call_id = call_id;
    cti_call_init(&l->call, call_id);
    return l;
}

/* ---- prepare ---------------------------------------------------------------------------- */

/* A call event's state, decoded whole (a long one is kept whole too). */
static void read_state(item_t *it)
{
    int t = cti_jdoc_get(it->d, 0, "state");
    long n = cti_jdoc_str(it->d, t, it->small_state, sizeof it->small_state);
    it->state =
        n >= 0 && (size_t)n >= sizeof it->small_state ? cti_jdoc_strdup(it->d, t) : it->small_state;
}

/* Parses and classifies (unless the caller did); finds the legs of call events. */
static void prepare(batch_t *b)
{
    b->legs = cti_calloc((size_t)(b->n ? b->n : 1), sizeof *b->legs);
    for (int i = 0; i < b->n; i++) {
        item_t *it = &b->items[i];
        const char *text = it->payload;
        size_t len = strlen(text);
        if (it->given)
            it->d = it->given;
        else if (cti_jdoc_parse(&it->own, text, len, NULL, 0) == 0)
            it->d = &it->own;
        if (!it->d || cti_jdoc_type(it->d, 0) != CTI_JT_OBJECT) {
            it->why = it->d ? "payload is not a JSON object" : "payload is not valid JSON";
            continue;
        }
        if (it->info_given)
            it->info = *it->info_given;
        else if (it->server)
            cti_ev_classify_server(it->d, &it->info);
        else
            cti_ev_classify(it->d, text, len, &it->info);
        if ((it->why = it->info.problem) != NULL || it->info.kind != CTI_EV_CALL)
            continue;
        int64_t call_id = 0;
        cti_dp_id_at(it->d, cti_jdoc_get(it->d, 0, "call_id"), &call_id);
        read_state(it);
        it->leg = leg_for(b, it->app_id, call_id);
    }
}

static int lock_apps(batch_t *b)
{
    const char **apps = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *apps);
    for (int i = 0; i < b->n; i++)
        apps[i] = b->items[i].app_id;
    int rc = cti_seqs_lock(b->seqs, apps, b->n);
    free(apps);
    return rc;
}

/* ---- load legs -------------------------------------------------------------------------- */

typedef struct {
    batch_t *b;
    const char *app_id;
} load_t;

/* Takes a stored leg over (a copy of it). */
static int take_leg(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    load_t *ld = ud;
    leg_t *l = leg_for(ld->b, ld->app_id, c->call_id);
    cti_call_clear(&l->call);
    cti_call_copy(&l->call, c);
    l->stored = true;
    memcpy(l->stored_external, c->external_number, sizeof l->stored_external);
    memcpy(l->stored_internal, c->internal_number, sizeof l->stored_internal);
    l->stored_user = c->dialpad_user_id;
    l->stored_sort_at = sort_at;
    return 0;
}

static int take_leg_of(const char *app_id, const cti_call_t *c, const char *crm,
                       int64_t sort_at, void *ud)
{
    load_t ld = {ud, app_id};
    return take_leg(c, crm, sort_at, &ld);
}

/* The batch's stored legs, of every app at once (cti_calls_load_pairs: one
 * round trip on PostgreSQL however many apps the batch spreads over). */
static int load_legs(batch_t *b)
{
    const char **apps = cti_malloc((size_t)(b->nlegs ? b->nlegs : 1) * sizeof *apps);
    int64_t *ids = cti_malloc((size_t)(b->nlegs ? b->nlegs : 1) * sizeof *ids);
    for (int i = 0; i < b->nlegs; i++) {
        apps[i] = b->legs[i].app_id;
        ids[i] = b->legs[i].call_id;
    }
    int rc = cti_calls_load_pairs(b->db, apps, ids, b->nlegs, take_leg_of, b);
    free(apps);
    free(ids);
    return rc;
}

/* ---- apply -------------------------------------------------------------------------------- */

/* Applies a call event to its leg in memory and renders the call after it. */
static void apply_call(batch_t *b, item_t *it)
{
    leg_t *l = it->leg;
    /* A reconciled end for a leg its own webhooks have ended meanwhile (they
     * were in flight while reconciliation read Dialpad's list): nothing to
     * add, no timeline row, no event. */
    if (it->reconciled && l->call.status == CTI_STATUS_ENDED)
        return;
    cti_call_apply(&l->call, it->d, 0, it->state, it->info.event_timestamp, b->now, &it->eff);
    if (it->reconciled)
        l->call.reconciled = true; /* after: its own end is not late */
    l->applied = true;
    it->step = (cti_timeline_row_t){l->call_id, it->info.event_timestamp, it->received_at, it->id,
                                    it->state, it->eff.late, it->reconciled};
    it->user = l->call.dialpad_user_id;
    cti_jw_t w = {0};
    cti_call_render(&w, &l->call);
    l->doc = it->call = cti_jw_take(&w, NULL);
}

/* JSON text the normalizer wrote, as jansson values for the store's messages
 * (it writes only what jansson reads: see cti_jw_jdoc). */
static json_t *loads(const char *text)
{
    return text ? json_loads(text, 0, NULL) : NULL;
}

static int apply_sms(batch_t *b, item_t *it)
{
    cti_dp_sms_t s;
    cti_dp_sms_read(it->d, it->info.event_timestamp, &s);
    cti_message_t m = {.message_id = s.id,
                       .to_numbers = loads(s.to_numbers),
                       .text = s.text,
                       .dialpad_user_id = s.dialpad_user_id,
                       .contact = loads(s.contact),
                       .target = loads(s.target),
                       .event_timestamp = it->info.event_timestamp,
                       .created_at = s.created_at};
    memcpy(m.direction, s.direction, sizeof m.direction);
    memcpy(m.from_number, s.from_number, sizeof m.from_number);
    memcpy(m.status, s.status, sizeof m.status);
    bool existed = false;
    int rc = cti_messages_apply(b->db, it->app_id, &m, b->now, &existed);
    if (rc == 0) {
        it->name = existed                           ? "sms.status"
                   : strcmp(s.direction, "outbound") ? "sms.received"
                                                     : "sms.sent";
        cti_jw_t w = {0};
        cti_jw_lit(&w, "{");
        cti_jw_key(&w, "status"), cti_jw_text(&w, s.status);
        cti_jw_lit(&w, "}");
        it->data = cti_jw_take(&w, NULL);
        cti_dp_sms_render(&w, &s);
        it->message = cti_jw_take(&w, NULL);
    }
    json_decref(m.to_numbers);
    json_decref(m.contact);
    json_decref(m.target);
    cti_dp_sms_clear(&s);
    return rc;
}

static int apply_agent(batch_t *b, item_t *it)
{
    int64_t target_id = 0;
    cti_dp_id_at(it->d, cti_jdoc_get(it->d, cti_jdoc_get(it->d, 0, "target"), "id"), &target_id);
    cti_jw_t w = {0};
    cti_dp_agent_data(&w, it->d);
    char *data = cti_jw_take(&w, NULL);
    int rc =
        cti_agent_status_add(b->db, it->app_id, target_id, it->info.event_timestamp, data, b->now);
    if (rc == 0) {
        it->name = "agent.status";
        it->data = data;
    } else {
        free(data);
    }
    return rc;
}

static void apply_contact(item_t *it)
{
    cti_jw_t w = {0};
    cti_dp_contact_data(&w, it->d);
    it->name = "contact.changed";
    it->data = cti_jw_take(&w, NULL);
}

/* A server event (connection.*): its name and data as they are. */
static void apply_server(item_t *it)
{
    cti_jw_t w = {0};
    cti_jw_jdoc(&w, it->d, cti_jdoc_get(it->d, 0, "data"));
    it->name = it->own_name = cti_jdoc_strdup(it->d, cti_jdoc_get(it->d, 0, "event"));
    it->data = cti_jw_take(&w, NULL);
}

/* Applies every good event in order: calls in memory, the rest with their own SQL. */
static int apply_all(batch_t *b)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < b->n; i++) {
        item_t *it = &b->items[i];
        if (it->why)
            continue;
        switch (it->info.kind) {
        case CTI_EV_CALL:
            apply_call(b, it);
            break;
        case CTI_EV_SMS:
            rc = apply_sms(b, it);
            break;
        case CTI_EV_AGENT:
            rc = apply_agent(b, it);
            break;
        case CTI_EV_SERVER:
            apply_server(it);
            break;
        default:
            apply_contact(it);
            break;
        }
    }
    return rc;
}

/* ---- resolve CRM users ---------------------------------------------------------------------- */

static int set_crm(const char *app_id, int64_t user, const char *crm, void *ud)
{
    batch_t *b = ud;
    for (int i = 0; i < b->n; i++) {
        item_t *it = &b->items[i];
        if (it->call && it->user == user && !it->crm && !strcmp(it->app_id, app_id))
            it->crm = cti_strdup(crm);
    }
    return 0;
}

/* Finds the CRM user of every call event's Dialpad user: from what the worker
 * remembers, else one lookup for the rest of every app (cti_crm_users_pairs:
 * one round trip on PostgreSQL however many apps the batch spreads over). */
static int resolve_crm(batch_t *b)
{
    const char **apps = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *apps);
    int64_t *ids = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *ids);
    int n = 0;
    for (int i = 0; i < b->n; i++) {
        item_t *it = &b->items[i];
        if (!it->call || !it->user || cti_crm_cache_get(it->app_id, it->user, &it->crm))
            continue;
        bool listed = false; /* a pair asked once (a batch has few distinct ones) */
        for (int k = 0; k < n && !listed; k++)
            listed = ids[k] == it->user && !strcmp(apps[k], it->app_id);
        if (!listed) {
            apps[n] = it->app_id;
            ids[n++] = it->user;
        }
    }
    unsigned gen = cti_crm_cache_gen(); /* before the lookup: see crmcache.h */
    int rc = cti_crm_users_pairs(b->db, apps, ids, n, set_crm, b);
    for (int k = 0; rc == 0 && k < n; k++) {
        const char *crm = NULL;
        for (int i = 0; i < b->n && !crm; i++)
            if (b->items[i].call && b->items[i].user == ids[k] &&
                !strcmp(b->items[i].app_id, apps[k]))
                crm = b->items[i].crm;
        cti_crm_cache_put(apps[k], ids[k], crm, gen);
    }
    free(apps);
    free(ids);
    return rc;
}

/* ---- save legs ---------------------------------------------------------------------------- */

/* Whether a leg is stored with the index keys it has now (see cti_calls_save_apps). */
static bool keys_same(const leg_t *l)
{
    const cti_call_t *c = &l->call;
    return l->stored && c->dialpad_user_id == l->stored_user &&
           cti_calls_sort_at(c) == l->stored_sort_at &&
           !strcmp(c->external_number, l->stored_external) &&
           !strcmp(c->internal_number, l->stored_internal);
}

/* Writes the legs, their timelines and voicemails, of every app at once (the
 * same few statements whether the batch is of one app or spread over many). */
static int save_legs(batch_t *b)
{
    size_t nl = (size_t)(b->nlegs ? b->nlegs : 1), ni = (size_t)(b->n ? b->n : 1);
    const char **apps = cti_malloc(nl * sizeof *apps);
    cti_call_t **calls = cti_malloc(nl * sizeof *calls);
    const char **docs = cti_malloc(nl * sizeof *docs);
    bool *same = cti_malloc(nl * sizeof *same);
    const char **step_apps = cti_malloc(ni * sizeof *step_apps);
    cti_timeline_row_t *steps = cti_malloc(ni * sizeof *steps);
    int nc = 0, ns = 0;
    for (int i = 0; i < b->nlegs; i++)
        if (b->legs[i].applied) {
            apps[nc] = b->legs[i].app_id;
            docs[nc] = b->legs[i].doc;
            same[nc] = keys_same(&b->legs[i]);
            calls[nc++] = &b->legs[i].call;
        }
    for (int i = 0; i < b->n; i++)
        if (b->items[i].leg && produced(&b->items[i])) {
            step_apps[ns] = b->items[i].app_id;
            steps[ns++] = b->items[i].step;
        }
    int rc = cti_calls_save_apps(b->db, apps, NULL, calls, docs, same, nc, b->now);
    if (rc == 0)
        rc = cti_calls_add_timeline_apps(b->db, step_apps, NULL, steps, ns);
    for (int i = 0; rc == 0 && i < nc; i++)
        if (calls[i]->vm_url || calls[i]->vm_recording_id || calls[i]->vm_transcript)
            rc = cti_voicemails_save(b->db, apps[i], calls[i], b->now);
    free(apps);
    free(calls);
    free(docs);
    free(same);
    free(step_apps);
    free(steps);
    return rc;
}

/* ---- append to the event log ------------------------------------------------------------- */

/* A call event's body: {"seq", "event", "occurred_at", "call_id", "late", "call", "data"}. */
static char *call_event_body(const item_t *it, int64_t seq)
{
    cti_jw_t w = {0};
    cti_jw_reserve(&w, strlen(it->call) + 256);
    cti_jw_lit(&w, "{");
    cti_jw_key(&w, "seq"), cti_jw_int(&w, seq);
    cti_jw_key(&w, "event"), cti_jw_str(&w, it->eff.event);
    cti_jw_key(&w, "occurred_at"), cti_jw_time(&w, it->info.event_timestamp);
    cti_jw_key(&w, "call_id"), cti_jw_id(&w, it->leg->call_id);
    cti_jw_key(&w, "late"), cti_jw_bool(&w, it->eff.late);
    cti_jw_key(&w, "call"), cti_jw_raw(&w, it->call, strlen(it->call));
    cti_call_close(&w, it->crm);
    cti_jw_key(&w, "data"), cti_jw_lit(&w, "{");
    if (it->eff.data_key[0])
        cti_jw_key(&w, it->eff.data_key), cti_jw_str(&w, it->eff.data_value);
    if (it->reconciled)
        cti_jw_key(&w, "reconciled"), cti_jw_bool(&w, true);
    cti_jw_lit(&w, "}}");
    return cti_jw_take(&w, NULL);
}

/* Another kind's body: {"seq", "event", "occurred_at", "call_id": null,
 * "late": false, "call": null, "data"[, "message"]}. */
static char *other_event_body(const item_t *it, int64_t seq)
{
    cti_jw_t w = {0};
    cti_jw_lit(&w, "{");
    cti_jw_key(&w, "seq"), cti_jw_int(&w, seq);
    cti_jw_key(&w, "event"), cti_jw_str(&w, it->name);
    cti_jw_key(&w, "occurred_at"), /* an event without a time of its own: when it came */
        cti_jw_time(&w, it->info.event_timestamp ? it->info.event_timestamp : it->received_at);
    cti_jw_lit(&w, ",\"call_id\":null,\"late\":false,\"call\":null");
    cti_jw_key(&w, "data"), cti_jw_raw(&w, it->data, strlen(it->data));
    if (it->message)
        cti_jw_key(&w, "message"), cti_jw_raw(&w, it->message, strlen(it->message));
    cti_jw_lit(&w, "}");
    return cti_jw_take(&w, NULL);
}

/* Gives every event its seq (in batch order), writes the event log, keeps the
 * bodies to publish after commit. */
static int append_events(batch_t *b)
{
    cti_logrow_t *rows = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *rows);
    int n = 0, rc = 0;
    for (int i = 0; rc == 0 && i < b->n; i++) {
        item_t *it = &b->items[i];
        int64_t seq;
        if (!produced(it) || (rc = cti_seqs_next(b->seqs, it->app_id, &seq)) != 0)
            continue;
        char *body = it->call ? call_event_body(it, seq) : other_event_body(it, seq);
        processed_add(b->done, it->app_id, seq, body);
        /* the item's app_id: an appended_t moves when b->done grows past 64 */
        rows[n++] = (cti_logrow_t){it->app_id, seq, it->call ? it->eff.event : it->name,
                                   it->leg ? it->leg->call_id : 0, body};
    }
    if (rc == 0)
        rc = cti_eventlog_append_many(b->db, rows, n, b->now);
    if (rc == 0) /* outbound webhooks: with their events, or not at all */
        rc = cti_deliveries_enqueue(b->db, rows, n, b->now);
    free(rows);
    return rc;
}

/* ---- mark ----------------------------------------------------------------------------------- */

static int64_t backoff_ms(int attempts)
{
    return 1000LL << (attempts < 1 ? 0 : attempts - 1 > 10 ? 10 : attempts - 1);
}

/* Records a failed attempt of a raw event that had attempts before: retried
 * after the backoff, or parked as a dead letter. Every kind of failure comes
 * here, so each is retried on the same schedule. */
static int count_failure(cti_db_t *db, int64_t now, int64_t id, const char *app_id, int attempts,
                         const char *why)
{
    attempts++;
    bool dead = attempts >= CTI_MAX_ATTEMPTS;
    cti_log(dead ? CTI_LOG_WARN : CTI_LOG_INFO, NULL,
            dead ? "ingest: event parked as dead letter" : "ingest: event failed; will retry",
            CTI_LI("raw_event_id", id), CTI_LS("app_id", app_id), CTI_LS("error", why),
            CTI_LI("attempts", attempts));
    return cti_raw_mark_failed(db, id, why, now + backoff_ms(attempts), dead);
}

/* Marks the good events applied (one statement) and the bad ones for retry. */
static int mark(batch_t *b)
{
    int64_t *ids = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *ids);
    int n = 0, rc = 0;
    for (int i = 0; rc == 0 && i < b->n; i++) {
        item_t *it = &b->items[i];
        if (!it->why) {
            b->done->applied++;
            if (!it->fresh)
                ids[n++] = it->id;
            continue;
        }
        rc = count_failure(b->db, b->now, it->id, it->app_id, it->attempts, it->why);
        b->done->failed++;
        b->done->dead += it->attempts + 1 >= CTI_MAX_ATTEMPTS;
    }
    if (rc == 0 && n)
        rc = cti_raw_mark_applied_many(b->db, ids, n);
    free(ids);
    return rc;
}

/* ---- the pipeline ---------------------------------------------------------------------------- */

static void release(batch_t *b)
{
    for (int i = 0; i < b->n; i++) {
        item_t *it = &b->items[i];
        cti_jdoc_free(&it->own);
        if (it->owned)
            free(it->payload);
        if (it->state != it->small_state)
            free(it->state);
        free(it->call);
        free(it->crm);
        free(it->data);
        free(it->own_name);
        free(it->message);
    }
    for (int i = 0; i < b->nlegs; i++)
        cti_call_clear(&b->legs[i].call);
    free(b->items);
    free(b->legs);
    cti_seqs_free(b->seqs);
}

/* Applies b's items, in the caller's transaction. */
static int run(batch_t *b)
{
    b->seqs = cti_seqs_new(b->db);
    prepare(b);
    int rc = lock_apps(b);
    if (rc == 0)
        rc = load_legs(b);
    if (rc == 0)
        rc = apply_all(b);
    if (rc == 0)
        rc = resolve_crm(b);
    if (rc == 0)
        rc = save_legs(b);
    if (rc == 0)
        rc = append_events(b);
    if (rc == 0)
        rc = mark(b);
    if (rc == 0)
        rc = cti_seqs_save(b->seqs);
    return rc;
}

int cti_process_pending(cti_db_t *db, int64_t now, int limit, cti_processed_t *out, int64_t *first)
{
    batch_t b = {.db = db, .now = now, .done = out};
    batch_reserve(&b, limit);
    int rc = cti_raw_pending(db, now, limit, collect, &b);
    if (first)
        *first = b.n ? b.items[0].id : 0;
    if (rc == 0)
        rc = run(&b);
    int n = b.n;
    release(&b);
    return rc < 0 ? rc : n;
}

int cti_process_stored(cti_db_t *db, int64_t now, const cti_stored_t *events, int n,
                       cti_processed_t *out)
{
    batch_t b = {.db = db, .now = now, .done = out};
    batch_reserve(&b, n);
    for (int i = 0; i < n; i++) {
        item_t *it = batch_add(&b);
        it->id = events[i].id;
        snprintf(it->app_id, sizeof it->app_id, "%s", events[i].app_id);
        it->payload = (char *)events[i].payload; /* borrowed: not freed here */
        it->given = events[i].doc;
        it->info_given = events[i].info;
        it->received_at = events[i].received_at;
        it->reconciled = events[i].reconciled;
        it->fresh = true;
    }
    int rc = run(&b);
    release(&b);
    return rc < 0 ? rc : 0;
}

int cti_process_batch(cti_db_t *db, int64_t now, int limit, cti_publish_fn publish, void *ud,
                      cti_process_failure_t *failure)
{
    cti_processed_t *p = cti_processed_new();
    int64_t first = 0;
    int rc = cti_db_begin(db);
    int handled = rc == 0 ? cti_process_pending(db, now, limit, p, &first) : rc;
    if (handled >= 0 && (rc = cti_db_commit(db)) == 0)
        cti_processed_publish(p, publish, ud);
    if (handled < 0 || rc < 0) {
        failure->first_id = first;
        snprintf(failure->error, sizeof failure->error, "%s", cti_db_errmsg(db));
        if (handled < 0 && rc == 0) /* a failed commit has rolled back already */
            cti_db_rollback(db);
    }
    cti_processed_free(p);
    return handled < 0 ? handled : rc < 0 ? rc : handled;
}

typedef struct {
    int64_t id;
    int attempts;
    char app_id[37];
} oldest_t;

static int note_oldest(const cti_raw_t *ev, void *ud)
{
    oldest_t *o = ud;
    o->id = ev->id;
    o->attempts = ev->attempts;
    snprintf(o->app_id, sizeof o->app_id, "%s", ev->app_id);
    return 0;
}

int cti_process_refused(cti_db_t *db, int64_t now, int64_t id, const char *error)
{
    oldest_t o = {0};
    char why[300];
    snprintf(why, sizeof why, "the database refused it: %s", error);
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_raw_pending(db, now, 1, note_oldest, &o); /* locks it (PostgreSQL) */
    if (rc == 0 && o.id == id)
        rc = count_failure(db, now, o.id, o.app_id, o.attempts, why);
    if (rc == 0) { /* a failed commit has rolled back already */
        rc = cti_db_commit(db);
        if (rc == 0 && o.id == id) {
            CTI_METRIC_INC(events_failed);
            if (o.attempts + 1 >= CTI_MAX_ATTEMPTS)
                CTI_METRIC_INC(dead_letters_parked);
        }
        return rc == 0 ? o.id == id : rc;
    }
    cti_db_rollback(db);
    return rc;
}
