/*
 * fuzz_config.c — libFuzzer target for src/core/config.c: the .env parser
 * and the validation of what it read.
 *
 * The input is the text of a .env file (up to its first NUL).
 *   1. cti_dotenv_parse: names are [A-Za-z0-9_]+, values are shorter than
 *      the parser's 4 KiB buffer, each line gives a pair, an error naming
 *      that line, or nothing; and writing the pairs back as NAME="value"
 *      (escaping \ " and newlines) parses to the same pairs, without errors.
 *   2. cti_config_load with the pairs as the environment (no file, no real
 *      environment): returns 0 exactly when no error was reported, fills every
 *      setting that always has a value, and the database display string
 *      (db_display, the one that is logged) holds no password: read the way
 *      libpq reads a URI, its user-info password and every password= query
 *      parameter (name percent-decoded, as libpq does) are "***" or absent,
 *      and DB_PASSWORD's value (when it holds one of ~^|`) and a password=
 *      keyword are never in the one made of DB_* parts. Errors and warnings never
 *      quote a secret (one with a ~ ^ | or ` in it: INTERNAL_API_SECRET, DIALPAD_WEBHOOK_SECRET,
 *      TOKEN_ENCRYPTION_KEY, the Dialpad client secret, DB_PASSWORD).
 * A violation is a deliberate __builtin_trap(). Build and run: tests/fuzz/run.sh.
 */
#include "core/common.h"
#include "core/config.h"

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config.c:%d: invariant failed: %s\n", __LINE__, #cond);         \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The environment: the last definition of a name among the pairs. */
static const char *lookup_pairs(const char *name, void *ud)
{
    const cti_strlist_t *pairs = ud;
    for (size_t i = pairs->n; i >= 2; i -= 2)
        if (!strcmp(pairs->items[i - 2], name))
            return pairs->items[i - 1];
    return NULL;
}

static size_t count_lines(const char *text)
{
    size_t n = 1;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

static void check_pairs(const cti_strlist_t *pairs, const cti_strlist_t *errors, size_t lines)
{
    CHECK(pairs->n % 2 == 0);
    CHECK(pairs->n / 2 + errors->n <= lines);
    for (size_t i = 0; i < pairs->n; i += 2) {
        const char *name = pairs->items[i], *value = pairs->items[i + 1];
        CHECK(name[0] != '\0' && strlen(name) < 128);
        for (const char *p = name; *p; p++)
            CHECK(isalnum((unsigned char)*p) || *p == '_');
        CHECK(strlen(value) < 4096);
        CHECK(strchr(value, '\r') == NULL);
    }
    for (size_t i = 0; i < errors->n; i++) {
        long line = 0;
        CHECK(sscanf(errors->items[i], ".env line %ld:", &line) == 1);
        CHECK(line >= 1 && (size_t)line <= lines);
    }
}

/* The pairs written back as a .env file of NAME="value" lines. */
static char *write_back(const cti_strlist_t *pairs)
{
    size_t cap = 1;
    for (size_t i = 0; i < pairs->n; i++)
        cap += 2 * strlen(pairs->items[i]) + 8;
    char *text = malloc(cap), *o = text;
    CHECK(text != NULL);
    for (size_t i = 0; i < pairs->n; i += 2) {
        o += sprintf(o, "%s=\"", pairs->items[i]);
        for (const char *p = pairs->items[i + 1]; *p; p++) {
            if (*p == '\\' || *p == '"')
                *o++ = '\\';
            if (*p == '\n') {
                *o++ = '\\';
                *o++ = 'n';
                continue;
            }
            *o++ = *p;
        }
        o += sprintf(o, "\"\n");
    }
    *o = '\0';
    return text;
}

/* Percent-decodes s[0..n) into out (cap bytes), as libpq decodes URI parts. */
static void pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2]) && sscanf(s + i + 1, "%2x", &v) == 1) {
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
}

/* A postgres URI as libpq reads it: no password but "***" in the user info
 * (up to the first '@' before any '/') nor in any password= parameter. */
static void check_uri_redacted(const char *uri)
{
    const char *p = strstr(uri, "://");
    if (!p)
        return;
    p += 3;
    size_t info = strcspn(p, "@/");
    if (p[info] == '@') {
        const char *colon = memchr(p, ':', info);
        if (colon)
            CHECK((size_t)(p + info - colon - 1) == 3 && !strncmp(colon + 1, "***", 3));
    }
    /* the query: after the user info (a '?' in it is part of the user name) */
    const char *q = strchr(p[info] == '@' ? p + info + 1 : p, '?');
    while (q && *q) {
        q++;
        size_t len = strcspn(q, "&"), klen = strcspn(q, "=&");
        char key[64];
        pct_decode(q, klen < len ? klen : len, key, sizeof key);
        if (!strcmp(key, "password") && klen < len)
            CHECK(len - klen - 1 == 3 && !strncmp(q + klen + 1, "***", 3));
        q += len;
    }
}

/* Whether s occurs in the value of any pair other than the ones named name. */
static bool in_other_values(const cti_strlist_t *pairs, const char *name, const char *s)
{
    for (size_t i = 0; i < pairs->n; i += 2)
        if (strcmp(pairs->items[i], name) && strstr(pairs->items[i + 1], s))
            return true;
    return false;
}

static void check_no_secret(const cti_strlist_t *pairs, const cti_strlist_t *msgs)
{
    static const char *const secrets[] = {"INTERNAL_API_SECRET", "DIALPAD_WEBHOOK_SECRET",
                                          "TOKEN_ENCRYPTION_KEY", "DB_PASSWORD",
                                          "DIALPAD_SANDBOX_CLIENT_SECRET",
                                          "DIALPAD_PROD_CLIENT_SECRET"};
    for (size_t s = 0; s < CTI_ARRAY_LEN(secrets); s++) {
        const char *v = lookup_pairs(secrets[s], (void *)pairs);
        /* Short values, values that also stand elsewhere, and values made of
         * what the messages' own words are made of may appear for other
         * reasons: only values with one of ~^|` (in no message) are looked for. */
        if (!v || strlen(v) < 8 || !strpbrk(v, "~^|`") || in_other_values(pairs, secrets[s], v))
            continue;
        for (size_t i = 0; i < msgs->n; i++)
            CHECK(strstr(msgs->items[i], v) == NULL);
    }
}

static void check_config(const cti_strlist_t *pairs)
{
    cti_config_t cfg;
    cti_strlist_t errors = {0}, warnings = {0};
    int rc = cti_config_load(&cfg, lookup_pairs, (void *)pairs, NULL, &errors, &warnings);
    CHECK(rc == (errors.n ? CTI_EINVAL : 0));
    CHECK(cfg.host && cfg.data_dir && cfg.sqlite_synchronous && cfg.public_base_url &&
          cfg.default_country_code && cfg.dialpad_scopes && cfg.dialpad_base_url);
    if (rc == 0) {
        CHECK(cfg.db_conninfo && cfg.db_display);
        CHECK(cfg.port >= 1 && cfg.port <= 65535);
        CHECK(cfg.header_timeout_s <= cfg.connection_timeout_s);
        size_t cc = strlen(cfg.default_country_code);
        CHECK(cc >= 1 && cc <= 3 && cfg.default_country_code[0] != '0');
    }
    if (cfg.db_display) {
        if (cfg.db_kind == CTI_DB_POSTGRES && (!strncmp(cfg.db_display, "postgres://", 11) ||
                                               !strncmp(cfg.db_display, "postgresql://", 13)))
            check_uri_redacted(cfg.db_display);
        const char *pw = lookup_pairs("DB_PASSWORD", (void *)pairs);
        /* (as for messages: only a value with one of ~^|` is looked for, not
         * one that could be a keyword of the conninfo such as "port") */
        if (pw && strlen(pw) >= 4 && strpbrk(pw, "~^|`") &&
            !lookup_pairs("DATABASE_URL", (void *)pairs) &&
            !in_other_values(pairs, "DB_PASSWORD", pw))
            CHECK(strstr(cfg.db_display, pw) == NULL);
        if (!lookup_pairs("DATABASE_URL", (void *)pairs))
            CHECK(strstr(cfg.db_display, " password='") == NULL);
    }
    check_no_secret(pairs, &errors);
    check_no_secret(pairs, &warnings);
    cti_config_free(&cfg);
    cti_strlist_free(&errors);
    cti_strlist_free(&warnings);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len = strnlen((const char *)data, size);
    char *text = malloc(len + 1);
    CHECK(text != NULL);
    memcpy(text, data, len);
    text[len] = '\0';

    cti_strlist_t pairs = {0}, errors = {0};
    cti_dotenv_parse(text, &pairs, &errors);
    check_pairs(&pairs, &errors, count_lines(text));

    char *back = write_back(&pairs);
    cti_strlist_t again = {0}, errors2 = {0};
    cti_dotenv_parse(back, &again, &errors2);
    CHECK(errors2.n == 0);
    CHECK(again.n == pairs.n);
    for (size_t i = 0; i < pairs.n; i++)
        CHECK(strcmp(again.items[i], pairs.items[i]) == 0);

    check_config(&pairs);

    cti_strlist_free(&again);
    cti_strlist_free(&errors2);
    free(back);
    cti_strlist_free(&pairs);
    cti_strlist_free(&errors);
    free(text);
    return 0;
}
