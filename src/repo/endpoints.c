/*
 * endpoints.c — SQL for customers' outbound webhook endpoints
 * (webhook_endpoints), written once for both backends (see store.h).
 *
 * Secrets are sealed (core/seal.h) before they reach the table and bound to
 * their row by the associated data "whsec:<endpoint id>" (the current one)
 * or "whsec-old:<endpoint id>" (the previous one, during its grace): a value
 * copied to another endpoint, or from one column to the other, does not
 * open. Nothing here logs a secret or knows HTTP; a value that does not open
 * is logged once per row and value (the sender reloads endpoints often).
 *
 * Threads: any, each with its own db.
 */
#include "repo/endpoints.h"
#include "repo/events.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "repo/tenants.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AD_MAX 64
#define ROTATE_TRIES 5 /* compare-and-set attempts when rotations race */

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static int64_t opt_int(const cti_row_t *row, int col)
{
    return cti_row_is_null(row, col) ? 0 : cti_row_int(row, col);
}

static void secret_ad(const char *id, bool old, char ad[AD_MAX])
{
    snprintf(ad, AD_MAX, "%s:%s", old ? "whsec-old" : "whsec", id);
}

void cti_endpoint_clear(cti_endpoint_t *e)
{
    free(e->url);
    free(e->description);
    free(e->types);
    free(e->disabled_reason);
    cti_seal_wipe_free(e->secret);
    cti_seal_wipe_free(e->old_secret);
    memset(e, 0, sizeof *e);
}

/* ---- secrets ---------------------------------------------------------------------------- */

/* Opens a stored secret of endpoint id: 0 and *out (the caller wipes and
 * frees it), or the cti_seal_open error (logged once, never the value). */
static int open_secret(const cti_seal_keys_t *keys, const char *id, bool old, const char *stored,
                       char **out)
{
    char ad[AD_MAX];
    secret_ad(id, old, ad);
    int rc = cti_seal_open(keys, stored, ad, out, NULL);
    if (rc != 0 && cti_seal_first_notice(ad, stored))
        cti_log(CTI_LOG_ERROR, NULL,
                "outbound webhook endpoint secret cannot be decrypted: the endpoint gets nothing "
                "signed with it until the key that sealed it is in TOKEN_ENCRYPTION_KEY(_OLD) or "
                "its secret is rotated",
                CTI_LS("endpoint_id", id), CTI_LB("previous_secret", old),
                CTI_LS("current_kid", cti_seal_current_kid(keys)),
                CTI_LS("why", cti_seal_open_error(rc)));
    return rc;
}

static char *seal_secret(const cti_seal_keys_t *keys, const char *id, bool old,
                         const char *secret)
{
    char ad[AD_MAX];
    secret_ad(id, old, ad);
    return cti_seal(keys, secret, strlen(secret), ad);
}

/* ---- reading rows ---------------------------------------------------------------------- */

#define COLS                                                                                   \
    "e.id, e.app_id, e.url, e.description, e.types, e.enabled, e.disabled_reason, "            \
    "e.failing_since, e.created_at, e.updated_at, e.secret, e.old_secret, "                     \
    "e.old_secret_expires_at"

/* A row without its secrets (columns 10-12 are read by open_row). */
static void read_row(const cti_row_t *row, cti_endpoint_t *e)
{
    copy(e->id, sizeof e->id, cti_row_text(row, 0));
    copy(e->app_id, sizeof e->app_id, cti_row_text(row, 1));
    e->url = cti_strdup(cti_row_text(row, 2) ? cti_row_text(row, 2) : "");
    e->description = cti_strdup(cti_row_text(row, 3));
    e->types = cti_strdup(cti_row_text(row, 4));
    e->enabled = cti_row_int(row, 5) != 0;
    e->disabled_reason = cti_strdup(cti_row_text(row, 6));
    e->failing_since = opt_int(row, 7);
    e->created_at = cti_row_int(row, 8);
    e->updated_at = cti_row_int(row, 9);
}

/* Opens the row's secrets into e: the current one (CTI_EAUTH when it does
 * not open), and the previous one when it is still valid at now (left NULL,
 * logged, when it does not open). */
static int open_row(const cti_row_t *row, const cti_seal_keys_t *keys, int64_t now,
                    cti_endpoint_t *e)
{
    const char *cur = cti_row_text(row, 10), *old = cti_row_text(row, 11);
    int64_t old_until = opt_int(row, 12);
    if (!cur || open_secret(keys, e->id, false, cur, &e->secret) != 0)
        return CTI_EAUTH;
    if (old && old_until > now && open_secret(keys, e->id, true, old, &e->old_secret) == 0)
        e->old_secret_expires_at = old_until;
    return 0;
}

typedef struct {
    const cti_seal_keys_t *keys;
    int64_t now;
    cti_endpoint_t *out;
    int rc;
} one_t;

static int one_row(const cti_row_t *row, void *ud)
{
    one_t *o = ud;
    read_row(row, o->out);
    if (o->keys)
        o->rc = open_row(row, o->keys, o->now, o->out);
    return 1;
}

/* ---- create, read, update, delete --------------------------------------------------------- */

int cti_endpoint_insert(cti_db_t *db, const cti_seal_keys_t *keys, const cti_endpoint_t *e)
{
    assert(e->secret && e->url && cti_is_uuid(e->id));
    char *sealed = seal_secret(keys, e->id, false, e->secret);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(e->id),          CTI_SQL_TEXT(e->app_id),
                         CTI_SQL_TEXT(e->url),         CTI_SQL_TEXT(e->description),
                         CTI_SQL_TEXT(e->types),       CTI_SQL_TEXT(sealed),
                         CTI_SQL_BOOL(e->enabled),     CTI_SQL_INT(e->created_at)};
    int rc = cti_db_exec(db,
                         "INSERT INTO webhook_endpoints (id, app_id, url, description, types, "
                         "secret, enabled, created_at, updated_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                         p, 8, NULL, NULL);
    free(sealed);
    return rc;
}

int cti_endpoint_get(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                     const char *id, cti_endpoint_t *out)
{
    memset(out, 0, sizeof *out);
    one_t o = {keys, cti_now_ms(), out, 0};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(id)};
    int rc = cti_db_exec(db,
                         "SELECT " COLS " FROM webhook_endpoints e WHERE e.app_id = $1 AND "
                         "e.id = $2",
                         p, 2, one_row, &o);
    rc = rc < 0 ? rc : rc == 0 ? CTI_ENOTFOUND : o.rc;
    if (rc != 0)
        cti_endpoint_clear(out);
    return rc;
}

typedef struct {
    const cti_seal_keys_t *keys; /* NULL: without secrets */
    int64_t now;
    cti_endpoint_fn fn;
    void *ud;
} iter_t;

static int each_row(const cti_row_t *row, void *ud)
{
    iter_t *it = ud;
    cti_endpoint_t e = {0};
    read_row(row, &e);
    int rc = 0;
    if (!it->keys || open_row(row, it->keys, it->now, &e) == 0)
        rc = it->fn(&e, it->ud); /* one whose secret does not open is skipped (logged) */
    cti_endpoint_clear(&e);
    return rc;
}

int cti_endpoint_list(cti_db_t *db, const char *app_id, cti_endpoint_fn fn, void *ud)
{
    iter_t it = {NULL, 0, fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    int rc = cti_db_exec(db,
                         "SELECT " COLS " FROM webhook_endpoints e WHERE e.app_id = $1 "
                         "ORDER BY e.created_at, e.id",
                         p, 1, each_row, &it);
    return rc < 0 ? rc : 0;
}

int cti_endpoint_update(cti_db_t *db, const cti_endpoint_t *e)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(e->app_id),      CTI_SQL_TEXT(e->id),
                         CTI_SQL_TEXT(e->url),         CTI_SQL_TEXT(e->description),
                         CTI_SQL_TEXT(e->types),       CTI_SQL_BOOL(e->enabled),
                         CTI_SQL_INT(e->updated_at), CTI_SQL_BOOL(e->enabled)};
    int64_t n = 0;
    /* enabling (again) forgets why the server disabled it and how long it failed */
    int rc = cti_db_exec_count(db,
                               "UPDATE webhook_endpoints SET url = $3, description = $4, "
                               "types = $5, updated_at = $7, "
                               "disabled_reason = CASE WHEN $8 = 1 THEN NULL "
                               "ELSE disabled_reason END, "
                               "failing_since = CASE WHEN $8 = 1 AND enabled = 0 THEN NULL "
                               "ELSE failing_since END, "
                               "enabled = $6 WHERE app_id = $1 AND id = $2 RETURNING 1",
                               p, 8, &n);
    return rc != 0 ? rc : n ? 0 : CTI_ENOTFOUND;
}

int cti_endpoint_lock(cti_db_t *db, const char *app_id, const char *id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(id)};
    int64_t n = 0;
    return cti_db_exec_count(db,
                             "UPDATE webhook_endpoints SET updated_at = updated_at "
                             "WHERE app_id = $1 AND id = $2",
                             p, 2, &n);
}

/* The two deletes; in the caller's transaction. */
static int delete_rows(cti_db_t *db, const char *app_id, const char *id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(id)};
    int64_t n = 0, last;
    /* The app's seq row, as an ingest transaction appending its events holds
     * it: one enqueuing deliveries for this endpoint commits before (and they
     * are deleted here) or reads the endpoint after it is gone. Without it a
     * delivery could outlive its endpoint (PostgreSQL, read committed). */
    int rc = cti_seq_lock(db, app_id, &last);
    if (rc == 0)
        rc = cti_db_exec_count(db,
                               "DELETE FROM webhook_endpoints WHERE app_id = $1 AND id = $2 "
                               "RETURNING 1",
                               p, 2, &n);
    if (rc == 0 && n == 0)
        rc = CTI_ENOTFOUND;
    if (rc == 0)
        rc = cti_db_exec(db, "DELETE FROM webhook_deliveries WHERE endpoint_id = $2 AND "
                             "app_id = $1",
                         p, 2, NULL, NULL);
    return rc;
}

int cti_endpoint_delete(cti_db_t *db, const char *app_id, const char *id)
{
    if (cti_db_in_tx(db)) /* the caller's transaction (with its audit entry) */
        return delete_rows(db, app_id, id);
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = delete_rows(db, app_id, id);
    if (rc == 0)
        return cti_db_commit(db);
    cti_db_rollback(db);
    return rc;
}

/* ---- rotation ------------------------------------------------------------------------------ */

typedef struct {
    bool found;
    char *stored; /* the sealed current secret, owned */
} current_t;

static int current_row(const cti_row_t *row, void *ud)
{
    current_t *c = ud;
    c->found = true;
    c->stored = cti_strdup(cti_row_text(row, 0));
    return 1;
}

/* One compare-and-set attempt: *done false when another rotation changed the
 * secret since it was read. */
static int rotate_once(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                       const char *id, const char *secret, int64_t grace_until, int64_t now,
                       bool *done)
{
    current_t c = {false, NULL};
    cti_sql_val_t k[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(id)};
    /* an UPDATE, not a SELECT: inside the caller's transaction it holds the
     * row until commit, so a racing rotation waits instead of failing its CAS */
    int rc = cti_db_exec(db,
                         "UPDATE webhook_endpoints SET updated_at = updated_at WHERE app_id = $1 "
                         "AND id = $2 RETURNING secret",
                         k, 2, current_row, &c);
    if (rc < 0 || !c.found) {
        free(c.stored);
        return rc < 0 ? rc : CTI_ENOTFOUND;
    }
    char *old_clear = NULL, *old_sealed = NULL;
    /* the previous secret keeps signing only if it can still be opened: a
     * rotation is also how an endpoint whose secret was lost recovers */
    if (grace_until > now && c.stored && open_secret(keys, id, false, c.stored, &old_clear) == 0)
        old_sealed = seal_secret(keys, id, true, old_clear);
    cti_seal_wipe_free(old_clear);
    char *sealed = seal_secret(keys, id, false, secret);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id),     CTI_SQL_TEXT(id),
                         CTI_SQL_TEXT(sealed),     CTI_SQL_TEXT(old_sealed),
                         old_sealed ? CTI_SQL_INT(grace_until) : CTI_SQL_NULLV,
                         CTI_SQL_INT(now),         CTI_SQL_TEXT(c.stored)};
    int64_t n = 0;
    rc = cti_db_exec_count(db,
                           "UPDATE webhook_endpoints SET secret = $3, old_secret = $4, "
                           "old_secret_expires_at = $5, updated_at = $6 "
                           "WHERE app_id = $1 AND id = $2 AND secret = $7 RETURNING 1",
                           p, 7, &n);
    *done = rc == 0 && n == 1;
    free(sealed);
    free(old_sealed);
    free(c.stored);
    return rc;
}

int cti_endpoint_rotate(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                        const char *id, const char *secret, int64_t grace_until, int64_t now)
{
    bool done = false;
    int rc = 0;
    for (int i = 0; i < ROTATE_TRIES && rc == 0 && !done; i++)
        rc = rotate_once(db, keys, app_id, id, secret, grace_until, now, &done);
    return rc != 0 ? rc : done ? 0 : CTI_EUNAVAILABLE;
}

/* ---- sealing again with the current key ---------------------------------------------------- */

#define RESEAL_PAGE 100

typedef struct {
    char id[37];
    char *cur, *old; /* stored values, owned */
} stored_t;

typedef struct {
    stored_t rows[RESEAL_PAGE];
    int n;
} reseal_page_t;

static int page_row(const cti_row_t *row, void *ud)
{
    reseal_page_t *pg = ud;
    stored_t *r = &pg->rows[pg->n++];
    copy(r->id, sizeof r->id, cti_row_text(row, 0));
    r->cur = cti_strdup(cti_row_text(row, 1));
    r->old = cti_strdup(cti_row_text(row, 2));
    return 0;
}

/* The value sealed again with the current key (the caller frees it); NULL
 * when it needs nothing or does not open (*unreadable counts it). */
static char *sealed_again(const cti_seal_keys_t *keys, const char *id, bool old,
                          const char *stored, int64_t *unreadable)
{
    char *clear = NULL;
    if (!stored || !cti_seal_needs_reseal(keys, stored))
        return NULL;
    if (open_secret(keys, id, old, stored, &clear) != 0) {
        ++*unreadable;
        return NULL;
    }
    char *sealed = seal_secret(keys, id, old, clear);
    cti_seal_wipe_free(clear);
    return sealed;
}

/* Rewrites one row if it still holds what was read. */
static int reseal_row(cti_db_t *db, const cti_seal_keys_t *keys, const stored_t *r,
                      int64_t *resealed, int64_t *unreadable)
{
    char *cur = sealed_again(keys, r->id, false, r->cur, unreadable);
    char *old = sealed_again(keys, r->id, true, r->old, unreadable);
    int rc = 0;
    if (cur || old) {
        const char *new_cur = cur ? cur : r->cur, *new_old = old ? old : r->old;
        cti_sql_val_t p[] = {CTI_SQL_TEXT(r->id), CTI_SQL_TEXT(new_cur), CTI_SQL_TEXT(new_old),
                             CTI_SQL_TEXT(r->cur), CTI_SQL_TEXT(r->old)};
        int64_t n = 0;
        rc = cti_db_exec_count(db,
                               "UPDATE webhook_endpoints SET secret = $2, old_secret = $3 "
                               "WHERE id = $1 AND secret = $4 AND "
                               "COALESCE(old_secret, '') = COALESCE(CAST($5 AS TEXT), '') "
                               "RETURNING 1",
                               p, 5, &n);
        *resealed += n;
    }
    free(cur);
    free(old);
    return rc;
}

int cti_endpoint_reseal(cti_db_t *db, const cti_seal_keys_t *keys, int64_t *resealed,
                        int64_t *unreadable)
{
    assert(!cti_db_in_tx(db));
    int64_t done = 0, bad = 0;
    reseal_page_t *pg = cti_calloc(1, sizeof *pg);
    char head[CTI_SEAL_KID_LEN + 5], after[37] = "";
    snprintf(head, sizeof head, "v1:%s:", cti_seal_current_kid(keys));
    int rc, n;
    do { /* keyset pages of the rows with a value not sealed with the current key */
        const char *a = after, *k = head;
        cti_sql_val_t p[] = {CTI_SQL_TEXT(a), CTI_SQL_TEXT(k), CTI_SQL_INT(RESEAL_PAGE)};
        pg->n = 0;
        rc = cti_db_exec(db,
                         "SELECT id, secret, old_secret FROM webhook_endpoints WHERE id > $1 "
                         "AND (substr(secret, 1, 12) <> $2 OR "
                         "substr(COALESCE(old_secret, $2), 1, 12) <> $2) ORDER BY id LIMIT $3",
                         p, 3, page_row, pg);
        n = pg->n;
        for (int i = 0; i < n; i++) {
            if (rc >= 0)
                rc = reseal_row(db, keys, &pg->rows[i], &done, &bad);
            cti_seal_wipe_free(pg->rows[i].cur);
            cti_seal_wipe_free(pg->rows[i].old);
        }
        if (n > 0)
            copy(after, sizeof after, pg->rows[n - 1].id);
    } while (rc >= 0 && n == RESEAL_PAGE);
    free(pg);
    if (rc < 0)
        cti_log(CTI_LOG_ERROR, NULL, "cannot seal the webhook endpoint secrets again",
                CTI_LS("error", cti_strerror(rc)), CTI_LS("detail", cti_db_errmsg(db)));
    else if (done || bad)
        cti_log(CTI_LOG_INFO, NULL, "webhook endpoint secrets: sealed with the current key",
                CTI_LI("resealed", done), CTI_LI("unreadable", bad),
                CTI_LS("key_id", cti_seal_current_kid(keys)));
    if (resealed)
        *resealed = done;
    if (unreadable)
        *unreadable = bad;
    return rc < 0 ? rc : 0;
}

/* ---- the sender's -------------------------------------------------------------------------- */

int cti_endpoint_all_enabled(cti_db_t *db, const cti_seal_keys_t *keys, int64_t now,
                             cti_endpoint_fn fn, void *ud)
{
    assert(keys);
    iter_t it = {keys, now, fn, ud};
    int rc = cti_db_exec(db,
                         "SELECT " COLS " FROM webhook_endpoints e JOIN apps a ON a.id = e.app_id "
                         "WHERE e.enabled = 1 AND a.active = 1 ORDER BY e.app_id, e.created_at, e.id",
                         NULL, 0, each_row, &it);
    return rc < 0 ? rc : 0;
}

int cti_endpoint_note_success(cti_db_t *db, const char *id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(id)};
    /* a write only when it was failing: most successes change nothing */
    return cti_db_exec(db,
                       "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND "
                       "failing_since IS NOT NULL",
                       p, 1, NULL, NULL);
}

typedef struct {
    bool found, enabled;
    int64_t since;
    char app_id[37];
} failing_t;

static int failing_row(const cti_row_t *row, void *ud)
{
    failing_t *f = ud;
    f->found = true;
    f->since = cti_row_int(row, 0);
    f->enabled = cti_row_int(row, 1) != 0;
    copy(f->app_id, sizeof f->app_id, cti_row_text(row, 2));
    return 1;
}

/* Disables a failing endpoint with its audit entry; *disabled when this call
 * did (another instance may have first). In the caller's transaction. */
static int disable_failing(cti_db_t *db, const char *id, const failing_t *f, int64_t now,
                           bool *disabled)
{
    char since[CTI_ISO_TIME_LEN], reason[160], detail[200];
    cti_iso_time(f->since, since);
    snprintf(reason, sizeof reason,
             "every delivery attempt failed since %s (OUTBOUND_DISABLE_AFTER); enable it again "
             "once it answers",
             since);
    const char *why = reason;
    cti_sql_val_t p[] = {CTI_SQL_TEXT(id), CTI_SQL_TEXT(why), CTI_SQL_INT(now)};
    int64_t n = 0;
    int rc = cti_db_exec_count(db,
                               "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, "
                               "updated_at = $3 WHERE id = $1 AND enabled = 1 RETURNING 1",
                               p, 3, &n);
    if (rc == 0 && n == 1) {
        snprintf(detail, sizeof detail, "{\"endpoint_id\":\"%s\",\"failing_since\":\"%s\"}", id,
                 since);
        rc = cti_audit_add(db, f->app_id, "system", "webhook_endpoint.disabled", detail, NULL,
                           NULL, now);
        *disabled = rc == 0;
    }
    return rc;
}

static int note_failure_tx(cti_db_t *db, const char *id, int64_t now, int64_t disable_after_ms,
                           bool *disabled)
{
    failing_t f = {false, false, 0, ""};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(id), CTI_SQL_INT(now)};
    int rc = cti_db_exec(db,
                         "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2) "
                         "WHERE id = $1 RETURNING failing_since, enabled, app_id",
                         p, 2, failing_row, &f);
    if (rc < 0 || !f.found)
        return rc < 0 ? rc : CTI_ENOTFOUND;
    if (f.enabled && now - f.since >= disable_after_ms)
        return disable_failing(db, id, &f, now, disabled);
    return 0;
}

int cti_endpoint_note_failure(cti_db_t *db, const char *id, int64_t now, int64_t disable_after_ms,
                              bool *disabled)
{
    *disabled = false;
    if (cti_db_in_tx(db))
        return note_failure_tx(db, id, now, disable_after_ms, disabled);
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = note_failure_tx(db, id, now, disable_after_ms, disabled);
    if (rc == 0 && (rc = cti_db_commit(db)) == 0)
        return 0;
    cti_db_rollback(db);
    *disabled = false;
    return rc;
}
