"""Storage as an operator meets it: zero-config SQLite, PostgreSQL, migrations, outages."""
import sqlite3
import time

import pytest

from dialpad import ADMIN_SECRET, create_app, get_call, send, wait_events


def test_zero_config_uses_sqlite_under_var(make_server):
    srv = make_server()
    assert srv.get("/health").json()["backend"] == "sqlite"
    assert (srv.workdir / "var" / "cti.db").exists()


def migration_rows_sqlite(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version").fetchall()
    finally:
        con.close()


def test_migrations_idempotent_across_restarts_sqlite(make_server, tmp_path):
    db = tmp_path / "m.db"
    srv = make_server(database=f"sqlite:{db}")
    first = migration_rows_sqlite(db)
    assert first and all(n == 1 for _, n in first)
    assert srv.stop() == 0
    srv.start()
    assert srv.stop() == 0
    srv.start()
    assert migration_rows_sqlite(db) == first
    applied = [l for l in srv.log_lines() if l.get("msg") == "store: migration applied"]
    assert len(applied) == len(first)  # applied on the first start only


V10_CALL_EVENTS = """
CREATE TABLE call_events (
  app_id TEXT NOT NULL, call_id BIGINT NOT NULL, event_timestamp BIGINT NOT NULL,
  state TEXT NOT NULL, received_at BIGINT NOT NULL, late SMALLINT NOT NULL,
  raw_event_id BIGINT NOT NULL, PRIMARY KEY (app_id, call_id, event_timestamp, state))"""


def test_sqlite_upgrade_keeps_timelines(make_server, tmp_path):
    """A database from before migration 11 (call_events as a rowid table) keeps every
    timeline row when the server upgrades it, and goes on adding to them."""
    db = tmp_path / "old.db"
    srv = make_server(database=f"sqlite:{db}", env={"INTERNAL_API_SECRET": ADMIN_SECRET})
    app = create_app(srv)
    key, cid, ts = app["api_key"], 7400000000000001, 1767628800000
    for i, state in enumerate(("ringing", "connected")):
        send(srv, app, {"call_id": cid, "state": state, "direction": "inbound",
                        "external_number": "+14155550123", "event_timestamp": ts + 1000 * i})
    wait_events(srv, key, 2)
    before = get_call(srv, key, cid)["timeline"]
    assert [t["state"] for t in before] == ["ringing", "connected"]
    assert srv.stop() == 0
    con = sqlite3.connect(db)  # back to version 10's shape, rows kept
    with con:
        con.execute("ALTER TABLE call_events RENAME TO ce_11")
        con.execute(V10_CALL_EVENTS)
        con.execute("INSERT INTO call_events SELECT app_id, call_id, event_timestamp, state, "
                    "received_at, late, raw_event_id FROM ce_11")
        con.execute("DROP TABLE ce_11")
        # what the later migrations on these tables added goes too, so that they run
        # again after 11, in order, as on a database truly at version 10
        con.execute("ALTER TABLE dialpad_connections DROP COLUMN reconciled_at")
        con.execute("ALTER TABLE dialpad_connections DROP COLUMN reconcile_error")
        con.execute("DELETE FROM schema_migrations WHERE version IN (11, 15)")
    con.close()
    srv.start()
    assert get_call(srv, key, cid)["timeline"] == before
    send(srv, app, {"call_id": cid, "state": "hangup", "direction": "inbound",
                    "external_number": "+14155550123", "event_timestamp": ts + 5000})
    wait_events(srv, key, 3)
    assert [t["state"] for t in get_call(srv, key, cid)["timeline"]] == \
        ["ringing", "connected", "hangup"]
    assert srv.stop() == 0
    con = sqlite3.connect(db)
    ddl = con.execute("SELECT sql FROM sqlite_master WHERE name = 'call_events'").fetchone()[0]
    assert "WITHOUT ROWID" in ddl
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_migrations_idempotent_across_restarts_postgres(make_server, pg):
    url = pg.fresh_database("bb_migrations")
    srv = make_server(database=url)
    assert srv.get("/health").json()["backend"] == "postgres"
    assert srv.stop() == 0
    srv.start()
    second = make_server(database=url)  # a second instance on the same database
    assert second.get("/health").status_code == 200
    assert srv.stop() == 0 and second.stop() == 0
    rows = pg.psql("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version",
                   database="bb_migrations").split()
    assert rows and all(r.endswith("|1") for r in rows)
    applied = [l for l in srv.log_lines() if l.get("msg") == "store: migration applied"]
    assert len(applied) == len(rows)  # the restart applied nothing again


def wait_status(srv, status, timeout=15):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = srv.get("/health")
        if last.status_code == status:
            return last
        time.sleep(0.2)
    raise AssertionError(f"/health stayed {last.status_code if last else None}: {last.text if last else ''}")


def test_health_flips_to_503_when_postgres_stops_and_back(make_server, tmp_path):
    from conftest import PG
    own = PG()  # a cluster of its own: this test stops it
    try:
        url = own.start()
        srv = make_server(database=url)
        assert srv.get("/health").json()["database"] == "ok"
        own.stop()
        r = wait_status(srv, 503)
        body = r.json()
        assert body["status"] == "unhealthy" and body["database"] == "unavailable"
        assert body["error"] == "unavailable"
        own.start()
        r = wait_status(srv, 200)
        assert r.json()["status"] == "healthy"
        assert srv.stop() == 0
    finally:
        own.destroy()


def test_server_waits_for_postgres_at_startup(make_server, tmp_path):
    from conftest import PG
    own = PG()
    try:
        url = own.start()
        own.stop()
        srv = make_server(database=url, start=False)
        srv.start(wait=False)
        time.sleep(1.5)
        assert srv.proc.poll() is None  # still waiting, not crashed
        own.start()
        srv.wait_ready(timeout=20)
        assert srv.get("/health").status_code == 200
    finally:
        own.destroy()


def test_health_is_503_while_sqlite_refuses_writes_and_200_when_they_work(make_server, tmp_path):
    """Writes under the data directory fail with EIO (tests/drills/eio_shim.c, preloaded into
    the optimized build): webhooks are answered 503 and /health says unhealthy, though the
    database still answers reads; with no traffic /health is 200 again a few seconds later
    (a load balancer then sends some: a webhook that is stored keeps it healthy)."""
    import os
    import subprocess
    from conftest import RELEASE_BIN, ROOT
    so = tmp_path / "eio_shim.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(so),
                    str(ROOT / "tests/drills/eio_shim.c"), "-ldl"], check=True)
    data, trigger = tmp_path / "data", tmp_path / "trigger"
    data.mkdir()
    srv = make_server(database=f"sqlite:{data}/cti.db", binary=RELEASE_BIN,
                      env={"INTERNAL_API_SECRET": ADMIN_SECRET, "LD_PRELOAD": str(so),
                           "EIO_SHIM_DIR": str(data), "EIO_SHIM_TRIGGER": str(trigger)})
    app = create_app(srv)
    assert srv.get("/health").status_code == 200
    from dialpad import post_hook, sign
    ev = {"call_id": 7700000000000001, "state": "ringing", "direction": "inbound",
          "external_number": "+14155550123", "event_timestamp": 1767700000000}
    trigger.write_text("all")
    r = post_hook(srv, app["app_id"], sign(ev, app["webhook_secret"]))
    assert r.status_code == 503, r.text
    h = srv.get("/health")
    assert h.status_code == 503, h.text
    body = h.json()
    assert body["status"] == "unhealthy" and body["database"] == "unavailable"
    assert "refuses writes" in body["message"], body
    assert os.path.getsize(str(trigger) + ".count") > 0  # the shim was hit
    trigger.unlink()
    deadline = time.time() + 15
    while (h := srv.get("/health")).status_code != 200:  # no webhook meanwhile
        assert time.time() < deadline, h.text
        time.sleep(0.5)
    assert h.json()["status"] == "healthy", h.text
    send(srv, app, ev)
    assert len(wait_events(srv, app["api_key"], 1)) == 1
