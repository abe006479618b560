/* test_config.c — unit tests for src/core/config.c: defaults, validation of each
 * group of settings, the database settings, secrets, and the .env parser.
 * The environment is a fake: a table of name/value pairs passed through ud. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "core/config.h"

typedef struct {
    const char *name, *value;
} env_t;

/* A NULL-name-terminated table. */
static const char *fake_getenv(const char *name, void *ud)
{
    for (const env_t *e = ud; e && e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e->value;
    return NULL;
}

/* Everything a test loads, released by the teardown even when the test fails. */
typedef struct {
    cti_config_t cfg;
    cti_strlist_t errors, warnings;
    cti_strlist_t pairs; /* cti_dotenv_parse output */
    char dotenv_path[64];
    int rc;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    cti_config_free(&f->cfg);
    cti_strlist_free(&f->errors);
    cti_strlist_free(&f->warnings);
    cti_strlist_free(&f->pairs);
    if (f->dotenv_path[0])
        unlink(f->dotenv_path);
    free(f);
    return 0;
}

/* Loads with env (may be NULL) and an optional .env path; frees a previous load. */
static int load_with(fixture_t *f, const env_t *env, const char *dotenv_path)
{
    cti_config_free(&f->cfg);
    cti_strlist_free(&f->errors);
    cti_strlist_free(&f->warnings);
    f->rc = cti_config_load(&f->cfg, fake_getenv, (void *)env, dotenv_path, &f->errors,
                            &f->warnings);
    return f->rc;
}

static int load(fixture_t *f, const env_t *env)
{
    return load_with(f, env, NULL);
}

/* Writes text to a fresh temporary file, remembered for unlinking. */
static const char *write_dotenv(fixture_t *f, const char *text)
{
    strcpy(f->dotenv_path, "/tmp/cti-test-env-XXXXXX");
    int fd = mkstemp(f->dotenv_path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return f->dotenv_path;
}

static void dump(const char *what, const cti_strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        print_message("  %s[%zu]: %s\n", what, i, l->items[i]);
}

/* Fails unless some item of l contains every one of the given substrings. */
static void assert_list_has(const cti_strlist_t *l, const char *what, const char *sub1,
                            const char *sub2)
{
    for (size_t i = 0; i < l->n; i++)
        if (strstr(l->items[i], sub1) && (!sub2 || strstr(l->items[i], sub2)))
            return;
    dump(what, l);
    fail_msg("no %s mentions \"%s\"%s%s", what, sub1, sub2 ? " and " : "", sub2 ? sub2 : "");
}

static void assert_no_errors(fixture_t *f)
{
    if (f->errors.n) {
        dump("error", &f->errors);
        fail_msg("%zu unexpected error(s)", f->errors.n);
    }
    assert_int_equal(f->rc, 0);
}

static void assert_error(fixture_t *f, const char *sub1, const char *sub2)
{
    assert_int_equal(f->rc, CTI_EINVAL);
    assert_list_has(&f->errors, "error", sub1, sub2);
}

#define STRONG_SECRET "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define TOKEN_KEY "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"

/* ---- defaults and basics ------------------------------------------------------------- */

static void test_defaults(void **state)
{
    fixture_t *f = *state;
    load(f, NULL);
    assert_no_errors(f);
    assert_int_equal(f->warnings.n, 0);
    assert_int_equal(f->cfg.env, CTI_ENV_SANDBOX);
    assert_string_equal(f->cfg.host, "127.0.0.1");
    assert_int_equal(f->cfg.port, 4000);
    assert_int_equal(f->cfg.log_level, CTI_LOG_INFO);
    assert_int_equal(f->cfg.db_kind, CTI_DB_SQLITE);
    assert_string_equal(f->cfg.db_conninfo, "var/cti.db");
    assert_string_equal(f->cfg.sqlite_synchronous, "FULL");
    assert_string_equal(f->cfg.public_base_url, "http://127.0.0.1:4000");
    assert_string_equal(f->cfg.data_dir, "var");
    assert_null(f->cfg.internal_api_secret);
    assert_null(f->cfg.dialpad_default_app_id);
    assert_int_equal(f->cfg.allowed_origins.n, 0);
    assert_false(f->cfg.tls_by_proxy);
    assert_true(f->cfg.http_threads >= 1);
    assert_int_equal(f->cfg.max_connections, 4096);
    assert_int_equal(f->cfg.connection_timeout_s, 30);
    assert_int_equal(f->cfg.shutdown_timeout_s, 10);
    assert_int_equal(f->cfg.max_connections_per_address, 256);
    assert_int_equal(f->cfg.header_timeout_s, 10);
    assert_int_equal(f->cfg.min_body_rate, 4096);
    assert_int_equal(f->cfg.calls_scan_max, 10000);
}

static void test_empty_table_same_as_nothing(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"PORT", ""}, {"HOST", ""}, {NULL, NULL}}; /* empty = unset */
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 4000);
    assert_string_equal(f->cfg.host, "127.0.0.1");
}

static void test_port_and_host_set(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"PORT", "8080"}, {"HOST", "10.1.2.3"}, {"LOG_LEVEL", "debug"},
                         {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 8080);
    assert_string_equal(f->cfg.host, "10.1.2.3");
    assert_int_equal(f->cfg.log_level, CTI_LOG_DEBUG);
    assert_string_equal(f->cfg.public_base_url, "http://10.1.2.3:8080");
}

static void test_port_invalid(void **state)
{
    fixture_t *f = *state;
    static const char *const bad[] = {"abc", "0", "70000", "65536", "-1", "80x", " 80"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        const env_t env[] = {{"PORT", bad[i]}, {NULL, NULL}};
        load(f, env);
        assert_error(f, "PORT", NULL);
        assert_int_equal(f->errors.n, 1);
    }
    const env_t edge[] = {{"PORT", "65535"}, {NULL, NULL}};
    load(f, edge);
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 65535);
}

static void test_node_env(void **state)
{
    fixture_t *f = *state;
    const env_t bogus[] = {{"NODE_ENV", "bogus"}, {NULL, NULL}};
    load(f, bogus);
    assert_error(f, "NODE_ENV", "bogus");

    static const char *const sandboxes[] = {"sandbox", "development", "test"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(sandboxes); i++) {
        const env_t env[] = {{"NODE_ENV", sandboxes[i]}, {NULL, NULL}};
        load(f, env);
        assert_no_errors(f);
        assert_int_equal(f->cfg.env, CTI_ENV_SANDBOX);
    }
}

static void test_log_level_invalid(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"LOG_LEVEL", "verbose"}, {NULL, NULL}};
    load(f, env);
    assert_error(f, "LOG_LEVEL", "verbose");
}

static void test_numeric_limits(void **state)
{
    fixture_t *f = *state;
    const env_t ok[] = {{"HTTP_THREADS", "3"},      {"MAX_CONNECTIONS", "100"},
                        {"CONNECTION_TIMEOUT", "5"}, {"SHUTDOWN_TIMEOUT", "0"},
                        {NULL, NULL}};
    load(f, ok);
    assert_no_errors(f);
    assert_int_equal(f->cfg.http_threads, 3);
    assert_int_equal(f->cfg.max_connections, 100);
    assert_int_equal(f->cfg.connection_timeout_s, 5);
    assert_int_equal(f->cfg.header_timeout_s, 5); /* follows a shorter CONNECTION_TIMEOUT */
    assert_int_equal(f->cfg.shutdown_timeout_s, 0);

    const env_t bad[] = {{"HTTP_THREADS", "0"}, {"MAX_CONNECTIONS", "lots"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "HTTP_THREADS", NULL);
    assert_error(f, "MAX_CONNECTIONS", NULL);
}

static void test_rate_limit_and_retention_settings(void **state)
{
    fixture_t *f = *state;
    load(f, NULL);
    assert_no_errors(f);
    assert_int_equal(f->cfg.rate_limit_api, 200); /* the contract's defaults */
    assert_int_equal(f->cfg.rate_limit_admin, 50);
    assert_int_equal((int)f->cfg.trusted_proxies.n, 0);
    assert_int_equal(f->cfg.retention_days, 90);
    assert_int_equal(f->cfg.retention_calls_days, 0);
    assert_int_equal(f->cfg.retention_tick_ms, 60000);

    const env_t ok[] = {{"RATE_LIMIT_API", "0"}, {"RATE_LIMIT_ADMIN", "5"},
                        {"TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8"}, {"RETENTION_DAYS", "0"},
                        {"RETENTION_CALLS_DAYS", "365"}, {"RETENTION_TICK_MS", "200"},
                        {NULL, NULL}};
    load(f, ok);
    assert_no_errors(f);
    assert_int_equal(f->cfg.rate_limit_api, 0);
    assert_int_equal(f->cfg.rate_limit_admin, 5);
    assert_int_equal((int)f->cfg.trusted_proxies.n, 2);
    assert_int_equal(f->cfg.retention_days, 0);
    assert_int_equal(f->cfg.retention_calls_days, 365);

    const env_t bad[] = {{"RATE_LIMIT_API", "-1"}, {"RATE_LIMIT_ADMIN", "lots"},
                         {"TRUSTED_PROXIES", "10.0.0.0/8,10.0.0.300"}, {"RETENTION_DAYS", "x"},
                         {"RETENTION_TICK_MS", "0"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "RATE_LIMIT_API", NULL);
    assert_error(f, "RATE_LIMIT_ADMIN", NULL);
    assert_error(f, "TRUSTED_PROXIES", "10.0.0.300");
    assert_error(f, "RETENTION_DAYS", NULL);
    assert_error(f, "RETENTION_TICK_MS", NULL);
    assert_int_equal((int)f->cfg.trusted_proxies.n, 0);

    /* calls kept for less time than their timelines: refused */
    const env_t shorter[] = {{"RETENTION_DAYS", "90"}, {"RETENTION_CALLS_DAYS", "30"},
                             {NULL, NULL}};
    load(f, shorter);
    assert_error(f, "RETENTION_CALLS_DAYS", "RETENTION_DAYS");
}

static void test_connection_guard_settings(void **state)
{
    fixture_t *f = *state;
    const env_t ok[] = {{"MAX_CONNECTIONS_PER_ADDRESS", "0"}, {"HEADER_TIMEOUT", "5"},
                        {"MIN_BODY_RATE", "0"}, {"CALLS_SCAN_MAX", "0"}, {NULL, NULL}};
    load(f, ok);
    assert_no_errors(f);
    assert_int_equal(f->cfg.calls_scan_max, 0); /* 0: no bound */
    assert_int_equal(f->cfg.max_connections_per_address, 0); /* 0: no cap */
    assert_int_equal(f->cfg.header_timeout_s, 5);
    assert_int_equal(f->cfg.min_body_rate, 0);

    const env_t bad[] = {{"MAX_CONNECTIONS_PER_ADDRESS", "-1"}, {"HEADER_TIMEOUT", "0"},
                         {"MIN_BODY_RATE", "fast"}, {"CALLS_SCAN_MAX", "-5"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "CALLS_SCAN_MAX", NULL);
    assert_error(f, "MAX_CONNECTIONS_PER_ADDRESS", NULL);
    assert_error(f, "HEADER_TIMEOUT", NULL);
    assert_error(f, "MIN_BODY_RATE", NULL);

    /* behind a TLS-terminating proxy every connection shares its address:
     * no per-address cap unless one is set */
    const env_t proxied[] = {{"TLS_TERMINATED_BY_PROXY", "true"}, {NULL, NULL}};
    load(f, proxied);
    assert_int_equal(f->cfg.max_connections_per_address, 0);
    const env_t proxied_capped[] = {{"TLS_TERMINATED_BY_PROXY", "true"},
                                    {"MAX_CONNECTIONS_PER_ADDRESS", "500"}, {NULL, NULL}};
    load(f, proxied_capped);
    assert_int_equal(f->cfg.max_connections_per_address, 500);

    /* the head deadline cannot be longer than the idle timeout it shortens */
    const env_t longer[] = {{"HEADER_TIMEOUT", "60"}, {"CONNECTION_TIMEOUT", "30"}, {NULL, NULL}};
    load(f, longer);
    assert_error(f, "HEADER_TIMEOUT", "CONNECTION_TIMEOUT");
}

static void test_errors_all_collected(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"PORT", "abc"}, {"LOG_LEVEL", "loud"}, {"NODE_ENV", "staging"},
                         {NULL, NULL}};
    load(f, env);
    assert_error(f, "PORT", NULL);
    assert_error(f, "LOG_LEVEL", NULL);
    assert_error(f, "NODE_ENV", NULL);
    assert_true(f->errors.n >= 3);
}

/* ---- database ------------------------------------------------------------------------- */

static void test_database_url_postgres(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DATABASE_URL", "postgres://u:pw@h:5/db"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_POSTGRES);
    assert_string_equal(f->cfg.db_conninfo, "postgres://u:pw@h:5/db");
    assert_null(strstr(f->cfg.db_display, "pw"));
    assert_non_null(strstr(f->cfg.db_display, "h:5/db"));
    assert_non_null(strstr(f->cfg.db_display, "u"));

    const env_t env2[] = {{"DATABASE_URL", "postgresql://app:s3cr3t@db.internal/cti"},
                          {NULL, NULL}};
    load(f, env2);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_POSTGRES);
    assert_null(strstr(f->cfg.db_display, "s3cr3t"));
    assert_non_null(strstr(f->cfg.db_display, "db.internal/cti"));

    const env_t nopass[] = {{"DATABASE_URL", "postgres://u@h:5/db"}, {NULL, NULL}};
    load(f, nopass);
    assert_no_errors(f);
    assert_string_equal(f->cfg.db_display, "postgres://u@h:5/db");
}

/* libpq also takes the password as a URI query parameter: db_display, documented
 * as "safe to log", must not show it either. */
static void test_database_url_password_in_query_hidden(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DATABASE_URL", "postgres://h:5/db?user=u&password=topsecret"},
                         {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_POSTGRES);
    if (strstr(f->cfg.db_display, "topsecret"))
        fail_msg("db_display shows the password: %s", f->cfg.db_display);
}

static void test_database_url_sqlite(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DATABASE_URL", "sqlite:/tmp/x.db"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_SQLITE);
    assert_string_equal(f->cfg.db_conninfo, "/tmp/x.db");

    const env_t rel[] = {{"DATABASE_URL", "sqlite:var/other.db"}, {NULL, NULL}};
    load(f, rel);
    assert_no_errors(f);
    assert_string_equal(f->cfg.db_conninfo, "var/other.db");

    const env_t empty[] = {{"DATABASE_URL", "sqlite:"}, {NULL, NULL}};
    load(f, empty);
    assert_error(f, "DATABASE_URL", NULL);
}

static void test_database_url_unsupported(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DATABASE_URL", "mysql://u:p@h/db"}, {NULL, NULL}};
    load(f, env);
    assert_error(f, "DATABASE_URL", NULL);
}

static void test_database_parts(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DB_HOST", "db.example"}, {"DB_USER", "cti"},
                         {"DB_PASSWORD", "hunter2"}, {"DB_NAME", "ctidb"},
                         {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_POSTGRES);
    assert_non_null(strstr(f->cfg.db_conninfo, "host='db.example'"));
    assert_non_null(strstr(f->cfg.db_conninfo, "dbname='ctidb'"));
    assert_non_null(strstr(f->cfg.db_conninfo, "user='cti'"));
    assert_non_null(strstr(f->cfg.db_conninfo, "port='5432'"));
    assert_non_null(strstr(f->cfg.db_conninfo, "password='hunter2'"));
    assert_null(strstr(f->cfg.db_display, "hunter2"));
    assert_null(strstr(f->cfg.db_display, "password"));
    assert_non_null(strstr(f->cfg.db_display, "host='db.example'"));
    assert_non_null(strstr(f->cfg.db_display, "dbname='ctidb'"));
}

static void test_database_parts_quote_escaped(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DB_HOST", "h"}, {"DB_PASSWORD", "it's\\x"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_kind, CTI_DB_POSTGRES);
    assert_non_null(strstr(f->cfg.db_conninfo, "password='it\\'s\\\\x'"));
    assert_null(strstr(f->cfg.db_display, "it\\'s"));
    assert_null(strstr(f->cfg.db_display, "password"));
}

static void test_database_port_invalid(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DB_HOST", "h"}, {"DB_PORT", "99999"}, {NULL, NULL}};
    load(f, env);
    assert_error(f, "DB_PORT", NULL);
}

static void test_sqlite_synchronous(void **state)
{
    fixture_t *f = *state;
    const env_t normal[] = {{"SQLITE_SYNCHRONOUS", "NORMAL"}, {NULL, NULL}};
    load(f, normal);
    assert_no_errors(f);
    assert_string_equal(f->cfg.sqlite_synchronous, "NORMAL");

    const env_t off[] = {{"SQLITE_SYNCHRONOUS", "OFF"}, {NULL, NULL}};
    load(f, off);
    assert_error(f, "SQLITE_SYNCHRONOUS", NULL);
}

static void test_db_query_timeout(void **state)
{
    fixture_t *f = *state;
    load(f, (const env_t[]){{NULL, NULL}});
    assert_int_equal(f->cfg.db_query_timeout_ms, 5000);
    const env_t set[] = {{"DB_QUERY_TIMEOUT_MS", "250"}, {NULL, NULL}};
    load(f, set);
    assert_no_errors(f);
    assert_int_equal(f->cfg.db_query_timeout_ms, 250);
    const env_t low[] = {{"DB_QUERY_TIMEOUT_MS", "0"}, {NULL, NULL}};
    load(f, low);
    assert_error(f, "DB_QUERY_TIMEOUT_MS", NULL);
}

/* ---- secrets at rest and the Dialpad API client ------------------------------------ */

static void test_token_key_and_base_url_defaults(void **state)
{
    fixture_t *f = *state;
    load(f, NULL);
    assert_no_errors(f);
    assert_null(f->cfg.token_encryption_key); /* sandbox: generated at start-up, not here */
    assert_null(f->cfg.token_encryption_key_old);
    assert_string_equal(f->cfg.dialpad_base_url, "https://sandbox.dialpad.com");
    const env_t prod[] = {{"NODE_ENV", "production"}, {NULL, NULL}};
    load(f, prod);
    assert_string_equal(f->cfg.dialpad_base_url, "https://dialpad.com");
}

static void test_token_key_forms(void **state)
{
    fixture_t *f = *state;
    static const char *const good[] = {TOKEN_KEY, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                                       "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(good); i++) {
        const env_t env[] = {{"TOKEN_ENCRYPTION_KEY", good[i]},
                             {"TOKEN_ENCRYPTION_KEY_OLD", TOKEN_KEY "," STRONG_SECRET},
                             {NULL, NULL}};
        load(f, env);
        assert_no_errors(f);
        assert_string_equal(f->cfg.token_encryption_key, good[i]);
    }
}

static void test_token_key_invalid(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"TOKEN_ENCRYPTION_KEY", "0123456789abcdef"},
                         {"TOKEN_ENCRYPTION_KEY_OLD", TOKEN_KEY ",not a key!"},
                         {NULL, NULL}};
    load(f, env);
    assert_error(f, "TOKEN_ENCRYPTION_KEY is 16 hex digits (8 bytes)", "expected 64");
    assert_error(f, "TOKEN_ENCRYPTION_KEY_OLD item 2", "neither");
    assert_int_equal(f->errors.n, 2);
    for (size_t i = 0; i < f->errors.n; i++) /* a key is never echoed */
        assert_null(strstr(f->errors.items[i], "0123456789abcdef"));
    char many[1024] = "";
    for (int i = 0; i < 8; i++) /* eight distinct old keys: one too many */
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s%02x%s", i ? "," : "", i,
                 TOKEN_KEY + 2);
    const env_t too_many[] = {{"TOKEN_ENCRYPTION_KEY_OLD", many}, {NULL, NULL}};
    load(f, too_many);
    assert_error(f, "TOKEN_ENCRYPTION_KEY_OLD holds 8 keys", "at most 7");
}

static void test_dialpad_base_url(void **state)
{
    fixture_t *f = *state;
    const env_t local[] = {{"DIALPAD_BASE_URL", "http://127.0.0.1:8123/"}, {NULL, NULL}};
    load(f, local);
    assert_no_errors(f);
    assert_string_equal(f->cfg.dialpad_base_url, "http://127.0.0.1:8123");
    static const char *const bad[] = {"dialpad.com", "ftp://dialpad.com", "https://",
                                      "https:///api", "https://dialpad.com/?x=1",
                                      "https://dialpad.com#frag", "https://dial pad.com"};
    for (size_t i = 0; i < CTI_ARRAY_LEN(bad); i++) {
        const env_t env[] = {{"DIALPAD_BASE_URL", bad[i]}, {NULL, NULL}};
        load(f, env);
        assert_error(f, "DIALPAD_BASE_URL must be an http(s) URL", NULL);
    }
    const env_t prod[] = {{"NODE_ENV", "production"},
                          {"INTERNAL_API_SECRET", STRONG_SECRET},
                          {"TLS_TERMINATED_BY_PROXY", "true"},
                          {"TOKEN_ENCRYPTION_KEY", TOKEN_KEY},
                          {"DIALPAD_BASE_URL", "http://127.0.0.1:8123"},
                          {NULL, NULL}};
    load(f, prod);
    assert_error(f, "DIALPAD_BASE_URL must be https:// in production", NULL);
    assert_int_equal(f->errors.n, 1);
}

/* A private DATA_DIR for the sandbox key tests; removed by the test. */
static void temp_data_dir(fixture_t *f, char *dir, size_t cap, env_t env[2])
{
    snprintf(dir, cap, "/tmp/cti-test-data-XXXXXX");
    assert_non_null(mkdtemp(dir));
    env[0] = (env_t){"DATA_DIR", dir};
    env[1] = (env_t){NULL, NULL};
    load(f, env);
    assert_no_errors(f);
}

static void remove_data_dir(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/token-key", dir);
    unlink(path);
    rmdir(dir);
}

static void test_sandbox_token_key_generated_once(void **state)
{
    fixture_t *f = *state;
    char dir[64], path[128], first[65];
    env_t env[2];
    temp_data_dir(f, dir, sizeof dir, env);
    assert_int_equal(cti_config_ensure_token_key(&f->cfg), 0);
    assert_true(f->cfg.token_key_generated);
    assert_int_equal(strlen(f->cfg.token_encryption_key), 64);
    snprintf(first, sizeof first, "%s", f->cfg.token_encryption_key);
    snprintf(path, sizeof path, "%s/token-key", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* the next start reads the same key */
    load(f, env);
    assert_int_equal(cti_config_ensure_token_key(&f->cfg), 0);
    assert_string_equal(f->cfg.token_encryption_key, first);
    /* a key given in the environment wins, and nothing is written */
    const env_t given[] = {{"DATA_DIR", dir}, {"TOKEN_ENCRYPTION_KEY", TOKEN_KEY}, {NULL, NULL}};
    unlink(path);
    load(f, given);
    assert_int_equal(cti_config_ensure_token_key(&f->cfg), 0);
    assert_false(f->cfg.token_key_generated);
    assert_string_equal(f->cfg.token_encryption_key, TOKEN_KEY);
    assert_int_not_equal(access(path, F_OK), 0);
    remove_data_dir(dir);
}

static void test_sandbox_token_key_bad_file_kept(void **state)
{
    fixture_t *f = *state;
    char dir[64], path[128], buf[64] = "";
    env_t env[2];
    temp_data_dir(f, dir, sizeof dir, env);
    snprintf(path, sizeof path, "%s/token-key", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("garbage\n", fp);
    fclose(fp);
    assert_int_equal(cti_config_ensure_token_key(&f->cfg), CTI_EINVAL);
    assert_null(f->cfg.token_encryption_key);
    fp = fopen(path, "r"); /* never replaced: it may be the key that sealed stored tokens */
    assert_non_null(fgets(buf, sizeof buf, fp));
    fclose(fp);
    assert_string_equal(buf, "garbage\n");
    remove_data_dir(dir);
}

/* ---- production, secrets ---------------------------------------------------------------- */

static void test_production_nothing_set(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"NODE_ENV", "production"}, {NULL, NULL}};
    load(f, env);
    assert_int_equal(f->cfg.env, CTI_ENV_PRODUCTION);
    assert_error(f, "INTERNAL_API_SECRET", NULL);
    assert_error(f, "TLS", NULL);
    assert_error(f, "TOKEN_ENCRYPTION_KEY is required in production", NULL);
}

static void test_production_ok(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"NODE_ENV", "production"},
                         {"INTERNAL_API_SECRET", STRONG_SECRET},
                         {"TLS_TERMINATED_BY_PROXY", "true"},
                         {"TOKEN_ENCRYPTION_KEY", TOKEN_KEY},
                         {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->warnings.n, 0);
    assert_int_equal(f->cfg.env, CTI_ENV_PRODUCTION);
    assert_string_equal(f->cfg.host, "0.0.0.0");
    assert_true(f->cfg.tls_by_proxy);
    assert_string_equal(f->cfg.internal_api_secret, STRONG_SECRET);
}

static void test_production_http_public_url_rejected(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"NODE_ENV", "production"},
                         {"INTERNAL_API_SECRET", STRONG_SECRET},
                         {"TLS_TERMINATED_BY_PROXY", "true"},
                         {"PUBLIC_BASE_URL", "http://cti.example.com"},
                         {NULL, NULL}};
    load(f, env);
    assert_error(f, "PUBLIC_BASE_URL", "https");
}

static void test_production_weak_secret(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"NODE_ENV", "production"},
                         {"INTERNAL_API_SECRET", "short"},
                         {"TLS_TERMINATED_BY_PROXY", "true"},
                         {NULL, NULL}};
    load(f, env);
    assert_error(f, "INTERNAL_API_SECRET", "weak");
}

static void test_sandbox_weak_secret_is_warning(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"INTERNAL_API_SECRET", "short"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_list_has(&f->warnings, "warning", "INTERNAL_API_SECRET", "weak");
    assert_string_equal(f->cfg.internal_api_secret, "short");
}

static void test_few_distinct_chars_is_weak(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"NODE_ENV", "production"},
                         {"INTERNAL_API_SECRET", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
                         {"TLS_TERMINATED_BY_PROXY", "true"},
                         {NULL, NULL}};
    load(f, env);
    assert_error(f, "INTERNAL_API_SECRET", "weak");

    const env_t seven[] = {{"NODE_ENV", "production"},
                           {"INTERNAL_API_SECRET", "abcdefgabcdefgabcdefgabcdefgabcdefg"},
                           {"TLS_TERMINATED_BY_PROXY", "true"},
                           {NULL, NULL}};
    load(f, seven);
    assert_error(f, "INTERNAL_API_SECRET", "weak");
}

static void test_webhook_secret_weak_warning(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DIALPAD_WEBHOOK_SECRET", "abc"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_list_has(&f->warnings, "warning", "DIALPAD_WEBHOOK_SECRET", "weak");
}

static void test_metrics_token(void **state)
{
    fixture_t *f = *state;
    load(f, (const env_t[]){{NULL, NULL}});
    assert_null(f->cfg.metrics_token); /* unset: only the admin token reads /metrics */
    load(f, (const env_t[]){{"METRICS_TOKEN", ""}, {NULL, NULL}});
    assert_null(f->cfg.metrics_token); /* empty is unset, never a token matching "Bearer " */
    load(f, (const env_t[]){{"METRICS_TOKEN", "scrape-0123456789abcdef"}, {NULL, NULL}});
    assert_no_errors(f);
    assert_string_equal(f->cfg.metrics_token, "scrape-0123456789abcdef");
    load(f, (const env_t[]){{"METRICS_TOKEN", "abc"}, {NULL, NULL}});
    assert_list_has(&f->warnings, "warning", "METRICS_TOKEN", "weak");
    const env_t prod[] = {{"NODE_ENV", "production"},
                          {"INTERNAL_API_SECRET", "0123456789abcdefghijklmnopqrstuvwxyzABCD"},
                          {"TOKEN_ENCRYPTION_KEY",
                           "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
                          {"TLS_TERMINATED_BY_PROXY", "true"},
                          {"METRICS_TOKEN", "aaaaaaaaaaaaaaaaaaaa"},
                          {NULL, NULL}};
    load(f, prod);
    assert_error(f, "METRICS_TOKEN", "weak");
}

static void test_tls_files(void **state)
{
    fixture_t *f = *state;
    const env_t only_cert[] = {{"TLS_CERT_FILE", "/etc/hostname"}, {NULL, NULL}};
    load(f, only_cert);
    assert_error(f, "TLS_CERT_FILE", "TLS_KEY_FILE");

    const env_t missing[] = {{"TLS_CERT_FILE", "/nonexistent/cert.pem"},
                             {"TLS_KEY_FILE", "/nonexistent/key.pem"},
                             {NULL, NULL}};
    load(f, missing);
    assert_error(f, "TLS_CERT_FILE", "/nonexistent/cert.pem");
    assert_error(f, "TLS_KEY_FILE", "/nonexistent/key.pem");

    const env_t bad_bool[] = {{"TLS_TERMINATED_BY_PROXY", "maybe"}, {NULL, NULL}};
    load(f, bad_bool);
    assert_error(f, "TLS_TERMINATED_BY_PROXY", NULL);
}

static void test_default_app_id(void **state)
{
    fixture_t *f = *state;
    const env_t bad[] = {{"DIALPAD_DEFAULT_APP_ID", "not-a-uuid"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "DIALPAD_DEFAULT_APP_ID", NULL);

    const env_t good[] = {{"DIALPAD_DEFAULT_APP_ID", "123e4567-e89b-42d3-a456-426614174000"},
                          {NULL, NULL}};
    load(f, good);
    assert_no_errors(f);
    assert_string_equal(f->cfg.dialpad_default_app_id, "123e4567-e89b-42d3-a456-426614174000");
}

static void test_dialpad_client_secret_required(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"DIALPAD_SANDBOX_CLIENT_ID", "cid"}, {NULL, NULL}};
    load(f, env);
    assert_error(f, "DIALPAD_SANDBOX_CLIENT_SECRET", NULL);

    const env_t both[] = {{"DIALPAD_SANDBOX_CLIENT_ID", "cid"},
                          {"DIALPAD_SANDBOX_CLIENT_SECRET", "csecret"},
                          {"DIALPAD_PROD_CLIENT_ID", "ignored in sandbox"},
                          {NULL, NULL}};
    load(f, both);
    assert_no_errors(f);
    assert_string_equal(f->cfg.dialpad_client_id, "cid");
    assert_string_equal(f->cfg.dialpad_client_secret, "csecret");
}

/* ---- web ---------------------------------------------------------------------------------- */

static void test_allowed_origins(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"ALLOWED_ORIGINS", "https://a.example.com, https://b.example.com"},
                         {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_int_equal(f->cfg.allowed_origins.n, 2);
    assert_string_equal(f->cfg.allowed_origins.items[0], "https://a.example.com");
    assert_string_equal(f->cfg.allowed_origins.items[1], "https://b.example.com");

    const env_t bad[] = {{"ALLOWED_ORIGINS", "foo"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "ALLOWED_ORIGINS", "foo");
}

static void test_public_base_url(void **state)
{
    fixture_t *f = *state;
    const env_t env[] = {{"PUBLIC_BASE_URL", "https://cti.example.com/"}, {NULL, NULL}};
    load(f, env);
    assert_no_errors(f);
    assert_string_equal(f->cfg.public_base_url, "https://cti.example.com");

    const env_t plain[] = {{"PUBLIC_BASE_URL", "https://cti.example.com"}, {NULL, NULL}};
    load(f, plain);
    assert_string_equal(f->cfg.public_base_url, "https://cti.example.com");

    const env_t bad[] = {{"PUBLIC_BASE_URL", "ftp://x"}, {NULL, NULL}};
    load(f, bad);
    assert_error(f, "PUBLIC_BASE_URL", NULL);
}

/* ---- .env through cti_config_load ----------------------------------------------------------- */

static void test_environment_wins_over_dotenv(void **state)
{
    fixture_t *f = *state;
    const char *path = write_dotenv(f, "PORT=5000\nHOST=10.9.8.7\nLOG_LEVEL=warn\n");
    const env_t env[] = {{"PORT", "6000"}, {NULL, NULL}};
    load_with(f, env, path);
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 6000);          /* environment */
    assert_string_equal(f->cfg.host, "10.9.8.7"); /* .env */
    assert_int_equal(f->cfg.log_level, CTI_LOG_WARN);
}

static void test_dotenv_missing_file_ignored(void **state)
{
    fixture_t *f = *state;
    load_with(f, NULL, "/nonexistent/dir/.env");
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 4000);
}

static void test_dotenv_errors_reported_by_load(void **state)
{
    fixture_t *f = *state;
    const char *path = write_dotenv(f, "PORT=5000\nNOEQUALS\n");
    load_with(f, NULL, path);
    assert_error(f, "line 2", NULL);
    assert_int_equal(f->cfg.port, 5000);
}

static void test_dotenv_last_definition_wins(void **state)
{
    fixture_t *f = *state;
    const char *path = write_dotenv(f, "PORT=5000\nPORT=5001\n");
    load_with(f, NULL, path);
    assert_no_errors(f);
    assert_int_equal(f->cfg.port, 5001);
}

/* ---- cti_dotenv_parse ----------------------------------------------------------------------- */

static const char *pair_value(const cti_strlist_t *pairs, const char *name)
{
    assert_int_equal(pairs->n % 2, 0);
    for (size_t i = 0; i < pairs->n; i += 2)
        if (strcmp(pairs->items[i], name) == 0)
            return pairs->items[i + 1];
    return NULL;
}

static void assert_pair(const cti_strlist_t *pairs, const char *name, const char *want)
{
    const char *v = pair_value(pairs, name);
    if (!v) {
        dump("pair", pairs);
        fail_msg("%s not parsed", name);
    }
    assert_string_equal(v, want);
}

static void test_dotenv_parse_forms(void **state)
{
    fixture_t *f = *state;
    cti_dotenv_parse("# a comment\n"
                     "\n"
                     "   \n"
                     "  # indented comment\n"
                     "PLAIN=value\n"
                     "export EXPORTED=1\n"
                     "DQ=\"line1\\nline2 # not a comment\"\n"
                     "DQESC=\"say \\\"hi\\\" \\\\ \\t.\"   # trailing comment\n"
                     "SQ='literal \\n $x # kept'\n"
                     "INLINE=abc # a comment\n"
                     "HASHNOSPACE=abc#def\n"
                     "TRAIL=value with spaces   \n"
                     "SPACED = around \n"
                     "EMPTY=\n"
                     "URL=postgres://u:p@h/db?x=1\n",
                     &f->pairs, &f->errors);
    if (f->errors.n) {
        dump("error", &f->errors);
        fail_msg("unexpected .env errors");
    }
    assert_pair(&f->pairs, "PLAIN", "value");
    assert_pair(&f->pairs, "EXPORTED", "1");
    assert_null(pair_value(&f->pairs, "export EXPORTED"));
    assert_pair(&f->pairs, "DQ", "line1\nline2 # not a comment");
    assert_pair(&f->pairs, "DQESC", "say \"hi\" \\ \t.");
    assert_pair(&f->pairs, "SQ", "literal \\n $x # kept");
    assert_pair(&f->pairs, "INLINE", "abc");
    assert_pair(&f->pairs, "HASHNOSPACE", "abc#def");
    assert_pair(&f->pairs, "TRAIL", "value with spaces");
    assert_pair(&f->pairs, "SPACED", "around");
    assert_pair(&f->pairs, "EMPTY", "");
    assert_pair(&f->pairs, "URL", "postgres://u:p@h/db?x=1");
    assert_int_equal(f->pairs.n, 2 * 11);
}

static void test_dotenv_parse_crlf(void **state)
{
    fixture_t *f = *state;
    cti_dotenv_parse("A=1\r\nB=\"two\"\r\nC='three'\r\n# c\r\n\r\nD=four # x\r\n", &f->pairs,
                     &f->errors);
    assert_int_equal(f->errors.n, 0);
    assert_pair(&f->pairs, "A", "1");
    assert_pair(&f->pairs, "B", "two");
    assert_pair(&f->pairs, "C", "three");
    assert_pair(&f->pairs, "D", "four");
    assert_int_equal(f->pairs.n, 8);
}

static void test_dotenv_parse_no_final_newline(void **state)
{
    fixture_t *f = *state;
    cti_dotenv_parse("A=1\nB=2", &f->pairs, &f->errors);
    assert_int_equal(f->errors.n, 0);
    assert_pair(&f->pairs, "A", "1");
    assert_pair(&f->pairs, "B", "2");
}

static void test_dotenv_parse_malformed_lines(void **state)
{
    fixture_t *f = *state;
    cti_dotenv_parse("OK=1\n"
                     "# comment\n"
                     "NOEQUALS\n"
                     "=x\n"
                     "BAD-NAME=1\n"
                     "ALSO_OK=2\n",
                     &f->pairs, &f->errors);
    assert_int_equal(f->errors.n, 3);
    assert_non_null(strstr(f->errors.items[0], "line 3"));
    assert_non_null(strstr(f->errors.items[1], "line 4"));
    assert_non_null(strstr(f->errors.items[2], "line 5"));
    /* good lines around the bad ones still count */
    assert_pair(&f->pairs, "OK", "1");
    assert_pair(&f->pairs, "ALSO_OK", "2");
    assert_int_equal(f->pairs.n, 4);
}

static void test_dotenv_parse_unterminated_quote(void **state)
{
    fixture_t *f = *state;
    cti_dotenv_parse("A=1\nB=\"never closed\nC='also never\nD=\"closed\" junk\n", &f->pairs,
                     &f->errors);
    assert_int_equal(f->errors.n, 3);
    assert_non_null(strstr(f->errors.items[0], "line 2"));
    assert_non_null(strstr(f->errors.items[1], "line 3"));
    assert_non_null(strstr(f->errors.items[2], "line 4"));
    assert_null(pair_value(&f->pairs, "B"));
    assert_null(pair_value(&f->pairs, "C"));
    assert_null(pair_value(&f->pairs, "D"));
    assert_pair(&f->pairs, "A", "1");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_empty_table_same_as_nothing),
        T(test_port_and_host_set),
        T(test_port_invalid),
        T(test_node_env),
        T(test_log_level_invalid),
        T(test_numeric_limits),
        T(test_connection_guard_settings),
        T(test_rate_limit_and_retention_settings),
        T(test_errors_all_collected),
        T(test_database_url_postgres),
        T(test_database_url_password_in_query_hidden),
        T(test_database_url_sqlite),
        T(test_database_url_unsupported),
        T(test_database_parts),
        T(test_database_parts_quote_escaped),
        T(test_database_port_invalid),
        T(test_sqlite_synchronous),
        T(test_db_query_timeout),
        T(test_production_nothing_set),
        T(test_production_ok),
        T(test_production_http_public_url_rejected),
        T(test_production_weak_secret),
        T(test_sandbox_weak_secret_is_warning),
        T(test_few_distinct_chars_is_weak),
        T(test_webhook_secret_weak_warning),
        T(test_metrics_token),
        T(test_tls_files),
        T(test_default_app_id),
        T(test_dialpad_client_secret_required),
        T(test_allowed_origins),
        T(test_public_base_url),
        T(test_environment_wins_over_dotenv),
        T(test_dotenv_missing_file_ignored),
        T(test_dotenv_errors_reported_by_load),
        T(test_dotenv_last_definition_wins),
        T(test_dotenv_parse_forms),
        T(test_dotenv_parse_crlf),
        T(test_dotenv_parse_no_final_newline),
        T(test_dotenv_parse_malformed_lines),
        T(test_dotenv_parse_unterminated_quote),
        T(test_token_key_and_base_url_defaults),
        T(test_token_key_forms),
        T(test_token_key_invalid),
        T(test_dialpad_base_url),
        T(test_sandbox_token_key_generated_once),
        T(test_sandbox_token_key_bad_file_kept),
    };
#undef T
    return cmocka_run_group_tests_name("test_config", tests, NULL, NULL);
}
