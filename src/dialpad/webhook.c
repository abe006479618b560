/*
 * webhook.c — see webhook.h. Verification and routing of Dialpad webhooks,
 * and the cache of what it needs per app.
 *
 * The cache is set-associative by app id: CACHE_WAYS entries per set, a new
 * app taking an empty way or the one loaded longest ago. (It was direct-mapped
 * over 1,024 slots: with 1,000 apps, six in ten shared a slot with another and
 * evicted each other on every webhook, a database read and the secrets
 * unsealed per webhook: a cost that grew with the number of apps.) An entry
 * is an immutable snapshot, shared by reference count: a reader takes a
 * reference under the lock and verifies outside it, so a rotation (which
 * replaces the snapshot) never changes secrets under a reader's feet and an
 * app may have any number of valid secrets.
 */
#include "dialpad/webhook.h"
#include "core/common.h"
#include "core/tenant.h"
#include "core/util.h"
#include "dialpad/jwt.h"
#include "repo/tenants.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SETS 2048 /* × CACHE_WAYS: 8,192 apps before any is evicted by another */
#define CACHE_WAYS 4

typedef struct {
    int refs; /* guarded by cache_lock */
    char app_id[37];
    bool exists, active, allow_unsigned;
    char **secrets; /* the current one first, then those in a grace */
    int nsecrets, cap;
    int unreadable; /* valid secrets that do not open (a wrong TOKEN_ENCRYPTION_KEY) */
    int64_t loaded_at;
} app_state_t;

static app_state_t *cache[CACHE_SETS][CACHE_WAYS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER; /* protects cache, refs, loads */
static long loads;

/* app_id's entry in its set (lock held); with for_insert, when it has none,
 * the way it may take: an empty one, else the one loaded longest ago. NULL when
 * it has none and !for_insert. */
static app_state_t **cache_slot(const char *app_id, bool for_insert)
{
    app_state_t **set = cache[cti_hash_bytes(app_id, strlen(app_id)) % CACHE_SETS];
    app_state_t **victim = &set[0];
    for (int i = 0; i < CACHE_WAYS; i++) {
        if (set[i] && !strcmp(set[i]->app_id, app_id))
            return &set[i];
        if (*victim && (!set[i] || set[i]->loaded_at < (*victim)->loaded_at))
            victim = &set[i];
    }
    return for_insert ? victim : NULL;
}

long cti_webhook_cache_loads(void)
{
    pthread_mutex_lock(&cache_lock);
    long n = loads;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

/* Drops a reference (lock held). */
static void state_unref_locked(app_state_t *s)
{
    if (!s || --s->refs > 0)
        return;
    for (int i = 0; i < s->nsecrets; i++)
        cti_seal_wipe_free(s->secrets[i]);
    free(s->secrets);
    free(s);
}

static void state_unref(app_state_t *s)
{
    pthread_mutex_lock(&cache_lock);
    state_unref_locked(s);
    pthread_mutex_unlock(&cache_lock);
}

static void forget(const char *app_id)
{
    pthread_mutex_lock(&cache_lock);
    app_state_t **slot = cache_slot(app_id, false);
    if (slot) {
        state_unref_locked(*slot);
        *slot = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
}

void cti_webhook_tenant_changed(void *ud, const char *app_id, unsigned what)
{
    if (what & (CTI_TENANT_APP | CTI_TENANT_SECRET))
        forget(app_id);
}

static int add_secret(const char *app_id, const char *secret, void *ud)
{
    app_state_t *s = ud;
    if (!secret) {
        s->unreadable++;
        return 0;
    }
    if (s->nsecrets == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 4;
        s->secrets = cti_realloc(s->secrets, (size_t)s->cap * sizeof *s->secrets);
    }
    s->secrets[s->nsecrets++] = cti_strdup(secret);
    return 0;
}

/* Reads app_id's state from the database into a new snapshot (one reference). */
static int load_state(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, int64_t now,
                      app_state_t **out)
{
    app_state_t *s = cti_calloc(1, sizeof *s);
    s->refs = 1;
    snprintf(s->app_id, sizeof s->app_id, "%s", app_id);
    cti_app_t app;
    int rc = cti_apps_get(db, app_id, &app);
    if (rc == 0 || rc == CTI_ENOTFOUND) {
        s->exists = rc == 0;
        s->active = s->exists && app.active;
        s->allow_unsigned = s->exists && app.allow_unsigned;
        rc = s->active ? cti_secrets_valid(db, keys, app_id, now, add_secret, s) : 0;
    }
    if (rc < 0) {
        state_unref(s);
        return rc;
    }
    s->loaded_at = now;
    *out = s;
    return 0;
}

/* A reference to app_id's state (release with state_unref), from the cache
 * unless it is stale or fresh is asked. 0, or a store error. */
static int app_state(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, bool fresh,
                     app_state_t **out)
{
    int64_t now = cti_now_ms();
    pthread_mutex_lock(&cache_lock);
    app_state_t **found = cache_slot(app_id, false), *c = found ? *found : NULL;
    bool hit = !fresh && c && now - c->loaded_at < CTI_WEBHOOK_CACHE_TTL_MS;
    if (hit) {
        c->refs++;
        *out = c;
    }
    pthread_mutex_unlock(&cache_lock);
    if (hit)
        return 0;
    int rc = load_state(db, keys, app_id, now, out);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&cache_lock);
    loads++;
    app_state_t **slot = cache_slot(app_id, true);
    state_unref_locked(*slot);
    *slot = *out;
    (*out)->refs++; /* the cache's */
    pthread_mutex_unlock(&cache_lock);
    return 0;
}

/* ---- verdicts ------------------------------------------------------------------------------ */

/* Sets a refusal; returns 0 (the verdict is made). */
__attribute__((format(printf, 4, 5))) static int refuse(cti_webhook_t *out, int status,
                                                        const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    out->status = status;
    out->code = code;
    return 0;
}

/* A store error while doing what. */
static int failed(cti_webhook_t *out, int rc, const char *what)
{
    snprintf(out->message, sizeof out->message, "%s", what);
    return rc;
}

/* app_id's state when it exists and is active (*state: a reference). 0 with
 * *state NULL after a 404 verdict; a store error. */
static int active_app(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                      cti_webhook_t *out, app_state_t **state)
{
    *state = NULL;
    int rc = cti_is_uuid(app_id) ? app_state(db, keys, app_id, false, state) : CTI_ENOTFOUND;
    if (rc == 0 && (*state)->active)
        return 0;
    if (rc != 0 && rc != CTI_ENOTFOUND)
        return failed(out, rc, "looking up the app");
    state_unref(*state);
    *state = NULL;
    return refuse(out, 404, "not_found", "no such active app");
}

/* The app POST /webhooks/dialpad routes to when it cannot tell from a secret:
 * DIALPAD_DEFAULT_APP_ID, or the only active app. 0, CTI_ENOTFOUND, or a store error. */
static int default_app(cti_db_t *db, const cti_webhook_config_t *cfg, char *out)
{
    if (cfg->default_app_id) {
        snprintf(out, 37, "%s", cfg->default_app_id);
        return 0;
    }
    int64_t n = 0;
    int rc = cti_apps_count_active(db, &n, out);
    return rc != 0 ? rc : n == 1 ? 0 : CTI_ENOTFOUND;
}

/* Parses the event; it must be a JSON object. 0 (a 400 verdict when not). */
static int parse_object(const char *text, size_t len, cti_webhook_t *out)
{
    char err[128];
    int rc = cti_jdoc_parse(&out->doc, text, len, err, sizeof err);
    if (rc == 0 && cti_jdoc_type(&out->doc, 0) == CTI_JT_OBJECT) {
        out->status = 200;
        return 0;
    }
    cti_jdoc_free(&out->doc);
    return refuse(out, 400, "invalid_request", "the event must be a JSON object%s%s",
                  rc ? ": " : "", rc ? err : "");
}

/* ---- finding the secret that verifies ------------------------------------------------- */

typedef struct {
    const cti_jwt_t *jwt;
    char app_id[37];
    bool found;
    bool unreadable; /* some app's valid secret does not open */
} match_t;

static int try_secret(const char *app_id, const char *secret, void *ud)
{
    match_t *m = ud;
    m->unreadable = m->unreadable || !secret;
    if (!secret || !cti_jwt_verify(m->jwt, secret, strlen(secret)))
        return 0;
    snprintf(m->app_id, sizeof m->app_id, "%s", app_id);
    m->found = true;
    return 1;
}

static bool verify_cached(const app_state_t *s, const cti_jwt_t *jwt)
{
    for (int i = 0; i < s->nsecrets; i++)
        if (cti_jwt_verify(jwt, s->secrets[i], strlen(s->secrets[i])))
            return true;
    return false;
}

/* Does one of app_id's secrets verify jwt? 0, CTI_EAUTH (*unreadable: the
 * app has a valid secret that does not open), or a store error. */
static int verify_for_app(cti_db_t *db, const cti_seal_keys_t *keys, const cti_jwt_t *jwt,
                          const char *app_id, bool *unreadable)
{
    app_state_t *s = NULL;
    int rc = app_state(db, keys, app_id, false, &s);
    if (rc == 0 && !verify_cached(s, jwt)) { /* rotated elsewhere since? look again */
        state_unref(s);
        s = NULL;
        rc = app_state(db, keys, app_id, true, &s);
    }
    if (rc == 0 && !verify_cached(s, jwt)) {
        rc = CTI_EAUTH;
        *unreadable = s->unreadable > 0;
    }
    state_unref(s);
    return rc;
}

/* Which active app's secret verifies jwt: 0 and its id in app_id; CTI_EAUTH
 * (*unreadable: some app's valid secret does not open); a store error. */
static int verify_any_app(cti_db_t *db, const cti_seal_keys_t *keys, const cti_jwt_t *jwt,
                          char *app_id, bool *unreadable)
{
    match_t m = {.jwt = jwt};
    int rc = cti_secrets_valid(db, keys, NULL, cti_now_ms(), try_secret, &m);
    if (rc < 0)
        return rc;
    *unreadable = m.unreadable;
    if (!m.found)
        return CTI_EAUTH;
    snprintf(app_id, 37, "%s", m.app_id);
    return 0;
}

/* Verified with DIALPAD_WEBHOOK_SECRET: the default app, which must be active. */
static int route_global(cti_db_t *db, const cti_webhook_config_t *cfg, cti_webhook_t *out)
{
    int rc = default_app(db, cfg, out->app_id);
    if (rc == CTI_ENOTFOUND)
        return refuse(out, 404, "not_found",
                      "verified with DIALPAD_WEBHOOK_SECRET but no app to route to: set "
                      "DIALPAD_DEFAULT_APP_ID");
    if (rc != 0)
        return failed(out, rc, "verifying the webhook");
    app_state_t *s;
    rc = active_app(db, cfg->keys, out->app_id, out, &s); /* unknown or deactivated: 404 */
    state_unref(s);
    return rc;
}

/* ---- the two body formats --------------------------------------------------------------- */

/* A JWT body: parse, pin HS256, find the secret (for app_id, or by routing). */
static int verify_jwt(cti_db_t *db, const cti_webhook_config_t *cfg, const char *body, size_t len,
                      const char *app_id, cti_webhook_t *out)
{
    cti_jwt_t jwt;
    cti_jwt_result_t r = cti_jwt_parse(body, len, &jwt);
    if (r == CTI_JWT_MALFORMED)
        return refuse(out, 400, "invalid_request", "the body is not a valid JWT");
    int rc = 0;
    bool unreadable = false;
    const char *global = cfg->global_secret;
    if (r == CTI_JWT_BAD_ALG) {
        rc = refuse(out, 401, "unauthorized",
                    "JWT alg \"%.20s\" is not accepted: Dialpad signs with HS256", jwt.alg);
        goto done;
    }
    if (app_id) {
        rc = verify_for_app(db, cfg->keys, &jwt, app_id, &unreadable);
    } else if (global && cti_jwt_verify(&jwt, global, strlen(global))) {
        if ((rc = route_global(db, cfg, out)) != 0 || out->status)
            goto done;
    } else {
        rc = verify_any_app(db, cfg->keys, &jwt, out->app_id, &unreadable);
    }
    if (rc == CTI_EAUTH && unreadable) { /* 5xx: Dialpad retries (see webhook.h) */
        rc = refuse(out, 503, "unavailable",
                    "a webhook secret that may verify it cannot be decrypted by the server "
                    "(its TOKEN_ENCRYPTION_KEY configuration); retry later");
        goto done;
    }
    if (rc == CTI_EAUTH) {
        rc = refuse(out, 401, "unauthorized", "the JWT signature does not verify");
        goto done;
    }
    if (rc != 0) {
        rc = failed(out, rc, "verifying the webhook");
        goto done;
    }
    if (app_id)
        snprintf(out->app_id, sizeof out->app_id, "%s", app_id);
    if ((rc = parse_object(jwt.payload, jwt.payload_len, out)) != 0 || out->status != 200)
        goto done;
    out->payload = jwt.payload;
    out->len = jwt.payload_len;
    jwt.payload = NULL;
done:
    cti_jwt_free(&jwt);
    return rc;
}

/* A plain JSON body: only for an app that allows unsigned events. */
static int accept_json(cti_db_t *db, const cti_webhook_config_t *cfg, const char *body, size_t len,
                       const char *app_id, cti_webhook_t *out)
{
    if (!app_id) {
        int rc = default_app(db, cfg, out->app_id);
        if (rc == CTI_ENOTFOUND)
            return refuse(out, 401, "unauthorized",
                          "unsigned webhook and no app to route it to: use "
                          "/webhooks/dialpad/{app_id}");
        if (rc != 0)
            return failed(out, rc, "routing the webhook");
        app_id = out->app_id;
    }
    app_state_t *s;
    int rc = active_app(db, cfg->keys, app_id, out, &s);
    if (rc != 0 || !s)
        return rc;
    bool allowed = s->allow_unsigned;
    state_unref(s);
    if (!allowed)
        return refuse(out, 401, "unauthorized",
                      "unsigned (plain JSON) webhooks are not enabled for this app; sign them "
                      "(JWT) or set allow_unsigned");
    snprintf(out->app_id, sizeof out->app_id, "%s", app_id);
    if ((rc = parse_object(body, len, out)) != 0 || out->status != 200)
        return rc;
    out->payload = cti_strndup(body, len);
    out->len = len;
    out->doc.text = out->payload; /* the same bytes, where they will live */
    return 0;
}

int cti_webhook_verify(cti_db_t *db, const cti_webhook_config_t *cfg, const char *body, size_t len,
                       const char *app_id, cti_webhook_t *out)
{
    memset(out, 0, sizeof *out);
    if (app_id) { /* the named app first: 404 whatever the body */
        snprintf(out->app_id, sizeof out->app_id, "%.36s", app_id);
        app_state_t *s;
        int rc = active_app(db, cfg->keys, app_id, out, &s);
        state_unref(s);
        if (rc != 0 || out->status)
            return rc;
    }
    switch (cti_body_format(body, len)) {
    case CTI_BODY_JWT:
        return verify_jwt(db, cfg, body, len, app_id, out);
    case CTI_BODY_JSON:
        return accept_json(db, cfg, body, len, app_id, out);
    default:
        return refuse(out, 400, "invalid_request", "%s",
                      len ? "the body is neither a JWT nor a JSON object" : "the body is empty");
    }
}

void cti_webhook_free(cti_webhook_t *w)
{
    if (w->status == 200) {
        cti_jdoc_free(&w->doc);
        free(w->payload);
    }
    w->payload = NULL;
    w->status = 0;
}
