/* test_jw.c — unit tests for src/core/jw.c (the JSON text writer) and the call
 * object it renders (src/model/call.c): every output must parse as JSON and
 * say exactly what was written. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/jw.h"
#include "model/call.h"

/* Parses w's text (which must be valid JSON) and frees w. */
static json_t *parse(cti_jw_t *w)
{
    size_t len;
    char *text = cti_jw_take(w, &len);
    assert_int_equal(strlen(text), len);
    json_error_t err;
    json_t *v = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        fail_msg("not JSON (%s): %s", err.text, text);
    free(text);
    return v;
}

static void test_commas_and_nesting(void **state)
{
    cti_jw_t w = {0};
    cti_jw_lit(&w, "{");
    cti_jw_key(&w, "a"), cti_jw_int(&w, 1);
    cti_jw_key(&w, "list"), cti_jw_lit(&w, "[");
    for (int i = 0; i < 3; i++)
        cti_jw_item(&w), cti_jw_int(&w, i);
    cti_jw_lit(&w, "]");
    cti_jw_key(&w, "empty"), cti_jw_lit(&w, "[]");
    cti_jw_key(&w, "obj"), cti_jw_lit(&w, "{");
    cti_jw_key(&w, "t"), cti_jw_bool(&w, true);
    cti_jw_key(&w, "f"), cti_jw_bool(&w, false);
    cti_jw_key(&w, "n"), cti_jw_null(&w);
    cti_jw_lit(&w, "}}");
    assert_string_equal(w.p, "{\"a\":1,\"list\":[0,1,2],\"empty\":[],\"obj\":{\"t\":true,"
                             "\"f\":false,\"n\":null}}");
    json_decref(parse(&w));
}

static void test_strings_escaped(void **state)
{
    const char *tricky = "quote\" back\\ nl\n cr\r tab\t bell\x07 esc\x1b del\x7f "
                         "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x93\x9e slash/";
    cti_jw_t w = {0};
    cti_jw_lit(&w, "[");
    cti_jw_item(&w), cti_jw_str(&w, tricky);
    cti_jw_item(&w), cti_jw_str(&w, NULL);
    cti_jw_item(&w), cti_jw_text(&w, "");
    cti_jw_item(&w), cti_jw_str(&w, "");
    cti_jw_item(&w), cti_jw_str_n(&w, "a\0b", 3);
    cti_jw_lit(&w, "]");
    json_t *v = parse(&w);
    assert_string_equal(json_string_value(json_array_get(v, 0)), tricky);
    assert_true(json_is_null(json_array_get(v, 1)));
    assert_true(json_is_null(json_array_get(v, 2)));
    assert_string_equal(json_string_value(json_array_get(v, 3)), "");
    assert_int_equal(json_string_length(json_array_get(v, 4)), 3);
    json_decref(v);
}

static void test_numbers_ids_times(void **state)
{
    cti_jw_t w = {0};
    cti_jw_lit(&w, "[");
    cti_jw_item(&w), cti_jw_int(&w, INT64_MIN);
    cti_jw_item(&w), cti_jw_int(&w, INT64_MAX);
    cti_jw_item(&w), cti_jw_id(&w, INT64_C(9007199254740993)); /* above 2^53: a string */
    cti_jw_item(&w), cti_jw_id(&w, 0);
    cti_jw_item(&w), cti_jw_time(&w, INT64_C(1767628800123));
    cti_jw_item(&w), cti_jw_time(&w, 0);
    cti_jw_lit(&w, "]");
    assert_string_equal(w.p, "[-9223372036854775808,9223372036854775807,\"9007199254740993\","
                             "null,\"2026-01-05T16:00:00.123Z\",null]");
    json_decref(parse(&w));
}

static void test_grows_past_any_start(void **state)
{
    cti_jw_t w = {0};
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk - 1);
    chunk[sizeof chunk - 1] = '\0';
    cti_jw_lit(&w, "[");
    for (int i = 0; i < 300; i++)
        cti_jw_item(&w), cti_jw_str(&w, chunk);
    cti_jw_lit(&w, "]");
    json_t *v = parse(&w);
    assert_int_equal(json_array_size(v), 300);
    json_decref(v);
    char *empty = cti_jw_take(&w, NULL); /* nothing written: "" */
    assert_string_equal(empty, "");
    free(empty);
}

static void test_json_values(void **state)
{
    json_t *obj = json_pack("{s:s, s:[i, i]}", "name", "Ana \"L\"", "list", 1, 2);
    cti_jw_t w = {0};
    cti_jw_lit(&w, "{");
    cti_jw_key(&w, "v"), cti_jw_json(&w, obj);
    cti_jw_key(&w, "none"), cti_jw_json(&w, NULL);
    cti_jw_lit(&w, "}");
    json_t *v = parse(&w);
    assert_true(json_equal(json_object_get(v, "v"), obj));
    assert_true(json_is_null(json_object_get(v, "none")));
    json_decref(v);
    json_decref(obj);
}

/* The rendered call object is the contract's, whatever the call holds. */
static void test_call_render(void **state)
{
    cti_call_t c;
    cti_call_init(&c, INT64_C(6019124213350400));
    snprintf(c.direction, sizeof c.direction, "inbound");
    snprintf(c.state, sizeof c.state, "hangup");
    c.status = CTI_STATUS_ENDED;
    c.had_ended = true;
    c.contact = strdup("{\"id\":\"1\",\"name\":\"O'Brien \\\"Bob\\\" \xc3\xa9\"}");
    c.vm_transcript = strdup("line one\nline two");
    c.vm_recording_id = 42;
    c.is_transferred = 1;
    c.duration_ms = 0;
    c.updated_at = INT64_C(1767628800123);
    cti_jw_t w = {0};
    cti_call_render(&w, &c);
    cti_call_close(&w, "crm-\"7\"");
    json_t *v = parse(&w);
    assert_string_equal(json_string_value(json_object_get(v, "id")), "6019124213350400");
    assert_string_equal(json_string_value(json_object_get(v, "status")), "ended");
    assert_string_equal(json_string_value(json_object_get(v, "outcome")), "missed");
    assert_string_equal(json_string_value(json_object_get(v, "crm_user_id")), "crm-\"7\"");
    json_t *contact = json_pack("{s:s, s:s}", "id", "1", "name", "O'Brien \"Bob\" \xc3\xa9");
    assert_true(json_equal(json_object_get(v, "contact"), contact));
    json_decref(contact);
    assert_true(json_is_null(json_object_get(v, "target")));
    assert_true(json_is_true(json_object_get(v, "is_transferred")));
    assert_int_equal(json_integer_value(json_object_get(v, "duration_ms")), 0);
    assert_true(json_is_null(json_object_get(v, "talk_time_ms")));
    json_t *vm = json_object_get(v, "voicemail");
    assert_string_equal(json_string_value(json_object_get(vm, "transcript")),
                        "line one\nline two");
    assert_string_equal(json_string_value(json_object_get(vm, "recording_id")), "42");
    assert_true(json_is_null(json_object_get(vm, "url")));
    assert_int_equal(json_array_size(json_object_get(v, "recording_urls")), 0);
    assert_string_equal(json_string_value(json_object_get(v, "updated_at")),
                        "2026-01-05T16:00:00.123Z");
    assert_int_equal(json_object_size(v), 26); /* with custom_data */
    json_decref(v);

    cti_call_render(&w, &c); /* no CRM user: null */
    cti_call_close(&w, NULL);
    v = parse(&w);
    assert_true(json_is_null(json_object_get(v, "crm_user_id")));
    json_decref(v);
    cti_call_clear(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commas_and_nesting), cmocka_unit_test(test_strings_escaped),
        cmocka_unit_test(test_numbers_ids_times),  cmocka_unit_test(test_grows_past_any_start),
        cmocka_unit_test(test_json_values),        cmocka_unit_test(test_call_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
