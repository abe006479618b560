"""Connecting an app to Dialpad (OAuth 2.0 + PKCE), as a customer's engineer tests it.

Written against docs/API.md "Dialpad connection (OAuth 2.0 + PKCE)", with a fake Dialpad
(tests/fakedialpad) standing in for Dialpad: the connect links, GET /authorize, the
callback, the webhook and subscriptions registered at Dialpad, status, disconnect, the
stream events and audit entries, and what is left behind when something fails.
Token lifetimes and secrecy are in test_dialpad_tokens.py.

Every deliberate authentication failure counts against the per-address brake (20 a
minute), so each server sees only a handful of them.
"""
import json
import urllib.parse
import warnings

import pytest
import requests

import dialpad as dp
from conftest import self_signed
import test_ws as tw
from dialpad_oauth import (CLIENT_ID, DP_COMPANY_ID, DP_OFFICE_ID, DP_USER_ID, ISO_MS, Flow,
                           admin, assert_error, assert_html, audit_actions, connect, dialpad_calls,
                           disconnect, events, fake_state, fakedialpad, hooks_of, link_token,
                           new_link, poll, stable, start_flow, status, subs_of, tenant,
                           token_grants, wait_reconciled, world)  # noqa: F401

CALL_STATES = ["calling", "ringing", "connected", "hold", "missed", "voicemail", "hangup",
               "voicemail_uploaded", "transcription"]
SCOPES = ["recordings_export", "calls:list"]


def assert_nothing_at_dialpad(fd):
    snap = fake_state(fd)
    assert snap["webhooks"] == [], snap["webhooks"]
    assert subs_of(snap) == [], subs_of(snap)


def assert_not_connected(srv, app):
    for door in ("admin", "tenant"):
        st = status(srv, app, door)
        assert st["status"] == "not_connected", st
        assert st["webhook_id"] in (None, ""), st
        assert not st["subscriptions"], st


def cookie_attrs(resp):
    """The Set-Cookie headers of a response: per cookie, its attributes (lower-cased,
    without values, the name=value pair left out)."""
    out = []
    for c in resp.raw.headers.getlist("Set-Cookie"):
        parts = [p.strip().lower() for p in c.split(";")][1:]
        out.append([p.split("=")[0].strip() if not p.startswith("samesite") else p.replace(" ", "")
                    for p in parts])
    return out


# ---- 1. end to end ---------------------------------------------------------------------------------

def test_connect_deliver_disconnect_end_to_end(world, backend):
    srv, fd = world(database=backend, env={"DIALPAD_CALL_STATES": ",".join(CALL_STATES),
                                           "DIALPAD_SCOPES": " ".join(SCOPES)})
    app = dp.create_app(srv, "acme")
    key = app["api_key"]
    assert_not_connected(srv, app)

    # a WebSocket client is already listening
    ws = tw.connect(srv, key, "since=0")
    tw.hello(ws, app["app_id"], 0)

    # the tenant asks for a link; the Dialpad admin opens it in a browser
    f = start_flow(srv, fd, app, door="tenant")
    auth = f.authorize
    q = f.dialpad_query()
    assert q["response_type"] == "code", q
    assert q["client_id"] == CLIENT_ID, q
    assert q["redirect_uri"] == srv.base + "/auth/dialpad/callback", q
    assert q["code_challenge_method"] == "S256", q
    assert len(q["code_challenge"]) == 43, q          # base64url(SHA-256), no padding
    assert len(q["state"]) >= 16, q
    assert set(SCOPES) <= set(q.get("scope", "").split()), q
    cookies = cookie_attrs(auth)
    assert cookies, auth.headers
    assert any("httponly" in attrs and "samesite=lax" in attrs for attrs in cookies), cookies
    assert not any("secure" in attrs for attrs in cookies), \
        f"a Secure cookie over http:// is never sent back: {cookies}"
    assert not token_grants(fake_state(fd)), "the code was exchanged before the callback"

    # Dialpad redirects back; the callback exchanges the code and registers everything
    cb = f.finish()
    assert_html(cb, 200)
    wait_reconciled(srv, app)   # (see dialpad_oauth.connect)
    snap = fake_state(fd)

    # the code exchange: PKCE verifier, our client, the redirect URI
    grants = token_grants(snap)
    assert [g["grant_type"] for g in grants] == ["authorization_code"], grants
    form = grants[0]["form"]
    assert form["code"] == f.callback_query()["code"]
    assert fakedialpad_s256(form["code_verifier"]) == q["code_challenge"]
    assert form.get("client_id", CLIENT_ID) == CLIENT_ID
    assert form.get("client_secret") or grants[0]["basic_auth"], grants[0]

    # exactly one webhook, at this app's URL, signed with one of the app's secrets
    assert len(snap["webhooks"]) == 1, snap["webhooks"]
    hook = snap["webhooks"][0]
    assert hook["hook_url"] == srv.base + f"/webhooks/dialpad/{app['app_id']}", hook
    assert hook["secret"] == app["webhook_secret"], "the webhook is not signed with the app's secret"
    subs = subs_of(snap)
    kinds = sorted(k for k, _ in subs)
    assert kinds == ["call", "sms"], subs                      # DIALPAD_SUBSCRIBE default call,sms
    for kind, s in subs:
        assert s["endpoint_id"] == hook["id"], s
        assert s["enabled"] is True, s
        if kind == "call":
            assert sorted(s["call_states"]) == sorted(CALL_STATES), s
        else:
            assert s["direction"] == "all", s

    # status, through both doors, the same; never a token
    st = status(srv, app, "tenant")
    assert stable(status(srv, app, "admin")) == stable(st)
    assert st["status"] == "connected", st
    assert st["environment"] == "sandbox", st
    assert (st["dialpad_user_id"], st["company_id"], st["office_id"]) == \
        (DP_USER_ID, DP_COMPANY_ID, DP_OFFICE_ID), st
    scopes = st["scopes"] if isinstance(st["scopes"], list) else st["scopes"].split()
    assert set(SCOPES) <= set(scopes), st
    assert ISO_MS.match(st["connected_at"]) and ISO_MS.match(st["access_token_expires_at"]), st
    assert st["webhook_id"] == str(hook["id"]), st
    assert sorted((s["type"], s["id"]) for s in st["subscriptions"]) == \
        sorted((k, str(s["id"])) for k, s in subs), st
    assert st["reason"] in (None, ""), st

    # Dialpad delivers calls and an SMS: they are stored and streamed
    missed, recs = fd.run_call("inbound_missed")
    assert [d["outcome"] for d in recs] == ["delivered"] * len(missed), recs
    answered, recs = fd.run_call("inbound_answered")
    assert [d["outcome"] for d in recs] == ["delivered"] * len(answered), recs
    sms = fd.make_sms()
    recs = fd.deliver([sms])
    assert [d["outcome"] for d in recs] == ["delivered"], recs
    want = ["connection.connected", "call.ringing", "call.missed", "call.ended",
            "call.ringing", "call.connected", "call.hold", "call.resumed", "call.ended",
            "sms.received"]
    evs = dp.wait_events(srv, key, len(want), timeout=10)
    assert [e["event"] for e in evs] == want, [(e["event"], e["data"], e.get("late")) for e in evs]
    assert [e["seq"] for e in evs] == list(range(1, len(want) + 1))
    assert evs[0]["data"]["status"] == "connected", evs[0]
    assert evs[0]["data"].get("dialpad_user_id") == DP_USER_ID, evs[0]
    assert evs[0]["data"].get("webhook_id") == str(hook["id"]), evs[0]
    assert evs[0].get("call_id") is None and evs[0].get("call") is None, evs[0]
    calls = {c["id"]: c for c in dp.tget(srv, key, "/api/calls").json()["data"]}
    assert str(missed[0]["call_id"]) in calls and str(answered[0]["call_id"]) in calls, calls.keys()
    assert calls[str(missed[0]["call_id"])]["outcome"] == "missed"
    assert calls[str(answered[0]["call_id"])]["outcome"] == "answered"
    msgs = dp.tget(srv, key, "/api/messages").json()["data"]
    assert [m["id"] for m in msgs] == [str(sms["id"])], msgs

    # disconnect: nothing left at Dialpad, tokens revoked, status and stream say so
    st = disconnect(srv, app, "admin")
    assert st["left_at_dialpad"] == [], st
    snap = fake_state(fd)
    assert snap["webhooks"] == [] and subs_of(snap) == [], snap
    assert len(snap["deauthorizations"]) == 1, snap["deauthorizations"]
    assert fd.valid_access_tokens() == [] and fd.valid_refresh_tokens() == []
    assert_not_connected(srv, app)
    ev = dp.wait_events(srv, key, len(want) + 1, timeout=5)[-1]
    assert ev["event"] == "connection.disconnected" and ev["seq"] == len(want) + 1, ev
    assert ev["data"]["status"] == "not_connected", ev
    assert ev["data"].get("left_at_dialpad") == [], ev

    # the WebSocket saw the same events, in the same order
    msgs = tw.events_until(ws, len(want) + 1)
    assert [m["event"] for m in msgs] == want + ["connection.disconnected"]
    assert [tw.strip(m) for m in msgs] == events(srv, app)
    ws.close()

    acts = audit_actions(srv, app)   # newest first
    for a in ("connection.link_created", "connection.connected", "connection.disconnected"):
        assert a in acts, acts
    assert acts.index("connection.disconnected") < acts.index("connection.connected") < \
        acts.index("connection.link_created"), acts


def fakedialpad_s256(verifier):
    return fakedialpad.pkce_s256(verifier)


def test_not_configured_is_409_through_both_doors(world):
    srv, fd = world(configured=False)
    app = dp.create_app(srv)
    r = admin(srv, "POST", f"/internal/apps/{app['app_id']}/dialpad/connect")
    assert_error(r, 409, "not_configured")
    r = tenant(srv, app["api_key"], "POST", "/api/dialpad/connect")
    assert_error(r, 409, "not_configured")
    assert_not_connected(srv, app)
    assert "connection.link_created" not in audit_actions(srv, app)
    assert fake_state(fd)["requests"] == []


def test_unknown_app_and_wrong_doors(world):
    srv, fd = world()
    app = dp.create_app(srv)
    ghost = "00000000-0000-4000-8000-000000000000"
    assert_error(admin(srv, "POST", f"/internal/apps/{ghost}/dialpad/connect"), 404, "not_found")
    assert_error(admin(srv, "GET", f"/internal/apps/{ghost}/dialpad"), 404, "not_found")
    assert_error(admin(srv, "DELETE", f"/internal/apps/{ghost}/dialpad"), 404, "not_found")
    # a deactivated app gets no link (docs/API.md: 409 app_inactive)
    gone = dp.create_app(srv, "gone")
    assert admin(srv, "DELETE", f"/internal/apps/{gone['app_id']}").status_code in (200, 204)
    assert_error(admin(srv, "POST", f"/internal/apps/{gone['app_id']}/dialpad/connect"), 409,
                 "app_inactive")
    # an app's API key is not the admin secret; no key at all opens nothing
    r = srv.post(f"/internal/apps/{app['app_id']}/dialpad/connect",
                 headers={"Authorization": "Bearer " + app["api_key"]})
    assert r.status_code in (401, 403), r.text
    assert srv.post("/api/dialpad/connect").status_code == 401
    assert srv.get("/api/dialpad/connection").status_code == 401
    assert srv.request("DELETE", "/api/dialpad/connection").status_code == 401
    assert fake_state(fd)["requests"] == []


def test_subscribe_every_kind_with_the_default_call_states(world):
    """DIALPAD_SUBSCRIBE=call,sms,agent_status,contact: a subscription of each kind, each
    body as Dialpad requires it (agent_type, contact_type); DIALPAD_CALL_STATES unset: the
    call subscription covers every documented call state. Call, SMS and agent status events
    arrive."""
    srv, fd = world(env={"DIALPAD_SUBSCRIBE": "call,sms,agent_status,contact"})
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    snap = fake_state(fd)
    assert len(snap["webhooks"]) == 1
    subs = subs_of(snap, snap["webhooks"][0]["id"])
    assert sorted(k for k, _ in subs) == ["agent_status", "call", "contact", "sms"], subs
    call = [s for k, s in subs if k == "call"][0]
    progress = {"preanswer", "calling", "ringing", "queued", "connected", "hold", "missed",
                "voicemail", "hangup", "voicemail_uploaded", "transcription", "recording"}
    cs = call["call_states"]
    assert cs is None or "all" in cs or progress <= set(cs), cs
    st = status(srv, app)
    assert sorted(s["type"] for s in st["subscriptions"]) == ["agent_status", "call", "contact", "sms"]

    evs, recs = fd.run_call("inbound_voicemail")
    # (no contact event: the fake's, {event, contact} as REFERENCE documents it, carries
    # no event_timestamp, which the server's contact dedupe key needs — not this suite's
    # subject; reported to the lead)
    recs += fd.deliver([fd.make_sms(), fd.make_agent_status()])
    assert [d["outcome"] for d in recs] == ["delivered"] * len(recs), recs
    want = ["connection.connected", "call.ringing", "call.voicemail", "call.ended",
            "voicemail.ready", "voicemail.transcribed", "sms.received", "agent.status"]
    got = dp.wait_events(srv, app["api_key"], len(want), timeout=10)
    assert [e["event"] for e in got] == want, [e["event"] for e in got]


# ---- 2. the link (GET /authorize) ------------------------------------------------------------------

def test_authorize_link_is_one_use_and_bound_to_its_app(world):
    srv, fd = world()
    a = dp.create_app(srv, "a")
    b = dp.create_app(srv, "b")

    def refused(url, session=None):
        r = (session or requests).get(url, allow_redirects=False, timeout=10)
        assert r.status_code == 401, f"{r.status_code} {r.headers} {r.text[:300]}"
        assert "Location" not in r.headers, r.headers
        return r

    base = srv.base + "/authorize"
    # no token at all: the peer's unauthenticated /authorize?app_id= must not work
    refused(f"{base}?app_id={a['app_id']}")
    # a made-up token
    refused(f"{base}?app_id={a['app_id']}&token=" + "x" * 43)
    # app A's link with app_id=B
    link_a = new_link(srv, a, "admin")
    refused(f"{base}?app_id={b['app_id']}&token={urllib.parse.quote(link_token(link_a))}")
    # a link is used once: the second opening is refused (another browser, or the same)
    link = new_link(srv, b, "tenant")
    f = Flow()
    assert f.open_link(link["authorize_url"]).status_code == 302
    refused(link["authorize_url"])
    refused(link["authorize_url"], f.session)
    # the link lives 10 minutes. Waiting that long is out of the question and the server's
    # clock cannot be moved from outside (no libfaketime on the machine), so expiry itself
    # is not exercised here: the announced expiry is checked instead.
    from datetime import datetime
    exp = datetime.strptime(link["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    left = (exp - datetime.utcnow()).total_seconds()
    assert 540 <= left <= 610, link
    # nothing reached Dialpad, no connection anywhere
    assert fake_state(fd)["requests"] == []
    assert_not_connected(srv, a)
    assert_not_connected(srv, b)
    acts = audit_actions(srv, b)
    assert "connection.link_created" in acts, acts


def test_a_used_link_cannot_connect_again(world):
    srv, fd = world()
    app = dp.create_app(srv)
    f = connect(srv, fd, app, "tenant")
    r = requests.get(f.link["authorize_url"], allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "Location" not in r.headers, r.text
    r = f.session.get(f.link["authorize_url"], allow_redirects=False, timeout=10)
    assert r.status_code == 401 and "Location" not in r.headers, r.text
    assert len(token_grants(fake_state(fd))) == 1


# ---- 3. the callback: state and cookie -----------------------------------------------------------

def _callback(srv, cookie=None, url=None, **params):
    """GET the callback as a bare client: with exactly the Cookie header given (a browser's
    cookie replayed by hand: the server may clear it from a browser after any visit)."""
    url = url or srv.base + "/auth/dialpad/callback?" + urllib.parse.urlencode(params)
    return requests.get(url, headers={"Cookie": cookie} if cookie else {}, allow_redirects=False,
                        timeout=30)


def _cookie_header(flow):
    return "; ".join(f"{c.name}={c.value}" for c in flow.session.cookies)


def test_callback_needs_its_state_and_its_cookie(world):
    srv, fd = world()
    app = dp.create_app(srv)
    f1 = start_flow(srv, fd, app, "admin")     # browser 1, state 1
    f2 = start_flow(srv, fd, app, "tenant")    # browser 2, state 2
    q1, q2 = f1.callback_query(), f2.callback_query()
    assert q1["state"] != q2["state"]
    c1 = _cookie_header(f1)
    assert c1 and c1 != _cookie_header(f2)

    # no cookie (another browser than the one that opened the link)
    assert_html(_callback(srv, url=f1.callback_url), 400)
    # browser 2 presents browser 1's state (and code)
    assert_html(f2.finish(f1.callback_url), 400)
    # a state the server never issued, with browser 1's cookie
    assert_html(_callback(srv, c1, code=q1["code"], state="forged-" + q1["state"][7:]), 400)
    # browser 1's cookie and code, no state
    assert_html(_callback(srv, c1, code=q1["code"]), 400)
    # nothing of this reached Dialpad: no code exchange, no REST call
    snap = fake_state(fd)
    assert dialpad_calls(snap) == [], dialpad_calls(snap)
    assert_not_connected(srv, app)

    # browser 1, its state and its cookie: connected
    assert_html(_callback(srv, c1, url=f1.callback_url), 200)
    assert status(srv, app)["status"] == "connected"
    wait_reconciled(srv, app)
    n = len(dialpad_calls(fake_state(fd)))
    # the same callback again, cookie and all (a replay): refused, Dialpad not asked
    assert_html(_callback(srv, c1, url=f1.callback_url), 400)
    assert len(dialpad_calls(fake_state(fd))) == n, "a replayed state reached Dialpad"
    assert len(token_grants(fake_state(fd))) == 1
    assert len(fake_state(fd)["webhooks"]) == 1
    assert status(srv, app)["status"] == "connected"


def test_declined_consent(world):
    srv, fd = world(authorize="deny")
    app = dp.create_app(srv)
    f = start_flow(srv, fd, app, "admin")
    q = f.callback_query()
    assert q.get("error") == "access_denied" and "code" not in q, q
    page = assert_html(f.finish(), 200).lower()
    assert any(w in page for w in ("declin", "denied", "cancel", "not connected")), page[:500]
    assert dialpad_calls(fake_state(fd)) == []
    assert_not_connected(srv, app)
    assert not [e for e in events(srv, app) if e["event"].startswith("connection.")]


# ---- 4. Dialpad failing: nothing left behind -----------------------------------------------------

def test_code_exchange_failure_is_502_and_leaves_nothing(world):
    srv, fd = world(token_fail="server_error")
    app = dp.create_app(srv)
    f = start_flow(srv, fd, app, "tenant")
    assert_html(f.finish(), 502)
    snap = fake_state(fd)
    assert len(token_grants(snap)) >= 1
    assert [r for r in snap["requests"] if r["path"].startswith("/api/v2/")] == [], snap["requests"]
    assert_nothing_at_dialpad(fd)
    assert_not_connected(srv, app)
    assert not [e for e in events(srv, app) if e["event"] == "connection.connected"]
    assert "connection.connected" not in audit_actions(srv, app)

    # Dialpad recovers: a new link connects
    fd.set(token_fail=None)
    connect(srv, fd, app, "admin")
    assert status(srv, app)["status"] == "connected"
    assert len(fake_state(fd)["webhooks"]) == 1


def _other_integration(fd, sms_subscriptions=0):
    """Another integration of the same Dialpad company: its own OAuth client, a webhook and
    `sms_subscriptions` company-wide SMS subscriptions (Dialpad allows 10 per type)."""
    fd.add_client("other-integration", "other-secret")
    tok = fd._issue("other-integration", DP_USER_ID, [])["access_token"]  # its own token
    h = {"Authorization": "Bearer " + tok}
    fd.set(rate_limit_company=False)
    r = requests.post(fd.base_url + "/api/v2/webhooks", json={"hook_url": "https://other.example.com/dp",
                                                              "secret": "other"}, headers=h, timeout=5)
    assert r.status_code == 200, r.text
    hid = r.json()["id"]
    for _ in range(sms_subscriptions):
        r = requests.post(fd.base_url + "/api/v2/subscriptions/sms",
                          json={"endpoint_id": hid, "direction": "all"}, headers=h, timeout=5)
        assert r.status_code == 200, r.text
    fd.set(rate_limit_company=True)
    snap = fake_state(fd)
    return snap["webhooks"], subs_of(snap)


@pytest.mark.parametrize("how", ["agent_status_needs_admin", "sms_subscription_limit"])
def test_failure_after_registration_removes_what_was_registered(world, how):
    if how == "agent_status_needs_admin":
        # the token's user is no company admin: webhook, call and sms subscriptions are
        # created, then the agent_status subscription is refused (403)
        srv, fd = world(env={"DIALPAD_SUBSCRIBE": "call,sms,agent_status"}, company_admin=False)
        theirs = ([], [])
    else:
        # the company already has 10 company-wide SMS subscriptions (another integration):
        # the webhook and the call subscription are created, the sms one is refused (400)
        srv, fd = world()
        theirs = _other_integration(fd, sms_subscriptions=10)
    app = dp.create_app(srv)
    f = start_flow(srv, fd, app, "admin")
    assert_html(f.finish(), 502)
    snap = fake_state(fd)
    # something was registered along the way, and all of it was removed again
    created = [r for r in snap["requests"] if r["method"] == "POST" and r["path"] == "/api/v2/webhooks"
               and r["status"] == 200]
    assert created, "the flow failed before registering anything: this test tests nothing"
    assert snap["webhooks"] == theirs[0], snap["webhooks"]
    assert subs_of(snap) == theirs[1], subs_of(snap)
    assert hooks_of(snap, srv, app) == []
    # the token the failed flow got is revoked again (docs/API.md: no partial connection)
    ours = [t for t in snap["access_tokens"] if t["client_id"] == CLIENT_ID]
    assert ours and all(t["revoked"] for t in ours), ours
    assert_not_connected(srv, app)
    assert not [e for e in events(srv, app) if e["event"] == "connection.connected"]
    assert "connection.connected" not in audit_actions(srv, app)


# ---- 5. reconnecting -------------------------------------------------------------------------------

def test_reconnect_replaces_the_webhook(world):
    srv, fd = world()
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    first = fake_state(fd)["webhooks"]
    assert len(first) == 1
    first_subs = {s["id"] for _, s in subs_of(fake_state(fd))}

    connect(srv, fd, app, "tenant")
    snap = fake_state(fd)
    assert len(snap["webhooks"]) == 1, snap["webhooks"]
    hook = snap["webhooks"][0]
    assert hook["id"] != first[0]["id"], "the old webhook was kept"
    assert hook["hook_url"] == srv.base + f"/webhooks/dialpad/{app['app_id']}"
    subs = subs_of(snap)
    assert sorted(k for k, _ in subs) == ["call", "sms"], subs
    assert all(s["endpoint_id"] == hook["id"] for _, s in subs), subs
    assert not first_subs & {s["id"] for _, s in subs}, "old subscriptions left in place"
    st = status(srv, app, "tenant")
    assert st["status"] == "connected" and st["webhook_id"] == str(hook["id"]), st

    # events reach the app once, not twice
    evs, recs = fd.run_call("inbound_missed")
    assert len(recs) == len(evs), recs
    n = len(events(srv, app))

    # the connection still works (a valid token): disconnect cleans up everything
    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"] == [], st
    assert_nothing_at_dialpad(fd)
    names = [e["event"] for e in events(srv, app)]
    assert names.count("connection.connected") == 2, names
    assert names[-1] == "connection.disconnected" and len(names) == n + 1, names


def test_a_failed_reconnect_leaves_the_working_connection_alone(world):
    """Reconnecting fails after the code exchange (the approving user is no longer a company
    admin, so the agent_status subscription is refused): what the new attempt registered
    is removed, and the existing connection, its webhook, subscriptions and tokens, stay."""
    srv, fd = world(env={"DIALPAD_SUBSCRIBE": "call,sms,agent_status"})
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    before = fake_state(fd)
    st0 = status(srv, app)
    assert len(before["webhooks"]) == 1 and len(subs_of(before)) == 3

    fd.set(company_admin=False)
    f = start_flow(srv, fd, app, "tenant")
    assert_html(f.finish(), 502)
    snap = fake_state(fd)
    assert snap["webhooks"] == before["webhooks"], snap["webhooks"]
    assert subs_of(snap) == subs_of(before), subs_of(snap)
    assert snap["deauthorizations"] == [], "the working connection's tokens were revoked"
    assert stable(status(srv, app)) == stable(st0)
    names = [e["event"] for e in events(srv, app)]
    assert names == ["connection.connected"], names

    # still fully working: disconnect deletes all of it with the old tokens
    fd.set(company_admin=True)
    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"] == [], st
    assert_nothing_at_dialpad(fd)


# ---- 6. tenants ------------------------------------------------------------------------------------

def test_tenant_isolation(world):
    srv, fd = world()
    a = dp.create_app(srv, "a")
    b = dp.create_app(srv, "b")
    connect(srv, fd, a, "tenant")
    hook = fake_state(fd)["webhooks"][0]

    # B's key sees B's own (absent) connection, not A's
    st = status(srv, b, "tenant")
    assert st["status"] == "not_connected" and st["webhook_id"] in (None, ""), st
    assert a["app_id"] not in json.dumps(st)
    # B's key "disconnects": B's own nothing; A untouched, nothing asked of Dialpad
    n = len(fake_state(fd)["requests"])
    st = disconnect(srv, b, "tenant")
    assert st["left_at_dialpad"] == [], st
    assert len(fake_state(fd)["requests"]) == n
    assert fake_state(fd)["webhooks"] == [hook]
    assert fake_state(fd)["deauthorizations"] == []
    assert status(srv, a, "tenant")["status"] == "connected"
    # B's key mints links for B only
    link = new_link(srv, b, "tenant")
    assert f"app_id={b['app_id']}" in link["authorize_url"]
    # B's key on A's admin doors
    for method, path in (("GET", "dialpad"), ("DELETE", "dialpad"), ("POST", "dialpad/connect")):
        r = srv.request(method, f"/internal/apps/{a['app_id']}/{path}",
                        headers={"Authorization": "Bearer " + b["api_key"]})
        assert r.status_code in (401, 403), f"{method} {path}: {r.status_code} {r.text}"
    assert status(srv, a, "admin")["status"] == "connected"
    assert fake_state(fd)["webhooks"] == [hook]
    # B's stream and audit hold nothing of A's connection
    assert not [e for e in events(srv, b) if e["event"].startswith("connection.")]
    assert "connection.connected" not in audit_actions(srv, b)
    # a webhook from Dialpad for A lands at A only
    fd.run_call("inbound_missed")
    poll(lambda: len(dp.tget(srv, a["api_key"], "/api/calls").json()["data"]) == 1, 5, "A's call")
    assert dp.tget(srv, b["api_key"], "/api/calls").json()["data"] == []


# ---- 7. https ---------------------------------------------------------------------------------------

def test_cookie_is_secure_under_https(make_server, tmp_path):
    """Served over https (TLS_CERT_FILE), the cookie that binds the browser to the state
    is Secure as well. (The fake cannot deliver to a self-signed https hook, so only the
    link and /authorize are walked here.)"""
    tls = self_signed(tmp_path)
    fd = fakedialpad.FakeDialpad(client_id=CLIENT_ID, client_secret="s", retry_scale=0.01).start()
    srv = make_server(start=False)      # (after the fake: see dialpad_oauth.world)
    try:
        srv.base = srv.base.replace("http://", "https://")
        srv.env.update({**tls, "INTERNAL_API_SECRET": dp.ADMIN_SECRET, "PUBLIC_BASE_URL": srv.base,
                        "DIALPAD_BASE_URL": fd.base_url, "DIALPAD_SANDBOX_CLIENT_ID": CLIENT_ID,
                        "DIALPAD_SANDBOX_CLIENT_SECRET": "s"})
        srv.start(wait=False)
        with warnings.catch_warnings():  # a self-signed certificate: not verified
            warnings.simplefilter("ignore")
            poll(lambda: _answers(srv), 20, "the https server")
            r = srv.post("/internal/apps", json={"name": "tls"}, headers=dp.ADMIN, verify=False)
            assert r.status_code == 201, r.text
            app = r.json()
            r = srv.post(f"/internal/apps/{app['app_id']}/dialpad/connect", headers=dp.ADMIN,
                         verify=False)
            assert r.status_code == 201, r.text
            url = r.json()["authorize_url"]
            assert url.startswith(srv.base + "/authorize?"), url
            r = requests.get(url, allow_redirects=False, verify=False, timeout=10)
        assert r.status_code == 302, r.text
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["Location"]).query))
        assert q["redirect_uri"] == srv.base + "/auth/dialpad/callback", q
        cookies = cookie_attrs(r)
        assert cookies and all("secure" in attrs for attrs in cookies), cookies
        assert all("httponly" in attrs for attrs in cookies), cookies
    finally:
        fd.stop(wait_deliveries=0)


def _answers(srv):
    try:
        return srv.get("/health", verify=False, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False
