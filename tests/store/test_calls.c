/*
 * test_calls.c — conformance of src/repo/calls.c and records.c on both
 * backends: call legs (save, load, get, linked legs, every list filter,
 * keyset pages), timelines, the doc backfill, CRM users, voicemails,
 * messages and agent status.
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
#include "repo/records.h"
#include "repo/tenants.h"

static char APP[37];

/* A leg of APP: call_id, status, external/internal number, user, start (s). */
static void leg(cti_call_t *c, int64_t id, cti_call_status_t st, const char *ext, const char *in,
                int64_t user, int64_t start_s)
{
    cti_call_init(c, id);
    c->status = st;
    snprintf(c->direction, sizeof c->direction, "inbound");
    snprintf(c->state, sizeof c->state, st == CTI_STATUS_ENDED ? "hangup" : "calling");
    snprintf(c->external_number, sizeof c->external_number, "%s", ext);
    snprintf(c->internal_number, sizeof c->internal_number, "%s", in);
    c->dialpad_user_id = user;
    c->started_at = start_s * 1000;
    c->fields_ts = start_s * 1000;
    if (st == CTI_STATUS_ENDED)
        c->had_ended = true, c->had_connected = id % 2, c->ended_at = start_s * 1000 + 500;
}

/* The legs the list tests read:
 *   id   status   external   internal  user  start  linked
 *   1    ended    +1415001   +1650001   10     1
 *   2    ended    +1415002   +1650001   10     2     master 1
 *   3    active   +1415001   +1650002   20     3     entry point 1
 *   4    ringing  +1415003   +1650002    0     4
 *   5    ended    +1415001   +1650001   20     4     operator 3 (sort_at ties with 4)
 *   6    on_hold  +1415004   +1650003   30     6
 */
static int calls_setup(void **state)
{
    if (store_setup(state) != 0)
        return -1;
    cti_db_t *db = cti_store_db(store);
    cti_app_t app = {.active = true, .created_at = 1, .updated_at = 1};
    new_app(app.id, "calls");
    snprintf(app.name, sizeof app.name, "calls");
    snprintf(APP, sizeof APP, "%s", app.id);
    if (cti_apps_insert(db, &app) != 0 || cti_mappings_put(db, APP, 10, "crm-ten", 1, NULL) != 0 ||
        cti_mappings_put(db, APP, 30, "crm-ten", 1, NULL) != 0 ||
        cti_mappings_put(db, APP, 20, "crm-twenty", 1, NULL) != 0)
        return -1;
    cti_call_t c[6];
    leg(&c[0], 1, CTI_STATUS_ENDED, "+1415001", "+1650001", 10, 1);
    leg(&c[1], 2, CTI_STATUS_ENDED, "+1415002", "+1650001", 10, 2);
    c[1].master_call_id = 1;
    leg(&c[2], 3, CTI_STATUS_ACTIVE, "+1415001", "+1650002", 20, 3);
    c[2].entry_point_call_id = 1;
    leg(&c[3], 4, CTI_STATUS_RINGING, "+1415003", "+1650002", 0, 4);
    leg(&c[4], 5, CTI_STATUS_ENDED, "+1415001", "+1650001", 20, 4);
    c[4].operator_call_id = 3;
    leg(&c[5], 6, CTI_STATUS_ON_HOLD, "+1415004", "+1650003", 30, 6);
    cti_call_t *all[6];
    for (int i = 0; i < 6; i++)
        all[i] = &c[i];
    int rc = cti_calls_save_apps(db, NULL, APP, all, NULL, NULL, 6, 99);
    for (int i = 0; i < 6; i++)
        cti_call_clear(&c[i]);
    return rc;
}

/* ---- lists ------------------------------------------------------------------------------------
 */

typedef struct {
    int64_t ids[16], sort_at[16];
    char crm[16][32];
    int n;
} seen_t;

static int note_doc(const cti_calldoc_t *d, void *ud)
{
    seen_t *s = ud;
    assert_non_null(d->doc);
    assert_true(d->doc[0] == '{');
    if (s->n < 16) {
        s->sort_at[s->n] = d->sort_at;
        snprintf(s->crm[s->n], 32, "%s", d->crm_user_id ? d->crm_user_id : "-");
        s->ids[s->n++] = d->call_id;
    }
    return 0;
}

/* The call ids a filter lists, newest first, as "a,b,c". */
static const char *list(const cti_call_filter_t *f, int limit)
{
    static char out[128];
    seen_t s = {.n = 0};
    assert_int_equal(cti_calls_query(cti_store_db(store), APP, f, limit, note_doc, &s), 0);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < s.n; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%lld", i ? "," : "",
                                (long long)s.ids[i]);
    return out;
}

static void test_calls_query_each_filter(void **state)
{
    cti_call_filter_t f = {0};
    assert_string_equal(list(&f, 50), "6,5,4,3,2,1"); /* sort_at, then call_id, newest first */
    assert_string_equal(list(&f, 2), "6,5");
    f = (cti_call_filter_t){.status = "ended"};
    assert_string_equal(list(&f, 50), "5,2,1");
    f = (cti_call_filter_t){.active_only = true};
    assert_string_equal(list(&f, 50), "6,4,3");
    f = (cti_call_filter_t){.state = "calling"};
    assert_string_equal(list(&f, 50), "6,4,3");
    f = (cti_call_filter_t){.outcome = "answered"}; /* odd ids connected */
    assert_string_equal(list(&f, 50), "5,1");
    f = (cti_call_filter_t){.outcome = "missed"};
    assert_string_equal(list(&f, 50), "2");
    f = (cti_call_filter_t){.direction = "outbound"};
    assert_string_equal(list(&f, 50), "");
    f = (cti_call_filter_t){.dialpad_user_id = 20};
    assert_string_equal(list(&f, 50), "5,3");
    f = (cti_call_filter_t){.crm_user_id = "crm-ten"}; /* two Dialpad users mapped to it */
    assert_string_equal(list(&f, 50), "6,2,1");
    f = (cti_call_filter_t){.crm_user_id = "crm-none"};
    assert_string_equal(list(&f, 50), "");
    f = (cti_call_filter_t){.number = "+1415001"}; /* external */
    assert_string_equal(list(&f, 50), "5,3,1");
    f = (cti_call_filter_t){.number = "+1650002"}; /* internal */
    assert_string_equal(list(&f, 50), "4,3");
    f = (cti_call_filter_t){.number = "+1415001", .active_only = true}; /* screen pop */
    assert_string_equal(list(&f, 50), "3");
    f = (cti_call_filter_t){.from = 2000, .to = 4000}; /* [from, to) */
    assert_string_equal(list(&f, 50), "3,2");
    f = (cti_call_filter_t){.root_only = true};
    assert_string_equal(list(&f, 50), "6,5,4,1");
    f = (cti_call_filter_t){.status = "ended", .dialpad_user_id = 10, .from = 1500};
    assert_string_equal(list(&f, 50), "2");
}

/* Every page of f through a walk bounded at max legs, following each page's
 * position (its last leg when full, the walk's last leg when cut) as the API's
 * cursor does: the ids, as list() gives them, and how many pages it took. */
static const char *walk_all(const cti_call_filter_t *filter, int limit, int max, int *pages)
{
    static char out[128];
    size_t len = 0;
    cti_call_filter_t f = *filter;
    out[0] = '\0';
    for (*pages = 1;; ++*pages) {
        assert_true(*pages < 20);
        seen_t s = {.n = 0};
        cti_call_walk_t walk = {.max = max};
        assert_int_equal(
            cti_calls_query_walk(cti_store_db(store), APP, &f, limit, &walk, note_doc, &s), 0);
        assert_true(s.n <= limit);
        assert_false(walk.cut && s.n == limit); /* a full page goes on from its last leg */
        for (int i = 0; i < s.n; i++)
            len += (size_t)snprintf(out + len, sizeof out - len, "%s%lld", len ? "," : "",
                                    (long long)s.ids[i]);
        f.has_cursor = true;
        if (s.n == limit)
            f.cursor_at = s.sort_at[s.n - 1], f.cursor_id = s.ids[s.n - 1];
        else if (walk.cut)
            f.cursor_at = walk.at, f.cursor_id = walk.id;
        else
            return out;
    }
}

/* One page of f through a walk of at most max legs: how many legs it answered. */
static int one_page(const cti_call_filter_t *f, int limit, int max, cti_call_walk_t *walk)
{
    seen_t s = {.n = 0};
    *walk = (cti_call_walk_t){.max = max};
    assert_int_equal(cti_calls_query_walk(cti_store_db(store), APP, f, limit, walk, note_doc, &s),
                     0);
    return s.n;
}

static void test_calls_query_bounded_walk(void **state)
{
    /* outcome=missed matches leg 2 alone; at most 2 legs tested a page: 6 and 5,
     * none: an empty page cut after 5 (sort_at 4,000) */
    cti_call_filter_t f = {.outcome = "missed"};
    cti_call_walk_t walk;
    assert_int_equal(one_page(&f, 50, 2, &walk), 0);
    assert_true(walk.cut);
    assert_true(walk.at == 4000 && walk.id == 5);
    /* then 4 and 3, then 2 and 1 (2 found), then nothing left: not cut */
    int pages;
    assert_string_equal(walk_all(&f, 50, 2, &pages), "2");
    assert_int_equal(pages, 4);
    /* a walk that ends with the legs before its bound is not cut */
    assert_int_equal(one_page(&f, 50, 10, &walk), 1);
    assert_false(walk.cut);
    /* a full page is not cut, whatever is left */
    f = (cti_call_filter_t){.root_only = true};
    assert_int_equal(one_page(&f, 2, 3, &walk), 2);
    assert_false(walk.cut);
    /* each filter, paged through walks of 1, 2 and 3 legs at pages of 1 and 50,
     * lists what one unbounded query does, in the same order */
    const cti_call_filter_t filters[] = {
        {.state = "calling"},
        {.outcome = "answered"},
        {.outcome = "missed"},
        {.direction = "outbound"},
        {.root_only = true},
        {.status = "ended", .outcome = "answered"},
        {.dialpad_user_id = 20, .state = "calling"},
        {.crm_user_id = "crm-ten", .root_only = true},
        {.number = "+1415001", .outcome = "answered"},
        {.from = 2000, .to = 5000, .root_only = true},
        {.status = "ended"}, /* no condition to test: the bound does not apply */
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(filters); i++) {
        char want[128];
        snprintf(want, sizeof want, "%s", list(&filters[i], 50));
        for (int max = 1; max <= 3; max++) {
            assert_string_equal(walk_all(&filters[i], 50, max, &pages), want);
            assert_string_equal(walk_all(&filters[i], 1, max, &pages), want);
        }
    }
}

/* Before the second statement of a short page (where the walk stopped), newer
 * legs are stored by another connection: counted from the top, that position
 * moved up by as many. The next page must not start above a leg this page
 * answered (it would answer it twice). */
typedef struct {
    cti_db_t *other;
    bool done;
} newer_t;

static void store_newer_legs(const char *sql, const cti_sql_val_t *p, int n, void *ud)
{
    newer_t *nw = ud;
    if (nw->done || !strstr(sql, "OFFSET"))
        return;
    nw->done = true;
    cti_call_t c[3];
    cti_call_t *all[3];
    for (int i = 0; i < 3; i++) {
        leg(&c[i], 101 + i, CTI_STATUS_RINGING, "+1415009", "+1650009", 0, 50 + i);
        all[i] = &c[i];
    }
    assert_int_equal(cti_calls_save_apps(nw->other, NULL, APP, all, NULL, NULL, 3, 99), 0);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);
}

static void test_calls_query_bounded_walk_while_legs_arrive(void **state)
{
    newer_t nw = {0};
    assert_int_equal(cti_store_connect(store, &nw.other), 0);
    /* answered: 5 and 1. Tested: 6, 5, 4 (5 answered), and the walk's last leg is
     * 4 — but counted again from the top after 101-103 arrived, it is 103 */
    cti_call_filter_t f = {.outcome = "answered"};
    cti_call_walk_t walk = {.max = 3};
    seen_t s = {.n = 0};
    cti_db_trace(cti_store_db(store), store_newer_legs, &nw);
    int rc = cti_calls_query_walk(cti_store_db(store), APP, &f, 50, &walk, note_doc, &s);
    cti_db_trace(cti_store_db(store), NULL, NULL);
    assert_int_equal(rc, 0);
    assert_true(nw.done);
    assert_int_equal(s.n, 1);
    assert_true(s.ids[0] == 5);
    assert_true(walk.cut);
    /* resumed after 5, the leg it answered, not above it */
    assert_true(walk.at == 4000 && walk.id == 5);
    int pages;
    f.has_cursor = true, f.cursor_at = walk.at, f.cursor_id = walk.id;
    assert_string_equal(walk_all(&f, 50, 3, &pages), "1");
    char del[128];
    snprintf(del, sizeof del, "DELETE FROM calls WHERE app_id = '%s' AND call_id > 100", APP);
    assert_int_equal(cti_db_script(nw.other, del), 0);
    cti_db_close(nw.other);
}

static void test_calls_query_keyset_pages_through_ties(void **state)
{
    /* 4 and 5 share sort_at 4,000: the cursor orders them by call_id */
    cti_call_filter_t f = {.has_cursor = true, .cursor_at = 4000, .cursor_id = 5};
    assert_string_equal(list(&f, 50), "4,3,2,1");
    f.cursor_id = 4;
    assert_string_equal(list(&f, 2), "3,2");
    f = (cti_call_filter_t){
        .dialpad_user_id = 20, .has_cursor = true, .cursor_at = 4000, .cursor_id = 5};
    assert_string_equal(list(&f, 50), "3");
    /* the CRM user comes with each leg, from the mappings at read time */
    seen_t s = {.n = 0};
    f = (cti_call_filter_t){0};
    assert_int_equal(cti_calls_query(cti_store_db(store), APP, &f, 50, note_doc, &s), 0);
    assert_string_equal(s.crm[0], "crm-ten");    /* 6: user 30 */
    assert_string_equal(s.crm[2], "-");          /* 4: no user */
    assert_string_equal(s.crm[3], "crm-twenty"); /* 3: user 20 */
    assert_true(s.sort_at[0] == 6000);
}

/* ---- one leg, its links, its timeline -------------------------------------------------------- */

typedef struct {
    cti_call_t c;
    char crm[32];
    int n;
} got_t;

static int take_leg(const cti_call_t *c, const char *crm, int64_t sort_at, void *ud)
{
    got_t *g = ud;
    g->c = *c; /* scalars only are read after the callback */
    g->c.contact = g->c.target = g->c.vm_url = g->c.vm_transcript = NULL;
    g->c.recording_urls = NULL;
    snprintf(g->crm, sizeof g->crm, "%s", crm ? crm : "-");
    g->n++;
    return 0;
}

static void test_calls_get_load_and_linked(void **state)
{
    cti_db_t *db = cti_store_db(store);
    got_t g = {.n = 0};
    assert_int_equal(cti_calls_get(db, APP, 3, take_leg, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.c.status, CTI_STATUS_ACTIVE);
    assert_string_equal(g.c.external_number, "+1415001");
    assert_true(g.c.entry_point_call_id == 1 && g.c.master_call_id == 0);
    assert_true(g.c.duration_ms == CTI_NO_DURATION && g.c.is_transferred == -1);
    assert_string_equal(g.crm, "crm-twenty");
    g.n = 0;
    assert_int_equal(cti_calls_get(db, APP, 999, take_leg, &g), 0);
    assert_int_equal(g.n, 0); /* none: no call of the callback */
    assert_int_equal(cti_calls_get(db, "app-other", 3, take_leg, &g), 0);
    assert_int_equal(g.n, 0); /* another app's id space */

    int64_t ids[] = {1, 6, 999, 2};
    g.n = 0;
    assert_int_equal(cti_calls_load_many(db, APP, ids, 4, take_leg, &g), 0);
    assert_int_equal(g.n, 3);

    /* legs pointing at 1 (2 by master, 3 by entry point), oldest first */
    cti_call_t c;
    cti_call_init(&c, 1);
    seen_t s = {.n = 0};
    assert_int_equal(cti_calls_linked(db, APP, &c, note_doc, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(s.ids[0] == 2 && s.ids[1] == 3);
    /* and the legs 3 points at: 1 (entry point), and 5 points at 3 (operator) */
    c.call_id = 3, c.entry_point_call_id = 1;
    s.n = 0;
    assert_int_equal(cti_calls_linked(db, APP, &c, note_doc, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(s.ids[0] == 1 && s.ids[1] == 5);
    c.call_id = 6, c.entry_point_call_id = 0; /* nothing either way */
    s.n = 0;
    assert_int_equal(cti_calls_linked(db, APP, &c, note_doc, &s), 0);
    assert_int_equal(s.n, 0);
    cti_call_clear(&c);
}

typedef struct {
    char app[8][40], ext[8][64], crm[8][64];
    int64_t id[8];
    int n;
} pairs_seen_t;

static int take_pair(const char *app_id, const cti_call_t *c, const char *crm, int64_t sort_at,
                     void *ud)
{
    pairs_seen_t *p = ud;
    (void)sort_at;
    if (p->n < 8) {
        snprintf(p->app[p->n], sizeof p->app[0], "%s", app_id);
        snprintf(p->ext[p->n], sizeof p->ext[0], "%s", c->external_number);
        snprintf(p->crm[p->n], sizeof p->crm[0], "%s", crm ? crm : "-");
        p->id[p->n] = c->call_id;
    }
    p->n++;
    return 0;
}

/* The index of (app, id) among what take_pair saw, or -1. */
static int seen_pair(const pairs_seen_t *p, const char *app, int64_t id)
{
    for (int i = 0; i < p->n && i < 8; i++)
        if (p->id[i] == id && !strcmp(p->app[i], app))
            return i;
    return -1;
}

/* cti_calls_load_pairs: the legs of several apps at once (one statement on
 * PostgreSQL), each with its own app, the same call id in two apps kept apart. */
static void test_calls_load_pairs_of_many_apps(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char other[37];
    new_app(other, "pairs");
    cti_call_t c[2], *all[2] = {&c[0], &c[1]};
    leg(&c[0], 3, CTI_STATUS_ENDED, "+1999003", "+1650009", 0, 9);
    leg(&c[1], 7, CTI_STATUS_RINGING, "+1999007", "+1650009", 0, 9);
    assert_int_equal(cti_calls_save_apps(db, NULL, other, all, NULL, NULL, 2, 99), 0);
    cti_call_clear(&c[0]);
    cti_call_clear(&c[1]);

    const char *apps[] = {APP, other, APP, other, APP, other};
    int64_t ids[] = {1, 3, 3, 999, 999, 7};
    pairs_seen_t p = {.n = 0};
    assert_int_equal(cti_calls_load_pairs(db, apps, ids, 6, take_pair, &p), 0);
    assert_int_equal(p.n, 4);
    int i = seen_pair(&p, APP, 1);
    assert_true(i >= 0);
    assert_string_equal(p.ext[i], "+1415001");
    assert_string_equal(p.crm[i], "crm-ten");
    assert_true((i = seen_pair(&p, APP, 3)) >= 0);
    assert_string_equal(p.ext[i], "+1415001");
    assert_string_equal(p.crm[i], "crm-twenty");
    assert_true((i = seen_pair(&p, other, 3)) >= 0);
    assert_string_equal(p.ext[i], "+1999003");
    assert_string_equal(p.crm[i], "-");
    assert_true((i = seen_pair(&p, other, 7)) >= 0);
    assert_string_equal(p.ext[i], "+1999007");
    p.n = 0;
    assert_int_equal(cti_calls_load_pairs(db, apps, ids, 0, take_pair, &p), 0);
    assert_int_equal(p.n, 0);
}

/* cti_calls_save_apps and cti_calls_add_timeline_apps: legs and timeline rows
 * of several apps in one call, each stored under its own app. */
static void test_calls_save_apps_of_many_apps(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char a[37], b[37];
    new_app(a, "savea");
    new_app(b, "saveb");
    cti_call_t c[3], *all[3] = {&c[0], &c[1], &c[2]};
    leg(&c[0], 11, CTI_STATUS_RINGING, "+1888011", "+1650008", 0, 8);
    leg(&c[1], 11, CTI_STATUS_ENDED, "+1777011", "+1650007", 0, 7);
    leg(&c[2], 12, CTI_STATUS_RINGING, "+1777012", "+1650007", 0, 7);
    const char *apps[] = {a, b, b};
    assert_int_equal(cti_calls_save_apps(db, apps, NULL, all, NULL, NULL, 3, 99), 0);
    cti_timeline_row_t rows[3] = {{11, 1000, 1000, 0, "ringing", false, false},
                                  {11, 2000, 2000, 0, "hangup", false, false},
                                  {12, 3000, 3000, 0, "ringing", false, false}};
    assert_int_equal(cti_calls_add_timeline_apps(db, apps, NULL, rows, 3), 0);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);

    int64_t ids[] = {11, 11, 12};
    pairs_seen_t p = {.n = 0};
    assert_int_equal(cti_calls_load_pairs(db, apps, ids, 3, take_pair, &p), 0);
    assert_int_equal(p.n, 3);
    int i;
    assert_true((i = seen_pair(&p, a, 11)) >= 0);
    assert_string_equal(p.ext[i], "+1888011");
    assert_true((i = seen_pair(&p, b, 11)) >= 0);
    assert_string_equal(p.ext[i], "+1777011");
    assert_true((i = seen_pair(&p, b, 12)) >= 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM call_events WHERE app_id = '%s'", a);
    assert_int_equal(count(sql), 1);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM call_events WHERE app_id = '%s'", b);
    assert_int_equal(count(sql), 2);
}

typedef struct {
    char got[4][96];
    int n;
} crm_seen_t;

static int take_crm(const char *app_id, int64_t user, const char *crm, void *ud)
{
    crm_seen_t *c = ud;
    if (c->n < 4)
        snprintf(c->got[c->n], sizeof c->got[0], "%s/%lld/%s", app_id, (long long)user, crm);
    c->n++;
    return 0;
}

/* cti_crm_users_pairs: mappings of several apps at once, each with its app. */
static void test_crm_users_pairs_of_many_apps(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_app_t app = {.active = true, .created_at = 1, .updated_at = 1};
    new_app(app.id, "crmpairs");
    snprintf(app.name, sizeof app.name, "crm pairs");
    assert_int_equal(cti_apps_insert(db, &app), 0);
    const char *other = app.id;
    assert_int_equal(cti_mappings_put(db, other, 10, "crm-other", 1, NULL), 0);
    const char *apps[] = {APP, other, APP, other};
    int64_t users[] = {10, 10, 99, 20};
    crm_seen_t c = {.n = 0};
    assert_int_equal(cti_crm_users_pairs(db, apps, users, 4, take_crm, &c), 0);
    assert_int_equal(c.n, 2);
    char want_a[96], want_b[96];
    snprintf(want_a, sizeof want_a, "%s/10/crm-ten", APP);
    snprintf(want_b, sizeof want_b, "%s/10/crm-other", other);
    assert_true((!strcmp(c.got[0], want_a) && !strcmp(c.got[1], want_b)) ||
                (!strcmp(c.got[1], want_a) && !strcmp(c.got[0], want_b)));
}

typedef struct {
    char states[8][16];
    int64_t ts[8];
    bool late[8], reconciled[8];
    int n;
} steps_t;

static int note_step(const char *state, int64_t ts, int64_t received_at, bool late,
                     bool reconciled, void *ud)
{
    steps_t *s = ud;
    if (s->n < 8) {
        snprintf(s->states[s->n], 16, "%s", state);
        s->ts[s->n] = ts;
        s->reconciled[s->n] = reconciled;
        s->late[s->n++] = late;
    }
    return 0;
}

static void test_timeline_in_event_order_once_each(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_timeline_row_t rows[] = {
        {1, 300, 1000, 7, "hangup", false, true}, /* made by reconciliation */
        {1, 100, 1001, 8, "calling", false, false},
        {1, 200, 1002, 9, "connected", true, false},
        {1, 100, 1003, 10, "calling", false, false}, /* again: ignored */
        {2, 100, 1004, 11, "calling", false, false},
    };
    assert_int_equal(cti_calls_add_timeline_apps(db, NULL, APP, rows, 5), 0);
    steps_t s = {.n = 0};
    assert_int_equal(cti_calls_timeline(db, APP, 1, note_step, &s), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.states[0], "calling");
    assert_string_equal(s.states[1], "connected");
    assert_string_equal(s.states[2], "hangup");
    assert_true(s.late[1] && !s.late[0]);
    assert_true(s.ts[2] == 300);
    assert_true(s.reconciled[2] && !s.reconciled[0] && !s.reconciled[1]); /* its source */
}

static void test_sort_at_is_start_else_first_event(void **state)
{
    cti_call_t c;
    cti_call_init(&c, 1);
    c.fields_ts = 50;
    assert_int_equal(cti_calls_sort_at(&c), 50);
    c.started_at = 40;
    assert_int_equal(cti_calls_sort_at(&c), 40);
    cti_call_clear(&c);
}

/* Rows stored before migration 9 had no doc: the backfill renders them
 * (only those unchanged since read), and reads refuse a leg without one. */
static void test_backfill_docs(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char sql[160];
    snprintf(sql, sizeof sql,
             "UPDATE calls SET doc = NULL WHERE app_id = '%s' AND call_id IN (1, 2)", APP);
    script_ok(sql);
    seen_t s = {.n = 0};
    cti_call_filter_t f = {0};
    assert_int_equal(cti_calls_query(db, APP, &f, 50, note_doc, &s), CTI_EDB);
    int filled = cti_calls_backfill_docs(db);
    assert_true(filled >= 2);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM calls WHERE doc IS NULL OR (app_id = '%s' AND "
             "call_id = 2 AND doc NOT LIKE '{\"id\":\"2\",%%')",
             APP);
    assert_int_equal(count(sql), 0);
    assert_string_equal(list(&f, 50), "6,5,4,3,2,1");
    assert_int_equal(cti_calls_backfill_docs(db), 0); /* nothing left */
}

static int note_crm(const char *app_id, int64_t id, const char *crm, void *ud)
{
    seen_t *s = ud;
    assert_string_equal(app_id, APP);
    s->ids[s->n] = id;
    snprintf(s->crm[s->n++], 32, "%s", crm);
    return 0;
}

static void test_crm_users_of_mapped_users_only(void **state)
{
    int64_t ids[] = {10, 11, 20};
    const char *apps[] = {APP, APP, APP};
    seen_t s = {.n = 0};
    assert_int_equal(cti_crm_users_pairs(cti_store_db(store), apps, ids, 3, note_crm, &s), 0);
    assert_int_equal(s.n, 2);
    for (int i = 0; i < 2; i++)
        assert_string_equal(s.crm[i], s.ids[i] == 10 ? "crm-ten" : "crm-twenty");
}

/* ---- voicemails, messages, agent status ------------------------------------------------------ */

typedef struct {
    int64_t ids[8], dur[8];
    char url[8][64], text[8][64];
    int n;
} seen_rec_t;

static int note_vm(const cti_voicemail_t *v, void *ud)
{
    seen_rec_t *s = ud;
    if (s->n < 8) {
        s->dur[s->n] = v->duration_ms;
        snprintf(s->url[s->n], 64, "%s", v->url ? v->url : "-");
        snprintf(s->text[s->n], 64, "%s", v->transcript ? v->transcript : "-");
        s->ids[s->n++] = v->call_id;
    }
    return 0;
}

static const char *vms(const cti_record_filter_t *f)
{
    static char out[64];
    seen_rec_t s = {.n = 0};
    assert_int_equal(cti_voicemails_query(cti_store_db(store), APP, f, 50, note_vm, &s), 0);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < s.n; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%lld", i ? "," : "",
                                (long long)s.ids[i]);
    return out;
}

static void test_voicemails_save_and_read(void **state)
{
    cti_db_t *db = cti_store_db(store);
    cti_call_t c;
    for (int i = 0; i < 3; i++) {
        leg(&c, 101 + i, CTI_STATUS_ENDED, i == 1 ? "+1415009" : "+1415008", "+1650001", 10 + i, 0);
        c.ended_at = 1000 * (i + 1);
        c.vm_url = cti_strdup("https://vm/1");
        c.vm_transcript = i ? cti_strdup("hello") : NULL;
        c.vm_duration_ms = 4000;
        assert_int_equal(cti_voicemails_save(db, APP, &c, 5), 0);
        cti_call_clear(&c);
    }
    cti_record_filter_t f = {0};
    assert_string_equal(vms(&f), "103,102,101");
    f.number = "+1415008";
    assert_string_equal(vms(&f), "103,101");
    f = (cti_record_filter_t){.dialpad_user_id = 11};
    assert_string_equal(vms(&f), "102");
    f = (cti_record_filter_t){.from = 2000, .to = 3000};
    assert_string_equal(vms(&f), "102");
    f = (cti_record_filter_t){.has_cursor = true, .cursor_at = 3000, .cursor_id = 103};
    assert_string_equal(vms(&f), "102,101");

    /* saved again (a transcript arrived): one row, the newest fields */
    leg(&c, 101, CTI_STATUS_ENDED, "+1415008", "+1650001", 10, 0);
    c.ended_at = 1000;
    c.vm_url = cti_strdup("https://vm/1b");
    c.vm_transcript = cti_strdup("later");
    assert_int_equal(cti_voicemails_save(db, APP, &c, 6), 0);
    cti_call_clear(&c);
    seen_rec_t s = {.n = 0};
    assert_int_equal(cti_voicemails_get(db, APP, 101, note_vm, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.url[0], "https://vm/1b");
    assert_string_equal(s.text[0], "later");
    assert_int_equal(s.dur[0], -1); /* unknown this time */
    assert_int_equal(cti_voicemails_get(db, APP, 555, note_vm, &s), CTI_ENOTFOUND);
}

static int note_msg(const cti_message_row_t *m, void *ud)
{
    seen_rec_t *s = ud;
    if (s->n < 8) {
        snprintf(s->url[s->n], 64, "%s", m->status ? m->status : "-");
        snprintf(s->text[s->n], 64, "%s", m->text ? m->text : "-");
        s->ids[s->n++] = m->id;
    }
    return 0;
}

static const char *msgs(const cti_record_filter_t *f)
{
    static char out[64];
    seen_rec_t s = {.n = 0};
    assert_int_equal(cti_messages_query(cti_store_db(store), APP, f, 50, note_msg, &s), 0);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < s.n; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%lld", i ? "," : "",
                                (long long)s.ids[i]);
    return out;
}

static void apply_msg(int64_t id, const char *dir, const char *from, const char *to,
                      const char *status, int64_t ts, int64_t created, bool expect_existed)
{
    json_t *tos = json_pack("[s]", to);
    cti_message_t m = {.message_id = id,
                       .to_numbers = tos,
                       .text = "hi",
                       .dialpad_user_id = 10,
                       .event_timestamp = ts,
                       .created_at = created};
    snprintf(m.direction, sizeof m.direction, "%s", dir);
    snprintf(m.from_number, sizeof m.from_number, "%s", from);
    snprintf(m.status, sizeof m.status, "%s", status);
    bool existed = !expect_existed;
    assert_int_equal(cti_messages_apply(cti_store_db(store), APP, &m, 1, &existed), 0);
    assert_true(existed == expect_existed);
    json_decref(tos);
}

static void test_messages_apply_and_read(void **state)
{
    apply_msg(201, "inbound", "+1415007", "+1650001", "received", 10, 1000, false);
    apply_msg(202, "outbound", "+1650001", "+1415007", "pending", 20, 2000, false);
    apply_msg(203, "outbound", "+1650001", "+1415006", "pending", 30, 3000, false);
    apply_msg(202, "outbound", "+1650001", "+1415007", "delivered", 25, 2000, true);
    apply_msg(202, "outbound", "+1650001", "+1415007", "sent", 22, 2000, true); /* older */
    cti_record_filter_t f = {0};
    assert_string_equal(msgs(&f), "203,202,201");
    f.direction = "outbound";
    assert_string_equal(msgs(&f), "203,202");
    f = (cti_record_filter_t){.number = "+1415007"}; /* sender or recipient */
    assert_string_equal(msgs(&f), "202,201");
    f = (cti_record_filter_t){.dialpad_user_id = 10, .to = 3000};
    assert_string_equal(msgs(&f), "202,201");
    seen_rec_t s = {.n = 0};
    assert_int_equal(cti_messages_get(cti_store_db(store), APP, 202, note_msg, &s), 0);
    assert_string_equal(s.url[0], "delivered"); /* the newest event's state won */
    assert_string_equal(s.text[0], "hi");
    assert_int_equal(cti_messages_get(cti_store_db(store), APP, 299, note_msg, &s), CTI_ENOTFOUND);
}

static int note_to(const cti_message_row_t *m, void *ud)
{
    snprintf(ud, 64, "%s", m->to_numbers ? m->to_numbers : "-");
    return 0;
}

/* A later status event that names no recipient (Dialpad's SMS status events
 * may leave to_number out) keeps the recipients the message had. */
static void test_message_status_without_recipients_keeps_them(void **state)
{
    char to[64];
    apply_msg(211, "outbound", "+1650001", "+1415011", "pending", 10, 1000, false);
    cti_message_t m = {.message_id = 211, .text = "hi", .event_timestamp = 20, .created_at = 1000};
    snprintf(m.status, sizeof m.status, "delivered");
    bool existed = false;
    assert_int_equal(cti_messages_apply(cti_store_db(store), APP, &m, 1, &existed), 0);
    assert_true(existed);
    assert_int_equal(cti_messages_get(cti_store_db(store), APP, 211, note_to, to), 0);
    assert_string_equal(to, "[\"+1415011\"]");
    cti_record_filter_t f = {.number = "+1415011"};
    assert_string_equal(msgs(&f), "211");
}

static void test_agent_status_once_per_event(void **state)
{
    cti_db_t *db = cti_store_db(store);
    assert_int_equal(cti_agent_status_add(db, APP, 77, 100, "{\"on_duty\":true}", 1), 0);
    assert_int_equal(cti_agent_status_add(db, APP, 77, 100, "{\"again\":1}", 2), 0);
    assert_int_equal(cti_agent_status_add(db, APP, 77, 200, "{\"on_duty\":false}", 3), 0);
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM agent_status WHERE app_id = '%s' AND "
             "target_id = 77 AND body <> '{\"again\":1}'",
             APP);
    assert_int_equal(count(sql), 2);
}

static char UPSERT_APP[37];

static int64_t calls_where(const char *cond)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM calls WHERE app_id = '%s' AND %s", UPSERT_APP,
             cond);
    return count(sql);
}

/* A leg saved with keys_same (SQLite: an upsert that leaves the key indexes
 * alone) and without: either way the row ends as the leg is, and the indexes
 * find it by its current keys only. */
static void test_call_upserts_keep_rows_and_indexes_true(void **state)
{
    cti_db_t *db = cti_store_db(store);
    new_app(UPSERT_APP, "upsert");
    cti_call_t c;
    cti_call_init(&c, 9007199254740993LL);
    snprintf(c.external_number, sizeof c.external_number, "+14155550100");
    snprintf(c.internal_number, sizeof c.internal_number, "+14155550199");
    c.dialpad_user_id = 42;
    c.started_at = 1000;
    c.fields_ts = 1000;
    cti_call_t *calls[] = {&c};
    const char *docs[] = {"{\"v\":1}"};
    bool no[] = {false}, yes[] = {true};
    assert_int_equal(cti_calls_save_apps(db, NULL, UPSERT_APP, calls, docs, no, 1, 5), 0);

    c.status = CTI_STATUS_ENDED; /* keys as stored */
    c.ended_at = 2000;
    docs[0] = "{\"v\":2}";
    assert_int_equal(cti_calls_save_apps(db, NULL, UPSERT_APP, calls, docs, yes, 1, 6), 0);
    assert_int_equal(calls_where("status = 'ended' AND ended_at = 2000 AND doc = '{\"v\":2}' "
                                 "AND updated_at = 6 AND external_number = '+14155550100'"),
                     1);

    snprintf(c.external_number, sizeof c.external_number, "+14155550111"); /* keys changed */
    c.started_at = 900;
    c.dialpad_user_id = 43;
    docs[0] = "{\"v\":3}";
    assert_int_equal(cti_calls_save_apps(db, NULL, UPSERT_APP, calls, docs, no, 1, 7), 0);
    assert_int_equal(calls_where("external_number = '+14155550111' AND dialpad_user_id = 43 "
                                 "AND sort_at = 900 AND doc = '{\"v\":3}'"),
                     1);
    assert_int_equal(calls_where("external_number = '+14155550100'"), 0);
    assert_int_equal(calls_where("dialpad_user_id = 42"), 0);
    assert_int_equal(calls_where("status = 'ended'"), 1);
    if (!is_pg) /* every index agrees with its table */
        assert_int_equal(count("SELECT COUNT(*) FROM pragma_integrity_check "
                               "WHERE integrity_check <> 'ok'"),
                         0);
    cti_call_clear(&c);
}

/* The two upserts are different statements even when the light one runs first
 * for a row count (statement texts are built once and kept). */
static void test_light_upsert_first_does_not_stand_for_the_full_one(void **state)
{
    cti_db_t *db = cti_store_db(store);
    char app[37], sql[200];
    new_app(app, "first");
    cti_call_t c[3];
    cti_call_t *calls[3];
    bool same[3] = {true, true, true}, changed[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        cti_call_init(&c[i], 800 + i);
        snprintf(c[i].external_number, sizeof c[i].external_number, "+1415555020%d", i);
        c[i].dialpad_user_id = 7;
        c[i].fields_ts = 100;
        calls[i] = &c[i];
    }
    /* new rows through the light statement (3 rows: a count no other test uses) */
    assert_int_equal(cti_calls_save_apps(db, NULL, app, calls, NULL, same, 3, 1), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(c[i].external_number, sizeof c[i].external_number, "+1415555030%d", i);
        c[i].dialpad_user_id = 8;
    }
    assert_int_equal(cti_calls_save_apps(db, NULL, app, calls, NULL, changed, 3, 2), 0);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM calls WHERE app_id = '%s' AND "
             "dialpad_user_id = 8 AND external_number LIKE '+1415555030%%'",
             app);
    assert_int_equal(count(sql), 3);
    for (int i = 0; i < 3; i++)
        cti_call_clear(&c[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_query_each_filter),
        cmocka_unit_test(test_calls_query_keyset_pages_through_ties),
        cmocka_unit_test(test_calls_query_bounded_walk),
        cmocka_unit_test(test_calls_query_bounded_walk_while_legs_arrive),
        cmocka_unit_test(test_calls_get_load_and_linked),
        cmocka_unit_test(test_calls_load_pairs_of_many_apps),
        cmocka_unit_test(test_crm_users_pairs_of_many_apps),
        cmocka_unit_test(test_calls_save_apps_of_many_apps),
        cmocka_unit_test(test_timeline_in_event_order_once_each),
        cmocka_unit_test(test_sort_at_is_start_else_first_event),
        cmocka_unit_test(test_backfill_docs),
        cmocka_unit_test(test_crm_users_of_mapped_users_only),
        cmocka_unit_test(test_voicemails_save_and_read),
        cmocka_unit_test(test_messages_apply_and_read),
        cmocka_unit_test(test_message_status_without_recipients_keeps_them),
        cmocka_unit_test(test_agent_status_once_per_event),
        cmocka_unit_test(test_call_upserts_keep_rows_and_indexes_true),
        cmocka_unit_test(test_light_upsert_first_does_not_stand_for_the_full_one),
    };
    return cmocka_run_group_tests_name(getenv("CTI_TEST_DB"), tests, calls_setup, store_teardown);
}
