/*
 * connection.c — an app's Dialpad connection (see connection.h for the
 * states and the guarantees). Everything here blocks on Dialpad through the
 * client's cti_dp_call; the refresher is the thread `cti-dpconn`.
 *
 * Order of a connect (complete()):
 *   1 code → tokens (POST /oauth2/token)       nothing to undo yet
 *   2 GET /api/v2/users/me                     undo: revoke the new token
 *   3 lease dialpad:<app_id>                   (instances take turns per app)
 *   4 POST /api/v2/webhooks                    undo: DELETE it
 *   5 POST /api/v2/subscriptions/<type> each   undo: DELETE each
 *   6 store the connection + audit (one transaction)
 *   7 the replaced connection's webhook and subscriptions DELETEd
 *   8 lease released; connection.connected on the stream
 * A failure in 2–6 runs the undo of what was done and stores nothing. The
 * new token is not revoked when the app is still connected with another
 * token: Dialpad's deauthorize may revoke every token of that user for our
 * OAuth app, the old connection's included.
 */
#include "dialpad/connection.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "ingest/ingest.h"
#include "repo/dialpad.h"
#include "repo/tenants.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LEASE_TTL_MS 60000     /* a connect or refresh holding it longer has died */
#define LEASE_WAIT_MS 20000    /* how long a connect waits for another one */
#define REFRESH_AHEAD_MS 300000 /* refresh at most 5 minutes before expiry... */
#define MAX_SUBSCRIPTIONS 8

struct cti_dpconn {
    cti_dpconn_options_t o;
    char owner[37]; /* this instance, in leases */
    char redirect_uri[1100];
    pthread_t thread;
    bool running;
    pthread_mutex_t mu; /* stop */
    pthread_cond_t cv;
    bool stop;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void token_ad(char *out, size_t cap, const char *app_id, const char *field)
{
    snprintf(out, cap, "%s:dialpad_%s", app_id, field);
}

static char *seal_token(const cti_dpconn_t *s, const char *app_id, const char *field,
                        const char *token)
{
    char ad[80];
    token_ad(ad, sizeof ad, app_id, field);
    return token ? cti_seal(s->o.keys, token, strlen(token), ad) : NULL;
}

/* The token in clear (wipe with cti_seal_wipe_free), or NULL when it does not open. */
static char *open_token(const cti_dpconn_t *s, const char *app_id, const char *field,
                        const char *sealed)
{
    char ad[80], *out = NULL;
    size_t n;
    token_ad(ad, sizeof ad, app_id, field);
    int rc = sealed ? cti_seal_open(s->o.keys, sealed, ad, &out, &n) : CTI_ENOTFOUND;
    if (rc != 0 && sealed)
        cti_log(CTI_LOG_ERROR, NULL,
                "dialpad: a stored token does not open (TOKEN_ENCRYPTION_KEY changed without "
                "TOKEN_ENCRYPTION_KEY_OLD?)",
                CTI_LS("app_id", app_id), CTI_LS("field", field), CTI_LS("error", cti_strerror(rc)));
    return out;
}

/* v (stolen, may be NULL) as compact JSON text (the caller frees it), or NULL. */
static char *json_text(json_t *v)
{
    char *t = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    return t;
}

/* A request to Dialpad with a JSON body (stolen, may be NULL). */
static cti_dp_response_t *dp(const cti_dpconn_t *s, const char *method, const char *path,
                             const char *bearer, json_t *body, const char *op, const char *rid)
{
    char *text = json_text(body);
    cti_dp_request_t req = {.method = method, .path = path, .bearer = bearer,
                            .body_kind = text ? CTI_DP_BODY_JSON : CTI_DP_BODY_NONE,
                            .body = text, .body_len = text ? strlen(text) : 0,
                            .operation = op, .request_id = rid};
    cti_dp_response_t *r = cti_dp_call(s->o.client, &req);
    free(text);
    return r;
}

/* POST /oauth2/token with a JSON body (Dialpad's spec; form bodies are said
 * to work too) holding the client's credentials: body is stolen, its text
 * wiped after. Never repeated once sent: a code is one use and a refresh
 * token may rotate. */
static cti_dp_response_t *token_request(const cti_dpconn_t *s, json_t *body, const char *op,
                                        const char *rid)
{
    json_object_set_new(body, "client_id", json_string(s->o.cfg->dialpad_client_id));
    json_object_set_new(body, "client_secret", json_string(s->o.cfg->dialpad_client_secret));
    char *text = json_text(body);
    cti_dp_request_t req = {.method = "POST", .path = "/oauth2/token",
                            .body_kind = CTI_DP_BODY_JSON, .body = text,
                            .body_len = strlen(text), .operation = op, .request_id = rid};
    cti_dp_response_t *r = cti_dp_call(s->o.client, &req);
    cti_seal_wipe_free(text);
    return r;
}

/* The body of a 2xx answer as a JSON object, or NULL. */
static json_t *answer_object(const cti_dp_response_t *r)
{
    if (!cti_dp_ok(r))
        return NULL;
    json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
    if (o && !json_is_object(o)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* Why a request failed, for a person. */
static const char *failure(const cti_dp_response_t *r)
{
    return r->message[0] ? r->message : "Dialpad's answer could not be read";
}

static int lease_wait(const cti_dpconn_t *s, cti_db_t *db, const char *app_id, int wait_ms)
{
    char name[64];
    snprintf(name, sizeof name, "dialpad:%s", app_id);
    int64_t deadline = cti_mono_us() + (int64_t)wait_ms * 1000;
    for (;;) {
        int rc = cti_lease_take(db, name, s->owner, cti_now_ms(), LEASE_TTL_MS);
        if (rc != CTI_ELIMIT || cti_mono_us() >= deadline)
            return rc;
        usleep(100000);
    }
}

static void lease_release(const cti_dpconn_t *s, cti_db_t *db, const char *app_id)
{
    char name[64];
    snprintf(name, sizeof name, "dialpad:%s", app_id);
    cti_lease_release(db, name, s->owner);
}

static json_t *id_json(int64_t id)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    return id ? json_string(buf) : json_null();
}

static json_t *time_json(int64_t ms)
{
    char buf[CTI_ISO_TIME_LEN];
    if (!ms)
        return json_null();
    cti_iso_time(ms, buf);
    return json_string(buf);
}

/* Audit entry and stream event of a change (the event after the commit). */
static void announce(const cti_dpconn_t *s, const char *app_id, const char *event, json_t *data)
{
    if (!s->o.ingest) {
        json_decref(data);
        return;
    }
    int rc = cti_ingest_server_event(s->o.ingest, app_id, event, data);
    if (rc != 0)
        cti_log(CTI_LOG_WARN, NULL, "dialpad: could not store a connection event",
                CTI_LS("app_id", app_id), CTI_LS("event", event), CTI_LS("error", cti_strerror(rc)));
}

/* ---- what a connection registered at Dialpad --------------------------------------------- */

typedef struct {
    char type[16];
    int64_t id;
} sub_t;

typedef struct {
    int64_t webhook_id;
    sub_t subs[MAX_SUBSCRIPTIONS];
    int nsubs;
} reg_t;

static char *subs_text(const reg_t *r)
{
    json_t *a = json_array();
    for (int i = 0; i < r->nsubs; i++)
        json_array_append_new(a, json_pack("{s:s, s:o}", "type", r->subs[i].type, "id",
                                           id_json(r->subs[i].id)));
    return json_text(a);
}

/* How many registrations of r are left (id not 0); their names appended to
 * left ("webhooks/123", "subscriptions/call/456") when left is not NULL. */
static int remaining(const reg_t *r, json_t *left)
{
    int n = 0;
    char name[64];
    for (int i = 0; i <= r->nsubs; i++) {
        bool hook = i == r->nsubs;
        if (hook ? !r->webhook_id : !r->subs[i].id)
            continue;
        n++;
        if (hook)
            snprintf(name, sizeof name, "webhooks/%lld", (long long)r->webhook_id);
        else
            snprintf(name, sizeof name, "subscriptions/%s/%lld", r->subs[i].type,
                     (long long)r->subs[i].id);
        if (left)
            json_array_append_new(left, json_string(name));
    }
    return n;
}

static void subs_parse(const char *text, reg_t *r)
{
    json_t *a = json_loads(text ? text : "[]", 0, NULL), *v;
    size_t i;
    json_array_foreach(a, i, v)
    {
        int64_t id;
        const char *type = json_string_value(json_object_get(v, "type"));
        if (r->nsubs < MAX_SUBSCRIPTIONS && type && cti_dp_get_id(v, "id", &id)) {
            snprintf(r->subs[r->nsubs].type, sizeof r->subs[r->nsubs].type, "%s", type);
            r->subs[r->nsubs++].id = id;
        }
    }
    json_decref(a);
}

/* DELETEs at Dialpad what r names, with token; what is gone gets id 0 in r.
 * Returns true when everything is gone (404 counts). A 401 stops at once
 * (*unauthorized): the caller may refresh and try again. */
static bool unregister(const cti_dpconn_t *s, const char *token, reg_t *r, bool *unauthorized,
                       const char *rid)
{
    char path[128];
    *unauthorized = false;
    for (int i = 0; i <= r->nsubs && !*unauthorized; i++) {
        bool hook = i == r->nsubs;
        if (hook ? !r->webhook_id : !r->subs[i].id)
            continue;
        if (hook)
            snprintf(path, sizeof path, "/api/v2/webhooks/%lld", (long long)r->webhook_id);
        else
            snprintf(path, sizeof path, "/api/v2/subscriptions/%s/%lld", r->subs[i].type,
                     (long long)r->subs[i].id);
        cti_dp_response_t *resp =
            dp(s, "DELETE", path, token, NULL, hook ? "webhooks.delete" : "subscriptions.delete", rid);
        bool gone = cti_dp_ok(resp) || resp->status == 404;
        *unauthorized = resp->status == 401;
        if (!gone && !*unauthorized)
            cti_log(CTI_LOG_WARN, rid, "dialpad: could not delete a registration",
                    CTI_LS("path", path), CTI_LS("error", failure(resp)));
        cti_dp_response_free(resp);
        if (gone && hook)
            r->webhook_id = 0;
        else if (gone)
            r->subs[i].id = 0;
    }
    return remaining(r, NULL) == 0 && !*unauthorized;
}

/* POST /oauth2/deauthorize with token. True when revoked (or refused: a
 * token Dialpad does not take is no grant either). */
static bool deauthorize(const cti_dpconn_t *s, const char *token, const char *rid)
{
    cti_dp_response_t *r = dp(s, "POST", "/oauth2/deauthorize", token, NULL, "oauth.deauthorize", rid);
    bool ok = cti_dp_ok(r) || r->status == 401;
    if (!ok)
        cti_log(CTI_LOG_WARN, rid, "dialpad: could not revoke the token",
                CTI_LS("error", failure(r)));
    cti_dp_response_free(r);
    return ok;
}

/* Registers the webhook and the configured subscriptions. 0, or a sentence in why. */
static int register_all(const cti_dpconn_t *s, const char *app_id, const char *token,
                        const char *secret, reg_t *r, char *why, size_t cap, const char *rid)
{
    char hook_url[700];
    snprintf(hook_url, sizeof hook_url, "%s/webhooks/dialpad/%s", s->o.cfg->public_base_url, app_id);
    cti_dp_response_t *resp = dp(s, "POST", "/api/v2/webhooks", token,
                                 json_pack("{s:s, s:s}", "hook_url", hook_url, "secret", secret),
                                 "webhooks.create", rid);
    json_t *o = answer_object(resp);
    int rc = o && cti_dp_get_id(o, "id", &r->webhook_id) ? 0 : CTI_EUNAVAILABLE;
    if (rc != 0)
        snprintf(why, cap, "Dialpad did not register the webhook: %.300s", failure(resp));
    json_decref(o);
    cti_dp_response_free(resp);
    const cti_strlist_t *types = &s->o.cfg->dialpad_subscribe;
    for (size_t i = 0; rc == 0 && i < types->n && r->nsubs < MAX_SUBSCRIPTIONS; i++) {
        const char *type = types->items[i];
        json_t *body = json_pack("{s:I, s:b}", "endpoint_id", (json_int_t)r->webhook_id, "enabled", 1);
        if (!strcmp(type, "call")) {
            json_t *states = json_array();
            for (size_t k = 0; k < s->o.cfg->dialpad_call_states.n; k++)
                json_array_append_new(states, json_string(s->o.cfg->dialpad_call_states.items[k]));
            json_object_set_new(body, "call_states", states);
        } else if (!strcmp(type, "sms")) {
            json_object_set_new(body, "direction", json_string("all"));
        } else if (!strcmp(type, "agent_status")) {
            json_object_set_new(body, "agent_type", json_string("callcenter"));
        } else if (!strcmp(type, "contact")) {
            json_object_set_new(body, "contact_type", json_string("shared"));
        }
        char path[64];
        snprintf(path, sizeof path, "/api/v2/subscriptions/%s", type);
        resp = dp(s, "POST", path, token, body, "subscriptions.create", rid);
        o = answer_object(resp);
        sub_t *sub = &r->subs[r->nsubs];
        if (o && cti_dp_get_id(o, "id", &sub->id)) {
            snprintf(sub->type, sizeof sub->type, "%s", type);
            r->nsubs++;
        } else {
            snprintf(why, cap, "Dialpad did not create the %s subscription: %.300s", type,
                     failure(resp));
            rc = CTI_EUNAVAILABLE;
        }
        json_decref(o);
        cti_dp_response_free(resp);
    }
    return rc;
}

/* ---- the status object ----------------------------------------------------------------------- */

static const char *environment(const cti_dpconn_t *s)
{
    return s->o.cfg->env == CTI_ENV_PRODUCTION ? "production" : "sandbox";
}

static json_t *scopes_json(const char *scopes)
{
    json_t *a = json_array();
    char *copy = cti_strdup(scopes ? scopes : ""), *save = NULL;
    for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
        json_array_append_new(a, json_string(t));
    free(copy);
    return a;
}

static json_t *status_object(const cti_dpconn_t *s, const cti_dpconn_row_t *r)
{
    json_t *subs = json_loads(r && r->subscriptions ? r->subscriptions : "[]", 0, NULL);
    json_t *o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "status",
                     r ? r->status : "not_connected", "environment",
                     r ? r->environment : environment(s), "dialpad_user_id",
                     id_json(r ? r->dialpad_user_id : 0), "company_id",
                     id_json(r ? r->company_id : 0), "office_id", id_json(r ? r->office_id : 0),
                     "scopes", r ? scopes_json(r->scopes) : json_array(), "connected_at",
                     time_json(r ? r->connected_at : 0), "access_token_expires_at",
                     time_json(r ? r->access_expires_at : 0), "refreshed_at",
                     time_json(r ? r->refreshed_at : 0), "webhook_id",
                     id_json(r ? r->webhook_id : 0), "subscriptions", subs ? subs : json_array(),
                     "reason", r && r->reason[0] ? json_string(r->reason) : json_null());
    json_object_set_new(o, "reconciliation",
                        r && r->reconciled_at
                            ? json_pack("{s:o, s:o}", "last_run_at", time_json(r->reconciled_at),
                                        "error", r->reconcile_error[0]
                                                     ? json_string(r->reconcile_error)
                                                     : json_null())
                            : json_null());
    return o;
}

int cti_dpconn_status_json(cti_dpconn_t *s, cti_db_t *db, const char *app_id, json_t **out)
{
    cti_dpconn_row_t r;
    int rc = cti_dpconn_get(db, app_id, &r);
    if (rc != 0 && rc != CTI_ENOTFOUND)
        return rc;
    *out = status_object(s, rc == 0 ? &r : NULL);
    cti_dpconn_row_free(&r);
    return 0;
}

/* ---- broken ---------------------------------------------------------------------------------- */

static void mark_broken(const cti_dpconn_t *s, cti_db_t *db, const char *app_id,
                        const char *reason, const char *rid)
{
    int64_t now = cti_now_ms();
    char *detail = json_text(json_pack("{s:s}", "reason", reason)); /* whole, however escaped */
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_dpconn_set_broken(db, app_id, reason, now)) == 0)
        rc = cti_audit_add(db, app_id, "system", "connection.broken", detail, NULL, rid, now);
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    free(detail);
    if (rc == CTI_ENOTFOUND)
        return; /* not connected any more (or broken already): nothing to say */
    if (rc != 0) {
        cti_log(CTI_LOG_ERROR, rid, "dialpad: could not mark a connection broken",
                CTI_LS("app_id", app_id), CTI_LS("error", cti_strerror(rc)));
        return;
    }
    cti_log(CTI_LOG_WARN, rid, "dialpad: connection broken", CTI_LS("app_id", app_id),
            CTI_LS("reason", reason));
    announce(s, app_id, "connection.broken",
             json_pack("{s:s, s:s}", "status", "broken", "reason", reason));
}

/* ---- refresh --------------------------------------------------------------------------------- */

/* Asks Dialpad for new tokens with the refresh token of row and stores them.
 * See refresh() for the answers. */
static int refresh_now(const cti_dpconn_t *s, cti_db_t *db, const cti_dpconn_row_t *row,
                       const char *rid)
{
    const char *app_id = row->app_id;
    char *old = open_token(s, app_id, "refresh_token", row->refresh_token), why[200];
    if (!old)
        return CTI_ENOTFOUND;
    json_t *body = json_pack("{s:s, s:s}", "grant_type", "refresh_token", "refresh_token", old);
    cti_seal_wipe_free(old);
    cti_dp_response_t *resp = token_request(s, body, "oauth.refresh", rid);
    cti_dp_token_t tok = {0};
    int rc;
    if (resp->err || resp->status >= 500 || resp->status == 429) {
        cti_log(CTI_LOG_WARN, rid, "dialpad: token refresh failed; will retry",
                CTI_LS("app_id", app_id), CTI_LS("error", failure(resp)));
        rc = CTI_EUNAVAILABLE;
    } else if (!cti_dp_ok(resp)) {
        char reason[CTI_DPCONN_REASON_MAX];
        snprintf(reason, sizeof reason, "refresh refused: %.250s", failure(resp));
        mark_broken(s, db, app_id, reason, rid);
        rc = CTI_EAUTH;
    } else if (cti_dp_parse_token(resp->body, resp->body_len, &tok, why, sizeof why) != 0) {
        cti_log(CTI_LOG_ERROR, rid, "dialpad: refresh answer not understood; will retry",
                CTI_LS("app_id", app_id), CTI_LS("why", why));
        rc = CTI_EUNAVAILABLE;
    } else {
        int64_t now = cti_now_ms(), life = tok.expires_in_s > 0 ? tok.expires_in_s * 1000 : 0;
        char *a = seal_token(s, app_id, "access_token", tok.access_token);
        char *r = seal_token(s, app_id, "refresh_token", tok.refresh_token);
        /* The old refresh token may be dead already: the new one must be kept. */
        for (int i = 0; i < 5; i++) {
            rc = cti_dpconn_set_tokens(db, app_id, row->access_token, a, r,
                                       life ? now + life : 0, life, now);
            if (rc != CTI_EUNAVAILABLE)
                break;
            usleep(200000);
        }
        if (rc == 0)
            cti_log(CTI_LOG_INFO, rid, "dialpad: token refreshed", CTI_LS("app_id", app_id),
                    CTI_LI("expires_in_s", tok.expires_in_s),
                    CTI_LB("refresh_token_rotated", tok.refresh_token != NULL));
        else
            cti_log(CTI_LOG_ERROR, rid, "dialpad: could not store refreshed tokens",
                    CTI_LS("app_id", app_id), CTI_LS("error", cti_strerror(rc)));
        free(a);
        free(r);
    }
    cti_dp_token_free(&tok);
    cti_dp_response_free(resp);
    return rc;
}

/* Refreshes app_id's tokens unless they changed since seen (their sealed
 * access token), under the app's lease (taken here unless leased). 0: the
 * stored token is newer than seen now. CTI_EAUTH: Dialpad refused (the
 * connection is broken now). CTI_ENOTFOUND: not connected, or no refresh
 * token. CTI_EUNAVAILABLE: try again later. */
static int refresh(const cti_dpconn_t *s, cti_db_t *db, const char *app_id, const char *seen,
                   bool leased, const char *rid)
{
    if (!leased && lease_wait(s, db, app_id, 10000) != 0)
        return CTI_EUNAVAILABLE;
    cti_dpconn_row_t row;
    int rc = cti_dpconn_get(db, app_id, &row);
    if (rc != 0 || strcmp(row.status, "connected"))
        rc = rc == 0 || rc == CTI_ENOTFOUND ? CTI_ENOTFOUND : CTI_EUNAVAILABLE;
    else if (strcmp(row.access_token, seen))
        rc = 0; /* another thread or instance refreshed it */
    else if (!row.refresh_token)
        rc = CTI_ENOTFOUND;
    else
        rc = refresh_now(s, db, &row, rid);
    if (!leased)
        lease_release(s, db, app_id);
    cti_dpconn_row_free(&row);
    return rc;
}

typedef struct {
    char app_id[37];
    char *access; /* sealed */
    bool has_refresh;
    int64_t expires_at, lifetime_ms;
} due_t;

typedef struct {
    due_t *items;
    int n, cap;
} due_list_t;

static int collect_due(const cti_dpconn_row_t *r, void *ud)
{
    due_list_t *l = ud;
    if (!r->access_expires_at)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->items = cti_realloc(l->items, (size_t)l->cap * sizeof *l->items);
    }
    due_t *d = &l->items[l->n++];
    snprintf(d->app_id, sizeof d->app_id, "%s", r->app_id);
    d->access = cti_strdup(r->access_token);
    d->has_refresh = r->refresh_token != NULL;
    d->expires_at = r->access_expires_at;
    d->lifetime_ms = r->token_lifetime_ms;
    return 0;
}

void cti_dpconn_refresh_due(cti_dpconn_t *s)
{
    cti_db_t *db = cti_store_db(s->o.store);
    due_list_t l = {0};
    if (cti_dpconn_list_connected(db, collect_due, &l) != 0)
        l.n = 0; /* the database is away: next tick */
    int64_t now = cti_now_ms();
    for (int i = 0; i < l.n; i++) {
        due_t *d = &l.items[i];
        int64_t ahead = d->lifetime_ms > 0 && d->lifetime_ms / 2 < REFRESH_AHEAD_MS
                            ? d->lifetime_ms / 2
                            : REFRESH_AHEAD_MS;
        if (!d->has_refresh && now >= d->expires_at)
            mark_broken(s, db, d->app_id, "expired", NULL);
        else if (d->has_refresh && d->expires_at - now <= ahead)
            refresh(s, db, d->app_id, d->access, false, NULL);
        free(d->access);
    }
    free(l.items);
}

static void *refresher(void *arg)
{
    cti_dpconn_t *s = arg;
    pthread_setname_np(pthread_self(), "cti-dpconn");
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        cti_dpconn_refresh_due(s);
        pthread_mutex_lock(&s->mu);
        struct timespec until = cti_mono_deadline(s->o.refresh_tick_ms);
        if (!s->stop)
            pthread_cond_timedwait(&s->cv, &s->mu, &until);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- requests with the app's token ------------------------------------------------------------ */

cti_dp_response_t *cti_dpconn_call(cti_dpconn_t *s, const char *app_id,
                                   const cti_dp_request_t *req, int *err)
{
    cti_db_t *db = cti_store_db(s->o.store);
    cti_dp_response_t *resp = NULL;
    *err = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        cti_dpconn_row_t row;
        int rc = cti_dpconn_get(db, app_id, &row);
        char *token = rc == 0 && !strcmp(row.status, "connected")
                          ? open_token(s, app_id, "access_token", row.access_token)
                          : NULL;
        if (!token) {
            *err = rc == 0 || rc == CTI_ENOTFOUND ? CTI_ENOTFOUND : rc;
            cti_dpconn_row_free(&row);
            break;
        }
        cti_dp_request_t r = *req;
        r.bearer = token;
        cti_dp_response_free(resp);
        resp = cti_dp_call(s->o.client, &r);
        cti_seal_wipe_free(token);
        if (resp->status == 401 && attempt == 0) {
            cti_log(CTI_LOG_INFO, req->request_id, "dialpad: token refused; refreshing once",
                    CTI_LS("app_id", app_id));
            rc = refresh(s, db, app_id, row.access_token, false, req->request_id);
            if (rc == CTI_ENOTFOUND && row.refresh_token == NULL)
                mark_broken(s, db, app_id,
                            "Dialpad refused the access token and gave no refresh token",
                            req->request_id);
            cti_dpconn_row_free(&row);
            if (rc == 0)
                continue;
            break;
        }
        cti_dpconn_row_free(&row);
        break;
    }
    if (*err) {
        cti_dp_response_free(resp);
        resp = NULL;
    }
    return resp;
}

/* ---- connecting -------------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void set_outcome(cti_dpconn_outcome_t *out,
                                                             int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    out->status = status;
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
}

/* Exchanges the code. 0 and *tok, or sets out. */
static int exchange_code(const cti_dpconn_t *s, const char *code, const char *verifier,
                         cti_dp_token_t *tok, cti_dpconn_outcome_t *out, const char *rid)
{
    char why[200];
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "grant_type", "authorization_code", "code",
                             code, "redirect_uri", s->redirect_uri, "code_verifier", verifier);
    cti_dp_response_t *resp = token_request(s, body, "oauth.token", rid);
    int rc = 0;
    if (!cti_dp_ok(resp)) {
        set_outcome(out, 502, "Dialpad did not accept the authorization: %s", failure(resp));
        rc = CTI_EAUTH;
    } else if (cti_dp_parse_token(resp->body, resp->body_len, tok, why, sizeof why) != 0) {
        set_outcome(out, 502, "Dialpad's token answer could not be read: %s", why);
        rc = CTI_EINVAL;
    }
    cti_dp_response_free(resp);
    return rc;
}

typedef struct {
    int64_t user_id, company_id, office_id;
} me_t;

static int read_me(const cti_dpconn_t *s, const char *token, me_t *me, cti_dpconn_outcome_t *out,
                   const char *rid)
{
    cti_dp_response_t *resp = dp(s, "GET", "/api/v2/users/me", token, NULL, "users.me", rid);
    json_t *o = answer_object(resp);
    int rc = o && cti_dp_get_id(o, "id", &me->user_id) ? 0 : CTI_EUNAVAILABLE;
    if (rc == 0) {
        cti_dp_get_id(o, "company_id", &me->company_id);
        cti_dp_get_id(o, "office_id", &me->office_id);
    } else {
        set_outcome(out, 502, "Dialpad did not say who approved the connection: %s",
                    failure(resp));
    }
    json_decref(o);
    cti_dp_response_free(resp);
    return rc;
}

/* Stores the new connection with its audit entry, in one transaction. */
static int store_connection(const cti_dpconn_t *s, cti_db_t *db, const char *app_id,
                            const cti_dp_token_t *tok, const me_t *me, const reg_t *reg,
                            const cti_dpconn_who_t *who)
{
    int64_t now = cti_now_ms(), life = tok->expires_in_s > 0 ? tok->expires_in_s * 1000 : 0;
    cti_dpconn_row_t r = {.dialpad_user_id = me->user_id, .company_id = me->company_id,
                          .office_id = me->office_id, .access_expires_at = life ? now + life : 0,
                          .token_lifetime_ms = life, .connected_at = now,
                          .webhook_id = reg->webhook_id, .updated_at = now};
    snprintf(r.app_id, sizeof r.app_id, "%s", app_id);
    snprintf(r.status, sizeof r.status, "connected");
    snprintf(r.environment, sizeof r.environment, "%s", environment(s));
    snprintf(r.scopes, sizeof r.scopes, "%s", s->o.cfg->dialpad_scopes);
    r.access_token = seal_token(s, app_id, "access_token", tok->access_token);
    r.refresh_token = seal_token(s, app_id, "refresh_token", tok->refresh_token);
    r.subscriptions = subs_text(reg);
    char *detail = json_text(json_pack("{s:o, s:o, s:o}", "dialpad_user_id",
                                       id_json(me->user_id), "company_id",
                                       id_json(me->company_id), "webhook_id",
                                       id_json(reg->webhook_id)));
    int rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_dpconn_put(db, &r)) == 0)
        rc = cti_audit_add(db, app_id, who->actor, "connection.connected", detail,
                           who->client_addr, who->request_id, now);
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    free(detail);
    cti_dpconn_row_free(&r);
    return rc;
}

/* Removes what a replaced connection registered: with its own token, else
 * (refused) with the new one (same Dialpad company, as a rule). */
static void unregister_old(const cti_dpconn_t *s, const char *app_id, cti_dpconn_row_t *old,
                           const char *new_token, const char *rid)
{
    reg_t reg = {.webhook_id = old->webhook_id};
    subs_parse(old->subscriptions, &reg);
    char *token = open_token(s, app_id, "access_token", old->access_token);
    bool unauthorized = true;
    if (token)
        unregister(s, token, &reg, &unauthorized, rid);
    if (unauthorized && !unregister(s, new_token, &reg, &unauthorized, rid))
        cti_log(CTI_LOG_WARN, rid, "dialpad: the replaced connection left registrations at "
                "Dialpad", CTI_LS("app_id", app_id), CTI_LI("left", remaining(&reg, NULL)));
    cti_seal_wipe_free(token);
}

void cti_dpconn_complete(cti_dpconn_t *s, const char *app_id, const char *code,
                         const char *verifier, const cti_dpconn_who_t *who,
                         cti_dpconn_outcome_t *out)
{
    const char *rid = who->request_id;
    cti_db_t *db = cti_store_db(s->o.store);
    cti_dp_token_t tok = {0};
    me_t me = {0};
    reg_t reg = {0};
    cti_dpconn_row_t old = {0};
    bool leased = false, had_old = false;
    char secret[256], why[400];
    set_outcome(out, 200, "%s", "Connected.");
    if (exchange_code(s, code, verifier, &tok, out, rid) != 0)
        goto done; /* nothing exists at Dialpad yet */
    int rc = read_me(s, tok.access_token, &me, out, rid);
    if (rc == 0 && (rc = lease_wait(s, db, app_id, LEASE_WAIT_MS)) != 0)
        set_outcome(out, 503, "%s",
                    "Another connection of this app is being made right now; try again.");
    leased = rc == 0;
    if (rc == 0) {
        int g = cti_dpconn_get(db, app_id, &old);
        had_old = g == 0;
        if (g != 0 && g != CTI_ENOTFOUND)
            rc = g;
        else if ((rc = cti_secrets_current(db, s->o.keys, app_id, secret, sizeof secret)) != 0)
            set_outcome(out, 503, "%s", "The app's webhook secret could not be read.");
        if (rc != 0 && out->status == 200)
            set_outcome(out, 503, "%s", "The database is not available; try again.");
    }
    if (rc == 0 && (rc = register_all(s, app_id, tok.access_token, secret, &reg, why, sizeof why,
                                      rid)) != 0)
        set_outcome(out, 502, "%s", why);
    if (rc == 0 && (rc = store_connection(s, db, app_id, &tok, &me, &reg, who)) != 0)
        set_outcome(out, 503, "%s", "The connection could not be stored; try again.");
    if (rc != 0) {
        bool unauthorized;
        if (!unregister(s, tok.access_token, &reg, &unauthorized, rid))
            cti_log(CTI_LOG_ERROR, rid,
                    "dialpad: a failed connect left registrations at Dialpad (see the lines "
                    "above)", CTI_LS("app_id", app_id));
        if (!leased) /* failed before the lease: is the app connected already? */
            had_old = cti_dpconn_get(db, app_id, &old) == 0;
        if (!had_old || (me.user_id && old.dialpad_user_id != me.user_id))
            deauthorize(s, tok.access_token, rid);
        cti_log(CTI_LOG_WARN, rid, "dialpad: connect failed; nothing kept",
                CTI_LS("app_id", app_id), CTI_LS("why", out->message));
        goto done;
    }
    if (had_old)
        unregister_old(s, app_id, &old, tok.access_token, rid);
    cti_log(CTI_LOG_INFO, rid, "dialpad: app connected", CTI_LS("app_id", app_id),
            CTI_LI("dialpad_user_id", me.user_id), CTI_LI("company_id", me.company_id),
            CTI_LI("webhook_id", reg.webhook_id), CTI_LI("subscriptions", reg.nsubs),
            CTI_LB("replaced", had_old));
    lease_release(s, db, app_id);
    leased = false;
    announce(s, app_id, "connection.connected",
             json_pack("{s:s, s:o, s:o, s:o, s:o}", "status", "connected", "dialpad_user_id",
                       id_json(me.user_id), "company_id", id_json(me.company_id), "office_id",
                       id_json(me.office_id), "webhook_id", id_json(reg.webhook_id)));
done:
    if (leased)
        lease_release(s, db, app_id);
    cti_seal_wipe(secret, sizeof secret);
    cti_dp_token_free(&tok);
    cti_dpconn_row_free(&old);
}

/* ---- disconnecting ------------------------------------------------------------------------------ */

/* Deletes what row registered and revokes its token, refreshing once when
 * Dialpad refuses the token (the lease is held). Appends what is left at
 * Dialpad to left. */
static void undo_connection(const cti_dpconn_t *s, cti_db_t *db, const cti_dpconn_row_t *row,
                            json_t *left, const char *rid)
{
    reg_t reg = {.webhook_id = row->webhook_id};
    subs_parse(row->subscriptions, &reg);
    char *token = open_token(s, row->app_id, "access_token", row->access_token);
    bool unauthorized = false, revoked = false;
    if (token)
        unregister(s, token, &reg, &unauthorized, rid);
    if (token && unauthorized &&
        refresh(s, db, row->app_id, row->access_token, true, rid) == 0) {
        cti_dpconn_row_t now;
        cti_seal_wipe_free(token);
        token = cti_dpconn_get(db, row->app_id, &now) == 0
                    ? open_token(s, row->app_id, "access_token", now.access_token)
                    : NULL;
        cti_dpconn_row_free(&now);
        if (token)
            unregister(s, token, &reg, &unauthorized, rid);
    }
    if (token && !unauthorized)
        revoked = deauthorize(s, token, rid);
    remaining(&reg, left);
    if (!revoked && !unauthorized)
        json_array_append_new(left, json_string("oauth2/authorization"));
    cti_seal_wipe_free(token);
}

int cti_dpconn_disconnect(cti_dpconn_t *s, const char *app_id, const cti_dpconn_who_t *who,
                          json_t **status)
{
    const char *rid = who->request_id;
    cti_db_t *db = cti_store_db(s->o.store);
    json_t *left = json_array();
    cti_dpconn_row_t row = {0};
    *status = NULL;
    int rc = lease_wait(s, db, app_id, LEASE_WAIT_MS);
    if (rc != 0) {
        json_decref(left);
        return rc == CTI_ELIMIT ? CTI_EUNAVAILABLE : rc;
    }
    if ((rc = cti_dpconn_get(db, app_id, &row)) == CTI_ENOTFOUND) {
        rc = 0;
        goto answer; /* nothing to do: the same answer */
    }
    if (rc != 0)
        goto done;
    undo_connection(s, db, &row, left, rid);
    int64_t now = cti_now_ms();
    char *detail = json_text(json_pack("{s:O}", "left_at_dialpad", left));
    rc = cti_db_begin(db);
    if (rc == 0 && (rc = cti_dpconn_delete(db, app_id)) == 0)
        rc = cti_audit_add(db, app_id, who->actor, "connection.disconnected", detail,
                           who->client_addr, rid, now);
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    free(detail);
    if (rc != 0)
        goto done;
    cti_log(CTI_LOG_INFO, rid, "dialpad: app disconnected", CTI_LS("app_id", app_id),
            CTI_LI("left_at_dialpad", (int64_t)json_array_size(left)));
    lease_release(s, db, app_id);
    announce(s, app_id, "connection.disconnected",
             json_pack("{s:s, s:O}", "status", "not_connected", "left_at_dialpad", left));
answer:
    *status = status_object(s, NULL);
    json_object_set(*status, "left_at_dialpad", left);
done:
    lease_release(s, db, app_id);
    cti_dpconn_row_free(&row);
    json_decref(left);
    return rc;
}

/* ---- key rotation ------------------------------------------------------------------------------- */

typedef struct {
    cti_dpconn_row_t *rows;
    int n, cap;
} rows_t;

static int copy_row(const cti_dpconn_row_t *r, void *ud)
{
    rows_t *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->rows = cti_realloc(l->rows, (size_t)l->cap * sizeof *l->rows);
    }
    cti_dpconn_row_t *c = &l->rows[l->n++];
    *c = *r;
    c->access_token = cti_strdup(r->access_token);
    c->refresh_token = r->refresh_token ? cti_strdup(r->refresh_token) : NULL;
    c->subscriptions = cti_strdup(r->subscriptions ? r->subscriptions : "[]");
    return 0;
}

/* Seals r's tokens under the current key if either is sealed under an old
 * one. 1 rewritten, 0 nothing to do, or a store error. */
static int reseal_row(const cti_dpconn_t *s, cti_db_t *db, const cti_dpconn_row_t *r)
{
    const cti_seal_keys_t *k = s->o.keys;
    if (!cti_seal_needs_reseal(k, r->access_token) &&
        !(r->refresh_token && cti_seal_needs_reseal(k, r->refresh_token)))
        return 0;
    char *a = open_token(s, r->app_id, "access_token", r->access_token);
    char *f = r->refresh_token ? open_token(s, r->app_id, "refresh_token", r->refresh_token)
                               : NULL;
    int rc = 0;
    if (a && (f || !r->refresh_token)) {
        char *na = seal_token(s, r->app_id, "access_token", a);
        char *nf = seal_token(s, r->app_id, "refresh_token", f);
        rc = cti_dpconn_reseal(db, r->app_id, r->access_token, r->refresh_token, na, nf);
        rc = rc == 0 ? 1 : rc == CTI_ENOTFOUND ? 0 : rc; /* changed meanwhile: not ours */
        free(na);
        free(nf);
    }
    cti_seal_wipe_free(a);
    cti_seal_wipe_free(f);
    return rc;
}

int cti_dpconn_reseal_all(cti_dpconn_t *s)
{
    cti_db_t *db = cti_store_db(s->o.store);
    rows_t l = {0};
    int rc = cti_dpconn_list_all(db, copy_row, &l), count = 0;
    for (int i = 0; i < l.n; i++) {
        int r = rc == 0 ? reseal_row(s, db, &l.rows[i]) : 0;
        if (r < 0)
            rc = r;
        count += r > 0;
        cti_dpconn_row_free(&l.rows[i]);
    }
    free(l.rows);
    return rc != 0 ? rc : count;
}

/* ---- metrics ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t connected, broken;
} census_t;

static int count_row(const cti_dpconn_row_t *r, void *ud)
{
    census_t *c = ud;
    if (!strcmp(r->status, "connected"))
        c->connected++;
    else
        c->broken++;
    return 0;
}

/* cti_dialpad_connections{status}: read when /metrics is scraped (few rows). */
static int census(void *ud, int64_t *connected, int64_t *broken)
{
    cti_dpconn_t *s = ud;
    census_t c = {0};
    int rc = cti_dpconn_list_all(cti_store_db(s->o.store), count_row, &c);
    *connected = c.connected;
    *broken = c.broken;
    return rc;
}

/* ---- lifecycle ----------------------------------------------------------------------------------- */

cti_dpconn_t *cti_dpconn_start(const cti_dpconn_options_t *o)
{
    cti_dpconn_t *s = cti_calloc(1, sizeof *s);
    s->o = *o;
    cti_uuid4(s->owner);
    pthread_mutex_init(&s->mu, NULL);
    cti_cond_init_mono(&s->cv);
    if (o->cfg->dialpad_redirect_uri)
        snprintf(s->redirect_uri, sizeof s->redirect_uri, "%s", o->cfg->dialpad_redirect_uri);
    else
        snprintf(s->redirect_uri, sizeof s->redirect_uri, "%s/auth/dialpad/callback",
                 o->cfg->public_base_url);
    if (o->refresh_tick_ms > 0) { /* the server's own, not a test's */
        /* SQLite serves one instance: a lease on an app left by a process that died
         * (kill -9 mid-refresh) is its own; without this, that app's refreshes and
         * connects would wait for it to run out (LEASE_TTL_MS) */
        if (!cti_store_has(o->store, CTI_CAP_SKIP_LOCKED) &&
            cti_lease_release_prefix(cti_store_db(o->store), "dialpad:") != 0)
            cti_log(CTI_LOG_WARN, NULL, "dialpad: could not drop the leases of a previous run",
                    CTI_LS("error", cti_db_errmsg(cti_store_db(o->store))));
        cti_metrics_dialpad_connections(census, s);
        if (pthread_create(&s->thread, NULL, refresher, s) != 0)
            cti_fatal("dialpad: cannot start the refresher thread");
        s->running = true;
    }
    return s;
}

void cti_dpconn_stop(cti_dpconn_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->running)
        pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

const char *cti_dpconn_owner(const cti_dpconn_t *s)
{
    return s->owner;
}

bool cti_dpconn_configured(const cti_dpconn_t *s)
{
    return s->o.cfg->dialpad_client_id && s->o.cfg->dialpad_client_secret;
}

const char *cti_dpconn_redirect_uri(const cti_dpconn_t *s)
{
    return s->redirect_uri;
}
