"""Validates the server's responses against docs/openapi.yaml, so the description
cannot drift from the server.

conftest.py wraps requests.Session.send: every response that a test receives from a
cti-server this harness started is checked here — the path must match a documented
path (else the answer must be the documented 404 for unknown paths), the method a
documented operation (else 405 with Allow), the status must be listed for that
operation, the Content-Type one of its media types, and a JSON body must validate
against the schema (python3-jsonschema, Draft 2020-12, which OpenAPI 3.1 uses).
Problems are collected per test and fail it at teardown (also for requests made on
other threads). Raw-socket and WebSocket frames are not covered.
"""
import json
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import yaml

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs/openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ERROR_REF = {"$ref": "#/components/schemas/Error"}


class Checker:
    def __init__(self, path=SPEC_PATH):
        self.spec = yaml.safe_load(Path(path).read_text())
        self.resolver = jsonschema.RefResolver.from_schema(self.spec)
        self.routes = []  # (regex, n_params, template, path item)
        for tmpl, item in self.spec["paths"].items():
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(tmpl)) + "$"
            self.routes.append((re.compile(rx), tmpl.count("{"), tmpl, item))
        self.routes.sort(key=lambda r: r[1])  # literal segments win: /api/calls/active
        self.validators = {}
        self.lock = threading.Lock()
        self.problems = []

    def _validator(self, schema):
        key = json.dumps(schema, sort_keys=True)
        v = self.validators.get(key)
        if v is None:
            v = jsonschema.Draft202012Validator(schema, resolver=self.resolver)
            self.validators[key] = v
        return v

    def _deref(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            obj = self.resolver.resolve(obj["$ref"])[1]
        return obj

    def check(self, method, url, status, headers, body):
        """Returns a problem (str) or None."""
        path = unquote(urlsplit(url).path)
        method = method.lower()
        where = f"{method.upper()} {path} -> {status}"
        route = next((r for r in self.routes if r[0].match(path)), None)
        if route is None:
            if status in (400, 404, 413, 429, 431, 503):
                return self._check_json(where, headers, body, ERROR_REF)
            return f"{where}: undocumented path (only an error is expected there)"
        item = route[3]
        op = item.get(method) or (item.get("get") if method == "head" else None)
        if op is None:
            if status == 405:
                if "Allow" not in headers:
                    return f"{where}: 405 without Allow"
                return self._check_json(where, headers, body, ERROR_REF)
            if status in (400, 413, 429, 431, 503):
                return self._check_json(where, headers, body, ERROR_REF)
            return f"{where}: undocumented method for {route[2]}"
        responses = op["responses"]
        resp = responses.get(str(status))
        if resp is None:
            return f"{where}: status {status} not documented for {method.upper()} {route[2]}"
        resp = self._deref(resp)
        content = resp.get("content")
        if method == "head" or status in (101, 204, 304) or not content:
            return None
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        media = content.get(ctype)
        if media is None:
            return f"{where}: Content-Type {ctype!r} not documented (have {sorted(content)})"
        if ctype != "application/json":
            return None
        return self._check_json(where, headers, body, media.get("schema", {}))

    def _check_json(self, where, headers, body, schema):
        if body is None:  # a streamed response: its body is the test's to read
            return None
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return f"{where}: expected JSON, got Content-Type {ctype!r}"
        try:
            doc = json.loads(body)
        except ValueError as e:
            return f"{where}: body is not JSON: {e}"
        e = jsonschema.exceptions.best_match(self._validator(schema).iter_errors(doc))
        if e is not None:
            while e.context:  # oneOf (X or null): report the deepest reason
                e = jsonschema.exceptions.best_match(e.context)
            at = "/".join(str(p) for p in e.absolute_path)
            return f"{where}: body does not match docs/openapi.yaml at /{at}: {e.message[:300]}"
        return None

    def record(self, problem):
        with self.lock:
            self.problems.append(problem)

    def take(self):
        with self.lock:
            out, self.problems = self.problems, []
        return out
