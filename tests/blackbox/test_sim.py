"""cti-sim drives the real server: the same seeded traffic delivered in order,
and delivered as chaos (duplicated, retried, shuffled), must leave identical
calls and exactly one stream event per distinct Dialpad event."""
import json
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIM = str(ROOT / "build/release/tools/cti-sim")
ADMIN = "sim-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def start(make_server, database):
    srv = make_server(env={"INTERNAL_API_SECRET": ADMIN}, database=database)
    app = srv.post("/internal/apps", json={"name": "sim"},
                   headers={"Authorization": f"Bearer {ADMIN}"}).json()
    return srv, app


def sim(srv, app, mode, *args):
    out = subprocess.run([SIM, mode, "--url", srv.base, "--app", app["app_id"], "--secret",
                          app["webhook_secret"], *map(str, args)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


def settle(srv, key):
    """Waits until nothing is pending; returns every call and the event count."""
    deadline = time.time() + 20
    while srv.get("/health").json().get("pending_events") != 0 and time.time() < deadline:
        time.sleep(0.05)
    calls = srv.get("/api/calls?limit=500", headers={"X-API-Key": key}).json()["data"]
    events, since = 0, 0
    while True:
        page = srv.get(f"/api/events?since={since}&limit=500", headers={"X-API-Key": key}).json()
        events += len(page["data"])
        if not page["data"]:
            return calls, events
        since = page["next_since"]


def comparable(calls):
    return sorted((json.dumps({k: v for k, v in c.items() if k != "updated_at"}, sort_keys=True)
                   for c in calls))


def test_sim_print_is_deterministic():
    a = subprocess.run([SIM, "chaos", "--print", "--calls", "16", "--seed", "9"],
                       capture_output=True, text=True, check=True).stdout
    b = subprocess.run([SIM, "chaos", "--print", "--calls", "16", "--seed", "9"],
                       capture_output=True, text=True, check=True).stdout
    c = subprocess.run([SIM, "chaos", "--print", "--calls", "16", "--seed", "10"],
                       capture_output=True, text=True, check=True).stdout
    assert a == b and a != c
    kinds = {json.loads(l).get("state") for l in a.splitlines()}
    for state in ("ringing", "calling", "queued", "connected", "hold", "missed", "voicemail",
                  "hangup", "voicemail_uploaded", "transcription", "recording", "recap_summary"):
        assert state in kinds


@pytest.mark.parametrize("seed", [7, 21])
def test_chaos_gives_the_in_order_state(make_server, backend, seed):
    ordered, app1 = start(make_server, backend)  # in order, on the backend under test
    r1 = sim(ordered, app1, "burst", "--connections", 1, "--calls", 48, "--seed", seed)
    assert r1["failed"] == 0 and r1["duplicates"] == 0
    calls1, events1 = settle(ordered, app1["api_key"])
    assert ordered.stop() == 0

    chaotic, app2 = start(make_server, None)  # chaos, on a fresh SQLite store: backends agree too
    r2 = sim(chaotic, app2, "chaos", "--calls", 48, "--seed", seed, "--dups", 0.6,
             "--retries", 0.3, "--connections", 8)
    assert r2["failed"] == 0
    assert r2["stored"] == r1["stored"]          # every distinct event stored once
    assert r2["duplicates"] == r2["events"] - r2["stored"] > 0
    calls2, events2 = settle(chaotic, app2["api_key"])
    assert events1 == events2 == r1["stored"]    # one stream event per distinct event
    assert len(calls1) == len(calls2) > 40
    assert comparable(calls1) == comparable(calls2)
