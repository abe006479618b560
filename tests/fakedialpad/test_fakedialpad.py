"""Tests of the fake Dialpad: every endpoint and switch.

Run: /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/fakedialpad
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakedialpad as fdp  # noqa: E402

CID, CSECRET = "test-client", "test-secret"
REDIRECT = "http://127.0.0.1:9/auth/dialpad/callback"


# ---- helpers -----------------------------------------------------------------------------------

def req(base, method, path, body=None, headers=None, form=False, raw=None):
    """-> (status, headers dict (lower-case keys), parsed JSON or text)."""
    p = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        if form:
            data = urllib.parse.urlencode(body).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        text = r.read().decode()
        rh = {k.lower(): v for k, v in r.getheaders()}
        try:
            out = json.loads(text) if text else None
        except ValueError:
            out = text
        return r.status, rh, out
    finally:
        conn.close()


def bearer(tok):
    return {"Authorization": "Bearer " + tok}


def assert_envelope(body, code):
    """Dialpad's Google-style error envelope (API-FACTS 2.4)."""
    assert set(body) == {"error"}
    e = body["error"]
    assert e["code"] == code and isinstance(e["message"], str) and e["message"]
    assert isinstance(e["errors"], list) and e["errors"]
    assert set(e["errors"][0]) == {"domain", "message", "reason"}
    assert e["errors"][0]["domain"] == "global"


def authorize(fd, scope="calls:list recordings_export", verifier=None, method="S256", state="st-1",
              redirect=REDIRECT):
    q = {"response_type": "code", "client_id": CID, "redirect_uri": redirect, "state": state}
    if scope is not None:
        q["scope"] = scope
    if verifier is not None:
        q["code_challenge"] = fdp.pkce_s256(verifier) if method == "S256" else verifier
        q["code_challenge_method"] = method
    st, h, _ = req(fd.base_url, "GET", "/oauth2/authorize?" + urllib.parse.urlencode(q))
    return st, h.get("location")


def code_from(location):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def exchange(fd, code, verifier=None, form=False, basic=False, client=(CID, CSECRET)):
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    if verifier is not None:
        body["code_verifier"] = verifier
    hdrs = {}
    if basic:
        hdrs["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % client).encode()).decode()
    else:
        body.update(client_id=client[0], client_secret=client[1])
    return req(fd.base_url, "POST", "/oauth2/token", body, hdrs, form=form)


def refresh(fd, rt):
    return req(fd.base_url, "POST", "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": rt,
                                                     "client_id": CID, "client_secret": CSECRET})


def connect(fd, scope="calls:list recordings_export"):
    verifier = "v" * 50
    st, loc = authorize(fd, scope=scope, verifier=verifier)
    assert st == 302
    st, _, tok = exchange(fd, code_from(loc)["code"], verifier)
    assert st == 200, tok
    return tok


class Receiver:
    """A local webhook receiver answering from a script of statuses (then 200)."""

    def __init__(self, statuses=None, default=200):
        self.statuses = list(statuses or [])
        self.default = default
        self.got = []
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with rec.lock:
                    st = rec.statuses.pop(0) if rec.statuses else rec.default
                    rec.got.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                    "t": time.monotonic(), "status": st})
                self.send_response(st)
                self.send_header("Content-Length", "0")
                self.end_headers()
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = "http://127.0.0.1:%d/webhooks/dialpad/app1" % self.srv.server_address[1]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def verify_jwt(token, secret):
    """Independent HS256 check (not the fake's code): -> payload dict, or raises."""
    h, p, s = token.split(".")
    want = hmac.new(secret.encode(), (h + "." + p).encode(), hashlib.sha256).digest()
    got = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    assert hmac.compare_digest(want, got), "bad signature"
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    assert header["alg"] == "HS256"
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


@pytest.fixture
def fd():
    f = fdp.FakeDialpad(client_id=CID, client_secret=CSECRET, redirect_uris=[REDIRECT, REDIRECT + "?x=1"],
                        seed=7, retry_scale=0.01, conn_retry_delay=0.01)
    f.start()
    yield f
    f.stop()


@pytest.fixture
def recv():
    r = Receiver()
    yield r
    r.stop()


def hook_and_sub(fd, tok, url, secret="s3cret-1", states=None, kind="call", **extra):
    st, _, w = req(fd.base_url, "POST", "/api/v2/webhooks",
                   {"hook_url": url, **({"secret": secret} if secret else {})}, bearer(tok))
    assert st == 200, w
    body = {"endpoint_id": w["id"], "enabled": True, **extra}
    if kind == "call":
        body["call_states"] = states or ["all"]
    if kind == "sms":
        body.setdefault("direction", "all")
    st, _, s = req(fd.base_url, "POST", "/api/v2/subscriptions/" + kind, body, bearer(tok))
    assert st == 200, s
    return w, s


# ---- OAuth -------------------------------------------------------------------------------------

def test_authorize_redirects_with_code_and_state(fd):
    st, loc = authorize(fd)
    assert st == 302
    assert loc.startswith(REDIRECT + "?")
    q = code_from(loc)
    assert q["state"] == "st-1" and q["code"]
    # a redirect_uri with its own query string: passed through intact, ours appended
    st, loc = authorize(fd, redirect=REDIRECT + "?x=1")
    assert st == 302 and loc.startswith(REDIRECT + "?x=1&code=")
    assert code_from(loc)["x"] == "1"
    # no state given -> none returned
    q = {"client_id": CID, "redirect_uri": REDIRECT}
    st, h, _ = req(fd.base_url, "GET", "/oauth2/authorize?" + urllib.parse.urlencode(q))
    assert st == 302 and "state" not in code_from(h["location"])


def test_authorize_deny_redirects_access_denied(fd):
    fd.set(authorize="deny")
    st, loc = authorize(fd)
    assert st == 302
    assert code_from(loc) == {"error": "access_denied", "state": "st-1"}
    assert fd.snapshot()["codes"] == []


def test_authorize_refuses_bad_client_or_redirect_without_redirecting(fd):
    for q in ({"client_id": "nope", "redirect_uri": REDIRECT},
              {"client_id": CID, "redirect_uri": "http://evil.example/cb"},
              {"client_id": CID},
              {"client_id": CID, "redirect_uri": REDIRECT + "#frag"},
              {"client_id": CID, "redirect_uri": REDIRECT, "response_type": "token"},
              {"client_id": CID, "redirect_uri": REDIRECT, "code_challenge": "x",
               "code_challenge_method": "S512"}):
        st, h, body = req(fd.base_url, "GET", "/oauth2/authorize?" + urllib.parse.urlencode(q))
        assert st == 400 and "location" not in h, q


def test_pkce_s256_round_trip_json_body(fd):
    verifier = "a-verifier-0123456789-0123456789-0123456789-xyz"
    st, loc = authorize(fd, verifier=verifier)
    st, h, tok = exchange(fd, code_from(loc)["code"], verifier)
    assert st == 200
    assert set(tok) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert tok["token_type"] == "bearer" and tok["expires_in"] == 3600
    assert "scope" not in tok  # no scope field in Dialpad's token response
    st, _, me = req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok["access_token"]))
    assert st == 200 and me["id"] == fd.default_user_id
    assert fd.snapshot()["token_requests"][-1]["content_type"] == "application/json"


def test_pkce_plain_and_wrong_or_missing_verifier(fd):
    st, loc = authorize(fd, verifier="plain-verifier-value", method="plain")
    st, _, tok = exchange(fd, code_from(loc)["code"], "plain-verifier-value")
    assert st == 200 and tok["access_token"]
    st, loc = authorize(fd, verifier="right-verifier")
    st, _, err = exchange(fd, code_from(loc)["code"], "wrong-verifier")
    assert st == 400 and err["error"] == "invalid_grant"
    st, loc = authorize(fd, verifier="right-verifier")
    st, _, err = exchange(fd, code_from(loc)["code"], None)
    assert st == 400 and err["error"] == "invalid_grant"
    # no PKCE at all also works (CALCOM)
    st, loc = authorize(fd)
    st, _, tok = exchange(fd, code_from(loc)["code"])
    assert st == 200


def test_code_is_single_use(fd):
    st, loc = authorize(fd, verifier="vvvv")
    code = code_from(loc)["code"]
    assert exchange(fd, code, "vvvv")[0] == 200
    st, _, err = exchange(fd, code, "vvvv")
    assert st == 400 and err["error"] == "invalid_grant" and "used" in err["error_description"]


def test_code_expires(fd):
    st, loc = authorize(fd)
    fd.advance(601)
    st, _, err = exchange(fd, code_from(loc)["code"])
    assert st == 400 and err["error"] == "invalid_grant"


def test_redirect_status_and_code_ttl_switches(fd):
    fd.set(redirect_status=303, code_ttl=5)
    st, loc = authorize(fd)
    assert st == 303 and code_from(loc)["code"]
    fd.advance(6)
    assert exchange(fd, code_from(loc)["code"])[0] == 400
    st, loc = authorize(fd)
    fd.advance(4)
    assert exchange(fd, code_from(loc)["code"])[0] == 200


def test_code_of_one_client_cannot_be_redeemed_by_another(fd):
    fd.add_client("sandbox-client", "sandbox-secret", redirect_uris=[REDIRECT])
    st, loc = authorize(fd)
    st, _, err = exchange(fd, code_from(loc)["code"], client=("sandbox-client", "sandbox-secret"))
    assert st == 400 and err["error"] == "invalid_grant"
    q = {"client_id": "sandbox-client", "redirect_uri": REDIRECT}
    st, h, _ = req(fd.base_url, "GET", "/oauth2/authorize?" + urllib.parse.urlencode(q))
    st, _, tok = exchange(fd, code_from(h["location"])["code"], client=("sandbox-client", "sandbox-secret"))
    assert st == 200
    st, _, err = req(fd.base_url, "POST", "/oauth2/token", {"grant_type": "refresh_token",
                                                           "refresh_token": tok["refresh_token"],
                                                           "client_id": CID, "client_secret": CSECRET})
    assert st == 400 and err["error"] == "invalid_grant"


def test_token_form_body_and_basic_auth(fd):
    st, loc = authorize(fd, verifier="vvvv")
    st, _, tok = exchange(fd, code_from(loc)["code"], "vvvv", form=True, basic=True)
    assert st == 200 and tok["access_token"]
    r = fd.snapshot()["token_requests"][-1]
    assert r["basic_auth"] and r["content_type"] == "application/x-www-form-urlencoded"


def test_token_bad_client_credentials(fd):
    st, loc = authorize(fd)
    code = code_from(loc)["code"]
    st, _, err = exchange(fd, code, client=(CID, "wrong"))
    assert st == 401 and err["error"] == "invalid_client"
    st, _, err = exchange(fd, code, client=(CID, "wrong"), basic=True)
    assert st == 401
    st, _, err = req(fd.base_url, "POST", "/oauth2/token", {"grant_type": "authorization_code", "code": code})
    assert st == 401 and err["error"] == "invalid_client"
    st, _, err = req(fd.base_url, "POST", "/oauth2/token", {"grant_type": "password", "client_id": CID,
                                                           "client_secret": CSECRET})
    assert st == 400 and err["error"] == "unsupported_grant_type"
    for bad in ({"grant_type": "authorization_code", "code": 5, "client_id": CID, "client_secret": CSECRET},
                {"grant_type": "authorization_code", "code": code, "client_id": CID, "client_secret": 7},
                {"grant_type": "refresh_token", "refresh_token": ["x"], "client_id": CID, "client_secret": CSECRET}):
        st, _, err = req(fd.base_url, "POST", "/oauth2/token", bad)
        assert st == 400 and err["error"] == "invalid_request", bad
    st, _, err = req(fd.base_url, "POST", "/oauth2/token", raw=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert st == 400 and err["error"] == "invalid_request"


def test_refresh_rotates_and_old_refresh_token_is_refused(fd):
    tok = connect(fd)
    st, _, new = refresh(fd, tok["refresh_token"])
    assert st == 200
    assert new["refresh_token"] != tok["refresh_token"] and new["access_token"] != tok["access_token"]
    st, _, err = refresh(fd, tok["refresh_token"])
    assert st == 400 and err["error"] == "invalid_grant"
    st, _, newer = refresh(fd, new["refresh_token"])
    assert st == 200
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(newer["access_token"]))[0] == 200
    # refresh with the same scopes as granted
    assert fd.snapshot()["access_tokens"][-1]["scopes"] == ["calls:list", "recordings_export"]


def test_refresh_rotation_keep_switch(fd):
    fd.set(refresh_rotation="keep")
    tok = connect(fd)
    assert refresh(fd, tok["refresh_token"])[0] == 200
    assert refresh(fd, tok["refresh_token"])[0] == 200


def test_expired_access_token_gets_401_envelope(fd):
    fd.set(access_token_ttl=120)
    tok = connect(fd)
    assert tok["expires_in"] == 120
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok["access_token"]))[0] == 200
    fd.advance(121)
    st, _, body = req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok["access_token"]))
    assert st == 401
    assert_envelope(body, 401)
    st, _, new = refresh(fd, tok["refresh_token"])
    assert st == 200
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(new["access_token"]))[0] == 200


def test_expire_tokens_control(fd):
    tok = connect(fd)
    st, _, _ = req(fd.base_url, "POST", "/_fake/expire_tokens")
    assert st == 200
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok["access_token"]))[0] == 401


def test_token_response_variants(fd):
    fd.set(expires_in="string", token_type="Bearer")
    tok = connect(fd)
    assert tok["expires_in"] == "3600" and tok["token_type"] == "Bearer"
    fd.set(expires_in="omit", issue_refresh_token=False)
    tok = connect(fd)
    assert "expires_in" not in tok and "refresh_token" not in tok


def test_token_failure_switches(fd):
    st, loc = authorize(fd)
    code = code_from(loc)["code"]
    fd.set(token_fail="server_error")
    st, _, body = exchange(fd, code)
    assert st == 500
    assert_envelope(body, 500)
    fd.set(token_fail="invalid_grant")
    st, _, body = exchange(fd, code)
    assert st == 400 and body["error"] == "invalid_grant"
    fd.set(token_error_status=401, token_error_style="envelope")
    st, _, body = exchange(fd, code)
    assert st == 401
    assert_envelope(body, 401)
    fd.set(token_fail=None, token_error_status=400, token_error_style="oauth")
    # the failed attempts above did not consume the code (they never reached it)
    st, _, tok = exchange(fd, code)
    assert st == 200
    fd.set(refuse_refresh=True)
    st, _, body = refresh(fd, tok["refresh_token"])
    assert st == 400 and body["error"] == "invalid_grant"


def test_deauthorize_revokes_everything_and_is_recorded(fd):
    tok = connect(fd)
    tok2 = connect(fd)
    st, h, body = req(fd.base_url, "POST", "/oauth2/deauthorize", headers=bearer(tok["access_token"]))
    assert st == 204 and body is None
    for t in (tok, tok2):
        assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(t["access_token"]))[0] == 401
        assert refresh(fd, t["refresh_token"])[0] == 400
    d = fd.snapshot()["deauthorizations"]
    assert len(d) == 1 and d[0]["access_token"] == tok["access_token"] and d[0]["client_id"] == CID
    st, _, body = req(fd.base_url, "POST", "/oauth2/deauthorize", headers=bearer(tok["access_token"]))
    assert st == 401
    assert_envelope(body, 401)
    assert req(fd.base_url, "POST", "/oauth2/deauthorize")[0] == 401


def test_deauthorize_scope_token_switch(fd):
    fd.set(deauthorize_scope="token")
    tok, tok2 = connect(fd), connect(fd)
    assert req(fd.base_url, "POST", "/oauth2/deauthorize", headers=bearer(tok["access_token"]))[0] == 204
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok["access_token"]))[0] == 401
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok2["access_token"]))[0] == 200
    assert refresh(fd, tok["refresh_token"])[0] == 400
    assert refresh(fd, tok2["refresh_token"])[0] == 200


# ---- users -------------------------------------------------------------------------------------

def test_users_me_shape_and_auth(fd):
    tok = connect(fd)["access_token"]
    st, _, me = req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok))
    assert st == 200
    assert isinstance(me["id"], str) and isinstance(me["company_id"], str) and isinstance(me["office_id"], str)
    assert me["emails"] == ["ana.lopez@example.com"] and "email" not in me
    assert me["phone_numbers"] == ["+14155550199"] and me["is_admin"] is True
    assert req(fd.base_url, "GET", "/api/v2/users/" + me["id"], headers=bearer(tok))[2] == me
    st, _, body = req(fd.base_url, "GET", "/api/v2/users/123", headers=bearer(tok))
    assert st == 404
    assert_envelope(body, 404)
    # ?apikey= works like the header (SPEC25)
    assert req(fd.base_url, "GET", "/api/v2/users/me?apikey=" + tok)[0] == 200
    for h in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eDp5"}):
        st, _, body = req(fd.base_url, "GET", "/api/v2/users/me", headers=h)
        assert st == 401
        assert_envelope(body, 401)
    fd.set(company_admin=False)
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok))[2]["is_admin"] is False
    st, _, body = req(fd.base_url, "GET", "/api/v2/nothing", headers=bearer(tok))
    assert st == 404
    assert_envelope(body, 404)
    st, _, body = req(fd.base_url, "PUT", "/api/v2/webhooks", {}, headers=bearer(tok))
    assert st == 405
    assert_envelope(body, 405)


# ---- webhooks ----------------------------------------------------------------------------------

def test_webhooks_crud(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    st, _, w = req(b, "POST", "/api/v2/webhooks", {"hook_url": "https://cti.example/wh", "secret": "abc"},
                   bearer(tok))
    assert st == 200
    assert isinstance(w["id"], str) and w["id"].isdigit()
    assert w == {"id": w["id"], "hook_url": "https://cti.example/wh",
                 "signature": {"algo": "HS256", "secret": "abc", "type": "jwt"}}
    assert req(b, "GET", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[2] == w
    assert req(b, "GET", "/api/v2/webhooks", headers=bearer(tok))[2] == {"items": [w]}
    st, _, p = req(b, "PATCH", "/api/v2/webhooks/" + w["id"], {"hook_url": "https://cti.example/wh2"},
                   bearer(tok))
    assert st == 200 and p["hook_url"] == "https://cti.example/wh2" and p["signature"]["secret"] == "abc"
    st, _, d = req(b, "DELETE", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))
    assert st == 200 and d == p
    st, _, body = req(b, "GET", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))
    assert st == 404
    assert_envelope(body, 404)
    assert req(b, "DELETE", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[0] == 404
    assert req(b, "GET", "/api/v2/webhooks/abc", headers=bearer(tok))[0] == 404
    for bad in ({}, {"hook_url": 5}, {"hook_url": "ftp://x/y"}, {"hook_url": "https://x/y", "secret": "a\nb"}):
        st, _, body = req(b, "POST", "/api/v2/webhooks", bad, bearer(tok))
        assert st == 400, bad
        assert_envelope(body, 400)
    st, _, body = req(b, "POST", "/api/v2/webhooks", raw=b"{nope", headers=dict(bearer(tok), **{
        "Content-Type": "application/json"}))
    assert st == 400
    assert_envelope(body, 400)
    assert fd.snapshot()["webhooks"] == []


def test_webhook_without_secret_signature_forms_and_redaction(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    _, _, w = req(b, "POST", "/api/v2/webhooks", {"hook_url": "http://127.0.0.1:1/x"}, bearer(tok))
    assert w["signature"] == {"algo": "HS256", "secret": "", "type": "jwt"}
    fd.set(nosecret_signature="omit")
    assert "signature" not in req(b, "GET", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[2]
    fd.set(nosecret_signature="null")
    assert req(b, "GET", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[2]["signature"] is None
    fd.set(echo_secret=False)
    _, _, w2 = req(b, "POST", "/api/v2/webhooks", {"hook_url": "http://127.0.0.1:1/y", "secret": "zz"},
                   bearer(tok))
    assert w2["signature"] == {"algo": "HS256", "secret": "", "type": "jwt"}
    fd.set(require_https_hooks=True)
    assert req(b, "POST", "/api/v2/webhooks", {"hook_url": "http://127.0.0.1:1/x"}, bearer(tok))[0] == 400


def test_webhooks_list_paging(fd):
    fd.set(page_size=2, rate_limit_company=False)
    tok = connect(fd)["access_token"]
    ids = [req(fd.base_url, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/%d" % i},
               bearer(tok))[2]["id"] for i in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        st, _, page = req(fd.base_url, "GET", "/api/v2/webhooks" + ("?cursor=" + cursor if cursor else ""),
                          headers=bearer(tok))
        assert st == 200 and len(page["items"]) <= 2
        seen += [w["id"] for w in page["items"]]
        pages += 1
        cursor = page.get("cursor")
        if not cursor:
            break
    assert seen == ids and pages == 3
    st, _, body = req(fd.base_url, "GET", "/api/v2/webhooks?cursor=%%%%", headers=bearer(tok))
    assert st == 400
    assert_envelope(body, 400)


def test_webhook_delete_in_use_switch(fd):
    tok = connect(fd)["access_token"]
    w, s = hook_and_sub(fd, tok, "https://h.example/1")
    fd.set(webhook_delete_in_use="refuse")
    assert req(fd.base_url, "DELETE", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[0] == 400
    fd.set(webhook_delete_in_use="allow")
    assert req(fd.base_url, "DELETE", "/api/v2/webhooks/" + w["id"], headers=bearer(tok))[0] == 200
    st, _, got = req(fd.base_url, "GET", "/api/v2/subscriptions/call/" + s["id"], headers=bearer(tok))
    assert st == 200 and "webhook" not in got


# ---- subscriptions -----------------------------------------------------------------------------

def test_call_subscription_crud(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    _, _, w = req(b, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/1", "secret": "puppy"},
                  bearer(tok))
    st, _, s = req(b, "POST", "/api/v2/subscriptions/call",
                   {"endpoint_id": int(w["id"]), "call_states": ["ringing", "hangup"], "enabled": True},
                   bearer(tok))
    assert st == 200
    assert s == {"id": s["id"], "call_states": ["ringing", "hangup"], "enabled": True,
                 "group_calls_only": False, "webhook": w}
    assert "endpoint_id" not in s and isinstance(s["id"], str)
    # legacy webhook_id as a string, with a target
    st, _, s2 = req(b, "POST", "/api/v2/subscriptions/call",
                    {"webhook_id": w["id"], "call_states": ["all"], "target_type": "user",
                     "target_id": fd.default_user_id}, bearer(tok))
    assert st == 200 and s2["target_type"] == "user" and s2["target_id"] == fd.default_user_id
    assert s2["webhook"]["id"] == w["id"]
    st, _, lst = req(b, "GET", "/api/v2/subscriptions/call", headers=bearer(tok))
    assert [x["id"] for x in lst["items"]] == [s["id"], s2["id"]]
    st, _, lst = req(b, "GET", "/api/v2/subscriptions/call?target_type=user&target_id=" + fd.default_user_id,
                     headers=bearer(tok))
    assert [x["id"] for x in lst["items"]] == [s2["id"]]
    st, _, p = req(b, "PATCH", "/api/v2/subscriptions/call/" + s["id"], {"enabled": False}, bearer(tok))
    assert st == 200 and p["enabled"] is False and p["call_states"] == ["ringing", "hangup"]
    st, _, d = req(b, "DELETE", "/api/v2/subscriptions/call/" + s["id"], headers=bearer(tok))
    assert st == 200 and d == p
    assert req(b, "GET", "/api/v2/subscriptions/call/" + s["id"], headers=bearer(tok))[0] == 404
    for bad in ({"call_states": ["ringing"]},                                     # no endpoint
                {"endpoint_id": "999", "call_states": ["ringing"]},               # unknown endpoint
                {"endpoint_id": w["id"], "call_states": ["unhold"]},              # no such state
                {"endpoint_id": w["id"], "call_states": "ringing"},
                {"endpoint_id": w["id"], "target_type": "company", "target_id": 1},
                {"endpoint_id": w["id"], "target_type": "user"},
                {"endpoint_id": "12x"}):
        st, _, body = req(b, "POST", "/api/v2/subscriptions/call", bad, bearer(tok))
        assert st == 400, bad
        assert_envelope(body, 400)


def test_sms_subscription_crud(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    _, _, w = req(b, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/1"}, bearer(tok))
    assert req(b, "POST", "/api/v2/subscriptions/sms", {"endpoint_id": w["id"]}, bearer(tok))[0] == 400
    st, _, s = req(b, "POST", "/api/v2/subscriptions/sms", {"endpoint_id": w["id"], "direction": "all",
                                                           "enabled": True}, bearer(tok))
    assert st == 200
    assert s == {"id": s["id"], "direction": "all", "enabled": True, "include_internal": False,
                 "status": False, "webhook": w}
    assert req(b, "DELETE", "/api/v2/subscriptions/sms/" + s["id"], headers=bearer(tok))[2] == s


def test_agent_status_and_contact_need_company_admin(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    _, _, w = req(b, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/1"}, bearer(tok))
    fd.set(company_admin=False)
    for kind, body in (("agent_status", {"endpoint_id": w["id"], "agent_type": "callcenter"}),
                       ("contact", {"endpoint_id": w["id"], "contact_type": "shared"})):
        st, _, err = req(b, "POST", "/api/v2/subscriptions/" + kind, body, bearer(tok))
        assert st == 403
        assert_envelope(err, 403)
        assert req(b, "GET", "/api/v2/subscriptions/" + kind, headers=bearer(tok))[0] == 403
    fd.set(company_admin=True)
    st, _, a = req(b, "POST", "/api/v2/subscriptions/agent_status",
                   {"endpoint_id": w["id"], "agent_type": "callcenter"}, bearer(tok))
    assert st == 200 and a == {"id": a["id"], "agent_type": "callcenter", "enabled": True, "webhook": w}
    assert req(b, "POST", "/api/v2/subscriptions/agent_status", {"endpoint_id": w["id"], "agent_type": "user"},
               bearer(tok))[0] == 400
    st, _, c = req(b, "POST", "/api/v2/subscriptions/contact", {"endpoint_id": w["id"], "contact_type": "local"},
                   bearer(tok))
    assert st == 200 and c["contact_type"] == "local" and c["webhook"] == w
    # contact_type is required on PATCH too
    assert req(b, "PATCH", "/api/v2/subscriptions/contact/" + c["id"], {"enabled": False}, bearer(tok))[0] == 400
    st, _, c2 = req(b, "PATCH", "/api/v2/subscriptions/contact/" + c["id"],
                    {"enabled": False, "contact_type": "shared"}, bearer(tok))
    assert st == 200 and c2["enabled"] is False and c2["contact_type"] == "shared"
    # agent_type defaults to callcenter on PATCH
    assert req(b, "PATCH", "/api/v2/subscriptions/agent_status/" + a["id"], {"enabled": False},
               bearer(tok))[2]["agent_type"] == "callcenter"
    assert req(b, "DELETE", "/api/v2/subscriptions/agent_status/" + a["id"], headers=bearer(tok))[0] == 200
    assert req(b, "DELETE", "/api/v2/subscriptions/contact/" + c["id"], headers=bearer(tok))[2] == c2


def test_company_wide_subscription_limit(fd):
    fd.set(rate_limit_company=False)
    tok = connect(fd)["access_token"]
    _, _, w = req(fd.base_url, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/1"}, bearer(tok))
    for i in range(10):
        assert req(fd.base_url, "POST", "/api/v2/subscriptions/call", {"endpoint_id": w["id"]},
                   bearer(tok))[0] == 200
    assert req(fd.base_url, "POST", "/api/v2/subscriptions/call", {"endpoint_id": w["id"]}, bearer(tok))[0] == 400
    # targeted subscriptions still allowed
    assert req(fd.base_url, "POST", "/api/v2/subscriptions/call",
               {"endpoint_id": w["id"], "target_type": "user", "target_id": 1}, bearer(tok))[0] == 200


# ---- click-to-dial -----------------------------------------------------------------------------

def test_initiate_call_device_rate_limit_and_errors(fd):
    fd.set(initiate_call_flow=False)
    tok = connect(fd)["access_token"]
    b = fd.base_url
    path = "/api/v2/users/%s/initiate_call" % fd.default_user_id
    body = {"phone_number": "+14155550123", "custom_data": "dial_1"}
    st, _, r = req(b, "POST", path, body, bearer(tok))
    assert st == 200 and set(r) == {"device"} and "call_id" not in r
    assert r["device"]["user_id"] == fd.default_user_id and isinstance(r["device"]["id"], str)
    for _ in range(3):
        assert req(b, "POST", path, body, bearer(tok))[0] == 200
    assert req(b, "POST", "/api/v2/users/me/initiate_call", body, bearer(tok))[0] == 200  # `me` = same user
    st, h, err = req(b, "POST", path, body, bearer(tok))
    assert st == 429 and "retry-after" not in h
    assert_envelope(err, 429)
    other = fd.add_user(first_name="Bo", last_name="Li")
    assert req(b, "POST", "/api/v2/users/%s/initiate_call" % other, body, bearer(tok))[0] == 200  # per user
    fd.set(retry_after=60)
    assert req(b, "POST", path, body, bearer(tok))[1]["retry-after"] == "60"
    fd.advance(61)
    assert req(b, "POST", path, body, bearer(tok))[0] == 200
    st, _, err = req(b, "POST", "/api/v2/users/42/initiate_call", body, bearer(tok))
    assert st == 404
    assert_envelope(err, 404)
    for bad in ({"phone_number": "4155550123"}, {}, {"phone_number": "+14155550123", "custom_data": 5},
                {"phone_number": "+14155550123", "outbound_caller_id": "x"}):
        st, _, err = req(b, "POST", "/api/v2/users/%s/initiate_call" % other, bad, bearer(tok))
        assert st == 400 and err["error"]["message"] == "bad_request"
    fd.set(rate_limit_ops=False)
    for _ in range(6):
        assert req(b, "POST", path, body, bearer(tok))[0] == 200
    assert [c["user_id"] for c in fd.snapshot()["initiated_calls"]].count(other) == 1


def test_initiate_call_answers_without_waiting_for_webhook_receivers(fd):
    tok = connect(fd)["access_token"]
    slow = Receiver()
    orig = slow.srv.RequestHandlerClass.do_POST

    def sleepy(self):
        time.sleep(1.0)
        orig(self)
    slow.srv.RequestHandlerClass.do_POST = sleepy
    try:
        hook_and_sub(fd, tok, slow.url, secret=None)
        fd.set(initiate_call_delay=0)
        t0 = time.monotonic()
        st, _, _ = req(fd.base_url, "POST", "/api/v2/users/me/initiate_call", {"phone_number": "+14155550123"},
                       bearer(tok))
        assert st == 200 and time.monotonic() - t0 < 0.8  # a synchronous delivery would take >= 1 s
        assert fd.wait_deliveries(10)
        assert [json.loads(g["body"])["state"] for g in slow.got] == ["calling", "connected", "hangup"]
    finally:
        slow.stop()


def test_initiate_call_on_call_and_no_device(fd):
    tok = connect(fd)["access_token"]
    path = "/api/v2/users/%s/initiate_call" % fd.default_user_id
    body = {"phone_number": "+14155550123"}
    fd.set(user_on_call=True)
    st, _, err = req(fd.base_url, "POST", path, body, bearer(tok))
    assert st == 400 and err["error"]["message"] == "User is currently on a call"
    fd.set(user_on_call=[fd.default_user_id], on_call_status=409)
    assert req(fd.base_url, "POST", path, body, bearer(tok))[0] == 409
    fd.set(user_on_call=False, no_active_device=True)
    st, _, err = req(fd.base_url, "POST", path, body, bearer(tok))
    assert st == 400
    assert_envelope(err, 400)


def test_initiate_call_delivers_outbound_flow_with_custom_data(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret="sek")
    st, _, r = req(fd.base_url, "POST", "/api/v2/users/me/initiate_call",
                   {"phone_number": "+442079460958", "custom_data": "dial_42"}, bearer(tok))
    assert st == 200
    assert recv.got == []  # Dialpad answers before the call's events come
    assert fd.wait_deliveries(5)
    evs = [verify_jwt(g["body"].decode(), "sek") for g in recv.got]
    assert [e["state"] for e in evs] == ["calling", "connected", "hangup"]
    assert all(e["custom_data"] == "dial_42" and e["direction"] == "outbound"
               and e["external_number"] == "+442079460958" for e in evs)
    cid = evs[0]["call_id"]
    assert fd.snapshot()["initiated_calls"][0]["call_id"] == cid
    # GET /call lists concluded calls only: this one ends ~67 s after it started
    _, _, lst = req(fd.base_url, "GET", "/api/v2/call", headers=bearer(tok))
    assert lst == {"items": []}
    fd.advance(70)
    _, _, lst = req(fd.base_url, "GET", "/api/v2/call", headers=bearer(tok))
    assert [c["call_id"] for c in lst["items"]] == [str(cid)]
    assert lst["items"][0]["custom_data"] == "dial_42"


# ---- call list ---------------------------------------------------------------------------------

def test_call_list_shape_filters_paging_and_permissions(fd):
    tok = connect(fd)["access_token"]
    b = fd.base_url
    T = fd.now_ms() - 3_600_000
    made = {}
    for i, kind in enumerate(["inbound_answered", "inbound_missed", "inbound_voicemail", "outbound"]):
        evs = fd.make_call(kind, start_ms=T + i * 600_000, recorded=True)
        made[kind] = evs
    other = fd.add_user(first_name="Bo", last_name="Li")
    fd.make_call("inbound_missed", user_id=other, start_ms=T + 5 * 600_000)
    fd.make_call("inbound_answered", start_ms=fd.now_ms() - 1000)  # still in progress: not listed
    _, _, lst = req(b, "GET", "/api/v2/call", headers=bearer(tok))
    items = lst["items"]
    assert len(items) == 5 and "cursor" not in lst
    starts = [int(c["date_started"]) for c in items]
    assert starts == sorted(starts, reverse=True)  # recent first
    for c in items:
        assert isinstance(c["call_id"], str) and isinstance(c["date_started"], str)
        assert isinstance(c["event_timestamp"], str) and isinstance(c["target"]["id"], str)
        assert None not in c.values()
        assert c["state"] == "hangup"
    by = {c["call_id"]: c for c in items}
    missed = by[str(made["inbound_missed"][0]["call_id"])]
    assert "date_connected" not in missed and missed["direction"] == "inbound"
    ans = by[str(made["inbound_answered"][0]["call_id"])]
    assert isinstance(ans["date_connected"], str) and isinstance(ans["duration"], float)
    vm = by[str(made["inbound_voicemail"][0]["call_id"])]
    assert vm["voicemail_share_link"].startswith("https://") and vm["transcription_text"]
    assert vm["recording_details"][0]["recording_type"] == "voicemail"
    assert isinstance(vm["recording_details"][0]["duration"], str)
    out = by[str(made["outbound"][0]["call_id"])]
    assert out["was_recorded"] is True and out["recording_details"][0]["recording_type"] == "callrecording"
    # filters (strict bounds on date_started, ms)
    s1 = T + 600_000
    _, _, lst = req(b, "GET", "/api/v2/call?started_after=%d&started_before=%d" % (s1 - 1, T + 3 * 600_000),
                    headers=bearer(tok))
    assert [c["call_id"] for c in lst["items"]] == [str(made["inbound_voicemail"][0]["call_id"]),
                                                    str(made["inbound_missed"][0]["call_id"])]
    _, _, lst = req(b, "GET", "/api/v2/call?started_after=%d" % s1, headers=bearer(tok))
    assert str(made["inbound_missed"][0]["call_id"]) not in [c["call_id"] for c in lst["items"]]
    _, _, lst = req(b, "GET", "/api/v2/call?target_type=user&target_id=" + other, headers=bearer(tok))
    assert len(lst["items"]) == 1 and lst["items"][0]["target"]["id"] == other
    assert req(b, "GET", "/api/v2/call?started_after=yesterday", headers=bearer(tok))[0] == 400
    assert req(b, "GET", "/api/v2/call?target_type=company", headers=bearer(tok))[0] == 400
    # paging
    fd.set(page_size=2)
    got, cursor = [], ""
    while True:
        _, _, page = req(b, "GET", "/api/v2/call" + ("?cursor=" + cursor if cursor else ""), headers=bearer(tok))
        got += [c["call_id"] for c in page["items"]]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert got == [c["call_id"] for c in items]
    # permissions: calls:list scope and a company admin
    tok2 = connect(fd, scope="recordings_export")["access_token"]
    st, _, err = req(b, "GET", "/api/v2/call", headers=bearer(tok2))
    assert st == 403
    assert_envelope(err, 403)
    fd.set(enforce_scopes=False)
    assert req(b, "GET", "/api/v2/call", headers=bearer(tok2))[0] == 200
    fd.set(company_admin=False)
    assert req(b, "GET", "/api/v2/call", headers=bearer(tok))[0] == 403


def test_get_call_by_id_and_its_rate_limit(fd):
    tok = connect(fd)["access_token"]
    evs = fd.make_call("inbound_missed")
    st, _, c = req(fd.base_url, "GET", "/api/v2/call/%d" % evs[0]["call_id"], headers=bearer(tok))
    assert st == 200 and c["call_id"] == str(evs[0]["call_id"]) and c["state"] == "hangup"
    assert req(fd.base_url, "GET", "/api/v2/call/1", headers=bearer(tok))[0] == 404
    for _ in range(8):
        req(fd.base_url, "GET", "/api/v2/call/1", headers=bearer(tok))
    assert req(fd.base_url, "GET", "/api/v2/call/1", headers=bearer(tok))[0] == 429  # 11th in a minute


# ---- rate limits -------------------------------------------------------------------------------

def test_company_rate_limit_20_per_second(fd):
    tok = connect(fd)["access_token"]
    fd.advance(5)  # a fresh window whatever connect() used
    codes = [req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok))[0] for _ in range(21)]
    assert codes[:20] == [200] * 20 and codes[20] == 429
    fd.advance(1.01)
    assert req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok))[0] == 200
    fd.set(rate_limit_company=False)
    assert all(req(fd.base_url, "GET", "/api/v2/users/me", headers=bearer(tok))[0] == 200 for _ in range(25))


def test_webhook_create_limit_100_per_minute(fd):
    fd.set(rate_limit_company=False)
    tok = connect(fd)["access_token"]
    codes = [req(fd.base_url, "POST", "/api/v2/webhooks", {"hook_url": "https://h.example/%d" % i},
                 bearer(tok))[0] for i in range(101)]
    assert codes[:100] == [200] * 100 and codes[100] == 429


# ---- delivery ----------------------------------------------------------------------------------

JWT_VECTOR = {  # the project's shared JWT test vector
    "secret": "example-secret-not-real",
    "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjYWxsX2lkIjo1MDEyMzQ1Njc4OTAxMjQ4LCJzdGF0ZSI6InJpbm"
             "dpbmciLCJkaXJlY3Rpb24iOiJpbmJvdW5kIiwiZXh0ZXJuYWxfbnVtYmVyIjoiKzE0MTU1NTUwMTIzIiwiaW50ZXJuYWxf"
             "bnVtYmVyIjoiKzE0MTU1NTUwMTk5IiwiZXZlbnRfdGltZXN0YW1wIjoxNzY3MjI1NjAwMTIzfQ.n01WN3ZGaQNPSMsz4cw"
             "lIOE_YsnAZeawCljvm0ZyJBU",
    "payload": {"call_id": 5012345678901248, "state": "ringing", "direction": "inbound",
                "external_number": "+14155550123", "internal_number": "+14155550199",
                "event_timestamp": 1767225600123},
}


def test_jwt_signer_matches_the_shared_vector():
    assert fdp.jwt_hs256(JWT_VECTOR["payload"], JWT_VECTOR["secret"]) == JWT_VECTOR["token"]
    assert verify_jwt(JWT_VECTOR["token"], JWT_VECTOR["secret"]) == JWT_VECTOR["payload"]


def test_jwt_delivery_verified_independently(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret="a-long-webhook-secret")
    events, recs = fd.run_call("inbound_answered")
    assert [e["state"] for e in events] == ["ringing", "connected", "hold", "connected", "hangup"]
    assert [d["outcome"] for d in recs] == ["delivered"] * 5
    assert len(recv.got) == 5
    for g, e in zip(recv.got, events):
        assert g["path"] == "/webhooks/dialpad/app1"
        assert g["headers"]["Content-Type"] == "application/jwt"
        assert not any(k.lower().startswith("x-dialpad") for k in g["headers"])  # no signature header
        assert verify_jwt(g["body"].decode(), "a-long-webhook-secret") == e
        with pytest.raises(AssertionError):
            verify_jwt(g["body"].decode(), "another-secret")
    fd.set(jwt_iat_exp=True, content_type="text/plain")
    fd.run_call("inbound_missed")
    p = verify_jwt(recv.got[-1]["body"].decode(), "a-long-webhook-secret")
    assert "iat" in p and "exp" in p and recv.got[-1]["headers"]["Content-Type"] == "text/plain"


def test_plain_json_when_webhook_has_no_secret(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret=None)
    events, recs = fd.run_call("inbound_missed")
    assert [json.loads(g["body"]) for g in recv.got] == events
    assert recv.got[0]["headers"]["Content-Type"] == "application/json"
    assert recs[0]["format"] == "json"


def test_5xx_is_retried_then_delivered(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url)
    recv.statuses = [503, 500]
    ev = fd.make_call("inbound_missed")[0]
    (d,) = fd.deliver([ev])
    assert d["outcome"] == "delivered" and d["attempts"] == 3
    assert [g["status"] for g in recv.got] == [503, 500, 200]
    assert len({g["body"] for g in recv.got}) == 1  # the same body every time
    gaps = [b["t"] - a["t"] for a, b in zip(recv.got, recv.got[1:])]
    assert gaps[0] >= 0.02 * 0.9 and gaps[1] >= 0.04 * 0.9  # 2 s, 4 s scaled by 0.01
    att = [a for a in fd.snapshot()["attempts"] if a["delivery_id"] == d["id"]]
    assert [a["result"] for a in att] == ["retry", "retry", "delivered"]


def test_5xx_gives_up_after_three_retries(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url)
    recv.default = 502
    (d,) = fd.deliver([fd.make_call("inbound_missed")[0]])
    assert d["outcome"] == "failed" and d["attempts"] == 4 and len(recv.got) == 4
    # SMS class: 10 retries; agent-status class: 4
    recv.got.clear()
    fd.set(retry_scale=0.0001)  # the SMS schedule spans ~4 h: 1.4 s here
    hook_and_sub(fd, tok, recv.url, kind="sms")
    t0 = time.monotonic()
    (d,) = fd.deliver([fd.make_sms()])
    assert d["attempts"] == 11 and d["outcome"] == "failed"
    assert time.monotonic() - t0 >= sum(fdp.RETRY_DELAYS["sms"]) * 0.0001
    recv.got.clear()
    hook_and_sub(fd, tok, recv.url, kind="agent_status", agent_type="callcenter")
    (d,) = fd.deliver([fd.make_agent_status(on_duty_status="wrapup")])
    assert d["attempts"] == 5 and d["kind"] == "agent_status"
    hook_and_sub(fd, tok, recv.url, kind="contact", contact_type="shared")
    (d,) = fd.deliver([fd.make_contact_event()])
    assert d["attempts"] == 5 and d["kind"] == "contact"


def test_4xx_is_never_retried(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url)
    for st in (400, 401, 404, 429):
        recv.got.clear()
        recv.statuses = [st]
        (d,) = fd.deliver([fd.make_call("inbound_missed")[0]])
        time.sleep(0.1)  # a retry would have come by now
        assert d["outcome"] == "dropped" and d["attempts"] == 1 and len(recv.got) == 1, st


def test_connection_errors_get_two_quick_retries(fd):
    tok = connect(fd)["access_token"]
    r = Receiver()
    url = r.url
    r.stop()  # nothing listens there now
    hook_and_sub(fd, tok, url)
    (d,) = fd.deliver([fd.make_call("inbound_missed")[0]])
    assert d["outcome"] == "failed" and d["attempts"] == 3
    att = [a for a in fd.snapshot()["attempts"] if a["delivery_id"] == d["id"]]
    assert all(a["status"] is None and "Connection" in a["error"] for a in att)


def test_conn_retries_switch_and_stop_abandons_pending_retries(fd):
    tok = connect(fd)["access_token"]
    r = Receiver()
    url = r.url
    r.stop()
    hook_and_sub(fd, tok, url)
    fd.set(conn_retries=0)
    (d,) = fd.deliver([fd.make_call("inbound_missed")[0]])
    assert d["outcome"] == "failed" and d["attempts"] == 1
    fd.set(conn_retries=2, conn_retry_delay=100, retry_scale=1.0)
    (d,) = fd.deliver([fd.make_call("inbound_missed")[0]], wait=False)
    assert d["attempts"] == 1 and d["outcome"] == "pending"
    t0 = time.monotonic()
    fd.stop()
    assert d["done"].wait(2) and d["outcome"] == "abandoned" and time.monotonic() - t0 < 2


def test_timeout_counts_as_connection_failure(fd):
    tok = connect(fd)["access_token"]
    fd.set(delivery_timeout=0.2)
    import socket
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)  # accepts (backlog) but never answers
    try:
        hook_and_sub(fd, tok, "http://127.0.0.1:%d/x" % ls.getsockname()[1])
        (d,) = fd.deliver([fd.make_call("inbound_missed")[0]])
        assert d["outcome"] == "failed" and d["attempts"] == 3
    finally:
        ls.close()


def test_retries_arrive_out_of_order(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret=None)
    recv.statuses = [503]
    events = fd.make_call("inbound_missed")
    fd.deliver(events)
    states = [json.loads(g["body"])["state"] for g in recv.got if g["status"] == 200]
    assert states[-1] == "ringing" and sorted(states) == sorted(["ringing", "missed", "hangup"])


def test_subscription_filters_decide_what_is_delivered(fd, recv):
    tok = connect(fd)["access_token"]
    _, s = hook_and_sub(fd, tok, recv.url, secret=None, states=["hangup", "missed"])
    fd.run_call("inbound_answered")
    fd.run_call("inbound_missed")
    assert [json.loads(g["body"])["state"] for g in recv.got] == ["hangup", "missed", "hangup"]
    req(fd.base_url, "PATCH", "/api/v2/subscriptions/call/" + s["id"], {"enabled": False}, bearer(tok))
    recv.got.clear()
    fd.run_call("inbound_missed")
    assert recv.got == []
    # targeted subscription: only that user's calls
    other = fd.add_user(first_name="Bo", last_name="Li")
    hook_and_sub(fd, tok, recv.url, secret=None, target_type="user", target_id=other)
    fd.run_call("inbound_missed")
    assert recv.got == []
    fd.run_call("inbound_missed", user_id=other)
    assert len(recv.got) == 3
    # SMS direction filter; deliver to="all" ignores subscriptions
    recv.got.clear()
    hook_and_sub(fd, tok, recv.url, secret=None, kind="sms", direction="outbound")
    fd.deliver([fd.make_sms(direction="inbound")])
    assert recv.got == []
    fd.deliver([fd.make_sms(direction="outbound")])
    assert len(recv.got) == 1 and json.loads(recv.got[0]["body"])["to_number"] == ["+15105550177"]
    recs = fd.deliver([fd.make_sms()], to="all")
    assert len(recs) == 3  # three webhooks registered above


def test_forget_switch_leaves_holes_that_the_call_list_fills(fd, recv):
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret=None)
    fd.set(forget={"states": ["hangup"]})
    events, recs = fd.run_call("inbound_answered")
    assert [d["outcome"] for d in recs] == ["delivered"] * 4 + ["forgotten"]
    assert "hangup" not in [json.loads(g["body"])["state"] for g in recv.got]
    _, _, lst = req(fd.base_url, "GET", "/api/v2/call", headers=bearer(tok))
    assert [c["call_id"] for c in lst["items"]] == [str(events[0]["call_id"])]
    fd.set(forget={"next": 2})
    _, recs = fd.run_call("inbound_missed")
    assert [d["outcome"] for d in recs] == ["forgotten", "forgotten", "delivered"]
    fd.set(forget={"call_ids": []})
    evs = fd.make_call("outbound")
    fd.set(forget={"call_ids": [str(evs[0]["call_id"])]})
    assert all(d["outcome"] == "forgotten" for d in fd.deliver(evs))
    fd.set(forget={"every_nth": 2})
    _, recs = fd.run_call("inbound_missed")
    assert sum(d["outcome"] == "forgotten" for d in recs) == 1
    fd.set(forget=None)
    _, recs = fd.run_call("inbound_missed")
    assert all(d["outcome"] == "delivered" for d in recs)


REFERENCE_CALL_FIELDS = {
    "call_id", "state", "direction", "external_number", "internal_number", "contact", "target",
    "master_call_id", "entry_point_call_id", "operator_call_id", "entry_point_target", "proxy_target",
    "transferred_from", "group_id", "date_started", "date_first_rang", "date_rang", "date_queued",
    "date_connected", "date_ended", "duration", "total_duration", "talk_time", "hold_time",
    "event_timestamp", "is_transferred", "is_internal", "was_recorded", "voicemail_link",
    "voicemail_recording_id", "transcription_text", "recording_details", "call_recording_ids",
    "labels", "routing_breadcrumbs", "mos_score", "csat_score", "integrations",
}


@pytest.mark.parametrize("kind,states", [
    ("inbound_answered", ["ringing", "connected", "hold", "connected", "hangup"]),
    ("inbound_missed", ["ringing", "missed", "hangup"]),
    ("inbound_voicemail", ["ringing", "voicemail", "hangup", "voicemail_uploaded", "transcription"]),
    ("outbound", ["calling", "connected", "hangup", "recording"]),
])
def test_flows_have_dialpads_field_names_and_types(kind, states):
    fd = fdp.FakeDialpad(seed=3)
    evs = fd.make_call(kind, recorded=True)
    assert [e["state"] for e in evs] == states
    ts = [e["event_timestamp"] for e in evs]
    assert ts == sorted(ts) and ts[-1] <= fd.now_ms()
    for e in evs:
        assert REFERENCE_CALL_FIELDS <= set(e)
        assert isinstance(e["call_id"], int) and len(str(e["call_id"])) == 16
        assert isinstance(e["target"]["id"], int) and isinstance(e["contact"]["id"], int)
        assert isinstance(e["date_started"], int) and isinstance(e["event_timestamp"], int)
        assert "custom_data" not in e
    hang = [e for e in evs if e["state"] == "hangup"][0]
    if kind in ("inbound_missed", "inbound_voicemail"):
        assert hang["date_connected"] is None
    else:
        assert isinstance(hang["date_connected"], int) and hang["duration"] > 0
    assert isinstance(hang["date_ended"], int) and isinstance(hang["total_duration"], float)
    if kind == "inbound_answered":
        assert hang["hold_time"] == 15000
    if kind == "inbound_voicemail":
        assert evs[-1]["transcription_text"] and evs[-2]["voicemail_link"]
    if kind == "outbound":
        assert evs[-1]["recording_details"][0]["recording_type"] == "callrecording"
    if kind == "inbound_missed":
        swapped = fd.make_call(kind, hangup_before_missed=True)
        assert [e["state"] for e in swapped] == ["ringing", "hangup", "missed"]
    a = fd.make_agent_status(on_duty_status="wrapup", call_center_ids=[6466313488515072])
    assert a["on_duty_status"] == "wrapup" and a["call_center_ids"] == ["6466313488515072"]
    assert isinstance(a["target"]["id"], int) and isinstance(a["date"], int)
    assert fd.make_contact_event("Deleted")["event"] == "Deleted"
    sms = fd.make_sms()
    assert isinstance(sms["to_number"], list) and isinstance(sms["id"], int) and sms["target"]["phone_number"]


# ---- control API and command -------------------------------------------------------------------

def test_control_api(fd, recv):
    b = fd.base_url
    st, _, sw = req(b, "GET", "/_fake/switches")
    assert st == 200 and sw["authorize"] == "approve"
    st, _, body = req(b, "POST", "/_fake/switches", {"no_such_switch": 1})
    assert st == 400
    with pytest.raises(KeyError):
        fd.set(no_such_switch=1)
    assert req(b, "POST", "/_fake/switches", {"company_admin": False})[2]["company_admin"] is False
    assert fd.sw("company_admin") is False
    tok = connect(fd)["access_token"]
    hook_and_sub(fd, tok, recv.url, secret=None)
    st, _, r = req(b, "POST", "/_fake/calls", {"kind": "inbound_voicemail"})
    assert st == 200 and len(r["events"]) == 5 and [d["outcome"] for d in r["deliveries"]] == ["delivered"] * 5
    st, _, r = req(b, "POST", "/_fake/deliver", {"events": r["events"][:1]})
    assert st == 200 and r["deliveries"][0]["outcome"] == "delivered"
    st, _, r = req(b, "POST", "/_fake/sms", {"text": "hi"})
    assert st == 200 and r["events"][0]["text"] == "hi" and r["deliveries"] == []  # no sms subscription
    assert req(b, "POST", "/_fake/calls", {"kind": "bogus"})[0] == 400
    st, _, r = req(b, "POST", "/_fake/agent_status", {"on_duty_status": "busy"})
    assert st == 200 and r["events"][0]["on_duty_status"] == "busy" and r["deliveries"] == []
    assert req(b, "POST", "/_fake/contact", {"event": "Updated"})[2]["events"][0]["event"] == "Updated"
    assert req(b, "POST", "/_fake/agent_status", {"bogus": 1})[0] == 400
    st, _, u = req(b, "POST", "/_fake/users", {"first_name": "Bo", "last_name": "Li"})
    assert st == 200 and u["display_name"] == "Bo Li"
    st, _, r = req(b, "POST", "/_fake/advance", {"seconds": 30})
    assert r["clock_offset"] == 30
    st, _, snap = req(b, "GET", "/_fake/state")
    assert st == 200 and len(snap["webhooks"]) == 1 and snap["subscriptions"]["call"]
    assert len(snap["calls"]) == 1 and len(snap["deliveries"]) == 6
    assert any(r["path"] == "/api/v2/webhooks" and r["status"] == 200 for r in snap["requests"])
    assert not any(r["path"].startswith("/_fake") for r in snap["requests"])
    assert req(b, "POST", "/_fake/reset")[0] == 200
    snap = req(b, "GET", "/_fake/state")[2]
    assert snap["webhooks"] == [] and snap["switches"]["company_admin"] is True
    assert req(b, "GET", "/_fake/nothing")[0] == 404


def test_command_line(recv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, os.path.join(here, "fakedialpad.py"), "--port", "0",
                          "--client-id", CID, "--client-secret", CSECRET, "--redirect-uri", REDIRECT,
                          "--set", "retry_scale=0.01", "--set", "company_admin=false"],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        info = json.loads(line)
        assert info["base_url"] == "http://127.0.0.1:%d" % info["port"]
        ctl = fdp.Control(info["base_url"])
        assert ctl.state()["switches"]["company_admin"] is False
        ctl.set(company_admin=True)

        class Remote:  # enough of FakeDialpad for connect()
            base_url = info["base_url"]
        tok = connect(Remote)["access_token"]
        hook_and_sub(Remote, tok, recv.url, secret="k")
        r = ctl.call("inbound_missed")
        assert ctl.wait(5) is True
        assert [d["outcome"] for d in r["deliveries"]] == ["delivered"] * 3
        assert [verify_jwt(g["body"].decode(), "k") for g in recv.got] == r["events"]
        ctl.advance(10)
        assert ctl.state()["clock_offset"] == 10
    finally:
        p.terminate()
        assert p.wait(10) == 0
    assert subprocess.run([sys.executable, os.path.join(here, "fakedialpad.py"), "--set", "bogus=1"],
                          capture_output=True).returncode == 2
