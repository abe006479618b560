/*
 * calls.h — storing call legs (the model's cti_call_t), their timelines,
 * voicemails, messages and agent status. Every query bounded by app_id.
 * Callable from any thread with that thread's db.
 */
#ifndef CTI_STORE_CALLS_H
#define CTI_STORE_CALLS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "model/call.h"
#include "store/store.h"

/* Loads a leg into c (initialised here). CTI_ENOTFOUND when there is none
 * (c is then a fresh leg from cti_call_init). */
int cti_calls_load(cti_db_t *db, const char *app_id, int64_t call_id, cti_call_t *c);
/* Inserts or replaces the leg. */
int cti_calls_save(cti_db_t *db, const char *app_id, const cti_call_t *c, int64_t now);
/* Adds a timeline entry (ignored if that (call, timestamp, state) exists). */
int cti_calls_add_timeline(cti_db_t *db, const char *app_id, int64_t call_id, int64_t ts,
                           const char *state, int64_t received_at, bool late, int64_t raw_id);
/* The CRM user mapped to a Dialpad user; out is "" when none. */
int cti_crm_user(cti_db_t *db, const char *app_id, int64_t dialpad_user_id, char *out,
                 size_t cap);
/* Upserts the voicemail of a leg from its current fields. */
int cti_voicemails_save(cti_db_t *db, const char *app_id, const cti_call_t *c, int64_t now);

typedef struct {
    int64_t message_id;
    char direction[16];
    char from_number[64];
    json_t *to_numbers; /* borrowed */
    const char *text;
    char status[32];
    int64_t dialpad_user_id;
    json_t *contact, *target; /* borrowed */
    int64_t event_timestamp, created_at;
} cti_message_t;

/* Applies an SMS event: a new message, or a newer state of a known one
 * (fields from the newest event). *existed says whether it was known. */
int cti_messages_apply(cti_db_t *db, const char *app_id, const cti_message_t *m, int64_t now,
                       bool *existed);
int cti_agent_status_add(cti_db_t *db, const char *app_id, int64_t target_id, int64_t ts,
                         const char *body, int64_t now);

#endif
