/*
 * sender.c — the outbound webhook sender. See outbound.h.
 *
 * One thread, one libcurl multi handle. Each turn of its loop:
 *   1. reads the enabled endpoints again when told to (or every few seconds:
 *      other instances change them too), keeping each one's attempts in flight;
 *   2. for each endpoint with room (OUTBOUND_ENDPOINT_IN_FLIGHT, and overall
 *      OUTBOUND_MAX_IN_FLIGHT) whose poll is due, leases due deliveries
 *      (repo/deliveries.h: a call's events one at a time, in seq order) and
 *      starts their POSTs;
 *   3. lets curl work, collects the attempts that ended and records them all
 *      in one transaction (a retry's time, or the end: succeeded / failed);
 *   4. sleeps in curl_multi_poll until a socket is ready, the next poll is
 *      due, or cti_outbound_wake.
 * An endpoint that had nothing due is polled again after IDLE_POLL_MS (the
 * wake-ups of committed events make that rare); one that answers slowly only
 * fills its own slots. Leases last the timeout plus LEASE_MARGIN_MS, so an
 * instance that dies mid-attempt leaves the delivery to another (or to itself
 * after a restart) within that.
 */
#include "outbound/outbound.h"
#include "core/cidr.h"
#include "core/common.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/seal.h"
#include "core/util.h"
#include "outbound/sign.h"
#include "repo/deliveries.h"
#include "repo/endpoints.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IDLE_POLL_MS 1000     /* an endpoint with nothing due: look again after this */
#define RELOAD_MS 5000        /* endpoints read again at least this often */
#define ERROR_POLL_MS 1000    /* after a store error */
#define LEASE_MARGIN_MS 5000  /* a lease outlives the attempt's timeout by this */
#define RESPONSE_MAX 4096     /* bytes of an answer read; the rest is not */
#define ERROR_TEXT_MAX 200    /* last_error */
#define PAUSE_MIN_MS 100      /* an endpoint that failed rests this long, doubling */
#define PAUSE_MAX_MS 1000     /* up to this, while it keeps failing */
#define WOKEN_MAX 64          /* apps remembered between two turns; more: wake all */

typedef struct {
    cti_endpoint_t e;    /* with its secrets */
    int in_flight;
    int64_t next_poll;   /* wall ms */
    int fails;           /* attempts failed in a row */
    int64_t retry_at;    /* the earliest retry this process scheduled, 0: none */
    int64_t paused_until; /* after a failure: nothing new is tried before this */
} ep_t;

typedef struct xfer {
    struct xfer *prev, *next; /* the attempts in flight */
    CURL *h;
    struct curl_slist *headers;
    char *body;
    int64_t id, seq, created_at;
    int attempts; /* before this one */
    char endpoint_id[37];
    char errbuf[CURL_ERROR_SIZE];
    char answer[ERROR_TEXT_MAX / 2]; /* the first bytes of the answer, for last_error */
    size_t got;
    bool blocked; /* the address was refused (private) */
    char blocked_addr[64];
} xfer_t;

struct cti_outbound {
    cti_store_t *store;
    const cti_seal_keys_t *keys;
    cti_db_t *db;
    int timeout_ms, max_in_flight, ep_max;
    bool production, allow_private;
    int retries;
    int64_t retry_ms[CTI_OUTBOUND_MAX_RETRIES];
    int64_t disable_after_ms;

    pthread_t thread;
    atomic_bool stop, wake, reload;
    CURLM *multi;
    xfer_t *xfers; /* in flight */

    /* apps with new events (cti_outbound_wake_apps); all when woken_all */
    pthread_mutex_t mu;
    char woken[WOKEN_MAX][37];
    int nwoken;
    bool woken_all;

    ep_t *eps;
    int neps;
    int in_flight;
    int64_t next_reload;
    uint64_t rng;

    cti_lease_t *starting; /* leased this turn: sent once the lease commits */
    int *starting_ep;      /* their endpoints (index in eps) */
    int nstarting, capstarting;

    cti_attempt_t *done; /* attempts ended, recorded by the next turn */
    char **done_err;     /* their error texts (owned) */
    int ndone, capdone;
};

/* ---- endpoints -------------------------------------------------------------------------- */

static ep_t *find_ep(cti_outbound_t *ob, const char *id)
{
    for (int i = 0; i < ob->neps; i++)
        if (!strcmp(ob->eps[i].e.id, id))
            return &ob->eps[i];
    return NULL;
}

typedef struct {
    cti_outbound_t *ob;
    ep_t *eps;
    int n, cap;
} loading_t;

static char *dup_or_null(const char *s)
{
    return s ? cti_strdup(s) : NULL;
}

static int load_one(const cti_endpoint_t *e, void *ud)
{
    loading_t *l = ud;
    if (l->n == l->cap)
        l->eps = cti_realloc(l->eps, (size_t)(l->cap = l->cap ? 2 * l->cap : 16) * sizeof *l->eps);
    ep_t *ep = &l->eps[l->n++];
    memset(ep, 0, sizeof *ep);
    memcpy(ep->e.id, e->id, sizeof ep->e.id);
    memcpy(ep->e.app_id, e->app_id, sizeof ep->e.app_id);
    ep->e.url = cti_strdup(e->url);
    ep->e.types = dup_or_null(e->types);
    ep->e.enabled = e->enabled;
    ep->e.failing_since = e->failing_since;
    ep->e.secret = dup_or_null(e->secret);
    ep->e.old_secret = dup_or_null(e->old_secret);
    ep->e.old_secret_expires_at = e->old_secret_expires_at;
    /* what this process knows of it carries over */
    ep_t *was = find_ep(l->ob, e->id);
    ep->in_flight = was ? was->in_flight : 0;
    ep->next_poll = was ? was->next_poll : 0;
    ep->fails = was ? was->fails : 0;
    ep->retry_at = was ? was->retry_at : 0;
    ep->paused_until = was ? was->paused_until : 0;
    return 0;
}

static void free_eps(ep_t *eps, int n)
{
    for (int i = 0; i < n; i++)
        cti_endpoint_clear(&eps[i].e);
    free(eps);
}

static void reload(cti_outbound_t *ob, int64_t now)
{
    loading_t l = {ob, NULL, 0, 0};
    int rc = cti_endpoint_all_enabled(ob->db, ob->keys, now, load_one, &l);
    if (rc != 0) {
        free_eps(l.eps, l.n);
        ob->next_reload = now + ERROR_POLL_MS;
        cti_log(CTI_LOG_WARN, NULL, "outbound: cannot read the endpoints; trying again",
                CTI_LS("error", cti_strerror(rc)));
        return;
    }
    free_eps(ob->eps, ob->neps);
    ob->eps = l.eps;
    ob->neps = l.n;
    ob->next_reload = now + RELOAD_MS;
}

/* ---- one attempt ------------------------------------------------------------------------ */

static size_t on_answer(char *data, size_t size, size_t n, void *ud)
{
    xfer_t *x = ud;
    size_t len = size * n;
    if (x->got < sizeof x->answer - 1) {
        size_t take = len < sizeof x->answer - 1 - x->got ? len : sizeof x->answer - 1 - x->got;
        memcpy(x->answer + x->got, data, take);
        x->answer[x->got + take] = '\0';
    }
    x->got += len;
    return x->got > RESPONSE_MAX ? 0 : len; /* more is not read: the attempt ends */
}

/* Refuses addresses inside the network unless allowed (SSRF): checked on the
 * address curl is about to connect to, after DNS, so a name that resolves
 * to a private address (or changes to one) is caught too. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    xfer_t *x = ud;
    uint8_t ip[16] = {0};
    if (a->family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((struct sockaddr_in *)&a->addr)->sin_addr, 4);
    } else if (a->family == AF_INET6) {
        memcpy(ip, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, 16);
    } else {
        x->blocked = true;
        snprintf(x->blocked_addr, sizeof x->blocked_addr, "(family %d)", a->family);
        return CURL_SOCKET_BAD;
    }
    if (cti_ip_is_private(ip)) {
        x->blocked = true;
        cti_ip_format(ip, x->blocked_addr, sizeof x->blocked_addr);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static void start_attempt(cti_outbound_t *ob, ep_t *ep, const cti_lease_t *l, int64_t now)
{
    xfer_t *x = cti_calloc(1, sizeof *x);
    x->id = l->id;
    x->seq = l->seq;
    x->attempts = l->attempts;
    x->created_at = l->created_at;
    memcpy(x->endpoint_id, ep->e.id, sizeof x->endpoint_id);
    x->body = cti_strdup(l->body);
    size_t len = strlen(x->body);

    char msg_id[CTI_WHID_MAX], sig[CTI_WHSIG_MAX], line[CTI_WHSIG_MAX + 32];
    cti_whsec_msg_id(ep->e.id, l->seq, msg_id);
    const char *secrets[2] = {ep->e.secret, ep->e.old_secret};
    int nsec = ep->e.old_secret && ep->e.old_secret_expires_at > now ? 2 : 1;
    int64_t ts = now / 1000;
    cti_whsec_sign(secrets, nsec, msg_id, ts, x->body, len, sig);

    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    snprintf(line, sizeof line, "webhook-id: %s", msg_id);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof line, "webhook-timestamp: %lld", (long long)ts);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof line, "webhook-signature: %s", sig);
    h = curl_slist_append(h, line);
    x->headers = h;

    CURL *c = x->h = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, ep->e.url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, ob->production ? "https" : "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)ob->timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "cti-server (outbound webhooks)");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(c, CURLOPT_PRIVATE, x);
    if (ob->production && !ob->allow_private) {
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, x);
    }
    curl_multi_add_handle(ob->multi, c);
    x->next = ob->xfers;
    if (ob->xfers)
        ob->xfers->prev = x;
    ob->xfers = x; /* its slot was counted when it was leased (on_lease) */
}

static void free_xfer(cti_outbound_t *ob, xfer_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        ob->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    curl_multi_remove_handle(ob->multi, x->h);
    curl_easy_cleanup(x->h);
    curl_slist_free_all(x->headers);
    free(x->body);
    free(x);
}

/* ---- results ---------------------------------------------------------------------------- */

static int64_t jitter(cti_outbound_t *ob, int64_t ms)
{
    /* ±10%: retries of many deliveries that failed together spread out */
    ob->rng ^= ob->rng << 13, ob->rng ^= ob->rng >> 7, ob->rng ^= ob->rng << 17;
    int64_t span = ms / 5;
    return span > 0 ? ms - span / 2 + (int64_t)(ob->rng % (uint64_t)span) : ms;
}

static void add_done(cti_outbound_t *ob, const cti_attempt_t *a, char *err)
{
    if (ob->ndone == ob->capdone) {
        ob->capdone = ob->capdone ? 2 * ob->capdone : 64;
        ob->done = cti_realloc(ob->done, (size_t)ob->capdone * sizeof *ob->done);
        ob->done_err = cti_realloc(ob->done_err, (size_t)ob->capdone * sizeof *ob->done_err);
    }
    ob->done[ob->ndone] = *a;
    ob->done[ob->ndone].error = err;
    ob->done_err[ob->ndone++] = err;
}

/* The endpoint's failing streak: started, ended, or long enough to disable it. */
static void note_endpoint(cti_outbound_t *ob, ep_t *ep, bool ok, int64_t now)
{
    if (!ep)
        return;
    /* A dead endpoint is not tried with every new event (each failing at once,
     * at the rate of ingest): it rests, longer while it keeps failing. Each
     * delivery keeps its own retry schedule; new ones wait out the rest. */
    ep->fails = ok ? 0 : ep->fails + 1;
    if (ok)
        ep->paused_until = 0;
    else {
        int shift = ep->fails - 1 < 7 ? ep->fails - 1 : 7;
        int64_t rest = (int64_t)PAUSE_MIN_MS << shift;
        ep->paused_until = now + (rest < PAUSE_MAX_MS ? rest : PAUSE_MAX_MS);
    }
    if (ok) {
        if (ep->e.failing_since && cti_endpoint_note_success(ob->db, ep->e.id) == 0)
            ep->e.failing_since = 0;
        return;
    }
    if (ep->e.failing_since && now - ep->e.failing_since < ob->disable_after_ms)
        return;
    bool disabled = false;
    if (cti_endpoint_note_failure(ob->db, ep->e.id, now, ob->disable_after_ms, &disabled) != 0)
        return;
    if (!ep->e.failing_since)
        ep->e.failing_since = now;
    if (disabled) {
        cti_log(CTI_LOG_WARN, NULL, "outbound: endpoint disabled after failing too long",
                CTI_LS("endpoint_id", ep->e.id), CTI_LS("app_id", ep->e.app_id),
                CTI_LI("failing_since", ep->e.failing_since));
        atomic_store(&ob->reload, true);
    }
}

static void finish(cti_outbound_t *ob, xfer_t *x, CURLcode res, int64_t now)
{
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    bool ok = code >= 200 && code < 300 && (res == CURLE_OK || res == CURLE_WRITE_ERROR);
    cti_attempt_t a = {.id = x->id, .attempts = x->attempts + 1, .attempted_at = now,
                       .status_code = (int)code};
    char *err = NULL;
    if (ok) {
        a.status = CTI_DLV_SUCCEEDED;
        if (x->attempts == 0 && now >= x->created_at)
            cti_histogram_observe(&cti_metrics.outbound_delivery_seconds,
                                  (uint64_t)(now - x->created_at) * 1000);
    } else {
        char text[ERROR_TEXT_MAX];
        if (x->blocked)
            snprintf(text, sizeof text, "refused to connect to %s: a private or local address "
                                        "(OUTBOUND_ALLOW_PRIVATE)", x->blocked_addr);
        else if (res == CURLE_OPERATION_TIMEDOUT)
            snprintf(text, sizeof text, "no answer within %d ms", ob->timeout_ms);
        else if (res != CURLE_OK && res != CURLE_WRITE_ERROR)
            snprintf(text, sizeof text, "%.180s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(res));
        else { /* an answer, not 2xx: its status and first bytes, one line */
            int n = snprintf(text, sizeof text, "HTTP %ld: ", code);
            for (size_t i = 0; x->answer[i] && n < (int)sizeof text - 1; i++)
                text[n++] = (x->answer[i] >= 32 && x->answer[i] < 127) ? x->answer[i] : ' ';
            text[n] = '\0';
        }
        err = cti_strdup(text);
        bool again = x->attempts < ob->retries;
        a.status = again ? CTI_DLV_PENDING : CTI_DLV_FAILED;
        if (again)
            a.next_attempt_at = now + jitter(ob, ob->retry_ms[x->attempts]);
    }
    cti_metrics_outbound_delivery(ok ? "delivered" : a.status == CTI_DLV_FAILED ? "failed"
                                                                                : "retrying");
    add_done(ob, &a, err);
    ep_t *ep = find_ep(ob, x->endpoint_id);
    if (ep && a.status == CTI_DLV_PENDING && (!ep->retry_at || a.next_attempt_at < ep->retry_at))
        ep->retry_at = a.next_attempt_at; /* polled then, not at the next idle poll */
    if (ep) {
        ep->in_flight--;
        if (ep->next_poll > now)
            ep->next_poll = now; /* a slot opened; the call's next event may be due */
    }
    ob->in_flight--;
    note_endpoint(ob, ep, ok, now);
    free_xfer(ob, x);
}

static void free_done(cti_outbound_t *ob)
{
    for (int i = 0; i < ob->ndone; i++)
        free(ob->done_err[i]);
    ob->ndone = 0;
}

/* ---- leasing ---------------------------------------------------------------------------- */

typedef struct {
    cti_outbound_t *ob;
    int ep;
    int64_t now;
    int n;
} leasing_t;

static int on_lease(const cti_lease_t *l, void *ud)
{
    leasing_t *ls = ud;
    cti_outbound_t *ob = ls->ob;
    ls->n++;
    if (!l->body) { /* purged by retention before it could be sent */
        cti_attempt_t a = {.id = l->id, .status = CTI_DLV_FAILED, .attempts = l->attempts,
                           .attempted_at = ls->now};
        add_done(ob, &a, cti_strdup("the event is no longer retained (RETENTION_DAYS)"));
        return 0;
    }
    if (ob->nstarting == ob->capstarting) {
        ob->capstarting = ob->capstarting ? 2 * ob->capstarting : 64;
        ob->starting = cti_realloc(ob->starting, (size_t)ob->capstarting * sizeof *ob->starting);
        ob->starting_ep =
            cti_realloc(ob->starting_ep, (size_t)ob->capstarting * sizeof *ob->starting_ep);
    }
    ob->starting[ob->nstarting] = *l;
    ob->starting[ob->nstarting].body = cti_strdup(l->body);
    ob->starting_ep[ob->nstarting++] = ls->ep;
    ob->eps[ls->ep].in_flight++; /* its room is taken now */
    ob->in_flight++;
    return 0;
}

/* Is any endpoint with room due for a poll at now? Else *next says when. */
static bool any_due(cti_outbound_t *ob, int64_t now, int64_t *next)
{
    *next = now + IDLE_POLL_MS;
    if (ob->in_flight >= ob->max_in_flight)
        return false;
    for (int i = 0; i < ob->neps; i++) {
        ep_t *ep = &ob->eps[i];
        if (ep->in_flight >= ob->ep_max)
            continue;
        int64_t at = ep->next_poll > ep->paused_until ? ep->next_poll : ep->paused_until;
        if (at <= now)
            return true;
        if (at < *next)
            *next = at;
    }
    return false;
}

/* Leases what is due for each endpoint with room, in the caller's transaction. */
static int lease_due(cti_outbound_t *ob, int64_t now)
{
    for (int i = 0; i < ob->neps && ob->in_flight < ob->max_in_flight; i++) {
        ep_t *ep = &ob->eps[i];
        int room = ob->ep_max - ep->in_flight;
        if (room > ob->max_in_flight - ob->in_flight)
            room = ob->max_in_flight - ob->in_flight;
        if (room <= 0 || ep->next_poll > now || ep->paused_until > now)
            continue;
        leasing_t ls = {ob, i, now, 0};
        int rc = cti_deliveries_lease(ob->db, ep->e.id, ep->e.app_id, now,
                                      (int64_t)ob->timeout_ms + LEASE_MARGIN_MS, room, on_lease,
                                      &ls);
        if (rc != 0)
            return rc;
        /* a full lease: more may be due as soon as a slot opens */
        ep->next_poll = ls.n < room ? now + IDLE_POLL_MS : now;
        if (ep->retry_at > now && ep->retry_at < ep->next_poll)
            ep->next_poll = ep->retry_at;
        else if (ep->retry_at <= now)
            ep->retry_at = 0;
    }
    return 0;
}

/* One transaction: the attempts that ended are recorded, due deliveries
 * leased; once it commits, the leased ones are sent. Returns the store's
 * error (then nothing is sent: what was leased is not, and what ended is
 * sent again when its lease runs out — at least once). */
static int turn(cti_outbound_t *ob, int64_t now)
{
    int64_t next;
    bool due = any_due(ob, now, &next);
    if (!due && !ob->ndone)
        return 0;
    int rc = cti_db_begin(ob->db);
    if (rc == 0 && ob->ndone)
        rc = cti_deliveries_record(ob->db, ob->done, ob->ndone);
    if (rc == 0 && due)
        rc = lease_due(ob, now);
    if (rc == 0)
        rc = cti_db_commit(ob->db);
    else
        cti_db_rollback(ob->db);
    for (int i = 0; i < ob->nstarting; i++) {
        ep_t *ep = &ob->eps[ob->starting_ep[i]];
        if (rc == 0)
            start_attempt(ob, ep, &ob->starting[i], now);
        else /* not leased after all: its slot is free again */
            ep->in_flight--, ob->in_flight--;
        free((char *)ob->starting[i].body);
    }
    ob->nstarting = 0;
    if (rc != 0) {
        cti_log(CTI_LOG_WARN, NULL, "outbound: store error; deliveries wait for their leases",
                CTI_LI("attempts_unrecorded", ob->ndone), CTI_LS("error", cti_strerror(rc)));
        for (int i = 0; i < ob->neps; i++)
            if (ob->eps[i].next_poll <= now)
                ob->eps[i].next_poll = now + ERROR_POLL_MS;
    }
    free_done(ob);
    return rc;
}

/* The endpoints of the apps woken since the last turn are due now. */
static void take_wakes(cti_outbound_t *ob)
{
    char apps[WOKEN_MAX][37];
    pthread_mutex_lock(&ob->mu);
    int n = ob->nwoken;
    bool all = ob->woken_all;
    memcpy(apps, ob->woken, (size_t)n * sizeof apps[0]);
    ob->nwoken = 0;
    ob->woken_all = false;
    pthread_mutex_unlock(&ob->mu);
    for (int i = 0; i < ob->neps; i++) {
        bool due = all;
        for (int j = 0; !due && j < n; j++)
            due = !strcmp(apps[j], ob->eps[i].e.app_id);
        if (due)
            ob->eps[i].next_poll = 0;
    }
}

/* ---- the thread ------------------------------------------------------------------------- */

static void *sender_main(void *ud)
{
    cti_outbound_t *ob = ud;
    pthread_setname_np(pthread_self(), "cti-outbound");
    while (!atomic_load(&ob->stop)) {
        int64_t now = cti_now_ms();
        if (atomic_exchange(&ob->reload, false) || now >= ob->next_reload)
            reload(ob, now);
        if (atomic_exchange(&ob->wake, false))
            take_wakes(ob);
        turn(ob, now);

        int running = 0;
        curl_multi_perform(ob->multi, &running);
        CURLMsg *m;
        int left;
        now = cti_now_ms();
        while ((m = curl_multi_info_read(ob->multi, &left)))
            if (m->msg == CURLMSG_DONE) {
                xfer_t *x;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
                finish(ob, x, m->data.result, now);
            }
        int64_t next;
        if (ob->ndone || any_due(ob, now, &next))
            continue; /* record them, and lease again, at once */
        int64_t wait = next - now;
        if (ob->next_reload - now < wait)
            wait = ob->next_reload - now;
        if (wait < 0)
            wait = 0;
        curl_multi_poll(ob->multi, NULL, 0, (int)(wait > 1000 ? 1000 : wait), NULL);
    }
    return NULL;
}

/* ---- public ----------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static bool curl_ready;

static void curl_init_once(void)
{
    curl_ready = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

cti_outbound_t *cti_outbound_start(const cti_config_t *cfg, cti_store_t *store,
                                   const cti_seal_keys_t *keys)
{
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ready)
        return NULL;
    cti_outbound_t *ob = cti_calloc(1, sizeof *ob);
    ob->store = store;
    ob->keys = keys;
    ob->timeout_ms = cfg->outbound_timeout_ms;
    ob->max_in_flight = cfg->outbound_max_in_flight;
    ob->ep_max = cfg->outbound_endpoint_in_flight;
    ob->production = cfg->env == CTI_ENV_PRODUCTION;
    ob->allow_private = cfg->outbound_allow_private;
    ob->retries = cfg->outbound_retries;
    memcpy(ob->retry_ms, cfg->outbound_retry_ms, sizeof ob->retry_ms);
    ob->disable_after_ms = cfg->outbound_disable_after_ms;
    cti_random_bytes(&ob->rng, sizeof ob->rng);
    ob->rng |= 1;
    pthread_mutex_init(&ob->mu, NULL);
    cti_store_connect_relaxed(store, &ob->db); /* a lost commit: one more attempt */
    /* SQLite serves one instance: leases left by a process that died are its own */
    if (!cti_store_has(store, CTI_CAP_SKIP_LOCKED))
        cti_deliveries_release_all(ob->db);
    ob->multi = curl_multi_init();
    if (!ob->multi)
        goto fail;
    curl_multi_setopt(ob->multi, CURLMOPT_MAXCONNECTS, (long)ob->max_in_flight);
    atomic_store(&ob->reload, true);
    if (pthread_create(&ob->thread, NULL, sender_main, ob) != 0)
        goto fail;
    return ob;
fail:
    if (ob->multi)
        curl_multi_cleanup(ob->multi);
    cti_db_close(ob->db);
    pthread_mutex_destroy(&ob->mu);
    free(ob);
    return NULL;
}

void cti_outbound_stop(cti_outbound_t *ob)
{
    if (!ob)
        return;
    atomic_store(&ob->stop, true);
    curl_multi_wakeup(ob->multi);
    pthread_join(ob->thread, NULL);
    /* attempts still in flight are dropped; their leases run out and they are sent again */
    while (ob->xfers)
        free_xfer(ob, ob->xfers);
    if (ob->ndone && cti_db_begin(ob->db) == 0) { /* what ended before the stop */
        if (cti_deliveries_record(ob->db, ob->done, ob->ndone) == 0)
            cti_db_commit(ob->db);
        else
            cti_db_rollback(ob->db);
    }
    free_done(ob);
    cti_db_close(ob->db);
    ob->db = NULL;
}

void cti_outbound_free(cti_outbound_t *ob)
{
    if (!ob)
        return;
    curl_multi_cleanup(ob->multi); /* wakes until now found it still there */
    free_eps(ob->eps, ob->neps);
    free(ob->starting);
    free(ob->starting_ep);
    free(ob->done);
    free(ob->done_err);
    pthread_mutex_destroy(&ob->mu);
    free(ob);
}

/* Notes app_id (NULL: every app) as woken; true when the thread must be told. */
static bool note_woken(cti_outbound_t *ob, const char *app_id)
{
    bool added = false;
    if (!app_id) {
        added = !ob->woken_all;
        ob->woken_all = true;
        return added;
    }
    if (ob->woken_all)
        return false;
    for (int i = 0; i < ob->nwoken; i++)
        if (!strcmp(ob->woken[i], app_id))
            return false;
    if (ob->nwoken == WOKEN_MAX) {
        ob->woken_all = true;
        return true;
    }
    snprintf(ob->woken[ob->nwoken++], sizeof ob->woken[0], "%s", app_id);
    return true;
}

static void wake(cti_outbound_t *ob)
{
    atomic_store(&ob->wake, true);
    curl_multi_wakeup(ob->multi);
}

void cti_outbound_wake(cti_outbound_t *ob)
{
    if (!ob)
        return;
    pthread_mutex_lock(&ob->mu);
    note_woken(ob, NULL);
    pthread_mutex_unlock(&ob->mu);
    wake(ob);
}

void cti_outbound_reload(cti_outbound_t *ob)
{
    if (!ob)
        return;
    atomic_store(&ob->reload, true);
    cti_outbound_wake(ob);
}

void cti_outbound_published_cb(const cti_logrow_t *events, int n, void *ud)
{
    cti_outbound_t *ob = ud;
    if (!ob || n <= 0)
        return;
    bool tell = false;
    pthread_mutex_lock(&ob->mu);
    for (int i = 0; i < n; i++)
        tell |= note_woken(ob, events[i].app_id);
    pthread_mutex_unlock(&ob->mu);
    if (tell)
        wake(ob);
}
