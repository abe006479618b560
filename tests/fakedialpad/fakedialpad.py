#!/usr/bin/python3
"""A faithful fake of the parts of Dialpad that cti-server talks to.

Standard library only (runs with /usr/bin/python3 on Debian 12).  It serves, on
127.0.0.1, Dialpad's OAuth 2.0 endpoints, the REST endpoints a CTI server uses
(users/me, webhooks, event subscriptions, initiate_call, the call list) and
delivers webhooks the way Dialpad does (HS256 JWT bodies or plain JSON, retries
only on 5xx and connection errors).  Where Dialpad's behaviour is not
documented the fake has a switch, so tests can try every plausible form; see
README.md next to this file for each behaviour and the fact it follows.

Library use:

    fd = FakeDialpad(client_id="cid", client_secret="csecret").start()
    ... fd.base_url, fd.set(company_admin=False), fd.run_call("inbound_missed")
    fd.stop()

Command use (another process drives it through /_fake/...):

    /usr/bin/python3 tests/fakedialpad/fakedialpad.py --port 0 --client-id X --client-secret Y
    -> prints one JSON line {"base_url": "http://127.0.0.1:PORT", "port": PORT}
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import random
import re
import signal
import sys
import threading
import time
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---- Dialpad vocabulary ------------------------------------------------------------------------

# Subscribable call states (SPEC25 incl. `eavesdrop`, which SPEC26 dropped) plus the wildcard.
CALL_STATES = [
    "preanswer", "calling", "ringing", "queued", "connected", "hold", "merged", "parked",
    "missed", "voicemail", "voicemail_uploaded", "transcription", "hangup", "recording",
    "call_transcription", "postcall", "csat", "pcsat", "dispositions", "ai_playbook", "admin",
    "admin_recording", "barge", "monitor", "takeover", "eavesdrop", "blocked", "recap_summary",
    "recap_action_items", "recap_outcome", "recap_purposes",
]
TARGET_TYPES = ["callcenter", "callrouter", "channel", "coachinggroup", "coachingteam",
                "department", "office", "room", "staffgroup", "unknown", "user"]
SUB_TYPES = ("call", "sms", "agent_status", "contact")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

# Retry schedules (DOC-WDF): seconds before each retry, per delivery class.
RETRY_DELAYS = {
    "call": [2.0, 4.0, 8.0],
    # "10 retries (30 s -> 60 min)": the exact steps are not published [L]; doubling, capped.
    "sms": [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0, 3600.0],
    "agent_status": [0.1, 0.2, 0.4, 0.8],
    "contact": [0.1, 0.2, 0.4, 0.8],
}

DEFAULT_SWITCHES = {
    # OAuth
    "authorize": "approve",              # "approve" | "deny" (-> error=access_denied)
    "redirect_status": 302,              # status of the authorize redirect [L]
    "code_ttl": 600,                     # seconds a code lives [L]
    "access_token_ttl": 3600,            # seconds [L]
    "expires_in": "int",                 # "int" | "string" | "omit" [L]
    "issue_refresh_token": True,         # [L] (offline_access question)
    "token_type": "bearer",              # literal [L]
    "refresh_rotation": "rotate",        # "rotate" (old refresh token dies) | "keep" [L]
    "token_fail": None,                  # None | "server_error" (500) | "invalid_grant" (400)
    "refuse_refresh": False,             # refresh grant -> 400 invalid_grant
    "token_error_status": 400,           # status of invalid_grant [L: 400 or 401]
    "token_error_style": "oauth",        # "oauth" ({error, error_description}) | "envelope" [L]
    "deauthorize_scope": "all",          # "all" tokens of the user+app | "token" (just this one) [L]
    # REST
    "company_admin": True,               # the token's user is a company admin
    "enforce_scopes": True,              # GET /call needs calls:list
    "page_size": 20,                     # list page size [L]
    "echo_secret": True,                 # secret returned in clear by webhooks CRUD [H examples]
    "nosecret_signature": "empty",       # webhook without secret: "empty" | "omit" | "null" [L]
    "require_https_hooks": False,        # hook_url https only [L]
    "webhook_delete_in_use": "allow",    # "allow" | "refuse" (400) [L]
    # rate limits
    "rate_limit_company": True,          # 20 req/s per company over /api/v2
    "rate_limit_ops": True,              # initiate_call 5/60 per user, POST /webhooks 100/60, GET /call/{id} 10/60
    "retry_after": None,                 # seconds for a Retry-After header on 429 (undocumented: none) [L]
    # click-to-dial
    "user_on_call": False,               # True or a list of user ids -> "User is currently on a call"
    "on_call_status": 400,               # [L]
    "no_active_device": False,           # -> 400 [L]
    "initiate_call_flow": True,          # initiate_call produces an outbound call and delivers its events
    "initiate_call_delay": 0.1,          # seconds after the answer before the first event is sent [L]
    # delivery
    "retry_scale": 1.0,                  # multiply every retry delay (tests: 0.01)
    "conn_retries": 2,                   # "up to 2 quick retries" on connection failure/timeout
    "conn_retry_delay": 0.5,             # seconds before a quick retry [L]
    "delivery_timeout": 5.0,             # seconds
    "content_type": None,                # None: application/jwt or application/json; else forced [L]
    "jwt_iat_exp": False,                # add iat/exp claims to the JWT payload [L: undocumented]
    "forget": None,                      # {"states": [...], "call_ids": [...], "next": n, "every_nth": n}
    "api_fail": None,                    # None | a 5xx status every /api/v2 request answers (an outage)
}


class ApiError(Exception):
    """A REST error answered with Dialpad's Google-style envelope."""

    REASONS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "notFound",
               405: "methodNotAllowed", 409: "conflict", 429: "rateLimitExceeded",
               500: "backendError"}

    def __init__(self, status, message, reason=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or self.REASONS.get(status, "error")
        self.headers = headers or {}

    def body(self):
        return {"error": {"code": self.status,
                          "errors": [{"domain": "global", "message": self.message,
                                      "reason": self.reason}],
                          "message": self.message}}


class OAuthError(Exception):
    def __init__(self, status, error, description):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


# ---- JWT ---------------------------------------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def jwt_hs256(payload, secret):
    """A compact HS256 JWT whose payload is `payload` (as PyJWT writes it)."""
    head = b64url(compact({"alg": "HS256", "typ": "JWT"}))
    signing_input = head + "." + b64url(compact(payload))
    sig = hmac.new(secret.encode("utf-8"), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def pkce_s256(verifier):
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# ---- helpers -----------------------------------------------------------------------------------

def _int64(v, name):
    """An int64 given as a JSON number or a decimal string (Dialpad accepts both)."""
    if isinstance(v, bool):
        raise ApiError(400, "bad_request: %s must be an integer" % name)
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]{1,19}", v):
        return int(v)
    raise ApiError(400, "bad_request: %s must be an integer" % name)


def _bool(v, name):
    if v is None or isinstance(v, bool):
        return v
    raise ApiError(400, "bad_request: %s must be a boolean" % name)


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _fmt_number(num):
    if num.startswith("+1") and len(num) == 12:
        return "(%s) %s-%s" % (num[2:5], num[5:8], num[8:])
    return num


def _strip_nulls(obj):
    return {k: v for k, v in obj.items() if v is not None and v != []}


def _event_kind(ev):
    if "call_id" in ev and "state" in ev:
        return "call"
    if "to_number" in ev or "from_number" in ev or "created_date" in ev:
        return "sms"
    if "on_duty_status" in ev or "availability_status" in ev:
        return "agent_status"
    if "contact" in ev and "event" in ev:
        return "contact"
    return "call"


# ---- the fake ----------------------------------------------------------------------------------

class FakeDialpad:
    def __init__(self, client_id="fake-client-id", client_secret="fake-client-secret",
                 port=0, host="127.0.0.1", redirect_uris=None, seed=None, verbose=False,
                 company_id="4508591728425653", **switches):
        self.host = host
        self.port = port
        self.verbose = verbose
        self.lock = threading.RLock()
        self.rng = random.Random(seed)
        self.company_id = str(company_id)
        self.clients = {client_id: {"secret": client_secret,
                                    "redirect_uris": list(redirect_uris) if redirect_uris else None}}
        self.client_id = client_id
        self.client_secret = client_secret
        self.switches = dict(DEFAULT_SWITCHES)
        self.set(**switches)
        self._server = None
        self._thread = None
        self._workers = []
        self._stopping = threading.Event()
        self._reset_state()

    # -- lifecycle --

    def _reset_state(self):
        with self.lock:
            self.clock_offset = 0.0
            self._used_ids = set()
            self.users = {}
            self.default_user_id = self.add_user(
                id="5188674325413888", first_name="Ana", last_name="Lopez",
                email="ana.lopez@example.com", phone="+14155550199",
                office_id="5741031244955648")
            self.codes = {}
            self.access_tokens = {}
            self.refresh_tokens = {}
            self.deauthorizations = []
            self.token_requests = []
            self.webhooks = {}
            self.subscriptions = {t: {} for t in SUB_TYPES}
            self.calls = {}            # call_id (int) -> list of events (all legs' states)
            self.initiated_calls = []
            self.deliveries = []       # one per (event, webhook)
            self.attempts = []         # one per HTTP attempt (or forgotten)
            self.requests = []         # every HTTP request the fake answered
            self._rl = {}
            self._forget_seen = 0

    def start(self):
        fake = self

        class Handler(_Handler):
            pass
        Handler.fake = fake
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="fakedialpad")
        self._thread.start()
        return self

    def stop(self, wait_deliveries=2.0):
        """Stop serving; pending retries are abandoned (recorded as "abandoned")."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        deadline = time.monotonic() + wait_deliveries
        for t in list(self._workers):
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self.port)

    # -- switches and clock --

    def set(self, **switches):
        with self.lock:
            for k, v in switches.items():
                if k not in DEFAULT_SWITCHES:
                    raise KeyError("unknown switch: %s" % k)
                if k == "forget":  # counts (next, every_nth) start when the switch is set
                    v = dict(v) if v else None
                    self._forget_seen = 0
                self.switches[k] = v
        return self

    def sw(self, name):
        return self.switches[name]

    def now(self):
        return time.time() + self.clock_offset

    def now_ms(self):
        return int(self.now() * 1000)

    def advance(self, seconds):
        """Move the fake's clock forward (token/code expiry, rate-limit windows)."""
        with self.lock:
            self.clock_offset += float(seconds)

    def new_id(self):
        """A fresh 16-digit int64 id, as Dialpad's look."""
        with self.lock:
            while True:
                i = self.rng.randrange(4_500_000_000_000_000, 6_700_000_000_000_000)
                if i not in self._used_ids:
                    self._used_ids.add(i)
                    return i

    def _token(self, prefix):
        with self.lock:
            return prefix + b64url(bytes(self.rng.getrandbits(8) for _ in range(24)))

    # -- users and clients --

    def add_client(self, client_id, client_secret, redirect_uris=None):
        with self.lock:
            self.clients[client_id] = {"secret": client_secret,
                                       "redirect_uris": list(redirect_uris) if redirect_uris else None}

    def add_user(self, id=None, first_name="Sam", last_name="Carter", email=None, phone=None,
                 office_id="5741031244955648"):
        with self.lock:
            uid = str(id if id is not None else self.new_id())
            self._used_ids.add(int(uid))
            self.users[uid] = {
                "id": uid, "company_id": self.company_id, "office_id": str(office_id),
                "emails": [email or "%s.%s@example.com" % (first_name.lower(), last_name.lower())],
                "phone_numbers": [phone or "+1415555%04d" % self.rng.randrange(10000)],
                "display_name": "%s %s" % (first_name, last_name),
                "first_name": first_name, "last_name": last_name, "state": "active",
                "is_super_admin": False, "is_available": True, "is_online": True,
                "is_on_duty": False, "do_not_disturb": False, "muted": False,
                "license": "talk", "country": "us", "language": "en", "timezone": "US/Pacific",
                "date_added": "2024-10-08T16:05:21.210000", "date_active": "2024-10-08T16:05:21",
                "international_dialing_enabled": False, "onboarding_completed": True,
                "voicemail": {"name": "default", "is_default_voicemail": True,
                              "voicemail_notifications_enabled": True},
            }
            return uid

    def user_proto(self, uid):
        u = dict(self.users[uid])
        u["is_admin"] = bool(self.sw("company_admin"))
        return u

    # -- inspection --

    def snapshot(self):
        """Everything a test may want to look at, JSON-serialisable."""
        with self.lock:
            now = self.now()
            return {
                "base_url": self.base_url,
                "switches": dict(self.switches),
                "clock_offset": self.clock_offset,
                "users": [self.user_proto(u) for u in self.users],
                "codes": [dict(c, code=k) for k, c in self.codes.items()],
                "access_tokens": [dict(t, token=k, expired=t["expires_at"] <= now)
                                  for k, t in self.access_tokens.items()],
                "refresh_tokens": [dict(t, token=k) for k, t in self.refresh_tokens.items()],
                "token_requests": list(self.token_requests),
                "deauthorizations": list(self.deauthorizations),
                "webhooks": [dict(w) for w in self.webhooks.values()],
                "subscriptions": {t: [dict(s) for s in d.values()]
                                  for t, d in self.subscriptions.items()},
                "initiated_calls": list(self.initiated_calls),
                "calls": [self.rest_call(cid) for cid in self.calls],
                "deliveries": [{k: v for k, v in d.items() if k != "done"} for d in self.deliveries],
                "attempts": [dict(a) for a in self.attempts],
                "requests": list(self.requests),
            }

    def valid_access_tokens(self):
        with self.lock:
            now = self.now()
            return [k for k, t in self.access_tokens.items()
                    if not t["revoked"] and t["expires_at"] > now]

    def valid_refresh_tokens(self):
        with self.lock:
            return [k for k, t in self.refresh_tokens.items() if not t["revoked"]]

    # -- rate limiting (sliding windows on the fake clock) --

    def _allow(self, key, limit, window):
        with self.lock:
            now = self.now()
            dq = self._rl.setdefault(key, deque())
            while dq and dq[0] <= now - window:
                dq.popleft()
            if len(dq) >= limit:
                return False
            dq.append(now)
            return True

    def _limit(self, key, limit, window):
        if not self._allow(key, limit, window):
            ra = self.sw("retry_after")
            hdrs = {"Retry-After": str(ra)} if ra is not None else {}
            raise ApiError(429, "rate_limit_exceeded", headers=hdrs)

    # ================================================================== HTTP dispatch

    def handle(self, method, path, query, headers, body):
        """-> (status, headers dict, body bytes)."""
        entry = {"method": method, "path": path, "query": query, "t": self.now()}
        try:
            if path.startswith("/_fake/"):
                status, hdrs, out = self._control(method, path, query, body)
            elif path.startswith("/oauth2/"):
                status, hdrs, out = self._oauth(method, path, query, headers, body)
            elif path.startswith("/api/v2/") or path == "/api/v2":
                status, hdrs, out = self._api(method, path, query, headers, body)
            else:
                raise ApiError(404, "not_found")
        except ApiError as e:
            status, hdrs, out = e.status, dict(e.headers), e.body()
        except OAuthError as e:
            status, hdrs = e.status, {}
            if self.sw("token_error_style") == "envelope":
                out = ApiError(e.status, e.error).body()
            else:
                out = {"error": e.error, "error_description": e.description}
        except Exception as e:  # a bug in the fake: say so loudly, as a 500
            status, hdrs, out = 500, {}, ApiError(500, "fake internal error: %r" % e).body()
        if not path.startswith("/_fake/"):
            entry["status"] = status
            with self.lock:
                self.requests.append(entry)
        if isinstance(out, (dict, list)):
            hdrs.setdefault("Content-Type", "application/json")
            out = json.dumps(out).encode("utf-8")
        elif isinstance(out, str):
            out = out.encode("utf-8")
        return status, hdrs, out or b""

    @staticmethod
    def _parse_body(headers, body):
        """JSON or form body -> dict (Dialpad's token endpoint takes both)."""
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not body:
            return {}
        if ctype == "application/x-www-form-urlencoded":
            return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8"),
                                                                keep_blank_values=True).items()}
        try:
            obj = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            if ctype in ("", "text/plain"):
                try:
                    return {k: v[-1] for k, v in urllib.parse.parse_qs(
                        body.decode("utf-8"), keep_blank_values=True, strict_parsing=True).items()}
                except ValueError:
                    pass
            raise ApiError(400, "bad_request: body is not JSON")
        if not isinstance(obj, dict):
            raise ApiError(400, "bad_request: body must be a JSON object")
        return obj

    # ================================================================== OAuth

    def _oauth(self, method, path, query, headers, body):
        if path == "/oauth2/authorize" and method == "GET":
            return self._authorize(query)
        if path == "/oauth2/token" and method == "POST":
            try:
                form = self._parse_body(headers, body)
            except ApiError:
                raise OAuthError(400, "invalid_request", "body is neither JSON nor form-encoded")
            return self._token_endpoint(headers, form)
        if path == "/oauth2/deauthorize" and method == "POST":
            return self._deauthorize(headers, query)
        raise ApiError(404 if path not in ("/oauth2/authorize", "/oauth2/token",
                                           "/oauth2/deauthorize") else 405, "not_found")

    def _authorize(self, q):
        def page(status, text):
            return status, {"Content-Type": "text/html; charset=utf-8"}, \
                "<html><body><p>%s</p></body></html>" % text
        client_id = q.get("client_id")
        redirect_uri = q.get("redirect_uri")
        with self.lock:
            client = self.clients.get(client_id)
        if not client_id or client is None:
            return page(400, "Unknown client_id")
        if not redirect_uri or "#" in redirect_uri:
            return page(400, "Missing or invalid redirect_uri")
        if client["redirect_uris"] is not None and redirect_uri not in client["redirect_uris"]:
            return page(400, "redirect_uri is not registered for this app")
        if q.get("response_type") not in (None, "code"):
            return page(400, "Unsupported response_type")
        method = q.get("code_challenge_method")
        challenge = q.get("code_challenge")
        if method not in (None, "S256", "plain"):
            return page(400, "Unsupported code_challenge_method")
        if challenge is not None and method is None:
            method = "plain"  # RFC 7636 default [L]
        state = q.get("state")
        params = []
        if self.sw("authorize") == "deny":
            params.append(("error", "access_denied"))
        else:
            code = self._token("code_")
            with self.lock:
                self.codes[code] = {
                    "client_id": client_id, "redirect_uri": redirect_uri,
                    "scopes": (q.get("scope") or "").split(), "user_id": self.default_user_id,
                    "challenge": challenge, "method": method if challenge is not None else None,
                    "expires_at": self.now() + float(self.sw("code_ttl")), "used": False,
                }
            params.append(("code", code))
        if state is not None:
            params.append(("state", state))
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urllib.parse.urlencode(params)
        return int(self.sw("redirect_status")), {"Location": location}, b""

    def _client_auth(self, headers, form):
        cid, csec = form.get("client_id"), form.get("client_secret")
        if not isinstance(cid, (str, type(None))) or not isinstance(csec, (str, type(None))):
            raise OAuthError(400, "invalid_request", "client_id and client_secret must be strings")
        auth = headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                dec = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                bid, bsec = dec.split(":", 1)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "malformed basic authorization")
            bid, bsec = urllib.parse.unquote(bid), urllib.parse.unquote(bsec)
            if (cid and cid != bid) or (csec and csec != bsec):
                raise OAuthError(400, "invalid_request", "conflicting client credentials")
            cid, csec = bid, bsec
        if not cid or not csec:
            raise OAuthError(401, "invalid_client", "client credentials are required")
        with self.lock:
            client = self.clients.get(cid)
        if client is None or not hmac.compare_digest(client["secret"], csec):
            raise OAuthError(401, "invalid_client", "bad client credentials")
        return cid

    def _issue(self, client_id, user_id, scopes):
        ttl = float(self.sw("access_token_ttl"))
        access = self._token("dpat_")
        with self.lock:
            self.access_tokens[access] = {"client_id": client_id, "user_id": user_id,
                                          "scopes": list(scopes), "issued_at": self.now(),
                                          "expires_at": self.now() + ttl, "revoked": False}
            out = {"access_token": access, "token_type": self.sw("token_type")}
            mode = self.sw("expires_in")
            if mode == "int":
                out["expires_in"] = int(ttl)
            elif mode == "string":
                out["expires_in"] = str(int(ttl))
            if self.sw("issue_refresh_token"):
                refresh = self._token("dprt_")
                self.refresh_tokens[refresh] = {"client_id": client_id, "user_id": user_id,
                                                "scopes": list(scopes), "revoked": False,
                                                "issued_at": self.now(), "access_token": access}
                out["refresh_token"] = refresh
        return out

    def _token_endpoint(self, headers, form):
        grant = form.get("grant_type")
        for f in ("grant_type", "code", "code_verifier", "refresh_token"):
            if not isinstance(form.get(f), (str, type(None))):
                raise OAuthError(400, "invalid_request", "%s must be a string" % f)
        rec = {"t": self.now(), "grant_type": grant, "form": dict(form),
               "basic_auth": (headers.get("Authorization") or "")[:6].lower() == "basic ",
               "content_type": headers.get("Content-Type")}
        with self.lock:
            self.token_requests.append(rec)
        fail = self.sw("token_fail")
        if fail == "server_error":
            return 500, {}, ApiError(500, "internal_error").body()
        if fail == "invalid_grant":
            raise OAuthError(int(self.sw("token_error_status")), "invalid_grant", "grant refused")
        cid = self._client_auth(headers, form)
        bad = int(self.sw("token_error_status"))
        if grant == "authorization_code":
            code = form.get("code")
            if not code:
                raise OAuthError(400, "invalid_request", "code is required")
            with self.lock:
                c = self.codes.get(code)
                if c is None or c["used"] or c["client_id"] != cid or c["expires_at"] <= self.now():
                    why = ("unknown code" if c is None else "code already used" if c["used"]
                           else "code expired" if c["expires_at"] <= self.now()
                           else "code issued to another client")
                    raise OAuthError(bad, "invalid_grant", why)
                c["used"] = True  # one use, even if what follows fails
            if c["challenge"] is not None:
                verifier = form.get("code_verifier")
                if not verifier:
                    raise OAuthError(bad, "invalid_grant", "code_verifier is required")
                want = pkce_s256(verifier) if c["method"] == "S256" else verifier
                if not hmac.compare_digest(want, c["challenge"]):
                    raise OAuthError(bad, "invalid_grant", "code_verifier does not match")
            return 200, {"Cache-Control": "no-store"}, self._issue(cid, c["user_id"], c["scopes"])
        if grant == "refresh_token":
            rt = form.get("refresh_token")
            if not rt:
                raise OAuthError(400, "invalid_request", "refresh_token is required")
            if self.sw("refuse_refresh"):
                raise OAuthError(bad, "invalid_grant", "refresh refused")
            with self.lock:
                r = self.refresh_tokens.get(rt)
                if r is None or r["revoked"] or r["client_id"] != cid:
                    raise OAuthError(bad, "invalid_grant", "invalid refresh token")
                if self.sw("refresh_rotation") == "rotate":
                    r["revoked"] = True
                out = self._issue(cid, r["user_id"], r["scopes"])
            return 200, {"Cache-Control": "no-store"}, out
        raise OAuthError(400, "unsupported_grant_type", "grant_type %r" % grant)

    def _bearer(self, headers, query):
        auth = headers.get("Authorization") or ""
        tok = None
        if auth[:7].lower() == "bearer ":
            tok = auth[7:].strip()
        elif "apikey" in query:
            tok = query["apikey"]
        if not tok:
            raise ApiError(401, "unauthorized: missing token")
        with self.lock:
            t = self.access_tokens.get(tok)
            if t is None or t["revoked"]:
                raise ApiError(401, "unauthorized: invalid token")
            if t["expires_at"] <= self.now():
                raise ApiError(401, "unauthorized: token expired")
            return tok, t

    def _deauthorize(self, headers, query):
        tok, t = self._bearer(headers, query)
        with self.lock:
            revoked = []
            for k, a in self.access_tokens.items():
                if k == tok or (self.sw("deauthorize_scope") == "all" and a["client_id"] == t["client_id"]
                                and a["user_id"] == t["user_id"]):
                    if not a["revoked"]:
                        a["revoked"] = True
                        revoked.append(k)
            for r in self.refresh_tokens.values():
                if r["client_id"] == t["client_id"] and r["user_id"] == t["user_id"] and (
                        self.sw("deauthorize_scope") == "all" or r["access_token"] == tok):
                    r["revoked"] = True
            self.deauthorizations.append({"t": self.now(), "client_id": t["client_id"],
                                          "user_id": t["user_id"], "access_token": tok})
        return 204, {}, b""

    # ================================================================== REST /api/v2

    ROUTES = [
        ("GET", r"/api/v2/users/(?P<uid>[^/]+)", "_get_user"),
        ("POST", r"/api/v2/users/(?P<uid>[^/]+)/initiate_call", "_initiate_call"),
        ("GET", r"/api/v2/webhooks", "_list_webhooks"),
        ("POST", r"/api/v2/webhooks", "_create_webhook"),
        ("GET", r"/api/v2/webhooks/(?P<id>[^/]+)", "_get_webhook"),
        ("PATCH", r"/api/v2/webhooks/(?P<id>[^/]+)", "_patch_webhook"),
        ("DELETE", r"/api/v2/webhooks/(?P<id>[^/]+)", "_delete_webhook"),
        ("GET", r"/api/v2/subscriptions/(?P<kind>call|sms|agent_status|contact)", "_list_subs"),
        ("POST", r"/api/v2/subscriptions/(?P<kind>call|sms|agent_status|contact)", "_create_sub"),
        ("GET", r"/api/v2/subscriptions/(?P<kind>call|sms|agent_status|contact)/(?P<id>[^/]+)", "_get_sub"),
        ("PATCH", r"/api/v2/subscriptions/(?P<kind>call|sms|agent_status|contact)/(?P<id>[^/]+)", "_patch_sub"),
        ("DELETE", r"/api/v2/subscriptions/(?P<kind>call|sms|agent_status|contact)/(?P<id>[^/]+)", "_delete_sub"),
        ("GET", r"/api/v2/call", "_list_calls"),
        ("GET", r"/api/v2/call/(?P<id>[^/]+)", "_get_call"),
    ]

    def _api(self, method, path, query, headers, body):
        fail = self.sw("api_fail")
        if fail:
            raise ApiError(int(fail), "backend_error")
        tok, t = self._bearer(headers, query)
        user_id = t["user_id"]
        if self.sw("rate_limit_company"):
            self._limit(("company",), 20, 1.0)
        path = path.rstrip("/") or path
        matched_path = False
        for m, pat, fn in self.ROUTES:
            mo = re.fullmatch(pat, path)
            if mo:
                matched_path = True
                if m == method:
                    ctx = {"token": t, "user_id": user_id, "query": query,
                           "body": self._parse_body(headers, body) if method in ("POST", "PATCH") else {}}
                    return getattr(self, fn)(ctx, **mo.groupdict())
        if matched_path:
            raise ApiError(405, "method_not_allowed")
        raise ApiError(404, "not_found")

    def _require_admin(self):
        if not self.sw("company_admin"):
            raise ApiError(403, "Requires a company admin API key.")

    def _page(self, items, query):
        size = int(self.sw("page_size"))
        off = 0
        cur = query.get("cursor")
        if cur:
            try:
                off = int(b64url_decode(cur).decode("ascii").split(":", 1)[1])
            except (ValueError, IndexError, UnicodeDecodeError):
                raise ApiError(400, "bad_request: invalid cursor")
        out = {"items": items[off:off + size]}
        if off + size < len(items):
            out["cursor"] = b64url(("o:%d" % (off + size)).encode("ascii"))
        return 200, {}, out

    # -- users --

    def _resolve_user(self, ctx, uid):
        if uid == "me":
            return ctx["user_id"]
        with self.lock:
            if uid not in self.users:
                raise ApiError(404, "User not found")
        return uid

    def _get_user(self, ctx, uid):
        uid = self._resolve_user(ctx, uid)
        with self.lock:
            return 200, {}, self.user_proto(uid)

    # -- webhooks --

    def _webhook_proto(self, w):
        out = {"id": str(w["id"]), "hook_url": w["hook_url"]}
        secret = w["secret"]
        if secret:
            out["signature"] = {"algo": "HS256", "secret": secret if self.sw("echo_secret") else "",
                                "type": "jwt"}
        else:
            mode = self.sw("nosecret_signature")
            if mode == "empty":
                out["signature"] = {"algo": "HS256", "secret": "", "type": "jwt"}
            elif mode == "null":
                out["signature"] = None
        return out

    def _find_webhook(self, wid):
        try:
            key = _int64(wid, "id")
        except ApiError:
            raise ApiError(404, "Webhook not found")
        with self.lock:
            w = self.webhooks.get(key)
        if w is None:
            raise ApiError(404, "Webhook not found")
        return w

    def _check_hook_body(self, b, create):
        url = b.get("hook_url")
        if create and url is None:
            raise ApiError(400, "bad_request: hook_url is required")
        if url is not None:
            if not isinstance(url, str):
                raise ApiError(400, "bad_request: hook_url must be a string")
            p = urllib.parse.urlparse(url)
            schemes = ("https",) if self.sw("require_https_hooks") else ("http", "https")
            if p.scheme not in schemes or not p.netloc:
                raise ApiError(400, "bad_request: invalid hook_url")
        secret = b.get("secret")
        if secret is not None and (not isinstance(secret, str) or "\n" in secret or "\r" in secret):
            raise ApiError(400, "bad_request: secret must be a single-line string")
        return url, secret

    def _list_webhooks(self, ctx):
        with self.lock:
            items = [self._webhook_proto(w) for w in self.webhooks.values()]
        return self._page(items, ctx["query"])

    def _create_webhook(self, ctx):
        if self.sw("rate_limit_ops"):
            self._limit(("webhooks.create",), 100, 60.0)
        url, secret = self._check_hook_body(ctx["body"], True)
        with self.lock:
            wid = self.new_id()
            w = {"id": wid, "hook_url": url, "secret": secret or None, "created_at": self.now()}
            self.webhooks[wid] = w
            return 200, {}, self._webhook_proto(w)

    def _get_webhook(self, ctx, id):
        w = self._find_webhook(id)
        with self.lock:
            return 200, {}, self._webhook_proto(w)

    def _patch_webhook(self, ctx, id):
        w = self._find_webhook(id)
        url, secret = self._check_hook_body(ctx["body"], False)
        with self.lock:
            if url is not None:
                w["hook_url"] = url
            if "secret" in ctx["body"]:
                w["secret"] = secret or None
            return 200, {}, self._webhook_proto(w)

    def _delete_webhook(self, ctx, id):
        w = self._find_webhook(id)
        with self.lock:
            in_use = [s for d in self.subscriptions.values() for s in d.values()
                      if s["endpoint_id"] == w["id"]]
            if in_use and self.sw("webhook_delete_in_use") == "refuse":
                raise ApiError(400, "bad_request: webhook is used by event subscriptions")
            proto = self._webhook_proto(w)
            del self.webhooks[w["id"]]
        return 200, {}, proto

    # -- subscriptions --

    def _sub_proto(self, kind, s):
        out = {"id": str(s["id"]), "enabled": s["enabled"]}
        if kind == "call":
            if s["call_states"] is not None:
                out["call_states"] = list(s["call_states"])
            out["group_calls_only"] = s["group_calls_only"]
        elif kind == "sms":
            out.update(direction=s["direction"], include_internal=s["include_internal"],
                       status=s["status"])
        elif kind == "agent_status":
            out["agent_type"] = s["agent_type"]
        elif kind == "contact":
            out["contact_type"] = s["contact_type"]
        if kind in ("call", "sms") and s["target_type"] is not None:
            out["target_type"] = s["target_type"]
            out["target_id"] = str(s["target_id"])
        w = self.webhooks.get(s["endpoint_id"])
        if w is not None:
            out["webhook"] = self._webhook_proto(w)
        return out

    def _sub_fields(self, kind, b, old):
        """Validate a create (old None) or update body -> the new field dict."""
        s = dict(old) if old else {"enabled": True, "endpoint_id": None, "target_type": None,
                                   "target_id": None}
        ep = b.get("endpoint_id", b.get("webhook_id"))
        if ep is not None:
            ep = _int64(ep, "endpoint_id")
            with self.lock:
                if ep not in self.webhooks:
                    raise ApiError(400, "bad_request: unknown endpoint_id")
            s["endpoint_id"] = ep
        elif old is None:
            raise ApiError(400, "bad_request: A webhook_id is required")
        if "enabled" in b:
            s["enabled"] = bool(_bool(b["enabled"], "enabled")) if b["enabled"] is not None else True
        if kind in ("call", "sms"):
            tt, tid = b.get("target_type"), b.get("target_id")
            if tt is not None or tid is not None:
                if tt not in TARGET_TYPES or tid is None:
                    raise ApiError(400, "bad_request: target_type and target_id go together")
                s["target_type"], s["target_id"] = tt, _int64(tid, "target_id")
        if kind == "call":
            if old is None:
                s.update(call_states=None, group_calls_only=False)
            if "call_states" in b and b["call_states"] is not None:
                cs = b["call_states"]
                if not isinstance(cs, list) or any(x not in CALL_STATES + ["all"] for x in cs):
                    raise ApiError(400, "bad_request: invalid call_states")
                s["call_states"] = list(cs)
            if "group_calls_only" in b:
                s["group_calls_only"] = bool(_bool(b["group_calls_only"], "group_calls_only"))
        elif kind == "sms":
            if old is None:
                s.update(direction=None, include_internal=False, status=False)
            d = b.get("direction", s["direction"])
            if d not in ("all", "inbound", "outbound"):
                raise ApiError(400, "bad_request: direction must be all, inbound or outbound")
            s["direction"] = d
            for f in ("include_internal", "status"):
                if f in b:
                    s[f] = bool(_bool(b[f], f))
        elif kind == "agent_status":
            at = b.get("agent_type", s.get("agent_type", "callcenter") if old else None)
            if at != "callcenter":
                raise ApiError(400, "bad_request: agent_type must be callcenter")
            s["agent_type"] = at
        elif kind == "contact":
            ct = b.get("contact_type")  # required on create AND update
            if ct not in ("local", "shared"):
                raise ApiError(400, "bad_request: contact_type must be local or shared")
            s["contact_type"] = ct
        return s

    def _find_sub(self, kind, sid):
        try:
            key = _int64(sid, "id")
        except ApiError:
            raise ApiError(404, "Subscription not found")
        with self.lock:
            s = self.subscriptions[kind].get(key)
        if s is None:
            raise ApiError(404, "Subscription not found")
        return s

    def _list_subs(self, ctx, kind):
        if kind in ("agent_status", "contact"):
            self._require_admin()
        q = ctx["query"]
        with self.lock:
            subs = list(self.subscriptions[kind].values())
            if kind in ("call", "sms") and q.get("target_type"):
                subs = [s for s in subs if s["target_type"] == q["target_type"]]
            if kind in ("call", "sms") and q.get("target_id"):
                tid = _int64(q["target_id"], "target_id")
                subs = [s for s in subs if s["target_id"] == tid]
            items = [self._sub_proto(kind, s) for s in subs]
        return self._page(items, q)

    def _create_sub(self, ctx, kind):
        if kind in ("agent_status", "contact"):
            self._require_admin()
        s = self._sub_fields(kind, ctx["body"], None)
        with self.lock:
            same = list(self.subscriptions[kind].values())
            if len(same) >= 100:
                raise ApiError(400, "bad_request: too many subscriptions of this type")
            if kind in ("call", "sms") and s["target_type"] is None and \
                    sum(1 for x in same if x["target_type"] is None) >= 10:
                raise ApiError(400, "bad_request: too many company-wide subscriptions of this type")
            s["id"] = self.new_id()
            self.subscriptions[kind][s["id"]] = s
            return 200, {}, self._sub_proto(kind, s)

    def _get_sub(self, ctx, kind, id):
        if kind in ("agent_status", "contact"):
            self._require_admin()
        s = self._find_sub(kind, id)
        with self.lock:
            return 200, {}, self._sub_proto(kind, s)

    def _patch_sub(self, ctx, kind, id):
        if kind in ("agent_status", "contact"):
            self._require_admin()
        s = self._find_sub(kind, id)
        new = self._sub_fields(kind, ctx["body"], s)
        with self.lock:
            s.update(new)
            return 200, {}, self._sub_proto(kind, s)

    def _delete_sub(self, ctx, kind, id):
        if kind in ("agent_status", "contact"):
            self._require_admin()
        s = self._find_sub(kind, id)
        with self.lock:
            proto = self._sub_proto(kind, s)
            del self.subscriptions[kind][s["id"]]
        return 200, {}, proto

    # -- click-to-dial --

    def _initiate_call(self, ctx, uid):
        uid = self._resolve_user(ctx, uid)
        if self.sw("rate_limit_ops"):
            self._limit(("initiate_call", uid), 5, 60.0)
        b = ctx["body"]
        num = b.get("phone_number")
        if not isinstance(num, str) or not E164.match(num):
            raise ApiError(400, "bad_request")
        ocid = b.get("outbound_caller_id")
        if ocid is not None and (not isinstance(ocid, str) or not (ocid == "blocked" or E164.match(ocid))):
            raise ApiError(400, "bad_request")
        cd = b.get("custom_data")
        if cd is not None and not isinstance(cd, str):
            raise ApiError(400, "bad_request")
        if b.get("group_type") is not None and b["group_type"] not in ("callcenter", "department", "office"):
            raise ApiError(400, "bad_request")
        if b.get("group_id") is not None:
            _int64(b["group_id"], "group_id")
        on_call = self.sw("user_on_call")
        if on_call is True or (isinstance(on_call, list) and uid in [str(x) for x in on_call]):
            raise ApiError(int(self.sw("on_call_status")), "User is currently on a call")
        if self.sw("no_active_device"):
            raise ApiError(400, "User has no active autocallable device")
        with self.lock:
            u = self.users[uid]
            iso = _iso(self.now())
            device = {"id": "%s-user-%s-client-web" % (u["phone_numbers"][0], uid), "type": "web",
                      "user_id": uid, "display_name": "Dialpad web", "phone_number": u["phone_numbers"][0],
                      "app_version": "fake-1.0", "date_created": "2024-10-08T16:05:21",
                      "date_registered": iso, "date_updated": iso}
            rec = {"t": self.now(), "user_id": uid, "body": dict(b), "device_id": device["id"]}
            self.initiated_calls.append(rec)
        if self.sw("initiate_call_flow"):
            events = self.make_call("outbound", user_id=uid, number=num, custom_data=cd,
                                    caller_id=ocid, start_ms=self.now_ms())
            rec["call_id"] = events[0]["call_id"]

            def later():  # Dialpad answers first; the call's events follow
                if not self._stopping.wait(float(self.sw("initiate_call_delay"))):
                    self.deliver(events, wait=False)
            t = threading.Thread(target=later, daemon=True, name="fakedialpad-dial")
            self._workers.append(t)
            t.start()
        return 200, {}, {"device": device}

    # -- call list --

    def _list_calls(self, ctx):
        self._require_admin()
        if self.sw("enforce_scopes") and "calls:list" not in ctx["token"]["scopes"]:
            raise ApiError(403, "Requires scope: calls:list")
        q = ctx["query"]
        after = _int64(q["started_after"], "started_after") if q.get("started_after") else None
        before = _int64(q["started_before"], "started_before") if q.get("started_before") else None
        tt = q.get("target_type")
        if tt is not None and tt not in TARGET_TYPES:
            raise ApiError(400, "bad_request: invalid target_type")
        tid = _int64(q["target_id"], "target_id") if q.get("target_id") else None
        with self.lock:
            rows = []
            for cid in self.calls:
                merged = self._merged(cid)
                if merged is None:  # not concluded: GET /call lists concluded calls only
                    continue
                ds = merged.get("date_started")
                if after is not None and not (ds is not None and ds > after):
                    continue
                if before is not None and not (ds is not None and ds < before):
                    continue
                tgt = merged.get("target") or {}
                if tt is not None and tgt.get("type") != tt:
                    continue
                if tid is not None and tgt.get("id") != tid:
                    continue
                rows.append((ds or 0, cid))
            rows.sort(reverse=True)  # recent calls first
            items = [self.rest_call(cid) for _, cid in rows]
        return self._page(items, q)

    def _get_call(self, ctx, id):
        if self.sw("rate_limit_ops"):
            self._limit(("call.get",), 10, 60.0)
        try:
            cid = _int64(id, "id")
        except ApiError:
            raise ApiError(404, "Call not found")
        with self.lock:
            if cid not in self.calls:
                raise ApiError(404, "Call not found")
            return 200, {}, self.rest_call(cid)

    # ================================================================== calls and REST shape

    def _merged(self, cid):
        """The concluded call as one record (its hangup, overlaid with what came later), or None.
        Concluded = its hangup happened (event_timestamp) by the fake's clock."""
        now = self.now_ms()
        evs = sorted((e for e in self.calls.get(cid, []) if _int64(e["event_timestamp"], "ts") <= now),
                     key=lambda e: _int64(e["event_timestamp"], "ts"))
        hang = [i for i, e in enumerate(evs) if e["state"] == "hangup"]
        if not hang:
            return None
        rec = dict(evs[hang[-1]])
        for e in evs[hang[-1] + 1:]:
            for k, v in e.items():
                if v not in (None, [], {}) and k not in ("state", "event_timestamp", "duration",
                                                          "total_duration"):
                    rec[k] = v
        rec["state"] = "hangup"
        return rec

    def rest_call(self, cid):
        """CallProto as GET /api/v2/call returns it: int64 as strings, nulls omitted."""
        with self.lock:
            now = self.now_ms()
            evs = sorted(self.calls[cid], key=lambda e: _int64(e["event_timestamp"], "ts"))
            past = [x for x in evs if _int64(x["event_timestamp"], "ts") <= now] or evs[:1]
            e = self._merged(cid) or dict(past[-1])

        def s(v):
            return None if v is None else str(v)

        def contact(c):
            if c is None:
                return None
            if not c:
                return {}
            return _strip_nulls({"email": c.get("email"), "id": s(c.get("id")), "name": c.get("name"),
                                 "phone": c.get("phone"), "type": c.get("type")})
        out = {
            "call_id": s(e["call_id"]), "contact": contact(e.get("contact")),
            "custom_data": e.get("custom_data"),
            "date_connected": s(e.get("date_connected")), "date_ended": s(e.get("date_ended")),
            "date_rang": s(e.get("date_rang")), "date_started": s(e.get("date_started")),
            "direction": e.get("direction"), "duration": e.get("duration"),
            "entry_point_call_id": s(e.get("entry_point_call_id")),
            "entry_point_target": contact(e.get("entry_point_target")),
            "event_timestamp": s(e.get("event_timestamp")), "external_number": e.get("external_number"),
            "group_id": e.get("group_id"), "internal_number": e.get("internal_number"),
            "is_transferred": e.get("is_transferred"), "labels": e.get("labels"),
            "master_call_id": s(e.get("master_call_id")), "mos_score": e.get("mos_score"),
            "operator_call_id": s(e.get("operator_call_id")),
            "proxy_target": contact(e.get("proxy_target")),
            "recording_details": [_strip_nulls({"id": s(r.get("id")), "recording_type": r.get("recording_type"),
                                                "url": r.get("url"), "duration": s(r.get("duration")),
                                                "start_time": s(r.get("start_time"))})
                                  for r in e.get("recording_details") or []],
            "state": e.get("state"), "target": contact(e.get("target")),
            "total_duration": e.get("total_duration"), "transcription_text": e.get("transcription_text"),
            "voicemail_share_link": e.get("voicemail_link"), "was_recorded": e.get("was_recorded"),
        }
        if e.get("duration") is not None:
            out["duration"] = float(e["duration"])
        return _strip_nulls(out)

    # -- the call-flow generator --

    def _contact_for(self, number, cid=None):
        return {"id": cid or self.new_id(), "type": "local", "name": _fmt_number(number),
                "phone": number, "email": ""}

    def make_call(self, kind, user_id=None, number="+14155550123", custom_data=None, start_ms=None,
                  hold=True, recorded=False, talk_ms=60000, caller_id=None, register=True,
                  hangup_before_missed=False):
        """Events (webhook payloads, ids as numbers) of one call leg, registered as a Dialpad call.

        kind: inbound_answered (ringing, connected[, hold, connected], hangup), inbound_missed
        (ringing, missed, hangup; hangup_before_missed=True swaps the last two, their order is
        unconfirmed), inbound_voicemail (ringing, voicemail, hangup,
        voicemail_uploaded, transcription), outbound (calling, connected, hangup[, recording]).
        Timestamps: start_ms (default: so that the hangup happened just now)."""
        if kind not in ("inbound_answered", "inbound_missed", "inbound_voicemail", "outbound"):
            raise ValueError("unknown call kind %r" % kind)
        with self.lock:
            uid = str(user_id or self.default_user_id)
            u = self.users[uid]
        talk_ms = int(talk_ms)
        hold_ms = 15000 if (hold and kind == "inbound_answered") else 0
        if start_ms is None:  # the whole flow, last event included, happened just now
            dry = self.make_call(kind, user_id=uid, number=number, start_ms=0, hold=hold,
                                 recorded=recorded, talk_ms=talk_ms, register=False,
                                 hangup_before_missed=hangup_before_missed)
            start_ms = self.now_ms() - 1000 - dry[-1]["event_timestamp"]
        S = int(start_ms)
        cid = self.new_id()
        mine = caller_id if caller_id else u["phone_numbers"][0]
        base = {
            "call_id": cid, "state": None, "direction": "outbound" if kind == "outbound" else "inbound",
            "external_number": number, "internal_number": mine, "selected_caller_id": None,
            "date_started": S, "date_first_rang": None, "date_rang": None, "date_queued": None,
            "date_connected": None, "date_ended": None, "duration": None, "total_duration": None,
            "talk_time": None, "hold_time": None, "event_timestamp": None,
            "contact": self._contact_for(number),
            "target": {"id": int(uid), "type": "user", "name": u["display_name"], "email": u["emails"][0],
                       "phone": u["phone_numbers"][0], "office_id": int(u["office_id"])},
            "entry_point_call_id": None, "entry_point_target": {}, "master_call_id": None,
            "operator_call_id": None, "proxy_target": {}, "group_id": None, "is_internal": False,
            "is_transferred": False, "transferred_from": {}, "target_availability_status": "open",
            "callback_requested": None, "csat_score": None, "mos_score": None, "labels": [],
            "routing_breadcrumbs": [], "was_recorded": False, "voicemail_link": None,
            "voicemail_recording_id": None, "call_recording_ids": [], "recording_details": [],
            "transcription_text": None, "integrations": {},
        }
        if custom_data is not None:
            base["custom_data"] = custom_data
        evs = []

        def ev(state, ts, **kw):
            e = dict(base)
            e.update(kw)
            e["state"], e["event_timestamp"] = state, ts
            evs.append(e)
            base.update({k: v for k, v in kw.items() if k.startswith("date_")})
            return e

        if kind == "outbound":
            ev("calling", S + 100)
            conn = S + 7000
            ev("connected", conn + 100, date_connected=conn)
            end = conn + talk_ms
            ev("hangup", end + 100, date_ended=end, duration=float(talk_ms), total_duration=float(end - S),
               talk_time=talk_ms, hold_time=0, was_recorded=bool(recorded), mos_score=4.41)
            if recorded:
                rid = self.new_id()
                url = "https://dialpad.com/r/%d" % rid
                ev("recording", end + 20000, was_recorded=True, call_recording_ids=[str(rid)],
                   recording_url=[url], recording_details=[{"id": str(rid), "recording_type": "callrecording",
                                                            "url": url, "duration": talk_ms - 200,
                                                            "start_time": conn + 200}])
        else:
            ev("ringing", S + 500, date_first_rang=S + 490)
            if kind == "inbound_answered":
                conn = S + 6000
                ev("connected", conn + 100, date_connected=conn)
                if hold:
                    ev("hold", conn + talk_ms // 2)
                    ev("connected", conn + talk_ms // 2 + hold_ms)
                end = conn + talk_ms + hold_ms
                ev("hangup", end + 200, date_ended=end, duration=float(end - conn),
                   total_duration=float(end - S), talk_time=end - conn, hold_time=hold_ms, mos_score=4.41,
                   public_call_review_share_link="https://dialpad.com/shared/call/FAKE%d" % cid)
            elif kind == "inbound_missed":
                end = S + 24876
                a, b = ("hangup", "missed") if hangup_before_missed else ("missed", "hangup")
                ev(a, end + 134, date_ended=end, duration=0, total_duration=float(end - S) + 0.5,
                   talk_time=0, hold_time=0)
                ev(b, end + 154, date_ended=end, duration=0, total_duration=float(end - S) + 0.5,
                   talk_time=0, hold_time=0)
            else:
                ev("voicemail", S + 29800)
                end = S + 52310
                ev("hangup", end + 90, date_ended=end, duration=0, total_duration=float(end - S) + 0.2)
                rid = self.new_id()
                link = "https://dialpad.com/r/%d" % rid
                det = [{"id": str(rid), "recording_type": "voicemail", "url": link, "duration": 21840,
                        "start_time": S + 29900}]
                ev("voicemail_uploaded", end + 7690, voicemail_link=link, voicemail_recording_id=str(rid),
                   recording_details=det)
                ev("transcription", end + 19145, voicemail_link=link, voicemail_recording_id=str(rid),
                   recording_details=det,
                   transcription_text="Hi, this is a caller, please call me back about the invoice.")
        if register:
            with self.lock:
                self.calls.setdefault(cid, []).extend(evs)
        return [dict(e) for e in evs]

    def register_events(self, events):
        """Make Dialpad 'know' arbitrary call events (e.g. fixtures) for GET /call."""
        with self.lock:
            for e in events:
                if _event_kind(e) == "call":
                    self.calls.setdefault(_int64(e["call_id"], "call_id"), []).append(dict(e))

    def make_sms(self, user_id=None, from_number="+15105550177", text="Running 10 min late",
                 direction="inbound"):
        with self.lock:
            u = self.users[str(user_id or self.default_user_id)]
        now = self.now_ms()
        mine = u["phone_numbers"][0]
        return {
            "id": self.new_id(), "direction": direction, "created_date": now - 400,
            "event_timestamp": now, "from_number": from_number if direction == "inbound" else mine,
            "to_number": [mine if direction == "inbound" else from_number],
            "target": {"id": int(u["id"]), "type": "user", "name": u["display_name"],
                       "phone_number": _fmt_number(mine)},
            "contact": {"id": self.new_id(), "name": _fmt_number(from_number), "phone_number": from_number},
            "sender_id": None, "admins": [], "is_internal": False, "mms": False, "mms_url": None,
            "message_status": "pending", "message_delivery_result": None,
            "text": text, "text_content": text,
        }

    def make_agent_status(self, user_id=None, on_duty_status="available", call_center_ids=None):
        """An agent status event (company-wide; REFERENCE section 3, the project's fixture)."""
        with self.lock:
            u = self.users[str(user_id or self.default_user_id)]
        now = self.now_ms()
        return {
            "target": {"id": int(u["id"]), "type": "user", "name": u["display_name"], "email": u["emails"][0],
                       "phone_number": u["phone_numbers"][0]},
            "availability_status": "open", "on_duty_status": on_duty_status, "on_duty_status_reason": None,
            "call_center_ids": [str(x) for x in (call_center_ids or [self.new_id()])],
            "powerdialer_mode": None, "powerdialer_session": None, "date": now - 50, "event_timestamp": now,
        }

    def make_contact_event(self, event="Created", name="Sam Carter", phone="+15105550177"):
        """A contact event {event, contact} (REFERENCE section 3; the contact's fields are [L])."""
        return {"event": event, "contact": {"id": str(self.new_id()), "name": name,
                                            "phones": [phone], "emails": [], "type": "shared"}}

    def run_call(self, kind, deliver=True, wait=True, **kw):
        """Generate a call, register it, deliver its events to the subscribed webhooks."""
        events = self.make_call(kind, **kw)
        recs = self.deliver(events, wait=wait) if deliver else []
        return events, recs

    # ================================================================== webhook delivery

    def _targets_for(self, ev):
        """Webhooks whose enabled subscriptions want this event (each webhook once)."""
        kind = _event_kind(ev)
        out = []
        with self.lock:
            for s in self.subscriptions[kind].values():
                if not s["enabled"] or s["endpoint_id"] not in self.webhooks:
                    continue
                if kind == "call":
                    cs = s["call_states"]
                    if cs is not None and "all" not in cs and ev.get("state") not in cs:
                        continue
                    if s["group_calls_only"] and not ev.get("group_id"):
                        continue
                if kind == "sms" and s["direction"] != "all" and ev.get("direction") != s["direction"]:
                    continue
                if kind in ("call", "sms") and s["target_type"] is not None:
                    tgt = ev.get("target") or {}
                    if tgt.get("type") != s["target_type"] or str(tgt.get("id")) != str(s["target_id"]):
                        continue
                w = self.webhooks[s["endpoint_id"]]
                if w not in out:
                    out.append(w)
        return out

    def _forget(self, ev):
        f = self.sw("forget")
        if not f:
            return False
        with self.lock:
            self._forget_seen += 1
            if f.get("next"):
                f["next"] -= 1
                return True
            if ev.get("state") is not None and ev.get("state") in (f.get("states") or []):
                return True
            if ev.get("call_id") is not None and str(ev.get("call_id")) in [str(x) for x in f.get("call_ids") or []]:
                return True
            n = f.get("every_nth")
            return bool(n) and self._forget_seen % int(n) == 0

    def deliver(self, events, to=None, wait=True):
        """Send events as Dialpad does.  to: None = the webhooks subscribed to each event;
        "all" = every registered webhook; a webhook id (int/str) or a hook_url = that one.
        Returns the delivery records (filled in as attempts finish; complete when wait=True)."""
        if isinstance(events, dict):
            events = [events]
        with self.lock:
            self.register_events([e for e in events if _event_kind(e) == "call" and
                                  e not in self.calls.get(_int64(e["call_id"], "call_id"), [])])
        recs, threads = [], []
        for ev in events:
            if to is None:
                hooks = self._targets_for(ev)
            else:
                with self.lock:
                    hooks = [w for w in self.webhooks.values()
                             if to == "all" or str(w["id"]) == str(to) or w["hook_url"] == to]
            for w in hooks:
                with self.lock:
                    d = {"id": len(self.deliveries) + 1, "webhook_id": str(w["id"]), "hook_url": w["hook_url"],
                         "kind": _event_kind(ev), "call_id": ev.get("call_id"), "state": ev.get("state"),
                         "event": ev, "attempts": 0, "outcome": "pending", "done": threading.Event()}
                    self.deliveries.append(d)
                recs.append(d)
                if self._forget(ev):
                    self._record_attempt(d, None, None, "forgotten", None)
                    d["outcome"] = "forgotten"
                    d["done"].set()
                    continue
                secret = w["secret"]
                if secret:
                    payload = dict(ev)
                    if self.sw("jwt_iat_exp"):
                        payload.update(iat=int(self.now()), exp=int(self.now()) + 300)
                    body = jwt_hs256(payload, secret).encode("ascii")
                    ctype = "application/jwt"
                else:
                    body = compact(ev)
                    ctype = "application/json"
                ctype = self.sw("content_type") or ctype
                d["format"] = "jwt" if secret else "json"
                # first attempt in order, here; retries in the background (they arrive out of order)
                again = self._attempt(d, body, ctype)
                if again is not None:
                    t = threading.Thread(target=self._retry_loop, args=(d, body, ctype, again),
                                         daemon=True, name="fakedialpad-retry")
                    threads.append(t)
                    self._workers.append(t)
                    t.start()
        if wait:
            for d in recs:
                d["done"].wait(120)
        return recs

    def wait_deliveries(self, timeout=10.0):
        """Wait until every delivery so far is finished (retries included).  -> True if all are."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                workers = [t for t in self._workers if t.is_alive()]
                pending = [d for d in self.deliveries if not d["done"].is_set()]
            if not workers and not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for t in workers:
                t.join(max(0.0, min(left, deadline - time.monotonic())))
            for d in pending:
                d["done"].wait(max(0.0, deadline - time.monotonic()))

    def _record_attempt(self, d, status, error, result, elapsed):
        with self.lock:
            d["attempts"] += 1
            self.attempts.append({"delivery_id": d["id"], "attempt": d["attempts"], "t": self.now(),
                                  "webhook_id": d["webhook_id"], "hook_url": d["hook_url"],
                                  "call_id": d["call_id"], "state": d["state"], "status": status,
                                  "error": error, "result": result, "elapsed": elapsed})

    def _post(self, url, body, ctype):
        p = urllib.parse.urlparse(url)
        cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = cls(p.hostname, p.port, timeout=float(self.sw("delivery_timeout")))
        try:
            path = (p.path or "/") + ("?" + p.query if p.query else "")
            conn.request("POST", path, body=body, headers={
                "Content-Type": ctype, "User-Agent": "Dialpad-Webhook-Fake/1.0", "Connection": "close"})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    def _attempt(self, d, body, ctype, state=None):
        """One POST.  Returns None when done, else the retry state {"n5xx", "nconn", "delay"}."""
        state = state or {"n5xx": 0, "nconn": 0}
        t0 = time.monotonic()
        try:
            status = self._post(d["hook_url"], body, ctype)
            err = None
        except (OSError, http.client.HTTPException) as e:
            status, err = None, "%s: %s" % (type(e).__name__, e)
        elapsed = round(time.monotonic() - t0, 3)
        if status is not None and 200 <= status < 300:
            self._record_attempt(d, status, None, "delivered", elapsed)
            d["outcome"] = "delivered"
        elif status is not None and 500 <= status < 600:
            sched = RETRY_DELAYS[d["kind"]]
            if state["n5xx"] < len(sched):
                self._record_attempt(d, status, None, "retry", elapsed)
                state["delay"] = sched[state["n5xx"]]
                state["n5xx"] += 1
                return state
            self._record_attempt(d, status, None, "failed", elapsed)
            d["outcome"] = "failed"
        elif status is not None:  # 1xx/3xx/4xx (incl. 429): never retried, the event is lost
            self._record_attempt(d, status, None, "dropped", elapsed)
            d["outcome"] = "dropped"
        else:
            if state["nconn"] < int(self.sw("conn_retries")):
                self._record_attempt(d, None, err, "retry", elapsed)
                state["delay"] = float(self.sw("conn_retry_delay"))
                state["nconn"] += 1
                return state
            self._record_attempt(d, None, err, "failed", elapsed)
            d["outcome"] = "failed"
        d["done"].set()
        return None

    def _retry_loop(self, d, body, ctype, state):
        while state is not None:
            if self._stopping.wait(state["delay"] * float(self.sw("retry_scale"))):
                self._record_attempt(d, None, "fake stopped", "abandoned", None)
                d["outcome"] = "abandoned"
                d["done"].set()
                return
            state = self._attempt(d, body, ctype, state)

    # ================================================================== control API

    def _control(self, method, path, query, body):
        b = {}
        if body:
            try:
                b = json.loads(body.decode("utf-8"))
            except ValueError:
                raise ApiError(400, "control body is not JSON")
        p = path[len("/_fake"):]

        def public(recs):
            return [{k: v for k, v in d.items() if k != "done"} for d in recs]
        if p == "/state" and method == "GET":
            return 200, {}, self.snapshot()
        if p == "/switches" and method == "GET":
            return 200, {}, dict(self.switches)
        if p == "/switches" and method in ("POST", "PATCH"):
            try:
                self.set(**b)
            except KeyError as e:
                raise ApiError(400, str(e))
            return 200, {}, dict(self.switches)
        if p == "/advance" and method == "POST":
            self.advance(b.get("seconds", 0))
            return 200, {}, {"clock_offset": self.clock_offset}
        if p == "/reset" and method == "POST":
            self._reset_state()
            self.switches = dict(DEFAULT_SWITCHES)
            return 200, {}, {"ok": True}
        if p == "/users" and method == "POST":
            uid = self.add_user(**b)
            return 200, {}, self.user_proto(uid)
        if p == "/calls" and method == "POST":
            kw = dict(b)
            kind = kw.pop("kind", "inbound_answered")
            deliver = kw.pop("deliver", True)
            try:
                events, recs = self.run_call(kind, deliver=deliver, **kw)
            except (TypeError, ValueError) as e:
                raise ApiError(400, str(e))
            return 200, {}, {"events": events, "deliveries": public(recs)}
        if p == "/sms" and method == "POST":
            kw = dict(b)
            deliver = kw.pop("deliver", True)
            ev = self.make_sms(**kw)
            recs = self.deliver([ev]) if deliver else []
            return 200, {}, {"events": [ev], "deliveries": public(recs)}
        if p in ("/agent_status", "/contact") and method == "POST":
            kw = dict(b)
            deliver = kw.pop("deliver", True)
            try:
                ev = (self.make_agent_status if p == "/agent_status" else self.make_contact_event)(**kw)
            except (TypeError, KeyError) as e:
                raise ApiError(400, "bad control request: %s" % e)
            recs = self.deliver([ev]) if deliver else []
            return 200, {}, {"events": [ev], "deliveries": public(recs)}
        if p == "/deliver" and method == "POST":
            recs = self.deliver(b.get("events") or [], to=b.get("to"), wait=b.get("wait", True))
            return 200, {}, {"deliveries": public(recs)}
        if p == "/wait" and method == "POST":
            return 200, {}, {"idle": self.wait_deliveries(float(b.get("timeout", 10)))}
        if p == "/expire_tokens" and method == "POST":
            with self.lock:
                for t in self.access_tokens.values():
                    t["expires_at"] = min(t["expires_at"], self.now())
            return 200, {}, {"ok": True}
        raise ApiError(404, "no such control endpoint")


class _Handler(BaseHTTPRequestHandler):
    fake = None
    protocol_version = "HTTP/1.1"
    server_version = "FakeDialpad/1.0"

    def log_message(self, fmt, *args):
        if self.fake.verbose:
            sys.stderr.write("fakedialpad: " + fmt % args + "\n")

    def _run(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        status, hdrs, out = self.fake.handle(self.command, url.path, query, self.headers, body)
        self.send_response(status)
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _run


# ---- a client for tests running in another process ---------------------------------------------

class Control:
    """Drive a fake started as a command: Control("http://127.0.0.1:PORT").state()."""

    def __init__(self, base_url):
        self.base_url = base_url.rstrip("/")

    def _call(self, method, path, body=None):
        p = urllib.parse.urlsplit(self.base_url)
        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, "/_fake" + path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            out = json.loads(r.read() or b"null")
            if r.status != 200:
                raise RuntimeError("control %s %s -> %d %s" % (method, path, r.status, out))
            return out
        finally:
            conn.close()

    def state(self):
        return self._call("GET", "/state")

    def set(self, **switches):
        return self._call("POST", "/switches", switches)

    def advance(self, seconds):
        return self._call("POST", "/advance", {"seconds": seconds})

    def call(self, kind="inbound_answered", **kw):
        return self._call("POST", "/calls", dict(kw, kind=kind))

    def deliver(self, events, to=None):
        return self._call("POST", "/deliver", {"events": events, "to": to})

    def wait(self, timeout=10):
        return self._call("POST", "/wait", {"timeout": timeout})["idle"]


def main(argv=None):
    ap = argparse.ArgumentParser(description="A faithful fake of Dialpad's OAuth, REST and webhooks.")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--client-id", default="fake-client-id")
    ap.add_argument("--client-secret", default="fake-client-secret")
    ap.add_argument("--redirect-uri", action="append", help="registered redirect URI (repeat); default: any")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SWITCH=JSON",
                    help="set a switch, value as JSON (e.g. --set company_admin=false --set retry_scale=0.01)")
    a = ap.parse_args(argv)
    sw = {}
    for s in a.set:
        k, _, v = s.partition("=")
        try:
            sw[k] = json.loads(v)
        except ValueError:
            sw[k] = v
    try:
        fd = FakeDialpad(client_id=a.client_id, client_secret=a.client_secret, port=a.port, host=a.host,
                         redirect_uris=a.redirect_uri, seed=a.seed, verbose=a.verbose, **sw)
    except KeyError as e:
        ap.error(str(e))
    fd.start()
    print(json.dumps({"base_url": fd.base_url, "port": fd.port}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    fd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
