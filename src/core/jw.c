/* jw.c — see jw.h. */
#include "core/jw.h"
#include "core/common.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cti_jw_free(cti_jw_t *w)
{
    free(w->p);
    *w = (cti_jw_t){0};
}

char *cti_jw_take(cti_jw_t *w, size_t *len)
{
    if (!w->p)
        cti_jw_reserve(w, 0);
    char *p = w->p;
    if (len)
        *len = w->len;
    *w = (cti_jw_t){0};
    return p;
}

void cti_jw_reserve(cti_jw_t *w, size_t more)
{
    if (w->len + more + 1 <= w->cap)
        return;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + more + 1)
        cap *= 2;
    w->p = cti_realloc(w->p, cap);
    w->cap = cap;
    w->p[w->len] = '\0';
}

void cti_jw_raw(cti_jw_t *w, const char *s, size_t n)
{
    cti_jw_reserve(w, n);
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

static void sep(cti_jw_t *w)
{
    if (w->len && w->p[w->len - 1] != '{' && w->p[w->len - 1] != '[')
        cti_jw_lit(w, ",");
}

void cti_jw_item(cti_jw_t *w)
{
    sep(w);
}

void cti_jw_key(cti_jw_t *w, const char *key)
{
    size_t n = strlen(key);
    sep(w);
    cti_jw_reserve(w, n + 3);
    char *o = w->p + w->len;
    *o++ = '"';
    memcpy(o, key, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    w->len += n + 3;
    w->p[w->len] = '\0';
}

void cti_jw_str_n(cti_jw_t *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    cti_jw_reserve(w, n * 6 + 2); /* the worst case: every byte a \u00XX */
    char *o = w->p + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u', *o++ = '0', *o++ = '0';
            *o++ = hex[c >> 4], *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->p);
    w->p[w->len] = '\0';
}

void cti_jw_str(cti_jw_t *w, const char *s)
{
    if (s)
        cti_jw_str_n(w, s, strlen(s));
    else
        cti_jw_null(w);
}

void cti_jw_text(cti_jw_t *w, const char *s)
{
    cti_jw_str(w, s && *s ? s : NULL);
}

void cti_jw_int(cti_jw_t *w, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    cti_jw_raw(w, buf, (size_t)n);
}

void cti_jw_bool(cti_jw_t *w, bool b)
{
    if (b)
        cti_jw_lit(w, "true");
    else
        cti_jw_lit(w, "false");
}

void cti_jw_null(cti_jw_t *w)
{
    cti_jw_lit(w, "null");
}

void cti_jw_id(cti_jw_t *w, int64_t id)
{
    char buf[24];
    if (!id) {
        cti_jw_null(w);
        return;
    }
    int n = snprintf(buf, sizeof buf, "\"%lld", (long long)id);
    buf[n++] = '"';
    cti_jw_raw(w, buf, (size_t)n);
}

void cti_jw_time(cti_jw_t *w, int64_t ms)
{
    char buf[CTI_ISO_TIME_LEN + 2];
    if (!ms) {
        cti_jw_null(w);
        return;
    }
    buf[0] = '"';
    cti_iso_time(ms, buf + 1);
    size_t n = strlen(buf);
    buf[n++] = '"';
    cti_jw_raw(w, buf, n);
}

static int dump_cb(const char *buf, size_t size, void *ud)
{
    cti_jw_raw(ud, buf, size);
    return 0;
}

void cti_jw_json(cti_jw_t *w, const json_t *v)
{
    size_t before = w->len;
    if (v && json_dump_callback(v, dump_cb, w, JSON_COMPACT | JSON_ENCODE_ANY) == 0)
        return;
    if (w->p) /* nothing half-written stays */
        w->p[w->len = before] = '\0';
    cti_jw_null(w);
}
