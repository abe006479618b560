"""Tenants as a client sees them: the admin API (/internal), API keys, user mappings.

Written against docs/API.md (Common, Admin, user mappings).
Every deliberate authentication failure counts against the per-address brake
(20 a minute), so each test keeps well under that per server, except
test_failed_auth_is_rate_limited, which crosses it on a server of its own.
"""
import calendar
import json
import re
import time
import uuid

import pytest

ADMIN_SECRET = "bb-admin-secret-0123456789-ABCDEFGHIJKLMNOP"
BASE_URL = "https://cti.example.com"
BIG_ID = 9007199254740993  # 2**53 + 1: not representable as a double

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KEY_RE = re.compile(r"^cti_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
ADMIN = {"Authorization": "Bearer " + ADMIN_SECRET}
JSON_CT = {"Content-Type": "application/json"}


# ---- helpers ---------------------------------------------------------------------------------

def start(make_server, database=None, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET, "PUBLIC_BASE_URL": BASE_URL}
    e.update(env)
    return make_server(env=e, database=database)


def admin(srv, method, path, headers=None, **kw):
    h = dict(ADMIN)
    h.update(headers or {})
    return srv.request(method, path, headers=h, **kw)


def tenant(srv, key, method="GET", path="/api/user-mappings", header="X-API-Key", **kw):
    if header == "Authorization":
        h = {"Authorization": "Bearer " + key}
    else:
        h = {header: key}
    h.update(kw.pop("headers", {}))
    return srv.request(method, path, headers=h, **kw)


def key_works(srv, key, header="X-API-Key"):
    r = tenant(srv, key, header=header)
    if r.status_code == 200:
        return True
    assert_error(r, 401, "unauthorized")
    return False


def assert_error(resp, status, code, mentions=None):
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("error") == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    if mentions:
        assert mentions in body["message"], body
    return body


def create_app(srv, name="acme", **extra):
    r = admin(srv, "POST", "/internal/apps", json={"name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def new_key(srv, app_id, grace=None):
    body = None if grace is None else {"grace_seconds": grace}
    r = admin(srv, "POST", f"/internal/apps/{app_id}/api-key", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert KEY_RE.match(out["api_key"]), out
    assert out["key_id"] == KEY_RE.match(out["api_key"]).group(1)
    return out


def list_all_apps(srv):
    r = admin(srv, "GET", "/internal/apps?limit=500")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def get_app(srv, app_id):
    r = admin(srv, "GET", f"/internal/apps/{app_id}")
    assert r.status_code == 200, r.text
    return r.json()


def key_status(srv, app_id):
    r = admin(srv, "GET", f"/internal/apps/{app_id}/api-key/status")
    assert r.status_code == 200, r.text
    return {k["key_id"]: k for k in r.json()["keys"]}


def admin_mappings(srv, app_id):
    r = admin(srv, "GET", f"/internal/apps/{app_id}/users/mappings?limit=500")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    return {m["dialpad_user_id"]: m["crm_user_id"] for m in body["data"]}


def tenant_mappings(srv, key):
    r = tenant(srv, key, path="/api/user-mappings?limit=500")
    assert r.status_code == 200, r.text
    return {m["dialpad_user_id"]: m["crm_user_id"] for m in r.json()["data"]}


def audit(srv, app_id):
    r = admin(srv, "GET", f"/internal/apps/{app_id}/audit?limit=500")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def all_strings(value):
    """Every string (keys and values) anywhere in a decoded JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from all_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_strings(v)


def epoch(iso):
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + int(iso[20:23]) / 1000


def secret_part(api_key):
    return KEY_RE.match(api_key).group(2)


def assert_no_secrets(doc, secrets):
    text = json.dumps(doc)
    for s in secrets:
        assert s not in text, f"secret {s[:12]}... leaked in {text[:400]}"
        for piece in all_strings(doc):
            assert s not in piece


# ---- 1. admin endpoints: success paths and shapes ---------------------------------------------

def test_create_app_shape_and_key_works(make_server):
    srv = start(make_server)
    r = admin(srv, "POST", "/internal/apps", json={"name": "Acme Corp"})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    app = r.json()
    for field in ("app_id", "name", "api_key", "key_id", "webhook_url", "webhook_secret",
                  "created_at"):
        assert field in app, field
    assert UUID_RE.match(app["app_id"]), app["app_id"]
    assert app["name"] == "Acme Corp"
    m = KEY_RE.match(app["api_key"])
    assert m, app["api_key"]
    assert app["key_id"] == m.group(1)
    assert app["webhook_url"] == f"{BASE_URL}/webhooks/dialpad/{app['app_id']}"
    assert isinstance(app["webhook_secret"], str) and len(app["webhook_secret"]) >= 32
    assert app["webhook_secret"] not in app["api_key"]
    assert ISO_MS.match(app["created_at"]), app["created_at"]

    # a second app: different id, key and secret
    other = create_app(srv, "Other")
    assert other["app_id"] != app["app_id"]
    assert other["api_key"] != app["api_key"]
    assert other["webhook_secret"] != app["webhook_secret"]

    # the key works at once, and sees an empty mapping list
    r = tenant(srv, app["api_key"])
    assert r.status_code == 200, r.text
    assert r.json() == {"data": [], "next_cursor": None}


def test_public_base_url_trailing_slash_is_not_doubled(make_server):
    srv = start(make_server, PUBLIC_BASE_URL=BASE_URL + "/")
    app = create_app(srv)
    assert app["webhook_url"] == f"{BASE_URL}/webhooks/dialpad/{app['app_id']}"


def test_get_and_list_apps_show_secret_never_key(make_server):
    srv = start(make_server)
    a = create_app(srv, "alpha")
    b = create_app(srv, "beta")
    keys = [a["api_key"], b["api_key"], secret_part(a["api_key"]), secret_part(b["api_key"])]

    got = get_app(srv, a["app_id"])
    assert got["app_id"] == a["app_id"]
    assert got["name"] == "alpha"
    assert got["active"] is True
    assert got["webhook_secret"] == a["webhook_secret"]
    assert got["webhook_url"] == a["webhook_url"]
    assert got["created_at"] == a["created_at"]
    assert "api_key" not in got
    assert_no_secrets(got, keys)

    r = admin(srv, "GET", "/internal/apps")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"data", "next_cursor"}
    assert body["next_cursor"] is None
    by_id = {x["app_id"]: x for x in body["data"]}
    assert set(by_id) == {a["app_id"], b["app_id"]}
    assert by_id[b["app_id"]]["name"] == "beta"
    for item in body["data"]:
        assert "api_key" not in item
    assert_no_secrets(body, keys)


def test_list_apps_pagination(make_server):
    srv = start(make_server)
    made = [create_app(srv, f"app-{i}")["app_id"] for i in range(5)]
    seen, pages, cursor = [], 0, None
    while True:
        path = "/internal/apps?limit=2" + (f"&cursor={cursor}" if cursor else "")
        r = admin(srv, "GET", path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= 2
        seen += [x["app_id"] for x in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert pages < 10, "pagination does not end"
    assert len(seen) == len(set(seen)), f"an app was repeated: {seen}"
    assert set(seen) == set(made), "an app was skipped"
    assert pages == 3

    assert_error(admin(srv, "GET", "/internal/apps?limit=0"), 400, "invalid_request", "limit")
    assert_error(admin(srv, "GET", "/internal/apps?limit=501"), 400, "invalid_request", "limit")
    assert_error(admin(srv, "GET", "/internal/apps?limit=x"), 400, "invalid_request", "limit")
    assert_error(admin(srv, "GET", "/internal/apps?cursor=%21%21garbage"), 400,
                 "invalid_request", "cursor")


def test_patch_app(make_server):
    srv = start(make_server)
    app = create_app(srv, "before")
    aid = app["app_id"]
    assert get_app(srv, aid)["allow_unsigned"] is False  # off by default

    r = admin(srv, "PATCH", f"/internal/apps/{aid}", json={"name": "after"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "after"
    assert "api_key" not in r.json()
    assert get_app(srv, aid)["name"] == "after"

    r = admin(srv, "PATCH", f"/internal/apps/{aid}", json={"allow_unsigned": True})
    assert r.status_code == 200, r.text
    got = get_app(srv, aid)
    assert got["allow_unsigned"] is True
    assert got["name"] == "after"  # untouched fields stay
    assert got["active"] is True

    r = admin(srv, "PATCH", f"/internal/apps/{aid}", json={"active": False})
    assert r.status_code == 200
    assert get_app(srv, aid)["active"] is False
    r = admin(srv, "PATCH", f"/internal/apps/{aid}",
              json={"active": True, "allow_unsigned": False, "name": "final"})
    assert r.status_code == 200
    got = get_app(srv, aid)
    assert (got["active"], got["allow_unsigned"], got["name"]) == (True, False, "final")
    assert got["webhook_secret"] == app["webhook_secret"]


def test_delete_deactivates_and_key_stops_at_once(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid, key = app["app_id"], app["api_key"]
    assert key_works(srv, key)  # warm the cache

    r = admin(srv, "DELETE", f"/internal/apps/{aid}")
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False
    assert not key_works(srv, key), "a deactivated app's cached key still works"

    # still readable by the admin, listed as inactive
    got = get_app(srv, aid)
    assert got["active"] is False
    assert [x["active"] for x in list_all_apps(srv) if x["app_id"] == aid] == [False]
    assert not key_works(srv, key)  # still refused, not just once


def test_reactivation_restores_key_refused_while_inactive(make_server):
    """A client retrying through a deactivation works again as soon as the app is active."""
    srv = start(make_server)
    app = create_app(srv)
    aid, key = app["app_id"], app["api_key"]
    assert key_works(srv, key)
    assert admin(srv, "DELETE", f"/internal/apps/{aid}").status_code == 200
    assert not key_works(srv, key)
    r = admin(srv, "PATCH", f"/internal/apps/{aid}", json={"active": True})
    assert r.status_code == 200, r.text
    assert get_app(srv, aid)["active"] is True
    assert key_works(srv, key), "reactivated app's existing key is still refused"


def test_patch_active_false_stops_cached_key_at_once(make_server):
    srv = start(make_server)
    app = create_app(srv)
    other = create_app(srv, "bystander")
    assert key_works(srv, app["api_key"])
    assert key_works(srv, other["api_key"])
    r = admin(srv, "PATCH", f"/internal/apps/{app['app_id']}", json={"active": False})
    assert r.status_code == 200
    assert not key_works(srv, app["api_key"])
    assert key_works(srv, other["api_key"])  # only that app


def test_reactivation_restores_key_not_probed_while_inactive(make_server):
    srv = start(make_server)
    app = create_app(srv)
    assert key_works(srv, app["api_key"])
    assert admin(srv, "DELETE", f"/internal/apps/{app['app_id']}").status_code == 200
    assert admin(srv, "PATCH", f"/internal/apps/{app['app_id']}",
                 json={"active": True}).status_code == 200
    assert key_works(srv, app["api_key"])


def test_new_key_with_grace_keeps_old_key(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid, k1 = app["app_id"], app["api_key"]
    assert key_works(srv, k1)

    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key", json={"grace_seconds": 30})
    assert r.status_code == 201, r.text
    out = r.json()
    assert KEY_RE.match(out["api_key"]) and out["api_key"] != k1
    assert out["key_id"] == KEY_RE.match(out["api_key"]).group(1)
    k2 = out["api_key"]
    assert key_works(srv, k2)
    assert key_works(srv, k1), "old key stopped during its grace"  # verified afresh

    st = key_status(srv, aid)
    old = st[app["key_id"]]
    assert old["revoked_at"] is None
    assert ISO_MS.match(old["expires_at"]), old
    assert st[out["key_id"]]["expires_at"] is None
    # grace ends ~30 s from now
    assert 20 < epoch(old["expires_at"]) - time.time() < 40, old["expires_at"]

    # the default grace is a day: the key made above is still in use after another rotation
    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key")
    assert r.status_code == 201, r.text
    assert key_works(srv, k2)
    st = key_status(srv, aid)
    assert 86400 - 60 < epoch(st[out["key_id"]]["expires_at"]) - time.time() < 86400 + 60
    # ... and a rotation never extends a key already ending sooner
    assert st[app["key_id"]]["expires_at"] == old["expires_at"]


def test_grace_ends_even_for_cached_key(make_server):
    srv = start(make_server)
    app = create_app(srv)
    new_key(srv, app["app_id"], grace=2)
    assert key_works(srv, app["api_key"])  # cached now, in grace
    time.sleep(2.2)
    assert not key_works(srv, app["api_key"]), "key still works after its grace ended"


def test_new_key_with_zero_grace_stops_old_keys_at_once(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid, k1 = app["app_id"], app["api_key"]
    n2 = new_key(srv, aid, grace=30)
    k2, kid2 = n2["api_key"], n2["key_id"]
    assert key_works(srv, k1) and key_works(srv, k2)  # both cached
    k3 = new_key(srv, aid, grace=0)["api_key"]
    assert not key_works(srv, k2), "cached old key survived rotation with grace 0"
    assert key_works(srv, k3)
    ended = key_status(srv, aid)
    assert epoch(ended[app["key_id"]]["expires_at"]) <= time.time() + 1
    # a later rotation with grace does not bring them back (k1 is asked afresh: it was
    # never refused, so nothing negative is cached for it)
    k4 = new_key(srv, aid, grace=30)["api_key"]
    assert key_works(srv, k3) and key_works(srv, k4)
    assert not key_works(srv, k1), "a key ended by a grace-0 rotation came back"
    assert not key_works(srv, k2)
    st = key_status(srv, aid)
    for kid in (app["key_id"], kid2):
        assert st[kid]["expires_at"] == ended[kid]["expires_at"], (kid, ended[kid], st[kid])


def test_revoke_one_key_then_all(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid, k1 = app["app_id"], app["api_key"]
    n2 = new_key(srv, aid, grace=30)
    k2 = n2["api_key"]
    assert key_works(srv, k1) and key_works(srv, k2)

    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke", json={"key_id": app["key_id"]})
    assert r.status_code == 200, r.text
    assert not key_works(srv, k1), "revoked cached key still works"
    assert key_works(srv, k2)
    st = key_status(srv, aid)
    assert ISO_MS.match(st[app["key_id"]]["revoked_at"] or "")
    assert st[n2["key_id"]]["revoked_at"] is None

    assert_error(admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke",
                       json={"key_id": "0123456789abcdef"}), 404, "not_found")
    assert key_works(srv, k2)

    k3 = new_key(srv, aid, grace=30)["api_key"]
    assert key_works(srv, k3) and key_works(srv, k2)
    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke")  # no body: all
    assert r.status_code == 200, r.text
    for k in (k1, k2, k3):
        assert not key_works(srv, k)
    st = key_status(srv, aid)
    assert len(st) == 3
    assert all(ISO_MS.match(k["revoked_at"] or "") for k in st.values()), st


def test_revoke_another_apps_key_is_404(make_server):
    srv = start(make_server)
    a, b = create_app(srv, "a"), create_app(srv, "b")
    assert_error(admin(srv, "POST", f"/internal/apps/{a['app_id']}/api-key/revoke",
                       json={"key_id": b["key_id"]}), 404, "not_found")
    assert key_works(srv, b["api_key"])
    assert key_status(srv, b["app_id"])[b["key_id"]]["revoked_at"] is None


def test_key_status_shape_never_shows_keys(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    n2 = new_key(srv, aid, grace=30)
    assert key_works(srv, app["api_key"])
    r = admin(srv, "GET", f"/internal/apps/{aid}/api-key/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(k["key_id"] for k in body["keys"]) == {app["key_id"], n2["key_id"]}
    for k in body["keys"]:
        for field in ("key_id", "hint", "created_at", "last_used_at", "expires_at",
                      "revoked_at"):
            assert field in k, (field, k)
        assert "api_key" not in k and "hash" not in k and "key" not in k
        assert isinstance(k["hint"], str) and 0 < len(k["hint"]) < 43
        assert ISO_MS.match(k["created_at"])
    st = {k["key_id"]: k for k in body["keys"]}
    assert ISO_MS.match(st[app["key_id"]]["last_used_at"] or ""), "use not recorded"
    assert st[n2["key_id"]]["last_used_at"] is None  # never used
    assert_no_secrets(body, [app["api_key"], n2["api_key"], secret_part(app["api_key"]),
                             secret_part(n2["api_key"])])
    assert "$2" not in json.dumps(body)  # no bcrypt hash


def test_webhook_secret_rotate(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    r = admin(srv, "POST", f"/internal/apps/{aid}/webhook-secret/rotate", json={"grace_seconds": 60})
    assert r.status_code in (200, 201), r.text
    new = r.json()["webhook_secret"]
    assert isinstance(new, str) and len(new) >= 32
    assert new != app["webhook_secret"]
    assert get_app(srv, aid)["webhook_secret"] == new
    # no body: default grace; again a new one
    r = admin(srv, "POST", f"/internal/apps/{aid}/webhook-secret/rotate")
    assert r.status_code in (200, 201), r.text
    newer = r.json()["webhook_secret"]
    assert newer not in (new, app["webhook_secret"])
    assert get_app(srv, aid)["webhook_secret"] == newer
    # keys untouched
    assert key_works(srv, app["api_key"])


def test_audit_newest_first_without_secrets(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    other = create_app(srv, "other")
    n2 = new_key(srv, aid, grace=30)
    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke", json={"key_id": app["key_id"]},
              headers={"X-Request-Id": "audit-revoke-1"})
    assert r.status_code == 200
    r = admin(srv, "POST", f"/internal/apps/{aid}/webhook-secret/rotate")
    assert r.status_code in (200, 201)
    secret2 = r.json()["webhook_secret"]
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/map",
              json={"dialpad_user_id": "555", "crm_user_id": "crm-555"},
              headers={"X-Request-Id": "audit-map-1"})
    assert r.status_code == 201, r.text
    r = tenant(srv, n2["api_key"], "PUT", "/api/user-mappings/556", json={"crm_user_id": "c-556"})
    assert r.status_code in (200, 201), r.text

    r = admin(srv, "GET", f"/internal/apps/{aid}/audit")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"data", "next_cursor"}
    entries = body["data"]
    actions = [e["action"] for e in entries]
    want = ["mapping.set", "mapping.set", "webhook_secret.rotated", "key.revoked",
            "key.rotated", "app.created"]
    assert actions == want, actions
    for e in entries:
        assert isinstance(e["actor"], str) and e["actor"], e
        assert isinstance(e["request_id"], str) and e["request_id"], e
        assert ISO_MS.match(e["at"]), e
    ats = [e["at"] for e in entries]
    assert ats == sorted(ats, reverse=True), "not newest first"
    assert entries[3]["request_id"] == "audit-revoke-1"
    assert entries[1]["request_id"] == "audit-map-1"
    assert entries[0]["actor"] != entries[1]["actor"], "tenant and admin actors look the same"
    # nothing of another app
    assert other["app_id"] not in json.dumps(body)

    secrets = [app["api_key"], n2["api_key"], secret_part(app["api_key"]),
               secret_part(n2["api_key"]), app["webhook_secret"], secret2, ADMIN_SECRET]
    assert_no_secrets(body, secrets)


# ---- 2. failure paths ------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["missing", "basic", "wrong"])
def test_admin_auth_refused_and_nothing_changes(make_server, how):
    srv = start(make_server)
    app = create_app(srv, "victim")
    aid, key = app["app_id"], app["api_key"]
    assert admin(srv, "POST", f"/internal/apps/{aid}/users/map",
                 json={"dialpad_user_id": 7, "crm_user_id": "seven"}).status_code == 201
    audit_before = audit(srv, aid)
    headers = {"missing": {}, "basic": {"Authorization": "Basic " + ADMIN_SECRET},
               "wrong": {"Authorization": "Bearer " + ADMIN_SECRET[:-1] + "X"}}[how]
    status, code = (403, "forbidden") if how == "wrong" else (401, "unauthorized")

    calls = [
        ("POST", "/internal/apps", {"name": "intruder"}),
        ("GET", "/internal/apps", None),
        ("GET", f"/internal/apps/{aid}", None),
        ("PATCH", f"/internal/apps/{aid}", {"name": "hacked", "active": False}),
        ("DELETE", f"/internal/apps/{aid}", None),
        ("POST", f"/internal/apps/{aid}/api-key", {"grace_seconds": 0}),
        ("POST", f"/internal/apps/{aid}/api-key/revoke", None),
        ("GET", f"/internal/apps/{aid}/api-key/status", None),
        ("POST", f"/internal/apps/{aid}/webhook-secret/rotate", {"grace_seconds": 0}),
        ("GET", f"/internal/apps/{aid}/audit", None),
        ("POST", f"/internal/apps/{aid}/users/map", {"dialpad_user_id": 8, "crm_user_id": "x"}),
        ("POST", f"/internal/apps/{aid}/users/batch-map",
         {"mappings": [{"dialpad_user_id": 9, "crm_user_id": "y"}]}),
        ("GET", f"/internal/apps/{aid}/users/mappings", None),
        ("DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/7", None),
    ]
    assert len(calls) < 18  # stay under the brake
    for method, path, body in calls:
        r = srv.request(method, path, headers=headers, json=body)
        assert_error(r, status, code)
        assert ADMIN_SECRET not in r.text
        assert key not in r.text and app["webhook_secret"] not in r.text

    # nothing changed
    apps = list_all_apps(srv)
    assert [a["app_id"] for a in apps] == [aid]
    got = get_app(srv, aid)
    assert got["name"] == "victim" and got["active"] is True
    assert got["webhook_secret"] == app["webhook_secret"]
    st = key_status(srv, aid)
    assert list(st) == [app["key_id"]]
    assert st[app["key_id"]]["revoked_at"] is None and st[app["key_id"]]["expires_at"] is None
    assert key_works(srv, key)
    assert admin_mappings(srv, aid) == {"7": "seven"}
    assert [e["action"] for e in audit(srv, aid)] == [e["action"] for e in audit_before]


def test_unknown_or_malformed_app_id_is_404(make_server):
    srv = start(make_server)
    real = create_app(srv)
    good_map = {"dialpad_user_id": 1, "crm_user_id": "x"}
    for aid in (str(uuid.uuid4()), "not-a-uuid", real["app_id"][:-1] + "z", "1234"):
        calls = [
            ("GET", f"/internal/apps/{aid}", None),
            ("PATCH", f"/internal/apps/{aid}", {"name": "x"}),
            ("DELETE", f"/internal/apps/{aid}", None),
            ("POST", f"/internal/apps/{aid}/api-key", None),
            ("POST", f"/internal/apps/{aid}/api-key", {"grace_seconds": 10}),
            ("POST", f"/internal/apps/{aid}/api-key/revoke", None),
            ("POST", f"/internal/apps/{aid}/api-key/revoke", {"key_id": real["key_id"]}),
            ("GET", f"/internal/apps/{aid}/api-key/status", None),
            ("POST", f"/internal/apps/{aid}/webhook-secret/rotate", None),
            ("GET", f"/internal/apps/{aid}/audit", None),
            ("POST", f"/internal/apps/{aid}/users/map", good_map),
            ("POST", f"/internal/apps/{aid}/users/batch-map", {"mappings": [good_map]}),
            ("GET", f"/internal/apps/{aid}/users/mappings", None),
            ("DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/1", None),
        ]
        for method, path, body in calls:
            assert_error(admin(srv, method, path, json=body), 404, "not_found")
    # the real app was not touched by any of that
    assert key_works(srv, real["api_key"])
    assert key_status(srv, real["app_id"])[real["key_id"]]["revoked_at"] is None
    assert [a["app_id"] for a in list_all_apps(srv)] == [real["app_id"]]


def test_malformed_bodies_are_400_naming_the_field(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]

    def bad(method, path, mentions=None, **kw):
        return assert_error(admin(srv, method, path, **kw), 400, "invalid_request", mentions)

    # POST /internal/apps
    bad("POST", "/internal/apps", "name", json={})
    bad("POST", "/internal/apps", "name", json={"name": 5})
    bad("POST", "/internal/apps", "name", json={"name": None})
    bad("POST", "/internal/apps", "name", json={"name": ""})
    bad("POST", "/internal/apps", "name", json={"name": "n" * 201})
    bad("POST", "/internal/apps", "bogus", json={"name": "ok", "bogus": 1})
    bad("POST", "/internal/apps", data=b"{not json", headers=JSON_CT)
    bad("POST", "/internal/apps", data=b'[{"name": "x"}]', headers=JSON_CT)
    bad("POST", "/internal/apps", data=b'"name"', headers=JSON_CT)
    bad("POST", "/internal/apps")  # no body at all
    assert [a["app_id"] for a in list_all_apps(srv)] == [aid], "a bad request created an app"
    # the limit is in characters, and 200 is fine
    assert admin(srv, "POST", "/internal/apps", json={"name": "n" * 200}).status_code == 201
    r = admin(srv, "POST", "/internal/apps", json={"name": "é" * 200})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "é" * 200
    assert get_app(srv, r.json()["app_id"])["name"] == "é" * 200

    # PATCH
    bad("PATCH", f"/internal/apps/{aid}", "active", json={"active": "yes"})
    bad("PATCH", f"/internal/apps/{aid}", "active", json={"active": 1})
    bad("PATCH", f"/internal/apps/{aid}", "allow_unsigned", json={"allow_unsigned": "true"})
    bad("PATCH", f"/internal/apps/{aid}", "name", json={"name": ""})
    bad("PATCH", f"/internal/apps/{aid}", "name", json={"name": 3})
    bad("PATCH", f"/internal/apps/{aid}", "webhook_secret", json={"webhook_secret": "mine"})
    bad("PATCH", f"/internal/apps/{aid}", data=b"[]", headers=JSON_CT)
    got = get_app(srv, aid)
    assert got["active"] is True and got["name"] == "acme" and got["allow_unsigned"] is False

    # api-key / webhook-secret grace
    for path in (f"/internal/apps/{aid}/api-key", f"/internal/apps/{aid}/webhook-secret/rotate"):
        bad("POST", path, "grace_seconds", json={"grace_seconds": -1})
        bad("POST", path, "grace_seconds", json={"grace_seconds": "30"})
        bad("POST", path, "grace_seconds", json={"grace_seconds": 2592001})
        bad("POST", path, "grace_seconds", json={"grace_seconds": 1.5})
        bad("POST", path, "nope", json={"nope": 1})
        bad("POST", path, data=b"{oops", headers=JSON_CT)
    assert list(key_status(srv, aid)) == [app["key_id"]], "a bad request made a key"
    assert get_app(srv, aid)["webhook_secret"] == app["webhook_secret"]
    assert key_status(srv, aid)[app["key_id"]]["expires_at"] is None
    # the maximum is accepted
    assert admin(srv, "POST", f"/internal/apps/{aid}/api-key",
                 json={"grace_seconds": 2592000}).status_code == 201

    # revoke
    bad("POST", f"/internal/apps/{aid}/api-key/revoke", "key_id", json={"key_id": 12})
    bad("POST", f"/internal/apps/{aid}/api-key/revoke", "extra", json={"extra": True})
    assert_error(admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke",
                       json={"key_id": "ffffffffffffffff"}), 404, "not_found")
    assert all(k["revoked_at"] is None for k in key_status(srv, aid).values())
    assert key_works(srv, app["api_key"])

    # users/map
    mp = f"/internal/apps/{aid}/users/map"
    bad("POST", mp, "dialpad_user_id", json={"crm_user_id": "x"})
    bad("POST", mp, "crm_user_id", json={"dialpad_user_id": 5})
    bad("POST", mp, "dialpad_user_id", json={"dialpad_user_id": "abc", "crm_user_id": "x"})
    bad("POST", mp, "dialpad_user_id", json={"dialpad_user_id": 0, "crm_user_id": "x"})
    bad("POST", mp, "dialpad_user_id", json={"dialpad_user_id": -5, "crm_user_id": "x"})
    bad("POST", mp, "dialpad_user_id", json={"dialpad_user_id": 1.5, "crm_user_id": "x"})
    bad("POST", mp, "dialpad_user_id",
        json={"dialpad_user_id": "99999999999999999999", "crm_user_id": "x"})
    bad("POST", mp, "crm_user_id", json={"dialpad_user_id": 5, "crm_user_id": 5})
    bad("POST", mp, "crm_user_id", json={"dialpad_user_id": 5, "crm_user_id": ""})
    bad("POST", mp, "crm_user_id", json={"dialpad_user_id": 5, "crm_user_id": "c" * 256})
    bad("POST", mp, "other", json={"dialpad_user_id": 5, "crm_user_id": "x", "other": 1})
    bad("POST", mp, data=b"nope", headers=JSON_CT)
    bad("DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/abc", "dialpad_user_id")
    bad("POST", f"/internal/apps/{aid}/users/batch-map", "mappings", json={"mappings": []})
    bad("POST", f"/internal/apps/{aid}/users/batch-map", "mappings", json={"mappings": {}})
    bad("POST", f"/internal/apps/{aid}/users/batch-map", "mappings", json={})
    assert admin_mappings(srv, aid) == {}


def test_error_bodies_are_json(make_server):
    srv = start(make_server)
    for r, status in ((srv.get("/api/user-mappings"), 401),
                      (admin(srv, "GET", f"/internal/apps/{uuid.uuid4()}"), 404),
                      (admin(srv, "POST", "/internal/apps", json={}), 400)):
        assert r.status_code == status
        assert r.headers["Content-Type"].startswith("application/json")
        body = r.json()
        assert set(body) >= {"error", "message"}
        assert re.match(r"^[a-z]+(_[a-z]+)*$", body["error"])


# ---- 3. keys ---------------------------------------------------------------------------------

def test_tenant_key_headers_and_refusals(make_server):
    srv = start(make_server)
    app = create_app(srv)
    other = create_app(srv, "other")
    key = app["api_key"]
    assert admin(srv, "POST", f"/internal/apps/{app['app_id']}/users/map",
                 json={"dialpad_user_id": 42, "crm_user_id": "forty-two"}).status_code == 201
    for header in ("X-API-Key", "x-app-api-key", "Authorization"):
        r = tenant(srv, key, header=header)
        assert r.status_code == 200, (header, r.text)
        assert [m["crm_user_id"] for m in r.json()["data"]] == ["forty-two"], header
    r = tenant(srv, other["api_key"], header="Authorization")
    assert r.status_code == 200 and r.json()["data"] == []

    assert_error(srv.get("/api/user-mappings"), 401, "unauthorized")
    assert_error(srv.get("/api/user-mappings", headers={"X-API-Key": ""}), 401, "unauthorized")
    kid, sec = KEY_RE.match(key).groups()
    wrong_secret = sec[:-1] + ("A" if sec[-1] != "A" else "B")
    for bad in ("not-a-key", "cti_zzzz", key + "x", key[:-1],
                f"cti_{kid}_{wrong_secret}",                 # right key id, wrong secret
                f"cti_{'0' * 16}_{sec}",                     # unknown key id
                f"cti_{other['key_id']}_{sec}",              # another app's id, this secret
                ADMIN_SECRET):
        assert_error(tenant(srv, bad), 401, "unauthorized")
    assert_error(tenant(srv, "bogus", header="Authorization"), 401, "unauthorized")
    # still fine afterwards
    assert key_works(srv, key)


def test_failed_auth_is_rate_limited(make_server):
    srv = start(make_server)
    app = create_app(srv)
    key = app["api_key"]
    assert key_works(srv, key)
    kid = app["key_id"]
    for i in range(20):
        bad = f"cti_{kid}_{'A' * 40}{i:03d}"
        r = tenant(srv, bad)
        assert_error(r, 401, "unauthorized")
    r = tenant(srv, "cti_" + "1" * 16 + "_" + "B" * 43)
    assert_error(r, 429, "rate_limited")
    assert "Retry-After" in r.headers
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    # the valid key (verified before) is not: only wrong or unverified ones are refused
    assert key_works(srv, key)


def test_admin_failures_count_toward_the_limit(make_server):
    srv = start(make_server)
    app = create_app(srv)
    for _ in range(20):
        assert_error(srv.get("/internal/apps", headers={"Authorization": "Bearer nope"}),
                     403, "forbidden")
    r = srv.get("/internal/apps", headers={"Authorization": "Bearer nope"})
    assert_error(r, 429, "rate_limited")
    assert r.headers.get("Retry-After")
    r = tenant(srv, "cti_" + "1" * 16 + "_" + "B" * 43)
    assert_error(r, 429, "rate_limited")
    # the right token, and a key, still work from this address
    assert admin(srv, "GET", "/internal/apps").status_code == 200
    assert key_works(srv, app["api_key"])


def test_secrets_never_logged(make_server):
    srv = start(make_server, LOG_LEVEL="debug")
    app = create_app(srv)
    aid, key = app["app_id"], app["api_key"]
    for header in ("X-API-Key", "x-app-api-key", "Authorization"):
        assert key_works(srv, key, header=header)
    srv.get(f"/api/user-mappings?api_key={key}")
    srv.get(f"/api/user-mappings?x=1&api_key={key}&y=2")
    srv.get(f"/ws?api_key={key}")
    srv.get(f"/no/such/route?api_key={key}")
    n2 = new_key(srv, aid, grace=30)
    r = admin(srv, "POST", f"/internal/apps/{aid}/webhook-secret/rotate")
    secret2 = r.json()["webhook_secret"]
    assert tenant(srv, n2["api_key"], "PUT", "/api/user-mappings/77",
                  json={"crm_user_id": "c77"}).status_code in (200, 201)
    admin(srv, "POST", f"/internal/apps/{aid}/users/batch-map",
          json={"mappings": [{"dialpad_user_id": 78, "crm_user_id": "c78"}]})
    admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke", json={"key_id": n2["key_id"]})
    tenant(srv, n2["api_key"])  # refused now
    srv.get("/internal/apps", headers={"Authorization": "Bearer " + ADMIN_SECRET + "x"})
    admin(srv, "GET", f"/internal/apps/{aid}")
    admin(srv, "GET", f"/internal/apps/{aid}/audit")
    admin(srv, "DELETE", f"/internal/apps/{aid}")
    tenant(srv, key)
    assert srv.stop() == 0
    log = srv.log_text()
    assert "request" in log  # the access log is there to check
    for s in (key, secret_part(key), n2["api_key"], secret_part(n2["api_key"]),
              app["webhook_secret"], secret2, ADMIN_SECRET):
        assert s not in log, f"secret {s[:10]}... found in the server log"


# ---- 4. user mappings --------------------------------------------------------------------------

def test_admin_user_mappings(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    mp = f"/internal/apps/{aid}/users/map"

    r = admin(srv, "POST", mp, json={"dialpad_user_id": 1001, "crm_user_id": "u-1"})
    assert r.status_code == 201, r.text
    assert r.json()["dialpad_user_id"] == "1001"
    assert r.json()["crm_user_id"] == "u-1"
    r = admin(srv, "POST", mp, json={"dialpad_user_id": "1001", "crm_user_id": "u-1b"})
    assert r.status_code == 200, r.text  # replaced
    assert r.json()["crm_user_id"] == "u-1b"
    r = admin(srv, "POST", mp, json={"dialpad_user_id": "1002", "crm_user_id": "u-2"})
    assert r.status_code == 201
    assert r.json()["dialpad_user_id"] == "1002"

    r = admin(srv, "GET", f"/internal/apps/{aid}/users/mappings")
    assert r.status_code == 200
    body = r.json()
    assert body["next_cursor"] is None
    for m in body["data"]:
        assert isinstance(m["dialpad_user_id"], str)
    assert {m["dialpad_user_id"]: m["crm_user_id"] for m in body["data"]} == \
        {"1001": "u-1b", "1002": "u-2"}

    # big ids round-trip exactly: as a string and as a raw JSON number
    r = admin(srv, "POST", mp, json={"dialpad_user_id": str(BIG_ID), "crm_user_id": "big-s"})
    assert r.status_code == 201, r.text
    assert r.json()["dialpad_user_id"] == str(BIG_ID)
    raw = b'{"dialpad_user_id": 9007199254740995, "crm_user_id": "big-n"}'
    r = admin(srv, "POST", mp, data=raw, headers=JSON_CT)
    assert r.status_code == 201, r.text
    assert r.json()["dialpad_user_id"] == "9007199254740995"
    maps = admin_mappings(srv, aid)
    assert maps[str(BIG_ID)] == "big-s" and maps["9007199254740995"] == "big-n"
    raw = b'{"dialpad_user_id": 9007199254740993, "crm_user_id": "big-n2"}'
    r = admin(srv, "POST", mp, data=raw, headers=JSON_CT)
    assert r.status_code == 200, r.text  # same id as the string one: replaced
    assert admin_mappings(srv, aid)[str(BIG_ID)] == "big-n2"

    # delete, then 404
    r = admin(srv, "DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/1002")
    assert r.status_code in (200, 204), r.text
    assert "1002" not in admin_mappings(srv, aid)
    assert_error(admin(srv, "DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/1002"),
                 404, "not_found")
    r = admin(srv, "DELETE", f"/internal/apps/{aid}/users/mappings/dialpad/{BIG_ID}")
    assert r.status_code in (200, 204)
    assert admin_mappings(srv, aid) == {"1001": "u-1b", "9007199254740995": "big-n"}


def test_crm_user_id_non_ascii_round_trips(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    long_id = "é" * 255  # 255 characters, 510 bytes: accepted by POST users/map
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/map",
              json={"dialpad_user_id": 1, "crm_user_id": long_id})
    assert r.status_code == 201, r.text
    assert r.json()["crm_user_id"] == long_id
    r = tenant(srv, app["api_key"], "PUT", "/api/user-mappings/2", json={"crm_user_id": long_id})
    assert r.status_code == 201, r.text
    assert r.json()["crm_user_id"] == long_id
    assert tenant(srv, app["api_key"], "GET", "/api/user-mappings/2").json()["crm_user_id"] == long_id
    assert admin_mappings(srv, aid) == {"1": long_id, "2": long_id}


def test_batch_map_limits_crm_user_id_in_characters(make_server):
    """The batch door accepts what the single door accepts (a limit in characters)."""
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    # (POST users/map takes up to 255 characters; see test_crm_user_id_non_ascii_round_trips)
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/batch-map",
              json={"mappings": [{"dialpad_user_id": 3, "crm_user_id": "ü" * 200}]})
    assert r.status_code == 200, r.text
    assert admin_mappings(srv, aid)["3"] == "ü" * 200


def test_batch_map_all_or_nothing(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    bp = f"/internal/apps/{aid}/users/batch-map"
    assert admin(srv, "POST", f"/internal/apps/{aid}/users/map",
                 json={"dialpad_user_id": 1, "crm_user_id": "one"}).status_code == 201

    bad_items = [
        {"dialpad_user_id": "abc", "crm_user_id": "x"},
        {"dialpad_user_id": 5},
        {"dialpad_user_id": 5, "crm_user_id": 7},
        {"dialpad_user_id": 5, "crm_user_id": "x", "extra": 1},
        "not an object",
        {"dialpad_user_id": -1, "crm_user_id": "x"},
    ]
    for bad in bad_items:
        batch = [{"dialpad_user_id": 1, "crm_user_id": "changed"},
                 {"dialpad_user_id": "2", "crm_user_id": "two"},
                 bad,
                 {"dialpad_user_id": 3, "crm_user_id": "three"}]
        r = admin(srv, "POST", bp, json={"mappings": batch})
        assert_error(r, 400, "invalid_request", "mappings[2]")
        assert admin_mappings(srv, aid) == {"1": "one"}, f"partial batch stored for {bad}"

    r = admin(srv, "POST", bp, json={"mappings": [
        {"dialpad_user_id": 1, "crm_user_id": "uno"},
        {"dialpad_user_id": "2", "crm_user_id": "two"},
        {"dialpad_user_id": str(BIG_ID), "crm_user_id": "big"},
    ]})
    assert r.status_code == 200, r.text
    counts = r.json()
    assert counts.get("mapped") == 3, counts
    assert counts.get("created") == 2 and counts.get("updated") == 1, counts
    r = admin(srv, "POST", bp, data=b'{"mappings": [{"dialpad_user_id": 9007199254740997, '
                                     b'"crm_user_id": "raw"}]}', headers=JSON_CT)
    assert r.status_code == 200, r.text
    assert admin_mappings(srv, aid) == {"1": "uno", "2": "two", str(BIG_ID): "big",
                                        "9007199254740997": "raw"}


def test_mapping_list_pagination(make_server):
    srv = start(make_server)
    app = create_app(srv)
    aid = app["app_id"]
    ids = [str(x) for x in (5, 40, 300, 2000, BIG_ID)]
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/batch-map",
              json={"mappings": [{"dialpad_user_id": i, "crm_user_id": "c" + i} for i in ids]})
    assert r.status_code == 200, r.text
    for path in (f"/internal/apps/{aid}/users/mappings", "/api/user-mappings"):
        seen, cursor = [], None
        for _ in range(10):
            p = path + "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            r = admin(srv, "GET", p) if path.startswith("/internal") else \
                tenant(srv, app["api_key"], path=p)
            assert r.status_code == 200, r.text
            seen += [m["dialpad_user_id"] for m in r.json()["data"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert cursor is None
        assert sorted(seen) == sorted(ids) and len(seen) == len(ids), (path, seen)


def test_tenant_user_mappings(make_server):
    srv = start(make_server)
    app = create_app(srv)
    key = app["api_key"]
    r = tenant(srv, key)
    assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None}

    r = tenant(srv, key, "PUT", "/api/user-mappings/123", json={"crm_user_id": "crm-123"})
    assert r.status_code == 201, r.text
    assert r.json()["dialpad_user_id"] == "123" and r.json()["crm_user_id"] == "crm-123"
    r = tenant(srv, key, "PUT", "/api/user-mappings/123", json={"crm_user_id": "crm-123b"})
    assert r.status_code == 200, r.text
    r = tenant(srv, key, "GET", "/api/user-mappings/123")
    assert r.status_code == 200
    assert r.json()["dialpad_user_id"] == "123" and r.json()["crm_user_id"] == "crm-123b"

    r = tenant(srv, key, "PUT", f"/api/user-mappings/{BIG_ID}", json={"crm_user_id": "big"})
    assert r.status_code == 201, r.text
    assert r.json()["dialpad_user_id"] == str(BIG_ID)
    assert tenant(srv, key, "GET", f"/api/user-mappings/{BIG_ID}").json()["crm_user_id"] == "big"
    assert tenant_mappings(srv, key) == {"123": "crm-123b", str(BIG_ID): "big"}
    # the admin sees the same
    assert admin_mappings(srv, app["app_id"]) == {"123": "crm-123b", str(BIG_ID): "big"}

    # errors
    assert_error(tenant(srv, key, "PUT", "/api/user-mappings/124", json={}), 400,
                 "invalid_request", "crm_user_id")
    assert_error(tenant(srv, key, "PUT", "/api/user-mappings/124", json={"crm_user_id": 5}),
                 400, "invalid_request", "crm_user_id")
    assert_error(tenant(srv, key, "PUT", "/api/user-mappings/124",
                        json={"crm_user_id": "x", "dialpad_user_id": 999}),
                 400, "invalid_request", "dialpad_user_id")
    assert_error(tenant(srv, key, "PUT", "/api/user-mappings/124", data=b"[1]", headers=JSON_CT),
                 400, "invalid_request")
    for bad in ("abc", "-1", "0", "12x", "1.5", "99999999999999999999"):
        for method, body in (("GET", None), ("PUT", {"crm_user_id": "x"}), ("DELETE", None)):
            assert_error(tenant(srv, key, method, f"/api/user-mappings/{bad}", json=body),
                         400, "invalid_request", "dialpad_user_id")
    assert_error(tenant(srv, key, "GET", "/api/user-mappings/124"), 404, "not_found")
    assert_error(tenant(srv, key, path="/api/user-mappings?limit=0"), 400, "invalid_request",
                 "limit")
    assert_error(tenant(srv, key, path="/api/user-mappings?limit=501"), 400, "invalid_request",
                 "limit")
    assert_error(tenant(srv, key, path="/api/user-mappings?cursor=zz%25zz"), 400,
                 "invalid_request", "cursor")
    assert tenant_mappings(srv, key) == {"123": "crm-123b", str(BIG_ID): "big"}

    r = tenant(srv, key, "DELETE", "/api/user-mappings/123")
    assert r.status_code in (200, 204), r.text
    assert_error(tenant(srv, key, "GET", "/api/user-mappings/123"), 404, "not_found")
    assert_error(tenant(srv, key, "DELETE", "/api/user-mappings/123"), 404, "not_found")
    assert tenant_mappings(srv, key) == {str(BIG_ID): "big"}

    # no key: nothing
    assert_error(srv.request("PUT", "/api/user-mappings/5", json={"crm_user_id": "x"}),
                 401, "unauthorized")
    assert_error(srv.request("DELETE", f"/api/user-mappings/{BIG_ID}"), 401, "unauthorized")
    assert tenant_mappings(srv, key) == {str(BIG_ID): "big"}


# ---- 5. tenant isolation ---------------------------------------------------------------------

def test_tenant_isolation(make_server):
    srv = start(make_server)
    a, b = create_app(srv, "A"), create_app(srv, "B")
    ka, kb = a["api_key"], b["api_key"]
    assert tenant(srv, kb, "PUT", "/api/user-mappings/111", json={"crm_user_id": "b-111"}).status_code == 201
    assert tenant(srv, kb, "PUT", "/api/user-mappings/222", json={"crm_user_id": "b-222"}).status_code == 201
    assert tenant(srv, ka, "PUT", "/api/user-mappings/333", json={"crm_user_id": "a-333"}).status_code == 201

    assert tenant_mappings(srv, ka) == {"333": "a-333"}
    assert tenant_mappings(srv, kb) == {"111": "b-111", "222": "b-222"}

    assert_error(tenant(srv, ka, "GET", "/api/user-mappings/111"), 404, "not_found")
    r = tenant(srv, ka, "PUT", "/api/user-mappings/111", json={"crm_user_id": "a-111"})
    assert r.status_code == 201, r.text  # A's own, new
    assert tenant(srv, kb, "GET", "/api/user-mappings/111").json()["crm_user_id"] == "b-111"
    assert tenant(srv, ka, "GET", "/api/user-mappings/111").json()["crm_user_id"] == "a-111"
    assert_error(tenant(srv, ka, "DELETE", "/api/user-mappings/222"), 404, "not_found")
    assert tenant(srv, kb, "GET", "/api/user-mappings/222").status_code == 200
    r = tenant(srv, ka, "DELETE", "/api/user-mappings/111")
    assert r.status_code in (200, 204)
    assert tenant(srv, kb, "GET", "/api/user-mappings/111").json()["crm_user_id"] == "b-111"

    assert tenant_mappings(srv, ka) == {"333": "a-333"}
    assert tenant_mappings(srv, kb) == {"111": "b-111", "222": "b-222"}
    assert admin_mappings(srv, b["app_id"]) == {"111": "b-111", "222": "b-222"}
    assert admin_mappings(srv, a["app_id"]) == {"333": "a-333"}

    # a tenant key is not an admin token, in any header
    for h in ({"Authorization": "Bearer " + ka}, {"X-API-Key": ka}):
        assert srv.get("/internal/apps", headers=h).status_code in (401, 403)
    assert_error(srv.get("/internal/apps", headers={"Authorization": "Bearer " + ka}),
                 403, "forbidden")
    bearer_a = {"Authorization": "Bearer " + ka}
    assert_error(srv.post(f"/internal/apps/{b['app_id']}/users/map", headers=bearer_a,
                          json={"dialpad_user_id": 111, "crm_user_id": "pwned"}), 403, "forbidden")
    assert_error(srv.request("DELETE", f"/internal/apps/{b['app_id']}/users/mappings/dialpad/222",
                             headers=bearer_a), 403, "forbidden")
    assert_error(srv.post(f"/internal/apps/{b['app_id']}/api-key/revoke", headers=bearer_a),
                 403, "forbidden")
    assert_error(srv.request("DELETE", f"/internal/apps/{b['app_id']}", headers=bearer_a),
                 403, "forbidden")
    assert_error(srv.post("/internal/apps", headers=bearer_a, json={"name": "evil"}),
                 403, "forbidden")
    assert admin_mappings(srv, b["app_id"]) == {"111": "b-111", "222": "b-222"}
    assert key_works(srv, kb)
    assert get_app(srv, b["app_id"])["active"] is True
    assert len(list_all_apps(srv)) == 2


# ---- 6. the whole key lifecycle on both backends ------------------------------------------------

def test_key_lifecycle_on_backend(make_server, backend):
    srv = start(make_server, database=backend)
    app = create_app(srv, "lifecycle")
    aid, k1 = app["app_id"], app["api_key"]
    assert UUID_RE.match(aid) and ISO_MS.match(app["created_at"])
    assert get_app(srv, aid)["webhook_secret"] == app["webhook_secret"]
    assert key_works(srv, k1)

    # mappings, with an id above 2^53
    assert tenant(srv, k1, "PUT", f"/api/user-mappings/{BIG_ID}",
                  json={"crm_user_id": "big"}).status_code == 201
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/map",
              data=b'{"dialpad_user_id": 9007199254740995, "crm_user_id": "raw"}', headers=JSON_CT)
    assert r.status_code == 201, r.text
    assert tenant_mappings(srv, k1) == {str(BIG_ID): "big", "9007199254740995": "raw"}
    bad = admin(srv, "POST", f"/internal/apps/{aid}/users/batch-map", json={"mappings": [
        {"dialpad_user_id": 1, "crm_user_id": "one"}, {"dialpad_user_id": "x", "crm_user_id": "y"}]})
    assert_error(bad, 400, "invalid_request", "mappings[1]")
    assert "1" not in admin_mappings(srv, aid)

    # rotation with grace: both work
    n2 = new_key(srv, aid, grace=30)
    k2 = n2["api_key"]
    assert key_works(srv, k1) and key_works(srv, k2)
    # rotation without grace: older ones stop at once
    n3 = new_key(srv, aid, grace=0)
    k3 = n3["api_key"]
    assert not key_works(srv, k1) and not key_works(srv, k2)
    assert key_works(srv, k3)
    # another rotation with grace does not revive them
    ended = key_status(srv, aid)
    n4 = new_key(srv, aid, grace=30)
    k4 = n4["api_key"]
    assert key_works(srv, k3) and key_works(srv, k4)
    assert not key_works(srv, k2)
    st = key_status(srv, aid)
    assert st[app["key_id"]]["expires_at"] == ended[app["key_id"]]["expires_at"]
    assert st[n2["key_id"]]["expires_at"] == ended[n2["key_id"]]["expires_at"]
    # revoke one
    r = admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke", json={"key_id": n3["key_id"]})
    assert r.status_code == 200, r.text
    assert not key_works(srv, k3)
    assert key_works(srv, k4)
    st = key_status(srv, aid)
    assert set(st) == {app["key_id"], n2["key_id"], n3["key_id"], n4["key_id"]}
    assert st[n3["key_id"]]["revoked_at"] and st[n4["key_id"]]["revoked_at"] is None
    assert st[n4["key_id"]]["expires_at"] is None
    assert st[app["key_id"]]["expires_at"] and st[n2["key_id"]]["expires_at"]
    assert_no_secrets(st, [secret_part(k) for k in (k1, k2, k3, k4)])

    # deactivate: the cached key stops; reactivate + new key works; revoke all
    assert admin(srv, "DELETE", f"/internal/apps/{aid}").status_code == 200
    assert not key_works(srv, k4)
    assert get_app(srv, aid)["active"] is False
    assert admin(srv, "PATCH", f"/internal/apps/{aid}", json={"active": True}).status_code == 200
    k5 = new_key(srv, aid, grace=30)["api_key"]
    assert key_works(srv, k5)
    assert admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke").status_code == 200
    assert not key_works(srv, k5)

    # webhook secret rotation and audit
    r = admin(srv, "POST", f"/internal/apps/{aid}/webhook-secret/rotate", json={"grace_seconds": 0})
    assert r.status_code in (200, 201)
    assert get_app(srv, aid)["webhook_secret"] == r.json()["webhook_secret"] != app["webhook_secret"]
    entries = audit(srv, aid)
    actions = [e["action"] for e in entries]
    assert actions[0] == "webhook_secret.rotated" and actions[-1] == "app.created"
    assert actions.count("key.rotated") == 4 and actions.count("key.revoked") == 2
    assert_no_secrets(entries, [k1, k2, k3, k4, k5, app["webhook_secret"],
                                r.json()["webhook_secret"]])

    # pagination on this backend
    for i in range(4):
        create_app(srv, f"more-{i}")
    seen, cursor = [], None
    for _ in range(10):
        r = admin(srv, "GET", "/internal/apps?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [x["app_id"] for x in r.json()["data"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 == len(set(seen)) and aid in seen


def test_batch_map_same_id_twice_on_backend(make_server, backend):
    """The same id twice in one batch: one mapping, the last one wins, counted once as created."""
    srv = start(make_server, database=backend)
    aid = create_app(srv)["app_id"]
    r = admin(srv, "POST", f"/internal/apps/{aid}/users/batch-map", json={"mappings": [
        {"dialpad_user_id": 5, "crm_user_id": "first"},
        {"dialpad_user_id": "5", "crm_user_id": "last"},
        {"dialpad_user_id": 6, "crm_user_id": "six"}]})
    assert r.status_code == 200, r.text
    assert admin_mappings(srv, aid) == {"5": "last", "6": "six"}
    counts = r.json()
    assert counts["mapped"] == 3, counts
    assert counts["created"] == 2, f"2 mappings were created, reported {counts}"
