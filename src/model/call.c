/*
 * call.c — the call state machine: how Dialpad call events change a leg.
 *
 * Status, as customers see it (a leg is created in RINGING by its first event):
 *
 *      preanswer/calling/                connected
 *      ringing/queued      +---------+ ------------> +--------+
 *     -------------------> | RINGING |               | ACTIVE | <---+
 *                          +---------+ --+           +--------+     | connected
 *                               |        |              |  hold     | (newer)
 *                               |        |              v           |
 *                               |        |           +---------+    |
 *                               |        |           | ON_HOLD | ---+
 *                               |        |           +---------+
 *                               | hangup/missed/voicemail (from any status)
 *                               v        v              v
 *                          +-------------------------------+
 *                          |  ENDED (terminal)             |
 *                          +-------------------------------+
 *
 * Rules (the contract's "Call rules"), written so that the final leg does not
 * depend on the order events arrive in:
 *  - ENDED once any hangup/missed/voicemail event was applied (or the leg was
 *    first seen through a post-call state whose event has date_ended).
 *  - Otherwise ACTIVE or ON_HOLD after the newest (by event_timestamp) of the
 *    connected/hold events, if there was one; else RINGING.
 *  - `state` is the state of the newest call-progress event.
 *  - A call-progress event strictly older than the newest applied one is
 *    LATE: it is recorded, fills fields that are still unknown, and moves
 *    nothing back (it can still move the leg forward, e.g. a late hangup).
 *  - Post-call states (voicemail_uploaded, transcription, recording, recap_*,
 *    csat, merged, unknown...) never change status or state, are never late.
 *  - Descriptive fields (numbers, contact, target, ids, dates, durations)
 *    come from the newest event that has them: a newer event overwrites what
 *    it carries, an older one only fills what is still unknown.
 *  - outcome (when ENDED): answered if any event had date_connected; else
 *    voicemail if any voicemail/voicemail_uploaded/transcription event; else
 *    missed (inbound) or unanswered (outbound).
 *
 * Transition table (event → status change → event emitted):
 *   state               status change                     event           function
 *   preanswer           → RINGING if nothing newer         call.state      apply_progress
 *   calling             → RINGING if nothing newer         call.dialing    apply_progress
 *   ringing             → RINGING if nothing newer         call.ringing    apply_progress
 *   queued              → RINGING if nothing newer         call.queued     apply_progress
 *   connected           → ACTIVE unless a newer hold       call.connected  apply_progress
 *                                                          (call.resumed when it lifts ON_HOLD)
 *   hold                → ON_HOLD unless a newer connected call.hold       apply_progress
 *   hangup              → ENDED                            call.ended      apply_progress
 *   missed              → ENDED                            call.missed     apply_progress
 *   voicemail           → ENDED, counts as voicemail       call.voicemail  apply_progress
 *   voicemail_uploaded  none (counts as voicemail)         voicemail.ready apply_post_call
 *   transcription       none (counts as voicemail)         voicemail.transcribed
 *   recording           none                               call.recording
 *   call_transcription  none                               call.transcription
 *   recap_<kind>        none                               call.recap (data.kind)
 *   anything else       none                               call.state (data.state)
 *   any state, first event of a post-call kind with date_ended → ENDED
 *   any progress state older than the newest applied → LATE: no move back
 *   any state already applied (same call, state, timestamp) → never reaches
 *     here: the ingest dedupe drops it, and no event is emitted
 */
#include "model/call.h"
#include "core/common.h"
#include "core/util.h"
#include "dialpad/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const progress_states[] = {"preanswer", "calling", "ringing",
                                              "queued",    "connected", "hold",
                                              "missed",    "voicemail", "hangup"};

bool cti_call_is_progress(const char *state)
{
    for (size_t i = 0; i < CTI_ARRAY_LEN(progress_states); i++)
        if (!strcmp(state, progress_states[i]))
            return true;
    return false;
}

const char *cti_call_status_name(cti_call_status_t s)
{
    static const char *const names[] = {"ringing", "active", "on_hold", "ended"};
    return names[s];
}

int cti_call_status_parse(const char *s)
{
    for (int i = 0; i <= CTI_STATUS_ENDED; i++)
        if (!strcmp(s, cti_call_status_name((cti_call_status_t)i)))
            return i;
    return -1;
}

const char *cti_call_outcome(const cti_call_t *c)
{
    if (c->status != CTI_STATUS_ENDED)
        return NULL;
    if (c->had_connected)
        return "answered";
    if (c->had_voicemail)
        return "voicemail";
    return strcmp(c->direction, "outbound") ? "missed" : "unanswered";
}

void cti_call_init(cti_call_t *c, int64_t call_id)
{
    memset(c, 0, sizeof *c);
    c->call_id = call_id;
    c->status = CTI_STATUS_RINGING;
    c->is_transferred = -1;
    c->duration_ms = c->total_duration_ms = c->talk_time_ms = c->hold_time_ms = CTI_NO_DURATION;
    c->vm_duration_ms = CTI_NO_DURATION;
    c->recording_urls = json_array();
}

void cti_call_clear(cti_call_t *c)
{
    free(c->contact);
    free(c->target);
    json_decref(c->recording_urls);
    free(c->vm_url);
    free(c->vm_transcript);
    memset(c, 0, sizeof *c);
}

/* (ts, state) ordering: event_timestamp, then the state name as tie-breaker. */
static bool newer(int64_t ts, const char *state, int64_t than_ts, const char *than_state)
{
    return ts > than_ts || (ts == than_ts && strcmp(state, than_state) >= 0);
}

/* "id", or a name ending in "_id". */
static bool idish(const char *key, size_t n)
{
    return (n == 2 && !memcmp(key, "id", 2)) || (n > 3 && !memcmp(key + n - 3, "_id", 3));
}

void cti_jw_normalized(cti_jw_t *w, const cti_jdoc_t *d, int i)
{
    int k = -1, first = cti_jdoc_first(d, i, &k);
    int64_t id;
    cti_jw_lit(w, "{");
    for (int m = first; m >= 0; m = cti_jdoc_after(d, i, m, &k)) {
        if (m != first)
            cti_jw_lit(w, ",");
        cti_jw_jdoc(w, d, k);
        cti_jw_lit(w, ":");
        char key[64];
        long n = cti_jdoc_str(d, k, key, sizeof key);
        if (n > 0 && (size_t)n < sizeof key && idish(key, (size_t)n) && cti_jdoc_int(d, m, &id)) {
            char buf[24];
            int len = snprintf(buf, sizeof buf, "\"%lld\"", (long long)id);
            cti_jw_raw(w, buf, (size_t)len);
        } else {
            cti_jw_jdoc(w, d, m);
        }
    }
    cti_jw_lit(w, "}");
}

json_t *cti_dp_normalize_ids(json_t *obj)
{
    if (!json_is_object(obj))
        return NULL;
    json_t *copy = json_deep_copy(obj);
    const char *key;
    json_t *v;
    json_object_foreach(copy, key, v) {
        if (idish(key, strlen(key)) && json_is_integer(v)) {
            char buf[24];
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
            json_object_set_new(copy, key, json_string(buf));
        }
    }
    return copy;
}

/* ---- field merging: overwrite when the event is newer, else fill unknowns ---- */

/* Copies at most cap - 1 bytes of src, never cutting a UTF-8 character in two
 * (a cut one would make the call object invalid JSON). */
static void copy_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = cti_utf8_prefix(src, strlen(src), cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

typedef struct {
    const cti_jdoc_t *d;
    int ev;
    bool overwrite;
} merge_t;

#define FIELD(m, key) cti_jdoc_get((m)->d, (m)->ev, key)

static void merge_text(const merge_t *m, const char *key, char *dst, size_t cap)
{
    int v = FIELD(m, key);
    if (cti_jdoc_str_nonempty(m->d, v) && (m->overwrite || !*dst))
        cti_jdoc_str(m->d, v, dst, cap); /* cut at a character boundary if long */
}

static void merge_ms_at(const cti_jdoc_t *d, int v, bool overwrite, int64_t *dst,
                        int64_t unknown)
{
    int64_t ms;
    if (cti_dp_ms_at(d, v, &ms) && (overwrite || *dst == unknown))
        *dst = ms;
}

static void merge_ms(const merge_t *m, const char *key, int64_t *dst, int64_t unknown)
{
    merge_ms_at(m->d, FIELD(m, key), m->overwrite, dst, unknown);
}

static void merge_id(const merge_t *m, const char *key, int64_t *dst)
{
    int64_t v;
    if (cti_dp_id_at(m->d, FIELD(m, key), &v) && (m->overwrite || !*dst))
        *dst = v;
}

/* Takes a non-empty object member (ids normalized) as text. Returns its token
 * when the event's object is now the call's, else -1. */
static int merge_object(const merge_t *m, const char *key, char **dst)
{
    int v = FIELD(m, key);
    if (cti_jdoc_type(m->d, v) != CTI_JT_OBJECT || cti_jdoc_first(m->d, v, NULL) < 0 ||
        (!m->overwrite && *dst))
        return -1;
    cti_jw_t w = {0};
    cti_jw_normalized(&w, m->d, v);
    if (*dst && !strcmp(*dst, w.p)) { /* the usual case: the same contact again */
        cti_jw_free(&w);
        return v;
    }
    free(*dst);
    *dst = cti_jw_take(&w, NULL);
    return v;
}

static void merge_owned(const merge_t *m, const char *key, char **dst)
{
    int v = FIELD(m, key);
    if (cti_jdoc_str_nonempty(m->d, v) && (m->overwrite || !*dst)) {
        free(*dst);
        *dst = cti_jdoc_strdup(m->d, v);
    }
}

/* Adds url to the sorted set of recording urls. */
static void add_url(json_t *urls, const char *url)
{
    size_t i;
    json_t *v;
    json_array_foreach(urls, i, v) {
        int c = strcmp(json_string_value(v), url);
        if (c == 0)
            return;
        if (c > 0) {
            json_array_insert_new(urls, i, json_string(url));
            return;
        }
    }
    json_array_append_new(urls, json_string(url));
}

/* Adds string token i, when it is a non-empty string. */
static void add_url_at(json_t *urls, const cti_jdoc_t *d, int i)
{
    if (!cti_jdoc_str_nonempty(d, i))
        return;
    char *url = cti_jdoc_strdup(d, i);
    add_url(urls, url);
    free(url);
}

static void merge_recordings(cti_call_t *c, const merge_t *m)
{
    const cti_jdoc_t *d = m->d;
    const char *lists[] = {"recording_url", "admin_recording_urls"};
    for (size_t k = 0; k < 2; k++) {
        int v = FIELD(m, lists[k]);
        add_url_at(c->recording_urls, d, v);
        if (cti_jdoc_type(d, v) == CTI_JT_ARRAY)
            for (int e = cti_jdoc_first(d, v, NULL); e >= 0; e = cti_jdoc_after(d, v, e, NULL))
                add_url_at(c->recording_urls, d, e);
    }
    int list = FIELD(m, "recording_details");
    if (cti_jdoc_type(d, list) != CTI_JT_ARRAY)
        return;
    for (int e = cti_jdoc_first(d, list, NULL); e >= 0; e = cti_jdoc_after(d, list, e, NULL)) {
        if (cti_jdoc_str_eq(d, cti_jdoc_get(d, e, "recording_type"), "voicemail"))
            merge_ms_at(d, cti_jdoc_get(d, e, "duration"), m->overwrite, &c->vm_duration_ms,
                        CTI_NO_DURATION);
        else
            add_url_at(c->recording_urls, d, cti_jdoc_get(d, e, "url"));
    }
}

static void merge_fields(cti_call_t *c, const merge_t *m)
{
    merge_text(m, "direction", c->direction, sizeof c->direction);
    merge_text(m, "external_number", c->external_number, sizeof c->external_number);
    merge_text(m, "internal_number", c->internal_number, sizeof c->internal_number);
    merge_object(m, "contact", &c->contact);
    int target = merge_object(m, "target", &c->target);
    merge_id(m, "master_call_id", &c->master_call_id);
    merge_id(m, "entry_point_call_id", &c->entry_point_call_id);
    merge_id(m, "operator_call_id", &c->operator_call_id);
    int tr = cti_jdoc_type(m->d, FIELD(m, "is_transferred"));
    if ((tr == CTI_JT_TRUE || tr == CTI_JT_FALSE) && (m->overwrite || c->is_transferred < 0))
        c->is_transferred = tr == CTI_JT_TRUE;
    merge_ms(m, "date_started", &c->started_at, 0);
    merge_ms(m, "date_connected", &c->connected_at, 0);
    merge_ms(m, "date_ended", &c->ended_at, 0);
    merge_ms(m, "duration", &c->duration_ms, CTI_NO_DURATION);
    merge_ms(m, "total_duration", &c->total_duration_ms, CTI_NO_DURATION);
    merge_ms(m, "talk_time", &c->talk_time_ms, CTI_NO_DURATION);
    merge_ms(m, "hold_time", &c->hold_time_ms, CTI_NO_DURATION);
    merge_owned(m, "voicemail_link", &c->vm_url);
    merge_owned(m, "transcription_text", &c->vm_transcript);
    merge_id(m, "voicemail_recording_id", &c->vm_recording_id);
    merge_recordings(c, m);
    int64_t tid = 0; /* the leg's user: its target, when that is a user */
    if (cti_jdoc_str_eq(m->d, cti_jdoc_get(m->d, target, "type"), "user") &&
        cti_dp_id_at(m->d, cti_jdoc_get(m->d, target, "id"), &tid))
        c->dialpad_user_id = tid;
}

/* ---- status ---------------------------------------------------------------------- */

static void recompute_status(cti_call_t *c)
{
    if (c->had_ended || c->post_call_ended)
        c->status = CTI_STATUS_ENDED;
    else if (c->active_ts)
        c->status = strcmp(c->active_state, "hold") ? CTI_STATUS_ACTIVE : CTI_STATUS_ON_HOLD;
    else
        c->status = CTI_STATUS_RINGING;
}

static void apply_progress(cti_call_t *c, const char *state, int64_t ts, cti_call_effect_t *eff)
{
    eff->late = c->progress_ts && ts < c->progress_ts;
    if (!eff->late) {
        c->progress_ts = ts;
        copy_utf8(c->state, sizeof c->state, state);
    }
    if (!strcmp(state, "hangup") || !strcmp(state, "missed") || !strcmp(state, "voicemail"))
        c->had_ended = true;
    if ((!strcmp(state, "connected") || !strcmp(state, "hold")) &&
        newer(ts, state, c->active_ts, c->active_state)) {
        c->active_ts = ts;
        copy_utf8(c->active_state, sizeof c->active_state, state);
    }
}

/* The contract's event name for a state (connected handled by the caller). */
static const char *event_name(const char *state, cti_call_effect_t *eff)
{
    static const struct {
        const char *state, *event;
    } names[] = {{"ringing", "call.ringing"},
                 {"calling", "call.dialing"},
                 {"queued", "call.queued"},
                 {"connected", "call.connected"},
                 {"hold", "call.hold"},
                 {"hangup", "call.ended"},
                 {"missed", "call.missed"},
                 {"voicemail", "call.voicemail"},
                 {"voicemail_uploaded", "voicemail.ready"},
                 {"transcription", "voicemail.transcribed"},
                 {"recording", "call.recording"},
                 {"call_transcription", "call.transcription"}};
    for (size_t i = 0; i < CTI_ARRAY_LEN(names); i++)
        if (!strcmp(state, names[i].state))
            return names[i].event;
    if (!strncmp(state, "recap_", 6)) {
        snprintf(eff->data_key, sizeof eff->data_key, "kind");
        copy_utf8(eff->data_value, sizeof eff->data_value, state + 6);
        return "call.recap";
    }
    snprintf(eff->data_key, sizeof eff->data_key, "state");
    copy_utf8(eff->data_value, sizeof eff->data_value, state);
    return "call.state";
}

void cti_call_apply(cti_call_t *c, bool is_new, const cti_jdoc_t *d, int ev, const char *state,
                    int64_t ts, int64_t now, cti_call_effect_t *eff)
{
    memset(eff, 0, sizeof *eff);
    bool was_on_hold = c->status == CTI_STATUS_ON_HOLD;
    merge_t m = {d, ev, newer(ts, state, c->fields_ts, c->fields_state)};
    merge_fields(c, &m);
    if (m.overwrite) {
        c->fields_ts = ts;
        copy_utf8(c->fields_state, sizeof c->fields_state, state);
    }
    int64_t connected;
    if (cti_dp_ms_at(d, FIELD(&m, "date_connected"), &connected) && connected > 0)
        c->had_connected = true;
    if (!strcmp(state, "voicemail") || !strcmp(state, "voicemail_uploaded") ||
        !strcmp(state, "transcription"))
        c->had_voicemail = true;
    if (cti_call_is_progress(state)) {
        apply_progress(c, state, ts, eff);
    } else if (is_new) {
        int64_t ended;
        c->post_call_ended = cti_dp_ms_at(d, FIELD(&m, "date_ended"), &ended) && ended > 0;
    }
    recompute_status(c);
    eff->event = event_name(state, eff);
    if (!strcmp(state, "connected") && was_on_hold && !eff->late &&
        c->status == CTI_STATUS_ACTIVE)
        eff->event = "call.resumed";
    c->updated_at = now;
}

/* ---- the contract's call object ---------------------------------------------------- */

void cti_call_render(cti_jw_t *w, const cti_call_t *c)
{
    cti_jw_reserve(w, 1024);
    cti_jw_lit(w, "{");
    cti_jw_key(w, "id"), cti_jw_id(w, c->call_id);
    cti_jw_key(w, "direction"), cti_jw_text(w, c->direction);
    cti_jw_key(w, "state"), cti_jw_text(w, c->state);
    cti_jw_key(w, "status"), cti_jw_str(w, cti_call_status_name(c->status));
    cti_jw_key(w, "outcome"), cti_jw_str(w, cti_call_outcome(c));
    cti_jw_key(w, "external_number"), cti_jw_text(w, c->external_number);
    cti_jw_key(w, "internal_number"), cti_jw_text(w, c->internal_number);
    cti_jw_key(w, "contact");
    if (c->contact)
        cti_jw_raw(w, c->contact, strlen(c->contact));
    else
        cti_jw_null(w);
    cti_jw_key(w, "target");
    if (c->target)
        cti_jw_raw(w, c->target, strlen(c->target));
    else
        cti_jw_null(w);
    cti_jw_key(w, "dialpad_user_id"), cti_jw_id(w, c->dialpad_user_id);
    cti_jw_key(w, "master_call_id"), cti_jw_id(w, c->master_call_id);
    cti_jw_key(w, "entry_point_call_id"), cti_jw_id(w, c->entry_point_call_id);
    cti_jw_key(w, "operator_call_id"), cti_jw_id(w, c->operator_call_id);
    cti_jw_key(w, "is_transferred");
    if (c->is_transferred < 0)
        cti_jw_null(w);
    else
        cti_jw_bool(w, c->is_transferred);
    cti_jw_key(w, "started_at"), cti_jw_time(w, c->started_at);
    cti_jw_key(w, "connected_at"), cti_jw_time(w, c->connected_at);
    cti_jw_key(w, "ended_at"), cti_jw_time(w, c->ended_at);
    const int64_t *ms[] = {&c->duration_ms, &c->total_duration_ms, &c->talk_time_ms,
                           &c->hold_time_ms, &c->vm_duration_ms};
    const char *names[] = {"duration_ms", "total_duration_ms", "talk_time_ms", "hold_time_ms"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(names); i++) {
        cti_jw_key(w, names[i]);
        if (*ms[i] == CTI_NO_DURATION)
            cti_jw_null(w);
        else
            cti_jw_int(w, *ms[i]);
    }
    cti_jw_key(w, "recording_urls"), cti_jw_json(w, c->recording_urls);
    cti_jw_key(w, "voicemail");
    if (c->vm_url || c->vm_transcript || c->vm_recording_id) {
        cti_jw_lit(w, "{");
        cti_jw_key(w, "url"), cti_jw_text(w, c->vm_url);
        cti_jw_key(w, "transcript"), cti_jw_text(w, c->vm_transcript);
        cti_jw_key(w, "duration_ms");
        if (*ms[4] == CTI_NO_DURATION)
            cti_jw_null(w);
        else
            cti_jw_int(w, *ms[4]);
        cti_jw_key(w, "recording_id"), cti_jw_id(w, c->vm_recording_id);
        cti_jw_lit(w, "}");
    } else {
        cti_jw_null(w);
    }
    cti_jw_key(w, "updated_at"), cti_jw_time(w, c->updated_at);
}

void cti_call_close(cti_jw_t *w, const char *crm_user_id)
{
    cti_jw_key(w, "crm_user_id");
    cti_jw_text(w, crm_user_id);
    cti_jw_lit(w, "}");
}
