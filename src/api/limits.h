/*
 * limits.h (api) — the contract's rate limits, over http/ratelimit.h:
 *   - per app over /api and /ws upgrades: RATE_LIMIT_API req/s, burst twice;
 *   - per client address (cti_http_client_addr; an IPv6 /64 as one) over
 *     /internal and /metrics, and, in a table of their own, over requests
 *     that carry no credentials: RATE_LIMIT_ADMIN req/s, burst twice.
 * Over the limit: 429 rate_limited with Retry-After (whole seconds, >= 1).
 * Webhooks from Dialpad and /health never come here (a 4xx would make
 * Dialpad drop the event; overload answers them 503 elsewhere).
 * Buckets are per instance (docs/API.md "Rate limits"). Pool threads.
 */
#ifndef CTI_API_LIMITS_H
#define CTI_API_LIMITS_H

#include <stdbool.h>

#include "api/api.h"

typedef struct cti_limits cti_limits_t;

/* The tables cfg asks for (a rate of 0: that limit off). Never NULL.
 * Main thread; free with cti_limits_free() after the server stopped. */
cti_limits_t *cti_limits_new(const cti_config_t *cfg);
void cti_limits_free(cti_limits_t *l);

typedef enum {
    CTI_LIMIT_ADMIN, /* /internal, /metrics: per client address */
    CTI_LIMIT_ANON,  /* a request without credentials: per client address */
} cti_limit_addr_t;

/* Takes a token of app_id's bucket: true, or false after setting the 429. */
bool cti_api_limit_app(cti_http_req_t *req, cti_api_t *api, const char *app_id);
/* Takes a token of the client address's bucket in the table `which`. */
bool cti_api_limit_addr(cti_http_req_t *req, cti_api_t *api, cti_limit_addr_t which);

#endif
