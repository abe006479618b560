"""Shared by the tests that need an app connected to the fake Dialpad: a fake Dialpad
started in-process, a server pointed at it, and the OAuth connect done the way a browser
does it (the link, Dialpad's consent page, the callback, one cookie jar)."""
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakedialpad"))
import fakedialpad  # noqa: E402

CLIENT_ID, CLIENT_SECRET = "bb-client", "bb-client-secret"
ADMIN_SECRET = "bb-admin-secret-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}


def start_fake(**switches):
    fd = fakedialpad.FakeDialpad(client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                 redirect_uris=None, retry_scale=0.01).start()
    if switches:
        fd.set(**switches)
    return fd


def server_env(fd, **extra):
    env = {"DIALPAD_BASE_URL": fd.base_url, "DIALPAD_SANDBOX_CLIENT_ID": CLIENT_ID,
           "DIALPAD_SANDBOX_CLIENT_SECRET": CLIENT_SECRET, "INTERNAL_API_SECRET": ADMIN_SECRET}
    env.update(extra)
    return env


def start_server(make_server, fd, database=None, **env):
    """A server whose PUBLIC_BASE_URL is its own address (the fake delivers there)."""
    srv = make_server(env=server_env(fd, **env), database=database, start=False)
    srv.env["PUBLIC_BASE_URL"] = srv.base
    return srv.start()


def new_app(srv, name="bb"):
    r = srv.post("/internal/apps", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()


def connect(srv, app):
    """The whole browser flow; returns the callback's response."""
    r = srv.post(f"/internal/apps/{app['app_id']}/dialpad/connect", headers=ADMIN)
    assert r.status_code == 201, r.text
    browser = requests.Session()
    hop = browser.get(r.json()["authorize_url"], allow_redirects=False)
    assert hop.status_code == 302, hop.text
    consent = browser.get(hop.headers["Location"], allow_redirects=False)
    assert consent.status_code == 302, consent.text
    return browser.get(consent.headers["Location"], allow_redirects=False, timeout=30)


def status(srv, app):
    return srv.get(f"/internal/apps/{app['app_id']}/dialpad", headers=ADMIN).json()


def key(app):
    return {"X-API-Key": app["api_key"]}


def events(srv, app, since=0):
    r = srv.get(f"/api/events?since={since}&limit=500", headers=key(app))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def wait_for(fn, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
