/*
 * test_secrets.c — conformance of the webhook secrets at rest (src/repo/
 * tenants.c) on both backends: sealed on insert, opened on read, bound to
 * their row, unreadable values reported (never a crash), and the start-up
 * pass that seals rows written in clear and seals again rows of an old key.
 *
 * The database is shared with the other files of the suite, so every test
 * makes its own apps and asserts on its own rows; the counts of a reseal are
 * compared as before/after differences.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/seal.h"
#include "harness.h"
#include "repo/tenants.h"

#define KEY_A "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"
#define KEY_B "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0"
#define KEY_C "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"

static cti_seal_keys_t *keys_of(const char *current, const char *old)
{
    cti_seal_keys_t *k = NULL;
    char why[200];
    int rc = cti_seal_keys_load(current, old, &k, why, sizeof why);
    if (rc != 0)
        fail_msg("key set: %s", why);
    return k;
}

static cti_app_t make_app(const char *tag)
{
    cti_app_t a = {.active = true, .created_at = 10, .updated_at = 10};
    new_app(a.id, tag);
    snprintf(a.name, sizeof a.name, "App %s", tag);
    assert_int_equal(cti_apps_insert(cti_store_db(store), &a), 0);
    return a;
}

/* The stored text of one secret row. */
static void stored(const char *app_id, const char *secret_id, char *out, size_t cap)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(secret_id)};
    assert_int_equal(cti_db_query_text(cti_store_db(store),
                                       "SELECT secret FROM webhook_secrets WHERE app_id = $1 "
                                       "AND secret_id = $2",
                                       p, 2, out, cap),
                     0);
}

/* Writes a row as a version that stored secrets in clear did. */
static void insert_clear(const char *app_id, const char *secret_id, const char *secret)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(secret_id), CTI_SQL_TEXT(secret)};
    assert_int_equal(cti_db_exec(cti_store_db(store),
                                 "INSERT INTO webhook_secrets (app_id, secret_id, secret, "
                                 "created_at) VALUES ($1, $2, $3, 100)",
                                 p, 3, NULL, NULL),
                     0);
}

static void set_stored(const char *app_id, const char *secret_id, const char *value)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(secret_id), CTI_SQL_TEXT(value)};
    assert_int_equal(cti_db_exec(cti_store_db(store),
                                 "UPDATE webhook_secrets SET secret = $3 WHERE app_id = $1 AND "
                                 "secret_id = $2",
                                 p, 3, NULL, NULL),
                     0);
}

static bool sealed_with(const char *value, const cti_seal_keys_t *keys)
{
    char head[16];
    snprintf(head, sizeof head, "v1:%s:", cti_seal_current_kid(keys));
    return strncmp(value, head, strlen(head)) == 0;
}

typedef struct {
    char secrets[4][64];
    int n, unreadable;
} seen_t;

static int note(const char *app_id, const char *secret, void *ud)
{
    seen_t *s = ud;
    if (!secret)
        s->unreadable++;
    else if (s->n < 4)
        snprintf(s->secrets[s->n++], 64, "%s", secret);
    return 0;
}

/* ---- sealed on insert, opened on read ------------------------------------------------- */

static void test_insert_seals_and_reads_open(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A, NULL);
    cti_app_t a = make_app("seal");
    const char *secret = "uQbCdxXI_lkgrl52CtajHQbKwQxor0g_0pnCiarNFtI";
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s1", secret, 100), 0);

    char raw[512], cur[64];
    stored(a.id, "s1", raw, sizeof raw);
    assert_null(strstr(raw, secret)); /* the column is not the secret */
    assert_true(sealed_with(raw, k));

    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, secret);
    seen_t s = {.n = 0};
    assert_true(cti_secrets_valid(db, k, a.id, 500, note, &s) >= 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.unreadable, 0);
    assert_string_equal(s.secrets[0], secret);

    /* two inserts of one secret are two different texts (a fresh nonce each) */
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s2", secret, 100), 0);
    char raw2[512];
    stored(a.id, "s2", raw2, sizeof raw2);
    assert_string_not_equal(raw, raw2);

    /* a buffer too small for the secret is refused, not cut */
    char tiny[8];
    assert_int_equal(cti_secrets_current(db, k, a.id, tiny, sizeof tiny), CTI_ELIMIT);
    cti_seal_keys_free(k);
}

/* ---- bound to the row ---------------------------------------------------------------------- */

static void test_value_of_another_row_does_not_open(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A, NULL);
    cti_app_t a = make_app("bind"), b = make_app("bind");
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s1", "secret-of-a", 100), 0);
    assert_int_equal(cti_secrets_insert(db, k, b.id, "s1", "secret-of-b", 100), 0);
    assert_int_equal(cti_secrets_insert(db, k, a.id, "s2", "second-of-a", 50), 0);

    /* a's sealed value copied onto b's row (same secret id): b's does not open */
    char raw[512], cur[64] = "untouched";
    stored(a.id, "s1", raw, sizeof raw);
    set_stored(b.id, "s1", raw);
    assert_int_equal(cti_secrets_current(db, k, b.id, cur, sizeof cur), CTI_EAUTH);
    assert_string_equal(cur, "untouched");
    seen_t s = {.n = 0};
    assert_true(cti_secrets_valid(db, k, b.id, 500, note, &s) >= 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.unreadable, 1); /* reported, not skipped silently */

    /* within one app, moved to another secret id: does not open either */
    set_stored(a.id, "s2", raw);
    s = (seen_t){.n = 0};
    assert_true(cti_secrets_valid(db, k, a.id, 500, note, &s) >= 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.secrets[0], "secret-of-a");
    assert_int_equal(s.unreadable, 1);

    /* tampered (one character of the payload changed), or not a sealed value */
    stored(a.id, "s1", raw, sizeof raw);
    size_t n = strlen(raw);
    raw[n - 3] = raw[n - 3] == 'A' ? 'B' : 'A';
    set_stored(a.id, "s1", raw);
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), CTI_EAUTH);
    set_stored(a.id, "s1", "v1:nothex!:garbage");
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), CTI_EAUTH);
    cti_seal_keys_free(k);
}

/* ---- keys ---------------------------------------------------------------------------------- */

static void test_wrong_key_is_unreadable_not_fatal(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *ka = keys_of(KEY_A, NULL), *kc = keys_of(KEY_C, NULL);
    cti_app_t a = make_app("wrong");
    assert_int_equal(cti_secrets_insert(db, ka, a.id, "s1", "sealed-with-a", 100), 0);
    char before[512], after[512], cur[64];
    stored(a.id, "s1", before, sizeof before);

    assert_int_equal(cti_secrets_current(db, kc, a.id, cur, sizeof cur), CTI_EAUTH);
    seen_t s = {.n = 0};
    assert_true(cti_secrets_valid(db, kc, a.id, 500, note, &s) >= 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.unreadable, 1);

    /* the pass leaves it as it is and counts it */
    cti_reseal_counts_t c;
    assert_int_equal(cti_secrets_reseal(db, kc, &c), 0);
    assert_true(c.unreadable >= 1);
    stored(a.id, "s1", after, sizeof after);
    assert_string_equal(after, before);
    assert_int_equal(cti_secrets_current(db, ka, a.id, cur, sizeof cur), 0); /* still A's */
    assert_string_equal(cur, "sealed-with-a");
    cti_seal_keys_free(ka);
    cti_seal_keys_free(kc);
}

static void test_old_key_reads_and_reseal_moves_to_new_key(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *ka = keys_of(KEY_A, NULL), *kba = keys_of(KEY_B, KEY_A),
                    *kb = keys_of(KEY_B, NULL);
    cti_app_t a = make_app("rot");
    assert_int_equal(cti_secrets_insert(db, ka, a.id, "s1", "rotate-me", 100), 0);
    char raw[512], cur[64];
    stored(a.id, "s1", raw, sizeof raw);
    assert_true(cti_seal_needs_reseal(kba, raw));

    /* B current, A old: still read */
    assert_int_equal(cti_secrets_current(db, kba, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, "rotate-me");
    /* only B: not yet */
    assert_int_equal(cti_secrets_current(db, kb, a.id, cur, sizeof cur), CTI_EAUTH);

    cti_reseal_counts_t c;
    assert_int_equal(cti_secrets_reseal(db, kba, &c), 0);
    assert_true(c.resealed >= 1);
    stored(a.id, "s1", raw, sizeof raw);
    assert_true(sealed_with(raw, kb));
    assert_false(cti_seal_needs_reseal(kba, raw));
    assert_int_equal(cti_secrets_current(db, kb, a.id, cur, sizeof cur), 0); /* A dropped */
    assert_string_equal(cur, "rotate-me");

    /* a second pass finds nothing of its own to do */
    char again[512];
    assert_int_equal(cti_secrets_reseal(db, kba, &c), 0);
    stored(a.id, "s1", again, sizeof again);
    assert_string_equal(again, raw);
    cti_seal_keys_free(ka);
    cti_seal_keys_free(kba);
    cti_seal_keys_free(kb);
}

/* ---- rows written in clear by older versions ------------------------------------------------ */

static void test_clear_row_read_then_sealed_by_reseal(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A, NULL);
    cti_app_t a = make_app("legacy");
    const char *secret = "LegacyClearSecret_0123456789abcdefghijklmno";
    insert_clear(a.id, "old1", secret);

    /* read as it is until sealed (a rolling upgrade: an older instance wrote it) */
    char cur[64], raw[512];
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, secret);

    int64_t clear_before =
        count("SELECT COUNT(*) FROM webhook_secrets WHERE secret NOT LIKE '%:%'");
    assert_true(clear_before >= 1);
    cti_reseal_counts_t c;
    assert_int_equal(cti_secrets_reseal(db, k, &c), 0);
    assert_int_equal(c.sealed, clear_before);
    assert_int_equal(count("SELECT COUNT(*) FROM webhook_secrets WHERE secret NOT LIKE '%:%'"), 0);
    stored(a.id, "old1", raw, sizeof raw);
    assert_null(strstr(raw, secret));
    assert_true(sealed_with(raw, k));
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_string_equal(cur, secret);
    cti_seal_keys_free(k);
}

/* Two instances starting at once: each row is rewritten once in all (the
 * compare-and-set), and every row opens afterwards. */
typedef struct {
    const cti_seal_keys_t *keys;
    pthread_barrier_t *start;
    cti_reseal_counts_t c;
    int rc;
} pass_t;

static void *run_pass(void *arg)
{
    pass_t *p = arg;
    cti_db_t *db = cti_store_db(store); /* connected before the race starts */
    pthread_barrier_wait(p->start);
    p->rc = cti_secrets_reseal(db, p->keys, &p->c);
    return NULL;
}

static void test_reseal_twice_at_once_rewrites_each_row_once(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_B, KEY_A);
    cti_app_t a = make_app("race");
    char id[32], secret[64];
    for (int i = 0; i < 250; i++) {
        snprintf(id, sizeof id, "r%03d", i);
        snprintf(secret, sizeof secret, "race-secret-%03d", i);
        insert_clear(a.id, id, secret);
    }
    int64_t clear = count("SELECT COUNT(*) FROM webhook_secrets WHERE secret NOT LIKE '%:%'");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    pass_t p[2] = {{.keys = k, .start = &start}, {.keys = k, .start = &start}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_pass, &p[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(p[0].rc, 0);
    assert_int_equal(p[1].rc, 0);
    assert_int_equal(p[0].c.sealed + p[1].c.sealed, clear);
    seen_t s = {.n = 0};
    assert_true(cti_secrets_valid(db, k, a.id, 500, note, &s) >= 0);
    assert_int_equal(s.unreadable, 0);
    char cur[64];
    assert_int_equal(cti_secrets_current(db, k, a.id, cur, sizeof cur), 0);
    assert_int_equal(strncmp(cur, "race-secret-", 12), 0);
    cti_seal_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_seals_and_reads_open),
        cmocka_unit_test(test_value_of_another_row_does_not_open),
        cmocka_unit_test(test_wrong_key_is_unreadable_not_fatal),
        cmocka_unit_test(test_old_key_reads_and_reseal_moves_to_new_key),
        cmocka_unit_test(test_clear_row_read_then_sealed_by_reseal),
        cmocka_unit_test(test_reseal_twice_at_once_rewrites_each_row_once),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
