"""GET /metrics: black-box tests against docs/API.md ("Metrics").

- the exposition parses (our own small parser of the text format 0.0.4, and
  Debian's `promtool check metrics`), and every family the contract names is
  there with its type;
- counters move with traffic: webhooks stored / duplicate / rejected, HTTP
  requests by route pattern, events applied, WebSocket messages;
- auth: the admin token or METRICS_TOKEN; METRICS_TOKEN opens nothing else;
- the real Prometheus (Debian's `prometheus`) scrapes the server with the
  bearer token and a series is read back through its HTTP API, and every
  query of docs/grafana-dashboard.json runs there (most with data);
- docs/alerts.yml passes `promtool check rules`, and every cti_* metric the
  alerts and docs/grafana-dashboard.json use is one the server exposes.
"""
import copy
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
import websocket

import dialpad as dp

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = "bb-metrics-token-0123456789abcdef"
BEARER = {"Authorization": "Bearer " + METRICS_TOKEN}
PROM_TEXT = "text/plain; version=0.0.4"

# What the contract names, with its type.
CONTRACT = {
    "cti_http_requests_total": "counter",
    "cti_http_request_duration_seconds": "histogram",
    "cti_webhooks_total": "counter",
    "cti_ingest_batch_size": "histogram",
    "cti_ingest_commit_duration_seconds": "histogram",
    "cti_events_applied_total": "counter",
    "cti_events_pending": "gauge",
    "cti_dead_letters": "gauge",
    "cti_ws_connections": "gauge",
    "cti_ws_messages_sent_total": "counter",
    "cti_ws_slow_closes_total": "counter",
    "cti_dialpad_requests_total": "counter",
    "cti_dialpad_connections": "gauge",
    "cti_outbound_deliveries_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
# What an operator alerts on besides (issue #19).
OPERATOR = {
    "cti_events_pending_oldest_age_seconds": "gauge",
    "cti_database_up": "gauge",
    "cti_ingest_queue_depth": "gauge",
    "cti_auth_failures_total": "counter",
    "cti_store_errors_total": "counter",
    "cti_event_log_appends_total": "counter",
    "cti_dead_letters_parked_total": "counter",
}
SQLITE_ONLY = {"cti_sqlite_wal_bytes": "gauge", "cti_sqlite_checkpoints_total": "counter"}
PG_ONLY = {"cti_relay_lag_seconds": "gauge", "cti_relay_notifications_total": "counter",
           "cti_relay_reconnects_total": "counter"}


# ---- a parser of the text format ----------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}; asserts the format."""
    fams, current = {}, None
    assert text.endswith("\n"), "the exposition ends with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            assert name not in fams, f"family {name} declared twice"
            fams[name] = {"help": help_, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, typ = line[7:].split(" ")
            assert name == current, f"TYPE {name} without its HELP just before"
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            fams[name]["type"] = typ
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, value = m.group(1), float(m.group(m.lastindex))
            labels = dict((k, unescape(v)) for k, v in re.findall(LABEL, m.group(2) or ""))
            fam = fams[current]
            suffixes = ("_bucket", "_sum", "_count") if fam["type"] == "histogram" else ("",)
            assert any(name == current + s for s in suffixes), f"{name} outside its family {current}"
            if fam["type"] == "counter":
                assert value >= 0 and name.endswith("_total"), line
            fam["samples"].append((name, labels, value))
    for name, fam in fams.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return fams


def check_histogram(name, samples):
    """Per label set: buckets ascending and cumulative, +Inf equal to _count."""
    series = {}
    for n, labels, v in samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if n.endswith("_bucket"):
            series[key]["buckets"].append((float(labels["le"]), v))
        else:
            series[key]["count" if n.endswith("_count") else "sum"] = v
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        assert les == sorted(les) and les[-1] == math.inf, (name, key, les)
        counts = [c for _, c in s["buckets"]]
        assert counts == sorted(counts), f"{name}{key} buckets not cumulative: {counts}"
        assert s["count"] == counts[-1], (name, key, s)
        assert s["sum"] is not None and s["sum"] >= 0, (name, key, s)


def value(fams, family, sample=None, **labels):
    """The value of the one sample of `family` (or its `sample` name) with these labels."""
    want = sample or family
    hits = [v for n, l, v in fams[family]["samples"]
            if n == want and all(l.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, f"{want}{labels}: {len(hits)} samples"
    return hits[0]


def value_or_0(fams, family, **labels):
    hits = [v for n, l, v in fams[family]["samples"]
            if n == family and all(l.get(k) == x for k, x in labels.items())]
    return hits[0] if hits else 0


# ---- helpers ------------------------------------------------------------------------------------

def start(make_server, database=None, **env):
    e = {"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "METRICS_TOKEN": METRICS_TOKEN}
    e.update(env)
    return make_server(env=e, database=database)


def scrape(srv, headers=BEARER):
    r = srv.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(PROM_TEXT), r.headers["Content-Type"]
    return r.text


_call_ids = iter(range(6100000000000001, 6200000000000000))


def call_events():
    """The fixture call (5 events) as a new call."""
    cid = next(_call_ids)
    evs = copy.deepcopy(dp.load("inbound-answered"))
    for e in evs:
        e["call_id"] = cid
    return evs


def assert_error(r, status, code):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    assert r.json()["error"] == code, r.text


def wait_for(fn, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.time() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.05)


# ---- the exposition -----------------------------------------------------------------------------

def test_every_family_with_its_type(make_server):
    srv = start(make_server)
    text = scrape(srv)
    fams = parse(text)
    for name, typ in {**CONTRACT, **OPERATOR, **SQLITE_ONLY}.items():
        assert name in fams, f"{name} missing"
        assert fams[name]["type"] == typ, f"{name}: {fams[name]['type']}, want {typ}"
        assert fams[name]["help"], name
    for name in PG_ONLY:
        assert name not in fams, f"{name} on SQLite"
    assert value(fams, "cti_database_up", backend="sqlite") == 1
    assert value(fams, "cti_events_pending") == 0
    assert value(fams, "cti_dead_letters") == 0
    assert value(fams, "cti_ws_connections") == 0
    assert value(fams, "process_open_fds") > 3
    assert value(fams, "process_resident_memory_bytes") > 1 << 20
    assert abs(value(fams, "process_start_time_seconds") - time.time()) < 120
    for result in ("stored", "duplicate", "rejected", "unavailable"):
        assert value(fams, "cti_webhooks_total", result=result) == 0
    # no per-app label anywhere (the contract: never on request counters)
    for fam in fams.values():
        for _, labels, _ in fam["samples"]:
            assert "app_id" not in labels


def test_promtool_check_metrics(make_server):
    srv = start(make_server)
    srv.get("/health")
    app = dp.create_app(srv)
    dp.send(srv, app, call_events()[0])
    text = scrape(srv)
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == "", out.stdout + out.stderr


# ---- counters move --------------------------------------------------------------------------------

def test_webhook_and_http_counters_move(make_server):
    srv = start(make_server)
    app = dp.create_app(srv)
    before = parse(scrape(srv))
    evs = call_events()
    for e in evs:
        dp.send(srv, app, e, expect_duplicate=False)
    dp.send(srv, app, evs[0], expect_duplicate=True)
    bad = dp.post_hook(srv, app["app_id"], dp.sign(evs[1], "not-the-secret-0123456789"))
    assert bad.status_code == 401
    key = app["api_key"]
    dp.wait_events(srv, key, 1)
    after = parse(scrape(srv))

    def delta(family, **labels):
        return value_or_0(after, family, **labels) - value_or_0(before, family, **labels)

    assert delta("cti_webhooks_total", result="stored") == len(evs)
    assert delta("cti_webhooks_total", result="duplicate") == 1
    assert delta("cti_webhooks_total", result="rejected") == 1
    assert delta("cti_webhooks_total", result="unavailable") == 0
    route = "/webhooks/dialpad/{app_id}"
    assert delta("cti_http_requests_total", route=route, method="POST", code="200") == len(evs) + 1
    assert delta("cti_http_requests_total", route=route, method="POST", code="401") == 1
    assert value(after, "cti_http_request_duration_seconds", "cti_http_request_duration_seconds_count",
                 route=route) == len(evs) + 2
    assert delta("cti_events_applied_total") == len(evs)
    assert delta("cti_event_log_appends_total") >= 1
    assert value(after, "cti_ingest_batch_size", "cti_ingest_batch_size_sum") == len(evs) + 1
    assert value(after, "cti_ingest_commit_duration_seconds",
                 "cti_ingest_commit_duration_seconds_count") >= 1
    # the metrics scrape itself, and a route pattern rather than a path
    assert value_or_0(after, "cti_http_requests_total", route="/metrics", method="GET", code="200") >= 1
    srv.get("/no/such/path")
    fams = parse(scrape(srv))
    assert value(fams, "cti_http_requests_total", route="none", method="GET", code="404") == 1
    assert not [l for _, l, _ in fams["cti_http_requests_total"]["samples"] if l["route"] == "/no/such/path"]


def test_auth_failures_and_ws_counters(make_server):
    srv = start(make_server)
    app = dp.create_app(srv)
    assert srv.get("/internal/apps", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert srv.get("/api/calls", headers={"X-API-Key": "cti_0000000000000000_nope"}).status_code == 401
    fams = parse(scrape(srv))
    assert value(fams, "cti_auth_failures_total", kind="admin") == 1
    assert value(fams, "cti_auth_failures_total", kind="api_key") == 1
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws",
                                     header=[f"X-API-Key: {app['api_key']}"], timeout=5)
    try:
        json.loads(ws.recv())  # hello
        fams = parse(scrape(srv))
        assert value(fams, "cti_ws_connections") == 1
        sent = value(fams, "cti_ws_messages_sent_total")
        assert sent >= 1  # the hello
        dp.send(srv, app, call_events()[0])
        msg = json.loads(ws.recv())
        assert msg["type"] == "event", msg
        fams = wait_for(lambda: (lambda f: f if value(f, "cti_ws_messages_sent_total") >= sent + 1
                                 else None)(parse(scrape(srv))), what="ws message counted")
        assert value(fams, "cti_ws_connections_total") == 1
        assert value(fams, "cti_http_requests_total", route="/ws", method="GET", code="101") == 1
    finally:
        ws.close()
    wait_for(lambda: value(parse(scrape(srv)), "cti_ws_connections") == 0, what="socket closed")


def test_backlog_and_dead_letter_gauges(make_server):
    """An event that cannot be applied (a call event without call_id) is pending,
    retried at 1, 2, 4, 8 s, then parked: the gauges follow it."""
    srv = start(make_server)
    app = dp.create_app(srv)
    dp.send(srv, app, {"state": "ringing", "direction": "inbound",
                       "external_number": "+14155550123", "event_timestamp": 1767700000123})

    def failing():
        f = parse(scrape(srv))
        return f if value(f, "cti_events_failed_total") >= 1 else None
    fams = wait_for(failing, timeout=5, what="a failed attempt counted")
    assert value(fams, "cti_events_pending") == 1
    assert value(fams, "cti_events_pending_oldest_age_seconds") > 0
    assert value(fams, "cti_events_applied_total") == 0
    assert value(fams, "cti_dead_letters") == 0

    # the counters move right after the commit that the gauges read from the
    # database: wait for the counter, then the gauge shows the commit too (a
    # scrape between the two saw the dead letter and not yet the counter)
    def parked():
        f = parse(scrape(srv))
        return f if value(f, "cti_dead_letters_parked_total") == 1 else None
    fams = wait_for(parked, timeout=30, what="the event parked as a dead letter")
    assert value(fams, "cti_dead_letters") == 1
    assert value(fams, "cti_events_failed_total") == 5
    assert value(fams, "cti_events_pending") == 0
    assert value(fams, "cti_events_pending_oldest_age_seconds") == 0


def test_slow_consumer_close_counted(make_server):
    """A socket that does not read the error replies its garbage earns is closed
    with 4008 (as in test_ws_limits): counted in cti_ws_slow_closes_total."""
    from test_ws_limits import close_code
    from test_ws_protocol import frame
    srv = start(make_server, WS_SNDBUF="4096")
    app = dp.create_app(srv)
    ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws",
                                     header=[f"X-API-Key: {app['api_key']}"], timeout=10,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    json.loads(ws.recv())  # hello
    assert value(parse(scrape(srv)), "cti_ws_slow_closes_total") == 0
    try:
        ws.sock.settimeout(10)
        ws.sock.sendall(frame(0x1, b"x") * 50000)  # not JSON: an error reply each
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    code, _ = close_code(ws, timeout=30)
    ws.close()
    assert code == 4008
    assert value(parse(scrape(srv)), "cti_ws_slow_closes_total") == 1


# ---- auth ------------------------------------------------------------------------------------------

def test_metrics_auth(make_server):
    srv = start(make_server)
    app = dp.create_app(srv)
    assert scrape(srv, BEARER)
    assert scrape(srv, dp.ADMIN)
    assert_error(srv.get("/metrics"), 401, "unauthorized")
    assert_error(srv.get("/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN + "x"}),
                 403, "forbidden")
    assert_error(srv.get("/metrics", headers={"X-API-Key": app["api_key"]}), 401, "unauthorized")
    assert_error(srv.get("/metrics", headers={"Authorization": "Bearer " + app["api_key"]}),
                 403, "forbidden")
    # METRICS_TOKEN opens nothing else: not the admin API, not a tenant's
    assert_error(srv.get("/internal/apps", headers=BEARER), 403, "forbidden")
    assert_error(srv.post("/internal/apps", headers=BEARER, json={"name": "x"}), 403, "forbidden")
    assert_error(srv.get(f"/internal/apps/{app['app_id']}", headers=BEARER), 403, "forbidden")
    assert_error(srv.get("/internal/dead-letters", headers=BEARER), 403, "forbidden")
    assert_error(srv.get("/api/calls", headers=BEARER), 401, "unauthorized")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws", timeout=5,
                                    header=["Authorization: Bearer " + METRICS_TOKEN])
    assert refused.value.status_code == 401
    assert srv.get("/internal/apps", headers=dp.ADMIN).status_code == 200


def test_without_metrics_token_only_admin_reads(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": dp.ADMIN_SECRET, "METRICS_TOKEN": ""})
    assert_error(srv.get("/metrics", headers=BEARER), 403, "forbidden")
    assert_error(srv.get("/metrics", headers={"Authorization": "Bearer "}), 401, "unauthorized")
    assert scrape(srv, dp.ADMIN)


def test_metrics_token_in_help():
    out = subprocess.run([os.environ.get("CTI_SERVER_BIN", str(ROOT / "build/asan/cti-server")),
                          "--help"], capture_output=True, text=True, timeout=30)
    assert "METRICS_TOKEN" in out.stdout


# ---- PostgreSQL ----------------------------------------------------------------------------------

def test_postgres_families(make_server, pg):
    srv = start(make_server, database=pg.fresh_database("cti_metrics"))
    app = dp.create_app(srv)
    dp.send(srv, app, call_events()[0])
    dp.wait_events(srv, app["api_key"], 1)
    fams = parse(scrape(srv))
    assert value(fams, "cti_database_up", backend="postgres") == 1
    for name, typ in PG_ONLY.items():
        assert fams[name]["type"] == typ, name
    for name in SQLITE_ONLY:
        assert name not in fams, f"{name} on PostgreSQL"
    assert value(fams, "cti_relay_reconnects_total") >= 1
    assert value(fams, "cti_relay_lag_seconds") < 5
    assert value(fams, "cti_webhooks_total", result="stored") == 1
    assert value(fams, "cti_events_applied_total") == 1


# ---- the real Prometheus ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prom_query(base, q):
    r = requests.get(base + "/api/v1/query", params={"query": q}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_with_the_token(make_server, tmp_path):
    srv = start(make_server)
    app = dp.create_app(srv)
    for e in call_events()[:3]:
        dp.send(srv, app, e)
    port = free_port()
    (tmp_path / "token").write_text(METRICS_TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: cti\n"
        "    scrape_interval: 1s\n"
        "    authorization:\n"
        "      type: Bearer\n"
        f"      credentials_file: {tmp_path / 'token'}\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{srv.port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        def stored():
            if proc.poll() is not None:
                raise AssertionError("prometheus exited:\n" + (tmp_path / "prometheus.log").read_text())
            try:  # 503 while its storage starts
                r = requests.get(base + "/api/v1/query", timeout=5,
                                 params={"query": 'cti_webhooks_total{job="cti",result="stored"}'})
            except requests.RequestException:
                return None
            return r.status_code == 200 and r.json()["data"]["result"] or None
        res = wait_for(stored, timeout=30, what="a scrape by prometheus")
        assert float(res[0]["value"][1]) == 3, res
        up = prom_query(base, 'up{job="cti"}')
        assert float(up[0]["value"][1]) == 1, up
        targets = requests.get(base + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert targets and targets[0]["health"] == "up", targets
        # a histogram reads as one too: its rate, quantile and all
        q = prom_query(base, 'histogram_quantile(0.99, sum by (le) '
                             '(cti_http_request_duration_seconds_bucket{job="cti"}))')
        assert q and float(q[0]["value"][1]) >= 0, q
        # every query of the dashboard is PromQL Prometheus accepts, and the main
        # panels have data (Grafana's variables as Grafana would fill them in)
        wait_for(lambda: prom_query(base, 'count_over_time(up{job="cti"}[1m]) >= 3'),
                 timeout=30, what="three scrapes (for rates)")
        dash = json.loads((ROOT / "docs/grafana-dashboard.json").read_text())
        answered = 0
        for panel in dash["panels"]:
            for t in panel["targets"]:
                expr = t["expr"].replace("$__rate_interval", "1m").replace("$job", "cti")
                answered += bool(prom_query(base, expr))
        print(f"\n{answered} dashboard queries have data")
        assert answered >= 20, f"only {answered} dashboard queries have data"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    # what it scraped was authorized: no refused scrape counted against the admin token
    assert value(parse(scrape(srv)), "cti_auth_failures_total", kind="admin") == 0


# ---- the operator's files -------------------------------------------------------------------------

def test_alert_rules_pass_promtool():
    out = subprocess.run(["promtool", "check", "rules", str(ROOT / "docs/alerts.yml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def referenced_metrics(text):
    return set(re.findall(r"\b((?:cti|process)_[a-z_]+?)(?:_bucket|_sum|_count)?\b", text))


def test_dashboard_and_alerts_use_real_metrics(make_server):
    srv = start(make_server)
    names = set(parse(scrape(srv)))
    names |= set(PG_ONLY)  # PostgreSQL only: checked in test_postgres_families
    dash = json.loads((ROOT / "docs/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8, "the dashboard's main panels"
    alerts = (ROOT / "docs/alerts.yml").read_text()
    for where, text in (("dashboard", "\n".join(exprs)), ("alerts", alerts)):
        used = referenced_metrics(text)
        assert used, where
        unknown = sorted(m for m in used if m not in names)
        assert not unknown, f"{where} uses metrics the server does not expose: {unknown}"
    for alert in ("CTIBacklogGrowing", "CTIDeadLetters", "CTIDialpadConnectionBroken",
                  "CTIHighErrorRate", "CTIInstanceDown"):
        assert f"alert: {alert}" in alerts, alert
