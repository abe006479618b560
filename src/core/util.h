/*
 * util.h — time, randomness, hex and string helpers.
 * Thread-safe: everything here may be called from any thread.
 */
#ifndef CTI_CORE_UTIL_H
#define CTI_CORE_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t cti_now_ms(void);
/* Monotonic time in microseconds (for durations and timeouts). */
int64_t cti_mono_us(void);
/* The same in milliseconds. */
int64_t cti_mono_ms(void);

/* Condition variables whose timed waits run on CLOCK_MONOTONIC: a step of the
 * wall clock (NTP, an operator's `date -s`) neither stalls a wait in progress
 * (a step back of a day would hold a CLOCK_REALTIME wait for a day) nor ends
 * it early. cti_cond_init_mono initialises one; cti_mono_deadline(ms) is the
 * absolute time `ms` from now to pass to pthread_cond_timedwait on it. */
void cti_cond_init_mono(pthread_cond_t *cond);
struct timespec cti_mono_deadline(int64_t ms);

/* Formats ms-since-epoch as ISO 8601 UTC with milliseconds:
 * "2026-01-05T16:00:00.123Z". Times outside years 0000..9999 are clamped to
 * them. buf must hold CTI_ISO_TIME_LEN bytes. */
#define CTI_ISO_TIME_LEN 25
void cti_iso_time(int64_t ms, char buf[CTI_ISO_TIME_LEN]);
/* Parses ISO 8601 ("2026-01-05T16:00:00Z", optional fraction, "Z" or ±hh:mm).
 * Returns 0 and sets *ms, or CTI_EINVAL. */
int cti_parse_iso_time(const char *s, int64_t *ms);

/* Fills buf with n cryptographically secure random bytes (OpenSSL RAND_bytes).
 * Aborts if the system cannot provide randomness. */
void cti_random_bytes(void *buf, size_t n);
/* Writes 2*n lowercase hex digits and a NUL to out (out holds 2*n+1 bytes). */
void cti_hex(const void *in, size_t n, char *out);
/* A random version-4 UUID, lowercase, 36 chars + NUL. */
void cti_uuid4(char out[37]);
/* True if s is a UUID in canonical 8-4-4-4-12 hex form (either case). */
bool cti_is_uuid(const char *s);

/* A fast non-cryptographic 64-bit hash of n bytes, eight at a time (for
 * hash tables and filters whose entries are compared anyway). */
uint64_t cti_hash_bytes(const void *p, size_t n);

/* Constant-time comparison of two byte strings; lengths are not secret. */
bool cti_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

/* Parses a whole decimal int64 ("-12", "9223372036854775807"); no spaces,
 * no trailing junk. Returns 0 or CTI_EINVAL. */
int cti_parse_i64(const char *s, int64_t *out);
/* The length of the longest prefix of s (n bytes of UTF-8) that is at most
 * max bytes and does not cut a character in two. */
size_t cti_utf8_prefix(const char *s, size_t n, size_t max);

/* Strict UTF-8 (RFC 3629), the one validator of raw bytes every module uses
 * (log lines, the ingest JSON reader, WebSocket text): no overlong forms, no
 * surrogates (U+D800..DFFF), nothing above U+10FFFF, no truncated sequence.
 *
 * cti_utf8_char_len: the length (1..4) of the well-formed character at s[0..n),
 * or 0 when it is not one (n >= 1). Inline: the JSON reader calls it per
 * non-ASCII character. The lead byte alone sets the length and the range of
 * the second byte (Unicode table 3-7); later bytes are 0x80..0xBF. */
static inline size_t cti_utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t need;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        need = 2;
    else if (c >= 0xe0 && c <= 0xef)
        need = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        need = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0; /* a continuation byte, C0/C1 (always overlong), F5..FF */
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return need;
}
/* Whether s[0..n) is well-formed UTF-8 as above (n == 0: true). */
bool cti_utf8_valid(const uint8_t *s, size_t n);

#endif
