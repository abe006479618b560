/*
 * retention.h — purging what is older than RETENTION_DAYS (raw webhooks
 * applied or dead, call timelines, the event log) and, when
 * RETENTION_CALLS_DAYS is set, calls, voicemails and messages with the rows
 * that hang on them (timelines, message numbers).
 *
 * Off the hot path: a thread (`cti-purger`) wakes every RETENTION_TICK_MS
 * (a minute), takes the lease "retention" (one instance purges at a time,
 * across instances on PostgreSQL) and deletes in batches of
 * CTI_RETENTION_BATCH rows, each batch its own short transaction, so the
 * ingest worker waits for the write lock at most one batch. On SQLite it then
 * returns freed pages to the file system (PRAGMA incremental_vacuum) when the
 * file was created with auto_vacuum=INCREMENTAL (every file created since
 * migration 16's release; see docs/OPERATIONS of the README for older ones).
 *
 * Never purged: pending raw events (not yet applied: nothing acknowledged is
 * lost), and each app's newest event-log row, so the log's oldest seq (what
 * /api/events answers 410 and the stream `reset` against; stream/replay.h)
 * always says how far the purge went even for an app idle longer than the
 * window. The event log is purged as a prefix of seqs: the retained window
 * stays gapless.
 *
 * Threads: the cti_purge_* functions on any thread with that thread's db;
 * start/stop on the main thread.
 */
#ifndef CTI_REPO_RETENTION_H
#define CTI_REPO_RETENTION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#define CTI_RETENTION_BATCH 1000 /* rows per transaction */
#define CTI_DAY_MS          ((int64_t)86400 * 1000)

/* Rows deleted by a purge, by table. */
typedef struct {
    int64_t raw_events, call_events, event_log, calls, voicemails, messages, deliveries;
} cti_purged_t;

/* One batch each; the caller holds the transaction of the ones that delete
 * from several tables (asserted). *deleted: rows deleted (the batch is the
 * last when fewer than `batch`). Return 0 or a store error. */

/* Raw events received before cutoff and applied or dead, walked by id from
 * *after_id (updated): at most batch rows are looked at; *done when the walk
 * reached a row not yet old (or the end). */
int cti_purge_raw_events(cti_db_t *db, int64_t cutoff, int batch, int64_t *after_id,
                         int64_t *deleted, bool *done);
/* Timeline rows received before cutoff (index call_events_by_age). */
int cti_purge_call_events(cti_db_t *db, int64_t cutoff, int batch, int64_t *deleted);
/* Outbound webhook deliveries made before cutoff and ended (succeeded or
 * failed; index webhook_deliveries_by_age). A pending one is kept: its
 * event, purged, fails it first. */
int cti_purge_deliveries(cti_db_t *db, int64_t cutoff, int batch, int64_t *deleted);
/* The app's oldest event-log rows created before cutoff, a prefix of seqs,
 * never its newest row. */
int cti_purge_event_log(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                        int64_t *deleted);
/* The app's calls whose sort_at is before cutoff, with their timelines. In a transaction. */
int cti_purge_calls(cti_db_t *db, const char *app_id, int64_t cutoff, int batch, int64_t *deleted);
/* The app's voicemails created before cutoff. */
int cti_purge_voicemails(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                         int64_t *deleted);
/* The app's messages created before cutoff, with their numbers. In a transaction. */
int cti_purge_messages(cti_db_t *db, const char *app_id, int64_t cutoff, int batch,
                       int64_t *deleted);

/* A whole purge at now_ms: every table, batch after batch (each its own
 * transaction), until nothing older than the windows is left or *stop.
 * days / calls_days 0: keep forever. Adds to *out. 0 or a store error. */
int cti_retention_run(cti_db_t *db, int64_t now_ms, int days, int calls_days, int batch,
                      atomic_bool *stop, cti_purged_t *out);

/* The time the purger cuts by: the wall clock, but never ahead of the wall
 * clock the purger started with plus the monotonic time since (mono_ms -
 * mono0_ms). A wall clock stepped forward after the start (an NTP or operator
 * mistake: +1 year) would otherwise purge everything "older than the window"
 * at once; a step back only purges less. A forward correction of a clock that
 * was behind at the start is taken up at the next restart. */
int64_t cti_retention_clock(int64_t wall_ms, int64_t wall0_ms, int64_t mono_ms, int64_t mono0_ms);

typedef struct cti_purger cti_purger_t;
/* Starts the purger thread (NULL when both windows are 0: nothing to do). */
cti_purger_t *cti_purger_start(cti_store_t *st, int days, int calls_days, int tick_ms);
/* Stops it (waits for the batch in progress). NULL is fine. */
void cti_purger_stop(cti_purger_t *p);

#endif
