/* conn.c — see conn.h: one socket's protocol. Never reads the database and
 * never blocks: log reads go to the replay worker, writes are non-blocking. */
#include "stream/conn.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "http/http.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <jansson.h>

#define IOV_BATCH 64 /* frames per sendmsg */

/* ---- filters ------------------------------------------------------------------------------- */

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

void cti_conn_set_filter(cti_ws_t *ws, const cti_ws_filter_t *f)
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

static bool wants(cti_ws_t *ws, cti_msg_t *m)
{
    const cti_ws_filter_t *f = ws->filter;
    if (!f)
        return true;
    cti_msg_parse(m);
    bool type_ok = !f->ntypes;
    for (int i = 0; i < f->ntypes && !type_ok; i++)
        type_ok = !strcmp(f->types[i], m->event);
    return type_ok && (!f->dialpad_user_id || f->dialpad_user_id == m->dialpad_user_id) &&
           (!f->crm_user_id[0] || !strcmp(f->crm_user_id, m->crm_user_id));
}

/* ---- queueing frames ------------------------------------------------------------------------ */

static bool over_limit(const cti_ws_t *ws, const cti_msg_t *m)
{
    return ws->out.count >= CTI_WS_QUEUE_MAX || ws->out.bytes + m->frame_len > CTI_WS_QUEUE_BYTES;
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
    /* the close goes out whatever the queue holds: it is what bounds it */
    cti_msgq_push(&ws->out, cti_msg_copy(CTI_WS_OP_CLOSE, p, n));
    ws->close_queued = true;
    ws->close_deadline_us = cti_mono_us() + 3 * (int64_t)ws->env->ping_interval_s * 1000000;
    cti_msgq_clear(&ws->held); /* nothing more goes out */
    ws->replaying = false;
}

/* Drops every queued frame not yet begun (a frame partly written must be finished). */
static void drop_unsent(cti_ws_t *ws)
{
    cti_msg_t *begun = ws->out_off ? cti_msgq_pop(&ws->out) : NULL;
    cti_msgq_clear(&ws->out);
    if (begun)
        cti_msgq_push(&ws->out, begun);
}

/* Over its limits: drop what it has not begun to receive and close with 4008,
 * naming the last event it will have whole; it resumes with ?since= that seq. */
static void overflow(cti_ws_t *ws)
{
    drop_unsent(ws);
    int64_t last = ws->out.count && cti_msgq_at(&ws->out, 0)->seq ? cti_msgq_at(&ws->out, 0)->seq
                                                                  : ws->written_seq;
    char reason[100];
    snprintf(reason, sizeof reason, "slow consumer; last seq sent %lld; reconnect with since",
             (long long)last);
    queue_close(ws, 4008, reason);
    CTI_METRIC_INC(ws_slow_closes);
    cti_log(CTI_LOG_INFO, NULL, "ws: slow consumer; closing with 4008",
            CTI_LS("app_id", ws->app_id), CTI_LI("last_seq", last));
}

/* Queues one frame (taking the reference); nothing goes after our close, and
 * a frame over the socket's limits closes it instead. */
static void push(cti_ws_t *ws, cti_msg_t *m)
{
    if (ws->close_queued) {
        cti_msg_unref(m);
        return;
    }
    if (over_limit(ws, m)) {
        cti_msg_unref(m);
        overflow(ws);
        return;
    }
    cti_msgq_push(&ws->out, m);
}

static void queue_text(cti_ws_t *ws, const char *text, size_t len)
{
    push(ws, cti_msg_copy(CTI_WS_OP_TEXT, text, len));
}

static void send_error(cti_ws_t *ws, const char *why)
{
    json_t *o = json_pack("{s:s, s:s}", "type", "error", "message", why);
    char *t = json_dumps(o, JSON_COMPACT);
    queue_text(ws, t, strlen(t));
    free(t);
    json_decref(o);
}

/* Queues an event unless the socket has it already or does not want it. */
static void deliver(cti_ws_t *ws, cti_msg_t *m)
{
    assert(m->seq > 0);
    if (m->seq <= ws->last_seq)
        return;
    ws->last_seq = m->seq;
    if (!ws->close_queued && wants(ws, m))
        push(ws, cti_msg_ref(m));
}

/* ---- the replay ------------------------------------------------------------------------------ */

static void submit(cti_ws_t *ws, bool start, int64_t from)
{
    cti_replay_job_t *job = cti_calloc(1, sizeof *job);
    job->ws = ws;
    job->gen = ws->replay_gen;
    job->start = start;
    job->from = from;
    snprintf(job->app_id, sizeof job->app_id, "%s", ws->app_id);
    ws->inflight++;
    cti_replayer_submit(ws->env->replayer, job);
}

static bool below_low_water(const cti_ws_t *ws)
{
    return ws->out.bytes < CTI_WS_LOW_WATER_BYTES && ws->out.count < CTI_WS_LOW_WATER_FRAMES;
}

/* Moves the replay on once the queue has drained: the next page of the log,
 * or (the log read up to them) the next page of held live events; with
 * neither left the socket is live. Returns whether it queued anything. */
static bool replay_step(cti_ws_t *ws)
{
    if (!ws->replaying || ws->inflight || ws->close_queued || !below_low_water(ws))
        return false;
    if (!ws->log_done) {
        cti_msg_t *first = ws->held.count ? cti_msgq_at(&ws->held, 0) : NULL;
        if (first && first->seq - 1 <= ws->last_seq) {
            ws->log_done = true; /* the held events take over from here */
        } else {
            submit(ws, false, ws->last_seq);
            return false;
        }
    }
    int before = ws->out.count;
    size_t moved = 0;
    for (int i = 0;
         i < CTI_REPLAY_PAGE_EVENTS && moved < CTI_REPLAY_PAGE_BYTES && !ws->close_queued; i++) {
        cti_msg_t *m = cti_msgq_pop(&ws->held);
        if (!m)
            break;
        moved += m->frame_len;
        deliver(ws, m);
        cti_msg_unref(m);
    }
    if (!ws->held.count)
        ws->replaying = false; /* caught up: fan-out writes to it directly from now on */
    return ws->out.count != before;
}

void cti_conn_page(cti_ws_t *ws, cti_replay_job_t *job)
{
    assert(cti_hub_owns(ws) && ws->state == WS_LIVE);
    if (job->gen != ws->replay_gen || ws->close_queued)
        return;         /* a later subscribe with since replaced it, or the socket is closing */
    if (job->rc != 0) { /* never a silent gap: say so, and where to resume */
        char text[160];
        snprintf(text, sizeof text, "the event log cannot be read now; reconnect with since=%lld",
                 (long long)ws->last_seq);
        send_error(ws, text);
        if (!ws->close_queued)
            queue_close(ws, 1011, text + strlen("the "));
        cti_conn_pump(ws);
        return;
    }
    if (job->start && job->plan == CTI_REPLAY_RESET) {
        char text[80];
        int n = snprintf(text, sizeof text, "{\"type\":\"reset\",\"seq\":%lld}",
                         (long long)job->newest);
        queue_text(ws, text, (size_t)n);
        ws->last_seq = job->newest;
    }
    for (int i = 0; i < job->n; i++)
        deliver(ws, job->msgs[i]);
    if (!job->more || (job->start && job->plan != CTI_REPLAY_FROM)) {
        /* the log had nothing more when it was read: what follows is held,
         * unless held events were dropped meanwhile (then the log again) */
        cti_msg_t *first = ws->held.count ? cti_msgq_at(&ws->held, 0) : NULL;
        if (!first || first->seq - 1 <= ws->last_seq)
            ws->log_done = true;
    }
    cti_conn_pump(ws);
}

/* A live event arrived while the socket replays (or waits for its upgrade). */
static void hold(cti_ws_t *ws, cti_msg_t *m)
{
    if (ws->close_queued)
        return;
    cti_msgq_push(&ws->held, cti_msg_ref(m));
    if (ws->held.count > CTI_WS_HELD_MAX || ws->held.bytes > CTI_WS_QUEUE_BYTES) {
        /* too many to hold: read them from the log when their turn comes */
        cti_msgq_clear(&ws->held);
        ws->log_done = false;
    }
}

/* What writing m whole to a live socket with nothing queued did: w bytes
 * written, or -errno. What was not written is queued (the socket then waits
 * for EPOLLOUT). */
static void sent_live(cti_ws_t *ws, cti_msg_t *m, ssize_t w)
{
    if (w == (ssize_t)m->frame_len) {
        ws->written_seq = m->seq;
        CTI_METRIC_INC(ws_messages_sent);
        return;
    }
    if (w < 0 && w != -EAGAIN && w != -EWOULDBLOCK && w != -EINTR) {
        ws->closing = true;
        return;
    }
    /* the rest when the socket has room, before whatever was queued behind
     * it while its batched write was out (nothing of which has been written) */
    cti_msgq_push_front(&ws->out, cti_msg_ref(m));
    ws->out_off = w > 0 ? (size_t)w : 0;
}

/* A live event for a live socket: written at once when nothing waits before it
 * (fan-out's common case: no queueing, no reference taken), else queued
 * behind what waits (the socket is then already waiting for EPOLLOUT). The
 * write is one of its hub thread's batch when there is one (hub.h): its
 * outcome then comes back through cti_conn_sent. */
static void deliver_live(cti_ws_t *ws, cti_msg_t *m)
{
    if (m->seq <= ws->last_seq)
        return;
    if (ws->out.count || ws->send_pending || ws->close_queued || !wants(ws, m)) {
        deliver(ws, m);
        return;
    }
    ws->last_seq = m->seq;
    if (cti_hub_batch_send(ws, m)) {
        ws->send_pending = true;
        return;
    }
    ssize_t w = send(ws->fd, m->frame, m->frame_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    sent_live(ws, m, w < 0 ? -errno : w);
}

void cti_conn_sent(cti_ws_t *ws, cti_msg_t *m, int res)
{
    assert(cti_hub_owns(ws) && ws->send_pending);
    ws->send_pending = false;
    sent_live(ws, m, res);
    if (!ws->closing)
        cti_conn_pump(ws);
}

void cti_conn_live(cti_ws_t *ws, cti_msg_t *m)
{
    assert(cti_hub_owns(ws));
    if (ws->state == WS_PENDING || ws->replaying) {
        hold(ws, m);
        if (ws->state == WS_LIVE && !ws->inflight && below_low_water(ws))
            cti_conn_pump(ws); /* nothing else would move the replay on */
    } else if (ws->state == WS_LIVE && !ws->closing) {
        deliver_live(ws, m);
        if (!ws->closing)
            cti_conn_pump(ws); /* nothing while a batched write is out */
    }
}

/* ---- what clients send ---------------------------------------------------------------------- */

/* Reads {"type":"subscribe", "since"?, "types"?, "dialpad_user_id"?, "crm_user_id"?}
 * into f and *since (-1 when absent); returns what is wrong with it, or NULL.
 * A filter given as null (or, for dialpad_user_id, 0 or "", which clients
 * have sent to clear it) is cleared; one of the wrong shape is refused (as
 * the same filters are in /ws's query), never read as "any". */
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
    if (types && !json_is_null(types) && !json_is_string(types) && !json_is_array(types))
        return "'types' must be a list of event names";
    if (types) {
        f->ntypes = 0;
        if (json_is_string(types) && !cti_ws_filter_types(f, json_string_value(types)))
            return "'types' has too many or too long names";
        json_array_foreach(types, i, t)
        {
            if (!json_is_string(t) || f->ntypes == CTI_WS_TYPES_MAX ||
                strlen(json_string_value(t)) >= sizeof f->types[0])
                return "'types' must be a list of event names";
            snprintf(f->types[f->ntypes++], sizeof f->types[0], "%s", json_string_value(t));
        }
    }
    if (uid) {
        const char *s = json_string_value(uid);
        if (json_is_null(uid) || (json_is_integer(uid) && json_integer_value(uid) == 0) ||
            (s && !s[0]))
            f->dialpad_user_id = 0; /* null, 0 or "": no user filter */
        else if (json_is_integer(uid) && json_integer_value(uid) > 0)
            f->dialpad_user_id = json_integer_value(uid);
        else if (!s || s[0] < '1' || s[0] > '9' || cti_parse_i64(s, &f->dialpad_user_id) != 0)
            return "'dialpad_user_id' must be a Dialpad id (a positive number)";
    }
    if (crm && !json_is_null(crm) &&
        (!json_is_string(crm) || json_string_length(crm) >= sizeof f->crm_user_id))
        return "'crm_user_id' must be a string of at most 255 bytes";
    if (crm)
        snprintf(f->crm_user_id, sizeof f->crm_user_id, "%s",
                 json_is_string(crm) ? json_string_value(crm) : "");
    return NULL;
}

/* Token bucket: CTI_WS_RESUB_BURST at once, then CTI_WS_RESUB_PER_S a second. */
static bool resub_allowed(cti_ws_t *ws)
{
    int64_t now = cti_mono_us(), cap = (int64_t)CTI_WS_RESUB_BURST * 1000000;
    ws->resub_credit_us += (now - ws->resub_at_us) * CTI_WS_RESUB_PER_S;
    ws->resub_at_us = now;
    if (ws->resub_credit_us > cap)
        ws->resub_credit_us = cap;
    if (ws->resub_credit_us < 1000000)
        return false;
    ws->resub_credit_us -= 1000000;
    return true;
}

/* subscribe with since: what is queued is dropped and the worker replays
 * from since (the window rule decides); live events are held meanwhile. */
static void resubscribe(cti_ws_t *ws, int64_t since)
{
    drop_unsent(ws);
    static const char ok[] = "{\"type\":\"subscribed\"}";
    queue_text(ws, ok, sizeof ok - 1);
    ws->replay_gen++; /* pages of an earlier replay are dropped when they come */
    ws->last_seq = since;
    ws->replaying = true;
    ws->log_done = false;
    submit(ws, true, since);
}

static void on_subscribe(cti_ws_t *ws, json_t *o)
{
    cti_ws_filter_t f = {0};
    if (ws->filter)
        f = *ws->filter;
    int64_t since;
    const char *why = parse_subscribe(o, &f, &since);
    if (!why && since >= 0 && !resub_allowed(ws))
        why = "too many subscribes with since: at most 5 at once, then 1 a second; "
              "this one was ignored";
    if (why) {
        send_error(ws, why);
        return;
    }
    cti_conn_set_filter(ws, &f);
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
        break;
    case CTI_WS_OP_BINARY:
        send_error(ws, "binary messages are not understood; send JSON text");
        break;
    case CTI_WS_OP_PING:
        push(ws, cti_msg_copy(CTI_WS_OP_PONG, data, len));
        break;
    case CTI_WS_OP_CLOSE: /* answer with the same code, then the connection ends */
        ws->peer_closed = true;
        if (!ws->close_queued)
            queue_close(ws, len >= 2 ? (unsigned)data[0] << 8 | data[1] : 0, "");
        return 1; /* nothing after a close is read */
    default:      /* pong */
        break;
    }
    return ws->close_queued ? 1 : 0; /* over its limits: the rest is not read */
}

/* Reads bytes from the client; a protocol error fails the connection. */
static void feed(cti_ws_t *ws, uint8_t *p, size_t n)
{
    if (ws->peer_closed || ws->close_queued)
        return; /* closing: what else it sends is not read */
    int rc = cti_wsr_feed(&ws->rx, p, n, CTI_WS_MAX_CLIENT_MSG, on_frame, ws);
    if (rc < 1000)
        return;
    cti_wsr_reset(&ws->rx);
    queue_close(ws, (unsigned)rc,
                rc == CTI_WS_CLOSE_TOO_BIG    ? "message too big (limit 64 KiB)"
                : rc == CTI_WS_CLOSE_BAD_DATA ? "text is not UTF-8"
                                              : "protocol error");
}

void cti_conn_read(cti_ws_t *ws, uint8_t *buf, size_t cap)
{
    assert(cti_hub_owns(ws));
    for (int i = 0; i < 4; i++) { /* then the others get a turn (epoll brings us back) */
        ssize_t r = recv(ws->fd, buf, cap, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            ws->closing = true; /* the peer is gone */
            return;
        }
        if (r < 0)
            return;
        ws->last_rx_us = cti_mono_us();
        feed(ws, buf, (size_t)r);
        if ((size_t)r < cap)
            return;
    }
}

/* ---- writing -------------------------------------------------------------------------------- */

static void update_epoll(cti_ws_t *ws)
{
    uint32_t want = EPOLLIN | (ws->out.count ? EPOLLOUT : 0);
    if (want == ws->epoll_events)
        return;
    struct epoll_event ev = {.events = want, .data.ptr = ws};
    epoll_ctl(ws->epfd, EPOLL_CTL_MOD, ws->fd, &ev);
    ws->epoll_events = want;
}

/* n bytes of the queue were written. */
static void written(cti_ws_t *ws, size_t n)
{
    while (n) {
        cti_msg_t *m = cti_msgq_at(&ws->out, 0);
        size_t rest = m->frame_len - ws->out_off;
        if (n < rest) {
            ws->out_off += n;
            return;
        }
        n -= rest;
        ws->out_off = 0;
        cti_msgq_pop(&ws->out);
        if (m->seq)
            ws->written_seq = m->seq;
        if (m->opcode == CTI_WS_OP_TEXT)
            CTI_METRIC_INC(ws_messages_sent);
        if (m->opcode == CTI_WS_OP_CLOSE) {
            ws->close_sent = true;
            if (ws->peer_closed)
                ws->closing = true; /* the close handshake is complete */
            else
                shutdown(ws->fd, SHUT_WR); /* then wait for the peer's close or EOF */
        }
        cti_msg_unref(m);
    }
}

/* Writes queued frames until the socket would block or nothing is left;
 * false when the socket is full (EPOLLOUT brings us back) or failed. */
static bool write_queue(cti_ws_t *ws)
{
    while (ws->out.count && !ws->closing) {
        struct iovec iov[IOV_BATCH];
        size_t total = 0;
        int n = 0;
        for (; n < ws->out.count && n < IOV_BATCH; n++) {
            cti_msg_t *m = cti_msgq_at(&ws->out, n);
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
            return false;
        }
        written(ws, (size_t)w);
        if ((size_t)w < total)
            return false; /* the socket is full */
    }
    return !ws->closing;
}

void cti_conn_pump(cti_ws_t *ws)
{
    assert(cti_hub_owns(ws));
    if (ws->state != WS_LIVE || ws->send_pending)
        return; /* a batched write first (cti_conn_sent pumps then) */
    while (write_queue(ws) && replay_step(ws))
        ; /* the queue drained and the replay added to it: write that too */
    if (!ws->closing)
        replay_step(ws); /* below low water with the socket full: ask for the next page now */
    if (!ws->closing)
        update_epoll(ws);
}

/* ---- the hub's calls --------------------------------------------------------------------- */

void cti_conn_start(cti_ws_t *ws)
{
    assert(cti_hub_owns(ws) && ws->state == WS_LIVE);
    ws->last_rx_us = ws->last_ping_us = ws->resub_at_us = cti_mono_us();
    ws->resub_credit_us = (int64_t)CTI_WS_RESUB_BURST * 1000000;
    char text[160];
    int n = snprintf(text, sizeof text, "{\"type\":\"hello\",\"app_id\":\"%s\",\"seq\":%lld}",
                     ws->app_id, (long long)ws->latest);
    queue_text(ws, text, (size_t)n);
    if (ws->plan == CTI_REPLAY_RESET) { /* since was too old: start from latest, and say so */
        n = snprintf(text, sizeof text, "{\"type\":\"reset\",\"seq\":%lld}", (long long)ws->latest);
        queue_text(ws, text, (size_t)n);
    }
    ws->last_seq = ws->plan == CTI_REPLAY_RESET ? ws->latest : ws->start_seq;
    /* what was held before the upgrade goes out first, or the log when too much was */
    ws->log_done = ws->log_done && ws->plan != CTI_REPLAY_FROM;
    ws->replaying = true;
    if (ws->extra) { /* what the client sent right behind its handshake */
        feed(ws, ws->extra, ws->extra_len);
        free(ws->extra);
        ws->extra = NULL;
    }
    cti_conn_pump(ws);
}

void cti_conn_ping(cti_ws_t *ws, int64_t now)
{
    assert(cti_hub_owns(ws));
    push(ws, cti_msg_copy(CTI_WS_OP_PING, NULL, 0));
    ws->last_ping_us = now;
    if (!ws->closing)
        update_epoll(ws); /* written when the loop next comes round */
}

void cti_conn_revoke(cti_ws_t *ws, int code, const char *why)
{
    assert(cti_hub_owns(ws));
    if (ws->close_queued)
        return;
    drop_unsent(ws);
    queue_close(ws, (unsigned)code, why);
    /* a client that does not read its close is cut soon, not after three pings */
    int64_t soon = cti_mono_us() + 2000000;
    if (ws->close_deadline_us > soon)
        ws->close_deadline_us = soon;
    cti_log(CTI_LOG_INFO, NULL, "ws: credential no longer valid; closing",
            CTI_LS("app_id", ws->app_id), CTI_LS("key_id", ws->key_id), CTI_LI("code", code));
    cti_conn_pump(ws);
}

void cti_conn_release(cti_ws_t *ws)
{
    cti_wsr_reset(&ws->rx);
    cti_msgq_clear(&ws->held);
    cti_msgq_clear(&ws->out);
    free(ws->extra);
    ws->extra = NULL;
    free(ws->filter);
    ws->filter = NULL;
}
