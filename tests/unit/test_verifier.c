/* test_verifier.c — unit tests for src/auth/verifier.c, the bcrypt threads:
 * work runs off the caller's thread, in order, keys nobody guessed wrong
 * (queued "first") ahead of the rest, and stopping runs what is queued. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "auth/verifier.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool released;
static char order[32];
static pthread_t caller;
static bool on_caller;

static void blocker(void *arg)
{
    pthread_mutex_lock(&lock);
    while (!released)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
}

static void note(void *arg)
{
    pthread_mutex_lock(&lock);
    size_t n = strlen(order);
    order[n] = *(const char *)arg;
    order[n + 1] = '\0';
    on_caller |= pthread_equal(pthread_self(), caller);
    pthread_mutex_unlock(&lock);
}

static void firsts_run_before_the_rest_in_order(void **state)
{
    caller = pthread_self();
    cti_verifier_t *v = cti_verifier_start(1);
    cti_verifier_run(v, blocker, NULL, false); /* holds the one thread */
    usleep(20000);
    cti_verifier_run(v, note, "a", false);
    cti_verifier_run(v, note, "B", true);
    cti_verifier_run(v, note, "c", false);
    cti_verifier_run(v, note, "D", true);
    cti_verifier_run(v, note, "e", false);
    pthread_mutex_lock(&lock);
    released = true;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    cti_verifier_stop(v); /* runs everything queued, then stops */
    assert_string_equal(order, "BDace");
    assert_false(on_caller);
}

static void a_first_after_the_queue_drained_still_runs(void **state)
{
    order[0] = '\0';
    cti_verifier_t *v = cti_verifier_start(2);
    cti_verifier_run(v, note, "F", true);
    usleep(20000); /* ran: the list is empty again */
    cti_verifier_run(v, note, "G", true);
    cti_verifier_run(v, note, "h", false);
    cti_verifier_stop(v);
    assert_int_equal(strlen(order), 3);
    assert_int_equal(order[0], 'F');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(firsts_run_before_the_rest_in_order),
        cmocka_unit_test(a_first_after_the_queue_drained_still_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
