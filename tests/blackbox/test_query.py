"""The query API as a tenant's backend uses it, on both backends: filters,
pages that stay stable while calls arrive, screen pop with every number
format, other apps' ids, bad parameters."""
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dialpad import sign

ROOT = Path(__file__).resolve().parents[2]
SIM = str(ROOT / "build/release/tools/cti-sim")
ADMIN = "query-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def new_app(srv, name):
    return srv.post("/internal/apps", json={"name": name},
                    headers={"Authorization": f"Bearer {ADMIN}"}).json()


def load(srv, app, calls=48, seed=5):
    out = subprocess.run([SIM, "burst", "--url", srv.base, "--app", app["app_id"], "--secret",
                          app["webhook_secret"], "--calls", str(calls), "--seed", str(seed),
                          "--connections", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    deadline = time.time() + 20
    while srv.get("/health").json().get("pending_events") != 0 and time.time() < deadline:
        time.sleep(0.05)


def all_calls(srv, key, query=""):
    out, cursor = [], None
    while True:
        q = query + ("&" if query else "") + "limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = srv.get(f"/api/calls?{q}", headers={"X-API-Key": key}).json()
        out += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


@pytest.fixture
def loaded(make_server, backend):
    srv = make_server(env={"INTERNAL_API_SECRET": ADMIN}, database=backend)
    app = new_app(srv, "q")
    load(srv, app)
    return srv, app


def test_filters_match_the_calls(loaded):
    srv, app = loaded
    key = app["api_key"]
    every = all_calls(srv, key)
    assert len(every) > 40
    assert [c["started_at"] for c in every] == sorted((c["started_at"] for c in every), reverse=True)
    for name, values in (("status", ["ringing", "active", "on_hold", "ended"]),
                         ("outcome", ["answered", "voicemail", "missed", "unanswered"]),
                         ("direction", ["inbound", "outbound"])):
        for v in values:
            got = {c["id"] for c in all_calls(srv, key, f"{name}={v}")}
            assert got == {c["id"] for c in every if c[name] == v}, (name, v)
    roots = {c["id"] for c in all_calls(srv, key, "root_only=true")}
    assert roots == {c["id"] for c in every if not c["master_call_id"] and not c["entry_point_call_id"]}
    assert 0 < len(roots) < len(every)
    user = next(c["dialpad_user_id"] for c in every if c["dialpad_user_id"])
    assert {c["id"] for c in all_calls(srv, key, f"dialpad_user_id={user}")} == \
        {c["id"] for c in every if c["dialpad_user_id"] == user}
    srv.request("PUT", f"/api/user-mappings/{user}", json={"crm_user_id": "crm-7"},
                headers={"X-API-Key": key})
    assert {c["id"] for c in all_calls(srv, key, "crm_user_id=crm-7")} == \
        {c["id"] for c in every if c["dialpad_user_id"] == user}
    mid = sorted(c["started_at"] for c in every)[len(every) // 2]
    later = all_calls(srv, key, f"from={mid}")
    assert later and all(c["started_at"] >= mid for c in later)
    earlier = all_calls(srv, key, f"to={mid}")
    assert earlier and all(c["started_at"] < mid for c in earlier)
    assert len(later) + len(earlier) == len(every)


def test_number_filter_and_screen_pop_accept_every_format(loaded):
    srv, app = loaded
    key = {"X-API-Key": app["api_key"]}
    every = all_calls(srv, app["api_key"])
    number = next(c["external_number"] for c in every if c["external_number"].startswith("+1"))
    national = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    spaced = f"+1 {number[2:5]} {number[5:8]} {number[8:]}"
    bare = number[1:]
    expected = {c["id"] for c in every if number in (c["external_number"], c["internal_number"])}
    for form in (number, national, spaced, bare):
        got = {c["id"] for c in all_calls(srv, app["api_key"], "number=" + requests_quote(form))}
        assert got == expected, form
        pop = srv.get("/api/screen-pop", params={"number": form}, headers=key).json()
        assert pop["number"] == number
        assert [c["id"] for c in pop["recent_calls"]] == [c["id"] for c in every if c["id"] in expected][:10]
        assert pop["contact"] and pop["contact"]["phone"] == number
    unknown = srv.get("/api/screen-pop", params={"number": "+442071234567"}, headers=key).json()
    assert unknown == {"number": "+442071234567", "contact": None, "active_calls": [],
                       "recent_calls": [], "last_voicemail": None, "last_message": None,
                       "crm_users": []}


def requests_quote(s):
    from urllib.parse import quote
    return quote(s, safe="")


def test_pages_stay_stable_while_calls_arrive(make_server, backend):
    srv = make_server(env={"INTERNAL_API_SECRET": ADMIN}, database=backend)
    app = new_app(srv, "pages")
    load(srv, app, calls=30, seed=11)
    before = {c["id"] for c in all_calls(srv, app["api_key"])}
    stop = threading.Event()

    def arrive():  # new calls keep coming (newer than everything listed)
        i = 0
        while not stop.is_set() and i < 200:
            ev = {"call_id": 9000000000000000 + i, "state": "ringing", "direction": "inbound",
                  "external_number": "+14155550000", "date_started": 1900000000000 + i,
                  "event_timestamp": 1900000000000 + i}
            srv.post(f"/webhooks/dialpad/{app['app_id']}", data=sign(ev, app["webhook_secret"]))
            i += 1

    t = threading.Thread(target=arrive)
    t.start()
    try:
        seen, cursor = [], None
        first = srv.get("/api/calls?limit=5", headers={"X-API-Key": app["api_key"]}).json()
        seen += [c["id"] for c in first["data"]]
        cursor = first["next_cursor"]
        while cursor:
            page = srv.get(f"/api/calls?limit=5&cursor={cursor}",
                           headers={"X-API-Key": app["api_key"]}).json()
            seen += [c["id"] for c in page["data"]]
            cursor = page["next_cursor"]
            time.sleep(0.02)
    finally:
        stop.set()
        t.join()
    assert len(seen) == len(set(seen)), "an item was repeated across pages"
    assert before <= set(seen), "an item was skipped while calls arrived"


def test_other_apps_ids_are_404_and_bad_parameters_400(loaded):
    srv, app = loaded
    other = new_app(srv, "other")
    every = all_calls(srv, app["api_key"])
    call_id = every[0]["id"]
    key_b = {"X-API-Key": other["api_key"]}
    assert srv.get(f"/api/calls/{call_id}", headers=key_b).status_code == 404
    assert srv.get("/api/calls", headers=key_b).json()["data"] == []
    vm = next((c["id"] for c in every if c["voicemail"]), None)
    if vm:
        assert srv.get(f"/api/voicemails/{vm}", headers=key_b).status_code == 404
    key = {"X-API-Key": app["api_key"]}
    for query, name in (("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit"),
                        ("cursor=nope", "cursor"), ("status=dancing", "status"),
                        ("outcome=maybe", "outcome"), ("direction=up", "direction"),
                        ("from=yesterday", "from"), ("to=2026-13-01T00:00:00Z", "to"),
                        ("number=call-me", "number"), ("dialpad_user_id=abc", "dialpad_user_id"),
                        ("root_only=yes", "root_only")):
        r = srv.get(f"/api/calls?{query}", headers=key)
        assert r.status_code == 400, query
        assert r.json()["error"] == "invalid_request" and name in r.json()["message"], query
    assert srv.get("/api/calls/not-a-number", headers=key).status_code == 400
    assert srv.get("/api/screen-pop", headers=key).status_code == 400
    assert srv.get("/api/messages?direction=up", headers=key).status_code == 400


def test_rare_filters_read_a_bounded_walk_and_page_on(make_server, backend):
    """A filter no index serves (state, outcome, direction, root_only) tests at most
    CALLS_SCAN_MAX legs for one page: a combination that few calls match answers a
    short page, even an empty one, with a next_cursor to go on from; followed to the
    end, the pages list exactly the matching calls, newest first, once each."""
    srv = make_server(env={"INTERNAL_API_SECRET": ADMIN, "CALLS_SCAN_MAX": "6"},
                      database=backend)
    app = new_app(srv, "walk")
    load(srv, app)
    key = app["api_key"]
    every = all_calls(srv, key)  # no condition to test: full pages of 7
    assert len(every) > 40
    short_with_cursor = 0
    for query, match in (
            ("outcome=voicemail", lambda c: c["outcome"] == "voicemail"),
            ("outcome=missed&direction=inbound",
             lambda c: c["outcome"] == "missed" and c["direction"] == "inbound"),
            ("root_only=true&direction=outbound",
             lambda c: c["direction"] == "outbound" and not c["master_call_id"]
             and not c["entry_point_call_id"]),
            ("outcome=voicemail&direction=outbound", lambda c: False),
            ("status=ended&outcome=answered",
             lambda c: c["status"] == "ended" and c["outcome"] == "answered")):
        got, cursor, pages = [], None, 0
        while True:
            q = f"/api/calls?{query}&limit=7" + (f"&cursor={cursor}" if cursor else "")
            page = srv.get(q, headers={"X-API-Key": key}).json()
            pages += 1
            assert len(page["data"]) <= 7
            got += page["data"]
            cursor = page["next_cursor"]
            if cursor and len(page["data"]) < 7:
                short_with_cursor += 1
            if not cursor:
                break
        want = [c["id"] for c in every if match(c)]
        assert [c["id"] for c in got] == want, query
        assert pages >= len(every) // 6  # no page tested more than 6 legs
    assert short_with_cursor > 0
    # without a bound the same walk answers whole pages only
    srv2 = make_server(env={"INTERNAL_API_SECRET": ADMIN, "CALLS_SCAN_MAX": "0"},
                       database=backend)
    app2 = new_app(srv2, "walk")
    load(srv2, app2)
    page = srv2.get("/api/calls?outcome=voicemail&direction=outbound&limit=7",
                    headers={"X-API-Key": app2["api_key"]}).json()
    assert page == {"data": [], "next_cursor": None}
