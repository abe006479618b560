/*
 * dialpad.h (repo) — the rows of Dialpad connections: one connection per app
 * (its tokens sealed, what it registered at Dialpad), the connect flows in
 * progress (one-use links and OAuth states, stored as hashes) and leases
 * (one instance at a time does a thing, e.g. refresh an app's token).
 *
 * Tokens reach this layer sealed (core/seal.h) and leave it sealed: nothing
 * here sees a token in clear. Links, states and cookies are stored as their
 * SHA-256 (hex): a copy of the database does not let anyone finish a flow.
 *
 * Callable from any thread with that thread's db. Times are ms since the
 * epoch; 0 stands for SQL NULL in the optional ones.
 */
#ifndef CTI_REPO_DIALPAD_H
#define CTI_REPO_DIALPAD_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

#define CTI_DPCONN_SCOPES_MAX 512
#define CTI_DPCONN_REASON_MAX 300

typedef struct {
    char app_id[37];
    char status[16];      /* "connected" or "broken" */
    char environment[16]; /* "sandbox" or "production" */
    int64_t dialpad_user_id, company_id, office_id; /* 0: unknown */
    char scopes[CTI_DPCONN_SCOPES_MAX];
    char *access_token;  /* sealed; owned (cti_dpconn_row_free) */
    char *refresh_token; /* sealed, or NULL when Dialpad gave none; owned */
    int64_t access_expires_at; /* 0: Dialpad said no lifetime */
    int64_t token_lifetime_ms; /* the last expires_in, ms; 0 unknown */
    int64_t connected_at, refreshed_at;
    int64_t webhook_id;
    char *subscriptions; /* JSON text: [{"type": "call", "id": "123"}, ...]; owned */
    char reason[CTI_DPCONN_REASON_MAX]; /* why broken; "" otherwise */
    int64_t updated_at;
    int64_t reconciled_at;                       /* the last reconciliation's end; 0 never */
    char reconcile_error[CTI_DPCONN_REASON_MAX]; /* why it failed; "" when it did not */
} cti_dpconn_row_t;

/* Frees what a row owns (the row itself is the caller's) and zeroes it. */
void cti_dpconn_row_free(cti_dpconn_row_t *r);

/* Reads app_id's connection into out (free with cti_dpconn_row_free).
 * CTI_ENOTFOUND when the app has none. */
int cti_dpconn_get(cti_db_t *db, const char *app_id, cti_dpconn_row_t *out);
/* Inserts or replaces app_id's connection, every column as r has it. */
int cti_dpconn_put(cti_db_t *db, const cti_dpconn_row_t *r);
/* Forgets app_id's connection. CTI_ENOTFOUND when there was none. */
int cti_dpconn_delete(cti_db_t *db, const char *app_id);
/* Stores new tokens (sealed) after a refresh. refresh_token NULL keeps the
 * stored one (Dialpad gave no new one). Only when the stored access token is
 * still old_access (compare-and-set: CTI_ENOTFOUND otherwise). */
int cti_dpconn_set_tokens(cti_db_t *db, const char *app_id, const char *old_access,
                          const char *access, const char *refresh, int64_t expires_at,
                          int64_t lifetime_ms, int64_t now);
/* Marks a connected connection broken with reason. CTI_ENOTFOUND when there
 * is none, or it is broken already. */
int cti_dpconn_set_broken(cti_db_t *db, const char *app_id, const char *reason, int64_t now);

/* Records the end of a reconciliation of app_id (error NULL: it succeeded). */
int cti_dpconn_set_reconciled(cti_db_t *db, const char *app_id, int64_t at, const char *error);

/* Every connection with status "connected", for the refresher. fn's row is
 * valid during the call only. */
typedef int (*cti_dpconn_fn)(const cti_dpconn_row_t *r, void *ud);
int cti_dpconn_list_connected(cti_db_t *db, cti_dpconn_fn fn, void *ud);
/* Calls fn for every row (any status). */
int cti_dpconn_list_all(cti_db_t *db, cti_dpconn_fn fn, void *ud);
/* Replaces the sealed tokens of one row (key rotation) if they are still
 * old_access / old_refresh (compare-and-set). */
int cti_dpconn_reseal(cti_db_t *db, const char *app_id, const char *old_access,
                      const char *old_refresh, const char *access, const char *refresh);

/* ---- connect flows: a one-use link, then an OAuth state ---- */

/* A new link for app_id (link_hash: hex SHA-256 of the link's token), usable
 * until expires_at. Drops flows that ended more than a day ago. */
int cti_dpflow_create(cti_db_t *db, const char *link_hash, const char *app_id,
                      const char *created_by, int64_t now, int64_t expires_at);
/* Uses the link (once, before it expires, for that app) and binds the flow to
 * a state, a browser cookie (both as hashes) and the PKCE verifier (sealed),
 * valid until state_expires_at. CTI_ENOTFOUND when the link is unknown, used,
 * expired or another app's. */
int cti_dpflow_use_link(cti_db_t *db, const char *link_hash, const char *app_id, int64_t now,
                        const char *state_hash, const char *cookie_hash,
                        const char *verifier_sealed, int64_t state_expires_at);
/* Uses the state (once, before it expires, with its cookie): copies the app,
 * who made the link and the sealed verifier out. CTI_ENOTFOUND when the state is unknown, used,
 * expired, or the cookie does not match (the state is then left unused). */
int cti_dpflow_use_state(cti_db_t *db, const char *state_hash, const char *cookie_hash,
                         int64_t now, char app_id[37], char created_by[64],
                         char *verifier_sealed, size_t cap);

/* ---- leases: one holder at a time, across instances ---- */

/* Takes the lease name for owner until now + ttl_ms when it is free, expired
 * or already owner's. 0 when taken, CTI_ELIMIT when someone else holds it. */
int cti_lease_take(cti_db_t *db, const char *name, const char *owner, int64_t now,
                   int64_t ttl_ms);
/* Gives the lease back (only if owner holds it). */
int cti_lease_release(cti_db_t *db, const char *name, const char *owner);
/* Drops every lease whose name starts with prefix, whoever holds it: for a
 * store only one instance uses (SQLite), where a holder is a process that died. */
int cti_lease_release_prefix(cti_db_t *db, const char *prefix);

#endif
