/* codec.c — see codec.h. Digests by OpenSSL; the encodings by hand (small). */
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

void cti_sha256(const void *data, size_t len, unsigned char out[CTI_SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
        cti_fatal("EVP_Digest(sha256) failed");
}

/* HMAC contexts, one per thread, made once: OpenSSL's one-shot HMAC() looks
 * the algorithms up by name and allocates a context on every call (a third
 * of a webhook's signature check). A context is keyed again for each use. */
static pthread_key_t hmac_key;
static EVP_MAC *hmac_alg;

static void free_hmac_ctx(void *ctx)
{
    EVP_MAC_CTX_free(ctx);
}

static void hmac_once(void)
{
    if (!(hmac_alg = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL)) ||
        pthread_key_create(&hmac_key, free_hmac_ctx) != 0)
        cti_fatal("cannot set up HMAC");
}

static EVP_MAC_CTX *hmac_ctx(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, hmac_once);
    EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
    if (ctx)
        return ctx;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!(ctx = EVP_MAC_CTX_new(hmac_alg)) || EVP_MAC_CTX_set_params(ctx, params) != 1)
        cti_fatal("cannot set up HMAC-SHA256");
    pthread_setspecific(hmac_key, ctx);
    return ctx;
}

void cti_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char out[CTI_SHA256_LEN])
{
    EVP_MAC_CTX *ctx = hmac_ctx();
    size_t n = 0;
    static const unsigned char none[1];
    if (EVP_MAC_init(ctx, keylen ? key : none, keylen, NULL) != 1 ||
        EVP_MAC_update(ctx, data, len) != 1 || EVP_MAC_final(ctx, out, &n, CTI_SHA256_LEN) != 1)
        cti_fatal("HMAC(sha256) failed");
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t cti_b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void cti_b64url_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* base64url digit values; 0 marks a byte that is not one (values are stored + 1). */
static const uint8_t B64URL[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
    ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
    ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
    ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
    ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63,
    ['_'] = 64,
};

size_t cti_b64url_span(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && B64URL[(unsigned char)s[i]])
        i++;
    return i;
}

long cti_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        return -1;
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) { /* four digits, three bytes */
        uint32_t a = B64URL[p[i]], b = B64URL[p[i + 1]], c = B64URL[p[i + 2]],
                 d = B64URL[p[i + 3]];
        if (!a || !b || !c || !d)
            return -1;
        uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    uint32_t v = 0;
    size_t left = n - i;
    for (size_t k = 0; k < left; k++) {
        uint32_t d = B64URL[p[i + k]];
        if (!d)
            return -1;
        v = v << 6 | (d - 1);
    }
    if (left == 2) {
        out[o++] = (unsigned char)(v >> 4);
    } else if (left == 3) {
        out[o++] = (unsigned char)(v >> 10);
        out[o++] = (unsigned char)(v >> 2);
    }
    return (long)o;
}

/* Cursor text: base64url("v1:<key>:<tiebreak>"). Opaque to clients, checked on decode. */
void cti_cursor_encode(int64_t key, const char *tiebreak, char out[CTI_CURSOR_MAX])
{
    char raw[140];
    int n = snprintf(raw, sizeof raw, "v1:%lld:%s", (long long)key, tiebreak ? tiebreak : "");
    if (n < 0 || (size_t)n >= sizeof raw)
        cti_fatal("cursor tie-breaker too long");
    cti_b64url_encode(raw, (size_t)n, out);
}

int cti_cursor_decode(const char *text, int64_t *key, char *tiebreak, size_t cap)
{
    unsigned char raw[160];
    size_t len = strlen(text);
    if (len == 0 || len >= CTI_CURSOR_MAX)
        return CTI_EINVAL;
    long n = cti_b64url_decode(text, len, raw, sizeof raw - 1);
    if (n < 4)
        return CTI_EINVAL;
    raw[n] = '\0';
    if (memcmp(raw, "v1:", 3) != 0 || strlen((char *)raw) != (size_t)n)
        return CTI_EINVAL;
    char *colon = strchr((char *)raw + 3, ':');
    if (!colon)
        return CTI_EINVAL;
    *colon = '\0';
    if (cti_parse_i64((char *)raw + 3, key) != 0 || strlen(colon + 1) >= cap)
        return CTI_EINVAL;
    memcpy(tiebreak, colon + 1, strlen(colon + 1) + 1);
    return 0;
}
