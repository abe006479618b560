/* event.c — see event.h. */
#include "dialpad/event.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *cti_ev_kind_name(cti_ev_kind_t kind)
{
    static const char *const names[] = {"call", "sms", "agent_status", "contact", "unknown",
                                          "server"};
    return names[kind];
}

/* ---- ids and times, from either representation -------------------------------------- */

static bool id_text(const char *s, int64_t *out)
{
    return s[0] >= '1' && s[0] <= '9' && cti_parse_i64(s, out) == 0;
}

/* A real that is a whole number below 2^53 is still exact. */
static bool id_real(double d, int64_t *out)
{
    if (d > 0 && d < 9007199254740992.0 && d == floor(d)) {
        *out = (int64_t)d;
        return true;
    }
    return false;
}

static bool ms_real(double d, int64_t *out)
{
    if (!isfinite(d) || fabs(d) > 9.2e18)
        return false;
    *out = (int64_t)llround(d);
    return true;
}

static bool ms_text(const char *s, int64_t *out)
{
    char *end;
    /* decimal only: strtod alone would also take hex ("0x10"), "inf", "nan" */
    if (!*s || s[strspn(s, "0123456789+-.eE")] != '\0')
        return false;
    double d = strtod(s, &end);
    return !*end && ms_real(d, out);
}

bool cti_dp_id(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out > 0;
    }
    if (json_is_string(v))
        return id_text(json_string_value(v), out);
    return json_is_real(v) && id_real(json_real_value(v), out);
}

bool cti_dp_ms(json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_real(v))
        return ms_real(json_real_value(v), out);
    return json_is_string(v) && ms_text(json_string_value(v), out);
}

/* A short string token decoded (ids and times are short). */
static bool short_text(const cti_jdoc_t *d, int i, char *buf, size_t cap)
{
    long n = cti_jdoc_str(d, i, buf, cap);
    return n >= 0 && (size_t)n < cap;
}

bool cti_dp_id_at(const cti_jdoc_t *d, int i, int64_t *out)
{
    char buf[32];
    double r;
    if (cti_jdoc_int(d, i, out))
        return *out > 0;
    if (cti_jdoc_type(d, i) == CTI_JT_NUMBER)
        return cti_jdoc_real(d, i, &r) && id_real(r, out);
    return short_text(d, i, buf, sizeof buf) && id_text(buf, out);
}

bool cti_dp_ms_at(const cti_jdoc_t *d, int i, int64_t *out)
{
    double r;
    if (cti_jdoc_int(d, i, out))
        return true;
    if (cti_jdoc_type(d, i) == CTI_JT_NUMBER)
        return cti_jdoc_real(d, i, &r) && ms_real(r, out);
    char *text = cti_jdoc_strdup(d, i); /* any length, as strtod takes it */
    bool ok = text && ms_text(text, out);
    free(text);
    return ok;
}

/* Whether a byte stands for itself in a key: printable ASCII but ':'. */
static bool key_plain(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != ':';
}

/* A state, status or contact event word as a dedupe key part, written to buf
 * (KEY_PART bytes); NULL when token i is not a non-empty string. Every string
 * is usable, any length or bytes, and distinct words give distinct parts:
 *  - up to 64 printable ASCII bytes but ':': as they are (every key stored
 *    before other words were accepted has this form, so it stays the same);
 *  - otherwise "u:" and the word percent-encoded (every byte but printable
 *    ASCII other than ':' and '%' as %XX) when that takes at most 100 bytes
 *    ("recap_été", "ai playbook");
 *  - longer: "h:" and the SHA-256 of the word in hex;
 *  - a word with a \u0000 or lone surrogate escape (which reads with U+FFFD,
 *    see jscan.h, so two such words could read alike): "x:" and the SHA-256
 *    of its text as sent.
 * The last three hold a ':', which the first cannot: no form collides with
 * another. */
#define KEY_PART 104
static const char *key_word(const cti_jdoc_t *d, int i, char *buf)
{
    char small[128], *heap = NULL;
    long len = cti_jdoc_str(d, i, small, sizeof small);
    if (len <= 0)
        return NULL;
    if (d->tok[i].flags & CTI_JF_ODD) { /* reads with U+FFFD: key its exact text instead */
        unsigned char h[CTI_SHA256_LEN];
        cti_sha256(d->text + d->tok[i].start, d->tok[i].len, h);
        memcpy(buf, "x:", 2);
        cti_hex(h, sizeof h, buf + 2);
        return buf;
    }
    const char *w = (size_t)len < sizeof small ? small : (heap = cti_jdoc_strdup(d, i));
    size_t n = (size_t)len, k = 0;
    bool plain = n <= 64;
    for (size_t j = 0; j < n && plain; j++)
        plain = key_plain((unsigned char)w[j]);
    if (plain) {
        memcpy(buf, w, n + 1);
        return buf;
    }
    for (size_t j = 0; j < n; j++) /* its percent-encoded length */
        k += key_plain((unsigned char)w[j]) && w[j] != '%' ? 1 : 3;
    if (2 + k <= 100) {
        k = (size_t)snprintf(buf, KEY_PART, "u:");
        for (size_t j = 0; j < n; j++) {
            unsigned char c = (unsigned char)w[j];
            if (key_plain(c) && c != '%')
                buf[k++] = (char)c;
            else
                k += (size_t)snprintf(buf + k, KEY_PART - k, "%%%02X", c);
        }
        buf[k] = '\0';
    } else {
        unsigned char h[CTI_SHA256_LEN];
        cti_sha256(w, n, h);
        memcpy(buf, "h:", 2);
        cti_hex(h, sizeof h, buf + 2);
    }
    free(heap);
    return buf;
}

static void raw_key(const char *raw, size_t len, cti_ev_info_t *out)
{
    unsigned char d[CTI_SHA256_LEN];
    char hex[2 * CTI_SHA256_LEN + 1];
    cti_sha256(raw, len, d);
    cti_hex(d, sizeof d, hex);
    snprintf(out->dedupe_key, sizeof out->dedupe_key, "r:%s", hex);
}

#define GET(key) cti_jdoc_get(d, 0, key)

static void classify_call(const cti_jdoc_t *d, cti_ev_info_t *out)
{
    int64_t id;
    char word[KEY_PART];
    const char *state = key_word(d, GET("state"), word);
    out->kind = CTI_EV_CALL;
    if (!cti_dp_id_at(d, GET("call_id"), &id))
        out->problem = "call event without a valid call_id";
    else if (!state)
        out->problem = "call event without a valid state";
    else if (!out->event_timestamp)
        out->problem = "call event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "c:%lld:%s:%lld", (long long)id, state,
                 (long long)out->event_timestamp);
}

static void classify_sms(const cti_jdoc_t *d, cti_ev_info_t *out)
{
    int64_t id;
    char word[KEY_PART];
    const char *status = key_word(d, GET("message_status"), word);
    out->kind = CTI_EV_SMS;
    if (!cti_dp_id_at(d, GET("id"), &id))
        out->problem = "SMS event without a valid id";
    else if (!out->event_timestamp)
        out->problem = "SMS event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "s:%lld:%s:%lld", (long long)id,
                 status ? status : "", (long long)out->event_timestamp);
}

static void classify_contact(const cti_jdoc_t *d, cti_ev_info_t *out)
{
    int64_t id;
    char word[KEY_PART];
    const char *ev = key_word(d, GET("event"), word);
    out->kind = CTI_EV_CONTACT;
    if (!cti_dp_id_at(d, cti_jdoc_get(d, GET("contact"), "id"), &id))
        out->problem = "contact event without a valid contact.id";
    else if (out->event_timestamp) /* Dialpad documents {event, contact} only: without a
                                      timestamp the payload's hash is the key (raw_key) */
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "k:%lld:%s:%lld", (long long)id,
                 ev ? ev : "", (long long)out->event_timestamp);
}

static void classify_agent(const cti_jdoc_t *d, cti_ev_info_t *out)
{
    int64_t id;
    out->kind = CTI_EV_AGENT;
    if (!cti_dp_id_at(d, cti_jdoc_get(d, GET("target"), "id"), &id))
        out->problem = "agent status event without a valid target.id";
    else if (!out->event_timestamp)
        out->problem = "agent status event without a valid event_timestamp";
    else
        snprintf(out->dedupe_key, sizeof out->dedupe_key, "a:%lld:%lld", (long long)id,
                 (long long)out->event_timestamp);
}

void cti_ev_classify(const cti_jdoc_t *d, const char *raw, size_t len, cti_ev_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = CTI_EV_UNKNOWN;
    int64_t ts;
    if (cti_dp_ms_at(d, GET("event_timestamp"), &ts) && ts > 0)
        out->event_timestamp = ts;
    if (GET("call_id") >= 0 || (GET("state") >= 0 && GET("id") < 0))
        classify_call(d, out);
    else if (GET("message_status") >= 0 || GET("to_number") >= 0 || GET("from_number") >= 0)
        classify_sms(d, out);
    else if (cti_jdoc_type(d, GET("event")) == CTI_JT_STRING &&
             cti_jdoc_type(d, GET("contact")) == CTI_JT_OBJECT)
        classify_contact(d, out);
    else if (GET("on_duty_status") >= 0 || GET("availability_status") >= 0)
        classify_agent(d, out);
    else
        out->problem = "not a Dialpad call, SMS, agent status or contact event";
    if (out->problem || !out->dedupe_key[0])
        raw_key(raw, len, out);
}

void cti_ev_classify_server(const cti_jdoc_t *d, cti_ev_info_t *out)
{
    memset(out, 0, sizeof *out);
    out->kind = CTI_EV_SERVER;
    char id[64];
    int64_t ts;
    long n = cti_jdoc_str(d, GET("id"), id, sizeof id);
    if (cti_jdoc_type(d, GET("event")) != CTI_JT_STRING ||
        cti_jdoc_type(d, GET("data")) != CTI_JT_OBJECT || n <= 0 || (size_t)n >= sizeof id ||
        !cti_jdoc_int(d, GET("occurred_at"), &ts)) {
        out->problem = "not a server event";
        return;
    }
    out->event_timestamp = ts;
    snprintf(out->dedupe_key, sizeof out->dedupe_key, "x:%s", id);
}
