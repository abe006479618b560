/*
 * migrate.c — the migration runner: applies a list of numbered schema
 * changes (cti_migration_t), each once, in its own transaction together with
 * its row in schema_migrations, so a crash leaves it applied or not. It
 * knows no table but schema_migrations: the list is the domain's
 * (src/repo/schema.c). The dialects differ in a few words, which the list
 * writes as tokens and each backend's table spells (backend.h):
 *
 *   @ID@          an auto-increment BIGINT primary key
 *   @EACH(col)@   a row j(value) per element of the JSON array in col
 *
 * Main thread, at start-up (cti_store_apply_migrations).
 */
#include "store/backend.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends len bytes of s to *out (length *n, capacity *cap), growing it. */
static void append(char **out, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (*n + len + 1 > *cap) {
        while (*n + len + 1 > *cap)
            *cap *= 2;
        *out = cti_realloc(*out, *cap);
    }
    memcpy(*out + *n, s, len);
    *n += len;
    (*out)[*n] = '\0';
}

/* sql with the tokens spelled as be's dialect does. Caller frees. */
static char *for_backend(const char *sql, const cti_backend_t *be)
{
    const struct {
        const char *token, *word;
    } words[] = {
        {"@ID@", be->identity_pk},
        {"@EACH(", be->each_open},
        {")@", be->each_close},
    };
    size_t cap = strlen(sql) + 64, n = 0;
    char *out = cti_malloc(cap);
    out[0] = '\0';
    for (const char *p = sql; *p;) {
        size_t i = 0;
        while (i < CTI_ARRAY_LEN(words) && strncmp(p, words[i].token, strlen(words[i].token)))
            i++;
        if (i < CTI_ARRAY_LEN(words)) {
            append(&out, &n, &cap, words[i].word, strlen(words[i].word));
            p += strlen(words[i].token);
        } else {
            append(&out, &n, &cap, p++, 1);
        }
    }
    return out;
}

typedef struct {
    bool *done; /* done[v - 1]: version v is recorded */
    int n;
} applied_t;

static int note_version(const cti_row_t *row, void *ud)
{
    applied_t *a = ud;
    int64_t v = cti_row_int(row, 0);
    if (v >= 1 && v <= a->n)
        a->done[v - 1] = true;
    return 0;
}

static int apply(cti_db_t *db, const cti_migration_t *m)
{
    char *sql = for_backend(m->sql, db->st->be);
    int rc = cti_db_begin(db);
    if (rc != 0) {
        free(sql);
        return rc;
    }
    cti_sql_val_t p[] = {CTI_SQL_INT(m->version), CTI_SQL_TEXT(m->name), CTI_SQL_INT(cti_now_ms())};
    bool skip = m->needs && !cti_store_has(db->st, (cti_cap_t)m->needs);
    if ((!skip && (rc = cti_db_script(db, sql)) != 0) ||
        (rc = cti_db_exec(db,
                          "INSERT INTO schema_migrations (version, name, applied_at) "
                          "VALUES ($1, $2, $3)",
                          p, 3, NULL, NULL)) != 0) {
        cti_log(CTI_LOG_ERROR, NULL, "store: migration failed", CTI_LI("version", m->version),
                CTI_LS("name", m->name), CTI_LS("error", cti_db_errmsg(db)));
        cti_db_rollback(db);
        free(sql);
        return rc;
    }
    free(sql);
    if ((rc = cti_db_commit(db)) == 0)
        cti_log(CTI_LOG_INFO, NULL, "store: migration applied", CTI_LI("version", m->version),
                CTI_LS("name", m->name), CTI_LB("ran", !skip)); /* false: not for this backend */
    return rc;
}

int cti_store_apply_migrations(cti_store_t *st, const cti_migration_t *list, int n)
{
    assert(n >= 0);
    for (int i = 0; i < n; i++)
        if (list[i].version != i + 1)
            cti_fatal("migrations must be numbered 1, 2, 3...: %d at %d", list[i].version, i);
    cti_db_t *db = cti_store_db(st);
    const cti_backend_t *be = st->be;
    /* a migration may rewrite a large table, and the lock waits for another
     * instance's migrations: no statement timeout here (start-up only) */
    int saved_timeout = db->timeout_ms;
    db->timeout_ms = -1;
    int rc = be->lock_migrations ? be->lock_migrations(db) : 0;
    if (rc != 0) {
        db->timeout_ms = saved_timeout;
        return rc;
    }
    applied_t applied = {cti_calloc((size_t)n + 1, sizeof(bool)), n};
    rc = cti_db_script(db, "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                           "  version    INTEGER PRIMARY KEY,\n"
                           "  name       TEXT NOT NULL,\n"
                           "  applied_at BIGINT NOT NULL\n"
                           ")");
    if (rc == 0)
        rc = cti_db_exec(db, "SELECT version FROM schema_migrations", NULL, 0, note_version,
                         &applied);
    for (int i = 0; rc == 0 && i < n; i++)
        if (!applied.done[i])
            rc = apply(db, &list[i]);
    free(applied.done);
    if (be->unlock_migrations)
        be->unlock_migrations(db);
    db->timeout_ms = saved_timeout;
    return rc;
}
