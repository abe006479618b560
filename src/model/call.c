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
 *                               | hangup/missed/voicemail, or any event with
 *                               | a date_ended (from any status)
 *                               v        v              v
 *                          +-------------------------------+
 *                          |  ENDED (terminal)             |
 *                          +-------------------------------+
 *
 * Rules (the contract's "Call rules"), written so that the final leg does not
 * depend on the order events arrive in (tests/unit/test_call.c applies every
 * permutation of real flows and compares the legs):
 *  - ENDED as soon as any hangup/missed/voicemail event was applied, or any
 *    event of any state had a date_ended (had_ended, post_call_ended: flags
 *    that are only ever set, so the order cannot matter).
 *  - Otherwise ACTIVE or ON_HOLD after the newest (by event_timestamp, then
 *    state name) of the connected/hold events, if there was one; else RINGING
 *    (a leg with no call-progress event and no date_ended is RINGING).
 *  - `state` is the state of the newest call-progress event (same order).
 *  - A call-progress event strictly older than the newest applied one is
 *    LATE: it is recorded, fills fields that are still unknown, and moves
 *    nothing back (it can still move the leg forward, e.g. a late hangup).
 *  - Post-call states (voicemail_uploaded, transcription, recording, recap_*,
 *    csat, merged, unknown...) never change `state` and are never late; they
 *    end the call only through a date_ended.
 *  - Descriptive fields (numbers, contact, target, ids, dates, durations)
 *    come from the newest event that has them: a newer event overwrites what
 *    it carries, an older one only fills what is still unknown. (One
 *    timestamp, fields_ts, serves every field: exact when, as Dialpad sends
 *    them, every event carries every key, null when unknown, and a value once
 *    known stays in newer events. An older event carrying a field that the
 *    newest lacks but a middle one has could win in some orders: per-field
 *    timestamps would need columns the store does not have.)
 *  - outcome: null until ENDED; then answered if any event had
 *    date_connected; else voicemail if any voicemail/voicemail_uploaded/
 *    transcription event; else missed (inbound) or unanswered (outbound).
 *  - A leg ended by reconciliation (`reconciled`: its final event was made
 *    from Dialpad's call list because its webhooks were lost) keeps that end
 *    as the authority: Dialpad's own progress events that arrive after it are
 *    LATE whatever their timestamp (they fill fields, move nothing). This is
 *    the one rule that depends on order, and only on the order of a webhook
 *    against the reconciliation, which happens after the call ended.
 *  - Order of two events: (event_timestamp, state); ties of the same call and
 *    state are one event (the dedupe key). A state longer than the stored
 *    tie-breaker (71 bytes) compares by its stored prefix.
 *
 * Transition table (event → status change → event emitted), every case
 * mirrored by a row of tests/unit/test_call.c:
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
 *   anything else       none                               call.state (data.state, whole)
 *   any state with a date_ended (> 0)   → ENDED            (its own event)   note_dates
 *   any state with a date_connected (> 0) → outcome answered once ENDED       note_dates
 *   any progress state older than the newest applied → LATE: no move back
 *   any progress state on a reconciled leg → LATE: no move back   apply_progress
 *   any state already applied (same call, state, timestamp) → never reaches
 *     here: the ingest dedupe drops it, and no event is emitted (applied
 *     again, it changes nothing: every rule above is idempotent)
 *
 * Invariants, asserted after every event (assert_leg): status is ENDED
 * exactly when had_ended or post_call_ended; otherwise ACTIVE/ON_HOLD exactly
 * when a connected/hold was applied; status never moves back (ENDED stays,
 * ACTIVE/ON_HOLD never return to RINGING); `state` is empty or a progress
 * state, and empty exactly when no progress event was applied; outcome is
 * null exactly until ENDED.
 */
#include "model/call.h"
#include "core/common.h"
#include "core/util.h"
#include "dialpad/event.h"
#include "dialpad/normalize.h"

#include <assert.h>

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

void cti_call_copy(cti_call_t *dst, const cti_call_t *src)
{
    *dst = *src;
    dst->contact = cti_strdup(src->contact);
    dst->target = cti_strdup(src->target);
    dst->recording_urls = json_deep_copy(src->recording_urls);
    dst->vm_url = cti_strdup(src->vm_url);
    dst->vm_transcript = cti_strdup(src->vm_transcript);
    dst->custom_data = cti_strdup(src->custom_data);
}

void cti_call_clear(cti_call_t *c)
{
    free(c->contact);
    free(c->target);
    json_decref(c->recording_urls);
    free(c->vm_url);
    free(c->vm_transcript);
    free(c->custom_data);
    memset(c, 0, sizeof *c);
}

/* (ts, state) ordering: event_timestamp, then the state name as tie-breaker. */
static bool newer(int64_t ts, const char *state, int64_t than_ts, const char *than_state)
{
    return ts > than_ts || (ts == than_ts && strcmp(state, than_state) >= 0);
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
    merge_owned(m, "custom_data", &c->custom_data);
    merge_id(m, "voicemail_recording_id", &c->vm_recording_id);
    merge_recordings(c, m);
    int64_t tid = 0; /* the leg's user: its target, when that is a user */
    if (cti_jdoc_str_eq(m->d, cti_jdoc_get(m->d, target, "type"), "user") &&
        cti_dp_id_at(m->d, cti_jdoc_get(m->d, target, "id"), &tid))
        c->dialpad_user_id = tid;
}

/* ---- status ---------------------------------------------------------------------- */

static bool ends(const char *state)
{
    return !strcmp(state, "hangup") || !strcmp(state, "missed") || !strcmp(state, "voicemail");
}

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
    eff->late = (c->progress_ts && ts < c->progress_ts) || c->reconciled;
    if (!c->reconciled && (!c->progress_ts || newer(ts, state, c->progress_ts, c->state))) {
        c->progress_ts = ts;
        copy_utf8(c->state, sizeof c->state, state);
    }
    if (ends(state))
        c->had_ended = true;
    if ((!strcmp(state, "connected") || !strcmp(state, "hold")) &&
        newer(ts, state, c->active_ts, c->active_state)) {
        c->active_ts = ts;
        copy_utf8(c->active_state, sizeof c->active_state, state);
    }
}

/* What any event says by its dates, whatever its state and order: a
 * date_ended ends the call, a date_connected makes it answered. */
static void note_dates(cti_call_t *c, const merge_t *m)
{
    int64_t at;
    if (cti_dp_ms_at(m->d, FIELD(m, "date_connected"), &at) && at > 0)
        c->had_connected = true;
    if ((cti_dp_ms_at(m->d, FIELD(m, "date_ended"), &at) && at > 0) || c->ended_at > 0)
        c->post_call_ended = true; /* ended_at > 0: a date_ended was seen (legs stored
                                      before this rule get the flag on their next event) */
}

static int status_rank(cti_call_status_t s)
{
    return s == CTI_STATUS_RINGING ? 0 : s == CTI_STATUS_ENDED ? 2 : 1;
}

/* The invariants of the top comment; before is the status the event found. */
static void assert_leg(const cti_call_t *c, cti_call_status_t before)
{
    assert(status_rank(c->status) >= status_rank(before)); /* only forward */
    assert((c->status == CTI_STATUS_ENDED) == (c->had_ended || c->post_call_ended));
    assert(c->status == CTI_STATUS_ENDED ||
           (c->status == CTI_STATUS_RINGING) == (c->active_ts == 0));
    assert(!c->state[0] || cti_call_is_progress(c->state));
    assert(!c->progress_ts || c->state[0]);
    assert((cti_call_outcome(c) != NULL) == (c->status == CTI_STATUS_ENDED));
    (void)c, (void)before, (void)status_rank;
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
        eff->data_value = state + 6;
        return "call.recap";
    }
    snprintf(eff->data_key, sizeof eff->data_key, "state");
    eff->data_value = state;
    return "call.state";
}

void cti_call_apply(cti_call_t *c, const cti_jdoc_t *d, int ev, const char *state, int64_t ts,
                    int64_t now, cti_call_effect_t *eff)
{
    assert(c && d && state && eff);
    memset(eff, 0, sizeof *eff);
    cti_call_status_t before = c->status;
    bool was_on_hold = before == CTI_STATUS_ON_HOLD;
    char key[sizeof c->fields_state]; /* the state as the leg keeps it, to compare alike */
    copy_utf8(key, sizeof key, state);
    merge_t m = {d, ev, newer(ts, key, c->fields_ts, c->fields_state)};
    merge_fields(c, &m);
    if (m.overwrite) {
        c->fields_ts = ts;
        memcpy(c->fields_state, key, sizeof key);
    }
    note_dates(c, &m);
    if (!strcmp(state, "voicemail") || !strcmp(state, "voicemail_uploaded") ||
        !strcmp(state, "transcription"))
        c->had_voicemail = true;
    if (cti_call_is_progress(state))
        apply_progress(c, state, ts, eff);
    recompute_status(c);
    eff->event = event_name(state, eff);
    if (!strcmp(state, "connected") && was_on_hold && !eff->late &&
        c->status == CTI_STATUS_ACTIVE)
        eff->event = "call.resumed";
    c->updated_at = now;
    assert_leg(c, before);
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
    cti_jw_key(w, "custom_data"), cti_jw_text(w, c->custom_data);
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
