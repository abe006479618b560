/*
 * listener.h — brings events committed by any instance (PostgreSQL) to this
 * instance's hub. Each transaction that appends events sends one NOTIFY
 * with the new seq ranges per app; the listener thread reads those rows
 * from the event log and publishes them, in commit order. After losing its
 * connection it reconnects and catches up from the last seq it published
 * for every app it has seen. On PostgreSQL this is the only path from
 * commits to sockets, so the hub sees each app's events in seq order.
 */
#ifndef CTI_STREAM_LISTENER_H
#define CTI_STREAM_LISTENER_H

#include "store/store.h"
#include "stream/hub.h"

typedef struct cti_relay cti_relay_t;

cti_relay_t *cti_relay_start(cti_store_t *store, cti_hub_t *hub);
void cti_relay_stop(cti_relay_t *r);

#endif
