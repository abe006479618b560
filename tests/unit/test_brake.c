/* test_brake.c — unit tests for src/auth/brake.c: the table of failed
 * attempts behind the authentication brake. Names that share a bucket keep
 * their own counts (the old 1,024-slot table let two addresses in one slot
 * reset each other, so guessing was never braked), windows end, and a full
 * table never evicts a live count. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "auth/brake.c"

#define LIMIT  20
#define WINDOW 60000

static void fail_n(cti_brake_t *b, const char *name, int n, int64_t now)
{
    for (int i = 0; i < n; i++)
        cti_brake_fail(b, name, now);
}

static void crossing_the_limit_brakes_until_the_window_ends(void **state)
{
    cti_brake_t *b = cti_brake_new(LIMIT, WINDOW, 100);
    int64_t wait = -1;
    for (int i = 1; i < LIMIT; i++)
        assert_false(cti_brake_fail(b, "10.0.0.1", 1000));
    assert_false(cti_brake_on(b, "10.0.0.1", 1000, &wait));
    assert_true(cti_brake_fail(b, "10.0.0.1", 2000));  /* the 20th crosses */
    assert_false(cti_brake_fail(b, "10.0.0.1", 2000)); /* only once */
    assert_true(cti_brake_on(b, "10.0.0.1", 31000, &wait));
    assert_int_equal(wait, 1000 + WINDOW - 31000);
    assert_int_equal(cti_brake_count(b, "10.0.0.1", 31000, NULL), LIMIT + 1);
    assert_false(cti_brake_on(b, "10.0.0.1", 1000 + WINDOW, NULL)); /* window over */
    assert_int_equal(cti_brake_count(b, "10.0.0.1", 1000 + WINDOW, NULL), 0);
    assert_false(cti_brake_on(b, "10.0.0.2", 31000, NULL)); /* another name */
    cti_brake_free(b);
}

/* 200 names in 16 buckets: many share the guesser's chain. */
static void names_sharing_a_bucket_never_reset_each_other(void **state)
{
    cti_brake_t *b = cti_brake_new(LIMIT, WINDOW, 256);
    b->mask = 15; /* use 16 of the buckets */
    char name[32];
    fail_n(b, "guesser", LIMIT, 0);
    size_t guesser = (size_t)(bucket(b, "guesser") - b->buckets);
    int sharing = 0;
    /* interleave: the guesser's neighbours fail between its own attempts */
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "192.0.2.%d", i);
        sharing += (size_t)(bucket(b, name) - b->buckets) == guesser;
        cti_brake_fail(b, name, 10);
        cti_brake_fail(b, "guesser", 10);
    }
    assert_true(sharing > 0); /* a chain was actually shared */
    assert_true(cti_brake_on(b, "guesser", 20, NULL));
    assert_int_equal(cti_brake_count(b, "guesser", 20, NULL), LIMIT + 200);
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "192.0.2.%d", i);
        assert_int_equal(cti_brake_count(b, name, 20, NULL), 1);
    }
    assert_int_equal(cti_brake_size(b), 201);
    cti_brake_free(b);
}

/* Forced: a table of one bucket, every name in the same chain. */
static void one_bucket_keeps_every_count(void **state)
{
    cti_brake_t *b = cti_brake_new(LIMIT, WINDOW, 1);
    b->mask = 0; /* every name hashes to bucket 0 */
    b->max_entries = 8;
    char name[32];
    for (int round = 0; round < LIMIT; round++)
        for (int i = 0; i < 8; i++) {
            snprintf(name, sizeof name, "2001:db8::%d", i);
            cti_brake_fail(b, name, 5);
        }
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "2001:db8::%d", i);
        assert_true(cti_brake_on(b, name, 5, NULL));
    }
    cti_brake_free(b);
}

static void a_full_table_evicts_no_live_count(void **state)
{
    cti_brake_t *b = cti_brake_new(LIMIT, WINDOW, 4);
    fail_n(b, "a", LIMIT, 0);
    fail_n(b, "b", 1, 0);
    fail_n(b, "c", 1, 30000);
    fail_n(b, "d", 1, 30000);
    assert_int_equal(cti_brake_size(b), 4);
    /* full, every window live: a newcomer is not counted, nobody is evicted */
    for (int i = 0; i < 50; i++)
        assert_false(cti_brake_fail(b, "newcomer", 40000));
    assert_false(cti_brake_on(b, "newcomer", 40000, NULL));
    assert_true(cti_brake_on(b, "a", 40000, NULL));
    assert_int_equal(cti_brake_count(b, "b", 40000, NULL), 1);
    /* a and b's windows are over at 60000: swept, and the newcomer counted */
    assert_false(cti_brake_fail(b, "newcomer", 61000));
    assert_int_equal(cti_brake_count(b, "newcomer", 61000, NULL), 1);
    assert_int_equal(cti_brake_count(b, "c", 61000, NULL), 1);
    assert_int_equal(cti_brake_size(b), 3);
    cti_brake_free(b);
}

static void long_names_are_cut_not_overflowed(void **state)
{
    cti_brake_t *b = cti_brake_new(2, WINDOW, 8);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    fail_n(b, longname, 2, 0);
    assert_true(cti_brake_on(b, longname, 1, NULL));
    cti_brake_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crossing_the_limit_brakes_until_the_window_ends),
        cmocka_unit_test(names_sharing_a_bucket_never_reset_each_other),
        cmocka_unit_test(one_bucket_keeps_every_count),
        cmocka_unit_test(a_full_table_evicts_no_live_count),
        cmocka_unit_test(long_names_are_cut_not_overflowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
