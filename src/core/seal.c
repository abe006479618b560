/*
 * seal.c — see seal.h. AES-256-GCM through OpenSSL's EVP interface; one
 * cipher context per call (a context is cheap next to the database write a
 * sealed value goes with, and nothing is shared between threads).
 *
 * Must never: log or return a key or a plaintext in an error, or accept a
 * value whose encoding is not canonical (two texts must never open to the
 * same secret, so a flipped character is always refused).
 */
#include "core/seal.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/util.h"

#include <assert.h>
#include <pthread.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define NONCE_LEN  12
#define TAG_LEN    16
#define PREFIX     "v1:"
#define PREFIX_LEN 3
#define HEADER_LEN (PREFIX_LEN + CTI_SEAL_KID_LEN + 1) /* "v1:<kid>:" */

typedef struct {
    unsigned char key[CTI_SEAL_KEY_LEN];
    char kid[CTI_SEAL_KID_LEN + 1];
} seal_key_t;

struct cti_seal_keys {
    size_t n; /* keys[0] is the current key */
    seal_key_t keys[CTI_SEAL_MAX_KEYS];
};

/* ---- keys -------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0)
            return false;
    return true;
}

/* Base64 in either alphabet, padding optional: translated to base64url first. */
static long b64_any_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    char buf[128];
    if (n >= sizeof buf)
        return -1;
    for (size_t i = 0; i < n; i++)
        buf[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    size_t pad = 0;
    while (pad < n && buf[n - 1 - pad] == '=')
        pad++;
    if (pad > 2 || cti_b64url_span(buf, n - pad) != n - pad)
        return -1;
    return cti_b64url_decode(buf, n, out, cap);
}

static void kid_of(const unsigned char key[CTI_SEAL_KEY_LEN], char kid[CTI_SEAL_KID_LEN + 1])
{
    unsigned char d[CTI_SHA256_LEN];
    cti_sha256(key, CTI_SEAL_KEY_LEN, d);
    cti_hex(d, CTI_SEAL_KID_LEN / 2, kid);
    OPENSSL_cleanse(d, sizeof d);
}

int cti_seal_parse_key(const char *text, unsigned char key[CTI_SEAL_KEY_LEN], char *why,
                       size_t whycap)
{
    const char *s = text ? text : "";
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    unsigned char buf[96];
    int rc = CTI_EINVAL;
    if (n == 0) {
        snprintf(why, whycap, "is empty; expected 64 hex digits or base64 of 32 bytes");
    } else if (n == 2 * CTI_SEAL_KEY_LEN && all_hex(s, n)) {
        for (size_t i = 0; i < CTI_SEAL_KEY_LEN; i++)
            buf[i] = (unsigned char)(hexval((unsigned char)s[2 * i]) << 4 |
                                     hexval((unsigned char)s[2 * i + 1]));
        rc = 0;
    } else if (all_hex(s, n) && n % 2 == 0 && n != 44) { /* 44: base64 of 32 bytes */
        snprintf(why, whycap, "is %zu hex digits (%zu bytes); expected 64 hex digits (32 bytes)", n,
                 n / 2);
    } else {
        long got = b64_any_decode(s, n, buf, sizeof buf);
        if (got < 0)
            snprintf(why, whycap, "is neither 64 hex digits nor base64 (%zu characters)", n);
        else if (got != CTI_SEAL_KEY_LEN)
            snprintf(why, whycap, "decodes from base64 to %ld bytes; expected 32", got);
        else
            rc = 0;
    }
    if (rc == 0) {
        bool same = true;
        for (size_t i = 1; i < CTI_SEAL_KEY_LEN; i++)
            same = same && buf[i] == buf[0];
        if (same) {
            snprintf(why, whycap, "is one byte repeated: generate one with openssl rand -hex 32");
            rc = CTI_EINVAL;
        } else {
            memcpy(key, buf, CTI_SEAL_KEY_LEN);
        }
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

/* Adds one key unless the set already holds it. */
static int add_key(cti_seal_keys_t *k, const char *text, const char *label, char *why,
                   size_t whycap)
{
    char sub[160];
    seal_key_t nk;
    if (cti_seal_parse_key(text, nk.key, sub, sizeof sub) != 0) {
        snprintf(why, whycap, "%s %s", label, sub);
        return CTI_EINVAL;
    }
    kid_of(nk.key, nk.kid);
    for (size_t i = 0; i < k->n; i++) {
        if (strcmp(k->keys[i].kid, nk.kid) != 0)
            continue;
        bool dup = CRYPTO_memcmp(k->keys[i].key, nk.key, CTI_SEAL_KEY_LEN) == 0;
        OPENSSL_cleanse(&nk, sizeof nk);
        if (dup)
            return 0;
        snprintf(why, whycap, "%s has the same key id as another key; generate a new key", label);
        return CTI_EINVAL;
    }
    if (k->n == CTI_SEAL_MAX_KEYS) {
        OPENSSL_cleanse(&nk, sizeof nk);
        snprintf(why, whycap, "%s: at most %d old keys are kept", label, CTI_SEAL_MAX_KEYS - 1);
        return CTI_EINVAL;
    }
    k->keys[k->n++] = nk;
    OPENSSL_cleanse(&nk, sizeof nk);
    return 0;
}

int cti_seal_keys_load(const char *current, const char *old_list, cti_seal_keys_t **out, char *why,
                       size_t whycap)
{
    cti_seal_keys_t *k = cti_calloc(1, sizeof *k);
    int rc = add_key(k, current, "TOKEN_ENCRYPTION_KEY", why, whycap);
    char *copy = cti_strdup(old_list ? old_list : ""), *save = NULL;
    int item = 0;
    for (char *t = strtok_r(copy, ",", &save); rc == 0 && t; t = strtok_r(NULL, ",", &save)) {
        char label[64];
        snprintf(label, sizeof label, "TOKEN_ENCRYPTION_KEY_OLD item %d", ++item);
        rc = add_key(k, t, label, why, whycap);
    }
    OPENSSL_cleanse(copy, strlen(copy));
    free(copy);
    if (rc != 0) {
        cti_seal_keys_free(k);
        k = NULL;
    }
    *out = k;
    return rc;
}

void cti_seal_keys_free(cti_seal_keys_t *keys)
{
    if (!keys)
        return;
    OPENSSL_cleanse(keys, sizeof *keys);
    free(keys);
}

const char *cti_seal_current_kid(const cti_seal_keys_t *keys)
{
    assert(keys && keys->n > 0);
    return keys->keys[0].kid;
}

void cti_seal_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

void cti_seal_wipe_free(char *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* ---- sealing ------------------------------------------------------------------- */

/* AES-256-GCM in one direction. For decryption tag is read, else written.
 * The associated data is the header then the caller's ad. Returns 0 or -1. */
static int gcm(bool enc, const unsigned char *key, const unsigned char *nonce, const char *header,
               const char *ad, const unsigned char *in, size_t n, unsigned char *out,
               unsigned char *tag)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = ctx != NULL;
    ok = ok && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) == 1;
    ok = ok &&
         EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *)header, (int)strlen(header)) == 1;
    if (ad && *ad)
        ok = ok &&
             EVP_CipherUpdate(ctx, NULL, &len, (const unsigned char *)ad, (int)strlen(ad)) == 1;
    if (n > 0)
        ok = ok && EVP_CipherUpdate(ctx, out, &len, in, (int)n) == 1;
    if (!enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(ctx, out + (n > 0 ? len : 0), &len) == 1;
    if (enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

char *cti_seal(const cti_seal_keys_t *keys, const void *plaintext, size_t n, const char *ad)
{
    assert(keys && keys->n > 0);
    assert(n <= CTI_SEAL_MAX_PLAINTEXT);
    const seal_key_t *k = &keys->keys[0];
    size_t blen = NONCE_LEN + n + TAG_LEN;
    unsigned char *blob = cti_malloc(blen);
    char header[HEADER_LEN + 1];
    snprintf(header, sizeof header, PREFIX "%s:", k->kid);
    cti_random_bytes(blob, NONCE_LEN);
    if (gcm(true, k->key, blob, header, ad, plaintext, n, blob + NONCE_LEN, blob + NONCE_LEN + n) !=
        0)
        cti_fatal("AES-256-GCM encryption failed");
    char *out = cti_malloc(HEADER_LEN + cti_b64url_len(blen) + 1);
    memcpy(out, header, HEADER_LEN);
    cti_b64url_encode(blob, blen, out + HEADER_LEN);
    free(blob);
    return out;
}

/* Splits "v1:<kid>:<payload>"; returns the payload or NULL when malformed. */
static const char *split(const char *sealed, char kid[CTI_SEAL_KID_LEN + 1])
{
    if (!sealed || strncmp(sealed, PREFIX, PREFIX_LEN) != 0)
        return NULL;
    const char *p = sealed + PREFIX_LEN;
    for (int i = 0; i < CTI_SEAL_KID_LEN; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return NULL;
    if (p[CTI_SEAL_KID_LEN] != ':')
        return NULL;
    memcpy(kid, p, CTI_SEAL_KID_LEN);
    kid[CTI_SEAL_KID_LEN] = '\0';
    return p + CTI_SEAL_KID_LEN + 1;
}

static const seal_key_t *find_key(const cti_seal_keys_t *keys, const char *kid)
{
    for (size_t i = 0; i < keys->n; i++)
        if (strcmp(keys->keys[i].kid, kid) == 0)
            return &keys->keys[i];
    return NULL;
}

/* Decodes the payload, refusing any text that is not exactly what
 * cti_b64url_encode makes of the bytes (no padding, no stray low bits). */
static unsigned char *decode_payload(const char *payload, size_t *blen)
{
    size_t plen = strlen(payload);
    if (plen > cti_b64url_len(NONCE_LEN + CTI_SEAL_MAX_PLAINTEXT + TAG_LEN) ||
        plen < cti_b64url_len(NONCE_LEN + TAG_LEN) || cti_b64url_span(payload, plen) != plen)
        return NULL;
    unsigned char *blob = cti_malloc(plen);
    long n = cti_b64url_decode(payload, plen, blob, plen);
    char *again = n >= NONCE_LEN + TAG_LEN ? cti_malloc(cti_b64url_len((size_t)n) + 1) : NULL;
    if (again)
        cti_b64url_encode(blob, (size_t)n, again);
    bool ok = again && strcmp(again, payload) == 0;
    free(again);
    if (!ok) {
        free(blob);
        return NULL;
    }
    *blen = (size_t)n;
    return blob;
}

int cti_seal_open(const cti_seal_keys_t *keys, const char *sealed, const char *ad, char **out,
                  size_t *n)
{
    assert(keys && out);
    *out = NULL;
    char kid[CTI_SEAL_KID_LEN + 1];
    const char *payload = split(sealed, kid);
    if (!payload)
        return CTI_EINVAL;
    size_t blen = 0;
    unsigned char *blob = decode_payload(payload, &blen);
    if (!blob)
        return CTI_EINVAL;
    const seal_key_t *k = find_key(keys, kid);
    if (!k) {
        free(blob);
        return CTI_ENOTFOUND;
    }
    char header[HEADER_LEN + 1];
    memcpy(header, sealed, HEADER_LEN);
    header[HEADER_LEN] = '\0';
    size_t ctlen = blen - NONCE_LEN - TAG_LEN;
    char *pt = cti_malloc(ctlen + 1);
    int rc = gcm(false, k->key, blob, header, ad, blob + NONCE_LEN, ctlen, (unsigned char *)pt,
                 blob + NONCE_LEN + ctlen);
    free(blob);
    if (rc != 0) {
        OPENSSL_cleanse(pt, ctlen + 1);
        free(pt);
        return CTI_EAUTH;
    }
    pt[ctlen] = '\0';
    *out = pt;
    if (n)
        *n = ctlen;
    return 0;
}

bool cti_seal_needs_reseal(const cti_seal_keys_t *keys, const char *sealed)
{
    char kid[CTI_SEAL_KID_LEN + 1];
    return split(sealed, kid) != NULL && strcmp(kid, keys->keys[0].kid) != 0;
}

/* ---- logging what does not open ---- */

#define NOTED_SLOTS 1024
static uint64_t noted[NOTED_SLOTS];
static pthread_mutex_t noted_lock = PTHREAD_MUTEX_INITIALIZER; /* protects noted */

bool cti_seal_first_notice(const char *ad, const char *sealed)
{
    uint64_t h = cti_hash_bytes(ad, strlen(ad)) * 31 + cti_hash_bytes(sealed, strlen(sealed));
    h |= 1; /* 0 marks an empty slot */
    pthread_mutex_lock(&noted_lock);
    bool first = noted[h % NOTED_SLOTS] != h;
    noted[h % NOTED_SLOTS] = h;
    pthread_mutex_unlock(&noted_lock);
    return first;
}

const char *cti_seal_open_error(int rc)
{
    switch (rc) {
    case CTI_ENOTFOUND:
        return "sealed with a key that is neither TOKEN_ENCRYPTION_KEY nor in "
               "TOKEN_ENCRYPTION_KEY_OLD (a wrong key, or an old key dropped too early)";
    case CTI_EAUTH:
        return "does not authenticate: changed in the database, or copied from another row";
    default:
        return "not a sealed value (malformed)";
    }
}
