#!/usr/bin/python3
"""make bench-scale: how every request path behaves as the data grows.

For each backend (SQLite, then a private PostgreSQL from tests/pg-harness.sh)
it starts the optimized cti-server on an empty store, makes an app and a user
mapping, and measures every read path one request at a time (p50/p99) at
size 0; then it stops the server, seeds call legs with tools/seed.c (the real
store and processor code, no HTTP: see docs/PERFORMANCE.md, Growth) up to the
next size, starts the server on the seeded store, and measures again. At each
size: the bulk path's ingest rate, durable HTTP ingest (tools/loadgen.c, 3 s),
the read paths, and the database's size per leg.

Every read path is measured in two rounds at each size (all paths, then all
again): the spread between the rounds is the machine's noise, stated with the
table.

Usage: tools/bench_scale.py [--sizes 100000,1000000] [--backends sqlite,postgres]
                            [--no-write] [--keep DIR]
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, http, loadgen, machine, free_port)

ROOT = bench.ROOT
SEED = os.path.join(ROOT, "build", "release", "tools", "seed")
AGENT_BASE = 6000000000000000
LEG_BASE = 5000000000000000
STEP_MS = 1600
ENV = {"RATE_LIMIT_API": "0", "RATE_LIMIT_ADMIN": "0", "RETENTION_DAYS": "0",
       "RECONCILE_INTERVAL": "0",
       # one key for every start (else each start in a new directory makes its own)
       "TOKEN_ENCRYPTION_KEY": "5ca1e" * 12 + "0123"}
ROUND_SECONDS = 1.0
ROUND_MAX = 400
T_START = time.time()


SIZES = [int(s) for s in bench.arg("--sizes", "100000,1000000").split(",")]
BACKENDS = bench.arg("--backends", "sqlite,postgres").split(",")


def cursor(ts, call_id):
    return base64.urlsafe_b64encode(f"v1:{ts}:{call_id}".encode()).decode().rstrip("=")


def one_at_a_time(srv, path, headers):
    """(p50, p99, count) in ms of requests sent one after another on one keep-alive
    connection (a Python client: its own ~0.1 ms is included)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    lat, end = [], time.time() + ROUND_SECONDS
    while (time.time() < end and len(lat) < ROUND_MAX) or len(lat) < 5:
        t = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 and not (r.status == 404 and path.startswith("/api/calls/5")):
            raise SystemExit(f"{path} answered {r.status}: {body[:300]}")
        lat.append((time.perf_counter() - t) * 1000)
    conn.close()
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, len(lat) * 99 // 100)], len(lat)


def paths(srv, app, t0):
    """The request paths measured, (label, path, admin?)."""
    ev = bench.http("GET", srv.base + "/api/events?since=0&limit=1", None,
                    {"X-API-Key": app["api_key"]})
    head, lo, hi = 0, 0, 1 << 40  # the newest seq: the last since with a non-empty page, + 1
    while lo < hi:
        m = (lo + hi) // 2
        r = bench.http("GET", srv.base + f"/api/events?since={m}&limit=1", None,
                       {"X-API-Key": app["api_key"]})
        lo, hi = (m + 1, hi) if r["data"] else (lo, m)
    head = lo
    first = int(ev["data"][0]["seq"]) if ev["data"] else 0
    ext = "+12125000007"  # one of the 50,000 external numbers (tools/seed.c)
    quote = urllib.parse.quote
    mid = t0 + 86400000 * 20
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))  # noqa: E731
    deep = cursor(t0 + 1000 * STEP_MS, LEG_BASE + 10 ** 12)
    return [
        ("GET /api/calls?limit=50 (first page)", "/api/calls?limit=50", False),
        ("GET /api/calls, a deep cursor page (the oldest calls)", f"/api/calls?limit=50&cursor={deep}",
         False),
        ("GET /api/calls?root_only=true", "/api/calls?limit=50&root_only=true", False),
        ("GET /api/calls?status=ended", "/api/calls?limit=50&status=ended", False),
        ("GET /api/calls?state=missed", "/api/calls?limit=50&state=missed", False),
        ("GET /api/calls?outcome=voicemail", "/api/calls?limit=50&outcome=voicemail", False),
        ("GET /api/calls?direction=outbound", "/api/calls?limit=50&direction=outbound", False),
        ("GET /api/calls?dialpad_user_id= (1 of 200 agents)",
         f"/api/calls?limit=50&dialpad_user_id={AGENT_BASE + 7}", False),
        ("GET /api/calls?crm_user_id= (a mapped agent)", "/api/calls?limit=50&crm_user_id=crm-7",
         False),
        ("GET /api/calls?number= (1 of 50,000 numbers)", f"/api/calls?limit=50&number={quote(ext)}",
         False),
        ("GET /api/calls?custom_data= (no match)", "/api/calls?limit=50&custom_data=nothing-here",
         False),
        ("GET /api/calls?from=&to= (one day, 20 days in)",
         f"/api/calls?limit=50&from={iso(mid)}&to={iso(mid + 86400000)}", False),
        ("GET /api/calls?outcome=voicemail&direction=outbound (no match)",
         "/api/calls?limit=50&outcome=voicemail&direction=outbound", False),
        ("GET /api/calls/active", "/api/calls/active?limit=50", False),
        ("GET /api/calls/{id} (legs and timeline; 404 when empty)", f"/api/calls/{LEG_BASE + 3}", False),
        ("GET /api/screen-pop?number=", f"/api/screen-pop?number={quote(ext)}", False),
        ("GET /api/voicemails", "/api/voicemails?limit=50", False),
        ("GET /api/messages", "/api/messages?limit=50", False),
        ("GET /api/events?since= near the head", f"/api/events?since={max(head - 50, 0)}&limit=50",
         False),
        ("GET /api/events?since= far back", f"/api/events?since={first + 10 if first else 0}&limit=50",
         False),
        ("GET /internal/dead-letters", f"/internal/dead-letters?app_id={app['app_id']}", True),
    ]


def measure(srv, app, t0):
    """Two rounds over every path; per path (p50, p99) of the better round and the
    spread of the p50s between rounds."""
    key = {"X-API-Key": app["api_key"]}
    admin = {"Authorization": f"Bearer {bench.ADMIN}"}
    ps = paths(srv, app, t0)
    rounds = [[one_at_a_time(srv, p, admin if adm else key) for _, p, adm in ps] for _ in range(2)]
    out = {}
    for i, (label, _, _) in enumerate(ps):
        a, b = rounds[0][i], rounds[1][i]
        best = a if a[0] <= b[0] else b
        spread = abs(a[0] - b[0]) / max(min(a[0], b[0]), 1e-9)
        out[label] = (best[0], best[1], spread)
    return out


def db_bytes(kind, where):
    if kind == "sqlite":
        return sum(os.path.getsize(where + s) for s in ("", "-wal") if os.path.exists(where + s))
    out = subprocess.run([bench.HARNESS, "psql", where, "-tAc",
                          "SELECT pg_database_size(current_database())"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1])


def seed(url, app_id, legs, first_call):
    cmd = ["nice", "-n", "10", SEED, "--database", url, "--app", app_id, "--legs", str(legs),
           "--first-call", str(first_call)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"seed failed: {out.stdout} {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_backend(kind, url, where, results):
    srv = bench.Server(url, ENV) if url else None
    if srv is None:  # SQLite: a database file the seed tool and the server share
        path = os.path.join(where, "scale.db")
        url = f"sqlite:{path}"
        srv = bench.Server(url, ENV)
        where = path
    t0 = (int(time.time() * 1000) - 85 * 86400000) // 1000 * 1000
    try:
        app = bench.http("POST", srv.base + "/internal/apps", {"name": "scale"},
                         {"Authorization": f"Bearer {bench.ADMIN}"})
        for a in range(0, 200, 7):
            bench.http("PUT", srv.base + f"/api/user-mappings/{AGENT_BASE + a}",
                       {"crm_user_id": f"crm-{a}"}, {"X-API-Key": app["api_key"]})
    except Exception:
        srv.stop()
        raise
    legs, next_call, size = 0, 0, 0
    for target in [0] + SIZES:
        if target > legs:
            srv.stop()
            s = seed(url, app["app_id"], target - legs, next_call)
            legs += s["legs"]
            next_call = s["next_call"]
            results.append((kind, legs, "seed (bulk path: store + apply, no HTTP)",
                            f"{s['legs_per_second']:,.0f} legs/s",
                            f"{s['events_per_second']:,.0f} events/s; {s['legs']:,} legs, "
                            f"{s['events']:,} events in {s['seconds']:.0f} s"))
            srv = bench.Server(url, ENV)
        try:
            size = db_bytes(kind, where)
            results.append((kind, legs, "database size", f"{size / 2**20:,.0f} MiB",
                            f"{size / legs / 1024:.1f} KiB per leg" if legs else ""))
            for label, (p50, p99, spread) in measure(srv, app, t0).items():
                results.append((kind, legs, label, f"p50 {p50:.2f} ms",
                                f"p99 {p99:.2f} ms; rounds differ by {spread * 100:.0f}%"))
            lg = bench.loadgen(srv, app, seconds=3, seed=500 + len(results))
            results.append((kind, legs, "durable HTTP ingest (loadgen, 3 s, 32 connections)",
                            f"{lg['rate']:,.0f} webhooks/s",
                            f"ack p50 {lg['p50_ms']:.2f} ms, p99 {lg['p99_ms']:.2f} ms"))
            bench.drain_seconds(srv)
            print(f"[{kind}] {legs:,} legs measured", file=sys.stderr, flush=True)
            if "--no-write" not in sys.argv:  # what is measured so far, should a later size fail
                write_doc(header(f"so far {(time.time() - T_START) / 60:.0f} min"), table(results))
        except Exception:
            srv.stop()
            raise
    srv.stop()


def table(results):
    kinds = sorted({r[0] for r in results}, key=lambda k: BACKENDS.index(k))
    lines = []
    for kind in kinds:
        rows = [r for r in results if r[0] == kind]
        sizes = sorted({r[1] for r in rows})
        whats = []
        for r in rows:
            if r[2] not in whats:
                whats.append(r[2])
        lines.append(f"\n**{kind}** (p50 one request at a time; p99 and the two rounds' "
                     f"difference in the detail below)\n")
        lines.append("| operation | " + " | ".join(f"{s:,} legs" for s in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for w in whats:
            cells = []
            for s in sizes:
                hit = [r for r in rows if r[1] == s and r[2] == w]
                cells.append(hit[0][3] if hit else "–")
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
    lines.append("\n<details><summary>detail (p99, rounds)</summary>\n")
    lines.append("| backend | legs | operation | figure | detail |")
    lines.append("|---|---|---|---|---|")
    lines += [f"| {k} | {n:,} | {w} | {f} | {d} |" for k, n, w, f, d in results]
    lines.append("\n</details>")
    return "\n".join(lines)


def write_doc(header, text):
    path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
    tag = "+".join(BACKENDS)
    start, end = f"<!-- bench-scale:{tag}:start -->", f"<!-- bench-scale:{tag}:end -->"
    doc = open(path).read()
    block = f"{start}\n{header}\n{text}\n\nProduced by `make bench-scale` on " \
            f"{time.strftime('%Y-%m-%d')}.\n{end}"
    if start in doc:
        doc = doc[:doc.index(start)] + block + doc[doc.index(end) + len(end):]
    else:
        doc += "\n" + block + "\n"
    open(path, "w").write(doc)
    print(f"\nwritten to {path}")


def main():
    for b in (bench.BIN, SEED):
        if not os.path.exists(b):
            raise SystemExit("build first: make cti-server build/release/tools/seed")
    results = []
    keep = bench.arg("--keep", None)
    for kind in BACKENDS:
        where = keep or tempfile.mkdtemp(prefix="cti-scale.")
        os.makedirs(where, exist_ok=True)
        os.chmod(where, 0o755)
        try:
            if kind == "sqlite":
                run_backend(kind, None, where, results)
            else:
                pg = os.path.join(where, "pg")
                url = subprocess.run([bench.HARNESS, "start", pg], capture_output=True, text=True,
                                     check=True).stdout.strip()
                try:
                    run_backend(kind, url, pg, results)
                finally:
                    subprocess.run([bench.HARNESS, "destroy", pg])
        finally:
            if not keep:
                subprocess.run(["rm", "-rf", where])
    text = table(results)
    head = header(f"whole run {(time.time() - T_START) / 60:.0f} min")
    print(head)
    print(text)
    if "--no-write" not in sys.argv:
        write_doc(head, text)


def header(took):
    return (f"Machine: {bench.machine()}, shared with other work (the seed runs under "
              f"`nice -n 10`). Sizes {', '.join(f'{s:,}' for s in [0] + SIZES)} legs; "
              f"every read path one request at a time on one keep-alive connection "
              f"(a Python client, ~0.1 ms of its own), {ROUND_SECONDS:g} s or {ROUND_MAX} "
              f"requests per round, two rounds per size; the figure is the better "
              f"round's p50 ({took}).")


if __name__ == "__main__":
    main()
