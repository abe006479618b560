/*
 * test_plans.c — every query a request runs finds its rows through an index,
 * on both backends: each repo function a request path calls is run with a
 * statement trace (cti_db_trace), and the plan of each statement it ran is
 * read back (SQLite: EXPLAIN QUERY PLAN; PostgreSQL: the generic plan of
 * the prepared statement, as the server runs it after a few executions,
 * with enable_seqscan off so any Seq Scan means no index could serve it).
 * Tests assert that no big table is scanned whole and, where it matters,
 * which index (and on SQLite which key columns) a statement uses. SQLite
 * plans without statistics (as the server runs it), so its choices are
 * pinned exactly; PostgreSQL chooses by statistics (2,000 legs and 4,000 log
 * rows here, and what the other files left), so there the tests pin that an
 * index can serve each statement and name it only where no other index
 * could (the log's key, the link indexes, the dead letters of every app).
 *
 * CTI_PLANS_VERBOSE=1 prints every plan.
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
#include "repo/calls.h"
#include "repo/deliveries.h"
#include "repo/events.h"
#include "repo/records.h"
#include "repo/tenants.h"

#define MAX_STMTS  8
#define MAX_PARAMS 32

typedef struct {
    char *sql;
    cti_sql_val_t p[MAX_PARAMS];
    char *texts[MAX_PARAMS];
    int n;
} stmt_t;

static stmt_t stmts[MAX_STMTS];
static int nstmts;
static char plan[16384];
static cti_db_t *explainer; /* a connection of its own: no trace, planner settings */

static void forget(void)
{
    for (int i = 0; i < nstmts; i++) {
        free(stmts[i].sql);
        for (int k = 0; k < stmts[i].n; k++)
            free(stmts[i].texts[k]);
    }
    nstmts = 0;
}

static void trace(const char *sql, const cti_sql_val_t *p, int n, void *ud)
{
    if (nstmts == MAX_STMTS || strncmp(sql, "SELECT", 6) != 0)
        return; /* request paths read; BEGIN/COMMIT have no plan */
    stmt_t *s = &stmts[nstmts++];
    assert_true(n <= MAX_PARAMS);
    s->sql = cti_strdup(sql);
    s->n = n;
    for (int i = 0; i < n; i++) {
        s->p[i] = p[i];
        s->texts[i] = p[i].type == CTI_SQL_TEXT ? cti_strdup(p[i].s) : NULL;
        if (s->texts[i])
            s->p[i].s = s->texts[i];
    }
}

static int add_line(const cti_row_t *row, void *ud)
{
    size_t len = strlen(plan);
    const char *line = cti_row_text(row, cti_row_columns(row) - 1); /* SQLite: detail */
    snprintf(plan + len, sizeof plan - len, "%s\n", line ? line : "");
    return 0;
}

/* PostgreSQL: the parameters as literals for EXECUTE. */
static void literals(const stmt_t *s, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < s->n; i++) {
        const cti_sql_val_t *v = &s->p[i];
        len += (size_t)snprintf(out + len, cap - len, "%s", i ? ", " : "");
        if (v->type == CTI_SQL_INT)
            len += (size_t)snprintf(out + len, cap - len, "%lld", (long long)v->i);
        else if (v->type == CTI_SQL_REAL)
            len += (size_t)snprintf(out + len, cap - len, "%.17g", v->d);
        else if (v->type == CTI_SQL_NULL)
            len += (size_t)snprintf(out + len, cap - len, "NULL");
        else {
            len += (size_t)snprintf(out + len, cap - len, "'");
            for (const char *c = v->s; *c && len + 3 < cap; c++) {
                if (*c == '\'')
                    out[len++] = '\'';
                out[len++] = *c;
            }
            len += (size_t)snprintf(out + len, cap - len, "'");
        }
    }
}

/* The plans of every statement captured, one line per plan node. */
static const char *explain(void)
{
    plan[0] = '\0';
    for (int i = 0; i < nstmts; i++) {
        const stmt_t *s = &stmts[i];
        size_t len = strlen(plan);
        snprintf(plan + len, sizeof plan - len, "-- %s\n", s->sql);
        int rc;
        if (is_pg) {
            size_t cap = strlen(s->sql) + 64;
            char *prep = cti_malloc(cap);
            snprintf(prep, cap, "PREPARE plan_q AS %s", s->sql);
            rc = cti_db_script(explainer, prep);
            free(prep);
            if (rc != 0)
                fail_msg("PREPARE %s: %s", s->sql, cti_db_errmsg(explainer));
            char lits[4096], sql[4200];
            literals(s, lits, sizeof lits);
            snprintf(sql, sizeof sql,
                     s->n ? "EXPLAIN EXECUTE plan_q(%s)" : "EXPLAIN EXECUTE plan_q%s", lits);
            rc = cti_db_exec(explainer, sql, NULL, 0, add_line, NULL);
            assert_int_equal(cti_db_script(explainer, "DEALLOCATE plan_q"), 0);
        } else {
            size_t cap = strlen(s->sql) + 32;
            char *sql = cti_malloc(cap);
            snprintf(sql, cap, "EXPLAIN QUERY PLAN %s", s->sql);
            rc = cti_db_exec(explainer, sql, s->p, s->n, add_line, NULL);
            free(sql);
        }
        if (rc < 0)
            fail_msg("EXPLAIN %s: %s", s->sql, cti_db_errmsg(explainer));
    }
    if (getenv("CTI_PLANS_VERBOSE"))
        fprintf(stderr, "%s\n", plan);
    return plan;
}

static void capture_on(void)
{
    forget();
    cti_db_trace(cti_store_db(store), trace, NULL);
}

static const char *capture_off(void)
{
    cti_db_trace(cti_store_db(store), NULL, NULL);
    assert_true(nstmts > 0);
    return explain();
}

/* Runs call (an expression returning >= 0 on success) with the trace on and
 * leaves the plans of what it ran in `plan`. */
#define PLAN_OF(call)                                                                              \
    do {                                                                                           \
        capture_on();                                                                              \
        int rc_ = (call);                                                                          \
        if (rc_ < 0)                                                                               \
            fail_msg("%s: %d", #call, rc_);                                                        \
        capture_off();                                                                             \
    } while (0)

static const char *big_tables[] = {"calls",           "call_events",   "event_log",
                                   "raw_events",      "voicemails",    "messages",
                                   "message_numbers", "user_mappings", "audit_log",
                                   "webhook_deliveries"};

/* No statement reads a big table whole: no Seq Scan (PostgreSQL), no SCAN of
 * the table or an index of it without a key (SQLite). */
static void no_full_scan(void)
{
    char needle[64];
    for (size_t t = 0; t < CTI_ARRAY_LEN(big_tables); t++) {
        for (const char *line = plan; *line;) {
            const char *end = strchr(line, '\n');
            size_t len = end ? (size_t)(end - line) : strlen(line);
            char buf[1024];
            snprintf(buf, sizeof buf, "%.*s", (int)len, line);
            if (strncmp(buf, "-- ", 3) != 0) {
                if (is_pg)
                    snprintf(needle, sizeof needle, "Seq Scan on %s ", big_tables[t]);
                else
                    snprintf(needle, sizeof needle, "SCAN %s", big_tables[t]);
                if (is_pg)
                    strcat(buf, " ");
                const char *hit = strstr(buf, needle);
                /* SQLite aliases: "SCAN c" for calls */
                if (!is_pg && !hit && !strcmp(big_tables[t], "calls"))
                    hit = strstr(buf, "SCAN c ");
                if (!is_pg && hit) {
                    char after = hit[strlen(needle)];
                    if (after != '\0' && after != ' ')
                        hit = NULL; /* SCAN calls_x...: another name */
                }
                if (hit)
                    fail_msg("full scan of %s:\n%s", big_tables[t], plan);
            }
            line = end ? end + 1 : line + len;
        }
    }
}

/* The plan names this text (an index, or on SQLite "index (key=?...)"). */
static void uses(const char *sqlite_text, const char *pg_text)
{
    const char *want = is_pg ? pg_text : sqlite_text;
    if (want && !strstr(plan, want))
        fail_msg("expected \"%s\" in the plan:\n%s", want, plan);
}

static void lacks(const char *sqlite_text, const char *pg_text)
{
    const char *bad = is_pg ? pg_text : sqlite_text;
    if (bad && strstr(plan, bad))
        fail_msg("did not expect \"%s\" in the plan:\n%s", bad, plan);
}

/* ---- data: enough rows that a planner with statistics prefers what it should --------- */

static const char *APP = "app-plans";

static int ignore_doc(const cti_calldoc_t *d, void *ud)
{
    return 0;
}
static int ignore_call(const cti_call_t *c, const char *crm, int64_t at, void *ud)
{
    return 0;
}
static int ignore_step(const char *s, int64_t ts, int64_t rx, bool late, bool rec, void *ud)
{
    return 0;
}
static int ignore_log(int64_t seq, const char *body, void *ud)
{
    return 0;
}
static int ignore_vm(const cti_voicemail_t *v, void *ud)
{
    return 0;
}
static int ignore_msg(const cti_message_row_t *m, void *ud)
{
    return 0;
}
static int ignore_dead(const cti_dead_t *d, void *ud)
{
    return 0;
}
static int ignore_mapping(const cti_mapping_t *m, void *ud)
{
    return 0;
}
static int ignore_audit(const cti_audit_t *a, void *ud)
{
    return 0;
}
static int ignore_key(const cti_key_t *k, void *ud)
{
    return 0;
}
static int ignore_crm(const char *app_id, int64_t id, const char *crm, void *ud)
{
    return 0;
}

static int plans_setup(void **state)
{
    if (store_setup(state) != 0)
        return -1;
    if (cti_store_connect(store, &explainer) != 0)
        return -1;
    if (is_pg && (cti_db_script(explainer, "SET enable_seqscan = off") != 0 ||
                  cti_db_script(explainer, "SET plan_cache_mode = force_generic_plan") != 0))
        return -1;
    /* 2,000 legs (1 in 100 live, 1 in 100 dialled, 1 in 4 linked to a master), 4,000 log rows */
    cti_db_t *db = cti_store_db(store);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "DELETE FROM calls WHERE app_id = '%s'; "
             "DELETE FROM event_log WHERE app_id = '%s'",
             APP, APP);
    if (cti_db_script(db, sql) != 0)
        return -1;
    snprintf(sql, sizeof sql,
             "INSERT INTO calls (app_id, call_id, direction, state, status, external_number, "
             "internal_number, contact, target, dialpad_user_id, master_call_id, recording_urls, "
             "progress_ts, fields_ts, fields_state, active_ts, active_state, flags, sort_at, "
             "created_at, updated_at, custom_data, doc) "
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
             "SELECT '%s', i, 'inbound', 'hangup', CASE WHEN i %% 100 = 0 THEN 'active' ELSE "
             "'ended' END, '+1415555' || (i %% 500), '+1650555' || (i %% 20), '{}', '{}', i %% 50, "
             "CASE WHEN i %% 4 = 0 THEN i - 1 END, '[]', i, i, 'hangup', i, 'hangup', 0, i * 1000, "
             "i, i, CASE WHEN i %% 100 = 0 THEN 'dial_' || i END, '{}' FROM n",
             APP);
    if (cti_db_script(db, sql) != 0)
        return -1;
    snprintf(sql, sizeof sql,
             "INSERT INTO event_log (app_id, seq, event, call_id, created_at, body) "
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) "
             "SELECT '%s', i, 'call.ringing', i / 2, i, '{}' FROM n",
             APP);
    if (cti_db_script(db, sql) != 0)
        return -1;
    if (is_pg)
        return cti_db_script(db, "ANALYZE");
    return 0;
}

static int plans_teardown(void **state)
{
    forget();
    cti_db_close(explainer);
    return store_teardown(state);
}

/* ---- /api/events and /ws: the log's bounds, then rows after since ---------------------- */

static void test_event_log_bounds_are_two_index_lookups(void **state)
{
    int64_t oldest, newest;
    PLAN_OF(cti_eventlog_bounds(cti_store_db(store), APP, &oldest, &newest));
    assert_int_equal(oldest, 1);
    assert_int_equal(newest, 4000);
    no_full_scan();
    /* one ordered lookup from each end, not an aggregate over the app's rows */
    lacks("MIN(", "Aggregate");
    uses("SCALAR SUBQUERY 2", "Index Only Scan Backward using event_log_pkey");
}

static void test_event_log_since_is_a_key_range(void **state)
{
    PLAN_OF(cti_eventlog_since(cti_store_db(store), APP, 3990, 100, ignore_log, NULL));
    no_full_scan();
    uses("event_log USING INDEX sqlite_autoindex_event_log_1 (app_id=? AND seq>?)",
         "event_log_pkey");
}

/* ---- /api/calls --------------------------------------------------------------------------- */

static void calls_plan(const cti_call_filter_t *f)
{
    PLAN_OF(cti_calls_query(cti_store_db(store), APP, f, 50, ignore_doc, NULL));
    no_full_scan();
}

static void test_calls_list_newest_first(void **state)
{
    cti_call_filter_t f = {0};
    calls_plan(&f);
    uses("USING INDEX calls_recent (app_id=?)", NULL);
    /* a page deep in the history starts at its cursor: the key range bounds sort_at
     * (on PostgreSQL too, where an OR alone was only a filter: the walk went through
     * every newer leg first, 17 ms at 20k legs, growing with the data; make bench-scale) */
    f.has_cursor = true, f.cursor_at = 500000, f.cursor_id = 500;
    calls_plan(&f);
    uses("USING INDEX calls_recent (app_id=? AND sort_at<?)", "Index Cond: ((app_id = $1) AND (sort_at <= $2))");
    f = (cti_call_filter_t){.from = 1000, .to = 9000};
    calls_plan(&f);
    uses("USING INDEX calls_recent (app_id=? AND sort_at>? AND sort_at<?)", NULL);
}

static void test_calls_active_finds_live_legs_by_status(void **state)
{
    cti_call_filter_t f = {.active_only = true};
    calls_plan(&f);
    uses("USING INDEX calls_by_status (app_id=? AND status=?)", NULL);
    f = (cti_call_filter_t){.status = "ringing"};
    calls_plan(&f);
    uses("USING INDEX calls_by_status (app_id=? AND status=?)", NULL);
}

static void test_calls_by_user_number_crm(void **state)
{
    cti_call_filter_t f = {.dialpad_user_id = 7};
    calls_plan(&f);
    uses("USING INDEX calls_by_user (app_id=? AND dialpad_user_id=?)", NULL);
    f = (cti_call_filter_t){.number = "+14155557"};
    calls_plan(&f);
    uses("calls_by_external (app_id=? AND external_number=?)", NULL);
    uses("calls_by_internal (app_id=? AND internal_number=?)", NULL);
    f = (cti_call_filter_t){.number = "+14155557", .active_only = true}; /* screen pop */
    calls_plan(&f);
    uses("calls_by_external (app_id=? AND external_number=?)", NULL);
    /* a CRM user mapped to one Dialpad user: that user's legs newest first, not all of
     * them sorted (83 ms for an agent's ~5,000 legs in 1 M; make bench-scale) */
    bool created;
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO apps (id, name, created_at, updated_at) VALUES ('%s', 'plans', 1, 1) "
             "ON CONFLICT (id) DO NOTHING",
             APP);
    assert_int_equal(cti_db_script(cti_store_db(store), sql), 0);
    assert_int_equal(cti_mappings_put(cti_store_db(store), APP, 9, "crm-9", 1000, &created), 0);
    f = (cti_call_filter_t){.crm_user_id = "crm-9"};
    calls_plan(&f);
    uses("user_mappings_by_crm (app_id=? AND crm_user_id=?)", NULL);
    uses("USING INDEX calls_by_user (app_id=? AND dialpad_user_id=?)", NULL);
    lacks("USE TEMP B-TREE FOR ORDER BY", NULL);
    /* the call a click-to-dial started: through its own index, never a walk of the
     * recency index (one custom_data matching nothing read every leg: 239 ms at 1 M) */
    f = (cti_call_filter_t){.custom_data = "dial_7"};
    calls_plan(&f);
    uses("calls_by_custom_data (app_id=? AND custom_data=?)", NULL);
    lacks("calls_recent", NULL);
}

/* Filters no index serves (state, outcome, direction, root_only) walk the
 * recency index of the app, newest first, until the page is full. */
static void test_calls_other_filters_walk_the_recency_index(void **state)
{
    cti_call_filter_t f = {
        .state = "hangup", .outcome = "missed", .direction = "inbound", .root_only = true};
    calls_plan(&f);
    uses("USING INDEX calls_recent (app_id=?)", NULL);
}

/* The same filters as the API runs them, with a bound on the walk: the legs are
 * tested in a subquery that the outer query pulls newest first and stops
 * pulling with the page full — never read whole into a temporary table and
 * sorted (that read all max legs for every page, 37 ms for 10,000 here), and
 * never joined back to calls (another lookup per leg). A short page then finds
 * the walk's last leg through the index alone. */
static void test_calls_bounded_walk_stops_with_the_page(void **state)
{
    cti_call_filter_t f = {.outcome = "voicemail", .direction = "outbound", .root_only = true};
    cti_call_walk_t walk = {.max = 500};
    PLAN_OF(cti_calls_query_walk(cti_store_db(store), APP, &f, 50, &walk, ignore_doc, NULL));
    no_full_scan();
    uses("CO-ROUTINE", "Subquery Scan on w");
    uses("SEARCH c USING INDEX calls_recent (app_id=?)", "calls_recent");
    lacks("USE TEMP B-TREE", "Sort");
    lacks("MATERIALIZE", "Materialize");
    lacks("sqlite_autoindex_calls_1", "calls_pkey");
    /* the short page's second statement: the index alone */
    uses("SEARCH c USING COVERING INDEX calls_recent (app_id=?)", "Index Only Scan Backward using calls_recent");
    /* one user's legs: that user's index, the same way */
    f.dialpad_user_id = 7;
    PLAN_OF(cti_calls_query_walk(cti_store_db(store), APP, &f, 50, &walk, ignore_doc, NULL));
    no_full_scan();
    uses("USING INDEX calls_by_user (app_id=? AND dialpad_user_id=?)", NULL);
    lacks("USE TEMP B-TREE FOR ORDER BY", NULL); /* ties of one sort_at only, as they come */
    lacks("MATERIALIZE", "Materialize");
}

/* ---- /api/calls/{id}: the leg, the legs linked to it, its timeline ------------------------- */

static void test_call_by_id_and_its_linked_legs(void **state)
{
    cti_db_t *db = cti_store_db(store);
    PLAN_OF(cti_calls_get(db, APP, 1000, ignore_call, NULL));
    no_full_scan();
    uses("sqlite_autoindex_calls_1 (app_id=? AND call_id=?)", NULL);
    cti_call_t c;
    cti_call_init(&c, 1000);
    c.master_call_id = 999;
    PLAN_OF(cti_calls_linked(db, APP, &c, ignore_doc, NULL));
    cti_call_clear(&c);
    no_full_scan();
    uses("calls_by_master (app_id=? AND master_call_id=?)", "calls_by_master");
    uses("calls_by_entry_point (app_id=? AND entry_point_call_id=?)", "calls_by_entry_point");
    uses("calls_by_operator (app_id=? AND operator_call_id=?)", "calls_by_operator");
    lacks("calls_recent", "calls_recent");
    PLAN_OF(cti_calls_timeline(db, APP, 1000, ignore_step, NULL));
    no_full_scan();
    uses("call_events USING PRIMARY KEY (app_id=? AND call_id=?)", "call_events_pkey");
}

/* ---- voicemails, messages, screen pop ------------------------------------------------------ */

static void test_voicemails_by_each_filter(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_record_filter_t f = {0};
    PLAN_OF(cti_voicemails_query(db, APP, &f, 50, ignore_vm, NULL));
    no_full_scan();
    uses("voicemails_recent (app_id=?)", NULL);
    f.has_cursor = true, f.cursor_at = 500000, f.cursor_id = 500; /* a deep page: a key range */
    PLAN_OF(cti_voicemails_query(db, APP, &f, 50, ignore_vm, NULL));
    no_full_scan();
    uses("voicemails_recent (app_id=? AND created_at<?)",
         "Index Cond: ((app_id = $1) AND (created_at <= $2))");
    f = (cti_record_filter_t){0};
    f.number = "+14155550100";
    PLAN_OF(cti_voicemails_query(db, APP, &f, 1, ignore_vm, NULL));
    no_full_scan();
    uses("voicemails_by_number (app_id=? AND external_number=?)", NULL);
    f = (cti_record_filter_t){.dialpad_user_id = 7};
    PLAN_OF(cti_voicemails_query(db, APP, &f, 50, ignore_vm, NULL));
    no_full_scan();
    uses("voicemails_by_user (app_id=? AND dialpad_user_id=?)", NULL);
    PLAN_OF(cti_voicemails_get(db, APP, 5, ignore_vm, NULL) == CTI_ENOTFOUND ? 0 : -1);
    no_full_scan();
}

static void test_messages_by_each_filter(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_record_filter_t f = {0};
    PLAN_OF(cti_messages_query(db, APP, &f, 50, ignore_msg, NULL));
    no_full_scan();
    uses("messages_recent (app_id=?)", NULL);
    f.has_cursor = true, f.cursor_at = 500000, f.cursor_id = 500; /* a deep page: a key range */
    PLAN_OF(cti_messages_query(db, APP, &f, 50, ignore_msg, NULL));
    no_full_scan();
    uses("messages_recent (app_id=? AND created_at<?)",
         "Index Cond: ((app_id = $1) AND (created_at <= $2))");
    f = (cti_record_filter_t){0};
    f.number = "+14155550100";
    PLAN_OF(cti_messages_query(db, APP, &f, 1, ignore_msg, NULL));
    no_full_scan();
    uses("message_numbers USING COVERING INDEX sqlite_autoindex_message_numbers_1 (app_id=? AND "
         "number=?)",
         NULL);
    f = (cti_record_filter_t){.dialpad_user_id = 7, .direction = "inbound"};
    PLAN_OF(cti_messages_query(db, APP, &f, 50, ignore_msg, NULL));
    no_full_scan();
    uses("messages_by_user (app_id=? AND dialpad_user_id=?)", NULL);
    PLAN_OF(cti_messages_get(db, APP, 5, ignore_msg, NULL) == CTI_ENOTFOUND ? 0 : -1);
    no_full_scan();
}

/* ---- admin and tenant paths ---------------------------------------------------------------- */

static void test_dead_letters_of_an_app_and_of_all(void **state)
{
    cti_db_t *db = cti_store_db(store);
    PLAN_OF(cti_dead_list(db, APP, 0, 50, ignore_dead, NULL));
    no_full_scan();
    uses("raw_events_dead (app_id=? AND id<?)", NULL); /* PostgreSQL: by statistics */
    PLAN_OF(cti_dead_list(db, NULL, 0, 50, ignore_dead, NULL));
    no_full_scan();
    uses("raw_events_dead_all", "raw_events_dead_all");
}

static void test_mappings_keys_audit(void **state)
{
    cti_db_t *db = cti_store_db(store);
    PLAN_OF(cti_mappings_list(db, APP, 0, 50, ignore_mapping, NULL));
    no_full_scan();
    cti_mapping_t m;
    PLAN_OF(cti_mappings_get(db, APP, 7, &m) == CTI_ENOTFOUND ? 0 : -1);
    no_full_scan();
    PLAN_OF(cti_audit_list(db, APP, 0, 50, ignore_audit, NULL));
    no_full_scan();
    uses("audit_log_by_app (app_id=?", NULL);
    PLAN_OF(cti_keys_list(db, APP, ignore_key, NULL));
    no_full_scan();
    int64_t ids[] = {1, 2, 3};
    const char *apps[] = {APP, APP, APP}; /* the ingest worker's lookup of a batch's users */
    PLAN_OF(cti_crm_users_pairs(db, apps, ids, 3, ignore_crm, NULL));
    no_full_scan();
}

static int ignore_delivery(const cti_delivery_t *d, void *ud)
{
    return 0;
}
static int ignore_lease(const cti_lease_t *l, void *ud)
{
    return 0;
}

static int lease_in_tx(cti_db_t *db)
{
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_deliveries_lease(db, "ep-plans", APP, 1000, 15000, 32, ignore_lease, NULL);
    cti_db_rollback(db);
    return rc;
}

/* The ingest transaction's enqueue: the endpoints of a batch's apps. */
static int enqueue_in_tx(cti_db_t *db)
{
    const cti_logrow_t rows[] = {{APP, 1, "call.ringing", 7, "{}"},
                                 {"app-plans-2", 1, "call.ringing", 8, "{}"},
                                 {APP, 2, "call.ended", 7, "{}"}};
    int rc = cti_db_begin(db);
    if (rc == 0)
        rc = cti_deliveries_enqueue(db, rows, 3, 1000);
    cti_db_rollback(db);
    return rc;
}

/* The outbound sender's lease walks an endpoint's due deliveries in
 * next_attempt_at order and stops at its limit; the delivery log pages by id. */
static void test_deliveries_lease_and_log(void **state)
{
    cti_db_t *db = cti_store_db(store);
    PLAN_OF(lease_in_tx(db));
    no_full_scan();
    uses("webhook_deliveries_due (endpoint_id=? AND next_attempt_at<?)", NULL);
    uses("webhook_deliveries_call (endpoint_id=? AND call_id=?)", NULL);
    lacks("USE TEMP B-TREE", NULL); /* no sort of every due row */
    PLAN_OF(cti_deliveries_list(db, "ep-plans", -1, 0, 50, ignore_delivery, NULL));
    no_full_scan();
    uses("webhook_deliveries_by_endpoint (endpoint_id=? AND id<?)", NULL);
    PLAN_OF(cti_deliveries_list(db, "ep-plans", CTI_DLV_FAILED, 99, 50, ignore_delivery, NULL));
    no_full_scan();
    /* by the app index, per app (SQLite) or for the batch's apps at once (PostgreSQL) */
    PLAN_OF(enqueue_in_tx(db));
    uses("webhook_endpoints USING INDEX webhook_endpoints_by_app (app_id=?)",
         "webhook_endpoints_by_app");
    lacks(NULL, "Seq Scan on webhook_endpoints");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_log_bounds_are_two_index_lookups),
        cmocka_unit_test(test_event_log_since_is_a_key_range),
        cmocka_unit_test(test_calls_list_newest_first),
        cmocka_unit_test(test_calls_active_finds_live_legs_by_status),
        cmocka_unit_test(test_calls_by_user_number_crm),
        cmocka_unit_test(test_calls_other_filters_walk_the_recency_index),
        cmocka_unit_test(test_calls_bounded_walk_stops_with_the_page),
        cmocka_unit_test(test_call_by_id_and_its_linked_legs),
        cmocka_unit_test(test_voicemails_by_each_filter),
        cmocka_unit_test(test_messages_by_each_filter),
        cmocka_unit_test(test_dead_letters_of_an_app_and_of_all),
        cmocka_unit_test(test_mappings_keys_audit),
        cmocka_unit_test(test_deliveries_lease_and_log),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, plans_setup, plans_teardown);
}
