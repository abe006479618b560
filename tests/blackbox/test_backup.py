"""Backup and restore as docs/OPERATIONS.md tells an operator to do it, on both backends:
back up a running server that holds data, restore into a fresh database, start a new
server on it (same TOKEN_ENCRYPTION_KEY: the backup is useless without it), and check
that it serves the data — and only what was there when the backup was taken."""
import os
import subprocess

from dialpad import ADMIN_SECRET, admin, create_app, get_call, send, tget, wait_events

PG_BIN = "/usr/lib/postgresql/15/bin"
KEY = "9c1f0e3b8a5d47f2b6e4a1c3d5f7092b4d6e8f0a1c3e5b7d9f1a3c5e7b9d1f3a"
ENV = {"INTERNAL_API_SECRET": ADMIN_SECRET, "TOKEN_ENCRYPTION_KEY": KEY}
T0 = 1767628800000


def fill(srv, calls=5):
    """An app with `calls` ended calls (ringing, connected, hangup each) and a mapping."""
    app = create_app(srv, "backup-co")
    for c in range(calls):
        cid = 7700000000000001 + c
        for i, state in enumerate(("ringing", "connected", "hangup")):
            ev = {"call_id": cid, "state": state, "direction": "inbound",
                  "external_number": "+14155550123", "internal_number": "+16175550148",
                  "target": {"id": 5188674325413888, "type": "user", "name": "Ana"},
                  "date_started": T0 + 60000 * c, "event_timestamp": T0 + 60000 * c + 1000 * i}
            if state != "ringing":
                ev["date_connected"] = T0 + 60000 * c + 1000
            if state == "hangup":
                ev["date_ended"] = T0 + 60000 * c + 2000
            send(srv, app, ev)
    r = admin(srv, "POST", f"/internal/apps/{app['app_id']}/users/map",
              json={"dialpad_user_id": "5188674325413888", "crm_user_id": "crm-ana"})
    assert r.status_code == 201, r.text
    wait_events(srv, app["api_key"], 3 * calls)
    return app


def later_call(srv, app):
    """A call after the backup: the restored server must not have it."""
    send(srv, app, {"call_id": 7799999999999999, "state": "ringing", "direction": "inbound",
                    "external_number": "+14155550199", "event_timestamp": T0 + 9_000_000})


def check_restored(srv, app, calls=5):
    key = app["api_key"]
    evs = wait_events(srv, key, 3 * calls)
    assert len(evs) == 3 * calls, [e["event"] for e in evs]
    assert [e["seq"] for e in evs] == list(range(1, 3 * calls + 1))
    r = tget(srv, key, "/api/calls?limit=500")
    assert r.status_code == 200, r.text
    ids = sorted(c["id"] for c in r.json()["data"])
    assert ids == [str(7700000000000001 + c) for c in range(calls)], ids
    call = get_call(srv, key, 7700000000000001)
    assert call["status"] == "ended" and call["outcome"] == "answered"
    assert call["crm_user_id"] == "crm-ana"
    assert [t["state"] for t in call["timeline"]] == ["ringing", "connected", "hangup"]
    assert tget(srv, key, "/api/calls/7799999999999999").status_code == 404
    # the sealed webhook secret opens with the same key: the admin reads it back, and a
    # webhook signed with it is accepted and goes on from the restored seq
    r = admin(srv, "GET", f"/internal/apps/{app['app_id']}")
    assert r.status_code == 200 and r.json()["webhook_secret"] == app["webhook_secret"], r.text
    send(srv, app, {"call_id": 7700000000000100, "state": "ringing", "direction": "inbound",
                    "external_number": "+14155550111", "event_timestamp": T0 + 10_000_000},
         expect_duplicate=False)
    evs = wait_events(srv, key, 1, since=3 * calls)
    assert evs[0]["seq"] == 3 * calls + 1 and evs[0]["call_id"] == "7700000000000100"
    # a replayed (duplicate) webhook from before the backup is still a duplicate
    send(srv, app, {"call_id": 7700000000000001, "state": "ringing", "direction": "inbound",
                    "external_number": "+14155550123", "internal_number": "+16175550148",
                    "target": {"id": 5188674325413888, "type": "user", "name": "Ana"},
                    "date_started": T0, "event_timestamp": T0}, expect_duplicate=True)


def test_sqlite_online_backup_restores_and_serves(make_server, tmp_path):
    db = tmp_path / "live" / "cti.db"
    db.parent.mkdir()
    srv = make_server(database=f"sqlite:{db}", env=ENV)
    app = fill(srv)
    backup = tmp_path / "backup.db"
    # the sqlite3 CLI's .backup (SQLite's online backup API) while the server runs:
    # a consistent copy whatever the WAL holds
    subprocess.run(["sqlite3", str(db), f".backup '{backup}'"], check=True, timeout=60)
    later_call(srv, app)
    assert srv.stop() == 0
    restored = tmp_path / "restored" / "cti.db"
    restored.parent.mkdir()
    os.replace(backup, restored)
    out = subprocess.run(["sqlite3", str(restored), "PRAGMA integrity_check"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "ok", out
    srv2 = make_server(database=f"sqlite:{restored}", env=ENV)
    check_restored(srv2, app)


def pg_tool(pg, tool, *args):
    port = pg.url.rsplit(":", 1)[1].split("/")[0]
    return subprocess.run([f"{PG_BIN}/{tool}", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                           *args], check=True, capture_output=True, text=True, timeout=120)


def test_postgres_dump_restores_and_serves(make_server, pg, tmp_path):
    src = pg.fresh_database("cti_backup_src")
    srv = make_server(database=src, env=ENV)
    app = fill(srv)
    dump = tmp_path / "cti.dump"
    # pg_dump takes a consistent snapshot while the server writes (custom format)
    pg_tool(pg, "pg_dump", "-Fc", "-f", str(dump), "cti_backup_src")
    later_call(srv, app)
    assert srv.stop() == 0
    dst = pg.fresh_database("cti_backup_dst")
    pg_tool(pg, "pg_restore", "--no-owner", "--exit-on-error", "-d", "cti_backup_dst", str(dump))
    srv2 = make_server(database=dst, env=ENV)
    check_restored(srv2, app)
    # the restored server's event log, sequences and migrations are those of the source
    assert pg.psql("SELECT COUNT(*) FROM schema_migrations", database="cti_backup_dst") == \
        pg.psql("SELECT COUNT(*) FROM schema_migrations", database="cti_backup_src")
