"""The HTTP framework as a client sees it: errors, limits, request ids, logs, shutdown."""
import http.client
import re
import signal
import socket
import time

import pytest
import requests

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_health_shape(make_server):
    srv = make_server()
    r = srv.get("/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = r.json()
    assert body["status"] == "healthy"
    assert body["database"] == "ok"
    assert body["backend"] == "sqlite"
    assert ISO_MS.match(body["timestamp"])
    assert r.headers["X-Request-Id"]


def test_unknown_route_is_json_404(make_server):
    srv = make_server()
    body = assert_error(srv.get("/no/such/thing"), 404, "not_found")
    assert "/no/such/thing" in body["message"]
    assert_error(srv.post("/api/nothing", json={}), 404, "not_found")


def test_wrong_method_is_405_with_allow(make_server):
    srv = make_server()
    r = srv.request("DELETE", "/health")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "GET"


def test_head_is_served_by_get_routes(make_server):
    srv = make_server()
    r = srv.request("HEAD", "/health")
    assert r.status_code == 200
    assert r.content == b""


def test_oversized_body_by_content_length_is_413(make_server):
    srv = make_server()
    r = srv.post("/health", data=b"x" * (1024 * 1024 + 1))
    assert_error(r, 413, "payload_too_large")
    assert srv.get("/health").status_code == 200  # still serving


def test_oversized_chunked_body_is_413(make_server):
    srv = make_server()

    def chunks():
        for _ in range(40):
            yield b"y" * 65536  # 2.5 MiB in all, no Content-Length

    r = srv.post("/health", data=chunks())
    assert_error(r, 413, "payload_too_large")


def test_body_at_the_limit_is_not_413(make_server):
    srv = make_server()
    r = srv.post("/health", data=b"x" * (1024 * 1024))
    assert r.status_code == 405  # read whole, then routed: /health is GET only


def test_huge_headers_are_refused_and_server_survives(make_server):
    srv = make_server()
    r = srv.get("/health", headers={"X-Big": "z" * 100_000})
    assert r.status_code in (413, 414, 431)
    assert srv.get("/health").status_code == 200


def test_request_id_generated_or_echoed(make_server):
    srv = make_server()
    a = srv.get("/health").headers["X-Request-Id"]
    b = srv.get("/health").headers["X-Request-Id"]
    assert a and b and a != b
    assert srv.get("/health", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    bad = srv.get("/health", headers={"X-Request-Id": "has spaces\tand tabs"}).headers["X-Request-Id"]
    assert bad != "has spaces\tand tabs" and " " not in bad
    assert srv.get("/nope", headers={"X-Request-Id": "r-404"}).headers["X-Request-Id"] == "r-404"


def test_keep_alive_is_kept(make_server):
    """Guards the libmicrohttpd trap: answering on the first callback closes keep-alive."""
    srv = make_server()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", "/health")
    r1 = conn.getresponse()
    r1.read()
    sock1 = conn.sock
    assert r1.getheader("Connection", "").lower() != "close"
    conn.request("GET", "/nope")
    r2 = conn.getresponse()
    r2.read()
    assert r2.status == 404
    assert conn.sock is sock1  # same TCP connection reused
    conn.close()


def test_access_log_line_per_request(make_server):
    srv = make_server()
    rid = srv.get("/health?x=1", headers={"X-Request-Id": "trace-me"}).headers["X-Request-Id"]
    time.sleep(0.2)
    lines = [l for l in srv.log_lines() if l.get("msg") == "request" and l.get("request_id") == rid]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["path"] == "/health?x=1" and line["status"] == 200
    assert line["level"] == "info" and ISO_MS.match(line["time"])
    assert isinstance(line["ms"], (int, float)) and line["client"] == "127.0.0.1"


def test_credentials_in_query_strings_are_never_logged(make_server):
    srv = make_server()
    srv.get("/health?api_key=cti_SECRETKEY123&ticket=TICKETVALUE77&since=5")
    time.sleep(0.2)
    text = srv.log_text()
    assert "SECRETKEY123" not in text and "TICKETVALUE77" not in text
    assert "since=5" in text and "api_key=REDACTED" in text


def test_log_level_warn_silences_access_log(make_server):
    srv = make_server(env={"LOG_LEVEL": "warn"})
    srv.get("/health")
    time.sleep(0.2)
    assert not [l for l in srv.log_lines() if l.get("msg") == "request"]
    assert all(l["level"] in ("warn", "error") for l in srv.log_lines())


def _slow_request_started(port):
    """Sends the headers and half the body of a POST, leaving it in flight."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    return s


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_shutdown_finishes_in_flight_requests(make_server, sig):
    srv = make_server()
    s = _slow_request_started(srv.port)
    time.sleep(0.2)
    srv.proc.send_signal(sig)
    time.sleep(0.5)
    assert srv.proc.poll() is None, "exited with a request still in flight"
    # new connections are refused once shutdown began
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url("/health"), timeout=2)
    s.sendall(b"67890")  # the in-flight request completes and gets its answer
    reply = s.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 405"), reply
    s.close()
    assert srv.stop() == 0
    assert any(l.get("msg") == "stopped" for l in srv.log_lines())


def test_shutdown_timeout_bounds_the_wait(make_server):
    srv = make_server(env={"SHUTDOWN_TIMEOUT": "1"})
    s = _slow_request_started(srv.port)
    time.sleep(0.2)
    t0 = time.time()
    assert srv.stop() == 0
    assert time.time() - t0 < 10
    assert any("shutdown timeout" in l.get("msg", "") for l in srv.log_lines())
    s.close()


def test_a_second_server_on_the_same_port_refuses_to_start(make_server, tmp_path):
    """No SO_REUSEPORT: two servers must never silently share (and split) one port."""
    import subprocess
    from conftest import BIN, base_env
    first = make_server()
    env = base_env()
    env["PORT"] = str(first.port)
    r = subprocess.run([BIN], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot listen" in r.stderr
    assert first.get("/health").status_code == 200  # the first one is untouched
    assert first.stop() == 0
    first.start()  # and the port is free again at once for a restart
    assert first.get("/health").status_code == 200
