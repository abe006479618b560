"""Click-to-dial (POST /api/calls/dial) through the fake Dialpad, as the contract says:
by Dialpad user or by CRM user (through the mappings), the number in E.164, custom_data
generated when absent and found again with GET /api/calls?custom_data= once Dialpad sends
the call's events, and Dialpad's answers mapped to 409/422/429/502."""
import pytest

from dpconnect import ADMIN, connect, events, key, new_app, start_fake, start_server, status, wait_for


@pytest.fixture
def fd():
    f = start_fake()
    yield f
    f.stop()


def connected_app(make_server, fd, database=None):
    srv = start_server(make_server, fd, database=database)
    app = new_app(srv)
    assert connect(srv, app).status_code == 200
    return srv, app, status(srv, app)["dialpad_user_id"]


def dial(srv, app, **body):
    return srv.post("/api/calls/dial", json=body, headers=key(app), timeout=30)


def test_dial_by_dialpad_user_finds_its_call_by_custom_data(make_server, fd, backend):
    srv, app, user = connected_app(make_server, fd, backend)
    r = dial(srv, app, number="(415) 555-0100", dialpad_user_id=user)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "initiated" and body["dialpad_user_id"] == user
    assert body["number"] == "+14155550100"
    assert body["custom_data"].startswith("dial_") and isinstance(body["device"], dict)
    # Dialpad got the dial with the user's token, the number and our custom_data
    sent = fd.snapshot()["initiated_calls"]
    assert len(sent) == 1 and sent[0]["body"]["phone_number"] == "+14155550100"
    assert sent[0]["body"]["custom_data"] == body["custom_data"]
    # the fake's call events carry it back: the call is found by it
    calls = wait_for(lambda: srv.get("/api/calls", params={"custom_data": body["custom_data"]},
                                     headers=key(app)).json()["data"], what="the dialled call")
    assert len(calls) == 1 and calls[0]["direction"] == "outbound"
    assert calls[0]["custom_data"] == body["custom_data"]
    assert srv.get("/api/calls", params={"custom_data": "dial_other"},
                   headers=key(app)).json()["data"] == []
    # one stream event for the request itself, and the audit entry
    dialled = [e for e in events(srv, app) if e["event"] == "call.dial_requested"]
    assert len(dialled) == 1 and dialled[0]["data"]["custom_data"] == body["custom_data"]
    audit = srv.get(f"/internal/apps/{app['app_id']}/audit", headers=ADMIN).json()["data"]
    entry = [a for a in audit if a["action"] == "call.dial_requested"]
    assert len(entry) == 1 and entry[0]["actor"].startswith("key:")


def test_dial_by_crm_user_and_own_custom_data(make_server, fd):
    srv, app, user = connected_app(make_server, fd)
    srv.post(f"/internal/apps/{app['app_id']}/users/map",
             json={"dialpad_user_id": user, "crm_user_id": "agent-7"}, headers=ADMIN)
    r = dial(srv, app, number="+442079460000", crm_user_id="agent-7", custom_data="ticket-42",
             outbound_caller_id="blocked")
    assert r.status_code == 202, r.text
    assert r.json()["dialpad_user_id"] == user and r.json()["custom_data"] == "ticket-42"
    sent = fd.snapshot()["initiated_calls"][-1]
    assert str(sent["user_id"]) == user and sent["body"]["outbound_caller_id"] == "blocked"
    assert dial(srv, app, number="+14155550100", crm_user_id="nobody").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"number": "not a number", "dialpad_user_id": "1"}, "number"),
    ({"dialpad_user_id": "1"}, "number"),
    ({"number": "+14155550100"}, "dialpad_user_id"),
    ({"number": "+14155550100", "dialpad_user_id": "1", "crm_user_id": "a"}, "crm_user_id"),
    ({"number": "+14155550100", "dialpad_user_id": "x"}, "dialpad_user_id"),
    ({"number": "+14155550100", "dialpad_user_id": "1", "extra": 1}, "extra"),
    ({"number": "+14155550100", "dialpad_user_id": "1", "outbound_caller_id": "me"}, "outbound_caller_id"),
])
def test_bad_dials_are_400_and_reach_nobody(make_server, fd, body, field):
    srv, app, _ = connected_app(make_server, fd)
    r = dial(srv, app, **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request" and field in r.json()["message"]
    assert fd.snapshot()["initiated_calls"] == []


def test_not_connected_is_409(make_server, fd):
    srv = start_server(make_server, fd)
    app = new_app(srv)
    r = dial(srv, app, number="+14155550100", dialpad_user_id="1")
    assert r.status_code == 409 and r.json()["error"] == "not_connected"
    assert srv.post("/api/calls/dial", json={"number": "+14155550100", "dialpad_user_id": "1"}
                    ).status_code == 401  # and it needs a key


def test_sixth_dial_in_a_minute_is_429_with_retry_after(make_server, fd):
    srv, app, user = connected_app(make_server, fd)
    codes = [dial(srv, app, number="+14155550100", dialpad_user_id=user).status_code
             for _ in range(5)]
    assert codes == [202] * 5
    r = dial(srv, app, number="+14155550100", dialpad_user_id=user)
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0


def test_dialpad_refusals_and_outages(make_server, fd):
    srv, app, user = connected_app(make_server, fd)
    fd.set(user_on_call=True)
    r = dial(srv, app, number="+14155550100", dialpad_user_id=user)
    assert r.status_code == 422 and r.json()["error"] == "dialpad_rejected"
    assert "on a call" in r.json()["message"]
    fd.set(user_on_call=False)
    r = dial(srv, app, number="+14155550100", dialpad_user_id="123456789")  # unknown to Dialpad
    assert r.status_code == 422, r.text
    fd.set(api_fail=503)  # Dialpad down
    r = dial(srv, app, number="+14155550100", dialpad_user_id=user)
    assert r.status_code == 502 and r.json()["error"] == "dialpad_unavailable"


def test_dials_and_connections_show_in_metrics(make_server, fd):
    srv, app, user = connected_app(make_server, fd)
    assert dial(srv, app, number="+14155550100", dialpad_user_id=user).status_code == 202
    text = srv.get("/metrics", headers=ADMIN).text
    assert 'cti_dialpad_connections{status="connected"} 1' in text
    assert 'cti_dialpad_connections{status="broken"} 0' in text
    assert 'cti_dialpad_requests_total{operation="users.initiate_call",code="200"} 1' in text
    assert 'cti_dialpad_requests_total{operation="oauth.token",code="200"} 1' in text
