/*
 * codec.h — digests and encodings: SHA-256, HMAC-SHA256, base64url, and the
 * opaque pagination cursors lists hand out. Thread-safe.
 */
#ifndef CTI_CORE_CODEC_H
#define CTI_CORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTI_SHA256_LEN 32

void cti_sha256(const void *data, size_t len, unsigned char out[CTI_SHA256_LEN]);
void cti_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char out[CTI_SHA256_LEN]);

/* base64url without padding. encode: out holds cti_b64url_len(n)+1 bytes. */
size_t cti_b64url_len(size_t n);
void cti_b64url_encode(const void *in, size_t n, char *out);
/* Decodes (padding optional). Returns the length, or -1 on a bad character or
 * when the result would exceed cap. */
long cti_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap);
/* How many of the first n characters of s are base64url digits (A-Z a-z 0-9 - _). */
size_t cti_b64url_span(const char *s, size_t n);

/* A list cursor: a position (int64 sort key + text tie-breaker) made opaque.
 * Encoded form fits in CTI_CURSOR_MAX bytes. */
#define CTI_CURSOR_MAX 200
void cti_cursor_encode(int64_t key, const char *tiebreak, char out[CTI_CURSOR_MAX]);
/* Returns 0, or CTI_EINVAL when the text is not a cursor this server made. */
int cti_cursor_decode(const char *text, int64_t *key, char *tiebreak, size_t cap);

#endif
