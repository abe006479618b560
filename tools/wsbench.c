/*
 * wsbench.c — WebSocket measurements for make bench (loopback only).
 *
 *   wsbench latency --port P --app APP --key KEY --secret S [--rate 1000] [--seconds 5]
 *       one socket; signed webhooks POSTed at a steady rate on a keep-alive
 *       connection; prints webhook→WebSocket latency p50/p99/max.
 *   wsbench idle    --port P --key KEY --count N [--hold 5]
 *       opens N sockets (each gets its hello), holds them, prints how many
 *       opened; the caller reads the server's RSS meanwhile.
 *   wsbench fanout  --port P --app APP --key KEY --secret S --count N [--rounds 5]
 *       N sockets; one webhook per round; for each socket, from the moment the
 *       POST is sent: when the frame arrived at the socket (the kernel's
 *       receive timestamp, SO_TIMESTAMPNS) and when wsbench read it
 *       (p50/p99/max over all sockets and rounds of each). Reading 10,000
 *       sockets takes this client tens of ms of CPU on the cores it shares
 *       with the server, so the read time includes its own queueing; the
 *       arrival time does not. Each arrival is checked to be no later than its
 *       read (same clock); "violations" counts those that are not. Also
 *       arrived_min_ms (the first socket) and ack_ms (the POST's answer, mean);
 *       $WSBENCH_DUMP=FILE writes "round socket arrived_us read_us" lines.
 *       --idle-ms M: after each POST's answer, sleep M ms before reading any
 *       socket, so that the frames arrive while this client uses no CPU and
 *       no socket wakes it (as if the readers were on other machines); the
 *       arrival figures are then the server's alone, the read ones meaningless
 *       ("arrived_after_idle" counts frames that came after the sleep).
 *   wsbench spread  --port P --apps FILE [--per-app 10] [--rate 1000] [--seconds 5]
 *       several apps ("APP_ID KEY SECRET" per line): --per-app sockets of each
 *       app; signed webhooks POSTed at a steady rate, round-robin over the apps;
 *       prints webhook→WebSocket latency p50/p99/max over every socket's copy
 *       (each event reaches its own app's sockets only).
 *   latency and spread take --ws-port Q: the sockets open on another server
 *   (an instance on the same database) than the one the webhooks are POSTed to;
 *   and --seed N (fanout too): other call ids, so a second run's events are not duplicates.
 *   wsbench hooks   --port P --app APP --secret S --sink Q [--rate 1000] [--seconds 5]
 *       receives outbound webhooks on 127.0.0.1:Q (an endpoint of APP points
 *       there) while POSTing signed webhooks at a steady rate; prints webhook
 *       POST → endpoint latency p50/p99/max (the commit is in between).
 *   wsbench hooksink --sink Q --count N [--seconds 60]
 *       only receives, until N deliveries came (or the time is up; another
 *       process sends the load); prints deliveries/s from the first to the
 *       last, and how many came.
 * One JSON line of results on stdout. Sockets are plain epoll, frames parsed
 * by hand (server frames are never masked).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <stdatomic.h>

#include "dialpad/jwt.h"

#define MAX_WS 20000
#define BUF 65536

static struct {
    const char *mode, *app, *key, *secret, *apps;
    int port, rate, seconds, count, rounds, hold, sink, ws_port, per_app, idle_ms;
} o = {NULL, NULL, NULL, NULL, NULL, 0, 1000, 5, 1, 5, 5, 0, 0, 10, 0};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Blocking handshake with key, on --ws-port if given (else --port); leaves the
 * socket at the first frame. */
static int ws_open(const char *key)
{
    int fd = tcp_connect(o.ws_port ? o.ws_port : o.port);
    if (fd < 0)
        return -1;
    char req[512], resp[1024];
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nX-API-Key: %s\r\n\r\n",
                     key);
    if (write(fd, req, (size_t)n) != n)
        goto fail;
    size_t got = 0;
    while (got < sizeof resp - 1) { /* read exactly the headers, byte by byte (rare) */
        if (read(fd, resp + got, 1) != 1)
            goto fail;
        got++;
        if (got >= 4 && !memcmp(resp + got - 4, "\r\n\r\n", 4))
            break;
    }
    resp[got] = '\0';
    if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

typedef struct {
    int fd;
    char buf[BUF];
    size_t len;
    long frames;
    /* reads are recvmsg()s: with SO_TIMESTAMPNS on (fanout), the control
     * message is the kernel's receive time (CLOCK_REALTIME) of the last
     * segment the read took */
    struct msghdr msg;
    struct iovec iov;
    _Alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(struct timespec))];
    int64_t rx_ns; /* the last read's receive timestamp, ns CLOCK_REALTIME (0: none) */
    int idx;       /* open_many's order */
} ws_t;

/* Prepares w->msg for a read into the free part of w->buf. */
static struct msghdr *ws_msg(ws_t *w)
{
    w->iov = (struct iovec){.iov_base = w->buf + w->len, .iov_len = BUF - w->len};
    w->msg = (struct msghdr){.msg_iov = &w->iov,
                             .msg_iovlen = 1,
                             .msg_control = w->ctl,
                             .msg_controllen = sizeof w->ctl};
    return &w->msg;
}

/* After a read: its receive timestamp into w->rx_ns (0 if it carried none). */
static void ws_stamp(ws_t *w)
{
    w->rx_ns = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&w->msg); c; c = CMSG_NXTHDR(&w->msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof ts);
            w->rx_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
}

/* Calls fn for each complete text frame in w->buf. */
static void frames(ws_t *w, void (*fn)(ws_t *, const char *, size_t))
{
    size_t off = 0;
    for (;;) {
        if (w->len - off < 2)
            break;
        unsigned char *p = (unsigned char *)w->buf + off;
        size_t hl = 2, pl = p[1] & 0x7f;
        if (pl == 126) {
            if (w->len - off < 4)
                break;
            pl = (size_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (pl == 127) {
            if (w->len - off < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | p[2 + i];
            hl = 10;
        }
        if (w->len - off < hl + pl)
            break;
        if ((p[0] & 0x0f) == 1) {
            w->frames++;
            fn(w, (const char *)p + hl, pl);
        }
        off += hl + pl;
    }
    memmove(w->buf, w->buf + off, w->len - off);
    w->len -= off;
}

/* ---- sending webhooks ------------------------------------------------------------------ */

static int http_fd = -1;

typedef struct {
    char app[64], key[128], secret[128];
} app_t;

static app_t *apps; /* spread: --apps */
static int napps;

static void post_event_to(const char *app, const char *secret, long long call_id, long long ts)
{
    char ev[512], req[2048], resp[4096];
    int n = snprintf(ev, sizeof ev,
                     "{\"call_id\":%lld,\"state\":\"ringing\",\"direction\":\"inbound\","
                     "\"external_number\":\"+14155550123\",\"event_timestamp\":%lld}",
                     call_id, ts);
    char *jwt = cti_jwt_sign(ev, (size_t)n, secret, strlen(secret));
    n = snprintf(req, sizeof req,
                 "POST /webhooks/dialpad/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
                 app, strlen(jwt), jwt);
    free(jwt);
    if (http_fd < 0)
        http_fd = tcp_connect(o.port);
    if (write(http_fd, req, (size_t)n) != n) {
        perror("post");
        exit(1);
    }
    ssize_t r = read(http_fd, resp, sizeof resp - 1); /* small answer: one read */
    if (r <= 0 || strncmp(resp, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "webhook not accepted\n");
        exit(1);
    }
}

static void post_event(long long call_id, long long ts)
{
    post_event_to(o.app, o.secret, call_id, ts);
}

/* ---- results ---------------------------------------------------------------------------- */

static int64_t *lat;
static long nlat;

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *extra)
{
    qsort(lat, (size_t)nlat, sizeof *lat, cmp64);
#define Q(q) (nlat ? (double)lat[(long)((double)(nlat - 1) * (q))] / 1000.0 : -1.0)
    printf("{\"mode\":\"%s\",\"samples\":%ld,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f%s}\n",
           o.mode, nlat, Q(0.5), Q(0.99), Q(1.0), extra);
}

/* ---- latency ------------------------------------------------------------------------------ */

static int64_t *sent_at;
static long nsent;
static long long BASE_ID = 7000000000000000LL; /* + --seed × 10^7: runs of distinct events */

static void on_latency_frame(ws_t *w, const char *data, size_t len)
{
    int64_t t = now_us();
    const char *p = memmem(data, len, "\"call_id\":\"", 11);
    if (!p)
        return;
    long long id = atoll(p + 11);
    long i = (long)(id - BASE_ID);
    if (i >= 0 && i < nsent && sent_at[i])
        lat[nlat++] = t - sent_at[i];
}

static _Atomic int64_t sender_done_us; /* when latency_sender finished (0: not yet) */
static int64_t sender_start_us;

static void *latency_sender(void *arg)
{
    long total = (long)o.rate * o.seconds;
    int64_t start = sender_start_us = now_us();
    for (long i = 0; i < total; i++) {
        int64_t due = start + i * 1000000 / o.rate;
        while (now_us() < due)
            usleep(50);
        sent_at[i] = now_us();
        nsent = i + 1;
        if (napps) /* spread: round-robin over the apps */
            post_event_to(apps[i % napps].app, apps[i % napps].secret, BASE_ID + i,
                          1767600000000LL + i);
        else
            post_event(BASE_ID + i, 1767600000000LL + i);
    }
    atomic_store(&sender_done_us, now_us());
    return NULL;
}

static int run_latency(void)
{
    long total = (long)o.rate * o.seconds;
    sent_at = calloc((size_t)total, sizeof *sent_at);
    lat = calloc((size_t)total, sizeof *lat);
    nsent = total; /* frames may only match ids below total */
    ws_t *w = calloc(1, sizeof *w);
    if ((w->fd = ws_open(o.key)) < 0) {
        fprintf(stderr, "cannot open the WebSocket\n");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, latency_sender, NULL);
    int64_t end = now_us() + (int64_t)(o.seconds + 3) * 1000000;
    while (nlat < total && now_us() < end) {
        ssize_t r = read(w->fd, w->buf + w->len, BUF - w->len);
        if (r <= 0)
            break;
        w->len += (size_t)r;
        frames(w, on_latency_frame);
    }
    pthread_join(th, NULL);
    char extra[64];
    snprintf(extra, sizeof extra, ",\"rate\":%d,\"sent\":%ld", o.rate, total);
    report(extra);
    return nlat == total ? 0 : 1;
}

/* ---- idle and fan-out ------------------------------------------------------------------------ */

static ws_t **socks;
static int nsocks;

static int open_many(void)
{
    socks = calloc((size_t)o.count, sizeof *socks);
    for (int i = 0; i < o.count; i++) {
        ws_t *w = calloc(1, sizeof *w);
        if ((w->fd = ws_open(napps ? apps[i / o.per_app].key : o.key)) < 0) {
            free(w);
            break;
        }
        w->idx = nsocks;
        socks[nsocks++] = w;
    }
    return nsocks;
}

static int run_idle(void)
{
    int n = open_many();
    printf("{\"mode\":\"idle\",\"asked\":%d,\"opened\":%d}\n", o.count, n);
    fflush(stdout);
    sleep((unsigned)o.hold);
    return 0;
}

/* An epoll set over every socket of open_many. */
static int watch_all(int n)
{
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = socks[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, socks[i]->fd, &ev);
    }
    return ep;
}

/* A read of w (ws_msg) returned rr: its bytes, stamped, frame by frame to fn. */
static void took(ws_t *w, ssize_t rr, void (*fn)(ws_t *, const char *, size_t))
{
    if (rr <= 0)
        return;
    ws_stamp(w);
    w->len += (size_t)rr;
    frames(w, fn);
}

/* One wait (up to 100 ms) on ep: what the ready sockets have, frame by frame to fn.
 * The reads of all ready sockets go in one io_uring submission when the
 * kernel allows it: the client shares the server's cores, so its cost is
 * kept low. */
static void read_ready(int ep, void (*fn)(ws_t *, const char *, size_t))
{
    static struct io_uring ring;
    static int uring = -1; /* not tried yet */
    if (uring < 0)
        uring = io_uring_queue_init(512, &ring, 0) == 0;
    struct epoll_event evs[512];
    int k = epoll_wait(ep, evs, 512, 100);
    if (uring && k > 0) {
        for (int i = 0; i < k; i++) {
            ws_t *w = evs[i].data.ptr;
            struct io_uring_sqe *q = io_uring_get_sqe(&ring);
            io_uring_prep_recvmsg(q, w->fd, ws_msg(w), MSG_DONTWAIT);
            io_uring_sqe_set_data(q, w);
        }
        io_uring_submit_and_wait(&ring, (unsigned)k);
        for (int got = 0; got < k;) {
            struct io_uring_cqe *cqe;
            if (io_uring_wait_cqe(&ring, &cqe) != 0)
                continue;
            ws_t *w = io_uring_cqe_get_data(cqe);
            int rr = cqe->res;
            io_uring_cqe_seen(&ring, cqe);
            got++;
            took(w, rr, fn);
        }
        return;
    }
    for (int i = 0; i < k; i++) {
        ws_t *w = evs[i].data.ptr;
        took(w, recvmsg(w->fd, ws_msg(w), MSG_DONTWAIT), fn);
    }
}

/* the POST's send: CLOCK_MONOTONIC µs, CLOCK_REALTIME ns */
static int64_t round_sent, round_sent_ns;
static int round_got;
static int64_t *arr; /* fan-out: arrival at the socket, µs after the POST (kernel timestamp) */
/* after_idle: arrived once --idle-ms was over */
static long narr, no_stamp, violations, after_idle;
static int64_t idle_end_ns;
static int64_t ack_sum; /* fan-out: the POSTs' answers, µs after their send, summed */
static FILE *dump;      /* fan-out: $WSBENCH_DUMP, a line per socket and round */
static int round_no;

static void on_fanout_frame(ws_t *w, const char *data, size_t len)
{
    if (!memmem(data, len, "\"type\":\"event\"", 14))
        return;
    int64_t read_ns = real_ns(); /* the arrival's clock, to compare them */
    lat[nlat++] = now_us() - round_sent;
    round_got++;
    if (!w->rx_ns) {
        no_stamp++;
        return;
    }
    /* both on CLOCK_REALTIME: the kernel stamps skbs with it. An arrival before
     * the POST or after the read would be a wrong stamp (or a clock step). */
    if (w->rx_ns > read_ns || w->rx_ns < round_sent_ns)
        violations++;
    if (o.idle_ms && w->rx_ns > idle_end_ns)
        after_idle++;
    arr[narr++] = (w->rx_ns - round_sent_ns) / 1000;
    if (dump) /* round, socket (open order), arrived µs, read µs */
        fprintf(dump, "%d %d %lld %lld\n", round_no, w->idx, (long long)arr[narr - 1],
                (long long)lat[nlat - 1]);
}

static int run_fanout(void)
{
    int n = open_many();
    lat = calloc((size_t)n * (size_t)o.rounds + 1, sizeof *lat);
    arr = calloc((size_t)n * (size_t)o.rounds + 1, sizeof *arr);
    int one = 1, stamped = 0;
    for (int i = 0; i < n; i++)
        stamped += setsockopt(socks[i]->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) == 0;
    int ep = watch_all(n);
    if (getenv("WSBENCH_DUMP"))
        dump = fopen(getenv("WSBENCH_DUMP"), "w");
    sleep(1); /* hellos in flight */
    /* for a CPU probe of the server's threads over the rounds alone */
    fprintf(stderr, "wsbench fanout: %d sockets open; rounds begin\n", n);
    for (int r = 0; r < o.rounds; r++) {
        for (int i = 0; i < n; i++) { /* discard hellos and earlier rounds' frames */
            ws_t *w = socks[i];
            ssize_t rr;
            while ((rr = recv(w->fd, w->buf, BUF, MSG_DONTWAIT)) > 0)
                ;
            w->len = 0;
        }
        round_got = 0;
        round_sent_ns = real_ns();
        round_sent = now_us();
        round_no = r;
        post_event(BASE_ID + 500000 + r, 1767700000000LL + r);
        ack_sum += now_us() - round_sent;
        if (o.idle_ms) /* --idle-ms: not reading (nor waiting in epoll) meanwhile */
            usleep((useconds_t)o.idle_ms * 1000);
        idle_end_ns = real_ns();
        int64_t end = now_us() + 10000000;
        while (round_got < n && now_us() < end)
            read_ready(ep, on_fanout_frame);
    }
    fprintf(stderr, "wsbench fanout: rounds end\n");
    qsort(arr, (size_t)narr, sizeof *arr, cmp64);
#define A(q) (narr ? (double)arr[(long)((double)(narr - 1) * (q))] / 1000.0 : -1.0)
    char extra[400];
    snprintf(extra, sizeof extra,
             ",\"sockets\":%d,\"rounds\":%d,\"stamped_sockets\":%d,\"arrived_samples\":%ld,"
             "\"arrived_p50_ms\":%.3f,\"arrived_p99_ms\":%.3f,\"arrived_max_ms\":%.3f,"
             "\"arrived_min_ms\":%.3f,\"ack_ms\":%.3f,\"no_timestamp\":%ld,\"violations\":%ld,"
             "\"arrived_after_idle\":%ld",
             n, o.rounds, stamped, narr, A(0.5), A(0.99), A(1.0), A(0.0),
             (double)ack_sum / o.rounds / 1000.0, no_stamp, violations, after_idle);
    if (dump)
        fclose(dump);
    report(extra);
    if (violations)
        fprintf(stderr,
                "wsbench fanout: %ld arrival timestamps not between the POST and the read\n",
                violations);
    return violations ? 1 : 0;
}

/* ---- several apps ------------------------------------------------------------------------ */

/* "APP_ID KEY SECRET" per line; blank lines and lines starting with # skipped. */
static int read_apps(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        perror(file);
        return -1;
    }
    char line[512];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        app_t a;
        if (line[0] == '#' || sscanf(line, "%63s %127s %127s", a.app, a.key, a.secret) != 3)
            continue;
        if (napps == cap)
            apps = realloc(apps, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *apps);
        apps[napps++] = a;
    }
    fclose(f);
    return napps ? 0 : -1;
}

/* Sockets spread over the apps, webhooks round-robin over them: the latency of
 * every copy of every event (each reaches its app's --per-app sockets). */
static int run_spread(void)
{
    if (read_apps(o.apps) != 0 || o.per_app < 1 || (long)napps * o.per_app > MAX_WS) {
        fprintf(stderr, "wsbench spread: no apps read, or more than %d sockets\n", MAX_WS);
        return 2;
    }
    o.count = napps * o.per_app;
    int n = open_many();
    if (n < o.count) {
        fprintf(stderr, "wsbench spread: opened %d of %d sockets\n", n, o.count);
        return 1;
    }
    long total = (long)o.rate * o.seconds, expect = total * o.per_app;
    sent_at = calloc((size_t)total, sizeof *sent_at);
    lat = calloc((size_t)expect + 1, sizeof *lat);
    nsent = total;
    int ep = watch_all(n);
    pthread_t th;
    pthread_create(&th, NULL, latency_sender, NULL);
    for (;;) { /* until every copy came, or 3 s after the last webhook was answered */
        int64_t done = atomic_load(&sender_done_us);
        if (nlat >= expect || (done && now_us() > done + 3000000))
            break;
        read_ready(ep, on_latency_frame);
    }
    pthread_join(th, NULL);
    char extra[200]; /* sent_rate: what the sender kept up (each POST waits for its answer) */
    snprintf(extra, sizeof extra, ",\"rate\":%d,\"sent\":%ld,\"sent_rate\":%.0f,\"apps\":%d,"
             "\"sockets\":%d,\"expected\":%ld", o.rate, total,
             (double)total * 1e6 / (double)(sender_done_us - sender_start_us), napps, n, expect);
    report(extra);
    return nlat == expect ? 0 : 1;
}

/* ---- outbound webhooks ------------------------------------------------------------------- */

static atomic_long hooks_got;
static _Atomic int64_t hooks_first, hooks_last;
static pthread_mutex_t lat_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    char *buf;
    size_t len;
} upload_t;

/* Answers every POST 204; notes its time, and its latency when the event is
 * one latency_sender posted (its call_id says when). */
static enum MHD_Result on_hook(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **state)
{
    (void)cls, (void)url, (void)method, (void)version;
    upload_t *u = *state;
    if (!u) {
        *state = calloc(1, sizeof *u);
        return MHD_YES;
    }
    if (*size) {
        u->buf = realloc(u->buf, u->len + *size + 1);
        memcpy(u->buf + u->len, data, *size);
        u->len += *size;
        u->buf[u->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    int64_t t = now_us();
    int64_t zero = 0;
    atomic_compare_exchange_strong(&hooks_first, &zero, t);
    atomic_store(&hooks_last, t);
    atomic_fetch_add(&hooks_got, 1);
    const char *p = u->buf ? strstr(u->buf, "\"call_id\":\"") : NULL;
    if (p && sent_at) {
        long i = (long)(atoll(p + 11) - BASE_ID);
        pthread_mutex_lock(&lat_mu);
        if (i >= 0 && i < nsent && sent_at[i])
            lat[nlat++] = t - sent_at[i];
        pthread_mutex_unlock(&lat_mu);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ret;
}

static void hook_done(void *cls, struct MHD_Connection *c, void **state,
                      enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)c, (void)why;
    upload_t *u = *state;
    if (u)
        free(u->buf);
    free(u);
    *state = NULL;
}

static struct MHD_Daemon *start_sink(void)
{
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)o.sink, NULL, NULL, on_hook,
        NULL, MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_NOTIFY_COMPLETED, hook_done, NULL,
        MHD_OPTION_CONNECTION_LIMIT, 4000u, MHD_OPTION_END);
    if (!d)
        fprintf(stderr, "wsbench: cannot listen on port %d\n", o.sink);
    return d;
}

static int run_hooks(void)
{
    long total = (long)o.rate * o.seconds;
    lat = calloc((size_t)total, sizeof *lat);
    sent_at = calloc((size_t)total, sizeof *sent_at);
    nsent = total;
    struct MHD_Daemon *d = start_sink();
    if (!d)
        return 1;
    pthread_t th;
    pthread_create(&th, NULL, latency_sender, NULL);
    pthread_join(th, NULL);
    int64_t end = now_us() + 10000000;
    while (nlat < total && now_us() < end)
        usleep(10000);
    MHD_stop_daemon(d);
    char extra[64];
    snprintf(extra, sizeof extra, ",\"rate\":%d,\"sent\":%ld", o.rate, total);
    report(extra);
    return nlat == total ? 0 : 1;
}

static int run_hooksink(void)
{
    struct MHD_Daemon *d = start_sink();
    if (!d)
        return 1;
    printf("{\"listening\":%d}\n", o.sink);
    fflush(stdout);
    int64_t end = now_us() + (int64_t)(o.seconds > 5 ? o.seconds : 60) * 1000000;
    while (atomic_load(&hooks_got) < o.count && now_us() < end)
        usleep(10000);
    MHD_stop_daemon(d);
    long got = atomic_load(&hooks_got);
    double secs = (double)(atomic_load(&hooks_last) - atomic_load(&hooks_first)) / 1e6;
    printf("{\"mode\":\"hooksink\",\"received\":%ld,\"seconds\":%.3f,\"per_second\":%.0f}\n",
           got, secs, secs > 0 ? (double)got / secs : 0.0);
    return got >= o.count ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: wsbench latency|idle|fanout|spread|hooks|hooksink --port P "
                        "--key K [--app A --secret S] [--apps FILE --per-app K] [--ws-port Q] "
                        "[--sink Q] [--rate R] [--seconds S] [--count N] [--rounds R] "
                        "[--hold S] [--seed N] [--idle-ms M]\n");
        return 2;
    }
    o.mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port")) o.port = atoi(v);
        else if (!strcmp(k, "--app")) o.app = v;
        else if (!strcmp(k, "--key")) o.key = v;
        else if (!strcmp(k, "--secret")) o.secret = v;
        else if (!strcmp(k, "--rate")) o.rate = atoi(v);
        else if (!strcmp(k, "--seconds")) o.seconds = atoi(v);
        else if (!strcmp(k, "--count")) o.count = atoi(v);
        else if (!strcmp(k, "--rounds")) o.rounds = atoi(v);
        else if (!strcmp(k, "--hold")) o.hold = atoi(v);
        else if (!strcmp(k, "--sink")) o.sink = atoi(v);
        else if (!strcmp(k, "--ws-port")) o.ws_port = atoi(v);
        else if (!strcmp(k, "--apps")) o.apps = v;
        else if (!strcmp(k, "--per-app")) o.per_app = atoi(v);
        else if (!strcmp(k, "--idle-ms")) o.idle_ms = atoi(v);
        else if (!strcmp(k, "--seed")) BASE_ID += atoll(v) * 10000000LL;
    }
    if (!strcmp(o.mode, "spread") && o.port && o.apps)
        return run_spread();
    if (!strcmp(o.mode, "hooksink") && o.sink)
        return run_hooksink();
    if (!strcmp(o.mode, "hooks") && o.sink && o.port && o.app && o.secret)
        return run_hooks();
    if (!o.port || !o.key || o.count > MAX_WS) {
        fprintf(stderr, "wsbench: --port and --key are required; --count at most %d\n", MAX_WS);
        return 2;
    }
    if (!strcmp(o.mode, "latency"))
        return run_latency();
    if (!strcmp(o.mode, "idle"))
        return run_idle();
    if (!strcmp(o.mode, "fanout"))
        return run_fanout();
    fprintf(stderr, "wsbench: unknown mode %s\n", o.mode);
    return 2;
}
