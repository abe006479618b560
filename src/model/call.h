/*
 * call.h — one call leg as the server keeps it, and the pure function that
 * applies a Dialpad call event to it. No I/O: the processor loads a leg,
 * calls cti_call_apply(), and stores the result. See call.c for the state
 * machine and its transition table.
 */
#ifndef CTI_MODEL_CALL_H
#define CTI_MODEL_CALL_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/jscan.h"
#include "core/jw.h"

typedef enum {
    CTI_STATUS_RINGING,
    CTI_STATUS_ACTIVE,
    CTI_STATUS_ON_HOLD,
    CTI_STATUS_ENDED,
} cti_call_status_t;

#define CTI_NO_DURATION (-1)

typedef struct {
    int64_t call_id;
    char direction[16];        /* "" = unknown */
    char state[72];            /* Dialpad's newest call-progress state; "" = none yet */
    cti_call_status_t status;
    char external_number[64];
    char internal_number[64];
    char *contact, *target;    /* owned JSON object text, compact, ids as decimal strings;
                                  NULL = unknown */
    int64_t dialpad_user_id;   /* target.id when target.type is "user"; 0 = none */
    int64_t master_call_id, entry_point_call_id, operator_call_id; /* 0 = none */
    int is_transferred;        /* -1 unknown, 0, 1 */
    int64_t started_at, connected_at, ended_at; /* ms; 0 = unknown */
    int64_t duration_ms, total_duration_ms, talk_time_ms, hold_time_ms; /* CTI_NO_DURATION */
    json_t *recording_urls;    /* owned array of strings, sorted, unique */
    char *vm_url, *vm_transcript; /* owned, NULL = none */
    char *custom_data;         /* owned: what a click-to-dial asked Dialpad to echo; NULL = none */
    int64_t vm_recording_id;   /* 0 = none */
    int64_t vm_duration_ms;    /* CTI_NO_DURATION */

    /* What the rules need to stay order-independent (see call.c). */
    int64_t progress_ts;   /* newest call-progress event applied (0 = none) */
    int64_t fields_ts;     /* newest event whose fields were taken */
    char fields_state[72];
    int64_t active_ts;     /* newest connected/hold event */
    char active_state[16];
    /* had_ended: a hangup/missed/voicemail event was applied. post_call_ended
     * (the name of its stored flag): some event, of any state, had a date_ended
     * (> 0): that ends the call too, whatever order events arrive in. */
    bool had_ended, had_connected, had_voicemail, post_call_ended;
    /* reconciled: its end came from Dialpad's call list (reconciliation), not a
     * webhook; Dialpad's own progress events that arrive after are late. */
    bool reconciled;
    int64_t updated_at;
} cti_call_t;

/* What applying one event produced. */
typedef struct {
    const char *event;  /* contract name: "call.connected", "voicemail.ready", ... */
    bool late;          /* a call-progress event older than the newest applied */
    char data_key[8];   /* "state" or "kind" when the event carries data, else "" */
    const char *data_value; /* the state (or its suffix after "recap_"), whole: points
                               into the state given to cti_call_apply; NULL without data */
} cti_call_effect_t;

/* A fresh leg (status ringing, nothing known). Free with cti_call_clear(). */
void cti_call_init(cti_call_t *c, int64_t call_id);
void cti_call_clear(cti_call_t *c);
/* dst becomes a copy of src owning its own strings and JSON (a new owned
 * member of cti_call_t is copied here, and freed in cti_call_clear). */
void cti_call_copy(cti_call_t *dst, const cti_call_t *src);

/* Applies a call event (the object at token ev of d, its state and
 * event_timestamp ts) to c. state (any length) must outlive eff. Never fails;
 * asserts the model's invariants (call.c) before returning. */
void cti_call_apply(cti_call_t *c, const cti_jdoc_t *d, int ev, const char *state, int64_t ts,
                    int64_t now, cti_call_effect_t *eff);

/* "ringing" | "active" | "on_hold" | "ended" */
const char *cti_call_status_name(cti_call_status_t s);
/* Parses a status name; -1 when unknown. */
int cti_call_status_parse(const char *s);
/* NULL until ended; then "answered" | "voicemail" | "missed" | "unanswered". */
const char *cti_call_outcome(const cti_call_t *c);
/* True for the states that move a call: preanswer, calling, ringing, queued,
 * connected, hold, missed, voicemail, hangup. */
bool cti_call_is_progress(const char *state);

/* The contract's call object (ids as strings, ISO times, durations in ms) as
 * text, left open: every member but crm_user_id, no closing brace. That is
 * what the store keeps with the row (the call's "doc"): crm_user_id comes from
 * the user mappings at read time, and cti_call_close() appends it and ends
 * the object. */
void cti_call_render(cti_jw_t *w, const cti_call_t *c);
/* ,"crm_user_id":… } — crm_user_id may be NULL or "". */
void cti_call_close(cti_jw_t *w, const char *crm_user_id);

#endif
