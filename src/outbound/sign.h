/*
 * sign.h — Standard Webhooks (standardwebhooks.com) secrets, ids and
 * signatures, so any of that project's verifier libraries checks ours.
 *
 *   secret     "whsec_" + base64 (standard alphabet) of 24 random bytes;
 *              the key is the decoded bytes
 *   webhook-id "msg_<endpoint id without dashes>_<seq>": one per event and
 *              endpoint, the same on every retry and replay
 *   signature  "v1,<base64 of HMAC-SHA256(key, id + "." + timestamp + "." + body)>",
 *              one per valid secret, space-separated
 * Thread-safe.
 */
#ifndef CTI_OUTBOUND_SIGN_H
#define CTI_OUTBOUND_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTI_WHSEC_PREFIX "whsec_"
#define CTI_WHSEC_BYTES 24
#define CTI_WHSIG_MAX 256 /* a signature header with two signatures, and its NUL */
#define CTI_WHID_MAX 64

/* A new secret. The caller frees it (cti_seal_wipe_free). */
char *cti_whsec_new(void);
/* Is s a secret this server can sign with ("whsec_" + base64 of 16 to 64 bytes)? */
bool cti_whsec_valid(const char *s);
/* Signs with each of the n (1 or 2) secrets. Returns 0, or CTI_EINVAL when a
 * secret is malformed (out is then ""). */
int cti_whsec_sign(const char *const *secrets, int n, const char *msg_id, int64_t timestamp_s,
                   const char *body, size_t len, char out[CTI_WHSIG_MAX]);
/* The webhook-id of event seq to endpoint_id. */
void cti_whsec_msg_id(const char *endpoint_id, int64_t seq, char out[CTI_WHID_MAX]);

#endif
