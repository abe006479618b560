/*
 * config.c — see config.h. Three steps: read .env, look every name up
 * (environment first), validate. Validation reads as a list of rules, one
 * function per group of settings, each adding one sentence per problem.
 */
#include "core/config.h"
#include "core/common.h"
#include "core/seal.h"
#include "core/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char cti_config_help[] =
    "Configuration (environment variables, or KEY=VALUE lines in .env):\n"
    "  NODE_ENV                sandbox (default) | production\n"
    "  HOST, PORT              listen address (127.0.0.1 in sandbox, 0.0.0.0 in production; 4000)\n"
    "  LOG_LEVEL               debug | info (default) | warn | error\n"
    "  DATABASE_URL            postgres://user:pass@host:port/db or sqlite:PATH\n"
    "  DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME\n"
    "                          PostgreSQL by parts (instead of DATABASE_URL)\n"
    "                          neither: SQLite at $DATA_DIR/cti.db\n"
    "  SQLITE_SYNCHRONOUS      FULL (default: fsync every commit) | NORMAL\n"
    "  DB_QUERY_TIMEOUT_MS     PostgreSQL: the longest wait for any statement's answer or a\n"
    "                          connection (5000; /health waits at most 1000). Past it the\n"
    "                          connection is closed (a new one on next use) and the request\n"
    "                          fails as the database being away: webhooks 503, /health 503\n"
    "  INTERNAL_API_SECRET     admin bearer token (>= 32 chars in production;\n"
    "                          sandbox generates one in $DATA_DIR/admin-secret)\n"
    "  METRICS_TOKEN           a bearer token that may read GET /metrics and nothing else\n"
    "                          (the admin token reads it too)\n"
    "  DIALPAD_WEBHOOK_SECRET  secret for POST /webhooks/dialpad\n"
    "  DIALPAD_DEFAULT_APP_ID  app that POST /webhooks/dialpad routes to\n"
    "  DIALPAD_SANDBOX_CLIENT_ID, DIALPAD_SANDBOX_CLIENT_SECRET, DIALPAD_SANDBOX_REDIRECT_URI\n"
    "  DIALPAD_PROD_CLIENT_ID, DIALPAD_PROD_CLIENT_SECRET, DIALPAD_PROD_REDIRECT_URI\n"
    "  DIALPAD_SCOPES          space-separated OAuth scopes\n"
    "  DIALPAD_CALL_STATES     comma list of call states a connection subscribes to\n"
    "                          (default: every state of Dialpad's current API)\n"
    "  DIALPAD_SUBSCRIBE       comma list of call,sms,agent_status,contact (default call,sms)\n"
    "  RECONCILE_INTERVAL      seconds between reconciliations with Dialpad's call list\n"
    "                          (default 900; 0: only at start-up, after connecting, on demand)\n"
    "  RECONCILE_WINDOW        seconds of calls each reconciliation asks for (default 7200)\n"
    "  PUBLIC_BASE_URL         how Dialpad reaches this server (webhook_url)\n"
    "  ALLOWED_ORIGINS         comma-separated origins allowed to open /ws\n"
    "  DEFAULT_COUNTRY_CODE    calling code for national phone numbers (default 1)\n"
    "  TLS_CERT_FILE, TLS_KEY_FILE   serve HTTPS with this certificate\n"
    "  TLS_TERMINATED_BY_PROXY true when a proxy in front terminates TLS\n"
    "  DATA_DIR                where sandbox files live (default var)\n"
    "  HTTP_THREADS            HTTP worker threads (default: number of cores)\n"
    "  MAX_CONNECTIONS         open HTTP connections (default 4096)\n"
    "  CONNECTION_TIMEOUT      seconds before an idle or slow connection is closed (30)\n"
    "  MAX_CONNECTIONS_PER_ADDRESS  open HTTP connections per client address, an IPv6\n"
    "                          /64 counting as one (256; 0 = no cap, the default\n"
    "                          with TLS_TERMINATED_BY_PROXY=true)\n"
    "  HEADER_TIMEOUT          seconds a new connection has to send a complete request\n"
    "                          head (10, or CONNECTION_TIMEOUT if shorter; at most that)\n"
    "  MIN_BODY_RATE           bytes/s a request body must keep up after HEADER_TIMEOUT\n"
    "                          of grace (4096; 0 = no minimum)\n"
    "  SHUTDOWN_TIMEOUT        seconds SIGTERM waits for in-flight requests (10)\n"
    "  WS_MAX_CONNECTIONS      WebSocket connections, all apps (3000; also bounded by the\n"
    "                          open-file limit, and with TLS_CERT_FILE by MAX_CONNECTIONS)\n"
    "  WS_MAX_PER_APP          WebSocket connections per app (1000)\n"
    "  WS_PING_INTERVAL        seconds between server pings (30)\n"
    "  WS_SNDBUF               socket send buffer for WebSockets, bytes (kernel default)\n"
    "  WS_IO_URING             false: fan-out writes each socket with send() instead of\n"
    "                          batching through io_uring (true; without io_uring in the\n"
    "                          kernel or sandbox it falls back to send() by itself)\n";

/* (two strings: C11 compilers need only take 4095 characters in one) */
const char cti_config_help_limits[] =
    "  TOKEN_ENCRYPTION_KEY    32 bytes (64 hex digits or base64) sealing tokens at rest\n"
    "                          (required in production; sandbox generates $DATA_DIR/token-key)\n"
    "  TOKEN_ENCRYPTION_KEY_OLD  comma-separated old keys, still read while rotating\n"
    "  DIALPAD_BASE_URL        where Dialpad is (https://sandbox.dialpad.com in sandbox,\n"
    "                          https://dialpad.com in production)\n"
    "  RATE_LIMIT_API          requests/s per app over /api and /ws upgrades (200; burst\n"
    "                          twice that; 0 = off). Per instance.\n"
    "  RATE_LIMIT_ADMIN        requests/s per client address over /internal, /metrics and\n"
    "                          requests without credentials (50; burst twice; 0 = off)\n"
    "  TRUSTED_PROXIES         comma list of CIDR blocks (10.0.0.0/8, fd00::/8) whose\n"
    "                          X-Forwarded-For is believed (default: none)\n"
    "  RETENTION_DAYS          days raw webhooks, call timelines and the event log are\n"
    "                          kept (90; 0 = forever)\n"
    "  RETENTION_CALLS_DAYS    days calls, voicemails and messages are kept (0 = forever,\n"
    "                          the default)\n"
    "  RETENTION_TICK_MS       milliseconds between purges (60000; for tests)\n"
    "  OUTBOUND_ALLOW_PRIVATE  true: production may deliver webhooks to loopback,\n"
    "                          private and link-local addresses (false)\n"
    "  OUTBOUND_TIMEOUT_MS     one delivery attempt, connect to answer (10000)\n"
    "  OUTBOUND_RETRY_SCHEDULE waits before each retry: comma list of durations with\n"
    "                          ms, s, m, h or d (5s,5m,30m,2h,5h,10h,10h; jitter added)\n"
    "  OUTBOUND_DISABLE_AFTER  an endpoint failing this long is disabled (5d)\n"
    "  OUTBOUND_MAX_IN_FLIGHT  delivery attempts at once, all endpoints (256)\n"
    "  OUTBOUND_ENDPOINT_IN_FLIGHT  attempts at once to one endpoint (32)\n"
    "  CALLS_SCAN_MAX          legs one page of GET /api/calls reads to test state,\n"
    "                          outcome, direction and root_only (10000; 0 = no bound):\n"
    "                          a page may then be short with a next_cursor to go on\n";

/* ---- string lists ---------------------------------------------------------- */

void cti_strlist_add(cti_strlist_t *l, const char *s)
{
    l->items = cti_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = cti_strdup(s);
}

void cti_strlist_addf(cti_strlist_t *l, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cti_strlist_add(l, buf);
}

void cti_strlist_free(cti_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* ---- .env ------------------------------------------------------------------ */

/* Parses a double-quoted value starting after the quote; handles \n \t \" \\. */
static int dq_value(const char *p, char *out, size_t cap)
{
    size_t n = 0;
    for (; *p && *p != '"'; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            p++;
            c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
        }
        if (n + 1 < cap)
            out[n++] = c;
    }
    out[n] = '\0';
    if (*p != '"')
        return -1;
    for (p++; *p == ' ' || *p == '\t'; p++)
        ;
    return *p == '\0' || *p == '#' ? 0 : -1;
}

static int parse_value(const char *p, char *out, size_t cap)
{
    if (*p == '"')
        return dq_value(p + 1, out, cap);
    if (*p == '\'') {
        const char *end = strchr(p + 1, '\'');
        if (!end)
            return -1;
        snprintf(out, cap, "%.*s", (int)(end - p - 1), p + 1);
        for (end++; *end == ' ' || *end == '\t'; end++)
            ;
        return *end == '\0' || *end == '#' ? 0 : -1;
    }
    /* Unquoted: up to an inline " #" comment, trailing blanks trimmed. */
    size_t n = 0;
    for (; *p && !(*p == '#' && n > 0 && isspace((unsigned char)p[-1])); p++)
        if (n + 1 < cap)
            out[n++] = *p;
    while (n > 0 && isspace((unsigned char)out[n - 1]))
        n--;
    out[n] = '\0';
    return 0;
}

static void dotenv_line(char *line, int lineno, cti_strlist_t *out, cti_strlist_t *errors)
{
    char *p = line;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return;
    if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
        for (p += 6; *p == ' ' || *p == '\t'; p++)
            ;
    char *eq = strchr(p, '=');
    char *name_end = eq;
    while (name_end && name_end > p && isspace((unsigned char)name_end[-1]))
        name_end--;
    bool ok = eq && name_end > p;
    for (char *q = p; ok && q < name_end; q++)
        ok = isalnum((unsigned char)*q) || *q == '_';
    if (!ok) {
        cti_strlist_addf(errors, ".env line %d: expected NAME=VALUE", lineno);
        return;
    }
    char name[128], value[4096];
    snprintf(name, sizeof name, "%.*s", (int)(name_end - p), p);
    p = eq + 1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (parse_value(p, value, sizeof value) != 0) {
        cti_strlist_addf(errors, ".env line %d: unterminated or malformed quoted value for %s",
                         lineno, name);
        return;
    }
    cti_strlist_add(out, name);
    cti_strlist_add(out, value);
}

void cti_dotenv_parse(const char *text, cti_strlist_t *out, cti_strlist_t *errors)
{
    char *copy = cti_strdup(text);
    int lineno = 1;
    for (char *line = copy; line; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        line[strcspn(line, "\r")] = '\0';
        dotenv_line(line, lineno, out, errors);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = cti_malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0)
            buf = cti_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* ---- lookup ------------------------------------------------------------------ */

typedef struct {
    cti_getenv_fn get;
    void *ud;
    cti_strlist_t dotenv; /* name, value pairs */
} source_t;

static const char *lookup(source_t *src, const char *name)
{
    const char *v = src->get(name, src->ud);
    if (v)
        return *v ? v : NULL;
    for (size_t i = src->dotenv.n; i >= 2; i -= 2) /* last definition wins */
        if (strcmp(src->dotenv.items[i - 2], name) == 0)
            return *src->dotenv.items[i - 1] ? src->dotenv.items[i - 1] : NULL;
    return NULL;
}

static char *dup_or(source_t *src, const char *name, const char *dflt)
{
    const char *v = lookup(src, name);
    return cti_strdup(v ? v : dflt);
}

static int int_setting(source_t *src, const char *name, int dflt, int lo, int hi,
                       cti_strlist_t *errors)
{
    const char *v = lookup(src, name);
    int64_t n;
    if (!v)
        return dflt;
    if (cti_parse_i64(v, &n) != 0 || n < lo || n > hi) {
        cti_strlist_addf(errors, "%s must be a whole number from %d to %d (got \"%s\")", name, lo,
                         hi, v);
        return dflt;
    }
    return (int)n;
}

static bool bool_setting(source_t *src, const char *name, cti_strlist_t *errors)
{
    const char *v = lookup(src, name);
    if (!v || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
        return false;
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
        return true;
    cti_strlist_addf(errors, "%s must be true or false (got \"%s\")", name, v);
    return false;
}

/* ---- validation, by group ----------------------------------------------------- */

static void load_basics(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    const char *env = lookup(src, "NODE_ENV");
    if (!env || !strcmp(env, "sandbox") || !strcmp(env, "development") || !strcmp(env, "test"))
        cfg->env = CTI_ENV_SANDBOX;
    else if (!strcmp(env, "production"))
        cfg->env = CTI_ENV_PRODUCTION;
    else
        cti_strlist_addf(errors, "NODE_ENV must be sandbox or production (got \"%s\")", env);
    bool prod = cfg->env == CTI_ENV_PRODUCTION;
    cfg->host = dup_or(src, "HOST", prod ? "0.0.0.0" : "127.0.0.1");
    cfg->port = int_setting(src, "PORT", 4000, 1, 65535, errors);
    const char *lvl = lookup(src, "LOG_LEVEL");
    if (lvl && cti_log_parse_level(lvl, &cfg->log_level) != 0)
        cti_strlist_addf(errors, "LOG_LEVEL must be debug, info, warn or error (got \"%s\")", lvl);
    cfg->data_dir = dup_or(src, "DATA_DIR", "var");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->http_threads = int_setting(src, "HTTP_THREADS", cores > 0 ? (int)cores : 2, 1, 256, errors);
    cfg->max_connections = int_setting(src, "MAX_CONNECTIONS", 4096, 16, 1000000, errors);
    cfg->connection_timeout_s = int_setting(src, "CONNECTION_TIMEOUT", 30, 1, 3600, errors);
    /* Behind a proxy every connection comes from the proxy's address: no cap
     * unless one is set (TLS_TERMINATED_BY_PROXY itself is validated below). */
    const char *proxy = lookup(src, "TLS_TERMINATED_BY_PROXY");
    bool behind_proxy = proxy && (!strcmp(proxy, "true") || !strcmp(proxy, "1") ||
                                  !strcmp(proxy, "yes"));
    cfg->max_connections_per_address = int_setting(src, "MAX_CONNECTIONS_PER_ADDRESS",
                                                   behind_proxy ? 0 : 256, 0, 1000000, errors);
    cfg->header_timeout_s = int_setting(src, "HEADER_TIMEOUT",
                                        cfg->connection_timeout_s < 10 ? cfg->connection_timeout_s : 10,
                                        1, 3600, errors);
    if (cfg->header_timeout_s > cfg->connection_timeout_s)
        cti_strlist_addf(errors, "HEADER_TIMEOUT (%d) must not exceed CONNECTION_TIMEOUT (%d)",
                         cfg->header_timeout_s, cfg->connection_timeout_s);
    cfg->min_body_rate = int_setting(src, "MIN_BODY_RATE", 4096, 0, 1 << 30, errors);
    cfg->shutdown_timeout_s = int_setting(src, "SHUTDOWN_TIMEOUT", 10, 0, 3600, errors);
    cfg->ws_max_connections = int_setting(src, "WS_MAX_CONNECTIONS", 3000, 1, 1000000, errors);
    cfg->ws_max_per_app = int_setting(src, "WS_MAX_PER_APP", 1000, 1, 1000000, errors);
    cfg->ws_ping_interval_s = int_setting(src, "WS_PING_INTERVAL", 30, 1, 3600, errors);
    cfg->ws_sndbuf = int_setting(src, "WS_SNDBUF", 0, 0, 64 * 1024 * 1024, errors);
    cfg->ws_io_uring = !lookup(src, "WS_IO_URING") || bool_setting(src, "WS_IO_URING", errors);
    cfg->calls_scan_max = int_setting(src, "CALLS_SCAN_MAX", 10000, 0, 1000000000, errors);
}

/* Appends name='value' to a libpq key=value conninfo, quoting as libpq wants. */
static void conninfo_add(char *buf, size_t cap, const char *name, const char *value)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, cap - n, "%s%s='", n ? " " : "", name);
    for (const char *p = value; *p && n + 3 < cap; p++) {
        if (*p == '\'' || *p == '\\')
            buf[n++] = '\\';
        buf[n++] = *p;
    }
    snprintf(buf + n, cap - n, "'");
}

/* Whether a URI query parameter's name, percent-decoded as libpq decodes it, is "password". */
static bool password_param(const char *name, size_t n)
{
    char dec[16];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (o == sizeof dec - 1)
            return false;
        if (name[i] == '%' && i + 2 < n && isxdigit((unsigned char)name[i + 1]) &&
            isxdigit((unsigned char)name[i + 2]) && sscanf(name + i + 1, "%2x", &v) == 1) {
            dec[o++] = (char)v;
            i += 2;
        } else {
            dec[o++] = name[i];
        }
    }
    dec[o] = '\0';
    return !strcmp(dec, "password");
}

/* postgres://user:secret@host/db?password=x → postgres://user:***@host/db?password=***
 * (libpq also takes the password as a query parameter, its name percent-encoded
 * or not). Any length: each part is copied or replaced, never cut. */
static char *redact_url(const char *url)
{
    size_t len = strlen(url), n = 0;
    char *out = cti_malloc(2 * len + 8); /* "***" for a 0-byte value: "?password=&..." */
    /* user info as libpq reads it: up to an '@' that comes before any '/' */
    const char *scheme = strstr(url, "://"), *auth = scheme ? scheme + 3 : NULL;
    size_t info = auth ? strcspn(auth, "@/") : 0;
    const char *at = auth && auth[info] == '@' ? auth + info : NULL;
    const char *colon = at ? memchr(auth, ':', info) : NULL;
    const char *p = url;
    if (colon) {
        memcpy(out, url, (size_t)(colon - url));
        n = (size_t)(colon - url);
        memcpy(out + n, ":***", 4);
        n += 4;
        p = at;
    }
    const char *q = strchr(p, '?');
    size_t head = q ? (size_t)(q - p) : strlen(p);
    memcpy(out + n, p, head);
    n += head;
    for (p += head; *p;) { /* p at '?' or '&' */
        size_t part = strcspn(p + 1, "&"), name = strcspn(p + 1, "=&");
        bool hide = name < part && password_param(p + 1, name);
        size_t keep = hide ? name + 2 : part + 1; /* the separator, the name and '=' */
        memcpy(out + n, p, keep);
        n += keep;
        if (hide) {
            memcpy(out + n, "***", 3);
            n += 3;
        }
        p += part + 1;
    }
    out[n] = '\0';
    return out;
}

static void load_database(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    const char *url = lookup(src, "DATABASE_URL");
    const char *host = lookup(src, "DB_HOST"), *name = lookup(src, "DB_NAME");
    const char *user = lookup(src, "DB_USER"), *pass = lookup(src, "DB_PASSWORD");
    cfg->db_query_timeout_ms = int_setting(src, "DB_QUERY_TIMEOUT_MS", 5000, 100, 3600000, errors);
    cfg->sqlite_synchronous = dup_or(src, "SQLITE_SYNCHRONOUS", "FULL");
    if (strcmp(cfg->sqlite_synchronous, "FULL") && strcmp(cfg->sqlite_synchronous, "NORMAL"))
        cti_strlist_addf(errors, "SQLITE_SYNCHRONOUS must be FULL or NORMAL (got \"%s\")",
                         cfg->sqlite_synchronous);
    if (url) {
        if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
            cfg->db_kind = CTI_DB_POSTGRES;
            cfg->db_conninfo = cti_strdup(url);
            cfg->db_display = redact_url(url);
        } else if (!strncmp(url, "sqlite:", 7) && url[7]) {
            const char *path = url + 7;
            if (!strncmp(path, "//", 2))
                path += 2;
            cfg->db_kind = CTI_DB_SQLITE;
            cfg->db_conninfo = cti_strdup(path);
            cfg->db_display = cti_strdup(url);
        } else {
            cti_strlist_add(errors, "DATABASE_URL must start with postgres://, postgresql:// or "
                                    "sqlite: (e.g. sqlite:var/cti.db)");
        }
        return;
    }
    if (host || name || user || pass || lookup(src, "DB_PORT")) {
        /* every value may double (quoting): room for all of them, never cut */
        size_t cap = 128;
        const char *vals[] = {host, name, user, pass};
        for (size_t i = 0; i < CTI_ARRAY_LEN(vals); i++)
            cap += vals[i] ? 2 * strlen(vals[i]) : 0;
        char *ci = cti_malloc(cap), *shown = cti_malloc(cap);
        ci[0] = '\0';
        int port = int_setting(src, "DB_PORT", 5432, 1, 65535, errors);
        char portstr[16];
        snprintf(portstr, sizeof portstr, "%d", port);
        conninfo_add(ci, cap, "host", host ? host : "127.0.0.1");
        conninfo_add(ci, cap, "port", portstr);
        conninfo_add(ci, cap, "dbname", name ? name : "cti");
        if (user)
            conninfo_add(ci, cap, "user", user);
        memcpy(shown, ci, strlen(ci) + 1);
        if (pass)
            conninfo_add(ci, cap, "password", pass);
        cfg->db_kind = CTI_DB_POSTGRES;
        cfg->db_conninfo = ci;
        cfg->db_display = shown;
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/cti.db", cfg->data_dir);
    cfg->db_kind = CTI_DB_SQLITE;
    cfg->db_conninfo = cti_strdup(path);
    snprintf(path, sizeof path, "sqlite:%s/cti.db", cfg->data_dir);
    cfg->db_display = cti_strdup(path);
}

/* A secret is weak when short or made of very few distinct characters. */
static bool weak_secret(const char *s, size_t min_len)
{
    bool seen[256] = {false};
    int distinct = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (!seen[*p]) {
            seen[*p] = true;
            distinct++;
        }
    return strlen(s) < min_len || distinct < 8;
}

static void check_secret(cti_config_t *cfg, const char *name, const char *value, size_t min_len,
                         cti_strlist_t *errors, cti_strlist_t *warnings)
{
    bool prod = cfg->env == CTI_ENV_PRODUCTION;
    if (!value) {
        if (prod && !strcmp(name, "INTERNAL_API_SECRET"))
            cti_strlist_addf(errors, "%s is required in production", name);
        return;
    }
    if (weak_secret(value, min_len))
        cti_strlist_addf(prod ? errors : warnings,
                         "%s is weak: use at least %zu characters with at least 8 distinct ones "
                         "(e.g. openssl rand -hex 32)",
                         name, min_len);
}

static void load_secrets(cti_config_t *cfg, source_t *src, cti_strlist_t *errors,
                         cti_strlist_t *warnings)
{
    cfg->internal_api_secret = dup_or(src, "INTERNAL_API_SECRET", NULL);
    cfg->dialpad_webhook_secret = dup_or(src, "DIALPAD_WEBHOOK_SECRET", NULL);
    check_secret(cfg, "INTERNAL_API_SECRET", cfg->internal_api_secret, 32, errors, warnings);
    check_secret(cfg, "DIALPAD_WEBHOOK_SECRET", cfg->dialpad_webhook_secret, 16, errors, warnings);
    cfg->metrics_token = dup_or(src, "METRICS_TOKEN", NULL);
    if (cfg->metrics_token && !cfg->metrics_token[0]) { /* set empty: not set */
        free(cfg->metrics_token);
        cfg->metrics_token = NULL;
    }
    check_secret(cfg, "METRICS_TOKEN", cfg->metrics_token, 16, errors, warnings);
    cfg->dialpad_default_app_id = dup_or(src, "DIALPAD_DEFAULT_APP_ID", NULL);
    if (cfg->dialpad_default_app_id && !cti_is_uuid(cfg->dialpad_default_app_id))
        cti_strlist_addf(errors, "DIALPAD_DEFAULT_APP_ID must be an app id (a UUID), got \"%s\"",
                         cfg->dialpad_default_app_id);
}

/* Call states Dialpad's subscriptions accept (its 2025 API; "eavesdrop" left
 * its 2026 API, so it is accepted but not in the default). */
static const char *const call_states[] = {
    "preanswer", "calling", "ringing", "queued", "connected", "hold", "merged", "parked",
    "missed", "voicemail", "voicemail_uploaded", "transcription", "hangup", "recording",
    "call_transcription", "postcall", "csat", "pcsat", "dispositions", "ai_playbook", "admin",
    "admin_recording", "barge", "monitor", "takeover", "blocked", "recap_summary",
    "recap_action_items", "recap_outcome", "recap_purposes", "eavesdrop", "all", NULL};
#define DEFAULT_CALL_STATES 30 /* the first 30: all but eavesdrop and the wildcard */

static bool listed(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

/* DIALPAD_CALL_STATES and DIALPAD_SUBSCRIBE: what a connection subscribes to. */
static void load_subscriptions(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    static const char *const kinds[] = {"call", "sms", "agent_status", "contact", NULL};
    const char *states = lookup(src, "DIALPAD_CALL_STATES");
    if (!states)
        for (int i = 0; i < DEFAULT_CALL_STATES; i++)
            cti_strlist_add(&cfg->dialpad_call_states, call_states[i]);
    const char *subs = lookup(src, "DIALPAD_SUBSCRIBE");
    for (int pass = 0; pass < 2; pass++) {
        const char *text = pass ? (subs ? subs : "call,sms") : states;
        char *copy = cti_strdup(text ? text : ""), *save = NULL;
        for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            if (!listed(pass ? kinds : call_states, t))
                cti_strlist_addf(errors, "%s: unknown %s \"%s\"",
                                 pass ? "DIALPAD_SUBSCRIBE" : "DIALPAD_CALL_STATES",
                                 pass ? "subscription type" : "call state", t);
            else
                cti_strlist_add(pass ? &cfg->dialpad_subscribe : &cfg->dialpad_call_states, t);
        }
        free(copy);
    }
    if (states && cfg->dialpad_call_states.n == 0)
        cti_strlist_add(errors, "DIALPAD_CALL_STATES is empty (leave it unset for every state)");
}

static void load_dialpad(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    const char *prefix = cfg->env == CTI_ENV_PRODUCTION ? "DIALPAD_PROD_" : "DIALPAD_SANDBOX_";
    char name[64];
    snprintf(name, sizeof name, "%sCLIENT_ID", prefix);
    cfg->dialpad_client_id = dup_or(src, name, NULL);
    snprintf(name, sizeof name, "%sCLIENT_SECRET", prefix);
    cfg->dialpad_client_secret = dup_or(src, name, NULL);
    snprintf(name, sizeof name, "%sREDIRECT_URI", prefix);
    cfg->dialpad_redirect_uri = dup_or(src, name, NULL);
    if (cfg->dialpad_client_id && !cfg->dialpad_client_secret)
        cti_strlist_addf(errors, "%sCLIENT_SECRET is required when %sCLIENT_ID is set", prefix,
                         prefix);
    cfg->dialpad_scopes = dup_or(src, "DIALPAD_SCOPES",
                                 "calls:list recordings_export message_content_export screen_pop");
    load_subscriptions(cfg, src, errors);
    cfg->reconcile_interval_s = int_setting(src, "RECONCILE_INTERVAL", 900, 0, 86400, errors);
    cfg->reconcile_window_s = int_setting(src, "RECONCILE_WINDOW", 7200, 60, 30 * 86400, errors);
}

static bool is_http_url(const char *s)
{
    return !strncmp(s, "http://", 7) || !strncmp(s, "https://", 8);
}

static void load_web(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    bool prod = cfg->env == CTI_ENV_PRODUCTION;
    const char *base = lookup(src, "PUBLIC_BASE_URL");
    const char *origins = lookup(src, "ALLOWED_ORIGINS");
    cfg->tls_cert_file = dup_or(src, "TLS_CERT_FILE", NULL);
    cfg->tls_key_file = dup_or(src, "TLS_KEY_FILE", NULL);
    cfg->tls_by_proxy = bool_setting(src, "TLS_TERMINATED_BY_PROXY", errors);
    bool tls = cfg->tls_cert_file != NULL;
    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        cti_strlist_add(errors, "TLS_CERT_FILE and TLS_KEY_FILE must be set together");
    for (int i = 0; i < 2; i++) {
        const char *f = i ? cfg->tls_key_file : cfg->tls_cert_file;
        if (f && access(f, R_OK) != 0)
            cti_strlist_addf(errors, "%s: cannot read %s (%s)",
                             i ? "TLS_KEY_FILE" : "TLS_CERT_FILE", f, strerror(errno));
    }
    if (prod && !tls && !cfg->tls_by_proxy)
        cti_strlist_add(errors, "production needs TLS: set TLS_CERT_FILE and TLS_KEY_FILE, or "
                                "TLS_TERMINATED_BY_PROXY=true behind a TLS-terminating proxy");
    if (base) {
        if (!is_http_url(base))
            cti_strlist_addf(errors, "PUBLIC_BASE_URL must start with http:// or https:// (got \"%s\")",
                             base);
        else if (prod && strncmp(base, "https://", 8))
            cti_strlist_add(errors, "PUBLIC_BASE_URL must be https:// in production");
        cfg->public_base_url = cti_strndup(base, strlen(base) - (base[strlen(base) - 1] == '/'));
    } else {
        char buf[512];
        const char *h = strcmp(cfg->host, "0.0.0.0") && strcmp(cfg->host, "::") ? cfg->host
                                                                                  : "localhost";
        snprintf(buf, sizeof buf, "%s://%s:%d", tls ? "https" : "http", h, cfg->port);
        cfg->public_base_url = cti_strdup(buf);
    }
    cfg->default_country_code = dup_or(src, "DEFAULT_COUNTRY_CODE", "1");
    const char *cc = cfg->default_country_code;
    if (strlen(cc) < 1 || strlen(cc) > 3 || strspn(cc, "0123456789") != strlen(cc) || cc[0] == '0')
        cti_strlist_addf(errors, "DEFAULT_COUNTRY_CODE must be a country calling code such as 1 "
                                 "or 44 (got \"%s\")", cc);
    char *copy = cti_strdup(origins ? origins : ""), *save = NULL;
    for (char *o = strtok_r(copy, ", ", &save); o; o = strtok_r(NULL, ", ", &save)) {
        if (strcmp(o, "*") && !is_http_url(o))
            cti_strlist_addf(errors, "ALLOWED_ORIGINS: \"%s\" is not an origin like https://app.example.com",
                             o);
        cti_strlist_add(&cfg->allowed_origins, o);
    }
    free(copy);
}

/* ---- rate limits and retention ------------------------------------------------- */

static void load_limits(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    cfg->rate_limit_api = int_setting(src, "RATE_LIMIT_API", 200, 0, 1000000, errors);
    cfg->rate_limit_admin = int_setting(src, "RATE_LIMIT_ADMIN", 50, 0, 1000000, errors);
    char err[160];
    const char *proxies = lookup(src, "TRUSTED_PROXIES");
    if (cti_cidr_list_parse(proxies, &cfg->trusted_proxies, err, sizeof err) != 0)
        cti_strlist_addf(errors, "TRUSTED_PROXIES: %s", err);
    cfg->retention_days = int_setting(src, "RETENTION_DAYS", 90, 0, 36500, errors);
    cfg->retention_calls_days = int_setting(src, "RETENTION_CALLS_DAYS", 0, 0, 36500, errors);
    if (cfg->retention_calls_days && cfg->retention_days &&
        cfg->retention_calls_days < cfg->retention_days)
        cti_strlist_addf(errors, "RETENTION_CALLS_DAYS (%d) must not be shorter than "
                                 "RETENTION_DAYS (%d): timelines would outlive their calls",
                         cfg->retention_calls_days, cfg->retention_days);
    cfg->retention_tick_ms = int_setting(src, "RETENTION_TICK_MS", 60000, 50, 86400000, errors);
}

/* ---- outbound webhooks --------------------------------------------------------- */

/* "250ms", "5s", "5m", "2h", "1d" → milliseconds; -1 when malformed. */
static int64_t parse_duration_ms(const char *s)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n < 0 || n > 10LL * 365 * 86400 * 1000)
        return -1;
    int64_t unit = !strcmp(end, "ms") ? 1
                 : !strcmp(end, "s")  ? 1000
                 : !strcmp(end, "m")  ? 60000
                 : !strcmp(end, "h")  ? 3600000
                 : !strcmp(end, "d")  ? 86400000
                                      : 0;
    return unit ? n * unit : -1;
}

static void load_outbound(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    cfg->outbound_allow_private = bool_setting(src, "OUTBOUND_ALLOW_PRIVATE", errors);
    cfg->outbound_timeout_ms = int_setting(src, "OUTBOUND_TIMEOUT_MS", 10000, 100, 600000, errors);
    cfg->outbound_max_in_flight = int_setting(src, "OUTBOUND_MAX_IN_FLIGHT", 256, 1, 4096, errors);
    cfg->outbound_endpoint_in_flight =
        int_setting(src, "OUTBOUND_ENDPOINT_IN_FLIGHT", 32, 1, 1024, errors);
    const char *v = lookup(src, "OUTBOUND_RETRY_SCHEDULE");
    char *copy = cti_strdup(v ? v : "5s,5m,30m,2h,5h,10h,10h"), *save = NULL;
    cfg->outbound_retries = 0;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int64_t ms = parse_duration_ms(t);
        if (ms < 0 || cfg->outbound_retries == CTI_OUTBOUND_MAX_RETRIES) {
            cti_strlist_addf(errors, "OUTBOUND_RETRY_SCHEDULE must be at most %d durations "
                                     "like 5s, 5m, 2h (got \"%s\")",
                             CTI_OUTBOUND_MAX_RETRIES, v);
            break;
        }
        cfg->outbound_retry_ms[cfg->outbound_retries++] = ms;
    }
    free(copy);
    v = lookup(src, "OUTBOUND_DISABLE_AFTER");
    cfg->outbound_disable_after_ms = v ? parse_duration_ms(v) : 5LL * 86400000;
    if (cfg->outbound_disable_after_ms <= 0) {
        cti_strlist_addf(errors, "OUTBOUND_DISABLE_AFTER must be a duration like 5d or 12h "
                                 "(got \"%s\")", v);
        cfg->outbound_disable_after_ms = 5LL * 86400000;
    }
}

/* ---- secrets at rest and the Dialpad API client --------------------------------- */

static void load_token_keys(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    unsigned char key[CTI_SEAL_KEY_LEN];
    char why[200];
    cfg->token_encryption_key = dup_or(src, "TOKEN_ENCRYPTION_KEY", NULL);
    cfg->token_encryption_key_old = dup_or(src, "TOKEN_ENCRYPTION_KEY_OLD", NULL);
    if (!cfg->token_encryption_key && cfg->env == CTI_ENV_PRODUCTION)
        cti_strlist_add(errors, "TOKEN_ENCRYPTION_KEY is required in production (32 bytes as 64 "
                                "hex digits or base64, e.g. openssl rand -hex 32)");
    if (cfg->token_encryption_key &&
        cti_seal_parse_key(cfg->token_encryption_key, key, why, sizeof why) != 0)
        cti_strlist_addf(errors, "TOKEN_ENCRYPTION_KEY %s", why);
    char *copy = cti_strdup(cfg->token_encryption_key_old ? cfg->token_encryption_key_old : "");
    char *save = NULL;
    int item = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (cti_seal_parse_key(t, key, why, sizeof why) != 0)
            cti_strlist_addf(errors, "TOKEN_ENCRYPTION_KEY_OLD item %d %s", item + 1, why);
        else
            item++;
    if (item > CTI_SEAL_MAX_KEYS - 1)
        cti_strlist_addf(errors, "TOKEN_ENCRYPTION_KEY_OLD holds %d keys; at most %d are kept",
                         item, CTI_SEAL_MAX_KEYS - 1);
    free(copy);
    cti_seal_wipe(key, sizeof key);
}

static void load_dialpad_api(cti_config_t *cfg, source_t *src, cti_strlist_t *errors)
{
    bool prod = cfg->env == CTI_ENV_PRODUCTION;
    const char *url = lookup(src, "DIALPAD_BASE_URL");
    if (!url)
        url = prod ? "https://dialpad.com" : "https://sandbox.dialpad.com";
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    cfg->dialpad_base_url = cti_strndup(url, n);
    const char *host = strstr(cfg->dialpad_base_url, "://");
    if (!is_http_url(cfg->dialpad_base_url) || !host || !host[3] || host[3] == '/' ||
        strpbrk(cfg->dialpad_base_url, "?# \t"))
        cti_strlist_addf(errors, "DIALPAD_BASE_URL must be an http(s) URL such as "
                                 "https://dialpad.com, without query or fragment (got \"%s\")",
                         url);
    else if (prod && strncmp(cfg->dialpad_base_url, "https://", 8) != 0)
        cti_strlist_add(errors, "DIALPAD_BASE_URL must be https:// in production");
}

static void free_dialpad_api(cti_config_t *cfg)
{
    cti_seal_wipe_free(cfg->token_encryption_key);
    cti_seal_wipe_free(cfg->token_encryption_key_old);
    free(cfg->dialpad_base_url);
    cfg->token_encryption_key = cfg->token_encryption_key_old = cfg->dialpad_base_url = NULL;
}

int cti_config_load(cti_config_t *cfg, cti_getenv_fn get, void *ud, const char *dotenv_path,
                    cti_strlist_t *errors, cti_strlist_t *warnings)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->log_level = CTI_LOG_INFO;
    source_t src = {.get = get, .ud = ud};
    char *text = dotenv_path ? read_file(dotenv_path) : NULL;
    if (text) {
        cti_dotenv_parse(text, &src.dotenv, errors);
        free(text);
    }
    load_basics(cfg, &src, errors);
    load_database(cfg, &src, errors);
    load_secrets(cfg, &src, errors, warnings);
    load_dialpad(cfg, &src, errors);
    load_web(cfg, &src, errors);
    load_token_keys(cfg, &src, errors);
    load_dialpad_api(cfg, &src, errors);
    load_limits(cfg, &src, errors);
    load_outbound(cfg, &src, errors);
    cti_strlist_free(&src.dotenv);
    return errors->n ? CTI_EINVAL : 0;
}

void cti_config_free(cti_config_t *cfg)
{
    char **strs[] = {&cfg->host, &cfg->db_conninfo, &cfg->db_display, &cfg->sqlite_synchronous,
                     &cfg->internal_api_secret, &cfg->metrics_token, &cfg->dialpad_webhook_secret,
                     &cfg->dialpad_default_app_id, &cfg->dialpad_client_id,
                     &cfg->dialpad_client_secret, &cfg->dialpad_redirect_uri,
                     &cfg->dialpad_scopes, &cfg->public_base_url, &cfg->default_country_code, &cfg->tls_cert_file,
                     &cfg->tls_key_file, &cfg->data_dir};
    for (size_t i = 0; i < CTI_ARRAY_LEN(strs); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    cti_strlist_free(&cfg->allowed_origins);
    cti_strlist_free(&cfg->dialpad_call_states);
    cti_strlist_free(&cfg->dialpad_subscribe);
    cti_cidr_list_free(&cfg->trusted_proxies);
    free_dialpad_api(cfg);
}

/* ---- sandbox admin secret ------------------------------------------------------ */

int cti_config_ensure_admin_secret(cti_config_t *cfg)
{
    if (cfg->internal_api_secret)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/admin-secret", cfg->data_dir);
    char *existing = read_file(path);
    if (existing) {
        existing[strcspn(existing, "\r\n")] = '\0';
        if (strlen(existing) >= 32) {
            cfg->internal_api_secret = existing;
            cfg->admin_secret_generated = true;
            return 0;
        }
        free(existing);
    }
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST)
        return CTI_EIO;
    unsigned char raw[32];
    char hex[65];
    cti_random_bytes(raw, sizeof raw);
    cti_hex(raw, sizeof raw, hex);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return CTI_EIO;
    bool ok = write(fd, hex, 64) == 64 && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok)
        return CTI_EIO;
    cfg->internal_api_secret = cti_strdup(hex);
    cfg->admin_secret_generated = true;
    return 0;
}

/* ---- sandbox token key ------------------------------------------------------------ */

/* Reads an existing key file: 0 (key taken), CTI_ENOTFOUND (no file) or CTI_EINVAL. */
static int read_token_key(cti_config_t *cfg, const char *path)
{
    char *text = read_file(path);
    if (!text)
        return errno == ENOENT ? CTI_ENOTFOUND : CTI_EIO;
    unsigned char key[CTI_SEAL_KEY_LEN];
    char why[200];
    text[strcspn(text, "\r\n")] = '\0';
    int rc = cti_seal_parse_key(text, key, why, sizeof why);
    cti_seal_wipe(key, sizeof key);
    if (rc != 0) {
        cti_seal_wipe_free(text);
        return CTI_EINVAL;
    }
    cfg->token_encryption_key = text;
    cfg->token_key_generated = true;
    return 0;
}

int cti_config_ensure_token_key(cti_config_t *cfg)
{
    if (cfg->token_encryption_key)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/token-key", cfg->data_dir);
    int rc = read_token_key(cfg, path);
    if (rc != CTI_ENOTFOUND)
        return rc;
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST)
        return CTI_EIO;
    unsigned char raw[CTI_SEAL_KEY_LEN];
    char hex[2 * CTI_SEAL_KEY_LEN + 1];
    cti_random_bytes(raw, sizeof raw);
    cti_hex(raw, sizeof raw, hex);
    cti_seal_wipe(raw, sizeof raw);
    /* Written aside, then linked into place: another instance starting at the
     * same moment either wins (and we read its key) or finds ours complete. */
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        cti_seal_wipe(hex, sizeof hex);
        return CTI_EIO;
    }
    bool ok = write(fd, hex, 64) == 64 && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    int linked = ok ? link(tmp, path) : -1, link_errno = errno;
    unlink(tmp);
    if (linked != 0) {
        cti_seal_wipe(hex, sizeof hex);
        return ok && link_errno == EEXIST ? read_token_key(cfg, path) : CTI_EIO;
    }
    int dfd = open(cfg->data_dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { /* the new name survives a power loss too */
        fsync(dfd);
        close(dfd);
    }
    cfg->token_encryption_key = cti_strdup(hex);
    cfg->token_key_generated = true;
    cti_seal_wipe(hex, sizeof hex);
    return 0;
}
