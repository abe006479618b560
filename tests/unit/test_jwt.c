/* test_jwt.c — unit tests for src/dialpad/jwt.c: body format detection, the
 * header's alg (pinned to HS256 by the caller), malformed tokens, and
 * signature verification. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "dialpad/jwt.h"

static const char SECRET[] = "webhook-secret";

/* header.payload.signature with the given header text, signed with SECRET. */
static char *token(const char *header, const char *payload)
{
    size_t hl = cti_b64url_len(strlen(header)), pl = cti_b64url_len(strlen(payload));
    char *out = malloc(hl + pl + cti_b64url_len(32) + 3);
    cti_b64url_encode(header, strlen(header), out);
    out[hl] = '.';
    cti_b64url_encode(payload, strlen(payload), out + hl + 1);
    unsigned char mac[CTI_SHA256_LEN];
    cti_hmac_sha256(SECRET, strlen(SECRET), out, hl + 1 + pl, mac);
    out[hl + 1 + pl] = '.';
    cti_b64url_encode(mac, sizeof mac, out + hl + pl + 2);
    return out;
}

static cti_jwt_result_t parse(const char *header, char *alg_out, size_t cap)
{
    char *t = token(header, "{\"call_id\":1}");
    cti_jwt_t jwt;
    cti_jwt_result_t r = cti_jwt_parse(t, strlen(t), &jwt);
    if (alg_out)
        snprintf(alg_out, cap, "%s", jwt.alg);
    cti_jwt_free(&jwt);
    free(t);
    return r;
}

static void test_signed_token_parses_and_verifies(void **state)
{
    const char payload[] = "{\"call_id\":1,\"state\":\"ringing\"}";
    char *t = cti_jwt_sign(payload, strlen(payload), SECRET, strlen(SECRET));
    assert_int_equal(cti_body_format(t, strlen(t)), CTI_BODY_JWT);
    cti_jwt_t jwt;
    assert_int_equal(cti_jwt_parse(t, strlen(t), &jwt), CTI_JWT_OK);
    assert_string_equal(jwt.alg, "HS256");
    assert_int_equal(jwt.payload_len, strlen(payload));
    assert_memory_equal(jwt.payload, payload, strlen(payload));
    assert_true(cti_jwt_verify(&jwt, SECRET, strlen(SECRET)));
    assert_false(cti_jwt_verify(&jwt, "other-secret", 12));
    assert_false(cti_jwt_verify(&jwt, "", 0));
    cti_jwt_free(&jwt);
    free(t);
}

static void test_header_alg(void **state)
{
    char alg[32];
    assert_int_equal(parse("{\"typ\":\"JWT\",\"alg\":\"HS256\"}", alg, sizeof alg), CTI_JWT_OK);
    assert_int_equal(parse("{\"alg\":\"none\"}", alg, sizeof alg), CTI_JWT_BAD_ALG);
    assert_int_equal(parse("{\"alg\":\"HS512\"}", alg, sizeof alg), CTI_JWT_BAD_ALG);
    assert_string_equal(alg, "HS512");
    assert_int_equal(parse("{\"alg\":\"hs256\"}", NULL, 0), CTI_JWT_BAD_ALG);
    assert_int_equal(parse("{\"typ\":\"JWT\"}", alg, sizeof alg), CTI_JWT_BAD_ALG); /* no alg */
    assert_string_equal(alg, "");
    assert_int_equal(parse("{\"alg\":256}", NULL, 0), CTI_JWT_BAD_ALG);
    assert_int_equal(parse("{\"alg\":null}", NULL, 0), CTI_JWT_BAD_ALG);
    /* escapes decode; a name cut short or with a NUL inside is no alg we take */
    assert_int_equal(parse("{\"alg\":\"HS\\u0032\\u00356\"}", NULL, 0), CTI_JWT_OK);
    assert_int_equal(parse("{\"alg\":\"HS256\\u0000\"}", NULL, 0) == CTI_JWT_OK, 0);
    assert_int_equal(parse("{\"alg\":\"HS256HS256HS256HS256HS256\"}", NULL, 0), CTI_JWT_BAD_ALG);
}

static void test_malformed_headers(void **state)
{
    assert_int_equal(parse("[\"HS256\"]", NULL, 0), CTI_JWT_MALFORMED);
    assert_int_equal(parse("\"HS256\"", NULL, 0), CTI_JWT_MALFORMED);
    assert_int_equal(parse("{\"alg\":\"HS256\"", NULL, 0), CTI_JWT_MALFORMED);
    assert_int_equal(parse("{\"alg\":\"none\",\"alg\":\"HS256\"}", NULL, 0), CTI_JWT_MALFORMED);
    assert_int_equal(parse("", NULL, 0), CTI_JWT_MALFORMED);
}

static void test_malformed_tokens(void **state)
{
    /* eyJhbGciOiJIUzI1NiJ9 is {"alg":"HS256"} */
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", ".e30.sig",
                         "eyJhbGciOiJIUzI1NiJ9.e30.", /* no signature */
                         "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", /* a 3-byte signature */
                         "eyJhbGciOiJIUzI1NiJ9.e3!.c2ln", "e3!.e30.c2ln"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cti_jwt_t jwt;
        assert_int_equal(cti_jwt_parse(bad[i], strlen(bad[i]), &jwt), CTI_JWT_MALFORMED);
        cti_jwt_free(&jwt);
    }
    /* the format sniffing */
    assert_int_equal(cti_body_format(" {\"a\":1}", 8), CTI_BODY_JSON);
    assert_int_equal(cti_body_format("a.b.c\n", 6), CTI_BODY_JWT);
    assert_int_equal(cti_body_format("a.b", 3), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("a.b.c d", 7), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("a.b.c.d", 7), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("a.b.c!", 6), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("a!b.c.d", 7), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("a..-_", 5), CTI_BODY_JWT); /* empty segments: the parser decides */
    assert_int_equal(cti_body_format(" \n\t ", 4), CTI_BODY_UNKNOWN);
    assert_int_equal(cti_body_format("", 0), CTI_BODY_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_token_parses_and_verifies),
        cmocka_unit_test(test_header_alg),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_malformed_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
