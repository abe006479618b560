"""Dialpad webhooks in, calls and the event stream out: black-box tests.

Written against docs/API.md (Common; Dialpad webhooks; Calls; Events) and Dialpad's
documented webhook format, with the fixtures in tests/fixtures (see its README). Events are applied asynchronously: a test never sleeps and
then asserts; it polls /api/events, or sends a "barrier" event and waits for it (the
contract applies events in the order they were acknowledged, per app, so once the barrier
is in the log everything acknowledged before it has been applied).
"""
import collections
import copy
import hashlib
import json
import math
import random
import re
import time
import uuid

import pytest

from dialpad import (ADMIN_SECRET, ALL_FIXTURES, BIG_ID, CALL_FIXTURES, admin, all_events, b64url,
                     b64url_decode, compact_json, create_app, get_call, load, post_hook, read_vector, sign,
                     sign_raw, short, tget, unsigned_alg_none, wait_events)

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CALL_FIELDS = ("id", "direction", "state", "status", "outcome", "external_number",
               "internal_number", "contact", "target", "dialpad_user_id", "crm_user_id",
               "master_call_id", "entry_point_call_id", "operator_call_id", "is_transferred",
               "started_at", "connected_at", "ended_at", "duration_ms", "total_duration_ms",
               "talk_time_ms", "hold_time_ms", "recording_urls", "custom_data", "voicemail", "updated_at")
EVENT_FIELDS = ("seq", "event", "occurred_at", "call_id", "late", "call", "data")


# ---- helpers ---------------------------------------------------------------------------------

def start(make_server, database=None, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET}
    e.update(env)
    return make_server(env=e, database=database)


def iso(ms):
    ms = int(ms)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def round_ms(v):
    """Nearest millisecond, halves up (24876.5 -> 24877); not Python's banker's round()."""
    return None if v is None else int(math.floor(v + 0.5))


_barrier_n = [0]


class Hook:
    """One app on one server, as Dialpad (sender) and as the tenant (reader) see it."""

    def __init__(self, srv, app=None, name="acme"):
        self.srv = srv
        self.app = app or create_app(srv, name)
        self.app_id = self.app["app_id"]
        self.secret = self.app["webhook_secret"]
        self.key = self.app["api_key"]
        self.barriers = set()

    def post(self, body, **kw):
        return post_hook(self.srv, self.app_id, body, **kw)

    def send(self, event, duplicate=None, secret=None):
        r = self.post(sign(event, secret or self.secret))
        assert r.status_code == 200, f"{r.status_code} {r.text} for {short(event)}"
        body = r.json()
        assert body.get("status") == "ok", body
        if duplicate is not None:
            assert body.get("duplicate") is duplicate, f"{body} for {short(event)}"
        return body

    def events(self):
        return all_events(self.srv, self.key)

    def sync(self, timeout=5.0):
        """Sends a barrier event, waits until it is applied; returns every event but barriers."""
        _barrier_n[0] += 1
        cid = 8100000000000000 + _barrier_n[0]
        self.barriers.add(str(cid))
        self.send({"call_id": cid, "state": "ringing", "direction": "inbound",
                   "external_number": "+14155550100", "event_timestamp": 1700000000000 + cid % 1000000})
        deadline = time.time() + timeout
        while True:
            evs = self.events()
            if any(e.get("call_id") == str(cid) for e in evs):
                check_seqs(evs)
                return [e for e in evs if e.get("call_id") not in self.barriers]
            assert time.time() < deadline, \
                f"barrier event not applied within {timeout}s; log: {[(e['seq'], e['event'], e['call_id']) for e in evs]}"
            time.sleep(0.02)

    def call(self, call_id):
        return get_call(self.srv, self.key, call_id)


def check_seqs(evs):
    seqs = [e["seq"] for e in evs]
    assert seqs == list(range(1, len(evs) + 1)), f"seqs not gapless from 1: {seqs}"


def assert_error(resp, status, code=None):
    assert resp.status_code == status, f"expected {status}, got {resp.status_code} {resp.text[:300]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body
    if code:
        assert body.get("error") == code, body
    return body


def ids_as_strings(obj):
    """What the contract promises for nested Dialpad objects: id and *_id members as strings."""
    if not isinstance(obj, dict) or not obj:
        return None
    out = dict(obj)
    for k, v in obj.items():
        if (k == "id" or k.endswith("_id")) and isinstance(v, int) and not isinstance(v, bool):
            out[k] = str(v)
    return out


def newest_with(events, key):
    """The value of key in the newest event (by event_timestamp) where it is not null."""
    for ev in sorted(events, key=lambda e: e["event_timestamp"], reverse=True):
        if ev.get(key) is not None and ev.get(key) != {}:
            return ev[key]
    return None


def derived_call(events):
    """Fields of the call object that follow from the contract's rules, from the fixture."""
    out = {
        "id": str(events[0]["call_id"]),
        "direction": newest_with(events, "direction"),
        "external_number": newest_with(events, "external_number"),
        "internal_number": newest_with(events, "internal_number"),
        "contact": ids_as_strings(newest_with(events, "contact")),
        "target": ids_as_strings(newest_with(events, "target")),
        "master_call_id": None, "entry_point_call_id": None, "operator_call_id": None,
        "crm_user_id": None,
    }
    for field, key in (("started_at", "date_started"), ("connected_at", "date_connected"),
                       ("ended_at", "date_ended")):
        v = newest_with(events, key)
        out[field] = None if v is None else iso(v)
    for field, key in (("duration_ms", "duration"), ("total_duration_ms", "total_duration"),
                       ("talk_time_ms", "talk_time"), ("hold_time_ms", "hold_time")):
        out[field] = round_ms(newest_with(events, key))
    t = out["target"]
    out["dialpad_user_id"] = t["id"] if t and t.get("type") == "user" else None
    return out


# What the contract says each fixture ends as (the values named in the brief are explicit).
EXPECTED = {
    "inbound-answered": dict(status="ended", state="hangup", outcome="answered",
                             duration_ms=182331, total_duration_ms=190443, talk_time_ms=182331,
                             hold_time_ms=30000, is_transferred=False, voicemail=None,
                             recording_urls=[], dialpad_user_id="9081726354091521",
                             events=["call.ringing", "call.connected", "call.hold", "call.resumed",
                                     "call.ended"],
                             statuses=["ringing", "active", "on_hold", "active", "ended"]),
    "inbound-missed": dict(status="ended", state="hangup", outcome="missed", duration_ms=0,
                           total_duration_ms=31205, is_transferred=False, voicemail=None,
                           recording_urls=[], connected_at=None,
                           events=["call.ringing", "call.missed", "call.ended"],
                           statuses=["ringing", "ended", "ended"]),
    "inbound-voicemail": dict(status="ended", state="hangup", outcome="voicemail", duration_ms=0,
                              total_duration_ms=47108, is_transferred=False, connected_at=None,
                              events=["call.ringing", "call.voicemail", "call.ended",
                                      "voicemail.ready", "voicemail.transcribed"],
                              statuses=["ringing", "ended", "ended", "ended", "ended"]),
    "outbound-recorded": dict(status="ended", state="hangup", outcome="answered",
                              direction="outbound", duration_ms=74000, total_duration_ms=83350,
                              talk_time_ms=74000, hold_time_ms=0, voicemail=None,
                              recording_urls=["https://dialpad.com/r/5123478902816768"],
                              events=["call.dialing", "call.connected", "call.ended",
                                      "call.recording"],
                              statuses=["ringing", "active", "ended", "ended"]),
    "real-hangup-office-unanswered": dict(status="ended", state="hangup", outcome="missed",
                                          duration_ms=0, total_duration_ms=11207,
                                          is_transferred=True, dialpad_user_id=None,
                                          voicemail=None, recording_urls=[],
                                          events=["call.ended"], statuses=["ended"]),
}
VOICEMAIL = {"url": "https://dialpad.com/r/6931570248622080",
             "transcript": "Hi Priya, it's Jordan from Lakeside Print. The proofs are ready, call me "
                           "back when you can. Thanks.",
             "duration_ms": 18230}


def check_call_object(call, name):
    """The final call object of fixture `name` against the contract."""
    evs = load(name)
    for f in CALL_FIELDS:
        assert f in call, f"{name}: call object lacks {f!r}: {sorted(call)}"
    exp = dict(derived_call(evs))
    exp.update({k: v for k, v in EXPECTED[name].items() if k not in ("events", "statuses")})
    for k, v in exp.items():
        assert call[k] == v, f"{name}: {k} is {call[k]!r}, expected {v!r}"
    # ids as decimal strings, nested ones too
    assert isinstance(call["contact"]["id"], str) and call["contact"]["id"].isdigit(), call["contact"]
    assert isinstance(call["target"]["id"], str) and call["target"]["id"].isdigit(), call["target"]
    assert isinstance(call["target"]["office_id"], str), call["target"]
    assert call["contact"]["id"] == str(evs[0]["contact"]["id"])
    assert call["target"]["id"] == str(evs[0]["target"]["id"])
    assert call["target"]["office_id"] == str(evs[0]["target"]["office_id"])
    for f in ("started_at", "connected_at", "ended_at", "updated_at"):
        assert call[f] is None or ISO_MS.match(call[f]), f"{name}: {f} = {call[f]!r}"
    assert call["updated_at"] is not None
    for f in ("duration_ms", "total_duration_ms", "talk_time_ms", "hold_time_ms"):
        assert call[f] is None or (isinstance(call[f], int) and not isinstance(call[f], bool)), \
            f"{name}: {f} = {call[f]!r} is not an integer"
    if name == "inbound-voicemail":
        vm = call["voicemail"]
        assert isinstance(vm, dict), call
        for k, v in VOICEMAIL.items():
            assert vm.get(k) == v, f"voicemail.{k} = {vm.get(k)!r}, expected {v!r}"


def check_timeline(call, name):
    evs = sorted(load(name), key=lambda e: e["event_timestamp"])
    tl = call["timeline"]
    assert [(t["state"], t["event_timestamp"]) for t in tl] == \
        [(e["state"], iso(e["event_timestamp"])) for e in evs], f"{name} timeline: {tl}"
    for t in tl:
        assert set(t) >= {"state", "event_timestamp", "received_at", "late"}, t
        assert ISO_MS.match(t["received_at"]), t
        assert t["late"] is False, f"{name}: in-order event marked late: {t}"


def send_all_fixtures(hook):
    for name in ALL_FIXTURES:
        for ev in load(name):
            hook.send(ev, duplicate=False)


def strip_call(call):
    """Call object for comparing runs: without updated_at (a write time), timeline apart."""
    c = copy.deepcopy(call)
    c.pop("updated_at", None)
    tl = c.pop("timeline", [])
    for leg in c.get("legs", []):
        leg.pop("updated_at", None)
    return c, [(t["state"], t["event_timestamp"]) for t in tl]


# ---- 1. the JWT test vector --------------------------------------------------------------------

def test_signer_reproduces_jwt_vector():
    v = read_vector()
    assert sign_raw(v["payload"].encode(), v["secret"]) == v["token"]
    head, body, _ = v["token"].split(".")
    assert b64url(compact_json({"alg": "HS256", "typ": "JWT"})) == head
    assert json.loads(b64url_decode(body)) == json.loads(v["payload"])


def test_jwt_vector_accepted(make_server):
    v = read_vector()
    # the vector's own token, byte for byte, through the global secret (routed to the only app)
    srv = start(make_server, DIALPAD_WEBHOOK_SECRET=v["secret"])
    hook = Hook(srv)
    r = post_hook(srv, None, v["token"])
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is False
    evs = wait_events(srv, hook.key, 1)
    assert [(e["event"], e["call_id"]) for e in evs] == [("call.ringing", "9210348857260033")]
    call = hook.call(9210348857260033)
    assert call["id"] == "9210348857260033"
    assert (call["state"], call["status"], call["direction"]) == ("ringing", "ringing", "inbound")
    assert call["external_number"] == "+12065550107"
    assert call["internal_number"] == "+16175550148"
    assert call["outcome"] is None

    # the same payload signed with the app's own secret by our signer, to /webhooks/dialpad/{app}:
    # it is the same Dialpad event (same dedupe key), so a duplicate
    r = hook.post(sign_raw(v["payload"].encode(), hook.secret))
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is True
    # the vector's token is not signed with this app's secret
    assert_error(hook.post(v["token"]), 401, "unauthorized")
    assert len(hook.sync()) == 1


def test_jwt_vector_payload_with_app_secret(make_server):
    v = read_vector()
    srv = start(make_server)
    hook = Hook(srv)
    r = hook.post(sign_raw(v["payload"].encode(), hook.secret))
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is False, r.text
    evs = wait_events(srv, hook.key, 1)
    assert evs[0]["call_id"] == "9210348857260033"
    assert hook.call("9210348857260033")["id"] == "9210348857260033"


# ---- 2. every fixture, in order, on both backends ----------------------------------------------

def test_fixture_sequences_in_order(make_server, backend):
    srv = start(make_server, database=backend)
    hook = Hook(srv)
    send_all_fixtures(hook)
    evs = hook.sync()
    for e in evs:
        for f in EVENT_FIELDS:
            assert f in e, f"event lacks {f!r}: {e}"
        assert ISO_MS.match(e["occurred_at"]), e
        assert isinstance(e["late"], bool) and isinstance(e["data"], dict), e

    # the event log, in order: names exactly as the contract's table
    expected_names = []
    for name in CALL_FIXTURES:
        expected_names += [(n, str(load(name)[0]["call_id"])) for n in EXPECTED[name]["events"]]
    expected_names += [("sms.received", None), ("sms.status", None), ("agent.status", None)]
    assert [(e["event"], e["call_id"]) for e in evs] == expected_names

    by_call = collections.defaultdict(list)
    for e in evs:
        if e["call_id"] is not None:
            by_call[e["call_id"]].append(e)
    for name in CALL_FIXTURES:
        fx = load(name)
        cid = str(fx[0]["call_id"])
        stream = by_call[cid]
        assert [e["occurred_at"] for e in stream] == [iso(x["event_timestamp"]) for x in fx], name
        assert all(e["late"] is False for e in stream), name
        assert [e["call"]["status"] for e in stream] == EXPECTED[name]["statuses"], name
        assert all(e["call"]["id"] == cid for e in stream)

        call = hook.call(cid)
        check_call_object(call, name)
        check_timeline(call, name)
        assert call["legs"] == []
        # the stream's last call object is the call as stored
        last, _ = strip_call(stream[-1]["call"])
        stored, _ = strip_call(call)
        stored.pop("legs", None)
        assert last == stored, name

    agent = evs[-1]
    assert agent["data"]["target"]["id"] == "9081726354091521"

    # and the list endpoint agrees
    r = tget(srv, hook.key, "/api/calls?limit=500")
    assert r.status_code == 200, r.text
    listed = {c["id"]: c for c in r.json()["data"]}
    for name in CALL_FIXTURES:
        cid = str(load(name)[0]["call_id"])
        assert listed[cid]["status"] == EXPECTED[name]["status"]
        assert listed[cid]["outcome"] == EXPECTED[name]["outcome"]


# ---- 3. shuffled and duplicated, on both backends ---------------------------------------------

SEEDS = (11, 2024, 777)


def test_shuffled_and_duplicated(make_server, backend):
    srv = start(make_server, database=backend)
    ref = Hook(srv, name="in-order")
    send_all_fixtures(ref)
    ref.sync()
    reference = {}
    for name in CALL_FIXTURES:
        cid = str(load(name)[0]["call_id"])
        reference[cid] = strip_call(ref.call(cid))

    groups = [[n] for n in ALL_FIXTURES] + [ALL_FIXTURES]
    for seed in SEEDS:
        rng = random.Random(seed)
        for group in groups:
            distinct = [ev for n in group for ev in load(n)]
            order = list(range(len(distinct))) * 2
            rng.shuffle(order)
            hook = Hook(srv, name=f"shuffle-{seed}-{'+'.join(group)}"[:100])
            seen = set()
            for i in order:
                hook.send(distinct[i], duplicate=i in seen)
                seen.add(i)
            evs = hook.sync()
            what = f"seed {seed}, {group}, order {order}"

            # exactly one stream event per distinct Dialpad event
            per_call = collections.Counter(e["call_id"] for e in evs if e["call_id"] is not None)
            want = collections.Counter(str(ev["call_id"]) for ev in distinct if "call_id" in ev)
            assert per_call == want, what
            others = sorted(e["event"] for e in evs if e["call_id"] is None)
            want_others = sorted({"sms-inbound": ["sms.received"],
                                  "real-sms-office": ["sms.received"],
                                  "agent-status": ["agent.status"]}.get(group[0], []))
            if group == ALL_FIXTURES:
                want_others = ["agent.status", "sms.received", "sms.status"]
            assert others == want_others, what

            # final calls identical to the in-order run (but updated_at); timelines too (but
            # received_at and late)
            for cid in want:
                got = strip_call(hook.call(cid))
                assert got[0] == reference[cid][0], f"{what}: call {cid} differs from in-order run"
                assert got[1] == reference[cid][1], f"{what}: timeline of {cid} differs"


# ---- 4. late events ----------------------------------------------------------------------------

def call_ev(cid, state, ts, **extra):
    ev = {"call_id": cid, "state": state, "direction": "inbound",
          "external_number": "+14155550123", "internal_number": "+14155550199",
          "date_started": 1767000000000, "date_connected": None, "date_ended": None,
          "event_timestamp": ts}
    ev.update(extra)
    return ev


def timeline_of(hook, cid):
    return [(t["state"], t["late"]) for t in hook.call(cid)["timeline"]]


def test_late_events(make_server):
    srv = start(make_server)
    hook = Hook(srv)

    # hangup, then the older ringing: late, kept, moves nothing back
    a = 6100000000000001
    hook.send(call_ev(a, "hangup", 1767000060000, date_ended=1767000059000, duration=0))
    hook.send(call_ev(a, "ringing", 1767000001000))
    evs = [e for e in hook.sync() if e["call_id"] == str(a)]
    assert [(e["event"], e["late"]) for e in evs] == [("call.ended", False), ("call.ringing", True)]
    assert evs[1]["call"]["status"] == "ended" and evs[1]["call"]["state"] == "hangup"
    call = hook.call(a)
    assert (call["status"], call["state"], call["outcome"]) == ("ended", "hangup", "missed")
    assert timeline_of(hook, a) == [("ringing", True), ("hangup", False)]

    # a recording after the hangup is not late (a post-call state is never late), nor is a
    # call_transcription whose timestamp is older than the hangup
    hook.send(call_ev(a, "recording", 1767000090000, date_ended=1767000059000,
                      recording_url=["https://dialpad.com/r/1"]))
    hook.send(call_ev(a, "call_transcription", 1767000030000))
    evs = [e for e in hook.sync() if e["call_id"] == str(a)]
    assert [(e["event"], e["late"]) for e in evs[2:]] == \
        [("call.recording", False), ("call.transcription", False)]
    call = hook.call(a)
    assert (call["status"], call["state"]) == ("ended", "hangup")
    assert timeline_of(hook, a) == [("ringing", True), ("call_transcription", False),
                                    ("hangup", False), ("recording", False)]

    # connected after hold -> call.resumed; a connected older than the hold -> late
    # call.connected, and the call stays on hold
    b = 6100000000000002
    conn = {"date_connected": 1767000010000}
    hook.send(call_ev(b, "ringing", 1767000001000))
    hook.send(call_ev(b, "connected", 1767000010000, **conn))
    hook.send(call_ev(b, "hold", 1767000040000, **conn))
    hook.send(call_ev(b, "connected", 1767000020000, **conn))  # older than the hold
    evs = [e for e in hook.sync() if e["call_id"] == str(b)]
    assert [(e["event"], e["late"]) for e in evs] == [
        ("call.ringing", False), ("call.connected", False), ("call.hold", False),
        ("call.connected", True)]
    assert evs[-1]["call"]["status"] == "on_hold"
    call = hook.call(b)
    assert (call["status"], call["state"]) == ("on_hold", "hold")
    assert timeline_of(hook, b) == [("ringing", False), ("connected", False), ("connected", True),
                                    ("hold", False)]
    hook.send(call_ev(b, "connected", 1767000070000, **conn))  # newer: resumes
    evs = [e for e in hook.sync() if e["call_id"] == str(b)]
    assert (evs[-1]["event"], evs[-1]["late"]) == ("call.resumed", False)
    call = hook.call(b)
    assert (call["status"], call["state"], call["outcome"]) == ("active", "connected", None)

    # a post-call event with the newest timestamp does not make a later-arriving progress
    # event late
    c = 6100000000000003
    hook.send(call_ev(c, "ringing", 1767000001000))
    hook.send(call_ev(c, "merged", 1767000050000))
    hook.send(call_ev(c, "connected", 1767000010000, **conn))
    evs = [e for e in hook.sync() if e["call_id"] == str(c)]
    assert [(e["event"], e["late"], e["data"].get("state")) for e in evs] == [
        ("call.ringing", False, None), ("call.state", False, "merged"),
        ("call.connected", False, None)]
    call = hook.call(c)
    assert (call["status"], call["state"]) == ("active", "connected")


def test_call_first_seen_through_post_call_state(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    hook.send(call_ev(6100000000000011, "recording", 1767000090000, date_ended=1767000059000))
    hook.send(call_ev(6100000000000012, "recap_summary", 1767000090000))
    evs = hook.sync()
    assert [(e["event"], e["data"]) for e in evs] == [("call.recording", {}),
                                                       ("call.recap", {"kind": "summary"})]
    ended = hook.call(6100000000000011)
    assert (ended["status"], ended["state"]) == ("ended", None)
    assert ended["outcome"] == "missed"
    ringing = hook.call(6100000000000012)
    assert (ringing["status"], ringing["outcome"]) == ("ringing", None)


# ---- 5. bad input ------------------------------------------------------------------------------

RINGING = {"call_id": 9150664720531457, "state": "ringing", "direction": "inbound",
           "external_number": "+12065550131", "event_timestamp": 1771336801044}


def test_rejected_bodies_store_nothing(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    before = len(hook.sync())
    sec = hook.secret
    ev = dict(RINGING, call_id=6200000000000001)
    good = sign(ev, sec)

    assert_error(hook.post(sign(ev, "not-the-secret-0123456789abcdef")), 401, "unauthorized")
    # a valid token with one signature byte flipped
    h, p, s = good.split(".")
    flipped = h + "." + p + "." + ("A" if s[0] != "A" else "B") + s[1:]
    assert_error(hook.post(flipped), 401, "unauthorized")
    # the payload swapped for another under the original signature
    other = b64url(compact_json(dict(ev, call_id=6200000000000009)))
    assert_error(hook.post(h + "." + other + "." + s), 401, "unauthorized")
    assert_error(hook.post(unsigned_alg_none(ev)), 401, "unauthorized")
    assert_error(hook.post(unsigned_alg_none(ev)[:-1] + "." + s), 401, "unauthorized")
    assert_error(hook.post(sign(ev, sec, alg="HS512", digest=hashlib.sha512)), 401, "unauthorized")
    assert_error(hook.post(sign(ev, sec, alg="HS384", digest=hashlib.sha384)), 401, "unauthorized")
    # truncated tokens
    assert_error(hook.post(good[:-10]), 400, "invalid_request")
    assert_error(hook.post(good[:len(good) // 2]), 400, "invalid_request")
    assert_error(hook.post(h + "." + p), 400, "invalid_request")
    # not a JSON object inside a valid JWT
    for payload in ([1, 2], "a string", 42, None):
        assert_error(hook.post(sign(payload, sec)), 400, "invalid_request")
    assert_error(hook.post(sign_raw(b'{"call_id": 1, "state": ', sec)), 400, "invalid_request")
    assert_error(hook.post(sign_raw(b"\xff\xfe not json", sec)), 400, "invalid_request")
    # empty and junk bodies
    assert_error(hook.post(b""), 400, "invalid_request")
    assert_error(hook.post(b"   \n"), 400, "invalid_request")
    assert_error(hook.post(b"hello world"), 400, "invalid_request")
    # deeply nested JSON inside a field of the JWT payload, left unclosed (closed, it is a
    # valid event: test_odd_but_valid_events_are_stored_and_applied)
    deep = b'{"call_id": 6200000000000002, "state": "ringing", "event_timestamp": 1767628800901, "x": ' \
        + b"[" * 100000 + b"]" * 100000 + b"}"
    assert_error(hook.post(sign_raw(deep[:-100001] + b"}", sec)), 400, "invalid_request")
    assert_error(hook.post(sign_raw(deep[:-1], sec)), 400, "invalid_request")
    assert srv.get("/health").status_code == 200
    # over 1 MiB: 413, JSON
    big = sign(dict(ev, call_id=6200000000000003, pad="x" * (1 << 20)), sec)
    assert_error(hook.post(big), 413, "payload_too_large")
    assert_error(hook.post(b"{" + b" " * (1 << 20) + b"}"), 413, "payload_too_large")

    evs = hook.sync()
    assert len(evs) == before, f"a rejected body was stored: {[(e['event'], e['call_id']) for e in evs]}"
    # the server still works after all that
    hook.send(ev, duplicate=False)
    assert [e["call_id"] for e in hook.sync()] == ["6200000000000001"]


def test_unsigned_json_needs_allow_unsigned(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    ev = dict(RINGING, call_id=6300000000000001)
    assert_error(hook.post(json.dumps(ev), content_type="application/json"), 401, "unauthorized")
    assert_error(hook.post(json.dumps(ev), content_type="text/plain"), 401, "unauthorized")
    assert hook.sync() == []

    r = admin(srv, "PATCH", f"/internal/apps/{hook.app_id}", json={"allow_unsigned": True})
    assert r.status_code == 200, r.text
    r = hook.post(json.dumps(ev), content_type="text/plain")
    assert r.status_code == 200, r.text
    assert r.json()["duplicate"] is False
    # the format is detected from the body, whatever the Content-Type says
    r = hook.post(json.dumps(dict(ev, call_id=6300000000000002)), content_type=None)
    assert r.status_code == 200, r.text
    r = hook.post(sign(dict(ev, call_id=6300000000000003), hook.secret),
                  content_type="application/json")
    assert r.status_code == 200, r.text
    r = hook.post(sign(dict(ev, call_id=6300000000000004), hook.secret), content_type="text/plain")
    assert r.status_code == 200, r.text
    # the same event again, signed this time: a duplicate
    r = hook.post(sign(ev, hook.secret))
    assert r.status_code == 200 and r.json()["duplicate"] is True, r.text
    # a JWT still has to verify, unsigned allowed or not
    assert_error(hook.post(sign(dict(ev, call_id=6300000000000005), "wrong-secret-0123456789")),
                 401, "unauthorized")
    # not-an-object JSON and broken JSON are still refused; deep nesting is JSON, and accepted
    assert_error(hook.post("[1, 2]", content_type="text/plain"), 400, "invalid_request")
    deep = ('{"call_id": 6300000000000006, "state": "ringing", "event_timestamp": 1767628800901, '
            '"x": ' + "[" * 100000 + "]" * 100000 + "}")
    assert_error(hook.post(deep[:-1]), 400, "invalid_request")
    r = hook.post(deep)
    assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
    evs = hook.sync()
    assert [e["call_id"] for e in evs] == [str(6300000000000000 + i) for i in (1, 2, 3, 4, 6)]
    assert hook.call(6300000000000001)["status"] == "ringing"


def test_string_ids_are_numbers(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    hook.send(RINGING, duplicate=False)
    # the same event with the ids as strings is the same Dialpad event
    hook.send(dict(RINGING, call_id="9150664720531457"), duplicate=True)
    # a new state of that call, every id a string: the same call
    fx = load("inbound-answered")[1]
    ev = dict(fx, call_id="9150664720531457",
              contact=dict(fx["contact"], id="4672981530214400"),
              target=dict(fx["target"], id="9081726354091521", office_id="6204481935753216"))
    hook.send(ev, duplicate=False)
    hook.send(fx, duplicate=True)  # and numbers again: duplicate of the string form
    evs = hook.sync()
    assert [(e["event"], e["call_id"]) for e in evs] == [
        ("call.ringing", "9150664720531457"), ("call.connected", "9150664720531457")]
    call = hook.call("9150664720531457")
    assert call["status"] == "active"
    assert call["contact"]["id"] == "4672981530214400"
    assert call["target"]["id"] == "9081726354091521"
    assert call["target"]["office_id"] == "6204481935753216"
    assert call["dialpad_user_id"] == "9081726354091521"


def test_id_above_2_53_kept_exactly(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    ev = dict(RINGING, call_id=BIG_ID, contact={"id": BIG_ID + 2, "type": "local", "name": "x",
                                                "phone": "+14155550123", "email": ""},
              target={"id": BIG_ID + 4, "type": "user", "name": "Big", "office_id": BIG_ID + 6},
              master_call_id=BIG_ID + 8)
    body = compact_json(ev)
    assert b"9007199254740993" in body  # a JSON number, not a string
    r = hook.post(sign_raw(body, hook.secret))
    assert r.status_code == 200, r.text
    evs = hook.sync()
    assert [e["call_id"] for e in evs] == ["9007199254740993"]
    call = hook.call("9007199254740993")
    assert call["id"] == "9007199254740993"
    assert call["contact"]["id"] == "9007199254740995"
    assert call["target"]["id"] == "9007199254740997"
    assert call["target"]["office_id"] == "9007199254740999"
    assert call["dialpad_user_id"] == "9007199254740997"
    assert call["master_call_id"] == "9007199254741001"
    # and deduplicated exactly: 2**53 + 1 is not 2**53
    hook.send(dict(RINGING, call_id=BIG_ID - 1), duplicate=False)
    hook.send(dict(RINGING, call_id=str(BIG_ID)), duplicate=True)
    assert [e["call_id"] for e in hook.sync()] == ["9007199254740993", "9007199254740992"]


def test_unknown_and_deactivated_app_404(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    other = Hook(srv, name="bystander")
    token = sign(RINGING, hook.secret)
    assert_error(post_hook(srv, str(uuid.uuid4()), token), 404, "not_found")
    assert_error(post_hook(srv, "not-an-app", token), 404, "not_found")
    assert hook.sync() == []

    assert admin(srv, "DELETE", f"/internal/apps/{hook.app_id}").status_code == 200
    assert_error(hook.post(token), 404, "not_found")
    # not routed to it through /webhooks/dialpad either
    r = post_hook(srv, None, token)
    assert r.status_code in (401, 404), r.text
    r = admin(srv, "PATCH", f"/internal/apps/{hook.app_id}", json={"active": True})
    assert r.status_code == 200, r.text
    assert hook.sync() == [], "an event sent while the app was inactive was stored"
    assert other.sync() == []


def test_expired_jwt_still_accepted(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    ev = dict(RINGING, exp=1000000000, iat=999999000, nbf=999999000)
    hook.send(ev, duplicate=False)
    assert [e["call_id"] for e in hook.sync()] == ["9150664720531457"]


# ---- 6. /webhooks/dialpad without an app id ---------------------------------------------------

GLOBAL = "global-dialpad-secret-0123456789abcdef"


def test_routed_webhooks(make_server):
    srv = start(make_server, DIALPAD_WEBHOOK_SECRET=GLOBAL)
    a = Hook(srv, name="a")
    ev = lambda n, st="ringing": dict(RINGING, call_id=6400000000000000 + n, state=st)

    # one app: the global secret routes to it
    r = post_hook(srv, None, sign(ev(1), GLOBAL))
    assert r.status_code == 200, r.text
    assert [e["call_id"] for e in a.sync()] == ["6400000000000001"]

    b = Hook(srv, name="b")
    # an app's own secret routes to that app
    assert post_hook(srv, None, sign(ev(2), b.secret)).status_code == 200
    assert post_hook(srv, None, sign(ev(3), a.secret)).status_code == 200
    assert_error(post_hook(srv, None, sign(ev(4), "wrong-secret-0123456789abcdef")), 401,
                 "unauthorized")
    assert [e["call_id"] for e in a.sync()] == ["6400000000000001", "6400000000000003"]
    assert [e["call_id"] for e in b.sync()] == ["6400000000000002"]

    # two apps and DIALPAD_DEFAULT_APP_ID: the global secret routes to that app
    assert srv.stop() == 0
    srv.env["DIALPAD_DEFAULT_APP_ID"] = b.app_id
    srv.start()
    r = post_hook(srv, None, sign(ev(5), GLOBAL))
    assert r.status_code == 200, r.text
    assert post_hook(srv, None, sign(ev(6), a.secret)).status_code == 200
    assert post_hook(srv, None, sign(ev(7), b.secret)).status_code == 200
    assert_error(post_hook(srv, None, sign(ev(8), "wrong-secret-0123456789abcdef")), 401,
                 "unauthorized")
    assert [e["call_id"] for e in b.sync()] == ["6400000000000002", "6400000000000005",
                                                "6400000000000007"]
    assert [e["call_id"] for e in a.sync()] == ["6400000000000001", "6400000000000003",
                                                "6400000000000006"]


def test_routed_to_inactive_or_unknown_default_app_is_404(make_server):
    """Contract: 404 unknown/inactive app; a deactivated app's events are not wanted."""
    srv = start(make_server, DIALPAD_WEBHOOK_SECRET=GLOBAL)
    a = Hook(srv, name="a")
    b = Hook(srv, name="b")
    assert srv.stop() == 0
    srv.env["DIALPAD_DEFAULT_APP_ID"] = b.app_id
    srv.start()
    assert admin(srv, "DELETE", f"/internal/apps/{b.app_id}").status_code == 200
    problems = []
    r = post_hook(srv, None, sign(dict(RINGING, call_id=6410000000000001), GLOBAL))
    if r.status_code != 404:
        problems.append(f"default app inactive: POST /webhooks/dialpad (global secret) -> "
                        f"{r.status_code} {r.text}, expected 404")
    assert admin(srv, "PATCH", f"/internal/apps/{b.app_id}", json={"active": True}).status_code == 200
    stored = [e["call_id"] for e in b.sync()]
    if stored:
        problems.append(f"event sent while the default app was inactive was stored for it: {stored}")

    assert srv.stop() == 0
    srv.env["DIALPAD_DEFAULT_APP_ID"] = str(uuid.uuid4())
    srv.start()
    r = post_hook(srv, None, sign(dict(RINGING, call_id=6410000000000002), GLOBAL))
    if r.status_code != 404:
        problems.append(f"default app unknown: POST /webhooks/dialpad (global secret) -> "
                        f"{r.status_code} {r.text}, expected 404")
    assert a.sync() == []
    assert [e["call_id"] for e in b.sync()] == stored
    assert not problems, "\n".join(problems)


# ---- 7. webhook secret rotation ----------------------------------------------------------------

def rotate(srv, app_id, grace):
    r = admin(srv, "POST", f"/internal/apps/{app_id}/webhook-secret/rotate",
              json={"grace_seconds": grace})
    assert r.status_code in (200, 201), r.text
    return r.json()["webhook_secret"]


def test_webhook_secret_rotation(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    ev = lambda n: dict(RINGING, call_id=6500000000000000 + n)
    s0 = hook.secret
    s1 = hook.secret = rotate(srv, hook.app_id, 60)
    assert s1 != s0
    hook.send(ev(1), secret=s0, duplicate=False)  # old: in its grace
    hook.send(ev(2), secret=s1, duplicate=False)  # new
    assert admin(srv, "GET", f"/internal/apps/{hook.app_id}").json()["webhook_secret"] == s1

    other = Hook(srv, name="zero-grace")
    t0 = other.secret
    t1 = other.secret = rotate(srv, other.app_id, 0)
    assert_error(other.post(sign(ev(3), t0)), 401, "unauthorized")
    other.send(ev(4), secret=t1, duplicate=False)
    assert [e["call_id"] for e in hook.sync()] == ["6500000000000001", "6500000000000002"]
    assert [e["call_id"] for e in other.sync()] == ["6500000000000004"]


def test_webhook_secret_rotation_grace_zero_ends_every_older_secret(make_server):
    """grace 0 ends the older secrets at once, also one still in the grace of an earlier
    rotation (as for API keys: a rotation never extends a credential ending sooner)."""
    srv = start(make_server)
    hook = Hook(srv)
    s0 = hook.secret
    s1 = rotate(srv, hook.app_id, 60)
    s2 = hook.secret = rotate(srv, hook.app_id, 0)
    r1 = hook.post(sign(dict(RINGING, call_id=6510000000000001), s1))
    r0 = hook.post(sign(dict(RINGING, call_id=6510000000000000), s0))
    hook.send(dict(RINGING, call_id=6510000000000002), secret=s2)
    assert r1.status_code == 401, r1.text
    assert r0.status_code == 401, f"secret in the grace of an earlier rotation survived a grace-0 rotation: {r0.status_code} {r0.text}"


# ---- 8. dead letters ---------------------------------------------------------------------------

def dead_letters(srv, app_id=None):
    r = admin(srv, "GET", "/internal/dead-letters" + (f"?app_id={app_id}" if app_id else ""))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "data" in body and "next_cursor" in body, body
    return body["data"]


def test_dead_letters(make_server):
    srv = start(make_server)
    a = Hook(srv, name="a")
    b = Hook(srv, name="b")
    bad = lambda n: {"state": "ringing", "direction": "inbound", "external_number": "+14155550123",
                     "event_timestamp": 1767700000000 + n}
    a.send(bad(1), duplicate=False)
    a.send(bad(2), duplicate=False)
    b.send(bad(3), duplicate=False)
    # a number beyond 64 bits: stored as sent, not applicable, and listed as its text
    c = Hook(srv, name="c")
    huge = dict(RINGING, call_id=6600000000009999)
    huge_text = json.dumps(huge).replace('"event_timestamp": ' + str(RINGING["event_timestamp"]),
                                         '"event_timestamp": 18446744073709551616')
    assert "18446744073709551616" in huge_text
    r = c.post(sign_raw(huge_text.encode(), c.secret))
    assert r.status_code == 200, r.text

    good_n = [0]

    def good_flows(hook):
        """A good event sent now is applied within a second, bad ones retrying or not."""
        good_n[0] += 1
        cid = str(6600000000000000 + good_n[0])
        hook.send(dict(RINGING, call_id=int(cid)), duplicate=False)
        deadline = time.time() + 1.0
        while not any(e["call_id"] == cid for e in hook.events()):
            assert time.time() < deadline, f"good event {cid} not applied within 1 s"
            time.sleep(0.02)

    good_flows(a)
    good_flows(b)

    def wait_dead(expect_ids_by_app, timeout=25):
        deadline = time.time() + timeout
        last_good = time.time()
        while True:
            got = {app: {d["payload"]["event_timestamp"]: d for d in dead_letters(srv, app)}
                   for app in expect_ids_by_app}
            if all(set(got[app]) >= set(want) for app, want in expect_ids_by_app.items()):
                return got
            assert time.time() < deadline, f"not dead letters after {timeout}s: {got}"
            if time.time() - last_good > 3:  # other events keep flowing meanwhile
                good_flows(a)
                last_good = time.time()
            time.sleep(0.25)

    ts = lambda n: 1767700000000 + n
    got = wait_dead({a.app_id: [ts(1), ts(2)], b.app_id: [ts(3)]})
    for app, hook, ns in ((a.app_id, a, (1, 2)), (b.app_id, b, (3,))):
        assert set(got[app]) == {ts(n) for n in ns}, got[app]
        for n in ns:
            d = got[app][ts(n)]
            assert d["app_id"] == app
            assert d["payload"] == bad(n)
            assert "call_id" in d["error"], d
            assert d["attempts"] == 5, d
            assert ISO_MS.match(d["received_at"]), d
    everyone = [d for d in dead_letters(srv) if d["app_id"] != c.app_id]
    assert len(everyone) == 3, everyone
    deadline = time.time() + 20
    while not (mine := dead_letters(srv, c.app_id)):
        assert time.time() < deadline, "the event with a 65-bit number was not dead-lettered"
        time.sleep(0.25)
    assert len(mine) == 1 and isinstance(mine[0]["payload"], str), mine
    assert "18446744073709551616" in mine[0]["payload"] and '"call_id"' in mine[0]["payload"]
    # nothing of the bad events reached the stream
    assert all(e["call_id"] and e["call_id"].startswith("66") for e in a.sync() + b.sync())

    # replay one by id: it goes back to be retried
    one = got[a.app_id][ts(1)]
    r = admin(srv, "POST", f"/internal/dead-letters/{one['id']}/replay")
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 1
    assert ts(1) not in {d["payload"]["event_timestamp"] for d in dead_letters(srv, a.app_id)}
    assert_error(admin(srv, "POST", "/internal/dead-letters/999999999/replay"), 404, "not_found")
    # replay all of app a: only the one still dead
    r = admin(srv, "POST", "/internal/dead-letters/replay", json={"app_id": a.app_id})
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 1
    assert dead_letters(srv, a.app_id) == []
    assert len(dead_letters(srv, b.app_id)) == 1
    # replay all (b's, and c's with its 65-bit number)
    r = admin(srv, "POST", "/internal/dead-letters/replay")
    assert r.status_code == 200, r.text
    assert r.json()["replayed"] == 2
    assert dead_letters(srv) == []
    good_flows(a)

    # they still fail: back as dead letters, their attempts counted again
    got = wait_dead({a.app_id: [ts(1), ts(2)], b.app_id: [ts(3)]})
    for app, n in ((a.app_id, 1), (a.app_id, 2), (b.app_id, 3)):
        d = got[app][ts(n)]
        assert d["attempts"] >= 5 and "call_id" in d["error"], d
    assert got[a.app_id][ts(1)]["id"] == one["id"]
    r = admin(srv, "POST", "/internal/dead-letters/replay", json={"app_id": b.app_id})
    assert r.json()["replayed"] == 1


# ---- 9. tenant isolation -----------------------------------------------------------------------

def test_tenant_isolation(make_server):
    srv = start(make_server)
    a = Hook(srv, name="a")
    b = Hook(srv, name="b")
    for ev in load("inbound-answered"):
        a.send(ev)
    cid = str(load("inbound-answered")[0]["call_id"])
    assert len(a.sync()) == 5
    # a's token to b's URL does not verify
    assert_error(b.post(sign(load("inbound-answered")[0], a.secret)), 401, "unauthorized")
    assert b.sync() == []
    for path in ("/api/calls", "/api/calls/active", "/api/calls?number=%2B12065550131",
                 f"/api/calls?dialpad_user_id=9081726354091521"):
        r = tget(srv, b.key, path)
        assert r.status_code == 200, r.text
        seen = [c["id"] for c in r.json()["data"] if c["id"] not in b.barriers]
        assert seen == [], (path, r.json())
    assert_error(tget(srv, b.key, f"/api/calls/{cid}"), 404, "not_found")
    listed = tget(srv, a.key, "/api/calls").json()["data"]
    assert [c["id"] for c in listed if c["id"] not in a.barriers] == [cid]

    # the same call id in b is b's own call
    b.send(load("inbound-answered")[0], duplicate=False)
    assert [e["event"] for e in b.sync()] == ["call.ringing"]
    assert b.call(cid)["status"] == "ringing"
    assert a.call(cid)["status"] == "ended"
    assert len(a.sync()) == 5


# ---- 10. SMS and agent status ------------------------------------------------------------------

def test_sms_and_agent_status(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    hook.send(load("sms-inbound")[0], duplicate=False)
    hook.send(load("real-sms-office")[0], duplicate=False)  # same id, another event
    hook.send(load("sms-inbound")[0], duplicate=True)
    hook.send(load("agent-status")[0], duplicate=False)
    hook.send(load("agent-status")[0], duplicate=True)
    evs = hook.sync()
    assert [e["event"] for e in evs] == ["sms.received", "sms.status", "agent.status"]
    for e in evs:
        for f in EVENT_FIELDS:
            assert f in e, (f, e)
    assert [e["occurred_at"] for e in evs] == [iso(1771348200601), iso(1741707040601),
                                               iso(1771348800050)]
    agent = evs[2]
    assert agent["data"]["target"]["id"] == "9081726354091521"
    assert agent["data"]["on_duty_status"] == "wrapup"


# ---- odd but valid JSON: stored and applied, never a 400 -----------------------------------------
# Dialpad never retries a 4xx: a signed, well-formed JSON object is stored whatever its extras
# hold, and applied from the fields the model reads (docs/ARCHITECTURE.md, src/core/jscan.h).

ODD_CALL = 6800000000000000


def odd_call(n, state="ringing", extra=b""):
    """A signed call event's raw JSON text, with extra members (raw bytes) spliced in."""
    head = ('{"call_id": %d, "state": "%s", "direction": "inbound", "external_number": "+14155550123", '
            '"event_timestamp": %d' % (ODD_CALL + n, state, 1767800000000 + n)).encode()
    return head + (b", " + extra if extra else b"") + b"}"


def send_raw(hook, raw, duplicate=False):
    r = hook.post(sign_raw(raw, hook.secret))
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]} for {raw[:120]!r}"
    assert r.json().get("duplicate") is duplicate, r.json()


def test_odd_but_valid_events_are_stored_and_applied(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    deep = lambda n: b"[" * n + b"1" + b"]" * n
    deep_obj = lambda n: b'{"a":' * n + b"null" + b"}" * n
    long_state = "s" * 70
    longer_state = "recap_" + "\u00e9" * 150  # beyond any key's plain form: hashed
    cases = [  # (n, state, extra members, expected (event, data))
        (1, "ringing", rb'"contact": {"id": 1, "name": "Jo\u0000e"}, "custom_data": "a\u0000b"',
         ("call.ringing", {})),
        (2, "ringing", rb'"contact": {"id": 2, "name": "Ana \ud83d"}, "labels": ["\udc00x"]',
         ("call.ringing", {})),
        (3, "ringing", b'"mos_score": 12345678901234567890, "x": -98765432109876543210',
         ("call.ringing", {})),
        (4, "ringing", b'"csat_score": 1e400, "y": -2.5E+999', ("call.ringing", {})),
        (5, "ringing", b'"labels": ' + deep(65), ("call.ringing", {})),
        (6, "ringing", b'"routing_breadcrumbs": ' + deep(100000) + b', "integrations": ' + deep_obj(5000),
         ("call.ringing", {})),
        (7, "recap_\u00e9t\u00e9", b"", ("call.recap", {"kind": "\u00e9t\u00e9"})),
        (8, "ai playbook", b"", ("call.state", {"state": "ai playbook"})),
        (9, long_state, b"", ("call.state", {"state": long_state})),
        (10, longer_state, b"", ("call.recap", {"kind": longer_state[6:]})),
        (11, "ringing", rb'"contact": {"id": 11, "name": "x", "deep": ' + deep(80) + b"}",
         ("call.ringing", {})),
    ]
    for n, state, extra, _ in cases:
        send_raw(hook, odd_call(n, state, extra).replace(b'"%s"' % state.encode(),
                                                         json.dumps(state).encode(), 1))
    # stored: the same bytes again are duplicates
    for n, state, extra, _ in cases:
        send_raw(hook, odd_call(n, state, extra).replace(b'"%s"' % state.encode(),
                                                         json.dumps(state).encode(), 1), duplicate=True)
    evs = hook.sync(timeout=20)
    got = {e["call_id"]: (e["event"], e["data"]) for e in evs}
    for n, state, _, want in cases:
        assert got.get(str(ODD_CALL + n)) == want, (n, got.get(str(ODD_CALL + n)))
    assert len(evs) == len(cases), [(e["event"], e["call_id"]) for e in evs]
    # applied: the calls read back, odd text replaced, ids still strings
    c1 = hook.call(ODD_CALL + 1)
    assert c1["status"] == "ringing" and c1["contact"] == {"id": "1", "name": "Jo\ufffde"}, c1
    c2 = hook.call(ODD_CALL + 2)
    assert c2["contact"] == {"id": "2", "name": "Ana \ufffd"}, c2
    c11 = hook.call(ODD_CALL + 11)
    assert c11["contact"]["id"] == "11" and c11["contact"]["deep"] is not None, c11
    for n, state, _, _ in cases:
        call = hook.call(ODD_CALL + n)
        assert [t["state"] for t in call["timeline"]] == [state], (n, call["timeline"])
    assert dead_letters(srv, hook.app_id) == []
    # the stream's filters read each event body (with jansson): the odd ones pass them too
    ringing = [e["seq"] for e in hook.events() if e["event"] == "call.ringing"]
    assert len(ringing) >= 7
    assert ws_seqs(srv, hook.key, "since=0&types=call.ringing", ringing[-1]) == ringing


def ws_seqs(srv, key, query, last_seq, timeout=10.0):
    """The seqs of the events a WebSocket with this query receives, up to last_seq."""
    import websocket
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws?{query}",
                                     header=[f"X-API-Key: {key}"], timeout=timeout)
    try:
        seqs, deadline = [], time.time() + timeout
        while not seqs or seqs[-1] < last_seq:
            assert time.time() < deadline, f"only {seqs} of ... {last_seq}"
            m = json.loads(ws.recv())
            if m.get("type") == "event":
                seqs.append(m["seq"])
        return seqs
    finally:
        ws.close()


def test_odd_sms_agent_and_contact_events(make_server):
    srv = start(make_server)
    hook = Hook(srv)
    sms = (b'{"id": 7100000000000001, "direction": "inbound", "from_number": "+14155550123", '
           rb'"to_number": ["+14155550199"], "text": "hi \ud83d and \u0000", "message_status": "pending", '
           b'"event_timestamp": 1767900000001, "contact": {"id": 5, "name": "x", "n": 99999999999999999999}, '
           b'"mms_url": ' + b"[" * 3000 + b"]" * 3000 + b', "score": 1e400}')
    sms_odd_status = (b'{"id": 7100000000000001, "direction": "inbound", "message_status": "d\xc3\xa9livr\xc3\xa9 ok", '
                      b'"event_timestamp": 1767900000002}')
    agent = (b'{"target": {"id": 5188674325413888, "type": "user", "name": "Ana \\ud83d"}, '
             b'"on_duty_status": "available", "availability_status": "open", "event_timestamp": 1767900000003, '
             b'"call_center_ids": [12345678901234567890], "date": 1e400, "x": ' + b"{\"a\":" * 80 + b"1" + b"}" * 80 + b"}")
    contact = (b'{"event": "Updated", "contact": {"id": 6272614887833600, "name": "Z\\u0000", "big": 1e999}, '
               b'"event_timestamp": 1767900000004}')
    for raw in (sms, sms_odd_status, agent, contact):
        send_raw(hook, raw)
        send_raw(hook, raw, duplicate=True)
    evs = hook.sync(timeout=20)
    assert [e["event"] for e in evs] == ["sms.received", "sms.status", "agent.status", "contact.changed"]
    m = evs[0]["message"]
    assert m["text"] == "hi \ufffd and \ufffd" and m["contact"]["id"] == "5", m
    assert m["contact"]["n"] == "99999999999999999999", m  # beyond int64: its digits, as a string
    assert evs[1]["data"] == {"status": "d\u00e9livr\u00e9 ok"}
    a = evs[2]["data"]
    assert a["target"] == {"id": "5188674325413888", "type": "user", "name": "Ana \ufffd"}, a
    assert a["call_center_ids"] == ["12345678901234567890"] and a["date"] == "1e400", a
    assert evs[3]["data"]["action"] == "Updated"
    assert evs[3]["data"]["contact"]["name"] == "Z\ufffd" and evs[3]["data"]["contact"]["big"] == "1e999"
    assert ws_seqs(srv, hook.key, "since=0&types=sms.received,agent.status,contact.changed",
                   evs[3]["seq"]) == [evs[0]["seq"], evs[2]["seq"], evs[3]["seq"]]
    r = tget(srv, hook.key, "/api/messages/7100000000000001")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "d\u00e9livr\u00e9 ok" and m["to_numbers"] == ["+14155550199"]
    assert dead_letters(srv, hook.app_id) == []


def test_contact_events_as_dialpad_documents_them(make_server):
    """Dialpad documents contact events as {event, contact} only: with no event_timestamp
    they are still applied once (an exact retry is a duplicate; their payload is the key),
    occurred_at is when they came, and nothing is parked as a dead letter."""
    srv = start(make_server)
    hook = Hook(srv)
    created = b'{"event": "Created", "contact": {"id": 6272614887833601, "name": "Ana"}}'
    updated = b'{"event": "Updated", "contact": {"id": 6272614887833601, "name": "Ana B"}}'
    for raw in (created, updated):
        send_raw(hook, raw)
        send_raw(hook, raw, duplicate=True)
    evs = hook.sync(timeout=20)
    assert [(e["event"], e["data"]["action"]) for e in evs] == [
        ("contact.changed", "Created"), ("contact.changed", "Updated")]
    assert all(e["occurred_at"] for e in evs)
    assert dead_letters(srv, hook.app_id) == []


# ---- a database that refuses one event --------------------------------------------------------

class Faults:
    """Triggers that make the database refuse the timeline rows of one call, installed by the
    test on the server's database (a SQLite file, or a PostgreSQL database)."""

    def __init__(self, request, url):
        self.request, self.url = request, url

    def sql(self, statement):
        if self.url.startswith("sqlite:"):
            import sqlite3
            con = sqlite3.connect(self.url[len("sqlite:"):], timeout=10)
            con.execute(statement)
            con.commit()
            con.close()
        else:
            self.request.getfixturevalue("pg").psql(statement, database=self.url.rsplit("/", 1)[1])

    def refuse(self, name, call_id):
        if self.url.startswith("sqlite:"):
            self.sql(f"CREATE TRIGGER {name} BEFORE INSERT ON call_events WHEN NEW.call_id = {call_id} "
                     "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
        else:
            self.sql("CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                     "RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql")
            self.sql(f"CREATE TRIGGER {name} BEFORE INSERT ON call_events FOR EACH ROW "
                     f"WHEN (NEW.call_id = {call_id}) EXECUTE FUNCTION refuse()")

    def allow(self, name):
        self.sql(f"DROP TRIGGER {name}" + ("" if self.url.startswith("sqlite:") else " ON call_events"))


def test_event_the_database_refuses_is_dead_lettered_and_others_flow(make_server, backend, request):
    """One call whose rows the database always refuses (a trigger the test installs): its events
    are retried on the dead-letter schedule and parked; every other event is applied meanwhile,
    including one that was refused for a moment and so waits, pending, behind the refused ones
    (before, the worker retried the same oldest pending events forever)."""
    srv = start(make_server, database=backend)
    hook = Hook(srv)
    hook.sync()
    bad, later = 6900000000000001, 6900000000000002
    faults = Faults(request, backend)
    faults.refuse("refuse_one", bad)
    faults.refuse("refuse_for_now", later)
    good = [6900000000000010 + i for i in range(4)]
    hook.send(call_ev(good[0], "ringing", 1767000000000), duplicate=False)
    hook.send(call_ev(bad, "ringing", 1767000000001), duplicate=False)   # stored, pending
    hook.send(call_ev(later, "ringing", 1767000000002), duplicate=False)  # stored, pending
    hook.send(call_ev(good[1], "ringing", 1767000000003), duplicate=False)
    faults.allow("refuse_for_now")
    hook.send(call_ev(bad, "connected", 1767000000004), duplicate=False)
    hook.send(call_ev(good[2], "ringing", 1767000000005), duplicate=False)
    hook.send(call_ev(good[3], "ringing", 1767000000006), duplicate=False)
    want = {str(c) for c in good + [later]}
    deadline = time.time() + 10
    while True:
        evs = hook.events()
        applied = {e["call_id"] for e in evs}
        if want <= applied:
            break
        assert time.time() < deadline, f"not applied: {sorted(want - applied)}"
        time.sleep(0.1)
    check_seqs(evs)
    deadline = time.time() + 40
    while True:
        dead = [d for d in dead_letters(srv, hook.app_id) if d["payload"]["call_id"] == bad]
        if len(dead) == 2:
            break
        assert time.time() < deadline, f"not dead letters after 40 s: {dead}"
        time.sleep(0.5)
    for d in dead:
        assert d["attempts"] == 5 and "injected fault" in d["error"], d
    assert [d for d in dead_letters(srv, hook.app_id) if d["payload"]["call_id"] != bad] == []
    evs = hook.sync()
    assert str(bad) not in {e["call_id"] for e in evs}
    assert all(e["event"] == "call.ringing" for e in evs)
    # the fault gone, a replay applies them
    faults.allow("refuse_one")
    r = admin(srv, "POST", "/internal/dead-letters/replay", json={"app_id": hook.app_id})
    assert r.status_code == 200, r.text
    # replayed events are pending ones, applied by the worker's next pass: a webhook sent
    # right after (the barrier) may be applied before them
    deadline = time.time() + 10
    while True:
        evs = hook.sync()
        got = [e["event"] for e in evs if e["call_id"] == str(bad)]
        if len(got) >= 2 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert got == ["call.ringing", "call.connected"], got
    assert hook.call(bad)["status"] == "active"
