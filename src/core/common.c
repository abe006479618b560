/* common.c — see common.h. */
#include "core/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

const char *cti_strerror(int err)
{
    switch (err) {
    case CTI_OK: return "ok";
    case CTI_EINVAL: return "invalid input";
    case CTI_ENOTFOUND: return "not found";
    case CTI_EEXIST: return "already exists";
    case CTI_EUNAVAILABLE: return "unavailable";
    case CTI_EDB: return "database error";
    case CTI_EIO: return "i/o error";
    case CTI_ELIMIT: return "limit reached";
    case CTI_EAUTH: return "unauthorized";
    default: return "unknown error";
    }
}

_Noreturn void cti_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fatal: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static void *checked(void *p, size_t n)
{
    if (p == NULL && n != 0)
        cti_fatal("out of memory allocating %zu bytes", n);
    return p;
}

void *cti_malloc(size_t n)
{
    return checked(malloc(n ? n : 1), n ? n : 1);
}

void *cti_calloc(size_t count, size_t n)
{
    return checked(calloc(count ? count : 1, n ? n : 1), 1);
}

void *cti_calloc_table(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        cti_fatal("out of memory mapping %zu bytes", n);
    return p;
}

void cti_free_table(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

void *cti_realloc(void *p, size_t n)
{
    return checked(realloc(p, n ? n : 1), 1);
}

char *cti_strdup(const char *s)
{
    return s ? cti_strndup(s, strlen(s)) : NULL;
}

char *cti_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = cti_malloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}
