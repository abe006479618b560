/*
 * event.h — what a Dialpad webhook payload is, before it is stored:
 * its kind, its dedupe key, its event_timestamp. Nothing is rejected here
 * for its content: an event we cannot apply is still stored (Dialpad never
 * retries a 4xx) and parked as a dead letter by the processor, with the
 * problem recorded. Pure functions; any thread.
 *
 * Dedupe keys (per app), as the contract says:
 *   call     c:<call_id>:<state>:<event_timestamp>
 *   sms      s:<id>:<message_status>:<event_timestamp>
 *   agent    a:<target.id>:<event_timestamp>
 *   contact  k:<contact.id>:<event>:<event_timestamp> (without one, as Dialpad
 *            documents them: the other kinds' key, the payload's hash)
 *   other    r:<sha256 of the payload bytes>  (exact replays still dedupe)
 * A state, status or event word is any non-empty string: up to 64 printable
 * ASCII bytes but ':' as it is, else "u:<percent-encoded>" (at most 100
 * bytes) or "h:<its sha256>" ("x:<sha256 of its text as sent>" with a
 * \u0000 or lone surrogate escape), so "recap_été", "ai playbook" or a
 * 70-byte state are keys like any other and two words never share one.
 */
#ifndef CTI_DIALPAD_EVENT_H
#define CTI_DIALPAD_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/jscan.h"

typedef enum {
    CTI_EV_CALL,
    CTI_EV_SMS,
    CTI_EV_AGENT,
    CTI_EV_CONTACT,
    CTI_EV_UNKNOWN,
    CTI_EV_SERVER, /* the server's own (connection.*): never from a webhook */
} cti_ev_kind_t;

#define CTI_DEDUPE_MAX 200

typedef struct {
    cti_ev_kind_t kind;
    int64_t event_timestamp; /* ms; 0 when missing */
    char dedupe_key[CTI_DEDUPE_MAX];
    const char *problem; /* static text: why it cannot be applied, or NULL */
} cti_ev_info_t;

/* Classifies a payload: d is its text parsed, and its top level must be an
 * object; raw/len are its exact bytes (for the fallback dedupe key). Always
 * succeeds. */
void cti_ev_classify(const cti_jdoc_t *d, const char *raw, size_t len, cti_ev_info_t *out);

/* Classifies an event the server itself wrote (stored with kind "server";
 * cti_ev_classify never yields one, so no webhook can pass for one):
 * {"event": "connection.broken", "id": "<unique>", "occurred_at": ms,
 *  "data": {...}}. Dedupe key "x:<id>". */
void cti_ev_classify_server(const cti_jdoc_t *d, cti_ev_info_t *out);

/* Name of a kind as stored: "call", "sms", "agent_status", "contact", "unknown", "server". */
const char *cti_ev_kind_name(cti_ev_kind_t kind);

/* A Dialpad id from a JSON number or decimal string: exact for all int64
 * (never through a double). False for anything else, zero or negative. */
bool cti_dp_id(json_t *v, int64_t *out);
/* A timestamp or duration in ms: integer, real (rounded to nearest) or
 * decimal string. False when absent/null/not a number. */
bool cti_dp_ms(json_t *v, int64_t *out);
/* The same, for token i of a parsed document (i may be -1: absent). */
bool cti_dp_id_at(const cti_jdoc_t *d, int i, int64_t *out);
bool cti_dp_ms_at(const cti_jdoc_t *d, int i, int64_t *out);

#endif
