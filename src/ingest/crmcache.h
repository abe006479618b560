/*
 * crmcache.h — what the ingest worker remembers of user mappings.
 *
 * Looking mappings up for every batch was a round trip to PostgreSQL each
 * time (~20% of ingest there). The worker remembers each (app, Dialpad user)
 * it looked up, mapped or not, for a second; a change committed through this
 * process forgets everything at once (cti_crm_cache_forget), one made through
 * another instance is seen within the second. An entry is tagged with the
 * generation read before its lookup (cti_crm_cache_gen), so a change
 * committed during the lookup is not hidden behind it.
 *
 * Threads: cti_crm_cache_forget from any thread; the rest on the ingest
 * worker only.
 */
#ifndef CTI_INGEST_CRMCACHE_H
#define CTI_INGEST_CRMCACHE_H

#include <stdbool.h>
#include <stdint.h>

/* After committing a change to user mappings: the ingest worker looks them
 * up again. Any thread. */
void cti_crm_cache_forget(void);

/* The generation to tag a lookup with: read it before the lookup. */
unsigned cti_crm_cache_gen(void);
/* Whether the worker knows user's mapping: then *crm is a copy (caller
 * frees), or NULL when the user is not mapped. */
bool cti_crm_cache_get(const char *app_id, int64_t user, char **crm);
/* Remembers user's mapping (crm NULL: not mapped; copied), as looked up
 * under generation gen. */
void cti_crm_cache_put(const char *app_id, int64_t user, const char *crm, unsigned gen);

#endif
