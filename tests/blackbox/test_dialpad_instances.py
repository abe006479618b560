"""Two instances on one PostgreSQL finishing a connect of the same app at the same moment
leave one connection, one webhook at Dialpad: connects of an app take turns (a lease in
the database), and the second replaces what the first registered."""
import threading

import requests

from dpconnect import ADMIN, key, new_app, start_fake, start_server, status

KEY = "5e0c8a1f93d24b7e6a0f1c2d3b4a59687e8d9c0b1a2f3e4d5c6b7a8f9e0d1c2b"  # shared by instances


def begin(srv, app):
    """A browser that opened a connect link and approved at Dialpad: the callback URL."""
    r = srv.post(f"/internal/apps/{app['app_id']}/dialpad/connect", headers=ADMIN)
    browser = requests.Session()
    hop = browser.get(r.json()["authorize_url"], allow_redirects=False)
    consent = browser.get(hop.headers["Location"], allow_redirects=False)
    return browser, consent.headers["Location"]


def test_two_instances_connecting_one_app_at_once_leave_one(make_server, pg):
    fd = start_fake()
    try:
        db = pg.fresh_database("bb_two_connects")
        a = start_server(make_server, fd, database=db, TOKEN_ENCRYPTION_KEY=KEY)
        b = start_server(make_server, fd, database=db, TOKEN_ENCRYPTION_KEY=KEY)
        app = new_app(a)
        flows = [begin(a, app), begin(b, app)]
        results = [None, None]

        def finish(i):
            browser, url = flows[i]
            results[i] = browser.get(url, allow_redirects=False, timeout=60).status_code

        threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert results == [200, 200], results
        snap = fd.snapshot()
        assert len(snap["webhooks"]) == 1, snap["webhooks"]
        assert {k: len(v) for k, v in snap["subscriptions"].items() if v} == {"call": 1, "sms": 1}
        st_a, st_b = status(a, app), status(b, app)
        st_a.pop("reconciliation"), st_b.pop("reconciliation")  # runs after each connect
        assert st_a == st_b and st_a["status"] == "connected"
        assert st_a["webhook_id"] == str(snap["webhooks"][0]["id"])
        events = a.get("/api/events?since=0", headers=key(app)).json()["data"]
        assert [e["event"] for e in events].count("connection.connected") == 2
    finally:
        fd.stop()
