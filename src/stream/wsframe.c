/*
 * wsframe.c — see wsframe.h. RFC 6455 section 5 (framing), 5.4 (fragments),
 * 5.5 (control frames), 7.4 (close codes), 8.1 (UTF-8).
 */
#include "stream/wsframe.h"
#include "core/common.h"

#include <stdlib.h>
#include <string.h>

size_t cti_wsf_header(uint8_t out[CTI_WSF_HEADER_MAX], int opcode, size_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F)); /* FIN */
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

bool cti_ws_close_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

void cti_wsr_reset(cti_wsr_t *r)
{
    free(r->msg);
    memset(r, 0, sizeof *r);
}

/* Header bytes the current frame needs, judging by what has arrived. */
static size_t header_need(const cti_wsr_t *r)
{
    if (r->hlen < 2)
        return 2;
    uint8_t len7 = r->hdr[1] & 0x7F;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (r->hdr[1] & 0x80 ? 4 : 0);
}

/* The header is complete: check it and get ready for the payload. */
static int start_frame(cti_wsr_t *r, size_t max_msg)
{
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1], len7 = b1 & 0x7F;
    r->fin = b0 & 0x80;
    r->opcode = b0 & 0x0F;
    if (b0 & 0x70) /* RSV bits: no extension was negotiated */
        return CTI_WS_CLOSE_PROTOCOL;
    if (!(b1 & 0x80)) /* a client's frames are always masked */
        return CTI_WS_CLOSE_PROTOCOL;
    uint64_t len = len7;
    const uint8_t *ext = r->hdr + 2;
    if (len7 == 126) {
        len = (uint64_t)ext[0] << 8 | ext[1];
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | ext[i];
        if (len >> 63)
            return CTI_WS_CLOSE_PROTOCOL;
    }
    memcpy(r->mask, r->hdr + r->hlen - 4, 4);
    switch (r->opcode) {
    case CTI_WS_OP_CLOSE:
    case CTI_WS_OP_PING:
    case CTI_WS_OP_PONG:
        if (!r->fin || len > sizeof r->ctl)
            return CTI_WS_CLOSE_PROTOCOL; /* control frames: whole, and short */
        r->ctl_len = 0;
        break;
    case CTI_WS_OP_CONT:
        if (!r->msg_op)
            return CTI_WS_CLOSE_PROTOCOL; /* continues nothing */
        if (len > max_msg - r->msg_len)
            return CTI_WS_CLOSE_TOO_BIG;
        break;
    case CTI_WS_OP_TEXT:
    case CTI_WS_OP_BINARY:
        if (r->msg_op)
            return CTI_WS_CLOSE_PROTOCOL; /* the previous message is unfinished */
        if (len > max_msg)
            return CTI_WS_CLOSE_TOO_BIG;
        r->msg_op = r->opcode;
        break;
    default:
        return CTI_WS_CLOSE_PROTOCOL; /* reserved opcode */
    }
    r->left = len;
    r->off = 0;
    r->in_payload = true;
    return 0;
}

/* A data message is complete. */
static int message_done(cti_wsr_t *r, const uint8_t *data, size_t len, cti_wsr_fn fn, void *ud)
{
    int op = r->msg_op;
    r->msg_op = 0;
    int rc = op == CTI_WS_OP_TEXT && !cti_utf8_valid(data, len) ? CTI_WS_CLOSE_BAD_DATA
                                                                 : fn(op, data, len, ud);
    free(r->msg); /* nothing is kept between messages */
    r->msg = NULL;
    r->msg_len = r->msg_cap = 0;
    return rc;
}

/* The current frame's payload is complete (and was gathered, not direct). */
static int frame_done(cti_wsr_t *r, cti_wsr_fn fn, void *ud)
{
    r->in_payload = false;
    r->hlen = 0;
    if (r->opcode == CTI_WS_OP_CLOSE) {
        if (r->ctl_len == 1)
            return CTI_WS_CLOSE_PROTOCOL;
        if (r->ctl_len >= 2 && !cti_ws_close_code_ok((unsigned)r->ctl[0] << 8 | r->ctl[1]))
            return CTI_WS_CLOSE_PROTOCOL;
        if (r->ctl_len >= 2 && !cti_utf8_valid(r->ctl + 2, r->ctl_len - 2u))
            return CTI_WS_CLOSE_BAD_DATA; /* the reason */
    }
    if (r->opcode & 0x8)
        return fn(r->opcode, r->ctl, r->ctl_len, ud);
    return r->fin ? message_done(r, r->msg, r->msg_len, fn, ud) : 0;
}

static void unmask(cti_wsr_t *r, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= r->mask[(r->off + i) & 3];
}

int cti_wsr_feed(cti_wsr_t *r, uint8_t *p, size_t n, size_t max_msg, cti_wsr_fn fn, void *ud)
{
    for (;;) {
        if (!r->in_payload) {
            if (!n)
                return 0;
            r->hdr[r->hlen++] = *p++;
            n--;
            if (r->hlen < header_need(r))
                continue;
            int rc = start_frame(r, max_msg);
            if (rc)
                return rc;
        }
        size_t take = r->left < n ? (size_t)r->left : n;
        if (r->left && !take)
            return 0; /* the rest of the payload comes with the next read */
        unmask(r, p, take);
        bool data = !(r->opcode & 0x8);
        if (data && r->fin && r->msg_len == 0 && take == r->left) {
            /* a whole message in this read: hand it over from where it lies */
            r->in_payload = false;
            r->hlen = 0;
            int rc = message_done(r, p, take, fn, ud);
            p += take;
            n -= take;
            if (rc)
                return rc;
            continue;
        }
        if (!data) {
            memcpy(r->ctl + r->ctl_len, p, take);
            r->ctl_len = (uint8_t)(r->ctl_len + take);
        } else if (take) {
            if (r->msg_len + take > r->msg_cap) {
                size_t cap = r->msg_cap ? r->msg_cap : 256;
                while (cap < r->msg_len + take)
                    cap *= 2;
                r->msg = cti_realloc(r->msg, cap);
                r->msg_cap = cap;
            }
            memcpy(r->msg + r->msg_len, p, take);
            r->msg_len += take;
        }
        p += take;
        n -= take;
        r->left -= take;
        r->off += take;
        if (!r->left) {
            int rc = frame_done(r, fn, ud);
            if (rc)
                return rc;
        }
    }
}
