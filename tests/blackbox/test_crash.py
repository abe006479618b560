"""Crash safety of ingest: a 200 means the event is durably stored (CONTRACT.md, Dialpad
webhooks), so SIGKILL mid-stream loses no acknowledged event, applies none twice, and
leaves the per-app seqs gapless (Events). Both backends.

Several threads send a few thousand distinct signed webhooks; the server is SIGKILLed
about a second in, while requests are in flight; it is restarted on the same workdir
and database, and the stream is read back once it stops growing.
"""
import collections
import threading
import time

import requests

from dialpad import (ADMIN_SECRET, CALL_EVENT_NAMES as NAMES, all_events, call_events, create_app,
                     key_of, sign)

CALLS = 1500  # x (ringing, hangup) = 3000 webhooks
THREADS = 12
KILL_AFTER = 1.0
BASE_CALL_ID = 7300000000000000


def webhooks():
    return call_events(BASE_CALL_ID, CALLS)


def blast(url, tokens, acked, failed, stop):
    """Sends tokens from THREADS threads; records the indexes answered 200."""
    lock = threading.Lock()

    def worker(part):
        s = requests.Session()
        for i in part:
            if stop.is_set():
                return
            try:
                r = s.post(url, data=tokens[i], headers={"Content-Type": "application/jwt"},
                           timeout=10)
            except requests.RequestException:
                with lock:
                    failed.add(i)
                return  # the server is gone: this thread stops
            with lock:
                (acked if r.status_code == 200 else failed).add(i)

    threads = [threading.Thread(target=worker, args=(range(t, len(tokens), THREADS),))
               for t in range(THREADS)]
    for t in threads:
        t.start()
    return threads


def settled_events(srv, key, timeout=20.0, quiet=1.0):
    """The app's events once /api/events has stopped growing for `quiet` seconds."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while True:
        evs = all_events(srv, key)
        if last is None or len(evs) != len(last):
            last, since = evs, time.time()
        elif time.time() - since >= quiet:
            return evs
        assert time.time() < deadline, f"/api/events still growing after {timeout}s: {len(evs)}"
        time.sleep(0.1)


def crash_and_check(make_server, database, workdir):
    env = {"INTERNAL_API_SECRET": ADMIN_SECRET}
    srv = make_server(env=env, database=database, workdir=workdir)
    app = create_app(srv, "crash")
    sent = webhooks()
    tokens = [sign(ev, app["webhook_secret"]) for ev in sent]
    url = srv.url(f"/webhooks/dialpad/{app['app_id']}")

    acked, failed, stop = set(), set(), threading.Event()
    t0 = time.time()
    threads = blast(url, tokens, acked, failed, stop)
    time.sleep(KILL_AFTER)
    acked_before_kill = len(acked)
    srv.kill()  # SIGKILL, sends in flight
    killed_at = time.time() - t0
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert acked_before_kill > 0, "nothing was acknowledged in the first second"
    assert len(acked) < len(sent), \
        f"all {len(sent)} webhooks were answered before the kill: not a mid-stream crash"
    assert failed, "no request was cut off by the kill"

    srv.start()  # same workdir, same database, same port
    evs = settled_events(srv, app["api_key"])

    sent_keys = {key_of(ev) for ev in sent}
    counts = collections.Counter((e["call_id"], e["event"]) for e in evs)
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"events applied more than once after the crash: {sorted(twice)[:20]}"
    stray = set(counts) - sent_keys
    assert not stray, f"events in the store that were never sent: {sorted(stray)[:20]}"
    lost = sorted(key_of(sent[i]) for i in acked if key_of(sent[i]) not in counts)
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged events lost by the crash " \
                     f"(killed at {killed_at:.2f}s): {lost[:20]}"
    seqs = [e["seq"] for e in evs]
    assert seqs == list(range(1, len(evs) + 1)), "seqs are not gapless 1..N after the crash"
    print(f"killed at {killed_at:.2f}s: {len(acked)} answered 200 ({acked_before_kill} a moment "
          f"before the kill), {len(failed)} cut off; {len(evs)} events in the stream after restart")

    # the timelines agree with the stream, for a sample of calls
    for cid in sorted({k[0] for k in counts})[:: max(1, len(counts) // 40)]:
        r = srv.get(f"/api/calls/{cid}", headers={"X-API-Key": app["api_key"]})
        assert r.status_code == 200, r.text
        states = collections.Counter(t["state"] for t in r.json()["timeline"])
        want = collections.Counter(s for s, n in NAMES.items() if (cid, n) in counts)
        assert states == want, (cid, r.json()["timeline"])

    # Dialpad retries what it did not see answered: every retry of an event the server
    # already has is a duplicate, every other one is stored; afterwards each event is in
    # the stream exactly once and the seqs stay gapless
    retry = [i for i in range(len(sent)) if i not in acked] + sorted(acked)[:200]
    s = requests.Session()
    for i in retry:
        r = s.post(url, data=tokens[i], headers={"Content-Type": "application/jwt"}, timeout=10)
        assert r.status_code == 200, r.text
        if i in acked or key_of(sent[i]) in counts:
            assert r.json()["duplicate"] is True, (sent[i], r.text)
    evs = settled_events(srv, app["api_key"], quiet=0.5)
    counts = collections.Counter((e["call_id"], e["event"]) for e in evs)
    assert set(counts) == sent_keys and set(counts.values()) == {1}, \
        f"{len(counts)} distinct of {len(sent_keys)}; repeated: {[k for k, n in counts.items() if n > 1][:10]}"
    assert [e["seq"] for e in evs] == list(range(1, len(sent) + 1))
    return srv


def test_sigkill_mid_stream_sqlite(make_server, tmp_path):
    workdir = tmp_path / "crash-sqlite"
    crash_and_check(make_server, f"sqlite:{workdir}/cti.db", workdir)


def test_sigkill_mid_stream_postgres(make_server, pg, tmp_path):
    crash_and_check(make_server, pg.fresh_database("bb_crash"), tmp_path / "crash-pg")
