/*
 * main.c — wires the pieces together, nothing else: configuration, the
 * store, the HTTP server and its endpoints, and the shutdown sequence.
 *
 * Shutdown (SIGTERM/SIGINT), in serve(): stop accepting (the listening
 * socket is closed), wait up to SHUTDOWN_TIMEOUT for the requests in flight
 * (a webhook is answered once the ingest worker has stored it), then stop
 * the ingest worker (it stores and answers what is still queued and applies
 * what is pending), the PostgreSQL relay, the WebSocket hub (closing the
 * sockets), and only then the HTTP daemon (closing what is left), and close
 * the store; exit 0. Signals are blocked in every thread and taken here with
 * sigwait, so no work happens in a signal handler.
 */
#include "api/api.h"
#include "api/limits.h"
#include "repo/retention.h"
#include "core/common.h"
#include "core/config.h"
#include "core/log.h"
#include "core/seal.h"
#include "core/tenant.h"
#include "core/util.h"
#include "core/jobs.h"
#include "dialpad/client.h"
#include "dialpad/connection.h"
#include "dialpad/reconcile.h"
#include "outbound/outbound.h"
#include "dialpad/webhook.h"
#include "http/http.h"
#include "ingest/ingest.h"
#include "ingest/crmcache.h"
#include "repo/calls.h"
#include "repo/endpoints.h"
#include "repo/schema.h"
#include "repo/tenants.h"
#include "store/store.h"
#include "stream/hub.h"
#include "stream/listener.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CTI_VERSION "0.1.0"
#define STARTUP_DB_WAIT_S 30
#define JOB_THREADS 4        /* requests waiting for Dialpad at once */
#define REFRESH_TICK_MS 1000 /* how often token expiry is looked at */

static const char usage[] =
    "usage: cti-server [--check-config] [--env-file PATH] [--version] [--help]\n"
    "\n"
    "Dialpad CTI server: verifies and stores Dialpad webhooks, keeps calls,\n"
    "and serves them over REST and a WebSocket stream. Configured by\n"
    "environment variables; with none set it runs in sandbox mode on SQLite.\n"
    "\n"
    "  --check-config   validate the configuration, print it, exit 0 (ok) or 1\n"
    "  --env-file PATH  read KEY=VALUE lines from PATH instead of ./.env\n"
    "\n";

static const char *real_getenv(const char *name, void *ud)
{
    return getenv(name);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = cti_malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

/* Logs what is running and, in sandbox mode, what is not configured. */
static void log_summary(const cti_config_t *cfg, int port)
{
    char url[300];
    snprintf(url, sizeof url, "%s://%s:%d", cfg->tls_cert_file ? "https" : "http", cfg->host,
             port);
    cti_log(CTI_LOG_INFO, NULL, "cti-server listening", CTI_LS("url", url),
            CTI_LS("version", CTI_VERSION),
            CTI_LS("mode", cfg->env == CTI_ENV_PRODUCTION ? "production" : "sandbox"),
            CTI_LS("database", cfg->db_display), CTI_LI("http_threads", cfg->http_threads),
            CTI_LS("public_base_url", cfg->public_base_url));
    if (cfg->admin_secret_generated) {
        char path[4200];
        snprintf(path, sizeof path, "%s/admin-secret", cfg->data_dir);
        cti_log(CTI_LOG_INFO, NULL,
                "not configured: INTERNAL_API_SECRET: the admin API uses the generated secret "
                "in this file (send it as Authorization: Bearer <secret>)",
                CTI_LS("file", path));
    }
    if (!cfg->dialpad_client_id)
        cti_log_msg(CTI_LOG_INFO, NULL,
                    "not configured: Dialpad OAuth client (DIALPAD_SANDBOX_CLIENT_ID / "
                    "DIALPAD_PROD_CLIENT_ID): apps cannot connect a Dialpad account yet");
    if (!cfg->dialpad_webhook_secret)
        cti_log_msg(CTI_LOG_INFO, NULL,
                    "not configured: DIALPAD_WEBHOOK_SECRET: POST /webhooks/dialpad verifies "
                    "with each app's own secret only");
    if (cfg->allowed_origins.n == 0)
        cti_log_msg(CTI_LOG_INFO, NULL,
                    "not configured: ALLOWED_ORIGINS: WebSocket Origin is not checked");
}

static void print_problems(const cti_strlist_t *errors, const cti_strlist_t *warnings)
{
    for (size_t i = 0; i < warnings->n; i++)
        cti_log(CTI_LOG_WARN, NULL, "config", CTI_LS("problem", warnings->items[i]));
    for (size_t i = 0; i < errors->n; i++)
        cti_log(CTI_LOG_ERROR, NULL, "config", CTI_LS("problem", errors->items[i]));
}

/* Applies migrations, waiting up to STARTUP_DB_WAIT_S for the database. */
static int migrate_with_wait(cti_store_t *store)
{
    int rc = 0;
    for (int waited = 0; waited <= STARTUP_DB_WAIT_S; waited++) {
        rc = cti_store_migrate(store);
        if (rc != CTI_EUNAVAILABLE)
            break;
        if (waited == 0)
            cti_log(CTI_LOG_WARN, NULL, "store: database unavailable; waiting for it",
                    CTI_LI("max_seconds", STARTUP_DB_WAIT_S));
        sleep(1);
    }
    if (rc == 0 && (rc = cti_calls_backfill_docs(cti_store_db(store))) > 0)
        cti_log(CTI_LOG_INFO, NULL, "store: rendered the call objects of older rows",
                CTI_LI("calls", rc));
    if (rc < 0)
        cti_log(CTI_LOG_ERROR, NULL, "store: cannot prepare the database schema",
                CTI_LS("error", cti_strerror(rc)),
                CTI_LS("detail", cti_db_errmsg(cti_store_db(store))));
    return rc < 0 ? rc : 0;
}

/* The ingest worker's memory of user mappings (a core/tenant.h subscriber). */
static void crm_changed(void *ud, const char *app_id, unsigned what)
{
    cti_crm_cache_forget();
}

/* Every cache of tenant state hears of the changes committed here. */
static void subscribe_caches(cti_auth_t *auth)
{
    cti_tenant_subscribe(CTI_TENANT_APP | CTI_TENANT_KEYS, cti_auth_tenant_changed, auth);
    cti_tenant_subscribe(CTI_TENANT_APP | CTI_TENANT_SECRET, cti_webhook_tenant_changed, NULL);
    cti_tenant_subscribe(CTI_TENANT_MAPPINGS, crm_changed, NULL);
}

/* The Dialpad API client and the connections service (and its refresher);
 * tokens sealed with an old key are sealed again with the current one. */
/* Who hears of events the ingest worker committed: the hub (SQLite: one
 * process; on PostgreSQL the relay publishes every instance's, in commit
 * order) and the outbound sender (deliveries of this instance's events are
 * due at once; other instances' are found by its polls). */
typedef struct {
    cti_hub_t *hub;
    cti_outbound_t *outbound;
} published_t;

static void publish(const cti_logrow_t *events, int n, void *ud)
{
    published_t *p = ud;
    if (p->hub)
        cti_hub_publish_cb(events, n, p->hub);
    cti_outbound_published_cb(events, n, p->outbound);
}

static int start_dialpad(const cti_config_t *cfg, cti_store_t *store, const cti_seal_keys_t *keys,
                         cti_ingest_t *ingest, cti_dp_client_t **client, cti_dpconn_t **conn)
{
    cti_dp_options_t o;
    cti_dp_options_default(&o, cfg->dialpad_base_url);
    if (cti_dp_client_start(&o, client) != 0) {
        cti_log_msg(CTI_LOG_ERROR, NULL, "cannot start the Dialpad API client");
        return CTI_EIO;
    }
    cti_dpconn_options_t co = {.cfg = cfg, .store = store, .keys = keys, .client = *client,
                               .ingest = ingest, .refresh_tick_ms = REFRESH_TICK_MS};
    *conn = cti_dpconn_start(&co);
    int n = cti_dpconn_reseal_all(*conn);
    if (n > 0)
        cti_log(CTI_LOG_INFO, NULL, "dialpad: tokens sealed again with the current key",
                CTI_LI("connections", n));
    else if (n < 0)
        cti_log(CTI_LOG_WARN, NULL, "dialpad: could not re-seal tokens now (next start)",
                CTI_LS("error", cti_strerror(n)));
    return 0;
}

static int serve(cti_config_t *cfg)
{
    int status = 1;
    char *cert = NULL, *key = NULL;
    cti_store_t *store = NULL;
    cti_http_server_t *srv = NULL;
    cti_auth_t *auth = NULL;
    cti_ingest_t *ingest = NULL;
    cti_hub_t *hub = NULL;
    cti_dp_client_t *dpclient = NULL;
    cti_dpconn_t *dpconn = NULL;
    cti_jobs_t *jobs = NULL;
    cti_reconciler_t *reconciler = NULL;
    cti_relay_t *relay = NULL;
    cti_seal_keys_t *keys = NULL;
    cti_limits_t *limits = NULL;
    cti_purger_t *purger = NULL;
    cti_outbound_t *outbound = NULL;
    cti_store_options_t so = {.kind = cfg->db_kind, .conninfo = cfg->db_conninfo,
                              .display = cfg->db_display,
                              .sqlite_sync_full = !strcmp(cfg->sqlite_synchronous, "FULL"),
                              .query_timeout_ms = cfg->db_query_timeout_ms};
    char why[200];
    if (cti_seal_keys_load(cfg->token_encryption_key, cfg->token_encryption_key_old, &keys, why,
                           sizeof why) != 0) {
        cti_log(CTI_LOG_ERROR, NULL, "cannot load the token encryption keys", CTI_LS("why", why));
        return 1;
    }
    cti_store_open(&so, &store);
    if (migrate_with_wait(store) != 0 || cti_secrets_reseal(cti_store_db(store), keys, NULL) != 0 ||
        cti_endpoint_reseal(cti_store_db(store), keys, NULL, NULL) != 0)
        goto cleanup;

    if (cfg->tls_cert_file && (!(cert = slurp(cfg->tls_cert_file)) || !(key = slurp(cfg->tls_key_file)))) {
        cti_log_msg(CTI_LOG_ERROR, NULL, "cannot read TLS_CERT_FILE / TLS_KEY_FILE");
        goto cleanup;
    }
    cti_api_t api = {.cfg = cfg, .store = store, .keys = keys, .started_ms = cti_now_ms()};
    api.auth = auth = cti_auth_new(cfg->internal_api_secret);
    api.limits = limits = cti_limits_new(cfg);
    subscribe_caches(auth);
    cti_hub_options_t wo = {.store = store, .max_connections = cfg->ws_max_connections,
                            .max_per_app = cfg->ws_max_per_app,
                            .ping_interval_s = cfg->ws_ping_interval_s, .sndbuf = cfg->ws_sndbuf,
                            .batch_sends = cfg->ws_io_uring};
    api.hub = hub = cti_hub_start(&wo);
    /* SQLite: one process, the worker publishes what it commits. PostgreSQL:
     * every instance publishes through the listener (commit order, all instances). */
    bool pg = cfg->db_kind == CTI_DB_POSTGRES;
    if (pg)
        relay = cti_relay_start(store, hub);
    api.outbound = outbound = cti_outbound_start(cfg, store, keys);
    if (!outbound) {
        cti_log_msg(CTI_LOG_ERROR, NULL, "cannot start the outbound webhook sender");
        goto cleanup;
    }
    static published_t published; /* outlives the worker */
    published = (published_t){pg ? NULL : hub, outbound};
    api.ingest = ingest = cti_ingest_start(store, publish, &published);
    if (start_dialpad(cfg, store, keys, ingest, &dpclient, &dpconn) != 0)
        goto cleanup;
    api.dpconn = dpconn;
    api.jobs = jobs = cti_jobs_start(JOB_THREADS, "cti-jobs");
    api.reconciler = reconciler = cti_reconciler_start(dpconn, store, ingest,
                                                       cfg->reconcile_interval_s,
                                                       cfg->reconcile_window_s);
    cti_http_options_t ho = {.host = cfg->host, .port = cfg->port, .threads = cfg->http_threads,
                             .max_connections = cfg->max_connections,
                             .connection_timeout_s = cfg->connection_timeout_s,
                             .max_connections_per_address = cfg->max_connections_per_address,
                             .header_timeout_s = cfg->header_timeout_s,
                             .min_body_rate = cfg->min_body_rate,
                             .max_body = CTI_MAX_BODY_BYTES, .tls_cert_pem = cert,
                             .tls_key_pem = key, .trusted_proxies = &cfg->trusted_proxies};
    purger = cti_purger_start(store, cfg->retention_days, cfg->retention_calls_days,
                              cfg->retention_tick_ms);
    srv = cti_http_server_new(&ho);
    cti_api_register(srv, &api);
    if (cti_http_start(srv) != 0)
        goto cleanup;
    log_summary(cfg, cti_http_port(srv));

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
    cti_log(CTI_LOG_INFO, NULL, "shutting down: no new connections; finishing in-flight requests",
            CTI_LS("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
    cti_http_quiesce(srv);
    int left = cti_http_wait_idle(srv, cfg->shutdown_timeout_s * 1000);
    if (left > 0)
        cti_log(CTI_LOG_WARN, NULL, "shutdown timeout: closing requests still in flight",
                CTI_LI("requests", left));
    status = 0;
cleanup:
    /* In-flight webhooks are answered by the worker, which publishes to the hub:
     * stop the worker, then the hub (closing WebSockets), then the daemon. */
    cti_auth_drain(auth); /* requests waiting for bcrypt are answered */
    cti_jobs_stop(jobs);     /* requests waiting for Dialpad are answered */
    cti_reconciler_stop(reconciler);
    cti_purger_stop(purger);
    cti_dpconn_stop(dpconn); /* its refresher stops (it may still write events) */
    cti_dp_client_stop(dpclient);
    cti_ingest_stop(ingest);     /* webhooks arriving from now on: 503 */
    cti_outbound_stop(outbound); /* after the worker: it wakes the sender */
    cti_relay_stop(relay);
    cti_hub_stop(hub);
    cti_http_free(srv);
    /* nothing can submit a webhook or wake the sender any more */
    cti_ingest_free(ingest);
    cti_outbound_free(outbound);
    cti_auth_free(auth);
    cti_limits_free(limits);
    cti_store_close(store);
    cti_seal_keys_free(keys);
    free(cert);
    free(key);
    if (status == 0)
        cti_log_msg(CTI_LOG_INFO, NULL, "stopped");
    return status;
}

int main(int argc, char **argv)
{
    const char *env_file = ".env";
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s%s%s", usage, cti_config_help, cti_config_help_limits);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("cti-server %s\n", CTI_VERSION);
            return 0;
        } else if (!strcmp(argv[i], "--check-config")) {
            check_only = true;
        } else if (!strcmp(argv[i], "--env-file") && i + 1 < argc) {
            env_file = argv[++i];
            if (access(env_file, R_OK) != 0) {
                fprintf(stderr, "cti-server: cannot read --env-file %s\n", env_file);
                return 2;
            }
        } else {
            fprintf(stderr, "cti-server: unknown argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }

    /* Block the shutdown signals before any thread starts, so only sigwait sees them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    cti_config_t cfg;
    cti_strlist_t errors = {0}, warnings = {0};
    int rc = cti_config_load(&cfg, real_getenv, NULL, env_file, &errors, &warnings);
    cti_log_set_level(cfg.log_level);
    print_problems(&errors, &warnings);
    if (rc == 0 && check_only) {
        cti_log(CTI_LOG_INFO, NULL, "configuration ok",
                CTI_LS("mode", cfg.env == CTI_ENV_PRODUCTION ? "production" : "sandbox"),
                CTI_LS("listen", cfg.host), CTI_LI("port", cfg.port),
                CTI_LS("database", cfg.db_display),
                CTI_LB("admin_secret_set", cfg.internal_api_secret != NULL),
                CTI_LS("public_base_url", cfg.public_base_url));
    }
    int status = rc != 0 ? 1 : 0;
    if (rc == 0 && !check_only) {
        int krc = 0;
        if (cfg.env == CTI_ENV_SANDBOX && cti_config_ensure_admin_secret(&cfg) != 0) {
            cti_log(CTI_LOG_ERROR, NULL, "cannot write the sandbox admin secret",
                    CTI_LS("data_dir", cfg.data_dir));
            status = 1;
        } else if (cfg.env == CTI_ENV_SANDBOX && (krc = cti_config_ensure_token_key(&cfg)) != 0) {
            cti_log(CTI_LOG_ERROR, NULL,
                    krc == CTI_EINVAL ? "DATA_DIR/token-key is not a valid key (it may have sealed "
                                        "stored tokens: fix or restore it, do not delete it)"
                                      : "cannot write the sandbox token key",
                    CTI_LS("data_dir", cfg.data_dir));
            status = 1;
        } else {
            status = serve(&cfg);
        }
    }
    if (rc != 0)
        cti_log(CTI_LOG_ERROR, NULL, "configuration invalid: not starting",
                CTI_LI("problems", (int64_t)errors.n));
    cti_strlist_free(&errors);
    cti_strlist_free(&warnings);
    cti_config_free(&cfg);
    return status;
}
