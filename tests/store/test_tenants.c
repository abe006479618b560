/*
 * test_tenants.c — conformance of src/repo/tenants.c on both backends: apps,
 * API keys, webhook secrets, the audit log, user mappings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "harness.h"
#include "repo/tenants.h"

static cti_app_t make_app(const char *tag, int64_t created, bool active)
{
    cti_app_t a = {
        .active = active, .allow_unsigned = false, .created_at = created, .updated_at = created};
    new_app(a.id, tag);
    snprintf(a.name, sizeof a.name, "App %s ☎", tag);
    assert_int_equal(cti_apps_insert(cti_store_db(store), &a), 0);
    return a;
}

/* ---- apps ---------------------------------------------------------------------------------- */

static void test_apps_insert_get_update(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_app_t a = make_app("get", 1000, true), got;
    assert_int_equal(cti_apps_get(db, a.id, &got), 0);
    assert_string_equal(got.id, a.id);
    assert_string_equal(got.name, a.name);
    assert_true(got.active);
    assert_false(got.allow_unsigned);
    assert_true(got.created_at == 1000 && got.updated_at == 1000);
    assert_int_equal(cti_apps_insert(db, &a), CTI_EEXIST);

    snprintf(a.name, sizeof a.name, "renamed");
    a.active = false, a.allow_unsigned = true, a.updated_at = 2000;
    assert_int_equal(cti_apps_update(db, &a), 0);
    assert_int_equal(cti_apps_get(db, a.id, &got), 0);
    assert_string_equal(got.name, "renamed");
    assert_false(got.active);
    assert_true(got.allow_unsigned);
    assert_true(got.created_at == 1000 && got.updated_at == 2000);
    assert_int_equal(cti_apps_get(db, "no-such-app", &got), CTI_ENOTFOUND);
}

typedef struct {
    char ids[16][37];
    int n;
    const char *prefix;
} seen_apps_t;

static int note_app(const cti_app_t *a, void *ud)
{
    seen_apps_t *s = ud;
    if (!strncmp(a->id, s->prefix, strlen(s->prefix)) && s->n < 16)
        snprintf(s->ids[s->n++], 37, "%s", a->id);
    return 0;
}

static void test_apps_list_pages_by_created_then_id(void **state)
{
    cti_db_t *db = cti_store_db(store);
    /* created far in the future, so they sort after every other test's apps */
    int64_t t = 4000000000000LL + (int64_t)getpid() * 10;
    cti_app_t a = make_app("lst", t + 2, true), b = make_app("lst", t + 1, true),
              c = make_app("lst", t + 1, false);
    seen_apps_t s = {.n = 0, .prefix = "app-lst"};
    assert_true(cti_apps_list(db, t, "", 100, note_app, &s) >= 0);
    assert_int_equal(s.n, 3);
    /* b and c share created_at: then by id */
    const char *first = strcmp(b.id, c.id) < 0 ? b.id : c.id;
    const char *second = strcmp(b.id, c.id) < 0 ? c.id : b.id;
    assert_string_equal(s.ids[0], first);
    assert_string_equal(s.ids[1], second);
    assert_string_equal(s.ids[2], a.id);
    /* the next page starts strictly after the position given */
    s.n = 0;
    assert_true(cti_apps_list(db, t + 1, first, 100, note_app, &s) >= 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], second);
    s.n = 0;
    assert_true(cti_apps_list(db, t, "", 1, note_app, &s) >= 0); /* limit */
    assert_int_equal(s.n, 1);
}

static void test_apps_count_active(void **state)
{
    cti_db_t *db = cti_store_db(store);
    int64_t n = -1;
    char only[37];
    /* other tests leave apps behind: deactivate them all, then count */
    script_ok("UPDATE apps SET active = 0");
    assert_int_equal(cti_apps_count_active(db, &n, only), 0);
    assert_int_equal(n, 0);
    assert_string_equal(only, "");
    cti_app_t a = make_app("cnt", 5, true);
    assert_int_equal(cti_apps_count_active(db, &n, only), 0);
    assert_int_equal(n, 1);
    assert_string_equal(only, a.id);
    make_app("cnt", 6, true);
    assert_int_equal(cti_apps_count_active(db, &n, only), 0);
    assert_int_equal(n, 2); /* "more than one": it stops counting there */
    assert_string_equal(only, "");
}

/* ---- API keys ------------------------------------------------------------------------------- */

static cti_key_t make_key(const cti_app_t *a, const char *key_id, int64_t created)
{
    cti_key_t k = {.created_at = created};
    snprintf(k.key_id, sizeof k.key_id, "%s", key_id);
    snprintf(k.app_id, sizeof k.app_id, "%s", a->id);
    snprintf(k.hash, sizeof k.hash, "$2b$10$hash-of-%s", key_id);
    snprintf(k.hint, sizeof k.hint, "%.4s", key_id);
    assert_int_equal(cti_keys_insert(cti_store_db(store), &k), 0);
    return k;
}

/* A key id unique across runs (16 hex characters). */
static const char *key_id(char out[CTI_KEY_ID_LEN + 1], int i)
{
    static unsigned run;
    if (!run)
        run = (unsigned)getpid() & 0xffffff;
    snprintf(out, CTI_KEY_ID_LEN + 1, "%06x%010x", run, (unsigned)i);
    return out;
}

typedef struct {
    char ids[8][CTI_KEY_ID_LEN + 1];
    int64_t expires[8], revoked[8];
    int n;
} seen_keys_t;

static int note_key(const cti_key_t *k, void *ud)
{
    seen_keys_t *s = ud;
    if (s->n < 8) {
        snprintf(s->ids[s->n], sizeof s->ids[0], "%s", k->key_id);
        s->expires[s->n] = k->expires_at;
        s->revoked[s->n++] = k->revoked_at;
    }
    return 0;
}

static void test_keys_insert_get_list_touch(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_app_t a = make_app("key", 10, false);
    char id1[17], id2[17];
    make_key(&a, key_id(id1, 1), 100);
    make_key(&a, key_id(id2, 2), 200);
    cti_key_t got;
    assert_int_equal(cti_keys_get(db, id1, &got), 0);
    assert_string_equal(got.app_id, a.id);
    assert_int_equal(strncmp(got.hint, id1, 4), 0);
    assert_int_equal(strncmp(got.hash, "$2b$10$hash-of-", 15), 0);
    assert_false(got.app_active); /* the app's flag comes along */
    assert_true(got.last_used_at == 0 && got.expires_at == 0 && got.revoked_at == 0);
    assert_int_equal(cti_keys_get(db, "0000000000000000", &got), CTI_ENOTFOUND);

    assert_int_equal(cti_keys_touch(db, id1, 555), 0);
    assert_int_equal(cti_keys_get(db, id1, &got), 0);
    assert_int_equal(got.last_used_at, 555);

    seen_keys_t s = {.n = 0};
    assert_true(cti_keys_list(db, a.id, note_key, &s) >= 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.ids[0], id2); /* newest first */
    assert_string_equal(s.ids[1], id1);
}

static void test_keys_expire_others_and_revoke(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_app_t a = make_app("rot", 10, true), other = make_app("rot", 10, true);
    char k1[17], k2[17], k3[17], k4[17], kx[17];
    make_key(&a, key_id(k1, 11), 1);
    make_key(&a, key_id(k2, 12), 2);
    make_key(&a, key_id(k3, 13), 3);
    make_key(&other, key_id(kx, 19), 3);
    /* k2 already ends before the new grace: it keeps its earlier end */
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE api_keys SET expires_at = 50 WHERE key_id = '%s'", k2);
    script_ok(sql);
    assert_int_equal(cti_keys_expire_others(db, a.id, k3, 100), 0);
    cti_key_t got;
    assert_int_equal(cti_keys_get(db, k1, &got), 0);
    assert_int_equal(got.expires_at, 100);
    assert_int_equal(cti_keys_get(db, k2, &got), 0);
    assert_int_equal(got.expires_at, 50);
    assert_int_equal(cti_keys_get(db, k3, &got), 0);
    assert_int_equal(got.expires_at, 0); /* the one kept */
    assert_int_equal(cti_keys_get(db, kx, &got), 0);
    assert_int_equal(got.expires_at, 0); /* another app's: untouched */

    int64_t n = -1;
    assert_int_equal(cti_keys_revoke(db, a.id, k1, 700, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(cti_keys_revoke(db, a.id, k1, 800, &n), 0);
    assert_int_equal(n, 0); /* already revoked: kept its time */
    assert_int_equal(cti_keys_get(db, k1, &got), 0);
    assert_int_equal(got.revoked_at, 700);
    assert_int_equal(cti_keys_revoke(db, a.id, kx, 700, &n), CTI_ENOTFOUND); /* not a's key */
    assert_int_equal(cti_keys_revoke(db, a.id, "ffffffffffffffff", 700, &n), CTI_ENOTFOUND);
    make_key(&a, key_id(k4, 14), 4);
    assert_int_equal(cti_keys_revoke(db, a.id, NULL, 900, &n), 0); /* all of a's */
    assert_int_equal(n, 3);                                        /* k2, k3, k4 */
    assert_int_equal(cti_keys_get(db, kx, &got), 0);
    assert_int_equal(got.revoked_at, 0);
}

/* ---- webhook secrets --------------------------------------------------------------------------
 */

/* Secrets are stored sealed (tests/store/test_secrets.c tests that part). */
#define KEY "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"

typedef struct {
    char apps[8][37], secrets[8][64];
    int n;
    const char *only_app;
} seen_secrets_t;

static int note_secret(const char *app_id, const char *secret, void *ud)
{
    seen_secrets_t *s = ud;
    if (s->only_app && strcmp(app_id, s->only_app) != 0)
        return 0;
    if (s->n < 8) {
        snprintf(s->apps[s->n], 37, "%s", app_id);
        snprintf(s->secrets[s->n++], 64, "%s", secret);
    }
    return 0;
}

static void test_secrets_rotate_with_grace(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = NULL;
    char why[128];
    assert_int_equal(cti_seal_keys_load(KEY, NULL, &k, why, sizeof why), 0);
    cti_app_t a = make_app("sec", 10, true), off = make_app("sec", 10, false);
    char cur[64];
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), CTI_ENOTFOUND);
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s1", "secret-one", 100), 0);
    assert_int_equal(cti_secrets_insert(db, k, off.id, "s1", "secret-off", 100), 0);
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s1", "again", 100), CTI_EEXIST);
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, "secret-one");

    /* rotation: the old one ends at 1,000; the new one is current */
    assert_int_equal(cti_secrets_expire_current(db, a.id, 1000), 0);
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s2", "secret-two", 200), 0);
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, "secret-two");

    seen_secrets_t s = {.n = 0};
    assert_true(cti_secrets_valid(db, k, a.id, 500, note_secret, &s) >= 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.secrets[0], "secret-two"); /* the current one first */
    assert_string_equal(s.secrets[1], "secret-one");
    s.n = 0;
    assert_true(cti_secrets_valid(db, k, a.id, 1000, note_secret, &s) >= 0); /* grace over */
    assert_int_equal(s.n, 1);
    assert_string_equal(s.secrets[0], "secret-two");
    s.n = 0;
    assert_true(cti_secrets_valid(db, k, off.id, 500, note_secret, &s) >= 0); /* inactive app */
    assert_int_equal(s.n, 0);
    /* every active app (NULL): a's are among them, the inactive one's are not */
    seen_secrets_t all = {.n = 0, .only_app = a.id};
    assert_true(cti_secrets_valid(db, k, NULL, 500, note_secret, &all) >= 0);
    assert_int_equal(all.n, 2);
    all = (seen_secrets_t){.n = 0, .only_app = off.id};
    assert_true(cti_secrets_valid(db, k, NULL, 500, note_secret, &all) >= 0);
    assert_int_equal(all.n, 0);

    /* a second rotation shortens a longer grace, never lengthens one */
    assert_int_equal(cti_secrets_expire_current(db, a.id, 800), 0);
    s.n = 0;
    assert_true(cti_secrets_valid(db, k, a.id, 900, note_secret, &s) >= 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), CTI_ENOTFOUND);
    cti_seal_keys_free(k);
}

/* ---- audit log --------------------------------------------------------------------------------
 */

typedef struct {
    int64_t ids[8];
    char actions[8][64], detail[8][64], addr[8][64], req[8][48];
    int n;
} seen_audit_t;

static int note_audit(const cti_audit_t *a, void *ud)
{
    seen_audit_t *s = ud;
    if (s->n < 8) {
        s->ids[s->n] = a->id;
        snprintf(s->actions[s->n], 64, "%s", a->action);
        snprintf(s->detail[s->n], 64, "%s", a->detail ? a->detail : "(null)");
        snprintf(s->addr[s->n], 64, "%s", a->client_addr);
        snprintf(s->req[s->n++], 48, "%s", a->request_id);
    }
    return 0;
}

static void test_audit_add_and_list_newest_first(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37];
    new_app(app, "aud");
    assert_int_equal(cti_audit_add(db, app, "admin", "app.created", "{\"name\":\"x\"}", "127.0.0.1",
                                   "req-1", 10),
                     0);
    assert_int_equal(cti_audit_add(db, app, "key:abc", "key.revoked", NULL, NULL, NULL, 20), 0);
    assert_int_equal(cti_audit_add(db, app, "admin", "app.updated", "{}", "::1", "req-3", 30), 0);
    assert_int_equal(cti_audit_add(db, NULL, "admin", "not.about.one", NULL, NULL, NULL, 40), 0);
    seen_audit_t s = {.n = 0};
    assert_true(cti_audit_list(db, app, 0, 10, note_audit, &s) >= 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.actions[0], "app.updated");
    assert_string_equal(s.actions[2], "app.created");
    assert_string_equal(s.detail[2], "{\"name\":\"x\"}");
    assert_string_equal(s.addr[2], "127.0.0.1");
    assert_string_equal(s.req[2], "req-1");
    assert_string_equal(s.detail[1], "(null)");
    assert_true(s.ids[0] > s.ids[1] && s.ids[1] > s.ids[2]);
    seen_audit_t page = {.n = 0};
    assert_true(cti_audit_list(db, app, s.ids[0], 1, note_audit, &page) >= 0); /* before, limit */
    assert_int_equal(page.n, 1);
    assert_string_equal(page.actions[0], "key.revoked");
}

/* ---- user mappings ----------------------------------------------------------------------------
 */

typedef struct {
    int64_t ids[8];
    char crm[8][64];
    int n;
} seen_maps_t;

static int note_mapping(const cti_mapping_t *m, void *ud)
{
    seen_maps_t *s = ud;
    if (s->n < 8) {
        s->ids[s->n] = m->dialpad_user_id;
        snprintf(s->crm[s->n++], 64, "%.60s", m->crm_user_id);
    }
    return 0;
}

static void test_mappings_put_get_delete_list(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_app_t a = make_app("map", 1, true);
    bool created = false;
    assert_int_equal(cti_mappings_put(db, a.id, 9007199254740993LL, "crm-a", 100, &created), 0);
    assert_true(created);
    assert_int_equal(cti_mappings_put(db, a.id, 9007199254740993LL, "crm-b", 200, &created), 0);
    assert_false(created); /* replaced */
    assert_int_equal(cti_mappings_put(db, a.id, 5, "crm-five", 300, NULL), 0);
    cti_mapping_t m;
    assert_int_equal(cti_mappings_get(db, a.id, 9007199254740993LL, &m), 0);
    assert_string_equal(m.crm_user_id, "crm-b");
    assert_true(m.created_at == 100 && m.updated_at == 200);
    assert_true(m.dialpad_user_id == 9007199254740993LL); /* above 2^53: exact */
    assert_int_equal(cti_mappings_get(db, a.id, 6, &m), CTI_ENOTFOUND);
    /* a mapping of an app that does not exist is refused (foreign key) */
    assert_true(cti_mappings_put(db, "app-missing", 5, "x", 1, NULL) < 0);

    seen_maps_t s = {.n = 0};
    assert_true(cti_mappings_list(db, a.id, 0, 10, note_mapping, &s) >= 0);
    assert_int_equal(s.n, 2);
    assert_true(s.ids[0] == 5 && s.ids[1] == 9007199254740993LL);
    s.n = 0;
    assert_true(cti_mappings_list(db, a.id, 5, 10, note_mapping, &s) >= 0); /* after 5 */
    assert_int_equal(s.n, 1);
    assert_string_equal(s.crm[0], "crm-b");

    assert_int_equal(cti_mappings_delete(db, a.id, 5), 0);
    assert_int_equal(cti_mappings_delete(db, a.id, 5), CTI_ENOTFOUND);
    assert_int_equal(cti_mappings_get(db, a.id, 5, &m), CTI_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apps_insert_get_update),
        cmocka_unit_test(test_apps_list_pages_by_created_then_id),
        cmocka_unit_test(test_apps_count_active),
        cmocka_unit_test(test_keys_insert_get_list_touch),
        cmocka_unit_test(test_keys_expire_others_and_revoke),
        cmocka_unit_test(test_secrets_rotate_with_grace),
        cmocka_unit_test(test_audit_add_and_list_newest_first),
        cmocka_unit_test(test_mappings_put_get_delete_list),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
