/*
 * schema.c — the schema, as numbered migrations applied at start-up by the
 * store's runner (src/store/migrate.c, which knows no table of ours).
 *
 * Append only: a migration that has shipped is never edited; change the
 * schema with a new one. One text serves both backends: it is written in
 * the dialect they share, and where they differ it uses the runner's tokens
 * (@ID@ for an auto-increment primary key, @EACH(col)@ for the elements of a
 * JSON array; see migrate.c). A migration about one kind of backend's
 * storage alone names the capability it needs (`needs`); a backend without
 * it records the migration unrun.
 *
 * Conventions: every tenant-owned table has app_id first in its primary
 * key or main index; times are BIGINT milliseconds since the epoch;
 * booleans are SMALLINT 0/1; Dialpad ids are BIGINT. Every query a request
 * runs finds its rows through an index (docs/ARCHITECTURE.md lists them,
 * tests/store/test_plans.c checks the plans).
 */
#include "repo/schema.h"
#include "core/common.h"

static const cti_migration_t migrations[] = {
    {1, "server metadata",
     "CREATE TABLE server_meta (\n"
     "  key   TEXT PRIMARY KEY,\n"
     "  value TEXT NOT NULL\n"
     ");\n", 0},
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
     "CREATE INDEX user_mappings_by_crm ON user_mappings (app_id, crm_user_id);\n", 0},
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
     "CREATE INDEX audit_log_by_app ON audit_log (app_id, id);\n", 0},
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
     "CREATE INDEX raw_events_dead ON raw_events (app_id, id) WHERE status = 2;\n", 0},
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
     ");\n", 0},
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
     ");\n", 0},
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
     ");\n", 0},
    {8, "indexes for screen pop and the list filters",
     "CREATE INDEX calls_by_internal ON calls (app_id, internal_number, sort_at);\n"
     "CREATE INDEX voicemails_by_number ON voicemails (app_id, external_number, created_at);\n"
     "CREATE INDEX voicemails_by_user ON voicemails (app_id, dialpad_user_id, created_at);\n"
     "CREATE INDEX messages_by_from ON messages (app_id, from_number, created_at);\n"
     "CREATE INDEX messages_by_user ON messages (app_id, dialpad_user_id, created_at);\n", 0},
    {9, "calls keep their rendered call object (doc), so reads copy text",
     /* rows stored before this are filled at start-up by cti_calls_backfill_docs() */
     "ALTER TABLE calls ADD COLUMN doc TEXT;\n"
     "CREATE INDEX calls_without_doc ON calls (app_id) WHERE doc IS NULL;\n", 0},
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
     "  WHERE j.value IS NOT NULL;\n", 0},
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
     CTI_CAP_WITHOUT_ROWID},
    {12, "indexes for linked legs and the dead letters of every app",
     /* /api/calls/{id} finds the legs pointing at a call through these (it
      * scanned the app's calls); partial: most legs point nowhere */
     "CREATE INDEX calls_by_master ON calls (app_id, master_call_id)\n"
     "  WHERE master_call_id IS NOT NULL;\n"
     "CREATE INDEX calls_by_entry_point ON calls (app_id, entry_point_call_id)\n"
     "  WHERE entry_point_call_id IS NOT NULL;\n"
     "CREATE INDEX calls_by_operator ON calls (app_id, operator_call_id)\n"
     "  WHERE operator_call_id IS NOT NULL;\n"
     /* the admin's list across apps, newest first (it walked every raw event) */
     "CREATE INDEX raw_events_dead_all ON raw_events (id) WHERE status = 2;\n",
     0},
    {13, "Dialpad connections (tokens sealed), connect flows (hashes), leases",
     "CREATE TABLE dialpad_connections (\n"
     "  app_id            TEXT PRIMARY KEY REFERENCES apps (id),\n"
     "  status            TEXT NOT NULL,             -- connected | broken\n"
     "  environment       TEXT NOT NULL,             -- sandbox | production\n"
     "  dialpad_user_id   BIGINT,\n"
     "  company_id        BIGINT,\n"
     "  office_id         BIGINT,\n"
     "  scopes            TEXT NOT NULL,\n"
     "  access_token      TEXT NOT NULL,             -- sealed (core/seal.h), never clear\n"
     "  refresh_token     TEXT,                      -- sealed; NULL: Dialpad gave none\n"
     "  access_expires_at BIGINT,                    -- NULL: no lifetime given\n"
     "  token_lifetime_ms BIGINT,\n"
     "  connected_at      BIGINT NOT NULL,\n"
     "  refreshed_at      BIGINT,\n"
     "  webhook_id        BIGINT,\n"
     "  subscriptions     TEXT NOT NULL,             -- JSON [{\"type\", \"id\"}]\n"
     "  reason            TEXT,                      -- why broken\n"
     "  updated_at        BIGINT NOT NULL\n"
     ");\n"
     "CREATE TABLE dialpad_connect_flows (\n"
     "  link_hash        TEXT PRIMARY KEY,           -- SHA-256 (hex) of the link's token\n"
     "  app_id           TEXT NOT NULL REFERENCES apps (id),\n"
     "  created_by       TEXT NOT NULL,\n"
     "  created_at       BIGINT NOT NULL,\n"
     "  link_expires_at  BIGINT NOT NULL,\n"
     "  link_used_at     BIGINT,\n"
     "  state_hash       TEXT UNIQUE,                -- SHA-256 (hex) of the OAuth state\n"
     "  cookie_hash      TEXT,                       -- SHA-256 (hex) of the browser's cookie\n"
     "  verifier         TEXT,                       -- PKCE code_verifier, sealed\n"
     "  state_expires_at BIGINT,\n"
     "  state_used_at    BIGINT\n"
     ");\n"
     "CREATE INDEX dialpad_connect_flows_by_age ON dialpad_connect_flows (link_expires_at);\n"
     "CREATE TABLE leases (\n"
     "  name  TEXT PRIMARY KEY,                      -- e.g. dialpad:<app_id>\n"
     "  owner TEXT NOT NULL,                         -- instance id\n"
     "  until BIGINT NOT NULL\n"
     ");\n",
     0},
    {14, "calls keep Dialpad's custom_data (click-to-dial finds its call by it)",
     /* docs are rendered again (cti_calls_backfill_docs) so every call object
      * has the new member */
     "ALTER TABLE calls ADD COLUMN custom_data TEXT;\n"
     "CREATE INDEX calls_by_custom_data ON calls (app_id, custom_data, sort_at)\n"
     "  WHERE custom_data IS NOT NULL;\n"
     "UPDATE calls SET doc = NULL;\n",
     0},
    {15, "reconciliation: where a timeline row came from, and each connection's last run",
     "ALTER TABLE call_events ADD COLUMN source TEXT;  -- NULL: a webhook; 'reconciled'\n"
     "ALTER TABLE dialpad_connections ADD COLUMN reconciled_at BIGINT;\n"
     "ALTER TABLE dialpad_connections ADD COLUMN reconcile_error TEXT;\n",
     0},
    {16, "retention: timeline rows by age, for the purger (repo/retention.c)",
     /* raw_events and event_log are purged in their primary keys' order (ids
      * and seqs grow with time); a timeline's key starts with the call, so
      * its old rows are found through this */
     "CREATE INDEX call_events_by_age ON call_events (received_at);\n",
     0},
    {17, "outbound webhooks: customers' endpoints (secrets sealed) and deliveries",
     /* a delivery row is written in the transaction that appends its event
      * (repo/deliveries.c); the sender (outbound/sender.c) leases due ones */
     "CREATE TABLE webhook_endpoints (\n"
     "  id                    TEXT PRIMARY KEY,      -- UUID\n"
     "  app_id                TEXT NOT NULL REFERENCES apps (id),\n"
     "  url                   TEXT NOT NULL,\n"
     "  description           TEXT,\n"
     "  types                 TEXT,                  -- space-separated patterns; NULL: all\n"
     "  secret                TEXT NOT NULL,         -- sealed whsec_...\n"
     "  old_secret            TEXT,                  -- sealed; signs too until it expires\n"
     "  old_secret_expires_at BIGINT,\n"
     "  enabled               SMALLINT NOT NULL DEFAULT 1,\n"
     "  disabled_reason       TEXT,\n"
     "  failing_since         BIGINT,                -- first failure since the last success\n"
     "  created_at            BIGINT NOT NULL,\n"
     "  updated_at            BIGINT NOT NULL\n"
     ");\n"
     "CREATE INDEX webhook_endpoints_by_app ON webhook_endpoints (app_id, created_at);\n"
     "CREATE TABLE webhook_deliveries (\n"
     "  id               @ID@,\n"
     "  endpoint_id      TEXT NOT NULL,\n"
     "  app_id           TEXT NOT NULL,\n"
     "  seq              BIGINT NOT NULL,              -- the event (event_log's app_id, seq)\n"
     "  event            TEXT NOT NULL,\n"
     "  call_id          BIGINT,                       -- a call's events go in seq order\n"
     "  status           SMALLINT NOT NULL DEFAULT 0,  -- 0 pending, 1 succeeded, 2 failed\n"
     "  attempts         INTEGER NOT NULL DEFAULT 0,\n"
     "  next_attempt_at  BIGINT NOT NULL,\n"
     "  lease_until      BIGINT NOT NULL DEFAULT 0,    -- an instance is sending it until then\n"
     "  last_attempt_at  BIGINT,\n"
     "  last_status_code INTEGER,\n"
     "  last_error       TEXT,\n"
     "  created_at       BIGINT NOT NULL\n"
     ");\n"
     "CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);\n"
     "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)\n"
     "  WHERE status = 0;\n"
     "CREATE INDEX webhook_deliveries_call ON webhook_deliveries (endpoint_id, call_id, seq)\n"
     "  WHERE status = 0;\n"
     "CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (created_at);\n",
     0},
};

int cti_store_migration_count(void)
{
    return (int)CTI_ARRAY_LEN(migrations);
}

int cti_store_migrate(cti_store_t *st)
{
    return cti_store_apply_migrations(st, migrations, (int)CTI_ARRAY_LEN(migrations));
}
