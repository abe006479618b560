"""Outbound webhook endpoints as a client manages them: docs/API.md, "Outbound webhooks".

Both doors (the app's key at /api/webhook-endpoints, the admin token at
/internal/apps/{app_id}/webhook-endpoints): create (the secret shown once), read,
list, change, delete, rotate the secret, the delivery log, replay and retry; every
bad input a 400 naming the field that changes nothing; another app's endpoint a 404
on every route; production's https-only rule; and, through a receiver on
loopback, what the sender makes of it: the Standard Webhooks headers signed with
the endpoint's secret (two signatures during a rotation's grace), nothing for a
disabled endpoint, the same webhook-id on a retry and a replay.
Every response is also validated against docs/openapi.yaml (conftest.py).
"""
import base64
import calendar
import hashlib
import hmac
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dialpad import ADMIN, ADMIN_SECRET, call_events, send, wait_events

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")
TOKEN_KEY = "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
STRONG_ADMIN = "Zq8f3Kp0Vb7Lx2Nm9Rt4Wy6Hc1Jd5Gs8Qa3Ue7Io0Pk2Ml4Nb6Vc9Xz1Sd3Fg5Hj"
BASE = "/api/webhook-endpoints"
ENDPOINT_KEYS = {"id", "url", "types", "description", "enabled", "disabled_reason", "created_at",
                 "updated_at"}
DELIVERY_KEYS = {"id", "event_seq", "event", "status", "attempts", "last_attempt_at",
                 "last_status_code", "last_error", "next_attempt_at"}
# an address where nothing listens: deliveries stay pending (each retry waits an hour)
DEAD_URL = "http://127.0.0.1:9/hook"


# ---- helpers ---------------------------------------------------------------------------------

def start(make_server, database=None, workdir=None, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET, "PUBLIC_BASE_URL": "https://cti.example.com",
         "OUTBOUND_RETRY_SCHEDULE": "1h,1h,1h"}
    e.update(env)
    return make_server(env=e, database=database, workdir=workdir)


def admin(srv, method, path, **kw):
    return srv.request(method, path, headers=dict(ADMIN), **kw)


def tenant(srv, key, method, path, headers=None, **kw):
    return srv.request(method, path, headers={"X-API-Key": key} | (headers or {}), **kw)


def new_app(srv, name="acme"):
    r = admin(srv, "POST", "/internal/apps", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def create(srv, key, **body):
    body.setdefault("url", DEAD_URL)
    r = tenant(srv, key, "POST", BASE, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(resp, status, code, mentions=None):
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert body.get("error") == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    if mentions:
        assert mentions in body["message"], body
    return body


def iso_s(text):
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def endpoint_ids(srv, key):
    r = tenant(srv, key, "GET", BASE)
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()["data"]]


# ---- create, read, list: the secret once -------------------------------------------------------

def test_create_shows_the_secret_once_and_never_again(make_server):
    srv = start(make_server)
    app = new_app(srv)
    r = tenant(srv, app["api_key"], "POST", BASE,
               json={"url": "http://127.0.0.1:8080/cti", "types": ["call.*", "sms.received"],
                     "description": "CRM"})
    assert r.status_code == 201, r.text
    ep = r.json()
    assert set(ep) == ENDPOINT_KEYS | {"secret"}
    assert UUID_RE.match(ep["id"])
    assert ep["url"] == "http://127.0.0.1:8080/cti"  # sandbox: http and loopback are fine
    assert ep["types"] == ["call.*", "sms.received"]
    assert ep["description"] == "CRM"
    assert ep["enabled"] is True and ep["disabled_reason"] is None
    assert ISO_MS.match(ep["created_at"]) and ep["created_at"] == ep["updated_at"]
    assert SECRET_RE.match(ep["secret"])
    assert len(base64.b64decode(ep["secret"][6:])) == 24  # Standard Webhooks: 24 random bytes
    secret = ep["secret"]

    got = tenant(srv, app["api_key"], "GET", f"{BASE}/{ep['id']}")
    assert got.status_code == 200
    assert got.json() == {k: ep[k] for k in ENDPOINT_KEYS}  # everything but the secret
    listed = tenant(srv, app["api_key"], "GET", BASE).json()
    assert listed["next_cursor"] is None and listed["data"] == [got.json()]
    other = create(srv, app["api_key"])
    assert other["secret"] != secret  # each endpoint its own
    assert other["types"] is None and other["description"] is None  # absent: every event

    audit = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit").json()["data"]
    created = [a for a in audit if a["action"] == "webhook_endpoint.created"]
    assert len(created) == 2 and created[-1]["detail"]["endpoint_id"] == ep["id"]
    assert created[-1]["actor"] == "key:" + app["key_id"]
    assert secret not in str(audit)
    srv.stop()
    assert secret[6:] not in srv.log_text() and other["secret"][6:] not in srv.log_text()


def test_list_pages_oldest_first(make_server):
    srv = start(make_server)
    app = new_app(srv)
    made = [create(srv, app["api_key"], description=f"n{i}")["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(4):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = tenant(srv, app["api_key"], "GET", BASE, params=params).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == made


def test_types_are_kept_as_given_without_repeats(make_server):
    srv = start(make_server)
    key = new_app(srv)["api_key"]
    assert create(srv, key, types=["sms.*", "call.ringing", "sms.*"])["types"] == \
        ["sms.*", "call.ringing"]
    assert create(srv, key, types=["*"])["types"] == ["*"]
    assert create(srv, key, types=None)["types"] is None
    every = [f"{f}.*" for f in ("call", "voicemail", "sms", "contact", "agent", "connection")]
    assert create(srv, key, types=every)["types"] == every


def test_an_app_has_at_most_20_endpoints(make_server):
    srv = start(make_server)
    key = new_app(srv)["api_key"]
    ids = [create(srv, key)["id"] for _ in range(20)]
    assert_error(tenant(srv, key, "POST", BASE, json={"url": DEAD_URL}), 409,
                 "too_many_endpoints", "20")
    assert len(endpoint_ids(srv, key)) == 20
    assert tenant(srv, key, "DELETE", f"{BASE}/{ids[0]}").status_code == 200
    create(srv, key)


# ---- change and delete ----------------------------------------------------------------------

def test_patch_changes_fields_and_enabling(make_server):
    srv = start(make_server)
    key = new_app(srv)["api_key"]
    ep = create(srv, key, types=["call.*"], description="old")
    path = f"{BASE}/{ep['id']}"
    time.sleep(0.005)
    r = tenant(srv, key, "PATCH", path, json={"url": "https://hooks.example.com/x?t=1",
                                               "types": ["sms.*"], "description": None})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["url"] == "https://hooks.example.com/x?t=1" and got["types"] == ["sms.*"]
    assert got["description"] is None and got["enabled"] is True
    assert got["created_at"] == ep["created_at"] and got["updated_at"] > ep["updated_at"]
    assert "secret" not in got

    r = tenant(srv, key, "PATCH", path, json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert r.json()["disabled_reason"] is None  # disabled by the customer: no reason of ours
    assert r.json()["url"] == got["url"] and r.json()["types"] == ["sms.*"]  # the rest kept
    assert tenant(srv, key, "GET", path).json()["enabled"] is False
    r = tenant(srv, key, "PATCH", path, json={"enabled": True, "types": None})
    assert r.status_code == 200 and r.json()["enabled"] is True and r.json()["types"] is None


def test_concurrent_patches_of_different_fields_both_land(make_server, backend):
    """Two PATCHes at once, one of `description`, one of `url`: each reads the endpoint and
    writes it back; the second must read what the first wrote, or it puts the old value of
    the other field back (on PostgreSQL, before the row was locked for the read)."""
    srv = start(make_server, database=backend)
    key = new_app(srv)["api_key"]
    ep = create(srv, key, description="d0")
    path = f"{BASE}/{ep['id']}"
    lost = []
    for i in range(1, 31):
        barrier = threading.Barrier(2)
        answers = {}

        def patch(field, value):
            barrier.wait()
            answers[field] = tenant(srv, key, "PATCH", path, json={field: value}).status_code

        ts = [threading.Thread(target=patch, args=("description", f"d{i}")),
              threading.Thread(target=patch, args=("url", f"https://hooks.example.com/{i}"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert answers == {"description": 200, "url": 200}, answers
        got = tenant(srv, key, "GET", path).json()
        if (got["description"], got["url"]) != (f"d{i}", f"https://hooks.example.com/{i}"):
            lost.append((i, got["description"], got["url"]))
    assert not lost, f"a concurrent change was lost in {len(lost)} of 30 rounds: {lost[:3]}"


def test_delete_then_404_everywhere(make_server):
    srv = start(make_server)
    key = new_app(srv)["api_key"]
    keep = create(srv, key)
    ep = create(srv, key)
    path = f"{BASE}/{ep['id']}"
    r = tenant(srv, key, "DELETE", path)
    assert r.status_code == 200 and r.json() == {"id": ep["id"], "deleted": True}
    assert endpoint_ids(srv, key) == [keep["id"]]
    for method, sub, body in [("GET", "", None), ("PATCH", "", {"enabled": True}),
                              ("DELETE", "", None), ("POST", "/rotate-secret", None),
                              ("GET", "/deliveries", None), ("POST", "/replay", {"since_seq": 0}),
                              ("POST", "/deliveries/1/retry", None)]:
        assert_error(tenant(srv, key, method, path + sub, json=body), 404, "not_found")


# ---- validation: 400 naming the field, nothing changed ---------------------------------------

BAD_CREATE = [
    ({}, "'url' is required"),
    ({"url": 5}, "'url' must be a string"),
    ({"url": ""}, "'url'"),
    ({"url": "ftp://example.com/"}, "http:// or https://"),
    ({"url": "example.com/hook"}, "http:// or https://"),
    ({"url": "https://user:pw@example.com/"}, "credentials"),
    ({"url": "https://example.com/#top"}, "#fragment"),
    ({"url": "https://example.com/" + "a" * 2030}, "2048"),
    ({"url": "https://example.com/a b"}, "ASCII"),
    ({"url": "https://example.com:99999/"}, "port"),
    ({"url": "https://[::1/"}, "]"),
    ({"url": "https://"}, "host"),
    ({"url": DEAD_URL, "types": "call.*"}, "'types' must be an array"),
    ({"url": DEAD_URL, "types": []}, "'types' must be an array of 1 to 32"),
    ({"url": DEAD_URL, "types": ["call.*"] * 33}, "'types' must be an array of 1 to 32"),
    ({"url": DEAD_URL, "types": ["call.nope"]}, "types[0]"),
    ({"url": DEAD_URL, "types": ["call.ringing", "fax.*"]}, "types[1]"),
    ({"url": DEAD_URL, "types": [7]}, "types[0]: must be a string"),
    ({"url": DEAD_URL, "description": "x" * 201}, "'description' must be 1 to 200"),
    ({"url": DEAD_URL, "description": 3}, "'description' must be a string"),
    ({"url": DEAD_URL, "secret": "whsec_mine"}, "secret"),
    ({"url": DEAD_URL, "enabled": False}, "enabled"),
]


@pytest.mark.parametrize("body,mentions", BAD_CREATE, ids=[m for _, m in BAD_CREATE])
def test_create_refuses_bad_input(make_server, body, mentions):
    srv = start(make_server)
    key = new_app(srv)["api_key"]
    assert_error(tenant(srv, key, "POST", BASE, json=body), 400, "invalid_request", mentions)
    assert endpoint_ids(srv, key) == []


def test_other_routes_refuse_bad_input_and_change_nothing(make_server):
    srv = start(make_server)
    app = new_app(srv)
    key = app["api_key"]
    ep = create(srv, key, types=["call.*"])
    path = f"{BASE}/{ep['id']}"
    cases = [
        ("PATCH", "", {}, "at least one"),
        ("PATCH", "", {"enabled": "yes"}, "'enabled' must be true or false"),
        ("PATCH", "", {"url": "gopher://x/"}, "http:// or https://"),
        ("PATCH", "", {"types": ["call.*", "nope"]}, "types[1]"),
        ("PATCH", "", {"description": ""}, "'description'"),
        ("PATCH", "", {"id": "x"}, "id"),
        ("PATCH", "", {"url": "https://ok.example.com/", "enabled": 1}, "'enabled'"),
        ("POST", "/rotate-secret", {"grace_seconds": -1}, "'grace_seconds' must be"),
        ("POST", "/rotate-secret", {"grace_seconds": 604801}, "604800"),
        ("POST", "/rotate-secret", {"grace_seconds": "60"}, "'grace_seconds'"),
        ("POST", "/rotate-secret", {"grace": 60}, "grace"),
        ("POST", "/replay", {}, "'since_seq' is required"),
        ("POST", "/replay", {"since_seq": -1}, "'since_seq' must be"),
        ("POST", "/replay", {"since_seq": "1"}, "'since_seq' must be"),
        ("POST", "/replay", {"since": 1}, "since"),
    ]
    for method, sub, body, mentions in cases:
        r = tenant(srv, key, method, path + sub, json=body)
        assert_error(r, 400, "invalid_request", mentions)
    for params, mentions in [({"status": "done"}, "'status' must be pending, succeeded or failed"),
                             ({"limit": 0}, "'limit'"), ({"cursor": "???"}, "'cursor'")]:
        r = tenant(srv, key, "GET", path + "/deliveries", params=params)
        assert_error(r, 400, "invalid_request", mentions)
    r = tenant(srv, key, "POST", path + "/rotate-secret", data="not json",
               headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")  # a body that is not JSON
    got = tenant(srv, key, "GET", path).json()
    assert got == {k: ep[k] for k in ENDPOINT_KEYS}  # nothing changed, not even updated_at
    audit = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit").json()["data"]
    assert [a["action"] for a in audit if a["action"].startswith("webhook_endpoint")] == \
        ["webhook_endpoint.created"]


# ---- rotation -------------------------------------------------------------------------------

def test_rotate_secret_with_and_without_grace(make_server):
    srv = start(make_server)
    app = new_app(srv)
    key = app["api_key"]
    ep = create(srv, key)
    path = f"{BASE}/{ep['id']}/rotate-secret"
    before = time.time()
    r = tenant(srv, key, "POST", path)  # no body: a day's grace
    assert r.status_code == 200, r.text
    rot = r.json()
    assert set(rot) == ENDPOINT_KEYS | {"secret", "old_secret_expires_at"}
    assert SECRET_RE.match(rot["secret"]) and rot["secret"] != ep["secret"]
    assert abs(iso_s(rot["old_secret_expires_at"]) - (before + 86400)) < 30
    assert rot["id"] == ep["id"] and rot["updated_at"] >= ep["updated_at"]

    r = tenant(srv, key, "POST", path, json={"grace_seconds": 604800})
    assert r.status_code == 200 and abs(iso_s(r.json()["old_secret_expires_at"]) -
                                        (before + 604800)) < 30
    third = r.json()["secret"]
    r = tenant(srv, key, "POST", path, json={"grace_seconds": 0})
    assert r.status_code == 200 and r.json()["old_secret_expires_at"] is None
    assert len({ep["secret"], rot["secret"], third, r.json()["secret"]}) == 4
    assert "secret" not in tenant(srv, key, "GET", f"{BASE}/{ep['id']}").json()
    audit = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit").json()["data"]
    rotations = [a["detail"]["grace_seconds"] for a in audit
                 if a["action"] == "webhook_endpoint.secret_rotated"]
    assert rotations == [0, 604800, 86400]  # newest first
    srv.stop()
    for s in (ep["secret"], rot["secret"], third, r.json()["secret"]):
        assert s[6:] not in srv.log_text()


# ---- tenant isolation and the admin door -----------------------------------------------------

def test_another_apps_endpoint_is_404_on_every_route(make_server):
    srv = start(make_server)
    a, b = new_app(srv, "a"), new_app(srv, "b")
    ep = create(srv, a["api_key"], types=["call.*"])
    send(srv, a, call_events(7100000001, 1)[0])
    wait_events(srv, a["api_key"], 1)
    dl = tenant(srv, a["api_key"], "GET", f"{BASE}/{ep['id']}/deliveries").json()["data"]
    assert len(dl) == 1
    routes = [("GET", "", None), ("PATCH", "", {"enabled": False}), ("DELETE", "", None),
              ("POST", "/rotate-secret", {"grace_seconds": 0}), ("GET", "/deliveries", None),
              ("POST", "/replay", {"since_seq": 0}),
              ("POST", f"/deliveries/{dl[0]['id']}/retry", None)]
    for method, sub, body in routes:
        r = tenant(srv, b["api_key"], method, f"{BASE}/{ep['id']}{sub}", json=body)
        assert_error(r, 404, "not_found")
        r = admin(srv, method, f"/internal/apps/{b['app_id']}/webhook-endpoints/{ep['id']}{sub}",
                  json=body)
        assert_error(r, 404, "not_found")
    assert endpoint_ids(srv, b["api_key"]) == []
    got = tenant(srv, a["api_key"], "GET", f"{BASE}/{ep['id']}").json()
    assert got == {k: ep[k] for k in ENDPOINT_KEYS}  # untouched
    after = tenant(srv, a["api_key"], "GET", f"{BASE}/{ep['id']}/deliveries").json()["data"]
    assert [(x["id"], x["event_seq"]) for x in after] == [(dl[0]["id"], dl[0]["event_seq"])]
    # an endpoint id that is not a UUID, and a delivery that is not this endpoint's
    assert_error(tenant(srv, a["api_key"], "GET", f"{BASE}/not-a-uuid"), 404, "not_found")
    other = create(srv, a["api_key"], types=["sms.*"])
    r = tenant(srv, a["api_key"], "POST", f"{BASE}/{other['id']}/deliveries/{dl[0]['id']}/retry")
    assert_error(r, 404, "not_found")
    r = tenant(srv, a["api_key"], "POST", f"{BASE}/{ep['id']}/deliveries/x1/retry")
    assert_error(r, 404, "not_found")


def test_admin_door_has_the_same_operations(make_server):
    srv = start(make_server)
    app = new_app(srv)
    base = f"/internal/apps/{app['app_id']}/webhook-endpoints"
    r = admin(srv, "POST", base, json={"url": "https://hooks.example.com/", "types": ["agent.*"]})
    assert r.status_code == 201, r.text
    ep = r.json()
    assert SECRET_RE.match(ep["secret"]) and ep["types"] == ["agent.*"]
    # the tenant sees what the admin made, and the other way round
    assert endpoint_ids(srv, app["api_key"]) == [ep["id"]]
    mine = create(srv, app["api_key"])
    listed = admin(srv, "GET", base).json()
    assert [e["id"] for e in listed["data"]] == [ep["id"], mine["id"]]
    assert "secret" not in listed["data"][0]
    assert admin(srv, "GET", f"{base}/{ep['id']}").json()["url"] == "https://hooks.example.com/"
    r = admin(srv, "PATCH", f"{base}/{ep['id']}", json={"enabled": False, "description": "ops"})
    assert r.status_code == 200 and r.json()["enabled"] is False
    r = admin(srv, "POST", f"{base}/{ep['id']}/rotate-secret", json={"grace_seconds": 60})
    assert r.status_code == 200 and r.json()["secret"] != ep["secret"]
    r = admin(srv, "GET", f"{base}/{ep['id']}/deliveries")
    assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None}
    r = admin(srv, "POST", f"{base}/{ep['id']}/replay", json={"since_seq": 0})
    assert r.status_code == 202 and r.json() == {"replayed": 0}
    assert admin(srv, "DELETE", f"{base}/{ep['id']}").status_code == 200
    assert admin(srv, "GET", f"{base}/{ep['id']}").status_code == 404

    audit = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit").json()["data"]
    mine_actions = [(a["action"], a["actor"]) for a in audit
                    if a["action"].startswith("webhook_endpoint")]
    assert mine_actions == [("webhook_endpoint.deleted", "admin"),
                            ("webhook_endpoint.replayed", "admin"),
                            ("webhook_endpoint.secret_rotated", "admin"),
                            ("webhook_endpoint.updated", "admin"),
                            ("webhook_endpoint.created", "key:" + app["key_id"]),
                            ("webhook_endpoint.created", "admin")]
    # the admin door's own refusals
    assert_error(admin(srv, "GET", "/internal/apps/00000000-0000-4000-8000-000000000000/"
                       "webhook-endpoints"), 404, "not_found", "no such app")
    assert_error(srv.request("GET", base), 401, "unauthorized")
    assert_error(srv.request("GET", base, headers={"Authorization": "Bearer wrong-token-1234"}),
                 403, "forbidden")
    assert_error(srv.request("GET", BASE), 401, "unauthorized")


# ---- deliveries, replay, retry ----------------------------------------------------------------

def test_delivery_log_replay_and_retry(make_server):
    srv = start(make_server)
    app = new_app(srv)
    key = app["api_key"]
    calls = create(srv, key, types=["call.ringing"])
    every = create(srv, key)
    sms = create(srv, key, types=["sms.*"])
    for ev in call_events(7200000001, 3):  # 3 calls: ringing, ended
        send(srv, app, ev)
    events = wait_events(srv, key, 6)
    ringing = [e["seq"] for e in events if e["event"] == "call.ringing"]

    def log(ep, **params):
        r = tenant(srv, key, "GET", f"{BASE}/{ep['id']}/deliveries", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    page = log(calls)
    assert [d["event_seq"] for d in page["data"]] == sorted(ringing, reverse=True)  # newest first
    d = page["data"][0]
    assert set(d) == DELIVERY_KEYS and d["event"] == "call.ringing" and d["id"].isdigit()
    assert d["status"] == "pending" and d["attempts"] >= 0 and ISO_MS.match(d["next_attempt_at"])
    assert len(log(every)["data"]) == 6
    assert log(sms)["data"] == []
    assert len(log(calls, status="pending")["data"]) + len(log(calls, status="failed")["data"]) \
        + len(log(calls, status="succeeded")["data"]) == 3
    assert log(calls, status="succeeded")["data"] == []  # nothing listens there

    # paging: newest first, no repeats
    first = log(every, limit=4)
    assert len(first["data"]) == 4 and first["next_cursor"]
    rest = log(every, limit=4, cursor=first["next_cursor"])
    seqs = [x["event_seq"] for x in first["data"] + rest["data"]]
    assert seqs == sorted((e["seq"] for e in events), reverse=True)

    # replay: every event after since_seq the endpoint takes, again
    r = tenant(srv, key, "POST", f"{BASE}/{calls['id']}/replay", json={"since_seq": ringing[0]})
    assert r.status_code == 202 and r.json() == {"replayed": 2}
    assert len(log(calls)["data"]) == 5
    r = tenant(srv, key, "POST", f"{BASE}/{every['id']}/replay", json={"since_seq": 0})
    assert r.status_code == 202 and r.json() == {"replayed": 6}
    r = tenant(srv, key, "POST", f"{BASE}/{every['id']}/replay",
               json={"since_seq": events[-1]["seq"]})
    assert r.status_code == 202 and r.json() == {"replayed": 0}

    # retry: one delivery, due now
    target = log(calls)["data"][-1]
    r = tenant(srv, key, "POST", f"{BASE}/{calls['id']}/deliveries/{target['id']}/retry")
    assert r.status_code == 202, r.text
    got = r.json()
    assert got["id"] == target["id"] and got["event_seq"] == target["event_seq"]
    assert got["status"] == "pending" and ISO_MS.match(got["next_attempt_at"])
    assert_error(tenant(srv, key, "POST", f"{BASE}/{calls['id']}/deliveries/999999999/retry"),
                 404, "not_found")
    audit = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit").json()["data"]
    assert [a["action"] for a in audit[:4]] == ["webhook_endpoint.delivery_retried",
                                                "webhook_endpoint.replayed",
                                                "webhook_endpoint.replayed",
                                                "webhook_endpoint.replayed"]

    # deleting the endpoint takes its log; the others keep theirs
    assert tenant(srv, key, "DELETE", f"{BASE}/{calls['id']}").status_code == 200
    assert len(log(every)["data"]) == 12


# ---- production: https only, public addresses --------------------------------------------------

def production(make_server, **env):
    e = {"NODE_ENV": "production", "HOST": "127.0.0.1", "TLS_TERMINATED_BY_PROXY": "true",
         "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "INTERNAL_API_SECRET": STRONG_ADMIN,
         "PUBLIC_BASE_URL": "https://cti.example.com"}
    e.update(env)
    srv = make_server(env=e)
    r = srv.request("POST", "/internal/apps", json={"name": "prod"},
                    headers={"Authorization": "Bearer " + STRONG_ADMIN})
    assert r.status_code == 201, r.text
    return srv, r.json()["api_key"]


PRIVATE_URLS = ["https://127.0.0.1/hook", "https://127.1:8443/", "https://2130706433/",
                "https://10.0.0.7/", "https://192.168.1.1/", "https://169.254.169.254/latest",
                "https://[::1]/", "https://[::ffff:10.0.0.1]/", "https://[fd00::1]/",
                "https://localhost:8443/", "https://0.0.0.0/"]


def test_production_takes_only_https_to_public_addresses(make_server):
    srv, key = production(make_server)
    assert_error(tenant(srv, key, "POST", BASE, json={"url": "http://hooks.example.com/"}), 400,
                 "invalid_request", "https:// in production")
    for url in PRIVATE_URLS:
        assert_error(tenant(srv, key, "POST", BASE, json={"url": url}), 400, "invalid_request",
                     "OUTBOUND_ALLOW_PRIVATE")
    ep = create(srv, key, url="https://hooks.example.com/cti")
    ep2 = create(srv, key, url="https://93.184.216.34:8443/cti")
    assert endpoint_ids(srv, key) == [ep["id"], ep2["id"]]
    for url in ("http://hooks.example.com/", "https://10.1.1.1/"):
        r = tenant(srv, key, "PATCH", f"{BASE}/{ep['id']}", json={"url": url})
        assert_error(r, 400, "invalid_request", "'url'")
    assert tenant(srv, key, "GET", f"{BASE}/{ep['id']}").json()["url"] == \
        "https://hooks.example.com/cti"


def test_production_allows_private_addresses_when_told(make_server):
    srv, key = production(make_server, OUTBOUND_ALLOW_PRIVATE="true")
    for url in PRIVATE_URLS[:3]:
        create(srv, key, url=url)
    assert_error(tenant(srv, key, "POST", BASE, json={"url": "http://127.0.0.1/"}), 400,
                 "invalid_request", "https:// in production")  # still https only


# ---- secrets at rest -------------------------------------------------------------------------

KEY_A = "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"
KEY_B = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def test_endpoint_secrets_are_sealed_and_follow_a_key_rotation(make_server, tmp_path):
    """Sealed in the database; after TOKEN_ENCRYPTION_KEY rotates, one start with the old key
    in TOKEN_ENCRYPTION_KEY_OLD seals them again, and the old key can go."""
    work = tmp_path / "w"
    srv = start(make_server, workdir=work, TOKEN_ENCRYPTION_KEY=KEY_A)
    key = new_app(srv)["api_key"]
    ep = create(srv, key)
    rot = tenant(srv, key, "POST", f"{BASE}/{ep['id']}/rotate-secret", json={"grace_seconds": 3600})
    assert rot.status_code == 200
    assert srv.stop() == 0
    files = sorted(p for p in (work / "var").iterdir() if p.name.startswith("cti.db"))
    assert files
    for path in files:
        data = path.read_bytes()
        for s in (ep["secret"], rot.json()["secret"]):
            assert s[6:].encode() not in data, path

    srv = start(make_server, workdir=work, TOKEN_ENCRYPTION_KEY=KEY_B,
                TOKEN_ENCRYPTION_KEY_OLD=KEY_A)
    lines = [l for l in srv.log_lines() if l.get("msg", "").startswith("webhook endpoint secrets")]
    assert lines and lines[-1]["resealed"] == 1 and lines[-1]["unreadable"] == 0, srv.log_text()
    assert srv.stop() == 0

    srv = start(make_server, workdir=work, TOKEN_ENCRYPTION_KEY=KEY_B)
    # the previous secret still opens with KEY_B alone: it keeps signing during the new grace
    r = tenant(srv, key, "POST", f"{BASE}/{ep['id']}/rotate-secret", json={"grace_seconds": 60})
    assert r.status_code == 200 and r.json()["old_secret_expires_at"] is not None, r.text


# ---- what the sender makes of it: a receiver on loopback --------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST (headers, body) and answers
    `status` (200 unless told otherwise)."""

    def __init__(self):
        self.got, self.status, self.cond = [], 200, threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.cond:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    outer.cond.notify_all()
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hooks"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait(self, n, timeout=15):
        with self.cond:
            self.cond.wait_for(lambda: len(self.got) >= n, timeout)
            assert len(self.got) >= n, f"{len(self.got)} of {n} deliveries after {timeout}s"
            return list(self.got)

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def signatures_by(secret, headers, body):
    """Which of the v1 signatures in webhook-signature the secret makes."""
    key = base64.b64decode(secret[len("whsec_"):])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return [s for s in headers["webhook-signature"].split(" ") if s == "v1," + mac]


def test_deliveries_are_signed_with_the_endpoints_secret_and_both_during_a_grace(
        make_server, receiver):
    srv = start(make_server)
    app = new_app(srv)
    key = app["api_key"]
    ep = create(srv, key, url=receiver.url, types=["call.ringing"])
    evs = call_events(7300000001, 2)
    send(srv, app, evs[0])  # ringing: sent
    send(srv, app, evs[1])  # ended: not a type it takes
    (headers, body), = receiver.wait(1)
    event = json.loads(body)
    assert event["event"] == "call.ringing" and event["call_id"] == "7300000001"
    assert event == wait_events(srv, key, 2)[0]  # exactly the stream's object
    assert headers["content-type"].startswith("application/json")
    assert headers["webhook-id"] == f"msg_{ep['id'].replace('-', '')}_{event['seq']}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert len(signatures_by(ep["secret"], headers, body)) == 1
    time.sleep(0.5)
    assert len(receiver.got) == 1  # call.ended is not one of its types
    log = tenant(srv, key, "GET", f"{BASE}/{ep['id']}/deliveries").json()["data"]
    assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == \
        [("succeeded", 1, 200)]

    # rotated with a grace: the next event is signed by both secrets
    new = tenant(srv, key, "POST", f"{BASE}/{ep['id']}/rotate-secret",
                 json={"grace_seconds": 3600}).json()["secret"]
    send(srv, app, call_events(7300000002, 1)[0])
    headers, body = receiver.wait(2)[1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert len(signatures_by(new, headers, body)) == 1
    assert len(signatures_by(ep["secret"], headers, body)) == 1
    # without a grace: the new one alone
    newest = tenant(srv, key, "POST", f"{BASE}/{ep['id']}/rotate-secret",
                    json={"grace_seconds": 0}).json()["secret"]
    send(srv, app, call_events(7300000003, 1)[0])
    headers, body = receiver.wait(3)[2]
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert signatures_by(newest, headers, body) and not signatures_by(new, headers, body)


def test_disabled_endpoint_gets_nothing_then_replay_and_retry_resend(make_server, receiver):
    srv = start(make_server)
    app = new_app(srv)
    key = app["api_key"]
    ep = create(srv, key, url=receiver.url)
    path = f"{BASE}/{ep['id']}"
    assert tenant(srv, key, "PATCH", path, json={"enabled": False}).status_code == 200
    send(srv, app, call_events(7400000001, 1)[0])
    seq = wait_events(srv, key, 1)[0]["seq"]
    time.sleep(1.5)
    assert receiver.got == [] and tenant(srv, key, "GET", path + "/deliveries").json()["data"] == []

    assert tenant(srv, key, "PATCH", path, json={"enabled": True}).status_code == 200
    r = tenant(srv, key, "POST", path + "/replay", json={"since_seq": seq - 1})
    assert r.status_code == 202 and r.json() == {"replayed": 1}
    headers, body = receiver.wait(1)[0]
    assert json.loads(body)["seq"] == seq
    msg_id = headers["webhook-id"]

    deadline = time.time() + 10
    while True:  # the attempt is recorded after the answer
        d = tenant(srv, key, "GET", path + "/deliveries").json()["data"][0]
        if d["status"] == "succeeded" or time.time() > deadline:
            break
        time.sleep(0.05)
    assert d["status"] == "succeeded"
    r = tenant(srv, key, "POST", f"{path}/deliveries/{d['id']}/retry")
    assert r.status_code == 202 and r.json()["id"] == d["id"]
    headers, body = receiver.wait(2)[1]
    assert headers["webhook-id"] == msg_id  # the same event to the same endpoint: the same id
    assert json.loads(body)["seq"] == seq
