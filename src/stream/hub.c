/*
 * hub.c — see hub.h. The hub is a set of shards, one thread each (one per
 * core: fan-out is bound by send(), and two threads send to twice as many
 * sockets). A connection belongs to one shard, chosen round-robin when it
 * registers; a published event goes to every shard, which fans it out to its
 * own sockets. Each shard has one epoll set and a command queue woken by an
 * eventfd; its lock guards the command queue and its per-app connection lists
 * (registering threads add to them; the shard's thread fans out over them).
 */
#include "stream/hub.h"
#include "core/common.h"
#include "core/log.h"
#include "core/util.h"
#include "http/http.h"
#include "repo/events.h"
#include "stream/wsframe.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <jansson.h>

#define APP_BUCKETS 256
#define HANDSHAKE_TIMEOUT_US 10000000
#define MAX_CLIENT_MSG 65536
#define MAX_SHARDS 16

/* ---- messages: framed once, shared by every socket ------------------------------- */

#define HEADROOM CTI_WSF_HEADER_MAX /* bytes before a payload, for its frame header */

typedef struct {
    atomic_int refs;
    int64_t seq;     /* 0 for the hub's own messages (hello, pong, close, ...) */
    int opcode;
    char app_id[37];
    uint8_t *buf;              /* HEADROOM, then the payload */
    const uint8_t *frame;      /* header + payload: the bytes every socket is sent */
    size_t frame_len;
    const char *data;          /* the payload */
    size_t len;
    atomic_int parsed; /* 0, 1 while a hub thread fills the filter fields below, 2 once filled */
    char event[40];
    int64_t dialpad_user_id;
    char crm_user_id[256];
} msg_t;

/* buf: HEADROOM bytes, then len bytes of payload; the message owns it. */
static msg_t *msg_new(const char *app_id, int64_t seq, int opcode, uint8_t *buf, size_t len)
{
    msg_t *m = cti_calloc(1, sizeof *m);
    atomic_init(&m->refs, 1);
    atomic_init(&m->parsed, 0);
    m->seq = seq;
    m->opcode = opcode;
    snprintf(m->app_id, sizeof m->app_id, "%s", app_id);
    uint8_t hdr[CTI_WSF_HEADER_MAX];
    size_t hlen = cti_wsf_header(hdr, opcode, len);
    memcpy(buf + HEADROOM - hlen, hdr, hlen);
    m->buf = buf;
    m->frame = buf + HEADROOM - hlen;
    m->frame_len = hlen + len;
    m->data = (const char *)buf + HEADROOM;
    m->len = len;
    return m;
}

/* One of the hub's own frames (text or control) for one socket. */
static msg_t *msg_copy(int opcode, const void *payload, size_t len)
{
    uint8_t *buf = cti_malloc(HEADROOM + len);
    if (len)
        memcpy(buf + HEADROOM, payload, len);
    return msg_new("", 0, opcode, buf, len);
}

static msg_t *msg_ref(msg_t *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

static void msg_unref(msg_t *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        free(m->buf);
        free(m);
    }
}

/* {"type":"event", ...the event object's members} */
static msg_t *event_msg(const char *app_id, int64_t seq, const char *body)
{
    size_t blen = strlen(body);
    uint8_t *buf = cti_malloc(HEADROOM + blen + 16);
    int n = snprintf((char *)buf + HEADROOM, blen + 16, "{\"type\":\"event\",%s", body + 1);
    return msg_new(app_id, seq, CTI_WS_OP_TEXT, buf, (size_t)n);
}

/* Reads the fields filters look at, once per message. */
static void msg_parse(msg_t *m)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&m->parsed, &expected, 1)) {
        while (atomic_load(&m->parsed) != 2) /* another hub thread is filling them */
            sched_yield();
        return;
    }
    json_t *o = json_loadb(m->data, m->len, 0, NULL);
    const char *ev = json_string_value(json_object_get(o, "event"));
    snprintf(m->event, sizeof m->event, "%s", ev ? ev : "");
    json_t *who = json_object_get(o, "call");
    if (!json_is_object(who))
        who = json_object_get(o, "message");
    const char *uid = json_string_value(json_object_get(who, "dialpad_user_id"));
    if (!uid) /* agent.status: the user is the event's target */
        uid = json_string_value(json_object_get(json_object_get(json_object_get(o, "data"),
                                                                "target"), "id"));
    const char *crm = json_string_value(json_object_get(who, "crm_user_id"));
    if (uid)
        cti_parse_i64(uid, &m->dialpad_user_id);
    snprintf(m->crm_user_id, sizeof m->crm_user_id, "%s", crm ? crm : "");
    json_decref(o);
    atomic_store(&m->parsed, 2);
}

/* ---- connections ------------------------------------------------------------------ */

enum { WS_PENDING, WS_LIVE, WS_CLOSED };

typedef struct {
    msg_t **items;
    int head, count, cap;
} msgq_t;

typedef struct shard shard_t;

struct cti_ws {
    cti_hub_t *hub;
    shard_t *sh; /* the shard (thread) that owns it */
    char app_id[37];
    cti_ws_filter_t *filter; /* NULL: every event (most sockets: no memory for filters) */
    int state;
    int fd;
    void *urh;
    cti_wsr_t rx;    /* the client's frames */
    uint8_t *extra;  /* bytes MHD read past the handshake, read at attach */
    size_t extra_len;
    msgq_t replay;   /* filled by the registering thread before attach */
    msgq_t early;    /* live events that arrived before attach */
    msgq_t out;      /* frames to write (events bounded by CTI_WS_QUEUE_MAX) */
    size_t out_off;  /* bytes of out's first frame already written */
    int64_t latest;  /* hello's seq */
    bool reset;
    int64_t last_seq;    /* newest seq queued for this socket */
    int64_t written_seq; /* newest seq whose frame has been written whole */
    int64_t created_us, last_rx_us, last_ping_us;
    int replay_credit;  /* replayed events still queued: not a slow consumer's backlog */
    bool close_queued;  /* our close frame is queued: nothing more goes out */
    bool close_sent;    /* ... and written (then the write side is shut) */
    bool peer_closed;   /* the client's close frame arrived */
    int64_t close_deadline_us; /* a peer that never takes our close is cut then */
    bool closing;       /* to be closed now */
    uint32_t epoll_events;
    cti_ws_t *prev, *next; /* in its app's list, under its shard's lock */
};

typedef struct app_entry {
    char app_id[37];
    cti_ws_t *conns;
    int count;
    struct app_entry *next;
} app_entry_t;

typedef struct cmd {
    enum { CMD_PUBLISH, CMD_ATTACH, CMD_ABANDON } type;
    msg_t *msg;
    cti_ws_t *ws;
    struct cmd *next;
} cmd_t;

struct shard {
    cti_hub_t *hub;
    pthread_t thread;
    int epfd, evfd;
    pthread_mutex_t lock; /* protects cmds, apps, total, stopping */
    cmd_t *cmds, *cmds_tail;
    app_entry_t *apps[APP_BUCKETS];
    int total;
    bool stopping;
    uint8_t rbuf[16384]; /* what its sockets send, read here and parsed at once */
    cti_ws_t *graveyard; /* closed this round (its thread only) */
};

struct cti_hub {
    cti_hub_options_t opts;
    shard_t shards[MAX_SHARDS];
    int nshards;
    unsigned next_shard;      /* round-robin, under reg_lock */
    pthread_mutex_t reg_lock; /* one registration at a time: limits count every shard */
};

static void q_push(msgq_t *q, msg_t *m)
{
    if (q->count == q->cap) {
        int cap = q->cap ? 2 * q->cap : 16;
        msg_t **items = cti_malloc((size_t)cap * sizeof *items);
        for (int i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
    q->items[(q->head + q->count++) % q->cap] = m;
}

static msg_t *q_pop(msgq_t *q)
{
    if (!q->count)
        return NULL;
    msg_t *m = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    if (--q->count == 0) { /* an idle socket holds no queue */
        free(q->items);
        memset(q, 0, sizeof *q);
    }
    return m;
}

static msg_t *q_at(const msgq_t *q, int i)
{
    return q->items[(q->head + i) % q->cap];
}

static void q_clear(msgq_t *q)
{
    msg_t *m;
    while ((m = q_pop(q)))
        msg_unref(m);
    free(q->items);
    memset(q, 0, sizeof *q);
}

bool cti_ws_filter_types(cti_ws_filter_t *f, const char *csv)
{
    f->ntypes = 0;
    char *copy = cti_strdup(csv), *save = NULL;
    bool ok = true;
    for (char *t = strtok_r(copy, ",", &save); t && ok; t = strtok_r(NULL, ",", &save)) {
        ok = f->ntypes < CTI_WS_TYPES_MAX && strlen(t) < sizeof f->types[0];
        if (ok)
            snprintf(f->types[f->ntypes++], sizeof f->types[0], "%s", t);
    }
    free(copy);
    return ok;
}

/* Keeps a copy of f, or nothing when it lets every event through. */
static void set_filter(cti_ws_t *ws, const cti_ws_filter_t *f)
{
    if (!f->ntypes && !f->dialpad_user_id && !f->crm_user_id[0]) {
        free(ws->filter);
        ws->filter = NULL;
        return;
    }
    if (!ws->filter)
        ws->filter = cti_malloc(sizeof *ws->filter);
    *ws->filter = *f;
}

static bool wants(cti_ws_t *ws, msg_t *m)
{
    const cti_ws_filter_t *f = ws->filter;
    if (!f)
        return true;
    msg_parse(m);
    bool type_ok = !f->ntypes;
    for (int i = 0; i < f->ntypes && !type_ok; i++)
        type_ok = !strcmp(f->types[i], m->event);
    return type_ok && (!f->dialpad_user_id || f->dialpad_user_id == m->dialpad_user_id) &&
           (!f->crm_user_id[0] || !strcmp(f->crm_user_id, m->crm_user_id));
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

/* ---- queueing frames ------------------------------------------------------------------------ */

static void deliver(cti_ws_t *ws, msg_t *m);

/* Queues one frame (taking the reference); nothing goes after our close. */
static void push(cti_ws_t *ws, msg_t *m)
{
    if (ws->close_queued)
        msg_unref(m);
    else
        q_push(&ws->out, m);
}

static void queue_text(cti_ws_t *ws, const char *text, size_t len)
{
    push(ws, msg_copy(CTI_WS_OP_TEXT, text, len));
}

static void send_error(cti_ws_t *ws, const char *why)
{
    json_t *o = json_pack("{s:s, s:s}", "type", "error", "message", why);
    char *t = json_dumps(o, JSON_COMPACT);
    queue_text(ws, t, strlen(t));
    free(t);
    json_decref(o);
}

/* Queues our close frame (code 0: none, echoing a close that had none); the
 * connection ends once it is written and the peer has closed too. */
static void queue_close(cti_ws_t *ws, unsigned code, const char *reason)
{
    uint8_t p[125];
    size_t n = 0;
    if (code) {
        size_t rlen = strlen(reason) < sizeof p - 2 ? strlen(reason) : sizeof p - 2;
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        memcpy(p + 2, reason, rlen);
        n = 2 + rlen;
    }
    push(ws, msg_copy(CTI_WS_OP_CLOSE, p, n));
    ws->close_queued = true;
    ws->close_deadline_us = cti_mono_us() + 3 * (int64_t)ws->hub->opts.ping_interval_s * 1000000;
}

/* Drops every queued frame not yet begun (a frame partly written must be finished). */
static void drop_unsent(cti_ws_t *ws)
{
    msg_t *begun = ws->out_off ? q_pop(&ws->out) : NULL;
    q_clear(&ws->out);
    if (begun)
        q_push(&ws->out, begun);
}

/* Too slow: drop what it has not begun to receive and close with 4008, naming
 * the last event it will have whole; it resumes with ?since= that seq. */
static void overflow(cti_ws_t *ws)
{
    drop_unsent(ws);
    int64_t last = ws->out.count && q_at(&ws->out, 0)->seq ? q_at(&ws->out, 0)->seq
                                                              : ws->written_seq;
    char reason[100];
    snprintf(reason, sizeof reason, "slow consumer; last seq sent %lld; reconnect with since",
             (long long)last);
    queue_close(ws, 4008, reason);
    cti_log(CTI_LOG_INFO, NULL, "ws: slow consumer; closing with 4008", CTI_LS("app_id", ws->app_id),
            CTI_LI("last_seq", last));
}

/* Whether a live socket gets this event (skipping what it already has); one
 * too far behind is closed with 4008 instead. */
static bool admit(cti_ws_t *ws, msg_t *m)
{
    if (m->seq && m->seq <= ws->last_seq)
        return false;
    if (m->seq)
        ws->last_seq = m->seq;
    if (ws->close_queued || !wants(ws, m))
        return false;
    if (ws->out.count >= CTI_WS_QUEUE_MAX + ws->replay_credit) {
        overflow(ws);
        return false;
    }
    return true;
}

/* Queues one event for a live socket. */
static void deliver(cti_ws_t *ws, msg_t *m)
{
    if (admit(ws, m))
        q_push(&ws->out, msg_ref(m));
}

/* ---- what clients send ---------------------------------------------------------------------- */

/* Reads {"type":"subscribe", "since"?, "types"?, "dialpad_user_id"?, "crm_user_id"?}
 * into f and *since (-1 when absent); returns what is wrong with it, or NULL. */
static const char *parse_subscribe(json_t *o, cti_ws_filter_t *f, int64_t *since)
{
    json_t *types = json_object_get(o, "types"), *uid = json_object_get(o, "dialpad_user_id");
    json_t *crm = json_object_get(o, "crm_user_id"), *t, *sv = json_object_get(o, "since");
    size_t i;
    *since = -1;
    if (sv && (!json_is_integer(sv) || json_integer_value(sv) < 0))
        return "'since' must be a seq: a whole number >= 0";
    if (sv)
        *since = json_integer_value(sv);
    if (types) {
        f->ntypes = 0;
        if (json_is_string(types) && !cti_ws_filter_types(f, json_string_value(types)))
            return "'types' has too many or too long names";
        json_array_foreach(types, i, t) {
            if (!json_is_string(t) || f->ntypes == CTI_WS_TYPES_MAX ||
                strlen(json_string_value(t)) >= sizeof f->types[0])
                return "'types' must be a list of event names";
            snprintf(f->types[f->ntypes++], sizeof f->types[0], "%s", json_string_value(t));
        }
    }
    if (uid) {
        const char *s = json_string_value(uid);
        f->dialpad_user_id = json_is_integer(uid) ? json_integer_value(uid) : 0;
        if (s && cti_parse_i64(s, &f->dialpad_user_id) != 0)
            return "'dialpad_user_id' must be a Dialpad id";
    }
    if (crm)
        snprintf(f->crm_user_id, sizeof f->crm_user_id, "%s",
                 json_is_string(crm) ? json_string_value(crm) : "");
    return NULL;
}

static int replay_row(int64_t seq, const char *body, void *ud)
{
    cti_ws_t *ws = ud;
    msg_t *m = event_msg(ws->app_id, seq, body);
    deliver(ws, m);
    msg_unref(m);
    return 0;
}

/* subscribe with since: what is queued is dropped, then every event after
 * since is read from the log here (rare, and bounded like a connect-time replay). */
static void resubscribe(cti_ws_t *ws, int64_t since)
{
    cti_hub_t *hub = ws->hub;
    int64_t oldest = 0, newest = 0;
    drop_unsent(ws);
    cti_db_t *db = cti_store_db(hub->opts.store);
    if (cti_eventlog_bounds(db, ws->app_id, &oldest, &newest) != 0) {
        send_error(ws, "the event log cannot be read now; retry");
        return;
    }
    static const char ok[] = "{\"type\":\"subscribed\"}";
    queue_text(ws, ok, sizeof ok - 1);
    if ((oldest && oldest > since + 1) || newest - since > CTI_WS_REPLAY_MAX || since > newest) {
        char text[80];
        int n = snprintf(text, sizeof text, "{\"type\":\"reset\",\"seq\":%lld}", (long long)newest);
        queue_text(ws, text, (size_t)n);
        ws->last_seq = newest;
        return;
    }
    ws->last_seq = since;
    int before = ws->out.count;
    ws->replay_credit = CTI_WS_REPLAY_MAX; /* while replaying; exact once it is queued */
    for (int64_t from = since; from < newest; from = ws->last_seq > from ? ws->last_seq : newest)
        if (cti_eventlog_since(db, ws->app_id, from, 500, replay_row, ws) < 0)
            break;
    ws->replay_credit = ws->out.count - before;
}

static void on_subscribe(cti_ws_t *ws, json_t *o)
{
    cti_ws_filter_t f = {0};
    if (ws->filter)
        f = *ws->filter;
    int64_t since;
    const char *why = parse_subscribe(o, &f, &since);
    if (why) {
        send_error(ws, why);
        return;
    }
    set_filter(ws, &f);
    if (since >= 0) {
        resubscribe(ws, since);
        return;
    }
    static const char ok[] = "{\"type\":\"subscribed\"}";
    queue_text(ws, ok, sizeof ok - 1);
}

static void on_text(cti_ws_t *ws, const uint8_t *text, size_t len)
{
    json_t *o = json_loadb((const char *)text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    if (type && !strcmp(type, "ping")) {
        static const char pong[] = "{\"type\":\"pong\"}";
        queue_text(ws, pong, sizeof pong - 1);
    } else if (type && !strcmp(type, "subscribe")) {
        on_subscribe(ws, o);
    } else {
        send_error(ws, "expected {\"type\":\"ping\"} or {\"type\":\"subscribe\", ...}");
    }
    json_decref(o);
}

/* cti_wsr_fn: one message or control frame from the client. */
static int on_frame(int opcode, const uint8_t *data, size_t len, void *ud)
{
    cti_ws_t *ws = ud;
    switch (opcode) {
    case CTI_WS_OP_TEXT:
        on_text(ws, data, len);
        return 0;
    case CTI_WS_OP_BINARY:
        send_error(ws, "binary messages are not understood; send JSON text");
        return 0;
    case CTI_WS_OP_PING:
        push(ws, msg_copy(CTI_WS_OP_PONG, data, len));
        return 0;
    case CTI_WS_OP_CLOSE: /* answer with the same code, then the connection ends */
        ws->peer_closed = true; /* (feed reads nothing once our own close is queued) */
        queue_close(ws, len >= 2 ? (unsigned)data[0] << 8 | data[1] : 0, "");
        return 1; /* nothing after a close is read */
    default: /* pong */
        return 0;
    }
}

/* Reads bytes from the client; a protocol error fails the connection. */
static void feed(cti_ws_t *ws, uint8_t *p, size_t n)
{
    if (ws->peer_closed || ws->close_queued)
        return; /* closing: what else it sends is not read */
    int rc = cti_wsr_feed(&ws->rx, p, n, MAX_CLIENT_MSG, on_frame, ws);
    if (rc < 1000)
        return;
    cti_wsr_reset(&ws->rx);
    queue_close(ws, (unsigned)rc, rc == CTI_WS_CLOSE_TOO_BIG ? "message too big (limit 64 KiB)"
                                  : rc == CTI_WS_CLOSE_BAD_DATA ? "text is not UTF-8"
                                                                : "protocol error");
}

static void read_some(shard_t *sh, cti_ws_t *ws)
{
    for (int i = 0; i < 4; i++) { /* then the others get a turn (epoll brings us back) */
        ssize_t r = recv(ws->fd, sh->rbuf, sizeof sh->rbuf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            ws->closing = true; /* the peer is gone */
            return;
        }
        if (r < 0)
            return;
        ws->last_rx_us = cti_mono_us();
        feed(ws, sh->rbuf, (size_t)r);
        if ((size_t)r < sizeof sh->rbuf)
            return;
    }
}

/* ---- writing -------------------------------------------------------------------------------- */

#define IOV_BATCH 64 /* frames per sendmsg */

static void update_epoll(shard_t *sh, cti_ws_t *ws)
{
    uint32_t want = EPOLLIN | (ws->out.count ? EPOLLOUT : 0);
    if (want == ws->epoll_events)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = ws};
    epoll_ctl(sh->epfd, EPOLL_CTL_MOD, ws->fd, &ev);
    ws->epoll_events = want;
}

/* n bytes of the queue were written. */
static void written(cti_ws_t *ws, size_t n)
{
    while (n) {
        msg_t *m = q_at(&ws->out, 0);
        size_t rest = m->frame_len - ws->out_off;
        if (n < rest) {
            ws->out_off += n;
            return;
        }
        n -= rest;
        ws->out_off = 0;
        q_pop(&ws->out);
        if (m->seq) {
            ws->written_seq = m->seq;
            if (ws->replay_credit > 0)
                ws->replay_credit--;
        }
        if (m->opcode == CTI_WS_OP_CLOSE) {
            ws->close_sent = true;
            if (ws->peer_closed)
                ws->closing = true; /* the close handshake is complete */
            else
                shutdown(ws->fd, SHUT_WR); /* then wait for the peer's close or EOF */
        }
        msg_unref(m);
    }
}

/* Writes queued frames, several per system call, until the socket would
 * block (EPOLLOUT brings us back) or nothing is left. */
static void pump(shard_t *sh, cti_ws_t *ws)
{
    while (ws->out.count && !ws->closing) {
        struct iovec iov[IOV_BATCH];
        size_t total = 0;
        int n = 0;
        for (; n < ws->out.count && n < IOV_BATCH; n++) {
            msg_t *m = q_at(&ws->out, n);
            size_t skip = n ? 0 : ws->out_off;
            iov[n].iov_base = (void *)(m->frame + skip);
            iov[n].iov_len = m->frame_len - skip;
            total += iov[n].iov_len;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(ws->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                ws->closing = true;
            break;
        }
        written(ws, (size_t)w);
        if ((size_t)w < total)
            break; /* the socket is full */
    }
    if (!ws->closing)
        update_epoll(sh, ws);
}

/* ---- connection life -------------------------------------------------------------------------- */

int cti_hub_register(cti_hub_t *hub, const char *app_id, const cti_ws_filter_t *f, cti_ws_t **out)
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
    snprintf(ws->app_id, sizeof ws->app_id, "%s", app_id);
    set_filter(ws, f);
    ws->fd = -1;
    ws->state = WS_PENDING;
    ws->created_us = cti_mono_us();
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

void cti_ws_add_replay(cti_ws_t *ws, int64_t seq, const char *body)
{
    q_push(&ws->replay, event_msg(ws->app_id, seq, body));
}

void cti_ws_set_start(cti_ws_t *ws, int64_t latest, int64_t since, bool reset)
{
    ws->latest = latest;
    ws->reset = reset;
    ws->last_seq = reset ? latest : since;
}

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
    msg_t **msgs = cti_calloc((size_t)n, sizeof *msgs); /* framed once, shared by every shard */
    for (int i = 0; i < hub->nshards; i++) {
        shard_t *sh = &hub->shards[i];
        cmd_t *first = NULL, *last = NULL;
        const char *app = NULL; /* the app last looked up (a batch is mostly one app) */
        bool want = false;
        pthread_mutex_lock(&sh->lock);
        for (int j = 0; j < n; j++) {
            if (!app || strcmp(app, events[j].app_id))
                want = shard_has(sh, app = events[j].app_id);
            if (!want)
                continue;
            if (!msgs[j])
                msgs[j] = event_msg(events[j].app_id, events[j].seq, events[j].body);
            cmd_t *c = cti_calloc(1, sizeof *c);
            c->type = CMD_PUBLISH;
            c->msg = msg_ref(msgs[j]);
            if (last)
                last->next = c;
            else
                first = c;
            last = c;
        }
        pthread_mutex_unlock(&sh->lock);
        if (first)
            post_chain(sh, first, last);
    }
    for (int j = 0; j < n; j++)
        if (msgs[j])
            msg_unref(msgs[j]);
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

/* Ends a connection (its shard's thread; it is already out of its app's list). */
static void destroy(shard_t *sh, cti_ws_t *ws)
{
    if (ws->fd >= 0) {
        epoll_ctl(sh->epfd, EPOLL_CTL_DEL, ws->fd, NULL); /* MHD closes the fd later */
        cti_http_upgrade_close(ws->urh);
    }
    cti_wsr_reset(&ws->rx);
    q_clear(&ws->replay);
    q_clear(&ws->early);
    q_clear(&ws->out);
    free(ws->extra);
    free(ws->filter);
    /* freed after this round of epoll events, which may still name it */
    ws->next = sh->graveyard;
    sh->graveyard = ws;
}

static void bury(shard_t *sh)
{
    while (sh->graveyard) {
        cti_ws_t *next = sh->graveyard->next;
        free(sh->graveyard);
        sh->graveyard = next;
    }
}

static void close_ws(shard_t *sh, cti_ws_t *ws)
{
    pthread_mutex_lock(&sh->lock);
    unlink_ws(sh, ws);
    ws->state = WS_CLOSED;
    pthread_mutex_unlock(&sh->lock);
    destroy(sh, ws);
}

static void start_live(shard_t *sh, cti_ws_t *ws)
{
    cti_hub_t *hub = sh->hub;
    int one = 1; /* events are written whole: no need to wait to fill a segment */
    setsockopt(ws->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (hub->opts.sndbuf > 0)
        setsockopt(ws->fd, SOL_SOCKET, SO_SNDBUF, &hub->opts.sndbuf, sizeof hub->opts.sndbuf);
    ws->last_rx_us = ws->last_ping_us = cti_mono_us();
    char text[160];
    int n = snprintf(text, sizeof text, "{\"type\":\"hello\",\"app_id\":\"%s\",\"seq\":%lld}",
                     ws->app_id, (long long)ws->latest);
    queue_text(ws, text, (size_t)n);
    ws->replay_credit = ws->replay.count; /* the replay is not a backlog */
    if (ws->reset) { /* since was too old: start from latest, and say so */
        n = snprintf(text, sizeof text, "{\"type\":\"reset\",\"seq\":%lld}",
                     (long long)ws->latest);
        queue_text(ws, text, (size_t)n);
    }
    msg_t *m;
    while ((m = q_pop(&ws->replay))) {
        deliver(ws, m);
        msg_unref(m);
    }
    while ((m = q_pop(&ws->early))) { /* early is only touched by this thread */
        deliver(ws, m); /* skips seqs the replay already had */
        msg_unref(m);
    }
    pthread_mutex_lock(&sh->lock); /* tick and registrations read the lists under it */
    ws->state = WS_LIVE;
    pthread_mutex_unlock(&sh->lock);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ws};
    ws->epoll_events = ev.events;
    epoll_ctl(sh->epfd, EPOLL_CTL_ADD, ws->fd, &ev);
    if (ws->extra) { /* what the client sent right behind its handshake */
        feed(ws, ws->extra, ws->extra_len);
        free(ws->extra);
        ws->extra = NULL;
    }
    pump(sh, ws);
    if (ws->closing)
        close_ws(sh, ws);
}

/* A live event for a socket: written at once when nothing waits before it
 * (fan-out's common case: no queueing, no reference taken), else queued
 * behind what waits (the socket is then already waiting for EPOLLOUT). */
static void deliver_live(shard_t *sh, cti_ws_t *ws, msg_t *m)
{
    if (!admit(ws, m))
        return;
    if (ws->out.count) {
        q_push(&ws->out, msg_ref(m));
        return;
    }
    ssize_t w = send(ws->fd, m->frame, m->frame_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w == (ssize_t)m->frame_len) {
        ws->written_seq = m->seq;
        return;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ws->closing = true;
        return;
    }
    q_push(&ws->out, msg_ref(m)); /* the rest when the socket has room */
    ws->out_off = w > 0 ? (size_t)w : 0;
}

static void fan_out(shard_t *sh, msg_t *m)
{
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
        if (ws->state == WS_PENDING) {
            q_push(&ws->early, msg_ref(m));
        } else if (ws->state == WS_LIVE && !ws->closing) {
            deliver_live(sh, ws, m);
            if (ws->closing)
                close_ws(sh, ws);
            else
                update_epoll(sh, ws);
        }
    }
}

static void run_commands(shard_t *sh)
{
    uint64_t n;
    ssize_t r = read(sh->evfd, &n, sizeof n);
    (void)r;
    pthread_mutex_lock(&sh->lock);
    cmd_t *c = sh->cmds;
    sh->cmds = sh->cmds_tail = NULL;
    pthread_mutex_unlock(&sh->lock);
    while (c) {
        cmd_t *next = c->next;
        if (c->type == CMD_PUBLISH) {
            fan_out(sh, c->msg);
            msg_unref(c->msg);
        } else if (c->type == CMD_ATTACH) {
            start_live(sh, c->ws);
        } else {
            close_ws(sh, c->ws);
        }
        free(c);
        c = next;
    }
}

/* Pings, and drops peers silent too long, closes never completed and
 * handshakes that never finished. */
static void tick(shard_t *sh)
{
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
                    (ws->close_queued && now > ws->close_deadline_us))
                    dead[ndead++] = ws;
                else if (ws->state == WS_LIVE && !ws->close_queued &&
                         now - ws->last_ping_us >= every) {
                    push(ws, msg_copy(CTI_WS_OP_PING, NULL, 0));
                    ws->last_ping_us = now;
                    update_epoll(sh, ws); /* written when the loop next comes round */
                }
            }
    pthread_mutex_unlock(&sh->lock);
    for (int i = 0; i < ndead; i++)
        close_ws(sh, dead[i]);
}

static void *shard_main(void *arg)
{
    shard_t *sh = arg;
    struct epoll_event evs[256];
    int64_t last_tick = cti_mono_us();
    for (;;) {
        int n = epoll_wait(sh->epfd, evs, 256, 1000);
        for (int i = 0; i < n; i++) {
            cti_ws_t *ws = evs[i].data.ptr;
            if (!ws) {
                run_commands(sh);
                continue;
            }
            if (ws->state == WS_CLOSED)
                continue; /* closed earlier in this round */
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                read_some(sh, ws);
            if (!ws->closing)
                pump(sh, ws);
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
    return NULL;
}

cti_hub_t *cti_hub_start(const cti_hub_options_t *opts)
{
    cti_hub_t *hub = cti_calloc(1, sizeof *hub);
    hub->opts = *opts;
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
        shard_t *sh = &hub->shards[i];
        pthread_join(sh->thread, NULL);
        run_commands(sh); /* attaches/abandons that raced with the stop */
        for (int b = 0; b < APP_BUCKETS; b++) {
            app_entry_t *a = sh->apps[b];
            while (a) {
                while (a->conns)
                    close_ws(sh, a->conns);
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
    pthread_mutex_destroy(&hub->reg_lock);
    free(hub);
}
