/*
 * harness.h — what every store conformance file shares: the store under
 * test, opened from CTI_TEST_DB ("sqlite:PATH" or a postgres:// URL) and
 * migrated, and small helpers. tests/run-store-tests.sh runs each test_*
 * binary once per backend. Include after cmocka.h.
 */
#ifndef CTI_TESTS_STORE_HARNESS_H
#define CTI_TESTS_STORE_HARNESS_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

extern cti_store_t *store;
extern bool is_pg;

/* cmocka group setup/teardown: open + migrate, close. */
int store_setup(void **state);
int store_teardown(void **state);
/* Runs sql with cti_db_script on this thread's connection; fails the test on error. */
void script_ok(const char *sql);
/* The integer the query's first row holds (fails the test without one). */
int64_t count(const char *sql);
/* A fresh app id ("app-<tag>-<n>"), unique within the run and across runs. */
const char *new_app(char out[37], const char *tag);

#endif
