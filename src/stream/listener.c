/* listener.c — see listener.h. One thread, its own two connections (LISTEN, reads). */
#include "stream/listener.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "repo/events.h"
#include "store/wakeup.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char app_id[37]; /* "" in an empty slot */
    int64_t last;    /* newest seq published */
} seen_t;

struct cti_relay {
    cti_store_t *store;
    cti_hub_t *hub;
    cti_wakeup_t *listener;
    cti_db_t *db;
    pthread_t thread;
    atomic_bool stop;
    seen_t *seen; /* open addressing, capseen a power of two, at most half full */
    int nseen, capseen;
};

/* The slot of app_id in a table of cap slots: its own, or the empty one it would take. */
static seen_t *seen_slot(seen_t *t, int cap, const char *app_id)
{
    size_t i = (size_t)cti_hash_bytes(app_id, strlen(app_id)) & (size_t)(cap - 1);
    while (t[i].app_id[0] && strcmp(t[i].app_id, app_id))
        i = (i + 1) & (size_t)(cap - 1);
    return &t[i];
}

/* app_id's position, made (at 0) on first sight. A hash table: a notification
 * names up to one app per event of a batch, and an instance may serve
 * thousands of apps (it was a list scanned per name). The pointer is valid
 * until the next call. */
static seen_t *seen_app(cti_relay_t *r, const char *app_id)
{
    if (r->capseen) {
        seen_t *s = seen_slot(r->seen, r->capseen, app_id);
        if (s->app_id[0])
            return s;
    }
    if (2 * (r->nseen + 1) > r->capseen) {
        int cap = r->capseen ? 2 * r->capseen : 64;
        seen_t *t = cti_calloc((size_t)cap, sizeof *t);
        for (int i = 0; i < r->capseen; i++)
            if (r->seen[i].app_id[0])
                *seen_slot(t, cap, r->seen[i].app_id) = r->seen[i];
        free(r->seen);
        r->seen = t;
        r->capseen = cap;
    }
    seen_t *s = seen_slot(r->seen, r->capseen, app_id);
    snprintf(s->app_id, sizeof s->app_id, "%s", app_id);
    s->last = 0;
    r->nseen++;
    return s;
}

typedef struct {
    cti_relay_t *r;
    seen_t *s;
} pub_t;

static int publish_row(int64_t seq, const char *body, void *ud)
{
    pub_t *p = ud;
    if (seq > p->s->last) {
        CTI_METRIC_INC(relay_events);
        cti_hub_publish(p->r->hub, p->s->app_id, seq, body);
        p->s->last = seq;
    }
    return 0;
}

/* Publishes app's events after `after` up to `upto` (0 = all), in order. With
 * no connection of the app here, nothing is read: one that registers later
 * reads these events from the log itself (hub.h), so the range only moves
 * the app's position on to upto. */
static void relay(cti_relay_t *r, seen_t *s, int64_t after, int64_t upto)
{
    if (upto && !cti_hub_has_app(r->hub, s->app_id)) {
        if (upto > s->last)
            s->last = upto;
        return;
    }
    pub_t p = {r, s};
    for (;;) {
        int64_t before = s->last;
        int rc = cti_eventlog_since(r->db, s->app_id, after, 500, publish_row, &p);
        if (rc < 0) {
            cti_log(CTI_LOG_WARN, NULL, "stream: could not read events to relay",
                    CTI_LS("app_id", s->app_id), CTI_LS("error", cti_db_errmsg(r->db)));
            return;
        }
        if (s->last == before || (upto && s->last >= upto))
            return;
        after = s->last;
    }
}

/* "app:first:last;app:first:last" */
static void on_notify(const char *payload, void *ud)
{
    cti_relay_t *r = ud;
    int64_t t0 = cti_mono_us();
    CTI_METRIC_INC(relay_notifications);
    char *copy = cti_strdup(payload), *save = NULL;
    for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char app[37];
        long long first, last;
        if (sscanf(item, "%36[0-9a-fA-F-]:%lld:%lld", app, &first, &last) != 3)
            continue;
        seen_t *s = seen_app(r, app);
        /* first sight of an app: start at this range (sockets registered before
         * it read everything older from the log themselves) */
        int64_t after = s->last ? s->last : first - 1;
        relay(r, s, after, last);
    }
    free(copy);
    atomic_store(&cti_metrics.relay_notify_lag_us, cti_mono_us() - t0);
}

/* At start: every app's position, so only what comes later is relayed. */
static int note_start(const char *app_id, int64_t last, void *ud)
{
    seen_app(ud, app_id)->last = last;
    return 0;
}

/* After a reconnect, notifications may have been lost: every app catches up,
 * from what was relayed (an app never seen had nothing before the gap). */
static int catch_up(const char *app_id, int64_t last, void *ud)
{
    cti_relay_t *r = ud;
    seen_t *s = seen_app(r, app_id);
    if (last > s->last)
        relay(r, s, s->last, last);
    return 0;
}

static void *relay_main(void *arg)
{
    cti_relay_t *r = arg;
    while (!atomic_load(&r->stop)) {
        bool fresh = false;
        cti_wakeup_wait(r->listener, 500, on_notify, r, &fresh);
        atomic_store(&cti_metrics.relay_alive_us, cti_mono_us());
        if (fresh)
            CTI_METRIC_INC(relay_reconnects);
        if (fresh && cti_seq_all(r->db, catch_up, r) != 0)
            cti_log(CTI_LOG_WARN, NULL, "stream: could not read positions to catch up",
                    CTI_LS("error", cti_db_errmsg(r->db)));
    }
    return NULL;
}

cti_relay_t *cti_relay_start(cti_store_t *store, cti_hub_t *hub)
{
    cti_relay_t *r = cti_calloc(1, sizeof *r);
    r->store = store;
    r->hub = hub;
    r->listener = cti_wakeup_open(store, CTI_EVENTS_CHANNEL);
    cti_store_connect(store, &r->db);
    atomic_init(&r->stop, false);
    /* The start line, before any socket exists (main has just migrated, so the
     * database is up): events after it are relayed, by notification or by the
     * catch-up that follows every (re)connection of the listener. If even this
     * read fails, every event counts as new (sockets drop what they already have). */
    if (cti_seq_all(r->db, note_start, r) != 0)
        cti_log(CTI_LOG_WARN, NULL, "stream: could not read where events stand at start",
                CTI_LS("error", cti_db_errmsg(r->db)));
    atomic_store(&cti_metrics.relay_alive_us, cti_mono_us());
    atomic_store(&cti_metrics.relay_running, 1);
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0)
        cti_fatal("cannot start the stream listener thread");
    pthread_setname_np(r->thread, "cti-relay"); /* shown by top -H, ps -L */
    return r;
}

void cti_relay_stop(cti_relay_t *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    atomic_store(&cti_metrics.relay_running, 0);
    cti_wakeup_close(r->listener);
    cti_db_close(r->db);
    free(r->seen);
    free(r);
}
