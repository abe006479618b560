/*
 * calls.h — storing call legs (the model's cti_call_t), their timelines,
 * voicemails, messages and agent status. Every query bounded by app_id.
 * Callable from any thread with that thread's db.
 */
#ifndef CTI_REPO_CALLS_H
#define CTI_REPO_CALLS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "model/call.h"
#include "store/store.h"

/* Inserts or replaces n distinct (app, call) legs in few statements: calls[i]
 * is of apps[i] (apps NULL: all of app_id). A batch spread over many apps
 * writes its legs in the statements one app's would take, not in as many per
 * app. docs (or NULL) holds each leg's cti_call_render() text when the caller
 * has it (an entry may be NULL: rendered here). keys_same (or NULL) tells, per
 * leg, that it is stored with the same external and internal number, Dialpad
 * user and cti_calls_sort_at(): such a row is updated without touching the
 * indexes on those columns. Either way every column ends as the leg has it. */
int cti_calls_save_apps(cti_db_t *db, const char *const *apps, const char *app_id,
                        cti_call_t *const *calls, const char *const *docs, const bool *keys_same,
                        int n, int64_t now);

/* The time a leg sorts by in lists: its start, else its first event's. */
int64_t cti_calls_sort_at(const cti_call_t *c);

typedef struct {
    int64_t call_id, ts, received_at, raw_id;
    const char *state;
    bool late;
    bool reconciled; /* made by reconciliation, not a webhook */
} cti_timeline_row_t;
/* Timeline entries (existing (call, timestamp, state) ignored): rows[i] is of
 * apps[i] (apps NULL: all of app_id). */
int cti_calls_add_timeline_apps(cti_db_t *db, const char *const *apps, const char *app_id,
                                const cti_timeline_row_t *rows, int n);

/* CRM users mapped to n (apps[i], users[i]) Dialpad users of any apps (those
 * with a mapping only): fn sees each mapped pair with its app. One statement
 * with CTI_CAP_ARRAYS, else one per app. */
typedef int (*cti_crm_app_fn)(const char *app_id, int64_t dialpad_user_id,
                              const char *crm_user_id, void *ud);
int cti_crm_users_pairs(cti_db_t *db, const char *const *apps, const int64_t *users, int n,
                        cti_crm_app_fn fn, void *ud);
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

/* ---- reading ---- */

typedef struct {
    const char *status;     /* ringing|active|on_hold|ended, or NULL */
    bool active_only;       /* ringing, active or on_hold */
    const char *state, *outcome, *direction; /* or NULL */
    int64_t dialpad_user_id;                 /* 0 = any */
    const char *crm_user_id;                 /* via user mappings, or NULL */
    const char *number;                      /* E.164, either side, or NULL */
    const char *custom_data;                 /* exactly, or NULL */
    int64_t from, to;                        /* sort time window (ms), 0 = open */
    bool root_only;
    bool has_cursor;
    int64_t cursor_at, cursor_id;            /* keyset: strictly after this (newest first) */
} cti_call_filter_t;

/* c is valid during the call only; crm_user_id may be NULL. */
typedef int (*cti_call_fn)(const cti_call_t *c, const char *crm_user_id, int64_t sort_at,
                           void *ud);

/* A leg as reads serve it: its stored call object (see cti_call_render) and the
 * CRM user mapped to its Dialpad user now. Valid during the callback only. */
typedef struct {
    int64_t call_id, sort_at, dialpad_user_id;
    const char *doc;         /* the call object, open: finish with cti_call_close() */
    const char *crm_user_id; /* NULL when unmapped */
    const char *contact;     /* the contact as JSON text, or NULL */
} cti_calldoc_t;
typedef int (*cti_calldoc_fn)(const cti_calldoc_t *d, void *ud);

/* Legs of app matching f, newest first (sort_at, then call_id), at most limit. */
int cti_calls_query(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                    cti_calldoc_fn fn, void *ud);

/* A bound on the legs one page reads to test the conditions no index serves
 * (state, outcome, direction, root_only): unbounded, a filter that few legs
 * match reads every leg of the app (or of the indexed filter's legs) before it
 * answers. With the bound the page may come back short, even empty, with legs
 * left to test: cut says so, and (at, id) is the last leg tested, the keyset
 * position the next page goes on from. */
typedef struct {
    int max;        /* at most this many legs tested for one page (0: no bound) */
    bool cut;       /* out: the page is short because the walk reached max */
    int64_t at, id; /* out, when cut: the last leg tested (sort_at, call_id) */
} cti_call_walk_t;
/* cti_calls_query with a bound on the walk (walk may be NULL: none). */
int cti_calls_query_walk(cti_db_t *db, const char *app_id, const cti_call_filter_t *f, int limit,
                         cti_call_walk_t *walk, cti_calldoc_fn fn, void *ud);
/* One leg (CTI_ENOTFOUND), and the legs linked to it (master, entry point, operator). */
int cti_calls_get(cti_db_t *db, const char *app_id, int64_t call_id, cti_call_fn fn, void *ud);
/* The stored legs among ids (of one app), in any order. */
int cti_calls_load_many(cti_db_t *db, const char *app_id, const int64_t *ids, int n,
                        cti_call_fn fn, void *ud);
/* The stored legs among n (apps[i], ids[i]) pairs, each pair once, of any apps,
 * in any order: fn sees each leg with its app. One statement on a backend with
 * CTI_CAP_ARRAYS (one round trip however many apps a batch spreads over), else
 * one per app. */
typedef int (*cti_call_app_fn)(const char *app_id, const cti_call_t *c, const char *crm_user_id,
                               int64_t sort_at, void *ud);
int cti_calls_load_pairs(cti_db_t *db, const char *const *apps, const int64_t *ids, int n,
                         cti_call_app_fn fn, void *ud);
int cti_calls_linked(cti_db_t *db, const char *app_id, const cti_call_t *c, cti_calldoc_fn fn,
                     void *ud);
/* Renders the doc of legs stored before it was kept (migration 9), in batches of
 * its own transactions. Returns how many were filled, or an error. */
int cti_calls_backfill_docs(cti_db_t *db);
/* reconciled: the row came from reconciliation (source "reconciled"), not a webhook. */
typedef int (*cti_timeline_fn)(const char *state, int64_t ts, int64_t received_at, bool late,
                               bool reconciled, void *ud);
int cti_calls_timeline(cti_db_t *db, const char *app_id, int64_t call_id, cti_timeline_fn fn,
                       void *ud);

#endif
