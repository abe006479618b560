/* test_clocks.c — unit tests for what must not follow a step of the wall clock:
 * cti_retention_clock (src/repo/retention.c: the time retention purges by) and the
 * monotonic condition variables of src/core/util.c (cti_cond_init_mono,
 * cti_mono_deadline). The `serverclock` drill (tests/drills) runs the whole server
 * under a stepped clock. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "core/common.h"
#include "core/util.h"
#include "repo/retention.h"

#define T0   INT64_C(1767628800000) /* the wall clock at the start */
#define M0   INT64_C(5000)          /* the monotonic clock at the start */
#define HOUR INT64_C(3600000)
#define YEAR (INT64_C(365) * 24 * HOUR)

static void retention_clock_follows_a_steady_wall_clock(void **state)
{
    (void)state;
    assert_int_equal(cti_retention_clock(T0, T0, M0, M0), T0);
    assert_int_equal(cti_retention_clock(T0 + HOUR, T0, M0 + HOUR, M0), T0 + HOUR);
}

static void retention_clock_ignores_a_forward_step(void **state)
{
    (void)state;
    /* a minute after the start the wall clock says a year later: purge by the minute */
    assert_int_equal(cti_retention_clock(T0 + YEAR, T0, M0 + 60000, M0), T0 + 60000);
}

static void retention_clock_follows_a_backward_step(void **state)
{
    (void)state;
    /* a day back: purges less (never more than the wall clock says) */
    assert_int_equal(cti_retention_clock(T0 - 24 * HOUR, T0, M0 + HOUR, M0), T0 - 24 * HOUR);
}

static void mono_deadline_is_on_the_monotonic_clock(void **state)
{
    (void)state;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    struct timespec d = cti_mono_deadline(1500);
    int64_t diff = ((int64_t)d.tv_sec - now.tv_sec) * 1000 + (d.tv_nsec - now.tv_nsec) / 1000000;
    assert_true(diff >= 1490 && diff <= 1600);
    assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000);
}

/* A timed wait on a cti_cond_init_mono condition with a cti_mono_deadline lasts
 * its time: on a CLOCK_REALTIME condition the monotonic deadline (seconds since
 * boot) would be decades in the past and the wait would end at once. */
static void mono_cond_waits_its_time(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    cti_cond_init_mono(&cv);
    pthread_mutex_lock(&mu);
    int64_t t0 = cti_mono_us();
    struct timespec d = cti_mono_deadline(80);
    int rc = 0;
    while (rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&cv, &mu, &d);
    int64_t waited_ms = (cti_mono_us() - t0) / 1000;
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
    assert_true(waited_ms >= 75);
    assert_true(waited_ms < 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retention_clock_follows_a_steady_wall_clock),
        cmocka_unit_test(retention_clock_ignores_a_forward_step),
        cmocka_unit_test(retention_clock_follows_a_backward_step),
        cmocka_unit_test(mono_deadline_is_on_the_monotonic_clock),
        cmocka_unit_test(mono_cond_waits_its_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
