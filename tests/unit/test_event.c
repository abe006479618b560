/* test_event.c — unit tests for src/dialpad/event.c (kinds and dedupe keys)
 * and src/dialpad/normalize.c (what customers get of SMS, agent status and
 * contact events): any state is a key, distinct states never share one, and
 * whatever the extras hold the output is JSON jansson reads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/jscan.h"
#include "core/jw.h"
#include "dialpad/event.h"
#include "dialpad/normalize.h"

static void classify(const char *text, cti_ev_info_t *info)
{
    cti_jdoc_t d;
    if (cti_jdoc_parse(&d, text, strlen(text), NULL, 0) != 0)
        fail_msg("bad test event: %s", text);
    cti_ev_classify(&d, text, strlen(text), info);
    cti_jdoc_free(&d);
}

/* The dedupe key of a call event with this state (JSON text of the string). */
static void call_key(const char *state_json, char *key)
{
    char text[1024];
    snprintf(text, sizeof text, "{\"call_id\":1,\"state\":%s,\"event_timestamp\":5}", state_json);
    cti_ev_info_t info;
    classify(text, &info);
    if (info.problem)
        fail_msg("%s: %s", state_json, info.problem);
    assert_int_equal(info.kind, CTI_EV_CALL);
    strcpy(key, info.dedupe_key);
}

static void test_any_state_is_a_key(void **state)
{
    (void)state;
    char s150[200] = "\"", key[CTI_DEDUPE_MAX];
    memset(s150 + 1, 'x', 150);
    strcpy(s150 + 151, "\"");
    static const struct {
        const char *state, *key;
    } cases[] = {
        {"\"ringing\"", "c:1:ringing:5"},
        {"\"a%b\"", "c:1:a%b:5"}, /* as every key stored before other states were taken */
        {"\"ai playbook\"", "c:1:u:ai%20playbook:5"},
        {"\"recap_\\u00e9t\\u00e9\"", "c:1:u:recap_%C3%A9t%C3%A9:5"},
        {"\"recap_\xc3\xa9t\xc3\xa9\"", "c:1:u:recap_%C3%A9t%C3%A9:5"}, /* the same, unescaped */
        {"\"u:x\"", "c:1:u:u%3Ax:5"},
        {"\"a_state_of_seventy_characters_that_no_one_has_seen_before_0123456789ab\"",
         "c:1:u:a_state_of_seventy_characters_that_no_one_has_seen_before_0123456789ab:5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        call_key(cases[i].state, key);
        assert_string_equal(key, cases[i].key);
    }
    call_key(s150, key);
    assert_true(!strncmp(key, "c:1:h:", 6) && strlen(key) == 6 + 64 + 2);
    /* words that read alike (U+FFFD) are still distinct events */
    static const char *const distinct[] = {"\"a\\u0000\"", "\"a\\ufffd\"", "\"a\\ud83d\"",
                                           "\"a\\u0000\\u0000\"", "\"a\\\\u0000\""};
    char keys[5][CTI_DEDUPE_MAX];
    for (int i = 0; i < 5; i++) {
        call_key(distinct[i], keys[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(keys[i], keys[j]))
                fail_msg("%s and %s share the key %s", distinct[i], distinct[j], keys[i]);
    }
    /* not a word: still a bad call event */
    cti_ev_info_t info;
    classify("{\"call_id\":1,\"state\":\"\",\"event_timestamp\":5}", &info);
    assert_non_null(info.problem);
    classify("{\"call_id\":1,\"state\":7,\"event_timestamp\":5}", &info);
    assert_non_null(info.problem);
}

/* The written text must parse with jansson without flags (the hub reads it). */
static json_t *must_parse(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    if (!v)
        fail_msg("jansson refuses %s: %s", text, err.text);
    return v;
}

static void test_normalized_kinds(void **state)
{
    (void)state;
    const char *sms = "{\"id\": 7, \"direction\": \"outbound\", \"to_number\": \"+14155550199\", "
                      "\"text\": \"hi \\ud83d\", \"target\": {\"id\": 9, \"type\": \"user\"}, "
                      "\"contact\": {\"id\": 5, \"n\": 12345678901234567890}, \"x\": 1e400, "
                      "\"created_date\": 1000, \"message_status\": \"pending\"}";
    cti_jdoc_t d;
    assert_int_equal(cti_jdoc_parse(&d, sms, strlen(sms), NULL, 0), 0);
    cti_dp_sms_t m;
    cti_dp_sms_read(&d, 2000, &m);
    assert_true(m.id == 7 && m.dialpad_user_id == 9 && m.created_at == 1000);
    assert_string_equal(m.to_numbers, "[\"+14155550199\"]");
    assert_string_equal(m.text, "hi \xef\xbf\xbd");
    assert_string_equal(m.contact, "{\"id\":\"5\",\"n\":\"12345678901234567890\"}");
    assert_string_equal(m.target, "{\"id\":\"9\",\"type\":\"user\"}");
    cti_jw_t w = {0};
    cti_dp_sms_render(&w, &m);
    json_t *v = must_parse(w.p);
    assert_string_equal(json_string_value(json_object_get(v, "text")), "hi \xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(v, "status")), "pending");
    json_decref(v);
    cti_jw_free(&w);
    cti_dp_sms_clear(&m);
    cti_jdoc_free(&d);

    char agent[512];
    int n = snprintf(agent, sizeof agent,
                     "{\"target\": {\"id\": 9, \"name\": \"A\\u0000\"}, \"event_timestamp\": 3, "
                     "\"on_duty_status\": \"available\", \"deep\": ");
    for (int i = 0; i < 100; i++) /* past 64 levels: written as null */
        agent[n++] = '[';
    for (int i = 0; i < 100; i++)
        agent[n++] = ']';
    snprintf(agent + n, sizeof agent - (size_t)n, "}");
    assert_int_equal(cti_jdoc_parse(&d, agent, strlen(agent), NULL, 0), 0);
    cti_dp_agent_data(&w, &d);
    v = must_parse(w.p);
    assert_null(json_object_get(v, "event_timestamp"));
    assert_true(json_is_array(json_object_get(v, "deep")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "target"), "id")), "9");
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "target"), "name")),
                        "A\xef\xbf\xbd");
    json_decref(v);
    cti_jw_free(&w);
    cti_jdoc_free(&d);

    const char *contact = "{\"event\": \"Deleted\", \"contact\": {\"id\": 4, \"big\": -1e999}}";
    assert_int_equal(cti_jdoc_parse(&d, contact, strlen(contact), NULL, 0), 0);
    cti_dp_contact_data(&w, &d);
    assert_string_equal(w.p, "{\"action\":\"Deleted\",\"contact\":{\"id\":\"4\",\"big\":\"-1e999\"}}");
    json_decref(must_parse(w.p));
    cti_jw_free(&w);
    cti_jdoc_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_any_state_is_a_key),
        cmocka_unit_test(test_normalized_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
