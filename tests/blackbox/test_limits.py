"""Rate limits and the client address behind proxies (docs/API.md "Rate limits").

- RATE_LIMIT_API: per app over /api and /ws upgrades; a flooding app gets 429
  rate_limited with Retry-After (whole seconds >= 1) while another app is served.
- RATE_LIMIT_ADMIN: per client address over /internal, /metrics (METRICS_TOKEN)
  and requests without credentials.
- Webhooks and /health are never answered 4xx by the limits, whatever the flood.
- TRUSTED_PROXIES: X-Forwarded-For names the client only when the TCP peer is a
  trusted proxy (seen in the access log's `client`, and in which bucket is charged).
Each test is bounded: small limits, a few dozen requests.
"""
import http.client
import json
import threading
import time

import pytest
import websocket

import dialpad as dp
from test_ws import call_event, connect, hello, serve, upgrade

ADMIN = dp.ADMIN


def hammer(srv, method, path, n, headers=None, source=None, body=None):
    """n requests over one keep-alive connection (from source address, if given); statuses
    and the last 429's headers and body."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10,
                                   source_address=(source, 0) if source else None)
    statuses, limited = [], None
    try:
        for _ in range(n):
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            text = r.read()
            statuses.append(r.status)
            if r.status == 429:
                limited = (dict(r.getheaders()), json.loads(text))
    finally:
        c.close()
    return statuses, limited


def assert_limited(limited):
    assert limited is not None, "no 429 seen"
    headers, body = limited
    assert body["error"] == "rate_limited", body
    assert body["message"], body
    ra = headers.get("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, headers


def test_a_flooding_app_is_limited_and_another_app_is_served(make_server):
    srv, app_a, key_a, _ = serve(make_server, RATE_LIMIT_API="5")  # burst 10
    app_b = dp.create_app(srv, "other")
    # warm the key caches (bcrypt) so the flood is fast
    assert srv.get("/api/calls", headers={"X-API-Key": app_b["api_key"]}).status_code == 200
    statuses, limited = hammer(srv, "GET", "/api/calls", 40, {"X-API-Key": key_a})
    assert statuses.count(200) >= 5, statuses
    assert statuses.count(200) <= 20, statuses  # burst 10 + refill at 5/s during the flood
    assert set(statuses) <= {200, 429}, statuses
    assert_limited(limited)
    # the other app is not affected
    r = srv.get("/api/calls", headers={"X-API-Key": app_b["api_key"]})
    assert r.status_code == 200, r.text
    # Retry-After is honest: after it, A is served again
    time.sleep(int(limited[0]["Retry-After"]))
    r = srv.get("/api/calls", headers={"X-API-Key": key_a})
    assert r.status_code == 200, r.text
    metrics = srv.get("/metrics", headers=ADMIN).text
    assert 'cti_rate_limited_total{limit="app"}' in metrics


def test_websocket_upgrades_count_against_the_app(make_server):
    srv, app, key, _ = serve(make_server, RATE_LIMIT_API="2")  # burst 4
    codes = []
    for _ in range(10):
        r = upgrade(srv, headers={"X-API-Key": key})
        codes.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1
    assert 101 in codes and 429 in codes, codes


def test_admin_requests_are_limited_per_address(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "RATE_LIMIT_ADMIN": "3"})
    statuses, limited = hammer(srv, "GET", "/internal/apps", 30, ADMIN)
    assert statuses[:6] == [200] * 6, statuses  # the burst (twice the rate)
    assert 429 in statuses, statuses
    assert_limited(limited)
    # another address has its own bucket (the server listens on 127.0.0.1; a
    # connection from 127.0.0.2 is another client)
    statuses, _ = hammer(srv, "GET", "/internal/apps", 3, ADMIN, source="127.0.0.2")
    assert statuses == [200, 200, 200], statuses


def test_requests_without_credentials_are_limited_per_address(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "RATE_LIMIT_ADMIN": "2"})
    statuses, limited = hammer(srv, "GET", "/api/calls", 20)
    assert statuses[:4] == [401] * 4, statuses
    assert 429 in statuses and set(statuses) <= {401, 429}, statuses
    assert_limited(limited)


def test_metrics_token_is_limited_per_address(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "RATE_LIMIT_ADMIN": "2",
                           "METRICS_TOKEN": "bb-metrics-token-0123456789abcdef"})
    statuses, limited = hammer(srv, "GET", "/metrics", 20,
                               {"Authorization": "Bearer bb-metrics-token-0123456789abcdef"})
    assert statuses[:4] == [200] * 4, statuses
    assert 429 in statuses, statuses
    assert_limited(limited)


def test_webhooks_and_health_are_never_4xx_under_a_flood(make_server):
    # the tightest limits there are: nothing of this may be refused with a 4xx
    srv, app, key, hooks = serve(make_server, RATE_LIMIT_API="1", RATE_LIMIT_ADMIN="1")
    bodies = [dp.sign(call_event(), app["webhook_secret"]).encode() for _ in range(150)]
    results = []

    def flood(k):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            for i in range(k, len(bodies), 3):
                c.request("POST", f"/webhooks/dialpad/{app['app_id']}", body=bodies[i],
                          headers={"Content-Type": "application/jwt"})
                r = c.getresponse()
                r.read()
                results.append(r.status)
        finally:
            c.close()

    ths = [threading.Thread(target=flood, args=(k,)) for k in range(3)]
    for t in ths:
        t.start()
    health, _ = hammer(srv, "GET", "/health", 60)
    for t in ths:
        t.join()
    assert len(results) == len(bodies)
    assert all(s == 200 or s == 503 for s in results), sorted(set(results))
    assert results.count(200) >= len(bodies) // 2, sorted(set(results))
    assert all(s < 400 or s >= 500 for s in health), sorted(set(health))
    assert 429 not in health


def access_client(srv, request_id, timeout=5.0):
    """The `client` of the access log line of request_id."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in srv.log_lines():
            if line.get("msg") == "request" and line.get("request_id") == request_id:
                return line.get("client")
        time.sleep(0.05)
    raise AssertionError(f"no access log line for {request_id}")


def test_forwarded_for_is_ignored_from_an_untrusted_peer(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "RATE_LIMIT_ADMIN": "2",
                           "TRUSTED_PROXIES": "10.0.0.0/8"})
    r = srv.get("/health", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-Id": "xff-1"})
    assert r.status_code == 200
    assert access_client(srv, "xff-1") == "127.0.0.1"
    # nor can a client dodge its bucket by changing the header
    statuses = []
    for i in range(12):
        statuses.append(srv.get("/internal/apps", headers={
            **ADMIN, "X-Forwarded-For": f"198.51.100.{i}"}).status_code)
    assert 429 in statuses, statuses


def test_forwarded_for_is_used_from_a_trusted_proxy(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "RATE_LIMIT_ADMIN": "2",
                           "TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8"})
    r = srv.get("/health", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-Id": "xff-2"})
    assert r.status_code == 200
    assert access_client(srv, "xff-2") == "203.0.113.7"
    # a forged left entry is passed over; trusted hops on the right are walked
    r = srv.get("/health", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.8, 10.1.1.1",
                                    "X-Request-Id": "xff-3"})
    assert access_client(srv, "xff-3") == "203.0.113.8"
    # each forwarded client has its own bucket; the same client is limited
    for i in range(8):
        r = srv.get("/internal/apps", headers={**ADMIN, "X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 200, (i, r.text)
    statuses = [srv.get("/internal/apps", headers={**ADMIN, "X-Forwarded-For": "198.51.100.99"})
                .status_code for _ in range(12)]
    assert 429 in statuses, statuses
    # the audit log records the forwarded address
    r = srv.post("/internal/apps", json={"name": "via-proxy"},
                 headers={**ADMIN, "X-Forwarded-For": "192.0.2.44"})
    assert r.status_code == 201, r.text
    aid = r.json()["app_id"]
    r = srv.get(f"/internal/apps/{aid}/audit", headers={**ADMIN, "X-Forwarded-For": "192.0.2.45"})
    assert r.status_code == 200, r.text
    created = [e for e in r.json()["data"] if e["action"] == "app.created"]
    assert created and created[0]["client_addr"] == "192.0.2.44", r.json()
