"""The drills. Each is fn(env, backend, quick) -> (did, expected, got) or raises DrillFailed."""
import collections
import http.client
import random
import sqlite3
import subprocess
import threading
import time

import requests

from common import (ADMIN, DrillFailed, ResumingListener, call_events, check, check_log,
                    cpu_seconds, create_app, events_since, health, key_of, open_fds,
                    percentile, post_token, rss_kib, sign, wait_settled)
from proxy import TcpProxy


class Drill:
    def __init__(self, name, fn, backends, summary, expected, limit, limit_quick):
        self.name, self.fn, self.backends = name, fn, backends
        self.summary, self.expected = summary, expected
        self.limit, self.limit_quick = limit, limit_quick


ALL = []


def drill(name, backends, summary, expected, limit=600, limit_quick=180):
    def wrap(fn):
        ALL.append(Drill(name, fn, backends, summary, expected, limit, limit_quick))
        return fn
    return wrap


def fail(did, msg):
    e = DrillFailed(msg)
    e.did = did
    raise e


# ---- Dialpad-like senders ----------------------------------------------------------------------

class Sender(threading.Thread):
    """Posts its tokens in order; a token not answered 200 (503, cut off, timeout) is retried
    after a pause, as Dialpad retries, until answered or stopped."""

    def __init__(self, url, items, acked, lock, stats, pause=0.2, timeout=5):
        super().__init__(daemon=True)
        self.url, self.items, self.acked, self.lock, self.stats = url, items, acked, lock, stats
        self.pause, self.timeout = pause, timeout
        self.stop_ev = threading.Event()
        self.done = False

    def run(self):
        s = requests.Session()
        for idx, token in self.items:
            while not self.stop_ev.is_set():
                try:
                    r = post_token(s, self.url, token, timeout=self.timeout)
                    code = r.status_code
                except requests.RequestException as e:
                    code = type(e).__name__
                    s = requests.Session()
                with self.lock:
                    self.stats.append((time.time(), code))
                    if code == 200:
                        self.acked.add(idx)
                if code == 200:
                    break
                time.sleep(self.pause)
            if self.stop_ev.is_set():
                return
        self.done = True


# ---- kill -9 soak ------------------------------------------------------------------------------

@drill("killsoak", ["sqlite", "postgres"],
       "kill -9 under webhook load, restart, check",
       "every acknowledged event applied exactly once, seqs gapless, a resuming WebSocket "
       "client without gap or duplicate", limit=900, limit_quick=240)
def killsoak(env, backend, quick):
    cycles = 5 if quick else 50
    per_cycle = 150  # calls: 300 new webhooks a cycle
    threads = 6
    rng = random.Random(22)
    workdir = env.dir / "srv"
    srv = env.server(env.database(backend, "killsoak"), workdir=workdir)
    app = create_app(srv, "soak")
    key = app["api_key"]
    url = srv.url(f"/webhooks/dialpad/{app['app_id']}")
    listener = ResumingListener(srv, key)
    listener.start()
    env.on_stop(listener.stop)

    sent, tokens = [], []
    acked = set()
    cut = 0
    log = []
    did = f"{cycles} cycles of kill -9 after 0.2-0.8 s of {threads} clients posting new webhooks, " \
          f"duplicates and retries"
    for c in range(cycles):
        new = call_events(7400000000000000 + c * per_cycle, per_cycle)
        first = len(sent)
        sent += new
        tokens += [sign(ev, app["webhook_secret"]) for ev in new]
        unanswered = [i for i in range(first) if i not in acked]
        dups = rng.sample(sorted(acked), min(40, len(acked)))
        work = unanswered + dups + list(range(first, len(sent)))
        rng.shuffle(work)
        lock = threading.Lock()
        got = set()

        def worker(part):
            s = requests.Session()
            for i in part:
                try:
                    r = post_token(s, url, tokens[i], timeout=10)
                except requests.RequestException:
                    return
                if r.status_code == 200:
                    with lock:
                        got.add(i)
        ts = [threading.Thread(target=worker, args=(work[t::threads],), daemon=True)
              for t in range(threads)]
        for t in ts:
            t.start()
        time.sleep(rng.uniform(0.2, 0.8))
        srv.kill()
        for t in ts:
            t.join(30)
        check(not any(t.is_alive() for t in ts), f"cycle {c}: a client hung after the kill")
        acked |= got
        cut += len(work) - len(got)
        srv.start(timeout=60)
        wait_settled(srv)
        log += events_since(srv, key, len(log))
        check_log(log, {key_of(sent[i]) for i in acked}, {key_of(e) for e in sent})
        check(listener.wait_for(len(log), 30),
              f"cycle {c}: the resuming client is at {listener.last}, the log at {len(log)}")
        check(not listener.problems, f"cycle {c}: WebSocket stream: {listener.problems[:3]}")

    # Dialpad retries every webhook it never saw answered: afterwards all are there once
    s = requests.Session()
    for i in range(len(sent)):
        if i not in acked:
            r = post_token(s, url, tokens[i])
            check(r.status_code == 200, f"final retry answered {r.status_code}")
    wait_settled(srv)
    log += events_since(srv, key, len(log))
    counts = check_log(log, {key_of(e) for e in sent}, {key_of(e) for e in sent})
    check(len(counts) == len(sent), f"{len(counts)} of {len(sent)} events after the retries")
    check(listener.wait_for(len(log), 30) and not listener.problems,
          f"WebSocket stream at {listener.last} of {len(log)}: {listener.problems[:3]}")
    listener.stop()
    check(listener.seqs == list(range(1, len(log) + 1)),
          "the resuming client's seqs are not exactly 1..N")
    return (did, "every acknowledged event applied exactly once, seqs gapless, a resuming "
                 "WebSocket client without gap or duplicate",
            f"{len(sent)} webhooks, {len(acked)} answered 200 before a kill, {cut} sends cut "
            f"off or not yet made at a kill; {len(log)} events, each once, seqs 1..{len(log)} gapless after every "
            f"restart; the WebSocket client reconnected {listener.reconnects} times and got "
            f"1..{listener.last} with no gap or duplicate")
