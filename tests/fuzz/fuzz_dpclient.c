/*
 * fuzz_dpclient.c — libFuzzer target for what src/dialpad/client.c reads of
 * Dialpad's answers (pure functions over bytes): OAuth token responses,
 * error envelopes, list pages (call lists and the like) and Retry-After.
 *
 * The whole input is taken as the body of an answer, by every reader:
 *   - cti_dp_parse_token: success only with a non-empty access token of
 *     printable ASCII without blanks, at most CTI_DP_TOKEN_MAX bytes, equal to
 *     the body's "access_token" string (read with jansson); refresh token
 *     absent or likewise; expires_in -1 or 0..100 years; token_type absent,
 *     null or "bearer". Failure leaves the struct zeroed and a reason that
 *     never quotes the access or refresh token. Tokens written back as a
 *     token response parse to the same tokens.
 *   - cti_dp_parse_error and cti_dp_error_text: code and message are
 *     NUL-terminated strict UTF-8 without control characters, recognised
 *     exactly when one is non-empty; the sentence (cap of the response's
 *     message buffer) is strict UTF-8 and names the status.
 *   - cti_dp_page_parse: items NULL or the body's "items" array, the cursor
 *     the body's "cursor" string; cti_dp_page_path then appends it
 *     percent-encoded (unreserved characters and %XX only) so that decoding
 *     gives it back; each item's "id"/"call_id" read by cti_dp_get_id is
 *     positive and exactly the JSON integer, whole real below 2^53 or
 *     canonical decimal string.
 *   - cti_dp_parse_retry_after on the body as a header value: -1, the delta
 *     seconds given, or 0..1 year for a date.
 *   - cti_dp_form_add: name and value percent-encoded, decoding gives them back.
 * A violation is a deliberate __builtin_trap(). Build and run: tests/fuzz/run.sh.
 */
#include "core/common.h"
#include "core/util.h"
#include "dialpad/client.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_dpclient.c:%d: invariant failed: %s\n", __LINE__, #cond);       \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool printable_token(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

static void check_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    CHECK(n < cap);
    CHECK(cti_utf8_valid((const uint8_t *)s, n));
}

/* ---- token responses ---- */

static void check_token_ok(const cti_dp_token_t *t, json_t *root)
{
    CHECK(t->access_token != NULL);
    size_t n = strlen(t->access_token);
    CHECK(n >= 1 && n <= CTI_DP_TOKEN_MAX && printable_token(t->access_token));
    json_t *at = json_object_get(root, "access_token");
    CHECK(json_is_string(at) && !strcmp(json_string_value(at), t->access_token) &&
          json_string_length(at) == n);
    if (t->refresh_token) {
        size_t r = strlen(t->refresh_token);
        CHECK(r >= 1 && r <= CTI_DP_TOKEN_MAX && printable_token(t->refresh_token));
        CHECK(!strcmp(json_string_value(json_object_get(root, "refresh_token")),
                      t->refresh_token));
    }
    CHECK(t->expires_in_s == -1 || (t->expires_in_s >= 0 && t->expires_in_s <= 100LL * 366 * 86400));
    json_t *type = json_object_get(root, "token_type");
    CHECK(!type || json_is_null(type) ||
          (json_is_string(type) && !strcasecmp(json_string_value(type), "bearer")));

    /* written back, the same tokens */
    json_t *o = json_pack("{s:s, s:s}", "access_token", t->access_token, "token_type", "Bearer");
    CHECK(o != NULL);
    if (t->refresh_token)
        json_object_set_new(o, "refresh_token", json_string(t->refresh_token));
    if (t->expires_in_s >= 0)
        json_object_set_new(o, "expires_in", json_integer(t->expires_in_s));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    CHECK(text != NULL);
    cti_dp_token_t again;
    char why[200];
    CHECK(cti_dp_parse_token(text, strlen(text), &again, why, sizeof why) == 0);
    CHECK(!strcmp(again.access_token, t->access_token));
    CHECK(!t->refresh_token == !again.refresh_token);
    CHECK(!t->refresh_token || !strcmp(again.refresh_token, t->refresh_token));
    CHECK(again.expires_in_s == t->expires_in_s);
    cti_dp_token_free(&again);
    free(text);
}

static void fuzz_token(const char *body, size_t len)
{
    cti_dp_token_t t;
    char why[200];
    memset(why, 'x', sizeof why);
    int rc = cti_dp_parse_token(body, len, &t, why, sizeof why);
    CHECK(rc == 0 || rc == CTI_EINVAL);
    check_text(why, sizeof why);
    CHECK(why[0] != '\0');
    json_t *root = len ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (rc == 0) {
        CHECK(root != NULL);
        check_token_ok(&t, root);
    } else {
        CHECK(t.access_token == NULL && t.refresh_token == NULL && t.expires_in_s == -1);
        /* the reason never quotes a token (a value also given as token_type may be shown) */
        const char *names[] = {"access_token", "refresh_token"};
        const char *type = json_string_value(json_object_get(root, "token_type"));
        for (int i = 0; i < 2; i++) {
            const char *v = json_string_value(json_object_get(root, names[i]));
            if (v && strlen(v) >= 4 && !(type && strstr(type, v)) &&
                !strstr("the token response is not a JSON object (over 64 KiB) token_type is "
                        "not bearer access_token refresh_token is missing is not a string is "
                        "empty longer than 4096 bytes not printable ASCII without blanks "
                        "expires_in is neither a number nor a string is not a whole number of "
                        "seconds from 0 to 3162240000",
                        v))
                CHECK(strstr(why, v) == NULL);
        }
    }
    json_decref(root);
    cti_dp_token_free(&t);
    CHECK(t.access_token == NULL && t.refresh_token == NULL);
}

/* ---- errors ---- */

static void fuzz_error(const char *body, size_t len, int status)
{
    cti_dp_error_t e;
    memset(&e, 'x', sizeof e);
    int rc = cti_dp_parse_error(body, len, &e);
    check_text(e.code, sizeof e.code);
    check_text(e.message, sizeof e.message);
    for (const char *p = e.code; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    for (const char *p = e.message; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    CHECK(rc == ((e.code[0] || e.message[0]) ? 0 : CTI_EINVAL));

    cti_dp_response_t r;
    static const char *const ctypes[] = {NULL, "application/json", "text/html; charset=utf-8",
                                         "te\x01xt/\xff"};
    char prefix[40];
    snprintf(prefix, sizeof prefix, "Dialpad answered %d", status);
    memset(r.message, 'x', sizeof r.message);
    cti_dp_error_text(status, body, len, ctypes[(unsigned)status % 4], r.message,
                      sizeof r.message);
    check_text(r.message, sizeof r.message);
    CHECK(!strncmp(r.message, prefix, strlen(prefix)));
}

/* ---- list pages ---- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes %XX (upper-case hex, as we write it) into out; false on anything
 * but unreserved characters and %XX. */
static bool pct_decode_strict(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s; s++) {
        CHECK(o + 1 < cap);
        if (*s == '%') {
            int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
            if (hi < 0 || lo < 0)
                return false;
            out[o++] = (char)(hi << 4 | lo);
            s += 2;
        } else if ((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
                   (*s >= 'A' && *s <= 'Z') || strchr("-._~", *s)) {
            out[o++] = *s;
        } else {
            return false;
        }
    }
    out[o] = '\0';
    return true;
}

static void check_id(json_t *item, const char *key)
{
    int64_t id;
    if (!cti_dp_get_id(item, key, &id))
        return;
    CHECK(id > 0);
    json_t *v = json_object_get(item, key);
    if (json_is_integer(v)) {
        CHECK(json_integer_value(v) == id);
    } else if (json_is_real(v)) { /* a whole real below 2^53 is still exact */
        CHECK(json_real_value(v) < 9007199254740992.0 && (double)id == json_real_value(v));
    } else {
        CHECK(json_is_string(v));
        char canon[24];
        snprintf(canon, sizeof canon, "%" PRId64, id);
        CHECK(!strcmp(canon, json_string_value(v)));
    }
}

static void fuzz_page(const char *body, size_t len)
{
    json_t *root = json_loadb(body, len, 0, NULL), *items = NULL;
    char cursor[2048];
    memset(cursor, 'x', sizeof cursor);
    int rc = cti_dp_page_parse(root, &items, cursor, sizeof cursor);
    CHECK(rc == 0 || rc == CTI_EINVAL);
    CHECK(memchr(cursor, '\0', sizeof cursor) != NULL);
    if (rc != 0) {
        CHECK(items == NULL && cursor[0] == '\0');
        json_decref(root);
        return;
    }
    CHECK(json_is_object(root));
    json_t *it = json_object_get(root, "items"), *cur = json_object_get(root, "cursor");
    CHECK(items == (json_is_array(it) ? it : NULL));
    CHECK(json_is_string(cur) ? !strcmp(cursor, json_string_value(cur)) : cursor[0] == '\0');
    size_t i;
    json_t *item;
    json_array_foreach(items, i, item)
    {
        check_id(item, "id");
        check_id(item, "call_id");
    }
    static const char *const paths[] = {"/api/v2/call", "/api/v2/call?started_after=1"};
    for (int k = 0; k < 2; k++) {
        char path[8192], back[2048];
        if (cti_dp_page_path(paths[k], cursor, path, sizeof path) != 0)
            continue;
        size_t plen = strlen(paths[k]);
        CHECK(!strncmp(path, paths[k], plen));
        CHECK(!strncmp(path + plen, k ? "&cursor=" : "?cursor=", 8));
        CHECK(pct_decode_strict(path + plen + 8, back, sizeof back));
        CHECK(!strcmp(back, cursor));
    }
    json_decref(root);
}

/* ---- headers and forms ---- */

static void fuzz_misc(const char *s)
{
    /* delta seconds: their value (up to 9 digits; more is "a year"); an
     * HTTP-date: 0 up to a year ahead */
    int ra = cti_dp_parse_retry_after(s, 1764950400);
    CHECK(ra >= -1);
    const char *d = s + strspn(s, " \t");
    size_t dn = strspn(d, "0123456789");
    if (dn && dn <= 9 && d[dn + strspn(d + dn, " \t\r\n\v\f")] == '\0')
        CHECK(ra == atoi(d));
    else if (ra >= 0)
        CHECK(ra <= 86400 * 365);

    char *form = NULL;
    cti_dp_form_add(&form, "grant_type", "refresh_token");
    cti_dp_form_add(&form, s, s);
    CHECK(form != NULL);
    static const char first[] = "grant_type=refresh_token&";
    CHECK(!strncmp(form, first, sizeof first - 1));
    char *rest = form + sizeof first - 1, *eq = strchr(rest, '=');
    CHECK(eq != NULL);
    *eq = '\0';
    size_t cap = 3 * strlen(s) + 1;
    char *back = malloc(cap);
    CHECK(back != NULL);
    CHECK(pct_decode_strict(rest, back, cap) && !strcmp(back, s));
    CHECK(pct_decode_strict(eq + 1, back, cap) && !strcmp(back, s));
    free(back);
    free(form);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    CHECK(body != NULL);
    memcpy(body, data, size);
    fuzz_token(body, size);
    int status = size ? 400 + data[size - 1] % 200 : 0;
    fuzz_error(body, size, status);
    fuzz_page(body, size);
    free(body);

    size_t n = strnlen((const char *)data, size);
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, data, n);
    s[n] = '\0';
    fuzz_misc(s);
    free(s);
    return 0;
}
