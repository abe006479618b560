"""Black-box test harness: starts the real cti-server binary and talks HTTP to it.

Fixtures:
  make_server  factory: make_server(env={...}, backend="sqlite"|pg_url) -> Server
  pg           a private PostgreSQL for the whole session (tests/pg-harness.sh)

Every server started is stopped at teardown with SIGTERM, and the test fails if
it did not exit 0 or if AddressSanitizer/UBSan reported anything.

Every response a test receives through `requests` from a server started here is
validated against docs/openapi.yaml (openapi_check.py); a mismatch fails the test.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from openapi_check import Checker

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CTI_SERVER_BIN", str(ROOT / "build/asan/cti-server"))
RELEASE_BIN = os.environ.get("CTI_SERVER_RELEASE_BIN", str(ROOT / "cti-server"))
HARNESS = str(ROOT / "tests/pg-harness.sh")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

# ---- every response checked against docs/openapi.yaml ------------------------------------
OPENAPI = Checker()
LIVE_PORTS = set()  # ports of the cti-servers started by this harness (not the fake Dialpad's)
_requests_send = requests.Session.send


def _checked_send(self, request, **kw):
    resp = _requests_send(self, request, **kw)
    try:
        u = urlsplit(request.url)
        if u.hostname in ("127.0.0.1", "localhost") and u.port in LIVE_PORTS:
            body = None if kw.get("stream") else resp.content
            problem = OPENAPI.check(request.method, request.url, resp.status_code, resp.headers, body)
            if problem:
                OPENAPI.record(problem)
    except Exception as e:  # noqa: BLE001 -- a validator bug must fail the test, not hide
        OPENAPI.record(f"openapi validator failed on {request.method} {request.url}: {e!r}")
    return resp


requests.Session.send = _checked_send


@pytest.fixture(autouse=True)
def openapi_conformance():
    """Fails the test if any response it received did not match docs/openapi.yaml."""
    OPENAPI.take()
    yield
    problems = OPENAPI.take()
    assert not problems, "responses not as docs/openapi.yaml describes them:\n" + "\n".join(
        sorted(set(problems))[:20])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env():
    """A clean environment: nothing of the developer's DATABASE_URL etc. leaks in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_LEVEL": "info"}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=23"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


class Server:
    def __init__(self, workdir, env=None, binary=BIN, args=(), wrapper=()):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.env = base_env()
        self.env["PORT"] = str(self.port)
        self.env.update(env or {})
        self.binary = binary
        self.args = list(args)
        self.wrapper = list(wrapper)
        self.proc = None
        self.log_path = self.workdir / f"server-{self.port}.log"
        tls = "TLS_CERT_FILE" in self.env  # its own certificate: self-signed, not verified
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, wait=True, timeout=20):
        self.workdir.mkdir(parents=True, exist_ok=True)
        LIVE_PORTS.add(self.port)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.wrapper + [self.binary] + self.args, cwd=self.workdir, env=self.env,
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a self-signed certificate
                    requests.get(self.base + "/health", timeout=1, verify=False)
                return
            except (requests.ConnectionError, requests.Timeout):  # a slow first answer
                time.sleep(0.05)  # (valgrind, a loaded machine) is retried to the deadline
        raise AssertionError(f"server did not answer within {timeout}s:\n{self.log_text()}")

    def url(self, path):
        return self.base + path

    def get(self, path, **kw):
        return requests.get(self.url(path), timeout=kw.pop("timeout", 10), **kw)

    def post(self, path, **kw):
        return requests.post(self.url(path), timeout=kw.pop("timeout", 10), **kw)

    def request(self, method, path, **kw):
        return requests.request(method, self.url(path), timeout=kw.pop("timeout", 10), **kw)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stops the server; returns its exit code. Fails on sanitizer reports."""
        if self.proc is None:
            return None
        LIVE_PORTS.discard(self.port)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server did not stop within {timeout}s:\n{self.log_text()}")
        self.logf.close()
        code = self.proc.returncode
        self.proc = None
        self.assert_sanitizer_clean()
        return code

    def kill(self):
        LIVE_PORTS.discard(self.port)
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            self.logf.close()
        self.proc = None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        """The server's JSON log lines (other lines are skipped)."""
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def assert_sanitizer_clean(self):
        text = self.log_text()
        for mark in SANITIZER_MARKS:
            assert mark not in text, f"sanitizer report in server log:\n{text}"


def self_signed(dirpath):
    """A certificate and key for 127.0.0.1 (TLS_CERT_FILE, TLS_KEY_FILE), made by openssl."""
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    cert, key = Path(dirpath) / "cert.pem", Path(dirpath) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def factory(env=None, database=None, workdir=None, start=True, **kw):
        env = dict(env or {})
        if database:
            env["DATABASE_URL"] = database
        s = Server(workdir or tmp_path / f"srv{len(servers)}", env=env, **kw)
        servers.append(s)
        return s.start() if start else s

    yield factory
    problems = []
    for s in servers:
        if s.proc is None:
            continue
        code = s.stop()
        if code != 0:
            problems.append(f"server on port {s.port} exited {code}:\n{s.log_text()[-4000:]}")
    assert not problems, "\n".join(problems)


class PG:
    """A private PostgreSQL cluster in its own temp dir (readable by the postgres user)."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="cti-bb-pg.")
        os.chmod(self.root, 0o755)
        self.dir = str(Path(self.root) / "pg")
        self.url = None

    def start(self):
        out = subprocess.run([HARNESS, "start", self.dir], check=True, capture_output=True, text=True)
        self.url = out.stdout.strip().splitlines()[-1]
        return self.url

    def stop(self):
        subprocess.run([HARNESS, "stop", self.dir], check=True)

    def destroy(self):
        subprocess.run([HARNESS, "destroy", self.dir], check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql, database="cti_test"):
        out = subprocess.run([HARNESS, "psql", self.dir, "-d", database, "-At", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def fresh_database(self, name):
        """A new empty database on this cluster; returns its URL."""
        self.psql(f"DROP DATABASE IF EXISTS {name}")
        self.psql(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def pg():
    p = PG()
    p.start()
    yield p
    p.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """Parametrizes a test over both backends: yields a DATABASE_URL."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path}/bb.db"
    else:
        pgfix = request.getfixturevalue("pg")
        name = "bb_" + request.node.name.split("[")[0][-40:].lower().replace("-", "_")
        yield pgfix.fresh_database(name)
