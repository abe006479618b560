/* processor.c — see processor.h. */
#include "ingest/processor.h"
#include "core/common.h"
#include "core/jw.h"
#include "core/log.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "model/call.h"
#include "repo/calls.h"
#include "repo/events.h"
#include "store/wakeup.h"
#include "repo/tenants.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id;
    char app_id[37];
    char *payload;   /* owned when read back from the store, else borrowed */
    const cti_jdoc_t *doc; /* the payload already parsed (borrowed), or NULL */
    const cti_ev_info_t *info; /* doc already classified (borrowed), or NULL */
    int64_t received_at;
    int attempts;
    bool fresh;      /* stored as applied in this transaction: nothing to mark */
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
    p->doc = NULL;
    p->info = NULL;
    p->received_at = ev->received_at;
    p->attempts = ev->attempts;
    p->fresh = false;
    return 0;
}

/* The app's counter in this transaction; the first use locks its row. */
static int app_counter(batch_t *b, const char *app_id, app_seq_t **out)
{
    for (int i = 0; i < b->nseqs; i++)
        if (!strcmp(b->seqs[i].app_id, app_id)) {
            *out = &b->seqs[i];
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
    *out = s;
    return 0;
}

/* The app's next seq. */
static int next_seq(batch_t *b, const char *app_id, int64_t *seq)
{
    app_seq_t *s;
    int rc = app_counter(b, app_id, &s);
    if (rc == 0)
        *seq = ++s->last;
    return rc;
}

static int by_app(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* Locks the counters of every app of the batch, in app order, before any leg is
 * read. Instances applying events of the same app (PostgreSQL) so take turns
 * for the whole read-change-write of its legs: without this, two could read a
 * call before either wrote it, and the later write would lose the other's
 * event. In one order, so two instances never wait on each other. */
static int lock_apps(batch_t *b)
{
    const char **apps = cti_malloc((size_t)(b->n ? b->n : 1) * sizeof *apps);
    for (int i = 0; i < b->n; i++)
        apps[i] = b->items[i].app_id;
    qsort(apps, (size_t)b->n, sizeof *apps, by_app);
    int rc = 0;
    for (int i = 0; rc == 0 && i < b->n; i++) {
        app_seq_t *s;
        if (i == 0 || strcmp(apps[i], apps[i - 1]))
            rc = app_counter(b, apps[i], &s);
    }
    free(apps);
    return rc;
}

/* An event that is not about a call: {"seq", "event", "occurred_at", "call_id": null,
 * "late": false, "call": null, "data"} in that order (seq set when appended). */
static json_t *event_object(const char *name, int64_t ts, json_t *data)
{
    char when[CTI_ISO_TIME_LEN];
    cti_iso_time(ts, when);
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(0));
    json_object_set_new(o, "event", json_string(name));
    json_object_set_new(o, "occurred_at", json_string(when));
    json_object_set_new(o, "call_id", json_null());
    json_object_set_new(o, "late", json_false());
    json_object_set_new(o, "call", json_null());
    json_object_set_new(o, "data", data ? data : json_object());
    return o;
}

/* ---- per kind ------------------------------------------------------------------------- */

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

static int apply_sms(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info,
                     json_t **out)
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
        *out = event_object(name, info->event_timestamp,
                            json_pack("{s:s?}", "status", m.status[0] ? m.status : NULL));
        json_object_set_new(*out, "message", message_json(&m, ev));
    }
    json_decref(m.to_numbers);
    json_decref(nt);
    json_decref(nc);
    return rc;
}

static int apply_agent(batch_t *b, const pending_t *p, json_t *ev, const cti_ev_info_t *info,
                       json_t **out)
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
        *out = event_object("agent.status", info->event_timestamp, data);
    else
        json_decref(data);
    return rc;
}

static json_t *contact_event(json_t *ev, const cti_ev_info_t *info)
{
    json_t *data = json_pack("{s:O?, s:o}", "action", json_object_get(ev, "event"), "contact",
                             cti_dp_normalize_ids(json_object_get(ev, "contact")));
    return event_object("contact.changed", info->event_timestamp, data);
}

/* PostgreSQL: one NOTIFY per transaction, "app:first:last;..." (delivered at
 * commit, in commit order), so every instance's listener reads the new rows. */
static int notify_ranges(batch_t *b)
{
    if (!cti_store_has(cti_db_store(b->db), CTI_CAP_NOTIFY))
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
    if (!publish || !b->nout)
        return;
    cti_logrow_t *rows = cti_malloc((size_t)b->nout * sizeof *rows);
    for (int i = 0; i < b->nout; i++)
        rows[i] = (cti_logrow_t){.app_id = b->out[i].app_id, .seq = b->out[i].seq,
                                 .body = b->out[i].body};
    publish(rows, b->nout, ud);
    free(rows);
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

/* ---- a batch as a set ------------------------------------------------------------------ */

/* A call leg touched by the batch: loaded once, changed in memory, saved once. */
typedef struct {
    char app_id[37];
    int64_t call_id;
    cti_call_t call;
    bool stored; /* it was in the database before this batch */
    bool applied; /* an event of this batch has been applied to it */
    /* as stored: the columns besides status that the calls indexes cover */
    char stored_external[sizeof(((cti_call_t *)0)->external_number)];
    char stored_internal[sizeof(((cti_call_t *)0)->internal_number)];
    int64_t stored_user, stored_sort_at;
    const char *doc; /* its call object after the last event applied (an item's) */
} leg_t;

/* One raw event of the batch and what applying it produced. */
typedef struct {
    pending_t *p;
    const cti_jdoc_t *d; /* the payload parsed: p's, or own */
    cti_jdoc_t own;
    json_t *ev;          /* the same as a jansson tree, for kinds other than calls */
    char state[72];      /* a call event's state */
    cti_ev_info_t info;
    const char *why; /* set when the event itself is bad */
    leg_t *leg;
    cti_timeline_row_t step;
    json_t *event; /* other kinds: the normalized event (seq set later), or NULL */
    /* call events: what applying it did, the call after it (open text, see
     * cti_call_render), and the CRM user mapped to its Dialpad user */
    cti_call_effect_t eff;
    char *call;
    int64_t user;
    char *crm;
} item_t;

/* Whether applying the event produced a normalized event. */
static bool produced(const item_t *it)
{
    return it->event || it->call;
}

typedef struct {
    item_t *items;
    int n;
    leg_t *legs;
    int nlegs;
} set_t;

static leg_t *leg_for(set_t *s, const char *app_id, int64_t call_id)
{
    for (int i = 0; i < s->nlegs; i++)
        if (s->legs[i].call_id == call_id && !strcmp(s->legs[i].app_id, app_id))
            return &s->legs[i];
    leg_t *l = &s->legs[s->nlegs++];
    memset(l, 0, sizeof *l);
    snprintf(l->app_id, sizeof l->app_id, "%s", app_id);
    l->call_id = call_id;
    cti_call_init(&l->call, call_id);
    return l;
}

typedef struct {
    set_t *s;
    const char *app_id;
} load_t;

/* Takes a stored leg over (sharing its JSON, copying its strings). */
static int take_leg(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    load_t *ld = ud;
    leg_t *l = leg_for(ld->s, ld->app_id, c->call_id);
    cti_call_clear(&l->call);
    l->call = *c;
    l->call.contact = cti_strdup(c->contact);
    l->call.target = cti_strdup(c->target);
    json_incref(l->call.recording_urls);
    l->call.vm_url = cti_strdup(c->vm_url);
    l->call.vm_transcript = cti_strdup(c->vm_transcript);
    l->stored = true;
    memcpy(l->stored_external, c->external_number, sizeof l->stored_external);
    memcpy(l->stored_internal, c->internal_number, sizeof l->stored_internal);
    l->stored_user = c->dialpad_user_id;
    l->stored_sort_at = sort_at;
    return 0;
}

/* The distinct apps of the legs, for the per-app statements. */
static int apps_of(const set_t *s, const char **apps)
{
    int n = 0;
    for (int i = 0; i < s->nlegs; i++) {
        bool seen = false;
        for (int j = 0; j < n && !seen; j++)
            seen = !strcmp(apps[j], s->legs[i].app_id);
        if (!seen)
            apps[n++] = s->legs[i].app_id;
    }
    return n;
}

static int load_legs(batch_t *b, set_t *s)
{
    const char **apps = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *apps);
    int64_t *ids = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *ids);
    int napps = apps_of(s, apps), rc = 0;
    for (int a = 0; rc == 0 && a < napps; a++) {
        int n = 0;
        for (int i = 0; i < s->nlegs; i++)
            if (!strcmp(s->legs[i].app_id, apps[a]))
                ids[n++] = s->legs[i].call_id;
        load_t ld = {s, apps[a]};
        rc = cti_calls_load_many(b->db, apps[a], ids, n, take_leg, &ld);
    }
    free(apps);
    free(ids);
    return rc;
}

/* Applies a call event to its leg in memory and builds its normalized event. */
static void apply_call(batch_t *b, item_t *it)
{
    leg_t *l = it->leg;
    cti_call_effect_t eff;
    cti_call_apply(&l->call, !l->stored && !l->applied, it->d, 0, it->state,
                   it->info.event_timestamp, b->now, &eff);
    l->applied = true;
    it->step = (cti_timeline_row_t){l->call_id, it->info.event_timestamp, it->p->received_at,
                                    it->p->id, it->state, eff.late};
    it->eff = eff;
    it->user = l->call.dialpad_user_id;
    cti_jw_t w = {0};
    cti_call_render(&w, &l->call);
    l->doc = it->call = cti_jw_take(&w, NULL);
}

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
    cti_jw_lit(&w, "}}");
    return cti_jw_take(&w, NULL);
}

/* ---- what the worker remembers of user mappings ------------------------------------------ *
 * Looking mappings up for every batch was a round trip to PostgreSQL each time
 * (~20% of ingest there). The worker remembers each (app, Dialpad user) it
 * looked up, mapped or not, for CRM_TTL_MS; a change committed through this
 * process forgets everything at once (cti_crm_cache_forget), one made through
 * another instance is seen within CRM_TTL_MS. An entry is tagged with the
 * generation read before its lookup, so a change committed during the lookup
 * is not hidden behind it. Worker thread only. */

#define CRM_SLOTS 4096 /* a power of two */
#define CRM_PROBE 8
#define CRM_TTL_MS 1000

typedef struct {
    char app_id[37];
    int64_t user; /* 0: a free slot */
    char *crm;    /* NULL: not mapped */
    unsigned gen;
    int64_t at_us;
} crm_slot_t;

static crm_slot_t *crm_slots;
static atomic_uint crm_gen;

void cti_crm_cache_forget(void)
{
    atomic_fetch_add(&crm_gen, 1);
}

static crm_slot_t *crm_home(const char *app_id, int64_t user)
{
    if (!crm_slots)
        crm_slots = cti_calloc(CRM_SLOTS, sizeof *crm_slots);
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)user;
    for (const char *p = app_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return &crm_slots[h & (CRM_SLOTS - 1)];
}

/* The slot of (app, user), or where it would go (a free one, else its home). */
static crm_slot_t *crm_slot(const char *app_id, int64_t user, bool *found)
{
    crm_slot_t *home = crm_home(app_id, user), *free_slot = NULL;
    for (int i = 0; i < CRM_PROBE; i++) {
        crm_slot_t *e = &crm_slots[(size_t)(home - crm_slots + i) & (CRM_SLOTS - 1)];
        if (e->user == user && !strcmp(e->app_id, app_id)) {
            *found = true;
            return e;
        }
        if (!e->user && !free_slot)
            free_slot = e;
    }
    *found = false;
    return free_slot ? free_slot : home;
}

/* Whether the worker knows user's mapping: then *crm is a copy, or NULL. */
static bool crm_known(const char *app_id, int64_t user, char **crm)
{
    bool found;
    crm_slot_t *e = crm_slot(app_id, user, &found);
    if (!found || e->gen != atomic_load(&crm_gen) || cti_mono_us() - e->at_us > CRM_TTL_MS * 1000)
        return false;
    *crm = e->crm ? cti_strdup(e->crm) : NULL;
    return true;
}

static void crm_remember(const char *app_id, int64_t user, const char *crm, unsigned gen)
{
    bool found;
    crm_slot_t *e = crm_slot(app_id, user, &found);
    free(e->crm);
    snprintf(e->app_id, sizeof e->app_id, "%s", app_id);
    e->user = user;
    e->crm = crm ? cti_strdup(crm) : NULL;
    e->gen = gen;
    e->at_us = cti_mono_us();
}

typedef struct {
    set_t *s;
    const char *app_id;
} crm_t;

static int set_crm(int64_t user, const char *crm, void *ud)
{
    crm_t *c = ud;
    for (int i = 0; i < c->s->n; i++) {
        item_t *it = &c->s->items[i];
        if (it->call && it->user == user && !it->crm && !strcmp(it->p->app_id, c->app_id))
            it->crm = cti_strdup(crm);
    }
    return 0;
}

/* Finds the CRM user of every call event's Dialpad user: from what the worker
 * remembers, else one query per app for the rest. */
static int resolve_crm(batch_t *b, set_t *s)
{
    const char **apps = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *apps);
    int64_t *ids = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *ids);
    int napps = apps_of(s, apps), rc = 0;
    for (int a = 0; rc == 0 && a < napps; a++) {
        int n = 0;
        for (int i = 0; i < s->n; i++) {
            item_t *it = &s->items[i];
            if (!it->call || !it->user || strcmp(it->p->app_id, apps[a]) ||
                crm_known(apps[a], it->user, &it->crm))
                continue;
            bool listed = false;
            for (int k = 0; k < n && !listed; k++)
                listed = ids[k] == it->user;
            if (!listed)
                ids[n++] = it->user;
        }
        if (!n)
            continue;
        unsigned gen = atomic_load(&crm_gen); /* before the lookup: see above */
        crm_t c = {s, apps[a]};
        rc = cti_crm_users(b->db, apps[a], ids, n, set_crm, &c);
        for (int k = 0; rc == 0 && k < n; k++) {
            const char *crm = NULL;
            for (int i = 0; i < s->n && !crm; i++)
                if (s->items[i].call && s->items[i].user == ids[k] &&
                    !strcmp(s->items[i].p->app_id, apps[a]))
                    crm = s->items[i].crm;
            crm_remember(apps[a], ids[k], crm, gen);
        }
    }
    free(apps);
    free(ids);
    return rc;
}

/* Whether a leg is stored with the index keys it has now (see cti_calls_save_many). */
static bool keys_same(const leg_t *l)
{
    const cti_call_t *c = &l->call;
    return l->stored && c->dialpad_user_id == l->stored_user &&
           cti_calls_sort_at(c) == l->stored_sort_at &&
           !strcmp(c->external_number, l->stored_external) &&
           !strcmp(c->internal_number, l->stored_internal);
}

/* Writes the legs, their timelines and voicemails, per app. */
static int save_legs(batch_t *b, set_t *s)
{
    const char **apps = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *apps);
    cti_call_t **calls = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *calls);
    const char **docs = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *docs);
    bool *same = cti_malloc((size_t)(s->nlegs ? s->nlegs : 1) * sizeof *same);
    cti_timeline_row_t *steps = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *steps);
    int napps = apps_of(s, apps), rc = 0;
    for (int a = 0; rc == 0 && a < napps; a++) {
        int nc = 0, ns = 0;
        for (int i = 0; i < s->nlegs; i++)
            if (s->legs[i].applied && !strcmp(s->legs[i].app_id, apps[a])) {
                docs[nc] = s->legs[i].doc;
                same[nc] = keys_same(&s->legs[i]);
                calls[nc++] = &s->legs[i].call;
            }
        for (int i = 0; i < s->n; i++)
            if (s->items[i].leg && produced(&s->items[i]) && !strcmp(s->items[i].p->app_id, apps[a]))
                steps[ns++] = s->items[i].step;
        rc = cti_calls_save_many(b->db, apps[a], calls, docs, same, nc, b->now);
        if (rc == 0)
            rc = cti_calls_add_timeline_many(b->db, apps[a], steps, ns);
        for (int i = 0; rc == 0 && i < nc; i++)
            if (calls[i]->vm_url || calls[i]->vm_recording_id || calls[i]->vm_transcript)
                rc = cti_voicemails_save(b->db, apps[a], calls[i], b->now);
    }
    free(apps);
    free(calls);
    free(docs);
    free(same);
    free(steps);
    return rc;
}

/* Gives every event its seq (in batch order), writes the event log, keeps the
 * bodies to publish after commit. */
static int append_events(batch_t *b, set_t *s)
{
    cti_logrow_t *rows = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *rows);
    int n = 0, rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++) {
        item_t *it = &s->items[i];
        int64_t seq;
        if (!produced(it) || (rc = next_seq(b, it->p->app_id, &seq)) != 0)
            continue;
        char *body;
        if (it->call) {
            body = call_event_body(it, seq);
        } else {
            json_object_set_new(it->event, "seq", json_integer(seq));
            body = json_dumps(it->event, JSON_COMPACT | JSON_PRESERVE_ORDER);
        }
        if (b->nout == b->capout)
            b->out = cti_realloc(b->out, (size_t)(b->capout = b->capout ? 2 * b->capout : 64) *
                                             sizeof *b->out);
        appended_t *a = &b->out[b->nout++];
        snprintf(a->app_id, sizeof a->app_id, "%s", it->p->app_id);
        a->seq = seq;
        a->body = body;
        rows[n++] = (cti_logrow_t){a->app_id, seq,
                                   it->call ? it->eff.event
                                            : json_string_value(json_object_get(it->event, "event")),
                                   it->leg ? it->leg->call_id : 0, body};
    }
    if (rc == 0)
        rc = cti_eventlog_append_many(b->db, rows, n, b->now);
    free(rows);
    return rc;
}

static int64_t backoff_ms(int attempts)
{
    return 1000LL << (attempts < 1 ? 0 : attempts - 1 > 10 ? 10 : attempts - 1);
}

/* Marks the good events applied (one statement) and the bad ones for retry. */
static int mark(batch_t *b, set_t *s)
{
    int64_t *ids = cti_malloc((size_t)(s->n ? s->n : 1) * sizeof *ids);
    int n = 0, rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++) {
        item_t *it = &s->items[i];
        if (!it->why) {
            if (!it->p->fresh)
                ids[n++] = it->p->id;
            continue;
        }
        int attempts = it->p->attempts + 1;
        bool dead = attempts >= CTI_MAX_ATTEMPTS;
        cti_log(dead ? CTI_LOG_WARN : CTI_LOG_INFO, NULL,
                dead ? "ingest: event parked as dead letter" : "ingest: event failed; will retry",
                CTI_LI("raw_event_id", it->p->id), CTI_LS("app_id", it->p->app_id),
                CTI_LS("error", it->why), CTI_LI("attempts", attempts));
        rc = cti_raw_mark_failed(b->db, it->p->id, it->why, b->now + backoff_ms(attempts), dead);
    }
    if (rc == 0 && n)
        rc = cti_raw_mark_applied_many(b->db, ids, n);
    free(ids);
    return rc;
}

/* Parses and classifies (unless the caller did); sets up the legs of call
 * events. Kinds other than calls (a small share of the volume) are also
 * parsed by jansson, which their code reads. */
static void prepare(set_t *s, batch_t *b)
{
    for (int i = 0; i < s->n; i++) {
        item_t *it = &s->items[i];
        it->p = &b->items[i];
        const char *text = it->p->payload;
        size_t len = strlen(text);
        if (it->p->doc)
            it->d = it->p->doc;
        else if (cti_jdoc_parse(&it->own, text, len, NULL, 0) == 0)
            it->d = &it->own;
        if (!it->d || cti_jdoc_type(it->d, 0) != CTI_JT_OBJECT) {
            it->why = it->d ? "payload is not a JSON object"
                            : "payload is not valid JSON (or nests deeper than 64 levels)";
            continue;
        }
        if (it->p->info)
            it->info = *it->p->info;
        else
            cti_ev_classify(it->d, text, len, &it->info);
        it->why = it->info.problem;
        if (it->why)
            continue;
        if (it->info.kind == CTI_EV_CALL) {
            int64_t call_id = 0;
            cti_dp_id_at(it->d, cti_jdoc_get(it->d, 0, "call_id"), &call_id);
            cti_jdoc_str(it->d, cti_jdoc_get(it->d, 0, "state"), it->state, sizeof it->state);
            it->leg = leg_for(s, it->p->app_id, call_id);
        } else {
            it->ev = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
            if (!json_is_object(it->ev)) /* a macro: its argument is read twice */
                it->why = "payload is not a JSON object";
        }
    }
}

/* Applies every good event in order: calls in memory, the rest with their own SQL. */
static int apply_all(batch_t *b, set_t *s)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++) {
        item_t *it = &s->items[i];
        if (it->why)
            continue;
        switch (it->info.kind) {
        case CTI_EV_CALL: apply_call(b, it); break;
        case CTI_EV_SMS: rc = apply_sms(b, it->p, it->ev, &it->info, &it->event); break;
        case CTI_EV_AGENT: rc = apply_agent(b, it->p, it->ev, &it->info, &it->event); break;
        default: it->event = contact_event(it->ev, &it->info); break;
        }
    }
    return rc;
}

static void release_set(set_t *s)
{
    for (int i = 0; i < s->n; i++) {
        cti_jdoc_free(&s->items[i].own);
        json_decref(s->items[i].ev);
        json_decref(s->items[i].event);
        free(s->items[i].call);
        free(s->items[i].crm);
    }
    for (int i = 0; i < s->nlegs; i++)
        cti_call_clear(&s->legs[i].call);
    free(s->items);
    free(s->legs);
}

/* Applies b's items (b->n of them) as a set, in the caller's transaction. */
static int run(batch_t *b)
{
    set_t s = {cti_calloc((size_t)(b->n ? b->n : 1), sizeof *s.items), b->n,
               cti_calloc((size_t)(b->n ? b->n : 1), sizeof *s.legs), 0};
    prepare(&s, b);
    int rc = lock_apps(b);
    if (rc == 0)
        rc = load_legs(b, &s);
    if (rc == 0)
        rc = apply_all(b, &s);
    if (rc == 0)
        rc = resolve_crm(b, &s);
    if (rc == 0)
        rc = save_legs(b, &s);
    if (rc == 0)
        rc = append_events(b, &s);
    if (rc == 0)
        rc = mark(b, &s);
    for (int i = 0; rc == 0 && i < b->nseqs; i++)
        if (b->seqs[i].last >= b->seqs[i].first)
            rc = cti_seq_set(b->db, b->seqs[i].app_id, b->seqs[i].last);
    if (rc == 0)
        rc = notify_ranges(b);
    release_set(&s);
    return rc;
}

int cti_process_pending(cti_db_t *db, int64_t now, int limit, cti_processed_t *b)
{
    b->db = db;
    b->now = now;
    b->n = 0;
    b->items = cti_malloc((size_t)limit * sizeof *b->items);
    int rc = cti_raw_pending(db, now, limit, collect, b);
    if (rc == 0)
        rc = run(b);
    for (int i = 0; i < b->n; i++)
        free(b->items[i].payload);
    free(b->items);
    b->items = NULL;
    return rc < 0 ? rc : b->n;
}

int cti_process_stored(cti_db_t *db, int64_t now, const cti_stored_t *events, int n,
                       cti_processed_t *b)
{
    b->db = db;
    b->now = now;
    b->n = n;
    b->items = cti_malloc((size_t)(n ? n : 1) * sizeof *b->items);
    for (int i = 0; i < n; i++) {
        pending_t *p = &b->items[i];
        p->id = events[i].id;
        snprintf(p->app_id, sizeof p->app_id, "%s", events[i].app_id);
        p->payload = (char *)events[i].payload; /* borrowed: not freed here */
        p->doc = events[i].doc;
        p->info = events[i].info;
        p->received_at = events[i].received_at;
        p->attempts = 0;
        p->fresh = true;
    }
    int rc = run(b);
    free(b->items);
    b->items = NULL;
    return rc < 0 ? rc : 0;
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
