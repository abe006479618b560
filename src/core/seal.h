/*
 * seal.h — secrets at rest: AES-256-GCM sealing of small values (Dialpad
 * tokens, webhook secrets) before they reach the store.
 *
 * A sealed value is text, safe to store in any column:
 *
 *     v1:<kid>:<base64url(nonce[12] | ciphertext | tag[16])>
 *
 * kid is the first 4 bytes of SHA-256(key) as 8 hex digits: it names the key
 * that sealed the value, so keys can rotate (the current key seals; old keys,
 * TOKEN_ENCRYPTION_KEY_OLD, still open what they sealed, and
 * cti_seal_needs_reseal says which values to re-encrypt). Every value gets a
 * fresh random 96-bit nonce. The associated data — what the caller binds the
 * value to, e.g. "<app_id>:access_token" — and the "v1:<kid>:" header are
 * authenticated, not stored: a value copied to another row, field or key id
 * does not open.
 *
 * Keys: 32 bytes, written as 64 hex digits or as base64 (standard or url
 * alphabet, padding optional).
 *
 * Threads: a key set is built once (start-up) and read-only afterwards; seal
 * and open may then be called from any thread at once.
 */
#ifndef CTI_CORE_SEAL_H
#define CTI_CORE_SEAL_H

#include <stdbool.h>
#include <stddef.h>

#define CTI_SEAL_KEY_LEN  32
#define CTI_SEAL_KID_LEN  8 /* hex digits */
#define CTI_SEAL_MAX_KEYS 8 /* the current key and up to 7 old ones */
/* Longest plaintext accepted (tokens and secrets are far smaller). */
#define CTI_SEAL_MAX_PLAINTEXT (64 * 1024)

typedef struct cti_seal_keys cti_seal_keys_t;

/* Parses one key written as 64 hex digits or base64 of 32 bytes (blanks
 * around it ignored). Returns 0, or CTI_EINVAL with a sentence naming the
 * problem in why (never the key itself). */
int cti_seal_parse_key(const char *text, unsigned char key[CTI_SEAL_KEY_LEN], char *why,
                       size_t whycap);

/* Builds a key set: current (required) seals and opens; old_list (a comma-
 * separated list, may be NULL or empty) only opens. A key repeated in the old
 * list is ignored. Returns 0 and *out (free with cti_seal_keys_free), or
 * CTI_EINVAL with a sentence in why ("TOKEN_ENCRYPTION_KEY_OLD item 2: ..."). */
int cti_seal_keys_load(const char *current, const char *old_list, cti_seal_keys_t **out, char *why,
                       size_t whycap);
/* Wipes the keys and frees the set. NULL is ignored. */
void cti_seal_keys_free(cti_seal_keys_t *keys);
/* The current key's id (8 hex digits), owned by the set. */
const char *cti_seal_current_kid(const cti_seal_keys_t *keys);

/* Seals n bytes of plaintext (n <= CTI_SEAL_MAX_PLAINTEXT) bound to ad (may
 * be NULL, same as ""). Returns a NUL-terminated string the caller frees. */
char *cti_seal(const cti_seal_keys_t *keys, const void *plaintext, size_t n, const char *ad);

/* Opens a sealed value with the key its kid names and the same ad it was
 * sealed with. Returns 0 and *out (n bytes plus a NUL, the caller frees;
 * wipe it with cti_seal_wipe_free when done), or:
 *   CTI_EINVAL    not a sealed value (format, version, encoding)
 *   CTI_ENOTFOUND sealed with a key not in the set (rotated out too early)
 *   CTI_EAUTH     the value, its header or the ad do not match (tampered or moved)
 * *out is NULL on failure. */
int cti_seal_open(const cti_seal_keys_t *keys, const char *sealed, const char *ad, char **out,
                  size_t *n);

/* True when sealed is a well-formed sealed value whose kid is not the current
 * key's (it opens with an old key and should be sealed again). */
bool cti_seal_needs_reseal(const cti_seal_keys_t *keys, const char *sealed);

/* For logging a value that does not open once, not at every read of it: true
 * the first time (ad, sealed) is asked about (a small direct-mapped table of
 * hashes; a collision only means logging again). Thread-safe. */
bool cti_seal_first_notice(const char *ad, const char *sealed);
/* Why cti_seal_open failed with rc, as a sentence for a log line. */
const char *cti_seal_open_error(int rc);

/* Overwrites n bytes at p with zeros in a way the compiler cannot drop. */
void cti_seal_wipe(void *p, size_t n);
/* Overwrites s (its strlen) with zeros, then frees it. NULL is ignored. */
void cti_seal_wipe_free(char *s);

#endif
