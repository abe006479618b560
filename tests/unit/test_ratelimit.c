/* test_ratelimit.c — unit tests for src/http/ratelimit.c: the token bucket's
 * arithmetic (burst, refill, Retry-After in whole seconds >= 1), keys keep
 * their own buckets, and the bounded table forgets the least recently used
 * key of a full set (which then starts with a full bucket). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "http/ratelimit.c"

static int take_n(cti_ratelimit_t *rl, const char *key, int n, int64_t now)
{
    int ok = 0, ra;
    for (int i = 0; i < n; i++)
        ok += cti_ratelimit_take(rl, key, now, &ra);
    return ok;
}

static void the_burst_is_served_then_refused_with_retry_after(void **state)
{
    cti_ratelimit_t *rl = cti_ratelimit_new(10, 20, 64);
    int ra = -1;
    assert_int_equal(take_n(rl, "app-a", 20, 1000), 20); /* burst */
    assert_false(cti_ratelimit_take(rl, "app-a", 1000, &ra));
    assert_int_equal(ra, 1); /* a token back in 0.1 s: said as 1 s, never 0 */
    /* 10/s: 100 ms later one token */
    assert_true(cti_ratelimit_take(rl, "app-a", 1100, &ra));
    assert_false(cti_ratelimit_take(rl, "app-a", 1100, &ra));
    /* a second later: 10 more, not 20 */
    assert_int_equal(take_n(rl, "app-a", 30, 2100), 10);
    /* idle long enough: back to the burst, never above */
    assert_int_equal(take_n(rl, "app-a", 50, 100000), 20);
    cti_ratelimit_free(rl);
}

static void slow_rates_say_how_many_seconds(void **state)
{
    bucket_t b = {.hash = 1, .tokens = 0, .last_ms = 0};
    int ra = 0;
    /* 0.25 tokens/s from empty: 4 s to the next token */
    assert_false(bucket_take(&b, 0.25, 1, 0, &ra));
    assert_int_equal(ra, 4);
    assert_false(bucket_take(&b, 0.25, 1, 2000, &ra)); /* half way: 2 s left */
    assert_int_equal(ra, 2);
    assert_true(bucket_take(&b, 0.25, 1, 4000, &ra));
    /* a clock that steps back takes nothing away and adds nothing */
    b.tokens = 0.5;
    b.last_ms = 5000;
    assert_false(bucket_take(&b, 1, 2, 4000, &ra));
    assert_true(b.tokens > 0.49 && b.tokens < 0.51);
}

static void keys_keep_their_own_buckets(void **state)
{
    cti_ratelimit_t *rl = cti_ratelimit_new(1, 2, 64);
    assert_int_equal(take_n(rl, "app-a", 5, 0), 2);
    assert_int_equal(take_n(rl, "app-b", 5, 0), 2); /* a's flood costs b nothing */
    assert_int_equal(take_n(rl, "10.0.0.1", 5, 0), 2);
    cti_ratelimit_free(rl);
}

static void a_full_set_forgets_the_least_recently_used(void **state)
{
    /* one set of 8: the 9th key takes the place of the one used longest ago */
    cti_ratelimit_t *rl = cti_ratelimit_new(1, 1, 1);
    assert_int_equal((int)rl->nsets, 1);
    char key[16];
    for (int i = 0; i < WAYS; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(take_n(rl, key, 2, 10 + i), 1); /* each empty now */
    }
    assert_int_equal(take_n(rl, "k-new", 1, 20), 1); /* evicts k0 (last used at 10) */
    assert_int_equal(take_n(rl, "k1", 1, 20), 0);    /* k1 still remembered: empty */
    assert_int_equal(take_n(rl, "k0", 1, 20), 1);    /* k0 forgotten: a full bucket */
    cti_ratelimit_free(rl);
}

static void long_keys_are_cut_not_overflowed(void **state)
{
    cti_ratelimit_t *rl = cti_ratelimit_new(1, 1, 16);
    char longkey[300];
    memset(longkey, 'x', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    assert_int_equal(take_n(rl, longkey, 3, 0), 1);
    cti_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_burst_is_served_then_refused_with_retry_after),
        cmocka_unit_test(slow_rates_say_how_many_seconds),
        cmocka_unit_test(keys_keep_their_own_buckets),
        cmocka_unit_test(a_full_set_forgets_the_least_recently_used),
        cmocka_unit_test(long_keys_are_cut_not_overflowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
