/*
 * dialpad.c (repo) — Dialpad connections, connect flows and leases (see
 * dialpad.h). Every statement is bounded by its primary key.
 */
#include "repo/dialpad.h"
#include "core/common.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONN_COLUMNS                                                                           \
    "app_id, status, environment, dialpad_user_id, company_id, office_id, scopes, "           \
    "access_token, refresh_token, access_expires_at, token_lifetime_ms, connected_at, "       \
    "refreshed_at, webhook_id, subscriptions, reason, updated_at, reconciled_at, "            \
    "reconcile_error"

void cti_dpconn_row_free(cti_dpconn_row_t *r)
{
    free(r->access_token);
    free(r->refresh_token);
    free(r->subscriptions);
    memset(r, 0, sizeof *r);
}

static char *dup_or_null(const cti_row_t *row, int col)
{
    return cti_row_is_null(row, col) ? NULL : cti_strdup(cti_row_text(row, col));
}

static int64_t int_or_0(const cti_row_t *row, int col)
{
    return cti_row_is_null(row, col) ? 0 : cti_row_int(row, col);
}

/* Fills r from a row of CONN_COLUMNS (r owns copies). */
static void read_row(const cti_row_t *row, cti_dpconn_row_t *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->app_id, sizeof r->app_id, "%s", cti_row_text(row, 0));
    snprintf(r->status, sizeof r->status, "%s", cti_row_text(row, 1));
    snprintf(r->environment, sizeof r->environment, "%s", cti_row_text(row, 2));
    r->dialpad_user_id = int_or_0(row, 3);
    r->company_id = int_or_0(row, 4);
    r->office_id = int_or_0(row, 5);
    snprintf(r->scopes, sizeof r->scopes, "%s", cti_row_text(row, 6));
    r->access_token = cti_strdup(cti_row_text(row, 7));
    r->refresh_token = dup_or_null(row, 8);
    r->access_expires_at = int_or_0(row, 9);
    r->token_lifetime_ms = int_or_0(row, 10);
    r->connected_at = int_or_0(row, 11);
    r->refreshed_at = int_or_0(row, 12);
    r->webhook_id = int_or_0(row, 13);
    r->subscriptions = cti_strdup(cti_row_text(row, 14));
    snprintf(r->reason, sizeof r->reason, "%s", cti_row_is_null(row, 15) ? "" : cti_row_text(row, 15));
    r->updated_at = int_or_0(row, 16);
    r->reconciled_at = int_or_0(row, 17);
    snprintf(r->reconcile_error, sizeof r->reconcile_error, "%s",
             cti_row_is_null(row, 18) ? "" : cti_row_text(row, 18));
}

static int one_row(const cti_row_t *row, void *ud)
{
    read_row(row, ud);
    return 1;
}

int cti_dpconn_get(cti_db_t *db, const char *app_id, cti_dpconn_row_t *out)
{
    memset(out, 0, sizeof *out);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    int rc = cti_db_exec(db, "SELECT " CONN_COLUMNS " FROM dialpad_connections WHERE app_id = $1",
                         p, 1, one_row, out);
    return rc == 1 ? 0 : rc == 0 ? CTI_ENOTFOUND : rc;
}

/* An optional time or id: 0 binds NULL. */
static cti_sql_val_t opt(int64_t v)
{
    return v ? CTI_SQL_INT(v) : CTI_SQL_NULLV;
}

int cti_dpconn_put(cti_db_t *db, const cti_dpconn_row_t *r)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(r->app_id),          CTI_SQL_TEXT(r->status),
                         CTI_SQL_TEXT(r->environment),     opt(r->dialpad_user_id),
                         opt(r->company_id),               opt(r->office_id),
                         CTI_SQL_TEXT(r->scopes),          CTI_SQL_TEXT(r->access_token),
                         CTI_SQL_TEXT(r->refresh_token),   opt(r->access_expires_at),
                         opt(r->token_lifetime_ms),        CTI_SQL_INT(r->connected_at),
                         opt(r->refreshed_at),             opt(r->webhook_id),
                         CTI_SQL_TEXT(r->subscriptions ? r->subscriptions : "[]"),
                         CTI_SQL_TEXT(r->reason[0] ? r->reason : NULL),
                         CTI_SQL_INT(r->updated_at),           opt(r->reconciled_at),
                         CTI_SQL_TEXT(r->reconcile_error[0] ? r->reconcile_error : NULL)};
    return cti_db_exec(
        db,
        "INSERT INTO dialpad_connections (" CONN_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7, "
        "$8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) ON CONFLICT (app_id) DO UPDATE SET "
        "status = excluded.status, environment = excluded.environment, "
        "dialpad_user_id = excluded.dialpad_user_id, company_id = excluded.company_id, "
        "office_id = excluded.office_id, scopes = excluded.scopes, "
        "access_token = excluded.access_token, refresh_token = excluded.refresh_token, "
        "access_expires_at = excluded.access_expires_at, "
        "token_lifetime_ms = excluded.token_lifetime_ms, connected_at = excluded.connected_at, "
        "refreshed_at = excluded.refreshed_at, webhook_id = excluded.webhook_id, "
        "subscriptions = excluded.subscriptions, reason = excluded.reason, "
        "updated_at = excluded.updated_at, reconciled_at = excluded.reconciled_at, "
        "reconcile_error = excluded.reconcile_error",
        p, CTI_ARRAY_LEN(p), NULL, NULL);
}

/* Runs a statement that changes rows RETURNING something: CTI_ENOTFOUND when none. */
static int changed(cti_db_t *db, const char *sql, const cti_sql_val_t *p, int n)
{
    int64_t rows = 0;
    int rc = cti_db_exec_count(db, sql, p, n, &rows);
    return rc != 0 ? rc : rows > 0 ? 0 : CTI_ENOTFOUND;
}

int cti_dpconn_delete(cti_db_t *db, const char *app_id)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id)};
    return changed(db, "DELETE FROM dialpad_connections WHERE app_id = $1 RETURNING app_id", p, 1);
}

int cti_dpconn_set_tokens(cti_db_t *db, const char *app_id, const char *old_access,
                          const char *access, const char *refresh, int64_t expires_at,
                          int64_t lifetime_ms, int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id),  CTI_SQL_TEXT(old_access), CTI_SQL_TEXT(access),
                         CTI_SQL_TEXT(refresh), opt(expires_at),          opt(lifetime_ms),
                         CTI_SQL_INT(now)};
    return changed(db,
                   "UPDATE dialpad_connections SET access_token = $3, "
                   "refresh_token = COALESCE($4, refresh_token), access_expires_at = $5, "
                   "token_lifetime_ms = $6, refreshed_at = $7, updated_at = $7 "
                   "WHERE app_id = $1 AND access_token = $2 RETURNING app_id",
                   p, CTI_ARRAY_LEN(p));
}

int cti_dpconn_set_broken(cti_db_t *db, const char *app_id, const char *reason, int64_t now)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(reason), CTI_SQL_INT(now)};
    return changed(db,
                   "UPDATE dialpad_connections SET status = 'broken', reason = $2, "
                   "updated_at = $3 WHERE app_id = $1 AND status = 'connected' "
                   "RETURNING app_id",
                   p, 3);
}

int cti_dpconn_set_reconciled(cti_db_t *db, const char *app_id, int64_t at, const char *error)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_INT(at), CTI_SQL_TEXT(error)};
    return changed(db,
                   "UPDATE dialpad_connections SET reconciled_at = $2, reconcile_error = $3 "
                   "WHERE app_id = $1 RETURNING app_id",
                   p, 3);
}

typedef struct {
    cti_dpconn_fn fn;
    void *ud;
} each_t;

static int each_row(const cti_row_t *row, void *ud)
{
    each_t *e = ud;
    cti_dpconn_row_t r;
    read_row(row, &r);
    int rc = e->fn(&r, e->ud);
    cti_dpconn_row_free(&r);
    return rc;
}

int cti_dpconn_list_connected(cti_db_t *db, cti_dpconn_fn fn, void *ud)
{
    each_t e = {fn, ud};
    return cti_db_exec(db,
                       "SELECT " CONN_COLUMNS " FROM dialpad_connections WHERE status = "
                       "'connected' ORDER BY app_id",
                       NULL, 0, each_row, &e);
}

int cti_dpconn_list_all(cti_db_t *db, cti_dpconn_fn fn, void *ud)
{
    each_t e = {fn, ud};
    return cti_db_exec(db, "SELECT " CONN_COLUMNS " FROM dialpad_connections ORDER BY app_id",
                       NULL, 0, each_row, &e);
}

int cti_dpconn_reseal(cti_db_t *db, const char *app_id, const char *old_access,
                      const char *old_refresh, const char *access, const char *refresh)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(old_access),
                         CTI_SQL_TEXT(old_refresh ? old_refresh : ""), CTI_SQL_TEXT(access),
                         CTI_SQL_TEXT(refresh)};
    return changed(db,
                   "UPDATE dialpad_connections SET access_token = $4, refresh_token = $5 "
                   "WHERE app_id = $1 AND access_token = $2 AND COALESCE(refresh_token, '') = $3 "
                   "RETURNING app_id",
                   p, CTI_ARRAY_LEN(p));
}

/* ---- connect flows ---- */

int cti_dpflow_create(cti_db_t *db, const char *link_hash, const char *app_id,
                      const char *created_by, int64_t now, int64_t expires_at)
{
    cti_sql_val_t old[] = {CTI_SQL_INT(now - 86400000)};
    int rc = cti_db_exec(db, "DELETE FROM dialpad_connect_flows WHERE link_expires_at < $1", old,
                         1, NULL, NULL);
    cti_sql_val_t p[] = {CTI_SQL_TEXT(link_hash), CTI_SQL_TEXT(app_id), CTI_SQL_TEXT(created_by),
                         CTI_SQL_INT(now), CTI_SQL_INT(expires_at)};
    return rc != 0 ? rc
                   : cti_db_exec(db,
                                 "INSERT INTO dialpad_connect_flows (link_hash, app_id, "
                                 "created_by, created_at, link_expires_at) VALUES ($1, $2, $3, "
                                 "$4, $5)",
                                 p, CTI_ARRAY_LEN(p), NULL, NULL);
}

int cti_dpflow_use_link(cti_db_t *db, const char *link_hash, const char *app_id, int64_t now,
                        const char *state_hash, const char *cookie_hash,
                        const char *verifier_sealed, int64_t state_expires_at)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(link_hash),   CTI_SQL_TEXT(app_id),
                         CTI_SQL_INT(now),          CTI_SQL_TEXT(state_hash),
                         CTI_SQL_TEXT(cookie_hash), CTI_SQL_TEXT(verifier_sealed),
                         CTI_SQL_INT(state_expires_at)};
    return changed(db,
                   "UPDATE dialpad_connect_flows SET link_used_at = $3, state_hash = $4, "
                   "cookie_hash = $5, verifier = $6, state_expires_at = $7 "
                   "WHERE link_hash = $1 AND app_id = $2 AND link_used_at IS NULL "
                   "AND link_expires_at > $3 RETURNING link_hash",
                   p, CTI_ARRAY_LEN(p));
}

typedef struct {
    char *app_id;
    char *verifier;
    size_t cap;
    char *created_by;
} state_out_t;

static int read_state(const cti_row_t *row, void *ud)
{
    state_out_t *o = ud;
    snprintf(o->app_id, 37, "%s", cti_row_text(row, 0));
    snprintf(o->verifier, o->cap, "%s", cti_row_text(row, 1));
    snprintf(o->created_by, 64, "%s", cti_row_text(row, 2));
    return 1;
}

int cti_dpflow_use_state(cti_db_t *db, const char *state_hash, const char *cookie_hash,
                         int64_t now, char app_id[37], char created_by[64],
                         char *verifier_sealed, size_t cap)
{
    state_out_t o = {app_id, verifier_sealed, cap, created_by};
    cti_sql_val_t p[] = {CTI_SQL_TEXT(state_hash), CTI_SQL_TEXT(cookie_hash), CTI_SQL_INT(now)};
    int rc = cti_db_exec(db,
                         "UPDATE dialpad_connect_flows SET state_used_at = $3 "
                         "WHERE state_hash = $1 AND cookie_hash = $2 AND state_used_at IS NULL "
                         "AND state_expires_at > $3 RETURNING app_id, verifier, created_by",
                         p, 3, read_state, &o);
    return rc == 1 ? 0 : rc == 0 ? CTI_ENOTFOUND : rc;
}

/* ---- leases ---- */

int cti_lease_take(cti_db_t *db, const char *name, const char *owner, int64_t now,
                   int64_t ttl_ms)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(name), CTI_SQL_TEXT(owner), CTI_SQL_INT(now + ttl_ms),
                         CTI_SQL_INT(now)};
    int rc = changed(db,
                     "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3) "
                     "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                     "until = excluded.until WHERE leases.until < $4 OR leases.owner = $2 "
                     "RETURNING name",
                     p, CTI_ARRAY_LEN(p));
    return rc == CTI_ENOTFOUND ? CTI_ELIMIT : rc;
}

int cti_lease_release(cti_db_t *db, const char *name, const char *owner)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(name), CTI_SQL_TEXT(owner)};
    return cti_db_exec(db, "DELETE FROM leases WHERE name = $1 AND owner = $2", p, 2, NULL, NULL);
}

int cti_lease_release_prefix(cti_db_t *db, const char *prefix)
{
    cti_sql_val_t p[] = {CTI_SQL_TEXT(prefix)};
    return cti_db_exec(db, "DELETE FROM leases WHERE substr(name, 1, length($1)) = $1", p, 1,
                       NULL, NULL);
}
