/*
 * common.h — error codes, allocation wrappers and small helpers used everywhere.
 *
 * Functions in this project return 0 on success and a negative CTI_E* code on
 * failure. Out of memory is not an error code: the cti_* allocators abort with
 * a message (as h2o_fatal / Redis zmalloc_oom do), so callers never check NULL.
 * Thread-safe: everything here may be called from any thread.
 */
#ifndef CTI_CORE_COMMON_H
#define CTI_CORE_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum {
    CTI_OK = 0,
    CTI_EINVAL = -1,       /* bad input from a caller or a client */
    CTI_ENOTFOUND = -2,    /* no such row / route / thing */
    CTI_EEXIST = -3,       /* unique constraint: it is already there */
    CTI_EUNAVAILABLE = -4, /* a dependency (database) cannot be reached now; retry later */
    CTI_EDB = -5,          /* the database refused a statement (a bug or a schema problem) */
    CTI_EIO = -6,          /* file or socket I/O failed */
    CTI_ELIMIT = -7,       /* a configured limit was hit (size, count, rate) */
    CTI_EAUTH = -8,        /* credentials missing or wrong */
};

/* Returns a static, human-readable name for a CTI_E* code. */
const char *cti_strerror(int err);

/* Allocators that never return NULL: on exhaustion they print and abort(). */
void *cti_malloc(size_t n);
void *cti_calloc(size_t count, size_t n);
void *cti_realloc(void *p, size_t n);
/* Zeroed memory for a large table that is mostly empty (hash tables sized for
 * their worst case): its pages cost memory only once something is written in
 * them, whatever the allocator (a calloc may write every page: tcmalloc's
 * does). Freed with cti_free_table(p, the same n). */
void *cti_calloc_table(size_t n);
void cti_free_table(void *p, size_t n);
char *cti_strdup(const char *s);            /* s may be NULL: returns NULL */
char *cti_strndup(const char *s, size_t n); /* copies at most n bytes, NUL-terminates */

/* Prints "fatal: <msg>" to stderr and aborts. For broken invariants only. */
_Noreturn void cti_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CTI_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
