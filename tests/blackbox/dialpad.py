"""Dialpad webhook helpers for the black-box tests: JWT signing, fixtures, polling.

Written against docs/API.md and Dialpad's documented webhook format (tests/fixtures/README.md).
The JWT signer is our own (hmac/hashlib/base64): python3-jwt is not installed.
"""
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # tests/fixtures, in the repository

ADMIN_SECRET = "bb-ingest-admin-secret-0123456789-ABCDEFGHIJ"
ADMIN = {"Authorization": "Bearer " + ADMIN_SECRET}
BIG_ID = 9007199254740993  # 2**53 + 1: not representable as a double


# ---- JWT ---------------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def compact_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_raw(payload: bytes, secret, header=None, alg="HS256", digest=hashlib.sha256) -> str:
    """A compact JWT over the exact payload bytes."""
    if header is None:
        header = {"alg": alg, "typ": "JWT"}
    h = header if isinstance(header, (bytes, bytearray)) else compact_json(header)
    signing_input = b64url(h) + "." + b64url(payload)
    key = secret.encode() if isinstance(secret, str) else secret
    sig = hmac.new(key, signing_input.encode("ascii"), digest).digest()
    return signing_input + "." + b64url(sig)


def sign(event, secret, **kw) -> str:
    """A compact HS256 JWT whose payload is the event object (or any JSON value)."""
    return sign_raw(compact_json(event), secret, **kw)


def unsigned_alg_none(event) -> str:
    return b64url(compact_json({"alg": "none", "typ": "JWT"})) + "." + b64url(compact_json(event)) + "."


def read_vector():
    """jwt-vector.txt: {"secret", "token", "payload"} (payload as the exact text)."""
    out = {}
    for line in (FIXTURES / "jwt-vector.txt").read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


# ---- fixtures ----------------------------------------------------------------------------------

CALL_FIXTURES = ["inbound-answered", "inbound-missed", "inbound-voicemail", "outbound-recorded",
                 "real-hangup-office-unanswered"]
ALL_FIXTURES = CALL_FIXTURES + ["sms-inbound", "real-sms-office", "agent-status"]


def load(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def call_id_str(ev):
    return str(ev["call_id"])


# ---- server helpers ----------------------------------------------------------------------------

def admin(srv, method, path, **kw):
    h = dict(ADMIN)
    h.update(kw.pop("headers", {}) or {})
    return srv.request(method, path, headers=h, **kw)


def create_app(srv, name="acme"):
    r = admin(srv, "POST", "/internal/apps", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def post_hook(srv, app_id, body, content_type="application/jwt", **kw):
    path = "/webhooks/dialpad" + (f"/{app_id}" if app_id else "")
    headers = {"Content-Type": content_type} if content_type else {}
    headers.update(kw.pop("headers", {}))
    if isinstance(body, str):
        body = body.encode()
    return srv.post(path, data=body, headers=headers, **kw)


def send(srv, app, event, secret=None, expect_duplicate=None):
    """Signs and posts one event; asserts 200 (and duplicate flag when asked)."""
    r = post_hook(srv, app["app_id"], sign(event, secret or app["webhook_secret"]))
    assert r.status_code == 200, f"{r.status_code} {r.text} for {short(event)}"
    body = r.json()
    assert body.get("status") == "ok", body
    if expect_duplicate is not None:
        assert body.get("duplicate") is expect_duplicate, f"{body} for {short(event)}"
    return body


def short(ev):
    if not isinstance(ev, dict):
        return repr(ev)[:80]
    keys = ("call_id", "state", "event_timestamp", "id", "message_status")
    return {k: ev[k] for k in keys if k in ev}


def tget(srv, key, path, **kw):
    return srv.get(path, headers={"X-API-Key": key}, **kw)


def all_events(srv, key, since=0):
    out = []
    while True:
        r = tget(srv, key, f"/api/events?since={since}&limit=500")
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["data"]
        if not body["data"]:
            return out
        assert body["next_since"] > since, body["next_since"]
        since = body["next_since"]


def wait_events(srv, key, count, timeout=5.0, since=0):
    """Polls /api/events until at least `count` events (after since) are there."""
    deadline = time.time() + timeout
    while True:
        evs = all_events(srv, key, since)
        if len(evs) >= count or time.time() > deadline:
            assert len(evs) >= count, f"only {len(evs)} of {count} events after {timeout}s: " + \
                json.dumps([(e["seq"], e["event"], e.get("call_id")) for e in evs])[:2000]
            return evs
        time.sleep(0.02)


def settle(srv, key, expected, timeout=5.0, since=0, quiet=0.3):
    """Waits for `expected` events, then checks no more arrive for `quiet` seconds."""
    evs = wait_events(srv, key, expected, timeout, since)
    end = time.time() + quiet
    while time.time() < end:
        time.sleep(0.05)
        evs = all_events(srv, key, since)
    return evs


def get_call(srv, key, call_id):
    r = tget(srv, key, f"/api/calls/{call_id}")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    return r.json()


# ---- a simple load: calls that ring and hang up ----------------------------------------

CALL_EVENT_NAMES = {"ringing": "call.ringing", "hangup": "call.ended"}


def call_events(base_call_id, n, ts0=1767628800000):
    """n calls x (ringing, hangup): 2n webhooks, each one event in the log (the kill -9
    test and the drills use them)."""
    out = []
    for i in range(n):
        cid = base_call_id + i
        ts = ts0 + 1000 * i
        out.append({"call_id": cid, "state": "ringing", "direction": "inbound",
                    "external_number": "+14155550123", "internal_number": "+14155550199",
                    "date_started": ts - 500, "event_timestamp": ts})
        out.append({"call_id": cid, "state": "hangup", "direction": "inbound",
                    "external_number": "+14155550123", "internal_number": "+14155550199",
                    "date_started": ts - 500, "date_connected": None, "date_ended": ts + 400,
                    "duration": 0, "total_duration": 900.5, "event_timestamp": ts + 500})
    return out


def key_of(ev):
    """An event of call_events as it shows in the log: (call id, event name)."""
    return (str(ev["call_id"]), CALL_EVENT_NAMES[ev["state"]])
