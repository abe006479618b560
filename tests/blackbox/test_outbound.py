"""Outbound webhooks (issue #20): black-box tests of delivery, written from the contract.

The contract (docs/API.md, "Outbound webhooks"): endpoints are managed under
/api/webhook-endpoints with the app's API key; each event of the stream whose type
matches an endpoint's `types` is POSTed to it as JSON (the event object exactly as on the
stream, without the stream's "type" key), signed per Standard Webhooks (headers
webhook-id, webhook-timestamp, webhook-signature: "v1,<base64 HMAC-SHA256 of
'{id}.{timestamp}.{body}'>" with the base64-decoded part of the "whsec_" secret; two
signatures, space-separated, while an old secret is in its grace). A 2xx is delivery;
anything else, or no answer within OUTBOUND_TIMEOUT_MS, is retried on
OUTBOUND_RETRY_SCHEDULE; after the last try the delivery is failed. Per endpoint, the
events of one call are delivered in seq order. Deliveries are listed per endpoint,
can be replayed (`since_seq`) or retried one by one, survive a restart, and with
several instances each is made by one instance at a time.

Facts of our implementation the tests rely on: webhook-id is
"msg_<endpoint id without dashes>_<seq>" (the same on retries and replays);
OUTBOUND_RETRY_SCHEDULE takes durations like 200ms,1s (the tests use short ones).

The receiver (tests/blackbox/receiver.py) is a threaded HTTP server on 127.0.0.1 (a free
port) that records every request (method, path, headers, exact body, arrival and answer
times, status) and can be told per path to fail the first N attempts of each webhook-id
with 500, fail always, hang (never answer), or answer slowly. Signatures are checked
twice: by an independent Python HMAC check here and by the real `standardwebhooks` npm
library (tests/blackbox/verifier/verify.mjs, run by node; `make test-blackbox` installs
it from its lock file with `npm ci --prefix tests/blackbox/verifier`).

Every test runs on SQLite and on PostgreSQL (the `backend` fixture); the two-instance
test runs on PostgreSQL. Nothing sleeps and then asserts: tests poll to generous
deadlines (20-60 s for things that take milliseconds) and only use short "quiet"
windows to check that something did NOT arrive.

Run this file alone:
    make build/asan/cti-server cti-server
    npm ci --prefix tests/blackbox/verifier
    CTI_SERVER_BIN=$PWD/build/asan/cti-server CTI_SERVER_RELEASE_BIN=$PWD/cti-server \\
      /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/blackbox/test_outbound.py
"""
import base64
import hashlib
import hmac
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dialpad import ADMIN_SECRET, all_events, create_app, load, sign, post_hook, wait_events
from receiver import Receiver

VERIFIER = Path(__file__).resolve().parent / "verifier"
SHORT = "200ms,400ms,800ms"
TS0 = 1767628800000  # 2026-01-05T16:00:00Z, the Dialpad event times of the calls below


# ---- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture
def rx():
    r = Receiver()
    yield r
    r.close()


def start(make_server, database, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET, "OUTBOUND_RETRY_SCHEDULE": SHORT,
         "OUTBOUND_TIMEOUT_MS": "3000"}
    e.update(env)
    return make_server(env=e, database=database)


class Tenant:
    """One app on one server, as the customer sees it (its API key)."""

    def __init__(self, srv, name="acme", app=None):
        self.srv = srv
        self.app = app or create_app(srv, name)
        self.app_id = self.app["app_id"]
        self.key = self.app["api_key"]
        self.headers = {"X-API-Key": self.key}

    def api(self, method, path, **kw):
        return self.srv.request(method, path, headers=self.headers, **kw)

    def endpoint(self, url, types=None, **extra):
        body = {"url": url}
        if types is not None:
            body["types"] = types
        body.update(extra)
        r = self.api("POST", "/api/webhook-endpoints", json=body)
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        ep = r.json()
        assert ep["url"] == url and ep["enabled"] is True, ep
        assert ep["secret"].startswith("whsec_"), ep
        return ep

    def send(self, event, srv=None):
        r = post_hook(srv or self.srv, self.app_id, sign(event, self.app["webhook_secret"]))
        assert r.status_code == 200, f"{r.status_code} {r.text}"

    def events(self):
        return all_events(self.srv, self.key)

    def wait_events(self, n, timeout=20):
        return wait_events(self.srv, self.key, n, timeout=timeout)

    def deliveries(self, ep_id, status=None):
        out, cursor = [], None
        while True:
            q = "?limit=500" + (f"&status={status}" if status else "") + (f"&cursor={cursor}" if cursor else "")
            r = self.api("GET", f"/api/webhook-endpoints/{ep_id}/deliveries{q}")
            assert r.status_code == 200, f"{r.status_code} {r.text}"
            body = r.json()
            out += body["data"]
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    def delivery(self, ep_id, seq):
        """The newest delivery of the event seq to the endpoint (None if there is none)."""
        ds = [d for d in self.deliveries(ep_id) if d["event_seq"] == seq]
        return max(ds, key=lambda d: d["id"]) if ds else None

    def wait_delivery(self, ep_id, seq, pred, timeout=20, what="delivery"):
        last = [None]

        def check():
            last[0] = self.delivery(ep_id, seq)
            return last[0] is not None and pred(last[0])
        try:
            Receiver.wait(check, timeout, interval=0.05, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {last[0]}") from None
        return last[0]


def call_events(call_id, ts, states=("ringing", "connected", "hangup")):
    """Dialpad webhooks of one inbound call, one event each, in time order."""
    out = []
    for i, st in enumerate(states):
        ev = {"call_id": call_id, "state": st, "direction": "inbound",
              "external_number": "+14155550123", "internal_number": "+14155550199",
              "date_started": ts, "event_timestamp": ts + 1000 * (i + 1)}
        if st in ("connected", "hold", "hangup"):
            ev["date_connected"] = ts + 1000
        if st == "hangup":
            ev["date_ended"] = ts + 1000 * (i + 1)
        out.append(ev)
    return out


def wid(ep, seq):
    return f"msg_{ep['id'].replace('-', '')}_{seq}"


def quiet(seconds=1.0):
    """A short window in which something must NOT happen (only used after the positive
    condition was reached, so it never slows a passing path by more than this)."""
    time.sleep(seconds)


def py_matches(secret, hit):
    """The signatures of the hit (a list of "v1,<b64>") that verify with secret, by an
    independent HMAC-SHA256 check of "{id}.{timestamp}.{body}"."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{hit.headers['webhook-id']}.{hit.headers['webhook-timestamp']}.".encode() + hit.body
    want = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return [s for s in hit.headers["webhook-signature"].split(" ") if s == want]


def node_verify(cases):
    """[(secret, hit, body bytes or None)] -> the standardwebhooks library's verdicts."""
    if not (VERIFIER / "node_modules" / "standardwebhooks").is_dir():
        pytest.fail("the standardwebhooks library is not installed: npm ci --prefix tests/blackbox/verifier")
    data = [{"secret": s, "headers": {k: h.headers[k] for k in ("webhook-id", "webhook-timestamp",
                                                                   "webhook-signature")},
             "body_b64": base64.b64encode(h.body if body is None else body).decode()}
            for s, h, body in cases]
    out = subprocess.run(["node", str(VERIFIER / "verify.mjs")], input=json.dumps(data), text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def by_seq(hits):
    out = {}
    for h in hits:
        out.setdefault(h.seq, []).append(h)
    return out


def assert_ids_stable(ep, hits):
    """Each webhook-id names one event and each event has one webhook-id (the documented one)."""
    ids_of_seq, seqs_of_id = {}, {}
    for h in hits:
        ids_of_seq.setdefault(h.seq, set()).add(h.id)
        seqs_of_id.setdefault(h.id, set()).add(h.seq)
    bad = {s: ids for s, ids in ids_of_seq.items() if len(ids) != 1}
    assert not bad, f"events delivered under several webhook-ids: {bad}"
    bad = {i: s for i, s in seqs_of_id.items() if len(s) != 1}
    assert not bad, f"webhook-ids used for several events: {bad}"
    wrong = {s: ids for s, ids in ids_of_seq.items() if ids != {wid(ep, s)}}
    assert not wrong, f"webhook-ids not msg_<endpoint>_<seq>: {wrong}"


# ---- 1. signatures, headers, body ----------------------------------------------------------

def test_signed_delivery_verifies(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/sig"), description="the CRM")
    assert ep.get("types") in (None, []), ep  # absent = all
    key = base64.b64decode(ep["secret"][len("whsec_"):], validate=True)
    assert 24 <= len(key) <= 64, f"secret of {len(key)} bytes (Standard Webhooks: 24-64)"

    for ev in call_events(5001, TS0):
        t.send(ev)
    stream = {e["seq"]: e for e in t.wait_events(3)}
    rx.wait(lambda: set(rx.delivered_seqs("/sig")) >= set(stream), what="3 deliveries")
    hits = rx.delivered("/sig")
    assert sorted(h.seq for h in hits) == sorted(stream), hits  # each once (no failure, no retry)
    for h in hits:
        assert h.method == "POST"
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            assert name in h.headers, f"{name} missing: {h.headers}"
        assert h.headers.get("content-type", "").split(";")[0].strip() == "application/json", h.headers
        ts = int(h.headers["webhook-timestamp"])
        assert abs(ts - h.received_at) <= 60, f"webhook-timestamp {ts} vs now {h.received_at:.0f}"
        assert h.id == wid(ep, h.seq)
        assert len(py_matches(ep["secret"], h)) == 1, h.headers["webhook-signature"]
        assert len(h.headers["webhook-signature"].split(" ")) == 1
        assert "type" not in h.json, h.json
        assert h.json == stream[h.seq], f"body is not the stream's event:\n{h.json}\n{stream[h.seq]}"
    # a tampered body, another secret and another id must not verify (the check can fail)
    assert py_matches("whsec_" + base64.b64encode(b"x" * 32).decode(), hits[0]) == []
    cases = [(ep["secret"], h, None) for h in hits]
    cases += [(ep["secret"], hits[0], hits[0].body.replace(b'"seq"', b'"Seq"')),
              ("whsec_" + base64.b64encode(b"y" * 32).decode(), hits[0], None)]
    verdicts = node_verify(cases)
    for h, v in zip(hits, verdicts):
        assert v["ok"], f"standardwebhooks rejected {h}: {v}"
        assert v["payload"]["seq"] == h.seq
    assert not verdicts[-2]["ok"] and not verdicts[-1]["ok"], verdicts[-2:]


# ---- 2. retries keep the webhook-id ------------------------------------------------------------

def test_retry_after_failures_keeps_the_id(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/flaky"))
    rx.fail_first("/flaky", 2)
    t.send(call_events(5101, TS0, ("ringing",))[0])
    seq = t.wait_events(1)[0]["seq"]
    rx.wait(lambda: rx.delivered("/flaky"), what="a delivery after 2 failures")
    hits = rx.hits("/flaky")
    assert [h.status for h in hits] == [500, 500, 200], hits
    assert {h.id for h in hits} == {wid(ep, seq)}, hits
    assert {h.seq for h in hits} == {seq}
    for h in hits:  # every attempt is signed (its own timestamp may differ)
        assert len(py_matches(ep["secret"], h)) == 1
    # backoff: the retries wait (200 ms, 400 ms, plus jitter); half is allowed for clocks
    assert hits[1].received_at - hits[0].answered_at >= 0.1, "first retry came at once"
    assert hits[2].received_at - hits[1].answered_at >= 0.2, "second retry came too early"
    d = t.wait_delivery(ep["id"], seq, lambda d: d["status"] == "succeeded", what="status succeeded")
    assert d["attempts"] == 3, d
    assert d["event"] == "call.ringing" and d["last_status_code"] == 200, d
    quiet(0.8)
    assert len(rx.hits("/flaky")) == 3, "a succeeded delivery was sent again"


# ---- 3. type filters --------------------------------------------------------------------------

def matches(types, name):
    if not types:
        return True
    return any(name == p or (p.endswith(".*") and name.startswith(p[:-1])) for p in types)


def test_type_filters(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    spec = {"/exact": ["call.ringing", "call.ended"], "/calls": ["call.*"],
            "/sms": ["sms.received"], "/all": None, "/none-match": ["agent.status"]}
    eps = {p: t.endpoint(rx.url(p), types) for p, types in spec.items()}
    for p, types in spec.items():
        if types is not None:
            assert eps[p]["types"] == types, eps[p]
    for ev in call_events(5201, TS0):
        t.send(ev)
    t.send(load("sms-inbound")[0])
    stream = t.wait_events(4)
    names = sorted(e["event"] for e in stream)
    assert names == sorted(["call.ringing", "call.connected", "call.ended", "sms.received"]), names
    want = {p: sorted(e["seq"] for e in stream if matches(types, e["event"])) for p, types in spec.items()}
    assert want["/none-match"] == [] and len(want["/calls"]) == 3 and len(want["/sms"]) == 1
    for p in spec:
        rx.wait(lambda: rx.delivered_seqs(p) == want[p] or set(rx.delivered_seqs(p)) - set(want[p]),
                what=f"deliveries to {p}")
    quiet(1.0)
    for p in spec:
        assert rx.delivered_seqs(p) == want[p], f"{p} ({spec[p]}): got {[(h.seq, h.json['event']) for h in rx.hits(p)]}"
        assert sorted(d["event_seq"] for d in t.deliveries(eps[p]["id"])) == want[p], p
    assert all(not h.json["event"].startswith("sms.") for h in rx.hits("/calls"))


# ---- 4. per-call order under concurrency ----------------------------------------------------

def test_per_call_order_under_concurrency(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    # /o1 rejects the first attempt of each call.connected, so the call's next event must
    # wait for its retry; /o2 takes everything at once
    ep1 = t.endpoint(rx.url("/o1"))
    ep2 = t.endpoint(rx.url("/o2"))
    rx.fail_first("/o1", 1, when=lambda hit: (hit.json or {}).get("event") == "call.connected")
    calls, per_call = 24, ("ringing", "connected", "hold", "hangup")
    webhooks = [call_events(5300 + c, TS0 + 60000 * c, per_call) for c in range(calls)]
    errors = []

    def sender(k, nthreads=4):
        try:  # each thread posts its calls' events interleaved, each call in time order
            mine = [w for i, w in enumerate(webhooks) if i % nthreads == k]
            for step in range(len(per_call)):
                for w in mine:
                    t.send(w[step])
        except AssertionError as e:
            errors.append(e)
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    n = calls * len(per_call)
    stream = t.wait_events(n)
    assert len(stream) == n
    seqs_of_call = {}
    for e in stream:
        seqs_of_call.setdefault(e["call_id"], []).append(e["seq"])
    all_seqs = sorted(e["seq"] for e in stream)
    for path, ep in (("/o1", ep1), ("/o2", ep2)):
        rx.wait(lambda: rx.delivered_seqs(path) == all_seqs, timeout=60, what=f"all {n} events at {path}")
    quiet(0.5)
    call_of_seq = {e["seq"]: e["call_id"] for e in stream}
    for path, ep in (("/o1", ep1), ("/o2", ep2)):
        hits = rx.hits(path)
        assert rx.delivered_seqs(path) == all_seqs
        assert_ids_stable(ep, hits)
        # no attempt of a call's event before every earlier event of that call was delivered
        ok_at = {}
        for h in rx.delivered(path):
            ok_at[h.seq] = min(ok_at.get(h.seq, h.answered_at), h.answered_at)
        for h in hits:
            cid = call_of_seq[h.seq]
            for earlier in seqs_of_call[cid]:
                if earlier < h.seq:
                    assert ok_at[earlier] <= h.received_at, (
                        f"{path}: seq {h.seq} of call {cid} sent at {h.received_at:.3f} before "
                        f"seq {earlier} was delivered (at {ok_at[earlier]:.3f})")
        # and each event was delivered once (2xx) only
        dup = {s: len(hs) for s, hs in by_seq(rx.delivered(path)).items() if len(hs) > 1}
        assert not dup, f"{path}: events delivered more than once: {dup}"
    assert [h.status for h in rx.hits("/o1")].count(500) == calls  # each call.connected once


# ---- 5. replay ----------------------------------------------------------------------------------

def test_replay_since_seq(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/r"))
    for c in range(5):
        t.send(call_events(5400 + c, TS0 + 60000 * c, ("ringing",))[0])
    seqs = sorted(e["seq"] for e in t.wait_events(5))
    rx.wait(lambda: rx.delivered_seqs("/r") == seqs, what="5 deliveries")
    before = {h.seq: h.id for h in rx.delivered("/r")}
    n_before = len(rx.hits("/r"))
    # bad input changes nothing
    for bad in ({}, {"since_seq": "two"}):
        r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/replay", json=bad)
        assert r.status_code == 400, f"{bad}: {r.status_code} {r.text}"
        assert r.json()["error"] == "invalid_request", r.text
    since = seqs[1]
    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/replay", json={"since_seq": since})
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert r.json()["replayed"] == 3, r.json()
    rx.wait(lambda: len(rx.hits("/r")) >= n_before + 3, what="3 replayed deliveries")
    quiet(1.0)
    new = rx.hits("/r")[n_before:]
    assert sorted(h.seq for h in new) == [s for s in seqs if s > since], new
    assert all(h.ok for h in new)
    for h in new:
        assert h.id == before[h.seq], f"replay of seq {h.seq} under a new id {h.id} (was {before[h.seq]})"
        assert len(py_matches(ep["secret"], h)) == 1
    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/replay", json={"since_seq": seqs[-1]})
    assert r.status_code == 202 and r.json()["replayed"] == 0, r.text
    quiet(0.5)
    assert len(rx.hits("/r")) == n_before + 3


# ---- 6. secret rotation ----------------------------------------------------------------------

def test_rotate_secret_signs_with_both_during_grace(make_server, backend, rx):
    srv = start(make_server, backend)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/rot"))
    s1 = ep["secret"]
    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/rotate-secret", json={"grace_seconds": 3600})
    assert r.status_code in (200, 201), f"{r.status_code} {r.text}"
    s2 = r.json()["secret"]
    assert s2.startswith("whsec_") and s2 != s1
    t.send(call_events(5501, TS0, ("ringing",))[0])
    rx.wait(lambda: rx.delivered("/rot"), what="a delivery during the grace")
    h = rx.delivered("/rot")[0]
    sigs = h.headers["webhook-signature"].split(" ")
    assert len(sigs) == 2, f"during the grace two signatures are expected: {sigs}"
    m1, m2 = py_matches(s1, h), py_matches(s2, h)
    assert len(m1) == 1 and len(m2) == 1 and m1 != m2, (sigs, m1, m2)
    v = node_verify([(s1, h, None), (s2, h, None)])
    assert v[0]["ok"] and v[1]["ok"], v

    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/rotate-secret", json={"grace_seconds": 0})
    assert r.status_code in (200, 201), f"{r.status_code} {r.text}"
    s3 = r.json()["secret"]
    assert s3 not in (s1, s2)
    t.send(call_events(5502, TS0, ("ringing",))[0])
    rx.wait(lambda: len(rx.delivered("/rot")) >= 2, what="a delivery after rotating without grace")
    h = rx.delivered("/rot")[1]
    sigs = h.headers["webhook-signature"].split(" ")
    assert len(sigs) == 1, f"with grace_seconds 0 only the new secret signs: {sigs}"
    assert len(py_matches(s3, h)) == 1 and not py_matches(s2, h) and not py_matches(s1, h)
    v = node_verify([(s3, h, None), (s2, h, None), (s1, h, None)])
    assert [x["ok"] for x in v] == [True, False, False], v


# ---- 7. kill -9 with deliveries pending ------------------------------------------------------

def test_sigkill_with_deliveries_pending(make_server, backend, rx):
    # retries every second for ~15 s: nothing runs out while the server is down
    env = {"OUTBOUND_RETRY_SCHEDULE": "300ms,600ms" + ",1s" * 14, "OUTBOUND_TIMEOUT_MS": "1000"}
    srv = start(make_server, backend, **env)
    t = Tenant(srv)
    ep_fail = t.endpoint(rx.url("/fail"))
    ep_hang = t.endpoint(rx.url("/hang"))
    rx.fail_always("/fail")
    rx.hang("/hang")
    for c in range(3):
        for ev in call_events(5600 + c, TS0 + 60000 * c):
            t.send(ev)
    stream = t.wait_events(9)
    seqs = sorted(e["seq"] for e in stream)
    # each call's first event is being attempted on both endpoints
    rx.wait(lambda: len({h.seq for h in rx.hits("/fail")}) >= 3 and len(rx.hits("/fail")) >= 6,
            what="failing attempts")
    rx.wait(lambda: rx.in_flight("/hang") >= 1, what="a hanging attempt")
    srv.kill()  # SIGKILL
    rx.heal("/fail")
    rx.heal("/hang")
    srv.start()
    for path in ("/fail", "/hang"):
        rx.wait(lambda: rx.delivered_seqs(path) == seqs, timeout=60,
                what=f"every event delivered to {path} after the restart")
    for path, ep in (("/fail", ep_fail), ("/hang", ep_hang)):
        assert_ids_stable(ep, rx.hits(path))
    for ep in (ep_fail, ep_hang):
        for s in seqs:
            t.wait_delivery(ep["id"], s, lambda d: d["status"] == "succeeded", what=f"seq {s} succeeded")
    assert sorted(e["seq"] for e in t.events()) == seqs  # the restart added no event


# ---- 8. a hanging endpoint does not hold up another ------------------------------------------

def test_hanging_endpoint_does_not_delay_others(make_server, backend, rx):
    srv = start(make_server, backend, OUTBOUND_TIMEOUT_MS="30000")
    t = Tenant(srv)
    t.endpoint(rx.url("/stuck"))
    t.endpoint(rx.url("/fast"))
    rx.hang("/stuck")
    n = 40  # more calls than attempts allowed at once to one endpoint (32 by default)
    posted = {}
    for c in range(n):
        t.send(call_events(5700 + c, TS0 + 60000 * c, ("ringing",))[0])
        posted[5700 + c] = time.time()
    seqs = sorted(e["seq"] for e in t.wait_events(n))
    rx.wait(lambda: rx.delivered_seqs("/fast") == seqs, timeout=20, what="deliveries to /fast")
    late = []
    for h in rx.delivered("/fast"):
        lag = h.received_at - posted[int(h.json["call_id"])]
        if lag > 5.0:
            late.append((h.seq, round(lag, 2)))
    assert not late, f"/fast got events late while /stuck hung: {late}"
    assert rx.in_flight("/stuck") >= 1 and not rx.delivered("/stuck"), "the hanging endpoint was not stuck"


# ---- 9. tenant isolation ---------------------------------------------------------------------

def test_tenant_isolation(make_server, backend, rx):
    srv = start(make_server, backend)
    a, b = Tenant(srv, "alpha"), Tenant(srv, "beta")
    ea = a.endpoint(rx.url("/a"))
    eb = b.endpoint(rx.url("/b"))
    a.send(call_events(5801, TS0, ("ringing",))[0])
    seq = a.wait_events(1)[0]["seq"]
    rx.wait(lambda: rx.delivered("/a"), what="A's delivery")
    da = a.wait_delivery(ea["id"], seq, lambda d: d["status"] == "succeeded", what="A's delivery listed")
    p = f"/api/webhook-endpoints/{ea['id']}"
    for method, path, body in (("GET", p, None), ("PATCH", p, {"enabled": False}),
                               ("PATCH", p, {"url": rx.url("/stolen")}),
                               ("POST", p + "/rotate-secret", {}),
                               ("POST", p + "/replay", {"since_seq": 0}),
                               ("GET", p + "/deliveries", None),
                               ("POST", p + f"/deliveries/{da['id']}/retry", None),
                               ("POST", f"/api/webhook-endpoints/{eb['id']}/deliveries/{da['id']}/retry", None),
                               ("DELETE", p, None)):
        r = b.api(method, path, json=body)
        assert r.status_code == 404, f"B {method} {path}: {r.status_code} {r.text}"
        assert r.json()["error"] == "not_found", r.text
    r = b.api("GET", "/api/webhook-endpoints")
    assert r.status_code == 200 and [e["id"] for e in r.json()["data"]] == [eb["id"]], r.text
    r = a.api("GET", p)
    assert r.status_code == 200 and r.json()["url"] == rx.url("/a") and r.json()["enabled"] is True, r.text
    # A's events keep going to A only
    n_a = len(rx.hits("/a"))
    a.send(call_events(5802, TS0, ("ringing",))[0])
    rx.wait(lambda: len(rx.delivered("/a")) >= 2, what="A's second delivery")
    quiet(1.0)
    assert rx.hits("/b") == [] and rx.hits("/stolen") == [], "A's events reached B"
    assert len(rx.hits("/a")) == n_a + 1, "B's replay or retry re-sent A's event"
    assert b.deliveries(eb["id"]) == []


# ---- 10. retry one delivery after it failed -----------------------------------------------------

def test_retry_one_after_final_failure(make_server, backend, rx):
    srv = start(make_server, backend, OUTBOUND_RETRY_SCHEDULE="200ms,200ms", OUTBOUND_TIMEOUT_MS="8000")
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/x"))
    rx.fail_always("/x")
    t.send(call_events(5901, TS0, ("ringing",))[0])
    seq = t.wait_events(1)[0]["seq"]
    d = t.wait_delivery(ep["id"], seq, lambda d: d["status"] == "failed", what="status failed")
    assert d["attempts"] == 3 and d["last_status_code"] == 500, d
    assert len(rx.hits("/x")) == 3
    r = t.api("GET", f"/api/webhook-endpoints/{ep['id']}/deliveries?status=failed")
    assert [x["id"] for x in r.json()["data"]] == [d["id"]], r.text
    # healed, but slow: the retried delivery is visibly pending while it is being sent
    rx.heal("/x")
    rx.slow("/x", 3.0)
    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/deliveries/{d['id']}/retry")
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert t.delivery(ep["id"], seq)["status"] == "pending"
    d2 = t.wait_delivery(ep["id"], seq, lambda d: d["status"] == "succeeded", what="status succeeded")
    assert d2["id"] == d["id"] and d2["attempts"] == 4 and d2["last_status_code"] == 200, d2
    hits = rx.hits("/x")
    assert len(hits) == 4 and hits[-1].ok and {h.id for h in hits} == {wid(ep, seq)}, hits
    r = t.api("POST", f"/api/webhook-endpoints/{ep['id']}/deliveries/999999999/retry")
    assert r.status_code == 404, r.text


# ---- 11. a disabled endpoint --------------------------------------------------------------------

def test_disabled_endpoint_gets_nothing(make_server, backend, rx):
    """While disabled an endpoint gets nothing, and events of that time are not queued
    for it (enabling it does not flood it with the backlog); replay is how it gets them."""
    srv = start(make_server, backend)
    t = Tenant(srv)
    off = t.endpoint(rx.url("/off"))
    t.endpoint(rx.url("/on"))
    r = t.api("PATCH", f"/api/webhook-endpoints/{off['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False, r.text
    for c in range(3):
        t.send(call_events(6000 + c, TS0 + 60000 * c, ("ringing",))[0])
    seqs = sorted(e["seq"] for e in t.wait_events(3))
    rx.wait(lambda: rx.delivered_seqs("/on") == seqs, what="the enabled endpoint's deliveries")
    quiet(1.0)
    assert rx.hits("/off") == [], "a disabled endpoint got deliveries"
    r = t.api("PATCH", f"/api/webhook-endpoints/{off['id']}", json={"enabled": True})
    assert r.status_code == 200 and r.json()["enabled"] is True, r.text
    t.send(call_events(6010, TS0, ("ringing",))[0])
    stream = t.wait_events(4)
    last = max(e["seq"] for e in stream)
    rx.wait(lambda: rx.delivered_seqs("/off") == [last], what="the re-enabled endpoint's delivery")
    quiet(1.0)
    assert rx.delivered_seqs("/off") == [last], "events of the disabled time were delivered later"
    assert [d["event_seq"] for d in t.deliveries(off["id"])] == [last]
    r = t.api("POST", f"/api/webhook-endpoints/{off['id']}/replay", json={"since_seq": 0})
    assert r.status_code == 202 and r.json()["replayed"] == 4, r.text
    rx.wait(lambda: rx.delivered_seqs("/off") == seqs + [last], what="the replayed backlog")
    assert_ids_stable(off, rx.hits("/off"))


# ---- 12. no answer within the timeout is a failure, retried -----------------------------------

def test_no_answer_within_timeout_is_retried(make_server, backend, rx):
    srv = start(make_server, backend, OUTBOUND_TIMEOUT_MS="1000",
                OUTBOUND_RETRY_SCHEDULE="300ms" + ",1s" * 10)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/t"))
    rx.hang("/t")
    t.send(call_events(6201, TS0, ("ringing",))[0])
    seq = t.wait_events(1)[0]["seq"]
    rx.wait(lambda: len(rx.hits("/t")) >= 2, what="a retry after the timeout")
    h1, h2 = rx.hits("/t")[:2]
    gap = h2.received_at - h1.received_at
    assert gap >= 1.0, f"retried {gap:.2f}s after the first attempt: before its 1 s timeout"
    assert h1.id == h2.id == wid(ep, seq)
    d = t.wait_delivery(ep["id"], seq, lambda d: d["attempts"] >= 1, what="an attempt recorded")
    assert d["status"] == "pending" and d["last_error"], d
    assert d["last_status_code"] in (None, 0), d
    rx.heal("/t")
    rx.wait(lambda: rx.delivered("/t"), timeout=20, what="the delivery once healed")
    t.wait_delivery(ep["id"], seq, lambda d: d["status"] == "succeeded", what="status succeeded")


# ---- 13. an endpoint failing for OUTBOUND_DISABLE_AFTER is disabled -----------------------------

def test_endpoint_failing_too_long_is_disabled(make_server, backend, rx):
    srv = start(make_server, backend, OUTBOUND_DISABLE_AFTER="2s",
                OUTBOUND_RETRY_SCHEDULE="200ms" + ",300ms" * 15)
    t = Tenant(srv)
    ep = t.endpoint(rx.url("/dead"))
    ok = t.endpoint(rx.url("/alive"))
    rx.fail_always("/dead")
    t.send(call_events(6301, TS0, ("ringing",))[0])

    def disabled():
        r = t.api("GET", f"/api/webhook-endpoints/{ep['id']}")
        assert r.status_code == 200, r.text
        return r.json()["enabled"] is False
    Receiver.wait(disabled, timeout=30, interval=0.2, what="the failing endpoint disabled")
    first = rx.hits("/dead")[0].received_at
    last = rx.hits("/dead")[-1].received_at
    assert last - first >= 1.5, f"disabled after failing for only {last - first:.2f}s (OUTBOUND_DISABLE_AFTER=2s)"
    r = t.api("GET", f"/api/webhook-endpoints/{ok['id']}")
    assert r.json()["enabled"] is True, "the healthy endpoint was disabled too"
    r = srv.get(f"/internal/apps/{t.app_id}/audit?limit=500", headers={"Authorization": "Bearer " + ADMIN_SECRET})
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["data"] if ep["id"] in json.dumps(e)]
    assert entries, f"no audit entry names the disabled endpoint: {r.text[:2000]}"
    # disabled means nothing more is sent, not even the pending retries
    n = len(rx.hits("/dead"))
    t.send(call_events(6302, TS0, ("ringing",))[0])
    rx.wait(lambda: len(rx.delivered("/alive")) >= 2, what="the healthy endpoint's second delivery")
    quiet(1.0)
    assert len(rx.hits("/dead")) == n, "a disabled endpoint was still sent to"


# ---- two instances on one PostgreSQL -------------------------------------------------------------

def test_two_instances_deliver_each_once_at_a_time(make_server, pg, rx):
    url = pg.fresh_database("bb_outbound_two")
    env = {"INTERNAL_API_SECRET": ADMIN_SECRET, "OUTBOUND_RETRY_SCHEDULE": SHORT,
           "TOKEN_ENCRYPTION_KEY": "3b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe"}
    one = make_server(env=env, database=url)
    two = make_server(env=env, database=url)
    t = Tenant(one)
    ep = t.endpoint(rx.url("/m"))
    # the events of every third call are attempted twice: more chances to overlap
    rx.fail_first("/m", 1, when=lambda hit: int((hit.json or {}).get("call_id") or 0) % 3 == 0)
    rx.slow("/m", 0.05)     # and each successful answer takes a while
    calls = 30
    webhooks = [call_events(6100 + c, TS0 + 60000 * c, ("ringing", "hangup")) for c in range(calls)]
    errors = []

    def sender(srv, part):
        try:
            for step in range(2):
                for i, w in enumerate(webhooks):
                    if i % 2 == part:
                        t.send(w[step], srv=srv)
        except AssertionError as e:
            errors.append(e)
    threads = [threading.Thread(target=sender, args=(s, k)) for k, s in enumerate((one, two))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors[:3]
    seqs = sorted(e["seq"] for e in t.wait_events(2 * calls))
    rx.wait(lambda: rx.delivered_seqs("/m") == seqs, timeout=60, what="every event delivered")
    quiet(1.0)
    assert not rx.overlaps, f"one webhook-id in flight twice at once: {sorted(set(rx.overlaps))[:10]}"
    assert_ids_stable(ep, rx.hits("/m"))
    dup = {s: len(hs) for s, hs in by_seq(rx.delivered("/m")).items() if len(hs) > 1}
    assert not dup, f"events delivered (2xx) more than once: {dup}"
