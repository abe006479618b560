"""Several instances on one PostgreSQL: an event committed by any instance
reaches the WebSockets of every instance, and each app's seqs stay gapless
with both instances ingesting at once."""
import json
import threading
import time

import websocket

from dialpad import sign as jwt

ADMIN = "multi-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def two_instances(make_server, pg, name):
    """Two servers on one fresh PostgreSQL database, and an app made through the first."""
    url = pg.fresh_database(f"bb_multi_{name}")
    # instances on one database share the key that seals the webhook secrets (each
    # sandbox DATA_DIR would otherwise generate its own)
    env = {"INTERNAL_API_SECRET": ADMIN,
           "TOKEN_ENCRYPTION_KEY": "3b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe"}
    one = make_server(env=env, database=url)
    two = make_server(env=env, database=url)
    app = one.post("/internal/apps", json={"name": name},
                   headers={"Authorization": f"Bearer {ADMIN}"}).json()
    return one, two, app


def test_two_instances_share_the_stream(make_server, pg):
    one, two, app = two_instances(make_server, pg, "multi")
    key = {"X-API-Key": app["api_key"]}
    # one socket on each instance
    socks = [websocket.create_connection(f"ws://127.0.0.1:{s.port}/ws", header=[f"X-API-Key: {app['api_key']}"],
                                         timeout=15) for s in (one, two)]
    for s in socks:
        assert json.loads(s.recv())["type"] == "hello"

    # a webhook to instance 1 reaches the socket on instance 2 (and 1)
    r = one.post(f"/webhooks/dialpad/{app['app_id']}",
                 data=jwt({"call_id": 1, "state": "ringing", "event_timestamp": 1}, app["webhook_secret"]))
    assert r.status_code == 200
    for s in socks:
        m = json.loads(s.recv())
        assert m["type"] == "event" and m["seq"] == 1 and m["call_id"] == "1"

    # both instances ingesting at once: every socket sees 2..N+1, gapless, in order
    n = 300

    def send(srv, start):
        for i in range(start, n, 2):
            ev = {"call_id": 1000 + i, "state": "ringing", "event_timestamp": 10 + i}
            assert srv.post(f"/webhooks/dialpad/{app['app_id']}",
                            data=jwt(ev, app["webhook_secret"])).status_code == 200

    threads = [threading.Thread(target=send, args=(srv, k)) for k, srv in enumerate((one, two))]
    for t in threads:
        t.start()
    seen = [[], []]
    deadline = time.time() + 30
    for idx, s in enumerate(socks):
        while len(seen[idx]) < n and time.time() < deadline:
            m = json.loads(s.recv())
            if m.get("type") == "event":
                seen[idx].append(m["seq"])
    for t in threads:
        t.join()
    for idx in (0, 1):
        assert seen[idx] == list(range(2, n + 2)), f"instance {idx + 1}'s socket: gap or disorder"
    # and the REST view agrees on both instances
    for srv in (one, two):
        page = srv.get(f"/api/events?since=0&limit=500", headers=key).json()
        assert [e["seq"] for e in page["data"]] == list(range(1, n + 2))
    for s in socks:
        s.close()


def test_listener_survives_a_postgresql_restart(make_server, tmp_path):
    """The listener reconnects after PostgreSQL comes back and catches up from the log."""
    from conftest import PG
    own = PG()
    try:
        url = own.start()
        env = {"INTERNAL_API_SECRET": ADMIN}
        srv = make_server(env=env, database=url)
        app = srv.post("/internal/apps", json={"name": "r"},
                       headers={"Authorization": f"Bearer {ADMIN}"}).json()
        ws = websocket.create_connection(f"ws://127.0.0.1:{srv.port}/ws",
                                         header=[f"X-API-Key: {app['api_key']}"], timeout=20)
        assert json.loads(ws.recv())["type"] == "hello"
        own.stop()
        time.sleep(1)
        own.start()
        deadline = time.time() + 20
        while srv.get("/health").status_code != 200 and time.time() < deadline:
            time.sleep(0.2)
        ok = False
        while not ok and time.time() < deadline:  # 503s while the pool reconnects are fine
            ok = srv.post(f"/webhooks/dialpad/{app['app_id']}",
                          data=jwt({"call_id": 5, "state": "ringing", "event_timestamp": 5},
                                   app["webhook_secret"])).status_code == 200
            time.sleep(0.2)
        assert ok
        m = json.loads(ws.recv())
        assert m["type"] == "event" and m["call_id"] == "5"
        ws.close()
        assert srv.stop() == 0
    finally:
        own.destroy()


def test_two_instances_never_lose_an_event_of_the_same_call(make_server, pg):
    """Events of one call delivered to different instances at the same moment:
    each instance reads the leg, applies its event and writes the leg back. The
    second to write must have read the first's write, or the first event's effect
    is lost (here: the call that connected would end as missed)."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    one, two, app = two_instances(make_server, pg, "legs")
    key = {"X-API-Key": app["api_key"]}
    calls = 240

    def post(item):
        srv, ev = item
        return srv.post(f"/webhooks/dialpad/{app['app_id']}",
                        data=jwt(ev, app["webhook_secret"])).status_code

    # in waves of 12 calls, each call's three events sent at once, to both instances
    rnd = random.Random(7)
    with ThreadPoolExecutor(max_workers=36) as pool:
        for first in range(0, calls, 12):
            sends = []
            for cid in range(7000 + first, 7000 + first + 12):
                # connected carries date_connected; hangup (as for some legs) does not
                sends.append((one, {"call_id": cid, "state": "ringing", "event_timestamp": 1000}))
                sends.append((two, {"call_id": cid, "state": "connected", "event_timestamp": 2000,
                                    "date_connected": 2000}))
                sends.append((rnd.choice((one, two)), {"call_id": cid, "state": "hangup",
                                                       "event_timestamp": 3000, "date_ended": 3000}))
            assert set(pool.map(post, sends)) == {200}
    wrong = []
    for i in range(calls):
        call = one.get(f"/api/calls/{7000 + i}", headers=key).json()
        states = sorted(e["state"] for e in call["timeline"])
        if call["status"] != "ended" or call["outcome"] != "answered" or \
                states != ["connected", "hangup", "ringing"]:
            wrong.append((call["id"], call["status"], call["outcome"], states))
    assert not wrong, f"{len(wrong)} of {calls} calls lost an event: {wrong[:5]}"
    # and every event is in the log exactly once, seqs gapless
    seqs = []
    while len(seqs) < 3 * calls + 1:
        page = two.get(f"/api/events?since={seqs[-1] if seqs else 0}&limit=500", headers=key).json()
        if not page["data"]:
            break
        seqs += [e["seq"] for e in page["data"]]
    assert seqs == list(range(1, 3 * calls + 1))


def test_an_instance_without_sockets_relays_nothing_then_streams_gaplessly(make_server, pg):
    """Events committed while an instance has no socket of the app are not read
    by its relay; a socket that connects later gets them in its replay, then
    the live ones, with no gap and no repeat."""
    one, two, app = two_instances(make_server, pg, "late")

    def send(first, last):
        for i in range(first, last):
            ev = {"call_id": 5000 + i, "state": "ringing", "event_timestamp": 10 + i}
            assert one.post(f"/webhooks/dialpad/{app['app_id']}",
                            data=jwt(ev, app["webhook_secret"])).status_code == 200

    send(0, 40)  # nobody listens on either instance
    time.sleep(0.3)
    sock = websocket.create_connection(f"ws://127.0.0.1:{two.port}/ws?since=0",
                                       header=[f"X-API-Key: {app['api_key']}"], timeout=15)
    assert json.loads(sock.recv())["type"] == "hello"
    threading.Thread(target=send, args=(40, 80)).start()
    seqs = []
    deadline = time.time() + 20
    while len(seqs) < 80 and time.time() < deadline:
        m = json.loads(sock.recv())
        if m.get("type") == "event":
            seqs.append(m["seq"])
    sock.close()
    assert seqs == list(range(1, 81))
