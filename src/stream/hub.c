/*
 * hub.c — see hub.h. The hub is a set of shards, one thread each (one per
 * core: fan-out is bound by send(), and two threads send to twice as many
 * sockets). A connection belongs to one shard, chosen round-robin when it
 * registers; a published event goes to every shard holding a connection of
 * its app, which fans it out to its own sockets (stream/conn.c speaks the
 * protocol of each). Each shard has one epoll set and a command queue woken
 * by an eventfd; its lock guards the command queue and its per-app
 * connection lists (registering threads add to them; the shard's thread fans
 * out over them and is the only one to remove from them).
 *
 * Besides the shards, the hub runs the replay worker (stream/replay.h): the
 * only thread of the hub that reads the database. It reads replay pages,
 * which come back to the socket's shard as commands, and once a second it
 * checks the API keys that hold sockets open (stream/keywatch.h), whose
 * failures come back as revoke commands to every shard.
 *
 * Threads: the public functions say; every static function that touches a
 * shard's sockets runs on that shard's thread (asserted), or on the stopping
 * thread once the shard's thread has been joined.
 */
#include "stream/hub.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "http/http.h"
#include "repo/events.h"
#include "stream/conn.h"
#include "stream/keywatch.h"
#include "stream/msgq.h"
#include "stream/replay.h"

#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#define APP_BUCKETS          256
#define HANDSHAKE_TIMEOUT_US 10000000
#define MAX_SHARDS           16
/* Fan-out's writes go to the kernel in batches of this many sockets: one
 * io_uring submission instead of a send() each. The writes are the same
 * non-blocking ones (MSG_DONTWAIT: a full socket fails at once rather than
 * waiting), so nothing else changes. Measured on this project's 2-core VM:
 * ~4.4 µs of CPU per socket against ~7 µs with send(). */
#define SEND_BATCH           512

typedef struct app_entry {
    char app_id[37];
    cti_ws_t *conns;
    int count;
    struct app_entry *next;
} app_entry_t;

typedef struct cmd {
    enum { CMD_PUBLISH, CMD_ATTACH, CMD_ABANDON, CMD_PAGE, CMD_REVOKE } type;
    cti_msg_t *msg;                  /* PUBLISH */
    cti_ws_t *ws;                    /* ATTACH, ABANDON */
    cti_replay_job_t *job;           /* PAGE (its ws is the socket) */
    char key_id[CTI_KEY_ID_LEN + 1]; /* REVOKE */
    int code;
    const char *why; /* a string literal */
    struct cmd *next;
} cmd_t;

typedef struct shard {
    cti_hub_t *hub;
    pthread_t thread;
    pthread_t owner; /* set by the thread itself: what cti_hub_owns compares with */
    bool joined;     /* the thread has ended: the stopping thread owns the sockets */
    int epfd, evfd;
    pthread_mutex_t lock; /* protects cmds, apps, total, stopping, and each ws's state */
    cmd_t *cmds, *cmds_tail;
    app_entry_t *apps[APP_BUCKETS];
    int total;
    bool stopping;
    uint8_t rbuf[16384]; /* what its sockets send, read here and parsed at once */
    cti_ws_t *graveyard; /* closed this round (its thread only) */
    /* fan-out's writes, one io_uring submission for up to SEND_BATCH sockets
     * (its thread only; no ring: send() each) */
    struct io_uring ring;
    bool uring;
    int nbatch;
    cti_ws_t *batch[SEND_BATCH];
    cti_msg_t *batch_msg; /* the event they are all writing */
} shard_t;

struct cti_hub {
    cti_hub_options_t opts;
    cti_ws_env_t env;
    shard_t shards[MAX_SHARDS];
    int nshards;
    unsigned next_shard;      /* round-robin, under reg_lock */
    pthread_mutex_t reg_lock; /* one registration at a time: limits count every shard */
    cti_keywatch_t *keys;
    bool keys_failing; /* the replay worker's only: the last check failed */
};

static bool on_owner(const shard_t *sh)
{
    return sh->joined || pthread_equal(pthread_self(), sh->owner);
}

bool cti_hub_owns(const cti_ws_t *ws)
{
    return on_owner(ws->sh);
}

/* ---- app lists (under the shard's lock) --------------------------------------------- */

static app_entry_t *app_find(shard_t *sh, const char *app_id, bool create)
{
    uint32_t h = 2166136261u;
    for (const char *p = app_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    app_entry_t **slot = &sh->apps[h % APP_BUCKETS];
    for (app_entry_t *a = *slot; a; a = a->next)
        if (!strcmp(a->app_id, app_id))
            return a;
    if (!create)
        return NULL;
    app_entry_t *a = cti_calloc(1, sizeof *a);
    snprintf(a->app_id, sizeof a->app_id, "%s", app_id);
    a->next = *slot;
    *slot = a;
    return a;
}

static void unlink_ws(shard_t *sh, cti_ws_t *ws)
{
    assert(on_owner(sh));
    app_entry_t *a = app_find(sh, ws->app_id, false);
    if (!a)
        return;
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        a->conns = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    a->count--;
    sh->total--;
}

/* ---- commands ----------------------------------------------------------------------------- */

/* Queues a chain of commands (first..last) for a shard's thread. Only the
 * first chain of a batch wakes it (the thread reads the eventfd before taking
 * the whole list), so a burst costs one wake-up, not one system call each. */
static void post_chain(shard_t *sh, cmd_t *first, cmd_t *last)
{
    pthread_mutex_lock(&sh->lock);
    bool was_empty = !sh->cmds;
    if (sh->cmds_tail)
        sh->cmds_tail->next = first;
    else
        sh->cmds = first;
    sh->cmds_tail = last;
    pthread_mutex_unlock(&sh->lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(sh->evfd, &one, sizeof one);
        (void)w;
    }
}

static void post(shard_t *sh, cmd_t *c)
{
    post_chain(sh, c, c);
}

/* Queues chains for several shards (NULL: none for that one) at one instant:
 * every shard's lock is held while they are linked, so no shard can act on
 * its chain (and a client react to it) before every other has its own
 * queued; the shards' loops look at their queues before reading sockets, so
 * a message a client sends after seeing an event is read after that event on
 * every shard. Locks are taken in shard order (nothing else nests them). */
static void post_all(cti_hub_t *hub, cmd_t **first, cmd_t **last)
{
    bool wake[MAX_SHARDS] = {false};
    for (int i = 0; i < hub->nshards; i++)
        if (first[i])
            pthread_mutex_lock(&hub->shards[i].lock);
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        if (!first[i])
            continue;
        wake[i] = !sh->cmds;
        if (sh->cmds_tail)
            sh->cmds_tail->next = first[i];
        else
            sh->cmds = first[i];
        sh->cmds_tail = last[i];
    }
    for (int i = hub->nshards - 1; i >= 0; i--)
        if (first[i])
            pthread_mutex_unlock(&hub->shards[i].lock);
    for (int i = 0; i < hub->nshards; i++)
        if (wake[i]) {
            uint64_t one = 1;
            ssize_t w = write(hub->shards[i].evfd, &one, sizeof one);
            (void)w;
        }
}

/* ---- connection life --------------------------------------------------------------------- */

int cti_hub_register(cti_hub_t *hub, const char *app_id, const char *key_id,
                     const cti_ws_filter_t *f, cti_ws_t **out)
{
    pthread_mutex_lock(&hub->reg_lock);
    int total = 0, per_app = 0;
    bool stopping = false;
    for (int i = 0; i < hub->nshards; i++) { /* counts only fall meanwhile: safe */
        shard_t *s = &hub->shards[i];
        pthread_mutex_lock(&s->lock);
        app_entry_t *e = app_find(s, app_id, false);
        total += s->total;
        per_app += e ? e->count : 0;
        stopping |= s->stopping;
        pthread_mutex_unlock(&s->lock);
    }
    if (stopping || total >= hub->opts.max_connections || per_app >= hub->opts.max_per_app) {
        pthread_mutex_unlock(&hub->reg_lock);
        return CTI_ELIMIT;
    }
    shard_t *sh = &hub->shards[hub->next_shard++ % (unsigned)hub->nshards];
    cti_ws_t *ws = cti_calloc(1, sizeof *ws);
    ws->hub = hub;
    ws->sh = sh;
    ws->env = &hub->env;
    ws->epfd = sh->epfd;
    snprintf(ws->app_id, sizeof ws->app_id, "%s", app_id);
    snprintf(ws->key_id, sizeof ws->key_id, "%s", key_id ? key_id : "");
    cti_conn_set_filter(ws, f);
    ws->fd = -1;
    ws->state = WS_PENDING;
    ws->log_done = true; /* until held events are dropped, or a replay is planned */
    ws->created_us = cti_mono_us();
    cti_keywatch_add(hub->keys, ws->key_id);
    pthread_mutex_lock(&sh->lock);
    app_entry_t *a = app_find(sh, app_id, true);
    ws->next = a->conns;
    if (a->conns)
        a->conns->prev = ws;
    a->conns = ws;
    a->count++;
    sh->total++;
    pthread_mutex_unlock(&sh->lock);
    pthread_mutex_unlock(&hub->reg_lock);
    *out = ws;
    return 0;
}

int cti_hub_connections(cti_hub_t *hub)
{
    int total = 0;
    for (int i = 0; i < hub->nshards; i++) {
        pthread_mutex_lock(&hub->shards[i].lock);
        total += hub->shards[i].total;
        pthread_mutex_unlock(&hub->shards[i].lock);
    }
    return total;
}

void cti_ws_set_start(cti_ws_t *ws, int64_t latest, int64_t since, cti_replay_plan_t plan)
{
    ws->latest = latest;
    ws->start_seq = since;
    ws->plan = plan;
}

void cti_hub_abandon(cti_hub_t *hub, cti_ws_t *ws)
{
    cmd_t *c = cti_calloc(1, sizeof *c);
    c->type = CMD_ABANDON;
    c->ws = ws;
    post(ws->sh, c);
}

void cti_ws_attach(cti_ws_t *ws, int fd, const char *extra, size_t extra_len, void *urh)
{
    ws->fd = fd;
    ws->urh = urh;
    if (extra_len) {
        ws->extra = cti_malloc(extra_len);
        memcpy(ws->extra, extra, extra_len);
        ws->extra_len = extra_len;
    }
    cmd_t *c = cti_calloc(1, sizeof *c);
    c->type = CMD_ATTACH;
    c->ws = ws;
    post(ws->sh, c);
}

/* Ends a connection: out of its app's list, its socket handed back to MHD,
 * what it holds freed. The struct itself is freed after this round of epoll
 * events (which may still name it), or, while replay jobs for it are with
 * the worker, when the last comes back. */
static void close_ws(shard_t *sh, cti_ws_t *ws)
{
    assert(on_owner(sh) && ws->state != WS_CLOSED);
    pthread_mutex_lock(&sh->lock);
    unlink_ws(sh, ws);
    ws->state = WS_CLOSED;
    pthread_mutex_unlock(&sh->lock);
    if (ws->fd >= 0) {
        epoll_ctl(sh->epfd, EPOLL_CTL_DEL, ws->fd, NULL);
        cti_http_upgrade_close(ws->urh, ws->fd);
    }
    cti_conn_release(ws);
    cti_keywatch_remove(sh->hub->keys, ws->key_id);
    if (!ws->inflight) {
        ws->next = sh->graveyard;
        sh->graveyard = ws;
    }
}

static void bury(shard_t *sh)
{
    assert(on_owner(sh));
    while (sh->graveyard) {
        cti_ws_t *next = sh->graveyard->next;
        free(sh->graveyard);
        sh->graveyard = next;
    }
}

static void start_live(shard_t *sh, cti_ws_t *ws)
{
    assert(on_owner(sh) && ws->state == WS_PENDING);
    cti_hub_t *hub = sh->hub;
    int one = 1; /* events are written whole: no need to wait to fill a segment */
    setsockopt(ws->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (hub->opts.sndbuf > 0)
        setsockopt(ws->fd, SOL_SOCKET, SO_SNDBUF, &hub->opts.sndbuf, sizeof hub->opts.sndbuf);
    pthread_mutex_lock(&sh->lock); /* tick and registrations read the lists under it */
    ws->state = WS_LIVE;
    pthread_mutex_unlock(&sh->lock);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ws};
    ws->epoll_events = ev.events;
    epoll_ctl(sh->epfd, EPOLL_CTL_ADD, ws->fd, &ev);
    CTI_METRIC_INC(ws_connections_total);
    cti_conn_start(ws);
    if (ws->closing)
        close_ws(sh, ws);
}

/* A replay page came back (or was cancelled) for a socket of this shard. */
static void page_ready(shard_t *sh, cti_replay_job_t *job)
{
    cti_ws_t *ws = job->ws;
    assert(on_owner(sh) && ws->inflight > 0);
    ws->inflight--;
    if (ws->state == WS_CLOSED) {
        if (!ws->inflight) { /* the last thing that named it */
            ws->next = sh->graveyard;
            sh->graveyard = ws;
        }
    } else {
        cti_conn_page(ws, job);
        if (ws->closing)
            close_ws(sh, ws);
    }
    cti_replay_job_free(job);
}

/* ---- publishing ---------------------------------------------------------------------------- */

/* Whether the shard has a connection of the app (caller holds its lock). */
static bool shard_has(shard_t *sh, const char *app_id)
{
    app_entry_t *a = app_find(sh, app_id, false);
    return a && a->count > 0;
}

bool cti_hub_has_app(cti_hub_t *hub, const char *app_id)
{
    bool has = false;
    for (int i = 0; i < hub->nshards && !has; i++) {
        pthread_mutex_lock(&hub->shards[i].lock);
        has = shard_has(&hub->shards[i], app_id);
        pthread_mutex_unlock(&hub->shards[i].lock);
    }
    return has;
}

void cti_hub_publish_many(cti_hub_t *hub, const cti_logrow_t *events, int n)
{
    if (n <= 0)
        return;
    /* An event goes only to shards holding a connection of its app, and is
     * framed only if one does. A connection registered after this check is
     * after the event's commit, so its replay (read after registering) has it. */
    cti_msg_t **msgs = cti_calloc((size_t)n, sizeof *msgs); /* framed once, shared by every shard */
    cmd_t *first[MAX_SHARDS] = {0}, *last[MAX_SHARDS] = {0};
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        const char *app = NULL; /* the app last looked up (a batch is mostly one app) */
        bool want = false;
        pthread_mutex_lock(&sh->lock);
        for (int j = 0; j < n; j++) {
            if (!app || strcmp(app, events[j].app_id))
                want = shard_has(sh, app = events[j].app_id);
            if (!want)
                continue;
            if (!msgs[j])
                msgs[j] = cti_msg_event(events[j].app_id, events[j].seq, events[j].body);
            cmd_t *c = cti_calloc(1, sizeof *c);
            c->type = CMD_PUBLISH;
            c->msg = cti_msg_ref(msgs[j]);
            if (last[i])
                last[i]->next = c;
            else
                first[i] = c;
            last[i] = c;
        }
        pthread_mutex_unlock(&sh->lock);
    }
    post_all(hub, first, last);
    for (int j = 0; j < n; j++)
        cti_msg_unref(msgs[j]);
    free(msgs);
}

void cti_hub_publish(cti_hub_t *hub, const char *app_id, int64_t seq, const char *body)
{
    cti_logrow_t one = {.app_id = app_id, .seq = seq, .body = body};
    cti_hub_publish_many(hub, &one, 1);
}

void cti_hub_publish_cb(const cti_logrow_t *events, int n, void *ud)
{
    cti_hub_publish_many(ud, events, n);
}

/* ---- batched writes ------------------------------------------------------------------------ */

static void flush_sends(shard_t *sh);

bool cti_hub_batch_send(cti_ws_t *ws, cti_msg_t *m)
{
    shard_t *sh = ws->sh;
    assert(on_owner(sh));
    if (sh->nbatch == SEND_BATCH || (sh->nbatch && sh->batch_msg != m))
        flush_sends(sh); /* a batch writes one event (fan_out flushes after each) */
    struct io_uring_sqe *q = sh->uring ? io_uring_get_sqe(&sh->ring) : NULL;
    if (!q)
        return false;
    io_uring_prep_send(q, ws->fd, m->frame, m->frame_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    io_uring_sqe_set_data(q, ws);
    sh->batch[sh->nbatch++] = ws;
    sh->batch_msg = m;
    return true;
}

/* Gives the ring up (after a failure the kernel may still hold some of its
 * queued writes, and it must never send them later): the shard send()s. */
static void drop_ring(shard_t *sh, int rc)
{
    io_uring_queue_exit(&sh->ring);
    sh->uring = false;
    cti_log(CTI_LOG_WARN, NULL, "websocket hub: io_uring failed; writing with send() from now on",
            CTI_LS("error", strerror(-rc)));
}

/* Hands a batched socket what its write did; closes it if that failed. */
static void outcome(shard_t *sh, cti_ws_t *ws, int res)
{
    cti_conn_sent(ws, sh->batch_msg, res);
    if (ws->closing)
        close_ws(sh, ws);
}

/* Submits the batch and hands each socket its outcome; a socket that failed is
 * closed. The writes complete during the submission (non-blocking sends are
 * done inline), so this does not wait for sockets. */
static void flush_sends(shard_t *sh)
{
    int n = sh->nbatch, done = 0;
    if (!n)
        return;
    sh->nbatch = 0;
    int rc;
    do
        rc = io_uring_submit(&sh->ring);
    while (rc == -EINTR);
    int submitted = rc < 0 ? 0 : rc;
    while (done < submitted) {
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&sh->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            break;
        cti_ws_t *ws = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&sh->ring, cqe);
        done++;
        outcome(sh, ws, res);
    }
    if (done < n) { /* not submitted or not reaped: those are written now, directly */
        drop_ring(sh, rc < 0 ? rc : -EIO);
        for (int i = 0; i < n; i++) {
            cti_ws_t *ws = sh->batch[i];
            if (!ws->send_pending)
                continue; /* its outcome came back (whatever the order of completions) */
            ssize_t w = send(ws->fd, sh->batch_msg->frame, sh->batch_msg->frame_len,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            outcome(sh, ws, w < 0 ? -errno : (int)w);
        }
    }
}

static void fan_out(shard_t *sh, cti_msg_t *m)
{
    assert(on_owner(sh));
    pthread_mutex_lock(&sh->lock);
    app_entry_t *a = app_find(sh, m->app_id, false);
    cti_ws_t *ws = a ? a->conns : NULL;
    pthread_mutex_unlock(&sh->lock);
    /* Other threads only add connections in front of the first one read here,
     * and only this thread removes them or changes their state: the rest of
     * the list is walked without the lock (which publishing threads need).
     * One added meanwhile registered after this event was committed, so its
     * replay, read from the log after registering, has the event. */
    for (cti_ws_t *next; ws; ws = next) {
        next = ws->next;
        if (ws->closing)
            continue;
        cti_conn_live(ws, m);
        if (ws->closing)
            close_ws(sh, ws);
    }
    flush_sends(sh);
}

/* ---- credentials ------------------------------------------------------------------------- */

/* keywatch's dead callback (the replay worker): every shard closes the key's sockets. */
static void key_dead(const char *key_id, int code, const char *why, void *ud)
{
    cti_hub_t *hub = ud;
    for (int i = 0; i < hub->nshards; i++) {
        cmd_t *c = cti_calloc(1, sizeof *c);
        c->type = CMD_REVOKE;
        snprintf(c->key_id, sizeof c->key_id, "%s", key_id);
        c->code = code;
        c->why = why;
        post(&hub->shards[i], c);
    }
}

/* The replay worker's tick: once a second, with its own connection. */
static void check_keys(cti_db_t *db, void *ud)
{
    cti_hub_t *hub = ud;
    int rc = cti_keywatch_check(hub->keys, db, cti_now_ms(), key_dead, hub);
    if (rc != 0 && !hub->keys_failing)
        cti_log(CTI_LOG_WARN, NULL, "ws: could not check the API keys of open sockets",
                CTI_LS("error", cti_db_errmsg(db)));
    hub->keys_failing = rc != 0;
}

static void revoke_key(shard_t *sh, const cmd_t *c)
{
    assert(on_owner(sh));
    cti_ws_t **hit = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&sh->lock); /* collected first: closing changes the lists */
    for (int b = 0; b < APP_BUCKETS; b++)
        for (app_entry_t *a = sh->apps[b]; a; a = a->next)
            for (cti_ws_t *ws = a->conns; ws; ws = ws->next)
                if (ws->state == WS_LIVE && !strcmp(ws->key_id, c->key_id)) {
                    if (n == cap)
                        hit = cti_realloc(hit, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *hit);
                    hit[n++] = ws;
                }
    pthread_mutex_unlock(&sh->lock);
    for (int i = 0; i < n; i++) {
        cti_conn_revoke(hit[i], c->code, c->why);
        if (hit[i]->closing)
            close_ws(sh, hit[i]);
    }
    free(hit);
}

/* The replay worker's done callback: the page goes to the socket's shard. */
static void job_done(cti_replay_job_t *job, void *ud)
{
    cti_ws_t *ws = job->ws;
    cmd_t *c = cti_calloc(1, sizeof *c);
    c->type = CMD_PAGE;
    c->job = job;
    post(ws->sh, c);
}

/* ---- the shard's loop -------------------------------------------------------------------- */

static void run_commands(shard_t *sh)
{
    assert(on_owner(sh));
    uint64_t n;
    ssize_t r = read(sh->evfd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&sh->lock);
    cmd_t *c = sh->cmds;
    sh->cmds = sh->cmds_tail = NULL;
    pthread_mutex_unlock(&sh->lock);
    while (c) {
        cmd_t *next = c->next;
        switch (c->type) {
        case CMD_PUBLISH:
            fan_out(sh, c->msg);
            cti_msg_unref(c->msg);
            break;
        case CMD_ATTACH:
            start_live(sh, c->ws);
            break;
        case CMD_ABANDON:
            close_ws(sh, c->ws);
            break;
        case CMD_PAGE:
            page_ready(sh, c->job);
            break;
        case CMD_REVOKE:
            revoke_key(sh, c);
            break;
        }
        free(c);
        c = next;
    }
}

/* Pings, and drops peers silent too long, closes never completed and
 * handshakes that never finished. */
static void tick(shard_t *sh)
{
    assert(on_owner(sh));
    int64_t now = cti_mono_us(), every = (int64_t)sh->hub->opts.ping_interval_s * 1000000;
    cti_ws_t *dead[256];
    int ndead = 0;
    pthread_mutex_lock(&sh->lock);
    for (int b = 0; b < APP_BUCKETS; b++)
        for (app_entry_t *a = sh->apps[b]; a; a = a->next)
            for (cti_ws_t *ws = a->conns; ws && ndead < 256; ws = ws->next) {
                if ((ws->state == WS_PENDING && now - ws->created_us > HANDSHAKE_TIMEOUT_US &&
                     ws->fd < 0) ||
                    (ws->state == WS_LIVE && now - ws->last_rx_us > 3 * every) ||
                    (ws->close_queued && now > ws->close_deadline_us) || ws->closing)
                    dead[ndead++] = ws;
                else if (ws->state == WS_LIVE && !ws->close_queued &&
                         now - ws->last_ping_us >= every)
                    cti_conn_ping(ws, now);
            }
    pthread_mutex_unlock(&sh->lock);
    for (int i = 0; i < ndead; i++)
        close_ws(sh, dead[i]);
}

/* The shard's ring, made by its own thread (the only one that submits). */
static void ring_start(shard_t *sh)
{
    if (!sh->hub->opts.batch_sends)
        return;
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN};
    int rc = io_uring_queue_init_params(SEND_BATCH, &sh->ring, &p);
    if (rc == -EINVAL) { /* a kernel before 6.0 */
        memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(SEND_BATCH, &sh->ring, &p);
    }
    sh->uring = rc == 0;
    if (rc != 0 && sh == &sh->hub->shards[0])
        cti_log(CTI_LOG_INFO, NULL, "websocket hub: io_uring unavailable; fan-out writes with send()",
                CTI_LS("error", strerror(-rc)));
}

static void *shard_main(void *arg)
{
    shard_t *sh = arg;
    sh->owner = pthread_self();
    ring_start(sh);
    struct epoll_event evs[256];
    int64_t last_tick = cti_mono_us();
    for (;;) {
        int n = epoll_wait(sh->epfd, evs, 256, 1000);
        /* commands first, woken or not (post_all): an event published before
         * a client sent a message is handled before that message (a
         * subscribe changing its filters) */
        pthread_mutex_lock(&sh->lock);
        bool cmds = sh->cmds != NULL;
        pthread_mutex_unlock(&sh->lock);
        if (cmds)
            run_commands(sh);
        for (int i = 0; i < n; i++) {
            cti_ws_t *ws = evs[i].data.ptr;
            if (!ws)
                continue;
            if (ws->state == WS_CLOSED)
                continue; /* closed earlier in this round */
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                cti_conn_read(ws, sh->rbuf, sizeof sh->rbuf);
            if (!ws->closing)
                cti_conn_pump(ws);
            if (ws->closing)
                close_ws(sh, ws);
        }
        if (cti_mono_us() - last_tick > 1000000) {
            tick(sh);
            last_tick = cti_mono_us();
        }
        bury(sh);
        pthread_mutex_lock(&sh->lock);
        bool stop = sh->stopping;
        pthread_mutex_unlock(&sh->lock);
        if (stop)
            break;
    }
    if (sh->uring)
        io_uring_queue_exit(&sh->ring);
    sh->uring = false;
    return NULL;
}

cti_hub_t *cti_hub_start(const cti_hub_options_t *opts)
{
    cti_hub_t *hub = cti_calloc_table(sizeof *hub); /* per-shard app tables, mostly empty */
    hub->opts = *opts;
    hub->env.ping_interval_s = opts->ping_interval_s;
    hub->keys = cti_keywatch_new();
    pthread_mutex_init(&hub->reg_lock, NULL);
    int n = opts->threads > 0 ? opts->threads : get_nprocs();
    hub->nshards = n < 1 ? 1 : n > MAX_SHARDS ? MAX_SHARDS : n;
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        sh->hub = hub;
        pthread_mutex_init(&sh->lock, NULL);
        sh->epfd = epoll_create1(EPOLL_CLOEXEC);
        sh->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(sh->epfd, EPOLL_CTL_ADD, sh->evfd, &ev);
    }
    /* before the shards run: their sockets' replays go to it */
    hub->env.replayer = cti_replayer_start(opts->store, job_done, check_keys, hub);
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        if (pthread_create(&sh->thread, NULL, shard_main, sh) != 0)
            cti_fatal("cannot start a WebSocket hub thread");
        pthread_setname_np(sh->thread, "cti-hub"); /* shown by top -H, ps -L */
    }
    return hub;
}

void cti_hub_stop(cti_hub_t *hub)
{
    if (!hub)
        return;
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        pthread_mutex_lock(&sh->lock);
        sh->stopping = true;
        pthread_mutex_unlock(&sh->lock);
        uint64_t one = 1;
        ssize_t w = write(sh->evfd, &one, sizeof one);
        (void)w;
    }
    for (int i = 0; i < hub->nshards; i++) {
        pthread_join(hub->shards[i].thread, NULL);
        hub->shards[i].joined = true; /* from here this thread owns the sockets */
    }
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        run_commands(sh); /* attaches, abandons, pages that raced with the stop */
        for (int b = 0; b < APP_BUCKETS; b++)
            for (app_entry_t *a = sh->apps[b]; a; a = a->next)
                while (a->conns)
                    close_ws(sh, a->conns);
    }
    /* No socket is open now, so none asks for a page any more; the worker
     * answers (cancels) every job it had, and those come back as commands. */
    cti_replayer_stop(hub->env.replayer);
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        run_commands(sh);
        for (int b = 0; b < APP_BUCKETS; b++) {
            app_entry_t *a = sh->apps[b];
            while (a) {
                app_entry_t *next = a->next;
                free(a);
                a = next;
            }
        }
        bury(sh);
        close(sh->epfd);
        close(sh->evfd);
        pthread_mutex_destroy(&sh->lock);
    }
    cti_keywatch_free(hub->keys);
    pthread_mutex_destroy(&hub->reg_lock);
    cti_free_table(hub, sizeof *hub);
}
