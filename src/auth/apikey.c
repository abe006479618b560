/*
 * apikey.c — API keys: format, bcrypt hashing, verification behind a cache.
 * See auth.h for the design. The cache is direct-mapped (a slot per SHA-256
 * prefix; a collision just evicts), so it is bounded and O(1) by construction.
 */
#include "auth/auth.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <crypt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 8192
#define RATE_SLOTS 1024
#define BCRYPT_COST 10
#define TOUCH_EVERY_MS 60000
#define SECRET_BYTES 32

typedef struct {
    unsigned char digest[CTI_SHA256_LEN];
    bool used, valid;
    cti_principal_t who;
    int64_t until;      /* entry good until (ms) */
    int64_t touched_at; /* last last_used_at write */
} entry_t;

typedef struct {
    char addr[64];
    int64_t window_start;
    int failures;
} rate_t;

#define TICKET_SLOTS 4096

typedef struct {
    unsigned char digest[CTI_SHA256_LEN];
    cti_principal_t who;
    int64_t expires_at; /* 0: free slot */
} ticket_t;

struct cti_auth {
    pthread_mutex_t ticket_lock; /* protects tickets */
    ticket_t tickets[TICKET_SLOTS];
    unsigned char admin_digest[CTI_SHA256_LEN];
    pthread_mutex_t lock; /* protects cache */
    entry_t cache[CACHE_SLOTS];
    pthread_mutex_t rate_lock; /* protects rates */
    rate_t rates[RATE_SLOTS];
};

cti_auth_t *cti_auth_new(const char *admin_secret)
{
    cti_auth_t *a = cti_calloc(1, sizeof *a);
    cti_sha256(admin_secret, strlen(admin_secret), a->admin_digest);
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->rate_lock, NULL);
    pthread_mutex_init(&a->ticket_lock, NULL);
    return a;
}

void cti_auth_free(cti_auth_t *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->rate_lock);
    pthread_mutex_destroy(&a->ticket_lock);
    free(a);
}

/* ---- format ---------------------------------------------------------------------------- */

/* Splits "cti_<16 hex>_<43 base64url>"; returns false if it is not that shape. */
static bool parse_key(const char *key, char key_id[CTI_KEY_ID_LEN + 1], const char **secret)
{
    size_t secret_len = cti_b64url_len(SECRET_BYTES);
    if (strlen(key) != 4 + CTI_KEY_ID_LEN + 1 + secret_len || strncmp(key, "cti_", 4) != 0 ||
        key[4 + CTI_KEY_ID_LEN] != '_')
        return false;
    for (int i = 0; i < CTI_KEY_ID_LEN; i++) {
        char c = key[4 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    memcpy(key_id, key + 4, CTI_KEY_ID_LEN);
    key_id[CTI_KEY_ID_LEN] = '\0';
    *secret = key + 4 + CTI_KEY_ID_LEN + 1;
    return true;
}

static void bcrypt_hash(const char *secret, char *out, size_t cap)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$2b$", BCRYPT_COST, NULL, 0, salt, sizeof salt))
        cti_fatal("crypt_gensalt_rn($2b$) failed");
    struct crypt_data *cd = cti_calloc(1, sizeof *cd); /* 32 KB: not on a pool thread's stack */
    const char *h = crypt_rn(secret, salt, cd, sizeof *cd);
    if (!h || h[0] == '*')
        cti_fatal("bcrypt hashing failed");
    snprintf(out, cap, "%s", h);
    free(cd);
}

static bool bcrypt_check(const char *secret, const char *hash)
{
    struct crypt_data *cd = cti_calloc(1, sizeof *cd);
    const char *h = crypt_rn(secret, hash, cd, sizeof *cd);
    bool ok = h && h[0] != '*' && cti_consttime_eq(h, strlen(h), hash, strlen(hash));
    free(cd);
    return ok;
}

void cti_apikey_generate(const char *app_id, int64_t now, cti_key_t *row,
                         char text[CTI_APIKEY_MAX])
{
    unsigned char id[CTI_KEY_ID_LEN / 2], secret[SECRET_BYTES];
    char secret_txt[48];
    cti_random_bytes(id, sizeof id);
    cti_random_bytes(secret, sizeof secret);
    memset(row, 0, sizeof *row);
    cti_hex(id, sizeof id, row->key_id);
    cti_b64url_encode(secret, sizeof secret, secret_txt);
    snprintf(row->app_id, sizeof row->app_id, "%s", app_id);
    bcrypt_hash(secret_txt, row->hash, sizeof row->hash);
    snprintf(row->hint, sizeof row->hint, "%s", secret_txt + strlen(secret_txt) - 4);
    row->created_at = now;
    snprintf(text, CTI_APIKEY_MAX, "cti_%s_%s", row->key_id, secret_txt);
}

/* ---- cache ------------------------------------------------------------------------------ */

static entry_t *slot(cti_auth_t *a, const unsigned char *digest)
{
    uint32_t i = (uint32_t)digest[0] | (uint32_t)digest[1] << 8 | (uint32_t)digest[2] << 16;
    return &a->cache[i % CACHE_SLOTS];
}

/* Returns 1 (valid), 0 (known invalid), -1 (not cached). Sets *touch when the
 * caller should write last_used_at. */
static int cache_get(cti_auth_t *a, const unsigned char *digest, int64_t now,
                     cti_principal_t *who, bool *touch)
{
    int r = -1;
    pthread_mutex_lock(&a->lock);
    entry_t *e = slot(a, digest);
    if (e->used && now < e->until && memcmp(e->digest, digest, CTI_SHA256_LEN) == 0) {
        r = e->valid;
        if (e->valid) {
            *who = e->who;
            if (now - e->touched_at >= TOUCH_EVERY_MS) {
                e->touched_at = now;
                *touch = true;
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

static void cache_put(cti_auth_t *a, const unsigned char *digest, bool valid,
                      const cti_principal_t *who, int64_t until, int64_t touched_at)
{
    pthread_mutex_lock(&a->lock);
    entry_t *e = slot(a, digest);
    memcpy(e->digest, digest, CTI_SHA256_LEN);
    e->used = true;
    e->valid = valid;
    e->who = *who;
    e->until = until;
    e->touched_at = touched_at;
    pthread_mutex_unlock(&a->lock);
}

void cti_auth_forget_app(cti_auth_t *a, const char *app_id)
{
    /* Refusals too: a key refused while its app was inactive works once it is back. */
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (a->cache[i].used && !strcmp(a->cache[i].who.app_id, app_id))
            a->cache[i].used = false;
    pthread_mutex_unlock(&a->lock);
}

/* ---- verify ------------------------------------------------------------------------------ */

static bool usable(const cti_key_t *k, int64_t now)
{
    return k->app_active && !k->revoked_at && (!k->expires_at || now < k->expires_at);
}

int cti_apikey_verify(cti_auth_t *a, cti_db_t *db, const char *key, cti_principal_t *who)
{
    unsigned char digest[CTI_SHA256_LEN];
    int64_t now = cti_now_ms();
    bool touch = false;
    cti_sha256(key, strlen(key), digest);
    int cached = cache_get(a, digest, now, who, &touch);
    if (cached == 1) {
        if (touch)
            cti_keys_touch(db, who->key_id, now); /* best effort */
        return 0;
    }
    if (cached == 0)
        return CTI_EAUTH;
    cti_principal_t none;
    memset(&none, 0, sizeof none);

    char key_id[CTI_KEY_ID_LEN + 1];
    const char *secret;
    if (!parse_key(key, key_id, &secret)) {
        cache_put(a, digest, false, &none, now + CTI_KEY_NEG_TTL_MS, 0);
        return CTI_EAUTH;
    }
    cti_key_t k;
    int rc = cti_keys_get(db, key_id, &k);
    if (rc == CTI_EUNAVAILABLE || rc == CTI_EDB)
        return CTI_EUNAVAILABLE;
    if (rc != 0 || !usable(&k, now) || !bcrypt_check(secret, k.hash)) {
        if (rc == 0) /* remembered under its app, so forget_app clears it */
            snprintf(none.app_id, sizeof none.app_id, "%s", k.app_id);
        cache_put(a, digest, false, &none, now + CTI_KEY_NEG_TTL_MS, 0);
        return CTI_EAUTH;
    }
    memset(who, 0, sizeof *who);
    snprintf(who->app_id, sizeof who->app_id, "%s", k.app_id);
    snprintf(who->key_id, sizeof who->key_id, "%s", k.key_id);
    int64_t until = now + CTI_KEY_CACHE_TTL_MS;
    if (k.expires_at && k.expires_at < until)
        until = k.expires_at;
    bool stale = now - k.last_used_at >= TOUCH_EVERY_MS;
    cache_put(a, digest, true, who, until, stale ? now : k.last_used_at);
    if (stale)
        cti_keys_touch(db, k.key_id, now);
    return 0;
}

/* ---- admin token ---------------------------------------------------------------------------- */

int cti_admin_check(const cti_auth_t *a, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return CTI_ENOTFOUND;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    if (!*token)
        return CTI_ENOTFOUND;
    unsigned char d[CTI_SHA256_LEN];
    cti_sha256(token, strlen(token), d); /* equal-length digests: no length leak */
    return cti_consttime_eq(d, sizeof d, a->admin_digest, sizeof d) ? 0 : CTI_EAUTH;
}

/* ---- failure limiting ------------------------------------------------------------------------ */

static rate_t *rate_slot(cti_auth_t *a, const char *addr)
{
    uint32_t h = 2166136261u;
    for (const char *p = addr; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &a->rates[h % RATE_SLOTS];
}

bool cti_auth_blocked(cti_auth_t *a, const char *addr)
{
    int64_t now = cti_now_ms();
    pthread_mutex_lock(&a->rate_lock);
    rate_t *r = rate_slot(a, addr);
    bool blocked = !strcmp(r->addr, addr) && now - r->window_start < 60000 &&
                   r->failures >= CTI_AUTH_MAX_FAILURES;
    pthread_mutex_unlock(&a->rate_lock);
    return blocked;
}

bool cti_auth_failed(cti_auth_t *a, const char *addr)
{
    int64_t now = cti_now_ms();
    pthread_mutex_lock(&a->rate_lock);
    rate_t *r = rate_slot(a, addr);
    if (strcmp(r->addr, addr) != 0 || now - r->window_start >= 60000) {
        snprintf(r->addr, sizeof r->addr, "%s", addr);
        r->window_start = now;
        r->failures = 0;
    }
    bool crossed = ++r->failures == CTI_AUTH_MAX_FAILURES;
    pthread_mutex_unlock(&a->rate_lock);
    return crossed;
}

/* ---- WebSocket tickets ---------------------------------------------------------------------- */

static ticket_t *ticket_slot(cti_auth_t *a, const unsigned char *digest)
{
    uint32_t i = (uint32_t)digest[0] | (uint32_t)digest[1] << 8 | (uint32_t)digest[2] << 16;
    return &a->tickets[i % TICKET_SLOTS];
}

void cti_ticket_issue(cti_auth_t *a, const cti_principal_t *who, char ticket[CTI_TICKET_LEN + 1],
                      int64_t *expires_at)
{
    unsigned char raw[32], d[CTI_SHA256_LEN];
    cti_random_bytes(raw, sizeof raw);
    cti_b64url_encode(raw, sizeof raw, ticket);
    cti_sha256(ticket, strlen(ticket), d);
    *expires_at = cti_now_ms() + CTI_TICKET_TTL_MS;
    pthread_mutex_lock(&a->ticket_lock);
    ticket_t *t = ticket_slot(a, d); /* a collision replaces an older ticket */
    memcpy(t->digest, d, sizeof d);
    t->who = *who;
    t->expires_at = *expires_at;
    pthread_mutex_unlock(&a->ticket_lock);
}

int cti_ticket_redeem(cti_auth_t *a, const char *ticket, cti_principal_t *who)
{
    unsigned char d[CTI_SHA256_LEN];
    cti_sha256(ticket, strlen(ticket), d);
    int rc = CTI_EAUTH;
    pthread_mutex_lock(&a->ticket_lock);
    ticket_t *t = ticket_slot(a, d);
    if (t->expires_at > cti_now_ms() && cti_consttime_eq(t->digest, sizeof d, d, sizeof d)) {
        *who = t->who;
        rc = 0;
    }
    if (rc == 0 || t->expires_at <= cti_now_ms())
        t->expires_at = 0; /* used up, or stale */
    pthread_mutex_unlock(&a->ticket_lock);
    return rc;
}
