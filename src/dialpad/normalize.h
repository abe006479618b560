/*
 * normalize.h — what the server makes of a Dialpad event's fields for its
 * customers: ids as decimal strings, and the normalized SMS, agent status and
 * contact events. Read from the payload's jscan tokens, never through
 * jansson: whatever a signed event's extras hold (\u0000, a cut-off emoji, a
 * 20-digit number, nesting past 64 levels), what is written here is JSON that
 * jansson, PostgreSQL and browsers all read (see cti_jw_jdoc). The raw event
 * is stored as it came; this is what is read from it.
 *
 * (Call events are the model's: src/model/call.c, which uses
 * cti_jw_normalized for their contact and target.)
 *
 * Pure functions; any thread.
 */
#ifndef CTI_DIALPAD_NORMALIZE_H
#define CTI_DIALPAD_NORMALIZE_H

#include <stdint.h>

#include "core/jscan.h"
#include "core/jw.h"

/* Writes the object at token i of d as compact JSON, every id-like member
 * ("id", or a name ending in "_id") that holds an integer written as a
 * decimal string; nested objects as they are. */
void cti_jw_normalized(cti_jw_t *w, const cti_jdoc_t *d, int i);

/* An SMS event, as the store and the stream want it. */
typedef struct {
    int64_t id;              /* the message's id (0 when missing) */
    int64_t dialpad_user_id; /* target.id when target.type is "user"; 0 = none */
    int64_t created_at;      /* created_date, else the event's timestamp (ms) */
    char direction[16], from_number[64], status[32]; /* "" when missing */
    char *text;             /* "text" decoded when it is a string, else NULL (owned) */
    char *text_json;        /* "text" as JSON, whatever its type; "null" when absent (owned) */
    char *to_numbers;       /* JSON array: to_number as sent, a lone string in an array (owned) */
    char *contact, *target; /* JSON objects, ids normalized; NULL when not objects (owned) */
} cti_dp_sms_t;

/* Reads the SMS event at the top of d (an object). Free with cti_dp_sms_clear. */
void cti_dp_sms_read(const cti_jdoc_t *d, int64_t event_timestamp, cti_dp_sms_t *m);
void cti_dp_sms_clear(cti_dp_sms_t *m);
/* The contract's message object: {"id", "direction", "from_number",
 * "to_numbers", "text", "status", "dialpad_user_id", "contact", "created_at"}. */
void cti_dp_sms_render(cti_jw_t *w, const cti_dp_sms_t *m);

/* agent.status's data: the event's members in order without
 * event_timestamp, target with its ids normalized. */
void cti_dp_agent_data(cti_jw_t *w, const cti_jdoc_t *d);

/* contact.changed's data: {"action": the event's "event", "contact": the
 * contact with its ids normalized}. */
void cti_dp_contact_data(cti_jw_t *w, const cti_jdoc_t *d);

#endif
