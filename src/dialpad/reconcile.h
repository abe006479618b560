/*
 * reconcile.h — nothing lost while the server was away: asks Dialpad for the
 * calls of a window (GET /api/v2/call, scope calls:list, company admin) and
 * applies, for each concluded call we do not know or know only unfinished,
 * the final event its lost webhooks would have brought.
 *
 * The synthesized event is a Dialpad call event made from the REST call
 * (the same fields; ids and times as Dialpad's strings), with state
 *   voicemail  when the call has a voicemail link,
 *   hangup     when it was answered (date_connected) or is outbound,
 *   missed     otherwise,
 * and event_timestamp = its date_ended. It goes through the ingest worker and
 * the call model like a webhook, stored with kind "call_reconciled" and the
 * dedupe key "rc:<call_id>": one per call ever, so a second reconciliation
 * adds nothing. Its timeline row says source "reconciled" and its stream
 * event (call.ended, call.missed or call.voicemail) carries data.reconciled:
 * true. The leg is marked reconciled: Dialpad's own progress events arriving
 * after it are late (model/call.c), so a late real webhook never moves the
 * call back nor ends it twice.
 *
 * When: at start-up and every RECONCILE_INTERVAL for every connected app
 * (over the last RECONCILE_WINDOW), after an app connects, and on the admin
 * endpoint. One instance reconciles an app at a time (lease
 * "reconcile:<app_id>"). Each run's end (or error) is recorded with the
 * connection and shown in its status.
 *
 * Threads: cti_reconcile_app blocks (a job thread or the reconciler's own,
 * `cti-reconcile`); the reconciler is started and stopped from main.
 */
#ifndef CTI_DIALPAD_RECONCILE_H
#define CTI_DIALPAD_RECONCILE_H

#include <stddef.h>
#include <stdint.h>

#include "dialpad/connection.h"

struct cti_ingest;

typedef struct {
    int64_t calls_seen;    /* concluded calls Dialpad listed */
    int64_t calls_added;   /* unknown here: made from the list */
    int64_t calls_updated; /* known unfinished: ended from the list */
} cti_reconcile_result_t;

/* Reconciles app_id over calls started in (since_ms, until_ms). Returns 0 and
 * *out; CTI_ENOTFOUND (not connected), CTI_ELIMIT (another run of this app
 * is under way), CTI_EAUTH (Dialpad refused: no calls:list scope, not a
 * company admin; why says so), CTI_EUNAVAILABLE (Dialpad or the database
 * failed; why says so). Blocks. */
int cti_reconcile_app(cti_dpconn_t *conn, cti_store_t *store, struct cti_ingest *ing,
                      const char *app_id, int64_t since_ms, int64_t until_ms, const char *rid,
                      cti_reconcile_result_t *out, char *why, size_t whycap);

typedef struct cti_reconciler cti_reconciler_t;

/* Starts `cti-reconcile`: every connected app at once (start-up), then every
 * interval_s (0: never again), over the last window_s. Never returns NULL. */
cti_reconciler_t *cti_reconciler_start(cti_dpconn_t *conn, cti_store_t *store,
                                       struct cti_ingest *ing, int interval_s, int window_s);
/* Asks for a run of app_id soon (after it connected). Any thread. */
void cti_reconciler_request(cti_reconciler_t *r, const char *app_id);
/* Stops the thread (a run under way finishes first). NULL is ignored. */
void cti_reconciler_stop(cti_reconciler_t *r);

#endif
