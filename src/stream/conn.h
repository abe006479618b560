/*
 * conn.h — one WebSocket's protocol, inside the hub (not for other modules):
 * its filters, the client's frames (subscribe, ping, close), its queue and
 * the writes that empty it, its replay (paged from the log by the replay
 * worker) and how it closes.
 *
 * A socket's stream has two phases. While it is pending (registered, not yet
 * upgraded) or replaying, live events of its app are held (`held`, bounded:
 * past CTI_WS_HELD_MAX frames or CTI_WS_QUEUE_BYTES the held events are
 * dropped and read from the log instead). Replaying: a page of the log is
 * asked for when the queue has drained below the low-water mark; once a page
 * comes back short, or the log has been read up to the first held event,
 * the held events follow, a page at a time, dropped by seq when the replay
 * already had them. Then the socket is live: fan-out writes each event
 * straight to it. So the seam has no gap and no duplicate, and a socket
 * holds about a page of replay whatever since it asked for.
 *
 * Every frame queued for a socket counts toward its limits (CTI_WS_QUEUE_MAX
 * frames, CTI_WS_QUEUE_BYTES bytes): an event over them closes it with 4008
 * naming the last seq it will have whole, and so does anything else (a pong,
 * an error reply) — a client that floods pings without reading is a slow
 * consumer too.
 *
 * Threads: everything here runs on the socket's hub thread (hub.c asserts
 * it), except where a function says otherwise.
 */
#ifndef CTI_STREAM_CONN_H
#define CTI_STREAM_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "stream/hub.h"
#include "stream/msgq.h"
#include "repo/tenants.h"
#include "stream/replay.h"
#include "stream/wsframe.h"

#define CTI_WS_HELD_MAX         CTI_WS_QUEUE_MAX /* live events held during a replay */
#define CTI_WS_LOW_WATER_BYTES  (64 * 1024)      /* a replay's next page is read below this ... */
#define CTI_WS_LOW_WATER_FRAMES 64               /* ... and this */
#define CTI_WS_RESUB_BURST      5                /* subscribes with since at once ... */
#define CTI_WS_RESUB_PER_S      1                /* ... then this many a second */
#define CTI_WS_MAX_CLIENT_MSG   65536

enum { WS_PENDING, WS_LIVE, WS_CLOSED };

/* What a socket needs of its hub, set when it registers. */
typedef struct {
    int ping_interval_s;
    cti_replayer_t *replayer;
} cti_ws_env_t;

struct shard;

struct cti_ws {
    /* set at registration, then read-only */
    cti_hub_t *hub;
    struct shard *sh; /* the shard (thread) that owns it */
    const cti_ws_env_t *env;
    char app_id[37];
    char key_id[CTI_KEY_ID_LEN + 1]; /* the credential that opened it ("" = none) */
    int epfd;                        /* its shard's epoll set */
    /* set by the registering thread before attach (cti_ws_set_start, cti_ws_attach) */
    int64_t latest;    /* hello's seq */
    int64_t start_seq; /* the last seq the client has */
    cti_replay_plan_t plan;
    int fd;
    void *urh;
    uint8_t *extra; /* bytes MHD read past the handshake, read at attach */
    size_t extra_len;
    /* the shard's thread only */
    int state; /* WS_*, changed under the shard's lock (its lists are read under it) */
    cti_ws_filter_t *filter; /* NULL: every event (most sockets: no memory for filters) */
    cti_wsr_t rx;            /* the client's frames */
    cti_msgq_t held;         /* live events held while pending or replaying */
    cti_msgq_t out;          /* frames to write */
    size_t out_off;          /* bytes of out's first frame already written */
    int64_t last_seq;        /* newest seq queued (or skipped) for this socket */
    int64_t written_seq;     /* newest seq whose frame has been written whole */
    bool replaying;          /* events come from the log and held, not from fan-out */
    bool log_done;           /* the log has been read up to where held takes over */
    int inflight;            /* replay jobs with the worker (a closed socket waits for them) */
    uint64_t replay_gen;     /* bumped by each subscribe with since: older pages are dropped */
    int64_t resub_credit_us; /* token bucket of subscribes with since (1 s = one) */
    int64_t resub_at_us;
    int64_t created_us, last_rx_us, last_ping_us;
    bool close_queued;         /* our close frame is queued: nothing more goes out */
    bool close_sent;           /* ... and written (then the write side is shut) */
    bool peer_closed;          /* the client's close frame arrived */
    int64_t close_deadline_us; /* a peer that never takes our close is cut then */
    bool closing;              /* to be closed now (by the hub) */
    bool send_pending;         /* a live event's write is in its thread's batch */
    uint32_t epoll_events;
    cti_ws_t *prev, *next; /* in its app's list, under its shard's lock */
};

/* Keeps a copy of f, or nothing when it lets every event through. */
void cti_conn_set_filter(cti_ws_t *ws, const cti_ws_filter_t *f);
/* The upgrade is done and the socket is in the epoll set: hello, the replay's
 * start, the client's first bytes. */
void cti_conn_start(cti_ws_t *ws);
/* A live event of its app (pending, replaying or live). */
void cti_conn_live(cti_ws_t *ws, cti_msg_t *m);
/* The socket is readable (or hung up): reads and answers the client's frames. */
void cti_conn_read(cti_ws_t *ws, uint8_t *buf, size_t cap);
/* The batched write of live event m (cti_hub_batch_send) wrote res bytes, or
 * failed with -errno. */
void cti_conn_sent(cti_ws_t *ws, cti_msg_t *m, int res);
/* Whether the write of m to ws joined its hub thread's batch of writes (sent
 * at the end of this event's fan-out, the outcome to cti_conn_sent); false:
 * write it now. */
bool cti_hub_batch_send(cti_ws_t *ws, cti_msg_t *m);
/* Writes what is queued, several frames per system call, and moves the
 * replay on when the queue has drained. */
void cti_conn_pump(cti_ws_t *ws);
/* A replay page from the worker for this (open) socket; the job stays the caller's. */
void cti_conn_page(cti_ws_t *ws, cti_replay_job_t *job);
/* Queues a ping (the hub's timer). */
void cti_conn_ping(cti_ws_t *ws, int64_t now);
/* Its credential stopped working: nothing more is sent but a close with code. */
void cti_conn_revoke(cti_ws_t *ws, int code, const char *why);
/* Frees what the socket holds (queues, reader, filter); the struct stays. */
void cti_conn_release(cti_ws_t *ws);
/* Whether the calling thread owns ws (hub.c). */
bool cti_hub_owns(const cti_ws_t *ws);

#endif
