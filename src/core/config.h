/*
 * config.h — configuration from environment variables and an optional .env file.
 *
 * Names follow what Dialpad integrators already use (PORT, NODE_ENV, DB_*,
 * DATABASE_URL, DIALPAD_*, INTERNAL_API_SECRET, ...); docs/CONFIGURATION.md
 * lists every variable. A real environment variable wins over the same name
 * in .env. Loading never writes anything: problems are collected, one
 * sentence each, so start-up can print them all at once.
 *
 * Main thread only (start-up); the loaded struct is read-only afterwards and
 * may then be read from any thread.
 */
#ifndef CTI_CORE_CONFIG_H
#define CTI_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/cidr.h"
#include "core/log.h"

typedef enum { CTI_ENV_SANDBOX, CTI_ENV_PRODUCTION } cti_env_t;
typedef enum { CTI_DB_SQLITE, CTI_DB_POSTGRES } cti_db_kind_t;

/* At most this many retries in OUTBOUND_RETRY_SCHEDULE. */
#define CTI_OUTBOUND_MAX_RETRIES 16

/* Every request body above this is refused with 413 (the contract's 1 MiB). */
#define CTI_MAX_BODY_BYTES (1024 * 1024)

typedef struct {
    size_t n;
    char **items;
} cti_strlist_t;

typedef struct cti_config {
    cti_env_t env;
    char *host;
    int port;
    cti_log_level_t log_level;

    cti_db_kind_t db_kind;
    char *db_conninfo; /* SQLite: file path. PostgreSQL: libpq conninfo (URI or key=value). */
    char *db_display;  /* db_conninfo with any password removed: safe to log */
    char *sqlite_synchronous; /* FULL (default) or NORMAL */
    int db_query_timeout_ms;  /* PostgreSQL: longest wait for a statement or a connect */

    char *internal_api_secret; /* NULL until set or generated (sandbox) */
    char *metrics_token;       /* a bearer token that reads GET /metrics only, or NULL */
    char *dialpad_webhook_secret;
    char *dialpad_default_app_id;
    char *dialpad_client_id, *dialpad_client_secret, *dialpad_redirect_uri;
    char *dialpad_scopes;
    cti_strlist_t dialpad_call_states; /* what a connection's call subscription asks for */
    cti_strlist_t dialpad_subscribe;   /* subscription types: call, sms, agent_status, contact */
    int reconcile_interval_s;          /* 0: no periodic reconciliation */
    int reconcile_window_s;
    char *public_base_url;
    char *default_country_code; /* calling code for national numbers: "1" */
    cti_strlist_t allowed_origins; /* empty: Origin not checked */

    char *tls_cert_file, *tls_key_file;
    bool tls_by_proxy;

    char *data_dir;          /* var/ by default: SQLite file, generated admin secret */
    int http_threads;        /* MHD thread pool size */
    int max_connections;     /* open HTTP connections, all clients */
    int connection_timeout_s;/* idle keep-alive and slow-request timeout */
    int max_connections_per_address; /* 0: no cap */
    int header_timeout_s;    /* a new connection's complete request head, from accept */
    int min_body_rate;       /* bytes/s a request body must keep up (0: no minimum) */
    int shutdown_timeout_s;  /* how long SIGTERM waits for in-flight requests */
    int ws_max_connections;  /* WebSocket connections, all apps */
    int calls_scan_max;      /* legs one page of GET /api/calls tests (0: no bound) */
    int ws_max_per_app;
    int ws_ping_interval_s;
    int ws_sndbuf;           /* SO_SNDBUF of WebSocket sockets (0 = kernel default) */
    bool ws_io_uring;        /* fan-out writes batched through io_uring (falls back by itself) */
    bool admin_secret_generated;

    /* Secrets at rest and the Dialpad API client (core/seal.c, dialpad/client.c). */
    char *token_encryption_key;     /* NULL until set or generated (sandbox); never logged */
    char *token_encryption_key_old; /* comma-separated old keys (read only), or NULL */
    char *dialpad_base_url;         /* where Dialpad is; no trailing slash */
    bool token_key_generated;       /* read from or written to DATA_DIR/token-key */

    /* Rate limits and retention (http/ratelimit.h, api/limits.c, repo/retention.c). */
    int rate_limit_api;          /* requests/s per app over /api and /ws (0: off) */
    int rate_limit_admin;        /* requests/s per client address over /internal and
                                  * requests without credentials (0: off) */
    cti_cidr_list_t trusted_proxies; /* peers whose X-Forwarded-For is believed */
    int retention_days;          /* raw webhooks, timelines, event log (0: forever) */
    int retention_calls_days;    /* calls, voicemails, messages (0: forever) */
    int retention_tick_ms;       /* how often the purger runs (tests shorten it) */

    /* Outbound webhooks (outbound/, api/endpoints.c). */
    bool outbound_allow_private; /* deliver to loopback/private addresses in production */
    int outbound_timeout_ms;     /* one attempt: connect to the end of the answer */
    int outbound_max_in_flight;  /* attempts at once, all endpoints (this instance) */
    int outbound_endpoint_in_flight; /* attempts at once to one endpoint */
    int outbound_retries;        /* retries after the first attempt (entries below) */
    int64_t outbound_retry_ms[CTI_OUTBOUND_MAX_RETRIES]; /* wait before retry i */
    int64_t outbound_disable_after_ms; /* an endpoint failing this long is disabled */
} cti_config_t;

/* Looks a name up; returns NULL when unset. */
typedef const char *(*cti_getenv_fn)(const char *name, void *ud);

/* Fills cfg from get() and, beneath it, the .env file at dotenv_path (may be
 * NULL or missing). Every problem is appended to errors (fatal) or warnings.
 * Returns 0 when errors is empty, CTI_EINVAL otherwise. cfg is always fully
 * initialised and must be released with cti_config_free(). */
int cti_config_load(cti_config_t *cfg, cti_getenv_fn get, void *ud, const char *dotenv_path,
                    cti_strlist_t *errors, cti_strlist_t *warnings);
/* Frees what cti_config_load allocated. */
void cti_config_free(cti_config_t *cfg);

/* Parses the text of a .env file into names and values (appended as pairs to
 * out: name, value, name, value, ...). Problems go to errors. Exposed for tests. */
void cti_dotenv_parse(const char *text, cti_strlist_t *out, cti_strlist_t *errors);

/* Sandbox only: when INTERNAL_API_SECRET is unset, reads or creates
 * <data_dir>/admin-secret (0600, 32 random bytes as hex) and uses it.
 * Returns 0 or CTI_EIO. */
int cti_config_ensure_admin_secret(cti_config_t *cfg);

/* Sandbox only: when TOKEN_ENCRYPTION_KEY is unset, reads <data_dir>/token-key
 * or creates it (0600, 32 random bytes as hex) and uses it. An existing file
 * is never replaced (it may be the key that sealed stored tokens): one that
 * is not a valid key gives CTI_EINVAL. Returns 0, CTI_EINVAL or CTI_EIO. */
int cti_config_ensure_token_key(cti_config_t *cfg);

/* The list helpers. Strings are copied. */
void cti_strlist_add(cti_strlist_t *l, const char *s);
void cti_strlist_addf(cti_strlist_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cti_strlist_free(cti_strlist_t *l);

/* The --help text listing every variable. */
extern const char cti_config_help[];
extern const char cti_config_help_limits[]; /* printed right after cti_config_help */

#endif
