/*
 * util.h — time, randomness, hex and string helpers.
 * Thread-safe: everything here may be called from any thread.
 */
#ifndef CTI_CORE_UTIL_H
#define CTI_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall-clock time in milliseconds since the Unix epoch. */
int64_t cti_now_ms(void);
/* Monotonic time in microseconds (for durations and timeouts). */
int64_t cti_mono_us(void);

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

#endif
