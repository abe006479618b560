/*
 * schema.h — the database schema this build knows, as numbered migrations
 * (src/repo/schema.c), run by the store's migration runner. Main thread.
 */
#ifndef CTI_REPO_SCHEMA_H
#define CTI_REPO_SCHEMA_H

#include "store/store.h"

/* Applies the migrations not yet recorded in schema_migrations, each in its
 * own transaction; safe to run concurrently from several instances
 * (PostgreSQL: advisory lock). Returns 0 or an error. */
int cti_store_migrate(cti_store_t *st);
/* The number of migrations this build knows (and records when applied). */
int cti_store_migration_count(void);

#endif
