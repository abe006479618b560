/*
 * fuzz_jscan.c — libFuzzer target for src/core/jscan.c, against jansson.
 *
 * The input is parsed by both cti_jdoc_parse and json_loadb(JSON_REJECT_DUPLICATES).
 * Invariants (a violation traps):
 *  - jscan accepts whatever jansson accepts, except an input with a NUL byte
 *    (jansson takes one after a number for the end of the text: "[3\0 ]" is
 *    [3] to it);
 *  - jscan accepts more only where src/core/jscan.h says it deliberately
 *    does: then a token is flagged CTI_JF_ODD (\u0000, a lone surrogate),
 *    CTI_JF_BIG (a number beyond int64 / a double) or CTI_JF_DEEP (nesting
 *    past CTI_JSON_MAX_DEPTH, whose keys are not checked for duplicates);
 *  - whatever jscan accepts, its compact rewrite (cti_jw_jdoc) parses with
 *    jansson without flags (as the WebSocket hub reads event bodies);
 *  - when both accept and nothing is nested past CTI_JSON_MAX_DEPTH, that
 *    rewrite is json_equal to jansson's own value;
 *  - every member of every object is found by cti_jdoc_get under its decoded key
 *    (the first of equal keys, and there are none), and every string decodes
 *    to what jansson decoded;
 *  - tokens' next links stay within the document and move forward.
 */
#include "core/jscan.h"
#include "core/jw.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jscan.c:%d: invariant failed: %s\n", __LINE__, #cond);           \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int depth(json_t *v)
{
    int d = 0;
    size_t i;
    const char *k;
    json_t *m;
    if (json_is_object(v)) {
        json_object_foreach(v, k, m) if (depth(m) > d) d = depth(m);
        return d + 1;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, m) if (depth(m) > d) d = depth(m);
        return d + 1;
    }
    return 0;
}

/* Walks the tokens at i against jansson's value v. */
static void same(const cti_jdoc_t *d, int i, json_t *v)
{
    CHECK(d->tok[i].next > (uint32_t)i && d->tok[i].next <= (uint32_t)d->n);
    CHECK(!(d->tok[i].flags & (CTI_JF_ODD | CTI_JF_BIG))); /* jansson refuses those */
    if (d->tok[i].flags & CTI_JF_DEEP) { /* read as empty; jansson's is that deep */
        CHECK(d->tok[i].next == (uint32_t)i + 1 && depth(v) > 0);
        return;
    }
    switch (cti_jdoc_type(d, i)) {
    case CTI_JT_OBJECT: {
        CHECK(json_is_object(v));
        CHECK((size_t)cti_jdoc_size(d, i) == json_object_size(v));
        int k;
        for (int m = cti_jdoc_first(d, i, &k); m >= 0; m = cti_jdoc_after(d, i, m, &k)) {
            char *key = cti_jdoc_strdup(d, k);
            CHECK(key);
            json_t *mv = json_object_get(v, key);
            CHECK(mv);
            CHECK(cti_jdoc_get(d, i, key) == m);
            same(d, m, mv);
            free(key);
        }
        break;
    }
    case CTI_JT_ARRAY: {
        CHECK(json_is_array(v));
        size_t n = 0;
        for (int m = cti_jdoc_first(d, i, NULL); m >= 0; m = cti_jdoc_after(d, i, m, NULL))
            same(d, m, json_array_get(v, n++));
        CHECK(n == json_array_size(v));
        break;
    }
    case CTI_JT_STRING: {
        CHECK(json_is_string(v));
        char *s = cti_jdoc_strdup(d, i);
        CHECK(strlen(s) == json_string_length(v) && !strcmp(s, json_string_value(v)));
        CHECK(cti_jdoc_str_eq(d, i, json_string_value(v)));
        free(s);
        break;
    }
    case CTI_JT_NUMBER: {
        int64_t iv;
        double dv;
        if (cti_jdoc_int(d, i, &iv))
            CHECK(json_is_integer(v) && json_integer_value(v) == iv);
        else
            CHECK(json_is_real(v) && cti_jdoc_real(d, i, &dv) && dv == json_real_value(v));
        break;
    }
    case CTI_JT_TRUE: CHECK(json_is_true(v)); break;
    case CTI_JT_FALSE: CHECK(json_is_false(v)); break;
    default: CHECK(json_is_null(v)); break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cti_jdoc_t d;
    char err[128];
    int rc = cti_jdoc_parse(&d, (const char *)data, size, err, sizeof err);
    json_error_t jerr;
    if (memchr(data, 0, size)) {
        CHECK(rc != 0);
        return 0;
    }
    json_t *v = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (rc == 0) {
        int flags = 0;
        for (int i = 0; i < d.n; i++)
            flags |= d.tok[i].flags;
        if (!v)
            fprintf(stderr, "jansson: %s\n", jerr.text);
        CHECK(v || (flags & (CTI_JF_ODD | CTI_JF_BIG | CTI_JF_DEEP)));
        if (v)
            same(&d, 0, v);
        cti_jw_t w = {0};
        cti_jw_jdoc(&w, &d, 0);
        size_t len;
        char *text = cti_jw_take(&w, &len);
        json_t *again = json_loadb(text, len, 0, &jerr);
        CHECK(again);
        if (v && !(flags & CTI_JF_DEEP))
            CHECK(json_equal(again, v));
        json_decref(again);
        free(text);
        cti_jdoc_free(&d);
    } else if (v) {
        fprintf(stderr, "jscan: %s\n", err);
        CHECK(!v);
    }
    json_decref(v);
    return 0;
}
