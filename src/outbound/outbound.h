/*
 * outbound.h — the outbound webhook sender: one thread with a libcurl multi
 * handle that POSTs due deliveries (repo/deliveries.h) to customers'
 * endpoints (repo/endpoints.h), signed per Standard Webhooks (sign.h),
 * retried on OUTBOUND_RETRY_SCHEDULE, bounded per endpoint and overall, so a
 * slow or dead endpoint never slows ingest, the stream or other endpoints.
 *
 * Threads: start/stop from main; wake/reload from any thread (never block).
 */
#ifndef CTI_OUTBOUND_OUTBOUND_H
#define CTI_OUTBOUND_OUTBOUND_H

#include "core/config.h"
#include "core/seal.h"
#include "repo/events.h"
#include "store/store.h"

typedef struct cti_outbound cti_outbound_t;

/* Starts the sender with its own database connection; NULL when it cannot. */
cti_outbound_t *cti_outbound_start(const cti_config_t *cfg, cti_store_t *store,
                                   const cti_seal_keys_t *keys);
/* Stops it: attempts in flight are abandoned (their leases expire; they are
 * sent again). Wakes after it do nothing. NULL is ignored. */
void cti_outbound_stop(cti_outbound_t *ob);
/* Frees a stopped sender, once nothing can wake it (after the HTTP daemon
 * and the ingest worker are gone). NULL is ignored. */
void cti_outbound_free(cti_outbound_t *ob);
/* Deliveries may be due now (events committed, a retry or replay asked for):
 * look at once rather than at the next poll. NULL ob is ignored. */
void cti_outbound_wake(cti_outbound_t *ob);
/* Endpoints were created, changed, rotated or deleted: read them again. */
void cti_outbound_reload(cti_outbound_t *ob);
/* cti_publish_fn-compatible: committed events were appended (ud: the sender). */
void cti_outbound_published_cb(const cti_logrow_t *events, int n, void *ud);

#endif
