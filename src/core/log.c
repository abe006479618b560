/*
 * log.c — see log.h. Formats by hand into a stack buffer: a log line per
 * request must cost well under a microsecond, and must never allocate.
 */
#include "core/log.h"
#include "core/common.h"
#include "core/util.h"

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

static size_t put(char *buf, size_t len, size_t cap, const char *s, size_t n)
{
    if (len + n >= cap)
        n = len < cap ? cap - len - 1 : 0;
    memcpy(buf + len, s, n);
    return len + n;
}

size_t cti_log_json_str(char *buf, size_t len, size_t cap, const char *s)
{
    static const char hx[] = "0123456789abcdef";
    len = put(buf, len, cap, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[7];
        size_t n = 2;
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
                esc[0] = (char)*p;
                n = 1;
            }
        }
        if (len + n + 2 >= cap) /* keep room for the closing quote */
            break;
        len = put(buf, len, cap, esc, n);
    }
    return put(buf, len, cap, "\"", 1);
}

static size_t put_field(char *buf, size_t len, const cti_log_field_t *f)
{
    char num[32];
    len = put(buf, len, LINE_MAX_BYTES, ",", 1);
    len = cti_log_json_str(buf, len, LINE_MAX_BYTES, f->key);
    len = put(buf, len, LINE_MAX_BYTES, ":", 1);
    switch (f->type) {
    case 's':
        if (f->s == NULL)
            return put(buf, len, LINE_MAX_BYTES, "null", 4);
        return cti_log_json_str(buf, len, LINE_MAX_BYTES - 64, f->s);
    case 'b': return put(buf, len, LINE_MAX_BYTES, f->i ? "true" : "false", f->i ? 4 : 5);
    case 'd': snprintf(num, sizeof num, "%.3f", f->d); break;
    default: snprintf(num, sizeof num, "%lld", (long long)f->i); break;
    }
    return put(buf, len, LINE_MAX_BYTES, num, strlen(num));
}

void cti_log_fields(cti_log_level_t level, const char *request_id, const char *msg,
                    const cti_log_field_t *fields, size_t n)
{
    if (!cti_log_enabled(level))
        return;
    char buf[LINE_MAX_BYTES], ts[CTI_ISO_TIME_LEN];
    cti_iso_time(cti_now_ms(), ts);
    size_t len = (size_t)snprintf(buf, sizeof buf, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", ts,
                                  level_names[level]);
    len = cti_log_json_str(buf, len, LINE_MAX_BYTES, msg);
    if (request_id) {
        len = put(buf, len, LINE_MAX_BYTES, ",\"request_id\":", 14);
        len = cti_log_json_str(buf, len, LINE_MAX_BYTES, request_id);
    }
    /* A field that does not fit is dropped whole, so the line stays valid JSON;
     * long strings were already cut short (and closed) by cti_log_json_str. */
    for (size_t i = 0; i < n; i++) {
        size_t before = len;
        len = put_field(buf, len, &fields[i]);
        if (len >= LINE_MAX_BYTES - 3) {
            len = before;
            break;
        }
    }
    buf[len++] = '}';
    buf[len++] = '\n';
    ssize_t w = write(out_fd, buf, len);
    (void)w; /* nowhere to report a failed log write */
}
