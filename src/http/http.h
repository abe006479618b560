/*
 * http.h — the HTTP framework the endpoints stand on, over libmicrohttpd.
 *
 * It owns: the MHD daemon (epoll, internal thread pool), the route table with
 * path parameters, request bodies and their limits, request ids, the access
 * log, JSON responses in the contract's error shape, and graceful shutdown
 * (quiesce, wait for in-flight requests, stop). It knows no endpoint and no
 * database: handlers are registered by src/api/.
 *
 * Threads: routes are registered on the main thread before cti_http_start().
 * Handlers run on MHD's pool threads, several at once; a request object is
 * used by one thread at a time and only until its response is set.
 *
 * A handler must, before it returns, set exactly one response with
 * cti_http_respond()/cti_http_json()/cti_http_error(). (A handler that sets
 * none gets a 500 and a log line naming the route: that is a bug.)
 */
#ifndef CTI_HTTP_HTTP_H
#define CTI_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct cti_http_server cti_http_server_t;
typedef struct cti_http_req cti_http_req_t;

/* Method bits for cti_http_route(). HEAD is served by GET routes. */
enum {
    CTI_HTTP_GET = 1,
    CTI_HTTP_POST = 2,
    CTI_HTTP_PUT = 4,
    CTI_HTTP_PATCH = 8,
    CTI_HTTP_DELETE = 16,
};

typedef void (*cti_http_handler_fn)(cti_http_req_t *req, void *ud);

typedef struct {
    const char *host;         /* numeric address or name to listen on */
    int port;
    int threads;              /* pool threads */
    int max_connections;
    int connection_timeout_s; /* idle keep-alive / slow client */
    int max_connections_per_address; /* 0: no cap */
    int header_timeout_s;     /* a complete request head within this of accept */
    int min_body_rate;        /* bytes/s a body must keep up; 0: no minimum */
    size_t max_body;          /* larger bodies → 413 */
    const char *tls_cert_pem; /* both set: serve HTTPS (PEM text, not paths) */
    const char *tls_key_pem;
    /* peers whose X-Forwarded-For names the client (cti_http_client_addr);
     * NULL or empty: the TCP peer is always the client. Must outlive the server. */
    const struct cti_cidr_list *trusted_proxies;
} cti_http_options_t;

/* Creates a server (not yet listening). Never returns NULL. Free with cti_http_free(). */
cti_http_server_t *cti_http_server_new(const cti_http_options_t *opts);

/* Registers a handler for methods (bit set) and a pattern such as
 * "/internal/apps/{app_id}/api-key": literal segments, and {name} segments
 * that match any one non-empty segment. pattern must outlive the server. */
void cti_http_route(cti_http_server_t *srv, int methods, const char *pattern,
                    cti_http_handler_fn fn, void *ud);

/* Binds and starts serving. Returns 0, or CTI_EIO with a log line saying why. */
int cti_http_start(cti_http_server_t *srv);
/* The port actually bound (useful when options.port was 0). */
int cti_http_port(const cti_http_server_t *srv);
/* Stops accepting new connections; keeps serving the open ones. */
void cti_http_quiesce(cti_http_server_t *srv);
/* Waits until no request is in flight, or timeout_ms passes. Returns the
 * number still in flight (0 when idle). */
int cti_http_wait_idle(cti_http_server_t *srv, int timeout_ms);
/* Stops the daemon (closes every connection) and frees the server. */
void cti_http_free(cti_http_server_t *srv);

/* ---- request ---------------------------------------------------------------------- */
/* Strings returned below belong to the request and live until its response is set. */

const char *cti_http_method(const cti_http_req_t *req);
const char *cti_http_path(const cti_http_req_t *req);
/* A {name} from the route pattern, or NULL. */
const char *cti_http_param(const cti_http_req_t *req, const char *name);
/* A query-string argument (decoded), or NULL when absent. */
const char *cti_http_query(const cti_http_req_t *req, const char *name);
/* A request header (case-insensitive name), or NULL. */
const char *cti_http_header(const cti_http_req_t *req, const char *name);
/* The request body (NUL-terminated for convenience; len excludes the NUL). */
const char *cti_http_body(const cti_http_req_t *req, size_t *len);
/* "GET /path" id echoed as X-Request-Id; safe to log. */
const char *cti_http_request_id(const cti_http_req_t *req);
/* The client's address as text ("127.0.0.1"): the TCP peer, unless the peer
 * is a trusted proxy (options.trusted_proxies), then the address its
 * X-Forwarded-For names (core/cidr.h, cti_client_addr_choose). The access
 * log, the auth brake, the audit log and the rate limits all use this; the
 * connection guard's per-address cap (guard.h) runs before any header is
 * read and counts TCP peers. */
const char *cti_http_client_addr(cti_http_req_t *req);

/* Parses the body as a JSON object. On failure sets a 400 response naming
 * the problem and returns NULL. The caller owns the returned reference. */
json_t *cti_http_json_object_body(cti_http_req_t *req);

/* ---- response ---------------------------------------------------------------------- */

/* Adds a response header (copied). Call before setting the response. */
void cti_http_add_header(cti_http_req_t *req, const char *name, const char *value);
/* Sets the response; takes ownership of body (malloc'd, may be NULL when len is 0). */
#define CTI_HTTP_JSON "application/json; charset=utf-8"
void cti_http_respond(cti_http_req_t *req, int status, const char *content_type, char *body,
                      size_t len);
/* Sets a JSON response; steals the reference to body. */
void cti_http_json(cti_http_req_t *req, int status, json_t *body);
/* Sets {"error": code, "message": <formatted>} with status. */
void cti_http_error(cti_http_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Asynchronous answers. A handler that hands the request to another thread
 * calls cti_http_suspend() and returns without a response; that thread later
 * sets the response (cti_http_json & co.) and calls cti_http_resume(). Until
 * then the request object stays valid and its pool thread serves others. */
void cti_http_suspend(cti_http_req_t *req);
/* Any thread, once, after setting the response. */
void cti_http_resume(cti_http_req_t *req);
/* Any thread, once, instead of setting a response: the route's handler runs
 * again from the start, on a pool thread (it was waiting for something it
 * will now find, such as a key verified off the pool threads). */
void cti_http_resume_rerun(cti_http_req_t *req);

/* Protocol switch (WebSocket). Sets a 101 response with the given headers
 * (name, value pairs, NULL-terminated); once it is sent, on_upgrade gets the
 * socket on an MHD thread and must not block, and must copy extra (bytes read
 * past the request head) before it returns. Plain HTTP: urh is NULL and the
 * fd is the callee's own (MHD has let go of the connection). TLS: the fd is
 * MHD's relay end and urh its handle. Either way close it with
 * cti_http_upgrade_close(urh, fd). */
struct MHD_UpgradeResponseHandle;
typedef void (*cti_http_upgrade_fn)(void *cls, int fd, const char *extra, size_t extra_len,
                                    struct MHD_UpgradeResponseHandle *urh);
void cti_http_upgrade(cti_http_req_t *req, cti_http_upgrade_fn on_upgrade, void *cls,
                      const char *const *headers);
/* Closes an upgraded connection (any thread). */
void cti_http_upgrade_close(struct MHD_UpgradeResponseHandle *urh, int fd);


/* Writes path + query with the values of credential-bearing arguments
 * (api_key, ticket, token, secret, code, ...) replaced by "REDACTED".
 * Exposed for tests. */
void cti_http_redact_uri(const char *uri, char *out, size_t cap);

#endif
