"""What one WebSocket client may cost the server, and what it may not do to others.

- Every frame the server queues for a socket (events, pongs, error and subscribe
  replies) counts toward the socket's limit (frames and bytes): a client that
  floods pings without reading is closed (4008) and its queue freed.
- A replay is read from the log a page at a time, as the socket takes it: a
  socket that asked for since=0 and never reads holds about one page, not the
  whole replay.
- Log reads never run on a hub thread, and subscribes with "since" are rate
  limited per socket: one tenant resubscribing in a loop does not delay
  another tenant's live events.
- A socket whose credential stops working (keys revoked, key expired, app
  deactivated) is closed with 4001/4003 within about a second; a ticket issued
  by a key that has since been revoked is refused.
- A since far ahead of the log (up to the largest int64) is "nothing yet".

Memory figures are the server's VmRSS (/proc/<pid>/status); the ceilings leave
room for a slow machine and the sanitizer's allocator.
"""
import json
import socket
import struct
import threading
import time

import pytest
import requests
import websocket

import dialpad as dp
from test_ws import (Closed, Hooks, agent_event, call_event, connect, events_until, hello,
                     recv, seqs, serve, start, upgrade, assert_error)
from test_ws_protocol import OP_PING, frame

INT64_MAX = 9223372036854775807


def rss_mib(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def close_code(ws, timeout=10.0):
    """Reads (skipping everything else) until the server's close frame; its code and reason.
    Bounded by timeout however many frames come before it."""
    deadline = time.monotonic() + timeout
    ws.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            op, f = ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None, "connection ended without a close frame"
        if op == websocket.ABNF.OPCODE_CLOSE:
            data = f.data or b""
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            return code, data[2:].decode("utf-8", "replace")
    raise AssertionError(f"no close within {timeout}s")


# ---- 2. control-frame flood ---------------------------------------------------------------------

def test_ping_flood_without_reading_is_closed_and_bounded(make_server):
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096", WS_PING_INTERVAL="5")
    ws = connect(srv, key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),), timeout=10)
    hello(ws, app["app_id"])
    before = rss_mib(srv)
    ping = frame(OP_PING)  # 6 bytes: header and mask key
    chunk = ping * 65536   # 384 KiB
    sent, total = 0, 8 * 1024 * 1024
    ws.sock.settimeout(20)
    t0 = time.monotonic()
    try:
        while sent < total and time.monotonic() - t0 < 40:
            ws.sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass  # the server stopped taking them: fine
    time.sleep(1.0)  # what was sent is read by now
    grown = rss_mib(srv) - before
    print(f"\nping flood: {sent / 2**20:.1f} MiB of pings; server RSS {before:.0f} -> "
          f"{before + grown:.0f} MiB (+{grown:.0f})")
    code, reason = close_code(ws, timeout=15)
    ws.close()
    assert code == 4008, (code, reason)
    assert grown < 64, f"the server grew by {grown:.0f} MiB for one ping-flooding client"
    assert srv.get("/health").status_code == 200


def test_error_replies_count_toward_the_limit(make_server):
    """Messages the server must answer with an error are frames queued too."""
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096")
    ws = connect(srv, key, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),), timeout=10)
    hello(ws, app["app_id"])
    bad = frame(0x1, b"x")  # not JSON: an error reply each (~90 bytes)
    try:
        ws.sock.settimeout(10)
        ws.sock.sendall(bad * 50000)
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    code, reason = close_code(ws, timeout=30)
    ws.close()
    assert code == 4008, (code, reason)


# ---- 3. replay memory and pacing ---------------------------------------------------------------

def test_replay_to_non_reading_sockets_is_bounded(make_server):
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096")
    total, nsock = 3000, 30
    hooks.blast([call_event() for _ in range(total)], threads=4)  # ~1.1 KB each
    dp.wait_events(srv, key, total, timeout=30)
    before = rss_mib(srv)
    socks = []
    for _ in range(nsock):
        ws = connect(srv, key, "since=0", timeout=10,
                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
        hello(ws, app["app_id"], total)
        socks.append(ws)
    time.sleep(2.0)  # every replay as far as it goes
    grown = rss_mib(srv) - before
    print(f"\nreplay: {nsock} since=0 sockets x {total} events, not reading: server RSS "
          f"{before:.0f} -> {before + grown:.0f} MiB (+{grown:.0f})")
    # each still gets its whole replay, in order, once it reads
    for ws in socks[:3]:
        assert seqs(events_until(ws, total, timeout=30)) == list(range(1, total + 1))
    for ws in socks:
        ws.close()
    # a whole replay per socket would be ~3.5 MiB each (100+ MiB in all)
    assert grown < 48, f"{nsock} non-reading replays grew the server by {grown:.0f} MiB"


def test_paced_replay_with_live_events_during_it(make_server):
    """Live events that arrive while a paced replay waits for its reader (more of them than
    a socket's queue holds) all reach it after the replay: no gap, no duplicate, no 4008."""
    srv, app, key, hooks = serve(make_server, WS_SNDBUF="4096")
    first = 1500
    hooks.blast([agent_event() for _ in range(first)], threads=4)
    dp.wait_events(srv, key, first, timeout=30)
    ws = connect(srv, key, "since=0", timeout=10,
                 sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    hello(ws, app["app_id"], first)
    more = 1500  # while it does not read: past the 1024 frames a queue may hold
    hooks.blast([agent_event() for _ in range(more)], threads=4)
    dp.wait_events(srv, key, first + more, timeout=30)
    try:
        got = seqs(events_until(ws, first + more, timeout=40))
    except Closed as c:
        raise AssertionError(f"closed during a paced replay: {c.code} {c.reason!r}") from None
    assert got == list(range(1, first + more + 1))
    hooks.send(call_event())
    assert seqs(events_until(ws, first + more + 1)) == [first + more + 1]
    ws.close()


# ---- 4. resubscribe storms ----------------------------------------------------------------------

def test_resubscribe_storm_does_not_stall_other_tenants(make_server):
    srv = start(make_server)
    a, b = dp.create_app(srv, "a"), dp.create_app(srv, "b")
    ha, hb = Hooks(srv, a), Hooks(srv, b)
    total = 3000
    ha.blast([call_event() for _ in range(total)], threads=4)
    dp.wait_events(srv, a["api_key"], total, timeout=30)
    storm = connect(srv, a["api_key"], timeout=10)
    hello(storm)
    # tenant B's sockets: as many as there can be hub threads, so one shares the storm's
    others = []
    for _ in range(16):
        w = connect(srv, b["api_key"], timeout=10)
        hello(w)
        others.append(w)
    msg = json.dumps({"type": "subscribe", "since": 0})
    replies = []

    def reader():  # the storm's socket reads everything (so it is not a slow consumer)
        storm.settimeout(0.5)
        end = time.monotonic() + 12
        while time.monotonic() < end:
            try:
                op, f = storm.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            except Exception:  # noqa: BLE001 - closed: stop reading
                return
            if op == websocket.ABNF.OPCODE_TEXT:
                m = json.loads(f.data)
                if m.get("type") != "event":
                    replies.append(m)

    th = threading.Thread(target=reader)
    th.start()
    for _ in range(2000):
        try:
            storm.send(msg)
        except (OSError, websocket.WebSocketException):
            # the storm's own reader fell behind its error replies and the server
            # cut it as a slow consumer (4008): allowed, the storm is over
            break
    latencies = []
    for i in range(3):
        t0 = time.monotonic()
        hb.send(call_event())
        for w in others:
            m = recv(w, 30)
            assert m["type"] == "event" and m["seq"] == i + 1, m
        latencies.append(time.monotonic() - t0)
    th.join()
    storm.close()
    for w in others:
        w.close()
    print(f"\nresubscribe storm: tenant B's live events took {max(latencies):.2f}s at most")
    assert max(latencies) < 2.0, latencies
    errors = [m for m in replies if m.get("type") == "error"]
    assert errors and "subscribe" in errors[0]["message"], replies[:5]
    assert sum(1 for m in replies if m.get("type") == "subscribed") < 100


# ---- 6. credentials that stop working ----------------------------------------------------------

def wait_closed(ws, within):
    t0 = time.monotonic()
    code, reason = close_code(ws, timeout=within + 3)
    return code, reason, time.monotonic() - t0


def test_revoking_keys_closes_sockets_and_kills_tickets(make_server):
    srv, app, key, hooks = serve(make_server)
    aid = app["app_id"]
    by_key = connect(srv, key)
    hello(by_key, aid)
    t = srv.post("/api/ws-ticket", headers={"X-API-Key": key}).json()["ticket"]
    t_unused = srv.post("/api/ws-ticket", headers={"X-API-Key": key}).json()["ticket"]
    by_ticket = connect(srv, query=f"ticket={t}")
    hello(by_ticket, aid)
    r = dp.admin(srv, "POST", f"/internal/apps/{aid}/api-key/revoke")
    assert r.status_code == 200, r.text
    for ws in (by_key, by_ticket):
        code, reason, took = wait_closed(ws, 2)
        ws.close()
        assert code == 4001, (code, reason)
        assert reason, "the close should say why"
        assert took < 2.5, took
    # a ticket issued before the revocation dies with the key
    assert_error(upgrade(srv, f"ticket={t_unused}"), 401, "unauthorized")


def test_expired_grace_and_deactivation_close_sockets(make_server):
    srv, app, key, hooks = serve(make_server)
    aid = app["app_id"]
    old = connect(srv, key)
    hello(old, aid)
    r = dp.admin(srv, "POST", f"/internal/apps/{aid}/api-key", json={"grace_seconds": 1})
    assert r.status_code == 201, r.text
    new_key = r.json()["api_key"]
    fresh = connect(srv, new_key)
    hello(fresh, aid)
    code, reason, took = wait_closed(old, 3)
    old.close()
    assert code == 4001, (code, reason)
    fresh.send(json.dumps({"type": "ping"}))  # the new key's socket stays
    assert recv(fresh)["type"] == "pong"
    r = dp.admin(srv, "PATCH", f"/internal/apps/{aid}", json={"active": False})
    assert r.status_code == 200, r.text
    code, reason, took = wait_closed(fresh, 2)
    fresh.close()
    assert code == 4003, (code, reason)
    assert took < 2.5, took


def test_revocation_through_another_instance_closes_sockets(make_server, pg):
    url = pg.fresh_database("bb_ws_revoke_multi")
    env = {"INTERNAL_API_SECRET": dp.ADMIN_SECRET}
    one = make_server(env=env, database=url)
    two = make_server(env=env, database=url)
    app = dp.create_app(one)
    ws = connect(two, app["api_key"])
    hello(ws, app["app_id"])
    r = dp.admin(one, "POST", f"/internal/apps/{app['app_id']}/api-key/revoke")
    assert r.status_code == 200, r.text
    code, reason, took = wait_closed(ws, 2)
    ws.close()
    assert code == 4001, (code, reason)
    assert took < 2.5, took


# ---- 9. since at the end of int64 --------------------------------------------------------------

def test_since_far_ahead_is_nothing_yet(make_server):
    srv, app, key, hooks = serve(make_server)
    for _ in range(3):
        hooks.send(call_event())
    dp.wait_events(srv, key, 3)
    for since in (INT64_MAX, INT64_MAX - 1, 1000):
        r = srv.get(f"/api/events?since={since}", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        assert r.json() == {"data": [], "next_since": since}
    ws = connect(srv, key, f"since={INT64_MAX}")
    hello(ws, app["app_id"], 3)
    ws.send(json.dumps({"type": "ping"}))
    assert recv(ws) == {"type": "pong"}  # no reset, no replay
    ws.send(json.dumps({"type": "subscribe", "since": INT64_MAX}))
    assert recv(ws) == {"type": "subscribed"}
    ws.send(json.dumps({"type": "ping"}))
    assert recv(ws) == {"type": "pong"}
    ws.close()
    assert srv.get("/health").status_code == 200


def test_failed_replay_read_is_an_error_not_a_gap(make_server):
    """A replay the log cannot give (the database is away) is said to the client, with
    where to resume, and the socket is closed (1011): never a silent gap."""
    from conftest import PG
    own = PG()
    try:
        url = own.start()
        srv = start(make_server, database=url)
        app = dp.create_app(srv)
        key, hooks = app["api_key"], Hooks(srv, app)
        for _ in range(3):
            hooks.send(call_event())
        dp.wait_events(srv, key, 3)
        ws = connect(srv, key, "since=1", timeout=10)
        hello(ws, app["app_id"], 3)
        assert seqs(events_until(ws, 3)) == [2, 3]
        own.stop()
        ws.send(json.dumps({"type": "subscribe", "since": 1}))
        assert recv(ws, 10) == {"type": "subscribed"}
        m = recv(ws, 10)
        assert m.get("type") == "error" and "since=1" in m.get("message", ""), m
        with pytest.raises(Closed) as c:
            recv(ws, 10)
        assert c.value.code == 1011 and "since=1" in c.value.reason, (c.value.code, c.value.reason)
        ws.close()
        own.start()
        assert srv.stop() == 0
    finally:
        own.destroy()


def test_websockets_do_not_hold_http_connection_slots(make_server):
    """An upgraded plain-HTTP socket is the hub's alone: the HTTP library lets go of the
    connection (and its memory) at the upgrade, so WebSockets are bounded by
    WS_MAX_CONNECTIONS, not by MAX_CONNECTIONS, and HTTP is still served beside them."""
    srv, app, key, hooks = serve(make_server, MAX_CONNECTIONS="16", WS_MAX_CONNECTIONS="40")
    socks = [connect(srv, key) for _ in range(40)]
    for ws in socks:
        hello(ws, app["app_id"], 0)
    assert_error(upgrade(srv, headers={"X-API-Key": key}), 503, "unavailable")  # the 41st
    assert srv.get("/health").status_code == 200
    hooks.send(call_event("ringing"))
    for ws in socks:
        assert seqs(events_until(ws, 1)) == [1]
    for ws in socks[:20]:
        ws.close()
    # closed ones free their place: as many can open again
    deadline = time.monotonic() + 10
    while True:
        try:
            more = [connect(srv, key) for _ in range(20)]
            break
        except websocket.WebSocketBadStatusException:
            assert time.monotonic() < deadline, "closed sockets were not given back"
            time.sleep(0.2)
    hooks.send(call_event("ringing"))
    for ws in socks[20:] + more:
        assert seqs(events_until(ws, 2))[-1] == 2
        ws.close()


def test_websocket_over_the_servers_own_tls(make_server, tmp_path):
    """With TLS_CERT_FILE the stream works the same over wss:// (the TLS library relays the
    upgraded socket), and closing it from either side ends it cleanly."""
    import ssl
    from conftest import self_signed
    srv = start(make_server, **self_signed(tmp_path))
    r = requests.post(srv.url("/internal/apps"), json={"name": "tls"}, verify=False,
                      headers=dp.ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    app = r.json()
    url = f"wss://127.0.0.1:{srv.port}/ws"
    opts = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    for _ in range(3):
        ws = websocket.create_connection(url, header=[f"X-API-Key: {app['api_key']}"],
                                         timeout=5, sslopt=opts)
        prev = hello(ws, app["app_id"])["seq"]
        ev = call_event("ringing")
        r = requests.post(srv.url(f"/webhooks/dialpad/{app['app_id']}"), verify=False,
                          data=dp.sign(ev, app["webhook_secret"]),
                          headers={"Content-Type": "application/jwt"}, timeout=10)
        assert r.status_code == 200, r.text
        m = recv(ws)
        assert m["type"] == "event" and m["seq"] == prev + 1 and m["call_id"] == str(ev["call_id"])
        ws.send(json.dumps({"type": "ping"}))
        assert recv(ws)["type"] == "pong"
        ws.close()
