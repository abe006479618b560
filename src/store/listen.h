/*
 * listen.h — PostgreSQL LISTEN for cross-instance wake-ups. The payload is
 * a wake-up, never the data: listeners read the rows from the event log.
 * PostgreSQL only (SQLite is one process: it publishes directly).
 * Used by one thread (the stream listener).
 */
#ifndef CTI_STORE_LISTEN_H
#define CTI_STORE_LISTEN_H

#include <stdbool.h>

#include "store/store.h"

#define CTI_EVENTS_CHANNEL "cti_events"

typedef struct cti_listener cti_listener_t;
typedef void (*cti_notify_fn)(const char *payload, void *ud);

/* A dedicated connection listening on channel (connects lazily). */
cti_listener_t *cti_listener_open(cti_store_t *st, const char *channel);
/* Waits up to timeout_ms for notifications and calls fn for each. Returns
 * the count; or CTI_EUNAVAILABLE when disconnected (it retries on the next
 * call). *fresh is set true when this call (re)established LISTEN: the
 * caller must then catch up from the table, notifications having been lost. */
int cti_listener_wait(cti_listener_t *l, int timeout_ms, cti_notify_fn fn, void *ud, bool *fresh);
void cti_listener_close(cti_listener_t *l);

/* Sends a notification in db's current transaction (delivered at commit). */
int cti_notify(cti_db_t *db, const char *channel, const char *payload);

#endif
