/*
 * router.h — the route table: patterns with {param} segments, matched by
 * segment. Internal to src/http/; pure (no I/O), unit-tested alone.
 * Built on the main thread before serving; read-only (so shareable) after.
 */
#ifndef CTI_HTTP_ROUTER_H
#define CTI_HTTP_ROUTER_H

#include <stddef.h>

#include "http/http.h"

#define CTI_ROUTE_MAX_SEGS 12
#define CTI_ROUTE_MAX_PARAMS 6

typedef struct {
    int methods;
    const char *pattern;
    char *segs[CTI_ROUTE_MAX_SEGS]; /* "{app_id}" kept with braces */
    int nsegs;
    cti_http_handler_fn fn;
    void *ud;
    struct cti_metrics_route *metrics; /* its series (core/metrics.h), set by server.c */
} cti_route_t;

typedef struct {
    cti_route_t *routes;
    size_t n;
} cti_router_t;

typedef struct {
    const cti_route_t *route;
    int nparams;
    const char *names[CTI_ROUTE_MAX_PARAMS]; /* point into the route (without braces: see len) */
    size_t name_lens[CTI_ROUTE_MAX_PARAMS];
    char *values[CTI_ROUTE_MAX_PARAMS]; /* point into the caller's path buffer */
    int allowed;                        /* when no method matched: the methods that would */
} cti_route_match_t;

/* Adds a route; aborts on a malformed pattern (a programming error). */
void cti_router_add(cti_router_t *r, int methods, const char *pattern, cti_http_handler_fn fn,
                    void *ud);
/* Matches path (modified in place: split at '/') for method (one CTI_HTTP_* bit).
 * Returns 0 with m filled, CTI_ENOTFOUND when no pattern matches, or
 * CTI_EINVAL when a pattern matches but not the method (m->allowed says which). */
int cti_router_match(const cti_router_t *r, int method, char *path, cti_route_match_t *m);
void cti_router_free(cti_router_t *r);

#endif
