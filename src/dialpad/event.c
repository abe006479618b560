/* event.c — see event.h. */
#include "dialpad/event.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const char *cti_ev_kind_name(cti_ev_kind_t kind)
{
    static const char *const names[] = {"call", "sms", "agent_status", "contact", "unknown"};
    return names[kind];
}

bool cti_dp_id(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out > 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return s[0] >= '1' && s[0] <= '9' && cti_parse_i64(s, out) == 0;
    }
    /* a real that is a whole number below 2^53 is still exact */
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d > 0 && d < 9007199254740992.0 && d == floor(d)) {
            *out = (int64_t)d;
            return true;
        }
    }
    return false;
}

bool cti_dp_ms(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || fabs(d) > 9.2e18)
            return false;
        *out = (int64_t)llround(d);
        return true;
    }
    if (json_is_string(v)) {
        double d;
        char *end;
        const char *s = json_string_value(v);
        /* decimal only: strtod alone would also take hex ("0x10"), "inf", "nan" */
        if (!*s || s[strspn(s, "0123456789+-.eE")] != '\0')
            return false;
        d = strtod(s, &end);
        if (*end || !isfinite(d) || fabs(d) > 9.2e18)
            return false;
        *out = (int64_t)llround(d);
        return true;
    }
    return false;
}

/* A state or status string usable in a key: short, printable, no ':'. */
static const char *key_word(json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 64)
        return NULL;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == ':' || (unsigned char)*p >= 0x7f)
            return NULL;
    return s;
}

static void raw_key(const char *raw, size_t len, cti_ev_info_t *out)
{
    unsigned char d[CTI_SHA256_LEN];
    char hex[2 * CTI_SHA256_LEN + 1];
    cti_sha256(raw, len, d);
    cti_hex(d, sizeof d, hex);
    snprintf(out->dedupe_key, sizeof out->dedupe_key, "r:%s", hex);
}

static void classify_call(json_t *p, cti_ev_info_t *out)
{
    int64_t id;
    const char *state = key_word(json_object_get(p, "state"));
    out->kind = CTI_EV_CALL;
    if (!cti_dp_id(json_object_get(p, "call_id"), &id))
        out->problem = "call event without a valid call_id";
    else if (!state)
        out->problem = "call event without a valid state";
    else if (!out->event_timestamp)
        out->problem = "call event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "c:%lld:%s:%lld", (long long)id, state,
                 (long long)out->event_timestamp);
}

static void classify_sms(json_t *p, cti_ev_info_t *out)
{
    int64_t id;
    const char *status = key_word(json_object_get(p, "message_status"));
    out->kind = CTI_EV_SMS;
    if (!cti_dp_id(json_object_get(p, "id"), &id))
        out->problem = "SMS event without a valid id";
    else if (!out->event_timestamp)
        out->problem = "SMS event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "s:%lld:%s:%lld", (long long)id,
                 status ? status : "", (long long)out->event_timestamp);
}

static void classify_contact(json_t *p, cti_ev_info_t *out)
{
    int64_t id;
    const char *ev = key_word(json_object_get(p, "event"));
    out->kind = CTI_EV_CONTACT;
    if (!cti_dp_id(json_object_get(json_object_get(p, "contact"), "id"), &id))
        out->problem = "contact event without a valid contact.id";
    else if (!out->event_timestamp)
        out->problem = "contact event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "k:%lld:%s:%lld", (long long)id,
                 ev ? ev : "", (long long)out->event_timestamp);
}

static void classify_agent(json_t *p, cti_ev_info_t *out)
{
    int64_t id;
    out->kind = CTI_EV_AGENT;
    if (!cti_dp_id(json_object_get(json_object_get(p, "target"), "id"), &id))
        out->problem = "agent status event without a valid target.id";
    else if (!out->event_timestamp)
        out->problem = "agent status event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "a:%lld:%lld", (long long)id,
                 (long long)out->event_timestamp);
}

void cti_ev_classify(json_t *p, const char *raw, size_t len, cti_ev_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = CTI_EV_UNKNOWN;
    int64_t ts;
    if (cti_dp_ms(json_object_get(p, "event_timestamp"), &ts) && ts > 0)
        out->event_timestamp = ts;
    if (json_object_get(p, "call_id") || (json_object_get(p, "state") && !json_object_get(p, "id")))
        classify_call(p, out);
    else if (json_object_get(p, "message_status") || json_object_get(p, "to_number") ||
             json_object_get(p, "from_number"))
        classify_sms(p, out);
    else if (json_is_string(json_object_get(p, "event")) && json_is_object(json_object_get(p, "contact")))
        classify_contact(p, out);
    else if (json_object_get(p, "on_duty_status") || json_object_get(p, "availability_status"))
        classify_agent(p, out);
    else
        out->problem = "not a Dialpad call, SMS, agent status or contact event";
    if (out->problem || !out->dedupe_key[0])
        raw_key(raw, len, out);
}
