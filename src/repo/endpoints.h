/*
 * endpoints.h — customers' outbound webhook endpoints (webhook_endpoints).
 *
 * Secrets are sealed at rest (core/seal.h, bound to the endpoint's id) and
 * opened only by the calls given keys. Callable from any thread with that
 * thread's db. Errors: CTI_ENOTFOUND (no such endpoint of that app), or the
 * store's.
 */
#ifndef CTI_REPO_ENDPOINTS_H
#define CTI_REPO_ENDPOINTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/seal.h"
#include "store/store.h"

typedef struct {
    char id[37];
    char app_id[37];
    char *url;
    char *description;     /* NULL: none */
    char *types;           /* space-separated patterns (outbound/types.h); NULL: all */
    bool enabled;
    char *disabled_reason; /* why the server disabled it, or NULL */
    int64_t failing_since; /* first failed attempt since the last success; 0: none */
    int64_t created_at, updated_at;
    /* clear secrets, filled only by the calls given keys */
    char *secret;
    char *old_secret; /* the previous secret during its grace, else NULL */
    int64_t old_secret_expires_at;
} cti_endpoint_t;

/* Frees the members (wiping the secrets) and zeroes e. */
void cti_endpoint_clear(cti_endpoint_t *e);

/* Inserts e (id, app_id, url, description, types, enabled, created_at =
 * updated_at, secret in clear: sealed here). */
int cti_endpoint_insert(cti_db_t *db, const cti_seal_keys_t *keys, const cti_endpoint_t *e);
/* One endpoint of app_id; with keys, its secrets opened too. */
int cti_endpoint_get(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                     const char *id, cti_endpoint_t *out);
typedef int (*cti_endpoint_fn)(const cti_endpoint_t *e, void *ud);
/* The app's endpoints, oldest first, without secrets. */
int cti_endpoint_list(cti_db_t *db, const char *app_id, cti_endpoint_fn fn, void *ud);
/* Writes url, description, types, enabled and updated_at of e (found by
 * app_id and id). Enabling clears disabled_reason and failing_since. */
int cti_endpoint_update(cti_db_t *db, const cti_endpoint_t *e);
/* Takes the endpoint's row lock for the caller's transaction (PostgreSQL; on
 * SQLite the transaction already holds the database), so a read-modify-write
 * (PATCH) sees the latest row and no concurrent change is lost. 0 also when
 * there is no such endpoint (the read that follows says so). */
int cti_endpoint_lock(cti_db_t *db, const char *app_id, const char *id);
/* Deletes the endpoint and its deliveries (one transaction of its own). */
int cti_endpoint_delete(cti_db_t *db, const char *app_id, const char *id);
/* Makes secret the current secret; the previous one keeps signing until
 * grace_until (<= now: not at all). */
int cti_endpoint_rotate(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                        const char *id, const char *secret, int64_t grace_until, int64_t now);

/* The start-up pass (after cti_secrets_reseal): seals again, with the
 * current key, every endpoint secret (current or previous) sealed with an
 * old one, each row only if it still holds what was read (instances may run
 * it at once). Not inside a transaction. Logs what it did when it changed
 * anything or found a value that does not open. 0 and the counts (may be
 * NULL), or a store error. */
int cti_endpoint_reseal(cti_db_t *db, const cti_seal_keys_t *keys, int64_t *resealed,
                        int64_t *unreadable);

/* ---- the sender's (outbound/sender.c) ---- */

/* Every enabled endpoint of every active app, secrets opened (old_secret only
 * while its grace lasts at now). An endpoint whose secret cannot be opened is
 * logged and skipped. */
int cti_endpoint_all_enabled(cti_db_t *db, const cti_seal_keys_t *keys, int64_t now,
                             cti_endpoint_fn fn, void *ud);
/* An attempt succeeded: the endpoint is no longer failing. */
int cti_endpoint_note_success(cti_db_t *db, const char *id);
/* An attempt failed at now: failing_since is set if it was not; when the
 * endpoint has been failing for disable_after_ms it is disabled (enabled = 0,
 * disabled_reason, an audit entry) and *disabled is true. */
int cti_endpoint_note_failure(cti_db_t *db, const char *id, int64_t now, int64_t disable_after_ms,
                              bool *disabled);

#endif
