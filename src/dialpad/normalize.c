/* normalize.c — see normalize.h. */
#include "dialpad/normalize.h"
#include "core/common.h"
#include "core/util.h"
#include "dialpad/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "id", or a name ending in "_id". */
static bool idish(const char *key, size_t n)
{
    return (n == 2 && !memcmp(key, "id", 2)) || (n > 3 && !memcmp(key + n - 3, "_id", 3));
}

void cti_jw_normalized(cti_jw_t *w, const cti_jdoc_t *d, int i)
{
    int k = -1, first = cti_jdoc_first(d, i, &k);
    int64_t id;
    cti_jw_lit(w, "{");
    for (int m = first; m >= 0; m = cti_jdoc_after(d, i, m, &k)) {
        if (m != first)
            cti_jw_lit(w, ",");
        cti_jw_jdoc(w, d, k);
        cti_jw_lit(w, ":");
        char key[64];
        long n = cti_jdoc_str(d, k, key, sizeof key);
        if (n > 0 && (size_t)n < sizeof key && idish(key, (size_t)n) && cti_jdoc_int(d, m, &id)) {
            char buf[24];
            int len = snprintf(buf, sizeof buf, "\"%lld\"", (long long)id);
            cti_jw_raw(w, buf, (size_t)len);
        } else {
            cti_jw_jdoc(w, d, m);
        }
    }
    cti_jw_lit(w, "}");
}

/* The object at token i normalized, as owned text; NULL when i is not an object. */
static char *normalized(const cti_jdoc_t *d, int i)
{
    if (cti_jdoc_type(d, i) != CTI_JT_OBJECT)
        return NULL;
    cti_jw_t w = {0};
    cti_jw_normalized(&w, d, i);
    return cti_jw_take(&w, NULL);
}

#define GET(key) cti_jdoc_get(d, 0, key)

/* A string member decoded into dst ("" when absent or not a string), cut at a
 * character boundary. */
static void copy_member(const cti_jdoc_t *d, const char *key, char *dst, size_t cap)
{
    if (cti_jdoc_str(d, GET(key), dst, cap) < 0)
        dst[0] = '\0';
}

void cti_dp_sms_read(const cti_jdoc_t *d, int64_t event_timestamp, cti_dp_sms_t *m)
{
    memset(m, 0, sizeof *m);
    cti_dp_id_at(d, GET("id"), &m->id);
    copy_member(d, "direction", m->direction, sizeof m->direction);
    copy_member(d, "from_number", m->from_number, sizeof m->from_number);
    copy_member(d, "message_status", m->status, sizeof m->status);
    int to = GET("to_number"), text = GET("text"), target = GET("target");
    cti_jw_t w = {0};
    if (cti_jdoc_type(d, to) == CTI_JT_ARRAY) {
        cti_jw_jdoc(&w, d, to);
    } else if (cti_jdoc_type(d, to) == CTI_JT_STRING) {
        cti_jw_lit(&w, "[");
        cti_jw_jdoc(&w, d, to);
        cti_jw_lit(&w, "]");
    } else {
        cti_jw_lit(&w, "[]");
    }
    m->to_numbers = cti_jw_take(&w, NULL);
    m->text = cti_jdoc_strdup(d, text);
    if (text >= 0)
        cti_jw_jdoc(&w, d, text);
    else
        cti_jw_null(&w);
    m->text_json = cti_jw_take(&w, NULL);
    if (cti_jdoc_str_eq(d, cti_jdoc_get(d, target, "type"), "user"))
        cti_dp_id_at(d, cti_jdoc_get(d, target, "id"), &m->dialpad_user_id);
    m->contact = normalized(d, GET("contact"));
    m->target = normalized(d, target);
    if (!cti_dp_ms_at(d, GET("created_date"), &m->created_at))
        m->created_at = event_timestamp;
}

void cti_dp_sms_clear(cti_dp_sms_t *m)
{
    free(m->text);
    free(m->text_json);
    free(m->to_numbers);
    free(m->contact);
    free(m->target);
    memset(m, 0, sizeof *m);
}

/* A JSON object text, or null. */
static void object_or_null(cti_jw_t *w, const char *json)
{
    if (json)
        cti_jw_raw(w, json, strlen(json));
    else
        cti_jw_null(w);
}

void cti_dp_sms_render(cti_jw_t *w, const cti_dp_sms_t *m)
{
    cti_jw_lit(w, "{");
    cti_jw_key(w, "id"), cti_jw_id(w, m->id);
    cti_jw_key(w, "direction"), cti_jw_text(w, m->direction);
    cti_jw_key(w, "from_number"), cti_jw_text(w, m->from_number);
    cti_jw_key(w, "to_numbers"), cti_jw_raw(w, m->to_numbers, strlen(m->to_numbers));
    cti_jw_key(w, "text"), cti_jw_raw(w, m->text_json, strlen(m->text_json));
    cti_jw_key(w, "status"), cti_jw_text(w, m->status);
    cti_jw_key(w, "dialpad_user_id"), cti_jw_id(w, m->dialpad_user_id);
    cti_jw_key(w, "contact"), object_or_null(w, m->contact);
    cti_jw_key(w, "created_at"), cti_jw_time(w, m->created_at);
    cti_jw_lit(w, "}");
}

void cti_dp_agent_data(cti_jw_t *w, const cti_jdoc_t *d)
{
    int k = -1;
    bool first = true;
    cti_jw_lit(w, "{");
    for (int m = cti_jdoc_first(d, 0, &k); m >= 0; m = cti_jdoc_after(d, 0, m, &k)) {
        if (cti_jdoc_str_eq(d, k, "event_timestamp"))
            continue;
        if (!first)
            cti_jw_lit(w, ",");
        first = false;
        cti_jw_jdoc(w, d, k);
        cti_jw_lit(w, ":");
        if (cti_jdoc_str_eq(d, k, "target") && cti_jdoc_type(d, m) == CTI_JT_OBJECT)
            cti_jw_normalized(w, d, m);
        else
            cti_jw_jdoc(w, d, m);
    }
    cti_jw_lit(w, "}");
}

void cti_dp_contact_data(cti_jw_t *w, const cti_jdoc_t *d)
{
    int action = GET("event"), contact = GET("contact");
    cti_jw_lit(w, "{");
    cti_jw_key(w, "action");
    if (action >= 0)
        cti_jw_jdoc(w, d, action);
    else
        cti_jw_null(w);
    cti_jw_key(w, "contact");
    if (cti_jdoc_type(d, contact) == CTI_JT_OBJECT)
        cti_jw_normalized(w, d, contact);
    else
        cti_jw_null(w);
    cti_jw_lit(w, "}");
}
