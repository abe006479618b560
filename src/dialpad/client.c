/*
 * client.c — see client.h. Two halves: the pure readers of Dialpad's formats
 * (errors, tokens, ids, pages) and the cti-dialpad thread.
 *
 * Threads: cti_dp_submit / cti_dp_call / cti_dp_list_all from any thread; the
 * queue (c->mu) is the only state they share with cti-dialpad, which owns
 * the multi handle, every job after it is queued, and the retry list. The
 * pure functions run on any thread.
 *
 * Must never: log a token, a secret, a body or a query string; retry a
 * request that may have reached Dialpad unless the caller said repeating it
 * is safe; call a completion twice or not at all.
 */
#include "dialpad/client.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "dialpad/event.h"

#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

/* ---- options and small helpers --------------------------------------------------- */

void cti_dp_options_default(cti_dp_options_t *o, const char *base_url)
{
    *o = (cti_dp_options_t){.base_url = base_url,
                            .connect_timeout_ms = 5000,
                            .total_timeout_ms = 15000,
                            .max_attempts = 3,
                            .backoff_base_ms = 500,
                            .backoff_max_ms = 8000,
                            .retry_after_max_ms = 30000,
                            .max_body_bytes = 4 * 1024 * 1024};
}

bool cti_dp_method_idempotent(const char *method)
{
    static const char *const safe[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(safe); i++)
        if (method && !strcmp(method, safe[i]))
            return true;
    return false;
}

static bool known_method(const char *m)
{
    return m && (cti_dp_method_idempotent(m) || !strcmp(m, "POST") || !strcmp(m, "PATCH"));
}

/* Copies s into out as printable text: control bytes become spaces, bytes
 * that are not UTF-8 (a Content-Type header may hold any) '?', cut at a
 * character's boundary to fit. */
static void copy_text(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0, k; i < n && o + 1 < cap; i += k) {
        const unsigned char *p = (const unsigned char *)s + i;
        k = cti_utf8_char_len(p, n - i);
        if (k == 0) {
            k = 1;
            out[o++] = '?';
        } else if (k == 1) {
            out[o++] = *p < 0x20 || *p == 0x7f ? ' ' : (char)*p;
        } else {
            if (o + k >= cap)
                break;
            memcpy(out + o, p, k);
            o += k;
        }
    }
    out[o] = '\0';
}

static void copy_json_str(char *out, size_t cap, json_t *v)
{
    if (json_is_string(v))
        copy_text(out, cap, json_string_value(v), json_string_length(v));
}

static const char *reason_phrase(int status)
{
    static const struct {
        int status;
        const char *text;
    } phrases[] = {{400, "Bad Request"},        {401, "Unauthorized"},
                   {403, "Forbidden"},          {404, "Not Found"},
                   {405, "Method Not Allowed"}, {409, "Conflict"},
                   {413, "Payload Too Large"},  {422, "Unprocessable Entity"},
                   {429, "Too Many Requests"},  {500, "Internal Server Error"},
                   {502, "Bad Gateway"},        {503, "Service Unavailable"},
                   {504, "Gateway Timeout"}};
    for (size_t i = 0; i < CTI_ARRAY_LEN(phrases); i++)
        if (phrases[i].status == status)
            return phrases[i].text;
    return status >= 500 ? "server error" : status >= 400 ? "client error" : "";
}

/* ---- retry policy -------------------------------------------------------------------- */

static bool retryable_status(int status)
{
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

int64_t cti_dp_retry_delay(const cti_dp_options_t *o, cti_dp_outcome_t outcome, int status,
                           bool safe, int attempt, int max_attempts, int retry_after_s,
                           double jitter)
{
    assert(attempt >= 1);
    if (attempt >= max_attempts)
        return -1;
    /* Nothing was sent when the connection never opened: repeating cannot
     * apply anything twice. Otherwise only a request safe to repeat. */
    if (outcome == CTI_DP_ANSWERED ? !(safe && retryable_status(status))
                                   : outcome == CTI_DP_LOST && !safe)
        return -1;
    int64_t backoff = (int64_t)o->backoff_base_ms << (attempt - 1 < 20 ? attempt - 1 : 20);
    if (backoff > o->backoff_max_ms)
        backoff = o->backoff_max_ms;
    /* "equal jitter": half fixed, half random, so retries of many requests spread out */
    int64_t delay = backoff / 2 + (int64_t)(jitter * (double)(backoff - backoff / 2));
    if (outcome == CTI_DP_ANSWERED && retry_after_s >= 0) {
        int64_t ra = (int64_t)retry_after_s * 1000;
        if (ra > o->retry_after_max_ms)
            return -1; /* longer than we wait: the caller sees the 429/503 and its Retry-After */
        if (ra > delay)
            delay = ra;
    }
    return delay;
}

int cti_dp_parse_retry_after(const char *value, int64_t now_s)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n > 0 && isspace((unsigned char)value[n - 1]))
        n--;
    if (n == 0)
        return -1;
    if (strspn(value, "0123456789") == n) {
        if (n > 9)
            return 86400 * 365; /* absurdly far: larger than any wait we make */
        return atoi(value);
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    struct tm tm = {0};
    char buf[64];
    snprintf(buf, sizeof buf, "%.*s", (int)n, value);
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    int64_t at = (int64_t)timegm(&tm);
    return at <= now_s ? 0 : at - now_s > 86400 * 365 ? 86400 * 365 : (int)(at - now_s);
}

/* ---- errors ----------------------------------------------------------------------------- */

int cti_dp_parse_error(const char *body, size_t len, cti_dp_error_t *out)
{
    memset(out, 0, sizeof *out);
    json_t *root = body && len ? json_loadb(body, len, JSON_ALLOW_NUL, NULL) : NULL;
    int rc = CTI_EINVAL;
    if (!json_is_object(root))
        goto cleanup;
    json_t *e = json_object_get(root, "error");
    if (json_is_object(e)) { /* the REST envelope */
        json_t *first = json_array_get(json_object_get(e, "errors"), 0);
        copy_json_str(out->message, sizeof out->message, json_object_get(e, "message"));
        if (!out->message[0])
            copy_json_str(out->message, sizeof out->message, json_object_get(first, "message"));
        copy_json_str(out->code, sizeof out->code, json_object_get(first, "reason"));
        if (!out->code[0])
            copy_json_str(out->code, sizeof out->code, json_object_get(e, "status"));
    } else if (json_is_string(e)) { /* OAuth: {"error", "error_description"} */
        copy_json_str(out->code, sizeof out->code, e);
        copy_json_str(out->message, sizeof out->message,
                      json_object_get(root, "error_description"));
    } else {
        copy_json_str(out->message, sizeof out->message, json_object_get(root, "message"));
    }
    rc = out->code[0] || out->message[0] ? 0 : CTI_EINVAL;
cleanup:
    json_decref(root);
    return rc;
}

void cti_dp_error_text(int status, const char *body, size_t len, const char *content_type,
                       char *out, size_t cap)
{
    cti_dp_error_t e;
    if (cti_dp_parse_error(body, len, &e) == 0) {
        if (e.code[0] && e.message[0] && strcmp(e.code, e.message))
            snprintf(out, cap, "Dialpad answered %d (%s): %s", status, e.code, e.message);
        else
            snprintf(out, cap, "Dialpad answered %d: %s", status,
                     e.message[0] ? e.message : e.code);
        return;
    }
    char ctype[64] = "";
    if (content_type)
        copy_text(ctype, sizeof ctype, content_type, strcspn(content_type, ";"));
    const char *phrase = reason_phrase(status);
    if (len == 0)
        snprintf(out, cap, "Dialpad answered %d%s%s%s with an empty body", status,
                 *phrase ? " (" : "", phrase, *phrase ? ")" : "");
    else
        snprintf(out, cap,
                 "Dialpad answered %d%s%s%s with a %s body Dialpad's error format does "
                 "not describe",
                 status, *phrase ? " (" : "", phrase, *phrase ? ")" : "",
                 ctype[0] ? ctype : "untyped");
}

/* ---- tokens ----------------------------------------------------------------------------- */

/* A token fit for an Authorization header: printable ASCII, no blanks. */
static bool token_chars_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* expires_in: a whole number of seconds, as a number or a decimal string. */
static int read_expires_in(json_t *v, int64_t *out, char *why, size_t whycap)
{
    const int64_t max = 100LL * 366 * 86400; /* beyond a century is not a lifetime */
    int64_t n = -1;
    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= 0 && d <= (double)max)
            n = (int64_t)d;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!*s)
            return 0;
        if (strspn(s, "0123456789") != strlen(s) || cti_parse_i64(s, &n) != 0)
            n = -1;
    } else {
        snprintf(why, whycap, "expires_in is neither a number nor a string");
        return CTI_EINVAL;
    }
    if (n < 0 || n > max) {
        snprintf(why, whycap, "expires_in is not a whole number of seconds from 0 to %lld",
                 (long long)max);
        return CTI_EINVAL;
    }
    *out = n;
    return 0;
}

static int read_token_field(json_t *root, const char *name, bool required, char **out, char *why,
                            size_t whycap)
{
    json_t *v = json_object_get(root, name);
    *out = NULL;
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0 && !required)) {
        if (required)
            snprintf(why, whycap, "%s is missing", name);
        return required ? CTI_EINVAL : 0;
    }
    if (!json_is_string(v)) {
        snprintf(why, whycap, "%s is not a string", name);
        return CTI_EINVAL;
    }
    size_t n = json_string_length(v);
    if (n == 0 || n > CTI_DP_TOKEN_MAX || !token_chars_ok(json_string_value(v), n)) {
        snprintf(why, whycap, "%s is %s", name,
                 n == 0                 ? "empty"
                 : n > CTI_DP_TOKEN_MAX ? "longer than 4096 bytes"
                                        : "not printable ASCII without blanks");
        return CTI_EINVAL;
    }
    *out = cti_strndup(json_string_value(v), n);
    return 0;
}

int cti_dp_parse_token(const char *body, size_t len, cti_dp_token_t *out, char *why, size_t whycap)
{
    memset(out, 0, sizeof *out);
    out->expires_in_s = -1;
    snprintf(why, whycap, "ok");
    json_error_t jerr;
    json_t *root =
        body && len && len <= 65536 ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    int rc = CTI_EINVAL;
    if (!json_is_object(root)) {
        snprintf(why, whycap, "the token response is not a JSON object%s",
                 len > 65536 ? " (over 64 KiB)" : "");
        goto cleanup;
    }
    json_t *type = json_object_get(root, "token_type");
    if (type && !json_is_null(type) &&
        !(json_is_string(type) && !strcasecmp(json_string_value(type), "bearer"))) {
        char shown[40] = "";
        copy_json_str(shown, sizeof shown, type);
        snprintf(why, whycap, "token_type is \"%s\", not bearer", shown);
        goto cleanup;
    }
    if (read_token_field(root, "access_token", true, &out->access_token, why, whycap) != 0 ||
        read_token_field(root, "refresh_token", false, &out->refresh_token, why, whycap) != 0 ||
        read_expires_in(json_object_get(root, "expires_in"), &out->expires_in_s, why, whycap))
        goto cleanup;
    rc = 0;
cleanup:
    if (rc != 0)
        cti_dp_token_free(out);
    json_decref(root);
    return rc;
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    volatile char *p = s;
    while (*p)
        *p++ = 0;
    free(s);
}

void cti_dp_token_free(cti_dp_token_t *t)
{
    wipe_free(t->access_token);
    wipe_free(t->refresh_token);
    memset(t, 0, sizeof *t);
    t->expires_in_s = -1;
}

/* ---- ids, pages, forms ---------------------------------------------------------------- */

bool cti_dp_get_id(json_t *obj, const char *key, int64_t *out)
{
    return json_is_object(obj) && cti_dp_id(json_object_get(obj, key), out);
}

int cti_dp_page_parse(json_t *root, json_t **items, char *cursor, size_t cap)
{
    *items = NULL;
    cursor[0] = '\0';
    if (!json_is_object(root))
        return CTI_EINVAL;
    json_t *it = json_object_get(root, "items"), *cur = json_object_get(root, "cursor");
    if (it && !json_is_null(it) && !json_is_array(it))
        return CTI_EINVAL;
    if (cur && !json_is_null(cur) && (!json_is_string(cur) || json_string_length(cur) >= cap))
        return CTI_EINVAL;
    *items = json_is_array(it) ? it : NULL;
    if (json_is_string(cur))
        memcpy(cursor, json_string_value(cur), json_string_length(cur) + 1);
    return 0;
}

/* Percent-encodes s (everything but RFC 3986 unreserved). Returns bytes
 * written, or (size_t)-1 when it does not fit (with the NUL) in cap. */
static size_t pct_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool keep = isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (o + (keep ? 1 : 3) >= cap)
            return (size_t)-1;
        if (keep) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return o;
}

int cti_dp_page_path(const char *path, const char *cursor, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%scursor=", path, strchr(path, '?') ? "&" : "?");
    if (n < 0 || (size_t)n >= cap || pct_encode(cursor, out + n, cap - (size_t)n) == (size_t)-1)
        return CTI_ELIMIT;
    return 0;
}

void cti_dp_form_add(char **form, const char *name, const char *value)
{
    size_t have = *form ? strlen(*form) : 0;
    size_t need = have + 1 + 3 * (strlen(name) + strlen(value)) + 2;
    char *f = cti_realloc(*form, need);
    size_t o = have;
    if (o)
        f[o++] = '&';
    o += pct_encode(name, f + o, need - o);
    f[o++] = '=';
    pct_encode(value, f + o, need - o);
    *form = f;
}

/* ---- the client thread -------------------------------------------------------------- */

typedef struct job {
    struct job *next;
    /* the request, copied */
    char *method, *url, *log_path, *operation, *request_id, *auth, *body;
    size_t body_len;
    cti_dp_body_kind_t body_kind;
    bool safe;
    int max_attempts;
    cti_dp_done_fn done;
    void *ud;
    /* the attempt in flight */
    CURL *easy;
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    size_t limit; /* longest body accepted */
    bool too_big;
    char retry_after[64], content_type[128], location[1024];
    char errbuf[CURL_ERROR_SIZE];
    /* across attempts */
    int attempts;
    int64_t start_us, attempt_us, due_us;
} job_t;

struct cti_dp_client {
    cti_dp_options_t opt;
    char *base_url;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu; /* guards queue and stopping */
    job_t *queue, **queue_tail;
    bool stopping;
    /* cti-dialpad only */
    job_t *waiting;  /* retries not yet due */
    job_t *inflight; /* attempts on the multi handle */
    uint64_t rng;
};

static void job_free(job_t *j)
{
    if (j->easy)
        curl_easy_cleanup(j->easy);
    curl_slist_free_all(j->headers);
    wipe_free(j->auth);
    wipe_free(j->body); /* bodies may carry client secrets or codes */
    free(j->method);
    free(j->url);
    free(j->log_path);
    free(j->operation);
    free(j->request_id);
    free(j->buf);
    free(j);
}

static double next_jitter(cti_dp_client_t *c)
{
    c->rng ^= c->rng << 13; /* xorshift64: spreading retries needs no secrecy */
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (double)(c->rng >> 11) / 9007199254740992.0;
}

/* Collects the body; past the limit, stops the transfer (CURLE_WRITE_ERROR). */
static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    job_t *j = ud;
    size_t add = size * n;
    if (j->len + add > j->limit) {
        j->too_big = true;
        return 0;
    }
    if (j->len + add + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 4096;
        while (cap < j->len + add + 1)
            cap *= 2;
        j->buf = cti_realloc(j->buf, cap);
        j->cap = cap;
    }
    memcpy(j->buf + j->len, data, add);
    j->len += add;
    j->buf[j->len] = '\0';
    return add;
}

/* Keeps the headers the caller may need; a new status line starts afresh. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    job_t *j = ud;
    size_t len = size * n;
    if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
        j->retry_after[0] = j->content_type[0] = j->location[0] = '\0';
        return len;
    }
    static const struct {
        const char *name;
        size_t off, cap;
    } keep[] = {{"retry-after", offsetof(job_t, retry_after), sizeof(((job_t *)0)->retry_after)},
                {"content-type", offsetof(job_t, content_type), sizeof(((job_t *)0)->content_type)},
                {"location", offsetof(job_t, location), sizeof(((job_t *)0)->location)}};
    for (size_t i = 0; i < CTI_ARRAY_LEN(keep); i++) {
        size_t nl = strlen(keep[i].name);
        if (len > nl && data[nl] == ':' && !strncasecmp(data, keep[i].name, nl)) {
            const char *v = data + nl + 1;
            size_t vn = len - nl - 1;
            while (vn && (*v == ' ' || *v == '\t'))
                v++, vn--;
            while (vn && isspace((unsigned char)v[vn - 1]))
                vn--;
            copy_text((char *)j + keep[i].off, keep[i].cap, v, vn);
        }
    }
    return len;
}

static struct curl_slist *hdr_add(struct curl_slist *l, const char *h)
{
    struct curl_slist *n = curl_slist_append(l, h);
    if (!n)
        cti_fatal("out of memory (curl header list)");
    return n;
}

static void build_headers(job_t *j)
{
    j->headers = hdr_add(NULL, "Accept: application/json");
    j->headers = hdr_add(j->headers, "Expect:");
    if (j->auth)
        j->headers = hdr_add(j->headers, j->auth);
    if (j->body_kind == CTI_DP_BODY_JSON)
        j->headers = hdr_add(j->headers, "Content-Type: application/json");
    else if (j->body_kind == CTI_DP_BODY_FORM)
        j->headers = hdr_add(j->headers, "Content-Type: application/x-www-form-urlencoded");
}

#define SETOPT(ok, easy, opt, val)                                                                 \
    ((ok) = (ok) && curl_easy_setopt((easy), (opt), (val)) == CURLE_OK)

/* Starts one attempt on the multi handle. Returns 0 or CTI_EIO. */
static int start_attempt(cti_dp_client_t *c, job_t *j)
{
    assert(!j->easy);
    j->len = 0;
    j->too_big = false;
    j->retry_after[0] = j->content_type[0] = j->location[0] = j->errbuf[0] = '\0';
    CURL *e = curl_easy_init();
    bool ok = e != NULL;
    SETOPT(ok, e, CURLOPT_URL, j->url);
    SETOPT(ok, e, CURLOPT_PRIVATE, j);
    SETOPT(ok, e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(ok, e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(ok, e, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(ok, e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->opt.connect_timeout_ms);
    SETOPT(ok, e, CURLOPT_TIMEOUT_MS, (long)c->opt.total_timeout_ms);
    SETOPT(ok, e, CURLOPT_USERAGENT, "cti-server");
    SETOPT(ok, e, CURLOPT_HTTPHEADER, j->headers);
    SETOPT(ok, e, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(ok, e, CURLOPT_WRITEDATA, j);
    SETOPT(ok, e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(ok, e, CURLOPT_HEADERDATA, j);
    SETOPT(ok, e, CURLOPT_ERRORBUFFER, j->errbuf);
    if (!strcmp(j->method, "GET")) {
        SETOPT(ok, e, CURLOPT_HTTPGET, 1L);
    } else if (!strcmp(j->method, "HEAD")) {
        SETOPT(ok, e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(j->method, "POST"))
            SETOPT(ok, e, CURLOPT_CUSTOMREQUEST, j->method);
        if (j->body || !strcmp(j->method, "POST")) {
            SETOPT(ok, e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
            SETOPT(ok, e, CURLOPT_POSTFIELDS, j->body ? j->body : "");
        }
    }
    ok = ok && curl_multi_add_handle(c->multi, e) == CURLM_OK;
    if (!ok) {
        if (e)
            curl_easy_cleanup(e);
        return CTI_EIO;
    }
    j->easy = e;
    j->next = c->inflight;
    c->inflight = j;
    j->attempts++;
    j->attempt_us = cti_mono_us();
    return 0;
}

/* Ends the attempt in flight (if any): the handle leaves the multi. */
static void end_attempt(cti_dp_client_t *c, job_t *j)
{
    if (!j->easy)
        return;
    for (job_t **pp = &c->inflight; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    j->next = NULL;
    curl_multi_remove_handle(c->multi, j->easy);
    curl_easy_cleanup(j->easy);
    j->easy = NULL;
}

/* Hands the response to the caller and frees the job. err/status describe the end. */
static void finish(cti_dp_client_t *c, job_t *j, int err, int status, bool timed_out,
                   const char *why)
{
    end_attempt(c, j);
    cti_dp_response_t *r = cti_calloc(1, sizeof *r);
    r->status = status;
    r->err = err;
    r->timed_out = timed_out;
    r->attempts = j->attempts;
    r->elapsed_ms = (cti_mono_us() - j->start_us) / 1000;
    r->retry_after_s = cti_dp_parse_retry_after(j->retry_after, cti_now_ms() / 1000);
    r->body = j->buf ? j->buf : cti_calloc(1, 1);
    r->body_len = j->buf ? j->len : 0;
    r->body[r->body_len] = '\0';
    j->buf = NULL;
    snprintf(r->content_type, sizeof r->content_type, "%s", j->content_type);
    snprintf(r->location, sizeof r->location, "%s", j->location);
    if (err)
        snprintf(r->message, sizeof r->message, "%s", why);
    else if (!cti_dp_ok(r)) {
        cti_dp_parse_error(r->body, r->body_len, &r->error);
        cti_dp_error_text(status, r->body, r->body_len, r->content_type, r->message,
                          sizeof r->message);
    }
    j->done(r, j->ud);
    job_free(j);
}

static void log_attempt(job_t *j, int status, CURLcode rc, int64_t ms, bool retrying)
{
    bool good = rc == CURLE_OK && status >= 200 && status < 300;
    cti_metrics_dialpad_request(j->operation, rc == CURLE_OK ? status : 0);
    cti_log(good ? CTI_LOG_INFO : CTI_LOG_WARN, j->request_id, "dialpad request",
            CTI_LS("method", j->method), CTI_LS("path", j->log_path),
            CTI_LS("operation", j->operation), CTI_LI("status", status), CTI_LI("ms", ms),
            CTI_LI("attempt", j->attempts),
            CTI_LS("error", rc == CURLE_OK ? NULL : curl_easy_strerror(rc)),
            CTI_LB("retrying", retrying));
}

/* An attempt ended: retry it later, or finish the job. */
static void attempt_done(cti_dp_client_t *c, job_t *j, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
    int64_t now = cti_mono_us();
    curl_off_t pretransfer = 0; /* 0: failed before the request began to be sent */
    curl_easy_getinfo(j->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    cti_dp_outcome_t outcome = CTI_DP_ANSWERED;
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
        rc == CURLE_COULDNT_RESOLVE_PROXY || (rc != CURLE_OK && !j->too_big && pretransfer == 0))
        outcome = CTI_DP_NOT_SENT;
    else if (rc != CURLE_OK && !j->too_big)
        outcome = CTI_DP_LOST;
    int ra = cti_dp_parse_retry_after(j->retry_after, cti_now_ms() / 1000);
    int64_t delay = j->too_big
                        ? -1
                        : cti_dp_retry_delay(&c->opt, outcome, (int)status, j->safe, j->attempts,
                                             j->max_attempts, ra, next_jitter(c));
    log_attempt(j, (int)status, rc, (now - j->attempt_us) / 1000, delay >= 0);
    if (delay >= 0) {
        end_attempt(c, j);
        j->due_us = now + delay * 1000;
        j->next = c->waiting;
        c->waiting = j;
        return;
    }
    char why[400];
    if (j->too_big) {
        snprintf(why, sizeof why, "Dialpad's answer was larger than %zu bytes", j->limit);
        finish(c, j, CTI_ELIMIT, (int)status, false, why);
    } else if (outcome == CTI_DP_ANSWERED) {
        finish(c, j, 0, (int)status, false, "");
    } else {
        bool timeout = rc == CURLE_OPERATION_TIMEDOUT;
        if (timeout)
            snprintf(why, sizeof why, "Dialpad did not answer in time (%s; %d attempt%s)",
                     j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc), j->attempts,
                     j->attempts == 1 ? "" : "s");
        else
            snprintf(why, sizeof why, "Dialpad could not be reached (%s; %d attempt%s)",
                     j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc), j->attempts,
                     j->attempts == 1 ? "" : "s");
        finish(c, j, CTI_EUNAVAILABLE, 0, timeout, why);
    }
}

static void begin(cti_dp_client_t *c, job_t *j)
{
    if (start_attempt(c, j) != 0)
        finish(c, j, CTI_EUNAVAILABLE, 0, false, "the Dialpad client could not start a request");
}

/* Starts the retries that have come due; returns the wait until the next (ms, or -1). */
static int64_t run_due(cti_dp_client_t *c)
{
    int64_t now = cti_mono_us(), next = -1;
    job_t **pp = &c->waiting;
    while (*pp) {
        job_t *j = *pp;
        if (j->due_us <= now) {
            *pp = j->next;
            j->next = NULL;
            begin(c, j);
            continue; /* begin may not add to waiting: only attempt_done does */
        }
        int64_t wait = (j->due_us - now + 999) / 1000;
        if (next < 0 || wait < next)
            next = wait;
        pp = &j->next;
    }
    return next;
}

static void cancel_all(cti_dp_client_t *c, job_t *list)
{
    while (list) {
        job_t *next = list->next;
        finish(c, list, CTI_EUNAVAILABLE, 0, false, "the Dialpad client stopped");
        list = next;
    }
}

static void *client_main(void *arg)
{
    cti_dp_client_t *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        job_t *fresh = c->queue;
        c->queue = NULL;
        c->queue_tail = &c->queue;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stopping) {
            cancel_all(c, fresh);
            break;
        }
        while (fresh) {
            job_t *next = fresh->next;
            fresh->next = NULL;
            begin(c, fresh);
            fresh = next;
        }
        int running = 0;
        curl_multi_perform(c->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(c->multi, &left))) {
            job_t *j = NULL;
            if (m->msg != CURLMSG_DONE)
                continue;
            CURLcode rc = m->data.result;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            attempt_done(c, j, rc);
        }
        int64_t wait = run_due(c); /* >= 1 ms, or -1: due retries were started */
        int timeout = wait < 0 || wait > 1000 ? 1000 : (int)wait;
        curl_multi_poll(c->multi, NULL, 0, timeout, NULL);
    }
    /* stopping: what is in flight or waiting ends now */
    job_t *inflight = c->inflight;
    c->inflight = NULL;
    cancel_all(c, inflight);
    job_t *waiting = c->waiting;
    c->waiting = NULL;
    cancel_all(c, waiting);
    return NULL;
}

/* ---- public: start, stop, submit, call ------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ready;

static void curl_init_once(void)
{
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

int cti_dp_client_start(const cti_dp_options_t *opt, cti_dp_client_t **out)
{
    *out = NULL;
    if (!opt->base_url ||
        (strncmp(opt->base_url, "http://", 7) && strncmp(opt->base_url, "https://", 8)) ||
        opt->max_attempts < 1 || opt->total_timeout_ms < 1 || opt->connect_timeout_ms < 1)
        return CTI_EINVAL;
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ready)
        return CTI_EIO;
    cti_dp_client_t *c = cti_calloc(1, sizeof *c);
    c->opt = *opt;
    size_t n = strlen(opt->base_url);
    while (n > 0 && opt->base_url[n - 1] == '/')
        n--;
    c->base_url = cti_strndup(opt->base_url, n);
    c->opt.base_url = c->base_url;
    c->queue_tail = &c->queue;
    cti_random_bytes(&c->rng, sizeof c->rng);
    c->rng |= 1;
    pthread_mutex_init(&c->mu, NULL);
    c->multi = curl_multi_init();
    if (!c->multi || pthread_create(&c->thread, NULL, client_main, c) != 0) {
        if (c->multi)
            curl_multi_cleanup(c->multi);
        pthread_mutex_destroy(&c->mu);
        free(c->base_url);
        free(c);
        return CTI_EIO;
    }
    pthread_setname_np(c->thread, "cti-dialpad");
    *out = c;
    return 0;
}

void cti_dp_client_stop(cti_dp_client_t *c)
{
    if (!c)
        return;
    assert(!pthread_equal(pthread_self(), c->thread));
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    curl_multi_wakeup(c->multi);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    curl_multi_cleanup(c->multi);
    pthread_mutex_destroy(&c->mu);
    free(c->base_url);
    free(c);
}

/* A path we send: starts with '/', no blanks or control bytes (no header injection). */
static bool path_ok(const char *p)
{
    if (!p || p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

static job_t *job_new(cti_dp_client_t *c, const cti_dp_request_t *req, cti_dp_done_fn done,
                      void *ud)
{
    job_t *j = cti_calloc(1, sizeof *j);
    j->method = cti_strdup(req->method);
    size_t ul = strlen(c->base_url) + strlen(req->path) + 1;
    j->url = cti_malloc(ul);
    snprintf(j->url, ul, "%s%s", c->base_url, req->path);
    j->log_path = cti_strndup(req->path, strcspn(req->path, "?"));
    j->operation = cti_strdup(req->operation);
    j->request_id = cti_strdup(req->request_id);
    if (req->bearer) {
        size_t al = strlen(req->bearer) + 32;
        j->auth = cti_malloc(al);
        snprintf(j->auth, al, "Authorization: Bearer %s", req->bearer);
    }
    j->body_kind = req->body ? req->body_kind : CTI_DP_BODY_NONE;
    if (req->body) {
        j->body = cti_strndup(req->body, req->body_len);
        j->body_len = req->body_len;
    }
    j->safe = req->idempotent || cti_dp_method_idempotent(req->method);
    j->max_attempts = req->max_attempts > 0 ? req->max_attempts : c->opt.max_attempts;
    j->limit = c->opt.max_body_bytes;
    j->done = done;
    j->ud = ud;
    j->start_us = cti_mono_us();
    build_headers(j);
    return j;
}

int cti_dp_submit(cti_dp_client_t *c, const cti_dp_request_t *req, cti_dp_done_fn done, void *ud)
{
    assert(c && req && done);
    if (!known_method(req->method) || !path_ok(req->path) ||
        (req->bearer && !token_chars_ok(req->bearer, strlen(req->bearer))) ||
        (req->body && req->body_len > 0 && strlen(req->body) < req->body_len))
        return CTI_EINVAL;
    job_t *j = job_new(c, req, done, ud);
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        job_free(j);
        return CTI_EUNAVAILABLE;
    }
    *c->queue_tail = j;
    c->queue_tail = &j->next;
    /* under the lock: stop cannot free the multi handle between these two lines */
    curl_multi_wakeup(c->multi);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    cti_dp_response_t *resp;
} waiter_t;

static void wake_waiter(cti_dp_response_t *resp, void *ud)
{
    waiter_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->resp = resp;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

cti_dp_response_t *cti_dp_call(cti_dp_client_t *c, const cti_dp_request_t *req)
{
    assert(!pthread_equal(pthread_self(), c->thread));
    waiter_t w = {.resp = NULL};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = cti_dp_submit(c, req, wake_waiter, &w);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.resp)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    } else {
        w.resp = cti_calloc(1, sizeof *w.resp);
        w.resp->err = rc;
        w.resp->retry_after_s = -1;
        w.resp->body = cti_calloc(1, 1);
        snprintf(w.resp->message, sizeof w.resp->message, "%s",
                 rc == CTI_EINVAL ? "invalid request to Dialpad (method, path or token)"
                                  : "the Dialpad client is stopping");
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return w.resp;
}

void cti_dp_response_free(cti_dp_response_t *r)
{
    if (!r)
        return;
    wipe_free(r->body); /* token responses carry tokens */
    free(r);
}

bool cti_dp_ok(const cti_dp_response_t *r)
{
    return r && r->err == 0 && r->status >= 200 && r->status < 300;
}

/* ---- list walking ------------------------------------------------------------------------ */

static int status_err(const cti_dp_response_t *r)
{
    if (r->err)
        return r->err;
    if (r->status == 401 || r->status == 403)
        return CTI_EAUTH;
    return r->status == 404 ? CTI_ENOTFOUND : CTI_EINVAL;
}

int cti_dp_list_all(cti_dp_client_t *c, const cti_dp_request_t *req, int max_pages,
                    cti_dp_item_fn fn, void *ud, cti_dp_response_t **failed)
{
    char cursor[2048] = "", prev[2048] = "", path[8192];
    cti_dp_request_t page = *req;
    page.method = "GET";
    page.path = path;
    if (failed)
        *failed = NULL;
    for (int n = 0; n < max_pages; n++) {
        if (n == 0)
            snprintf(path, sizeof path, "%s", req->path);
        else if (cti_dp_page_path(req->path, cursor, path, sizeof path) != 0)
            return CTI_ELIMIT;
        cti_dp_response_t *r = cti_dp_call(c, &page);
        if (!cti_dp_ok(r)) {
            int rc = status_err(r);
            if (failed)
                *failed = r;
            else
                cti_dp_response_free(r);
            return rc;
        }
        json_t *root = json_loadb(r->body, r->body_len, 0, NULL), *items;
        cti_dp_response_free(r);
        snprintf(prev, sizeof prev, "%s", cursor);
        int rc = cti_dp_page_parse(root, &items, cursor, sizeof cursor);
        size_t i;
        json_t *item;
        json_array_foreach(items, i, item)
        {
            if (rc == 0)
                rc = fn(item, ud);
        }
        json_decref(root);
        if (rc != 0)
            return rc;
        if (!cursor[0])
            return 0;
        if (!strcmp(cursor, prev))
            return CTI_ELIMIT; /* the same page again: never loop forever */
    }
    return CTI_ELIMIT;
}
