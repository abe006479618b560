/*
 * cti-sim — realistic Dialpad traffic for a cti-server app, signed as
 * Dialpad signs it (the body is an HS256 JWT of the event).
 *
 *   cti-sim demo  --url http://127.0.0.1:4000 --app APP --secret S [--calls 4] [--speed 1]
 *       a few calls at human speed, saying what it does
 *   cti-sim burst --url ... --app APP --secret S [--calls 1000] [--connections 8]
 *       every flow's events, in order, as fast as possible over keep-alive connections
 *   cti-sim chaos --url ... --app APP --secret S [--calls 200] [--dups 0.5] [--retries 0.2]
 *       the same events duplicated, retried and shuffled (as Dialpad's at-least-once,
 *       out-of-order delivery does): the final state must be the in-order one
 *   --seed N makes every id, number, time and order reproducible; --print writes
 *   the events (JSON lines) to stdout instead of sending them.
 * Flows (Dialpad's webhook format, as in tests/fixtures): inbound answered (with hold), missed,
 * voicemail with transcription, outbound with recording and AI recap,
 * call center (entry leg, call-center leg, agent legs), transfer, SMS, agent status.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dialpad/jwt.h"

static struct {
    const char *mode, *app, *secret;
    char host[256];
    int port, calls, connections;
    double dups, retries, speed;
    uint64_t seed;
    bool print;
} o = {NULL, NULL, NULL, "127.0.0.1", 4000, 0, 8, 0.5, 0.2, 1.0, 1, false};

/* ---- deterministic randomness (xorshift64*) ------------------------------------ */

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ULL;
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* ---- people and numbers -------------------------------------------------------- */

typedef struct {
    long long id;
    const char *name, *email, *phone;
} agent_t;

static const agent_t agents[] = {
    {5188674325413888LL, "Ana Lopez", "ana.lopez@example.com", "+14155550199"},
    {5188674325413889LL, "Ben Okafor", "ben.okafor@example.com", "+14155550198"},
    {5188674325413890LL, "Chloe Martin", "chloe.martin@example.com", "+14155550197"},
};
static const char *const cities[] = {"San Francisco, CA", "New York, NY", "Austin, TX",
                                     "London, UK", "Seattle, WA"};
#define OFFICE_ID 5741031244955648LL
#define CALL_CENTER_ID 6466313488515072LL

typedef struct {
    json_t **items;
    int n, cap;
} events_t;

static void add(events_t *e, json_t *ev)
{
    if (e->n == e->cap)
        e->items = realloc(e->items, (size_t)(e->cap = e->cap ? 2 * e->cap : 64) * sizeof *e->items);
    e->items[e->n++] = ev;
}

/* A call leg's fixed fields; each event copies them and adds its state. */
typedef struct {
    long long call_id, master, entry, contact_id, t0;
    const char *direction;
    char external[16];
    const agent_t *agent;
    bool office, transferred;
} leg_t;

static long long next_id(void)
{
    return 4500000000000000LL + (long long)(rnd() % 1000000000000000ULL);
}

static json_t *id_or_null(long long v)
{
    return v ? json_integer(v) : json_null();
}

static json_t *leg_event(const leg_t *l, const char *state, long long ts, long long connected,
                         long long ended)
{
    json_t *target = l->office
        ? json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "id", (json_int_t)CALL_CENTER_ID, "type",
                    "callcenter", "name", "Support", "email", "", "phone", "+14155550100",
                    "office_id", (json_int_t)OFFICE_ID)
        : json_pack("{s:I, s:s, s:s, s:s, s:s, s:I}", "id", (json_int_t)l->agent->id, "type",
                    "user", "name", l->agent->name, "email", l->agent->email, "phone",
                    l->agent->phone, "office_id", (json_int_t)OFFICE_ID);
    json_t *ev = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:n, s:I, s:I, s:n, s:n, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:n, s:o, s:o, s:b, s:b, s:b, s:n, s:n, s:[], s:[], s:n, s:{}}",
        "call_id", (json_int_t)l->call_id, "state", state, "direction", l->direction,
        "external_number", l->external, "internal_number",
        l->office ? "+14155550100" : l->agent->phone, "selected_caller_id", "date_started",
        (json_int_t)l->t0, "date_first_rang", (json_int_t)(l->t0 + 300), "date_rang",
        "date_queued", "date_connected", id_or_null(connected), "date_ended", id_or_null(ended),
        "event_timestamp", (json_int_t)ts, "contact",
        json_pack("{s:I, s:s, s:s, s:s, s:s}", "id", (json_int_t)l->contact_id, "type", "local",
                  "name", cities[l->contact_id % 5], "phone", l->external, "email", ""),
        "target", target, "master_call_id", id_or_null(l->master), "entry_point_call_id",
        id_or_null(l->entry), "operator_call_id", id_or_null(0), "group_id",
        l->office ? "Office:5741031244955648" : "", "entry_point_target", json_object(),
        "voicemail_link", "transferred_from", l->transferred ? json_pack("{s:s}", "type", "user") : json_object(),
        "proxy_target", json_object(), "is_transferred", l->transferred, "is_internal", 0,
        "was_recorded", 0, "mos_score", "csat_score", "labels", "routing_breadcrumbs",
        "transcription_text", "integrations");
    if (ended) {
        double total = (double)(ended - l->t0) + rnd_int(0, 99) / 100.0;
        long long talk = connected ? ended - connected : 0;
        json_object_set_new(ev, "duration", json_real((double)talk));
        json_object_set_new(ev, "total_duration", json_real(total));
        json_object_set_new(ev, "talk_time", json_integer(talk));
        json_object_set_new(ev, "hold_time", json_integer(0));
    }
    return ev;
}

static leg_t new_leg(const char *direction, long long t0)
{
    leg_t l = {next_id(), 0, 0, 6272614887833600LL + rnd_int(0, 999), t0, direction, "", NULL,
               false, false};
    snprintf(l.external, sizeof l.external, "+1%03d555%04d", rnd_int(201, 989), rnd_int(0, 9999));
    l.agent = &agents[rnd_int(0, 2)];
    return l;
}

/* ---- the flows -------------------------------------------------------------------- */

static void flow_answered(events_t *e, long long t0, bool hold)
{
    leg_t l = new_leg("inbound", t0);
    long long c = t0 + rnd_int(3000, 9000), end = c + rnd_int(30000, 300000);
    add(e, leg_event(&l, "ringing", t0 + 500, 0, 0));
    add(e, leg_event(&l, "connected", c + 100, c, 0));
    if (hold) {
        add(e, leg_event(&l, "hold", c + 20000, c, 0));
        add(e, leg_event(&l, "connected", c + 35000, c, 0));
    }
    add(e, leg_event(&l, "hangup", end + 200, c, end));
}

static void flow_missed(events_t *e, long long t0)
{
    leg_t l = new_leg("inbound", t0);
    long long end = t0 + rnd_int(15000, 30000);
    add(e, leg_event(&l, "ringing", t0 + 500, 0, 0));
    add(e, leg_event(&l, "missed", end + 100, 0, end));
    add(e, leg_event(&l, "hangup", end + 130, 0, end));
}

static void flow_voicemail(events_t *e, long long t0)
{
    leg_t l = new_leg("inbound", t0);
    long long vm = t0 + 25000, end = vm + rnd_int(10000, 40000);
    char url[80], rid[24];
    long long rec = next_id();
    snprintf(url, sizeof url, "https://dialpad.com/r/%lld", rec);
    snprintf(rid, sizeof rid, "%lld", rec);
    add(e, leg_event(&l, "ringing", t0 + 500, 0, 0));
    add(e, leg_event(&l, "voicemail", vm, 0, 0));
    add(e, leg_event(&l, "hangup", end + 100, 0, end));
    for (int k = 0; k < 2; k++) {
        json_t *ev = leg_event(&l, k ? "transcription" : "voicemail_uploaded", end + 8000 + k * 11000,
                               0, end);
        json_object_set_new(ev, "voicemail_link", json_string(url));
        json_object_set_new(ev, "voicemail_recording_id", json_string(rid));
        json_object_set_new(ev, "recording_details",
                            json_pack("[{s:s, s:s, s:s, s:I, s:I}]", "id", rid, "recording_type",
                                      "voicemail", "url", url, "duration", (json_int_t)(end - vm),
                                      "start_time", (json_int_t)(vm + 100)));
        if (k)
            json_object_set_new(ev, "transcription_text",
                                json_string("Hi, please call me back about my order. Thanks."));
        add(e, ev);
    }
}

static void flow_outbound(events_t *e, long long t0)
{
    leg_t l = new_leg("outbound", t0);
    long long c = t0 + rnd_int(4000, 12000), end = c + rnd_int(20000, 200000);
    long long rec = next_id();
    char url[80], rid[24];
    snprintf(url, sizeof url, "https://dialpad.com/r/%lld", rec);
    snprintf(rid, sizeof rid, "%lld", rec);
    add(e, leg_event(&l, "calling", t0 + 100, 0, 0));
    add(e, leg_event(&l, "connected", c + 100, c, 0));
    add(e, leg_event(&l, "hangup", end + 100, c, end));
    json_t *ev = leg_event(&l, "recording", end + 20000, c, end);
    json_object_set_new(ev, "recording_url", json_pack("[s]", url));
    json_object_set_new(ev, "call_recording_ids", json_pack("[s]", rid));
    add(e, ev);
    ev = leg_event(&l, "recap_summary", end + 90000, c, end);
    json_object_set_new(ev, "recap_summary", json_string("Customer asked about delivery dates."));
    add(e, ev);
}

static void flow_call_center(events_t *e, long long t0)
{
    leg_t entry = new_leg("inbound", t0);
    entry.office = true;
    leg_t cc = entry;
    cc.call_id = next_id();
    cc.master = entry.call_id;
    long long answered_at = t0 + 12000, end = answered_at + rnd_int(30000, 120000);
    add(e, leg_event(&entry, "ringing", t0 + 200, 0, 0));
    add(e, leg_event(&cc, "queued", t0 + 600, 0, 0));
    for (int a = 0; a < 2; a++) { /* two agents rung; the second answers */
        leg_t ag = new_leg("inbound", t0 + 2000);
        memcpy(ag.external, entry.external, sizeof ag.external);
        ag.contact_id = entry.contact_id;
        ag.entry = cc.call_id;
        ag.agent = &agents[a];
        add(e, leg_event(&ag, "ringing", t0 + 2500, 0, 0));
        if (a == 0) {
            add(e, leg_event(&ag, "missed", t0 + 11000, 0, t0 + 11000));
            add(e, leg_event(&ag, "hangup", t0 + 11020, 0, t0 + 11000));
        } else {
            add(e, leg_event(&ag, "connected", answered_at + 50, answered_at, 0));
            add(e, leg_event(&ag, "hangup", end + 50, answered_at, end));
        }
    }
    add(e, leg_event(&cc, "connected", answered_at + 80, answered_at, 0));
    add(e, leg_event(&cc, "hangup", end + 80, answered_at, end));
    add(e, leg_event(&entry, "hangup", end + 120, answered_at, end));
}

static void flow_transfer(events_t *e, long long t0)
{
    leg_t first = new_leg("inbound", t0);
    long long c = t0 + 5000, moved = c + 40000, end = moved + 60000;
    add(e, leg_event(&first, "ringing", t0 + 300, 0, 0));
    add(e, leg_event(&first, "connected", c + 50, c, 0));
    add(e, leg_event(&first, "hangup", moved + 50, c, moved));
    leg_t second = first;
    second.call_id = next_id();
    second.agent = &agents[(first.agent - agents + 1) % 3];
    second.transferred = true;
    second.t0 = moved;
    add(e, leg_event(&second, "ringing", moved + 100, 0, 0));
    add(e, leg_event(&second, "connected", moved + 3000, moved + 2900, 0));
    add(e, leg_event(&second, "hangup", end + 50, moved + 2900, end));
}

static void flow_sms(events_t *e, long long t0)
{
    long long id = next_id();
    char from[16];
    const agent_t *a = &agents[rnd_int(0, 2)];
    snprintf(from, sizeof from, "+1%03d555%04d", rnd_int(201, 989), rnd_int(0, 9999));
    for (int k = 0; k < 2; k++)
        add(e, json_pack("{s:I, s:s, s:I, s:I, s:s, s:[s], s:{s:I, s:s, s:s, s:s}, s:{s:I, s:s, s:s}, s:n, s:[], s:b, s:b, s:n, s:s, s:n, s:s, s:s}",
                         "id", (json_int_t)id, "direction", "inbound", "created_date",
                         (json_int_t)t0, "event_timestamp", (json_int_t)(t0 + 400 + k * 2000),
                         "from_number", from, "to_number", a->phone, "target", "id",
                         (json_int_t)a->id, "type", "user", "name", a->name, "phone_number",
                         "(415) 555-0199", "contact", "id", (json_int_t)(id + 7), "name",
                         "Sam Carter", "phone_number", from, "sender_id", "admins",
                         "is_internal", 0, "mms", 0, "mms_url", "message_status",
                         k ? "success" : "pending", "message_delivery_result", "text",
                         "Running 10 min late", "text_content", "Running 10 min late"));
}

static void flow_agent(events_t *e, long long t0)
{
    static const char *const status[] = {"available", "busy", "wrapup", "unavailable"};
    const agent_t *a = &agents[rnd_int(0, 2)];
    add(e, json_pack("{s:{s:I, s:s, s:s, s:s, s:s}, s:s, s:s, s:n, s:[s], s:n, s:n, s:I, s:I}",
                     "target", "id", (json_int_t)a->id, "type", "user", "name", a->name, "email",
                     a->email, "phone_number", a->phone, "availability_status", "open",
                     "on_duty_status", status[rnd_int(0, 3)], "on_duty_status_reason",
                     "call_center_ids", "6466313488515072", "powerdialer_mode",
                     "powerdialer_session", "date", (json_int_t)t0, "event_timestamp",
                     (json_int_t)(t0 + 50)));
}

/* Every flow, round robin, each call starting a minute after the last. */
static void generate(events_t *e, int calls)
{
    long long t0 = 1767628800000LL + (long long)(o.seed % 1000) * 86400000LL;
    for (int i = 0; i < calls; i++, t0 += 60000) {
        switch (i % 8) {
        case 0: flow_answered(e, t0, false); break;
        case 1: flow_answered(e, t0, true); break;
        case 2: flow_missed(e, t0); break;
        case 3: flow_voicemail(e, t0); break;
        case 4: flow_outbound(e, t0); break;
        case 5: flow_call_center(e, t0); break;
        case 6: flow_transfer(e, t0); break;
        default: flow_sms(e, t0); flow_agent(e, t0); break;
        }
    }
}

/* ---- sending ---------------------------------------------------------------------- */

typedef struct {
    int fd;
} conn_t;

static int dial(void)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof port, "%d", o.port);
    if (getaddrinfo(o.host, port, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* POSTs one signed event; returns the HTTP status (0 on a connection problem). */
static int post(conn_t *c, json_t *ev, char *reply, size_t cap)
{
    char *payload = json_dumps(ev, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *jwt = cti_jwt_sign(payload, strlen(payload), o.secret, strlen(o.secret));
    size_t blen = strlen(jwt), rlen = blen + 512;
    char *req = malloc(rlen);
    int n = snprintf(req, rlen,
                     "POST /webhooks/dialpad/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                     "application/jwt\r\nContent-Length: %zu\r\n\r\n%s",
                     o.app, o.host, blen, jwt);
    free(payload);
    free(jwt);
    int status = 0;
    for (int attempt = 0; attempt < 2 && !status; attempt++) {
        if (c->fd < 0 && (c->fd = dial()) < 0)
            break;
        if (write(c->fd, req, (size_t)n) == n) {
            ssize_t got = read(c->fd, reply, cap - 1);
            if (got > 12) {
                reply[got] = '\0';
                status = atoi(reply + 9);
            }
        }
        if (!status) { /* the server closed a keep-alive connection: once more */
            close(c->fd);
            c->fd = -1;
        }
    }
    free(req);
    return status;
}

typedef struct {
    json_t **items;
    int from, to, step;
    long ok, dup, bad;
} slice_t;

static void *send_slice(void *arg)
{
    slice_t *s = arg;
    conn_t c = {-1};
    char reply[2048];
    for (int i = s->from; i < s->to; i += s->step) {
        int st = post(&c, s->items[i], reply, sizeof reply);
        if (st == 200)
            strstr(reply, "\"duplicate\":true") ? s->dup++ : s->ok++;
        else
            s->bad++;
    }
    if (c.fd >= 0)
        close(c.fd);
    return NULL;
}

static void summary(const char *mode, int events, long ok, long dup, long bad, double secs)
{
    printf("{\"mode\":\"%s\",\"seed\":%llu,\"events\":%d,\"stored\":%ld,\"duplicates\":%ld,"
           "\"failed\":%ld,\"seconds\":%.2f}\n",
           mode, (unsigned long long)o.seed, events, ok, dup, bad, secs);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sends items over K keep-alive connections, item i on connection i % K. */
static int send_all(const char *mode, json_t **items, int n, int k)
{
    pthread_t th[64];
    slice_t sl[64];
    double t0 = now_s();
    long ok = 0, dup = 0, bad = 0;
    k = k < 1 ? 1 : k > 64 ? 64 : k;
    for (int i = 0; i < k; i++) {
        sl[i] = (slice_t){items, i, n, k, 0, 0, 0};
        pthread_create(&th[i], NULL, send_slice, &sl[i]);
    }
    for (int i = 0; i < k; i++) {
        pthread_join(th[i], NULL);
        ok += sl[i].ok;
        dup += sl[i].dup;
        bad += sl[i].bad;
    }
    summary(mode, n, ok, dup, bad, now_s() - t0);
    return bad ? 1 : 0;
}

static void shuffle(json_t **a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1));
        json_t *t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static int run_demo(events_t *e)
{
    conn_t c = {-1};
    char reply[2048];
    long ok = 0, bad = 0;
    double t0 = now_s();
    for (int i = 0; i < e->n; i++) {
        json_t *ev = e->items[i];
        const char *what = json_string_value(json_object_get(ev, "state"));
        if (!what)
            what = json_object_get(ev, "message_status") ? "sms" : "agent status";
        long long id = json_integer_value(
            json_object_get(ev, json_object_get(ev, "call_id") ? "call_id" : "id"));
        const char *number = json_string_value(json_object_get(ev, "external_number"));
        int st = post(&c, ev, reply, sizeof reply);
        st == 200 ? ok++ : bad++;
        fprintf(stderr, "%-18s %-12s %lld -> HTTP %d\n", what, number ? number : "", id, st);
        usleep((useconds_t)(800000 / (o.speed > 0 ? o.speed : 1)));
    }
    summary("demo", e->n, ok, 0, bad, now_s() - t0);
    return bad ? 1 : 0;
}

static int run_chaos(events_t *e)
{
    json_t **all = malloc((size_t)e->n * 3 * sizeof *all);
    int n = 0;
    for (int i = 0; i < e->n; i++) {
        all[n++] = e->items[i];
        if (rnd_unit() < o.dups)
            all[n++] = e->items[i]; /* delivered twice */
        if (rnd_unit() < o.retries)
            all[n++] = e->items[i]; /* a retry after a timeout */
    }
    shuffle(all, n);
    int rc = send_all("chaos", all, n, o.connections);
    free(all);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: cti-sim demo|burst|chaos --url http://HOST:PORT --app APP_ID --secret S\n"
                    "       [--calls N] [--connections K] [--dups P] [--retries P] [--speed X]\n"
                    "       [--seed N] [--print]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    o.mode = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--print")) { o.print = true; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(k, "--url")) {
            if (sscanf(v, "http://%255[^:/]:%d", o.host, &o.port) < 1) usage();
        } else if (!strcmp(k, "--app")) o.app = v;
        else if (!strcmp(k, "--secret")) o.secret = v;
        else if (!strcmp(k, "--calls")) o.calls = atoi(v);
        else if (!strcmp(k, "--connections")) o.connections = atoi(v);
        else if (!strcmp(k, "--dups")) o.dups = atof(v);
        else if (!strcmp(k, "--retries")) o.retries = atof(v);
        else if (!strcmp(k, "--speed")) o.speed = atof(v);
        else if (!strcmp(k, "--seed")) o.seed = strtoull(v, NULL, 10);
        else usage();
    }
    bool demo = !strcmp(o.mode, "demo");
    if ((!o.app || !o.secret) && !o.print)
        usage();
    if (!demo && strcmp(o.mode, "burst") && strcmp(o.mode, "chaos"))
        usage();
    rng = o.seed * 0x9E3779B97F4A7C15ULL + 1;
    events_t e = {0};
    generate(&e, o.calls ? o.calls : demo ? 4 : strcmp(o.mode, "burst") ? 200 : 1000);
    int rc = 0;
    if (o.print) {
        for (int i = 0; i < e.n; i++) {
            char *s = json_dumps(e.items[i], JSON_COMPACT | JSON_PRESERVE_ORDER);
            printf("%s\n", s);
            free(s);
        }
    } else if (demo) {
        rc = run_demo(&e);
    } else if (!strcmp(o.mode, "burst")) {
        rc = send_all("burst", e.items, e.n, o.connections);
    } else {
        rc = run_chaos(&e);
    }
    for (int i = 0; i < e.n; i++)
        json_decref(e.items[i]);
    free(e.items);
    return rc;
}
