/* msgq.c — see msgq.h. */
#include "stream/msgq.h"
#include "core/common.h"
#include "core/util.h"

#include <assert.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define HEADROOM CTI_WSF_HEADER_MAX /* bytes before a payload, for its frame header */

/* buf: HEADROOM bytes, then len bytes of payload; the message owns it. */
static cti_msg_t *msg_new(const char *app_id, int64_t seq, int opcode, uint8_t *buf, size_t len)
{
    cti_msg_t *m = cti_calloc(1, sizeof *m);
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

cti_msg_t *cti_msg_copy(int opcode, const void *payload, size_t len)
{
    uint8_t *buf = cti_malloc(HEADROOM + len);
    if (len)
        memcpy(buf + HEADROOM, payload, len);
    return msg_new("", 0, opcode, buf, len);
}

cti_msg_t *cti_msg_event(const char *app_id, int64_t seq, const char *body)
{
    size_t blen = strlen(body);
    assert(blen >= 2 && body[0] == '{');
    uint8_t *buf = cti_malloc(HEADROOM + blen + 16);
    int n = snprintf((char *)buf + HEADROOM, blen + 16, "{\"type\":\"event\",%s", body + 1);
    return msg_new(app_id, seq, CTI_WS_OP_TEXT, buf, (size_t)n);
}

cti_msg_t *cti_msg_ref(cti_msg_t *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

void cti_msg_unref(cti_msg_t *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        free(m->buf);
        free(m);
    }
}

void cti_msg_parse(cti_msg_t *m)
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
        uid = json_string_value(
            json_object_get(json_object_get(json_object_get(o, "data"), "target"), "id"));
    const char *crm = json_string_value(json_object_get(who, "crm_user_id"));
    if (uid)
        cti_parse_i64(uid, &m->dialpad_user_id);
    snprintf(m->crm_user_id, sizeof m->crm_user_id, "%s", crm ? crm : "");
    json_decref(o);
    atomic_store(&m->parsed, 2);
}

/* ---- queues ---------------------------------------------------------------------------------- */

static void grow(cti_msgq_t *q)
{
    if (q->count == q->cap) {
        int cap = q->cap ? 2 * q->cap : 16;
        cti_msg_t **items = cti_malloc((size_t)cap * sizeof *items);
        for (int i = 0; i < q->count; i++)
            items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items;
        q->head = 0;
        q->cap = cap;
    }
}

void cti_msgq_push(cti_msgq_t *q, cti_msg_t *m)
{
    grow(q);
    q->items[(q->head + q->count++) % q->cap] = m;
    q->bytes += m->frame_len;
}

void cti_msgq_push_front(cti_msgq_t *q, cti_msg_t *m)
{
    grow(q);
    q->head = (q->head + q->cap - 1) % q->cap;
    q->items[q->head] = m;
    q->count++;
    q->bytes += m->frame_len;
}

cti_msg_t *cti_msgq_pop(cti_msgq_t *q)
{
    if (!q->count)
        return NULL;
    cti_msg_t *m = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    assert(q->bytes >= m->frame_len);
    q->bytes -= m->frame_len;
    if (--q->count == 0) { /* an idle socket holds no queue */
        assert(q->bytes == 0);
        free(q->items);
        memset(q, 0, sizeof *q);
    }
    return m;
}

cti_msg_t *cti_msgq_at(const cti_msgq_t *q, int i)
{
    assert(i >= 0 && i < q->count);
    return q->items[(q->head + i) % q->cap];
}

void cti_msgq_clear(cti_msgq_t *q)
{
    cti_msg_t *m;
    while ((m = cti_msgq_pop(q)))
        cti_msg_unref(m);
    free(q->items);
    memset(q, 0, sizeof *q);
}
