/*
 * client.h — the one place that talks to Dialpad's API (libcurl).
 *
 * One thread, `cti-dialpad`, drives a curl multi handle. A request is a
 * message to it (a queue plus curl_multi_wakeup); its completion calls the
 * caller's function on that thread, so an HTTP handler can suspend its
 * request and resume it from the callback (as ingest does with
 * cti_http_suspend/resume). Background jobs use the blocking wrapper.
 *
 *   caller ──cti_dp_submit──▶ queue ──▶ cti-dialpad: curl multi ──▶ Dialpad
 *      ▲                                    │ retries (backoff + jitter, Retry-After)
 *      └──────── done(resp, ud) ◀───────────┘
 *
 * Per request: method, path under DIALPAD_BASE_URL, a bearer token or none,
 * a JSON or form body, and whether repeating it is safe. Timeouts: connect
 * 5 s, whole attempt 15 s. 429, 5xx and connection errors are retried only
 * when the request is safe to repeat (GET, HEAD, PUT, DELETE, or marked
 * idempotent); a connection that was refused or never resolved is retried
 * for any request, since nothing was sent. Redirects are not followed.
 *
 * Never logged: tokens, secrets, bodies, query strings. One log line per
 * finished request: method, path, status, attempts, ms.
 *
 * Also here, pure and unit-tested: Dialpad's error envelope and the OAuth
 * error shape made into a sentence, the token response, ids, list pages.
 */
#ifndef CTI_DIALPAD_CLIENT_H
#define CTI_DIALPAD_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* ---- the client ------------------------------------------------------------------ */

typedef struct cti_dp_client cti_dp_client_t;

typedef struct {
    const char *base_url;   /* e.g. https://dialpad.com (copied; trailing '/' ignored) */
    int connect_timeout_ms; /* 5000 */
    int total_timeout_ms;   /* 15000: one attempt, connect to last byte */
    int max_attempts;       /* 3: first try plus two retries */
    int backoff_base_ms;    /* 500: delay before retry n is base*2^(n-1), jittered */
    int backoff_max_ms;     /* 8000 */
    int retry_after_max_ms; /* 30000: a longer Retry-After is not waited for */
    size_t max_body_bytes;  /* 4 MiB: a longer answer fails the request */
} cti_dp_options_t;

/* Fills o with the defaults above for base_url. */
void cti_dp_options_default(cti_dp_options_t *o, const char *base_url);

typedef enum { CTI_DP_BODY_NONE, CTI_DP_BODY_JSON, CTI_DP_BODY_FORM } cti_dp_body_kind_t;

typedef struct {
    const char *method; /* "GET", "POST", "PATCH", "PUT", "DELETE" */
    const char *path;   /* "/api/v2/users/me", may carry a query string */
    const char *bearer; /* access token, or NULL (never logged) */
    cti_dp_body_kind_t body_kind;
    const char *body; /* JSON text or x-www-form-urlencoded text; copied */
    size_t body_len;
    bool idempotent;        /* a POST/PATCH that is safe to repeat */
    int max_attempts;       /* 0: the client's default; 1: never retried */
    const char *operation;  /* short name for logs ("users.me"); NULL: none */
    const char *request_id; /* for logs; NULL: none */
} cti_dp_request_t;

/* Dialpad's error, read from the body of a non-2xx answer. */
typedef struct {
    char code[64];     /* OAuth "error" ("invalid_grant") or the envelope's reason
                          ("unauthorized"); "" when none */
    char message[256]; /* what Dialpad said ("User is currently on a call"); "" when none */
} cti_dp_error_t;

typedef struct {
    int status;     /* HTTP status of the last attempt; 0 when there was none */
    int err;        /* 0 when Dialpad answered (any status); CTI_EUNAVAILABLE
                       (connection failed, timed out, client stopped), CTI_ELIMIT
                       (answer too large) or CTI_EINVAL (bad request) otherwise */
    bool timed_out; /* the last attempt ran out of time */
    int attempts;
    int64_t elapsed_ms; /* first attempt to completion, retries included */
    int retry_after_s;  /* the last answer's Retry-After in seconds; -1 when none */
    char *body;         /* the answer's body, NUL-terminated (empty when none) */
    size_t body_len;
    char content_type[128];
    char location[1024];  /* Location header (redirects are not followed); "" when none */
    cti_dp_error_t error; /* filled for non-2xx answers */
    char message[400];    /* one sentence for a person when not 2xx: Dialpad's words or
                             what went wrong on the way; "" on success */
} cti_dp_response_t;

/* Called on the cti-dialpad thread when a request is finished (or the client
 * stops). The callee owns resp and frees it with cti_dp_response_free. It
 * must not block: hand work to another thread. */
typedef void (*cti_dp_done_fn)(cti_dp_response_t *resp, void *ud);

/* Starts the cti-dialpad thread. Call from the main thread before anything
 * else uses libcurl (it runs curl_global_init once). Returns 0 and *out, or
 * CTI_EINVAL (bad options) / CTI_EIO (curl or thread could not start). */
int cti_dp_client_start(const cti_dp_options_t *opt, cti_dp_client_t **out);

/* Stops the thread: requests queued, waiting to retry or in flight are
 * completed with err CTI_EUNAVAILABLE ("client stopped") before it returns.
 * Then frees the client. NULL is ignored. Not from the cti-dialpad thread. */
void cti_dp_client_stop(cti_dp_client_t *c);

/* Queues a request (everything in req is copied). done is always called
 * exactly once, on the cti-dialpad thread, unless this returns non-zero:
 * CTI_EINVAL (bad method or path) or CTI_EUNAVAILABLE (stopping). Any thread. */
int cti_dp_submit(cti_dp_client_t *c, const cti_dp_request_t *req, cti_dp_done_fn done, void *ud);

/* Submits and waits. Returns the response (the caller frees it); a request
 * that could not be queued gives a response with err set. Any thread except
 * cti-dialpad (asserted). */
cti_dp_response_t *cti_dp_call(cti_dp_client_t *c, const cti_dp_request_t *req);

/* Frees a response (NULL ignored). */
void cti_dp_response_free(cti_dp_response_t *r);

/* True for a response with a 2xx status. */
bool cti_dp_ok(const cti_dp_response_t *r);

/* ---- retry policy (pure; exposed for tests) -------------------------------------- */

/* What the last attempt gave: an HTTP status, or a transport failure. */
typedef enum {
    CTI_DP_ANSWERED, /* status holds Dialpad's answer */
    CTI_DP_NOT_SENT, /* could not connect or resolve: nothing reached Dialpad */
    CTI_DP_LOST,     /* timed out or broke after sending: it may have arrived */
} cti_dp_outcome_t;

/* Milliseconds to wait before the next attempt, or -1 for none. attempt is
 * the number of attempts made so far (>= 1); retry_after_s is -1 when the
 * answer had none; jitter is a random value in [0, 1). */
int64_t cti_dp_retry_delay(const cti_dp_options_t *o, cti_dp_outcome_t outcome, int status,
                           bool safe, int attempt, int max_attempts, int retry_after_s,
                           double jitter);

/* True when the method is safe to repeat by its nature (GET HEAD PUT DELETE OPTIONS). */
bool cti_dp_method_idempotent(const char *method);

/* Parses a Retry-After value (delta seconds, or an HTTP-date relative to
 * now_s). Returns seconds (>= 0), or -1 when unreadable. */
int cti_dp_parse_retry_after(const char *value, int64_t now_s);

/* ---- Dialpad's formats (pure; any thread) ---------------------------------------- */

/* Reads an error body: the REST envelope {"error": {"code", "message",
 * "errors": [{"message", "reason"}]}}, the OAuth shape {"error",
 * "error_description"}, or {"message"}. Returns 0 when one was recognised,
 * CTI_EINVAL otherwise (out is then empty). */
int cti_dp_parse_error(const char *body, size_t len, cti_dp_error_t *out);

/* One sentence for a person about a non-2xx answer, e.g.
 * "Dialpad answered 401 (unauthorized): unauthorized: invalid token".
 * content_type may be NULL. Writes into out (always NUL-terminated). */
void cti_dp_error_text(int status, const char *body, size_t len, const char *content_type,
                       char *out, size_t cap);

/* An OAuth token response (POST /oauth2/token). */
typedef struct {
    char *access_token;   /* never NULL after a successful parse */
    char *refresh_token;  /* NULL when Dialpad gave none */
    int64_t expires_in_s; /* -1 when absent or null (Dialpad's lifetime is undocumented) */
} cti_dp_token_t;

#define CTI_DP_TOKEN_MAX 4096 /* longest token accepted, bytes */

/* Parses a token response: access_token a non-empty string of printable
 * ASCII; expires_in a whole number of seconds as a JSON number or decimal
 * string, or absent/null; refresh_token a string, or absent/null/"" (none);
 * token_type absent/null or "bearer" in any case. Unknown fields are
 * ignored. Returns 0, or CTI_EINVAL with out zeroed and a sentence in why
 * (never a token). out is released with cti_dp_token_free. */
int cti_dp_parse_token(const char *body, size_t len, cti_dp_token_t *out, char *why, size_t whycap);
/* Wipes and frees the tokens; out is zeroed. */
void cti_dp_token_free(cti_dp_token_t *t);

/* Reads obj[key] as a Dialpad id (a positive int64, as a JSON number or a
 * decimal string, exactly). False when absent or anything else. */
bool cti_dp_get_id(json_t *obj, const char *key, int64_t *out);

/* A list page {"items": [...], "cursor": "..."}: *items borrows the array
 * (an absent "items" is an empty page, given as NULL), the next cursor is
 * copied into cursor ("" when there is none: the last page). Returns 0 or
 * CTI_EINVAL (not an object, items not an array, cursor not a string or too long). */
int cti_dp_page_parse(json_t *root, json_t **items, char *cursor, size_t cap);

/* path with cursor= (percent-encoded) appended after '?' or '&'. Returns 0,
 * or CTI_ELIMIT when it does not fit in cap. */
int cti_dp_page_path(const char *path, const char *cursor, char *out, size_t cap);

/* Called for each item of a list; non-zero stops the walk with that value. */
typedef int (*cti_dp_item_fn)(json_t *item, void *ud);

/* Blocking: walks every page of the list at req->path (a GET), calling fn for
 * each item, at most max_pages pages. Returns 0 when the last page was read;
 * fn's non-zero value; CTI_ELIMIT when max_pages ran out or the cursor came
 * back unchanged; CTI_EINVAL for a page that is not a list; or the failing
 * request's error (CTI_EUNAVAILABLE, or CTI_EAUTH for 401/403, CTI_ENOTFOUND
 * for 404, CTI_EINVAL for other non-2xx). *failed (may be NULL) receives the
 * failing response (the caller frees it), else NULL. */
int cti_dp_list_all(cti_dp_client_t *c, const cti_dp_request_t *req, int max_pages,
                    cti_dp_item_fn fn, void *ud, cti_dp_response_t **failed);

/* Appends name=value, percent-encoded, to a form body (a malloc'd string the
 * caller frees; *form may be NULL to start). */
void cti_dp_form_add(char **form, const char *name, const char *value);

#endif
