"""Shared pieces of the drills: servers, PostgreSQL, webhooks, a resuming WebSocket reader.

Reuses the black-box harness (tests/blackbox/conftest.py: Server, PG) and its Dialpad
helpers (tests/blackbox/dialpad.py). Load drills run the release binary (./cti-server,
CTI_SERVER_RELEASE_BIN): the ASan build is several times slower and would measure ASan.
"""
import collections
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests/blackbox"))

import requests  # noqa: E402
import websocket  # noqa: E402

from conftest import PG, RELEASE_BIN, Server  # noqa: E402
from dialpad import (ADMIN, ADMIN_SECRET, all_events, call_events, create_app,  # noqa: E402,F401
                     key_of, sign)

class DrillFailed(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise DrillFailed(msg)


class Env:
    """Everything a drill starts; stop_all() stops it all, also after a failure."""

    def __init__(self, name):
        self.dir = Path(tempfile.mkdtemp(prefix=f"cti-drill-{name}."))
        os.chmod(self.dir, 0o755)
        self.servers = []
        self.pgs = []
        self.cleanups = []
        self.keep = False

    def server(self, database=None, env=None, workdir=None, binary=None, start=True):
        e = {"INTERNAL_API_SECRET": ADMIN_SECRET, "LOG_LEVEL": "warn"}
        e.update(env or {})
        if database:
            e["DATABASE_URL"] = database
        s = Server(workdir or self.dir / f"srv{len(self.servers)}", env=e,
                   binary=binary or RELEASE_BIN)
        self.servers.append(s)
        return s.start(timeout=60) if start else s

    def pg(self):
        p = PG()
        self.pgs.append(p)
        p.start()
        return p

    def database(self, backend, name="drill"):
        if backend == "sqlite":
            return f"sqlite:{self.dir}/{name}.db"
        p = self.pgs[0] if self.pgs else self.pg()
        return p.fresh_database(name)

    def on_stop(self, fn):
        self.cleanups.append(fn)

    def stop_all(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # a cleanup must not hide the others
                print(f"  cleanup: {e!r}", file=sys.stderr)
        for s in self.servers:
            try:
                if s.proc is not None:
                    s.proc.send_signal(signal.SIGTERM)
                    try:
                        s.proc.wait(20)
                    except Exception:
                        s.kill()
                    s.proc = None
                    s.logf.close()
            except Exception as e:
                print(f"  stop server: {e!r}", file=sys.stderr)
        for p in self.pgs:
            p.destroy()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- webhooks (call_events and key_of: tests/blackbox/dialpad.py) ----------------------------

def post_token(session, url, token, timeout=10):
    return session.post(url, data=token, headers={"Content-Type": "application/jwt"},
                        timeout=timeout)


def health(srv, timeout=3):
    try:
        r = requests.get(srv.url("/health"), timeout=timeout)
        return r.status_code, (r.json() if r.headers.get("content-type", "").startswith(
            "application/json") else {})
    except requests.RequestException as e:
        return 0, {"exception": type(e).__name__}


def wait_settled(srv, timeout=60, quiet=0.5):
    """All stored webhooks applied: /health 200 with pending_events 0 for `quiet` seconds."""
    deadline = time.time() + timeout
    since = None
    while time.time() < deadline:
        code, h = health(srv)
        if code == 200 and h.get("pending_events") == 0:
            since = since or time.time()
            if time.time() - since >= quiet:
                return
        else:
            since = None
        time.sleep(0.05)
    raise DrillFailed(f"not settled within {timeout}s (health {health(srv)})")


def events_since(srv, key, since):
    return all_events(srv, key, since)


def check_log(evs, acked_keys, sent_keys):
    """Every acknowledged event once, nothing never sent, seqs 1..N gapless."""
    counts = collections.Counter((e["call_id"], e["event"]) for e in evs)
    twice = [k for k, n in counts.items() if n > 1]
    check(not twice, f"{len(twice)} events applied twice, e.g. {twice[:3]}")
    stray = set(counts) - sent_keys
    check(not stray, f"{len(stray)} events never sent, e.g. {sorted(stray)[:3]}")
    lost = acked_keys - set(counts)
    check(not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:3]}")
    seqs = [e["seq"] for e in evs]
    check(seqs == list(range(1, len(evs) + 1)), "seqs not gapless 1..N")
    return counts


# ---- a WebSocket client that resumes with since= ---------------------------------------------

class ResumingListener(threading.Thread):
    """Follows /ws; on any disconnect reconnects with since=<last seq seen>. Records every
    seq received; a gap or duplicate at any seam is recorded as a problem."""

    def __init__(self, srv, key):
        super().__init__(daemon=True)
        self.srv, self.key = srv, key
        self.last = 0
        self.seqs = []
        self.problems = []
        self.reconnects = 0
        self.errors = collections.Counter()
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                ws = websocket.create_connection(
                    f"ws://127.0.0.1:{self.srv.port}/ws?since={self.last}",
                    header=[f"X-API-Key: {self.key}"], timeout=2)
            except Exception as e:
                self.errors[type(e).__name__] += 1
                time.sleep(0.2)
                continue
            self.reconnects += 1
            try:
                while not self.stop_ev.is_set():
                    try:
                        msg = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if not msg:
                        break
                    m = json.loads(msg)
                    if m.get("type") == "event":
                        s = m["seq"]
                        if s != self.last + 1:
                            self.problems.append(f"after {self.last} got {s}")
                        self.last = max(self.last, s)
                        self.seqs.append(s)
                    elif m.get("type") == "reset":
                        self.problems.append(f"reset at {self.last}: {m}")
                    elif m.get("type") == "error":
                        self.errors["error-frame"] += 1
                        break
            except Exception as e:
                self.errors[type(e).__name__] += 1
            finally:
                try:
                    ws.close()
                except Exception:
                    pass
            time.sleep(0.05)

    def wait_for(self, seq, timeout=30):
        deadline = time.time() + timeout
        while self.last < seq and time.time() < deadline:
            time.sleep(0.05)
        return self.last >= seq

    def stop(self):
        self.stop_ev.set()
        self.join(10)


def quiet_httpd(httpd):
    """No traceback on stderr for a connection a drill's kill -9 cut (a loopback receiver,
    the fake Dialpad): the drill's one line is its report."""
    httpd.handle_error = lambda *a: None
    return httpd


# ---- process figures ---------------------------------------------------------------------------

def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
