/* harness.c — see harness.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "repo/schema.h"
#include "harness.h"

cti_store_t *store;
bool is_pg;

int store_setup(void **state)
{
    const char *url = getenv("CTI_TEST_DB");
    if (!url) {
        fprintf(stderr, "CTI_TEST_DB is not set (sqlite:PATH or postgres://...)\n");
        return -1;
    }
    is_pg = strncmp(url, "postgres", 8) == 0;
    cti_store_options_t o = {.kind = is_pg ? CTI_DB_POSTGRES : CTI_DB_SQLITE,
                             .conninfo = is_pg ? url : url + 7,
                             .display = url,
                             .sqlite_sync_full = true};
    if (cti_store_open(&o, &store) != 0)
        return -1;
    return cti_store_migrate(store);
}

int store_teardown(void **state)
{
    cti_store_close(store);
    return 0;
}

void script_ok(const char *sql)
{
    int rc = cti_db_script(cti_store_db(store), sql);
    if (rc != 0)
        fail_msg("%s: %s", sql, cti_db_errmsg(cti_store_db(store)));
}

int64_t count(const char *sql)
{
    int64_t n = -1;
    int rc = cti_db_query_int(cti_store_db(store), sql, NULL, 0, &n);
    if (rc != 0)
        fail_msg("%s: %d %s", sql, rc, cti_db_errmsg(cti_store_db(store)));
    return n;
}

const char *new_app(char out[37], const char *tag)
{
    static int n;
    snprintf(out, 37, "app-%.10s-%lx-%d", tag, (unsigned long)time(NULL) & 0xffffff, ++n);
    return out;
}
