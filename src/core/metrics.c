/*
 * metrics.c — see metrics.h. Owns the fixed series (one global struct of
 * atomics), the per-route HTTP tables, the two small labelled tables, the
 * collectors, and the text renderer.
 *
 * Never: a lock on a request's path (the HTTP and ingest counters are atomics
 * indexed without a search), or memory that grows with traffic.
 */
#include "core/metrics.h"
#include "core/common.h"
#include "core/util.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Request latency, and commit latency: 0.5 ms to 10 s, in µs. */
static const uint64_t le_latency[] = {500,    1000,   2500,   5000,    10000,   25000,   50000,
                                      100000, 250000, 500000, 1000000, 2500000, 10000000};
static const uint64_t le_batch[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

#define HIST(le_, scale_)                                                                          \
    {                                                                                              \
        .le = le_, .nle = (int)CTI_ARRAY_LEN(le_), .scale = scale_                                 \
    }

cti_metrics_t cti_metrics = {
    .ingest_batch_size = HIST(le_batch, 1.0),
    .ingest_commit_seconds = HIST(le_latency, 1e-6),
    .outbound_delivery_seconds = HIST(le_latency, 1e-6),
};

void cti_histogram_observe(cti_histogram_t *h, uint64_t v)
{
#ifdef CTI_NO_METRICS
    return;
#endif
    int i = 0;
    while (i < h->nle && v > h->le[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

/* ---- HTTP, by route ------------------------------------------------------------------------ */

static const char *const method_names[] = {"GET",   "HEAD",   "POST", "PUT",
                                           "PATCH", "DELETE", "other"};
#define NMETHODS ((int)CTI_ARRAY_LEN(method_names))

/* Status codes counted as themselves; any other counts as its class ("4xx"). */
static const short codes[] = {0,   101, 200, 201, 202, 204, 301, 302, 303, 304, 307, 308,
                              400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 413, 414,
                              415, 416, 422, 426, 429, 431, 500, 501, 502, 503, 504};
#define NCODES ((int)CTI_ARRAY_LEN(codes))
#define NSLOTS (NCODES + 5) /* + 1xx..5xx */

struct cti_metrics_route {
    const char *pattern;
    cti_metrics_route_t *next;
    cti_histogram_t latency;
    _Atomic uint64_t count[NMETHODS][NSLOTS];
};

static cti_metrics_route_t unmatched = {.pattern = "none", .latency = HIST(le_latency, 1e-6)};
static cti_metrics_route_t *routes, **routes_tail = &routes;

cti_metrics_route_t *cti_metrics_route(const char *pattern)
{
    for (cti_metrics_route_t *r = routes; r; r = r->next)
        if (!strcmp(r->pattern, pattern))
            return r; /* the same pattern for other methods: one set of series */
    cti_metrics_route_t *r = cti_calloc(1, sizeof *r);
    r->pattern = pattern;
    r->latency = (cti_histogram_t)HIST(le_latency, 1e-6);
    *routes_tail = r;
    routes_tail = &r->next;
    return r;
}

static int method_index(const char *m)
{
    for (int i = 0; m && i < NMETHODS - 1; i++)
        if (!strcmp(m, method_names[i]))
            return i;
    return NMETHODS - 1;
}

static int code_slot(int status)
{
    /* the common answers first; then the list, then the class */
    if (status == 200)
        return 2;
    for (int i = 0; i < NCODES; i++)
        if (codes[i] == status)
            return i;
    return status >= 100 && status < 600 ? NCODES + status / 100 - 1 : 0;
}

void cti_metrics_http(cti_metrics_route_t *route, const char *method, int status, int64_t us)
{
#ifdef CTI_NO_METRICS
    return;
#endif
    cti_metrics_route_t *r = route ? route : &unmatched;
    atomic_fetch_add_explicit(&r->count[method_index(method)][code_slot(status)], 1,
                              memory_order_relaxed);
    if (us >= 0)
        cti_histogram_observe(&r->latency, (uint64_t)us);
}

/* ---- labelled tables (mutex: off the hot path) ---------------------------------------------- */

typedef struct {
    const char *a; /* a string literal of the caller's */
    int code;
    uint64_t n;
} lrow_t;

typedef struct {
    pthread_mutex_t lock;
    lrow_t rows[CTI_METRICS_LTABLE_MAX];
    int n;
    uint64_t overflow; /* past every row: shown as {label="other",code="other"} */
} ltable_t;

static ltable_t dialpad_requests = {.lock = PTHREAD_MUTEX_INITIALIZER};
static ltable_t outbound = {.lock = PTHREAD_MUTEX_INITIALIZER};

static lrow_t *ltable_find(ltable_t *t, const char *a, int code)
{
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].code == code && !strcmp(t->rows[i].a, a))
            return &t->rows[i];
    return NULL;
}

/* Named rows fill all but the last; then each code has one "other" row while
 * rows remain; past that, one overflow count. */
static void ltable_add(ltable_t *t, const char *a, int code)
{
    pthread_mutex_lock(&t->lock);
    lrow_t *r = ltable_find(t, a, code);
    if (!r && t->n < CTI_METRICS_LTABLE_MAX - 1) /* kept: at most 64 names, never freed */
        *(r = &t->rows[t->n++]) = (lrow_t){cti_strdup(a), code, 0};
    else if (!r && !(r = ltable_find(t, "other", code)) && t->n < CTI_METRICS_LTABLE_MAX)
        *(r = &t->rows[t->n++]) = (lrow_t){"other", code, 0};
    if (r)
        r->n++;
    else
        t->overflow++;
    pthread_mutex_unlock(&t->lock);
}

void cti_metrics_dialpad_request(const char *operation, int code)
{
    ltable_add(&dialpad_requests, operation ? operation : "other", code);
}

void cti_metrics_outbound_delivery(const char *result)
{
    ltable_add(&outbound, result ? result : "other", 0);
}

/* ---- collectors ------------------------------------------------------------------------------ */

#define MAX_COLLECTORS 32
static struct {
    cti_metrics_collect_fn fn;
    void *ud;
} collectors[MAX_COLLECTORS];
static int ncollectors;
static cti_metrics_dp_conns_fn dp_conns_fn;
static void *dp_conns_ud;

void cti_metrics_collector(cti_metrics_collect_fn fn, void *ud)
{
    if (ncollectors == MAX_COLLECTORS)
        cti_fatal("metrics: more than %d collectors", MAX_COLLECTORS);
    collectors[ncollectors].fn = fn;
    collectors[ncollectors++].ud = ud;
}

void cti_metrics_dialpad_connections(cti_metrics_dp_conns_fn fn, void *ud)
{
    dp_conns_fn = fn;
    dp_conns_ud = ud;
}

/* ---- the text ----------------------------------------------------------------------------------
 */

struct cti_metrics_out {
    char *buf;
    size_t len, cap;
};

static void out_printf(cti_metrics_out_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void out_printf(cti_metrics_out_t *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            cti_fatal("metrics: vsnprintf failed");
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = 2 * o->cap + (size_t)n;
        o->buf = cti_realloc(o->buf, o->cap);
    }
}

/* A label value as the format needs it: \\ \" \n escaped. */
static void out_label(cti_metrics_out_t *o, const char *name, const char *value)
{
    out_printf(o, "%s=\"", name);
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            out_printf(o, "\\%c", *p);
        else if (*p == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *p);
    }
    out_printf(o, "\"");
}

/* Values: integers as integers, others with enough digits to round-trip. */
static void out_value(cti_metrics_out_t *o, double v)
{
    if (v == (double)(int64_t)v && v < 9e15 && v > -9e15)
        out_printf(o, " %lld\n", (long long)v);
    else
        out_printf(o, " %.15g\n", v);
}

void cti_metrics_family(cti_metrics_out_t *o, const char *name, const char *type, const char *help)
{
    out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void cti_metrics_sample2(cti_metrics_out_t *o, const char *name, const char *l1, const char *v1,
                         const char *l2, const char *v2, double v)
{
    out_printf(o, "%s", name);
    if (l1) {
        out_printf(o, "{");
        out_label(o, l1, v1);
        if (l2) {
            out_printf(o, ",");
            out_label(o, l2, v2);
        }
        out_printf(o, "}");
    }
    out_value(o, v);
}

void cti_metrics_sample(cti_metrics_out_t *o, const char *name, const char *label,
                        const char *value, double v)
{
    cti_metrics_sample2(o, name, label, value, NULL, NULL, v);
}

/* One histogram's samples: buckets (cumulative), sum, count; with one label or none. */
static void out_histogram(cti_metrics_out_t *o, const char *name, const char *label,
                          const char *value, cti_histogram_t *h)
{
    uint64_t cum = 0;
    char le[32], bucket[128];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    for (int i = 0; i <= h->nle; i++) {
        cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (i < h->nle)
            snprintf(le, sizeof le, "%g", (double)h->le[i] * h->scale);
        else
            snprintf(le, sizeof le, "+Inf");
        if (label)
            cti_metrics_sample2(o, bucket, label, value, "le", le, (double)cum);
        else
            cti_metrics_sample(o, bucket, "le", le, (double)cum);
    }
    char other[128];
    snprintf(other, sizeof other, "%s_sum", name);
    cti_metrics_sample(o, other, label, value,
                       (double)atomic_load_explicit(&h->sum, memory_order_relaxed) * h->scale);
    snprintf(other, sizeof other, "%s_count", name);
    /* the count is the +Inf bucket: read once, so the two always agree */
    cti_metrics_sample(o, other, label, value, (double)cum);
}

static void counter(cti_metrics_out_t *o, const char *name, const char *help, cti_counter_t *c)
{
    cti_metrics_family(o, name, "counter", help);
    cti_metrics_sample(o, name, NULL, NULL, (double)cti_counter_get(c));
}

static void render_http(cti_metrics_out_t *o)
{
    cti_metrics_family(o, "cti_http_requests_total", "counter",
                       "HTTP requests answered, by route pattern, method and status code");
    for (cti_metrics_route_t *r = &unmatched; r; r = r == &unmatched ? routes : r->next)
        for (int m = 0; m < NMETHODS; m++)
            for (int s = 0; s < NSLOTS; s++) {
                uint64_t n = atomic_load_explicit(&r->count[m][s], memory_order_relaxed);
                if (!n)
                    continue;
                char code[8];
                if (s < NCODES)
                    snprintf(code, sizeof code, "%d", codes[s]);
                else
                    snprintf(code, sizeof code, "%dxx", s - NCODES + 1);
                out_printf(o, "cti_http_requests_total{");
                out_label(o, "route", r->pattern);
                out_printf(o, ",method=\"%s\",code=\"%s\"}", method_names[m], code);
                out_value(o, (double)n);
            }
    cti_metrics_family(
        o, "cti_http_request_duration_seconds", "histogram",
        "HTTP request latency (first byte read to response queued), by route pattern");
    for (cti_metrics_route_t *r = &unmatched; r; r = r == &unmatched ? routes : r->next) {
        uint64_t any = 0;
        for (int i = 0; i <= r->latency.nle; i++)
            any |= atomic_load_explicit(&r->latency.bucket[i], memory_order_relaxed);
        if (any) /* a route never requested has no series */
            out_histogram(o, "cti_http_request_duration_seconds", "route", r->pattern, &r->latency);
    }
}

static void render_ltable(cti_metrics_out_t *o, ltable_t *t, const char *name, const char *label,
                          bool with_code)
{
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < t->n; i++) {
        char code[16];
        snprintf(code, sizeof code, "%d", t->rows[i].code);
        cti_metrics_sample2(o, name, label, t->rows[i].a, with_code ? "code" : NULL,
                            with_code ? code : NULL, (double)t->rows[i].n);
    }
    if (t->overflow)
        cti_metrics_sample2(o, name, label, "other", with_code ? "code" : NULL,
                            with_code ? "other" : NULL, (double)t->overflow);
    pthread_mutex_unlock(&t->lock);
}

static void render_webhooks(cti_metrics_out_t *o)
{
    static const char *const results[CTI_WH__N] = {"stored", "duplicate", "rejected",
                                                   "unavailable"};
    cti_metrics_family(o, "cti_webhooks_total", "counter",
                       "Dialpad webhooks received, by result: stored (new, durable), duplicate "
                       "(of a stored one), rejected (4xx), unavailable (503)");
    for (int i = 0; i < CTI_WH__N; i++)
        cti_metrics_sample(o, "cti_webhooks_total", "result", results[i],
                           (double)cti_counter_get(&cti_metrics.webhooks[i]));
    static const char *const kinds[CTI_AUTHF__N] = {"admin", "api_key", "ticket"};
    cti_metrics_family(o, "cti_auth_failures_total", "counter",
                       "Refused credentials, by kind (admin: the admin token, or on /metrics "
                       "neither it nor METRICS_TOKEN; api_key; ticket: WebSocket tickets)");
    for (int i = 0; i < CTI_AUTHF__N; i++)
        cti_metrics_sample(o, "cti_auth_failures_total", "kind", kinds[i],
                           (double)cti_counter_get(&cti_metrics.auth_failures[i]));
}

static void render_ingest(cti_metrics_out_t *o)
{
    cti_metrics_t *m = &cti_metrics;
    cti_metrics_family(o, "cti_ingest_batch_size", "histogram", "Webhooks stored per group commit");
    out_histogram(o, "cti_ingest_batch_size", NULL, NULL, &m->ingest_batch_size);
    cti_metrics_family(o, "cti_ingest_commit_duration_seconds", "histogram",
                       "Time to store (and apply) a group commit's webhooks and commit them");
    out_histogram(o, "cti_ingest_commit_duration_seconds", NULL, NULL, &m->ingest_commit_seconds);
    counter(o, "cti_events_applied_total", "Stored webhooks applied to the call model (committed)",
            &m->events_applied);
    counter(o, "cti_events_failed_total",
            "Failed attempts to apply an event (each retried later, or parked)", &m->events_failed);
    counter(o, "cti_dead_letters_parked_total", "Events parked as dead letters",
            &m->dead_letters_parked);
    counter(o, "cti_event_log_appends_total",
            "Events appended to the per-app event log (committed)", &m->eventlog_appends);
    counter(o, "cti_ingest_store_failures_total",
            "Group commits that could not be stored (their webhooks answered 503)",
            &m->ingest_store_failures);
    counter(o, "cti_ingest_apply_failures_total",
            "Group commits stored without applying (applied later by a pass over pending events)",
            &m->ingest_apply_failures);
    static const char *const limits[CTI_RL__N] = {"app", "admin", "anonymous"};
    cti_metrics_family(o, "cti_rate_limited_total", "counter",
                       "Requests answered 429 by the rate limits, by bucket (app: "
                       "RATE_LIMIT_API; admin, anonymous: RATE_LIMIT_ADMIN per address)");
    for (int i = 0; i < CTI_RL__N; i++)
        cti_metrics_sample(o, "cti_rate_limited_total", "limit", limits[i],
                           (double)cti_counter_get(&m->rate_limited[i]));
    static const char *const recon[CTI_RECON__N] = {"ok", "failed"};
    cti_metrics_family(o, "cti_reconcile_runs_total", "counter",
                       "Reconciliations of an app with Dialpad's call list, by result");
    for (int i = 0; i < CTI_RECON__N; i++)
        cti_metrics_sample(o, "cti_reconcile_runs_total", "result", recon[i],
                           (double)cti_counter_get(&m->reconcile_runs[i]));
    counter(o, "cti_reconcile_calls_added_total",
            "Calls reconciliation made from Dialpad's list (their webhooks were lost)",
            &m->reconcile_calls_added);
    counter(o, "cti_reconcile_calls_updated_total",
            "Calls reconciliation ended from Dialpad's list (their final webhooks were lost)",
            &m->reconcile_calls_updated);
    counter(o, "cti_retention_purged_rows_total",
            "Rows deleted by the retention purger (RETENTION_DAYS, RETENTION_CALLS_DAYS)",
            &m->retention_purged);
    counter(o, "cti_retention_runs_total", "Retention purges completed by this instance",
            &m->retention_runs);
    static const char *const kinds[CTI_STORE_ERR__N] = {"unavailable", "db"};
    cti_metrics_family(o, "cti_store_errors_total", "counter",
                       "Database errors seen by the ingest worker and the API, by kind "
                       "(unavailable: cannot reach it or busy; db: a statement refused)");
    for (int i = 0; i < CTI_STORE_ERR__N; i++)
        cti_metrics_sample(o, "cti_store_errors_total", "kind", kinds[i],
                           (double)cti_counter_get(&m->store_errors[i]));
}

static void render_stream(cti_metrics_out_t *o)
{
    cti_metrics_t *m = &cti_metrics;
    counter(o, "cti_ws_connections_total", "WebSocket upgrades accepted", &m->ws_connections_total);
    counter(o, "cti_ws_messages_sent_total", "WebSocket text messages written whole to a socket",
            &m->ws_messages_sent);
    counter(o, "cti_ws_slow_closes_total",
            "WebSockets closed with 4008 for not reading fast enough", &m->ws_slow_closes);
    if (!atomic_load(&m->relay_running))
        return;
    counter(o, "cti_relay_notifications_total",
            "PostgreSQL notifications of committed events read by the relay",
            &m->relay_notifications);
    counter(o, "cti_relay_reconnects_total", "Times the relay's LISTEN connection was (re)made",
            &m->relay_reconnects);
    counter(o, "cti_relay_events_total", "Events the relay read back and published",
            &m->relay_events);
    int64_t alive = atomic_load(&m->relay_alive_us), now = cti_mono_us();
    cti_metrics_family(o, "cti_relay_lag_seconds", "gauge",
                       "Seconds since the relay thread last came back from waiting for "
                       "notifications (it waits at most 0.5 s: more means it is stuck reading)");
    cti_metrics_sample(o, "cti_relay_lag_seconds", NULL, NULL,
                       (double)(now > alive ? now - alive : 0) / 1e6);
    cti_metrics_family(o, "cti_relay_notification_duration_seconds", "gauge",
                       "How long the last notification took to read back and publish");
    cti_metrics_sample(o, "cti_relay_notification_duration_seconds", NULL, NULL,
                       (double)atomic_load(&m->relay_notify_lag_us) / 1e6);
}

static void render_tables(cti_metrics_out_t *o)
{
    cti_metrics_family(o, "cti_dialpad_requests_total", "counter",
                       "Requests to Dialpad's API, by operation and HTTP status (0: no answer)");
    render_ltable(o, &dialpad_requests, "cti_dialpad_requests_total", "operation", true);
    cti_metrics_family(o, "cti_outbound_deliveries_total", "counter",
                       "Outbound webhook delivery attempts, by result");
    render_ltable(o, &outbound, "cti_outbound_deliveries_total", "result", false);
    cti_metrics_family(o, "cti_outbound_delivery_duration_seconds", "histogram",
                       "From an event's commit to its endpoint's 2xx, first attempts that "
                       "succeeded (millisecond resolution)");
    out_histogram(o, "cti_outbound_delivery_duration_seconds", NULL, NULL,
                  &cti_metrics.outbound_delivery_seconds);
    cti_metrics_family(o, "cti_dialpad_connections", "gauge",
                       "Apps' Dialpad connections, by status");
    int64_t up = 0, broken = 0;
    if (dp_conns_fn && dp_conns_fn(dp_conns_ud, &up, &broken) == 0) {
        cti_metrics_sample(o, "cti_dialpad_connections", "status", "connected", (double)up);
        cti_metrics_sample(o, "cti_dialpad_connections", "status", "broken", (double)broken);
    }
}

/* process_*: what the Prometheus client libraries export, from /proc. */
static void render_process(cti_metrics_out_t *o)
{
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0;
    if (f) {
        char line[1024];
        char *p = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
        /* after "pid (comm)": field 3 is state; utime 14, stime 15, starttime 22, vsize 23, rss 24
         */
        if (!p || sscanf(p + 2,
                         "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                         "%*d %*d %*d %*d %llu %llu %llu",
                         &utime, &stime, &start, &vsize, &rss) != 5)
            utime = stime = start = vsize = rss = 0;
        fclose(f);
    }
    double tck = (double)sysconf(_SC_CLK_TCK);
    unsigned long long btime = 0;
    if ((f = fopen("/proc/stat", "r"))) {
        char line[256];
        while (fgets(line, sizeof line, f) && sscanf(line, "btime %llu", &btime) != 1)
            ;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        fds += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        fds--; /* the directory's own */
    }
    struct rlimit rl = {0};
    getrlimit(RLIMIT_NOFILE, &rl);
    cti_metrics_family(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent");
    cti_metrics_sample(o, "process_cpu_seconds_total", NULL, NULL, (double)(utime + stime) / tck);
    cti_metrics_family(o, "process_resident_memory_bytes", "gauge", "Resident memory size");
    cti_metrics_sample(o, "process_resident_memory_bytes", NULL, NULL,
                       (double)rss * (double)sysconf(_SC_PAGESIZE));
    cti_metrics_family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size");
    cti_metrics_sample(o, "process_virtual_memory_bytes", NULL, NULL, (double)vsize);
    cti_metrics_family(o, "process_open_fds", "gauge", "Open file descriptors");
    cti_metrics_sample(o, "process_open_fds", NULL, NULL, fds);
    cti_metrics_family(o, "process_max_fds", "gauge", "The open-file limit");
    cti_metrics_sample(o, "process_max_fds", NULL, NULL, (double)rl.rlim_cur);
    cti_metrics_family(o, "process_start_time_seconds", "gauge",
                       "Start time of the process since the Unix epoch");
    cti_metrics_sample(o, "process_start_time_seconds", NULL, NULL,
                       (double)btime + (double)start / tck);
}

char *cti_metrics_render(size_t *len)
{
    cti_metrics_out_t o = {.cap = 16384};
    o.buf = cti_malloc(o.cap);
    o.buf[0] = '\0';
    render_http(&o);
    render_webhooks(&o);
    render_ingest(&o);
    render_stream(&o);
    render_tables(&o);
    render_process(&o);
    for (int i = 0; i < ncollectors; i++)
        collectors[i].fn(&o, collectors[i].ud);
    *len = o.len;
    return o.buf;
}

void cti_metrics_reset(void)
{
    cti_metrics_route_t *r = routes;
    while (r) {
        cti_metrics_route_t *next = r->next;
        free(r);
        r = next;
    }
    routes = NULL;
    routes_tail = &routes;
    memset(unmatched.count, 0, sizeof unmatched.count);
    memset(unmatched.latency.bucket, 0, sizeof unmatched.latency.bucket);
    atomic_store(&unmatched.latency.sum, 0);
    cti_metrics_t fresh = {.ingest_batch_size = HIST(le_batch, 1.0),
                           .ingest_commit_seconds = HIST(le_latency, 1e-6),
                           .outbound_delivery_seconds = HIST(le_latency, 1e-6)};
    memcpy(&cti_metrics, &fresh, sizeof fresh);
    dialpad_requests.n = outbound.n = 0;
    dialpad_requests.overflow = outbound.overflow = 0;
    ncollectors = 0;
    dp_conns_fn = NULL;
    dp_conns_ud = NULL;
}
