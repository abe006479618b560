/* test_metrics.c — unit tests for src/core/metrics.c: histogram buckets
 * (cumulative, sum, count), HTTP series by route, method and status code
 * (bounded: unknown methods and codes fold), label escaping, the bounded
 * labelled tables, collectors, the Dialpad connections gauge, and counters
 * added from several threads at once (no lost increments). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"

static int reset(void **state)
{
    cti_metrics_reset();
    return 0;
}

static char *render(void)
{
    size_t len;
    char *text = cti_metrics_render(&len);
    assert_int_equal(strlen(text), len);
    return text;
}

/* The value of the sample whose line starts with `series ` (name and labels exactly). */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    fail_msg("no sample %s", series);
    return -1;
}

static bool has_line(const char *text, const char *line)
{
    const char *p = strstr(text, line);
    return p && (p == text || p[-1] == '\n') && p[strlen(line)] == '\n';
}

static void histogram_buckets_are_cumulative(void **state)
{
    /* batch sizes: bounds 1, 2, 4, ... 512 */
    uint64_t sizes[] = {1, 3, 4, 5, 600};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        cti_histogram_observe(&cti_metrics.ingest_batch_size, sizes[i]);
    char *t = render();
    assert_true(has_line(t, "# TYPE cti_ingest_batch_size histogram"));
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"1\"}"), 1);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"2\"}"), 1);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"4\"}"), 3);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"8\"}"), 4);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"512\"}"), 4);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_bucket{le=\"+Inf\"}"), 5);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_count"), 5);
    assert_int_equal(value_of(t, "cti_ingest_batch_size_sum"), 613);
    free(t);
}

static void durations_are_shown_in_seconds(void **state)
{
    cti_histogram_observe(&cti_metrics.ingest_commit_seconds, 1500); /* 1.5 ms */
    char *t = render();
    assert_int_equal(value_of(t, "cti_ingest_commit_duration_seconds_bucket{le=\"0.001\"}"), 0);
    assert_int_equal(value_of(t, "cti_ingest_commit_duration_seconds_bucket{le=\"0.0025\"}"), 1);
    assert_float_equal(value_of(t, "cti_ingest_commit_duration_seconds_sum"), 0.0015, 1e-12);
    free(t);
}

static void http_series_by_route_method_and_code(void **state)
{
    cti_metrics_route_t *calls = cti_metrics_route("/api/calls/{call_id}");
    assert_ptr_equal(cti_metrics_route("/api/calls/{call_id}"), calls); /* one per pattern */
    cti_metrics_http(calls, "GET", 200, 300);
    cti_metrics_http(calls, "GET", 200, 3000);
    cti_metrics_http(calls, "GET", 404, 100);
    cti_metrics_http(calls, "BREW", 418, 100); /* neither listed: "other", "4xx" */
    cti_metrics_http(NULL, "GET", 404, 50);    /* no route matched */
    cti_metrics_http(calls, "GET", 101, -1);   /* upgraded: counted, no latency */
    char *t = render();
    assert_int_equal(
        value_of(
            t,
            "cti_http_requests_total{route=\"/api/calls/{call_id}\",method=\"GET\",code=\"200\"}"),
        2);
    assert_int_equal(
        value_of(
            t,
            "cti_http_requests_total{route=\"/api/calls/{call_id}\",method=\"GET\",code=\"404\"}"),
        1);
    assert_int_equal(value_of(t, "cti_http_requests_total{route=\"/api/calls/"
                                 "{call_id}\",method=\"other\",code=\"4xx\"}"),
                     1);
    assert_int_equal(
        value_of(t, "cti_http_requests_total{route=\"none\",method=\"GET\",code=\"404\"}"), 1);
    assert_int_equal(
        value_of(t, "cti_http_request_duration_seconds_count{route=\"/api/calls/{call_id}\"}"), 4);
    assert_int_equal(value_of(t, "cti_http_request_duration_seconds_bucket{route=\"/api/calls/"
                                 "{call_id}\",le=\"0.0005\"}"),
                     3);
    assert_null(strstr(t, "BREW"));
    free(t);
}

static void routes_never_requested_have_no_series(void **state)
{
    cti_metrics_route("/quiet");
    char *t = render();
    assert_null(strstr(t, "/quiet"));
    assert_true(has_line(t, "# TYPE cti_http_requests_total counter"));
    free(t);
}

static void collect(cti_metrics_out_t *o, void *ud)
{
    cti_metrics_family(o, "test_gauge", "gauge", "a test");
    cti_metrics_sample(o, "test_gauge", "name", ud, 2.5);
}

static void label_values_are_escaped(void **state)
{
    cti_metrics_collector(collect, "a\"b\\c\nd");
    char *t = render();
    assert_true(has_line(t, "# TYPE test_gauge gauge"));
    assert_true(has_line(t, "test_gauge{name=\"a\\\"b\\\\c\\nd\"} 2.5"));
    free(t);
}

static void labelled_tables_are_bounded(void **state)
{
    static char names[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof names[i], "op%d", i);
        cti_metrics_dialpad_request(names[i], 200);
    }
    cti_metrics_dialpad_request("op0", 200);
    cti_metrics_dialpad_request("op0", 429);
    cti_metrics_outbound_delivery("delivered");
    cti_metrics_outbound_delivery("delivered");
    char *t = render();
    assert_int_equal(value_of(t, "cti_dialpad_requests_total{operation=\"op0\",code=\"200\"}"), 2);
    assert_int_equal(value_of(t, "cti_dialpad_requests_total{operation=\"op62\",code=\"200\"}"), 1);
    assert_null(strstr(t, "\"op63\""));
    /* op63..op99 (past the table's 63 named rows) went to "other"; op0 with a
     * new code, once every row was taken, to the overflow series */
    assert_int_equal(value_of(t, "cti_dialpad_requests_total{operation=\"other\",code=\"200\"}"),
                     37);
    assert_int_equal(value_of(t, "cti_dialpad_requests_total{operation=\"other\",code=\"other\"}"),
                     1);
    assert_int_equal(value_of(t, "cti_outbound_deliveries_total{result=\"delivered\"}"), 2);
    int series = 0;
    for (const char *p = t; (p = strstr(p, "\ncti_dialpad_requests_total{")); p++)
        series++;
    assert_int_equal(series, CTI_METRICS_LTABLE_MAX + 1);
    free(t);
}

static int conns(void *ud, int64_t *up, int64_t *broken)
{
    *up = 3;
    *broken = 1;
    return *(int *)ud;
}

static void dialpad_connections_gauge(void **state)
{
    char *t = render();
    assert_true(has_line(t, "# TYPE cti_dialpad_connections gauge"));
    assert_null(strstr(t, "cti_dialpad_connections{")); /* nobody registered: no samples */
    free(t);
    static int rc = 0;
    cti_metrics_dialpad_connections(conns, &rc);
    t = render();
    assert_int_equal(value_of(t, "cti_dialpad_connections{status=\"connected\"}"), 3);
    assert_int_equal(value_of(t, "cti_dialpad_connections{status=\"broken\"}"), 1);
    free(t);
    rc = -1; /* could not count: left out, not a false 0 */
    t = render();
    assert_null(strstr(t, "cti_dialpad_connections{"));
    free(t);
}

static void process_families(void **state)
{
    char *t = render();
    assert_true(value_of(t, "process_resident_memory_bytes") > 1e5);
    assert_true(value_of(t, "process_open_fds") >= 3);
    assert_true(value_of(t, "process_start_time_seconds") > 1.6e9);
    assert_true(has_line(t, "# TYPE process_cpu_seconds_total counter"));
    free(t);
}

#define THREADS 4
#define ADDS    100000
static void *adder(void *arg)
{
    cti_metrics_route_t *r = arg;
    for (int i = 0; i < ADDS; i++) {
        CTI_METRIC_INC(webhooks[CTI_WH_STORED]);
        cti_metrics_http(r, "POST", 200, 10);
    }
    return NULL;
}

static void no_increment_is_lost_across_threads(void **state)
{
    cti_metrics_route_t *r = cti_metrics_route("/webhooks/dialpad/{app_id}");
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, adder, r), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = render();
    assert_int_equal(value_of(t, "cti_webhooks_total{result=\"stored\"}"), THREADS * ADDS);
    assert_int_equal(value_of(t, "cti_http_requests_total{route=\"/webhooks/dialpad/{app_id}\","
                                 "method=\"POST\",code=\"200\"}"),
                     THREADS * ADDS);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(histogram_buckets_are_cumulative, reset),
        cmocka_unit_test_setup(durations_are_shown_in_seconds, reset),
        cmocka_unit_test_setup(http_series_by_route_method_and_code, reset),
        cmocka_unit_test_setup(routes_never_requested_have_no_series, reset),
        cmocka_unit_test_setup(label_values_are_escaped, reset),
        cmocka_unit_test_setup(labelled_tables_are_bounded, reset),
        cmocka_unit_test_setup(dialpad_connections_gauge, reset),
        cmocka_unit_test_setup(process_families, reset),
        cmocka_unit_test_setup(no_increment_is_lost_across_threads, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
