/*
 * tenants.c — SQL for apps, keys, webhook secrets, audit log and mappings.
 * Written once for both backends (see store.h). Row readers copy into the
 * caller's structs; nothing here knows HTTP or JSON formats.
 */
#include "repo/tenants.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static int64_t opt_int(const cti_row_t *row, int col)
{
    return cti_row_is_null(row, col) ? 0 : cti_row_int(row, col);
}

static cti_sql_val_t opt_time(int64_t v)
{
    return v ? CTI_SQL_INT(v) : CTI_SQL_NULLV;
}

/* ---- apps ------------------------------------------------------------------------- */

#define APP_COLS "id, name, active, allow_unsigned, created_at, updated_at"

static void read_app(const cti_row_t *row, cti_app_t *a)
{
    copy(a->id, sizeof a->id, cti_row_text(row, 0));
    copy(a->name, sizeof a->name, cti_row_text(row, 1));
    a->active = cti_row_int(row, 2) != 0;
    a->allow_unsigned = cti_row_int(row, 3) != 0;
    a->created_at = cti_row_int(row, 4);
    a->updated_at = cti_row_int(row, 5);
}

static int one_app(const cti_row_t *row, void *ud)
{
    read_app(row, ud);
    return 1;
}

int cti_apps_insert(cti_db_t *db, const cti_app_t *a)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(a->id), CTI_SQL_TEXT(a->name), CTI_SQL_BOOL(a->active),
                         CTI_SQL_BOOL(a->allow_unsigned), CTI_SQL_INT(a->created_at),
                         CTI_SQL_INT(a->updated_at)};
    return cti_db_exec(db, "INSERT INTO apps (" APP_COLS ") VALUES ($1, $2, $3, $4, $5, $6)", p,
                       6, NULL, NULL);
}

int cti_apps_get(cti_db_t *db, const char *id, cti_app_t *out)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(id)};
    int rc = cti_db_exec(db, "SELECT " APP_COLS " FROM apps WHERE id = $1", p, 1, one_app, out);
    return rc < 0 ? rc : rc == 1 ? 0 : CTI_ENOTFOUND;
}

int cti_apps_update(cti_db_t *db, const cti_app_t *a)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(a->id), CTI_SQL_TEXT(a->name), CTI_SQL_BOOL(a->active),
                         CTI_SQL_BOOL(a->allow_unsigned), CTI_SQL_INT(a->updated_at)};
    return cti_db_exec(db,
                       "UPDATE apps SET name = $2, active = $3, allow_unsigned = $4, "
                       "updated_at = $5 WHERE id = $1",
                       p, 5, NULL, NULL);
}

typedef struct {
    cti_app_fn fn;
    void *ud;
} app_iter_t;

static int each_app(const cti_row_t *row, void *ud)
{
    app_iter_t *it = ud;
    cti_app_t a;
    read_app(row, &a);
    return it->fn(&a, it->ud);
}

int cti_apps_list(cti_db_t *db, int64_t after_created, const char *after_id, int limit,
                  cti_app_fn fn, void *ud)
{
    app_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_INT(after_created), CTI_SQL_TEXT(after_id), CTI_SQL_INT(limit)};
    return cti_db_exec(db,
                       "SELECT " APP_COLS " FROM apps WHERE created_at > $1 OR "
                       "(created_at = $1 AND id > $2) ORDER BY created_at, id LIMIT $3",
                       p, 3, each_app, &it);
}

typedef struct {
    int64_t n;
    char *id;
} count_t;

static int count_row(const cti_row_t *row, void *ud)
{
    count_t *c = ud;
    if (c->n++ == 0)
        copy(c->id, 37, cti_row_text(row, 0));
    return c->n > 1 ? 1 : 0;
}

int cti_apps_count_active(cti_db_t *db, int64_t *n, char only_id[37])
{
    count_t c = {0, only_id};
    only_id[0] = '\0';
    int rc = cti_db_exec(db, "SELECT id FROM apps WHERE active = 1 LIMIT 2", NULL, 0, count_row,
                         &c);
    if (rc < 0)
        return rc;
    if (c.n != 1)
        only_id[0] = '\0';
    *n = c.n;
    return 0;
}

/* ---- API keys ------------------------------------------------------------------------ */

#define KEY_COLS "k.key_id, k.app_id, k.hash, k.hint, k.created_at, k.last_used_at, " \
                 "k.expires_at, k.revoked_at"

static void read_key(const cti_row_t *row, cti_key_t *k)
{
    copy(k->key_id, sizeof k->key_id, cti_row_text(row, 0));
    copy(k->app_id, sizeof k->app_id, cti_row_text(row, 1));
    copy(k->hash, sizeof k->hash, cti_row_text(row, 2));
    copy(k->hint, sizeof k->hint, cti_row_text(row, 3));
    k->created_at = cti_row_int(row, 4);
    k->last_used_at = opt_int(row, 5);
    k->expires_at = opt_int(row, 6);
    k->revoked_at = opt_int(row, 7);
    k->app_active = cti_row_columns(row) > 8 && cti_row_int(row, 8) != 0;
}

static int one_key(const cti_row_t *row, void *ud)
{
    read_key(row, ud);
    return 1;
}

int cti_keys_insert(cti_db_t *db, const cti_key_t *k)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(k->key_id), CTI_SQL_TEXT(k->app_id), CTI_SQL_TEXT(k->hash),
                         CTI_SQL_TEXT(k->hint), CTI_SQL_INT(k->created_at),
                         opt_time(k->expires_at)};
    return cti_db_exec(db,
                       "INSERT INTO api_keys (key_id, app_id, hash, hint, created_at, expires_at) "
                       "VALUES ($1, $2, $3, $4, $5, $6)",
                       p, 6, NULL, NULL);
}

int cti_keys_get(cti_db_t *db, const char *key_id, cti_key_t *out)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(key_id)};
    int rc = cti_db_exec(db,
                         "SELECT " KEY_COLS ", a.active FROM api_keys k "
                         "JOIN apps a ON a.id = k.app_id WHERE k.key_id = $1",
                         p, 1, one_key, out);
    return rc < 0 ? rc : rc == 1 ? 0 : CTI_ENOTFOUND;
}

typedef struct {
    cti_key_fn fn;
    void *ud;
} key_iter_t;

static int each_key(const cti_row_t *row, void *ud)
{
    key_iter_t *it = ud;
    cti_key_t k;
    read_key(row, &k);
    return it->fn(&k, it->ud);
}

int cti_keys_list(cti_db_t *db, const char *app_id, cti_key_fn fn, void *ud)
{
    key_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    return cti_db_exec(db,
                       "SELECT " KEY_COLS " FROM api_keys k WHERE k.app_id = $1 "
                       "ORDER BY k.created_at DESC, k.key_id DESC",
                       p, 1, each_key, &it);
}

int cti_keys_get_many(cti_db_t *db, const char *const *key_ids, int n, cti_key_fn fn, void *ud)
{
    key_iter_t it = {fn, ud};
    cti_sql_val_t *list = cti_malloc((size_t)(n ? n : 1) * sizeof *list);
    for (int i = 0; i < n; i++)
        list[i] = CTI_SQL_TEXT(key_ids[i]);
    int rc = n ? cti_db_exec_in(db, "SELECT " KEY_COLS ", a.active FROM api_keys k "
                                    "JOIN apps a ON a.id = k.app_id WHERE k.key_id IN",
                                "", NULL, 0, list, n, each_key, &it)
               : 0;
    free(list);
    return rc < 0 ? rc : 0;
}

int cti_keys_expire_others(cti_db_t *db, const char *app_id, const char *except_key_id,
                           int64_t expires_at)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(except_key_id),
                         CTI_SQL_INT(expires_at)};
    return cti_db_exec(db,
                       "UPDATE api_keys SET expires_at = $3 WHERE app_id = $1 AND key_id <> $2 "
                       "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
                       p, 3, NULL, NULL);
}

int cti_keys_revoke(cti_db_t *db, const char *app_id, const char *key_id, int64_t now,
                    int64_t *count)
{
    *count = 0;
    if (key_id) {
        cti_key_t k;
        int rc = cti_keys_get(db, key_id, &k);
        if (rc == CTI_ENOTFOUND || (rc == 0 && strcmp(k.app_id, app_id) != 0))
            return CTI_ENOTFOUND;
        if (rc != 0)
            return rc;
    }
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(now), CTI_SQL_TEXT(key_id)};
    return cti_db_exec_count(db,
                             "UPDATE api_keys SET revoked_at = $2 WHERE app_id = $1 "
                             "AND revoked_at IS NULL AND (CAST($3 AS TEXT) IS NULL OR key_id = $3) "
                             "RETURNING key_id",
                             p, 3, count);
}

int cti_keys_touch(cti_db_t *db, const char *key_id, int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(key_id), CTI_SQL_INT(now)};
    return cti_db_exec(db, "UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1", p, 2, NULL,
                       NULL);
}

/* ---- webhook secrets ----------------------------------------------------------------- */

#define SECRET_AD_MAX (36 + 16 + 64 + 1) /* "<app_id>:webhook_secret:<secret_id>" */
#define RESEAL_PAGE   100

/* The associated data that binds a sealed secret to its row. */
static void secret_ad(const char *app_id, const char *secret_id, char ad[SECRET_AD_MAX])
{
    snprintf(ad, SECRET_AD_MAX, "%s:webhook_secret:%s", app_id, secret_id);
}

/* A value written by a version that stored secrets in clear: those were
 * base64url, and every sealed value ("v1:<kid>:...") holds a colon. */
static bool stored_in_clear(const char *stored)
{
    return strchr(stored, ':') == NULL;
}

/* Opens one stored secret: 0 and *out (the caller wipes and frees it with
 * cti_seal_wipe_free), or the cti_seal_open error, logged once per row and
 * value (never the value). A legacy clear value is returned as it is. */
static int open_secret(const cti_seal_keys_t *keys, const char *app_id, const char *secret_id,
                       const char *stored, char **out)
{
    char ad[SECRET_AD_MAX];
    secret_ad(app_id, secret_id, ad);
    *out = NULL;
    if (stored_in_clear(stored)) {
        if (cti_seal_first_notice(ad, stored))
            cti_log(CTI_LOG_WARN, NULL,
                    "webhook secret stored in clear (written by an older version); it is sealed "
                    "at the next start",
                    CTI_LS("app_id", app_id), CTI_LS("secret_id", secret_id));
        *out = cti_strdup(stored);
        return 0;
    }
    int rc = cti_seal_open(keys, stored, ad, out, NULL);
    if (rc != 0 && cti_seal_first_notice(ad, stored)) {
        char kid[CTI_SEAL_KID_LEN + 1] = ""; /* only a well-formed one: nothing else is logged */
        if (strncmp(stored, "v1:", 3) == 0 && strspn(stored + 3, "0123456789abcdef") == 8 &&
            stored[3 + CTI_SEAL_KID_LEN] == ':')
            snprintf(kid, sizeof kid, "%.*s", CTI_SEAL_KID_LEN, stored + 3);
        cti_log(CTI_LOG_ERROR, NULL,
                "webhook secret cannot be decrypted: webhooks signed with it are answered 503 "
                "until the key that sealed it is in TOKEN_ENCRYPTION_KEY(_OLD) or the secret "
                "is rotated",
                CTI_LS("app_id", app_id), CTI_LS("secret_id", secret_id),
                CTI_LS("sealed_with_kid", kid[0] ? kid : NULL),
                CTI_LS("current_kid", cti_seal_current_kid(keys)), CTI_LS("why", cti_seal_open_error(rc)));
    }
    return rc;
}

int cti_secrets_insert(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id,
                       const char *secret_id, const char *secret, int64_t now)
{
    char ad[SECRET_AD_MAX];
    secret_ad(app_id, secret_id, ad);
    char *sealed = cti_seal(keys, secret, strlen(secret), ad);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(secret_id), CTI_SQL_TEXT(sealed),
                         CTI_SQL_INT(now)};
    int rc = cti_db_exec(db,
                         "INSERT INTO webhook_secrets (app_id, secret_id, secret, created_at) "
                         "VALUES ($1, $2, $3, $4)",
                         p, 4, NULL, NULL);
    free(sealed);
    return rc;
}

int cti_secrets_expire_current(cti_db_t *db, const char *app_id, int64_t expires_at)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(expires_at)};
    return cti_db_exec(db,
                       "UPDATE webhook_secrets SET expires_at = $2 WHERE app_id = $1 AND "
                       "(expires_at IS NULL OR expires_at > $2)",
                       p, 2, NULL, NULL);
}

/* One stored secret row as read (stored: owned). */
typedef struct {
    char app_id[37];
    char secret_id[65];
    char *stored;
} stored_secret_t;

static void read_stored(const cti_row_t *row, stored_secret_t *r)
{
    copy(r->app_id, sizeof r->app_id, cti_row_text(row, 0));
    copy(r->secret_id, sizeof r->secret_id, cti_row_text(row, 1));
    r->stored = cti_strdup(cti_row_text(row, 2) ? cti_row_text(row, 2) : "");
}

static int one_stored(const cti_row_t *row, void *ud)
{
    read_stored(row, ud);
    return 1;
}

int cti_secrets_current(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, char *out,
                        size_t cap)
{
    stored_secret_t r = {.stored = NULL};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    int rc = cti_db_exec(db,
                         "SELECT app_id, secret_id, secret FROM webhook_secrets WHERE app_id = $1 "
                         "AND expires_at IS NULL ORDER BY created_at DESC LIMIT 1",
                         p, 1, one_stored, &r);
    char *secret = NULL;
    if (rc == 0)
        rc = CTI_ENOTFOUND;
    else if (rc == 1 && (rc = open_secret(keys, r.app_id, r.secret_id, r.stored, &secret)) != 0)
        rc = CTI_EAUTH;
    if (secret && strlen(secret) >= cap)
        rc = CTI_ELIMIT;
    if (rc == 0)
        snprintf(out, cap, "%s", secret);
    cti_seal_wipe_free(secret);
    cti_seal_wipe_free(r.stored); /* a legacy value is clear */
    return rc;
}

typedef struct {
    const cti_seal_keys_t *keys;
    cti_secret_fn fn;
    void *ud;
} secret_iter_t;

static int each_secret(const cti_row_t *row, void *ud)
{
    secret_iter_t *it = ud;
    stored_secret_t r;
    read_stored(row, &r);
    char *secret = NULL;
    open_secret(it->keys, r.app_id, r.secret_id, r.stored, &secret); /* NULL: unusable */
    int rc = it->fn(r.app_id, secret, it->ud);
    cti_seal_wipe_free(secret);
    cti_seal_wipe_free(r.stored);
    return rc;
}

int cti_secrets_valid(cti_db_t *db, const cti_seal_keys_t *keys, const char *app_id, int64_t now,
                      cti_secret_fn fn, void *ud)
{
    secret_iter_t it = {keys, fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(now)};
    return cti_db_exec(db,
                       "SELECT s.app_id, s.secret_id, s.secret FROM webhook_secrets s JOIN apps a "
                       "ON a.id = s.app_id WHERE a.active = 1 AND (CAST($1 AS TEXT) IS NULL OR "
                       "s.app_id = $1) AND (s.expires_at IS NULL OR s.expires_at > $2) "
                       "ORDER BY s.app_id, s.expires_at IS NOT NULL, s.created_at DESC",
                       p, 2, each_secret, &it);
}

/* ---- re-sealing at start-up ---- */

typedef struct {
    stored_secret_t rows[RESEAL_PAGE];
    int n;
} reseal_page_t;

static int page_row(const cti_row_t *row, void *ud)
{
    reseal_page_t *pg = ud;
    read_stored(row, &pg->rows[pg->n++]);
    return 0;
}

/* The row's value sealed with the current key (the caller frees it), or NULL
 * when it does not open (counted; logged by open_secret). */
static char *sealed_again(const cti_seal_keys_t *keys, const stored_secret_t *r,
                          cti_reseal_counts_t *c)
{
    char *secret = NULL, ad[SECRET_AD_MAX];
    if (stored_in_clear(r->stored)) /* sealed now: no warning that it will be */
        secret = cti_strdup(r->stored);
    else if (open_secret(keys, r->app_id, r->secret_id, r->stored, &secret) != 0) {
        c->unreadable++;
        return NULL;
    }
    secret_ad(r->app_id, r->secret_id, ad);
    char *sealed = cti_seal(keys, secret, strlen(secret), ad);
    cti_seal_wipe_free(secret);
    return sealed;
}

/* Rewrites the page's rows that need it, in one transaction; each only if it
 * still holds the value read (another instance may have sealed it first). */
static int reseal_rows(cti_db_t *db, const cti_seal_keys_t *keys, reseal_page_t *pg,
                       cti_reseal_counts_t *c)
{
    int rc = cti_db_begin(db);
    for (int i = 0; i < pg->n && rc == 0; i++) {
        const stored_secret_t *r = &pg->rows[i];
        bool clear = stored_in_clear(r->stored);
        char *sealed = sealed_again(keys, r, c);
        if (!sealed)
            continue;
        cti_sql_val_t p[] = {CTI_SQL_TEXT(r->app_id), CTI_SQL_TEXT(r->secret_id),
                             CTI_SQL_TEXT(sealed), CTI_SQL_TEXT(r->stored)};
        int64_t changed = 0;
        rc = cti_db_exec_count(db,
                               "UPDATE webhook_secrets SET secret = $3 WHERE app_id = $1 AND "
                               "secret_id = $2 AND secret = $4 RETURNING 1",
                               p, 4, &changed);
        free(sealed);
        *(clear ? &c->sealed : &c->resealed) += changed;
    }
    if (rc == 0)
        rc = cti_db_commit(db);
    else
        cti_db_rollback(db);
    return rc;
}

static void free_page(reseal_page_t *pg)
{
    for (int i = 0; i < pg->n; i++)
        cti_seal_wipe_free(pg->rows[i].stored);
    pg->n = 0;
}

int cti_secrets_reseal(cti_db_t *db, const cti_seal_keys_t *keys, cti_reseal_counts_t *counts)
{
    assert(!cti_db_in_tx(db)); /* its pages are transactions of their own */
    cti_reseal_counts_t c = {0, 0, 0};
    reseal_page_t *pg = cti_calloc(1, sizeof *pg);
    char current[CTI_SEAL_KID_LEN + 5], after_app[37] = "", after_id[65] = "";
    snprintf(current, sizeof current, "v1:%s:", cti_seal_current_kid(keys));
    int rc, n;
    do { /* keyset pages of the rows not sealed with the current key */
        const char *a = after_app, *b = after_id, *k = current;
        cti_sql_val_t p[] = {CTI_SQL_TEXT(a), CTI_SQL_TEXT(b), CTI_SQL_TEXT(k),
                             CTI_SQL_INT(RESEAL_PAGE)};
        rc = cti_db_exec(db,
                         "SELECT app_id, secret_id, secret FROM webhook_secrets WHERE "
                         "(app_id > $1 OR (app_id = $1 AND secret_id > $2)) AND "
                         "substr(secret, 1, 12) <> $3 ORDER BY app_id, secret_id LIMIT $4",
                         p, 4, page_row, pg);
        n = pg->n;
        if (rc >= 0 && n > 0) {
            copy(after_app, sizeof after_app, pg->rows[n - 1].app_id);
            copy(after_id, sizeof after_id, pg->rows[n - 1].secret_id);
            rc = reseal_rows(db, keys, pg, &c);
        }
        free_page(pg);
    } while (rc >= 0 && n == RESEAL_PAGE);
    free(pg);
    int64_t left = 0; /* what still needs an old key (or none opens): 0 = old keys can go */
    const char *k = current;
    cti_sql_val_t q[] = {CTI_SQL_TEXT(k)};
    if (rc >= 0)
        rc = cti_db_query_int(db,
                              "SELECT COUNT(*) FROM webhook_secrets WHERE "
                              "substr(secret, 1, 12) <> $1",
                              q, 1, &left);
    if (rc < 0)
        cti_log(CTI_LOG_ERROR, NULL, "cannot seal the webhook secrets at rest",
                CTI_LS("error", cti_strerror(rc)), CTI_LS("detail", cti_db_errmsg(db)));
    else
        cti_log(CTI_LOG_INFO, NULL, "webhook secrets at rest: sealed with the current key",
                CTI_LI("sealed_from_clear", c.sealed), CTI_LI("resealed_from_old_key", c.resealed),
                CTI_LI("unreadable", c.unreadable), CTI_LI("not_with_current_key", left),
                CTI_LS("key_id", cti_seal_current_kid(keys)));
    if (counts)
        *counts = c;
    return rc < 0 ? rc : 0;
}

/* ---- audit log ------------------------------------------------------------------------ */

int cti_audit_add(cti_db_t *db, const char *app_id, const char *actor, const char *action,
                  const char *detail_json, const char *client_addr, const char *request_id,
                  int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id),      CTI_SQL_INT(now),
                         CTI_SQL_TEXT(actor),       CTI_SQL_TEXT(action),
                         CTI_SQL_TEXT(detail_json), CTI_SQL_TEXT(client_addr),
                         CTI_SQL_TEXT(request_id)};
    return cti_db_exec(db,
                       "INSERT INTO audit_log (app_id, at, actor, action, detail, client_addr, "
                       "request_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                       p, 7, NULL, NULL);
}

typedef struct {
    cti_audit_fn fn;
    void *ud;
} audit_iter_t;

static int each_audit(const cti_row_t *row, void *ud)
{
    audit_iter_t *it = ud;
    cti_audit_t a;
    a.id = cti_row_int(row, 0);
    copy(a.app_id, sizeof a.app_id, cti_row_text(row, 1));
    a.at = cti_row_int(row, 2);
    copy(a.actor, sizeof a.actor, cti_row_text(row, 3));
    copy(a.action, sizeof a.action, cti_row_text(row, 4));
    a.detail = cti_row_text(row, 5);
    copy(a.client_addr, sizeof a.client_addr, cti_row_text(row, 6));
    copy(a.request_id, sizeof a.request_id, cti_row_text(row, 7));
    return it->fn(&a, it->ud);
}

int cti_audit_list(cti_db_t *db, const char *app_id, int64_t before_id, int limit,
                   cti_audit_fn fn, void *ud)
{
    audit_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(before_id ? before_id : INT64_MAX),
                         CTI_SQL_INT(limit)};
    return cti_db_exec(db,
                       "SELECT id, app_id, at, actor, action, detail, client_addr, request_id "
                       "FROM audit_log WHERE app_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                       p, 3, each_audit, &it);
}

/* ---- user mappings -------------------------------------------------------------------- */

static void read_mapping(const cti_row_t *row, cti_mapping_t *m)
{
    copy(m->app_id, sizeof m->app_id, cti_row_text(row, 0));
    m->dialpad_user_id = cti_row_int(row, 1);
    copy(m->crm_user_id, sizeof m->crm_user_id, cti_row_text(row, 2));
    m->created_at = cti_row_int(row, 3);
    m->updated_at = cti_row_int(row, 4);
}

static int one_mapping(const cti_row_t *row, void *ud)
{
    read_mapping(row, ud);
    return 1;
}

int cti_mappings_put(cti_db_t *db, const char *app_id, int64_t dialpad_user_id,
                     const char *crm_user_id, int64_t now, bool *created)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(dialpad_user_id),
                         CTI_SQL_TEXT(crm_user_id), CTI_SQL_INT(now)};
    int64_t existing = 0;
    int rc = cti_db_query_int(db,
                              "SELECT COUNT(*) FROM user_mappings WHERE app_id = $1 AND "
                              "dialpad_user_id = $2",
                              p, 2, &existing);
    if (rc == 0)
        rc = cti_db_exec(db,
                         "INSERT INTO user_mappings (app_id, dialpad_user_id, crm_user_id, "
                         "created_at, updated_at) VALUES ($1, $2, $3, $4, $4) "
                         "ON CONFLICT (app_id, dialpad_user_id) DO UPDATE SET "
                         "crm_user_id = excluded.crm_user_id, updated_at = excluded.updated_at",
                         p, 4, NULL, NULL);
    if (rc == 0 && created)
        *created = existing == 0;
    return rc;
}

int cti_mappings_get(cti_db_t *db, const char *app_id, int64_t dialpad_user_id,
                     cti_mapping_t *out)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(dialpad_user_id)};
    int rc = cti_db_exec(db,
                         "SELECT app_id, dialpad_user_id, crm_user_id, created_at, updated_at "
                         "FROM user_mappings WHERE app_id = $1 AND dialpad_user_id = $2",
                         p, 2, one_mapping, out);
    return rc < 0 ? rc : rc == 1 ? 0 : CTI_ENOTFOUND;
}

int cti_mappings_find_crm(cti_db_t *db, const char *app_id, const char *crm_user_id,
                          cti_mapping_t *out)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(crm_user_id)};
    int rc = cti_db_exec(db,
                         "SELECT app_id, dialpad_user_id, crm_user_id, created_at, updated_at "
                         "FROM user_mappings WHERE app_id = $1 AND crm_user_id = $2 "
                         "ORDER BY updated_at DESC, dialpad_user_id LIMIT 1",
                         p, 2, one_mapping, out);
    return rc < 0 ? rc : rc == 1 ? 0 : CTI_ENOTFOUND;
}

int cti_mappings_delete(cti_db_t *db, const char *app_id, int64_t dialpad_user_id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(dialpad_user_id)};
    int64_t n = 0;
    int rc = cti_db_exec_count(db,
                               "DELETE FROM user_mappings WHERE app_id = $1 AND "
                               "dialpad_user_id = $2 RETURNING 1",
                               p, 2, &n);
    return rc != 0 ? rc : n ? 0 : CTI_ENOTFOUND;
}

typedef struct {
    cti_mapping_fn fn;
    void *ud;
} mapping_iter_t;

static int each_mapping(const cti_row_t *row, void *ud)
{
    mapping_iter_t *it = ud;
    cti_mapping_t m;
    read_mapping(row, &m);
    return it->fn(&m, it->ud);
}

int cti_mappings_list(cti_db_t *db, const char *app_id, int64_t after_id, int limit,
                      cti_mapping_fn fn, void *ud)
{
    mapping_iter_t it = {fn, ud};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(after_id), CTI_SQL_INT(limit)};
    return cti_db_exec(db,
                       "SELECT app_id, dialpad_user_id, crm_user_id, created_at, updated_at "
                       "FROM user_mappings WHERE app_id = $1 AND dialpad_user_id > $2 "
                       "ORDER BY dialpad_user_id LIMIT $3",
                       p, 3, each_mapping, &it);
}
