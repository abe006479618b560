/* guard.c — see guard.h. Lists in state order, so the reaper reads deadlines
 * from the front of HEAD, IDLE and CUT (entered in time order) and scans only
 * BODY. */
#include "http/guard.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ST_HEAD, ST_IDLE, ST_BODY, ST_CUT, ST_HANDLER, ST_UPGRADED };
enum { NLISTS = 4 }; /* HEAD, IDLE, BODY and CUT have a list; the others none */

#define TICK_MS 100
/* A waiting connection is looked at once for a closed peer, this long after it
 * entered its state, and the reaper looks this often. Once is enough: a close
 * that arrives after MHD's last read is a new epoll edge, which MHD sees; only
 * one that arrived with the bytes MHD read goes unnoticed, and it is there by
 * then. (A head still incomplete later meets HEADER_TIMEOUT anyway.) */
#define PEEK_AFTER_US 200000
#define PEEK_EVERY_US 100000
#define REPORT_EVERY_US 10000000
/* A connection cut this long ago and not yet closed by MHD is shut down
 * again (and again as long as it stays open), to wake its pool thread; one
 * a tick, the one that has waited longest.
 * Work-around for libmicrohttpd 0.9.75: MHD_epoll() drains epoll with
 *     while (MAX_EVENTS == num_events)
 *       num_events = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
 * (MAX_EVENTS is 128) before it handles any of the events, and timeout_ms is
 * the round's blocking timeout (up to CONNECTION_TIMEOUT). When exactly 128
 * events are ready — the reaper cutting the 128 connections left on one pool
 * thread at once, which a flood of partial requests closed at once does
 * about 1 time in 10 on 2 cores — the second epoll_wait() sleeps with those
 * 128 connections unhandled, until some other event reaches that thread or
 * the timeout passes (~30 s). shutdown(2) wakes the socket's waiters every
 * time, even on a socket already shut down (it then fails with ENOTCONN), so
 * a repeated shutdown is a new edge: epoll_wait() returns it (fewer than 128)
 * and MHD handles all of them. One a tick, because shutting all of them down
 * again at once made the next batch of exactly 128 (seen: the stall repeated
 * every 300 ms); a single event ends the stall, and the connections go
 * round (the one shut down again goes to the back), so every stuck thread
 * has its turn.
 * Normally MHD closes a cut connection within milliseconds: this costs
 * nothing. */
#define RESHUT_AFTER_US 300000

typedef struct addr_entry {
    struct addr_entry *next;
    uint8_t key[16];
    int count;
} addr_entry_t;

struct cti_guard_conn {
    cti_guard_conn_t *prev, *next;
    uint64_t id; /* unique, in order of accept */
    int fd, state;
    bool peeked;      /* looked at for a closed peer since it entered its state */
    int64_t since_us; /* when it entered its state (CUT: or was last shut down) */
    uint64_t body;    /* body bytes of the current request */
    addr_entry_t *addr;
};

typedef struct {
    cti_guard_conn_t *head, *tail;
    int n;
} list_t;

struct cti_guard {
    cti_guard_options_t o;
    int shed_level;
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    bool stop;
    list_t lists[NLISTS];
    addr_entry_t **buckets;
    size_t mask;
    int open;     /* tracked connections (not upgraded), cut ones included */
    int cutting;  /* shut down, close event not yet seen */
    int upgraded; /* upgraded, still held by MHD (TLS WebSockets; plain ones until MHD lets go) */
    int64_t last_peek_us;
    uint64_t next_id;
    struct peek { /* the reaper's own: sockets to look at outside the lock */
        int fd;
        uint64_t id;
        int state; /* PEER_* */
    } *peek;
    size_t npeek, peek_cap;
    cti_guard_stats_t stats;
    pthread_t thread;
};

/* ---- lists ------------------------------------------------------------------------ */

static void list_push(cti_guard_t *g, cti_guard_conn_t *c)
{
    assert(c->state < NLISTS);
    list_t *l = &g->lists[c->state];
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(cti_guard_t *g, cti_guard_conn_t *c)
{
    if (c->state >= NLISTS)
        return;
    list_t *l = &g->lists[c->state];
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    l->n--;
}

/* Moves c to state. A cut connection stays cut (MHD may still finish parsing
 * what it read) and an upgraded one stays upgraded (MHD reports its request
 * completed only when the WebSocket closes). */
static void set_state(cti_guard_t *g, cti_guard_conn_t *c, int state)
{
    if (c->state == ST_CUT || c->state == ST_UPGRADED)
        return;
    list_remove(g, c);
    c->state = state;
    c->peeked = false;
    c->since_us = cti_mono_us();
    if (state < NLISTS)
        list_push(g, c);
}

/* ---- addresses --------------------------------------------------------------------- */

/* IPv4 as ::ffff:a.b.c.d; IPv6 by its /64 (what one site or host is given). */
static bool addr_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa && sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
        return true;
    }
    return false;
}

static addr_entry_t **addr_slot(cti_guard_t *g, const uint8_t key[16])
{
    addr_entry_t **p = &g->buckets[cti_hash_bytes(key, 16) & g->mask];
    while (*p && memcmp((*p)->key, key, 16) != 0)
        p = &(*p)->next;
    return p;
}

static void addr_release(cti_guard_t *g, cti_guard_conn_t *c)
{
    if (!c->addr)
        return;
    if (--c->addr->count == 0) {
        addr_entry_t **p = addr_slot(g, c->addr->key);
        assert(*p == c->addr);
        *p = c->addr->next;
        free(c->addr);
    }
    c->addr = NULL;
}

/* ---- closing ----------------------------------------------------------------------- */

/* Shuts c's socket down: MHD sees the end of the stream and closes it. */
static void cut(cti_guard_t *g, cti_guard_conn_t *c, uint64_t *counter)
{
    assert(c->state != ST_CUT && c->state != ST_UPGRADED);
    list_remove(g, c);
    c->state = ST_CUT;
    c->since_us = cti_mono_us();
    list_push(g, c);
    g->cutting++;
    (*counter)++;
    shutdown(c->fd, SHUT_RDWR);
}

/* Shuts down again the connection cut longest ago, if RESHUT_AFTER_US ago or
 * more, that MHD has not closed yet: wakes a pool thread stuck in
 * libmicrohttpd 0.9.75's epoll loop (see RESHUT_AFTER_US). It goes to the
 * back of the list. */
static void reshut_stuck(cti_guard_t *g, int64_t now)
{
    cti_guard_conn_t *c = g->lists[ST_CUT].head;
    if (!c || now - c->since_us < RESHUT_AFTER_US)
        return;
    assert(c->state == ST_CUT);
    list_remove(g, c);
    c->since_us = now;
    list_push(g, c);
    g->stats.reshut++;
    shutdown(c->fd, SHUT_RDWR);
}

/* Under pressure: the connection that has waited longest without a request
 * under way, other than the newest (the one just accepted). */
static void shed_one(cti_guard_t *g, const cti_guard_conn_t *newest)
{
    cti_guard_conn_t *h = g->lists[ST_HEAD].head, *i = g->lists[ST_IDLE].head;
    if (h == newest)
        h = NULL;
    cti_guard_conn_t *victim = !h ? i : !i ? h : h->since_us <= i->since_us ? h : i;
    if (victim)
        cut(g, victim, &g->stats.shed);
}

enum { PEER_WAITING, PEER_GONE, PEER_UNREAD };

/* Whether the peer has closed and nothing is left to read (MHD read the
 * bytes but, edge-triggered, will not hear of the close), or bytes are still
 * unread (MHD has not read them yet: look again later, since a close that
 * came with them would then go unnoticed). */
static int peer_state(int fd)
{
    char b;
    ssize_t r = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0)
        return PEER_UNREAD;
    return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ? PEER_GONE
                                                                                 : PEER_WAITING;
}

static void reap(cti_guard_t *g, int64_t now)
{
    const int64_t head_us = (int64_t)g->o.header_timeout_s * 1000000;
    const int64_t idle_us = (int64_t)g->o.idle_timeout_s * 1000000;
    cti_guard_conn_t *c;
    while ((c = g->lists[ST_HEAD].head) && now - c->since_us >= head_us)
        cut(g, c, &g->stats.timeouts);
    while ((c = g->lists[ST_IDLE].head) && now - c->since_us >= idle_us)
        cut(g, c, &g->stats.timeouts);
    if (g->o.min_body_rate > 0) {
        for (cti_guard_conn_t *next, *b = g->lists[ST_BODY].head; b; b = next) {
            next = b->next;
            int64_t allowed = head_us + (int64_t)(b->body * 1000000 / (uint64_t)g->o.min_body_rate);
            if (now - b->since_us > allowed)
                cut(g, b, &g->stats.timeouts);
        }
    }
}

/* c's bytes are still unread 200 ms or more after it started waiting: MHD's
 * thread may be stuck in libmicrohttpd 0.9.75's epoll loop (RESHUT_AFTER_US)
 * with c among the 128 events it has not handled. SO_RCVLOWAT at its default
 * (1) changes nothing but signals readability again when bytes (or a close)
 * are there: a new edge, which ends such a stall. (When MHD is only busy, it
 * reads them anyway; an extra event costs it one recv.) Called locked, so
 * c->fd is still c's socket. */
static void nudge(cti_guard_t *g, cti_guard_conn_t *c)
{
    assert(c->state == ST_HEAD || c->state == ST_IDLE);
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
    g->stats.nudged++;
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = ((const struct peek *)a)->id, y = ((const struct peek *)b)->id;
    return x < y ? -1 : x > y;
}

/* Cuts waiting connections whose peer has closed. The recv(2) calls run
 * without the lock (thousands under a flood, and the pool threads need it to
 * accept): a descriptor may be closed and reused meanwhile, so a finding only
 * counts for the connection with the same id, looked up again under the lock.
 * (A peek at a reused descriptor reads nothing.) Called and returns locked. */
static void reap_closed_peers(cti_guard_t *g, int64_t now)
{
    g->npeek = 0;
    for (int l = ST_HEAD; l <= ST_IDLE; l++)
        for (cti_guard_conn_t *w = g->lists[l].head; w && now - w->since_us >= PEEK_AFTER_US;
             w = w->next) {
            if (w->peeked)
                continue;
            w->peeked = true;
            if (g->npeek == g->peek_cap) {
                g->peek_cap = g->peek_cap ? 2 * g->peek_cap : 256;
                g->peek = cti_realloc(g->peek, g->peek_cap * sizeof *g->peek);
            }
            g->peek[g->npeek++] = (struct peek){w->fd, w->id, PEER_WAITING};
        }
    if (!g->npeek)
        return;
    pthread_mutex_unlock(&g->mu);
    size_t found = 0;
    for (size_t i = 0; i < g->npeek; i++)
        if ((g->peek[i].state = peer_state(g->peek[i].fd)) != PEER_WAITING)
            g->peek[found++] = g->peek[i];
    qsort(g->peek, found, sizeof *g->peek, cmp_id);
    pthread_mutex_lock(&g->mu);
    for (int l = ST_HEAD; l <= ST_IDLE && found; l++)
        for (cti_guard_conn_t *next, *w = g->lists[l].head; w; w = next) {
            next = w->next;
            struct peek key = {0, w->id, 0}, *p = bsearch(&key, g->peek, found, sizeof *g->peek, cmp_id);
            if (p && p->state == PEER_GONE) {
                cut(g, w, &g->stats.peer_closed);
            } else if (p) {
                w->peeked = false; /* unread bytes: looked at again next time */
                nudge(g, w);
            }
        }
}

static void snapshot(cti_guard_t *g, cti_guard_stats_t *out)
{
    *out = g->stats;
    out->open = g->open;
    out->upgraded = g->upgraded;
    out->cutting = g->cutting;
    out->heads = g->lists[ST_HEAD].n;
    out->idles = g->lists[ST_IDLE].n;
    out->bodies = g->lists[ST_BODY].n;
}

static void report(const cti_guard_stats_t *now, const cti_guard_stats_t *before)
{
    if (now->refused == before->refused && now->timeouts == before->timeouts &&
        now->shed == before->shed && now->reshut == before->reshut)
        return; /* closed peers are ordinary: not worth a line alone */
    cti_log(CTI_LOG_WARN, NULL, "http: connections refused or closed by the guard (totals)",
            CTI_LI("refused_per_address", (int64_t)now->refused),
            CTI_LI("deadline_passed", (int64_t)now->timeouts),
            CTI_LI("shed_under_pressure", (int64_t)now->shed),
            CTI_LI("peer_closed", (int64_t)now->peer_closed),
            CTI_LI("shut_down_again", (int64_t)now->reshut),
            CTI_LI("unread_nudged", (int64_t)now->nudged), CTI_LI("open", now->open),
            CTI_LI("upgrading", now->upgraded), CTI_LI("awaiting_head", now->heads),
            CTI_LI("idle", now->idles), CTI_LI("reading_body", now->bodies));
}

static void *reaper_main(void *arg)
{
    cti_guard_t *g = arg;
    cti_guard_stats_t reported = {0};
    int64_t last_report = cti_mono_us();
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stop)
            break;
        int64_t now = cti_mono_us();
        reshut_stuck(g, now);
        reap(g, now);
        if (now - g->last_peek_us >= PEEK_EVERY_US) {
            g->last_peek_us = now;
            reap_closed_peers(g, now);
        }
        if (now - last_report >= REPORT_EVERY_US) {
            cti_guard_stats_t s;
            snapshot(g, &s);
            pthread_mutex_unlock(&g->mu);
            report(&s, &reported);
            reported = s;
            last_report = now;
            pthread_mutex_lock(&g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------- */

cti_guard_t *cti_guard_new(const cti_guard_options_t *opts)
{
    cti_guard_t *g = cti_calloc(1, sizeof *g);
    g->o = *opts;
    g->shed_level = opts->max_connections - opts->max_connections / 8;
    size_t n = 64;
    while (n < (size_t)opts->max_connections)
        n *= 2;
    g->buckets = cti_calloc(n, sizeof *g->buckets);
    g->mask = n - 1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&g->thread, NULL, reaper_main, g) != 0)
        cti_fatal("cannot start the connection guard thread");
    pthread_setname_np(g->thread, "cti-guard");
    return g;
}

void cti_guard_free(cti_guard_t *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    for (size_t i = 0; i <= g->mask; i++)
        for (addr_entry_t *next, *a = g->buckets[i]; a; a = next) {
            next = a->next;
            free(a);
        }
    free(g->buckets);
    free(g->peek);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

bool cti_guard_admit(cti_guard_t *g, const struct sockaddr *sa)
{
    uint8_t key[16];
    if (g->o.per_address <= 0 || !addr_key(sa, key))
        return true;
    pthread_mutex_lock(&g->mu);
    addr_entry_t *a = *addr_slot(g, key);
    bool ok = !a || a->count < g->o.per_address;
    if (!ok)
        g->stats.refused++;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

cti_guard_conn_t *cti_guard_open(cti_guard_t *g, int fd, const struct sockaddr *sa)
{
    cti_guard_conn_t *c = cti_calloc(1, sizeof *c);
    c->fd = fd;
    c->state = ST_HANDLER; /* set_state below moves it (from no list) to HEAD */
    uint8_t key[16];
    pthread_mutex_lock(&g->mu);
    if (addr_key(sa, key)) {
        addr_entry_t **p = addr_slot(g, key);
        if (!*p) {
            *p = cti_calloc(1, sizeof **p);
            memcpy((*p)->key, key, 16);
        }
        c->addr = *p;
        c->addr->count++;
    }
    c->id = ++g->next_id;
    g->open++;
    set_state(g, c, ST_HEAD);
    /* connections being cut still hold their MHD slot until MHD closes them */
    if (g->open + g->upgraded >= g->shed_level)
        shed_one(g, c);
    pthread_mutex_unlock(&g->mu);
    return c;
}

void cti_guard_close(cti_guard_t *g, cti_guard_conn_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    list_remove(g, c);
    if (c->state == ST_CUT)
        g->cutting--;
    if (c->state == ST_UPGRADED) {
        g->upgraded--;
    } else {
        g->open--;
        addr_release(g, c);
    }
    pthread_mutex_unlock(&g->mu);
    free(c);
}

static void move(cti_guard_t *g, cti_guard_conn_t *c, int state)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    set_state(g, c, state);
    if (state == ST_BODY)
        c->body = 0;
    pthread_mutex_unlock(&g->mu);
}

void cti_guard_head_done(cti_guard_t *g, cti_guard_conn_t *c)
{
    move(g, c, ST_BODY);
}

void cti_guard_body(cti_guard_t *g, cti_guard_conn_t *c, size_t n)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    c->body += n;
    pthread_mutex_unlock(&g->mu);
}

void cti_guard_handling(cti_guard_t *g, cti_guard_conn_t *c)
{
    move(g, c, ST_HANDLER);
}

void cti_guard_idle(cti_guard_t *g, cti_guard_conn_t *c)
{
    move(g, c, ST_IDLE);
}

void cti_guard_upgraded(cti_guard_t *g, cti_guard_conn_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->mu);
    if (c->state != ST_CUT && c->state != ST_UPGRADED) {
        set_state(g, c, ST_UPGRADED);
        addr_release(g, c);
        g->open--;
        g->upgraded++;
    }
    pthread_mutex_unlock(&g->mu);
}

void cti_guard_stats(cti_guard_t *g, cti_guard_stats_t *out)
{
    pthread_mutex_lock(&g->mu);
    snapshot(g, out);
    pthread_mutex_unlock(&g->mu);
}
