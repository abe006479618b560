/* router.c — see router.h. A linear scan: tens of routes, ~100 ns a match. */
#include "http/router.h"
#include "core/common.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool is_param(const char *seg)
{
    size_t n = strlen(seg);
    return n > 2 && seg[0] == '{' && seg[n - 1] == '}';
}

void cti_router_add(cti_router_t *r, int methods, const char *pattern, cti_http_handler_fn fn,
                    void *ud)
{
    if (pattern[0] != '/')
        cti_fatal("route pattern must start with '/': %s", pattern);
    r->routes = cti_realloc(r->routes, (r->n + 1) * sizeof *r->routes);
    cti_route_t *rt = &r->routes[r->n++];
    memset(rt, 0, sizeof *rt);
    rt->methods = methods;
    rt->pattern = pattern;
    rt->fn = fn;
    rt->ud = ud;
    int params = 0;
    for (const char *p = pattern + 1; *p;) {
        size_t len = strcspn(p, "/");
        if (len == 0 || rt->nsegs == CTI_ROUTE_MAX_SEGS)
            cti_fatal("bad route pattern: %s", pattern);
        rt->segs[rt->nsegs] = cti_strndup(p, len);
        if (is_param(rt->segs[rt->nsegs]) && ++params > CTI_ROUTE_MAX_PARAMS)
            cti_fatal("too many parameters in route: %s", pattern);
        rt->nsegs++;
        p += len;
        if (*p == '/')
            p++;
    }
}

/* Splits path into segments in place. Empty segments ("//") are kept so they fail
 * to match; one trailing slash is ignored. Returns the count or -1 if too many. */
static int split(char *path, char **segs)
{
    int n = 0;
    if (*path != '/')
        return -1;
    char *p = path + 1;
    size_t total = strlen(p);
    if (total > 1 && p[total - 1] == '/' && p[total - 2] != '/')
        p[total - 1] = '\0';
    else if (total == 1 && p[0] == '/')
        return -1; /* "//" */
    if (*p == '\0')
        return 0;
    for (;;) {
        if (n == CTI_ROUTE_MAX_SEGS)
            return -1;
        segs[n++] = p;
        char *slash = strchr(p, '/');
        if (!slash)
            return n;
        *slash = '\0';
        p = slash + 1;
    }
}

static bool match_route(const cti_route_t *rt, char **segs, int n, cti_route_match_t *m)
{
    if (rt->nsegs != n)
        return false;
    m->nparams = 0;
    for (int i = 0; i < n; i++) {
        if (is_param(rt->segs[i])) {
            if (segs[i][0] == '\0')
                return false;
            m->names[m->nparams] = rt->segs[i] + 1;
            m->name_lens[m->nparams] = strlen(rt->segs[i]) - 2;
            m->values[m->nparams++] = segs[i];
        } else if (strcmp(rt->segs[i], segs[i]) != 0) {
            return false;
        }
    }
    return true;
}

/* Among matching routes the one with more literal segments wins, so
 * "/api/calls/active" beats "/api/calls/{call_id}" whatever the order of registration. */
int cti_router_match(const cti_router_t *r, int method, char *path, cti_route_match_t *m)
{
    char *segs[CTI_ROUTE_MAX_SEGS];
    int n = split(path, segs), best = -1;
    memset(m, 0, sizeof *m);
    if (n < 0)
        return CTI_ENOTFOUND;
    int allowed = 0;
    for (size_t i = 0; i < r->n; i++) {
        cti_route_match_t cand;
        if (!match_route(&r->routes[i], segs, n, &cand))
            continue;
        if (!(r->routes[i].methods & method)) {
            allowed |= r->routes[i].methods;
            continue;
        }
        int literal = n - cand.nparams;
        if (literal > best) {
            best = literal;
            *m = cand;
            m->route = &r->routes[i];
            m->allowed = 0;
        }
    }
    if (m->route)
        return 0;
    m->allowed = allowed;
    return allowed ? CTI_EINVAL : CTI_ENOTFOUND;
}

void cti_router_free(cti_router_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        for (int j = 0; j < r->routes[i].nsegs; j++)
            free(r->routes[i].segs[j]);
    free(r->routes);
    r->routes = NULL;
    r->n = 0;
}
