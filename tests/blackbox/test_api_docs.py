"""docs/API.md cannot rot: every ```http example is replayed against a server
loaded with the Dialpad fixtures, and the status and the shape of the answer
(object keys, recursively; the first element of arrays) must match the ```json
block that follows it. Values may differ (ids, times); shapes may not."""
import glob
import json
import re
import time
from pathlib import Path

import pytest

from dialpad import FIXTURES as FIXTURE_DIR, sign

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted(glob.glob(str(FIXTURE_DIR / "*.json")))
ADMIN = "docs-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def examples():
    text = (ROOT / "docs/API.md").read_text()
    pairs = re.findall(r"```http\n(.*?)```\n```json\n(.*?)```", text, re.S)
    out = []
    for req, resp in pairs:
        head, _, body = req.partition("\n\n")
        lines = head.strip().splitlines()
        method, path = lines[0].split(" ", 1)
        headers = dict(l.split(": ", 1) for l in lines[1:])
        status, _, expect = resp.partition("\n")
        out.append((method, path, headers, body.strip(), int(status), json.loads(expect)))
    return out


def shape_problems(expect, actual, where="$"):
    """Why actual does not have expect's shape (empty when it does)."""
    if expect is None or actual is None:
        return []  # null stands for "a value or none" in examples
    if isinstance(expect, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {type(actual).__name__}"]
        out = []
        if set(expect) != set(actual):
            out.append(f"{where}: keys differ: doc-only {sorted(set(expect) - set(actual))}, "
                       f"server-only {sorted(set(actual) - set(expect))}")
        for k in set(expect) & set(actual):
            out += shape_problems(expect[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expect, list):
        if not isinstance(actual, list):
            return [f"{where}: expected an array"]
        if expect and actual:
            return shape_problems(expect[0], actual[0], f"{where}[0]")
        if bool(expect) != bool(actual):
            return [f"{where}: doc shows {len(expect)} items, server {len(actual)}"]
        return []
    if isinstance(expect, bool) or isinstance(actual, bool):
        return [] if isinstance(expect, bool) == isinstance(actual, bool) else [f"{where}: bool"]
    kinds = (str, (int, float))
    for kind in kinds:
        if isinstance(expect, kind) and not isinstance(actual, kind):
            return [f"{where}: expected {type(expect).__name__}, got {type(actual).__name__}"]
    return []


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from conftest import Server
    srv = Server(tmp_path_factory.mktemp("docs"), env={
        "INTERNAL_API_SECRET": ADMIN, "PUBLIC_BASE_URL": "https://cti.example.com"}).start()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    app = srv.post("/internal/apps", json={"name": "docs"}, headers=admin).json()
    sent = 0
    for f in FIXTURES:
        for ev in json.load(open(f)):
            r = srv.post(f"/webhooks/dialpad/{app['app_id']}", data=sign(ev, app["webhook_secret"]))
            assert r.status_code == 200, r.text
            sent += 1
    deadline = time.time() + 10
    while srv.get("/health").json().get("pending_events") != 0 and time.time() < deadline:
        time.sleep(0.05)
    yield srv, app, admin
    assert srv.stop() == 0


EXAMPLES = examples()


def test_docs_have_examples():
    assert len(EXAMPLES) >= 15
    paths = {p.split("?")[0] for _, p, _, _, _, _ in EXAMPLES}
    for must in ("/health", "/api/calls", "/api/events", "/api/screen-pop", "/internal/apps"):
        assert must in paths


@pytest.mark.parametrize("method,path,headers,body,status,expect", EXAMPLES,
                         ids=[f"{m} {p}" for m, p, *_ in EXAMPLES])
def test_example_matches_server(loaded, method, path, headers, body, status, expect):
    srv, app, admin = loaded
    path = path.replace("{app_id}", app["app_id"])
    send = dict(headers)
    data = body.encode() if body else None
    if path.startswith("/internal"):
        send.update(admin)
    elif path.startswith("/api"):
        send["X-API-Key"] = app["api_key"]
    elif path.startswith("/webhooks"):
        event = json.load(open(FIXTURES[0]))[0]
        event["event_timestamp"] += 1  # a new event, not a duplicate
        data = sign(event, app["webhook_secret"]).encode()
    if data and "Content-Type" not in send:
        send["Content-Type"] = "application/json"
    r = srv.request(method, path, headers=send, data=data)
    assert r.status_code == status, r.text
    problems = shape_problems(expect, r.json())
    assert not problems, "\n".join(problems) + f"\nserver answered: {r.text[:2000]}"
