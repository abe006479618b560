/*
 * processor.h — applies stored webhooks (raw_events) to the call model and
 * appends the normalized events to the per-app event log.
 *
 * One transaction per batch: the legs, timelines, voicemails, messages, the
 * event log rows with their seqs, and the raw events' new status commit
 * together, so a crash at any point leaves each event applied exactly once
 * or not at all (and then it is still pending: the next run applies it).
 * An event that cannot be applied (bad shape) is retried with backoff
 * (1, 2, 4, 8 s) and then parked as a dead letter; it never blocks others.
 *
 * Thread: the ingest worker (one per process).
 */
#ifndef CTI_INGEST_PROCESSOR_H
#define CTI_INGEST_PROCESSOR_H

#include <stdint.h>

#include "core/jscan.h"
#include "dialpad/event.h"
#include "repo/events.h"
#include "store/store.h"

#define CTI_PROCESS_BATCH 256
#define CTI_MAX_ATTEMPTS 5

/* Called after commit with every event appended (app_id, seq, body), in seq
 * order per app: once per transaction. */
typedef void (*cti_publish_fn)(const cti_logrow_t *events, int n, void *ud);

/* After committing a change to user mappings: the ingest worker, which
 * remembers them for a second (processor.c), looks them up again. Any thread. */
void cti_crm_cache_forget(void);

/* The events a transaction appended, kept until it commits. */
typedef struct cti_processed cti_processed_t;
cti_processed_t *cti_processed_new(void);
/* After COMMIT: hands every appended event to publish (may be NULL). */
void cti_processed_publish(cti_processed_t *p, cti_publish_fn publish, void *ud);
void cti_processed_free(cti_processed_t *p);

/* Inside the caller's transaction: applies up to limit pending events due by
 * now, oldest first, and records the apps' new seqs. Returns the number of
 * raw events handled (applied or failed), or a negative error (then the
 * caller must roll back). */
int cti_process_pending(cti_db_t *db, int64_t now, int limit, cti_processed_t *out);

/* An event the caller has just stored with status applied (cti_raw_insert). */
typedef struct {
    int64_t id;
    const char *app_id;
    const char *payload;
    const cti_jdoc_t *doc; /* the payload parsed, or NULL to parse it here (borrowed) */
    const cti_ev_info_t *info; /* doc classified, or NULL to classify it here (borrowed) */
    int64_t received_at;
} cti_stored_t;

/* Inside the caller's transaction: applies events stored as applied in it; one
 * that cannot be applied is set back to pending for a retry (or parked).
 * Returns 0 or a negative error (then the caller must roll back). */
int cti_process_stored(cti_db_t *db, int64_t now, const cti_stored_t *events, int n,
                       cti_processed_t *out);

/* Its own transaction: cti_process_pending, commit, publish. */
int cti_process_batch(cti_db_t *db, int64_t now, cti_publish_fn publish, void *ud);

#endif
