/*
 * loadgen.c — webhook ingest load generator for make bench.
 *
 * Sends POSTs of unique, HS256-signed Dialpad call events (a realistic
 * ~1.3 KB payload, each with its own call_id/state/event_timestamp, so none
 * is a duplicate) over N keep-alive connections for a fixed time or count,
 * and prints one JSON line: sent, ok (200), other statuses, rate, latency
 * percentiles. Loopback only by intent: it is pointed at a server the bench
 * started itself.
 *
 *   loadgen --host 127.0.0.1 --port P --path /webhooks/dialpad/APP --secret S
 *           [--connections 32] [--seconds 10] [--count N] [--seed 1]
 *   loadgen ... --apps FILE       several apps: one "PATH SECRET" per line; calls go
 *                                 round-robin over them (both events of a call to
 *                                 the same app); replaces --path and --secret
 *   loadgen ... --ports P1,P2,..  several servers (instances on one database):
 *                                 connection i goes to port i mod n, as a
 *                                 round-robin load balancer would spread them
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/codec.h"
#include "dialpad/jwt.h"

#define MAX_CONNS 1024
#define MAX_PORTS 16
#define REQ_MAX 8192
#define RESP_MAX 4096

typedef struct {
    int fd, port; /* port: its index in opt.ports */
    char req[REQ_MAX];
    size_t req_len, req_off;
    char resp[RESP_MAX];
    size_t resp_len;
    int64_t sent_at;
    bool busy;
    bool watch_out; /* EPOLLOUT is in its epoll registration */
} conn_t;

static struct {
    const char *host, *path, *secret, *apps;
    int port, conns, seconds;
    long count, seed;
    int ports[MAX_PORTS], nports;
} opt = {"127.0.0.1", NULL, NULL, NULL, 0, 32, 10, 0, 1, {0}, 0};

typedef struct {
    char *path, *secret;
} target_t;

static target_t *targets; /* --apps, or the one --path/--secret */
static long ntargets;

static long next_id, sent, ok, bad, ok_by_port[MAX_PORTS];
static int64_t *lat;
static long nlat, caplat;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A unique call event: two states per call (ringing, then hangup). */
static size_t make_event(long n, char *out, size_t cap)
{
    long call = n / 2;
    int hangup = (int)(n % 2);
    long long call_id = 4000000000000000LL + opt.seed * 100000000LL + call;
    long long ts = 1767628800000LL + call * 10 + hangup * 5;
    return (size_t)snprintf(
        out, cap,
        "{\"call_id\":%lld,\"state\":\"%s\",\"direction\":\"inbound\","
        "\"external_number\":\"+1415555%04ld\",\"internal_number\":\"+14155550199\","
        "\"selected_caller_id\":null,\"date_started\":%lld,\"date_first_rang\":%lld,"
        "\"date_rang\":null,\"date_queued\":null,\"date_connected\":%s,\"date_ended\":%s,"
        "\"duration\":%s,\"total_duration\":%s,\"talk_time\":null,\"hold_time\":null,"
        "\"event_timestamp\":%lld,\"contact\":{\"id\":6272614887833600,\"type\":\"local\","
        "\"name\":\"(415) 555-0123\",\"phone\":\"+14155550123\",\"email\":\"\"},"
        "\"target\":{\"id\":5188674325413888,\"type\":\"user\",\"name\":\"Ana Lopez\","
        "\"email\":\"ana.lopez@example.com\",\"phone\":\"+14155550199\","
        "\"office_id\":5741031244955648},\"entry_point_call_id\":null,\"entry_point_target\":{},"
        "\"master_call_id\":null,\"operator_call_id\":null,\"proxy_target\":{},\"group_id\":null,"
        "\"is_internal\":false,\"is_transferred\":false,\"transferred_from\":{},"
        "\"target_availability_status\":\"open\",\"callback_requested\":null,\"csat_score\":null,"
        "\"mos_score\":null,\"labels\":[],\"routing_breadcrumbs\":[],\"was_recorded\":false,"
        "\"voicemail_link\":null,\"voicemail_recording_id\":null,\"call_recording_ids\":[],"
        "\"recording_details\":[],\"transcription_text\":null,\"integrations\":{}}",
        call_id, hangup ? "hangup" : "ringing", call % 10000, ts - 1000, ts - 900,
        hangup ? "1767628800100" : "null", hangup ? "1767628900100" : "null",
        hangup ? "100000.0" : "null", hangup ? "101000.5" : "null", ts);
}

static int epfd;

/* Writes what it can; watches for writability only while a write is unfinished
 * (a level-triggered EPOLLOUT on an idle socket would spin and steal a core),
 * changing the registration only when that changes (a system call per request
 * is the server's time taken from a shared core). */
static void flush(conn_t *c)
{
    while (c->req_off < c->req_len) {
        ssize_t w = write(c->fd, c->req + c->req_off, c->req_len - c->req_off);
        if (w <= 0)
            break;
        c->req_off += (size_t)w;
    }
    bool want_out = c->req_off < c->req_len;
    if (want_out == c->watch_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->watch_out = want_out;
}

static void build_request(conn_t *c)
{
    char ev[4096];
    long n = next_id++;
    const target_t *t = &targets[(n / 2) % ntargets]; /* a call's two events: one app */
    size_t evlen = make_event(n, ev, sizeof ev);
    char *jwt = cti_jwt_sign(ev, evlen, t->secret, strlen(t->secret));
    c->req_len = (size_t)snprintf(c->req, sizeof c->req,
                                  "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                                  "Content-Length: %zu\r\n\r\n%s",
                                  t->path, opt.host, strlen(jwt), jwt);
    free(jwt);
    c->req_off = 0;
    c->resp_len = 0;
    c->sent_at = now_us();
    c->busy = true;
    sent++;
}

static int connect_one(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    return fd;
}

/* Returns true when a whole response is in c->resp (then records it). */
static bool response_done(conn_t *c)
{
    char *end = memmem(c->resp, c->resp_len, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *cl = memmem(c->resp, (size_t)(end - c->resp), "Content-Length:", 15);
    size_t body = cl ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
    size_t total = (size_t)(end + 4 - c->resp) + body;
    if (c->resp_len < total)
        return false;
    int status = atoi(c->resp + 9);
    if (status == 200) {
        ok++;
        ok_by_port[c->port]++;
    }
    else
        bad++;
    if (nlat == caplat)
        lat = realloc(lat, (size_t)(caplat = caplat ? caplat * 2 : 65536) * sizeof *lat);
    lat[nlat++] = now_us() - c->sent_at;
    c->busy = false;
    return true;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* "PATH SECRET" per line; blank lines and lines starting with # are skipped. */
static void read_apps(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        perror(file);
        exit(2);
    }
    char line[1024], path[512], secret[512];
    long cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%511s %511s", path, secret) != 2)
            continue;
        if (ntargets == cap)
            targets = realloc(targets, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *targets);
        targets[ntargets++] = (target_t){strdup(path), strdup(secret)};
    }
    fclose(f);
    if (!ntargets) {
        fprintf(stderr, "loadgen: no \"PATH SECRET\" line in %s\n", file);
        exit(2);
    }
}

/* "P1,P2,..." */
static void read_ports(const char *list)
{
    for (const char *p = list; *p && opt.nports < MAX_PORTS;) {
        opt.ports[opt.nports++] = atoi(p);
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) opt.host = v;
        else if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--path")) opt.path = v;
        else if (!strcmp(k, "--secret")) opt.secret = v;
        else if (!strcmp(k, "--connections")) opt.conns = atoi(v);
        else if (!strcmp(k, "--seconds")) opt.seconds = atoi(v);
        else if (!strcmp(k, "--count")) opt.count = atol(v);
        else if (!strcmp(k, "--seed")) opt.seed = atol(v);
        else if (!strcmp(k, "--apps")) opt.apps = v;
        else if (!strcmp(k, "--ports")) read_ports(v);
        else { fprintf(stderr, "unknown option %s\n", k); exit(2); }
    }
    if (opt.port && !opt.nports)
        opt.ports[opt.nports++] = opt.port;
    bool one_app = opt.path && opt.secret;
    if (!opt.nports || opt.ports[0] <= 0 || one_app == (opt.apps != NULL) || opt.conns < 1 ||
        opt.conns > MAX_CONNS) {
        fprintf(stderr, "usage: loadgen --port P|--ports P1,P2 (--path /webhooks/dialpad/APP "
                        "--secret S | --apps FILE) [--connections N] [--seconds S] [--count N] "
                        "[--seed N]\n");
        exit(2);
    }
    if (opt.apps) {
        read_apps(opt.apps);
    } else {
        targets = malloc(sizeof *targets);
        targets[0] = (target_t){(char *)opt.path, (char *)opt.secret};
        ntargets = 1;
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    static conn_t conns[MAX_CONNS];
    int ep = epfd = epoll_create1(0);
    int64_t start = now_us(), deadline = start + (int64_t)opt.seconds * 1000000;
    for (int i = 0; i < opt.conns; i++) {
        conns[i].port = i % opt.nports;
        conns[i].fd = connect_one(opt.ports[conns[i].port]);
        build_request(&conns[i]);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev); /* OUT until connected */
        conns[i].watch_out = true;
    }
    long inflight = opt.conns;
    bool stopping = false;
    while (inflight > 0) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 100);
        if (!stopping && (now_us() >= deadline || (opt.count && sent >= opt.count)))
            stopping = true;
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                flush(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, c->resp + c->resp_len, RESP_MAX - c->resp_len);
                if (r <= 0 && errno != EAGAIN) {
                    fprintf(stderr, "connection closed by server\n");
                    close(c->fd);
                    inflight--;
                    continue;
                }
                if (r > 0)
                    c->resp_len += (size_t)r;
                if (response_done(c)) {
                    if (stopping) {
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        close(c->fd);
                        inflight--;
                    } else {
                        build_request(c);
                        flush(c);
                    }
                }
            }
        }
    }
    double secs = (double)(now_us() - start) / 1e6;
    qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
#define P(q) (nlat ? (double)lat[(long)((double)(nlat - 1) * (q))] / 1000.0 : 0.0)
    printf("{\"sent\":%ld,\"ok\":%ld,\"other\":%ld,\"seconds\":%.3f,\"rate\":%.0f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f",
           sent, ok, bad, secs, (double)ok / secs, P(0.5), P(0.99), P(1.0));
    if (opt.nports > 1 || ntargets > 1) { /* only then: the one-server line stays as it was */
        printf(",\"apps\":%ld,\"ok_by_port\":[", ntargets);
        for (int i = 0; i < opt.nports; i++)
            printf("%s%ld", i ? "," : "", ok_by_port[i]);
        printf("]");
    }
    printf("}\n");
    free(lat);
    return bad ? 1 : 0;
}
