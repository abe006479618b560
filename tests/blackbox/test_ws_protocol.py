"""WebSocket protocol conformance (RFC 6455) of GET /ws, below the JSON messages.

What a client library relies on: the server answers pings with the same
payload, pings an idle client itself and drops one that never answers, takes
fragmented messages (with control frames between the fragments), completes
the close handshake, and fails a connection that breaks the protocol with the
right close code (1002 protocol error, 1007 text that is not UTF-8, 1009 a
message over the 64 KiB limit) instead of crashing or hanging.

Frames are written by hand on the upgraded socket (websocket-client makes the
handshake; its socket then carries what the test wants, masked or not), and
the server's frames are read with websocket-client's parser.
"""
import json
import os
import socket
import struct
import threading
import time

import websocket

import dialpad as dp

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame, masked (as RFC 6455 requires) unless mask=False."""
    if isinstance(payload, str):
        payload = payload.encode()
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def serve(make_server, **env):
    e = {"INTERNAL_API_SECRET": dp.ADMIN_SECRET}
    e.update(env)
    srv = make_server(env=e)
    app = dp.create_app(srv)
    return srv, app


def connect(srv, app, timeout=5):
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws",
                                     header=[f"X-API-Key: {app['api_key']}"], timeout=timeout)
    op, data = next_frame(ws)
    assert op == OP_TEXT and json.loads(data)["type"] == "hello", (op, data)
    return ws


def next_frame(ws, timeout=5.0):
    """The server's next frame as (opcode, payload bytes), control frames included."""
    ws.settimeout(timeout)
    op, f = ws.recv_data_frame(control_frame=True)
    data = f.data if isinstance(f.data, bytes) else f.data.encode()
    return op, data


def next_message(ws, timeout=5.0):
    """The next JSON text message, skipping server pings."""
    while True:
        op, data = next_frame(ws, timeout)
        if op == OP_TEXT:
            return json.loads(data)
        assert op in (OP_PING, OP_PONG), (op, data)


def expect_close(ws, code, timeout=5.0):
    """The server's close frame carries `code`; then the server ends the connection."""
    while True:
        op, data = next_frame(ws, timeout)
        if op == OP_CLOSE:
            break
        assert op in (OP_TEXT, OP_PING), (op, data)
    got = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
    assert got == code, (got, data[2:])
    ws.sock.settimeout(timeout)
    ws.sock.sendall(frame(OP_CLOSE, data[:2]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # then EOF: the server closed its side
        try:
            if ws.sock.recv(4096) == b"":
                return data[2:].decode()
        except (ConnectionResetError, BrokenPipeError):
            return data[2:].decode()
    raise AssertionError("the server kept the connection open after the close handshake")


def test_ping_gets_pong_with_the_same_payload(make_server):
    srv, app = serve(make_server)
    ws = connect(srv, app)
    ws.sock.sendall(frame(OP_PING, b"are you there?"))
    assert next_frame(ws) == (OP_PONG, b"are you there?")
    ws.sock.sendall(frame(OP_PING))
    assert next_frame(ws) == (OP_PONG, b"")
    ws.close()


def test_fragmented_message_with_a_ping_between_fragments(make_server):
    srv, app = serve(make_server)
    ws = connect(srv, app)
    text = json.dumps({"type": "subscribe", "types": ["call.ringing"]})
    ws.sock.sendall(frame(OP_TEXT, text[:10], fin=False) + frame(OP_PING, b"mid") +
                    frame(OP_CONT, text[10:20], fin=False) + frame(OP_CONT, text[20:]))
    assert next_frame(ws) == (OP_PONG, b"mid")
    assert next_message(ws) == {"type": "subscribed"}
    # a message split across TCP writes byte by byte is the same message
    raw = frame(OP_TEXT, json.dumps({"type": "ping"}))
    for i in range(len(raw)):
        ws.sock.sendall(raw[i:i + 1])
        time.sleep(0.002)
    assert next_message(ws) == {"type": "pong"}
    ws.close()


def test_binary_and_unknown_messages_get_an_error_message(make_server):
    srv, app = serve(make_server)
    ws = connect(srv, app)
    ws.sock.sendall(frame(OP_BINARY, b"\x00\x01\x02"))
    m = next_message(ws)
    assert m["type"] == "error" and m["message"], m
    ws.sock.sendall(frame(OP_TEXT, "not json"))
    m = next_message(ws)
    assert m["type"] == "error" and m["message"], m
    ws.sock.sendall(frame(OP_TEXT, json.dumps({"type": "ping"})))  # still open
    assert next_message(ws) == {"type": "pong"}
    ws.close()


def test_close_handshake_echoes_the_code(make_server):
    srv, app = serve(make_server)
    ws = connect(srv, app)
    ws.sock.sendall(frame(OP_CLOSE, struct.pack(">H", 1000) + b"bye"))
    op, data = next_frame(ws)
    assert op == OP_CLOSE and data[:2] == struct.pack(">H", 1000), (op, data)
    ws.sock.settimeout(5)
    try:  # and the server closes the connection
        assert ws.sock.recv(4096) == b""
    except ConnectionResetError:
        pass  # websocket-client answered the server's close with another close: TCP resets


def test_protocol_errors_fail_the_connection_with_their_code(make_server):
    srv, app = serve(make_server)
    cases = [
        ("unmasked frame", frame(OP_TEXT, '{"type":"ping"}', mask=False), 1002),
        ("reserved bit set", frame(OP_TEXT, '{"type":"ping"}', rsv=4), 1002),
        ("reserved opcode", frame(0x3, b"x"), 1002),
        ("continuation of nothing", frame(OP_CONT, b"x"), 1002),
        ("fragmented ping", frame(OP_PING, b"x", fin=False), 1002),
        ("ping over 125 bytes", frame(OP_PING, b"x" * 126), 1002),
        ("new message inside a fragmented one",
         frame(OP_TEXT, b"{", fin=False) + frame(OP_TEXT, b"{}"), 1002),
        ("close with a 1-byte payload", frame(OP_CLOSE, b"\x03"), 1002),
        ("close with a reserved code", frame(OP_CLOSE, struct.pack(">H", 1005)), 1002),
        ("text that is not UTF-8", frame(OP_TEXT, b'{"type":"\xff\xfe"}'), 1007),
        ("message over 64 KiB", frame(OP_TEXT, b" " * (64 * 1024 + 1)), 1009),
        ("fragments over 64 KiB",
         frame(OP_TEXT, b" " * 40000, fin=False) + frame(OP_CONT, b" " * 40000), 1009),
    ]
    for name, raw, code in cases:
        ws = connect(srv, app)
        ws.sock.sendall(raw)
        try:
            expect_close(ws, code)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from exc
    # a message of exactly 64 KiB is fine
    ws = connect(srv, app)
    big = json.dumps({"type": "ping", "pad": "x" * (64 * 1024 - 30)})
    big += " " * (64 * 1024 - len(big))
    ws.sock.sendall(frame(OP_TEXT, big))
    assert next_message(ws) == {"type": "pong"}
    ws.close()
    assert srv.get("/health").status_code == 200


def test_server_pings_and_drops_a_silent_peer(make_server):
    srv, app = serve(make_server, WS_PING_INTERVAL="1")
    ws = connect(srv, app)
    op, data = next_frame(ws, timeout=4)
    assert op == OP_PING, op  # an idle client is pinged (websocket-client answers it)

    # a client that answers pings stays; one that never sends anything is dropped
    pings, stop = [], threading.Event()

    def answer():
        while not stop.is_set():
            try:
                op, _ = next_frame(ws, timeout=0.5)
            except websocket.WebSocketTimeoutException:
                continue
            if op == OP_PING:
                pings.append(time.monotonic())

    t = threading.Thread(target=answer)
    t.start()
    silent = connect(srv, app)
    silent.sock.settimeout(10)
    t0 = time.monotonic()
    try:
        while silent.sock.recv(4096) != b"":  # its pings, until the server hangs up
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    took = time.monotonic() - t0
    time.sleep(1.5)
    stop.set()
    t.join()
    assert 2.0 <= took <= 8.0, took
    assert len(pings) >= 3, pings
    ws.sock.sendall(frame(OP_TEXT, json.dumps({"type": "ping"})))
    assert next_message(ws) == {"type": "pong"}
    ws.close()


def test_handshake_answer_and_a_frame_sent_with_the_request(make_server):
    """The 101 is RFC 6455's (the sample key's accept value, Connection: Upgrade once), and a
    frame the client sends in the same packet as its request (read by the HTTP library
    past the request head) is handed to the stream: its ping is answered."""
    srv, app = serve(make_server)
    req = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           f"Sec-WebSocket-Version: 13\r\nX-API-Key: {app['api_key']}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(req + frame(OP_PING, b"early"))
    buf = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        buf += s.recv(4096)
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols", lines
    fields = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
    got = {k.lower(): v for k, v in fields}
    assert got["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert got["upgrade"].lower() == "websocket"
    assert [v for k, v in fields if k.lower() == "connection"] == ["Upgrade"], fields
    # then frames: hello and the pong for the early ping, in either order
    seen = set()
    while len(seen) < 2 and time.monotonic() < deadline:
        while len(rest) >= 2 and len(rest) >= 2 + (rest[1] & 0x7F):
            op, n = rest[0] & 0x0F, rest[1] & 0x7F
            assert n < 126, rest[:4]
            payload, rest = rest[2:2 + n], rest[2 + n:]
            if op == OP_PONG:
                assert payload == b"early"
                seen.add("pong")
            elif op == OP_TEXT and json.loads(payload)["type"] == "hello":
                seen.add("hello")
        if len(seen) < 2:
            rest += s.recv(4096)
    assert seen == {"hello", "pong"}, seen
    s.close()
