/*
 * wsframe.h — the server's half of RFC 6455 framing.
 *
 * Sending: a server frame is a 2-, 4- or 10-byte header before the payload,
 * never masked, so the hub builds each event's frame once and writes the same
 * bytes to every socket (cti_wsf_header).
 *
 * Receiving: cti_wsr_t reads client frames incrementally from whatever bytes
 * recv() gave (split anywhere), unmasks them, reassembles fragmented messages
 * and validates what RFC 6455 requires a server to reject. It holds no buffer
 * while idle (~170 bytes of state): a message split across reads is gathered
 * on the heap only until it is complete. That is why the hub does not use
 * wslay's event context, whose two 4 KiB buffers stay with every socket.
 */
#ifndef CTI_STREAM_WSFRAME_H
#define CTI_STREAM_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

enum {
    CTI_WS_OP_CONT = 0x0,
    CTI_WS_OP_TEXT = 0x1,
    CTI_WS_OP_BINARY = 0x2,
    CTI_WS_OP_CLOSE = 0x8,
    CTI_WS_OP_PING = 0x9,
    CTI_WS_OP_PONG = 0xA,
};

/* Close status codes the reader fails a connection with. */
enum {
    CTI_WS_CLOSE_PROTOCOL = 1002,
    CTI_WS_CLOSE_BAD_DATA = 1007, /* text that is not UTF-8 */
    CTI_WS_CLOSE_TOO_BIG = 1009,
};

#define CTI_WSF_HEADER_MAX 10

/* Writes the header of a final, unmasked frame carrying len payload bytes;
 * returns its length (2, 4 or 10). */
size_t cti_wsf_header(uint8_t out[CTI_WSF_HEADER_MAX], int opcode, size_t len);

typedef struct {
    uint8_t hdr[14];  /* the current frame's header as it arrives */
    uint8_t hlen;     /* header bytes so far */
    uint8_t opcode;   /* of the current frame (once its header is complete) */
    bool fin;
    bool in_payload;  /* the header is complete */
    uint8_t mask[4];
    uint64_t left;    /* payload bytes of the current frame still to come */
    uint64_t off;     /* payload bytes of it seen (the mask's position) */
    uint8_t msg_op;   /* TEXT/BINARY while a data message is open, else 0 */
    uint8_t *msg;     /* its payload so far (heap, only while open) */
    size_t msg_len, msg_cap;
    uint8_t ctl[125]; /* a control frame's payload */
    uint8_t ctl_len;
} cti_wsr_t;

/* A complete message: TEXT or BINARY (reassembled, unmasked), or a control
 * frame (PING, PONG, CLOSE) with its payload. data is valid during the call.
 * Return 0 to go on reading, anything else to stop (cti_wsr_feed returns it). */
typedef int (*cti_wsr_fn)(int opcode, const uint8_t *data, size_t len, void *ud);

/* Reads n bytes from the client (p is modified: payloads are unmasked in
 * place). Returns 0 when all were consumed, a callback's non-zero answer, or
 * a close code (CTI_WS_CLOSE_*) when the client broke the protocol or sent a
 * message over max_msg bytes: the connection must then be failed. */
int cti_wsr_feed(cti_wsr_t *r, uint8_t *p, size_t n, size_t max_msg, cti_wsr_fn fn, void *ud);

/* Frees a partly received message. r can be fed again (from a clean state). */
void cti_wsr_reset(cti_wsr_t *r);

/* Whether a close frame's status code may be sent by a peer (RFC 6455 7.4). */
bool cti_ws_close_code_ok(unsigned code);

/* cti_utf8_valid(), the check of text messages, is core/util.h's. */

#endif
