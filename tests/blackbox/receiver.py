"""A local receiver of outbound webhooks, for tests/blackbox/test_outbound.py.

    rx = Receiver()                  # a threaded HTTP server on 127.0.0.1, a free port
    url = rx.url("/a")               # http://127.0.0.1:PORT/a  (the endpoint's url)
    rx.fail_first("/a", 2)           # the first 2 attempts of each webhook-id on /a get 500
    rx.fail_first("/a", 1, when=lambda hit: hit.json["event"] == "call.connected")
                                     # ... only of the requests the predicate picks
    rx.fail_always("/a")             # every attempt on /a gets 500 (until rx.heal("/a"))
    rx.hang("/a")                    # requests on /a are read and never answered (until heal)
    rx.slow("/a", 1.5)               # requests on /a are answered 2xx after 1.5 s
    rx.heal("/a")                    # /a answers 200 at once again (hung requests are let go:
                                     # their connections are closed without an answer)
    rx.hits("/a")                    # what arrived on /a: [Hit], in arrival order
    rx.delivered("/a")               # the hits on /a that were answered 2xx
    rx.wait(lambda: ..., timeout=20) # polls a condition to a deadline
    rx.close()

Every request is recorded as a Hit: method, path, headers (names lower-cased), body
(the exact bytes), received_at (time.time() once the body was read), answered_at (just
before the answer is written: a sender that waits for the answer cannot send the next
request before this), status (the answer; None while it hangs or when it never got one),
and the JSON body parsed (or None).

In-flight tracking: the receiver counts requests of one webhook-id that are being
handled at once (from the moment the request line is read until the answer was written
or the connection dropped). A request arriving while another of the same webhook-id is
still in flight is recorded in rx.overlaps ((webhook-id, path) pairs): two instances
sending one delivery at the same time. Hanging requests count as in flight, so tests of
overlaps do not make the receiver hang.
"""
import collections
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hit:
    __slots__ = ("method", "path", "headers", "body", "received_at", "answered_at", "status", "json")

    def __init__(self, method, path, headers, body, received_at):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.received_at = received_at
        self.answered_at = None
        self.status = None
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def id(self):
        return self.headers.get("webhook-id")

    @property
    def seq(self):
        return self.json.get("seq") if isinstance(self.json, dict) else None

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def __repr__(self):
        return f"Hit({self.path} id={self.id} seq={self.seq} status={self.status})"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers Expect: 100-continue, keeps connections

    def log_message(self, *a):  # quiet
        pass

    def do_POST(self):
        self.server.rx._handle(self)

    do_PUT = do_GET = do_PATCH = do_DELETE = do_POST


class Receiver:
    def __init__(self):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._hits = []
        self._fail_first = {}   # path -> n
        self._fail_always = set()
        self._hang = set()
        self._slow = {}         # path -> seconds
        self._attempts = collections.Counter()  # (path, webhook-id) -> attempts seen
        self._inflight = collections.Counter()  # (path, webhook-id) -> requests being handled
        self.overlaps = []
        self._closing = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.httpd.rx = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    # ---- programming it ------------------------------------------------------------------
    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_first(self, path, n, when=None):
        with self.lock:
            self._fail_first[path] = (n, when)

    def fail_always(self, path):
        with self.lock:
            self._fail_always.add(path)

    def hang(self, path):
        with self.lock:
            self._hang.add(path)

    def slow(self, path, seconds):
        with self.lock:
            self._slow[path] = seconds

    def heal(self, path):
        with self.cond:
            self._fail_first.pop(path, None)
            self._fail_always.discard(path)
            self._hang.discard(path)
            self._slow.pop(path, None)
            self.cond.notify_all()

    # ---- reading what arrived --------------------------------------------------------------
    def hits(self, path=None):
        with self.lock:
            return [h for h in self._hits if path is None or h.path == path]

    def delivered(self, path=None):
        return [h for h in self.hits(path) if h.ok]

    def delivered_seqs(self, path):
        return sorted({h.seq for h in self.delivered(path)})

    def in_flight(self, path=None):
        with self.lock:
            return sum(n for (p, _), n in self._inflight.items() if path is None or p == path)

    @staticmethod
    def wait(cond, timeout=20.0, interval=0.02, what="condition"):
        deadline = time.time() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.time() > deadline:
                raise AssertionError(f"{what} not met within {timeout}s")
            time.sleep(interval)

    def close(self):
        with self.cond:
            self._closing = True
            self._hang.clear()
            self._slow.clear()
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the handler ----------------------------------------------------------------------------
    def _handle(self, req):
        path = req.path.split("?", 1)[0]
        wid = req.headers.get("webhook-id")
        key = (path, wid)
        with self.lock:
            if wid is not None:
                if self._inflight[key] > 0:
                    self.overlaps.append(key)
                self._inflight[key] += 1
        try:
            n = int(req.headers.get("Content-Length") or 0)
            body = req.rfile.read(n) if n else b""
            hit = Hit(req.command, path, {k.lower(): v for k, v in req.headers.items()}, body, time.time())
            with self.cond:
                self._hits.append(hit)
                self._attempts[key] += 1
                attempt = self._attempts[key]
                status = 200
                n_fail, when = self._fail_first.get(path, (0, None))
                if path in self._fail_always or (attempt <= n_fail and (when is None or when(hit))):
                    status = 500
                # hang: hold the request until healed (or closed), then drop the
                # connection without an answer (the sender has most likely given up)
                hung = False
                while path in self._hang and not self._closing:
                    hung = True
                    self.cond.wait(0.1)
                if hung:
                    req.close_connection = True
                    return
                delay = self._slow.get(path, 0) if status == 200 else 0
            if delay:
                end = time.time() + delay
                with self.cond:
                    while not self._closing and time.time() < end:
                        self.cond.wait(min(0.05, max(0.0, end - time.time())))
            payload = json.dumps({"received": True} if status == 200 else {"error": "test"}).encode()
            with self.lock:
                hit.answered_at = time.time()
                hit.status = status
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            req.wfile.write(payload)
            req.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            req.close_connection = True
        finally:
            with self.lock:
                if wid is not None:
                    self._inflight[key] -= 1
