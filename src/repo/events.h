/*
 * events.h — the durable log of verified webhooks (raw_events) and the
 * per-app event log customers read (event_log, app_seq).
 *
 * raw_events rows move: pending (0) → applied (1), or pending → retried
 * later (attempts, next_attempt_at) → dead letter (2) → pending again when
 * an admin replays it. Callable from any thread with that thread's db.
 */
#ifndef CTI_REPO_EVENTS_H
#define CTI_REPO_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

/* The wake-up channel (store/wakeup.h) of committed event-log rows:
 * payload "app:first:last;..." (src/ingest/processor.c, src/stream/listener.c). */
#define CTI_EVENTS_CHANNEL "cti_events"

enum { CTI_RAW_PENDING = 0, CTI_RAW_APPLIED = 1, CTI_RAW_DEAD = 2 };

typedef struct {
    const char *app_id;
    const char *dedupe_key;
    const char *kind;
    const char *payload;
    int64_t received_at;
    bool inserted; /* out: false when it was already stored (a duplicate) */
    int64_t id;    /* out: its id, when inserted */
} cti_raw_new_t;

/* Stores n events in one statement (caller holds the transaction), skipping
 * the ones whose (app_id, dedupe_key) exists; sets each item's inserted and id.
 * status is CTI_RAW_PENDING, or CTI_RAW_APPLIED when the caller applies them
 * in the same transaction (then sets back, with cti_raw_mark_failed, the ones
 * it could not apply). */
int cti_raw_insert(cti_db_t *db, cti_raw_new_t *items, int n, int status);

typedef struct {
    int64_t id;
    char app_id[37];
    char kind[16];
    const char *payload; /* valid during the callback */
    int64_t received_at;
    int attempts;
} cti_raw_t;

typedef int (*cti_raw_fn)(const cti_raw_t *ev, void *ud);
/* Pending events due by now, oldest first (at most limit), inside a
 * transaction (asserted). Where the backend can (CTI_CAP_SKIP_LOCKED) the rows
 * are locked to its end and skipped by other instances, so they share the work. */
int cti_raw_pending(cti_db_t *db, int64_t now, int limit, cti_raw_fn fn, void *ud);
int cti_raw_mark_applied_many(cti_db_t *db, const int64_t *ids, int n);
/* Records a failed attempt: retried at next_attempt_at, or dead when dead. */
int cti_raw_mark_failed(cti_db_t *db, int64_t id, const char *error, int64_t next_attempt_at,
                        bool dead);

typedef struct {
    int64_t id;
    char app_id[37];
    char kind[16];
    char dedupe_key[200];
    const char *payload, *error; /* valid during the callback */
    int attempts;
    int64_t received_at;
} cti_dead_t;
typedef int (*cti_dead_fn)(const cti_dead_t *d, void *ud);
/* Dead letters (of app_id, or all when NULL), newest first, id < before (0 = any). */
int cti_dead_list(cti_db_t *db, const char *app_id, int64_t before, int limit, cti_dead_fn fn,
                  void *ud);
/* Puts dead letters back to pending: one (id > 0), or all of app_id (NULL = all).
 * *count says how many. */
int cti_dead_replay(cti_db_t *db, int64_t id, const char *app_id, int64_t *count);

/* ---- event log ---- */

/* Locks and returns the app's last seq (0 for a new app) for this transaction.
 * This, cti_seq_set_many and cti_eventlog_append_many run inside one transaction
 * (asserted), so seqs stay gapless across instances. */
int cti_seq_lock(cti_db_t *db, const char *app_id, int64_t *last);
/* The same for n apps (sorted by strcmp, each once) in two statements, one
 * round trip: fn sees each app's last seq. Locks are taken in that order, so
 * transactions locking overlapping sets never deadlock. */
typedef int (*cti_seq_fn)(const char *app_id, int64_t last, void *ud);
int cti_seq_lock_many(cti_db_t *db, const char *const *apps, int n, cti_seq_fn fn, void *ud);
/* Sets the last seq of n apps (each once, locked) in one statement (a few for many). */
int cti_seq_set_many(cti_db_t *db, const char *const *apps, const int64_t *last, int n);
/* Every app's last seq. */
int cti_seq_all(cti_db_t *db, cti_seq_fn fn, void *ud);
typedef struct {
    const char *app_id;
    int64_t seq;
    const char *event;
    int64_t call_id; /* 0 = none */
    const char *body;
} cti_logrow_t;
int cti_eventlog_append_many(cti_db_t *db, const cti_logrow_t *rows, int n, int64_t now);
typedef int (*cti_eventlog_fn)(int64_t seq, const char *body, void *ud);
/* Events of app with seq > since, in order, at most limit. */
int cti_eventlog_since(cti_db_t *db, const char *app_id, int64_t since, int limit,
                       cti_eventlog_fn fn, void *ud);
/* The app's newest seq (0 when none) and oldest retained seq (0 when none). */
int cti_eventlog_bounds(cti_db_t *db, const char *app_id, int64_t *oldest, int64_t *newest);

/* Refreshes the planner's statistics of the tables ingest grows, where the
 * backend plans by them (CTI_CAP_ANALYZE; see cti_db_analyze_stale): plans
 * made while a table was nearly empty would otherwise scan it as it grows,
 * until autovacuum gets to it. Nothing elsewhere. Call it off the hot path. */
int cti_store_analyze_ingest(cti_db_t *db);

#endif
