/*
 * processor.h — applies stored webhooks (raw_events) to the call model and
 * appends the normalized events to the per-app event log: the pipeline.
 * What it uses: the call model (model/call.h), the normalization of other
 * kinds (dialpad/normalize.h), the seq counters (ingest/seqs.h), the CRM
 * mapping cache (ingest/crmcache.h).
 *
 * One transaction per batch: the legs, timelines, voicemails, messages, the
 * event log rows with their seqs, and the raw events' new status commit
 * together, so a crash at any point leaves each event applied exactly once
 * or not at all (and then it is still pending: the next run applies it).
 *
 * Failures are counted per event, whatever their kind: an event that cannot
 * be applied (bad shape), or that the database refuses (cti_process_refused),
 * is retried at 1, 2, 4, 8 s and then parked as a dead letter; it never
 * blocks the events behind it, of its call or any other (the model makes the
 * final leg independent of the order events are applied in).
 *
 * Thread: the ingest worker (one per process).
 */
#ifndef CTI_INGEST_PROCESSOR_H
#define CTI_INGEST_PROCESSOR_H

#include <stdint.h>

#include "core/jscan.h"
#include "dialpad/event.h"
#include "ingest/crmcache.h" /* cti_crm_cache_forget, for those that change mappings */
#include "repo/events.h"
#include "store/store.h"

#define CTI_PROCESS_BATCH 256
/* The raw-event kind of a call event made by reconciliation (not a webhook). */
#define CTI_RAW_KIND_RECONCILED "call_reconciled"
#define CTI_MAX_ATTEMPTS  5

/* Called after commit with every event appended (app_id, seq, body), in seq
 * order per app: once per transaction. */
typedef void (*cti_publish_fn)(const cti_logrow_t *events, int n, void *ud);

/* The result of a transaction's processing: the events it appended, kept
 * until it commits (a batch in progress is processor.c's batch_t). */
typedef struct cti_processed cti_processed_t;
cti_processed_t *cti_processed_new(void);
/* After COMMIT: hands every appended event to publish (may be NULL). */
void cti_processed_publish(cti_processed_t *p, cti_publish_fn publish, void *ud);
void cti_processed_free(cti_processed_t *p);

/* Inside the caller's transaction: applies up to limit pending events due by
 * now, oldest first, and records the apps' new seqs. Returns the number of
 * raw events handled (applied or failed), or a negative error (then the
 * caller must roll back). *first (may be NULL) gets the id of the oldest
 * event read (0: none). */
int cti_process_pending(cti_db_t *db, int64_t now, int limit, cti_processed_t *out, int64_t *first);

/* An event the caller has just stored with status applied (cti_raw_insert). */
typedef struct {
    int64_t id;
    const char *app_id;
    const char *payload;
    const cti_jdoc_t *doc;     /* the payload parsed, or NULL to parse it here (borrowed) */
    const cti_ev_info_t *info; /* doc classified, or NULL to classify it here (borrowed) */
    int64_t received_at;
    bool reconciled; /* stored with kind CTI_RAW_KIND_RECONCILED */
} cti_stored_t;

/* Inside the caller's transaction: applies events stored as applied in it; one
 * that cannot be applied is set back to pending for a retry (or parked).
 * Returns 0 or a negative error (then the caller must roll back). */
int cti_process_stored(cti_db_t *db, int64_t now, const cti_stored_t *events, int n,
                       cti_processed_t *out);

/* What a failed cti_process_batch leaves for its caller. */
typedef struct {
    int64_t first_id; /* the oldest event it read (0: none) */
    char error[256];  /* the database's message */
} cti_process_failure_t;

/* Its own transaction: cti_process_pending(limit), commit, publish. Returns
 * the number handled, or a negative error (rolled back; *failure filled). */
int cti_process_batch(cti_db_t *db, int64_t now, int limit, cti_publish_fn publish, void *ud,
                      cti_process_failure_t *failure);

/* Its own transaction: counts a failed attempt of pending event id, which the
 * database refused when applied alone (error: its message), if it is still
 * the oldest event due by now (and so locked here, not by another instance):
 * retried after the backoff, a dead letter after CTI_MAX_ATTEMPTS. Returns 1
 * when counted, 0 when it was not that event's turn any more, or an error. */
int cti_process_refused(cti_db_t *db, int64_t now, int64_t id, const char *error);

#endif
