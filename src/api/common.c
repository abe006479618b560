/* common.c (api) — see common.h. */
#include "api/common.h"
#include "api/limits.h"
#include "core/jobs.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

#include <stdio.h>
#include <string.h>

/* ---- guards ------------------------------------------------------------------------- */

/* 429 after the brake (auth.h): with Retry-After, the seconds until it lifts. */
static void rate_limited(cti_http_req_t *req, int retry_after_s, const char *msg)
{
    char secs[16];
    snprintf(secs, sizeof secs, "%d", retry_after_s > 0 ? retry_after_s : 1);
    cti_http_add_header(req, "Retry-After", secs);
    cti_http_error(req, 429, "rate_limited", "%s", msg);
}

static const char braked_msg[] =
    "too many failed authentication attempts from this address or for this key; retry later";

bool cti_api_admin(cti_http_req_t *req, cti_api_t *api)
{
    if (!cti_api_limit_addr(req, api, CTI_LIMIT_ADMIN))
        return false;
    cti_auth_attempt_t at = {.addr = cti_http_client_addr(req)};
    int rc = cti_admin_verify(api->auth, cti_http_header(req, "Authorization"), &at);
    if (rc == 0)
        return true;
    if (rc == CTI_ELIMIT) {
        rate_limited(req, at.retry_after_s, braked_msg);
        return false;
    }
    cti_api_audit(req, api, NULL, "anonymous", "admin.auth_failed",
                  json_pack("{s:s, s:s}", "path", cti_http_path(req), "reason",
                            rc == CTI_ENOTFOUND ? "missing" : "wrong"));
    if (rc == CTI_ENOTFOUND)
        cti_http_error(req, 401, "unauthorized",
                       "admin endpoints need Authorization: Bearer <INTERNAL_API_SECRET>");
    else
        cti_http_error(req, 403, "forbidden", "the admin token is not valid");
    return false;
}

const char *cti_api_presented_key(cti_http_req_t *req)
{
    const char *k = cti_http_header(req, "X-API-Key");
    if (!k)
        k = cti_http_header(req, "x-app-api-key");
    if (!k) {
        const char *auth = cti_http_header(req, "Authorization");
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
            for (k = auth + 7; *k == ' '; k++)
                ;
    }
    return k && *k ? k : NULL;
}

bool cti_api_tenant(cti_http_req_t *req, cti_api_t *api, cti_principal_t *who)
{
    return cti_api_tenant_key(req, api, cti_api_presented_key(req), who);
}

/* Waiting for bcrypt (auth.h): the request sleeps, and its pool thread serves others. */
static void suspend_request(void *req)
{
    cti_http_suspend(req);
}

/* On a verifier thread: a verified key is remembered, so the handler runs
 * again and finds it; a wrong one is answered here. */
static void key_verified(void *ctx, int rc)
{
    cti_http_req_t *req = ctx;
    if (rc == 0) {
        cti_http_resume_rerun(req);
        return;
    }
    cti_http_error(req, 401, "unauthorized", "the API key is not valid");
    cti_http_resume(req);
}

bool cti_api_tenant_key(cti_http_req_t *req, cti_api_t *api, const char *key,
                        cti_principal_t *who)
{
    if (!key) {
        if (!cti_api_limit_addr(req, api, CTI_LIMIT_ANON))
            return false;
        cti_http_error(req, 401, "unauthorized",
                       "an API key is required: send it as X-API-Key: <key>");
        return false;
    }
    cti_auth_attempt_t at = {.addr = cti_http_client_addr(req), .suspend = suspend_request,
                             .done = key_verified, .ctx = req};
    int rc = cti_apikey_verify(api->auth, cti_store_db(api->store), key, &at, who);
    switch (rc) {
    case 0:
        return cti_api_limit_app(req, api, who->app_id);
    case CTI_AUTH_PENDING: /* suspended: answered, or run again, by key_verified */
        return false;
    case CTI_ELIMIT:
        rate_limited(req, at.retry_after_s,
                     at.busy ? "too many API keys are being verified at once; retry shortly"
                             : braked_msg);
        return false;
    case CTI_EUNAVAILABLE:
        cti_http_error(req, 503, "unavailable", "the database does not answer; retry shortly");
        return false;
    default:
        cti_http_error(req, 401, "unauthorized", "the API key is not valid");
        return false;
    }
}

void cti_api_store_error(cti_http_req_t *req, int rc, const char *what)
{
    CTI_METRIC_INC(store_errors[rc == CTI_EUNAVAILABLE ? CTI_STORE_ERR_UNAVAILABLE
                                                       : CTI_STORE_ERR_DB]);
    if (rc == CTI_EUNAVAILABLE) {
        cti_http_error(req, 503, "unavailable", "the database does not answer; retry shortly");
        return;
    }
    cti_log(CTI_LOG_ERROR, cti_http_request_id(req), "store error", CTI_LS("while", what),
            CTI_LS("error", cti_strerror(rc)));
    cti_http_error(req, 500, "internal_error", "the server failed while %s", what);
}

/* ---- body fields ------------------------------------------------------------------------ */

bool cti_api_only_fields(cti_http_req_t *req, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = !strcmp(*a, key);
        if (!ok) {
            cti_http_error(req, 400, "invalid_request", "unknown field '%.64s'", key);
            return false;
        }
    }
    return true;
}

size_t cti_api_utf8_len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

bool cti_api_string_field(cti_http_req_t *req, json_t *body, const char *name, bool required,
                          size_t max_chars, const char **out)
{
    json_t *v = json_object_get(body, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            cti_http_error(req, 400, "invalid_request", "'%s' is required", name);
        return !required;
    }
    if (!json_is_string(v)) {
        cti_http_error(req, 400, "invalid_request", "'%s' must be a string", name);
        return false;
    }
    const char *s = json_string_value(v);
    bool ctrl = false;
    for (const unsigned char *p = (const unsigned char *)s; *p && !ctrl; p++)
        ctrl = *p < 0x20 || *p == 0x7f;
    if (json_string_length(v) != strlen(s) || ctrl) {
        cti_http_error(req, 400, "invalid_request", "'%s' must not contain control characters",
                       name);
        return false;
    }
    size_t n = cti_api_utf8_len(s);
    if (n == 0 || n > max_chars) {
        cti_http_error(req, 400, "invalid_request", "'%s' must be 1 to %zu characters", name,
                       max_chars);
        return false;
    }
    *out = s;
    return true;
}

bool cti_api_bool_field(cti_http_req_t *req, json_t *body, const char *name, bool *present,
                        bool *out)
{
    json_t *v = json_object_get(body, name);
    *present = v != NULL;
    if (!v)
        return true;
    if (!json_is_boolean(v)) {
        cti_http_error(req, 400, "invalid_request", "'%s' must be true or false", name);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

bool cti_api_int_field(cti_http_req_t *req, json_t *body, const char *name, int64_t lo,
                       int64_t hi, bool *present, int64_t *out)
{
    json_t *v = json_object_get(body, name);
    *present = v != NULL && !json_is_null(v);
    if (!*present)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        cti_http_error(req, 400, "invalid_request",
                       "'%s' must be a whole number from %lld to %lld", name, (long long)lo,
                       (long long)hi);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

bool cti_api_id_value(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out > 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return s[0] >= '1' && s[0] <= '9' && cti_parse_i64(s, out) == 0 && *out > 0;
    }
    return false;
}

bool cti_api_id_field(cti_http_req_t *req, json_t *body, const char *name, int64_t *out)
{
    json_t *v = json_object_get(body, name);
    if (!v) {
        cti_http_error(req, 400, "invalid_request", "'%s' is required", name);
        return false;
    }
    if (!cti_api_id_value(v, out)) {
        cti_http_error(req, 400, "invalid_request",
                       "'%s' must be a Dialpad id: a positive whole number (string or number)",
                       name);
        return false;
    }
    return true;
}

bool cti_api_id_param(cti_http_req_t *req, const char *name, const char *text, int64_t *out)
{
    if (text && text[0] >= '1' && text[0] <= '9' && cti_parse_i64(text, out) == 0)
        return true;
    cti_http_error(req, 400, "invalid_request", "'%s' must be a Dialpad id (a positive number)",
                   name);
    return false;
}

bool cti_api_time_param(cti_http_req_t *req, const char *name, int64_t *out)
{
    const char *v = cti_http_query(req, name);
    *out = 0;
    if (!v || cti_parse_iso_time(v, out) == 0)
        return true;
    cti_http_error(req, 400, "invalid_request",
                   "'%s' must be an ISO 8601 time such as 2026-01-05T16:00:00Z", name);
    return false;
}

void cti_api_answer_one(cti_http_req_t *req, int rc, json_t *obj, const char *what, int64_t id)
{
    char doing[64];
    if (rc == 0 && obj) {
        cti_http_json(req, 200, obj);
        return;
    }
    json_decref(obj);
    if (rc == 0 || rc == CTI_ENOTFOUND) {
        cti_http_error(req, 404, "not_found", "no such %s: %lld", what, (long long)id);
        return;
    }
    snprintf(doing, sizeof doing, "reading the %s", what);
    cti_api_store_error(req, rc, doing);
}

/* ---- lists ------------------------------------------------------------------------------ */

bool cti_api_paging(cti_http_req_t *req, int *limit, bool *has_cursor, int64_t *cursor_key,
                    char *tiebreak, size_t cap)
{
    const char *l = cti_http_query(req, "limit"), *c = cti_http_query(req, "cursor");
    int64_t n = 50;
    if (l && (cti_parse_i64(l, &n) != 0 || n < 1 || n > 500)) {
        cti_http_error(req, 400, "invalid_request", "'limit' must be a whole number from 1 to 500");
        return false;
    }
    *limit = (int)n;
    *has_cursor = c != NULL;
    if (c && cti_cursor_decode(c, cursor_key, tiebreak, cap) != 0) {
        cti_http_error(req, 400, "invalid_request",
                       "'cursor' is not valid: pass back the next_cursor of a previous page");
        return false;
    }
    return true;
}

cti_api_page_t cti_api_page(void)
{
    cti_api_page_t p = {0};
    cti_jw_lit(&p.out, "{\"data\":[");
    return p;
}

cti_jw_t *cti_api_page_item(cti_api_page_t *p, int64_t key, const char *tie)
{
    p->last_key = key;
    snprintf(p->last_tie, sizeof p->last_tie, "%s", tie ? tie : "");
    p->n++;
    cti_jw_item(&p->out);
    return &p->out;
}

void cti_api_page_add(cti_api_page_t *p, json_t *item, int64_t key, const char *tie)
{
    cti_jw_json(cti_api_page_item(p, key, tie), item);
    json_decref(item);
}

void cti_api_page_resume(cti_api_page_t *p, int64_t key, const char *tie)
{
    p->resume = true;
    p->resume_key = key;
    snprintf(p->resume_tie, sizeof p->resume_tie, "%s", tie ? tie : "");
}

void cti_api_answer_page(cti_http_req_t *req, int rc, cti_api_page_t *p, int limit,
                         const char *what)
{
    if (rc < 0) {
        cti_jw_free(&p->out);
        cti_api_store_error(req, rc, what);
        return;
    }
    char cursor[CTI_CURSOR_MAX];
    cti_jw_lit(&p->out, "]");
    cti_jw_key(&p->out, "next_cursor");
    if (p->n == limit) {
        cti_cursor_encode(p->last_key, p->last_tie, cursor);
        cti_jw_str(&p->out, cursor);
    } else if (p->resume) {
        cti_cursor_encode(p->resume_key, p->resume_tie, cursor);
        cti_jw_str(&p->out, cursor);
    } else {
        cti_jw_null(&p->out);
    }
    cti_jw_lit(&p->out, "}");
    cti_api_answer_text(req, &p->out);
}

void cti_api_answer_text(cti_http_req_t *req, cti_jw_t *w)
{
    size_t len;
    char *text = cti_jw_take(w, &len);
    cti_http_respond(req, 200, CTI_HTTP_JSON, text, len);
}

json_t *cti_api_id_json(int64_t id)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    return json_string(buf);
}

json_t *cti_api_time_json(int64_t ms)
{
    if (!ms)
        return json_null();
    char buf[CTI_ISO_TIME_LEN];
    cti_iso_time(ms, buf);
    return json_string(buf);
}

void cti_api_audit(cti_http_req_t *req, cti_api_t *api, const char *app_id, const char *actor,
                   const char *action, json_t *detail)
{
    char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    int rc = cti_audit_add(cti_store_db(api->store), app_id, actor, action, text,
                           cti_http_client_addr(req), cti_http_request_id(req), cti_now_ms());
    if (rc != 0)
        cti_log(CTI_LOG_WARN, cti_http_request_id(req), "audit: entry not recorded",
                CTI_LS("action", action), CTI_LS("error", cti_strerror(rc)));
    free(text);
}

void cti_api_origin(cti_http_req_t *req, cti_api_origin_t *out)
{
    snprintf(out->request_id, sizeof out->request_id, "%s", cti_http_request_id(req));
    snprintf(out->client_addr, sizeof out->client_addr, "%s", cti_http_client_addr(req));
}

bool cti_api_defer(cti_http_req_t *req, cti_api_t *api, void (*fn)(void *job), void *job)
{
    cti_http_suspend(req); /* before: the job may answer at once */
    if (cti_jobs_submit(api->jobs, fn, job) == 0)
        return true;
    cti_http_error(req, 503, "unavailable", "the server is busy; retry");
    cti_http_resume(req);
    return false;
}

bool cti_api_optional_object_body(cti_http_req_t *req, json_t **body)
{
    size_t len;
    cti_http_body(req, &len);
    *body = NULL;
    if (len == 0)
        return true;
    *body = cti_http_json_object_body(req);
    return *body != NULL;
}
