"""Helpers for the Dialpad connection tests (test_dialpad_*.py): a server wired to an
in-process fake Dialpad, and a scripted "browser" that walks the OAuth flow.

Written against docs/API.md "Dialpad connection (OAuth 2.0 + PKCE)" (the contract), not
against the implementation. The fake Dialpad is tests/fakedialpad (see its README).

The browser: follow `authorize_url` without auto-redirects, take the Location to the
fake's /oauth2/authorize, GET it (the fake approves and answers 302 to the redirect URI
with code and state), then GET that callback URL with the same session (its cookie).
"""
import json
import re
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

import dialpad as dp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/fakedialpad"))
import fakedialpad  # noqa: E402  (tests/fakedialpad, standard library only)

ADMIN = dp.ADMIN
CLIENT_ID = "cti-bb-oauth-client"
CLIENT_SECRET = "cti-bb-oauth-client-secret-7f3a9c1e5b"
DP_USER_ID = "5188674325413888"      # the fake's default user (GET /users/me)
DP_COMPANY_ID = "4508591728425653"
DP_OFFICE_ID = "5741031244955648"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATUS_FIELDS = {"status", "environment", "dialpad_user_id", "company_id", "office_id", "scopes",
                 "connected_at", "access_token_expires_at", "refreshed_at", "webhook_id",
                 "subscriptions", "reason"}


# ---- a server wired to a fake Dialpad ------------------------------------------------------------

@pytest.fixture
def world(make_server):
    """factory(database=None, env=None, configured=True, **fake_switches) -> (srv, fd).

    The server's port is known before it starts, so PUBLIC_BASE_URL points at it (the
    fake delivers webhooks there) and the fake registers exactly the default redirect URI
    PUBLIC_BASE_URL/auth/dialpad/callback (an exact match, as a registered OAuth app)."""
    fakes = []

    def factory(database=None, env=None, configured=True, **switches):
        sw = {"retry_scale": 0.01}
        sw.update(switches)
        # the fake first: its port is then taken when the server's is chosen (the other
        # way round, the fake's bind to port 0 could get the port just chosen for the
        # server, and the server's /health would be answered by the fake)
        fd = fakedialpad.FakeDialpad(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **sw)
        fd.start()
        fakes.append(fd)
        srv = make_server(database=database, start=False)
        fd.add_client(CLIENT_ID, CLIENT_SECRET, redirect_uris=[srv.base + "/auth/dialpad/callback"])
        e = {"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "PUBLIC_BASE_URL": srv.base,
             "DIALPAD_BASE_URL": fd.base_url}
        if configured:
            e["DIALPAD_SANDBOX_CLIENT_ID"] = CLIENT_ID
            e["DIALPAD_SANDBOX_CLIENT_SECRET"] = CLIENT_SECRET
        e.update(env or {})
        srv.env.update(e)
        srv.start()
        return srv, fd

    yield factory
    for fd in fakes:
        fd.stop(wait_deliveries=0.5)


# ---- small HTTP helpers --------------------------------------------------------------------------

def admin(srv, method, path, **kw):
    return dp.admin(srv, method, path, **kw)


def tenant(srv, key, method, path, **kw):
    h = {"X-API-Key": key}
    h.update(kw.pop("headers", {}) or {})
    return srv.request(method, path, headers=h, **kw)


def assert_error(r, status, code=None):
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    body = r.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body.get("error") == code, body
    return body


def assert_html(r, status):
    assert r.status_code == status, f"{r.status_code} {r.text[:500]}"
    assert r.headers.get("Content-Type", "").startswith("text/html"), r.headers
    assert r.text.strip(), "empty HTML page"
    return r.text


def poll(fn, timeout, what, interval=0.1):
    """Calls fn() until it returns something truthy; fails after timeout seconds."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {str(last)[:800]})")


# ---- connect links, status, disconnect -----------------------------------------------------------

def new_link(srv, app, door="admin"):
    """POST .../dialpad/connect through the admin door or the app's API key -> the 201 body."""
    if door == "admin":
        r = admin(srv, "POST", f"/internal/apps/{app['app_id']}/dialpad/connect")
    else:
        r = tenant(srv, app["api_key"], "POST", "/api/dialpad/connect")
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) >= {"authorize_url", "expires_at"}, body
    url = body["authorize_url"]
    p = urllib.parse.urlsplit(url)
    assert f"{p.scheme}://{p.netloc}" == srv.base and p.path == "/authorize", url
    q = dict(urllib.parse.parse_qsl(p.query))
    assert q.get("app_id") == app["app_id"], url
    assert q.get("token"), url
    assert ISO_MS.match(body["expires_at"]), body
    return body


def link_token(link):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link["authorize_url"]).query))["token"]


def status(srv, app, door="admin"):
    if door == "admin":
        r = admin(srv, "GET", f"/internal/apps/{app['app_id']}/dialpad")
    else:
        r = tenant(srv, app["api_key"], "GET", "/api/dialpad/connection")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    st = r.json()
    assert set(st) >= STATUS_FIELDS, sorted(st)
    assert st["status"] in ("not_connected", "connected", "broken"), st
    return st


def disconnect(srv, app, door="admin"):
    if door == "admin":
        r = admin(srv, "DELETE", f"/internal/apps/{app['app_id']}/dialpad")
    else:
        r = tenant(srv, app["api_key"], "DELETE", "/api/dialpad/connection")
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    st = r.json()
    assert st["status"] == "not_connected", st
    assert isinstance(st.get("left_at_dialpad"), list), st
    return st


def audit_actions(srv, app):
    r = admin(srv, "GET", f"/internal/apps/{app['app_id']}/audit?limit=500")
    assert r.status_code == 200, r.text
    return [e["action"] for e in r.json()["data"]]


def events(srv, app, since=0):
    return dp.all_events(srv, app["api_key"], since)


def wait_event(srv, app, name, timeout=10):
    """The first stream event named `name` (polls /api/events)."""
    def find():
        return [e for e in events(srv, app) if e["event"] == name]
    return poll(find, timeout, f"stream event {name}")[0]


# ---- the browser -----------------------------------------------------------------------------------

class Flow:
    """One walk through the OAuth flow; every response is kept for inspection."""

    def __init__(self, session=None):
        self.session = session or requests.Session()
        self.authorize = None      # our GET /authorize response
        self.dialpad_url = None    # its Location (the fake's /oauth2/authorize)
        self.dialpad = None        # the fake's answer
        self.callback_url = None   # the fake's Location (our redirect URI + code + state)
        self.callback = None       # our callback's answer

    def open_link(self, url):
        self.authorize = self.session.get(url, allow_redirects=False, timeout=10)
        if self.authorize.status_code == 302:
            self.dialpad_url = self.authorize.headers["Location"]
        return self.authorize

    def consent(self):
        """The Dialpad page (the fake auto-approves, or declines with authorize="deny")."""
        self.dialpad = self.session.get(self.dialpad_url, allow_redirects=False, timeout=10)
        assert self.dialpad.status_code == 302, f"fake Dialpad: {self.dialpad.status_code} {self.dialpad.text}"
        self.callback_url = self.dialpad.headers["Location"]
        return self.callback_url

    def finish(self, url=None):
        self.callback = self.session.get(url or self.callback_url, allow_redirects=False, timeout=30)
        return self.callback

    def dialpad_query(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.dialpad_url).query))

    def callback_query(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.callback_url).query))

    def responses(self):
        return [r for r in (self.authorize, self.callback) if r is not None]


def start_flow(srv, fd, app, door="admin", session=None):
    """A link, opened in a browser, up to (and including) Dialpad's answer; not the callback."""
    link = new_link(srv, app, door)
    f = Flow(session)
    f.link = link
    r = f.open_link(link["authorize_url"])
    assert r.status_code == 302, f"{r.status_code} {r.text[:300]}"
    assert f.dialpad_url.startswith(fd.base_url + "/oauth2/authorize?"), f.dialpad_url
    f.consent()
    return f


def connect(srv, fd, app, door="admin"):
    """The whole flow, as a Dialpad admin's browser; asserts the app got connected.

    Then waits for the reconciliation the server runs right after connecting (docs/API.md,
    Reconciliation; it shows in the status): calls a test plays afterwards must not race
    it (a call Dialpad already lists while its webhooks are in flight gets a reconciled
    event as well, by design)."""
    f = start_flow(srv, fd, app, door)
    r = f.finish()
    assert_html(r, 200)
    wait_reconciled(srv, app)
    return f


def wait_reconciled(srv, app):
    """Until the status shows a reconciliation run (the one right after connecting)."""
    poll(lambda: status(srv, app).get("reconciliation", True), 15,
         "the reconciliation after connecting")


def stable(st):
    """A status object without what changes by itself (the last reconciliation run)."""
    return {k: v for k, v in st.items() if k != "reconciliation"}


# ---- what the fake holds -----------------------------------------------------------------------------

def fake_state(fd):
    return fd.snapshot()


def hooks_of(snap, srv, app):
    url = srv.base + f"/webhooks/dialpad/{app['app_id']}"
    return [w for w in snap["webhooks"] if w["hook_url"] == url]


def subs_of(snap, webhook_id=None):
    """[(type, subscription)] (all of them, or those pointing at webhook_id)."""
    out = []
    for kind, subs in snap["subscriptions"].items():
        for s in subs:
            if webhook_id is None or str(s["endpoint_id"]) == str(webhook_id):
                out.append((kind, s))
    return out


def token_grants(snap, grant=None):
    return [t for t in snap["token_requests"] if grant is None or t["grant_type"] == grant]


def dialpad_calls(snap):
    """Requests the fake answered on /oauth2/token and /api/v2 (not the browser's authorize)."""
    return [r for r in snap["requests"] if r["path"] != "/oauth2/authorize"]


def all_tokens(snap):
    return [t["token"] for t in snap["access_tokens"]] + [t["token"] for t in snap["refresh_tokens"]]


def secret_pieces(secret, window=16):
    """The secret and every `window`-character slice of it: a log line or a database page
    holding a long piece of a secret leaks it as surely as the whole."""
    if len(secret) <= window:
        return [secret]
    return [secret] + [secret[i:i + window] for i in range(0, len(secret) - window + 1)]


def assert_no_secret(text, secrets, where, what="a secret"):
    for s in secrets:
        for piece in secret_pieces(s):
            assert piece not in text, f"{where} holds (part of) {what}: ...{piece}..."


def dumps(obj):
    return json.dumps(obj, sort_keys=True)
