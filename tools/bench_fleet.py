#!/usr/bin/python3
"""make bench-tenants / make bench-instances: flat cost as tenants and instances grow.

  tools/bench_fleet.py tenants   [--apps 1,100,1000] [--backends sqlite,postgres]
                                 [--per-app 10] [--endpoints K] [--sink hang|ok]
                                 [--ingest-only] [--quick] [--no-write]
      One server per backend (SQLite, then a private PostgreSQL from
      tests/pg-harness.sh). Memory per idle app: RSS after making the largest
      number of apps through the admin API and touching each once (a webhook,
      and an authenticated GET, which costs each key its one bcrypt), minus RSS
      before, divided by the apps made. Then, with every app in place, ingest
      (tools/loadgen.c --apps: calls round-robin over the first N apps) and
      webhook → WebSocket latency with sockets spread over the first N apps
      (tools/wsbench.c spread: --per-app sockets of each app, so each event
      reaches the same number of sockets whatever N), for each N. The Ns are
      alternated run after run, so the machine's drift falls on all alike; the
      spread between runs is printed with the medians. --endpoints K: after the
      RSS figure, every app gets K enabled outbound webhook endpoints (no type
      filter: every event is enqueued for each), all pointing to a loopback
      sink this script runs: --sink hang (default) accepts connections and
      never answers, so the sender fills its OUTBOUND_MAX_IN_FLIGHT slots once
      and then waits (OUTBOUND_TIMEOUT_MS is set to 10 min): what is measured
      is the enqueue in the ingest transaction, not the sending; --sink ok
      answers 204 to every POST (the sender's work, and this script's, share
      the cores with ingest). --ingest-only: no WebSocket runs.

  tools/bench_fleet.py instances [--instances 1,2,3] [--quick] [--no-write]
      Three release servers on one private PostgreSQL. Durable ingest over the
      first N of them (loadgen --ports: its connections spread round-robin over
      them, as a load balancer would), N alternated run after run, with where
      the two cores' time went meanwhile (per process and per server thread,
      from /proc) and PostgreSQL's commits and WAL syncs; over 1 app, over 100
      apps, and over 100 apps partitioned (each instance its own apps and its
      own load generator, as a load balancer routing by app would); then webhook →
      WebSocket latency with the webhook POSTed to instance A and the socket
      open on instance A (the same) and on B (across: through PostgreSQL's
      NOTIFY and B's relay).

  tools/bench_fleet.py ab BUILD_A BUILD_B [--apps 100] [--backend postgres] [--pairs 4]
                                          [--endpoints K] [--sink hang|ok]
      Judging a change: durable ingest of two server binaries over --apps apps,
      alternated run after run on one store (A B, B A, ...); --endpoints as
      for tenants.

Every instance, PostgreSQL and the load generators share the machine's cores.
Tables are printed, and written into docs/PERFORMANCE.md between markers
(not with --quick or --no-write).
"""
import http.server
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, http, machine, LOADGEN, WSBENCH, HARNESS, ADMIN)

ROOT = bench.ROOT
QUICK = bench.QUICK
RUNS = 2 if QUICK else 3
DURATION = bench.DURATION
ENV = {"RATE_LIMIT_API": "0", "RATE_LIMIT_ADMIN": "0", "WS_MAX_CONNECTIONS": "20000",
       "WS_MAX_PER_APP": "20000", "MAX_CONNECTIONS": "20000", "RETENTION_DAYS": "0",
       "RECONCILE_INTERVAL": "0", "TOKEN_ENCRYPTION_KEY": "5ca1e" * 12 + "0123"}
TICK = os.sysconf("SC_CLK_TCK")
T_START = time.time()


def ints(text):
    return [int(x) for x in text.split(",")]


ENDPOINTS = int(bench.arg("--endpoints", "0"))
SINK = bench.arg("--sink", "hang")


# ---- a private PostgreSQL ------------------------------------------------------------------

class Postgres:
    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="cti-fleet-pg.")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "pg")
        env = dict(os.environ, PG_EXTRA_OPTS="-c track_wal_io_timing=on")  # WAL sync times
        self.url = subprocess.run([bench.HARNESS, "start", self.dir], capture_output=True,
                                  text=True, check=True, env=env).stdout.strip()

    def query(self, sql):
        out = subprocess.run([bench.HARNESS, "psql", self.dir, "-tAc", sql], capture_output=True,
                             text=True, check=True).stdout
        return out.strip().splitlines()[-1].split("|")

    def pids(self):
        """The postmaster and its children (backends, WAL writer, checkpointer...)."""
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            top = int(f.readline())
        return [top] + children(top)

    def destroy(self):
        subprocess.run([bench.HARNESS, "destroy", self.dir])
        subprocess.run(["rm", "-rf", self.top])


# ---- outbound webhook endpoints: a loopback sink ------------------------------------------

class Sink:
    """Where the apps' endpoints point. hang: a listening socket that never
    accepts (the kernel completes the handshakes, the sender's requests wait for
    an answer until OUTBOUND_TIMEOUT_MS); ok: an HTTP/1.1 keep-alive server
    answering 204 to every POST."""

    def __init__(self, mode):
        if mode not in ("hang", "ok"):
            raise SystemExit("--sink must be hang or ok")
        self.mode = mode
        self.posts = 0  # ok: POSTs answered
        if mode == "hang":
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.sock.listen(4096)
            port = self.sock.getsockname()[1]
        else:
            sink = self

            class Answer(http.server.BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"

                def do_POST(self):
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    sink.posts += 1
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *a):
                    pass

            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
            self.httpd.daemon_threads = True
            threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
            port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    def env(self):
        """The server's settings for it (sandbox takes loopback URLs; allowed anyway)."""
        env = {"OUTBOUND_ALLOW_PRIVATE": "true"}
        if self.mode == "hang":
            env["OUTBOUND_TIMEOUT_MS"] = "600000"
        return env

    def close(self):
        if self.mode == "hang":
            self.sock.close()
        else:
            self.httpd.shutdown()
            self.httpd.server_close()


def make_endpoints(srv, apps, k, url):
    """k enabled endpoints (every event type) for each app, through the admin door
    (no bcrypt of each app's key); their ids, app by app."""
    admin = {"Authorization": f"Bearer {bench.ADMIN}"}

    def one(a):
        return [bench.http("POST", f"{srv.base}/internal/apps/{a['app_id']}/webhook-endpoints",
                           {"url": url, "description": f"bench {i}"}, admin)["id"]
                for i in range(k)]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, apps))


def check_enqueued(srv, app, ep_id):
    """The endpoint got deliveries (so the runs measured the enqueue)."""
    admin = {"Authorization": f"Bearer {bench.ADMIN}"}
    r = bench.http("GET", f"{srv.base}/internal/apps/{app['app_id']}/webhook-endpoints/{ep_id}/"
                          f"deliveries?limit=1", None, admin)
    if not r["data"]:
        raise SystemExit(f"endpoint {ep_id} of app {app['app_id']} got no deliveries")


def endpoints_note():
    if not ENDPOINTS:
        return ""
    return (f", {ENDPOINTS} webhook endpoint{'s' * (ENDPOINTS > 1)} each "
            f"({'never answering' if SINK == 'hang' else 'answering 204'})")


# ---- where the CPU went --------------------------------------------------------------------

def children(ppid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cpu_of(path, with_children=False):
    """utime+stime (seconds) from a /proc stat file; 0 when it is gone."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def threads_cpu(pid):
    """{thread name: CPU seconds} of a process's threads."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = re.sub(r"[-_]?\d+$", "", f.read().strip())
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + cpu_of(f"/proc/{pid}/task/{t}/stat")
    return out


def machine_busy():
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICK, sum(v[:8]) / TICK


class CpuWatch:
    """CPU taken over a stretch by the servers (per thread name), PostgreSQL, this
    script's children (the load generator) and everything else on the machine."""

    def __init__(self, servers, pg=None):
        self.servers, self.pg = servers, pg
        self.t0 = time.time()
        self.m0 = machine_busy()
        self.s0 = [threads_cpu(s.proc.pid) for s in servers]
        self.pg0 = self.pg_cpu()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.c0 = ru.ru_utime + ru.ru_stime

    def pg_cpu(self):
        if not self.pg:
            return 0.0
        pids = self.pg.pids()
        return cpu_of(f"/proc/{pids[0]}/stat", True) + sum(cpu_of(f"/proc/{p}/stat") for p in pids[1:])

    def done(self):
        wall = time.time() - self.t0
        busy = machine_busy()[0] - self.m0[0]
        per_thread = {}
        for s, before in zip(self.servers, self.s0):
            for name, sec in threads_cpu(s.proc.pid).items():
                per_thread[name] = per_thread.get(name, 0.0) + sec - before.get(name, 0.0)
        servers = sum(per_thread.values())
        pg = self.pg_cpu() - self.pg0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        gen = ru.ru_utime + ru.ru_stime - self.c0
        return {"wall": wall, "busy": busy / wall, "cores": os.cpu_count(),
                "servers": servers / wall, "pg": pg / wall, "loadgen": gen / wall,
                "other": max(busy - servers - pg - gen, 0.0) / wall,
                "threads": {k: v / wall for k, v in per_thread.items()}}


# ---- helpers -------------------------------------------------------------------------------

def make_apps(srv, n, prefix):
    admin = {"Authorization": f"Bearer {bench.ADMIN}"}
    with ThreadPoolExecutor(2) as pool:  # bcrypt of each key: the server's time, not ours
        return list(pool.map(lambda i: bench.http("POST", srv.base + "/internal/apps",
                                                  {"name": f"{prefix}-{i}"}, admin), range(n)))


def write_lists(apps, where, tag=""):
    """The apps as loadgen's (PATH SECRET) and wsbench's (APP KEY SECRET) lists."""
    lg = os.path.join(where, f"lg-{len(apps)}{tag}.txt")
    ws = os.path.join(where, f"ws-{len(apps)}{tag}.txt")
    with open(lg, "w") as f:
        f.writelines(f"/webhooks/dialpad/{a['app_id']} {a['webhook_secret']}\n" for a in apps)
    with open(ws, "w") as f:
        f.writelines(f"{a['app_id']} {a['api_key']} {a['webhook_secret']}\n" for a in apps)
    return lg, ws


def run_json(cmd, timeout=600):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"{os.path.basename(cmd[0])} failed ({out.returncode}): "
                         f"{out.stdout[-500:]} {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadgen(ports, lg_file, seconds=0, count=0, seed=1, connections=32):
    cmd = [bench.LOADGEN, "--ports", ",".join(map(str, ports)), "--apps", lg_file,
           "--connections", connections, "--seed", seed, "--seconds", seconds or 3600]
    return run_json(cmd + (["--count", count] if count else []))


SEEDS = iter(range(1, 1 << 20))


WS_RATE = 250  # webhooks/s: one at a time, each answered after its commit (a ~2 ms PG commit
# on a loaded machine keeps ~300/s), so every run sends what it says


def spread(port, ws_file, per_app, ws_port=None, rate=WS_RATE):
    cmd = [bench.WSBENCH, "spread", "--port", port, "--apps", ws_file, "--per-app", per_app,
           "--rate", rate, "--seconds", DURATION, "--seed", next(SEEDS)]
    cmd += ["--ws-port", ws_port] if ws_port else []
    return run_json(cmd)


def latency_cells(results, more=""):
    """(figure, detail) of wsbench runs: median p50, median p99 and every run's."""
    p50s, p99s = [r["p50_ms"] for r in results], [r["p99_ms"] for r in results]
    return (f"p50 {med(p50s):.2f} ms",
            f"p99 {med(p99s):.2f} ms (runs: p50 {' / '.join(f'{x:.2f}' for x in p50s)}, p99 "
            f"{' / '.join(f'{x:.1f}' for x in p99s)}){more}")


def drain(servers):
    for s in servers:
        bench.drain_seconds(s)


def med(xs):
    return statistics.median(xs)


def spread_pct(xs):
    return (max(xs) - min(xs)) / max(min(xs), 1e-9) * 100 if len(xs) > 1 else 0.0


def progress(text):
    print(f"[{(time.time() - T_START) / 60:4.1f} min] {text}", file=sys.stderr, flush=True)


# ---- tenants -------------------------------------------------------------------------------

def tenants_backend(kind, url, counts, per_app, rows, where, sink=None):
    srv = bench.Server(url, dict(ENV, **(sink.env() if sink else {})))
    try:
        top = max(counts)
        first = make_apps(srv, 1, "first")
        lg1, _ = write_lists(first, where)
        # warm up: the heap at its working size, so what follows measures the apps
        loadgen([srv.port], lg1, count=2 * top, seed=1, connections=8)
        bench.http("GET", srv.base + "/api/user-mappings", None, {"X-API-Key": first[0]["api_key"]})
        drain([srv])
        time.sleep(0.5)
        before = srv.rss_kb()
        t = time.time()
        apps = first + make_apps(srv, top - 1, "tenant")
        made = time.time() - t
        progress(f"[{kind}] {top:,} apps made in {made:.0f} s")
        lg_all, _ = write_lists(apps[1:], where)
        loadgen([srv.port], lg_all, count=2 * (top - 1), seed=2, connections=8)  # one call each
        with ThreadPoolExecutor(2) as pool:  # one authenticated request each (its one bcrypt)
            list(pool.map(lambda a: bench.http("GET", srv.base + "/api/user-mappings", None,
                                               {"X-API-Key": a["api_key"]}), apps[1:]))
        drain([srv])
        time.sleep(0.5)
        after = srv.rss_kb()
        per = (after - before) * 1024 / (top - 1)
        rows.append((kind, f"server RSS per idle app ({top - 1:,} apps made, each touched once: "
                           f"a webhook and an authenticated GET)", f"{per / 1024:.1f} KiB",
                     f"RSS {before / 1024:.1f} → {after / 1024:.1f} MiB; apps made at "
                     f"{(top - 1) / made:.0f}/s (a bcrypt each)"))
        lists = {n: write_lists(apps[:n], where) for n in counts}
        progress(f"[{kind}] RSS per idle app {per / 1024:.1f} KiB")
        eps = []
        if sink:
            t = time.time()
            eps = make_endpoints(srv, apps, ENDPOINTS, sink.url)
            progress(f"[{kind}] {ENDPOINTS * top:,} endpoints made in {time.time() - t:.0f} s")
        progress(f"[{kind}] ingest runs")
        ingest = {n: [] for n in counts}
        for run in range(RUNS):
            for n in counts:  # alternated: the machine's drift falls on every N alike
                r = loadgen([srv.port], lists[n][0], seconds=DURATION, seed=100 + run * 10 + n % 7)
                drain([srv])
                ingest[n].append(r)
                progress(f"[{kind}] {n:,} app(s): {r['rate']:,.0f} webhooks/s")
        if eps:
            check_enqueued(srv, apps[-1], eps[-1][-1])
        for n in counts:
            rates = [r["rate"] for r in ingest[n]]
            mid = sorted(ingest[n], key=lambda r: r["rate"])[len(rates) // 2]
            rows.append((kind, f"durable ingest, calls round-robin over {n:,} app{'s' * (n > 1)}"
                               f"{endpoints_note()}",
                         f"{med(rates):,.0f} webhooks/s",
                         f"runs {' / '.join(f'{x:,.0f}' for x in rates)} (spread "
                         f"{spread_pct(rates):.0f}%); ack p50 {mid['p50_ms']:.2f} ms, "
                         f"p99 {mid['p99_ms']:.2f} ms"))
        if "--ingest-only" in sys.argv:
            return
        progress(f"[{kind}] WebSocket runs")
        lat = {n: [] for n in counts}
        for run in range(RUNS):
            for n in counts:
                lat[n].append(spread(srv.port, lists[n][1], per_app))
        for n in counts:
            kept = min(r["sent_rate"] for r in lat[n])
            got = sum(r["samples"] for r in lat[n])
            want = sum(r["expected"] for r in lat[n])
            rows.append((kind, f"webhook → WebSocket, {WS_RATE} webhooks/s round-robin over {n:,} "
                               f"app{'s' * (n > 1)}, {per_app} sockets each ({n * per_app:,} "
                               f"sockets)", *latency_cells(lat[n],
                                                             f"; {got:,} of {want:,} copies "
                                                             f"arrived; webhooks sent at ≥ "
                                                             f"{kept:,.0f}/s")))
    finally:
        srv.stop()


def tenants():
    counts = ints(bench.arg("--apps", "1,100,1000"))
    per_app = int(bench.arg("--per-app", "10"))
    backends = bench.arg("--backends", "sqlite,postgres").split(",")
    rows = []
    where = tempfile.mkdtemp(prefix="cti-fleet.")
    sink = Sink(SINK) if ENDPOINTS else None
    try:
        for kind in backends:
            if kind == "sqlite":
                tenants_backend(kind, None, counts, per_app, rows, where, sink)
            else:
                pg = Postgres()
                try:
                    tenants_backend(kind, pg.url, counts, per_app, rows, where, sink)
                finally:
                    pg.destroy()
    finally:
        subprocess.run(["rm", "-rf", where])
        if sink:
            sink.close()
    ep_head = ""
    if ENDPOINTS:
        ep_head = (f"; every app with {ENDPOINTS} outbound webhook endpoint(s), each event "
                   f"enqueued for each, to a loopback sink " +
                   ("never answering (the sender idle once its slots are taken)"
                    if SINK == "hang" else "answering 204"))
    head = (f"Machine: {bench.machine()}; the server, the load generators and (for postgres) "
            f"PostgreSQL share its cores. {RUNS} runs of {DURATION} s per figure, the app counts "
            f"alternated run after run; the median, every run, and their spread (the machine's "
            f"noise). Ingest: tools/loadgen.c, 32 keep-alive connections, unique signed call "
            f"events, both of a call to one app"
            f"{ep_head}. "
            f"SQLite synchronous=FULL; PostgreSQL 15 "
            f"synchronous_commit=on over TCP loopback. "
            f"Whole run {(time.time() - T_START) / 60:.0f} min.")
    finish("tenants", head, "backend", rows)


# ---- instances -----------------------------------------------------------------------------

def cpu_note(c):
    th = sorted(c["threads"].items(), key=lambda kv: -kv[1])[:4]
    return (f"CPU of the {c['cores']} cores: {c['busy'] * 100 / c['cores']:.0f}% busy — servers "
            f"{c['servers']:.2f}, PostgreSQL {c['pg']:.2f}, loadgen {c['loadgen']:.2f}, other "
            f"work {c['other']:.2f} cores; busiest server threads (all instances) " +
            ", ".join(f"{k} {v:.2f}" for k, v in th))


def partitioned(servers, lgs, seed):
    """One loadgen per server, each with apps of its own (lgs[i]), at once; their sum."""
    n = len(lgs)
    with ThreadPoolExecutor(n) as pool:
        rs = list(pool.map(lambda i: loadgen([servers[i].port], lgs[i], seconds=DURATION,
                                             seed=seed + 1000 * i, connections=32 // n),
                           range(n)))
    return {"rate": sum(r["rate"] for r in rs), "ok": sum(r["ok"] for r in rs),
            "ok_by_port": [r["ok"] for r in rs], "p50_ms": max(r["p50_ms"] for r in rs),
            "p99_ms": max(r["p99_ms"] for r in rs)}


def ingest_fleet(servers, pg, lg, n, seed):
    """One loadgen run over the first n servers (lg: one apps list for all; a list of
    n lists: partitioned, each server its own apps), with what PostgreSQL and the
    cores did."""
    q_commits = "SELECT sum(xact_commit) FROM pg_stat_database"
    q_wal = "SELECT wal_sync, wal_sync_time FROM pg_stat_wal"
    c0, w0 = pg.query(q_commits), pg.query(q_wal)
    watch = CpuWatch(servers, pg)
    if isinstance(lg, list):
        r = partitioned(servers, lg, seed)
    else:
        r = loadgen([s.port for s in servers[:n]], lg, seconds=DURATION, seed=seed)
    cpu = watch.done()
    c1, w1 = pg.query(q_commits), pg.query(q_wal)
    drain(servers)
    syncs = int(w1[0]) - int(w0[0])
    r.update(cpu=cpu, commits_s=(int(c1[0]) - int(c0[0])) / cpu["wall"],
             syncs_s=syncs / cpu["wall"],
             sync_ms=(float(w1[1]) - float(w0[1])) / max(syncs, 1))
    return r


def instances():
    counts = ints(bench.arg("--instances", "1,2,3"))
    app_counts = ints(bench.arg("--apps", "1,100"))
    rows = []
    pg = Postgres()
    where = tempfile.mkdtemp(prefix="cti-fleet.")
    servers = []
    try:
        for _ in range(max(counts)):
            servers.append(bench.Server(pg.url, ENV))
        apps = make_apps(servers[0], max(app_counts), "fleet")
        lists = {a: write_lists(apps[:a], where) for a in app_counts}
        ports = [s.port for s in servers]
        loadgen(ports, lists[max(app_counts)][0], count=20000, seed=1)  # warm-up; first ANALYZE
        drain(servers)
        top = max(app_counts)
        parts = {n: [write_lists(apps[i::n], where, f"-part{n}-{i}")[0] for i in range(n)]
                 for n in counts}
        setups = [(a, False) for a in app_counts] + ([(top, True)] if top > 1 else [])
        for a, split_apps in setups:
            results = {n: [] for n in counts}
            for run in range(RUNS):
                for n in counts:  # alternated
                    lg = parts[n] if split_apps else lists[a][0]
                    r = ingest_fleet(servers, pg, lg, n, 100 + a + run * 10 + n + 50 * split_apps)
                    results[n].append(r)
                    progress(f"{a} app(s){' partitioned' * split_apps}, {n} instance(s): "
                             f"{r['rate']:,.0f} webhooks/s")
            base = None
            for n in counts:
                rates = [r["rate"] for r in results[n]]
                mid = sorted(results[n], key=lambda r: r["rate"])[len(rates) // 2]
                base = base or med(rates)
                split = "/".join(f"{x * 100 / max(mid['ok'], 1):.0f}"
                                 for x in mid.get("ok_by_port", [mid["ok"]]))
                how = (f"each with its own {a // n:,} apps (a loadgen per instance)"
                       if split_apps else f"calls over {a:,} app{'s' * (a > 1)}")
                rows.append(("ingest", f"{n} instance{'s' * (n > 1)}, {how}",
                             f"{med(rates):,.0f} webhooks/s (×{med(rates) / base:.2f})",
                             f"runs {' / '.join(f'{x:,.0f}' for x in rates)} (spread "
                             f"{spread_pct(rates):.0f}%); share per instance {split}%; ack p50 "
                             f"{mid['p50_ms']:.2f} ms, p99 {mid['p99_ms']:.2f} ms; PostgreSQL "
                             f"{mid['commits_s']:,.0f} commits/s, {mid['syncs_s']:,.0f} WAL "
                             f"syncs/s of {mid['sync_ms']:.2f} ms; {cpu_note(mid['cpu'])}"))
        ws = lists[min(app_counts)][1]
        lat = {"same": [], "across": []}
        for run in range(RUNS):
            lat["same"].append(spread(ports[0], ws, 1))
            lat["across"].append(spread(ports[0], ws, 1, ws_port=ports[-1]))
        for key, what in (("same", "socket on A too"), ("across", f"socket on instance "
                                                               f"{chr(64 + len(ports))}")):
            rows.append(("latency", f"webhook POSTed to instance A at {WS_RATE}/s, {what} "
                                    f"({len(ports)} instances running)",
                         *latency_cells(lat[key])))
    finally:
        for s in servers:
            s.stop()
        pg.destroy()
        subprocess.run(["rm", "-rf", where])
    head = (f"Machine: {bench.machine()}; every instance, PostgreSQL 15 (synchronous_commit=on, "
            f"TCP loopback) and the load generator share its cores. tools/loadgen.c, 32 "
            f"keep-alive connections spread round-robin over the instances, calls round-robin "
            f"over the apps. {RUNS} runs of "
            f"{DURATION} s per figure, the instance counts alternated run after run; the median "
            f"(×: against one instance), every run, and their spread; the CPU split is the "
            f"median run's, in cores (a core fully busy = 1.00). Whole run "
            f"{(time.time() - T_START) / 60:.0f} min.")
    finish("instances", head, "kind", rows)


# ---- judging a change ----------------------------------------------------------------------

def ab():
    """Durable ingest of two builds, alternated run after run on one store (each run a
    fresh start of that build on it), calls round-robin over --apps apps. Besides the
    rate, the CPU each webhook took (the server's threads and, on PostgreSQL, its
    processes: less swayed by other work on the machine than the rate) and, on
    PostgreSQL, the reads of webhook_endpoints per webhook (pg_stat_user_tables)."""
    builds = {"A": os.path.abspath(sys.argv[2]), "B": os.path.abspath(sys.argv[3])}
    n, kind = int(bench.arg("--apps", "100")), bench.arg("--backend", "postgres")
    pairs = int(bench.arg("--pairs", "4"))
    where = tempfile.mkdtemp(prefix="cti-fleet.")
    pg = Postgres() if kind == "postgres" else None
    url = pg.url if pg else f"sqlite:{where}/ab.db"
    runs = {"A": [], "B": []}
    cpu = {"A": [], "B": []}
    reads = {"A": [], "B": []}
    q_reads = ("SELECT coalesce(sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)), 0) FROM "
               "pg_stat_user_tables WHERE relname = 'webhook_endpoints'")
    sink = Sink(SINK) if ENDPOINTS else None
    env = dict(ENV, **(sink.env() if sink else {}))
    try:
        bench.BIN = builds["B"]
        srv = bench.Server(url, env)
        try:
            apps = make_apps(srv, n, "ab")
            lg, _ = write_lists(apps, where)
            if sink:
                make_endpoints(srv, apps, ENDPOINTS, sink.url)
            loadgen([srv.port], lg, count=20000, seed=1)  # warm-up, and past the first ANALYZE
            drain([srv])
        finally:
            srv.stop()
        for i in range(pairs):
            for which in ("AB" if i % 2 == 0 else "BA"):
                bench.BIN = builds[which]
                srv = bench.Server(url, env)
                r0 = int(pg.query(q_reads)[0]) if pg else 0
                try:
                    watch = CpuWatch([srv], pg)
                    r = loadgen([srv.port], lg, seconds=DURATION, seed=1000 + 2 * i + (which == "B"))
                    drain([srv])
                    c = watch.done()
                finally:
                    srv.stop()
                us = (c["servers"] + c["pg"]) * c["wall"] * 1e6 / max(r["ok"], 1)
                runs[which].append(r["rate"])
                cpu[which].append(us)
                line = f"{which}: {r['rate']:,.0f} webhooks/s, {us:,.0f} µs CPU per webhook"
                if pg:
                    time.sleep(0.5)  # the backends' statistics, sent as they exit
                    reads[which].append((int(pg.query(q_reads)[0]) - r0) / max(r["ok"], 1))
                    line += f", {reads[which][-1]:.3f} endpoint reads per webhook"
                progress(line)
    finally:
        if pg:
            pg.destroy()
        if sink:
            sink.close()
        subprocess.run(["rm", "-rf", where])
    wins = sum(b > a for a, b in zip(runs["A"], runs["B"]))
    for which in "AB":
        print(f"{which} {builds[which]}: median {med(runs[which]):,.0f} webhooks/s; runs "
              f"{' / '.join(f'{x:,.0f}' for x in runs[which])}; CPU per webhook "
              f"(server{' + PostgreSQL' * bool(pg)}) median {med(cpu[which]):,.0f} µs, runs "
              f"{' / '.join(f'{x:,.0f}' for x in cpu[which])}" +
              (f"; webhook_endpoints reads per webhook median {med(reads[which]):.3f}"
               if pg else ""))
    if sink and SINK == "ok":
        print(f"the sink answered {sink.posts:,} deliveries")
    print(f"{kind}, {n} apps{endpoints_note()}, {pairs} pairs of {DURATION} s runs alternated: B/A "
          f"{med(runs['B']) / med(runs['A']):.2f}, B faster in {wins} of {pairs} pairs; CPU per "
          f"webhook B/A {med(cpu['B']) / med(cpu['A']):.2f}, B cheaper in "
          f"{sum(b < a for a, b in zip(cpu['A'], cpu['B']))} of {pairs} pairs")


# ---- output --------------------------------------------------------------------------------

def finish(name, head, first, rows):
    """Prints the table (columns: first, what, figure, detail) and writes it into the doc."""
    table = [f"| {first} | what | figure | detail |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    print(head + "\n\n" + "\n".join(table))
    if not QUICK and "--no-write" not in sys.argv:
        bench.write_doc(head, table, f"bench-{name}")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "ab" and len(sys.argv) > 3:
        ab()
        sys.exit(0)
    if what not in ("tenants", "instances"):
        raise SystemExit("usage: tools/bench_fleet.py tenants|instances [options]\n"
                         "       tools/bench_fleet.py ab BUILD_A BUILD_B [--apps 100] "
                         "[--backend postgres|sqlite] [--pairs 4]")
    for b in (bench.BIN, bench.LOADGEN, bench.WSBENCH):
        if not os.path.exists(b):
            raise SystemExit("build first: make cti-server build/release/tools/loadgen "
                             "build/release/tools/wsbench")
    tenants() if what == "tenants" else instances()
