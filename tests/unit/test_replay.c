/* test_replay.c — unit tests for the window rule of src/stream/replay.c
 * (cti_replay_plan): at the head, ahead of it (up to INT64_MAX, where
 * since + 1 used to overflow), within the window, too far behind, older than
 * the log keeps. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "stream/replay.h"

static void test_nothing_to_replay(void **state)
{
    (void)state;
    assert_int_equal(cti_replay_plan(0, 0, 0), CTI_REPLAY_NONE);   /* empty log */
    assert_int_equal(cti_replay_plan(1, 50, 50), CTI_REPLAY_NONE); /* at the head */
    assert_int_equal(cti_replay_plan(1, 50, 51), CTI_REPLAY_NONE); /* ahead: nothing yet */
    assert_int_equal(cti_replay_plan(0, 0, INT64_MAX), CTI_REPLAY_NONE);
    assert_int_equal(cti_replay_plan(1, 50, INT64_MAX), CTI_REPLAY_NONE);
    assert_int_equal(cti_replay_plan(1, 50, INT64_MAX - 1), CTI_REPLAY_NONE);
    assert_int_equal(cti_replay_plan(INT64_MAX - 5, INT64_MAX, INT64_MAX), CTI_REPLAY_NONE);
}

static void test_window(void **state)
{
    (void)state;
    assert_int_equal(cti_replay_plan(1, 50, 0), CTI_REPLAY_FROM);
    assert_int_equal(cti_replay_plan(1, 50, 49), CTI_REPLAY_FROM);
    /* exactly CTI_WS_REPLAY_MAX behind is a replay; one more is a reset */
    assert_int_equal(cti_replay_plan(1, 20000, 20000 - CTI_WS_REPLAY_MAX), CTI_REPLAY_FROM);
    assert_int_equal(cti_replay_plan(1, 20000, 20000 - CTI_WS_REPLAY_MAX - 1), CTI_REPLAY_RESET);
    assert_int_equal(cti_replay_plan(1, INT64_MAX, 0), CTI_REPLAY_RESET);
}

static void test_older_than_the_log(void **state)
{
    (void)state;
    /* the log keeps 100..150: since 99 still has everything, 98 misses 99 */
    assert_int_equal(cti_replay_plan(100, 150, 99), CTI_REPLAY_FROM);
    assert_int_equal(cti_replay_plan(100, 150, 98), CTI_REPLAY_RESET);
    assert_int_equal(cti_replay_plan(100, 150, 0), CTI_REPLAY_RESET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_to_replay),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_older_than_the_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
