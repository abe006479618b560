#!/usr/bin/python3
"""make bench: starts the optimized cti-server on a fresh store (SQLite, then a
private PostgreSQL), drives it with wrk (keep-alive, loopback only), and prints
a table of medians over repeated runs. Writes the table to docs/PERFORMANCE.md.

Bounded: every run has a fixed duration; the whole bench takes a few minutes.
Usage: tools/bench.py [--quick] [--no-write]
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
HARNESS = os.path.join(ROOT, "tests", "pg-harness.sh")
ADMIN = "bench-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"
QUICK = "--quick" in sys.argv
RUNS = 1 if QUICK else 3
DURATION = 3 if QUICK else 8


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, database):
        self.dir = tempfile.mkdtemp(prefix="cti-bench.")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {"PATH": os.environ["PATH"], "PORT": str(self.port), "LOG_LEVEL": "warn",
               "INTERNAL_API_SECRET": ADMIN, "DATABASE_URL": database or f"sqlite:{self.dir}/bench.db"}
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


def bench_backend(name, database):
    srv = Server(database)
    rows = []
    try:
        rows.append((name, "idle RSS", f"{srv.rss_kb() / 1024:.1f} MiB", ""))
        app = http("POST", srv.base + "/internal/apps", {"name": "bench"},
                   {"Authorization": f"Bearer {ADMIN}"})
        key = app["api_key"]
        rps, p99 = median_run(srv.base + "/health")
        rows.append((name, "GET /health (database ping)", f"{rps:,.0f} req/s", f"p99 {p99:.2f} ms"))
        rps, p99 = median_run(srv.base + "/api/user-mappings", [f"X-API-Key: {key}"])
        rows.append((name, "GET /api/user-mappings, valid API key (authenticated REST)",
                     f"{rps:,.0f} req/s", f"p99 {p99:.2f} ms"))
        rows.append((name, "RSS after load", f"{srv.rss_kb() / 1024:.1f} MiB", ""))
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
    rows = bench_backend("sqlite", None)
    pgdir = tempfile.mkdtemp(prefix="cti-bench-pg.")
    os.chmod(pgdir, 0o755)
    try:
        url = subprocess.run([HARNESS, "start", pgdir + "/pg"], capture_output=True, text=True,
                             check=True).stdout.strip()
        rows += bench_backend("postgres", url)
    finally:
        subprocess.run([HARNESS, "destroy", pgdir + "/pg"])
        shutil.rmtree(pgdir, ignore_errors=True)

    header = f"Machine: {machine()}. Load generator (wrk, 2 threads, 64 keep-alive connections) " \
             f"on the same cores. Median of {RUNS} runs of {DURATION} s. LOG_LEVEL=warn."
    table = ["| backend | what | figure | latency |", "|---|---|---|---|"]
    table += [f"| {b} | {w} | {f} | {l} |" for b, w, f, l in rows]
    print(header)
    print("\n".join(table))
    if "--no-write" not in sys.argv and not QUICK:
        write_doc(header, table)


def write_doc(header, table):
    path = os.path.join(ROOT, "docs", "PERFORMANCE.md")
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{start}\n{header}\n\n" + "\n".join(table) + \
            f"\n\nProduced by `make bench` on {time.strftime('%Y-%m-%d')}.\n{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    open(path, "w").write(text)
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
