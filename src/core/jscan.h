/*
 * jscan.h — a validating JSON reader for the ingest path: one pass over the
 * text, a flat array of tokens pointing into it, nothing allocated per value.
 *
 * Every webhook is parsed once on an HTTP thread (jansson's tree cost ~20 µs
 * of a 1.3 KB event: an allocation per member, then as many frees on the
 * ingest worker); the worker reads the fields it needs from the tokens.
 *
 * What it accepts: every JSON text (RFC 8259) whose top level is an object or
 * an array, in valid UTF-8, with no duplicate keys in an object — that is,
 * everything jansson's json_loadb(…, JSON_REJECT_DUPLICATES) accepts, and
 * deliberately more, since a signed Dialpad event must never be answered 400
 * for what its extras hold (tests/unit/test_jscan.c and tests/fuzz/fuzz_jscan.c
 * hold it to exactly this):
 *  - \u0000 and lone surrogate escapes (a cut-off emoji, "\ud83d"): the
 *    string is flagged CTI_JF_ODD and reads with U+FFFD in their place;
 *  - integers beyond int64 and reals beyond a double (a 20-digit number,
 *    1e400): flagged CTI_JF_BIG, read by neither cti_jdoc_int nor (reals)
 *    cti_jdoc_real;
 *  - nesting deeper than CTI_JSON_MAX_DEPTH: such a container is checked
 *    without recursion and kept as one token flagged CTI_JF_DEEP whose members
 *    are not read (it reads as empty; its keys are not checked for
 *    duplicates). The top levels, where a webhook's fields are, read as usual.
 * Refused: anything else that is not JSON, including a NUL byte in the text.
 *
 * Tokens are in document order. A container is followed by its members (an
 * object's as key, value, key, value...); `next` of every token is the index
 * just past its subtree, so siblings are walked by following it.
 *
 * Threads: any; a document is read-only once parsed.
 */
#ifndef CTI_CORE_JSCAN_H
#define CTI_CORE_JSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/jw.h"

#define CTI_JSON_MAX_DEPTH 64

typedef enum {
    CTI_JT_OBJECT,
    CTI_JT_ARRAY,
    CTI_JT_STRING,
    CTI_JT_NUMBER,
    CTI_JT_TRUE,
    CTI_JT_FALSE,
    CTI_JT_NULL,
} cti_jtype_t;

#define CTI_JF_ESCAPED 1  /* a string with a backslash escape in it */
#define CTI_JF_INTEGER 2  /* a number without fraction or exponent */
#define CTI_JF_ODD     4  /* a string with \u0000 or a lone surrogate escape */
#define CTI_JF_BIG     8  /* an integer beyond int64, or a real beyond a double */
#define CTI_JF_DEEP    16 /* a container below CTI_JSON_MAX_DEPTH: members not read */

typedef struct {
    uint8_t type;   /* cti_jtype_t */
    uint8_t flags;  /* CTI_JF_* */
    uint32_t start; /* offset of the first byte; a string's first byte after its quote */
    uint32_t len;   /* bytes: a string's between its quotes, a container's whole text */
    uint32_t next;  /* index of the token after this one's subtree */
} cti_jtok_t;

typedef struct {
    const char *text; /* borrowed: must outlive the document */
    cti_jtok_t *tok;  /* owned */
    int n;
} cti_jdoc_t;

/* Parses len bytes of text. 0, or -1 with a reason in err (and nothing to
 * free). The top level must be an object or an array. Free with cti_jdoc_free. */
int cti_jdoc_parse(cti_jdoc_t *d, const char *text, size_t len, char *err, size_t errcap);
void cti_jdoc_free(cti_jdoc_t *d);

/* The value of key in the object at token obj, or -1 (also when obj is -1 or
 * not an object). */
int cti_jdoc_get(const cti_jdoc_t *d, int obj, const char *key);
/* The type of token i; -1 when i is -1. */
int cti_jdoc_type(const cti_jdoc_t *d, int i);
/* Members of a container: the first value (after the key, for objects) and
 * the next one, -1 at the end. For objects, *key (if given) is the key's token. */
int cti_jdoc_first(const cti_jdoc_t *d, int container, int *key);
int cti_jdoc_after(const cti_jdoc_t *d, int container, int member, int *key);
/* Members of a container. */
int cti_jdoc_size(const cti_jdoc_t *d, int container);

/* String token i decoded into buf (NUL-terminated; cut at a character
 * boundary when cap is short; U+FFFD for a \u0000 or lone surrogate escape,
 * so the text is valid UTF-8 without NUL). The decoded length, or -1 when i
 * is not a string. */
long cti_jdoc_str(const cti_jdoc_t *d, int i, char *buf, size_t cap);
/* String token i decoded, malloc'd (caller frees); NULL when not a string. */
char *cti_jdoc_strdup(const cti_jdoc_t *d, int i);
/* Whether string token i equals s (decoded). */
bool cti_jdoc_str_eq(const cti_jdoc_t *d, int i, const char *s);
/* Whether token i is a string that decodes to something non-empty. */
bool cti_jdoc_str_nonempty(const cti_jdoc_t *d, int i);
/* A number token as int64 (integers within int64 only, exact) or as double
 * (false for a real beyond a double; an integer beyond int64 reads as the
 * nearest double). */
bool cti_jdoc_int(const cti_jdoc_t *d, int i, int64_t *out);
bool cti_jdoc_real(const cti_jdoc_t *d, int i, double *out);

/* Writes token i's value as compact JSON that jansson (without flags),
 * PostgreSQL and browsers all read: strings and numbers as sent, except a
 * CTI_JF_ODD string (re-escaped, U+FFFD for the odd escapes), a CTI_JF_BIG
 * number (its text as a JSON string) and a CTI_JF_DEEP container (null). */
void cti_jw_jdoc(cti_jw_t *w, const cti_jdoc_t *d, int i);

#endif
