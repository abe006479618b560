/*
 * server.c — the MHD daemon, request lifecycle, responses and shutdown.
 *
 * Request lifecycle (MHD calls us; all on one pool thread per connection):
 *   uri_log()       request starts: allocate cti_http_req_t, count it in flight
 *   on_request() #1 headers known: request id, early 413 from Content-Length.
 *                   Nothing else is answered on this first call: answering here
 *                   makes MHD 0.9.75 close keep-alive connections (~6x slower).
 *   on_request() #n body chunks: copied, bounded by max_body (413 past it)
 *   on_request() last: route, run the handler, queue its response
 *   on_request() after cti_http_resume_rerun(): the handler again, from the start
 *   on_completed()  access log line, free, no longer in flight
 *
 * Threads: MHD's pool threads call everything here except the lifecycle
 * functions (new/route/start/quiesce/wait_idle/free), which are main-thread only.
 */
#include "http/http.h"
#include "http/guard.h"
#include "http/router.h"
#include "core/cidr.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

struct cti_http_server {
    cti_http_options_t opts;
    cti_router_t router;
    cti_guard_t *guard; /* per-address cap, deadlines, shedding (guard.h) */
    struct MHD_Daemon *daemon;
    int port;
    atomic_int inflight;
    atomic_bool closing; /* shutdown began: every new connection is turned away */
    atomic_uint_fast64_t rid_counter;
    char rid_prefix[9];
};

typedef struct {
    char *name, *value;
} header_t;

enum { REQ_NEW, REQ_READING, REQ_DONE };

/* X-Forwarded-For read (all its headers joined); the rest is not looked at. */
#define XFF_MAX 2048

struct cti_http_req {
    cti_http_server_t *srv;
    struct MHD_Connection *conn;
    int state;
    int64_t start_us;
    char request_id[48];
    const char *method;
    char *path;    /* decoded path, split in place by the router */
    char *log_uri; /* path?query with credentials redacted */
    char *body;
    size_t body_len, body_cap; /* body_cap: bytes allocated */
    size_t body_hint;          /* Content-Length, to allocate once */
    size_t discarded; /* bytes of an oversized body thrown away (see append_body) */
    cti_route_match_t match;
    struct MHD_Response *response;
    int status;
    size_t resp_len;
    header_t *headers;
    size_t nheaders;
    char client[64];
    cti_guard_conn_t *gc; /* the connection's entry in the guard */
    bool suspended;
    bool rerun;      /* resumed to run the handler again (cti_http_resume_rerun) */
    bool upgraded;   /* handed over as a WebSocket: no longer in flight */
    bool nul_target; /* the raw request target has %00 (MHD's decoded url stops there) */
};

/* ---- redaction ------------------------------------------------------------------- */

/* Decodes %XX and '+' in a query-string name, as MHD does before lookups. */
static size_t decode_name(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && sscanf(s + i + 1, "%2x", &v) == 1) {
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    return o;
}

static bool secret_arg(const char *raw, size_t raw_len)
{
    char name[64];
    size_t len = decode_name(raw, raw_len, name, sizeof name);
    static const char *const names[] = {"api_key", "apikey", "key", "ticket", "token",
                                        "access_token", "secret", "code", "password", "state",
                                        "refresh_token", "code_verifier"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(names); i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return true;
    return false;
}

void cti_http_redact_uri(const char *uri, char *out, size_t cap)
{
    const char *q = strchr(uri, '?');
    size_t n = (size_t)snprintf(out, cap, "%.*s", (int)(q ? q - uri : (long)strlen(uri)), uri);
    if (!q || n >= cap)
        return;
    for (const char *p = q; *p && n < cap;) {
        /* p points at '?' or '&': copy it and the name, then the value or REDACTED */
        size_t name_len = strcspn(p + 1, "=&");
        const char *val = p + 1 + name_len;
        size_t val_len = *val == '=' ? strcspn(val + 1, "&") + 1 : 0;
        bool hide = secret_arg(p + 1, name_len) && val_len > 0;
        n += (size_t)snprintf(out + n, cap - n, "%c%.*s%s%.*s", *p, (int)name_len, p + 1,
                              hide ? "=REDACTED" : "", hide ? 0 : (int)val_len, val);
        p = val + val_len;
    }
}

/* ---- responses ------------------------------------------------------------------- */

typedef struct {
    cti_http_upgrade_fn fn;
    void *cls;
    bool tls;
} upgrade_t;

static void on_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
                        const char *extra_in, size_t extra_in_size, MHD_socket sock,
                        struct MHD_UpgradeResponseHandle *urh)
{
    upgrade_t *u = cls;
    cti_http_req_t *req = con_cls;
    if (req && !req->upgraded) { /* the HTTP part is over: shutdown need not wait for it */
        req->upgraded = true;
        cti_metrics_http(req->match.route ? req->match.route->metrics : NULL, req->method,
                         req->status, cti_mono_us() - req->start_us);
        cti_guard_upgraded(req->srv->guard, req->gc);
        atomic_fetch_sub(&req->srv->inflight, 1);
    }
    /* Plain HTTP: the socket becomes the callee's alone. A copy of the fd is
     * handed over and MHD told at once that the upgrade is over, so it frees
     * the connection and its pool (most of a WebSocket's memory) and closes
     * its own fd, which neither shuts the socket down nor touches the copy.
     * With TLS, MHD relays between the client and the socketpair end it gave
     * us for the WebSocket's whole life: that one stays MHD's. */
    int own = -1;
    if (!u->tls)
        own = fcntl(sock, F_DUPFD_CLOEXEC, 3);
    if (own >= 0) {
        u->fn(u->cls, own, extra_in, extra_in_size, NULL);
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    } else {
        u->fn(u->cls, sock, extra_in, extra_in_size, urh);
    }
    free(u);
}

void cti_http_upgrade(cti_http_req_t *req, cti_http_upgrade_fn on_upgrade, void *cls,
                      const char *const *headers)
{
    upgrade_t *u = cti_malloc(sizeof *u);
    u->fn = on_upgrade;
    u->cls = cls;
    u->tls = req->srv->opts.tls_cert_pem != NULL;
    req->response = MHD_create_response_for_upgrade(on_upgraded, u);
    if (!req->response)
        cti_fatal("MHD_create_response_for_upgrade failed");
    req->status = MHD_HTTP_SWITCHING_PROTOCOLS;
    MHD_add_response_header(req->response, "X-Request-Id", req->request_id);
    for (const char *const *h = headers; h && h[0]; h += 2)
        MHD_add_response_header(req->response, h[0], h[1]);
}

void cti_http_upgrade_close(struct MHD_UpgradeResponseHandle *urh, int fd)
{
    if (urh)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    else
        close(fd);
}

void cti_http_suspend(cti_http_req_t *req)
{
    req->suspended = true;
    MHD_suspend_connection(req->conn);
}

void cti_http_resume(cti_http_req_t *req)
{
    MHD_resume_connection(req->conn);
}

void cti_http_resume_rerun(cti_http_req_t *req)
{
    req->rerun = true;
    MHD_resume_connection(req->conn);
}

void cti_http_add_header(cti_http_req_t *req, const char *name, const char *value)
{
    req->headers = cti_realloc(req->headers, (req->nheaders + 1) * sizeof *req->headers);
    req->headers[req->nheaders].name = cti_strdup(name);
    req->headers[req->nheaders].value = cti_strdup(value);
    req->nheaders++;
}

void cti_http_respond(cti_http_req_t *req, int status, const char *content_type, char *body,
                      size_t len)
{
    if (req->response) {
        cti_log(CTI_LOG_ERROR, req->request_id, "http: response set twice",
                CTI_LS("path", req->log_uri), CTI_LI("status", status));
        free(body);
        return;
    }
    req->response = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                                    body ? MHD_RESPMEM_MUST_FREE
                                                         : MHD_RESPMEM_PERSISTENT);
    if (!req->response)
        cti_fatal("MHD_create_response_from_buffer failed");
    req->status = status;
    req->resp_len = len;
    if (content_type)
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(req->response, "X-Request-Id", req->request_id);
    for (size_t i = 0; i < req->nheaders; i++)
        MHD_add_response_header(req->response, req->headers[i].name, req->headers[i].value);
}

void cti_http_json(cti_http_req_t *req, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text) { /* a body that could not be built (e.g. invalid UTF-8): a bug, not a crash */
        cti_log(CTI_LOG_ERROR, req->request_id, "http: response body could not be encoded",
                CTI_LS("path", req->log_uri), CTI_LI("status", status));
        static const char fallback[] =
            "{\"error\":\"internal_error\",\"message\":\"the response could not be encoded\"}";
        cti_http_respond(req, 500, CTI_HTTP_JSON, cti_strdup(fallback),
                         sizeof fallback - 1);
        return;
    }
    cti_http_respond(req, status, CTI_HTTP_JSON, text, strlen(text));
}

/* Text for a message: bytes that are not strict UTF-8, and control characters,
 * as %XX (a decoded path may hold any byte: %FF, %C0%80). */
static void printable(const char *url, char *out, size_t cap)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0, n = strlen(url);
    for (size_t i = 0, k; i < n && o + 4 <= cap; i += k) {
        const unsigned char *p = (const unsigned char *)url + i;
        k = cti_utf8_char_len(p, n - i);
        if (k && *p >= 0x20 && *p != 0x7f) {
            if (o + k >= cap)
                break;
            memcpy(out + o, p, k);
            o += k;
        } else {
            k = 1;
            out[o++] = '%';
            out[o++] = hx[*p >> 4];
            out[o++] = hx[*p & 15];
        }
    }
    out[o] = '\0';
}

void cti_http_error(cti_http_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[512], shown[3 * sizeof msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a handler may echo a header or a name it was sent: never a 500 for that */
    const char *text = msg;
    if (!cti_utf8_valid((const uint8_t *)msg, strlen(msg))) {
        printable(msg, shown, sizeof shown);
        text = shown;
    }
    cti_http_json(req, status, json_pack("{s:s, s:s}", "error", code, "message", text));
}

/* ---- request accessors --------------------------------------------------------------- */

const char *cti_http_method(const cti_http_req_t *req)
{
    return req->method;
}

const char *cti_http_path(const cti_http_req_t *req)
{
    return req->log_uri;
}

const char *cti_http_param(const cti_http_req_t *req, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < req->match.nparams; i++)
        if (req->match.name_lens[i] == len && !strncmp(req->match.names[i], name, len))
            return req->match.values[i];
    return NULL;
}

const char *cti_http_query(const cti_http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *cti_http_header(const cti_http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *cti_http_body(const cti_http_req_t *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body ? req->body : "";
}

const char *cti_http_request_id(const cti_http_req_t *req)
{
    return req->request_id;
}

/* Joins every X-Forwarded-For header, in order, with commas. */
static enum MHD_Result gather_xff(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    char *buf = cls;
    size_t n = strlen(buf);
    if (value && !strcasecmp(key, "X-Forwarded-For") && n + strlen(value) + 2 < XFF_MAX)
        snprintf(buf + n, XFF_MAX - n, "%s%s", n ? "," : "", value);
    return MHD_YES;
}

const char *cti_http_client_addr(cti_http_req_t *req)
{
    if (req->client[0])
        return req->client;
    char peer[INET6_ADDRSTRLEN] = "unknown";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, peer, sizeof peer);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, peer, sizeof peer);
    const cti_cidr_list_t *trusted = req->srv->opts.trusted_proxies;
    if (!trusted || trusted->n == 0) {
        snprintf(req->client, sizeof req->client, "%s", peer);
        return req->client;
    }
    char *xff = cti_calloc(1, XFF_MAX);
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, gather_xff, xff);
    cti_client_addr_choose(trusted, peer, xff[0] ? xff : NULL, req->client, sizeof req->client);
    free(xff);
    return req->client;
}

json_t *cti_http_json_object_body(cti_http_req_t *req)
{
    json_error_t err;
    if (req->body_len == 0) {
        cti_http_error(req, 400, "invalid_request", "request body must be a JSON object");
        return NULL;
    }
    json_t *v = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!v) {
        cti_http_error(req, 400, "invalid_request", "body is not valid JSON: %s (line %d)",
                       err.text, err.line);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        cti_http_error(req, 400, "invalid_request", "request body must be a JSON object");
        return NULL;
    }
    return v;
}

/* ---- lifecycle callbacks ------------------------------------------------------------ */

/* A client-supplied X-Request-Id is kept when short and plain; else we make one. */
static void set_request_id(cti_http_req_t *req)
{
    const char *given = cti_http_header(req, "X-Request-Id");
    size_t len = given ? strlen(given) : 0;
    bool ok = len > 0 && len < sizeof req->request_id;
    for (size_t i = 0; ok && i < len; i++)
        ok = (given[i] >= '0' && given[i] <= '9') || (given[i] >= 'a' && given[i] <= 'z') ||
             (given[i] >= 'A' && given[i] <= 'Z') || strchr("-_.:", given[i]);
    if (ok) {
        memcpy(req->request_id, given, len + 1);
        return;
    }
    uint64_t n = atomic_fetch_add(&req->srv->rid_counter, 1);
    snprintf(req->request_id, sizeof req->request_id, "%s-%08llx", req->srv->rid_prefix,
             (unsigned long long)n);
}

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    cti_http_server_t *srv = cls;
    cti_http_req_t *req = cti_calloc(1, sizeof *req);
    req->srv = srv;
    req->conn = conn;
    req->start_us = cti_mono_us();
    size_t cap = strlen(uri) + 64;
    req->log_uri = cti_malloc(cap);
    cti_http_redact_uri(uri, req->log_uri, cap);
    req->nul_target = strstr(uri, "%00") != NULL;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    req->gc = ci ? ci->socket_context : NULL;
    atomic_fetch_add(&srv->inflight, 1);
    return req;
}

static int method_bit(const char *m)
{
    static const struct {
        const char *name;
        int bit;
    } methods[] = {{"GET", CTI_HTTP_GET},     {"HEAD", CTI_HTTP_GET},   {"POST", CTI_HTTP_POST},
                   {"PUT", CTI_HTTP_PUT},     {"PATCH", CTI_HTTP_PATCH}, {"DELETE", CTI_HTTP_DELETE}};
    for (size_t i = 0; i < CTI_ARRAY_LEN(methods); i++)
        if (!strcmp(m, methods[i].name))
            return methods[i].bit;
    return 0;
}

static void allow_header(cti_http_req_t *req, int allowed)
{
    char buf[64] = "";
    const char *names[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    for (int i = 0; i < 5; i++)
        if (allowed & (1 << i))
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     names[i]);
    cti_http_add_header(req, "Allow", buf);
}

static enum MHD_Result query_utf8(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    bool *ok = cls;
    *ok = cti_utf8_valid((const uint8_t *)key, strlen(key)) &&
          (!value || cti_utf8_valid((const uint8_t *)value, strlen(value)));
    return *ok ? MHD_YES : MHD_NO;
}

/* Runs the matched route's handler (again, after cti_http_resume_rerun). */
static void run_handler(cti_http_req_t *req)
{
    req->suspended = false;
    req->match.route->fn(req, req->match.route->ud);
    /* suspended first: once handed off, response belongs to the other thread */
    if (!req->suspended && !req->response) {
        cti_log(CTI_LOG_ERROR, req->request_id, "http: handler set no response",
                CTI_LS("route", req->match.route->pattern));
        cti_http_error(req, 500, "internal_error", "the server failed to answer");
    }
}

static void dispatch(cti_http_req_t *req, const char *url)
{
    char shown[512];
    printable(url, shown, sizeof shown);
    req->path = cti_strdup(url);
    int rc = cti_router_match(&req->srv->router, method_bit(req->method), req->path, &req->match);
    /* no id, key or name is anything but UTF-8: a path that is not names nothing */
    if (rc == 0 && !cti_utf8_valid((const uint8_t *)url, strlen(url)))
        rc = CTI_ENOTFOUND;
    if (rc == CTI_ENOTFOUND) {
        cti_http_error(req, 404, "not_found", "no such endpoint: %s %s", req->method, shown);
        return;
    }
    if (rc == CTI_EINVAL) {
        allow_header(req, req->match.allowed);
        cti_http_error(req, 405, "method_not_allowed", "%s is not allowed on %s", req->method,
                       shown);
        return;
    }
    bool utf8 = true;
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_utf8, &utf8);
    if (!utf8) { /* handlers echo query values in their messages: they must be text */
        cti_http_error(req, 400, "invalid_request", "the query string is not UTF-8");
        return;
    }
    run_handler(req);
}

static void too_large(cti_http_req_t *req)
{
    cti_http_error(req, 413, "payload_too_large", "request body exceeds %zu bytes",
                   req->srv->opts.max_body);
}

/* MHD's memory pool per connection: the request line and headers, buffers for
 * reading the body in chunks, the response headers. 8 KiB instead of MHD's
 * 32 KiB; request headers beyond about 7 KiB are answered 431. A plain-HTTP
 * WebSocket gives its pool back at the upgrade (on_upgraded); with TLS it is
 * kept for the WebSocket's life. */
#define CONNECTION_POOL ((size_t)8 * 1024)

/* ---- framing ---------------------------------------------------------------------- *
 * A request whose length or target a proxy in front of us could read otherwise
 * than MHD does is refused (400, connection closed) before its body is read:
 * that difference is what request smuggling rides on. MHD 0.9.75 itself lets
 * through, and this catches from the parsed headers: a repeated Content-Length
 * (it takes the first), a name with a space before the colon ("Content-Length :"
 * becomes another header, so the body is read as the next request), both
 * Transfer-Encoding and Content-Length, a transfer coding other than chunked,
 * HTTP/1.1 without exactly one Host, %00 in the target (MHD's decoded url ends
 * there: "/health%00/x" was /health), and obsolete line folding. */

typedef struct {
    int content_length, transfer_encoding, host;
    bool bad_name, folded, bad_length, bad_coding;
} framing_t;

static bool token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* MHD keeps a header's name and value where they were read: "Name\0 value",
 * the value right after the name and its spaces. A folded line (one starting
 * with a space or tab) is instead appended to the *name*, copied elsewhere in
 * the connection's pool (after the read buffer), so the value no longer follows
 * its name: that is how a fold shows once MHD has parsed it. */
static bool value_follows_name(const char *key, size_t key_len, const char *value)
{
    const char *gap = key + key_len + 1;
    if ((uintptr_t)value < (uintptr_t)gap || (uintptr_t)value - (uintptr_t)gap > CONNECTION_POOL)
        return false;
    for (const char *p = gap; p < value; p++)
        if (*p != ' ' && *p != '\t')
            return false;
    return true;
}

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    framing_t *f = cls;
    size_t len = strlen(key);
    for (size_t i = 0; i < len; i++)
        f->bad_name |= !token_char((unsigned char)key[i]);
    f->bad_name |= len == 0;
    if (!value)
        return MHD_YES;
    f->folded |= !value_follows_name(key, len, value);
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        f->content_length++;
        f->bad_length |= !value[0] || strspn(value, "0123456789") != strlen(value);
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->transfer_encoding++;
        f->bad_coding |= strcasecmp(value, "chunked") != 0;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) {
        f->host++;
    }
    return MHD_YES;
}

/* What is wrong with the request's framing, or NULL. */
static const char *framing_problem(cti_http_req_t *req, const char *version)
{
    framing_t f = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, framing_header, &f);
    if (req->nul_target)
        return "the request target contains %00";
    if (f.folded)
        return "obsolete line folding in a header";
    if (f.bad_name)
        return "a header name is not a token (no space before the colon)";
    if (f.content_length > 1)
        return "more than one Content-Length";
    if (f.bad_length)
        return "Content-Length is not a number";
    if (f.transfer_encoding && f.content_length)
        return "both Transfer-Encoding and Content-Length";
    if (f.transfer_encoding > 1 || f.bad_coding)
        return "only Transfer-Encoding: chunked is supported";
    if (f.host > 1 || (f.host == 0 && !strcmp(version, MHD_HTTP_VERSION_1_1)))
        return "HTTP/1.1 needs exactly one Host header";
    return NULL;
}

static void first_call(cti_http_req_t *req, const char *method, const char *version)
{
    cti_guard_head_done(req->srv->guard, req->gc);
    req->method = method;
    set_request_id(req);
    const char *problem = framing_problem(req, version);
    if (problem) {
        cti_http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close"); /* MHD then closes */
        cti_http_error(req, 400, "invalid_request", "malformed request: %s", problem);
        return;
    }
    const char *cl = cti_http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;
    if (cl && cti_parse_i64(cl, &n) == 0 && n >= 0) {
        if ((uint64_t)n > req->srv->opts.max_body)
            too_large(req);
        else
            req->body_hint = (size_t)n;
    }
}

/* Copies a body chunk. Past max_body the rest is read and thrown away, and 413
 * is answered at the end (MHD 0.9.75 cannot queue a response mid-upload); a
 * client that keeps sending past DISCARD_MAX is cut off. Returns false to cut. */
#define DISCARD_MAX ((size_t)16 * 1024 * 1024)
static bool append_body(cti_http_req_t *req, const char *data, size_t n)
{
    if (req->discarded || req->body_len + n > req->srv->opts.max_body) {
        free(req->body);
        req->body = NULL;
        req->body_len = req->body_cap = 0;
        req->discarded += n;
        return req->discarded <= DISCARD_MAX;
    }
    size_t want = req->body_len + n + 1;
    if (want > req->body_cap) {
        size_t cap = req->body_hint + 1 > want ? req->body_hint + 1 : want;
        if (cap < 2 * req->body_cap)
            cap = 2 * req->body_cap;
        req->body = cti_realloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
    req->body[req->body_len] = '\0';
    return true;
}

static enum MHD_Result queue(cti_http_req_t *req)
{
    enum MHD_Result r = MHD_queue_response(req->conn, (unsigned)req->status, req->response);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    cti_http_req_t *req = *con_cls;
    if (req->state == REQ_NEW) {
        req->state = REQ_READING;
        first_call(req, method, version);
        return req->response ? queue(req) : MHD_YES;
    }
    if (*upload_data_size) {
        cti_guard_body(req->srv->guard, req->gc, *upload_data_size);
        bool keep = append_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return keep ? MHD_YES : MHD_NO;
    }
    if (req->state == REQ_READING) {
        req->state = REQ_DONE;
        cti_guard_handling(req->srv->guard, req->gc);
        if (req->discarded)
            too_large(req);
        else if (!req->response)
            dispatch(req, url);
        if (req->suspended)
            return MHD_YES; /* answered later, after cti_http_resume() */
    } else if (req->rerun) {
        req->rerun = false;
        run_handler(req);
        if (req->suspended)
            return MHD_YES;
    }
    if (!req->response) {
        cti_log_msg(CTI_LOG_ERROR, req->request_id, "http: resumed without a response");
        cti_http_error(req, 500, "internal_error", "the server failed to answer");
    }
    return queue(req);
}

/* Frees a request and everything it owns (its response, headers, body). */
static void req_free(cti_http_req_t *req)
{
    if (req->response)
        MHD_destroy_response(req->response);
    for (size_t i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->headers);
    free(req->body);
    free(req->path);
    free(req->log_uri);
    free(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    cti_http_server_t *srv = cls;
    cti_http_req_t *req = *con_cls;
    if (!req)
        return;
    int64_t us = cti_mono_us() - req->start_us;
    if (cti_log_enabled(CTI_LOG_INFO) && req->method) {
        cti_log(CTI_LOG_INFO, req->request_id, "request", CTI_LS("method", req->method),
                CTI_LS("path", req->log_uri), CTI_LI("status", req->response ? req->status : 0),
                CTI_LI("bytes", req->resp_len), CTI_LD("ms", (double)us / 1000.0),
                CTI_LS("client", cti_http_client_addr(req)),
                CTI_LB("completed", toe == MHD_REQUEST_TERMINATED_COMPLETED_OK));
    }
    /* not a connection closed before a request head was read; an upgrade was counted */
    if (req->method && !req->upgraded)
        cti_metrics_http(req->match.route ? req->match.route->metrics : NULL, req->method,
                         req->response ? req->status : 0, us);
    bool counted = !req->upgraded;
    if (!req->upgraded)
        cti_guard_idle(srv->guard, req->gc);
    req_free(req);
    *con_cls = NULL;
    if (counted)
        atomic_fetch_sub(&srv->inflight, 1);
}

/* MHD's accept policy: the per-address cap. */
static enum MHD_Result admit(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    cti_http_server_t *srv = cls;
    if (atomic_load(&srv->closing))
        return MHD_NO;
    return cti_guard_admit(srv->guard, addr) ? MHD_YES : MHD_NO;
}

/* Every TCP connection, accepted to closed (several requests when kept alive). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    cti_http_server_t *srv = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ad =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        *socket_context = fd ? cti_guard_open(srv->guard, fd->connect_fd, ad ? ad->client_addr : NULL)
                             : NULL;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        cti_guard_close(srv->guard, *socket_context);
        *socket_context = NULL;
    }
}

/* MHD's messages. Most say that one connection ended badly (the peer closed
 * mid-request, or the guard shut it down): one per connection under a flood,
 * so they are debug lines. The rest stay warnings, at most 20 a second, the
 * number left out said in the next one written. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    static _Atomic int64_t window_s;
    static atomic_int in_window, dropped;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    bool per_connection = strstr(msg, "clos") || strstr(msg, "Clos") || strstr(msg, "reset");
    if (per_connection) {
        if (cti_log_enabled(CTI_LOG_DEBUG))
            cti_log(CTI_LOG_DEBUG, NULL, "http: libmicrohttpd", CTI_LS("detail", msg));
        return;
    }
    int64_t now_s = cti_mono_us() / 1000000, w = atomic_load(&window_s);
    if (now_s != w && atomic_compare_exchange_strong(&window_s, &w, now_s))
        atomic_store(&in_window, 0);
    if (atomic_fetch_add(&in_window, 1) >= 20) {
        atomic_fetch_add(&dropped, 1);
        return;
    }
    cti_log(CTI_LOG_WARN, NULL, "http: libmicrohttpd", CTI_LS("detail", msg),
            CTI_LI("similar_lines_left_out", atomic_exchange(&dropped, 0)));
}

/* ---- lifecycle ------------------------------------------------------------------------ */

cti_http_server_t *cti_http_server_new(const cti_http_options_t *opts)
{
    cti_http_server_t *srv = cti_calloc(1, sizeof *srv);
    srv->opts = *opts;
    unsigned char r[4];
    cti_random_bytes(r, sizeof r);
    cti_hex(r, sizeof r, srv->rid_prefix);
    return srv;
}

void cti_http_route(cti_http_server_t *srv, int methods, const char *pattern,
                    cti_http_handler_fn fn, void *ud)
{
    cti_router_add(&srv->router, methods, pattern, fn, ud);
    srv->router.routes[srv->router.n - 1].metrics = cti_metrics_route(pattern);
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *res;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0)
        return CTI_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

int cti_http_start(cti_http_server_t *srv)
{
    struct sockaddr_storage ss;
    if (resolve(srv->opts.host, srv->opts.port, &ss) != 0) {
        cti_log(CTI_LOG_ERROR, NULL, "http: cannot resolve listen address",
                CTI_LS("host", srv->opts.host));
        return CTI_EIO;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    bool tls = srv->opts.tls_cert_pem && srv->opts.tls_key_pem;
    if (tls)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)srv->opts.tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)srv->opts.tls_key_pem},
        {MHD_OPTION_END, 0, NULL}};
    struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, which would let a
     * second server bind this port and silently take half the connections. MHD's
     * default (SO_REUSEADDR) still allows a quick restart. */
    cti_guard_options_t go = {.max_connections = srv->opts.max_connections,
                              .per_address = srv->opts.max_connections_per_address,
                              .header_timeout_s = srv->opts.header_timeout_s,
                              .idle_timeout_s = srv->opts.connection_timeout_s,
                              .min_body_rate = srv->opts.min_body_rate};
    srv->guard = cti_guard_new(&go);
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->opts.port, admit, srv, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, srv, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->opts.threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)srv->opts.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)srv->opts.connection_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        CONNECTION_POOL, MHD_OPTION_URI_LOG_CALLBACK,
        uri_log, srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_ARRAY, tls ? tls_opts : none, MHD_OPTION_END);
    if (!srv->daemon) {
        cti_log(CTI_LOG_ERROR, NULL, "http: cannot listen (address in use or not permitted?)",
                CTI_LS("host", srv->opts.host), CTI_LI("port", srv->opts.port));
        return CTI_EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : srv->opts.port;
    return 0;
}

int cti_http_port(const cti_http_server_t *srv)
{
    return srv->port;
}

/* Not MHD_quiesce_daemon: in libmicrohttpd 0.9.75 it removes the listening socket
 * from each pool thread's epoll set while a thread at MHD_OPTION_CONNECTION_LIMIT
 * may be removing it too, and the loser aborts the process ("Failed to remove
 * listen FD from epoll set"; seen under a connection flood). The accept policy
 * turns every new connection away instead: accepted and closed at once. */
void cti_http_quiesce(cti_http_server_t *srv)
{
    atomic_store(&srv->closing, true);
}

int cti_http_wait_idle(cti_http_server_t *srv, int timeout_ms)
{
    int64_t deadline = cti_mono_us() + (int64_t)timeout_ms * 1000;
    while (atomic_load(&srv->inflight) > 0 && cti_mono_us() < deadline)
        usleep(5000);
    return atomic_load(&srv->inflight);
}

void cti_http_free(cti_http_server_t *srv)
{
    if (!srv)
        return;
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    cti_guard_free(srv->guard); /* after MHD: its close events reach the guard */
    cti_router_free(&srv->router);
    free(srv);
}
