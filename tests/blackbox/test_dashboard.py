"""GET /dashboard as HTTP sees it: the files compiled into the binary, their types,
the Content-Security-Policy, caching, and what is not there. (The page's behaviour
in a browser: tests/browser, `make test-browser`.)"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "dashboard-admin-secret-0123456789abcdefghijklmnopqrstuvwxyz"

ASSETS = {
    "/dashboard": ("text/html; charset=utf-8", ROOT / "web/dashboard/index.html"),
    "/dashboard/dashboard.css": ("text/css; charset=utf-8", ROOT / "web/dashboard/dashboard.css"),
    "/dashboard/dashboard.js": ("text/javascript; charset=utf-8", ROOT / "web/dashboard/dashboard.js"),
    "/dashboard/client.js": ("text/javascript; charset=utf-8", ROOT / "clients/js/index.js"),
}


def csp_directives(resp):
    csp = resp.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in (x.strip() for x in csp.split(";")) if d}


def test_dashboard_files_are_served_from_the_binary(make_server):
    # the server runs in a temp dir: what it serves is compiled in, byte for byte
    srv = make_server()
    for path, (ctype, source) in ASSETS.items():
        r = srv.get(path)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["Content-Type"] == ctype, path
        assert r.content == source.read_bytes(), path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{16}"', r.headers["ETag"])


def test_dashboard_needs_no_key_and_holds_no_secret(make_server):
    srv = make_server(env={"INTERNAL_API_SECRET": ADMIN})
    app = srv.post("/internal/apps", json={"name": "acme"},
                   headers={"Authorization": f"Bearer {ADMIN}"}).json()
    for path in ASSETS:
        text = srv.get(path).text
        assert app["api_key"] not in text and app["webhook_secret"] not in text


def test_dashboard_csp_is_strict(make_server):
    srv = make_server()
    for path in ASSETS:
        d = csp_directives(srv.get(path))
        assert d["default-src"] == ["'self'"]
        assert d["script-src"] == ["'self'"]  # no inline script, no eval
        assert d["connect-src"] == ["'self'", "ws:", "wss:"]
        assert d["frame-ancestors"] == ["'none'"]
        assert d["object-src"] == ["'none'"]
        assert not any("unsafe" in v for vals in d.values() for v in vals)


def test_dashboard_page_has_no_inline_script_and_no_cdn(make_server):
    srv = make_server()
    html = srv.get("/dashboard").text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "the page loads its script"
    for attrs, body in scripts:
        assert 'src="/dashboard/' in attrs and body.strip() == ""
    assert not re.search(r"\son\w+\s*=", html), "no inline event handler"
    assert "style=" not in html
    for path in ASSETS:  # nothing fetched from elsewhere (works offline)
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", srv.get(path).text), path
        assert "@import" not in srv.get(path).text


def test_dashboard_revalidates_with_etag(make_server):
    srv = make_server()
    r = srv.get("/dashboard/dashboard.js")
    again = srv.get("/dashboard/dashboard.js", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == r.headers["ETag"]
    other = srv.get("/dashboard/dashboard.js", headers={"If-None-Match": '"0000000000000000"'})
    assert other.status_code == 200 and other.content == r.content
    # each file has its own tag
    tags = {srv.get(p).headers["ETag"] for p in ASSETS}
    assert len(tags) == len(ASSETS)


def test_dashboard_trailing_slash_and_head(make_server):
    srv = make_server()
    r = srv.get("/dashboard/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    h = srv.request("HEAD", "/dashboard")
    assert h.status_code == 200 and h.content == b""


def test_dashboard_unknown_file_is_404_and_other_methods_405(make_server):
    srv = make_server()
    for path in ("/dashboard/nope.js", "/dashboard/index.html", "/dashboard/..%2Fapi.c",
                 "/dashboard/dashboard.js/x"):
        r = srv.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"] == "not_found"
    r = srv.post("/dashboard", json={})
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
