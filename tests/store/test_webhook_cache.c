/*
 * test_webhook_cache.c — the webhook verifier's cache of app states
 * (src/dialpad/webhook.c) holds many apps at once on both backends: once
 * every app's state has been read, a second webhook of each, within the
 * cache's TTL, reads nothing from the database. (A direct-mapped cache of
 * 1,024 slots had apps sharing a slot evict each other: with 500 apps a
 * second round read ~40% of them again, a cost per webhook that grew with
 * the number of apps.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/seal.h"
#include "core/util.h"
#include "dialpad/jwt.h"
#include "dialpad/webhook.h"
#include "harness.h"
#include "repo/tenants.h"

#define KEY "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"
#define APPS 500

static char ids[APPS][37];
static char *bodies[APPS];

/* One round: a signed webhook for every app, each must verify. */
static void round_of_webhooks(const cti_webhook_config_t *cfg)
{
    for (int i = 0; i < APPS; i++) {
        cti_webhook_t w;
        memset(&w, 0, sizeof w);
        assert_int_equal(cti_webhook_verify(cti_store_db(store), cfg, bodies[i],
                                            strlen(bodies[i]), ids[i], &w),
                         0);
        assert_int_equal(w.status, 200);
        assert_string_equal(w.app_id, ids[i]);
        cti_webhook_free(&w);
    }
}

static void test_many_apps_stay_cached(void **state)
{
    (void)state;
    cti_db_t *db = cti_store_db(store);
    char why[200];
    cti_seal_keys_t *keys = NULL;
    assert_int_equal(cti_seal_keys_load(KEY, NULL, &keys, why, sizeof why), 0);
    unsigned tag = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    for (int i = 0; i < APPS; i++) {
        cti_app_t a = {.active = true, .created_at = 10, .updated_at = 10};
        snprintf(ids[i], sizeof ids[i], "%08x-0000-4000-8000-%012d", tag, i);
        snprintf(a.id, sizeof a.id, "%s", ids[i]);
        snprintf(a.name, sizeof a.name, "cache %d", i);
        assert_int_equal(cti_apps_insert(db, &a), 0);
        char secret[64], event[128];
        snprintf(secret, sizeof secret, "secret-of-app-%d-0123456789abcdef", i);
        assert_int_equal(cti_secrets_insert(db, keys, ids[i], "s1", secret, 100), 0);
        int n = snprintf(event, sizeof event, "{\"call_id\":%d,\"state\":\"ringing\"}", i + 1);
        bodies[i] = cti_jwt_sign(event, (size_t)n, secret, strlen(secret));
    }
    cti_webhook_config_t cfg = {.keys = keys};
    /* Both rounds must fit in the TTL for a reload to mean an eviction; a
     * machine too slow for that gets more tries, then the test says so. */
    long reloads = -1;
    int64_t took = 0;
    for (int attempt = 0; attempt < 5; attempt++) {
        int64_t t0 = cti_mono_us();
        round_of_webhooks(&cfg);
        long loaded = cti_webhook_cache_loads();
        round_of_webhooks(&cfg);
        took = (cti_mono_us() - t0) / 1000;
        if (took < CTI_WEBHOOK_CACHE_TTL_MS - 100) {
            reloads = cti_webhook_cache_loads() - loaded;
            break;
        }
    }
    if (reloads < 0)
        fail_msg("two rounds of %d webhooks took %lld ms, longer than the cache's TTL", APPS,
                 (long long)took);
    assert_int_equal(reloads, 0);
    for (int i = 0; i < APPS; i++)
        free(bodies[i]);
    cti_seal_keys_free(keys);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_apps_stay_cached),
    };
    return cmocka_run_group_tests(tests, store_setup, store_teardown);
}
