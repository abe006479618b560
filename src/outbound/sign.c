/* sign.c — see sign.h. */
#include "outbound/sign.h"
#include "core/codec.h"
#include "core/common.h"
#include "core/seal.h"
#include "core/util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *cti_whsec_new(void)
{
    unsigned char key[CTI_WHSEC_BYTES];
    cti_random_bytes(key, sizeof key);
    char *s = cti_malloc(sizeof CTI_WHSEC_PREFIX + 4 * ((sizeof key + 2) / 3));
    memcpy(s, CTI_WHSEC_PREFIX, sizeof CTI_WHSEC_PREFIX - 1);
    EVP_EncodeBlock((unsigned char *)s + sizeof CTI_WHSEC_PREFIX - 1, key, sizeof key);
    cti_seal_wipe(key, sizeof key);
    return s;
}

/* The key of a secret: its bytes; -1 when malformed. */
static int secret_key(const char *s, unsigned char key[64])
{
    size_t plen = sizeof CTI_WHSEC_PREFIX - 1;
    if (!s || strncmp(s, CTI_WHSEC_PREFIX, plen))
        return -1;
    s += plen;
    size_t n = strlen(s);
    if (n % 4 || n < 24 || n > 88 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                              "0123456789+/=") != n)
        return -1;
    unsigned char buf[90];
    int len = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n);
    if (len < 0)
        return -1;
    len -= (s[n - 1] == '=') + (s[n - 2] == '=');
    if (len < 16 || len > 64) {
        cti_seal_wipe(buf, sizeof buf);
        return -1;
    }
    memcpy(key, buf, (size_t)len);
    cti_seal_wipe(buf, sizeof buf);
    return len;
}

bool cti_whsec_valid(const char *s)
{
    unsigned char key[64];
    int n = secret_key(s, key);
    cti_seal_wipe(key, sizeof key);
    return n > 0;
}

int cti_whsec_sign(const char *const *secrets, int n, const char *msg_id, int64_t timestamp_s,
                   const char *body, size_t len, char out[CTI_WHSIG_MAX])
{
    out[0] = '\0';
    char head[CTI_WHID_MAX + 32];
    int hn = snprintf(head, sizeof head, "%s.%lld.", msg_id, (long long)timestamp_s);
    char *signed_text = cti_malloc((size_t)hn + len + 1);
    memcpy(signed_text, head, (size_t)hn);
    memcpy(signed_text + hn, body, len);
    size_t at = 0;
    for (int i = 0; i < n && i < 2; i++) {
        unsigned char key[64], mac[CTI_SHA256_LEN];
        int klen = secret_key(secrets[i], key);
        if (klen < 0) {
            free(signed_text);
            out[0] = '\0';
            return CTI_EINVAL;
        }
        cti_hmac_sha256(key, (size_t)klen, signed_text, (size_t)hn + len, mac);
        cti_seal_wipe(key, sizeof key);
        if (at)
            out[at++] = ' ';
        memcpy(out + at, "v1,", 3);
        at += 3;
        at += (size_t)EVP_EncodeBlock((unsigned char *)out + at, mac, CTI_SHA256_LEN);
        out[at] = '\0';
    }
    free(signed_text);
    return 0;
}

void cti_whsec_msg_id(const char *endpoint_id, int64_t seq, char out[CTI_WHID_MAX])
{
    char compact[40];
    size_t j = 0;
    for (size_t i = 0; endpoint_id[i] && j < sizeof compact - 1; i++)
        if (endpoint_id[i] != '-')
            compact[j++] = endpoint_id[i];
    compact[j] = '\0';
    snprintf(out, CTI_WHID_MAX, "msg_%s_%lld", compact, (long long)seq);
}
