/* jscan.c — see jscan.h. A recursive-descent parser down to CTI_JSON_MAX_DEPTH;
 * deeper containers are checked by a loop with an explicit stack (deep()), so
 * the C stack is bounded whatever the input. */
#include "core/jscan.h"
#include "core/common.h"
#include "core/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *s;
    size_t len, pos;
    cti_jtok_t *tok;
    int n, cap;
    const char *why; /* static text, set on the first error */
} parser_t;

static int fail(parser_t *p, const char *why)
{
    if (!p->why)
        p->why = why;
    return -1;
}

static int add(parser_t *p, cti_jtype_t type, size_t start)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->tok = cti_realloc(p->tok, (size_t)p->cap * sizeof *p->tok);
    }
    p->tok[p->n] = (cti_jtok_t){.type = (uint8_t)type, .start = (uint32_t)start};
    return p->n++;
}

static void ws(parser_t *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
            return;
        p->pos++;
    }
}

/* ---- strings ------------------------------------------------------------------------- */

static int hex4(const unsigned char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], d = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Whether s (6 bytes) is a \u escape of a low surrogate. */
static bool low_escape(const unsigned char *s)
{
    int lo = s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
    return lo >= 0xdc00 && lo <= 0xdfff;
}

/* One escape at s[0] == '\\' (n bytes left): its length, 0 when invalid.
 * \u0000 and a surrogate escape without its other half (a cut-off emoji)
 * are valid JSON text (RFC 8259 §8.2) that jansson refuses: they are
 * accepted and set CTI_JF_ODD in *flags (a high surrogate followed by its low
 * one is one 12-byte escape; one followed by anything else stands alone). */
static size_t escape_len(const unsigned char *s, size_t n, uint8_t *flags)
{
    if (n < 2)
        return 0;
    if (s[1] && strchr("\"\\/bfnrt", s[1]))
        return 2;
    if (s[1] != 'u' || n < 6)
        return 0;
    int u = hex4(s + 2);
    if (u < 0)
        return 0;
    if (u >= 0xd800 && u <= 0xdbff && n >= 12 && low_escape(s + 6))
        return 12;
    if (u == 0 || (u >= 0xd800 && u <= 0xdfff))
        *flags |= CTI_JF_ODD;
    return 6;
}

/* A byte that stands for itself in a string: printable ASCII but '"' and '\\'. */
static inline bool plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* The end of the run of plain bytes from i, eight at a time while no byte of
 * a word can be other (each test below is exact when it says "none"). */
static size_t plain_run(const unsigned char *s, size_t i, size_t n)
{
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, b;
        memcpy(&w, s + i, 8);
        q = w ^ (ONES * '"');
        b = w ^ (ONES * '\\');
        if ((w | ((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS)
            break;
    }
    while (i < n && plain(s[i]))
        i++;
    return i;
}

/* Checks the string whose text starts at p->pos (after its opening quote);
 * leaves p->pos on its closing quote. *flags gets CTI_JF_ESCAPED/CTI_JF_ODD. */
static int scan_string(parser_t *p, uint8_t *flags)
{
    const unsigned char *s = p->s;
    size_t i = p->pos, n = p->len;
    for (;;) {
        i = plain_run(s, i, n);
        if (i >= n)
            return fail(p, "unterminated string");
        unsigned char c = s[i];
        size_t k;
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(p, "control character in a string");
        if (c == '\\') {
            if (!(k = escape_len(s + i, n - i, flags)))
                return fail(p, "invalid escape in a string");
            *flags |= CTI_JF_ESCAPED;
        } else if (!(k = cti_utf8_char_len(s + i, n - i))) {
            return fail(p, "invalid UTF-8 in a string");
        }
        i += k;
    }
    p->pos = i;
    return 0;
}

/* A string at p->pos (its opening quote). *hash (keys only; NULL for values)
 * gets cti_hash_bytes of its raw text. */
static int string(parser_t *p, uint64_t *hash)
{
    int t = add(p, CTI_JT_STRING, ++p->pos);
    uint8_t flags = 0;
    if (scan_string(p, &flags) != 0)
        return -1;
    cti_jtok_t *tok = &p->tok[t];
    tok->flags = flags;
    tok->len = (uint32_t)(p->pos - tok->start);
    tok->next = (uint32_t)(t + 1);
    if (hash) /* a key: of its text as written (escaped keys are always compared) */
        *hash = cti_hash_bytes(p->s + tok->start, tok->len);
    p->pos++;
    return 0;
}

/* ---- numbers and literals -------------------------------------------------------------- */

static size_t digits(const unsigned char *s, size_t i, size_t n)
{
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i;
}

/* Whether the integer text fits int64. */
static bool int64_fits(const char *s, size_t n)
{
    bool neg = s[0] == '-';
    const char *d = s + neg;
    size_t nd = n - neg;
    const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
    return nd < 19 || (nd == 19 && memcmp(d, lim, 19) <= 0);
}

/* Whether a real (s, n bytes; idigits digits before its point, exp its
 * exponent, its magnitude capped past 100000) overflows a double. Only a
 * large decimal exponent can: the rest (almost every real) is settled
 * without strtod. */
static bool real_overflows(const unsigned char *s, size_t n, size_t idigits, long exp)
{
    if ((long)idigits + exp < 300) /* below 10^300 */
        return false;
    char buf[64], *tmp = n < sizeof buf ? buf : cti_malloc(n + 1);
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    double v = strtod(tmp, NULL);
    bool over = errno == ERANGE && isinf(v);
    if (tmp != buf)
        free(tmp);
    return over;
}

/* Checks the number at p->pos and moves past it. Any number the grammar
 * allows is accepted (jansson refuses integers beyond int64 and reals beyond
 * a double): those set CTI_JF_BIG and read as neither (cti_jdoc_int/real). */
static int scan_number(parser_t *p, uint8_t *flags)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, i = start, n = p->len, idigits = 0;
    long exp = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        size_t j = digits(s, i, n);
        idigits = j - i, i = j;
    } else {
        return fail(p, "invalid number");
    }
    bool integer = true;
    if (i < n && s[i] == '.') {
        size_t j = digits(s, i + 1, n);
        if (j == i + 1)
            return fail(p, "invalid number");
        i = j, integer = false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool neg = i < n && s[i] == '-';
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t j = digits(s, i, n);
        if (j == i)
            return fail(p, "invalid number");
        for (; i < j; i++)
            exp = exp > 100000 ? exp : exp * 10 + (s[i] - '0');
        exp = neg ? -exp : exp;
        integer = false;
    }
    *flags = integer ? CTI_JF_INTEGER : 0;
    if (integer ? !int64_fits((const char *)s + start, i - start)
                : real_overflows(s + start, i - start, idigits, exp))
        *flags |= CTI_JF_BIG;
    p->pos = i;
    return 0;
}

static int number(parser_t *p)
{
    size_t start = p->pos;
    uint8_t flags;
    if (scan_number(p, &flags) != 0)
        return -1;
    int t = add(p, CTI_JT_NUMBER, start);
    p->tok[t].len = (uint32_t)(p->pos - start);
    p->tok[t].next = (uint32_t)(t + 1);
    p->tok[t].flags = flags;
    return 0;
}

static int scan_literal(parser_t *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "invalid token");
    p->pos += n;
    return 0;
}

static int literal(parser_t *p, const char *word, cti_jtype_t type)
{
    int t = add(p, type, p->pos);
    if (scan_literal(p, word) != 0)
        return -1;
    p->tok[t].len = (uint32_t)strlen(word);
    p->tok[t].next = (uint32_t)(t + 1);
    return 0;
}

/* ---- containers ------------------------------------------------------------------------- */

static int value(parser_t *p, int depth);

static size_t decode(const cti_jdoc_t *d, const cti_jtok_t *t, char *out, bool exact);

/* Whether two keys are the same text once decoded: exactly (\u0000 and a lone
 * surrogate are themselves here, not the U+FFFD they read as). */
static bool same_key(const parser_t *p, int a, int b)
{
    cti_jdoc_t d = {(const char *)p->s, p->tok, p->n};
    const cti_jtok_t *x = &p->tok[a], *y = &p->tok[b];
    if (!((x->flags | y->flags) & CTI_JF_ESCAPED))
        return x->len == y->len && memcmp(p->s + x->start, p->s + y->start, x->len) == 0;
    char *kx = cti_malloc(x->len + 1), *ky = cti_malloc(y->len + 1);
    size_t nx = decode(&d, x, kx, true), ny = decode(&d, y, ky, true);
    bool same = nx == ny && !memcmp(kx, ky, nx);
    free(kx);
    free(ky);
    return same;
}

/* The keys an object has had so far: a 256-bit filter of their hashes (a
 * webhook's ~40 keys left a 64-bit one half full, so every other key was
 * compared with all before it), and whether one was escaped (then every
 * key compares, since escaped texts differ from their values). */
typedef struct {
    uint64_t bits[4];
    bool escaped;
} seen_t;

/* A key equal to an earlier one of the same object. */
static bool duplicate(const parser_t *p, int obj, int key, seen_t *seen, uint64_t hash)
{
    uint64_t *word = &seen->bits[hash >> 62], bit = 1ULL << (hash & 63);
    bool escaped = p->tok[key].flags & CTI_JF_ESCAPED;
    bool maybe = (*word & bit) || escaped || seen->escaped;
    *word |= bit;
    seen->escaped |= escaped;
    if (!maybe)
        return false;
    for (int k = obj + 1; k < key; k = (int)p->tok[k + 1].next)
        if (same_key(p, k, key))
            return true;
    return false;
}

/* An object's key and its colon, at p->pos (after any whitespace). */
static int member_key(parser_t *p, int obj, seen_t *seen)
{
    if (p->pos >= p->len || p->s[p->pos] != '"')
        return fail(p, "expected a key (a string)");
    uint64_t h;
    int key = p->n;
    if (string(p, &h) != 0)
        return -1;
    if (duplicate(p, obj, key, seen, h))
        return fail(p, "duplicate object key");
    ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
        return fail(p, "expected ':' after a key");
    p->pos++;
    ws(p);
    return 0;
}

/* An object or an array at p->pos: its members, then its closing bracket. */
static int container(parser_t *p, int depth, bool obj)
{
    int t = add(p, obj ? CTI_JT_OBJECT : CTI_JT_ARRAY, p->pos++);
    unsigned char close = obj ? '}' : ']';
    seen_t seen = {{0}, false};
    ws(p);
    bool more = p->pos >= p->len || p->s[p->pos] != close;
    if (!more)
        p->pos++;
    while (more) {
        if ((obj && member_key(p, t, &seen) != 0) || value(p, depth) != 0)
            return -1;
        ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            ws(p);
        } else if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            more = false;
        } else {
            return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    p->tok[t].len = (uint32_t)(p->pos - p->tok[t].start);
    p->tok[t].next = (uint32_t)p->n;
    return 0;
}

/* A scalar at p->pos, checked and passed over (no token). */
static int scalar(parser_t *p)
{
    uint8_t flags = 0;
    if (p->pos >= p->len)
        return fail(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '"':
        p->pos++;
        if (scan_string(p, &flags) != 0)
            return -1;
        p->pos++;
        return 0;
    case 't': return scan_literal(p, "true");
    case 'f': return scan_literal(p, "false");
    case 'n': return scan_literal(p, "null");
    default: return scan_number(p, &flags);
    }
}

/* In deep(): a key and its colon at p->pos. */
static int deep_key(parser_t *p)
{
    uint8_t flags = 0;
    if (p->pos >= p->len || p->s[p->pos] != '"')
        return fail(p, "expected a key (a string)");
    p->pos++;
    if (scan_string(p, &flags) != 0)
        return -1;
    p->pos++;
    ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
        return fail(p, "expected ':' after a key");
    p->pos++;
    ws(p);
    return 0;
}

/* After a value inside deep(): passes ',' (and the next key) or closing
 * brackets. Returns 1 when another value follows, 0 when the outermost
 * bracket closed, -1 on an error. */
static int deep_next(parser_t *p, const unsigned char *open, size_t *top)
{
    while (*top > 0) {
        bool obj = open[*top - 1] == '{';
        ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            ws(p);
            return obj && deep_key(p) != 0 ? -1 : 1;
        }
        if (p->pos >= p->len || p->s[p->pos] != (obj ? '}' : ']'))
            return fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        p->pos++;
        (*top)--;
    }
    return 0;
}

/* A container nested deeper than CTI_JSON_MAX_DEPTH, at p->pos: checked as
 * strictly as the rest, but by a loop over an explicit stack of its open
 * brackets (on the heap, grown as needed: only such input pays for it), and
 * kept as one token, CTI_JF_DEEP, whose members are not read (it reads as
 * empty). Its keys are not compared for duplicates. The C stack stays bounded
 * whatever the input. */
static int deep(parser_t *p)
{
    int t = add(p, p->s[p->pos] == '{' ? CTI_JT_OBJECT : CTI_JT_ARRAY, p->pos);
    size_t cap = 64, top = 0;
    unsigned char *open = cti_malloc(cap);
    int more = 1;
    while (more == 1) { /* at a value */
        unsigned char c = p->pos < p->len ? p->s[p->pos] : 0;
        if (c == '{' || c == '[') {
            if (top == cap)
                open = cti_realloc(open, cap *= 2);
            open[top++] = c;
            p->pos++;
            ws(p);
            if (p->pos < p->len && p->s[p->pos] == (c == '{' ? '}' : ']')) {
                p->pos++;
                top--;
            } else {
                more = c == '{' && deep_key(p) != 0 ? -1 : 1;
                continue;
            }
        } else if (scalar(p) != 0) {
            more = -1;
            break;
        }
        more = deep_next(p, open, &top);
    }
    free(open);
    if (more < 0)
        return -1;
    p->tok[t].flags = CTI_JF_DEEP;
    p->tok[t].len = (uint32_t)(p->pos - p->tok[t].start);
    p->tok[t].next = (uint32_t)(t + 1);
    return 0;
}

static int value(parser_t *p, int depth)
{
    if (p->pos >= p->len)
        return fail(p, "unexpected end of input");
    switch (p->s[p->pos]) {
    case '{':
    case '[':
        if (depth >= CTI_JSON_MAX_DEPTH)
            return deep(p);
        return container(p, depth + 1, p->s[p->pos] == '{');
    case '"': return string(p, NULL);
    case 't': return literal(p, "true", CTI_JT_TRUE);
    case 'f': return literal(p, "false", CTI_JT_FALSE);
    case 'n': return literal(p, "null", CTI_JT_NULL);
    default: return number(p);
    }
}

int cti_jdoc_parse(cti_jdoc_t *d, const char *text, size_t len, char *err, size_t errcap)
{
    parser_t p = {.s = (const unsigned char *)text, .len = len};
    memset(d, 0, sizeof *d);
    /* room for a token per ~8 bytes up front (a webhook needs no regrowth) */
    p.cap = len / 8 < 4096 ? (int)(len / 8) + 16 : 4096;
    p.tok = cti_malloc((size_t)p.cap * sizeof *p.tok);
    if (len >= UINT32_MAX)
        p.why = "input too long";
    ws(&p);
    if (!p.why && (p.pos >= len || (p.s[p.pos] != '{' && p.s[p.pos] != '[')))
        fail(&p, "expected an object or an array");
    if (!p.why && value(&p, 0) == 0) {
        ws(&p);
        if (p.pos < len)
            fail(&p, "unexpected text after the value");
    }
    if (p.why) {
        if (err && errcap)
            snprintf(err, errcap, "%s at byte %zu", p.why, p.pos);
        free(p.tok);
        return -1;
    }
    *d = (cti_jdoc_t){text, p.tok, p.n};
    return 0;
}

void cti_jdoc_free(cti_jdoc_t *d)
{
    free(d->tok);
    memset(d, 0, sizeof *d);
}

/* ---- reading ------------------------------------------------------------------------------ */

int cti_jdoc_type(const cti_jdoc_t *d, int i)
{
    return i < 0 || i >= d->n ? -1 : d->tok[i].type;
}

int cti_jdoc_first(const cti_jdoc_t *d, int c, int *key)
{
    int t = cti_jdoc_type(d, c);
    if ((t != CTI_JT_OBJECT && t != CTI_JT_ARRAY) || (uint32_t)(c + 1) >= d->tok[c].next)
        return -1;
    if (t == CTI_JT_ARRAY)
        return c + 1;
    if (key)
        *key = c + 1;
    return c + 2;
}

int cti_jdoc_after(const cti_jdoc_t *d, int c, int member, int *key)
{
    uint32_t i = d->tok[member].next;
    if (i >= d->tok[c].next)
        return -1;
    if (d->tok[c].type == CTI_JT_ARRAY)
        return (int)i;
    if (key)
        *key = (int)i;
    return (int)i + 1;
}

int cti_jdoc_size(const cti_jdoc_t *d, int c)
{
    int n = 0;
    for (int m = cti_jdoc_first(d, c, NULL); m >= 0; m = cti_jdoc_after(d, c, m, NULL))
        n++;
    return n;
}

int cti_jdoc_get(const cti_jdoc_t *d, int obj, const char *key)
{
    if (cti_jdoc_type(d, obj) != CTI_JT_OBJECT)
        return -1;
    size_t n = strlen(key);
    int k;
    for (int v = cti_jdoc_first(d, obj, &k); v >= 0; v = cti_jdoc_after(d, obj, v, &k)) {
        const cti_jtok_t *t = &d->tok[k];
        if (t->flags & CTI_JF_ESCAPED ? cti_jdoc_str_eq(d, k, key)
                                      : t->len == n && !memcmp(d->text + t->start, key, n))
            return v;
    }
    return -1;
}

/* Appends the UTF-8 of code point cp to out (room for 4 bytes). */
static size_t put_utf8(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes string token t into out (room for t->len + 1 bytes: decoding never
 * lengthens). Returns the decoded length. A CTI_JF_ODD escape (\u0000, a lone
 * surrogate) decodes to U+FFFD, the replacement character, so what is read is
 * always a valid UTF-8 C string; exact (keys compared for duplicates) keeps
 * them as themselves: a NUL byte, the surrogate's 3-byte form. */
static size_t decode(const cti_jdoc_t *d, const cti_jtok_t *t, char *out, bool exact)
{
    const unsigned char *s = (const unsigned char *)d->text + t->start;
    if (!(t->flags & CTI_JF_ESCAPED)) {
        memcpy(out, s, t->len);
        out[t->len] = '\0';
        return t->len;
    }
    size_t o = 0;
    for (size_t i = 0; i < t->len;) {
        if (s[i] != '\\') {
            out[o++] = (char)s[i++];
            continue;
        }
        char c = (char)s[i + 1];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        if (c != 'u') {
            out[o++] = to[strchr(from, c) - from];
            i += 2;
            continue;
        }
        uint32_t cp = (uint32_t)hex4(s + i + 2);
        i += 6;
        if (cp >= 0xd800 && cp <= 0xdbff && i + 6 <= t->len && low_escape(s + i)) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)hex4(s + i + 2) - 0xdc00);
            i += 6;
        } else if (!exact && (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))) {
            cp = 0xfffd;
        }
        if (exact && cp == 0)
            out[o++] = '\0';
        else
            o += put_utf8(cp, out + o);
    }
    out[o] = '\0';
    return o;
}

long cti_jdoc_str(const cti_jdoc_t *d, int i, char *buf, size_t cap)
{
    if (cti_jdoc_type(d, i) != CTI_JT_STRING || cap == 0)
        return -1;
    const cti_jtok_t *t = &d->tok[i];
    char small[256], *tmp = t->len < sizeof small ? small : cti_malloc(t->len + 1);
    size_t n = decode(d, t, tmp, false);
    size_t keep = cti_utf8_prefix(tmp, n, cap - 1);
    memcpy(buf, tmp, keep);
    buf[keep] = '\0';
    if (tmp != small)
        free(tmp);
    return (long)n;
}

char *cti_jdoc_strdup(const cti_jdoc_t *d, int i)
{
    if (cti_jdoc_type(d, i) != CTI_JT_STRING)
        return NULL;
    char *out = cti_malloc(d->tok[i].len + 1);
    decode(d, &d->tok[i], out, false);
    return out;
}

bool cti_jdoc_str_eq(const cti_jdoc_t *d, int i, const char *s)
{
    if (cti_jdoc_type(d, i) != CTI_JT_STRING)
        return false;
    const cti_jtok_t *t = &d->tok[i];
    if (!(t->flags & CTI_JF_ESCAPED))
        return strlen(s) == t->len && !memcmp(d->text + t->start, s, t->len);
    char *v = cti_jdoc_strdup(d, i);
    bool eq = !strcmp(v, s);
    free(v);
    return eq;
}

bool cti_jdoc_str_nonempty(const cti_jdoc_t *d, int i)
{
    return cti_jdoc_type(d, i) == CTI_JT_STRING && d->tok[i].len > 0;
}

bool cti_jdoc_int(const cti_jdoc_t *d, int i, int64_t *out)
{
    if (cti_jdoc_type(d, i) != CTI_JT_NUMBER ||
        (d->tok[i].flags & (CTI_JF_INTEGER | CTI_JF_BIG)) != CTI_JF_INTEGER)
        return false;
    const char *s = d->text + d->tok[i].start;
    size_t n = d->tok[i].len;
    bool neg = *s == '-';
    uint64_t v = 0;
    for (size_t k = neg; k < n; k++)
        v = v * 10 + (uint64_t)(s[k] - '0'); /* fits: not CTI_JF_BIG */
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool cti_jdoc_real(const cti_jdoc_t *d, int i, double *out)
{
    if (cti_jdoc_type(d, i) != CTI_JT_NUMBER ||
        (d->tok[i].flags & (CTI_JF_INTEGER | CTI_JF_BIG)) == CTI_JF_BIG)
        return false; /* a real beyond a double (a big integer reads as its nearest) */
    char buf[64], *tmp = buf, *end;
    size_t n = d->tok[i].len;
    if (n >= sizeof buf)
        tmp = cti_malloc(n + 1);
    memcpy(tmp, d->text + d->tok[i].start, n);
    tmp[n] = '\0';
    errno = 0;
    double v = strtod(tmp, &end);
    bool ok = !(errno == ERANGE && isinf(v));
    if (tmp != buf)
        free(tmp);
    *out = v;
    return ok;
}

/* ---- writing back ----------------------------------------------------------------------- */

/* A string that jansson, PostgreSQL or a browser might refuse as sent
 * (CTI_JF_ODD): written from its decoded text, U+FFFD where the odd escape was. */
static void odd_string(cti_jw_t *w, const cti_jdoc_t *d, const cti_jtok_t *t)
{
    char small[256], *tmp = t->len < sizeof small ? small : cti_malloc(t->len + 1);
    size_t n = decode(d, t, tmp, false);
    cti_jw_str_n(w, tmp, n);
    if (tmp != small)
        free(tmp);
}

void cti_jw_jdoc(cti_jw_t *w, const cti_jdoc_t *d, int i)
{
    const cti_jtok_t *t = &d->tok[i];
    if (t->flags & CTI_JF_DEEP) {
        cti_jw_lit(w, "null");
        return;
    }
    switch (t->type) {
    case CTI_JT_OBJECT:
    case CTI_JT_ARRAY: {
        bool obj = t->type == CTI_JT_OBJECT;
        int k = -1;
        cti_jw_raw(w, obj ? "{" : "[", 1);
        for (int m = cti_jdoc_first(d, i, &k), first = m; m >= 0; m = cti_jdoc_after(d, i, m, &k)) {
            if (m != first)
                cti_jw_lit(w, ",");
            if (obj) {
                cti_jw_jdoc(w, d, k);
                cti_jw_lit(w, ":");
            }
            cti_jw_jdoc(w, d, m);
        }
        cti_jw_raw(w, obj ? "}" : "]", 1);
        break;
    }
    case CTI_JT_STRING:
        if (t->flags & CTI_JF_ODD)
            odd_string(w, d, t);
        else /* with its quotes: valid as sent */
            cti_jw_raw(w, d->text + t->start - 1, t->len + 2);
        break;
    case CTI_JT_NUMBER:
        if (t->flags & CTI_JF_BIG) { /* its digits, as a string */
            cti_jw_lit(w, "\"");
            cti_jw_raw(w, d->text + t->start, t->len);
            cti_jw_lit(w, "\"");
            break;
        }
        /* fall through */
    default: cti_jw_raw(w, d->text + t->start, t->len); break;
    }
}
