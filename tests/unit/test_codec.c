/* test_codec.c — unit tests for src/core/codec.c's base64url: round trips of
 * every length against the encoder, OpenSSL's decoder as the reference, and
 * the inputs that must be refused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/codec.h"

static void test_round_trips(void **state)
{
    unsigned char raw[300], back[300];
    char text[512];
    srand(7);
    for (size_t len = 0; len < sizeof raw; len++) {
        for (size_t i = 0; i < len; i++)
            raw[i] = (unsigned char)rand();
        cti_b64url_encode(raw, len, text);
        size_t n = strlen(text);
        assert_int_equal(cti_b64url_decode(text, n, back, sizeof back), (long)len);
        assert_memory_equal(back, raw, len);
        /* OpenSSL agrees (standard alphabet, padded) */
        char std[520];
        size_t k = 0;
        for (; k < n; k++)
            std[k] = text[k] == '-' ? '+' : text[k] == '_' ? '/' : text[k];
        while (k % 4)
            std[k++] = '=';
        unsigned char ref[400];
        int m = EVP_DecodeBlock(ref, (const unsigned char *)std, (int)k);
        assert_true(m >= (int)len);
        assert_memory_equal(ref, raw, len);
        /* padding is tolerated; an output buffer one byte short is refused */
        memcpy(std, text, n);
        memcpy(std + n, "==", 3);
        assert_int_equal(cti_b64url_decode(std, n + 2, back, sizeof back), (long)len);
        if (len)
            assert_int_equal(cti_b64url_decode(text, n, back, len - 1), -1);
    }
}

static void test_refused(void **state)
{
    unsigned char out[16];
    assert_int_equal(cti_b64url_decode("QUJD", 4, out, sizeof out), 3);
    assert_memory_equal(out, "ABC", 3);
    assert_int_equal(cti_b64url_decode("QUJDR", 5, out, sizeof out), -1); /* 1 digit left */
    assert_int_equal(cti_b64url_decode("QU+D", 4, out, sizeof out), -1);  /* standard alphabet */
    assert_int_equal(cti_b64url_decode("QU/D", 4, out, sizeof out), -1);
    assert_int_equal(cti_b64url_decode("QU D", 4, out, sizeof out), -1);
    assert_int_equal(cti_b64url_decode("QUJ\x80", 4, out, sizeof out), -1);
    assert_int_equal(cti_b64url_decode("QQ=A", 4, out, sizeof out), -1); /* padding inside */
    assert_int_equal(cti_b64url_decode("", 0, out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
