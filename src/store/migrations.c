/*
 * migrations.c — the schema, as numbered migrations applied at start-up.
 *
 * Append only: a migration that has shipped is never edited; change the
 * schema with a new one. Each runs in its own transaction together with
 * its row in schema_migrations, so a crash leaves it applied or not.
 * One text serves both backends: the dialects differ only in identity
 * columns, written @ID@ and expanded per backend. A migration about one
 * backend's storage alone names it in `only`; the other records it unrun.
 *
 * Conventions: every tenant-owned table has app_id first in its primary
 * key or main index; times are BIGINT milliseconds since the epoch;
 * booleans are SMALLINT 0/1; Dialpad ids are BIGINT.
 */
#include "store/backend.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int version;
    const char *name;
    const char *sql; /* both backends; @ID@ stands for an auto-increment primary key */
    const char *only; /* NULL, or the one backend that runs sql (the other records it) */
} migration_t;

/* The dialects differ in identity columns and in reading a JSON array: the
 * tokens below become this backend's words. */
static char *for_backend(const char *sql, bool pg)
{
    const struct {
        const char *token, *sqlite, *pg;
    } words[] = {
        {"@ID@", "INTEGER PRIMARY KEY AUTOINCREMENT",
         "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
        /* @EACH(col)@: a row j(value) per element of the JSON array in col */
        {"@EACH(", "json_each(", "jsonb_array_elements_text(("},
        {")@", ") AS j", ")::jsonb) AS j(value)"},
    };
    size_t cap = 2 * strlen(sql) + 256, n = 0;
    char *out = cti_malloc(cap);
    for (const char *p = sql; *p;) {
        size_t i = 0;
        while (i < CTI_ARRAY_LEN(words) && strncmp(p, words[i].token, strlen(words[i].token)))
            i++;
        if (i < CTI_ARRAY_LEN(words)) {
            n += (size_t)snprintf(out + n, cap - n, "%s", pg ? words[i].pg : words[i].sqlite);
            p += strlen(words[i].token);
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

static const migration_t migrations[] = {
    {1, "server metadata",
     "CREATE TABLE server_meta (\n"
     "  key   TEXT PRIMARY KEY,\n"
     "  value TEXT NOT NULL\n"
     ");\n", NULL},
    {2, "tenants: apps, api keys, webhook secrets, audit log, user mappings",
     "CREATE TABLE apps (\n"
     "  id             TEXT PRIMARY KEY,              -- UUID\n"
     "  name           TEXT NOT NULL,\n"
     "  active         SMALLINT NOT NULL DEFAULT 1,\n"
     "  allow_unsigned SMALLINT NOT NULL DEFAULT 0,\n"
     "  created_at     BIGINT NOT NULL,\n"
     "  updated_at     BIGINT NOT NULL\n"
     ");\n"
     "CREATE TABLE api_keys (\n"
     "  key_id       TEXT PRIMARY KEY,                -- public part of the key\n"
     "  app_id       TEXT NOT NULL REFERENCES apps (id),\n"
     "  hash         TEXT NOT NULL,                   -- bcrypt ($2b$) of the secret part\n"
     "  hint         TEXT NOT NULL,                   -- last 4 characters, to tell keys apart\n"
     "  created_at   BIGINT NOT NULL,\n"
     "  last_used_at BIGINT,\n"
     "  expires_at   BIGINT,                          -- end of grace after a rotation\n"
     "  revoked_at   BIGINT\n"
     ");\n"
     "CREATE INDEX api_keys_by_app ON api_keys (app_id, created_at);\n"
     "CREATE TABLE webhook_secrets (\n"
     "  app_id     TEXT NOT NULL REFERENCES apps (id),\n"
     "  secret_id  TEXT NOT NULL,\n"
     "  secret     TEXT NOT NULL,\n"
     "  created_at BIGINT NOT NULL,\n"
     "  expires_at BIGINT,                            -- NULL: current; else end of grace\n"
     "  PRIMARY KEY (app_id, secret_id)\n"
     ");\n"
     "CREATE TABLE user_mappings (\n"
     "  app_id          TEXT NOT NULL REFERENCES apps (id),\n"
     "  dialpad_user_id BIGINT NOT NULL,\n"
     "  crm_user_id     TEXT NOT NULL,\n"
     "  created_at      BIGINT NOT NULL,\n"
     "  updated_at      BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, dialpad_user_id)\n"
     ");\n"
     "CREATE INDEX user_mappings_by_crm ON user_mappings (app_id, crm_user_id);\n", NULL},
    {3, "audit log",
     "CREATE TABLE audit_log (\n"
     "  id          @ID@,\n"
     "  app_id      TEXT,                             -- NULL: not about one app\n"
     "  at          BIGINT NOT NULL,\n"
     "  actor       TEXT NOT NULL,                    -- admin, key:<key_id>, anonymous\n"
     "  action      TEXT NOT NULL,                    -- app.created, key.revoked, ...\n"
     "  detail      TEXT,                             -- JSON object, never a secret\n"
     "  client_addr TEXT,\n"
     "  request_id  TEXT\n"
     ");\n"
     "CREATE INDEX audit_log_by_app ON audit_log (app_id, id);\n", NULL},
    {4, "raw events: every verified webhook, durably, deduplicated",
     "CREATE TABLE raw_events (\n"
     "  id              @ID@,\n"
     "  app_id          TEXT NOT NULL,\n"
     "  dedupe_key      TEXT NOT NULL,\n"
     "  kind            TEXT NOT NULL,\n"
     "  payload         TEXT NOT NULL,           -- the event exactly as verified\n"
     "  received_at     BIGINT NOT NULL,\n"
     "  status          SMALLINT NOT NULL DEFAULT 0, -- 0 pending, 1 applied, 2 dead letter\n"
     "  attempts        INTEGER NOT NULL DEFAULT 0,\n"
     "  next_attempt_at BIGINT NOT NULL DEFAULT 0,\n"
     "  error           TEXT\n"
     ");\n"
     "CREATE UNIQUE INDEX raw_events_dedupe ON raw_events (app_id, dedupe_key);\n"
     "CREATE INDEX raw_events_pending ON raw_events (id) WHERE status = 0;\n"
     "CREATE INDEX raw_events_dead ON raw_events (app_id, id) WHERE status = 2;\n", NULL},
    {5, "calls and their timelines",
     "CREATE TABLE calls (\n"
     "  app_id              TEXT NOT NULL,\n"
     "  call_id             BIGINT NOT NULL,\n"
     "  direction           TEXT,\n"
     "  state               TEXT,\n"
     "  status              TEXT NOT NULL,\n"
     "  outcome             TEXT,\n"
     "  external_number     TEXT,\n"
     "  internal_number     TEXT,\n"
     "  contact             TEXT,              -- JSON object, ids as strings\n"
     "  target              TEXT,              -- JSON object, ids as strings\n"
     "  dialpad_user_id     BIGINT,\n"
     "  master_call_id      BIGINT,\n"
     "  entry_point_call_id BIGINT,\n"
     "  operator_call_id    BIGINT,\n"
     "  is_transferred      SMALLINT,\n"
     "  started_at          BIGINT,\n"
     "  connected_at        BIGINT,\n"
     "  ended_at            BIGINT,\n"
     "  duration_ms         BIGINT,\n"
     "  total_duration_ms   BIGINT,\n"
     "  talk_time_ms        BIGINT,\n"
     "  hold_time_ms        BIGINT,\n"
     "  recording_urls      TEXT NOT NULL,     -- JSON array\n"
     "  vm_url              TEXT,\n"
     "  vm_transcript       TEXT,\n"
     "  vm_recording_id     BIGINT,\n"
     "  vm_duration_ms      BIGINT,\n"
     "  progress_ts         BIGINT NOT NULL,   -- model bookkeeping (see src/model/call.c)\n"
     "  fields_ts           BIGINT NOT NULL,\n"
     "  fields_state        TEXT NOT NULL,\n"
     "  active_ts           BIGINT NOT NULL,\n"
     "  active_state        TEXT NOT NULL,\n"
     "  flags               INTEGER NOT NULL,\n"
     "  sort_at             BIGINT NOT NULL,   -- started_at, else the first event's time: list order\n"
     "  created_at          BIGINT NOT NULL,\n"
     "  updated_at          BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, call_id)\n"
     ");\n"
     "CREATE INDEX calls_recent ON calls (app_id, sort_at, call_id);\n"
     "CREATE INDEX calls_by_status ON calls (app_id, status, sort_at);\n"
     "CREATE INDEX calls_by_user ON calls (app_id, dialpad_user_id, sort_at);\n"
     "CREATE INDEX calls_by_external ON calls (app_id, external_number, sort_at);\n"
     "CREATE TABLE call_events (\n"
     "  app_id          TEXT NOT NULL,\n"
     "  call_id         BIGINT NOT NULL,\n"
     "  event_timestamp BIGINT NOT NULL,\n"
     "  state           TEXT NOT NULL,\n"
     "  received_at     BIGINT NOT NULL,\n"
     "  late            SMALLINT NOT NULL,\n"
     "  raw_event_id    BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, call_id, event_timestamp, state)\n"
     ");\n", NULL},
    {6, "the per-app event log and its sequence",
     "CREATE TABLE app_seq (\n"
     "  app_id   TEXT PRIMARY KEY,\n"
     "  last_seq BIGINT NOT NULL\n"
     ");\n"
     "CREATE TABLE event_log (\n"
     "  app_id      TEXT NOT NULL,\n"
     "  seq         BIGINT NOT NULL,\n"
     "  event       TEXT NOT NULL,\n"
     "  call_id     BIGINT,\n"
     "  created_at  BIGINT NOT NULL,\n"
     "  body        TEXT NOT NULL,             -- the event object as clients receive it\n"
     "  PRIMARY KEY (app_id, seq)\n"
     ");\n", NULL},
    {7, "voicemails, messages, agent status",
     "CREATE TABLE voicemails (\n"
     "  app_id          TEXT NOT NULL,\n"
     "  call_id         BIGINT NOT NULL,\n"
     "  url             TEXT,\n"
     "  recording_id    BIGINT,\n"
     "  transcript      TEXT,\n"
     "  duration_ms     BIGINT,\n"
     "  external_number TEXT,\n"
     "  dialpad_user_id BIGINT,\n"
     "  created_at      BIGINT NOT NULL,\n"
     "  updated_at      BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, call_id)\n"
     ");\n"
     "CREATE INDEX voicemails_recent ON voicemails (app_id, created_at);\n"
     "CREATE TABLE messages (\n"
     "  app_id          TEXT NOT NULL,\n"
     "  message_id      BIGINT NOT NULL,\n"
     "  direction       TEXT,\n"
     "  from_number     TEXT,\n"
     "  to_numbers      TEXT NOT NULL,         -- JSON array\n"
     "  text            TEXT,\n"
     "  status          TEXT,\n"
     "  dialpad_user_id BIGINT,\n"
     "  contact         TEXT,                  -- JSON object\n"
     "  target          TEXT,                  -- JSON object\n"
     "  latest_ts       BIGINT NOT NULL,       -- newest event applied\n"
     "  created_at      BIGINT NOT NULL,\n"
     "  updated_at      BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, message_id)\n"
     ");\n"
     "CREATE INDEX messages_recent ON messages (app_id, created_at);\n"
     "CREATE TABLE agent_status (\n"
     "  app_id          TEXT NOT NULL,\n"
     "  target_id       BIGINT NOT NULL,\n"
     "  event_timestamp BIGINT NOT NULL,\n"
     "  body            TEXT NOT NULL,         -- the event's fields, JSON\n"
     "  received_at     BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, target_id, event_timestamp)\n"
     ");\n", NULL},
    {8, "indexes for screen pop and the list filters",
     "CREATE INDEX calls_by_internal ON calls (app_id, internal_number, sort_at);\n"
     "CREATE INDEX voicemails_by_number ON voicemails (app_id, external_number, created_at);\n"
     "CREATE INDEX voicemails_by_user ON voicemails (app_id, dialpad_user_id, created_at);\n"
     "CREATE INDEX messages_by_from ON messages (app_id, from_number, created_at);\n"
     "CREATE INDEX messages_by_user ON messages (app_id, dialpad_user_id, created_at);\n", NULL},
    {9, "calls keep their rendered call object (doc), so reads copy text",
     /* rows stored before this are filled at start-up by cti_calls_backfill_docs() */
     "ALTER TABLE calls ADD COLUMN doc TEXT;\n"
     "CREATE INDEX calls_without_doc ON calls (app_id) WHERE doc IS NULL;\n", NULL},
    {10, "every number of a message, so screen pop and ?number= find them by index",
     "CREATE TABLE message_numbers (\n"
     "  app_id     TEXT NOT NULL,\n"
     "  number     TEXT NOT NULL,\n"
     "  message_id BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, number, message_id)\n"
     ");\n"
     "INSERT INTO message_numbers (app_id, number, message_id)\n"
     "  SELECT app_id, from_number, message_id FROM messages WHERE from_number IS NOT NULL\n"
     "  UNION\n"
     "  SELECT m.app_id, j.value, m.message_id FROM messages m, @EACH(m.to_numbers)@\n"
     "  WHERE j.value IS NOT NULL;\n", NULL},
    {11, "SQLite: a call's timeline in one b-tree (WITHOUT ROWID) instead of a table and its index",
     /* every event inserted into two b-trees became one; PostgreSQL has no rowid */
     "CREATE TABLE call_events_new (\n"
     "  app_id          TEXT NOT NULL,\n"
     "  call_id         BIGINT NOT NULL,\n"
     "  event_timestamp BIGINT NOT NULL,\n"
     "  state           TEXT NOT NULL,\n"
     "  received_at     BIGINT NOT NULL,\n"
     "  late            SMALLINT NOT NULL,\n"
     "  raw_event_id    BIGINT NOT NULL,\n"
     "  PRIMARY KEY (app_id, call_id, event_timestamp, state)\n"
     ") WITHOUT ROWID;\n"
     "INSERT INTO call_events_new SELECT app_id, call_id, event_timestamp, state, received_at,\n"
     "  late, raw_event_id FROM call_events;\n"
     "DROP TABLE call_events;\n"
     "ALTER TABLE call_events_new RENAME TO call_events;\n",
     "sqlite"},
};

int cti_store_migration_count(void)
{
    return (int)CTI_ARRAY_LEN(migrations);
}

static int note_version(const cti_row_t *row, void *ud)
{
    bool *applied = ud;
    int64_t v = cti_row_int(row, 0);
    if (v >= 1 && v <= (int64_t)CTI_ARRAY_LEN(migrations))
        applied[v - 1] = true;
    return 0;
}

static int apply(cti_db_t *db, const migration_t *m)
{
    char *sql = for_backend(m->sql, strcmp(db->st->be->name, "postgres") == 0);
    int rc = cti_db_begin(db);
    if (rc != 0) {
        free(sql);
        return rc;
    }
    cti_sql_val_t p[] = {CTI_SQL_INT(m->version), CTI_SQL_TEXT(m->name),
                         CTI_SQL_INT(cti_now_ms())};
    bool skip = m->only && strcmp(db->st->be->name, m->only) != 0;
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
                CTI_LS("name", m->name));
    return rc;
}

int cti_store_migrate(cti_store_t *st)
{
    cti_db_t *db = cti_store_db(st);
    const cti_backend_t *be = st->be;
    int rc = be->lock_migrations ? be->lock_migrations(db) : 0;
    if (rc != 0)
        return rc;
    bool applied[CTI_ARRAY_LEN(migrations)] = {false};
    rc = cti_db_script(db, "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                           "  version    INTEGER PRIMARY KEY,\n"
                           "  name       TEXT NOT NULL,\n"
                           "  applied_at BIGINT NOT NULL\n"
                           ")");
    if (rc == 0)
        rc = cti_db_exec(db, "SELECT version FROM schema_migrations", NULL, 0, note_version,
                         applied);
    for (size_t i = 0; rc == 0 && i < CTI_ARRAY_LEN(migrations); i++) {
        if (migrations[i].version != (int)i + 1)
            cti_fatal("migrations must be numbered 1, 2, 3...: %d at %zu", migrations[i].version,
                      i);
        if (!applied[i])
            rc = apply(db, &migrations[i]);
    }
    if (be->unlock_migrations)
        be->unlock_migrations(db);
    return rc;
}
