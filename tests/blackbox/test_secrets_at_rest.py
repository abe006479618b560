"""The apps' webhook secrets at rest: sealed with TOKEN_ENCRYPTION_KEY, never in clear in
the database files (SQLite file and WAL) or the log at LOG_LEVEL=debug; the key rotated
(TOKEN_ENCRYPTION_KEY_OLD read while the start-up pass re-seals); a wrong key; a database
written in clear by an older version, sealed at the next start.

Written against docs/API.md (Dialpad webhooks; Admin) and README.md (TOKEN_ENCRYPTION_KEY,
"Rotating TOKEN_ENCRYPTION_KEY").
"""
import json
import sqlite3
import time

from dialpad import ADMIN_SECRET, admin, create_app, post_hook, sign

KEY_A = "00112233445566778899aabbccddeeff0123456789abcdef0011223344556677"
KEY_B = "f0e1d2c3b4a5968778695a4b3c2d1e0f0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEY_C = "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
LEGACY = "LegacyClearWebhookSecret_written_in_clear_0"  # 43 characters, like ours

_next = [6900000000000000]


def event():
    _next[0] += 1
    return {"call_id": _next[0], "state": "ringing", "direction": "inbound",
            "external_number": "+12065550131", "event_timestamp": int(time.time() * 1000)}


def start(make_server, database=None, workdir=None, **env):
    e = {"INTERNAL_API_SECRET": ADMIN_SECRET}
    e.update(env)
    return make_server(env=e, database=database, workdir=workdir)


def hook(srv, app_id, secret):
    return post_hook(srv, app_id, sign(event(), secret))


def read_secret(srv, app_id):
    r = admin(srv, "GET", f"/internal/apps/{app_id}")
    assert r.status_code == 200, r.text
    return r.json()["webhook_secret"]


def reseal_line(srv):
    """The last start's 'webhook secrets at rest' line."""
    lines = [l for l in srv.log_lines() if l.get("msg", "").startswith("webhook secrets at rest")]
    assert lines, srv.log_text()
    return lines[-1]


def db_files(var):
    """Every file of the SQLite database (main file, -wal, -shm, journal) in var/."""
    files = sorted(p for p in var.iterdir() if p.name.startswith("cti.db"))
    assert any(p.name == "cti.db" for p in files), files
    return files


def assert_nowhere(secrets, files):
    for path in files:
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"a webhook secret is in clear in {path.name}"


def stored_column(db_path):
    con = sqlite3.connect(db_path)
    try:
        return [r[0] for r in con.execute("SELECT secret FROM webhook_secrets")]
    finally:
        con.close()


# ---- (a) never in clear: database files, WAL, debug log ----------------------------------------

def test_secret_never_in_clear_in_db_files_wal_or_debug_log(make_server):
    srv = start(make_server, LOG_LEVEL="debug")  # sandbox: the key is generated in var/token-key
    var = srv.workdir / "var"
    app = create_app(srv)
    first = app["webhook_secret"]
    assert hook(srv, app["app_id"], first).status_code == 200
    r = admin(srv, "POST", f"/internal/apps/{app['app_id']}/webhook-secret/rotate",
              json={"grace_seconds": 60})
    assert r.status_code == 200, r.text
    second = r.json()["webhook_secret"]
    for s in (first, second):  # both verify (one in its grace); the admin reads the current
        assert hook(srv, app["app_id"], s).status_code == 200
    assert read_secret(srv, app["app_id"]) == second
    assert post_hook(srv, None, sign(event(), second)).status_code == 200  # routed by secret
    assert hook(srv, app["app_id"], second[::-1]).status_code == 401

    assert (var / "token-key").stat().st_mode & 0o777 == 0o600
    files = db_files(var)
    assert any(p.name == "cti.db-wal" for p in files)  # running: the WAL holds the commits
    assert_nowhere([first, second], files)
    assert srv.stop() == 0
    assert_nowhere([first, second], db_files(var))  # after the shutdown checkpoint
    log = srv.log_text()  # LOG_LEVEL=debug: every line the server writes
    assert "webhook rejected" in log  # the wrong signature below was logged, without secrets
    assert first not in log and second not in log
    column = stored_column(var / "cti.db")
    assert len(column) == 2 and all(v.startswith("v1:") for v in column), column


# ---- (b) rotating TOKEN_ENCRYPTION_KEY ----------------------------------------------------------

def test_token_key_rotation_old_key_reads_then_reseal(make_server, backend, tmp_path):
    one = start(make_server, backend, TOKEN_ENCRYPTION_KEY=KEY_A)
    app = create_app(one)
    secret = app["webhook_secret"]
    assert hook(one, app["app_id"], secret).status_code == 200
    assert one.stop() == 0

    # B current, A old: everything still reads, and the start-up pass re-seals with B
    two = start(make_server, backend, TOKEN_ENCRYPTION_KEY=KEY_B, TOKEN_ENCRYPTION_KEY_OLD=KEY_A)
    line = reseal_line(two)
    assert line["resealed_from_old_key"] == 1 and line["not_with_current_key"] == 0, line
    assert line["unreadable"] == 0, line
    assert hook(two, app["app_id"], secret).status_code == 200
    assert read_secret(two, app["app_id"]) == secret
    assert two.stop() == 0

    # only B: still verifies (it was re-sealed); nothing left to do
    three = start(make_server, backend, TOKEN_ENCRYPTION_KEY=KEY_B)
    line = reseal_line(three)
    assert line["resealed_from_old_key"] == 0 and line["not_with_current_key"] == 0, line
    assert hook(three, app["app_id"], secret).status_code == 200
    assert read_secret(three, app["app_id"]) == secret
    assert secret not in three.log_text() + two.log_text() + one.log_text()


# ---- (c) a wrong key ---------------------------------------------------------------------------

def test_wrong_key_does_not_crash_and_webhooks_get_503(make_server, tmp_path):
    """Neither the current nor an old key opens the secrets: the server starts and serves;
    webhooks for those apps get 503, not 401. The fault is the server's configuration, not
    the sender's: Dialpad retries a 5xx (a 401 would lose the event for good), and once the
    right key is back the retries are stored. The error is logged once per secret, with the
    app and the key ids, never the secret."""
    db = f"sqlite:{tmp_path}/wrong.db"
    one = start(make_server, db, TOKEN_ENCRYPTION_KEY=KEY_A)
    app = create_app(one)
    secret = app["webhook_secret"]
    assert one.stop() == 0

    two = start(make_server, db, TOKEN_ENCRYPTION_KEY=KEY_C)
    assert two.get("/health").status_code == 200
    assert reseal_line(two)["unreadable"] == 1
    for _ in range(3):
        r = hook(two, app["app_id"], secret)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable"
        assert "cannot be decrypted" in r.json()["message"]
    r = post_hook(two, None, sign(event(), secret))  # routed by secret: the same
    assert r.status_code == 503, r.text
    r = admin(two, "GET", f"/internal/apps/{app['app_id']}")
    assert r.status_code == 500 and r.json()["error"] == "internal_error", r.text
    assert "TOKEN_ENCRYPTION_KEY" in r.json()["message"]
    errors = [l for l in two.log_lines() if l.get("level") == "error"
              and l.get("msg", "").startswith("webhook secret cannot be decrypted")]
    assert len(errors) == 1, errors  # once, not once per webhook
    assert errors[0]["app_id"] == app["app_id"] and errors[0]["current_kid"], errors
    assert secret not in two.log_text()

    # rotating the secret under the new key is one way out: the new secret works
    r = admin(two, "POST", f"/internal/apps/{app['app_id']}/webhook-secret/rotate",
              json={"grace_seconds": 60})
    assert r.status_code == 200, r.text
    assert hook(two, app["app_id"], r.json()["webhook_secret"]).status_code == 200
    assert two.stop() == 0

    # the right key back: the old secret (in its grace) verifies again; nothing was damaged
    three = start(make_server, db, TOKEN_ENCRYPTION_KEY=KEY_A, TOKEN_ENCRYPTION_KEY_OLD=KEY_C)
    assert hook(three, app["app_id"], secret).status_code == 200


# ---- (d) upgrade: secrets an older version stored in clear ---------------------------------------

def test_clear_secrets_of_an_older_version_are_sealed_at_start(make_server, tmp_path):
    srv = start(make_server, workdir=tmp_path / "srv", LOG_LEVEL="debug")
    var = srv.workdir / "var"
    apps = [create_app(srv, name=f"old-{i}") for i in range(6)]
    assert srv.stop() == 0

    # the rows as a version that stored secrets in clear wrote them
    legacy = {a["app_id"]: LEGACY[:-1] + str(i) for i, a in enumerate(apps)}
    con = sqlite3.connect(var / "cti.db")
    with con:
        for app_id, secret in legacy.items():
            con.execute("UPDATE webhook_secrets SET secret = ? WHERE app_id = ?", (secret, app_id))
    con.close()
    assert sorted(stored_column(var / "cti.db")) == sorted(legacy.values())
    found = b"".join(p.read_bytes() for p in db_files(var))
    assert all(s.encode() in found for s in legacy.values())  # the search below can fail

    again = start(make_server, workdir=tmp_path / "srv", LOG_LEVEL="debug")
    line = reseal_line(again)
    assert line["sealed_from_clear"] == 6 and line["not_with_current_key"] == 0, line
    for app_id, secret in legacy.items():
        assert hook(again, app_id, secret).status_code == 200
        assert read_secret(again, app_id) == secret
    assert again.stop() == 0
    column = stored_column(var / "cti.db")
    assert len(column) == 6 and all(v.startswith("v1:") for v in column), column
    assert_nowhere(legacy.values(), db_files(var))  # not even in the pages' freed space
    assert not any(s in again.log_text() for s in legacy.values())
