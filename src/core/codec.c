/* codec.c — see codec.h. Digests by OpenSSL; the encodings by hand (small). */
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

void cti_sha256(const void *data, size_t len, unsigned char out[CTI_SHA256_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1)
        cti_fatal("EVP_Digest(sha256) failed");
}

void cti_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char out[CTI_SHA256_LEN])
{
    unsigned int n = 0;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n))
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

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long cti_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
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
