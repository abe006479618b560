"""docs/openapi.yaml against the server: every route the server registers is described
(and nothing else), and the response validator the harness runs on every response
(openapi_check.py, hooked in conftest.py) really fails on a response that drifted."""
import re
from pathlib import Path

import pytest
import requests

from conftest import OPENAPI, ROOT
from openapi_check import Checker

ROUTE = re.compile(r'cti_http_route\(\s*srv,\s*CTI_HTTP_(\w+),\s*"([^"]+)"')


def registered_routes():
    out = set()
    for f in sorted((ROOT / "src/api").glob("*.c")):
        text = re.sub(r"\s+", " ", f.read_text())
        out.update((m.group(1).lower(), m.group(2)) for m in ROUTE.finditer(text))
    return out


def test_every_registered_route_is_described_and_nothing_else():
    routes = registered_routes()
    assert len(routes) > 40, routes  # the grep found the registrations
    spec = Checker().spec
    described = {(m, p) for p, item in spec["paths"].items() for m in item
                 if m in ("get", "put", "post", "delete", "patch")}
    assert routes - described == set(), f"routes not in docs/openapi.yaml: {sorted(routes - described)}"
    assert described - routes == set(), f"described but not served: {sorted(described - routes)}"


def test_every_operation_documents_its_errors():
    spec = Checker().spec
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            codes = set(op["responses"])
            assert {"413", "431", "500", "503"} <= codes, (method, path, codes)
            if op.get("security"):
                assert "401" in codes, (method, path)
            if path.startswith("/internal"):
                assert "403" in codes, (method, path)
            if "{" in path and path != "/webhooks/dialpad/{app_id}":
                assert "404" in codes or path.startswith("/api/user-mappings") and method == "put", \
                    (method, path)


def test_the_validator_catches_drift(make_server):
    s = make_server()
    r = s.get("/health")
    assert r.status_code == 200
    c = Checker()
    assert c.check("GET", r.url, 200, r.headers, r.content) is None
    # an extra member, a missing one, a wrong type, an undocumented status or path
    # or content type: each is reported
    assert "does not match" in c.check("GET", r.url, 200, r.headers,
                                       r.content[:-1] + b', "extra": 1}')
    assert "does not match" in c.check("GET", r.url, 200, r.headers,
                                       b'{"status": "healthy"}')
    assert "does not match" in c.check("GET", r.url, 200, r.headers,
                                       r.content.replace(b'"backend":"', b'"backend":"x'))
    assert "not documented" in c.check("GET", r.url, 201, r.headers, r.content)
    assert "undocumented path" in c.check("GET", s.url("/nope"), 200, r.headers, r.content)
    assert "Content-Type" in c.check("GET", r.url, 200, {"Content-Type": "text/html"}, b"<p>")
    # unknown paths answer the documented 404 error, other methods a 405 with Allow
    nf = s.get("/no/such/path")
    assert nf.status_code == 404 and c.check("GET", nf.url, 404, nf.headers, nf.content) is None
    na = s.request("DELETE", "/health")
    assert na.status_code == 405 and c.check("DELETE", na.url, 405, na.headers, na.content) is None


def test_the_harness_hook_validates_every_response(make_server):
    """The conftest hook records a mismatch for a response received through requests."""
    s = make_server()
    saved = OPENAPI.spec["paths"]["/health"]["get"]["responses"].pop("200")
    try:
        requests.get(s.url("/health"), timeout=10)
        problems = OPENAPI.take()
    finally:
        OPENAPI.spec["paths"]["/health"]["get"]["responses"]["200"] = saved
    assert any("GET /health -> 200" in p and "not documented" in p for p in problems), problems
