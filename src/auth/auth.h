/*
 * auth.h — who is calling: tenant API keys, the admin token, and the brake
 * on guessing.
 *
 * API keys look like "cti_<key_id>_<secret>": key_id is 16 public hex
 * characters (the row to look up), secret is 32 random bytes in base64url.
 * Only a bcrypt hash ($2b$, cost 10) of the secret is stored. Verifying costs
 * one bcrypt (~45 ms), so results are cached in memory, keyed by SHA-256 of
 * the whole key: a positive result for at most CTI_KEY_CACHE_TTL_MS (and never
 * past the key's own expiry), a negative one briefly. Rotation with no grace,
 * revocation and deactivation call cti_auth_forget_app(), which drops that
 * app's entries at once on this instance; other instances follow within the
 * TTL. last_used_at is written at most once a minute per key and instance.
 *
 * Failed attempts (wrong keys, wrong admin tokens) are counted per client
 * address; past CTI_AUTH_MAX_FAILURES in a minute the address is refused (429)
 * until the minute ends, so guessing costs the caller, not the server.
 *
 * Threads: any; the caches are guarded by mutexes held for O(1) work.
 */
#ifndef CTI_AUTH_AUTH_H
#define CTI_AUTH_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "repo/tenants.h"

#define CTI_APIKEY_MAX 96
#define CTI_KEY_CACHE_TTL_MS 5000
#define CTI_KEY_NEG_TTL_MS 30000
#define CTI_AUTH_MAX_FAILURES 20

typedef struct cti_auth cti_auth_t;

typedef struct {
    char app_id[37];
    char key_id[CTI_KEY_ID_LEN + 1];
} cti_principal_t;

/* admin_secret is copied. Never returns NULL. */
cti_auth_t *cti_auth_new(const char *admin_secret);
void cti_auth_free(cti_auth_t *auth);

/* Makes a new key for app_id: fills row (to insert; hash computed here, ~45 ms)
 * and writes the full key, to show once, into text. */
void cti_apikey_generate(const char *app_id, int64_t now, cti_key_t *row,
                         char text[CTI_APIKEY_MAX]);
/* Checks a presented key. 0 and *who filled; CTI_EAUTH for any wrong, unknown,
 * revoked, expired or deactivated key (the caller cannot tell which);
 * CTI_EUNAVAILABLE when the database cannot be asked. */
int cti_apikey_verify(cti_auth_t *auth, cti_db_t *db, const char *key, cti_principal_t *who);
/* Drops every cached result for app_id (after its keys or its state changed). */
void cti_auth_forget_app(cti_auth_t *auth, const char *app_id);

/* WebSocket tickets for browsers (which cannot set headers on a WebSocket):
 * issued to an authenticated key, good for one connection within 60 s.
 * Kept in this instance's memory. */
#define CTI_TICKET_TTL_MS 60000
#define CTI_TICKET_LEN 43
void cti_ticket_issue(cti_auth_t *auth, const cti_principal_t *who,
                      char ticket[CTI_TICKET_LEN + 1], int64_t *expires_at);
/* 0 and *who when ticket is valid (it is then used up); CTI_EAUTH otherwise. */
int cti_ticket_redeem(cti_auth_t *auth, const char *ticket, cti_principal_t *who);

/* Checks "Bearer <token>" against the admin secret in constant time.
 * 0 if it matches; CTI_ENOTFOUND when no bearer token was given; CTI_EAUTH if wrong. */
int cti_admin_check(const cti_auth_t *auth, const char *authorization);

/* True while addr has had too many failed attempts this minute. */
bool cti_auth_blocked(cti_auth_t *auth, const char *addr);
/* Counts a failed attempt from addr. Returns true if this one crossed the limit. */
bool cti_auth_failed(cti_auth_t *auth, const char *addr);

#endif
