/*
 * sqlite.c — the SQLite backend (default; a file under var/, WAL mode).
 *
 * One sqlite3 handle per cti_db_t, opened with SQLITE_OPEN_NOMUTEX: a
 * connection is used by one thread at a time (store.h). Prepared statements
 * are cached per connection, keyed by SQL text, after $N → ?N rewriting.
 * Writers serialise on SQLite's lock; busy_timeout makes them wait for it,
 * and a lock still busy after that is CTI_EUNAVAILABLE (answer 503, retry).
 *
 * Checkpoints (copying the WAL back into the database file) run mostly on a
 * thread of the store's own, not on the thread that committed: a commit that
 * leaves CKPT_PAGES or more in the WAL wakes it, and it runs a PASSIVE
 * checkpoint (which never blocks writers or readers) on its own handle.
 * SQLite restarts the WAL from its beginning only when a write transaction
 * starts with the WAL wholly copied, which a busy writer's next BEGIN never
 * sees if the copy ends during its transaction. So once the checkpointer has
 * caught up, the next commit finishes the job itself: it copies what was
 * committed since (a batch or two), and its next transaction restarts the
 * WAL. Should the WAL still pass CKPT_INLINE_PAGES, the committing thread
 * checkpoints after every commit, as SQLite's autocheckpoint would.
 */
#include "store/backend.h"
#include "core/common.h"
#include "store/walbuf.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#define STMT_CACHE 64
#define BUSY_TIMEOUT_MS 5000
/* Between checkpoints the pages a busy writer keeps rewriting (every table's
 * and index's tail) pile up in the WAL once each per commit but are copied
 * once per checkpoint: 64 MiB rather than 16 measured ~5% more webhooks/s
 * (fewer database writes competing with the WAL's fsyncs). */
#define CKPT_PAGES 16384        /* 64 MiB of 4 KiB pages */
#define CKPT_INLINE_PAGES 65536 /* 256 MiB of 4 KiB pages */

typedef struct {
    char *sql; /* original text (the key) */
    uint64_t hash;
    sqlite3_stmt *stmt;
    uint64_t used; /* for LRU eviction */
} cached_t;

typedef struct {
    sqlite3 *h;
    cached_t cache[STMT_CACHE];
    uint64_t tick;
    char err[256];
} sq_t;

/* Rewrites $N placeholders (outside quotes) to ?N. Caller frees. */
static char *rewrite_params(const char *sql)
{
    char *out = cti_strdup(sql);
    char quote = 0;
    for (char *p = out; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '$' && p[1] >= '0' && p[1] <= '9') {
            *p = '?';
        }
    }
    return out;
}

static int map_error(sq_t *s, int rc)
{
    snprintf(s->err, sizeof s->err, "%s", s->h ? sqlite3_errmsg(s->h) : sqlite3_errstr(rc));
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return CTI_EEXIST;
        return CTI_EINVAL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_NOMEM:
        return CTI_EUNAVAILABLE;
    default:
        return CTI_EDB;
    }
}

static int mkdir_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(dir, 0700);
        *p = '/';
    }
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* ---- the checkpointer ------------------------------------------------------------------- */

typedef struct {
    pthread_t thread;
    pthread_mutex_t lock; /* protects due, stopping */
    pthread_cond_t cond;
    bool due, stopping;
    bool caught_up; /* the last checkpoint copied the whole WAL of its time */
    const char *path; /* the store's (outlives the thread) */
} ckpt_t;

static void *checkpointer(void *arg)
{
    ckpt_t *k = arg;
    sqlite3 *h = NULL;
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (!k->due && !k->stopping)
            pthread_cond_wait(&k->cond, &k->lock);
        if (k->stopping)
            break;
        k->due = false;
        pthread_mutex_unlock(&k->lock);
        /* a handle checkpoints only once it has read the database (found its WAL) */
        if (!h && (sqlite3_open_v2(k->path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                   NULL) != SQLITE_OK ||
                   sqlite3_exec(h, "PRAGMA journal_mode", NULL, NULL, NULL) != SQLITE_OK)) {
            sqlite3_close(h); /* the committing thread's fallback still bounds the WAL */
            h = NULL;
        }
        int log = -1, copied = -1;
        int rc = h ? sqlite3_wal_checkpoint_v2(h, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied)
                   : SQLITE_OK;
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            cti_log(CTI_LOG_WARN, NULL, "sqlite: checkpoint failed",
                    CTI_LS("error", sqlite3_errmsg(h)));
        if (h)
            CTI_METRIC_INC(sqlite_checkpoints);
        pthread_mutex_lock(&k->lock);
        k->caught_up = rc == SQLITE_OK && log > 0 && copied == log;
    }
    pthread_mutex_unlock(&k->lock);
    sqlite3_close(h);
    return NULL;
}

/* After every commit of every connection: frames is the WAL's length in pages. */
static int wal_hook(void *ud, sqlite3 *h, const char *name, int frames)
{
    ckpt_t *k = ud;
    if (frames < CKPT_PAGES)
        return SQLITE_OK;
    pthread_mutex_lock(&k->lock);
    bool finish = k->caught_up || frames >= CKPT_INLINE_PAGES;
    k->caught_up = false;
    if (!finish) {
        k->due = true;
        pthread_cond_signal(&k->cond);
    }
    pthread_mutex_unlock(&k->lock);
    if (finish) { /* copies the rest; this thread's next transaction restarts the WAL */
        CTI_METRIC_INC(sqlite_inline_checkpoints);
        sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    return SQLITE_OK;
}

static ckpt_t *checkpointer_of(cti_store_t *st)
{
    pthread_mutex_lock(&st->lock);
    ckpt_t *k = st->be_state;
    if (!k) {
        k = cti_calloc(1, sizeof *k);
        k->path = st->opts.conninfo;
        pthread_mutex_init(&k->lock, NULL);
        pthread_cond_init(&k->cond, NULL);
        if (pthread_create(&k->thread, NULL, checkpointer, k) != 0)
            cti_fatal("cannot start the SQLite checkpointer thread");
        pthread_setname_np(k->thread, "cti-checkpoint");
        st->be_state = k;
    }
    pthread_mutex_unlock(&st->lock);
    return k;
}

static void sq_close_store(cti_store_t *st)
{
    ckpt_t *k = st->be_state;
    if (!k)
        return;
    pthread_mutex_lock(&k->lock);
    k->stopping = true;
    pthread_cond_signal(&k->cond);
    pthread_mutex_unlock(&k->lock);
    pthread_join(k->thread, NULL);
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
    st->be_state = NULL;
}

/* ---- connections ------------------------------------------------------------------------ */

/* Before the first connection: no global memory statistics (SQLite keeps them
 * under one process-wide mutex that every allocation of every thread takes). */
static void configure_once(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Waiting for another connection's write lock. SQLite's own busy_timeout
 * sleeps 1, 2, 5, 10 ... 100 ms between tries: a thread that wants the lock
 * while the ingest worker commits a batch every few milliseconds would wait
 * tens of milliseconds for a lock free again after one. Tries every 100 µs
 * for the first 20 ms, then every millisecond, up to BUSY_TIMEOUT_MS. */
static int on_busy(void *ud, int tries)
{
    (void)ud;
    int64_t waited_us = tries < 200 ? (int64_t)tries * 100 : 20000 + (int64_t)(tries - 200) * 1000;
    if (waited_us >= (int64_t)BUSY_TIMEOUT_MS * 1000)
        return 0; /* SQLITE_BUSY: CTI_EUNAVAILABLE */
    struct timespec ts = {0, tries < 200 ? 100000 : 1000000};
    nanosleep(&ts, NULL);
    return 1;
}

static int sq_connect(cti_db_t *db)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_once);
    sq_t *s = cti_calloc(1, sizeof *s);
    db->impl = s;
    const char *path = db->st->opts.conninfo;
    if (mkdir_parent(path) != 0) {
        snprintf(s->err, sizeof s->err, "cannot create the directory for %s: %s", path,
                 strerror(errno));
        return CTI_EUNAVAILABLE;
    }
    /* with FULL, WAL frames are written through walbuf (a few writes per commit) */
    int rc = sqlite3_open_v2(path, &s->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             db->st->opts.sqlite_sync_full && !db->relaxed ? cti_walbuf_vfs()
                                                                           : NULL);
    if (rc != SQLITE_OK) {
        int err = map_error(s, rc);
        sqlite3_close(s->h);
        s->h = NULL;
        return err == CTI_EDB ? CTI_EUNAVAILABLE : err;
    }
    sqlite3_busy_handler(s->h, on_busy, NULL);
    char pragmas[256];
    /* auto_vacuum=INCREMENTAL: takes effect only in a file with no table yet (a
     * new one; an older file keeps NONE until VACUUMed, README); then the
     * retention purger's PRAGMA incremental_vacuum gives freed pages back.
     * secure_delete: freed cells and pages are zeroed, so a rewritten value (a
     * secret sealed at rest) leaves no copy behind in the file (Debian's SQLite
     * has it on by default; this does not depend on that) */
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             "PRAGMA foreign_keys=ON;"
             "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384; PRAGMA secure_delete=ON;",
             db->st->opts.sqlite_sync_full && !db->relaxed ? "FULL" : "NORMAL");
    rc = sqlite3_exec(s->h, pragmas, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return map_error(s, rc);
    sqlite3_wal_hook(s->h, wal_hook, checkpointer_of(db->st)); /* instead of autocheckpoint */
    return 0;
}

static void sq_disconnect(cti_db_t *db)
{
    sq_t *s = db->impl;
    if (!s)
        return;
    for (int i = 0; i < STMT_CACHE; i++) {
        sqlite3_finalize(s->cache[i].stmt);
        free(s->cache[i].sql);
    }
    sqlite3_close(s->h);
    free(s);
    db->impl = NULL;
}

/* Returns a prepared statement for sql from the cache, preparing it if needed. */
static int prepare(sq_t *s, const char *sql, sqlite3_stmt **out)
{
    uint64_t h = cti_store_sql_hash(sql);
    cached_t *victim = &s->cache[0];
    for (int i = 0; i < STMT_CACHE; i++) {
        cached_t *c = &s->cache[i];
        if (c->stmt && c->hash == h && strcmp(c->sql, sql) == 0) {
            c->used = ++s->tick;
            *out = c->stmt;
            return 0;
        }
        if (c->used < victim->used)
            victim = c;
    }
    char *text = rewrite_params(sql);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(s->h, text, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    free(text);
    if (rc != SQLITE_OK)
        return map_error(s, rc);
    sqlite3_finalize(victim->stmt);
    free(victim->sql);
    *victim = (cached_t){.sql = cti_strdup(sql), .hash = h, .stmt = stmt, .used = ++s->tick};
    *out = stmt;
    return 0;
}

static int bind(sq_t *s, sqlite3_stmt *stmt, const cti_sql_val_t *p, int n)
{
    for (int i = 0; i < n; i++) {
        int rc;
        switch (p[i].type) {
        case CTI_SQL_INT: rc = sqlite3_bind_int64(stmt, i + 1, p[i].i); break;
        case CTI_SQL_REAL: rc = sqlite3_bind_double(stmt, i + 1, p[i].d); break;
        case CTI_SQL_TEXT: rc = sqlite3_bind_text(stmt, i + 1, p[i].s, -1, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(stmt, i + 1); break;
        }
        if (rc != SQLITE_OK)
            return map_error(s, rc);
    }
    return 0;
}

static int sq_exec(cti_db_t *db, const char *sql, const cti_sql_val_t *params, int n,
                   cti_row_fn fn, void *ud)
{
    sq_t *s = db->impl;
    if (!s || !s->h) {
        cti_store_t *st = db->st;
        st->be->disconnect(db);
        int rc = st->be->connect(db);
        if (rc != 0)
            return rc;
        s = db->impl;
    }
    sqlite3_stmt *stmt = NULL;
    int rc = prepare(s, sql, &stmt);
    if (rc != 0)
        return rc;
    rc = bind(s, stmt, params, n);
    int result = 0;
    cti_row_t row = {.be = db->st->be, .impl = stmt};
    while (rc == 0) {
        int step = sqlite3_step(stmt);
        if (step == SQLITE_DONE)
            break;
        if (step != SQLITE_ROW) {
            result = map_error(s, sqlite3_extended_errcode(s->h));
            break;
        }
        if (fn && (result = fn(&row, ud)) != 0)
            break;
        row.index++;
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc ? rc : result;
}

static int sq_script(cti_db_t *db, const char *sql)
{
    sq_t *s = db->impl;
    if (!s || !s->h)
        return CTI_EUNAVAILABLE;
    int rc = sqlite3_exec(s->h, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : map_error(s, sqlite3_extended_errcode(s->h));
}

static const char *sq_errmsg(const cti_db_t *db)
{
    const sq_t *s = db->impl;
    return s ? s->err : "not connected";
}

static void sq_flush(cti_db_t *db)
{
    sq_t *s = db->impl;
    if (s && s->h)
        sqlite3_wal_checkpoint_v2(s->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

static int sq_row_columns(const cti_row_t *row)
{
    return sqlite3_column_count(row->impl);
}

static bool sq_row_is_null(const cti_row_t *row, int col)
{
    return sqlite3_column_type(row->impl, col) == SQLITE_NULL;
}

static int64_t sq_row_int(const cti_row_t *row, int col)
{
    return sqlite3_column_int64(row->impl, col);
}

static double sq_row_real(const cti_row_t *row, int col)
{
    return sqlite3_column_double(row->impl, col);
}

static const char *sq_row_text(const cti_row_t *row, int col)
{
    return (const char *)sqlite3_column_text(row->impl, col);
}

const cti_backend_t cti_backend_sqlite = {
    .name = "sqlite",
    .begin_sql = "BEGIN IMMEDIATE",
    /* SQLite rewrites an index on UPDATE only when a column it covers is SET */
    .caps = CTI_CAP_PARTIAL_UPDATE | CTI_CAP_WITHOUT_ROWID,
    .identity_pk = "INTEGER PRIMARY KEY AUTOINCREMENT",
    .each_open = "json_each(",
    .each_close = ") AS j",
    .connect = sq_connect,
    .disconnect = sq_disconnect,
    .exec = sq_exec,
    .script = sq_script,
    .errmsg = sq_errmsg,
    .row_columns = sq_row_columns,
    .row_is_null = sq_row_is_null,
    .row_int = sq_row_int,
    .row_real = sq_row_real,
    .row_text = sq_row_text,
    .flush = sq_flush,
    .close_store = sq_close_store,
};
