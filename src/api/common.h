/*
 * common.h (api) — what every endpoint file uses: the auth guards, strict
 * reading of JSON bodies (a bad or unknown field is a 400 naming it), list
 * paging, output formats (ids as decimal strings, ISO times), and mapping
 * store errors to responses. Internal to src/api/. Pool threads.
 */
#ifndef CTI_API_COMMON_H
#define CTI_API_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api.h"
#include "core/jw.h"

/* Admin guard: true when the request carries the admin token (even from a
 * braked address) and its address is within RATE_LIMIT_ADMIN (api/limits.h);
 * otherwise the response is set (401 missing, 403 wrong, 429 from a braked
 * address or over the rate limit). */
bool cti_api_admin(cti_http_req_t *req, cti_api_t *api);
/* Tenant guard: true and *who filled when the request carries a usable API
 * key (X-API-Key, x-app-api-key or Authorization: Bearer) and the app is
 * within RATE_LIMIT_API (api/limits.h); else the response is set (401, 429
 * over the limit or braked -- a request without a key counts against its
 * address's RATE_LIMIT_ADMIN --, or 503 when the database cannot be asked) -- or the
 * request is suspended while a verifier thread runs bcrypt, and the handler
 * runs again from the start once the key is verified (cti_http_resume_rerun).
 * So a handler calls it before doing anything it must not do twice. */
bool cti_api_tenant(cti_http_req_t *req, cti_api_t *api, cti_principal_t *who);
/* The same guard for a key found elsewhere (key NULL: none was presented). */
bool cti_api_tenant_key(cti_http_req_t *req, cti_api_t *api, const char *key,
                        cti_principal_t *who);
/* The key of the tenant headers (X-API-Key, x-app-api-key, Bearer), or NULL. */
const char *cti_api_presented_key(cti_http_req_t *req);

/* Sets the response for a store error: 503 unavailable, else 500 (logged). */
void cti_api_store_error(cti_http_req_t *req, int rc, const char *what);

/* Body checks. Each returns false after setting a 400 naming the field. */
bool cti_api_only_fields(cti_http_req_t *req, json_t *body, const char *const *allowed);
/* *out NULL when absent (and not required). Trims nothing; rejects empty and
 * over max_chars characters, and control characters. */
bool cti_api_string_field(cti_http_req_t *req, json_t *body, const char *name, bool required,
                          size_t max_chars, const char **out);
/* present is false when absent. */
bool cti_api_bool_field(cti_http_req_t *req, json_t *body, const char *name, bool *present,
                        bool *out);
/* Whole number in [lo, hi]; *present false when absent. */
bool cti_api_int_field(cti_http_req_t *req, json_t *body, const char *name, int64_t lo,
                       int64_t hi, bool *present, int64_t *out);
/* A Dialpad id: a positive int64 given as a JSON number or a decimal string. */
bool cti_api_id_value(json_t *v, int64_t *out);
bool cti_api_id_field(cti_http_req_t *req, json_t *body, const char *name, int64_t *out);
/* A Dialpad id in a path or query parameter; 400 naming it when bad. */
bool cti_api_id_param(cti_http_req_t *req, const char *name, const char *text, int64_t *out);

/* An optional ISO 8601 time in the query (?from=, ?to=); *out 0 when absent.
 * False after a 400 naming it. */
bool cti_api_time_param(cti_http_req_t *req, const char *name, int64_t *out);
/* Answers a single-record GET: 200 with obj, 404 naming what/id, or the store error. */
void cti_api_answer_one(cti_http_req_t *req, int rc, json_t *obj, const char *what, int64_t id);

/* Number of UTF-8 characters in s. */
size_t cti_api_utf8_len(const char *s);

/* ?limit= (default 50, 1..500) and ?cursor= (opaque). cursor_key/tiebreak are
 * left untouched when no cursor was given. False after a 400. */
bool cti_api_paging(cti_http_req_t *req, int *limit, bool *has_cursor, int64_t *cursor_key,
                    char *tiebreak, size_t cap);
/* One page of a list being built, as JSON text ({"data":[ and the items so
 * far), and where the last item stands (the position the next page's cursor
 * starts after). */
typedef struct {
    cti_jw_t out;
    int n;
    int64_t last_key;  /* the last item's sort key... */
    char last_tie[40]; /* ...and tie-breaker ("" when the key alone is unique) */
    bool resume;       /* a short page goes on after (resume_key, resume_tie) */
    int64_t resume_key;
    char resume_tie[40];
} cti_api_page_t;
/* A page ready to fill. */
cti_api_page_t cti_api_page(void);
/* Appends item (stolen) at position (key, tie); tie may be NULL. */
void cti_api_page_add(cti_api_page_t *p, json_t *item, int64_t key, const char *tie);
/* Starts an item at position (key, tie) that the caller writes as text to the
 * returned writer. */
cti_jw_t *cti_api_page_item(cti_api_page_t *p, int64_t key, const char *tie);
/* Answers 200 with w's JSON text (w is empty after). */
void cti_api_answer_text(cti_http_req_t *req, cti_jw_t *w);
/* A page that ends short with more to read (a bounded walk stopped): its
 * cursor goes on after (key, tie), the last position read. */
void cti_api_page_resume(cti_api_page_t *p, int64_t key, const char *tie);
/* Answers a list query: the store error when rc < 0, else {"data", "next_cursor"}
 * with a cursor after the last item when the page is full (or after the resume
 * position of a short one). Frees the page. */
void cti_api_answer_page(cti_http_req_t *req, int rc, cti_api_page_t *p, int limit,
                         const char *what);

/* Output helpers: new references. */
json_t *cti_api_id_json(int64_t id);   /* "6019124213350400" */
json_t *cti_api_time_json(int64_t ms); /* ISO string, or null when ms == 0 */

/* Where a request comes from, copied for work that outlives the handler. */
typedef struct {
    char request_id[64];
    char client_addr[64];
} cti_api_origin_t;
void cti_api_origin(cti_http_req_t *req, cti_api_origin_t *out);

/* Runs fn(job) on a job thread (core/jobs.h) while req waits suspended; fn
 * answers and resumes req (cti_http_resume) and frees job. Returns true when
 * queued; false after answering 503 (the job queue is full or stopping):
 * then job is still the caller's to free. */
bool cti_api_defer(cti_http_req_t *req, cti_api_t *api, void (*fn)(void *job), void *job);

/* Records an audit entry (best effort: a failure is logged, not returned). */
void cti_api_audit(cti_http_req_t *req, cti_api_t *api, const char *app_id, const char *actor,
                   const char *action, json_t *detail /* stolen, may be NULL */);

/* An optional JSON object body: absent or empty is fine (*body NULL), anything
 * else must be an object (else a 400 is sent and false returned). */
bool cti_api_optional_object_body(cti_http_req_t *req, json_t **body);

#endif
