/*
 * wakeup.h — wake-ups between processes sharing a database: a transaction
 * sends one (cti_notify, delivered at its commit) and a dedicated connection
 * waits for them (cti_wakeup_*). The payload is a wake-up, never the data:
 * whoever wakes reads the rows. Backends with CTI_CAP_NOTIFY only
 * (PostgreSQL's NOTIFY/LISTEN; SQLite is one process and needs none).
 * A cti_wakeup_t is used by one thread.
 */
#ifndef CTI_STORE_WAKEUP_H
#define CTI_STORE_WAKEUP_H

#include <stdbool.h>

#include "store/store.h"

typedef struct cti_wakeup cti_wakeup_t;
typedef void (*cti_notify_fn)(const char *payload, void *ud);

/* A dedicated connection listening on channel (connects lazily); st must have
 * CTI_CAP_NOTIFY. Free with cti_wakeup_close. */
cti_wakeup_t *cti_wakeup_open(cti_store_t *st, const char *channel);
/* Waits up to timeout_ms for notifications and calls fn for each. Returns
 * the count; or CTI_EUNAVAILABLE when disconnected (it retries on the next
 * call). *fresh is set true when this call (re)established LISTEN: the
 * caller must then catch up from the table, notifications having been lost. */
int cti_wakeup_wait(cti_wakeup_t *l, int timeout_ms, cti_notify_fn fn, void *ud, bool *fresh);
void cti_wakeup_close(cti_wakeup_t *l);

/* Sends a notification in db's current transaction (delivered at commit). */
int cti_notify(cti_db_t *db, const char *channel, const char *payload);

#endif
