"""HTTP framing at the byte level (raw sockets): requests a proxy in front could
read otherwise than we do (request smuggling) are 400 with the connection
closed; paths that are not UTF-8 are 404/405 with the path escaped, and every
log line stays valid UTF-8 JSON."""
import json
import socket
import time

import pytest


def exchange(port, data, wait=3.0):
    """Sends data, reads until the server closes or goes quiet. Returns (bytes, closed)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    s.sendall(data)
    out, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return out, closed


def responses(raw):
    """Splits raw bytes into (status, headers, body) tuples (Content-Length framed)."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


SMUGGLING = {
    "two_content_lengths": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Content-Length: 10\r\n\r\n0123456789",
    "same_content_length_twice": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                 b"Content-Length: 4\r\n\r\nGET ",
    "space_before_colon": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length : 32\r\n\r\n"
                          b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    "tab_before_colon": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length\t: 5\r\n\r\nhello",
    "http11_without_host": b"GET /health HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "nul_in_path": b"GET /health%00/x HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul_in_query": b"GET /health?a=%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "te_and_cl": b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_and_te": b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "te_not_chunked": b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      b"0\r\n\r\n",
    "folded_header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "folded_with_tab": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: one\r\n\ttwo three\r\n\r\n",
    "folded_transfer_encoding": b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n"
                                b" chunked\r\nContent-Length: 3\r\n\r\nabc",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_ambiguous_framing_is_400_and_closed(make_server, name):
    srv = make_server()
    raw, closed = exchange(srv.port, SMUGGLING[name])
    got = responses(raw)
    assert len(got) == 1, raw  # nothing of the rest was read as a second request
    status, headers, body = got[0]
    assert status == 400, raw
    assert headers["connection"].lower() == "close"
    err = json.loads(body)
    assert err["error"] == "invalid_request" and "malformed request" in err["message"]
    assert closed, "the connection stayed open after a 400 for framing"
    assert srv.get("/health").status_code == 200


def test_well_framed_requests_still_pass(make_server):
    """The checks above refuse nothing ordinary: keep-alive, a body, chunked, HTTP/1.0,
    headers with spaces in values, an empty value, a long run of spaces after the colon."""
    srv = make_server()
    raw, _ = exchange(srv.port,
                      b"GET /health HTTP/1.1\r\nHost: x\r\nUser-Agent: a b  c\r\nX-Empty:\r\n"
                      b"X-Spaces:      v\r\nAccept:*/*\r\n\r\n"
                      b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                      b"POST /nope HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
                      b"3\r\nabc\r\n0\r\n\r\n"
                      b"GET /health HTTP/1.0\r\n\r\n", wait=2)
    assert [r[0] for r in responses(raw)] == [200, 404, 404, 200]


@pytest.mark.parametrize("path,status,shown", [
    (b"/%C0%80x", 404, "/%C0%80x"),                  # overlong NUL
    (b"/%ED%A0%80", 404, "/%ED%A0%80"),              # a surrogate
    (b"/webhooks/dialpad/%FF", 405, "/webhooks/dialpad/%FF"),
    (b"/api/calls/%F4%90%80%80", 404, "/api/calls/%F4%90%80%80"),  # beyond U+10FFFF
    (b"/%E2%82%AC-ok", 404, "/\u20ac-ok"),            # valid UTF-8 is shown as is
])
def test_non_utf8_paths_are_404_or_405_with_the_path_escaped(make_server, path, status, shown):
    srv = make_server()
    raw, _ = exchange(srv.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n", wait=1)
    (got, headers, body), = responses(raw)
    assert got == status, raw
    msg = json.loads(body.decode("utf-8"))["message"]
    assert shown in msg
    assert not [l for l in srv.log_lines() if l.get("level") == "error"]


def test_non_utf8_path_to_a_route_is_404(make_server):
    srv = make_server()
    raw, _ = exchange(srv.port, b"POST /webhooks/dialpad/%FF HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 2\r\n\r\n{}", wait=1)
    (status, _, body), = responses(raw)
    assert status == 404 and "/webhooks/dialpad/%FF" in json.loads(body)["message"]


def test_non_utf8_query_is_400(make_server):
    srv = make_server()
    raw, _ = exchange(srv.port, b"GET /health?since=%C0%80 HTTP/1.1\r\nHost: x\r\n\r\n", wait=1)
    (status, _, body), = responses(raw)
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


def test_every_log_line_is_strict_utf8_json(make_server):
    """Raw bytes that are not UTF-8 in the target and headers reach the access log
    and the warnings; each line must still decode strictly and parse as JSON."""
    srv = make_server()
    for target in (b"/\xc0\x80", b"/\xed\xa0\x80?x=\xff", b"/%C0%80x", b"/\xf4\x90\x80\x80",
                   b"/webhooks/dialpad/%FF", b"/a\xe2\x82"):
        exchange(srv.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                           b"X-Request-Id: \xc0\xaf\r\n\r\n", wait=0.5)
    exchange(srv.port, b"GET /health HTTP/1.1\r\nHost: \xed\xa0\x80\r\nX-A: a\r\n b\r\n\r\n", wait=0.5)
    time.sleep(0.3)
    raw = srv.log_path.read_bytes()
    lines = [l for l in raw.split(b"\n") if l]
    assert len(lines) > 10
    for line in lines:
        json.loads(line.decode("utf-8", errors="strict"))
    paths = [l.get("path") for l in srv.log_lines() if l.get("msg") == "request"]
    assert "/\ufffd\ufffd" in paths  # the raw overlong bytes, each replaced
    assert not [l for l in srv.log_lines() if l.get("level") == "error"]


def test_error_message_cut_inside_a_character_is_still_json(make_server):
    """A 404 echoing a long UTF-8 id is cut to 511 bytes, here inside a character:
    that was a 500 (jansson refused the text); the message is now valid UTF-8."""
    secret = "framing-admin-secret-0123456789abcdefghijklmn"
    srv = make_server(env={"INTERNAL_API_SECRET": secret})
    r = srv.get("/internal/apps/x" + "%C3%A9" * 300, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 404, r.text
    assert r.json()["message"].startswith("no such app: x\u00e9\u00e9")
    assert not [l for l in srv.log_lines() if l.get("level") == "error"]
