/*
 * jw.h — a JSON text writer: appends to a growable buffer, no tree.
 *
 * The hot paths (call objects, event bodies, list pages) build JSON text
 * directly: a jansson tree costs an allocation per member and a second pass
 * to dump. Strings must be valid UTF-8 (everything stored came through
 * jansson or cti's UTF-8 copies); they are escaped as JSON requires.
 *
 * Commas are automatic: cti_jw_key() and cti_jw_item() write one unless the
 * last byte opened an object or array.
 */
#ifndef CTI_CORE_JW_H
#define CTI_CORE_JW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct {
    char *p;   /* always NUL-terminated once anything was written */
    size_t len, cap;
} cti_jw_t;

void cti_jw_free(cti_jw_t *w);
/* The text (caller frees; "" when nothing was written); w is empty after. */
char *cti_jw_take(cti_jw_t *w, size_t *len);
void cti_jw_reserve(cti_jw_t *w, size_t more);

void cti_jw_raw(cti_jw_t *w, const char *s, size_t n);
#define cti_jw_lit(w, lit) cti_jw_raw((w), (lit), sizeof(lit) - 1)

/* "key": (with a comma first when needed) — key is written as given. */
void cti_jw_key(cti_jw_t *w, const char *key);
/* A comma when needed, before an array element. */
void cti_jw_item(cti_jw_t *w);

void cti_jw_str(cti_jw_t *w, const char *s);          /* NULL → null */
void cti_jw_str_n(cti_jw_t *w, const char *s, size_t n);
void cti_jw_text(cti_jw_t *w, const char *s);         /* NULL or "" → null */
void cti_jw_int(cti_jw_t *w, int64_t v);
void cti_jw_bool(cti_jw_t *w, bool b);
void cti_jw_null(cti_jw_t *w);
void cti_jw_id(cti_jw_t *w, int64_t id);              /* "123" as a string; 0 → null */
void cti_jw_time(cti_jw_t *w, int64_t ms);            /* ISO 8601 string; 0 → null */
void cti_jw_json(cti_jw_t *w, const json_t *v);       /* a jansson value; NULL → null */

#endif
