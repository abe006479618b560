/*
 * log.h — structured logging: one JSON object per line on stderr.
 *
 *   {"time":"2026-01-05T16:00:00.123Z","level":"info","msg":"request",
 *    "request_id":"…","method":"GET","status":200}
 *
 * Each line is built in a stack buffer and written with one write(2), so
 * lines from different threads never interleave. Callable from any thread.
 *
 * Never pass a secret (API key, webhook secret, admin token, JWT) as a field:
 * the logger cannot tell a secret from a name. Redact at the call site.
 */
#ifndef CTI_CORE_LOG_H
#define CTI_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CTI_LOG_DEBUG, CTI_LOG_INFO, CTI_LOG_WARN, CTI_LOG_ERROR } cti_log_level_t;

typedef struct {
    const char *key;
    char type; /* 's' string (NULL → null), 'i' int64, 'b' bool, 'd' double */
    const char *s;
    int64_t i;
    double d;
} cti_log_field_t;

#define CTI_LS(k, v) ((cti_log_field_t){.key = (k), .type = 's', .s = (v)})
#define CTI_LI(k, v) ((cti_log_field_t){.key = (k), .type = 'i', .i = (int64_t)(v)})
#define CTI_LB(k, v) ((cti_log_field_t){.key = (k), .type = 'b', .i = (v) ? 1 : 0})
#define CTI_LD(k, v) ((cti_log_field_t){.key = (k), .type = 'd', .d = (double)(v)})

/* Sets the lowest level written (default info). Not thread-safe against
 * concurrent logging: call at start-up. */
void cti_log_set_level(cti_log_level_t level);
/* Parses "debug|info|warn|error" (case-insensitive). Returns 0 or CTI_EINVAL. */
int cti_log_parse_level(const char *s, cti_log_level_t *out);
bool cti_log_enabled(cti_log_level_t level);
/* Redirects output to fd (default 2). For tests. */
void cti_log_set_fd(int fd);

/* Writes one line. request_id may be NULL; fields may be NULL when n is 0. */
void cti_log_fields(cti_log_level_t level, const char *request_id, const char *msg,
                    const cti_log_field_t *fields, size_t n);

/* cti_log(level, request_id, msg, CTI_LS("k", v), ...): at least one field.
 * cti_log_msg(level, request_id, msg): no fields. */
#define cti_log(level, rid, msg, ...)                                                            \
    cti_log_fields((level), (rid), (msg), (cti_log_field_t[]){__VA_ARGS__},                      \
                   sizeof((cti_log_field_t[]){__VA_ARGS__}) / sizeof(cti_log_field_t))
#define cti_log_msg(level, rid, msg) cti_log_fields((level), (rid), (msg), NULL, 0)

/* Appends s to buf at len as a JSON string literal (with quotes), escaping as
 * JSON requires, cutting s short (never inside an escape or a UTF-8 character)
 * so the result ends before cap - 1. Appends nothing when not even "" fits.
 * Returns the new length. Exposed for tests. */
size_t cti_log_json_str(char *buf, size_t len, size_t cap, const char *s);

#endif
