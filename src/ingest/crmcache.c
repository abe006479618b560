/* crmcache.c — see crmcache.h. An open-addressing table of CRM_SLOTS slots,
 * probed CRM_PROBE deep; a full probe run overwrites its home slot. */
#include "ingest/crmcache.h"
#include "core/common.h"
#include "core/util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRM_SLOTS  4096 /* a power of two */
#define CRM_PROBE  8
#define CRM_TTL_MS 1000

typedef struct {
    char app_id[37];
    int64_t user; /* 0: a free slot */
    char *crm;    /* NULL: not mapped */
    unsigned gen;
    int64_t at_us;
} crm_slot_t;

static crm_slot_t *crm_slots; /* worker only */
static atomic_uint crm_gen;   /* any thread */

void cti_crm_cache_forget(void)
{
    atomic_fetch_add(&crm_gen, 1);
}

unsigned cti_crm_cache_gen(void)
{
    return atomic_load(&crm_gen);
}

static crm_slot_t *crm_home(const char *app_id, int64_t user)
{
    if (!crm_slots)
        crm_slots = cti_calloc(CRM_SLOTS, sizeof *crm_slots);
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)user;
    for (const char *p = app_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return &crm_slots[h & (CRM_SLOTS - 1)];
}

/* The slot of (app, user), or where it would go (a free one, else its home). */
static crm_slot_t *crm_slot(const char *app_id, int64_t user, bool *found)
{
    crm_slot_t *home = crm_home(app_id, user), *free_slot = NULL;
    for (int i = 0; i < CRM_PROBE; i++) {
        crm_slot_t *e = &crm_slots[(size_t)(home - crm_slots + i) & (CRM_SLOTS - 1)];
        if (e->user == user && !strcmp(e->app_id, app_id)) {
            *found = true;
            return e;
        }
        if (!e->user && !free_slot)
            free_slot = e;
    }
    *found = false;
    return free_slot ? free_slot : home;
}

bool cti_crm_cache_get(const char *app_id, int64_t user, char **crm)
{
    bool found;
    crm_slot_t *e = crm_slot(app_id, user, &found);
    if (!found || e->gen != atomic_load(&crm_gen) || cti_mono_us() - e->at_us > CRM_TTL_MS * 1000)
        return false;
    *crm = e->crm ? cti_strdup(e->crm) : NULL;
    return true;
}

void cti_crm_cache_put(const char *app_id, int64_t user, const char *crm, unsigned gen)
{
    bool found;
    crm_slot_t *e = crm_slot(app_id, user, &found);
    free(e->crm);
    snprintf(e->app_id, sizeof e->app_id, "%s", app_id);
    e->user = user;
    e->crm = crm ? cti_strdup(crm) : NULL;
    e->gen = gen;
    e->at_us = cti_mono_us();
}
