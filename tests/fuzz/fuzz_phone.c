/*
 * fuzz_phone.c — libFuzzer target for src/model/phone.c (E.164 normalization).
 *
 * The input's first byte picks the default country code (one of a few real
 * ones, or one made of the next bytes' digits, as DEFAULT_COUNTRY_CODE
 * allows: 1 to 3 digits, no leading 0); the rest, up to a NUL, is the number.
 * Checked, for every input:
 *   - success gives '+' and 8 to 15 digits, the first not 0, NUL-terminated;
 *   - normalizing is idempotent: the output normalizes to itself;
 *   - separators do not matter: the input with a space, a dash, a dot or
 *     parentheses put between its characters gives the same answer;
 *   - the output's digits are the input's digits (less an international
 *     "00"), or the country code followed by them (less a national trunk 0).
 * A violation is a deliberate __builtin_trap(). Build and run: tests/fuzz/run.sh.
 */
#include "core/common.h"
#include "model/phone.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_phone.c:%d: invariant failed: %s\n", __LINE__, #cond);          \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const CODES[] = {"1", "44", "49", "33", "353", "7", "86", "998"};

/* The digits of s, and whether a '+' came before the first one. */
static size_t digits_of(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s; s++)
        if (*s >= '0' && *s <= '9' && n + 1 < cap)
            out[n++] = *s;
    out[n] = '\0';
    return n;
}

/* s with sep put between every two characters (a copy the caller frees). */
static char *spread(const char *s, const char *sep)
{
    size_t n = strlen(s), k = strlen(sep);
    char *out = malloc(n * (k + 1) + 1), *o = out;
    CHECK(out != NULL);
    for (size_t i = 0; i < n; i++) {
        *o++ = s[i];
        if (i + 1 < n) {
            memcpy(o, sep, k);
            o += k;
        }
    }
    *o = '\0';
    return out;
}

static void check_output(const char *out)
{
    size_t len = strnlen(out, CTI_E164_MAX);
    CHECK(len < CTI_E164_MAX);
    CHECK(out[0] == '+');
    CHECK(len - 1 >= 8 && len - 1 <= 15);
    CHECK(out[1] != '0');
    CHECK(strspn(out + 1, "0123456789") == len - 1);
}

static void fuzz_number(const char *in, const char *cc)
{
    char out[CTI_E164_MAX], again[CTI_E164_MAX];
    memset(out, 'x', sizeof out);
    int rc = cti_phone_e164(in, cc, out);
    CHECK(rc == 0 || rc == CTI_EINVAL);

    /* separators anywhere change nothing */
    static const char *const seps[] = {" ", "-", ".", ")(", "\t"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(seps); i++) {
        char *s = spread(in, seps[i]);
        int rc2 = cti_phone_e164(s, cc, again);
        CHECK(rc2 == rc);
        if (rc == 0)
            CHECK(strcmp(again, out) == 0);
        free(s);
    }
    if (rc != 0)
        return;
    check_output(out);

    /* idempotent */
    CHECK(cti_phone_e164(out, cc, again) == 0);
    CHECK(strcmp(again, out) == 0);

    /* the output's digits come from the input's, and the country code */
    char d[64];
    size_t n = digits_of(in, d, sizeof d);
    const char *plus = strchr(in, '+');
    bool intl = plus != NULL || (n > 2 && !strncmp(d, "00", 2));
    const char *sig = !plus && n > 2 && !strncmp(d, "00", 2) ? d + 2 : d;
    const char *o = out + 1;
    size_t cc_len = strlen(cc);
    if (intl) {
        CHECK(strcmp(o, sig) == 0);
    } else {
        bool as_is = strcmp(o, sig) == 0;
        bool with_cc = !strncmp(o, cc, cc_len) && !strcmp(o + cc_len, sig);
        bool trunk = sig[0] == '0' && !strncmp(o, cc, cc_len) && !strcmp(o + cc_len, sig + 1);
        CHECK(as_is || with_cc || trunk);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char cc[4];
    size_t skip = 1;
    uint8_t pick = data[0];
    if (pick < 0xe0) {
        snprintf(cc, sizeof cc, "%s", CODES[pick % CTI_ARRAY_LEN(CODES)]);
    } else { /* a code from the next bytes: 1 to 3 digits, not starting with 0 */
        size_t k = 1 + pick % 3, n = 0;
        for (size_t i = 1; i < size && n < k; i++, skip++)
            cc[n++] = (char)('0' + data[i] % 10);
        cc[n] = '\0';
        if (n == 0 || cc[0] == '0')
            return 0;
    }
    size_t len = strnlen((const char *)data + skip, size - skip);
    char *in = malloc(len + 1);
    CHECK(in != NULL);
    memcpy(in, data + skip, len);
    in[len] = '\0';
    fuzz_number(in, cc);
    free(in);
    return 0;
}
