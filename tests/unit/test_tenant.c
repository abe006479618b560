/* test_tenant.c — unit tests for src/core/tenant.c: one "tenant changed"
 * notification reaches every cache subscribed to that kind of change, and
 * only those. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "core/tenant.h"

typedef struct {
    int calls;
    char app_id[40];
    unsigned what;
} seen_t;

static void record(void *ud, const char *app_id, unsigned what)
{
    seen_t *s = ud;
    s->calls++;
    strncpy(s->app_id, app_id, sizeof s->app_id - 1);
    s->what = what;
}

static void each_subscriber_hears_its_kinds_only(void **state)
{
    seen_t keys = {0}, secrets = {0}, mappings = {0};
    cti_tenant_unsubscribe_all();
    cti_tenant_subscribe(CTI_TENANT_APP | CTI_TENANT_KEYS, record, &keys);
    cti_tenant_subscribe(CTI_TENANT_APP | CTI_TENANT_SECRET, record, &secrets);
    cti_tenant_subscribe(CTI_TENANT_MAPPINGS, record, &mappings);

    cti_tenant_changed("app-1", CTI_TENANT_APP); /* (de)activation: keys and secrets */
    assert_int_equal(keys.calls, 1);
    assert_int_equal(secrets.calls, 1);
    assert_int_equal(mappings.calls, 0);
    assert_string_equal(keys.app_id, "app-1");
    assert_int_equal(keys.what, CTI_TENANT_APP);

    cti_tenant_changed("app-2", CTI_TENANT_SECRET);
    assert_int_equal(keys.calls, 1);
    assert_int_equal(secrets.calls, 2);
    assert_string_equal(secrets.app_id, "app-2");

    cti_tenant_changed("app-3", CTI_TENANT_KEYS);
    cti_tenant_changed("app-3", CTI_TENANT_MAPPINGS);
    assert_int_equal(keys.calls, 2);
    assert_int_equal(secrets.calls, 2);
    assert_int_equal(mappings.calls, 1);
    assert_string_equal(mappings.app_id, "app-3");
    assert_int_equal(mappings.what, CTI_TENANT_MAPPINGS);

    cti_tenant_unsubscribe_all();
    cti_tenant_changed("app-4", CTI_TENANT_APP);
    assert_int_equal(keys.calls, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_subscriber_hears_its_kinds_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
