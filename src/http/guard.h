/*
 * guard.h — keeps connections that send nothing useful from filling the
 * server. Internal to src/http/ (server.c feeds it MHD's connection events).
 *
 * MHD alone closes a connection only after CONNECTION_TIMEOUT of silence, so
 * a client trickling one header byte every few seconds held its slot forever,
 * and a partial request followed at once by a close was held 30 s (MHD's
 * edge-triggered epoll had read the bytes and never saw the FIN). The guard
 * tracks every connection through these states:
 *
 *   HEAD ──head complete──▶ BODY ──body read──▶ HANDLER ──response sent──▶ IDLE
 *    ▲ accept                                      │ upgrade                  │
 *    │                                             ▼                          │
 *    │                                         UPGRADED (not tracked)         │
 *    └────────────── (the next request on a kept-alive connection) ◀──────────┘
 *
 * and closes (shutdown(2) of the socket, which MHD then sees and cleans up;
 * a connection MHD has not closed 300 ms later is shut down again, one a
 * tick, which wakes a pool thread stuck in libmicrohttpd 0.9.75's epoll
 * loop, guard.c; for the same stall, a waiting connection whose bytes are
 * still unread when it is peeked is signalled readable again, not closed):
 *   - HEAD:  a connection whose request head is not complete HEADER_TIMEOUT
 *            after it was accepted, or whose peer has already closed;
 *   - IDLE:  one whose next head is not complete CONNECTION_TIMEOUT after its
 *            previous response (MHD's own timeout only counts silence);
 *   - BODY:  one whose body arrives slower than MIN_BODY_RATE bytes/s, after
 *            HEADER_TIMEOUT of grace;
 *   - under pressure: when open connections reach 7/8 of MAX_CONNECTIONS, each
 *            new one sheds the oldest connection in HEAD or IDLE, so a flood of
 *            idle or headless sockets cannot keep a webhook or /health out:
 *            MHD's hard limit stays above the shedding level (the reserve).
 * It also refuses a connection when its address (an IPv6 /64 counts as one)
 * already has MAX_CONNECTIONS_PER_ADDRESS open. Upgraded (WebSocket) sockets
 * leave the per-address count and are never shed (the hub bounds them).
 *
 * Threads: cti_guard_admit/open/... run on MHD's pool threads; one reaper
 * thread checks deadlines every 100 ms. One mutex guards all of it (held for
 * list moves only; a few per request). A tracked socket is shut down only
 * under that mutex and only between its open and close events, and MHD
 * closes the descriptor after the close event: the descriptor is never one
 * that has been reused.
 */
#ifndef CTI_HTTP_GUARD_H
#define CTI_HTTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct cti_guard cti_guard_t;
typedef struct cti_guard_conn cti_guard_conn_t;

typedef struct {
    int max_connections;  /* MHD's limit: shedding starts at 7/8 of it */
    int per_address;      /* open connections per client address; 0: no limit */
    int header_timeout_s; /* a complete request head this long after accept */
    int idle_timeout_s;   /* ... or this long after the previous response */
    int min_body_rate;    /* bytes/s a body must keep up after the grace; 0: off */
} cti_guard_options_t;

/* Starts the reaper thread. Never returns NULL. */
cti_guard_t *cti_guard_new(const cti_guard_options_t *opts);
/* Stops the reaper and frees; call after MHD has stopped (no connection left). */
void cti_guard_free(cti_guard_t *g);

/* Whether a connection from sa may be accepted (the per-address cap). */
bool cti_guard_admit(cti_guard_t *g, const struct sockaddr *sa);
/* A connection was accepted (state HEAD). Returns its handle, owned by the
 * guard until cti_guard_close(); may shed the oldest waiting connection. */
cti_guard_conn_t *cti_guard_open(cti_guard_t *g, int fd, const struct sockaddr *sa);
/* The connection is gone (MHD's close notification); frees c. */
void cti_guard_close(cti_guard_t *g, cti_guard_conn_t *c);
/* A request head is complete: BODY (the body is being read). */
void cti_guard_head_done(cti_guard_t *g, cti_guard_conn_t *c);
/* n more body bytes arrived. */
void cti_guard_body(cti_guard_t *g, cti_guard_conn_t *c, size_t n);
/* The request is with its handler (or suspended): no deadline. */
void cti_guard_handling(cti_guard_t *g, cti_guard_conn_t *c);
/* The response was sent; the connection waits for the next request (IDLE). */
void cti_guard_idle(cti_guard_t *g, cti_guard_conn_t *c);
/* The connection became a WebSocket: untracked from now on. */
void cti_guard_upgraded(cti_guard_t *g, cti_guard_conn_t *c);

typedef struct {
    uint64_t refused;  /* at accept, over the per-address cap */
    uint64_t timeouts; /* head, idle or body deadline passed */
    uint64_t peer_closed;
    uint64_t shed;     /* closed to make room under pressure */
    uint64_t reshut;   /* cut connections shut down again, MHD not having closed
                          them RESHUT_AFTER_US later (guard.c: a 0.9.75 stall) */
    uint64_t nudged;   /* waiting connections whose bytes stayed unread, signalled
                          readable again (guard.c: nudge) */
    int open, upgraded;    /* now: tracked (incl. being cut), upgraded but still MHD's */
    int cutting;           /* now: shut down, MHD's close event not yet seen */
    int heads, idles, bodies; /* now: in HEAD, IDLE, BODY */
} cti_guard_stats_t;
void cti_guard_stats(cti_guard_t *g, cti_guard_stats_t *out);

#endif
