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
#include "core/util.h"

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

static void hmac_hex(const char *key, size_t keylen, const char *data, char *hex)
{
    unsigned char mac[CTI_SHA256_LEN];
    cti_hmac_sha256(key, keylen, data, strlen(data), mac);
    cti_hex(mac, sizeof mac, hex);
}

/* RFC 4231 cases 2 and 6 (a key longer than a block), the empty key, and a
 * context keyed again for each use (never keeping the previous key). */
static void test_hmac_vectors(void **state)
{
    (void)state;
    char hex[2 * CTI_SHA256_LEN + 1], big[131];
    memset(big, 0xaa, sizeof big);
    hmac_hex("Jefe", 4, "what do ya want for nothing?", hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    hmac_hex(big, sizeof big, "Test Using Larger Than Block-Size Key - Hash Key First", hex);
    assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    hmac_hex("", 0, "", hex);
    assert_string_equal(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
    hmac_hex("Jefe", 4, "what do ya want for nothing?", hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_hmac_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
