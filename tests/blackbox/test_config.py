"""Configuration as an operator meets it: --help, --check-config, .env, errors, sandbox secret."""
import os
import shutil
import stat
import subprocess
import time
import warnings

import pytest
import requests

from conftest import BIN, base_env, free_port, self_signed


def run(args=(), env=None, cwd=None, timeout=20):
    e = base_env()
    e.update(env or {})
    return subprocess.run([BIN, *args], env=e, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_settings(tmp_path):
    r = run(["--help"], cwd=tmp_path)
    assert r.returncode == 0
    for name in ("PORT", "DATABASE_URL", "DB_HOST", "INTERNAL_API_SECRET", "NODE_ENV",
                 "DIALPAD_WEBHOOK_SECRET", "LOG_LEVEL", "--check-config",
                 "MAX_CONNECTIONS_PER_ADDRESS", "HEADER_TIMEOUT", "MIN_BODY_RATE"):
        assert name in r.stdout


def test_check_config_refuses_bad_connection_limits(tmp_path):
    r = run(["--check-config"], env={"HEADER_TIMEOUT": "40", "CONNECTION_TIMEOUT": "30",
                                     "MAX_CONNECTIONS_PER_ADDRESS": "many"}, cwd=tmp_path)
    assert r.returncode == 1
    assert "HEADER_TIMEOUT (40) must not exceed CONNECTION_TIMEOUT (30)" in r.stderr
    assert "MAX_CONNECTIONS_PER_ADDRESS" in r.stderr


def test_help_and_check_config_know_the_limits_and_retention(tmp_path):
    r = run(["--help"], cwd=tmp_path)
    for name in ("RATE_LIMIT_API", "RATE_LIMIT_ADMIN", "TRUSTED_PROXIES", "RETENTION_DAYS",
                 "RETENTION_CALLS_DAYS", "RETENTION_TICK_MS"):
        assert name in r.stdout, name
    r = run(["--check-config"], env={"RATE_LIMIT_API": "-5", "RATE_LIMIT_ADMIN": "fast",
                                     "TRUSTED_PROXIES": "10.0.0.0/8,proxy.example.com",
                                     "RETENTION_DAYS": "forever"}, cwd=tmp_path)
    assert r.returncode == 1
    for name in ("RATE_LIMIT_API", "RATE_LIMIT_ADMIN", "RETENTION_DAYS"):
        assert name in r.stderr, (name, r.stderr)
    assert "TRUSTED_PROXIES" in r.stderr and "proxy.example.com" in r.stderr, r.stderr
    r = run(["--check-config"], env={"RATE_LIMIT_API": "0", "TRUSTED_PROXIES": "fd00::/8, 10.0.0.1",
                                     "RETENTION_DAYS": "30", "RETENTION_CALLS_DAYS": "365"},
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_unknown_argument_is_refused(tmp_path):
    r = run(["--bogus"], cwd=tmp_path)
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_check_config_ok_in_sandbox_with_nothing_set(tmp_path):
    r = run(["--check-config"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr
    assert not (tmp_path / "var").exists()  # checking writes nothing


def test_every_problem_is_reported_at_once(tmp_path):
    r = run(["--check-config"], env={"PORT": "abc", "LOG_LEVEL": "loud",
                                      "DATABASE_URL": "mysql://x"}, cwd=tmp_path)
    assert r.returncode == 1
    assert "PORT" in r.stderr and "LOG_LEVEL" in r.stderr and "DATABASE_URL" in r.stderr
    assert "configuration invalid" in r.stderr


def test_server_refuses_to_start_with_bad_config(tmp_path):
    r = run(env={"PORT": "70000"}, cwd=tmp_path)
    assert r.returncode == 1 and "PORT" in r.stderr


def test_production_refuses_missing_or_weak_secrets_and_no_tls(tmp_path):
    r = run(["--check-config"], env={"NODE_ENV": "production"}, cwd=tmp_path)
    assert r.returncode == 1
    assert "INTERNAL_API_SECRET is required" in r.stderr
    assert "TLS" in r.stderr
    assert "TOKEN_ENCRYPTION_KEY is required in production" in r.stderr
    r = run(["--check-config"], env={"NODE_ENV": "production", "INTERNAL_API_SECRET": "password123",
                                      "TLS_TERMINATED_BY_PROXY": "true"}, cwd=tmp_path)
    assert r.returncode == 1 and "weak" in r.stderr
    assert "password123" not in r.stderr  # a secret is never echoed
    strong = "Zq8f3Kp0Vb7Lx2Nm9Rt4Wy6Hc1Jd5Gs8Qa3Ue7Io0Pk2Ml4Nb6Vc9Xz1Sd3Fg5Hj"
    token_key = "5f1c9a7e3b2d4c6a8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"
    r = run(["--check-config"], env={"NODE_ENV": "production", "INTERNAL_API_SECRET": strong,
                                      "TLS_TERMINATED_BY_PROXY": "true",
                                      "TOKEN_ENCRYPTION_KEY": token_key,
                                      "PUBLIC_BASE_URL": "https://cti.example.com"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert strong not in r.stderr and token_key not in r.stderr


def test_sandbox_weak_secret_is_only_a_warning(tmp_path):
    r = run(["--check-config"], env={"INTERNAL_API_SECRET": "short"}, cwd=tmp_path)
    assert r.returncode == 0
    assert "weak" in r.stderr and '"level":"warn"' in r.stderr


def test_database_password_never_logged(tmp_path):
    r = run(["--check-config"], env={"DATABASE_URL": "postgres://cti:Sup3rS3cretPw@db.internal:5432/cti"},
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Sup3rS3cretPw" not in r.stderr and "db.internal" in r.stderr
    r = run(["--check-config"], env={"DB_HOST": "db.internal", "DB_USER": "cti",
                                      "DB_PASSWORD": "An0therS3cret", "DB_NAME": "cti"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "An0therS3cret" not in r.stderr and "db.internal" in r.stderr


def test_dotenv_file_is_read_and_environment_wins(make_server, tmp_path):
    port = free_port()
    work = tmp_path / "w"
    work.mkdir()
    (work / ".env").write_text(f"# settings\nPORT={port}\nLOG_LEVEL=\"warn\"\n")
    srv = make_server(workdir=work, start=False)
    del srv.env["PORT"], srv.env["LOG_LEVEL"]
    srv.port, srv.base = port, f"http://127.0.0.1:{port}"
    srv.start()
    assert srv.get("/health").status_code == 200  # listening on the .env port
    assert not [l for l in srv.log_lines() if l["level"] == "info"]  # LOG_LEVEL from .env
    assert srv.stop() == 0
    r = run(["--check-config"], env={"PORT": "abc"}, cwd=work)  # env beats .env
    assert r.returncode == 1 and "PORT" in r.stderr


def test_bad_dotenv_line_is_reported_with_its_number(tmp_path):
    (tmp_path / ".env").write_text("PORT=4000\nthis is not a setting\n")
    r = run(["--check-config"], cwd=tmp_path)
    assert r.returncode == 1 and "line 2" in r.stderr


def test_env_file_option(tmp_path):
    f = tmp_path / "custom.env"
    f.write_text("PORT=notaport\n")
    r = run(["--check-config", "--env-file", str(f)], cwd=tmp_path)
    assert r.returncode == 1 and "PORT" in r.stderr
    r = run(["--check-config", "--env-file", str(tmp_path / "missing.env")], cwd=tmp_path)
    assert r.returncode == 2


def test_sandbox_generates_a_private_admin_secret_once(make_server, tmp_path):
    srv = make_server()
    secret_file = srv.workdir / "var" / "admin-secret"
    assert secret_file.exists()
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    first = secret_file.read_text().strip()
    assert len(first) == 64
    assert first not in srv.log_text()  # the path is logged, never the secret
    assert any("admin-secret" in str(l.get("file", "")) for l in srv.log_lines())
    assert srv.stop() == 0
    srv.start()
    assert secret_file.read_text().strip() == first  # reused across restarts


def test_startup_says_what_is_not_configured(make_server):
    srv = make_server()
    msgs = " ".join(l.get("msg", "") for l in srv.log_lines())
    assert "listening" in msgs and "not configured" in msgs
    start = [l for l in srv.log_lines() if l.get("msg") == "cti-server listening"][0]
    assert start["mode"] == "sandbox" and start["database"].startswith("sqlite:")


def test_serves_https_with_its_own_certificate(make_server, tmp_path):
    """TLS_CERT_FILE/TLS_KEY_FILE: the server speaks HTTPS (and production accepts it as TLS)."""
    srv = make_server(env=self_signed(tmp_path))
    assert srv.base.startswith("https://")
    with warnings.catch_warnings():  # a self-signed certificate: not verified
        warnings.simplefilter("ignore")
        r = requests.get(srv.base + "/health", verify=False, timeout=2)
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    with pytest.raises(requests.RequestException):  # plain HTTP gets no answer from a TLS port
        requests.get(srv.base.replace("https://", "http://") + "/health", timeout=2)
    listening = [l for l in srv.log_lines() if l.get("msg") == "cti-server listening"][0]
    assert listening["url"].startswith("https://")
