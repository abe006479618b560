/* wakeup.c — see wakeup.h. Plain libpq: LISTEN, poll(2) on the socket, PQnotifies. */
#include "store/wakeup.h"
#include "store/backend.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <assert.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#define LISTEN_TIMEOUT_MS 3000

struct cti_wakeup {
    char *conninfo;
    char channel[64];
    PGconn *conn;
    int64_t last_attempt_us;
};

cti_wakeup_t *cti_wakeup_open(cti_store_t *st, const char *channel)
{
    assert(cti_store_has(st, CTI_CAP_NOTIFY));
    cti_wakeup_t *l = cti_calloc(1, sizeof *l);
    l->conninfo = cti_strdup(st->opts.conninfo);
    snprintf(l->channel, sizeof l->channel, "%s", channel);
    return l;
}

static bool ensure(cti_wakeup_t *l)
{
    if (l->conn && PQstatus(l->conn) == CONNECTION_OK)
        return true;
    if (cti_mono_us() - l->last_attempt_us < 500000)
        return false;
    l->last_attempt_us = cti_mono_us();
    if (l->conn)
        PQfinish(l->conn);
    /* bounded (pg.c): a network that stalls now costs at most LISTEN_TIMEOUT_MS
     * here, not a thread stuck until TCP gives up (and a shutdown that waits for it) */
    char err[256];
    l->conn = cti_pg_connect(l->conninfo, "cti-server-listener", LISTEN_TIMEOUT_MS, err, sizeof err,
                             NULL);
    if (!l->conn)
        return false;
    char sql[96];
    snprintf(sql, sizeof sql, "LISTEN %s", l->channel);
    PGresult *r = cti_pg_exec_within(l->conn, sql, LISTEN_TIMEOUT_MS);
    bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        PQfinish(l->conn);
        l->conn = NULL;
    }
    if (ok)
        cti_log(CTI_LOG_INFO, NULL, "stream: listening for other instances' events",
                CTI_LS("channel", l->channel));
    return ok;
}

int cti_wakeup_wait(cti_wakeup_t *l, int timeout_ms, cti_notify_fn fn, void *ud, bool *fresh)
{
    bool was_up = l->conn && PQstatus(l->conn) == CONNECTION_OK;
    *fresh = false;
    if (!ensure(l)) {
        usleep((useconds_t)(timeout_ms < 200 ? timeout_ms : 200) * 1000);
        return CTI_EUNAVAILABLE;
    }
    *fresh = !was_up;
    struct pollfd p = {.fd = PQsocket(l->conn), .events = POLLIN};
    if (poll(&p, 1, timeout_ms) < 0 || (p.revents && !PQconsumeInput(l->conn))) {
        cti_log(CTI_LOG_WARN, NULL, "stream: listener lost its connection; reconnecting",
                CTI_LS("error", PQerrorMessage(l->conn)));
        PQfinish(l->conn);
        l->conn = NULL;
        return CTI_EUNAVAILABLE;
    }
    int n = 0;
    PGnotify *note;
    while ((note = PQnotifies(l->conn))) {
        fn(note->extra, ud);
        PQfreemem(note);
        n++;
    }
    return n;
}

void cti_wakeup_close(cti_wakeup_t *l)
{
    if (!l)
        return;
    if (l->conn)
        PQfinish(l->conn);
    free(l->conninfo);
    free(l);
}

int cti_notify(cti_db_t *db, const char *channel, const char *payload)
{
    assert(cti_store_has(db->st, CTI_CAP_NOTIFY));
    assert(db->in_tx); /* delivered at commit, with the rows it announces */
    cti_sql_val_t p[] = {CTI_SQL_TEXT(channel), CTI_SQL_TEXT(payload)};
    return cti_db_exec(db, "SELECT pg_notify($1, $2)", p, 2, NULL, NULL);
}
