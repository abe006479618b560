"""Retention (docs/API.md "Retention"): RETENTION_DAYS, RETENTION_CALLS_DAYS.

Rows are made old through the database (times moved back), and
RETENTION_TICK_MS (documented as for tests) makes the purger run every 200 ms.
After the purge, /api/events?since=<purged seq> answers 410 history_unavailable
with the new oldest_seq and /ws?since=<purged seq> gets `reset`; a client at
the window's edge still gets every retained event. Both backends.
SQLite: new files are auto_vacuum=INCREMENTAL, and the file stops growing
under steady ingest with everything purged (bounded: a few rounds).
"""
import os
import sqlite3
import time

import pytest

import dialpad as dp
from test_ws import Hooks, call_event, connect, events_until, hello, recv, seqs, start

DAY_MS = 86400 * 1000


class DB:
    """SQL on the server's database while it runs (sqlite3 or the pg harness's psql)."""

    def __init__(self, request, url):
        self.url = url
        if url.startswith("sqlite:"):
            self.path = url[len("sqlite:"):]
            self.pg = None
        else:
            self.path = None
            self.pg = request.getfixturevalue("pg")
            self.name = url.rsplit("/", 1)[1]

    def run(self, sql):
        if self.pg:
            return self.pg.psql(sql, database=self.name)
        c = sqlite3.connect(self.path, timeout=30)
        try:
            cur = c.execute(sql)
            rows = cur.fetchall()
            c.commit()
            return "\n".join("|".join(str(v) for v in r) for r in rows)
        finally:
            c.close()

    def count(self, sql):
        return int(self.run(sql).strip() or 0)


def age(db, app_id, where_log, days=3):
    """Moves the app's rows `days` back in time (event log rows matching where_log)."""
    back = days * DAY_MS
    db.run(f"UPDATE event_log SET created_at = created_at - {back} "
           f"WHERE app_id = '{app_id}' AND {where_log}")
    db.run(f"UPDATE raw_events SET received_at = received_at - {back} WHERE app_id = '{app_id}'")
    db.run(f"UPDATE call_events SET received_at = received_at - {back} WHERE app_id = '{app_id}'")


def wait_gone(srv, key, since, timeout=15.0):
    deadline = time.time() + timeout
    while True:
        r = dp.tget(srv, key, f"/api/events?since={since}")
        if r.status_code == 410 or time.time() > deadline:
            return r
        time.sleep(0.1)


def test_purge_moves_the_window_410_and_reset(make_server, backend, request):
    srv = start(make_server, database=backend, RETENTION_DAYS="1", RETENTION_TICK_MS="200")
    db = DB(request, backend)
    app = dp.create_app(srv)
    key, aid, hooks = app["api_key"], app["app_id"], Hooks(srv, app)
    for _ in range(6):
        hooks.send(call_event())
    evs = dp.wait_events(srv, key, 6)
    newest = evs[-1]["seq"]
    assert dp.tget(srv, key, "/api/events?since=0").status_code == 200
    assert db.count(f"SELECT COUNT(*) FROM raw_events WHERE app_id = '{aid}'") == 6

    age(db, aid, "seq <= 3")
    r = wait_gone(srv, key, 0)
    assert r.status_code == 410, r.text
    body = r.json()
    assert body["error"] == "history_unavailable", body
    assert body["oldest_seq"] == 4 and body["latest_seq"] == newest, body
    assert dp.tget(srv, key, "/api/events?since=2").status_code == 410
    # at the window's edge: everything retained, nothing lost
    r = dp.tget(srv, key, "/api/events?since=3")
    assert r.status_code == 200, r.text
    assert [e["seq"] for e in r.json()["data"]] == list(range(4, newest + 1))
    # the raw webhooks and timelines made old are gone (by the next tick or two: age()
    # moves them back one table at a time, and a purge may fall between); pending ones stay
    deadline = time.time() + 10
    while time.time() < deadline and (
            db.count(f"SELECT COUNT(*) FROM raw_events WHERE app_id = '{aid}'") or
            db.count(f"SELECT COUNT(*) FROM call_events WHERE app_id = '{aid}'")):
        time.sleep(0.1)
    assert db.count(f"SELECT COUNT(*) FROM raw_events WHERE app_id = '{aid}'") == 0
    assert db.count(f"SELECT COUNT(*) FROM call_events WHERE app_id = '{aid}'") == 0
    # calls are kept (RETENTION_CALLS_DAYS unset)
    assert db.count(f"SELECT COUNT(*) FROM calls WHERE app_id = '{aid}'") == 6

    # the stream: a purged since gets reset (then live), the edge gets the replay
    ws = connect(srv, key, "since=1")
    hello(ws, aid, newest)
    m = recv(ws)
    assert m.get("type") == "reset" and m.get("seq") == newest, m
    hooks.send(call_event())
    m = recv(ws)
    assert m["type"] == "event" and m["seq"] == newest + 1, m
    ws.close()
    ws = connect(srv, key, "since=3")
    hello(ws, aid, newest + 1)
    assert seqs(events_until(ws, newest + 1)) == list(range(4, newest + 2))
    ws.close()

    # an app whose every event is old keeps its newest row: the window still says
    # where the history starts
    age(db, aid, "1 = 1")
    r = wait_gone(srv, key, newest - 1)
    assert r.status_code == 410, r.text
    assert r.json()["oldest_seq"] == newest + 1, r.json()
    metrics = srv.get("/metrics", headers=dp.ADMIN).text
    purged = [l for l in metrics.splitlines() if l.startswith("cti_retention_purged_rows_total ")]
    assert purged and float(purged[0].split()[1]) >= 3 + 6 + 6, purged


def test_zero_keeps_everything(make_server, tmp_path, request):
    url = f"sqlite:{tmp_path}/keep.db"
    srv = start(make_server, database=url, RETENTION_DAYS="0", RETENTION_TICK_MS="100")
    db = DB(request, url)
    app = dp.create_app(srv)
    hooks = Hooks(srv, app)
    for _ in range(3):
        hooks.send(call_event())
    dp.wait_events(srv, app["api_key"], 3)
    age(db, app["app_id"], "1 = 1", days=10000)
    time.sleep(1.0)  # ten ticks' worth, if there were a purger
    assert dp.tget(srv, app["api_key"], "/api/events?since=0").status_code == 200
    assert db.count(f"SELECT COUNT(*) FROM raw_events WHERE app_id = '{app['app_id']}'") == 3


def file_bytes(path):
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def main_bytes(path):
    return os.path.getsize(path)


def test_sqlite_file_stops_growing_under_steady_ingest(make_server, tmp_path, request):
    url = f"sqlite:{tmp_path}/steady.db"
    srv = start(make_server, database=url, RETENTION_DAYS="1", RETENTION_CALLS_DAYS="1",
                RETENTION_TICK_MS="200")
    db = DB(request, url)
    assert db.run("PRAGMA auto_vacuum") == "2"  # INCREMENTAL: a new file
    app = dp.create_app(srv)
    key, aid, hooks = app["api_key"], app["app_id"], Hooks(srv, app)
    sizes, mains, seq = [], [], 0
    for _ in range(6):
        hooks.blast([call_event() for _ in range(400)], threads=4)
        seq = dp.wait_events(srv, key, 1, since=seq, timeout=30)[-1]["seq"]
        while dp.tget(srv, key, f"/api/events?since={seq}").json()["next_since"] < seq:
            time.sleep(0.05)
        grown = file_bytes(db.path)
        # everything old: the purger takes it all (calls too), leaving the newest log row
        age(db, aid, "1 = 1")
        db.run(f"UPDATE calls SET sort_at = sort_at - {3 * DAY_MS} WHERE app_id = '{aid}'")
        deadline = time.time() + 30
        while db.count(f"SELECT COUNT(*) FROM calls WHERE app_id = '{aid}'") > 0:
            assert time.time() < deadline, "the purger did not empty the tables"
            time.sleep(0.1)
        time.sleep(0.5)
        sizes.append((grown, file_bytes(db.path)))
        mains.append(main_bytes(db.path))
        seq = dp.tget(srv, key, "/api/events?since=0").json()["oldest_seq"] \
            if dp.tget(srv, key, "/api/events?since=0").status_code == 410 else seq
    print("file+wal bytes per round (after ingest, after purge):", sizes)
    print("main file bytes after each purge:", mains)
    # (file + WAL is printed, not asserted: the WAL grows to the checkpointer's 64 MiB
    # threshold whatever the purge does, so it measured the checkpointer, and flaked)
    # the database file itself (the WAL is the checkpointer's): freed pages are
    # reused and given back, so it stays near one round's worth
    assert max(mains[3:]) <= max(mains[:2]) * 1.5 + 256 * 1024, mains
    assert db.count("PRAGMA freelist_count") < 2000, db.run("PRAGMA freelist_count")
