/* tenant.c — see tenant.h. A fixed list, written only at start-up. */
#include "core/tenant.h"
#include "core/common.h"

#include <assert.h>
#include <stddef.h>

typedef struct {
    unsigned mask;
    cti_tenant_fn fn;
    void *ud;
} subscriber_t;

static subscriber_t subscribers[CTI_TENANT_SUBSCRIBERS_MAX];
static int nsubscribers;

void cti_tenant_subscribe(unsigned mask, cti_tenant_fn fn, void *ud)
{
    assert(fn && mask);
    if (nsubscribers == CTI_TENANT_SUBSCRIBERS_MAX)
        cti_fatal("more than %d tenant-change subscribers", CTI_TENANT_SUBSCRIBERS_MAX);
    subscribers[nsubscribers++] = (subscriber_t){mask, fn, ud};
}

void cti_tenant_changed(const char *app_id, unsigned what)
{
    assert(app_id && what);
    for (int i = 0; i < nsubscribers; i++)
        if (subscribers[i].mask & what)
            subscribers[i].fn(subscribers[i].ud, app_id, what);
}

void cti_tenant_unsubscribe_all(void)
{
    nsubscribers = 0;
}
