/*
 * log.c — see log.h. Formats by hand into a stack buffer: a log line per
 * request must cost well under a microsecond, and must never allocate.
 */
#include "core/log.h"
#include "core/common.h"
#include "core/util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192

static _Atomic int min_level = CTI_LOG_INFO;
static _Atomic int out_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cti_log_set_level(cti_log_level_t level)
{
    min_level = (int)level;
}

void cti_log_set_fd(int fd)
{
    out_fd = fd;
}

bool cti_log_enabled(cti_log_level_t level)
{
    return (int)level >= min_level;
}

int cti_log_parse_level(const char *s, cti_log_level_t *out)
{
    for (size_t i = 0; i < CTI_ARRAY_LEN(level_names); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (cti_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = CTI_LOG_WARN;
        return 0;
    }
    return CTI_EINVAL;
}

/* The line under construction. Writes are all-or-nothing: one that does not
 * fit sets full and writes nothing, so the caller can drop a field whole. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool full;
} line_t;

static void put(line_t *o, const char *s, size_t n)
{
    if (o->full || o->len + n > o->cap) {
        o->full = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

size_t cti_log_json_str(char *buf, size_t len, size_t cap, const char *s)
{
    static const char hx[] = "0123456789abcdef";
    if (len + 3 > cap)
        return len; /* not even the quotes fit (one byte stays spare): write nothing */
    size_t o = len;
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char esc[8];
        size_t n = 2, consumed = 1; /* bytes written, bytes of s used */
        esc[0] = '\\';
        switch (*p) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hx[*p >> 4];
                esc[5] = hx[*p & 15];
                n = 6;
            } else {
                /* a whole well-formed character, or U+FFFD for the byte (s is
                 * NUL-terminated, so the check never reads past its end) */
                n = cti_utf8_char_len(p, 4);
                if (!n) {
                    memcpy(esc, "\\ufffd", 6); /* keep the line valid UTF-8 JSON */
                    n = 6;
                } else {
                    memcpy(esc, p, n);
                    consumed = n;
                }
            }
        }
        if (o + n + 2 > cap) /* keep room for the closing quote and a spare byte */
            break;
        memcpy(buf + o, esc, n);
        o += n;
        p += consumed;
    }
    buf[o++] = '"';
    return o;
}

/* A string literal of less than STR_MAX bytes (longer text is cut, still valid). */
#define STR_MAX 4096
static void put_str(line_t *o, const char *s)
{
    char tmp[STR_MAX];
    size_t n = cti_log_json_str(tmp, 0, sizeof tmp, s);
    put(o, tmp, n);
}

static void put_field(line_t *o, const cti_log_field_t *f)
{
    char num[40];
    put(o, ",", 1);
    put_str(o, f->key);
    put(o, ":", 1);
    switch (f->type) {
    case 's':
        if (f->s == NULL)
            put(o, "null", 4);
        else
            put_str(o, f->s);
        return;
    case 'b': put(o, f->i ? "true" : "false", f->i ? 4 : 5); return;
    case 'd':
        if (!isfinite(f->d))
            snprintf(num, sizeof num, "null");
        else if (fabs(f->d) < 1e15)
            snprintf(num, sizeof num, "%.3f", f->d);
        else
            snprintf(num, sizeof num, "%.17g", f->d);
        break;
    default: snprintf(num, sizeof num, "%lld", (long long)f->i); break;
    }
    put(o, num, strlen(num));
}

void cti_log_fields(cti_log_level_t level, const char *request_id, const char *msg,
                    const cti_log_field_t *fields, size_t n)
{
    if (!cti_log_enabled(level))
        return;
    char buf[LINE_MAX_BYTES], ts[CTI_ISO_TIME_LEN];
    line_t o = {buf, 0, LINE_MAX_BYTES - 2, false}; /* 2 bytes kept for "}\n" */
    cti_iso_time(cti_now_ms(), ts);
    put(&o, "{\"time\":\"", 9);
    put(&o, ts, strlen(ts));
    put(&o, "\",\"level\":\"", 11);
    put(&o, level_names[level], strlen(level_names[level]));
    put(&o, "\",\"msg\":", 8);
    put_str(&o, msg);
    if (request_id) {
        put(&o, ",\"request_id\":", 14);
        put_str(&o, request_id);
    }
    /* A field that does not fit is dropped whole, and so are the ones after it. */
    for (size_t i = 0; i < n && !o.full; i++) {
        size_t before = o.len;
        put_field(&o, &fields[i]);
        if (o.full)
            o.len = before;
    }
    buf[o.len++] = '}';
    buf[o.len++] = '\n';
    ssize_t w = write(out_fd, buf, o.len);
    (void)w; /* nowhere to report a failed log write */
}
