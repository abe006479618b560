/*
 * fuzz_jwt.c — libFuzzer target for src/dialpad/jwt.[ch].
 *
 * 1. The input as a webhook body: cti_body_format, cti_jwt_parse,
 *    cti_jwt_verify (fixed secret), cti_jwt_free. Checks what jwt.h promises
 *    about the parsed struct (payload NUL-terminated, signing input inside the
 *    body, nothing left allocated on MALFORMED).
 * 2. The input as a payload: cti_jwt_sign with the fixed secret, then the
 *    token must be recognised as a JWT, parse to CTI_JWT_OK, verify with the
 *    secret (and not with another one), and give back the payload
 *    byte-identical, the empty payload included (JWS allows it). Any
 *    violation is a deliberate __builtin_trap().
 *
 * Build and run: tests/fuzz/run.sh.
 */
#include "dialpad/jwt.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed invariant prints what failed, then traps (a crash for libFuzzer). */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_jwt.c:%d: invariant failed: %s\n", __LINE__, #cond);            \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

/* The secret of tests/fixtures/jwt-vector.txt, whose token is a seed. */
static const char SECRET[] = "fixture-webhook-secret-not-for-production";
static const char OTHER[] = "fixture-webhook-secret-not-for-production!";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a received body. */
static void fuzz_body(const char *body, size_t size)
{
    cti_body_format_t fmt = cti_body_format(body, size);
    CHECK(fmt == CTI_BODY_JWT || fmt == CTI_BODY_JSON || fmt == CTI_BODY_UNKNOWN);

    cti_jwt_t jwt;
    cti_jwt_result_t rc = cti_jwt_parse(body, size, &jwt);
    CHECK(rc == CTI_JWT_OK || rc == CTI_JWT_MALFORMED || rc == CTI_JWT_BAD_ALG);
    CHECK(memchr(jwt.alg, '\0', sizeof jwt.alg) != NULL);
    if (rc == CTI_JWT_OK || rc == CTI_JWT_BAD_ALG) {
        CHECK(jwt.payload != NULL);
        CHECK(jwt.payload[jwt.payload_len] == '\0');
        CHECK(jwt.signing_input >= body && jwt.signing_len <= size &&
              jwt.signing_input + jwt.signing_len <= body + size);
    } else {
        /* MALFORMED: nothing owned (the caller is not told to free). */
        CHECK(jwt.payload == NULL);
    }
    if (rc == CTI_JWT_OK) {
        CHECK(strcmp(jwt.alg, "HS256") == 0);
        /* Touch every byte of the payload (ASan checks the length). */
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < jwt.payload_len; i++)
            sink ^= (unsigned char)jwt.payload[i];
        (void)sink;
        (void)cti_jwt_verify(&jwt, SECRET, sizeof SECRET - 1);
        CHECK(!cti_jwt_verify(&jwt, SECRET, 0)); /* an empty secret never verifies */
    }
    cti_jwt_free(&jwt);
    CHECK(jwt.payload == NULL);
    cti_jwt_free(&jwt); /* idempotent */
}

/* The input as a payload to sign: sign -> parse -> verify must round-trip. */
static void fuzz_roundtrip(const char *payload, size_t size)
{
    char *token = cti_jwt_sign(payload, size, SECRET, sizeof SECRET - 1);
    CHECK(token != NULL);
    size_t tlen = strlen(token);
    CHECK(cti_body_format(token, tlen) == CTI_BODY_JWT);

    cti_jwt_t jwt;
    cti_jwt_result_t rc = cti_jwt_parse(token, tlen, &jwt);
    CHECK(rc == CTI_JWT_OK);
    CHECK(strcmp(jwt.alg, "HS256") == 0);
    CHECK(cti_jwt_verify(&jwt, SECRET, sizeof SECRET - 1));
    CHECK(!cti_jwt_verify(&jwt, OTHER, sizeof OTHER - 1));
    CHECK(jwt.payload_len == size);
    CHECK(memcmp(jwt.payload, payload, size) == 0);
    CHECK(jwt.payload[size] == '\0');
    cti_jwt_free(&jwt);

    /* Senders may append blanks; the token must still verify. */
    char *padded = malloc(tlen + 2);
    CHECK(padded != NULL);
    memcpy(padded, token, tlen);
    memcpy(padded + tlen, "\r\n", 2);
    rc = cti_jwt_parse(padded, tlen + 2, &jwt);
    CHECK(rc == CTI_JWT_OK && cti_jwt_verify(&jwt, SECRET, sizeof SECRET - 1));
    CHECK(jwt.payload_len == size && memcmp(jwt.payload, payload, size) == 0);
    cti_jwt_free(&jwt);
    free(padded);
    free(token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan catches any read past the body. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    fuzz_body(buf, size);
    fuzz_roundtrip(buf, size);
    free(buf);
    return 0;
}
