/*
 * jwt.h — Dialpad webhook bodies: a compact JWT (HS256) whose payload is the
 * event, or (for webhooks without a secret) the plain JSON event.
 *
 * Verification is HMAC-SHA256 by OpenSSL over the exact header.payload bytes,
 * with `alg` pinned to HS256 (none, HS384, HS512, RS256... are refused), the
 * signature compared in constant time, and the payload returned as the exact
 * bytes Dialpad signed. Registered claims (iat, exp, ...) are not checked:
 * a 4xx is never retried by Dialpad, and replays are deduplicated anyway.
 * Why not libjwt: 1.10 accepts HS512 under an HS256 key, and it would parse
 * the token again for every candidate secret (current, grace, global).
 *
 * Pure functions; any thread.
 */
#ifndef CTI_DIALPAD_JWT_H
#define CTI_DIALPAD_JWT_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CTI_BODY_JWT,     /* three base64url segments */
    CTI_BODY_JSON,    /* starts with '{' (after blanks) */
    CTI_BODY_UNKNOWN, /* neither: 400 */
} cti_body_format_t;

/* Decides the format from the bytes, whatever the Content-Type said. */
cti_body_format_t cti_body_format(const char *body, size_t len);

typedef struct {
    const char *signing_input; /* header.payload, points into the body */
    size_t signing_len;
    unsigned char signature[32];
    char *payload; /* decoded payload bytes, NUL-terminated; owned: cti_jwt_free */
    size_t payload_len;
    char alg[16];
} cti_jwt_t;

typedef enum {
    CTI_JWT_OK = 0,
    CTI_JWT_MALFORMED = -1, /* not a compact JWS, bad base64url, header not JSON: 400 */
    CTI_JWT_BAD_ALG = -2,   /* alg is not HS256: 401 */
} cti_jwt_result_t;

/* Parses a compact JWT (no verification yet). Fills jwt on CTI_JWT_OK or
 * CTI_JWT_BAD_ALG (so the caller can name the alg); free with cti_jwt_free. */
cti_jwt_result_t cti_jwt_parse(const char *body, size_t len, cti_jwt_t *jwt);
/* True when secret verifies the parsed token (HS256, constant time). A token
 * no candidate secret verifies is the caller's 401 (dialpad/webhook.c). */
bool cti_jwt_verify(const cti_jwt_t *jwt, const char *secret, size_t secret_len);
void cti_jwt_free(cti_jwt_t *jwt);

/* Makes an HS256 token for payload (tests, the simulator). Caller frees. */
char *cti_jwt_sign(const char *payload, size_t len, const char *secret, size_t secret_len);

#endif
