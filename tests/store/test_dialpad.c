/*
 * test_dialpad.c — conformance of src/repo/dialpad.c on both backends:
 * connections (upsert, compare-and-set token updates, broken once), connect
 * flows (links and states one use, bound to their app and cookie, expiry)
 * and leases (one holder, taken over once expired).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "harness.h"
#include "repo/dialpad.h"
#include "repo/tenants.h"

static void make_app(char id[37], const char *tag)
{
    cti_app_t a = {.active = true, .created_at = 1, .updated_at = 1};
    new_app(a.id, tag);
    snprintf(a.name, sizeof a.name, "%s", tag);
    assert_int_equal(cti_apps_insert(cti_store_db(store), &a), 0);
    memcpy(id, a.id, 37);
}

static cti_dpconn_row_t row_for(const char *app_id)
{
    cti_dpconn_row_t r = {.dialpad_user_id = 5188674325413888LL, .company_id = 4508591728425653LL,
                          .office_id = 7, .access_expires_at = 5000, .token_lifetime_ms = 4000,
                          .connected_at = 1000, .webhook_id = 9007199254740993LL,
                          .updated_at = 1000};
    snprintf(r.app_id, sizeof r.app_id, "%s", app_id);
    snprintf(r.status, sizeof r.status, "connected");
    snprintf(r.environment, sizeof r.environment, "sandbox");
    snprintf(r.scopes, sizeof r.scopes, "calls:list screen_pop");
    r.access_token = "v1:sealed-access";
    r.refresh_token = "v1:sealed-refresh";
    r.subscriptions = "[{\"type\":\"call\",\"id\":\"12\"}]";
    return r;
}

static void test_connection_put_get_replace_delete(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    make_app(app, "conn");
    cti_dpconn_row_t r = row_for(app), got;
    assert_int_equal(cti_dpconn_get(db, app, &got), CTI_ENOTFOUND);
    assert_int_equal(cti_dpconn_put(db, &r), 0);
    assert_int_equal(cti_dpconn_get(db, app, &got), 0);
    assert_string_equal(got.status, "connected");
    assert_true(got.dialpad_user_id == 5188674325413888LL && got.webhook_id == 9007199254740993LL);
    assert_string_equal(got.access_token, "v1:sealed-access");
    assert_string_equal(got.refresh_token, "v1:sealed-refresh");
    assert_string_equal(got.subscriptions, r.subscriptions);
    assert_true(got.access_expires_at == 5000 && got.refreshed_at == 0 && got.reason[0] == '\0');
    cti_dpconn_row_free(&got);

    r.refresh_token = NULL; /* a reconnect replaces every column */
    r.access_expires_at = 0;
    r.webhook_id = 77;
    assert_int_equal(cti_dpconn_put(db, &r), 0);
    assert_int_equal(cti_dpconn_get(db, app, &got), 0);
    assert_null(got.refresh_token);
    assert_true(got.access_expires_at == 0 && got.webhook_id == 77);
    cti_dpconn_row_free(&got);
    assert_int_equal(count("SELECT COUNT(*) FROM dialpad_connections"), 1);

    assert_int_equal(cti_dpconn_delete(db, app), 0);
    assert_int_equal(cti_dpconn_delete(db, app), CTI_ENOTFOUND);
}

static void test_tokens_compare_and_set(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    make_app(app, "cas");
    cti_dpconn_row_t r = row_for(app), got;
    assert_int_equal(cti_dpconn_put(db, &r), 0);
    /* an instance that read an older token loses */
    assert_int_equal(cti_dpconn_set_tokens(db, app, "v1:other", "v1:a2", "v1:r2", 9000, 4000, 6000),
                     CTI_ENOTFOUND);
    assert_int_equal(
        cti_dpconn_set_tokens(db, app, "v1:sealed-access", "v1:a2", "v1:r2", 9000, 4000, 6000), 0);
    /* no new refresh token: the stored one stays */
    assert_int_equal(cti_dpconn_set_tokens(db, app, "v1:a2", "v1:a3", NULL, 0, 0, 7000), 0);
    assert_int_equal(cti_dpconn_get(db, app, &got), 0);
    assert_string_equal(got.access_token, "v1:a3");
    assert_string_equal(got.refresh_token, "v1:r2");
    assert_true(got.refreshed_at == 7000 && got.access_expires_at == 0);
    cti_dpconn_row_free(&got);

    assert_int_equal(cti_dpconn_reseal(db, app, "v1:a3", "v1:wrong", "v1:a4", "v1:r4"),
                     CTI_ENOTFOUND);
    assert_int_equal(cti_dpconn_reseal(db, app, "v1:a3", "v1:r2", "v1:a4", "v1:r4"), 0);
    assert_int_equal(cti_dpconn_get(db, app, &got), 0);
    assert_string_equal(got.access_token, "v1:a4");
    assert_string_equal(got.refresh_token, "v1:r4");
    cti_dpconn_row_free(&got);
}

static int count_row(const cti_dpconn_row_t *r, void *ud)
{
    (*(int *)ud)++;
    return 0;
}

static void test_broken_once_and_not_listed(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    make_app(app, "broken");
    cti_dpconn_row_t r = row_for(app), got;
    assert_int_equal(cti_dpconn_put(db, &r), 0);
    int before = 0, after = 0, all = 0;
    assert_int_equal(cti_dpconn_list_connected(db, count_row, &before), 0);
    assert_int_equal(cti_dpconn_set_broken(db, app, "expired", 8000), 0);
    assert_int_equal(cti_dpconn_set_broken(db, app, "again", 9000), CTI_ENOTFOUND);
    assert_int_equal(cti_dpconn_get(db, app, &got), 0);
    assert_string_equal(got.status, "broken");
    assert_string_equal(got.reason, "expired");
    cti_dpconn_row_free(&got);
    assert_int_equal(cti_dpconn_list_connected(db, count_row, &after), 0);
    assert_int_equal(after, before - 1);
    assert_int_equal(cti_dpconn_list_all(db, count_row, &all), 0);
    assert_true(all >= before);
}

static void test_flow_link_then_state_one_use(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37], other[37], got_app[37], by[64], verifier[128];
    make_app(app, "flow");
    make_app(other, "flow-other");
    char link[65], st[65];
    snprintf(link, sizeof link, "link-%s", app);
    snprintf(st, sizeof st, "state-%s", app);
    assert_int_equal(cti_dpflow_create(db, link, app, "admin", 1000, 1000 + 600000), 0);
    /* another app's id, an expired link: refused, and the link stays usable */
    assert_int_equal(cti_dpflow_use_link(db, link, other, 2000, st, "cookie", "v1:ver", 602000),
                     CTI_ENOTFOUND);
    assert_int_equal(cti_dpflow_use_link(db, link, app, 601000, st, "cookie", "v1:ver", 602000),
                     CTI_ENOTFOUND);
    assert_int_equal(cti_dpflow_use_link(db, link, app, 2000, st, "cookie", "v1:ver", 602000), 0);
    assert_int_equal(cti_dpflow_use_link(db, link, app, 2001, st, "cookie", "v1:ver", 602000),
                     CTI_ENOTFOUND);
    /* the wrong cookie does not use the state up */
    assert_int_equal(cti_dpflow_use_state(db, st, "not-the-cookie", 3000, got_app, by, verifier,
                                          sizeof verifier),
                     CTI_ENOTFOUND);
    assert_int_equal(cti_dpflow_use_state(db, st, "cookie", 602001, got_app, by, verifier,
                                          sizeof verifier),
                     CTI_ENOTFOUND);
    assert_int_equal(
        cti_dpflow_use_state(db, st, "cookie", 3000, got_app, by, verifier, sizeof verifier), 0);
    assert_string_equal(got_app, app);
    assert_string_equal(by, "admin");
    assert_string_equal(verifier, "v1:ver");
    assert_int_equal(
        cti_dpflow_use_state(db, st, "cookie", 3001, got_app, by, verifier, sizeof verifier),
        CTI_ENOTFOUND);
}

static void test_lease_one_holder(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char name[64];
    new_app(name, "lease");
    assert_int_equal(cti_lease_take(db, name, "a", 1000, 500), 0);
    assert_int_equal(cti_lease_take(db, name, "b", 1200, 500), CTI_ELIMIT);
    assert_int_equal(cti_lease_take(db, name, "a", 1300, 500), 0); /* its holder extends it */
    assert_int_equal(cti_lease_take(db, name, "b", 1700, 500), CTI_ELIMIT);
    assert_int_equal(cti_lease_take(db, name, "b", 1801, 500), 0); /* expired: taken over */
    assert_int_equal(cti_lease_release(db, name, "a"), 0);         /* not a's any more */
    assert_int_equal(cti_lease_take(db, name, "a", 1900, 500), CTI_ELIMIT);
    assert_int_equal(cti_lease_release(db, name, "b"), 0);
    assert_int_equal(cti_lease_take(db, name, "a", 1900, 500), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_put_get_replace_delete),
        cmocka_unit_test(test_tokens_compare_and_set),
        cmocka_unit_test(test_broken_once_and_not_listed),
        cmocka_unit_test(test_flow_link_then_state_one_use),
        cmocka_unit_test(test_lease_one_holder),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
