/*
 * auth.h — who is calling: tenant API keys, the admin token, and the brake
 * on guessing.
 *
 * API keys look like "cti_<key_id>_<secret>": key_id is 16 public hex
 * characters (the row to look up), secret is 32 random bytes in base64url.
 * Only a bcrypt hash ($2b$, cost 10) of the secret is stored. Verifying costs
 * one bcrypt (~45 ms), so:
 *   - bcrypt never runs on the caller's (HTTP) thread: it is queued for the
 *     verifier pool (verifier.h; CTI_AUTH_VERIFIERS threads), the request is
 *     suspended meanwhile, and at most CTI_AUTH_PENDING_MAX distinct keys
 *     wait at a time, only a few of them for one key id or from one address
 *     (more: 429), so guessing one key id cannot fill the queue; a key id
 *     with no wrong secret this minute and none queued is verified first.
 *     Requests presenting the same key wait on the same bcrypt.
 *   - A key bcrypt verified is remembered per key id (SHA-256 of the whole
 *     key, and the hash it matched): trusted without the database for
 *     CTI_KEY_CACHE_TTL_MS (never past the key's own expiry), then re-checked
 *     against its row (still usable, same hash) without bcrypt. A key id's
 *     entry is made only by its right key, so guessing cannot evict it.
 *   - A wrong key is remembered briefly (CTI_KEY_NEG_TTL_MS) by its SHA-256.
 * Changes to an app's keys or state drop its entries at once on this
 * instance (cti_auth_tenant_changed, subscribed to core/tenant.h); other
 * instances follow within the TTL. last_used_at is written at most once a
 * minute per key and instance.
 *
 * The brake (brake.h): failed attempts are counted per client address and
 * per key id, CTI_AUTH_MAX_FAILURES a minute each. It refuses (429) only
 * what would be wrong or would cost a bcrypt for a secret not yet verified:
 *   - a valid key already verified, and the admin token, are always accepted;
 *   - a braked key id gets no bcrypt at all; a braked address gets bcrypt
 *     only for key ids nobody tried a wrong secret for this minute (so a
 *     guesser behind a NAT does not lock out colleagues' new keys);
 *   - from a braked address every refusal is 429 instead of 401/403.
 *
 * Threads: any; the tables are guarded by mutexes held for O(1) work.
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
#define CTI_AUTH_MAX_FAILURES 20 /* a minute, per address and per key id */
#define CTI_AUTH_VERIFIERS 1     /* bcrypt threads: one core at most */
#define CTI_AUTH_PENDING_MAX 16  /* distinct keys queued for bcrypt at a time */
#define CTI_AUTH_PENDING_PER_KEY 2  /* of which for one key id */
#define CTI_AUTH_PENDING_PER_ADDR 4 /* of which from one address */
#define CTI_AUTH_PENDING 1       /* cti_apikey_verify: answered later */

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

/* One attempt to authenticate, for the brake and for answering later. */
typedef struct {
    const char *addr; /* the client's address */
    /* Only when bcrypt is needed: suspend(ctx) on the caller's thread before
     * the work is queued, then done(ctx, rc) on a verifier thread with 0
     * (valid: check again, it is remembered) or CTI_EAUTH. */
    void (*suspend)(void *ctx);
    void (*done)(void *ctx, int rc);
    void *ctx;
    int retry_after_s; /* out, with CTI_ELIMIT: seconds until it may pass */
    bool busy;         /* out, with CTI_ELIMIT: the bcrypt queue was full (not the brake) */
} cti_auth_attempt_t;

/* Checks a presented key:
 *   0                  valid, *who filled
 *   CTI_AUTH_PENDING   bcrypt queued: at->done will tell (the request was suspended)
 *   CTI_EAUTH          wrong, unknown, revoked, expired or deactivated (the
 *                      caller cannot tell which): 401
 *   CTI_ELIMIT         refused by the brake or a full verifier queue: 429
 *   CTI_EUNAVAILABLE   the database cannot be asked, or shutting down: 503 */
int cti_apikey_verify(cti_auth_t *auth, cti_db_t *db, const char *key, cti_auth_attempt_t *at,
                      cti_principal_t *who);
/* Drops app_id's cached results: after its keys or its state changed. */
void cti_auth_forget_app(cti_auth_t *auth, const char *app_id);
/* The same as a core/tenant.h subscriber (ud: the cti_auth_t). */
void cti_auth_tenant_changed(void *auth, const char *app_id, unsigned what);
/* Finishes the bcrypt work queued and stops the verifier threads (before the
 * HTTP server stops: the requests waiting are answered). Later keys that need
 * bcrypt get CTI_EUNAVAILABLE. NULL is fine. */
void cti_auth_drain(cti_auth_t *auth);

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
/* The same, with the brake: a right token is always 0; a missing or wrong one
 * counts against at->addr and is CTI_ENOTFOUND / CTI_EAUTH, or CTI_ELIMIT
 * while the address is braked. */
int cti_admin_verify(cti_auth_t *auth, const char *authorization, cti_auth_attempt_t *at);

#endif
