#!/usr/bin/python3
"""make bench: starts the optimized cti-server on a fresh store (SQLite, then a
private PostgreSQL), drives it with wrk (keep-alive, loopback only), and prints
a table of medians over repeated runs. Writes the table to docs/PERFORMANCE.md.

Bounded: every run has a fixed duration; the whole bench takes a few minutes.
Usage: tools/bench.py [--quick] [--no-write]
       tools/bench.py --fanout-only [--runs N]   (fan-out alone, SQLite, N runs; writes nothing)
"""
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "cti-server")
LOADGEN = os.path.join(ROOT, "build", "release", "tools", "loadgen")
WSBENCH = os.path.join(ROOT, "build", "release", "tools", "wsbench")
WS_IDLE = 19000
WS_FANOUT = 10000
# a server allowed enough sockets
WS_ENV = {"WS_MAX_CONNECTIONS": "20000", "WS_MAX_PER_APP": "20000", "MAX_CONNECTIONS": "20000"}
FANOUT_IDLE_MS = 500  # the client asleep this long after each POST (longer than a fan-out here)
CALLS = 100_000
HARNESS = os.path.join(ROOT, "tests", "pg-harness.sh")
ADMIN = "bench-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"
def arg(name, default):
    """The value after option name on the command line, else default."""
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


QUICK = "--quick" in sys.argv
RUNS = 1 if QUICK else 3
DURATION = 3 if QUICK else 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return json.loads(text) if text else None


class Server:
    def __init__(self, database, extra_env=None):
        self.dir = tempfile.mkdtemp(prefix="cti-bench.")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {"PATH": os.environ["PATH"], "PORT": str(self.port), "LOG_LEVEL": "warn",
               "INTERNAL_API_SECRET": ADMIN, "DATABASE_URL": database or f"sqlite:{self.dir}/bench.db",
               # the per-app and per-address request limits would cap every figure here
               "RATE_LIMIT_API": "0", "RATE_LIMIT_ADMIN": "0"}
        env.update(extra_env or {})
        self.proc = subprocess.Popen([BIN], cwd=self.dir, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "server.log"), "wb"))
        for _ in range(200):
            try:
                urllib.request.urlopen(self.base + "/health", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("server did not start")

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def private_kb(self):
        """The process's own memory: RSS less the shared libraries' file pages."""
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            text = f.read()
        return sum(int(re.search(rf"{k}:\s+(\d+)", text).group(1))
                   for k in ("Private_Dirty", "Private_Clean"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk(url, headers=(), connections=64, threads=2):
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{DURATION}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} error responses for {url}:\n{out}")
    return rps, float(p99.group(1)) * scale


def median_run(url, headers=()):
    results = [wrk(url, headers) for _ in range(RUNS)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def one_at_a_time(srv, path, headers, seconds=3):
    """Latency of requests sent one after another on one keep-alive connection
    (a Python client: its own overhead, ~0.1 ms, is included). (p50, p99) in ms."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    lat, end = [], time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"{path} answered {r.status}")
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    lat.sort()
    return lat[len(lat) // 2], lat[len(lat) * 99 // 100]


def loadgen(srv, app, seconds=0, count=0, seed=1, connections=32):
    cmd = [LOADGEN, "--port", str(srv.port), "--path", f"/webhooks/dialpad/{app['app_id']}",
           "--secret", app["webhook_secret"], "--connections", str(connections), "--seed", str(seed)]
    cmd += ["--seconds", str(seconds or 3600)] + (["--count", str(count)] if count else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stdout} {out.stderr}")
    return json.loads(out.stdout)


def drain_seconds(srv, limit=120):
    """Seconds until every stored webhook has been applied (the processing lag)."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if http("GET", srv.base + "/health").get("pending_events") == 0:
            return time.time() - t0
        time.sleep(0.02)
    return float("inf")


def bench_ingest(name, srv, app, rows):
    rates = []
    for run in range(RUNS):
        r = loadgen(srv, app, seconds=DURATION, seed=100 + run)
        rates.append((r["rate"], r["p50_ms"], r["p99_ms"], drain_seconds(srv), r["ok"]))
    rate, p50, p99, lag, _ = sorted(rates)[len(rates) // 2]
    rows.append((name, "durable ingest: unique signed webhooks, 32 keep-alive connections",
                 f"{rate:,.0f} webhooks/s", f"ack p50 {p50:.2f} ms, p99 {p99:.2f} ms"))
    rows.append((name, "processing lag: backlog drained after the load stops", f"{lag:.2f} s",
                 "backlog 0 at the end" if lag != float("inf") else "NOT drained"))
    return sum(x[4] for x in rates)


def bench_queries(name, srv, app, sent, rows):
    """Seeds CALLS calls (2 events each) through ingest, then reads."""
    missing = 2 * CALLS - sent
    if missing > 0:
        loadgen(srv, app, count=missing, seed=999, connections=64)
        drain_seconds(srv, limit=600)
    key = [f"X-API-Key: {app['api_key']}"]
    for path, what in (("/api/calls?limit=50", "GET /api/calls?limit=50"),
                       ("/api/calls?limit=1", "GET /api/calls?limit=1"),
                       ("/api/screen-pop?number=%2B14155550042", "GET /api/screen-pop")):
        rps, p99 = median_run(srv.base + path, key)
        latency = f"p99 {p99:.2f} ms (64 connections)"
        if "screen-pop" in path:
            one50, one99 = one_at_a_time(srv, path, {"X-API-Key": app["api_key"]})
            latency += f"; one at a time: p50 {one50:.2f} ms, p99 {one99:.2f} ms"
        rows.append((name, f"{what} ({CALLS // 1000}k calls stored)", f"{rps:,.0f} req/s",
                     latency))


def wsbench(mode, srv, app, *args):
    cmd = [WSBENCH, mode, "--port", str(srv.port), "--app", app["app_id"], "--key", app["api_key"],
           "--secret", app["webhook_secret"], *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_ws(name, database, rows):
    """WebSocket latency, idle connections and fan-out, on a server allowed enough sockets."""
    srv = Server(database, WS_ENV)
    try:
        app = http("POST", srv.base + "/internal/apps", {"name": "ws"},
                   {"Authorization": f"Bearer {ADMIN}"})
        r = wsbench("latency", srv, app, "--rate", 1000, "--seconds", 3 if QUICK else 5)
        rows.append((name, "webhook → WebSocket latency at 1,000 events/s", f"p50 {r['p50_ms']:.2f} ms",
                     f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms"))
        if name != "sqlite":
            return
        before = srv.rss_kb()
        proc = subprocess.Popen([WSBENCH, "idle", "--port", str(srv.port), "--key", app["api_key"],
                                 "--count", str(WS_IDLE), "--hold", "4"],
                                stdout=subprocess.PIPE, text=True)
        opened = json.loads(proc.stdout.readline())["opened"]
        time.sleep(1)
        per = (srv.rss_kb() - before) * 1024 / max(opened, 1)
        proc.wait(60)
        rows.append((name, "concurrent idle WebSocket connections", f"{opened:,}",
                     f"{per / 1024:.1f} KiB server RSS each"))
        bench_fanout(name, srv, app, rows)
    finally:
        srv.stop()


def bench_fanout(name, srv, app, rows):
    """One event to WS_FANOUT sockets, timed from the webhook POST's send: when it arrived
    at each socket (the kernel's receive timestamp) and when wsbench read it (which waits
    behind wsbench's own reads of the other sockets, on the same cores as the server)."""
    r = wsbench("fanout", srv, app, "--count", WS_FANOUT, "--rounds", 3 if QUICK else 5)
    what = f"fan-out of one event to {r['sockets']:,} sockets (from the webhook POST)"
    if r["violations"] or r["no_timestamp"] or r["arrived_samples"] != r["sockets"] * r["rounds"]:
        raise SystemExit(f"wsbench fanout: arrival timestamps inconsistent: {r}")
    rows.append((name, what + ": arrived at the socket", f"p50 {r['arrived_p50_ms']:.1f} ms",
                 f"p99 {r['arrived_p99_ms']:.1f} ms, max {r['arrived_max_ms']:.1f} ms"))
    rows.append((name, what + ": read by the client", f"p50 {r['p50_ms']:.1f} ms",
                 f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"))
    # the same, the client asleep until every frame is in (no reads, no wake-ups on these
    # cores meanwhile): the server's part alone, as with readers on other machines
    q = wsbench("fanout", srv, app, "--count", WS_FANOUT, "--rounds", 3 if QUICK else 5,
                "--idle-ms", FANOUT_IDLE_MS, "--seed", 1)  # other events than the first run's
    if q["violations"] or q["no_timestamp"] or q["arrived_samples"] != q["sockets"] * q["rounds"]:
        raise SystemExit(f"wsbench fanout --idle-ms: arrival timestamps inconsistent: {q}")
    late = q["arrived_after_idle"]
    late = f" ({late:,} came after its {FANOUT_IDLE_MS} ms)" if late else ""
    rows.append((name, what + ": arrived at the socket, the client not reading meanwhile",
                 f"p50 {q['arrived_p50_ms']:.1f} ms",
                 f"p99 {q['arrived_p99_ms']:.1f} ms, max {q['arrived_max_ms']:.1f} ms{late}"))
    return r


def fanout_only():
    """The fan-out rows alone (SQLite, a fresh server per run): for measuring by hand."""
    runs = int(arg("--runs", "1"))
    rows = []
    for _ in range(runs):
        srv = Server(None, WS_ENV)
        try:
            app = http("POST", srv.base + "/internal/apps", {"name": "ws"},
                       {"Authorization": f"Bearer {ADMIN}"})
            bench_fanout("sqlite", srv, app, rows)
        finally:
            srv.stop()
        print("\n".join(f"| {b} | {w} | {f} | {l} |" for b, w, f, l in rows[-3:]), flush=True)


OUTBOUND_EVENTS = 20_000 if QUICK else 60_000


def outbound_endpoint(srv, app, port, enabled=True):
    return http("POST", srv.base + "/api/webhook-endpoints",
                {"url": f"http://127.0.0.1:{port}/hook"}, {"X-API-Key": app["api_key"]})


def hooksink(port, count, seconds=120):
    """A fast local receiver (wsbench hooksink) in the background; returns the process."""
    proc = subprocess.Popen([WSBENCH, "hooksink", "--sink", str(port), "--count", str(count),
                             "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)
    json.loads(proc.stdout.readline())  # {"listening": port}
    return proc


def bench_outbound(name, database, rows):
    """Outbound webhooks to a fast local receiver (tools/wsbench.c's hooksink: 204 at once):
    delivery while ingest runs flat out, a backlog drained with nothing else running, and
    the latency from the webhook POST to the endpoint at a steady rate."""
    srv = Server(database)
    try:
        app = http("POST", srv.base + "/internal/apps", {"name": "outbound"},
                   {"Authorization": f"Bearer {ADMIN}"})
        port = free_port()
        ep = outbound_endpoint(srv, app, port)
        sink = hooksink(port, OUTBOUND_EVENTS)
        lg = loadgen(srv, app, count=OUTBOUND_EVENTS, seed=300)
        got = json.loads(sink.communicate(timeout=300)[0].strip().splitlines()[-1])
        rows.append((name, f"outbound delivery while ingest runs ({OUTBOUND_EVENTS:,} webhooks "
                           f"in, one endpoint, 32 in flight)",
                     f"{got['per_second']:,.0f} deliveries/s",
                     f"{got['received']:,} delivered; ingest {lg['rate']:,.0f} webhooks/s meanwhile"))
        # a backlog: the same events again, replayed to a new endpoint, nothing else running
        http("DELETE", srv.base + f"/api/webhook-endpoints/{ep['id']}", None,
             {"X-API-Key": app["api_key"]})
        port = free_port()
        ep = outbound_endpoint(srv, app, port)
        sink = hooksink(port, OUTBOUND_EVENTS)
        http("POST", srv.base + f"/api/webhook-endpoints/{ep['id']}/replay", {"since_seq": 0},
             {"X-API-Key": app["api_key"]})
        got = json.loads(sink.communicate(timeout=300)[0].strip().splitlines()[-1])
        rows.append((name, "outbound backlog drained (a replay of them all, nothing else running)",
                     f"{got['per_second']:,.0f} deliveries/s", f"{got['received']:,} delivered"))
        http("DELETE", srv.base + f"/api/webhook-endpoints/{ep['id']}", None,
             {"X-API-Key": app["api_key"]})
        port = free_port()
        outbound_endpoint(srv, app, port)
        time.sleep(0.2)
        out = subprocess.run([WSBENCH, "hooks", "--port", str(srv.port), "--app", app["app_id"],
                              "--secret", app["webhook_secret"], "--sink", str(port), "--rate",
                              "1000", "--seconds", str(3 if QUICK else 5)],
                             capture_output=True, text=True, timeout=120)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((name, "webhook POST → outbound endpoint latency at 1,000 events/s",
                     f"p50 {r['p50_ms']:.2f} ms",
                     f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms ({r['samples']:,} of "
                     f"{r['sent']:,})"))
    finally:
        srv.stop()


def bench_backend(name, database):
    srv = Server(database)
    rows = []
    try:
        time.sleep(1)  # the threads' first rounds
        rows.append((name, "idle RSS", f"{srv.rss_kb() / 1024:.1f} MiB",
                     f"{srv.private_kb() / 1024:.1f} MiB of it the process's own (the rest: "
                     f"shared libraries' pages)"))
        app = http("POST", srv.base + "/internal/apps", {"name": "bench"},
                   {"Authorization": f"Bearer {ADMIN}"})
        key = app["api_key"]
        rps, p99 = median_run(srv.base + "/health")
        rows.append((name, "GET /health (database ping)", f"{rps:,.0f} req/s", f"p99 {p99:.2f} ms"))
        rps, p99 = median_run(srv.base + "/api/user-mappings", [f"X-API-Key: {key}"])
        rows.append((name, "GET /api/user-mappings, valid API key (authenticated REST)",
                     f"{rps:,.0f} req/s", f"p99 {p99:.2f} ms"))
        sent = bench_ingest(name, srv, app, rows)
        if not QUICK:
            bench_queries(name, srv, app, sent, rows)
        rows.append((name, "RSS after load", f"{srv.rss_kb() / 1024:.1f} MiB", ""))
    finally:
        srv.stop()
    bench_ws(name, database, rows)
    bench_outbound(name, database, rows)
    return rows


def bench_ingest_only(name, database):
    """Durable ingest alone, on a fresh database (the same cluster, another way in)."""
    srv = Server(database)
    rows = []
    try:
        app = http("POST", srv.base + "/internal/apps", {"name": "bench"},
                   {"Authorization": f"Bearer {ADMIN}"})
        bench_ingest(name, srv, app, rows)
    finally:
        srv.stop()
    return rows


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def main():
    if not os.path.exists(BIN):
        raise SystemExit("build first: make cti-server")
    if "--fanout-only" in sys.argv:
        return fanout_only()
    rows = bench_backend("sqlite", None)
    pgdir = tempfile.mkdtemp(prefix="cti-bench-pg.")
    os.chmod(pgdir, 0o755)
    try:
        url = subprocess.run([HARNESS, "start", pgdir + "/pg"], capture_output=True, text=True,
                             check=True).stdout.strip()
        rows += bench_backend("postgres", url)
        subprocess.run([HARNESS, "destroy", pgdir + "/pg"])
        # A fresh cluster through its unix socket, as a server on the same host
        # would usually reach it: no TCP/IP stack on either side of each round trip.
        subprocess.run([HARNESS, "start", pgdir + "/pgu"], capture_output=True, check=True)
        with open(pgdir + "/pgu/port") as f:
            port = f.read().strip()
        rows += bench_ingest_only("postgres (unix socket)",
                                  f"postgres://postgres@/cti_test?host={pgdir}/pgu&port={port}")
    finally:
        for d in ("/pg", "/pgu"):
            subprocess.run([HARNESS, "destroy", pgdir + d])
        shutil.rmtree(pgdir, ignore_errors=True)

    header = f"Machine: {machine()}. Load generators on the same cores: wrk (2 threads, 64 " \
             f"keep-alive connections) for REST, tools/loadgen.c for webhooks. Median of {RUNS} " \
             f"runs of {DURATION} s. LOG_LEVEL=warn. SQLite with synchronous=FULL (every commit " \
             f"fsynced); PostgreSQL 15 with synchronous_commit=on, reached over TCP loopback " \
             f"(\"postgres\") and, for ingest, over its unix socket (a fresh cluster)."
    table = ["| backend | what | figure | latency |", "|---|---|---|---|"]
    table += [f"| {b} | {w} | {f} | {l} |" for b, w, f, l in rows]
    print(header)
    print("\n".join(table))
    if "--no-write" not in sys.argv and not QUICK:
        write_doc(header, table)


def write_doc(header, table, name="bench"):
    """The table into docs/PERFORMANCE.md between <!-- NAME:start/end --> (appended
    the first time), said to be produced by `make NAME`."""
    path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{start}\n{header}\n\n" + "\n".join(table) + \
            f"\n\nProduced by `make {name}` on {time.strftime('%Y-%m-%d')}.\n{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    open(path, "w").write(text)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
