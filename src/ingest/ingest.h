/*
 * ingest.h — durable acknowledgement of webhooks by group commit.
 *
 * HTTP threads verify a webhook and submit it here; one worker thread takes
 * everything queued, stores it in one transaction (deduplicated by the
 * unique (app_id, dedupe_key) index), and only after COMMIT calls each
 * item's done() with 200 (stored, or a duplicate of a stored one) or 503
 * (could not store: Dialpad retries 5xx). Right after, the same thread
 * applies the new events (processor.h) and publishes them.
 *
 * A full queue (CTI_INGEST_QUEUE_MAX items or CTI_INGEST_QUEUE_BYTES bytes)
 * refuses at once: the HTTP layer answers 503.
 *
 * Threads: submit/wake from any thread; start/stop from main.
 */
#ifndef CTI_INGEST_INGEST_H
#define CTI_INGEST_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/jscan.h"
#include "dialpad/event.h"
#include "ingest/processor.h"
#include "store/store.h"

#define CTI_INGEST_QUEUE_MAX 8192
#define CTI_INGEST_QUEUE_BYTES ((size_t)256 * 1024 * 1024)
#define CTI_INGEST_BATCH 512

typedef struct cti_ingest cti_ingest_t;

/* status: 200 or 503. Called on the worker thread, once per item. */
typedef void (*cti_ingest_done_fn)(void *ctx, int status, bool duplicate);

typedef struct {
    char app_id[37];
    cti_ev_info_t info; /* its classification: kind, dedupe key, event_timestamp */
    char *payload; /* owned by the queue once submitted */
    cti_jdoc_t doc; /* the payload parsed (doc.text == payload; tokens owned), or all 0 */
    int64_t received_at;
    bool reconciled; /* a call's final event made by reconciliation (stored with kind
                        CTI_RAW_KIND_RECONCILED): its timeline row and event say so */
    cti_ingest_done_fn done;
    void *ctx;
} cti_ingest_item_t;

/* Starts the worker with its own database connection. publish (may be NULL)
 * receives every event appended, after its commit. Never returns NULL. */
cti_ingest_t *cti_ingest_start(cti_store_t *store, cti_publish_fn publish, void *ud);
/* Queues a copy of item (taking item->payload and item->doc). Returns 0, or
 * CTI_ELIMIT when the queue is full (both released; done() is not called). */
int cti_ingest_submit(cti_ingest_t *ing, cti_ingest_item_t *item);
/* Stores one of the server's own events for app_id (event.h: kind "server")
 * and waits until it is stored (it is then applied, given its seq and
 * published like a webhook's). data is stolen. Blocks: never from the worker
 * or an HTTP pool thread. Returns 0, CTI_ELIMIT (queue full) or
 * CTI_EUNAVAILABLE (could not be stored). */
int cti_ingest_server_event(cti_ingest_t *ing, const char *app_id, const char *name,
                            json_t *data);
/* Stores a call event made by reconciliation (payload: a Dialpad call event,
 * taken) under dedupe_key, and waits until it is stored and applied like a
 * webhook (its timeline row and stream event marked as reconciled).
 * *duplicate (may be NULL) tells it was stored before. Blocks, as above. */
int cti_ingest_reconciled(cti_ingest_t *ing, const char *app_id, char *payload,
                          const char *dedupe_key, bool *duplicate);
/* Webhooks queued, not yet taken by the worker (for /metrics). Any thread. */
int cti_ingest_queued(cti_ingest_t *ing);
/* When the last group commit failed (its webhooks answered 503: a full disk,
 * an I/O error, a database that refuses writes), in ms of the monotonic
 * clock (cti_mono_ms()); 0 when it worked. Any thread. */
int64_t cti_ingest_store_failed_at(cti_ingest_t *ing);
/* Asks the worker to look for pending events now (e.g. after a replay). */
void cti_ingest_wake(cti_ingest_t *ing);
/* Stores and answers what is queued, applies what is pending, stops. */
void cti_ingest_stop(cti_ingest_t *ing);
/* Frees a stopped worker's memory. Call it once nothing can submit any more
 * (after the HTTP daemon is gone): a submit after cti_ingest_stop is refused
 * (CTI_ELIMIT), one after this is a use after free. NULL is ignored. */
void cti_ingest_free(cti_ingest_t *ing);

#endif
