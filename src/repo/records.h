/*
 * records.h — reading voicemails and messages, newest first, every query
 * bounded by app_id. Writing them is calls.h (the processor). Any thread.
 */
#ifndef CTI_REPO_RECORDS_H
#define CTI_REPO_RECORDS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

typedef struct {
    const char *direction;   /* messages only; NULL = any */
    int64_t dialpad_user_id; /* 0 = any */
    const char *number;      /* E.164: voicemail caller; message sender or recipient */
    int64_t from, to;        /* created_at window, 0 = open */
    bool has_cursor;
    int64_t cursor_at, cursor_id; /* strictly older than this (created_at, id) */
} cti_record_filter_t;

typedef struct {
    int64_t call_id, recording_id, duration_ms, dialpad_user_id, created_at; /* 0/-1 = none */
    const char *url, *transcript, *external_number; /* NULL = none */
} cti_voicemail_t;

typedef struct {
    int64_t id, dialpad_user_id, created_at;
    const char *direction, *from_number, *to_numbers /* JSON */, *text, *status,
        *contact /* JSON */;
} cti_message_row_t;

typedef int (*cti_voicemail_fn)(const cti_voicemail_t *v, void *ud);
typedef int (*cti_message_fn)(const cti_message_row_t *m, void *ud);

int cti_voicemails_query(cti_db_t *db, const char *app_id, const cti_record_filter_t *f,
                         int limit, cti_voicemail_fn fn, void *ud);
/* CTI_ENOTFOUND when the app has no voicemail for that call. */
int cti_voicemails_get(cti_db_t *db, const char *app_id, int64_t call_id, cti_voicemail_fn fn,
                       void *ud);
int cti_messages_query(cti_db_t *db, const char *app_id, const cti_record_filter_t *f, int limit,
                       cti_message_fn fn, void *ud);
int cti_messages_get(cti_db_t *db, const char *app_id, int64_t id, cti_message_fn fn, void *ud);

#endif
