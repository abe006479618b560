/*
 * test_endpoints.c — conformance of the outbound webhook endpoints
 * (src/repo/endpoints.c) on both backends: secrets sealed at rest and bound
 * to their row, every query bounded by the app, updates and deletes (with
 * the endpoint's deliveries), rotation with a grace (also when two race),
 * and the sender's view: enabled endpoints of active apps, failures counted
 * until the endpoint is disabled with an audit entry.
 *
 * The database is shared with the other files of the suite: every test makes
 * its own apps and asserts on its own rows.
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
#include "core/util.h"
#include "harness.h"
#include "repo/endpoints.h"
#include "repo/tenants.h"

#define KEY_A "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"
#define KEY_B "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0"
#define KEY_C "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
#define DAY (86400LL * 1000)

static cti_seal_keys_t *keys_of(const char *current)
{
    cti_seal_keys_t *k = NULL;
    char why[200];
    if (cti_seal_keys_load(current, NULL, &k, why, sizeof why) != 0)
        fail_msg("key set: %s", why);
    return k;
}

static cti_app_t make_app(const char *tag, bool active)
{
    cti_app_t a = {.active = active, .created_at = 10, .updated_at = 10};
    new_app(a.id, tag);
    snprintf(a.name, sizeof a.name, "App %s", tag);
    assert_int_equal(cti_apps_insert(cti_store_db(store), &a), 0);
    return a;
}

/* Inserts an endpoint of app created at `at` with secret; its id in e->id. */
static void make_endpoint(const cti_seal_keys_t *k, const char *app_id, const char *url,
                          const char *types, const char *secret, int64_t at, cti_endpoint_t *e)
{
    memset(e, 0, sizeof *e);
    cti_uuid4(e->id);
    snprintf(e->app_id, sizeof e->app_id, "%s", app_id);
    e->url = (char *)url;
    e->types = (char *)types;
    e->secret = (char *)secret;
    e->enabled = true;
    e->created_at = e->updated_at = at;
    assert_int_equal(cti_endpoint_insert(cti_store_db(store), k, e), 0);
    e->url = e->types = e->secret = NULL; /* borrowed: not the test's to free */
}

static void column(const char *col, const char *id, char *out, size_t cap)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s FROM webhook_endpoints WHERE id = $1", col);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(id)};
    assert_int_equal(cti_db_query_text(cti_store_db(store), sql, p, 1, out, cap), 0);
}

static int64_t count_for(const char *sql, const char *arg)
{
    int64_t n = -1;
    cti_sql_val_t p[] = {CTI_SQL_TEXT(arg)};
    assert_int_equal(cti_db_query_int(cti_store_db(store), sql, p, 1, &n), 0);
    return n;
}

/* What a callback saw: ids in order, and the secrets of the last one. */
typedef struct {
    char ids[8][37];
    int n;
    char secret[64], old_secret[64];
    bool with_secret;
} seen_t;

static int note(const cti_endpoint_t *e, void *ud)
{
    seen_t *s = ud;
    if (s->n < 8)
        snprintf(s->ids[s->n], 37, "%s", e->id);
    s->n++;
    s->with_secret = e->secret != NULL;
    snprintf(s->secret, sizeof s->secret, "%s", e->secret ? e->secret : "");
    snprintf(s->old_secret, sizeof s->old_secret, "%s", e->old_secret ? e->old_secret : "");
    return 0;
}

/* The sender's view of one endpoint (cti_endpoint_all_enabled lists every
 * app's): s.n is 1 when it is there, with its secrets. */
typedef struct {
    const char *id;
    seen_t s;
} find_t;

static int pick(const cti_endpoint_t *e, void *ud)
{
    find_t *f = ud;
    return strcmp(e->id, f->id) ? 0 : note(e, &f->s);
}

static seen_t sender_view(const cti_seal_keys_t *k, const char *id, int64_t now)
{
    find_t f = {id, {.n = 0}};
    assert_int_equal(cti_endpoint_all_enabled(cti_store_db(store), k, now, pick, &f), 0);
    return f.s;
}

/* ---- sealed at rest, bound to the row, bounded by the app -------------------------------- */

static void test_insert_seals_get_opens_only_with_keys_and_only_in_its_app(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-seal", true), b = make_app("ep-other", true);
    const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    cti_endpoint_t e;
    make_endpoint(k, a.id, "https://example.com/hook", "call.* sms.received", secret, 100, &e);

    char raw[512];
    column("secret", e.id, raw, sizeof raw);
    assert_null(strstr(raw, "MfKQ9r8GKYqr"));
    assert_int_equal(strncmp(raw, "v1:", 3), 0);

    cti_endpoint_t got;
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), 0);
    assert_string_equal(got.secret, secret);
    assert_null(got.old_secret);
    assert_string_equal(got.url, "https://example.com/hook");
    assert_string_equal(got.types, "call.* sms.received");
    assert_null(got.description);
    assert_true(got.enabled);
    assert_null(got.disabled_reason);
    assert_int_equal(got.created_at, 100);
    assert_int_equal(got.updated_at, 100);
    assert_string_equal(got.app_id, a.id);
    cti_endpoint_clear(&got);

    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_null(got.secret); /* without keys: no secret */
    cti_endpoint_clear(&got);

    /* another app cannot reach it, nor an unknown id */
    assert_int_equal(cti_endpoint_get(db, NULL, b.id, e.id, &got), CTI_ENOTFOUND);
    assert_int_equal(cti_endpoint_get(db, k, a.id, "00000000-0000-4000-8000-000000000000", &got),
                     CTI_ENOTFOUND);
    cti_seal_keys_free(k);
}

static void test_secret_copied_to_another_endpoint_does_not_open(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A), *other = keys_of(KEY_B);
    cti_app_t a = make_app("ep-copy", true);
    cti_endpoint_t e1, e2, got;
    make_endpoint(k, a.id, "https://a.example/1", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 10,
                  &e1);
    make_endpoint(k, a.id, "https://a.example/2", NULL, "whsec_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", 20,
                  &e2);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(e1.id), CTI_SQL_TEXT(e2.id)};
    assert_int_equal(cti_db_exec(db,
                                 "UPDATE webhook_endpoints SET secret = (SELECT secret FROM "
                                 "webhook_endpoints WHERE id = $1) WHERE id = $2",
                                 p, 2, NULL, NULL),
                     0);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e2.id, &got), CTI_EAUTH);
    assert_null(got.url); /* cleared on failure */
    /* a key that did not seal it does not open it either */
    assert_int_equal(cti_endpoint_get(db, other, a.id, e1.id, &got), CTI_EAUTH);
    /* the sender skips the unreadable one, keeps the other */
    seen_t s = {.n = 0};
    assert_int_equal(cti_endpoint_all_enabled(db, k, 1000, note, &s), 0);
    bool saw1 = false, saw2 = false;
    for (int i = 0; i < s.n && i < 8; i++) {
        saw1 |= !strcmp(s.ids[i], e1.id);
        saw2 |= !strcmp(s.ids[i], e2.id);
    }
    assert_true(saw1);
    assert_false(saw2);
    cti_seal_keys_free(k);
    cti_seal_keys_free(other);
}

static void test_list_is_the_apps_oldest_first_without_secrets(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-list", true), b = make_app("ep-list-b", true);
    cti_endpoint_t e1, e2, e3, x;
    make_endpoint(k, a.id, "https://l.example/3", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 300,
                  &e3);
    make_endpoint(k, a.id, "https://l.example/1", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 100,
                  &e1);
    make_endpoint(k, b.id, "https://l.example/x", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 150,
                  &x);
    make_endpoint(k, a.id, "https://l.example/2", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 200,
                  &e2);
    seen_t s = {.n = 0};
    assert_int_equal(cti_endpoint_list(db, a.id, note, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[0], e1.id);
    assert_string_equal(s.ids[1], e2.id);
    assert_string_equal(s.ids[2], e3.id);
    assert_false(s.with_secret);
    cti_seal_keys_free(k);
}

/* ---- update, delete ------------------------------------------------------------------------- */

static void test_update_writes_fields_and_enabling_forgets_the_failure(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-upd", true), b = make_app("ep-upd-b", true);
    cti_endpoint_t e, got;
    make_endpoint(k, a.id, "https://u.example/old", "call.*", "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                  100, &e);
    bool disabled = false;
    assert_int_equal(cti_endpoint_note_failure(db, e.id, 1000, DAY, &disabled), 0);
    assert_int_equal(cti_endpoint_note_failure(db, e.id, 1000 + DAY, DAY, &disabled), 0);
    assert_true(disabled);

    cti_endpoint_t u = {.url = "https://u.example/new", .description = "CRM",
                        .types = NULL, .enabled = false, .updated_at = 5000};
    snprintf(u.id, sizeof u.id, "%s", e.id);
    snprintf(u.app_id, sizeof u.app_id, "%s", b.id);
    assert_int_equal(cti_endpoint_update(db, &u), CTI_ENOTFOUND); /* not b's */
    snprintf(u.app_id, sizeof u.app_id, "%s", a.id);
    assert_int_equal(cti_endpoint_update(db, &u), 0);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_string_equal(got.url, "https://u.example/new");
    assert_string_equal(got.description, "CRM");
    assert_null(got.types);
    assert_false(got.enabled);
    assert_non_null(got.disabled_reason); /* still disabled: the reason stays */
    assert_int_equal(got.failing_since, 1000);
    assert_int_equal(got.updated_at, 5000);
    assert_int_equal(got.created_at, 100);
    cti_endpoint_clear(&got);

    u.enabled = true;
    u.updated_at = 6000;
    assert_int_equal(cti_endpoint_update(db, &u), 0);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_true(got.enabled);
    assert_null(got.disabled_reason);
    assert_int_equal(got.failing_since, 0);
    cti_endpoint_clear(&got);
    cti_seal_keys_free(k);
}

static void add_delivery(const char *app_id, const char *endpoint_id, int64_t seq)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(endpoint_id), CTI_SQL_TEXT(app_id), CTI_SQL_INT(seq)};
    assert_int_equal(cti_db_exec(cti_store_db(store),
                                 "INSERT INTO webhook_deliveries (endpoint_id, app_id, seq, event, "
                                 "next_attempt_at, created_at) VALUES ($1, $2, $3, 'call.ringing', "
                                 "0, 0)",
                                 p, 3, NULL, NULL),
                     0);
}

static void test_delete_takes_its_deliveries_and_only_its_own(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-del", true), b = make_app("ep-del-b", true);
    cti_endpoint_t e1, e2, got;
    make_endpoint(k, a.id, "https://d.example/1", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1, &e1);
    make_endpoint(k, a.id, "https://d.example/2", NULL, "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 2, &e2);
    for (int i = 1; i <= 3; i++) {
        add_delivery(a.id, e1.id, i);
        add_delivery(a.id, e2.id, i);
    }
    assert_int_equal(cti_endpoint_delete(db, b.id, e1.id), CTI_ENOTFOUND); /* not b's */
    assert_int_equal(count_for("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                               e1.id),
                     3);
    assert_int_equal(cti_endpoint_delete(db, a.id, e1.id), 0);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e1.id, &got), CTI_ENOTFOUND);
    assert_int_equal(count_for("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                               e1.id),
                     0);
    assert_int_equal(count_for("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                               e2.id),
                     3);
    assert_int_equal(cti_endpoint_delete(db, a.id, e1.id), CTI_ENOTFOUND); /* twice */

    /* inside the caller's transaction: rolled back with it */
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_endpoint_delete(db, a.id, e2.id), 0);
    cti_db_rollback(db);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e2.id, &got), 0);
    cti_endpoint_clear(&got);
    assert_int_equal(count_for("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1",
                               e2.id),
                     3);
    cti_seal_keys_free(k);
}

/* ---- rotation ---------------------------------------------------------------------------------- */

static void test_rotate_keeps_the_old_secret_for_its_grace_only(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-rot", true), b = make_app("ep-rot-b", true);
    const char *s1 = "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx";
    const char *s2 = "whsec_MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy";
    const char *s3 = "whsec_MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMz";
    cti_endpoint_t e, got;
    make_endpoint(k, a.id, "https://r.example/", NULL, s1, 100, &e);
    int64_t now = cti_now_ms();

    assert_int_equal(cti_endpoint_rotate(db, k, b.id, e.id, s2, now + DAY, now), CTI_ENOTFOUND);
    assert_int_equal(cti_endpoint_rotate(db, k, a.id, e.id, s2, now + DAY, now), 0);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), 0);
    assert_string_equal(got.secret, s2);
    assert_string_equal(got.old_secret, s1);
    assert_int_equal(got.old_secret_expires_at, now + DAY);
    assert_int_equal(got.updated_at, now);
    cti_endpoint_clear(&got);
    char raw[512];
    column("old_secret", e.id, raw, sizeof raw);
    assert_null(strstr(raw, "MTExMTEx"));

    /* the sender signs with both during the grace, with the new one only after */
    seen_t v = sender_view(k, e.id, now + DAY - 1);
    assert_int_equal(v.n, 1);
    assert_string_equal(v.secret, s2);
    assert_string_equal(v.old_secret, s1);
    v = sender_view(k, e.id, now + DAY);
    assert_int_equal(v.n, 1);
    assert_string_equal(v.secret, s2);
    assert_string_equal(v.old_secret, "");

    /* the old column is bound to its own role: moved to the current one, it does not open */
    cti_sql_val_t p[] = {CTI_SQL_TEXT(e.id)};
    char saved[512];
    column("secret", e.id, saved, sizeof saved);
    assert_int_equal(cti_db_exec(db,
                                 "UPDATE webhook_endpoints SET secret = old_secret WHERE id = $1",
                                 p, 1, NULL, NULL),
                     0);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), CTI_EAUTH);
    const char *saved_text = saved;
    cti_sql_val_t q[] = {CTI_SQL_TEXT(e.id), CTI_SQL_TEXT(saved_text)};
    assert_int_equal(cti_db_exec(db, "UPDATE webhook_endpoints SET secret = $2 WHERE id = $1", q,
                                 2, NULL, NULL),
                     0);

    /* no grace: the previous secret stops at once */
    assert_int_equal(cti_endpoint_rotate(db, k, a.id, e.id, s3, now, now + 1), 0);
    assert_int_equal(count_for("SELECT COUNT(*) FROM webhook_endpoints WHERE id = $1 AND "
                               "old_secret IS NULL AND old_secret_expires_at IS NULL",
                               e.id),
                     1);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), 0);
    assert_string_equal(got.secret, s3);
    assert_null(got.old_secret);
    cti_endpoint_clear(&got);
    cti_seal_keys_free(k);
}

static void test_rotate_recovers_an_endpoint_whose_secret_does_not_open(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *lost = keys_of(KEY_B), *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-lost", true);
    cti_endpoint_t e, got;
    make_endpoint(lost, a.id, "https://r.example/", NULL, "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx",
                  100, &e);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), CTI_EAUTH);
    int64_t now = cti_now_ms();
    const char *fresh = "whsec_MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy";
    assert_int_equal(cti_endpoint_rotate(db, k, a.id, e.id, fresh, now + DAY, now), 0);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), 0);
    assert_string_equal(got.secret, fresh);
    assert_null(got.old_secret); /* nothing to keep signing with */
    cti_endpoint_clear(&got);
    cti_seal_keys_free(k);
    cti_seal_keys_free(lost);
}

typedef struct {
    const cti_seal_keys_t *keys;
    const char *app_id, *id, *secret;
    pthread_barrier_t *start;
    int rc;
} rotation_t;

static void *rotate_thread(void *arg)
{
    rotation_t *r = arg;
    int64_t now = cti_now_ms();
    pthread_barrier_wait(r->start);
    cti_db_t *db = cti_store_db(store);
    for (int i = 0; i < 20 && r->rc == 0; i++) { /* in a transaction, as the API does */
        r->rc = cti_db_begin(db);
        if (r->rc == 0)
            r->rc = cti_endpoint_rotate(db, r->keys, r->app_id, r->id, r->secret, now + DAY, now);
        if (r->rc == 0)
            r->rc = cti_db_commit(db);
        else
            cti_db_rollback(db);
    }
    return NULL;
}

/* Two rotations at once: each ends on a secret the other keeps as the old
 * one (none is lost in between), whichever commits last. */
static void test_rotations_racing_lose_no_secret(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-race", true);
    cti_endpoint_t e, got;
    make_endpoint(k, a.id, "https://r.example/", NULL, "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx",
                  100, &e);
    const char *sa = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";
    const char *sb = "whsec_QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC";
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    rotation_t r[2] = {{k, a.id, e.id, sa, &start, 0}, {k, a.id, e.id, sb, &start, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, rotate_thread, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[1].rc, 0);
    assert_int_equal(cti_endpoint_get(db, k, a.id, e.id, &got), 0);
    assert_true(!strcmp(got.secret, sa) || !strcmp(got.secret, sb));
    assert_non_null(got.old_secret);
    assert_true(!strcmp(got.old_secret, sa) || !strcmp(got.old_secret, sb));
    cti_endpoint_clear(&got);
    cti_seal_keys_free(k);
}

static cti_seal_keys_t *keys_with_old(const char *current, const char *old)
{
    cti_seal_keys_t *k = NULL;
    char why[200];
    if (cti_seal_keys_load(current, old, &k, why, sizeof why) != 0)
        fail_msg("key set: %s", why);
    return k;
}

/* A key rotation: values sealed with the old key are sealed again with the
 * new one (current and previous secrets), so the old key can be dropped. */
static void test_reseal_moves_both_secrets_to_the_current_key(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *old = keys_of(KEY_B), *both = keys_with_old(KEY_A, KEY_B),
                    *only_new = keys_of(KEY_A);
    cti_app_t a = make_app("ep-reseal", true);
    const char *s1 = "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx";
    const char *s2 = "whsec_MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy";
    cti_endpoint_t e, f, got;
    make_endpoint(old, a.id, "https://k.example/", NULL, s1, 1, &e);
    int64_t now = cti_now_ms();
    assert_int_equal(cti_endpoint_rotate(db, old, a.id, e.id, s2, now + DAY, now), 0);
    make_endpoint(only_new, a.id, "https://k.example/2", NULL, s1, 2, &f);
    char before_f[512];
    column("secret", f.id, before_f, sizeof before_f);
    assert_int_equal(cti_endpoint_get(db, only_new, a.id, e.id, &got), CTI_EAUTH);

    int64_t resealed = -1, unreadable = -1;
    assert_int_equal(cti_endpoint_reseal(db, both, &resealed, &unreadable), 0);
    assert_true(resealed >= 1); /* other files' rows may be resealed too */
    assert_int_equal(cti_endpoint_get(db, only_new, a.id, e.id, &got), 0);
    assert_string_equal(got.secret, s2);
    assert_string_equal(got.old_secret, s1);
    cti_endpoint_clear(&got);
    char after_f[512];
    column("secret", f.id, after_f, sizeof after_f);
    assert_string_equal(before_f, after_f); /* already with the current key: untouched */

    /* again: nothing left to do */
    assert_int_equal(cti_endpoint_reseal(db, both, &resealed, &unreadable), 0);
    assert_int_equal(resealed, 0);
    /* a value no key opens is counted, left as it is, and does not stop the pass */
    cti_seal_keys_t *stranger = keys_of(KEY_C);
    cti_endpoint_t lost;
    make_endpoint(stranger, a.id, "https://k.example/3", NULL, s1, 3, &lost);
    assert_int_equal(cti_endpoint_reseal(db, both, &resealed, &unreadable), 0);
    assert_true(unreadable >= 1);
    assert_int_equal(cti_endpoint_get(db, stranger, a.id, lost.id, &got), 0);
    cti_endpoint_clear(&got);
    cti_seal_keys_free(stranger);
    cti_seal_keys_free(old);
    cti_seal_keys_free(both);
    cti_seal_keys_free(only_new);
}

/* ---- the sender's view ---------------------------------------------------------------------- */

static void test_sender_sees_enabled_endpoints_of_active_apps(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t on = make_app("ep-on", true), off = make_app("ep-off", false);
    const char *secret = "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx";
    cti_endpoint_t e1, e2, e3;
    make_endpoint(k, on.id, "https://s.example/1", "call.*", secret, 1, &e1);
    make_endpoint(k, on.id, "https://s.example/2", NULL, secret, 2, &e2);
    make_endpoint(k, off.id, "https://s.example/3", NULL, secret, 3, &e3);
    cti_endpoint_t u = {.url = "https://s.example/2", .enabled = false, .updated_at = 9};
    snprintf(u.id, sizeof u.id, "%s", e2.id);
    snprintf(u.app_id, sizeof u.app_id, "%s", on.id);
    assert_int_equal(cti_endpoint_update(db, &u), 0);

    seen_t v = sender_view(k, e1.id, 10);
    assert_int_equal(v.n, 1);
    assert_string_equal(v.secret, secret);
    assert_int_equal(sender_view(k, e2.id, 10).n, 0); /* disabled */
    assert_int_equal(sender_view(k, e3.id, 10).n, 0); /* its app is inactive */
    cti_seal_keys_free(k);
}

static void test_failures_disable_after_the_limit_with_one_audit_entry(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_seal_keys_t *k = keys_of(KEY_A);
    cti_app_t a = make_app("ep-fail", true);
    cti_endpoint_t e, got;
    make_endpoint(k, a.id, "https://f.example/", NULL, "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx",
                  1, &e);
    bool disabled = true;
    int64_t t0 = 1000000;
    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0, 5 * DAY, &disabled), 0);
    assert_false(disabled);
    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0 + DAY, 5 * DAY, &disabled), 0);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_int_equal(got.failing_since, t0); /* the first failure, not the latest */
    cti_endpoint_clear(&got);

    /* a success starts the clock again */
    assert_int_equal(cti_endpoint_note_success(db, e.id), 0);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_int_equal(got.failing_since, 0);
    cti_endpoint_clear(&got);
    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0 + 4 * DAY, 5 * DAY, &disabled), 0);
    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0 + 9 * DAY - 1, 5 * DAY, &disabled),
                     0);
    assert_false(disabled); /* 5 days less a millisecond since the first failure */
    assert_int_equal(sender_view(k, e.id, t0).n, 1);

    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0 + 9 * DAY, 5 * DAY, &disabled), 0);
    assert_true(disabled);
    assert_int_equal(cti_endpoint_get(db, NULL, a.id, e.id, &got), 0);
    assert_false(got.enabled);
    assert_non_null(got.disabled_reason);
    assert_non_null(strstr(got.disabled_reason, "failed since"));
    assert_int_equal(got.updated_at, t0 + 9 * DAY);
    cti_endpoint_clear(&got);
    assert_int_equal(sender_view(k, e.id, t0).n, 0);

    /* a late failure of an attempt already in flight: no second entry */
    assert_int_equal(cti_endpoint_note_failure(db, e.id, t0 + 10 * DAY, 5 * DAY, &disabled), 0);
    assert_false(disabled);
    assert_int_equal(count_for("SELECT COUNT(*) FROM audit_log WHERE app_id = $1 AND "
                               "action = 'webhook_endpoint.disabled' AND actor = 'system'",
                               a.id),
                     1);
    char detail[300];
    cti_sql_val_t p[] = {CTI_SQL_TEXT(a.id)};
    assert_int_equal(cti_db_query_text(db,
                                       "SELECT detail FROM audit_log WHERE app_id = $1 AND "
                                       "action = 'webhook_endpoint.disabled'",
                                       p, 1, detail, sizeof detail),
                     0);
    assert_non_null(strstr(detail, e.id));
    assert_null(strstr(detail, "whsec_")); /* never a secret */

    /* in the caller's transaction: rolled back with it */
    cti_endpoint_t e2;
    make_endpoint(k, a.id, "https://f.example/2", NULL, "whsec_MTExMTExMTExMTExMTExMTExMTExMTEx",
                  2, &e2);
    assert_int_equal(cti_db_begin(db), 0);
    assert_int_equal(cti_endpoint_note_failure(db, e2.id, t0, 0, &disabled), 0);
    assert_true(disabled);
    cti_db_rollback(db);
    assert_int_equal(sender_view(k, e2.id, t0).n, 1);

    assert_int_equal(cti_endpoint_note_failure(db, "00000000-0000-4000-8000-000000000000", t0,
                                               DAY, &disabled),
                     CTI_ENOTFOUND);
    cti_seal_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_seals_get_opens_only_with_keys_and_only_in_its_app),
        cmocka_unit_test(test_secret_copied_to_another_endpoint_does_not_open),
        cmocka_unit_test(test_list_is_the_apps_oldest_first_without_secrets),
        cmocka_unit_test(test_update_writes_fields_and_enabling_forgets_the_failure),
        cmocka_unit_test(test_delete_takes_its_deliveries_and_only_its_own),
        cmocka_unit_test(test_rotate_keeps_the_old_secret_for_its_grace_only),
        cmocka_unit_test(test_rotate_recovers_an_endpoint_whose_secret_does_not_open),
        cmocka_unit_test(test_rotations_racing_lose_no_secret),
        cmocka_unit_test(test_reseal_moves_both_secrets_to_the_current_key),
        cmocka_unit_test(test_sender_sees_enabled_endpoints_of_active_apps),
        cmocka_unit_test(test_failures_disable_after_the_limit_with_one_audit_entry),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, store_setup, store_teardown);
}
