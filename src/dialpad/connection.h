/*
 * connection.h — an app's Dialpad connection: finishing the OAuth flow
 * (token, users/me, webhook and subscriptions registered at Dialpad), its
 * token lifecycle (refresh before expiry, one refresh per app across
 * instances, 401 → refresh and retry once, broken when Dialpad refuses),
 * status, and disconnecting.
 *
 *                   complete()                      refresh refused /
 *   not_connected ──────────────▶ connected ───────────────────────────▶ broken
 *        ▲                          │  ▲  refresh (rotates tokens)         │
 *        │       disconnect()       │  └──┘                                │
 *        └──────────────────────────┴──────────────────────────────────────┘
 *                                   (complete() again replaces either)
 *
 * No partial connection: complete() undoes at Dialpad whatever it registered
 * (and revokes the new token) when any later step fails, and stores nothing.
 * A connection replaced by a new one loses its webhook and subscriptions at
 * Dialpad after the new one is stored. Every change of an app's connection
 * happens under the lease "dialpad:<app_id>" (repo/dialpad.h), so instances
 * take turns; every change is in the audit log and on the stream
 * (connection.connected, connection.disconnected, connection.broken).
 *
 * Tokens are sealed (core/seal.h) before they reach the store, bound to their
 * app and field; they are opened only to make a request, and never logged.
 *
 * Threads: complete/disconnect/call block on Dialpad (seconds): call them
 * from a job thread (core/jobs.h), never from an HTTP pool thread. The
 * refresher is a thread of its own, `cti-dpconn`. status_json is a database
 * read: any thread.
 */
#ifndef CTI_DIALPAD_CONNECTION_H
#define CTI_DIALPAD_CONNECTION_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "core/config.h"
#include "core/seal.h"
#include "dialpad/client.h"
#include "store/store.h"

struct cti_ingest;
typedef struct cti_dpconn cti_dpconn_t;

typedef struct {
    const cti_config_t *cfg;
    cti_store_t *store;
    const cti_seal_keys_t *keys;
    cti_dp_client_t *client;
    struct cti_ingest *ingest; /* connection.* events; NULL: none (tests) */
    int refresh_tick_ms;       /* how often the refresher looks (1000); 0: no refresher */
} cti_dpconn_options_t;

/* Who asked, for the audit log. */
typedef struct {
    const char *actor; /* "admin", "key:<key_id>", "system" */
    const char *client_addr;
    const char *request_id;
} cti_dpconn_who_t;

/* Starts the service (and its refresher thread). Never returns NULL. */
cti_dpconn_t *cti_dpconn_start(const cti_dpconn_options_t *o);
/* Stops the refresher and frees. Call after the jobs that use it stopped. */
void cti_dpconn_stop(cti_dpconn_t *s);

/* This instance's id, the owner of the leases it takes. */
const char *cti_dpconn_owner(const cti_dpconn_t *s);

/* True when an OAuth client is configured (else connecting is not_configured). */
bool cti_dpconn_configured(const cti_dpconn_t *s);
/* The redirect URI given to Dialpad: DIALPAD_*_REDIRECT_URI, else
 * PUBLIC_BASE_URL/auth/dialpad/callback. */
const char *cti_dpconn_redirect_uri(const cti_dpconn_t *s);

/* What complete() did, for the page the browser shows. */
typedef struct {
    int status;        /* 200 connected; 502 Dialpad failed; 503 store unavailable */
    char message[400]; /* a sentence for a person */
} cti_dpconn_outcome_t;

/* Finishes a connect flow for app_id with the authorization code and the
 * PKCE verifier: token exchange, users/me, the webhook and subscriptions,
 * stored; the old connection's registrations removed. Blocks. */
void cti_dpconn_complete(cti_dpconn_t *s, const char *app_id, const char *code,
                         const char *verifier, const cti_dpconn_who_t *who,
                         cti_dpconn_outcome_t *out);

/* Removes at Dialpad what the connection registered, revokes its token and
 * forgets it. Returns 0 and *status (the status object, not_connected, with
 * "left_at_dialpad": what Dialpad could not be made to delete), or a store
 * error. An app without a connection gives the same answer. Blocks. */
int cti_dpconn_disconnect(cti_dpconn_t *s, const char *app_id, const cti_dpconn_who_t *who,
                          json_t **status);

/* The status object of app_id's connection (never a token). Returns 0 and
 * *out (new reference), or a store error. Any thread. */
int cti_dpconn_status_json(cti_dpconn_t *s, cti_db_t *db, const char *app_id, json_t **out);

/* A request to Dialpad with app_id's access token: on a 401, the token is
 * refreshed once and the request made again once. Returns the response (the
 * caller frees it); NULL with *err = CTI_ENOTFOUND when the app is not
 * connected (or broken), or another CTI_E* code. Blocks. */
cti_dp_response_t *cti_dpconn_call(cti_dpconn_t *s, const char *app_id,
                                   const cti_dp_request_t *req, int *err);

/* One pass of the refresher (what its thread does every tick): refreshes
 * tokens close to expiry, marks broken the expired ones that cannot be.
 * Exposed for tests. Blocks. */
void cti_dpconn_refresh_due(cti_dpconn_t *s);

/* Re-seals, under the current key, tokens sealed with an old one. Returns
 * how many rows were rewritten, or a store error. Start-up. */
int cti_dpconn_reseal_all(cti_dpconn_t *s);

#endif
