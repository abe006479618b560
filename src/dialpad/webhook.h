/*
 * webhook.h — is this Dialpad webhook genuine, and which app is it for?
 *
 * A body POSTed to /webhooks/dialpad/{app_id} is verified with that app's
 * secrets; one POSTed to /webhooks/dialpad with DIALPAD_WEBHOOK_SECRET
 * (routed to DIALPAD_DEFAULT_APP_ID or the only active app), else with any
 * active app's own secret (routed to that app). The body is a JWT (HS256,
 * jwt.h) or, for apps that allow it, plain JSON; the format comes from the
 * bytes. An app's secrets are every one still valid: the current one and all
 * those within a rotation's grace, however many.
 *
 * What verifying an app's webhooks needs (the app's state and valid secrets)
 * is cached for CTI_WEBHOOK_CACHE_TTL_MS so a webhook costs no query. A change
 * on this instance drops the entry at once (cti_webhook_tenant_changed,
 * subscribed to core/tenant.h); a signature that fails against a cached entry
 * reloads it once, so a rotation made on another instance is seen at once
 * too, and a deactivation there within the TTL.
 *
 * The secrets are stored sealed (TOKEN_ENCRYPTION_KEY); one that does not
 * open (a wrong key: logged by repo/tenants.c) cannot verify anything. A
 * webhook no readable secret verifies is then answered 503, not 401, when
 * the app it could be for has such a secret: the fault is the server's
 * configuration, Dialpad retries a 5xx (a 401 would lose the event for
 * good), and the retries succeed once the key is set right.
 *
 * Knows no HTTP: the verdict says which status to answer. Any thread.
 */
#ifndef CTI_DIALPAD_WEBHOOK_H
#define CTI_DIALPAD_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/jscan.h"
#include "core/seal.h"
#include "store/store.h"

#define CTI_WEBHOOK_CACHE_TTL_MS 1000

typedef struct {
    const char *global_secret;   /* DIALPAD_WEBHOOK_SECRET, or NULL */
    const char *default_app_id;  /* DIALPAD_DEFAULT_APP_ID, or NULL */
    const cti_seal_keys_t *keys; /* open the apps' secrets, stored sealed (repo/tenants.h) */
} cti_webhook_config_t;

/* The verdict on one webhook. */
typedef struct {
    int status;        /* 200: genuine, for app_id; else the status to answer (400, 401, 404,
                          503 when a secret that might verify it cannot be decrypted) */
    const char *code;  /* status != 200: the error code ("unauthorized", ...) */
    char message[256]; /* status != 200: why; after a store error: what was being done */
    char app_id[37];   /* the app it is for ("" when not known) */
    char *payload;     /* status 200: the event's exact JSON text (owned) */
    size_t len;
    cti_jdoc_t doc; /* status 200: the payload parsed (tokens owned; doc.text is payload) */
} cti_webhook_t;

/* Verifies and routes body, POSTed for app_id (NULL: to /webhooks/dialpad).
 * 0 with out->status set, or a store error (CTI_EUNAVAILABLE, CTI_EDB, ...)
 * with out->message saying what was being done. With status 200 the caller
 * owns out->payload and out->doc (hand them on, or cti_webhook_free). */
int cti_webhook_verify(cti_db_t *db, const cti_webhook_config_t *cfg, const char *body, size_t len,
                       const char *app_id, cti_webhook_t *out);
/* Frees what a verdict owns. */
void cti_webhook_free(cti_webhook_t *w);

/* How many times an app's state was read from the database into the cache
 * since start (for tests: a webhook of a cached app costs no read). */
long cti_webhook_cache_loads(void);

/* A core/tenant.h subscriber: drops app_id's cached state after a change of
 * the app or its webhook secret (ud unused). */
void cti_webhook_tenant_changed(void *ud, const char *app_id, unsigned what);

#endif
