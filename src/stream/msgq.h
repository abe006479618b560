/*
 * msgq.h — frames the hub sends, and the per-socket queues that hold them.
 *
 * A message is one WebSocket frame, framed once (header in front of the
 * payload, in one buffer) and refcounted: an event fanned out to many sockets
 * and hub threads is one message, every queue holding a reference. The hub's
 * own frames (hello, pong, errors, close) are messages of one socket.
 *
 * A queue is a ring of message references that counts its frames and their
 * bytes, so a socket's limits (CTI_WS_QUEUE_MAX, CTI_WS_QUEUE_BYTES) cover
 * every frame queued for it; an empty queue holds no memory.
 *
 * Threads: a message may be shared by any threads (its count is atomic; its
 * filter fields are filled once, by the first hub thread that needs them); a
 * queue belongs to one thread at a time.
 */
#ifndef CTI_STREAM_MSGQ_H
#define CTI_STREAM_MSGQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/wsframe.h"

typedef struct {
    atomic_int refs;
    int64_t seq; /* 0 for the hub's own messages (hello, pong, close, ...) */
    int opcode;
    char app_id[37];
    uint8_t *buf;         /* CTI_WSF_HEADER_MAX bytes of headroom, then the payload */
    const uint8_t *frame; /* header + payload: the bytes every socket is sent */
    size_t frame_len;
    const char *data; /* the payload */
    size_t len;
    atomic_int parsed; /* 0, 1 while a hub thread fills the filter fields below, 2 once filled */
    char event[40];
    int64_t dialpad_user_id;
    char crm_user_id[256];
} cti_msg_t;

/* {"type":"event", ...the members of body (an event object's JSON)}, with one
 * reference (the caller's). */
cti_msg_t *cti_msg_event(const char *app_id, int64_t seq, const char *body);
/* One of the hub's own frames (text or control), payload copied; one reference. */
cti_msg_t *cti_msg_copy(int opcode, const void *payload, size_t len);
/* Takes another reference; returns m. */
cti_msg_t *cti_msg_ref(cti_msg_t *m);
/* Drops a reference (NULL is fine); the last frees the message. */
void cti_msg_unref(cti_msg_t *m);
/* Fills event, dialpad_user_id and crm_user_id from the payload, once per
 * message whatever the number of threads asking. */
void cti_msg_parse(cti_msg_t *m);

typedef struct {
    cti_msg_t **items;
    int head, count, cap;
    size_t bytes; /* frame bytes of the messages queued */
} cti_msgq_t;

/* Appends m, taking over the caller's reference. */
void cti_msgq_push(cti_msgq_t *q, cti_msg_t *m);
/* Puts m first, taking over the caller's reference. */
void cti_msgq_push_front(cti_msgq_t *q, cti_msg_t *m);
/* Removes the first message and hands its reference to the caller; NULL when empty. */
cti_msg_t *cti_msgq_pop(cti_msgq_t *q);
/* The i-th message (0 = first), still owned by the queue; i < count. */
cti_msg_t *cti_msgq_at(const cti_msgq_t *q, int i);
/* Drops every message and the ring. */
void cti_msgq_clear(cti_msgq_t *q);

#endif
