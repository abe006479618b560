"""The Dialpad tokens of a connection, as a customer's engineer tests them.

Written against docs/API.md "Dialpad connection (OAuth 2.0 + PKCE)" ("Tokens"), with the
fake Dialpad (tests/fakedialpad): the background refresh before expiry (with rotation),
a refresh refused, no refresh token, a 401 on a token thought valid, and secrecy (no
token or webhook secret in clear in the SQLite files, a log line at LOG_LEVEL=debug or a
response).

The refresher looks about every second and refreshes once the time left is at most the
smaller of 5 minutes and half the lifetime: with the fake's access_token_ttl of 4 s, a
token is refreshed about 2 s after it was issued. Timeouts are generous (a loaded machine).
"""
import hashlib
import json
import time
from pathlib import Path

import requests

import dialpad as dp
from dialpad_oauth import (CLIENT_SECRET, admin, assert_no_secret, audit_actions, connect,
                           disconnect, events, fake_state, poll, status, subs_of,
                           link_token, stable, token_grants, wait_event, world)  # noqa: F401

TTL = 4          # seconds an access token lives at the fake (refresh due after ~2 s)
WAIT = 15        # seconds to wait for something the refresher does


def refreshes(fd):
    return token_grants(fake_state(fd), "refresh_token")


def token_responses(snap):
    return [r for r in snap["requests"] if r["path"] == "/oauth2/token"]


# ---- refresh ----------------------------------------------------------------------------------------

def test_refresh_before_expiry_rotates_the_refresh_token(world):
    srv, fd = world(access_token_ttl=TTL)
    app = dp.create_app(srv)
    connect(srv, fd, app, "tenant")
    snap = fake_state(fd)
    at0 = snap["access_tokens"][0]
    rt0 = snap["refresh_tokens"][0]["token"]
    st0 = status(srv, app)
    assert st0["status"] == "connected", st0

    # two refreshes: the second one trades in the refresh token the first one returned,
    # so the server stored the new pair (the old refresh token is dead at the fake)
    poll(lambda: len(refreshes(fd)) >= 2, WAIT, "two background refreshes")
    snap = fake_state(fd)
    rs = token_grants(snap, "refresh_token")
    assert rs[0]["form"]["refresh_token"] == rt0, rs[0]
    assert rs[0]["t"] < at0["expires_at"], "the first refresh came after the token expired"
    assert rs[0]["t"] >= at0["issued_at"] + 1.5, "refreshed long before it was due"
    rt1 = [t for t in snap["refresh_tokens"] if t["token"] != rt0][0]
    assert rs[1]["form"]["refresh_token"] == rt1["token"], (rs[1], rt1)
    assert {t["token"]: t["revoked"] for t in snap["refresh_tokens"]}[rt0] is True
    # one refresh at a time: never the same refresh token traded in twice, never refused
    traded = [r["form"]["refresh_token"] for r in rs]
    assert len(traded) == len(set(traded)), traded
    assert all(r["status"] == 200 for r in token_responses(snap)), token_responses(snap)

    st = status(srv, app, "tenant")
    assert st["status"] == "connected", st
    assert st["refreshed_at"], st
    assert st["access_token_expires_at"] > st0["access_token_expires_at"], (st0, st)
    assert st["reason"] in (None, ""), st
    names = [e["event"] for e in events(srv, app)]
    assert "connection.broken" not in names, names

    # the server keeps working with the rotated tokens: disconnect deletes everything
    st = disconnect(srv, app, "admin")
    assert st["left_at_dialpad"] == [], st
    snap = fake_state(fd)
    assert snap["webhooks"] == [] and subs_of(snap) == []
    assert len(snap["deauthorizations"]) == 1
    assert not [r for r in snap["requests"] if r["path"].startswith("/api/v2/") and r["status"] == 401]


def test_a_failing_token_endpoint_does_not_break_the_connection(world):
    """A 5xx from Dialpad's token endpoint is no refusal: the refresh is tried again at a
    later tick (docs/API.md, Tokens) and the connection stays connected."""
    srv, fd = world(access_token_ttl=TTL)
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    fd.set(token_fail="server_error")
    poll(lambda: len(refreshes(fd)) >= 2, WAIT, "two refresh attempts")
    st = status(srv, app)
    assert st["status"] == "connected", st
    fd.set(token_fail=None)
    n = len(refreshes(fd))

    def refreshed():
        snap = fake_state(fd)
        return [r for r in token_responses(snap)[1 + n:] if r["status"] == 200]
    poll(refreshed, WAIT, "a successful refresh once Dialpad is back")
    st = status(srv, app)
    assert st["status"] == "connected" and st["reason"] in (None, ""), st
    assert st["refreshed_at"], st
    assert "connection.broken" not in [e["event"] for e in events(srv, app)]
    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"] == [], st


def test_refresh_refused_breaks_the_connection(world):
    srv, fd = world(access_token_ttl=TTL)
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    assert status(srv, app)["status"] == "connected"
    fd.set(refuse_refresh=True)

    st = poll(lambda: (lambda s: s if s["status"] == "broken" else None)(status(srv, app, "tenant")),
              WAIT, "status broken after a refused refresh")
    assert isinstance(st["reason"], str) and st["reason"], st
    assert refreshes(fd), "broken without trying to refresh"
    assert status(srv, app, "admin")["status"] == "broken"
    ev = wait_event(srv, app, "connection.broken")
    assert ev["data"]["status"] == "broken", ev
    assert isinstance(ev["data"].get("reason"), str) and ev["data"]["reason"], ev
    evs = events(srv, app)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["event"] for e in evs].count("connection.broken") == 1, [e["event"] for e in evs]
    assert "connection.broken" in audit_actions(srv, app)

    # disconnecting a broken connection once its token is dead: what Dialpad still holds
    # is named in left_at_dialpad, and the app is not connected
    requests.post(fd.base_url + "/_fake/expire_tokens", timeout=5).raise_for_status()
    held = fake_state(fd)
    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"], st
    assert str(held["webhooks"][0]["id"]) in json.dumps(st["left_at_dialpad"]), st
    assert status(srv, app)["status"] == "not_connected"
    assert [e["event"] for e in events(srv, app)][-1] == "connection.disconnected"


def test_no_refresh_token_works_until_expiry_then_broken_expired(world):
    srv, fd = world(access_token_ttl=3, issue_refresh_token=False)
    app = dp.create_app(srv)
    t0 = time.time()
    connect(srv, fd, app, "tenant")
    snap = fake_state(fd)
    assert snap["refresh_tokens"] == []
    expires = snap["access_tokens"][0]["expires_at"]
    st = status(srv, app)
    if time.time() < expires - 0.5:   # (a machine slow enough to have passed it says nothing)
        assert st["status"] == "connected", st

    st = poll(lambda: (lambda s: s if s["status"] == "broken" else None)(status(srv, app)),
              WAIT, "status broken after the token expired")
    assert time.time() >= expires - 0.2, "broken before the token expired"
    assert st["reason"] == "expired", st
    assert refreshes(fd) == [], "a refresh without a refresh token"
    ev = wait_event(srv, app, "connection.broken")
    assert ev["data"] == dict(ev["data"], status="broken", reason="expired"), ev
    assert "connection.broken" in audit_actions(srv, app)
    assert time.time() - t0 < 60


def test_401_on_a_valid_token_refreshes_once_and_retries(world):
    srv, fd = world()                     # tokens live an hour: no background refresh
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    snap = fake_state(fd)
    at0 = snap["access_tokens"][0]["token"]
    n0 = len(snap["requests"])
    # Dialpad now refuses every access token it issued (the server thinks them valid)
    requests.post(fd.base_url + "/_fake/expire_tokens", timeout=5).raise_for_status()

    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"] == [], st
    snap = fake_state(fd)
    assert snap["webhooks"] == [] and subs_of(snap) == [], snap
    later = snap["requests"][n0:]
    api = [r for r in later if r["path"].startswith("/api/v2/")]
    refused = [r for r in api if r["status"] == 401]
    assert refused, f"Dialpad never answered 401: the test tested nothing: {later}"
    rs = token_grants(snap, "refresh_token")
    assert len(rs) == 1, rs                             # one refresh ...
    assert [r["status"] for r in later if r["path"] == "/oauth2/token"] == [200]
    for r in refused:                                   # ... and one retry of what was refused
        again = [x for x in api if (x["method"], x["path"]) == (r["method"], r["path"])]
        assert [x["status"] for x in again] == [401, 200], again
    # the deauthorize used the refreshed token
    assert len(snap["deauthorizations"]) == 1
    assert snap["deauthorizations"][0]["access_token"] != at0
    assert status(srv, app)["status"] == "not_connected"


def test_two_instances_refresh_one_at_a_time(world, make_server, pg):
    """Two servers on one PostgreSQL (one TOKEN_ENCRYPTION_KEY) both run the refresher:
    a refresh token is traded in once, never twice (a second trade would be refused by
    Dialpad and break the connection)."""
    url = pg.fresh_database("bb_dp_two_refreshers")
    env = {"TOKEN_ENCRYPTION_KEY": hashlib.sha256(b"bb two refreshers").hexdigest()}
    one, fd = world(database=url, env=env, access_token_ttl=TTL)
    two = make_server(env={k: v for k, v in one.env.items() if k not in ("PORT", "DATABASE_URL")},
                      database=url)
    app = dp.create_app(one)
    connect(one, fd, app, "tenant")
    poll(lambda: len(refreshes(fd)) >= 3, WAIT + 5, "three background refreshes")
    snap = fake_state(fd)
    traded = [r["form"]["refresh_token"] for r in token_grants(snap, "refresh_token")]
    assert len(traded) == len(set(traded)), "a refresh token traded in twice"
    assert all(r["status"] == 200 for r in token_responses(snap)), token_responses(snap)
    for srv in (one, two):
        st = status(srv, app, "tenant")
        assert st["status"] == "connected", st
    # the other instance holds (and can read) the current tokens
    st = disconnect(two, app, "admin")
    assert st["left_at_dialpad"] == [], st
    snap = fake_state(fd)
    assert snap["webhooks"] == [] and subs_of(snap) == []


def test_connection_survives_a_restart(world, tmp_path):
    """The tokens are sealed with DATA_DIR/token-key (generated in sandbox): a restarted
    server reads them back and can still act at Dialpad."""
    srv, fd = world(database=f"sqlite:{tmp_path}/restart.db")
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    before = status(srv, app)
    assert srv.stop() == 0
    srv.start()
    after = status(srv, app, "tenant")
    assert stable(after) == stable(before), (before, after)
    st = disconnect(srv, app, "tenant")
    assert st["left_at_dialpad"] == [], st
    snap = fake_state(fd)
    assert snap["webhooks"] == [] and subs_of(snap) == []
    assert len(snap["deauthorizations"]) == 1
    assert not [r for r in snap["requests"] if r["status"] == 401]


def test_sigkill_mid_refresh_refreshes_again_after_restart_sqlite(world, tmp_path):
    """kill -9 while a refresh is at Dialpad leaves the app's lease in the database. SQLite
    serves one instance: the restarted server drops it and refreshes within seconds
    (it used to wait for the dead process's lease to run out, 60 s, while the access
    token expired). Dialpad never saw this refresh: the refresh token is still good."""
    srv, fd = world(database=f"sqlite:{tmp_path}/kill.db", access_token_ttl=TTL)
    app = dp.create_app(srv)
    connect(srv, fd, app, "admin")
    orig, hit = fd._token_endpoint, []

    def kill_on_refresh(headers, form):
        if form.get("grant_type") == "refresh_token" and not hit:
            hit.append(form["refresh_token"])
            srv.proc.kill()  # the server dies with the refresh in flight
            return 503, {}, b'{"error": "test"}'
        return orig(headers, form)
    fd._token_endpoint = kill_on_refresh
    poll(lambda: hit, WAIT, "a background refresh")
    srv.proc.wait(10)
    srv.kill()
    srv.start()
    before = status(srv, app)
    t0 = time.time()
    status_after_restart = poll(
        lambda: (lambda st: st if st["refreshed_at"] and st["access_token_expires_at"] >
                 before["access_token_expires_at"] else None)(status(srv, app)),
        WAIT, "a refresh after the restart")
    assert status_after_restart["status"] == "connected", status_after_restart
    assert time.time() - t0 < WAIT
    # the refresh token the kill cut (never seen by Dialpad) traded in after the restart
    traded = [r["form"]["refresh_token"] for r in refreshes(fd)]
    assert traded[0] == hit[0], (traded, hit)


# ---- secrecy ------------------------------------------------------------------------------------------

def test_no_token_or_secret_in_database_log_or_response(world, tmp_path):
    db = tmp_path / "secrecy.db"
    srv, fd = world(database=f"sqlite:{db}", env={"LOG_LEVEL": "debug"}, access_token_ttl=TTL)
    app = dp.create_app(srv)
    key = app["api_key"]
    seen = []                                          # every response a client got

    def keep(r):
        seen.append(r)
        return r

    f = connect(srv, fd, app, "tenant")
    seen += f.responses()
    poll(lambda: len(refreshes(fd)) >= 1, WAIT, "a background refresh")
    fd.run_call("inbound_answered")
    dp.wait_events(srv, key, 6, timeout=10)
    for path in ("/api/dialpad/connection", "/api/events?since=0", "/api/calls"):
        keep(dp.tget(srv, key, path))
    for path in ("dialpad", "audit", ""):
        keep(admin(srv, "GET", f"/internal/apps/{app['app_id']}/{path}".rstrip("/")))
    keep(admin(srv, "GET", "/internal/apps"))

    snap = fake_state(fd)
    tokens = [t["token"] for t in snap["access_tokens"]] + [t["token"] for t in snap["refresh_tokens"]]
    assert len(tokens) >= 4, tokens                  # the first pair and a refreshed one
    secrets = [app["webhook_secret"]] + [w["secret"] for w in snap["webhooks"] if w["secret"]]

    # in the SQLite files, while the server runs (the -wal file holds the newest pages)
    files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
    assert db in files
    for p in files:
        text = p.read_bytes().decode("latin-1")
        assert_no_secret(text, tokens, f"{p.name}", "a Dialpad token")
        assert_no_secret(text, secrets, f"{p.name}", "the webhook secret")

    # the responses (bodies and headers) never carry a token
    for r in seen:
        blob = r.text + json.dumps(dict(r.headers))
        assert_no_secret(blob, tokens, f"response to {r.request.method} {r.request.path_url}")

    st = disconnect(srv, app, "admin")
    assert_no_secret(json.dumps(st), tokens, "DELETE response")
    assert srv.stop() == 0
    for p in (db, Path(f"{db}-wal")):
        if p.exists():
            text = p.read_bytes().decode("latin-1")
            assert_no_secret(text, tokens, f"{p.name} after shutdown", "a Dialpad token")
            assert_no_secret(text, secrets, f"{p.name} after shutdown", "the webhook secret")

    # the log at debug level: no token, no webhook secret, no client secret, no code,
    # no link token
    log = srv.log_text()
    assert len(log.splitlines()) > 10, "no debug log?"
    code = f.callback_query()["code"]
    link_tok = link_token(f.link)
    assert_no_secret(log, tokens, "the server log", "a Dialpad token")
    assert_no_secret(log, secrets, "the server log", "the webhook secret")
    assert_no_secret(log, [CLIENT_SECRET], "the server log", "the OAuth client secret")
    assert_no_secret(log, [code], "the server log", "the authorization code")
    assert_no_secret(log, [link_tok], "the server log", "the connect link's token")
