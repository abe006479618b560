/* limits.c (api) — see limits.h. */
#include "api/limits.h"
#include "core/cidr.h"
#include "core/common.h"
#include "core/metrics.h"
#include "core/util.h"
#include "http/ratelimit.h"

#include <stdio.h>
#include <stdlib.h>

/* Keys remembered per table: more apps or addresses than this busy at once
 * share buckets' places (ratelimit.h says what forgetting costs: nothing). */
#define APP_KEYS  4096
#define ADDR_KEYS 8192

struct cti_limits {
    cti_ratelimit_t *app, *admin, *anon; /* NULL: off */
};

static cti_ratelimit_t *table(int rate, int keys)
{
    return rate > 0 ? cti_ratelimit_new(rate, 2.0 * rate, keys) : NULL;
}

cti_limits_t *cti_limits_new(const cti_config_t *cfg)
{
    cti_limits_t *l = cti_calloc(1, sizeof *l);
    l->app = table(cfg->rate_limit_api, APP_KEYS);
    l->admin = table(cfg->rate_limit_admin, ADDR_KEYS);
    l->anon = table(cfg->rate_limit_admin, ADDR_KEYS);
    return l;
}

void cti_limits_free(cti_limits_t *l)
{
    if (!l)
        return;
    cti_ratelimit_free(l->app);
    cti_ratelimit_free(l->admin);
    cti_ratelimit_free(l->anon);
    free(l);
}

static bool take(cti_http_req_t *req, cti_ratelimit_t *rl, const char *key, int counter,
                 const char *msg)
{
    int retry_after;
    if (!rl || cti_ratelimit_take(rl, key, cti_mono_ms(), &retry_after))
        return true;
    CTI_METRIC_INC(rate_limited[counter]);
    char secs[16];
    snprintf(secs, sizeof secs, "%d", retry_after);
    cti_http_add_header(req, "Retry-After", secs);
    cti_http_error(req, 429, "rate_limited", "%s; retry after %d s", msg, retry_after);
    return false;
}

bool cti_api_limit_app(cti_http_req_t *req, cti_api_t *api, const char *app_id)
{
    return !api->limits || take(req, api->limits->app, app_id, CTI_RL_APP,
                                "this app sent more requests than RATE_LIMIT_API allows");
}

bool cti_api_limit_addr(cti_http_req_t *req, cti_api_t *api, cti_limit_addr_t which)
{
    if (!api->limits)
        return true;
    char key[64];
    cti_ip_limit_key(cti_http_client_addr(req), key, sizeof key);
    bool admin = which == CTI_LIMIT_ADMIN;
    return take(req, admin ? api->limits->admin : api->limits->anon, key,
                admin ? CTI_RL_ADMIN : CTI_RL_ANON,
                admin ? "this address sent more admin requests than RATE_LIMIT_ADMIN allows"
                      : "this address sent more requests without credentials than "
                        "RATE_LIMIT_ADMIN allows");
}
