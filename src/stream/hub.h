/*
 * hub.h — the WebSocket hub: epoll threads (one per core) that own the
 * upgraded sockets and fan committed events out to the sockets of their app,
 * in seq order, each event serialized and framed once (stream/msgq.h) and
 * the same bytes written to every socket.
 *
 * A connection's life:
 *   1. the /ws handler (an HTTP pool thread) registers it (cti_hub_register):
 *      from then on live events of its app are held for it;
 *   2. the handler reads the log's bounds, applies the window rule
 *      (stream/replay.h) and says where the stream starts (cti_ws_set_start),
 *      then answers 101;
 *   3. MHD's upgrade callback hands the socket over (cti_ws_attach); its hub
 *      thread sends hello, and the replay follows a page at a time, read by
 *      the replay worker as the socket takes it, then the held live events
 *      whose seq is above the last replayed one, and from then on live events
 *      (stream/conn.h has the details).
 * So nothing committed is missed and nothing is sent twice at the seam, and
 * no hub thread ever reads the database.
 *
 * Limits per socket: CTI_WS_QUEUE_MAX frames and CTI_WS_QUEUE_BYTES bytes
 * queued (every frame counts: events, pongs, replies); over them it is closed
 * with 4008 and a reason naming the last seq handed to it; it resumes with
 * ?since=. One slow socket never delays the others. Subscribes with since:
 * 5 at once, then 1 a second (an error message past that). A socket whose
 * API key stops working (revoked, expired, its app deactivated) is closed
 * with 4001/4003 within about a second (stream/keywatch.h).
 *
 * Threads: register/set_start/abandon from the registering thread; attach
 * from MHD's upgrade callback (never blocks); publish from any thread (the
 * ingest worker, the listener); everything else runs on the socket's hub
 * thread.
 */
#ifndef CTI_STREAM_HUB_H
#define CTI_STREAM_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repo/events.h"
#include "stream/replay.h"

#define CTI_WS_QUEUE_MAX   1024              /* frames waiting for a socket before 4008 */
#define CTI_WS_QUEUE_BYTES (4 * 1024 * 1024) /* ... or bytes */
#define CTI_WS_TYPES_MAX   32

typedef struct cti_hub cti_hub_t;
typedef struct cti_ws cti_ws_t;

struct cti_store;
typedef struct {
    struct cti_store *store; /* read by the replay worker (replays, credential checks) */
    int max_connections;     /* all apps */
    int max_per_app;
    int ping_interval_s; /* server pings; a peer silent for 3 intervals is closed */
    int sndbuf;          /* SO_SNDBUF for upgraded sockets; 0 = the kernel's default */
    int threads;         /* hub threads (sockets spread among them); 0 = one per core */
    bool batch_sends;    /* fan-out writes through io_uring, when the kernel allows it */
} cti_hub_options_t;

typedef struct {
    char types[CTI_WS_TYPES_MAX][40]; /* event names; none = every event */
    int ntypes;
    int64_t dialpad_user_id; /* 0 = any */
    char crm_user_id[256];   /* "" = any */
} cti_ws_filter_t;

/* Parses "call.ringing,call.ended" into f->types. False when a name is too
 * long or there are too many. */
bool cti_ws_filter_types(cti_ws_filter_t *f, const char *csv);

cti_hub_t *cti_hub_start(const cti_hub_options_t *opts);
/* Closes every connection and stops the threads. */
void cti_hub_stop(cti_hub_t *hub);

/* A committed event (body is the event object's JSON). Any thread. */
void cti_hub_publish(cti_hub_t *hub, const char *app_id, int64_t seq, const char *body);
/* Committed events, in order (app_id, seq and body of each are read): each
 * hub thread is woken once for all of them. Any thread. */
void cti_hub_publish_many(cti_hub_t *hub, const cti_logrow_t *events, int n);
/* Whether any connection of the app is registered (at this moment). Events
 * of an app without one need not be read or published: a connection that
 * registers later reads them from the log. Any thread. */
bool cti_hub_has_app(cti_hub_t *hub, const char *app_id);
/* cti_publish_fn-compatible wrapper: ud is the hub. */
void cti_hub_publish_cb(const cti_logrow_t *events, int n, void *ud);

/* Step 1. key_id: the API key that authenticated it ("" = none), watched
 * while it is open. CTI_ELIMIT when the app or the server has too many
 * connections. */
int cti_hub_register(cti_hub_t *hub, const char *app_id, const char *key_id,
                     const cti_ws_filter_t *f, cti_ws_t **out);
/* Step 2: latest is the hello's seq (the app's newest); since the last seq
 * the client has (live events at or below it are skipped); plan is what the
 * window rule said (RESET sends {"type":"reset"} and starts after latest). */
void cti_ws_set_start(cti_ws_t *ws, int64_t latest, int64_t since, cti_replay_plan_t plan);
/* WebSocket connections registered now (open, or upgrading), for /metrics.
 * Any thread; takes each shard's lock for a moment. */
int cti_hub_connections(cti_hub_t *hub);
/* The upgrade will not happen (the handler answered an error instead). */
void cti_hub_abandon(cti_hub_t *hub, cti_ws_t *ws);
/* Step 3 (MHD upgrade callback). urh is MHD's upgrade handle. */
void cti_ws_attach(cti_ws_t *ws, int fd, const char *extra, size_t extra_len, void *urh);

#endif
