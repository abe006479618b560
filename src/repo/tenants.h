/*
 * tenants.h — the rows that make tenants: apps, API keys, webhook secrets,
 * the audit log and user mappings. Every query on tenant data is bounded by
 * app_id first. Times are ms since the epoch; 0 stands for SQL NULL in the
 * optional time fields. Callable from any thread with that thread's db.
 */
#ifndef CTI_REPO_TENANTS_H
#define CTI_REPO_TENANTS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/seal.h"
#include "store/store.h"

#define CTI_NAME_MAX 200
#define CTI_KEY_ID_LEN 16 /* hex characters */
#define CTI_CRM_ID_MAX 255 /* characters in a CRM user id */

typedef struct {
    char id[37];
    char name[CTI_NAME_MAX * 4 + 1]; /* UTF-8: up to 200 characters */
    bool active;
    bool allow_unsigned;
    int64_t created_at, updated_at;
} cti_app_t;

typedef struct {
    char key_id[CTI_KEY_ID_LEN + 1];
    char app_id[37];
    char hash[128];
    char hint[8];
    int64_t created_at, last_used_at, expires_at, revoked_at; /* 0 = none */
    bool app_active; /* filled by cti_keys_get */
} cti_key_t;

typedef struct {
    char app_id[37];
    int64_t dialpad_user_id;
    char crm_user_id[CTI_CRM_ID_MAX * 4 + 1]; /* up to 255 UTF-8 characters */
    int64_t created_at, updated_at;
} cti_mapping_t;

typedef struct {
    int64_t id;
    char app_id[37]; /* "" when not about one app */
    int64_t at;
    char actor[64];
    char action[64];
    const char *detail; /* JSON text or NULL; valid during the callback only */
    char client_addr[64];
    char request_id[48];
} cti_audit_t;

typedef int (*cti_app_fn)(const cti_app_t *app, void *ud);
typedef int (*cti_key_fn)(const cti_key_t *key, void *ud);
typedef int (*cti_mapping_fn)(const cti_mapping_t *m, void *ud);
typedef int (*cti_audit_fn)(const cti_audit_t *a, void *ud);

/* ---- apps ---- */
int cti_apps_insert(cti_db_t *db, const cti_app_t *app);
/* CTI_ENOTFOUND when there is no such app (active or not). */
int cti_apps_get(cti_db_t *db, const char *id, cti_app_t *out);
/* Writes name, active, allow_unsigned, updated_at. */
int cti_apps_update(cti_db_t *db, const cti_app_t *app);
/* Apps ordered by (created_at, id), after the given position (after_id "" = start). */
int cti_apps_list(cti_db_t *db, int64_t after_created, const char *after_id, int limit,
                  cti_app_fn fn, void *ud);
/* The number of apps, and their ids when exactly one is active (for routing). */
int cti_apps_count_active(cti_db_t *db, int64_t *n, char only_id[37]);

/* ---- API keys ---- */
int cti_keys_insert(cti_db_t *db, const cti_key_t *key);
/* Looks a key up by its public id, with its app's active flag. */
int cti_keys_get(cti_db_t *db, const char *key_id, cti_key_t *out);
/* The keys among key_ids (with their app's active flag), in no order; ids
 * that are not keys are left out. */
int cti_keys_get_many(cti_db_t *db, const char *const *key_ids, int n, cti_key_fn fn, void *ud);
/* Keys of one app, newest first. */
int cti_keys_list(cti_db_t *db, const char *app_id, cti_key_fn fn, void *ud);
/* Every usable key of app other than except_key_id ends at expires_at (or
 * earlier, if it already ended earlier). */
int cti_keys_expire_others(cti_db_t *db, const char *app_id, const char *except_key_id,
                           int64_t expires_at);
/* Revokes one key (key_id) or all keys (key_id NULL) of app. *count says how
 * many were newly revoked. CTI_ENOTFOUND when key_id is not a key of app. */
int cti_keys_revoke(cti_db_t *db, const char *app_id, const char *key_id, int64_t now,
                    int64_t *count);
int cti_keys_touch(cti_db_t *db, const char *key_id, int64_t now);

/* ---- webhook secrets ---- */
/* Webhook secrets are stored sealed (core/seal.h), bound to their row by the
 * associated data "<app_id>:webhook_secret:<secret_id>": a value copied to
 * another app or secret id does not open. A stored value that does not open
 * (sealed with a key no longer in the set, tampered, malformed) is logged as
 * an error once per row and value, never with the secret, and is unusable.
 * A value stored in clear by an older version (it does not start "v1:") is
 * still read, with a warning once, until cti_secrets_reseal seals it. */

/* Seals secret with keys' current key and inserts the row. */
int cti_secrets_insert(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                       const char *secret_id, const char *secret, int64_t now);
/* Every secret of app still good after expires_at (the current one, and any
 * in a longer grace) ends at expires_at. */
int cti_secrets_expire_current(cti_db_t *db, const char *app_id, int64_t expires_at);
/* Opens the current secret into out (cap bytes; wipe it when done).
 * CTI_ENOTFOUND if none; CTI_EAUTH if it does not open with keys (logged). */
int cti_secrets_current(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, char *out,
                        size_t cap);

/* Secrets that verify webhooks now (current, or within their grace), of one
 * active app or (app_id NULL) of every active app; the current one first.
 * secret is NULL for a stored value that does not open (logged): the caller
 * knows the app has a secret it cannot use. secret is valid during the call
 * only (wiped after it). */
typedef int (*cti_secret_fn)(const char *app_id, const char *secret, void *ud);
int cti_secrets_valid(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, int64_t now,
                      cti_secret_fn fn, void *ud);

/* What cti_secrets_reseal did. */
typedef struct {
    int64_t sealed;     /* stored in clear (by an older version), now sealed */
    int64_t resealed;   /* sealed with an old key, now sealed with the current one */
    int64_t unreadable; /* do not open with keys: left as they are (logged) */
} cti_reseal_counts_t;

/* The start-up pass: seals every secret still in clear and seals again every
 * one sealed with an old key (cti_seal_needs_reseal), a page at a time, each
 * page one transaction. A row is rewritten only if it still holds the value
 * read (compare-and-set), so instances may run it at once, and at every
 * start. Logs what it did (one line when it changed anything). Not inside a
 * transaction. 0 and *counts (may be NULL), or a store error. */
int cti_secrets_reseal(cti_db_t *db, const cti_seal_keys_t *keys, cti_reseal_counts_t *counts);

/* ---- audit log ---- */
int cti_audit_add(cti_db_t *db, const char *app_id, const char *actor, const char *action,
                  const char *detail_json, const char *client_addr, const char *request_id,
                  int64_t now);
/* Entries about app, newest first, with id < before_id (0 = from the newest). */
int cti_audit_list(cti_db_t *db, const char *app_id, int64_t before_id, int limit,
                   cti_audit_fn fn, void *ud);

/* ---- user mappings ---- */
/* Creates or replaces; *created tells which. */
int cti_mappings_put(cti_db_t *db, const char *app_id, int64_t dialpad_user_id,
                     const char *crm_user_id, int64_t now, bool *created);
int cti_mappings_get(cti_db_t *db, const char *app_id, int64_t dialpad_user_id,
                     cti_mapping_t *out);
/* The Dialpad user mapped to a CRM user (the newest mapping when several
 * are). CTI_ENOTFOUND when none is. */
int cti_mappings_find_crm(cti_db_t *db, const char *app_id, const char *crm_user_id,
                          cti_mapping_t *out);
/* CTI_ENOTFOUND when there was nothing to delete. */
int cti_mappings_delete(cti_db_t *db, const char *app_id, int64_t dialpad_user_id);
/* Mappings of app ordered by dialpad_user_id, after after_id (0 = start). */
int cti_mappings_list(cti_db_t *db, const char *app_id, int64_t after_id, int limit,
                      cti_mapping_fn fn, void *ud);

#endif
