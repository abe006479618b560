/* test_seal.c — unit tests for src/core/seal.c: round trips, tampering, associated
 * data, key rotation (old keys read, needs-reseal), key parsing, nonce uniqueness,
 * and a value sealed by an independent AES-GCM implementation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/common.h"
#include "core/seal.h"

/* Bytes 00 01 .. 1f, as hex and as base64. */
#define KEY_SEQ_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_SEQ_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_SEQ_KID "630dcd29" /* first 4 bytes of SHA-256 of the key (Python hashlib) */
#define KEY_B       "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
#define KEY_C       "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"

static cti_seal_keys_t *load(const char *cur, const char *old)
{
    cti_seal_keys_t *k = NULL;
    char why[200] = "";
    int rc = cti_seal_keys_load(cur, old, &k, why, sizeof why);
    if (rc != 0)
        fail_msg("keys_load: %s", why);
    return k;
}

static void test_round_trip(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    size_t sizes[] = {0, 1, 15, 16, 17, 100, 4096, CTI_SEAL_MAX_PLAINTEXT};
    char *pt = malloc(CTI_SEAL_MAX_PLAINTEXT);
    for (size_t i = 0; i < CTI_SEAL_MAX_PLAINTEXT; i++)
        pt[i] = (char)(i * 7 + 3);
    for (size_t s = 0; s < CTI_ARRAY_LEN(sizes); s++) {
        char *sealed = cti_seal(k, pt, sizes[s], "app:field");
        assert_memory_equal(sealed, "v1:" KEY_SEQ_KID ":", 12);
        char *out = NULL;
        size_t n = 99;
        assert_int_equal(cti_seal_open(k, sealed, "app:field", &out, &n), 0);
        assert_int_equal(n, sizes[s]);
        assert_memory_equal(out, pt, sizes[s]);
        assert_int_equal(out[n], '\0');
        assert_false(cti_seal_needs_reseal(k, sealed));
        free(out);
        free(sealed);
    }
    free(pt);
    cti_seal_keys_free(k);
}

static void test_kid_and_key_forms(void **state)
{
    cti_seal_keys_t *hex = load(KEY_SEQ_HEX, NULL), *b64 = load(KEY_SEQ_B64, NULL);
    cti_seal_keys_t *url = load("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", NULL);
    cti_seal_keys_t *upper =
        load("  000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\n", NULL);
    assert_string_equal(cti_seal_current_kid(hex), KEY_SEQ_KID);
    assert_string_equal(cti_seal_current_kid(b64), KEY_SEQ_KID);
    assert_string_equal(cti_seal_current_kid(url), KEY_SEQ_KID);
    assert_string_equal(cti_seal_current_kid(upper), KEY_SEQ_KID);
    /* what one form seals, another opens: they are the same key */
    char *sealed = cti_seal(hex, "tok", 3, NULL), *out = NULL;
    assert_int_equal(cti_seal_open(b64, sealed, NULL, &out, NULL), 0);
    assert_string_equal(out, "tok");
    free(out);
    free(sealed);
    cti_seal_keys_free(hex);
    cti_seal_keys_free(b64);
    cti_seal_keys_free(url);
    cti_seal_keys_free(upper);
}

/* Sealed with Python's `cryptography` AESGCM (key 00..1f, nonce 64..6f, associated data
 * "v1:630dcd29:" + "app1:access_token"): the format is what seal.h says, not only what
 * this code happens to read back. */
static void test_opens_independent_vector(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    const char *v = "v1:630dcd29:ZGVmZ2hpamtsbW5vLGu_EiaaM_1MByvFrgoBmCwymVI8gcueEz-0lxw-HfL2";
    char *out = NULL;
    size_t n = 0;
    assert_int_equal(cti_seal_open(k, v, "app1:access_token", &out, &n), 0);
    assert_int_equal(n, 17);
    assert_string_equal(out, "dpat_secret-token");
    free(out);
    assert_int_equal(cti_seal_open(k, v, "app2:access_token", &out, &n), CTI_EAUTH);
    assert_null(out);
    cti_seal_keys_free(k);
}

static void test_tamper_every_character_refused(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, KEY_B);
    char *sealed = cti_seal(k, "dpat_0123456789abcdef", 21, "a:f");
    size_t len = strlen(sealed);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            char *t = strdup(sealed);
            t[i] = (char)(t[i] ^ (1 << bit));
            if (t[i] == '\0') {
                free(t);
                continue;
            }
            char *out = NULL;
            int rc = cti_seal_open(k, t, "a:f", &out, NULL);
            if (rc == 0)
                fail_msg("character %zu bit %d flipped still opens: %s", i, bit, t);
            assert_null(out);
            free(t);
        }
    }
    /* truncated or extended */
    for (size_t cut = 0; cut < len; cut++) {
        char *t = strndup(sealed, cut), *out = NULL;
        assert_int_not_equal(cti_seal_open(k, t, "a:f", &out, NULL), 0);
        free(t);
    }
    char *longer = malloc(len + 2), *out = NULL;
    memcpy(longer, sealed, len);
    memcpy(longer + len, "A", 2);
    assert_int_not_equal(cti_seal_open(k, longer, "a:f", &out, NULL), 0);
    free(longer);
    free(sealed);
    cti_seal_keys_free(k);
}

/* Flips each bit of the binary payload and re-encodes it canonically: only the
 * GCM tag can catch these, and it must (CTI_EAUTH). */
static void test_tamper_every_payload_bit_refused(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    char *sealed = cti_seal(k, "refresh-token-xyz", 17, "a:f");
    const char *payload = sealed + 12;
    unsigned char blob[128];
    long n = cti_b64url_decode(payload, strlen(payload), blob, sizeof blob);
    assert_int_equal(n, 12 + 17 + 16);
    for (long i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit++) {
            blob[i] ^= (unsigned char)(1 << bit);
            char text[256] = "v1:" KEY_SEQ_KID ":";
            cti_b64url_encode(blob, (size_t)n, text + 12);
            char *out = NULL;
            assert_int_equal(cti_seal_open(k, text, "a:f", &out, NULL), CTI_EAUTH);
            blob[i] ^= (unsigned char)(1 << bit);
        }
    }
    free(sealed);
    cti_seal_keys_free(k);
}

static void test_wrong_associated_data_refused(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    char *sealed = cti_seal(k, "secret", 6, "app-1:access_token"), *out = NULL;
    const char *wrong[] = {"app-2:access_token", "app-1:refresh_token", "app-1:access_token ", "",
                           NULL};
    for (size_t i = 0; i < CTI_ARRAY_LEN(wrong); i++) {
        assert_int_equal(cti_seal_open(k, sealed, wrong[i], &out, NULL), CTI_EAUTH);
        assert_null(out);
    }
    free(sealed);
    /* no associated data: NULL and "" are the same binding */
    sealed = cti_seal(k, "secret", 6, NULL);
    assert_int_equal(cti_seal_open(k, sealed, "", &out, NULL), 0);
    free(out);
    assert_int_equal(cti_seal_open(k, sealed, "x", &out, NULL), CTI_EAUTH);
    free(sealed);
    cti_seal_keys_free(k);
}

static void test_old_key_reads_and_needs_reseal(void **state)
{
    cti_seal_keys_t *before = load(KEY_B, NULL);
    char *old_sealed = cti_seal(before, "tokenA", 6, "x");
    /* rotate: C is current, B is old */
    cti_seal_keys_t *after = load(KEY_C, KEY_SEQ_HEX "," KEY_B);
    char *out = NULL;
    assert_int_equal(cti_seal_open(after, old_sealed, "x", &out, NULL), 0);
    assert_string_equal(out, "tokenA");
    cti_seal_wipe_free(out);
    assert_true(cti_seal_needs_reseal(after, old_sealed));
    char *resealed = cti_seal(after, "tokenA", 6, "x");
    assert_false(cti_seal_needs_reseal(after, resealed));
    assert_string_not_equal(cti_seal_current_kid(after), cti_seal_current_kid(before));
    /* the header is authenticated: relabelling a value with another key's id fails */
    char *relabel = strdup(resealed);
    memcpy(relabel + 3, cti_seal_current_kid(before), CTI_SEAL_KID_LEN);
    assert_int_equal(cti_seal_open(after, relabel, "x", &out, NULL), CTI_EAUTH);
    free(relabel);
    /* the old key dropped from the set: its values are reported as such */
    cti_seal_keys_t *later = load(KEY_C, NULL);
    assert_int_equal(cti_seal_open(later, old_sealed, "x", &out, NULL), CTI_ENOTFOUND);
    assert_int_equal(cti_seal_open(later, resealed, "x", &out, NULL), 0);
    free(out);
    /* not sealed at all: never "needs reseal" */
    assert_false(cti_seal_needs_reseal(after, "plain-token"));
    assert_false(cti_seal_needs_reseal(after, ""));
    assert_false(cti_seal_needs_reseal(after, "v1:zzzzzzzz:abc"));
    free(old_sealed);
    free(resealed);
    cti_seal_keys_free(before);
    cti_seal_keys_free(after);
    cti_seal_keys_free(later);
}

static void test_not_sealed_values(void **state)
{
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    const char *bad[] = {"",
                         "plain",
                         "v1:",
                         "v1:630dcd29:",
                         "v1:630dcd29",
                         "v2:630dcd29:AAAA",
                         "v1:630DCD29:ZGVmZ2hpamtsbW5vLGu_EiaaM_1MByvFrgoBmCwymVI8",
                         "v1:630dcd29:ZGVm",
                         "v1:630dcd29:ZGVmZ2hpamtsbW5vLGu/EiaaM+1MByvFrgoBmCwymVI8=",
                         "v1:630dcd2:ZGVmZ2hpamtsbW5vLGu_EiaaM_1MByvFrgoBmCwymVI8"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        char *out = NULL;
        int rc = cti_seal_open(k, bad[i], NULL, &out, NULL);
        if (rc != CTI_EINVAL)
            fail_msg("\"%s\": expected CTI_EINVAL, got %d", bad[i], rc);
        assert_null(out);
    }
    char *out = NULL;
    assert_int_equal(cti_seal_open(k, NULL, NULL, &out, NULL), CTI_EINVAL);
    cti_seal_keys_free(k);
}

static void test_bad_key_formats(void **state)
{
    static const struct {
        const char *text, *says;
    } cases[] = {
        {"", "empty"},
        {"   ", "empty"},
        {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e", "31 bytes"},
        {"0001020304", "5 bytes"},
        {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20", "33"},
        {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1", "base64"},
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", "31 bytes"},
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", "33 bytes"},
        {"correct horse battery staple", "neither"},
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=====", "neither"},
        {"0000000000000000000000000000000000000000000000000000000000000000", "repeated"},
        {"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "repeated"},
    };
    for (size_t i = 0; i < CTI_ARRAY_LEN(cases); i++) {
        unsigned char key[CTI_SEAL_KEY_LEN];
        char why[200] = "";
        int rc = cti_seal_parse_key(cases[i].text, key, why, sizeof why);
        if (rc != CTI_EINVAL || !strstr(why, cases[i].says))
            fail_msg("key \"%s\": rc %d, \"%s\" (expected mention of \"%s\")", cases[i].text, rc,
                     why, cases[i].says);
        /* the message never repeats the key */
        if (strlen(cases[i].text) > 8)
            assert_null(strstr(why, cases[i].text));
    }
    unsigned char key[CTI_SEAL_KEY_LEN];
    char why[200];
    assert_int_equal(cti_seal_parse_key(NULL, key, why, sizeof why), CTI_EINVAL);
}

static void test_keys_load_errors(void **state)
{
    cti_seal_keys_t *k = (cti_seal_keys_t *)1;
    char why[200] = "";
    assert_int_equal(cti_seal_keys_load("nope", NULL, &k, why, sizeof why), CTI_EINVAL);
    assert_null(k);
    assert_non_null(strstr(why, "TOKEN_ENCRYPTION_KEY "));
    assert_int_equal(cti_seal_keys_load(KEY_B, KEY_C ",short", &k, why, sizeof why), CTI_EINVAL);
    assert_null(k);
    assert_non_null(strstr(why, "TOKEN_ENCRYPTION_KEY_OLD item 2"));
    /* the current key repeated among the old ones is harmless */
    assert_int_equal(cti_seal_keys_load(KEY_B, KEY_B "," KEY_C, &k, why, sizeof why), 0);
    char *s = cti_seal(k, "x", 1, NULL);
    assert_false(cti_seal_needs_reseal(k, s));
    free(s);
    cti_seal_keys_free(k);
    /* too many old keys */
    char list[1024] = "";
    for (int i = 0; i < CTI_SEAL_MAX_KEYS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%02x%s", i ? "," : "", i + 1,
                 KEY_B + 2);
    assert_int_equal(cti_seal_keys_load(KEY_C, list, &k, why, sizeof why), CTI_EINVAL);
    assert_non_null(strstr(why, "at most"));
}

/* 20,000 values of the same plaintext: every nonce differs (a repeated nonce under
 * one key would break GCM), and so does every sealed text. */
static int cmp_nonce(const void *a, const void *b)
{
    return memcmp(a, b, 12);
}

static void test_nonce_uniqueness(void **state)
{
    enum { N = 20000 };
    cti_seal_keys_t *k = load(KEY_SEQ_HEX, NULL);
    unsigned char(*nonces)[12] = malloc(N * sizeof *nonces);
    for (int i = 0; i < N; i++) {
        char *s = cti_seal(k, "same", 4, "same");
        unsigned char blob[64];
        long n = cti_b64url_decode(s + 12, strlen(s + 12), blob, sizeof blob);
        assert_int_equal(n, 12 + 4 + 16);
        memcpy(nonces[i], blob, 12);
        free(s);
    }
    qsort(nonces, N, sizeof *nonces, cmp_nonce);
    for (int i = 1; i < N; i++)
        if (memcmp(nonces[i - 1], nonces[i], 12) == 0)
            fail_msg("nonce repeated among %d seals", N);
    free(nonces);
    cti_seal_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_kid_and_key_forms),
        cmocka_unit_test(test_opens_independent_vector),
        cmocka_unit_test(test_tamper_every_character_refused),
        cmocka_unit_test(test_tamper_every_payload_bit_refused),
        cmocka_unit_test(test_wrong_associated_data_refused),
        cmocka_unit_test(test_old_key_reads_and_needs_reseal),
        cmocka_unit_test(test_not_sealed_values),
        cmocka_unit_test(test_bad_key_formats),
        cmocka_unit_test(test_keys_load_errors),
        cmocka_unit_test(test_nonce_uniqueness),
    };
    return cmocka_run_group_tests_name("test_seal", tests, NULL, NULL);
}
