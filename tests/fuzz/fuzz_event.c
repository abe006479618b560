/*
 * fuzz_event.c — libFuzzer target for the event normalizer:
 * src/dialpad/event.[ch] (classify, cti_dp_id, cti_dp_ms), src/model/call.[ch]
 * (cti_call_init/apply/json/clear) and src/model/phone.[ch] (cti_phone_e164).
 *
 * The input is parsed with json_loadb. Every value in it (recursively) goes
 * through cti_dp_id and cti_dp_ms. Each event is then read through
 * src/core/jscan.c, as the server reads it, to be classified and applied. An object is classified and applied to a
 * fresh call, then applied again (a replay), then a second event derived from
 * it (another state, another timestamp) is applied, to exercise merging. An
 * array of objects is applied as a sequence of events to one call. After
 * every apply the call is rendered (cti_call_render + cti_call_close) and checked.
 * The raw input, as a C string, also goes through cti_phone_e164 with default
 * country codes "1" and "44".
 *
 * Invariants (a violation is a deliberate __builtin_trap()):
 *  - the rendered call object is valid UTF-8 that json_loads accepts;
 *  - it has every member of the contract's call object (call.c, cti_call_render);
 *  - "id" is a string of digits; "status" is ringing/active/on_hold/ended;
 *    "outcome" is null unless status is ended, then one of
 *    answered/voicemail/missed/unanswered (call.h);
 *  - the times (started_at, connected_at, ended_at, updated_at) are null or
 *    "YYYY-MM-DDTHH:MM:SS.mmmZ" (call.h: "ISO times");
 *  - recording_urls is an array of strings, sorted, unique (call.h);
 *  - cti_dp_id: true only with a value > 0, exact for integers and decimal
 *    strings (event.h); cti_dp_ms: exact for integers, and a string it
 *    accepts is a decimal number (event.h: "decimal string");
 *  - cti_phone_e164: on 0, out is '+' then 8 to 15 digits (phone.h);
 *  - cti_dp_id_at / cti_dp_ms_at (on jscan's tokens) agree with cti_dp_id /
 *    cti_dp_ms (on jansson's values) for call_id and event_timestamp;
 *  - cti_ev_classify: the dedupe key is non-empty, NUL-terminated, and its
 *    prefix matches the kind ("r:" when there is a problem) (event.h).
 *
 * A failed check prints its line and expression, then traps. The checks named
 * in CHECK_AS ("call_keys", "iso_time", "dp_ms_decimal") can be listed in the
 * environment variable FUZZ_SKIP_CHECKS to explore past a bug already reported;
 * all are on by default.
 */
#include "dialpad/event.h"
#include "core/jw.h"
#include "model/call.h"
#include "model/phone.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* A failed invariant prints what failed, then traps (a crash for libFuzzer). */
#define CHECK(cond) CHECK_AS(NULL, cond)
/* The same, for a check with a name that FUZZ_SKIP_CHECKS can list. */
#define CHECK_AS(name, cond)                                                                       \
    do {                                                                                           \
        if (!(cond) && !skipped(name)) {                                                           \
            fprintf(stderr, "fuzz_event.c:%d: invariant failed%s%s%s: %s\n", __LINE__,              \
                    name ? " [" : "", name ? name : "", name ? "]" : "", #cond);                   \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

#define NOW_MS INT64_C(1767225600000)
#define MAX_SEQ 8 /* events applied from a top-level array */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- helpers ------------------------------------------------------------------------ */

/* FUZZ_SKIP_CHECKS="name,name": named checks not to trap on. Empty by default,
 * so every check is on. Only for exploring past a bug already reported (one
 * shallow failure otherwise ends every run before anything deeper is found);
 * the bug itself stays caught by a run without it. */
static bool skipped(const char *name)
{
    static const char *list;
    static bool read;
    if (!read) {
        list = getenv("FUZZ_SKIP_CHECKS");
        read = true;
    }
    if (!name || !list)
        return false;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return true;
    return false;
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + k >= n) /* truncated sequence */
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static bool all_digits(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* A decimal number as text: [+-] digits [. digits] [e [+-] digits]. */
static bool decimal_number(const char *s)
{
    size_t mant = 0;
    if (*s == '+' || *s == '-')
        s++;
    for (; *s >= '0' && *s <= '9'; s++)
        mant++;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            mant++;
    if (!mant)
        return false;
    if (*s == 'e' || *s == 'E') {
        size_t exp = 0;
        s++;
        if (*s == '+' || *s == '-')
            s++;
        for (; *s >= '0' && *s <= '9'; s++)
            exp++;
        if (!exp)
            return false;
    }
    return *s == '\0';
}

/* null, or "YYYY-MM-DDTHH:MM:SS.mmmZ" (util.h, cti_iso_time). */
static bool iso_time_or_null(json_t *v)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (json_is_null(v))
        return true;
    const char *s = json_string_value(v);
    if (!s || strlen(s) != sizeof pat - 1)
        return false;
    for (size_t i = 0; i < sizeof pat - 1; i++)
        if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
            return false;
    return true;
}

static bool one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s && !strcmp(s, set[i]))
            return true;
    return false;
}

/* ---- cti_dp_id / cti_dp_ms on every value ------------------------------------------- */

static void check_numbers(json_t *v)
{
    int64_t id = 0, ms = 0;
    if (cti_dp_id(v, &id)) {
        CHECK(id > 0);
        if (json_is_integer(v))
            CHECK(id == json_integer_value(v));
        if (json_is_string(v)) {
            char buf[24];
            snprintf(buf, sizeof buf, "%" PRId64, id);
            CHECK(!strcmp(buf, json_string_value(v))); /* exact, never through a double */
        }
        if (json_is_real(v))
            CHECK((double)id == json_real_value(v));
    } else {
        CHECK(!(json_is_integer(v) && json_integer_value(v) > 0));
    }
    if (cti_dp_ms(v, &ms)) {
        CHECK(json_is_integer(v) || json_is_real(v) || json_is_string(v));
        if (json_is_integer(v))
            CHECK(ms == json_integer_value(v));
        if (json_is_string(v)) /* event.h: "integer, real ... or decimal string" */
            CHECK_AS("dp_ms_decimal", decimal_number(json_string_value(v)));
    } else {
        CHECK(!json_is_integer(v));
    }
}

static void walk_numbers(json_t *v, int depth)
{
    const char *key;
    json_t *m;
    size_t i;
    check_numbers(v);
    if (depth > 64)
        return;
    if (json_is_object(v)) {
        json_object_foreach(v, key, m) walk_numbers(m, depth + 1);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m) walk_numbers(m, depth + 1);
    }
}

/* ---- the call object ---------------------------------------------------------------- */

static const char *const CALL_KEYS[] = {
    "id",           "direction",        "state",          "status",
    "outcome",      "external_number",  "internal_number", "contact",
    "target",       "dialpad_user_id",  "crm_user_id",    "master_call_id",
    "entry_point_call_id", "operator_call_id", "is_transferred", "started_at",
    "connected_at", "ended_at",         "duration_ms",    "total_duration_ms",
    "talk_time_ms", "hold_time_ms",     "recording_urls", "voicemail",
    "updated_at"};
static const char *const STATUSES[] = {"ringing", "active", "on_hold", "ended"};
static const char *const OUTCOMES[] = {"answered", "voicemail", "missed", "unanswered"};

static void check_call(const cti_call_t *c, const char *crm)
{
    CHECK(c->status >= CTI_STATUS_RINGING && c->status <= CTI_STATUS_ENDED);
    CHECK(cti_call_status_parse(cti_call_status_name(c->status)) == (int)c->status);
    CHECK(memchr(c->state, '\0', sizeof c->state) && memchr(c->direction, '\0', sizeof c->direction));

    cti_jw_t w = {0};
    cti_call_render(&w, c);
    cti_call_close(&w, crm);
    size_t len;
    char *text = cti_jw_take(&w, &len);
    CHECK(text != NULL && strlen(text) == len);
    CHECK(valid_utf8((const unsigned char *)text, len));
    json_error_t err;
    json_t *back = json_loads(text, 0, &err);
    CHECK(json_is_object(back));

    for (size_t i = 0; i < sizeof CALL_KEYS / sizeof *CALL_KEYS; i++)
        CHECK_AS("call_keys", json_object_get(back, CALL_KEYS[i]) != NULL);

    json_t *id = json_object_get(back, "id");
    CHECK(json_is_string(id) && all_digits(json_string_value(id)));

    const char *status = json_string_value(json_object_get(back, "status"));
    CHECK(one_of(status, STATUSES, 4));
    CHECK(!strcmp(status, cti_call_status_name(c->status)));

    json_t *outcome = json_object_get(back, "outcome");
    if (strcmp(status, "ended") != 0)
        CHECK(json_is_null(outcome));
    else
        CHECK(json_is_string(outcome) && one_of(json_string_value(outcome), OUTCOMES, 4));

    /* ISO times (call.h: "ids as strings, ISO times, durations in ms"). */
    static const char *const times[] = {"started_at", "connected_at", "ended_at", "updated_at"};
    for (size_t k = 0; k < 4; k++)
        CHECK_AS("iso_time", iso_time_or_null(json_object_get(back, times[k])));

    /* recording_urls: an array of strings, sorted, unique (call.h). */
    json_t *urls = json_object_get(back, "recording_urls"), *u;
    size_t i;
    const char *prev = NULL;
    CHECK(json_is_array(urls));
    json_array_foreach(urls, i, u) {
        CHECK(json_is_string(u));
        CHECK(!prev || strcmp(prev, json_string_value(u)) < 0);
        prev = json_string_value(u);
    }

    free(text);
    json_decref(back);
}

/* ---- events ------------------------------------------------------------------------- */

static void classify(const cti_jdoc_t *d, const char *raw, size_t len, cti_ev_info_t *info)
{
    cti_ev_classify(d, raw, len, info);
    CHECK(info->kind >= CTI_EV_CALL && info->kind <= CTI_EV_UNKNOWN);
    CHECK(cti_ev_kind_name(info->kind) != NULL);
    CHECK(info->event_timestamp >= 0);
    CHECK(memchr(info->dedupe_key, '\0', sizeof info->dedupe_key) != NULL);
    CHECK(info->dedupe_key[0] && info->dedupe_key[1] == ':');
    static const char prefix[] = {'c', 's', 'a', 'k'};
    if (info->problem)
        CHECK(info->dedupe_key[0] == 'r');
    else /* a contact event without a timestamp (Dialpad documents none) is keyed by its
          * payload's hash, as problems are */
        CHECK(info->kind != CTI_EV_UNKNOWN &&
              (info->dedupe_key[0] == prefix[info->kind] ||
               (info->kind == CTI_EV_CONTACT && !info->event_timestamp &&
                info->dedupe_key[0] == 'r')));
}

/* Applies ev (raw bytes raw/len) to c, as the processor would, and checks c. */
static void apply(cti_call_t *c, bool is_new, json_t *ev, const char *raw, size_t len,
                  const char *crm)
{
    cti_ev_info_t info;
    cti_jdoc_t d;
    char *text = json_dumps(ev, JSON_COMPACT); /* the server reads events through jscan */
    CHECK(text != NULL);
    if (cti_jdoc_parse(&d, text, strlen(text), NULL, 0) != 0) { /* nested too deeply */
        free(text);
        return;
    }
    static const char *const keys[] = {"call_id", "event_timestamp"};
    for (int k = 0; k < 2; k++) {
        int64_t a = 0, b = 0;
        json_t *v = json_object_get(ev, keys[k]);
        int t = cti_jdoc_get(&d, 0, keys[k]);
        bool x = k ? cti_dp_ms(v, &a) : cti_dp_id(v, &a);
        bool y = k ? cti_dp_ms_at(&d, t, &b) : cti_dp_id_at(&d, t, &b);
        CHECK(x == y && (!x || a == b));
    }
    classify(&d, raw, len, &info);
    char state[72] = "ringing";
    cti_jdoc_str(&d, cti_jdoc_get(&d, 0, "state"), state, sizeof state);
    int64_t ts = info.event_timestamp ? info.event_timestamp : 1;
    cti_call_effect_t eff;
    (void)is_new; /* the model no longer needs to know (a date_ended ends any leg) */
    cti_call_apply(c, &d, 0, state, ts, NOW_MS, &eff);
    cti_jdoc_free(&d);
    free(text);
    CHECK(eff.event != NULL);
    CHECK(memchr(eff.data_key, '\0', sizeof eff.data_key) != NULL);
    CHECK(!eff.data_key[0] == !eff.data_value);
    CHECK(!eff.data_key[0] || !strcmp(eff.data_key, "state") || !strcmp(eff.data_key, "kind"));
    check_call(c, crm);
}

static int64_t call_id_of(json_t *ev)
{
    int64_t id;
    return cti_dp_id(json_object_get(ev, "call_id"), &id) ? id : 1;
}

/* A second event for the same call: the first one with another state and an
 * event_timestamp moved by a few ms either way (so it can be newer, equal or late). */
static json_t *second_event(json_t *ev, const uint8_t *data, size_t size)
{
    static const char *const states[] = {
        "preanswer", "calling", "ringing", "queued", "connected", "hold",
        "missed", "voicemail", "hangup", "voicemail_uploaded", "transcription",
        "recording", "call_transcription", "recap_summary", "csat", "merged"};
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    json_t *ev2 = json_deep_copy(ev);
    json_object_set_new(ev2, "state", json_string(states[h % 16]));
    int64_t ts = 0;
    cti_dp_ms(json_object_get(ev, "event_timestamp"), &ts);
    int64_t delta = (int64_t)((h >> 8) % 7) - 3;
    if (ts > INT64_MIN + 3 && ts < INT64_MAX - 3)
        json_object_set_new(ev2, "event_timestamp", json_integer(ts + delta));
    if ((h >> 16) & 1)
        json_object_del(ev2, "date_connected");
    if ((h >> 17) & 1)
        json_object_set_new(ev2, "date_ended", json_integer(ts > 0 ? ts : 1));
    return ev2;
}

static void fuzz_object(json_t *ev, const uint8_t *data, size_t size)
{
    const char *raw = (const char *)data;
    cti_call_t c;
    cti_call_init(&c, call_id_of(ev));
    apply(&c, true, ev, raw, size, NULL);
    apply(&c, false, ev, raw, size, "crm-user-1"); /* the same event again */

    json_t *ev2 = second_event(ev, data, size);
    char *raw2 = json_dumps(ev2, JSON_COMPACT);
    CHECK(raw2 != NULL);
    apply(&c, false, ev2, raw2, strlen(raw2), "");
    free(raw2);
    json_decref(ev2);
    cti_call_clear(&c);
}

static void fuzz_sequence(json_t *arr, const uint8_t *data, size_t size)
{
    cti_call_t c;
    bool is_new = true;
    size_t i, n = 0;
    json_t *ev;
    json_array_foreach(arr, i, ev) {
        if (!json_is_object(ev))
            continue;
        if (is_new)
            cti_call_init(&c, call_id_of(ev));
        apply(&c, is_new, ev, (const char *)data, size, "crm-user-1");
        is_new = false;
        if (++n == MAX_SEQ)
            break;
    }
    if (!is_new)
        cti_call_clear(&c);
}

/* ---- phone numbers ------------------------------------------------------------------ */

static void check_phone(const char *in, const char *cc)
{
    char out[CTI_E164_MAX + 8];
    memset(out, 'X', sizeof out);
    if (cti_phone_e164(in, cc, out) != 0)
        return;
    CHECK(out[0] == '+');
    size_t n = 0;
    while (out[1 + n] >= '0' && out[1 + n] <= '9')
        n++;
    CHECK(out[1 + n] == '\0');
    CHECK(n >= 8 && n <= 15);
    /* Idempotent: an E.164 number normalizes to itself. */
    char again[CTI_E164_MAX];
    CHECK(cti_phone_e164(out, cc, again) == 0 && !strcmp(again, out));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    check_phone(s, "1");
    check_phone(s, "44");
    free(s);

    json_error_t err;
    json_t *root = json_loadb((const char *)data, size, JSON_DECODE_ANY, &err);
    if (!root)
        return 0;
    walk_numbers(root, 0);
    if (json_is_object(root))
        fuzz_object(root, data, size);
    else if (json_is_array(root))
        fuzz_sequence(root, data, size);
    json_decref(root);
    return 0;
}
