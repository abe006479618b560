/* util.c — see util.h. */
#include "core/util.h"
#include "core/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

int64_t cti_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cti_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cti_mono_ms(void)
{
    return cti_mono_us() / 1000;
}

void cti_cond_init_mono(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
}

struct timespec cti_mono_deadline(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

static char *put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/* 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z: what the format can say */
#define ISO_MIN_MS (-62167219200000LL)
#define ISO_MAX_MS 253402300799999LL

void cti_iso_time(int64_t ms, char buf[CTI_ISO_TIME_LEN])
{
    ms = ms < ISO_MIN_MS ? ISO_MIN_MS : ms > ISO_MAX_MS ? ISO_MAX_MS : ms;
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    char *p = put_digits(buf, tm.tm_year + 1900, 4);
    *p++ = '-';
    p = put_digits(p, tm.tm_mon + 1, 2);
    *p++ = '-';
    p = put_digits(p, tm.tm_mday, 2);
    *p++ = 'T';
    p = put_digits(p, tm.tm_hour, 2);
    *p++ = ':';
    p = put_digits(p, tm.tm_min, 2);
    *p++ = ':';
    p = put_digits(p, tm.tm_sec, 2);
    *p++ = '.';
    p = put_digits(p, (int)(ms - secs * 1000), 3);
    *p++ = 'Z';
    *p = '\0';
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)**p))
            return CTI_EINVAL;
        v = v * 10 + (**p - '0');
        (*p)++;
    }
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return CTI_EINVAL;
    (*p)++;
    return 0;
}

/* Parses the part after the seconds: fraction and zone. */
static int parse_tail(const char *p, int64_t *frac_ms, int64_t *offset_ms)
{
    *frac_ms = 0;
    *offset_ms = 0;
    if (*p == '.') {
        p++;
        int64_t scale = 100, v = 0;
        if (!isdigit((unsigned char)*p))
            return CTI_EINVAL;
        for (; isdigit((unsigned char)*p); p++, scale /= 10)
            v += (*p - '0') * scale;
        *frac_ms = v;
    }
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0' ? 0 : CTI_EINVAL;
    if (*p != '+' && *p != '-')
        return CTI_EINVAL;
    int sign = *p == '-' ? -1 : 1, hh, mm;
    p++;
    if (digits(&p, 2, &hh) || expect(&p, ':') || digits(&p, 2, &mm) || *p || hh > 23 || mm > 59)
        return CTI_EINVAL;
    *offset_ms = sign * ((int64_t)hh * 3600 + mm * 60) * 1000;
    return 0;
}

int cti_parse_iso_time(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, sec;
    const char *p = s;
    if (digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) || expect(&p, '-') ||
        digits(&p, 2, &d))
        return CTI_EINVAL;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return CTI_EINVAL;
    p++;
    if (digits(&p, 2, &h) || expect(&p, ':') || digits(&p, 2, &mi) || expect(&p, ':') ||
        digits(&p, 2, &sec))
        return CTI_EINVAL;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || sec > 60)
        return CTI_EINVAL;
    int64_t frac, offset;
    if (parse_tail(p, &frac, &offset))
        return CTI_EINVAL;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    *ms = (int64_t)t * 1000 + frac - offset;
    return 0;
}

void cti_random_bytes(void *buf, size_t n)
{
    if (RAND_bytes(buf, (int)n) != 1)
        cti_fatal("no randomness available (RAND_bytes failed)");
}

void cti_hex(const void *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    const unsigned char *b = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void cti_uuid4(char out[37])
{
    unsigned char b[16];
    char hex[33];
    cti_random_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    cti_hex(b, sizeof b, hex);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

bool cti_is_uuid(const char *s)
{
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    return s[36] == '\0';
}

bool cti_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}

int cti_parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0' || isspace((unsigned char)*s) || *s == '+')
        return CTI_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return CTI_EINVAL;
    *out = v;
    return 0;
}

size_t cti_utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--; /* s[max] would continue a character: cut before its start */
    return max;
}

bool cti_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = cti_utf8_char_len(s + i, n - i)))
            return false;
    return true;
}

uint64_t cti_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL ^ n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h ^ h >> 32;
}
