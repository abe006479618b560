/*
 * tenant.h — "this tenant changed": one notification for every in-memory
 * cache of tenant state.
 *
 * Several modules keep tenant state in memory so a request costs no query:
 * API key results (auth/apikey.c), an app's webhook secrets and flags
 * (dialpad/webhook.c), CRM user mappings (the ingest worker). A handler that
 * commits a change calls cti_tenant_changed() once; every cache subscribed to
 * that kind of change forgets what it knew. Subscribers are registered on the
 * main thread at start-up, before any other thread runs (main.c), and never
 * removed: the list is read-only while serving, so it needs no lock.
 *
 * A change committed by another instance is not announced here: each cache
 * bounds its staleness with its own TTL.
 *
 * Threads: cti_tenant_subscribe on the main thread at start-up;
 * cti_tenant_changed from any thread (subscribers must be thread-safe).
 */
#ifndef CTI_CORE_TENANT_H
#define CTI_CORE_TENANT_H

/* What changed (bits). */
enum {
    CTI_TENANT_APP = 1,      /* created, renamed, (de)activated, allow_unsigned */
    CTI_TENANT_KEYS = 2,     /* an API key made, rotated or revoked */
    CTI_TENANT_SECRET = 4,   /* the webhook secret rotated */
    CTI_TENANT_MAPPINGS = 8, /* user mappings set or deleted */
};

#define CTI_TENANT_SUBSCRIBERS_MAX 8

/* fn(ud, app_id, what) is called for every change touching a bit of mask. */
typedef void (*cti_tenant_fn)(void *ud, const char *app_id, unsigned what);
void cti_tenant_subscribe(unsigned mask, cti_tenant_fn fn, void *ud);
/* After committing a change of app_id: tells the subscribers, on this thread. */
void cti_tenant_changed(const char *app_id, unsigned what);
/* Forgets every subscriber (tests; main thread, nothing serving). */
void cti_tenant_unsubscribe_all(void);

#endif
