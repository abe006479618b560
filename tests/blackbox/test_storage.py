"""Storage as an operator meets it: zero-config SQLite, PostgreSQL, migrations, outages."""
import sqlite3
import time

import pytest


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
