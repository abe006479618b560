/*
 * metrics.h — the process's counters, histograms and gauges, rendered as
 * Prometheus text (exposition format 0.0.4) by GET /metrics (api/metrics.c).
 *
 * Hot paths only ever add to relaxed atomics: a counter is one
 * `lock xadd`, a histogram observation two (its bucket and its sum), and no
 * lock is taken. Nothing is allocated after start-up except by the scrape.
 * What is cheaper to read than to count (queue depths, sockets open, rows
 * pending, WAL size) is a gauge read at scrape time through a collector
 * callback (cti_metrics_collector), on the scraping HTTP thread.
 *
 * Label cardinality is bounded by construction: HTTP series by route
 * pattern (registered at start-up), method (7) and status code (a fixed
 * list, others as their class "4xx"); the Dialpad request and outbound
 * delivery tables hold at most CTI_METRICS_LTABLE_MAX label sets (the rest
 * add to an "other" series). No series carries an app id.
 *
 * Threads: cti_metrics_route() and cti_metrics_collector() on the main
 * thread before serving; increments from any thread; cti_metrics_render()
 * from any thread (a scrape).
 */
#ifndef CTI_CORE_METRICS_H
#define CTI_CORE_METRICS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- counters and histograms ------------------------------------------------------------- */

typedef struct {
    _Atomic uint64_t v;
} cti_counter_t;

/* Built with -DCTI_NO_METRICS, nothing is counted (the hot paths' increments
 * compile to nothing; /metrics answers zeros): only to measure what counting
 * costs (docs/PERFORMANCE.md). */
static inline void cti_counter_add(cti_counter_t *c, uint64_t n)
{
#ifndef CTI_NO_METRICS
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
#else
    (void)c;
    (void)n;
#endif
}

static inline uint64_t cti_counter_get(const cti_counter_t *c)
{
    return atomic_load_explicit(&c->v, memory_order_relaxed);
}

#define CTI_HIST_MAX 16 /* finite buckets */

/* Observations are whole numbers of some unit (microseconds, items). le[]
 * are the buckets' upper bounds in that unit, ascending; `scale` turns the
 * unit into what is shown (1e-6: microseconds shown as seconds). */
typedef struct {
    const uint64_t *le;
    int nle; /* <= CTI_HIST_MAX */
    double scale;
    _Atomic uint64_t bucket[CTI_HIST_MAX + 1]; /* not cumulative; [nle] is +Inf */
    _Atomic uint64_t sum;                      /* in the unit */
} cti_histogram_t;

void cti_histogram_observe(cti_histogram_t *h, uint64_t v);

/* ---- the process's fixed series ---------------------------------------------------------- */

enum { CTI_WH_STORED, CTI_WH_DUPLICATE, CTI_WH_REJECTED, CTI_WH_UNAVAILABLE, CTI_WH__N };
enum { CTI_AUTHF_ADMIN, CTI_AUTHF_API_KEY, CTI_AUTHF_TICKET, CTI_AUTHF__N };
enum { CTI_STORE_ERR_UNAVAILABLE, CTI_STORE_ERR_DB, CTI_STORE_ERR__N };
enum { CTI_RL_APP, CTI_RL_ADMIN, CTI_RL_ANON, CTI_RL__N }; /* api/limits.h */
enum { CTI_RECON_OK, CTI_RECON_FAILED, CTI_RECON__N };           /* dialpad/reconcile.c */

/* Each group is written by one or two threads; groups are kept on their own
 * cache lines so threads counting different things do not share one. */
typedef struct {
    /* HTTP pool threads, ingest worker */
    alignas(64) cti_counter_t webhooks[CTI_WH__N];
    cti_counter_t auth_failures[CTI_AUTHF__N];
    cti_counter_t rate_limited[CTI_RL__N]; /* requests answered 429 by api/limits.c */
    /* ingest worker */
    alignas(64) cti_histogram_t ingest_batch_size;     /* webhooks per group commit */
    alignas(64) cti_histogram_t ingest_commit_seconds; /* store (+ apply) + COMMIT, µs */
    alignas(64) cti_counter_t events_applied;          /* raw events applied (committed) */
    cti_counter_t events_failed;                       /* failed attempts (retried later) */
    cti_counter_t dead_letters_parked;                 /* events parked as dead letters */
    cti_counter_t eventlog_appends;                    /* event-log rows committed */
    cti_counter_t ingest_store_failures;               /* batches that could not be stored (503) */
    cti_counter_t ingest_apply_failures;               /* batches stored without applying */
    cti_counter_t store_errors[CTI_STORE_ERR__N];
    /* WebSocket hub threads */
    alignas(64) cti_counter_t ws_messages_sent; /* text frames written whole */
    cti_counter_t ws_slow_closes;               /* 4008: slow consumer */
    cti_counter_t ws_connections_total;         /* upgrades accepted */
    /* PostgreSQL relay (stream/listener.c) */
    alignas(64) cti_counter_t relay_notifications;
    cti_counter_t relay_reconnects;
    cti_counter_t relay_events;
    _Atomic int64_t relay_alive_us;      /* mono time the relay last came back from a wait */
    _Atomic int64_t relay_notify_lag_us; /* how long the last notification took to relay */
    _Atomic int relay_running;
    /* SQLite checkpointer */
    alignas(64) cti_counter_t sqlite_checkpoints;
    cti_counter_t sqlite_inline_checkpoints;
    /* retention purger (repo/retention.c) */
    alignas(64) cti_counter_t retention_purged; /* rows deleted, all tables */
    cti_counter_t retention_runs;               /* purges completed */
    /* reconciliation (dialpad/reconcile.c) */
    alignas(64) cti_counter_t reconcile_runs[CTI_RECON__N];
    cti_counter_t reconcile_calls_added;   /* calls unknown here, made from Dialpad's list */
    cti_counter_t reconcile_calls_updated; /* calls known unfinished, ended from the list */
    /* outbound webhook sender (outbound/sender.c) */
    alignas(64) cti_histogram_t outbound_delivery_seconds; /* event committed → 2xx, first
                                                              attempts only, µs */
} cti_metrics_t;

extern cti_metrics_t cti_metrics;

#define CTI_METRIC_INC(field) cti_counter_add(&cti_metrics.field, 1)

/* ---- HTTP requests, by route ------------------------------------------------------------- */

typedef struct cti_metrics_route cti_metrics_route_t;

/* The series of one route pattern (kept; the pattern must outlive the
 * process's metrics). Main thread, before serving. Never NULL. */
cti_metrics_route_t *cti_metrics_route(const char *pattern);
/* One request answered: route NULL when none matched (404, 405, 400 for bad
 * framing, 413 before routing: shown as route="none"); method as sent;
 * status 0 when the client left before an answer was set; us < 0 leaves the
 * latency out (an upgraded connection's life is not a request's). Any thread. */
void cti_metrics_http(cti_metrics_route_t *route, const char *method, int status, int64_t us);

/* ---- low-volume labelled counters (Dialpad API calls, outbound deliveries) -------------- */

#define CTI_METRICS_LTABLE_MAX 64

/* One Dialpad API request finished: operation is a short fixed name (such as
 * "oauth.token", "users.me", "users.initiate_call"; copied the first time),
 * code the HTTP status (0: no answer: connect, timeout). Any thread; takes
 * a mutex (a Dialpad request costs milliseconds, this costs nanoseconds).
 * The Dialpad client (dialpad/client.c) is to call it once per attempt. */
void cti_metrics_dialpad_request(const char *operation, int code);
/* One outbound webhook delivery attempt ended: result is a fixed word
 * ("delivered", "failed", "retrying", "dropped"). Any thread. */
void cti_metrics_outbound_delivery(const char *result);

/* ---- gauges read at scrape time ---------------------------------------------------------- */

typedef struct cti_metrics_out cti_metrics_out_t;

/* Writes "# HELP" and "# TYPE" (type: counter, gauge, histogram). */
void cti_metrics_family(cti_metrics_out_t *o, const char *name, const char *type, const char *help);
/* Writes one sample: name{label="value"} v (label NULL: no labels). The value
 * is escaped as the format needs (\\, \", \n). */
void cti_metrics_sample(cti_metrics_out_t *o, const char *name, const char *label,
                        const char *value, double v);
/* The same with two labels. */
void cti_metrics_sample2(cti_metrics_out_t *o, const char *name, const char *l1, const char *v1,
                         const char *l2, const char *v2, double v);

/* A collector writes whole families (cti_metrics_family, then its samples).
 * Runs on the scraping thread, in registration order, after the built-in
 * families; it may query the database (cti_store_db) but should stay cheap. */
typedef void (*cti_metrics_collect_fn)(cti_metrics_out_t *o, void *ud);
/* Main thread, before serving (at most 32). */
void cti_metrics_collector(cti_metrics_collect_fn fn, void *ud);

/* Dialpad connections by status, for cti_dialpad_connections{status}: the
 * connection module (dialpad/connection.c) registers a function that counts
 * its apps' connections (*connected, *broken) and returns 0, or a negative
 * error to leave the samples out of this scrape. Until one is registered the
 * family has no samples. Main thread, before serving; fn runs on the
 * scraping thread and may query the database. */
typedef int (*cti_metrics_dp_conns_fn)(void *ud, int64_t *connected, int64_t *broken);
void cti_metrics_dialpad_connections(cti_metrics_dp_conns_fn fn, void *ud);

/* Renders every family: the fixed series, the HTTP routes, the labelled
 * tables, the process_* families, then the collectors. Returns a malloc'd
 * NUL-terminated text (the caller frees it) and its length in *len. */
char *cti_metrics_render(size_t *len);

/* Tests only: every counter, histogram and table back to zero, collectors
 * and routes forgotten. */
void cti_metrics_reset(void);

#endif
