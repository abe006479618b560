"""The WebSocket stream (GET /ws) as a client sees it.

Written against docs/API.md: "Events", "WebSocket stream" and "GET /api/events". Uses websocket-client (Debian's
python3-websocket) for real upgrades, and plain HTTP with upgrade headers for the
handshakes that must be refused (so the status and the error body can be read).

Every deliberate authentication failure counts against the per-address brake
(20 a minute), so each server sees only a handful of them.
"""
import base64
import copy
import http.client
import itertools
import json
import os
import random
import re
import socket
import threading
import time
from datetime import datetime, timezone

import pytest
import requests
import websocket

import dialpad as dp

ADMIN_SECRET = dp.ADMIN_SECRET
CALL_TEMPLATE = dp.load("inbound-answered")[0]  # a real ~1.1 KB call event
SMS_TEMPLATE = dp.load("sms-inbound")[0]
AGENT_TEMPLATE = dp.load("agent-status")[0]
USER_A, USER_B, USER_C = 5188674325413888, 5188674325413999, 4000000000000001
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

_ts = itertools.count(1767628800901)
_call_ids = itertools.count(7000000000000001)
_sms_ids = itertools.count(8000000000000001)


# ---- Dialpad events ----------------------------------------------------------------------------

def call_event(state="ringing", user=USER_A, call_id=None):
    """A distinct call event (fresh event_timestamp); a fresh call unless call_id is given."""
    e = copy.deepcopy(CALL_TEMPLATE)
    e["call_id"] = call_id if call_id is not None else next(_call_ids)
    e["state"] = state
    e["event_timestamp"] = next(_ts)
    e["target"]["id"] = user
    if state in ("hangup", "missed"):
        e["date_ended"] = e["event_timestamp"]
    return e


def sms_event(user=USER_A):
    e = copy.deepcopy(SMS_TEMPLATE)
    e["id"] = next(_sms_ids)
    e["event_timestamp"] = next(_ts)
    e["target"]["id"] = user
    return e


def agent_event(user=USER_A):
    e = copy.deepcopy(AGENT_TEMPLATE)
    e["event_timestamp"] = next(_ts)
    e["target"]["id"] = user
    return e


# ---- server helpers ----------------------------------------------------------------------------

def start(make_server, database=None, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET}
    e.update(env)
    return make_server(env=e, database=database)


class Hooks:
    """Posts signed webhooks for one app over keep-alive connections (faster than requests)."""

    def __init__(self, srv, app):
        self.srv, self.app = srv, app
        self.path = f"/webhooks/dialpad/{app['app_id']}"

    def body(self, event):
        return dp.sign(event, self.app["webhook_secret"]).encode()

    def send(self, event):
        dp.send(self.srv, self.app, event)

    def blast(self, events, threads=4):
        """Sends every event as fast as it can over `threads` connections; asserts each 200."""
        bodies = [self.body(e) for e in events]
        errors = []

        def worker(k):
            c = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
            try:
                for i in range(k, len(bodies), threads):
                    c.request("POST", self.path, body=bodies[i],
                              headers={"Content-Type": "application/jwt"})
                    r = c.getresponse()
                    text = r.read()
                    if r.status != 200:
                        errors.append(f"{r.status} {text[:200]!r}")
                        return
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
            finally:
                c.close()

        ths = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        assert not errors, errors[:5]


def ws_url(srv, query=""):
    return f"ws://127.0.0.1:{srv.port}/ws" + (f"?{query}" if query else "")


def connect(srv, key=None, query="", headers=(), timeout=5, **kw):
    h = ([f"X-API-Key: {key}"] if key else []) + list(headers)
    return websocket.create_connection(ws_url(srv, query), header=h, timeout=timeout, **kw)


def upgrade(srv, query="", headers=None):
    """A WebSocket handshake over plain HTTP, for the ones that must be refused."""
    h = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    h.update(headers or {})
    return requests.get(srv.url("/ws" + (f"?{query}" if query else "")), headers=h, timeout=5)


def assert_error(resp, status, code):
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert body.get("error") == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed by the server: {code} {reason!r}")
        self.code, self.reason = code, reason


def recv(ws, timeout=5.0):
    """The next JSON text message; raises Closed on a close frame."""
    ws.settimeout(timeout)
    while True:
        op, frame = ws.recv_data_frame(control_frame=True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            raise Closed(code, data[2:].decode("utf-8", "replace"))
        if op == websocket.ABNF.OPCODE_TEXT:
            msg = json.loads(frame.data.decode("utf-8") if isinstance(frame.data, bytes) else frame.data)
            assert isinstance(msg, dict), msg
            return msg


def hello(ws, app_id=None, seq=None):
    m = recv(ws)
    assert m.get("type") == "hello", m
    assert isinstance(m.get("seq"), int) and not isinstance(m["seq"], bool), m
    assert isinstance(m.get("app_id"), str), m
    if app_id is not None:
        assert m["app_id"] == app_id, m
    if seq is not None:
        assert m["seq"] == seq, m
    return m


def events_until(ws, last_seq, timeout=5.0):
    """Every message up to and including the event with seq >= last_seq."""
    out = []
    deadline = time.time() + timeout
    while True:
        left = deadline - time.time()
        if left <= 0:
            got = [(m.get("type"), m.get("seq"), m.get("event")) for m in out]
            shown = got if len(got) <= 12 else got[:3] + [("...",)] + got[-8:]
            raise AssertionError(f"no event {last_seq} within {timeout}s; got {len(got)} "
                                 f"messages: {json.dumps(shown)}")
        try:
            m = recv(ws, left)
        except websocket.WebSocketTimeoutException:
            continue
        out.append(m)
        if m.get("type") == "event" and m["seq"] >= last_seq:
            return out


def quiet(ws, seconds=0.3):
    """Asserts nothing at all arrives for a while; returns nothing."""
    try:
        m = recv(ws, seconds)
    except websocket.WebSocketTimeoutException:
        return
    raise AssertionError(f"unexpected message: {json.dumps(m)[:500]}")


def seqs(msgs):
    return [m["seq"] for m in msgs if m.get("type") == "event"]


def strip(m):
    """A WebSocket event message as the REST event object (without "type")."""
    assert m.get("type") == "event", m
    d = dict(m)
    del d["type"]
    return d


def serve(make_server, **env):
    srv = start(make_server, **env)
    app = dp.create_app(srv)
    return srv, app, app["api_key"], Hooks(srv, app)


# ---- 1. shapes ----------------------------------------------------------------------------------

def test_hello_event_and_pong_shapes(make_server):
    srv, app, key, hooks = serve(make_server)
    # a mix of kinds: call events, an SMS, an agent status
    sent = [call_event("ringing"), sms_event(), agent_event()]
    cid = next(_call_ids)
    sent += [call_event(s, call_id=cid) for s in ("ringing", "connected", "hangup")]
    for e in sent:
        hooks.send(e)
    rest = dp.wait_events(srv, key, len(sent))
    assert [e["seq"] for e in rest] == list(range(1, len(sent) + 1))

    # replay from 0: hello, then every event, each the REST object plus "type":"event"
    ws = connect(srv, key, "since=0")
    h = hello(ws, app["app_id"], len(sent))
    assert set(h) >= {"type", "app_id", "seq"}
    msgs = events_until(ws, len(sent))
    assert [m["type"] for m in msgs] == ["event"] * len(sent)
    for m, r in zip(msgs, rest):
        assert set(m) == set(r) | {"type"}, (sorted(m), sorted(r))
        assert isinstance(m["event"], str) and isinstance(m["seq"], int)
        assert strip(m) == r
    assert {m["event"] for m in msgs} >= {"call.ringing", "call.connected", "call.ended",
                                          "sms.received", "agent.status"}

    # ping -> pong
    ws.send(json.dumps({"type": "ping"}))
    assert recv(ws)["type"] == "pong"

    # a live event is the same object as REST's too
    hooks.send(call_event("missed", call_id=cid + 10**6))
    m = events_until(ws, len(sent) + 1)[-1]
    r = dp.wait_events(srv, key, 1, since=len(sent))[0]
    assert strip(m) == r
    ws.close()

    # without since: hello carries the latest seq and nothing is replayed
    ws = connect(srv, key)
    hello(ws, app["app_id"], len(sent) + 1)
    ws.send(json.dumps({"type": "ping"}))
    assert recv(ws)["type"] == "pong"
    ws.close()


def test_plain_get_is_426_and_bad_since_is_400(make_server):
    srv, app, key, hooks = serve(make_server)
    r = srv.get("/ws", headers={"X-API-Key": key})
    assert_error(r, 426, "upgrade_required")
    for bad in ("abc", "-1", "1.5"):
        r = upgrade(srv, f"since={bad}", headers={"X-API-Key": key})
        assert_error(r, 400, "invalid_request")


# ---- 2. live delivery -------------------------------------------------------------------------

def test_live_delivery_within_a_second(make_server):
    srv, app, key, hooks = serve(make_server)
    ws = connect(srv, key)
    prev = hello(ws, app["app_id"], 0)["seq"]
    for i in range(5):
        e = call_event("ringing" if i % 2 else "calling")
        t0 = time.monotonic()
        hooks.send(e)
        m = recv(ws, 2.0)
        took = time.monotonic() - t0
        assert m["type"] == "event", m
        assert m["seq"] == prev + 1, (m["seq"], prev)
        assert m["call_id"] == str(e["call_id"]), m
        assert took < 1.0, f"event {m['seq']} arrived {took:.3f}s after the webhook"
        prev = m["seq"]
    ws.close()


@pytest.mark.parametrize("io_uring", ["true", "false"])
def test_live_backlog_is_delivered(make_server, io_uring):
    """A client that falls a few hundred events behind (well under the 1024 limit) and then
    reads gets every one of them, without waiting for newer events to push them out; a
    reading client beside it gets each at once. Both ways of writing fan-out (batched through
    io_uring, or send() each: WS_IO_URING) meet full and partly written sockets here."""
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096", WS_IO_URING=io_uring)
    ws = connect(srv, key)
    reader = connect(srv, key)
    hello(ws, app["app_id"], 0)
    hello(reader, app["app_id"], 0)
    total = 300
    got_live = []
    t = threading.Thread(target=lambda: got_live.extend(seqs(events_until(reader, total, 20))))
    t.start()
    hooks.blast([call_event() for _ in range(total)], threads=2)  # ws not reading meanwhile
    dp.wait_events(srv, key, total, timeout=10)
    t.join(30)
    assert got_live == list(range(1, total + 1))
    got = seqs(events_until(ws, total, timeout=5))
    assert got == list(range(1, total + 1))
    ws.close()
    reader.close()


# ---- 3. resume ----------------------------------------------------------------------------------

def test_since_replays_then_goes_live(make_server):
    # 30 events: a replay longer than any small internal batch, read before anything new
    n = 30
    srv, app, key, hooks = serve(make_server)
    for _ in range(n):
        hooks.send(call_event())
    rest = dp.wait_events(srv, key, n)

    ws = connect(srv, key, "since=4")
    hello(ws, app["app_id"], n)
    replay = events_until(ws, n)
    assert seqs(replay) == list(range(5, n + 1))
    assert [strip(m) for m in replay] == rest[4:]

    at_latest = connect(srv, key, f"since={n}")
    hello(at_latest, app["app_id"], n)
    from_zero = connect(srv, key, "since=0")
    hello(from_zero, app["app_id"], n)
    assert seqs(events_until(from_zero, n)) == list(range(1, n + 1))

    for _ in range(5):
        hooks.send(call_event())
    assert seqs(events_until(ws, n + 5)) == list(range(n + 1, n + 6))
    assert seqs(events_until(at_latest, n + 5)) == list(range(n + 1, n + 6))
    assert seqs(events_until(from_zero, n + 5)) == list(range(n + 1, n + 6))
    for s in (ws, at_latest, from_zero):
        quiet(s)  # no duplicate after the last one
        s.close()


def test_long_replay_is_delivered(make_server):
    """A client 2500 events behind (well within the 10000 replayed) that reads as fast as it
    can gets the whole replay, then live events: the 1024-event queue limit is for readers
    too slow to keep up, not for a replay the server itself hands out all at once."""
    srv, app, key, hooks = serve(make_server)
    total = 2500
    hooks.blast([call_event() for _ in range(total)], threads=4)
    dp.wait_events(srv, key, total, timeout=20)
    ws = connect(srv, key, "since=0", timeout=10)
    hello(ws, app["app_id"], total)
    try:
        got = seqs(events_until(ws, total, timeout=20))
    except Closed as c:
        raise AssertionError(f"a replay of {total} events to a prompt reader was closed: "
                             f"{c.code} {c.reason!r}") from None
    assert got == list(range(1, total + 1))
    hooks.send(call_event())
    assert seqs(events_until(ws, total + 1)) == [total + 1]
    ws.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_resume_seam_under_concurrent_ingest(make_server, tmp_path, request, db):
    """Reconnects again and again with since=<last seen> while webhooks pour in: every seq
    is seen exactly once, each connection starting right after the last seq seen."""
    if db == "sqlite":
        database = f"sqlite:{tmp_path}/ws.db"
    else:
        database = request.getfixturevalue("pg").fresh_database("bb_ws_seam")
    srv = start(make_server, database=database)
    app = dp.create_app(srv)
    key, hooks = app["api_key"], Hooks(srv, app)
    total = 500
    events = [call_event() for _ in range(total)]
    sender = threading.Thread(target=hooks.blast, args=(events, 1))
    rng = random.Random(0x5EA3)

    last = 0
    seen = []
    conns = 0
    deadline = time.time() + 30
    sender.start()
    try:
        while last < total and time.time() < deadline:
            since = last
            ws = connect(srv, key, f"since={since}")
            conns += 1
            try:
                h = hello(ws, app["app_id"])
                assert h["seq"] >= last, (h, last)
                want = rng.choice([0, 1, 2, 5, rng.randint(1, 60)])
                got = 0
                while got < want:
                    try:
                        m = recv(ws, 0.3)
                    except websocket.WebSocketTimeoutException:
                        # caught up with the sender (or the server stalled: that is
                        # test_since_replays_then_goes_live's business): reconnect anyway
                        break
                    if m.get("type") != "event":
                        continue
                    assert m["seq"] == last + 1, \
                        f"connection {conns} (since={since}): " \
                        f"got seq {m['seq']} after {last}"
                    last = m["seq"]
                    seen.append(last)
                    got += 1
            finally:
                if rng.random() < 0.3:
                    ws.shutdown()  # drop the TCP connection without a close frame
                else:
                    ws.close()
    finally:
        sender.join()
    assert dp.wait_events(srv, key, total, timeout=5)[-1]["seq"] == total
    assert last == total, f"only reached seq {last} of {total} in {conns} connections"
    assert seen == list(range(1, total + 1))
    assert conns > 20, conns  # the loop really reconnected many times


def test_far_behind_gets_reset(make_server):
    # More than 10000 events behind -> hello, then {"type":"reset","seq":latest}, then live.
    # "since older than the retained history" cannot be produced black-box (nothing is
    # deleted), so only the "too far behind" path is exercised here. This costs ~10 s.
    srv, app, key, hooks = serve(make_server)
    total = 10050
    hooks.blast([agent_event() for _ in range(total)], threads=4)  # small, cheap to apply
    dp.wait_events(srv, key, total, timeout=30)
    ws = connect(srv, key, "since=1")
    hello(ws, app["app_id"], total)
    m = recv(ws)
    assert m.get("type") == "reset" and m.get("seq") == total, m
    hooks.send(call_event())
    m = recv(ws)
    assert m["type"] == "event" and m["seq"] == total + 1, m
    ws.close()
    # exactly 10000 behind is still a replay
    since = total + 1 - 10000
    ws = connect(srv, key, f"since={since}", timeout=20)
    hello(ws, app["app_id"], total + 1)
    assert seqs(events_until(ws, total + 1, timeout=30)) == list(range(since + 1, total + 2))
    ws.close()


# ---- 4. filters ---------------------------------------------------------------------------------

def who(ev):
    holder = ev.get("call") or ev.get("message") or {}
    return holder.get("dialpad_user_id"), holder.get("crm_user_id")


FILTERS = {
    "types": ("types=call.ended", lambda e: e["event"] == "call.ended"),
    "types_many": ("types=call.ringing,sms.received",
                   lambda e: e["event"] in ("call.ringing", "sms.received")),
    "dialpad_user_id": (f"dialpad_user_id={USER_A}", lambda e: who(e)[0] == str(USER_A)),
    "crm_user_id": ("crm_user_id=crm-alice", lambda e: who(e)[1] == "crm-alice"),
    "types_and_user": (f"types=call.ended&dialpad_user_id={USER_C}",
                       lambda e: e["event"] == "call.ended" and who(e)[0] == str(USER_C)),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_filters(make_server, name):
    query, wanted = FILTERS[name]
    srv, app, key, hooks = serve(make_server)
    for uid, crm in ((USER_A, "crm-alice"), (USER_C, "crm-carol")):
        r = srv.request("PUT", f"/api/user-mappings/{uid}", headers={"X-API-Key": key},
                        json={"crm_user_id": crm})
        assert r.status_code in (200, 201), r.text
    ref = connect(srv, key)
    hello(ref)
    live = connect(srv, key, query)
    hello(live, app["app_id"], 0)

    plan = []
    for user in (USER_A, USER_B, USER_C):
        cid = next(_call_ids)
        plan += [call_event("ringing", user, cid), call_event("connected", user, cid),
                 call_event("hangup", user, cid)]
        plan += [sms_event(user), call_event("missed", user)]
    # the last event passes every filter above: it ends the read below
    cid = next(_call_ids)
    plan += [call_event("ringing", USER_A, cid), call_event("ringing", USER_C, cid + 1),
             call_event("hangup", USER_C, cid + 1), call_event("hangup", USER_A, cid)]
    for e in plan:
        hooks.send(e)
    all_msgs = events_until(ref, len(plan))
    assert seqs(all_msgs) == list(range(1, len(plan) + 1))
    expected = [m["seq"] for m in all_msgs if wanted(m)]
    assert expected and len(expected) < len(plan), expected  # the filter means something

    # live: the filtered socket gets exactly the wanted events, in order; then nothing
    last = expected[-1]
    got = events_until(live, last)
    assert seqs(got) == expected, (seqs(got), expected)
    quiet(live)
    # replay (since=0) is filtered the same way
    again = connect(srv, key, "since=0&" + query)
    hello(again, app["app_id"], len(plan))
    assert seqs(events_until(again, last)) == expected
    quiet(again)
    for s in (ref, live, again):
        s.close()


def test_dialpad_user_filter_and_agent_status(make_server):
    """An agent.status event is about a Dialpad user (target.id): a client filtering on that
    user should get it. (The contract does not say it explicitly; reported if it fails.)"""
    srv, app, key, hooks = serve(make_server)
    live = connect(srv, key, f"dialpad_user_id={USER_A}")
    hello(live)
    hooks.send(agent_event(USER_B))
    hooks.send(agent_event(USER_A))
    hooks.send(call_event("ringing", USER_A))
    got = events_until(live, 3)
    assert [(m["seq"], m["event"]) for m in got] == [(2, "agent.status"), (3, "call.ringing")], \
        [(m["seq"], m["event"]) for m in got]
    live.close()


def test_subscribe_changes_filters_mid_stream(make_server):
    srv, app, key, hooks = serve(make_server)
    r = srv.request("PUT", f"/api/user-mappings/{USER_B}", headers={"X-API-Key": key},
                    json={"crm_user_id": "crm-bob"})
    assert r.status_code in (200, 201), r.text
    ref = connect(srv, key)
    hello(ref)
    ws = connect(srv, key, "types=call.ringing")
    hello(ws)
    by_crm = connect(srv, key)  # no filter at first
    hello(by_crm)

    c1, c0 = next(_call_ids), next(_call_ids)
    hooks.send(call_event("ringing", USER_A, c1))            # 1: ws gets it
    hooks.send(call_event("hangup", USER_A, c1))             # 2: filtered out
    # 3: ws gets it, so 2 has been filtered on ws's hub thread before the subscribe below
    # (each socket's thread takes events on its own: by_crm having 2 says nothing of ws)
    hooks.send(call_event("ringing", USER_A, c0))
    assert [(m["seq"], m["event"]) for m in events_until(ws, 3)] == \
        [(1, "call.ringing"), (3, "call.ringing")]
    assert seqs(events_until(by_crm, 3)) == [1, 2, 3]

    ws.send(json.dumps({"type": "subscribe", "types": ["call.ended"]}))
    assert recv(ws) == {"type": "subscribed"}
    by_crm.send(json.dumps({"type": "subscribe", "crm_user_id": "crm-bob"}))
    assert recv(by_crm) == {"type": "subscribed"}

    c2, c3 = next(_call_ids), next(_call_ids)
    hooks.send(call_event("ringing", USER_A, c2))            # 4: no longer wanted by ws
    hooks.send(call_event("ringing", USER_B, c3))            # 5: by_crm
    hooks.send(call_event("hangup", USER_A, c2))             # 6: ws
    hooks.send(call_event("hangup", USER_B, c3))             # 7: ws and by_crm
    events_until(ref, 7)
    assert seqs(events_until(ws, 7)) == [6, 7]
    assert seqs(events_until(by_crm, 7)) == [5, 7]

    ws.send(json.dumps({"type": "subscribe", "types": ["call.ringing", "call.ended"],
                        "dialpad_user_id": str(USER_B)}))
    assert recv(ws) == {"type": "subscribed"}
    c4, c5 = next(_call_ids), next(_call_ids)
    hooks.send(call_event("ringing", USER_A, c4))            # 8
    hooks.send(call_event("ringing", USER_B, c5))            # 9: ws
    hooks.send(call_event("hangup", USER_A, c4))             # 10
    hooks.send(call_event("hangup", USER_B, c5))             # 11: ws
    events_until(ref, 11)
    assert seqs(events_until(ws, 11)) == [9, 11]
    quiet(ws)
    for s in (ref, ws, by_crm):
        s.close()


def test_subscribe_with_since_replays(make_server):
    """The contract lists "since" among subscribe's fields: the server accepts it and
    (re)sends the events after it."""
    srv, app, key, hooks = serve(make_server)
    for _ in range(5):
        hooks.send(call_event())
    dp.wait_events(srv, key, 5)
    ws = connect(srv, key)
    hello(ws, app["app_id"], 5)
    ws.send(json.dumps({"type": "subscribe", "since": 2}))
    m = recv(ws)
    assert m.get("type") == "subscribed", m
    assert seqs(events_until(ws, 5)) == [3, 4, 5]
    ws.close()


# ---- 5. auth ------------------------------------------------------------------------------------

def test_auth(make_server):
    srv, app, key, hooks = serve(make_server, LOG_LEVEL="debug")
    aid = app["app_id"]

    # ticket: 201 {"ticket", "expires_at"}, works once. (Expiry after 60 s is not waited for.)
    r = srv.post("/api/ws-ticket", headers={"X-API-Key": key})
    assert r.status_code == 201, r.text
    t = r.json()
    assert isinstance(t.get("ticket"), str) and len(t["ticket"]) >= 16, t
    assert ISO_MS.match(t.get("expires_at") or ""), t
    exp = datetime.strptime(t["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert 40 <= exp.timestamp() - time.time() <= 70, t
    ws = connect(srv, query=f"ticket={t['ticket']}")
    hello(ws, aid)
    ws.close()
    assert_error(upgrade(srv, f"ticket={t['ticket']}"), 401, "unauthorized")
    assert_error(srv.post("/api/ws-ticket"), 401, "unauthorized")

    # ?api_key= (old clients), and the other tenant headers
    ws = connect(srv, query=f"api_key={key}")
    hello(ws, aid)
    ws.close()
    for h in (f"x-app-api-key: {key}", f"Authorization: Bearer {key}"):
        ws = connect(srv, headers=[h])
        hello(ws, aid)
        ws.close()

    # wrong or missing credentials: 401 before the upgrade
    assert_error(upgrade(srv, headers={"X-API-Key": key[:-2] + "xx"}), 401, "unauthorized")
    assert_error(upgrade(srv, f"api_key={key[:-2]}xx"), 401, "unauthorized")
    assert_error(upgrade(srv), 401, "unauthorized")
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        connect(srv)
    assert exc.value.status_code == 401

    # the key given in the query never reaches the log
    assert srv.stop() == 0
    log = srv.log_text()
    ws_lines = [l for l in srv.log_lines() if str(l.get("path", "")).startswith("/ws?api_key=")]
    assert len(ws_lines) >= 2, "the /ws?api_key= requests should be in the access log"
    secret = key[-43:] if re.match(r"^cti_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$", key) else key
    for part in (key, key[:-2], secret[:-2]):
        assert part not in log, "the ?api_key= value (or most of it) is in the server log"


def test_origin_check(make_server):
    srv, app, key, hooks = serve(make_server, ALLOWED_ORIGINS="https://good.example.com")
    assert_error(upgrade(srv, headers={"X-API-Key": key, "Origin": "https://evil.example.com"}),
                 403, "forbidden")
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        connect(srv, key, origin="https://evil.example.com")
    assert exc.value.status_code == 403
    ws = connect(srv, key, origin="https://good.example.com")
    hello(ws, app["app_id"])
    ws.close()
    ws = connect(srv, key, suppress_origin=True)  # non-browser clients send no Origin
    hello(ws, app["app_id"])
    ws.close()


# ---- 6. tenant isolation ----------------------------------------------------------------------

def test_tenant_isolation(make_server):
    srv = start(make_server)
    a, b = dp.create_app(srv, "a"), dp.create_app(srv, "b")
    ha, hb = Hooks(srv, a), Hooks(srv, b)
    wa = connect(srv, a["api_key"])
    hello(wa, a["app_id"], 0)
    wb = connect(srv, b["api_key"], "since=0")
    hello(wb, b["app_id"], 0)
    for _ in range(5):
        ha.send(call_event())
    hb.send(call_event("ringing", USER_B))
    assert seqs(events_until(wa, 5)) == [1, 2, 3, 4, 5]
    got = events_until(wb, 1)
    assert len(got) == 1 and got[0]["seq"] == 1, got
    assert strip(got[0]) == dp.all_events(srv, b["api_key"])[0]
    assert got[0]["call"]["dialpad_user_id"] == str(USER_B)
    quiet(wb)
    # a replay for B holds only B's event, and B's hello names B's latest, not A's
    wb2 = connect(srv, b["api_key"], "since=0")
    hello(wb2, b["app_id"], 1)
    assert seqs(events_until(wb2, 1)) == [1]
    quiet(wb2)
    for s in (wa, wb, wb2):
        s.close()


# ---- 7. slow consumer ---------------------------------------------------------------------------

def test_slow_consumer_is_closed_4008_and_resumes(make_server):
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096")
    total = 3000
    slow = connect(srv, key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),), timeout=10)
    hello(slow, app["app_id"], 0)
    fast = connect(srv, key, timeout=10)
    hello(fast, app["app_id"], 0)

    fast_raw, fast_err = [], []

    def reader():
        try:
            fast.settimeout(20)
            while len(fast_raw) < total:
                op, frame = fast.recv_data_frame(control_frame=True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    fast_err.append(f"fast client closed: {frame.data!r}")
                    return
                if op == websocket.ABNF.OPCODE_TEXT:
                    fast_raw.append(frame.data)
        except Exception as exc:  # noqa: BLE001 - reported below
            fast_err.append(repr(exc))

    th = threading.Thread(target=reader)
    th.start()
    hooks.blast([call_event() for _ in range(total)], threads=4)
    th.join(30)
    assert not th.is_alive(), f"fast client got {len(fast_raw)} of {total}"
    assert not fast_err, fast_err
    fast_seqs = [json.loads(x)["seq"] for x in fast_raw]
    assert fast_seqs == list(range(1, total + 1)), "the fast client missed or reordered events"
    fast.close()

    # the slow one reads now: some events, then a 4008 close naming the last seq sent
    got, closed = [], None
    while closed is None:
        try:
            m = recv(slow, 10)
        except Closed as c:
            closed = c
            break
        if m.get("type") == "event":
            got.append(m["seq"])
    slow.close()
    assert closed.code == 4008, (closed.code, closed.reason)
    assert got == list(range(1, len(got) + 1)), "the slow client's events have a gap"
    assert len(got) < total, "the slow client was never behind"
    nums = [int(x) for x in re.findall(r"\d+", closed.reason)]
    assert len(nums) == 1, f"the close reason should name one seq: {closed.reason!r}"
    named = nums[0]

    # Both checks below are collected so that one failing does not hide the other.
    problems = []
    last_got = got[-1] if got else 0
    if named > last_got:
        problems.append(f"the close reason names seq {named} but the client only received up to "
                        f"{last_got}: resuming with since={named} loses {last_got + 1}..{named}")
    elif named != last_got:
        problems.append(f"the close reason names {named}; the last seq sent was {last_got}")

    # resuming from the seq named in the reason gives the rest, with no gap
    ws = connect(srv, key, f"since={named}", timeout=10)
    try:
        hello(ws, app["app_id"], total)
        rest = seqs(events_until(ws, total, timeout=20))
        if rest != list(range(named + 1, total + 1)):
            problems.append(f"resume since={named} got {len(rest)} events, "
                            f"{rest[:3]}..{rest[-3:]}")
    except Closed as c:
        problems.append(f"resume since={named} ({total - named} events behind, reading as fast "
                        f"as it can) was closed: {c.code} {c.reason!r}")
    ws.close()
    assert not problems, problems


# ---- 8. shutdown --------------------------------------------------------------------------------

def test_sigterm_with_open_websockets(make_server):
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096")
    reading = connect(srv, key)
    hello(reading)
    stuck = connect(srv, key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    hello(stuck)
    replaying = connect(srv, key, "since=0")
    hello(replaying)
    hooks.blast([call_event() for _ in range(300)], threads=2)  # fills stuck's buffers
    dp.wait_events(srv, key, 300, timeout=10)
    recv(reading)
    t0 = time.monotonic()
    code = srv.stop(timeout=15)
    took = time.monotonic() - t0
    assert code == 0, srv.log_text()[-3000:]
    assert took < 5, f"SIGTERM took {took:.1f}s with open WebSockets"
    # the open socket is closed (a close frame or EOF), not left hanging
    with pytest.raises((Closed, websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            recv(reading, 3)
    for s in (reading, stuck, replaying):
        s.close()


def test_a_mapping_change_reaches_the_next_event(make_server):
    """The ingest worker remembers user mappings for a moment; a change made
    through the API must still show in the very next event's crm_user_id."""
    srv, app, key, hooks = serve(make_server)
    ref = connect(srv, key)
    hello(ref)
    crm = []
    hooks.send(call_event("ringing", USER_A))                          # not mapped
    crm.append(who(events_until(ref, 1)[-1])[1])
    r = srv.request("PUT", f"/api/user-mappings/{USER_A}", headers={"X-API-Key": key},
                    json={"crm_user_id": "crm-first"})
    assert r.status_code in (200, 201), r.text
    hooks.send(call_event("ringing", USER_A))
    crm.append(who(events_until(ref, 2)[-1])[1])
    r = srv.request("PUT", f"/api/user-mappings/{USER_A}", headers={"X-API-Key": key},
                    json={"crm_user_id": "crm-second"})
    assert r.status_code == 200, r.text
    hooks.send(call_event("ringing", USER_A))
    crm.append(who(events_until(ref, 3)[-1])[1])
    assert srv.request("DELETE", f"/api/user-mappings/{USER_A}",
                       headers={"X-API-Key": key}).status_code == 200
    hooks.send(call_event("ringing", USER_A))
    crm.append(who(events_until(ref, 4)[-1])[1])
    assert crm == [None, "crm-first", "crm-second", None]
    ref.close()
