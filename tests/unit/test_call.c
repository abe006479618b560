/* test_call.c — unit tests for src/model/call.c, the call state machine.
 *
 * test_transitions mirrors the transition table at the top of call.c: one row
 * per case (the events a leg has seen, the event applied, what it must do).
 * test_order_independent applies every permutation of real flows (the
 * fixtures' events, with their real fields, and one of them delivered twice)
 * and requires the same final leg each time: the contract's "whatever order
 * the events arrive in". */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jscan.h"
#include "core/jw.h"
#include "model/call.h"

#define NOW 1767700000000LL

/* ---- building and applying events ---------------------------------------------------------- */

/* One Dialpad call event: its state, event_timestamp and other members (JSON
 * text without braces, "" for none). */
typedef struct {
    const char *state;
    int64_t ts;
    const char *fields;
} ev_t;

static void apply(cti_call_t *c, const ev_t *e, cti_call_effect_t *eff)
{
    char text[4096];
    int n =
        snprintf(text, sizeof text, "{\"call_id\":1,\"state\":\"%s\",\"event_timestamp\":%lld%s%s}",
                 e->state, (long long)e->ts, e->fields[0] ? "," : "", e->fields);
    assert_true(n > 0 && (size_t)n < sizeof text);
    cti_jdoc_t d;
    if (cti_jdoc_parse(&d, text, (size_t)n, NULL, 0) != 0)
        fail_msg("bad test event: %s", text);
    cti_call_apply(c, &d, 0, e->state, e->ts, NOW, eff);
    cti_jdoc_free(&d);
}

/* The leg as customers see it, and the bookkeeping the rules keep. */
static char *leg_text(const cti_call_t *c)
{
    cti_jw_t w = {0};
    cti_call_render(&w, c);
    char more[256];
    snprintf(more, sizeof more, ",\"_book\":\"%lld %lld %s %lld %s %d%d%d%d\"}",
             (long long)c->progress_ts, (long long)c->fields_ts, c->fields_state,
             (long long)c->active_ts, c->active_state, c->had_ended, c->had_connected,
             c->had_voicemail, c->post_call_ended);
    cti_jw_raw(&w, more, strlen(more));
    return cti_jw_take(&w, NULL);
}

/* ---- the transition table ------------------------------------------------------------------ */

#define DE         "\"date_ended\":1767628949803"
#define DC         "\"date_connected\":1767628806412"
#define IN         "\"direction\":\"inbound\""
#define OUT        "\"direction\":\"outbound\""
#define LONG_STATE "a_state_of_seventy_characters_that_no_one_has_seen_before_0123456789ab"

typedef struct {
    const char *name;
    ev_t before[3]; /* applied first, in order (state NULL: none) */
    ev_t ev;
    cti_call_status_t status;
    const char *state, *event, *outcome; /* outcome NULL: null */
    bool late;
    const char *data_key, *data_value; /* "" / NULL: no data */
} row_t;

/* one row per line, as in call.c's table */
/* clang-format off */
static const row_t rows[] = {
    /* progress states on a new leg */
    {"preanswer", {{0}}, {"preanswer", 10, IN}, CTI_STATUS_RINGING, "preanswer", "call.state", NULL, false, "state", "preanswer"},
    {"calling", {{0}}, {"calling", 10, OUT}, CTI_STATUS_RINGING, "calling", "call.dialing", NULL, false, "", NULL},
    {"ringing", {{0}}, {"ringing", 10, IN}, CTI_STATUS_RINGING, "ringing", "call.ringing", NULL, false, "", NULL},
    {"queued", {{0}}, {"queued", 10, IN}, CTI_STATUS_RINGING, "queued", "call.queued", NULL, false, "", NULL},
    {"connected", {{"ringing", 10, IN}}, {"connected", 20, DC}, CTI_STATUS_ACTIVE, "connected", "call.connected", NULL, false, "", NULL},
    {"hold", {{"ringing", 10, IN}, {"connected", 20, DC}}, {"hold", 30, DC}, CTI_STATUS_ON_HOLD, "hold", "call.hold", NULL, false, "", NULL},
    {"connected lifts hold: resumed", {{"connected", 20, DC}, {"hold", 30, DC}}, {"connected", 40, DC}, CTI_STATUS_ACTIVE, "connected", "call.resumed", NULL, false, "", NULL},
    {"connected older than hold: late", {{"hold", 30, DC}}, {"connected", 20, DC}, CTI_STATUS_ON_HOLD, "hold", "call.connected", NULL, true, "", NULL},
    {"hold older than connected: late", {{"connected", 40, DC}}, {"hold", 30, DC}, CTI_STATUS_ACTIVE, "connected", "call.hold", NULL, true, "", NULL},
    {"hangup after connected", {{"ringing", 10, IN}, {"connected", 20, DC}}, {"hangup", 50, DC "," DE}, CTI_STATUS_ENDED, "hangup", "call.ended", "answered", false, "", NULL},
    {"missed", {{"ringing", 10, IN}}, {"missed", 50, "\"date_connected\":null," DE}, CTI_STATUS_ENDED, "missed", "call.missed", "missed", false, "", NULL},
    {"hangup, outbound, not answered", {{"calling", 10, OUT}}, {"hangup", 50, OUT "," DE}, CTI_STATUS_ENDED, "hangup", "call.ended", "unanswered", false, "", NULL},
    {"voicemail", {{"ringing", 10, IN}}, {"voicemail", 50, ""}, CTI_STATUS_ENDED, "voicemail", "call.voicemail", "voicemail", false, "", NULL},
    {"late ringing after connected", {{"connected", 20, DC}}, {"ringing", 10, IN}, CTI_STATUS_ACTIVE, "connected", "call.ringing", NULL, true, "", NULL},
    {"late hangup still ends", {{"ringing", 10, IN}, {"connected", 60, DC}}, {"hangup", 50, DC "," DE}, CTI_STATUS_ENDED, "connected", "call.ended", "answered", true, "", NULL},
    {"progress after ended moves nothing back", {{"ringing", 10, IN}, {"hangup", 50, DE}}, {"connected", 60, DC}, CTI_STATUS_ENDED, "connected", "call.connected", "answered", false, "", NULL},
    /* post-call states: no status change, never late */
    {"voicemail_uploaded on a ringing leg", {{"ringing", 10, IN}}, {"voicemail_uploaded", 5, ""}, CTI_STATUS_RINGING, "ringing", "voicemail.ready", NULL, false, "", NULL},
    {"voicemail_uploaded counts as voicemail", {{"ringing", 10, IN}, {"hangup", 50, DE}}, {"voicemail_uploaded", 60, DE}, CTI_STATUS_ENDED, "hangup", "voicemail.ready", "voicemail", false, "", NULL},
    {"transcription counts as voicemail", {{"ringing", 10, IN}, {"hangup", 50, DE}}, {"transcription", 60, ""}, CTI_STATUS_ENDED, "hangup", "voicemail.transcribed", "voicemail", false, "", NULL},
    {"recording", {{"ringing", 10, IN}, {"connected", 20, DC}}, {"recording", 30, DC}, CTI_STATUS_ACTIVE, "connected", "call.recording", NULL, false, "", NULL},
    {"call_transcription", {{"ringing", 10, IN}}, {"call_transcription", 30, ""}, CTI_STATUS_RINGING, "ringing", "call.transcription", NULL, false, "", NULL},
    {"recap_summary", {{"ringing", 10, IN}}, {"recap_summary", 30, ""}, CTI_STATUS_RINGING, "ringing", "call.recap", NULL, false, "kind", "summary"},
    {"recap_été", {{"ringing", 10, IN}}, {"recap_\xc3\xa9t\xc3\xa9", 30, ""}, CTI_STATUS_RINGING, "ringing", "call.recap", NULL, false, "kind", "\xc3\xa9t\xc3\xa9"},
    {"an unknown state", {{"ringing", 10, IN}}, {"ai playbook", 30, ""}, CTI_STATUS_RINGING, "ringing", "call.state", NULL, false, "state", "ai playbook"},
    {"a 70-character state, whole", {{"ringing", 10, IN}}, {LONG_STATE, 30, ""}, CTI_STATUS_RINGING, "ringing", "call.state", NULL, false, "state", LONG_STATE},
    {"merged on a new leg", {{0}}, {"merged", 30, ""}, CTI_STATUS_RINGING, "", "call.state", NULL, false, "state", "merged"},
    /* date_ended ends a leg, whatever the state and the order */
    {"ringing, then recording with date_ended", {{"ringing", 10, IN}}, {"recording", 60, DE}, CTI_STATUS_ENDED, "ringing", "call.recording", "missed", false, "", NULL},
    {"recording with date_ended, then ringing", {{"recording", 60, IN "," DE}}, {"ringing", 10, IN}, CTI_STATUS_ENDED, "ringing", "call.ringing", "missed", false, "", NULL},
    {"connected, then csat with date_ended and date_connected", {{"connected", 20, IN ",\"date_connected\":null"}}, {"csat", 60, DC "," DE}, CTI_STATUS_ENDED, "connected", "call.state", "answered", false, "state", "csat"},
    {"a progress state with date_ended", {{0}}, {"ringing", 10, OUT "," DE}, CTI_STATUS_ENDED, "ringing", "call.ringing", "unanswered", false, "", NULL},
    {"date_ended null ends nothing", {{"ringing", 10, IN}}, {"recording", 60, "\"date_ended\":null"}, CTI_STATUS_RINGING, "ringing", "call.recording", NULL, false, "", NULL},
    {"date_ended 0 ends nothing", {{"ringing", 10, IN}}, {"recording", 60, "\"date_ended\":0"}, CTI_STATUS_RINGING, "ringing", "call.recording", NULL, false, "", NULL},
    /* the same event again changes nothing */
    {"hold twice", {{"connected", 20, DC}, {"hold", 30, DC}}, {"hold", 30, DC}, CTI_STATUS_ON_HOLD, "hold", "call.hold", NULL, false, "", NULL},
};
/* clang-format on */

static void test_transitions(void **state)
{
    (void)state;
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        const row_t *row = &rows[r];
        cti_call_t c;
        cti_call_effect_t eff;
        cti_call_init(&c, 1);
        for (int i = 0; i < 3 && row->before[i].state; i++)
            apply(&c, &row->before[i], &eff);
        apply(&c, &row->ev, &eff);
        const char *outcome = cti_call_outcome(&c);
        if (c.status != row->status || strcmp(c.state, row->state) ||
            strcmp(eff.event, row->event) || eff.late != row->late ||
            (outcome == NULL) != (row->outcome == NULL) ||
            (outcome && strcmp(outcome, row->outcome)) || strcmp(eff.data_key, row->data_key) ||
            (eff.data_value == NULL) != (row->data_value == NULL) ||
            (eff.data_value && strcmp(eff.data_value, row->data_value)))
            fail_msg("%s: got status %s, state \"%s\", %s%s, outcome %s, data %s=%s", row->name,
                     cti_call_status_name(c.status), c.state, eff.event, eff.late ? " (late)" : "",
                     outcome ? outcome : "null", eff.data_key,
                     eff.data_value ? eff.data_value : "-");
        cti_call_clear(&c);
    }
}

/* ---- order independence ---------------------------------------------------------------------- */

/* Every event of a flow carries every key, null when unknown, as Dialpad
 * sends them (fields from tests' fixtures, trimmed to what the model reads). */
#define PARTY(dir, ext)                                                                            \
    "\"direction\":\"" dir "\",\"external_number\":\"" ext                                         \
    "\",\"internal_number\":\"+14155550199\","                                                     \
    "\"contact\":{\"id\":6272614887833600,\"type\":\"local\",\"name\":\"(415) 555-0123\"},"        \
    "\"target\":{\"id\":5188674325413888,\"type\":\"user\",\"name\":\"Ana Lopez\"},"               \
    "\"is_transferred\":false,\"master_call_id\":null,\"entry_point_call_id\":null,"
#define NO_DUR "\"duration\":null,\"total_duration\":null,\"talk_time\":null,\"hold_time\":null"
#define NO_VM  ",\"voicemail_link\":null,\"transcription_text\":null,\"recording_details\":[]"

#define ANS    PARTY("inbound", "+14155550123") "\"date_started\":1767628800123,"
#define ANS_UP ANS "\"date_connected\":1767628806412,\"date_ended\":null," NO_DUR NO_VM
#define ANS_END                                                                                    \
    ANS "\"date_connected\":1767628806412,\"date_ended\":1767628949803,\"duration\":143391.0,"     \
        "\"total_duration\":149680.0,\"talk_time\":143391,\"hold_time\":30000" NO_VM

static const ev_t answered[] = {
    {"ringing", 1767628800901, ANS "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"connected", 1767628806530, ANS_UP},
    {"hold", 1767628860000, ANS_UP},
    {"connected", 1767628890000, ANS_UP},
    {"hangup", 1767628950212, ANS_END},
};

#define REC ANS "\"date_connected\":1767628806412,\"date_ended\":1767628949803," NO_DUR
static const ev_t recorded[] = {
    {"ringing", 1767628800901, ANS "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"connected", 1767628806530, ANS_UP},
    {"hangup", 1767628950212, ANS_END},
    {"recording", 1767628990000,
     REC ",\"recording_url\":[\"https://dialpad.com/r/6584729017745408\"],\"recording_details\":"
         "[{\"id\":\"6584729017745408\",\"recording_type\":\"callrecording\",\"url\":"
         "\"https://dialpad.com/r/6584729017745408\",\"duration\":59800}]"},
    {"recap_summary", 1767629100000, REC NO_VM},
};

/* A leg whose hangup never came: only post-call events say it ended. */
static const ev_t no_hangup[] = {
    {"ringing", 1767628800901, ANS "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"connected", 1767628806530, ANS_UP},
    {"recording", 1767628990000, REC NO_VM},
    {"recap_outcome", 1767629100000, REC NO_VM},
};

#define MIS                                                                                        \
    PARTY("inbound", "+12125550177") "\"date_started\":1767632400000,\"date_connected\":null,"
#define MIS_END                                                                                    \
    MIS "\"date_ended\":1767632424876,\"duration\":0,\"total_duration\":24876.5,\"talk_time\":0,"  \
        "\"hold_time\":0" NO_VM
static const ev_t missed[] = {
    {"ringing", 1767632400600, MIS "\"date_ended\":null," NO_DUR NO_VM},
    {"missed", 1767632425010, MIS_END},
    {"hangup", 1767632425030, MIS_END},
    {"csat", 1767632500000, MIS_END},
};

#define VM                                                                                         \
    PARTY("inbound", "+13105550142") "\"date_started\":1767636000000,\"date_connected\":null,"
#define VM_LINK "\"voicemail_link\":\"https://dialpad.com/r/5066549580791808\","
#define VM_DETAILS                                                                                 \
    "\"recording_details\":[{\"id\":\"5066549580791808\",\"recording_type\":\"voicemail\","        \
    "\"url\":\"https://dialpad.com/r/5066549580791808\",\"duration\":21840}]"
static const ev_t voicemail[] = {
    {"ringing", 1767636000500, VM "\"date_ended\":null," NO_DUR NO_VM},
    {"voicemail", 1767636029800, VM "\"date_ended\":null," NO_DUR NO_VM},
    {"hangup", 1767636052400,
     VM "\"date_ended\":1767636052310,\"duration\":0,\"total_duration\":52310.2,\"talk_time\":null,"
        "\"hold_time\":null" NO_VM},
    {"voicemail_uploaded", 1767636060000,
     VM "\"date_ended\":1767636052310," NO_DUR "," VM_LINK
        "\"transcription_text\":null," VM_DETAILS},
    {"transcription", 1767636071455,
     VM "\"date_ended\":1767636052310," NO_DUR "," VM_LINK
        "\"transcription_text\":\"Hi Ana, please call me back.\"," VM_DETAILS},
};

#define OB    PARTY("outbound", "+442079460958") "\"date_started\":1767640000000,"
#define OB_UP OB "\"date_connected\":1767640007000,"
static const ev_t outbound[] = {
    {"calling", 1767640000100, OB "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"connected", 1767640007100, OB_UP "\"date_ended\":null," NO_DUR NO_VM},
    {"hangup", 1767640067100,
     OB_UP "\"date_ended\":1767640067000,\"duration\":60000.0,\"total_duration\":67000.0,"
           "\"talk_time\":60000,\"hold_time\":0" NO_VM},
    {"recording", 1767640090000,
     OB_UP "\"date_ended\":1767640067000," NO_DUR ",\"recording_url\":"
           "[\"https://dialpad.com/r/6584729017745408\"]" NO_VM},
};

/* Unknown and unusual states among the usual ones. */
static const ev_t unusual[] = {
    {"ringing", 1767628800901, ANS "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"ai playbook", 1767628801000, ANS "\"date_connected\":null,\"date_ended\":null," NO_DUR NO_VM},
    {"hangup", 1767628950212,
     ANS "\"date_connected\":null,\"date_ended\":1767628949803," NO_DUR NO_VM},
    {"recap_\xc3\xa9t\xc3\xa9", 1767629100000,
     ANS "\"date_connected\":null,\"date_ended\":1767628949803," NO_DUR NO_VM},
};

typedef struct {
    const char *name;
    const ev_t *evs;
    int n;
    /* what the final leg must be, so the test cannot pass on a leg that is
     * merely always the same */
    cti_call_status_t status;
    const char *state, *outcome;
    int64_t ended_at, duration_ms;
} flow_t;

#define FLOW(a) (a), (int)(sizeof(a) / sizeof *(a))
/* clang-format off */
static const flow_t flows[] = {
    {"answered with hold", FLOW(answered), CTI_STATUS_ENDED, "hangup", "answered", 1767628949803, 143391},
    {"answered and recorded", FLOW(recorded), CTI_STATUS_ENDED, "hangup", "answered", 1767628949803, 143391},
    {"no hangup, recording ends it", FLOW(no_hangup), CTI_STATUS_ENDED, "connected", "answered", 1767628949803, CTI_NO_DURATION},
    {"missed", FLOW(missed), CTI_STATUS_ENDED, "hangup", "missed", 1767632424876, 0},
    {"voicemail", FLOW(voicemail), CTI_STATUS_ENDED, "hangup", "voicemail", 1767636052310, 0},
    {"outbound recorded", FLOW(outbound), CTI_STATUS_ENDED, "hangup", "answered", 1767640067000, 60000},
    {"unusual states", FLOW(unusual), CTI_STATUS_ENDED, "hangup", "missed", 1767628949803, CTI_NO_DURATION},
};
/* clang-format on */

/* The final leg after applying evs in the order of idx. */
static char *final_leg(const ev_t *evs, const int *idx, int n, const flow_t *f)
{
    cti_call_t c;
    cti_call_effect_t eff;
    cti_call_init(&c, 1);
    for (int i = 0; i < n; i++)
        apply(&c, &evs[idx[i]], &eff);
    const char *outcome = cti_call_outcome(&c);
    if (c.status != f->status || strcmp(c.state, f->state) || !outcome ||
        strcmp(outcome, f->outcome) || c.ended_at != f->ended_at || c.duration_ms != f->duration_ms)
        fail_msg("%s: ended as %s, state %s, outcome %s, ended_at %lld, duration %lld", f->name,
                 cti_call_status_name(c.status), c.state, outcome ? outcome : "null",
                 (long long)c.ended_at, (long long)c.duration_ms);
    char *text = leg_text(&c);
    cti_call_clear(&c);
    return text;
}

static bool next_permutation(int *a, int n)
{
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1])
        i--;
    if (i < 0)
        return false;
    int j = n - 1;
    while (a[j] <= a[i])
        j--;
    int t = a[i];
    a[i] = a[j], a[j] = t;
    for (int l = i + 1, r = n - 1; l < r; l++, r--)
        t = a[l], a[l] = a[r], a[r] = t;
    return true;
}

/* Every order of the flow's events (dup >= 0: with event dup delivered twice)
 * gives the leg the events in their own order give. */
static void check_flow(const flow_t *f, int dup)
{
    int idx[8], n = 0;
    for (int i = 0; i < f->n; i++) {
        idx[n++] = i;
        if (i == dup)
            idx[n++] = i;
    }
    char *want = final_leg(f->evs, idx, n, f);
    int perms = 0;
    do {
        char *got = final_leg(f->evs, idx, n, f);
        if (strcmp(got, want)) {
            char order[64] = "";
            for (int i = 0; i < n; i++)
                snprintf(order + strlen(order), sizeof order - strlen(order), "%d ", idx[i]);
            fail_msg("%s: order %sgives\n%s\nnot\n%s", f->name, order, got, want);
        }
        free(got);
        perms++;
    } while (next_permutation(idx, n));
    assert_true(perms > 1);
    free(want);
}

static void test_order_independent(void **state)
{
    (void)state;
    for (size_t f = 0; f < sizeof flows / sizeof *flows; f++) {
        check_flow(&flows[f], -1);
        check_flow(&flows[f], flows[f].n / 2);
        check_flow(&flows[f], flows[f].n - 1);
    }
}

/* The voicemail flow's leg in full: fields from the newest event that has them. */
static void test_voicemail_leg(void **state)
{
    (void)state;
    int idx[] = {4, 3, 2, 1, 0};
    cti_call_t c;
    cti_call_effect_t eff;
    cti_call_init(&c, 1);
    for (int i = 0; i < 5; i++)
        apply(&c, &voicemail[idx[i]], &eff);
    assert_int_equal(c.status, CTI_STATUS_ENDED);
    assert_string_equal(c.vm_url, "https://dialpad.com/r/5066549580791808");
    assert_string_equal(c.vm_transcript, "Hi Ana, please call me back.");
    assert_int_equal(c.vm_duration_ms, 21840);
    assert_int_equal(c.total_duration_ms, 52310);
    assert_int_equal(c.started_at, 1767636000000);
    assert_int_equal(c.dialpad_user_id, 5188674325413888);
    assert_string_equal(c.external_number, "+13105550142");
    cti_call_clear(&c);
}

/* custom_data (what a click-to-dial gave Dialpad) is kept from whichever event
 * carries it, in any order, and rendered; an empty one is none. */
static void test_custom_data(void **state)
{
    (void)state;
    const ev_t evs[] = {{"calling", 1000, "\"custom_data\":\"dial_7f3a\""},
                        {"connected", 2000, "\"custom_data\":\"\""},
                        {"hangup", 3000, "\"custom_data\":\"dial_7f3a\""}};
    for (int order = 0; order < 2; order++) {
        cti_call_t c;
        cti_call_effect_t eff;
        cti_call_init(&c, 1);
        for (int i = 0; i < 3; i++)
            apply(&c, &evs[order ? 2 - i : i], &eff);
        assert_string_equal(c.custom_data, "dial_7f3a");
        char *text = leg_text(&c);
        assert_non_null(strstr(text, "\"custom_data\":\"dial_7f3a\""));
        free(text);
        cti_call_clear(&c);
    }
    cti_call_t c;
    cti_call_effect_t eff;
    cti_call_init(&c, 1);
    apply(&c, &(ev_t){"ringing", 1000, ""}, &eff);
    assert_null(c.custom_data);
    char *text = leg_text(&c);
    assert_non_null(strstr(text, "\"custom_data\":null"));
    free(text);
    cti_call_clear(&c);
}

/* A leg ended by reconciliation: Dialpad's own progress events that arrive
 * after are late whatever their timestamp and move nothing; post-call events
 * still fill their fields. */
static void test_reconciled_leg(void **state)
{
    (void)state;
    cti_call_t c;
    cti_call_effect_t eff;
    cti_call_init(&c, 1);
    apply(&c, &(ev_t){"missed", 5000, "\"date_ended\":4900,\"direction\":\"inbound\""}, &eff);
    assert_false(eff.late);
    c.reconciled = true; /* as the processor marks it after applying its final event */
    apply(&c, &(ev_t){"hangup", 5100, "\"date_ended\":4900"}, &eff);
    assert_true(eff.late);
    assert_string_equal(eff.event, "call.ended");
    apply(&c, &(ev_t){"ringing", 1000, ""}, &eff);
    assert_true(eff.late);
    assert_string_equal(c.state, "missed");
    assert_int_equal(c.status, CTI_STATUS_ENDED);
    assert_string_equal(cti_call_outcome(&c), "missed");
    apply(&c, &(ev_t){"transcription", 9000, "\"transcription_text\":\"hi\""}, &eff);
    assert_false(eff.late); /* post-call: never late */
    assert_string_equal(c.vm_transcript, "hi");
    cti_call_clear(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_voicemail_leg),
        cmocka_unit_test(test_custom_data),
        cmocka_unit_test(test_reconciled_leg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
