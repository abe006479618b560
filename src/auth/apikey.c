/*
 * apikey.c — API keys: format, bcrypt hashing, verification behind caches,
 * the brake; the admin token; WebSocket tickets. See auth.h for the design.
 *
 * What it remembers:
 *   known     a key bcrypt verified, per key id (a chained hash table, at most
 *             KNOWN_MAX; made only by the right key, so guessing cannot evict it)
 *   refusals  a refused key by SHA-256 (direct-mapped: a collision just
 *             evicts, so it is bounded and O(1) by construction)
 *   jobs      the keys queued for bcrypt, with the requests waiting on each
 *   by_addr, by_key   the brake's counts (brake.h)
 * Pool threads call cti_apikey_verify; run_job runs on a verifier thread.
 */
#include "auth/auth.h"
#include "auth/brake.h"
#include "auth/verifier.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/tenant.h"
#include "core/util.h"

#include <assert.h>
#include <crypt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REFUSAL_SLOTS 8192
#define KNOWN_BUCKETS 4096 /* a power of two */
#define KNOWN_MAX 65536
#define BRAKE_WINDOW_MS 60000
#define BRAKE_ADDRS_MAX 65536
#define BRAKE_KEYS_MAX 65536
#define BCRYPT_COST 10
#define TOUCH_EVERY_MS 60000
#define SECRET_BYTES 32

typedef struct {
    unsigned char digest[CTI_SHA256_LEN];
    char app_id[37]; /* "" when the key id is unknown */
    int64_t until;   /* monotonic ms (cti_mono_ms); 0: free */
} refusal_t;

typedef struct known {
    cti_principal_t who;                  /* who.key_id: the table's key */
    unsigned char digest[CTI_SHA256_LEN]; /* of the whole key that verified */
    char hash[128];                       /* the bcrypt hash it verified against */
    int64_t until;                        /* trusted without the database until (cti_mono_ms) */
    int64_t expires_at;                   /* the key's own expiry (wall clock ms), 0: none */
    int64_t touched_at;                   /* last last_used_at write */
    struct known *next;
} known_t;

typedef struct waiter {
    void (*done)(void *ctx, int rc);
    void *ctx;
    char addr[CTI_BRAKE_NAME_MAX];
    struct waiter *next;
} waiter_t;

typedef struct job {
    cti_auth_t *auth;
    char addr[CTI_BRAKE_NAME_MAX]; /* of the request that queued it */
    unsigned char digest[CTI_SHA256_LEN];
    char secret[48];
    cti_key_t key;
    waiter_t *waiters;
    struct job *next;
} job_t;

#define TICKET_SLOTS 4096

typedef struct {
    unsigned char digest[CTI_SHA256_LEN];
    cti_principal_t who;
    int64_t expires_at;  /* 0: free slot */
    int64_t mono_end_us; /* and on the monotonic clock: a ticket issued while the wall clock
                          * was a year ahead must not live a year once it is put right */
} ticket_t;

struct cti_auth {
    pthread_mutex_t ticket_lock; /* protects tickets */
    ticket_t tickets[TICKET_SLOTS];
    unsigned char admin_digest[CTI_SHA256_LEN];
    pthread_mutex_t lock; /* protects refusals, known, nknown, evict_at */
    refusal_t refusals[REFUSAL_SLOTS];
    known_t *known[KNOWN_BUCKETS];
    size_t nknown, evict_at;
    pthread_mutex_t job_lock; /* protects jobs, njobs, draining */
    job_t *jobs;
    int njobs;
    bool draining;
    cti_verifier_t *verifier;
    cti_brake_t *by_addr, *by_key; /* internally locked */
};

cti_auth_t *cti_auth_new(const char *admin_secret)
{
    cti_auth_t *a = cti_calloc_table(sizeof *a); /* ~1 MiB of slots, mostly empty */
    cti_sha256(admin_secret, strlen(admin_secret), a->admin_digest);
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->job_lock, NULL);
    pthread_mutex_init(&a->ticket_lock, NULL);
    a->by_addr = cti_brake_new(CTI_AUTH_MAX_FAILURES, BRAKE_WINDOW_MS, BRAKE_ADDRS_MAX);
    a->by_key = cti_brake_new(CTI_AUTH_MAX_FAILURES, BRAKE_WINDOW_MS, BRAKE_KEYS_MAX);
    a->verifier = cti_verifier_start(CTI_AUTH_VERIFIERS);
    return a;
}

void cti_auth_drain(cti_auth_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->job_lock);
    a->draining = true;
    pthread_mutex_unlock(&a->job_lock);
    cti_verifier_stop(a->verifier); /* runs what is queued first */
    a->verifier = NULL;
}

void cti_auth_free(cti_auth_t *a)
{
    if (!a)
        return;
    cti_auth_drain(a);
    assert(!a->jobs);
    for (int i = 0; i < KNOWN_BUCKETS; i++)
        for (known_t *e = a->known[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    cti_brake_free(a->by_addr);
    cti_brake_free(a->by_key);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->job_lock);
    pthread_mutex_destroy(&a->ticket_lock);
    cti_free_table(a, sizeof *a);
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

/* ---- what is remembered ------------------------------------------------------------------ */

/* The caches' deadlines run on the monotonic clock (cti_mono_ms): a "5 s"
 * trust taken while the wall clock was a year ahead must not last a year once
 * it is put right (a key revoked by another instance would keep working here).
 * Expiries of keys are wall-clock times and stay so. */

static refusal_t *refusal_slot(cti_auth_t *a, const unsigned char *digest)
{
    uint32_t i = (uint32_t)digest[0] | (uint32_t)digest[1] << 8 | (uint32_t)digest[2] << 16;
    return &a->refusals[i % REFUSAL_SLOTS];
}

static bool refused_before(cti_auth_t *a, const unsigned char *digest, int64_t now)
{
    pthread_mutex_lock(&a->lock);
    refusal_t *r = refusal_slot(a, digest);
    bool hit = cti_mono_ms() < r->until && !memcmp(r->digest, digest, CTI_SHA256_LEN);
    pthread_mutex_unlock(&a->lock);
    return hit;
}

static void remember_refusal(cti_auth_t *a, const unsigned char *digest, const char *app_id,
                             int64_t now)
{
    pthread_mutex_lock(&a->lock);
    refusal_t *r = refusal_slot(a, digest);
    memcpy(r->digest, digest, CTI_SHA256_LEN);
    snprintf(r->app_id, sizeof r->app_id, "%s", app_id); /* so forget_app clears it */
    r->until = cti_mono_ms() + CTI_KEY_NEG_TTL_MS;
    pthread_mutex_unlock(&a->lock);
}

static known_t **known_bucket(cti_auth_t *a, const char *key_id)
{
    return &a->known[cti_hash_bytes(key_id, strlen(key_id)) & (KNOWN_BUCKETS - 1)];
}

/* key_id's entry (lock held), or NULL. */
static known_t *known_find(cti_auth_t *a, const char *key_id)
{
    for (known_t *e = *known_bucket(a, key_id); e; e = e->next)
        if (!strcmp(e->who.key_id, key_id))
            return e;
    return NULL;
}

/* Trusts e for k for CTI_KEY_CACHE_TTL_MS, and no longer than k's expiry. */
static void trust(known_t *e, const cti_key_t *k)
{
    e->until = cti_mono_ms() + CTI_KEY_CACHE_TTL_MS;
    e->expires_at = k->expires_at;
}

/* Makes room for one more entry (lock held): drops the head of the next
 * non-empty bucket. The key dropped is verified again (one bcrypt) when next
 * seen; with KNOWN_MAX keys of room that is for deployments beyond it. */
static void known_evict_one(cti_auth_t *a)
{
    for (size_t n = 0; n < KNOWN_BUCKETS; n++) {
        known_t **b = &a->known[a->evict_at++ % KNOWN_BUCKETS];
        if (*b) {
            known_t *e = *b;
            *b = e->next;
            free(e);
            a->nknown--;
            return;
        }
    }
}

/* Remembers that digest is the right key for k (on a verifier thread, after bcrypt). */
static void known_put(cti_auth_t *a, const cti_key_t *k, const unsigned char *digest, int64_t now)
{
    pthread_mutex_lock(&a->lock);
    known_t *e = known_find(a, k->key_id);
    if (!e) {
        if (a->nknown >= KNOWN_MAX)
            known_evict_one(a);
        known_t **b = known_bucket(a, k->key_id);
        e = cti_calloc(1, sizeof *e);
        e->next = *b;
        *b = e;
        a->nknown++;
    }
    snprintf(e->who.app_id, sizeof e->who.app_id, "%s", k->app_id);
    snprintf(e->who.key_id, sizeof e->who.key_id, "%s", k->key_id);
    memcpy(e->digest, digest, CTI_SHA256_LEN);
    snprintf(e->hash, sizeof e->hash, "%s", k->hash);
    trust(e, k);
    e->touched_at = k->last_used_at; /* the next use writes it, if it is a minute old */
    pthread_mutex_unlock(&a->lock);
}

enum { UNKNOWN = -1, STALE = 0, VALID = 1 };

/* Is digest key_id's verified key? VALID (*who filled; *touch when
 * last_used_at is due), STALE (it was: check the row still has hash), or UNKNOWN. */
static int known_get(cti_auth_t *a, const char *key_id, const unsigned char *digest, int64_t now,
                     cti_principal_t *who, bool *touch, char hash[128])
{
    int r = UNKNOWN;
    pthread_mutex_lock(&a->lock);
    known_t *e = known_find(a, key_id);
    if (e && cti_consttime_eq(e->digest, CTI_SHA256_LEN, digest, CTI_SHA256_LEN)) {
        r = cti_mono_ms() < e->until && (!e->expires_at || now < e->expires_at) ? VALID : STALE;
        memcpy(hash, e->hash, sizeof e->hash);
        *who = e->who;
        if (r == VALID && now - e->touched_at >= TOUCH_EVERY_MS) {
            e->touched_at = now;
            *touch = true;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

/* The row k still holds the hash known: trust it again for a while. */
static void known_refresh(cti_auth_t *a, const cti_key_t *k, int64_t now, bool *touch)
{
    pthread_mutex_lock(&a->lock);
    known_t *e = known_find(a, k->key_id);
    if (e) {
        trust(e, k);
        if (k->last_used_at > e->touched_at)
            e->touched_at = k->last_used_at;
        if (now - e->touched_at >= TOUCH_EVERY_MS) {
            e->touched_at = now;
            *touch = true;
        }
    }
    pthread_mutex_unlock(&a->lock);
}

static void known_drop(cti_auth_t *a, const char *key_id)
{
    pthread_mutex_lock(&a->lock);
    for (known_t **p = known_bucket(a, key_id); *p; p = &(*p)->next)
        if (!strcmp((*p)->who.key_id, key_id)) {
            known_t *e = *p;
            *p = e->next;
            free(e);
            a->nknown--;
            break;
        }
    pthread_mutex_unlock(&a->lock);
}

void cti_auth_forget_app(cti_auth_t *a, const char *app_id)
{
    /* Refusals too: a key refused while its app was inactive works once it is back.
     * Known keys stay known, but their rows are read again before the next use. */
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < REFUSAL_SLOTS; i++)
        if (a->refusals[i].until && !strcmp(a->refusals[i].app_id, app_id))
            a->refusals[i].until = 0;
    for (int i = 0; i < KNOWN_BUCKETS; i++)
        for (known_t *e = a->known[i]; e; e = e->next)
            if (!strcmp(e->who.app_id, app_id))
                e->until = 0;
    pthread_mutex_unlock(&a->lock);
}

void cti_auth_tenant_changed(void *auth, const char *app_id, unsigned what)
{
    if (what & (CTI_TENANT_APP | CTI_TENANT_KEYS))
        cti_auth_forget_app(auth, app_id);
}

/* ---- the brake ------------------------------------------------------------------------------ */

static int seconds(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s > BRAKE_WINDOW_MS / 1000 ? BRAKE_WINDOW_MS / 1000 : (int)s;
}

static void count_failure(cti_brake_t *b, const char *name, const char *what, int64_t now)
{
    if (cti_brake_fail(b, name, now))
        cti_log(CTI_LOG_WARN, NULL, "auth: braked for the rest of the minute", CTI_LS(what, name),
                CTI_LI("failures", CTI_AUTH_MAX_FAILURES));
}

/* A refusal known without bcrypt: counted; rc, or CTI_ELIMIT while the address is braked. */
static int refuse(cti_auth_t *a, cti_auth_attempt_t *at, int rc, int64_t now)
{
    int64_t wait = 0;
    bool braked = cti_brake_on(a->by_addr, at->addr, now, &wait);
    count_failure(a->by_addr, at->addr, "client", now);
    if (!braked)
        return rc;
    at->retry_after_s = seconds(wait);
    return CTI_ELIMIT;
}

/* May a secret not yet verified for key_id cost a bcrypt? Not when the key id
 * is braked, nor from a braked address when the key id had a wrong secret
 * this minute. */
static bool may_bcrypt(cti_auth_t *a, cti_auth_attempt_t *at, const char *key_id, int64_t now)
{
    int64_t key_wait = 0, addr_wait = 0;
    int key_failures = cti_brake_count(a->by_key, key_id, now, &key_wait);
    bool addr_braked = cti_brake_on(a->by_addr, at->addr, now, &addr_wait);
    if (key_failures < CTI_AUTH_MAX_FAILURES && !(addr_braked && key_failures > 0))
        return true;
    at->retry_after_s = seconds(addr_braked && addr_wait > key_wait ? addr_wait : key_wait);
    return false;
}

/* ---- bcrypt, on a verifier thread -------------------------------------------------------- */

static void run_job(void *arg)
{
    job_t *j = arg;
    cti_auth_t *a = j->auth;
    bool ok = bcrypt_check(j->secret, j->key.hash);
    int64_t now = cti_now_ms();
    if (ok) /* before the waiters hear: they check again, and find it */
        known_put(a, &j->key, j->digest, now);
    else
        remember_refusal(a, j->digest, j->key.app_id, now);
    pthread_mutex_lock(&a->job_lock);
    for (job_t **p = &a->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    a->njobs--;
    pthread_mutex_unlock(&a->job_lock);
    if (!ok)
        count_failure(a->by_key, j->key.key_id, "key_id", now);
    for (waiter_t *w = j->waiters, *next; w; w = next) {
        next = w->next;
        if (!ok) {
            count_failure(a->by_addr, w->addr, "client", now);
            CTI_METRIC_INC(auth_failures[CTI_AUTHF_API_KEY]);
        }
        w->done(w->ctx, ok ? 0 : CTI_EAUTH);
        free(w);
    }
    explicit_bzero(j->secret, sizeof j->secret);
    free(j);
}

/* Is there room for one more job from addr for key_id (job_lock held)? The
 * queue holds CTI_AUTH_PENDING_MAX jobs, of which one key id or one address
 * may hold only a few: a guesser cannot fill it alone. */
static bool room_for(const cti_auth_t *a, const char *addr, const char *key_id, int *same_key)
{
    int same_addr = 0;
    *same_key = 0;
    for (const job_t *j = a->jobs; j; j = j->next) {
        *same_key += !strcmp(j->key.key_id, key_id);
        same_addr += !strcmp(j->addr, addr);
    }
    return a->njobs < CTI_AUTH_PENDING_MAX && *same_key < CTI_AUTH_PENDING_PER_KEY &&
           same_addr < CTI_AUTH_PENDING_PER_ADDR;
}

/* Queues bcrypt of secret against k's hash, or joins the same key's queued
 * bcrypt. CTI_AUTH_PENDING, CTI_ELIMIT (no room) or CTI_EUNAVAILABLE (draining). */
static int queue_bcrypt(cti_auth_t *a, cti_auth_attempt_t *at, const unsigned char *digest,
                        const char *secret, const cti_key_t *k)
{
    int rc = CTI_AUTH_PENDING, same_key = 0;
    pthread_mutex_lock(&a->job_lock);
    job_t *j = a->jobs;
    while (j && memcmp(j->digest, digest, CTI_SHA256_LEN) != 0)
        j = j->next;
    if (a->draining) {
        rc = CTI_EUNAVAILABLE;
    } else if (!j && !room_for(a, at->addr, k->key_id, &same_key)) {
        at->retry_after_s = 1;
        at->busy = true;
        rc = CTI_ELIMIT;
    } else {
        waiter_t *w = cti_calloc(1, sizeof *w);
        w->done = at->done;
        w->ctx = at->ctx;
        snprintf(w->addr, sizeof w->addr, "%s", at->addr);
        at->suspend(at->ctx); /* before the job can finish */
        if (!j) {
            j = cti_calloc(1, sizeof *j);
            j->auth = a;
            snprintf(j->addr, sizeof j->addr, "%s", at->addr);
            memcpy(j->digest, digest, CTI_SHA256_LEN);
            snprintf(j->secret, sizeof j->secret, "%s", secret);
            j->key = *k;
            j->next = a->jobs;
            a->jobs = j;
            a->njobs++;
            /* A key id with no wrong secret this minute and none queued goes
             * first (an owner has one secret): guesses wait behind it. */
            bool first = !same_key && !cti_brake_count(a->by_key, k->key_id, cti_now_ms(), NULL);
            cti_verifier_run(a->verifier, run_job, j, first);
        }
        w->next = j->waiters;
        j->waiters = w;
    }
    pthread_mutex_unlock(&a->job_lock);
    return rc;
}

/* ---- verify ------------------------------------------------------------------------------ */

static bool usable(const cti_key_t *k, int64_t now)
{
    return k->app_active && !k->revoked_at && (!k->expires_at || now < k->expires_at);
}

/* A wrong key known without bcrypt, counted for /metrics too. */
static int refuse_key(cti_auth_t *a, cti_auth_attempt_t *at, int64_t now)
{
    CTI_METRIC_INC(auth_failures[CTI_AUTHF_API_KEY]);
    return refuse(a, at, CTI_EAUTH, now);
}

int cti_apikey_verify(cti_auth_t *a, cti_db_t *db, const char *key, cti_auth_attempt_t *at,
                      cti_principal_t *who)
{
    unsigned char digest[CTI_SHA256_LEN];
    char key_id[CTI_KEY_ID_LEN + 1], hash[128];
    const char *secret;
    int64_t now = cti_now_ms();
    bool touch = false;
    if (!parse_key(key, key_id, &secret))
        return refuse_key(a, at, now);
    cti_sha256(key, strlen(key), digest);
    int known = known_get(a, key_id, digest, now, who, &touch, hash);
    if (known == VALID) {
        if (touch)
            cti_keys_touch(db, key_id, now); /* best effort */
        return 0;
    }
    if (known == UNKNOWN && refused_before(a, digest, now))
        return refuse_key(a, at, now);
    cti_key_t k;
    int rc = cti_keys_get(db, key_id, &k);
    if (rc == CTI_EUNAVAILABLE || rc == CTI_EDB)
        return CTI_EUNAVAILABLE;
    if (rc != 0 || !usable(&k, now)) {
        if (known == STALE)
            known_drop(a, key_id);
        remember_refusal(a, digest, rc == 0 ? k.app_id : "", now);
        return refuse_key(a, at, now);
    }
    if (known == STALE && !strcmp(hash, k.hash)) { /* verified before: no bcrypt again */
        known_refresh(a, &k, now, &touch);
        if (touch)
            cti_keys_touch(db, key_id, now);
        return 0;
    }
    if (!may_bcrypt(a, at, key_id, now))
        return CTI_ELIMIT;
    return queue_bcrypt(a, at, digest, secret, &k);
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

int cti_admin_verify(cti_auth_t *a, const char *authorization, cti_auth_attempt_t *at)
{
    int rc = cti_admin_check(a, authorization);
    if (rc != 0)
        CTI_METRIC_INC(auth_failures[CTI_AUTHF_ADMIN]);
    return rc == 0 ? 0 : refuse(a, at, rc, cti_now_ms());
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
    t->mono_end_us = cti_mono_us() + (int64_t)CTI_TICKET_TTL_MS * 1000;
    pthread_mutex_unlock(&a->ticket_lock);
}

int cti_ticket_redeem(cti_auth_t *a, const char *ticket, cti_principal_t *who)
{
    unsigned char d[CTI_SHA256_LEN];
    cti_sha256(ticket, strlen(ticket), d);
    int rc = CTI_EAUTH;
    pthread_mutex_lock(&a->ticket_lock);
    ticket_t *t = ticket_slot(a, d);
    bool live = t->expires_at > cti_now_ms() && cti_mono_us() < t->mono_end_us;
    if (live && cti_consttime_eq(t->digest, sizeof d, d, sizeof d)) {
        *who = t->who;
        rc = 0;
    }
    if (rc == 0 || !live)
        t->expires_at = 0; /* used up, or stale */
    pthread_mutex_unlock(&a->ticket_lock);
    if (rc != 0)
        CTI_METRIC_INC(auth_failures[CTI_AUTHF_TICKET]);
    return rc;
}
