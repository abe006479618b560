/* jwt.c — see jwt.h. */
#include "dialpad/jwt.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/jscan.h"
#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Trims trailing blanks and newlines some senders append. */
static size_t trimmed_len(const char *body, size_t len)
{
    while (len > 0 && (body[len - 1] == ' ' || body[len - 1] == '\n' || body[len - 1] == '\r' ||
                       body[len - 1] == '\t'))
        len--;
    return len;
}

cti_body_format_t cti_body_format(const char *body, size_t len)
{
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i < len && body[i] == '{')
        return CTI_BODY_JSON;
    len = trimmed_len(body, len);
    if (len <= i)
        return CTI_BODY_UNKNOWN;
    size_t j = i; /* at the end: three runs of base64url digits, two dots between */
    int dots = 0;
    for (;;) {
        j += cti_b64url_span(body + j, len - j);
        if (j == len || body[j] != '.' || ++dots > 2)
            break;
        j++;
    }
    return dots == 2 && j == len ? CTI_BODY_JWT : CTI_BODY_UNKNOWN;
}

/* Decodes one base64url segment into a fresh NUL-terminated buffer. */
static char *decode_segment(const char *s, size_t n, size_t *out_len)
{
    char *buf = cti_malloc(n * 3 / 4 + 4);
    long got = cti_b64url_decode(s, n, (unsigned char *)buf, n * 3 / 4 + 3);
    if (got < 0) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *out_len = (size_t)got;
    return buf;
}

/* Reads "alg" from the decoded header ("" when it is not a string); false if
 * the header is not a JSON object (or names a member twice). */
static bool header_alg(const char *header, size_t len, char *alg, size_t cap)
{
    cti_jdoc_t h;
    alg[0] = '\0';
    if (cti_jdoc_parse(&h, header, len, NULL, 0) != 0)
        return false;
    bool ok = cti_jdoc_type(&h, 0) == CTI_JT_OBJECT;
    long n = ok ? cti_jdoc_str(&h, cti_jdoc_get(&h, 0, "alg"), alg, cap) : -1;
    if (n >= 0 && (size_t)n != strlen(alg)) /* cut short, or a NUL inside: no such alg */
        snprintf(alg, cap, "?");
    else if (n < 0)
        alg[0] = '\0';
    cti_jdoc_free(&h);
    return ok;
}

cti_jwt_result_t cti_jwt_parse(const char *body, size_t len, cti_jwt_t *jwt)
{
    memset(jwt, 0, sizeof *jwt);
    len = trimmed_len(body, len);
    while (len > 0 && (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')) {
        body++;
        len--;
    }
    const char *dot1 = memchr(body, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - body)) : NULL;
    /* the payload segment may be empty (JWS allows it); it then fails as "not an object" */
    if (!dot1 || !dot2 || dot1 == body || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - body)))
        return CTI_JWT_MALFORMED;
    size_t hlen, sig_b64_len = len - (size_t)(dot2 + 1 - body);
    char *header = decode_segment(body, (size_t)(dot1 - body), &hlen);
    bool header_ok = header && header_alg(header, hlen, jwt->alg, sizeof jwt->alg);
    free(header);
    if (!header_ok)
        return CTI_JWT_MALFORMED;
    jwt->payload = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), &jwt->payload_len);
    if (!jwt->payload)
        return CTI_JWT_MALFORMED;
    jwt->signing_input = body;
    jwt->signing_len = (size_t)(dot2 - body);
    if (strcmp(jwt->alg, "HS256") != 0)
        return CTI_JWT_BAD_ALG;
    unsigned char sig[40];
    if (cti_b64url_decode(dot2 + 1, sig_b64_len, sig, sizeof sig) != 32) {
        cti_jwt_free(jwt);
        return CTI_JWT_MALFORMED;
    }
    memcpy(jwt->signature, sig, 32);
    return CTI_JWT_OK;
}

bool cti_jwt_verify(const cti_jwt_t *jwt, const char *secret, size_t secret_len)
{
    unsigned char mac[CTI_SHA256_LEN];
    if (!jwt->payload || secret_len == 0)
        return false;
    cti_hmac_sha256(secret, secret_len, jwt->signing_input, jwt->signing_len, mac);
    return cti_consttime_eq(mac, sizeof mac, jwt->signature, sizeof mac);
}

void cti_jwt_free(cti_jwt_t *jwt)
{
    free(jwt->payload);
    jwt->payload = NULL;
}

char *cti_jwt_sign(const char *payload, size_t len, const char *secret, size_t secret_len)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    size_t hl = cti_b64url_len(sizeof header - 1), pl = cti_b64url_len(len);
    char *out = cti_malloc(hl + 1 + pl + 1 + cti_b64url_len(32) + 1);
    cti_b64url_encode(header, sizeof header - 1, out);
    out[hl] = '.';
    cti_b64url_encode(payload, len, out + hl + 1);
    unsigned char mac[CTI_SHA256_LEN];
    cti_hmac_sha256(secret, secret_len, out, hl + 1 + pl, mac);
    out[hl + 1 + pl] = '.';
    cti_b64url_encode(mac, sizeof mac, out + hl + 1 + pl + 1);
    return out;
}
