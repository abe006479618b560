"""Reconciliation: calls whose webhooks were lost (the server was down longer than
Dialpad's ~15 s of retries, or Dialpad 'forgot' them) come back from Dialpad's call list
(GET /api/v2/call) as if their final webhook had arrived: the same call object, timeline
rows with source "reconciled", one stream event each with data.reconciled: true; running
it again changes nothing; a real webhook arriving later moves nothing back."""
import collections
import time

import pytest

from dpconnect import ADMIN, connect, events, key, new_app, start_fake, start_server, status, wait_for

OUTCOME = {"inbound_answered": "answered", "inbound_missed": "missed",
           "inbound_voicemail": "voicemail", "outbound": "answered"}
FINAL_EVENT = {"inbound_answered": "call.ended", "inbound_missed": "call.missed",
               "inbound_voicemail": "call.voicemail", "outbound": "call.ended"}


@pytest.fixture
def fd():
    f = start_fake()
    yield f
    f.stop()


def connected(make_server, fd, database=None, **env):
    """A connected app whose first reconciliation (right after connecting) is over, so
    that the calls a test plays next are the test's own runs' to find."""
    srv = start_server(make_server, fd, database=database, **env)
    app = new_app(srv)
    assert connect(srv, app).status_code == 200
    wait_for(lambda: status(srv, app)["reconciliation"], what="the first reconciliation")
    return srv, app


def reconcile(srv, app, **body):
    return srv.post(f"/internal/apps/{app['app_id']}/dialpad/reconcile", json=body or None,
                    headers=ADMIN, timeout=60)


def calls_by_id(srv, app):
    out = {}
    cursor = None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = srv.get("/api/calls", params=params, headers=key(app)).json()
        out.update({c["id"]: c for c in page["data"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


def test_calls_played_while_the_server_was_down_come_back(make_server, fd, backend):
    srv = start_server(make_server, fd, database=backend)
    app = new_app(srv)
    assert connect(srv, app).status_code == 200
    assert srv.stop() == 0
    kinds = list(OUTCOME) * 5  # 20 calls, their webhooks all lost
    played = {}
    for kind in kinds:
        evs, _ = fd.run_call(kind)
        played[str(evs[0]["call_id"])] = kind
    fd.wait_deliveries(15)
    assert all(d["outcome"] != "delivered" for d in fd.snapshot()["deliveries"]
               if d["event"]["call_id"] in [int(c) for c in played]), "the server was down"
    srv.start()  # start-up reconciliation
    calls = wait_for(lambda: (lambda c: c if set(played) <= set(c) else None)(calls_by_id(srv, app)),
                     timeout=30, what="the reconciled calls")
    for cid, kind in played.items():
        assert calls[cid]["status"] == "ended", calls[cid]
        assert calls[cid]["outcome"] == OUTCOME[kind], (kind, calls[cid])
    evs = [e for e in events(srv, app) if e["call_id"] in played]
    per_call = collections.Counter(e["call_id"] for e in evs)
    assert set(per_call.values()) == {1}, per_call  # one event each
    for e in evs:
        assert e["data"] == {"reconciled": True} and e["event"] == FINAL_EVENT[played[e["call_id"]]]
    one = srv.get(f"/api/calls/{next(iter(played))}", headers=key(app)).json()
    assert [t["source"] for t in one["timeline"]] == ["reconciled"]
    # a second run adds nothing and yields no event
    seq = events(srv, app)[-1]["seq"]
    r = reconcile(srv, app)
    assert r.status_code == 200, r.text
    assert r.json()["calls_added"] == 0 and r.json()["calls_updated"] == 0
    assert r.json()["calls_seen"] >= 20
    assert events(srv, app, since=seq) == []
    rec = status(srv, app)["reconciliation"]
    assert rec["last_run_at"] and rec["error"] is None
    text = srv.get("/metrics", headers=ADMIN).text
    assert "cti_reconcile_calls_added_total 20" in text, text[:200]
    assert 'cti_reconcile_runs_total{result="failed"} 0' in text


def test_forgotten_webhooks_are_filled_and_delivered_ones_add_nothing(make_server, fd):
    srv, app = connected(make_server, fd)
    delivered, _ = fd.run_call("inbound_answered")
    fd.set(forget={"states": ["hangup"]})  # Dialpad loses the end of the next call
    half, _ = fd.run_call("inbound_answered")
    fd.set(forget={"every_nth": 1})  # and every webhook of this one
    lost, _ = fd.run_call("inbound_missed")
    fd.set(forget=None)
    fd.wait_deliveries(10)
    ids = {k: str(v[0]["call_id"]) for k, v in
           {"delivered": delivered, "half": half, "lost": lost}.items()}
    wait_for(lambda: srv.get(f"/api/calls/{ids['half']}", headers=key(app)).status_code == 200)
    assert srv.get(f"/api/calls/{ids['half']}", headers=key(app)).json()["status"] == "active"
    assert srv.get(f"/api/calls/{ids['lost']}", headers=key(app)).status_code == 404
    seq = events(srv, app)[-1]["seq"]
    r = reconcile(srv, app)
    assert r.status_code == 200, r.text
    assert r.json()["calls_added"] == 1 and r.json()["calls_updated"] == 1, r.json()
    new = events(srv, app, since=seq)
    assert sorted((e["call_id"], e["event"]) for e in new) == sorted(
        [(ids["half"], "call.ended"), (ids["lost"], "call.missed")])
    assert all(e["data"]["reconciled"] is True for e in new)
    half_call = srv.get(f"/api/calls/{ids['half']}", headers=key(app)).json()
    assert half_call["status"] == "ended" and half_call["outcome"] == "answered"
    assert [t["source"] for t in half_call["timeline"]][-1] == "reconciled"
    assert {t["source"] for t in half_call["timeline"][:-1]} == {"webhook"}


def test_a_late_real_webhook_moves_nothing_back(make_server, fd):
    srv, app = connected(make_server, fd)
    fd.set(forget={"every_nth": 1})
    evs, _ = fd.run_call("inbound_missed")
    fd.set(forget=None)
    fd.wait_deliveries(10)
    cid = str(evs[0]["call_id"])
    assert reconcile(srv, app).json()["calls_added"] == 1
    before = srv.get(f"/api/calls/{cid}", headers=key(app)).json()
    seq = events(srv, app)[-1]["seq"]
    fd.deliver(evs, to="all")  # Dialpad's own webhooks, late (ringing, missed, hangup)
    fd.wait_deliveries(10)
    late = wait_for(lambda: [e for e in events(srv, app, since=seq) if e["call_id"] == cid]
                    if len([e for e in events(srv, app, since=seq) if e["call_id"] == cid]) == 3
                    else None, what="the late events")
    assert all(e["late"] is True for e in late), late
    after = srv.get(f"/api/calls/{cid}", headers=key(app)).json()
    assert after["status"] == "ended" and after["outcome"] == before["outcome"] == "missed"
    assert after["state"] == before["state"]
    assert sorted(t["source"] for t in after["timeline"]) == ["reconciled", "webhook", "webhook",
                                                                "webhook"]


def test_without_calls_list_scope_the_status_says_so(make_server, fd):
    srv, app = connected(make_server, fd, DIALPAD_SCOPES="screen_pop")
    r = reconcile(srv, app)
    assert r.status_code == 422 and r.json()["error"] == "dialpad_rejected"
    assert "calls:list" in r.json()["message"]
    rec = status(srv, app)["reconciliation"]
    assert rec["error"] and "calls:list" in rec["error"]


def test_reconcile_endpoint_errors(make_server, fd):
    srv = start_server(make_server, fd)
    app = new_app(srv)
    r = reconcile(srv, app)
    assert r.status_code == 409 and r.json()["error"] == "not_connected"
    assert reconcile(srv, app, since="yesterday").status_code == 400
    assert reconcile(srv, app, since="2026-01-02T00:00:00Z",
                     until="2026-01-01T00:00:00Z").status_code == 400
    assert reconcile(srv, app, extra=1).status_code == 400
    assert srv.post(f"/internal/apps/{app['app_id']}/dialpad/reconcile").status_code == 401
    assert srv.post("/internal/apps/00000000-0000-4000-8000-000000000000/dialpad/reconcile",
                    headers=ADMIN).status_code == 404
