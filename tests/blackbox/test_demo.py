"""`make demo` (tools/demo.sh) as a new user runs it: it starts the release server on a
temporary SQLite, creates an app, plays cti-sim's demo calls, lists them, prints the
curl lines to look further, and always stops the server and removes its files: at
once without a terminal, on Enter or Ctrl-C with one."""
import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import requests

from conftest import RELEASE_BIN, free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "tools/demo.sh")


def demo_env(tmp_path, port):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PORT": str(port),
            "DEMO_SPEED": "50", "CTI_SERVER": RELEASE_BIN, "TMPDIR": str(tmp_path)}


def answers(port):
    try:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
        return True
    except requests.ConnectionError:
        return False


def test_demo_plays_the_calls_and_stops_the_server(tmp_path):
    port = free_port()
    out = subprocess.run(["bash", DEMO], env=demo_env(tmp_path, port), stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert f"cti-server on http://127.0.0.1:{port}" in text
    # every event the simulator sent was acknowledged, and the calls it made are listed
    sent = re.findall(r"-> HTTP (\d+)", text)
    assert len(sent) >= 10 and set(sent) == {"200"}, text
    listed = re.findall(r"^  (\d{16})  (inbound|outbound) +\+\d+ +(\w+) +(\w+)", text, re.M)
    assert len(listed) == 4, text
    assert {row[3] for row in listed} == {"answered", "missed", "voicemail"}, listed
    assert all(row[2] == "ended" for row in listed), listed
    # what to curl next names this server and the app's key
    key = re.search(r"^  KEY=(\S+)$", text, re.M)
    assert key and key.group(1).startswith("cti_"), text
    for path in ("/api/calls?limit=5", "/api/events?since=0&limit=5", "/api/screen-pop?number=%2B"):
        assert f"http://127.0.0.1:{port}{path}" in text, path
    # and the server is gone, its files too
    assert "server stopped (exit 0)" in text
    assert not answers(port)
    assert not list(tmp_path.glob("cti-demo.*")), list(tmp_path.iterdir())


def test_demo_refuses_a_port_in_use(make_server, tmp_path):
    srv = make_server()
    out = subprocess.run(["bash", DEMO], env=demo_env(tmp_path, srv.port),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"already answers on port {srv.port}" in out.stderr
    assert srv.get("/health").status_code == 200  # the server already there is left alone
    assert not list(tmp_path.glob("cti-demo.*"))


def test_demo_stops_the_server_on_ctrl_c(tmp_path):
    port = free_port()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on a terminal
        os.execve("/bin/bash", ["bash", DEMO], demo_env(tmp_path, port))
    out = b""
    status = None
    try:
        deadline = time.time() + 90
        while b"Press Enter" not in out:
            assert time.time() < deadline, out.decode(errors="replace")
            if select.select([fd], [], [], 0.2)[0]:
                out += os.read(fd, 65536)
        assert answers(port)  # waiting for Enter or Ctrl-C, the server still serves
        os.write(fd, b"\x03")  # Ctrl-C, as the terminal sends it
        deadline = time.time() + 30
        while status is None:
            assert time.time() < deadline, out.decode(errors="replace")
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    pass
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
    finally:
        if status is None:  # the demo hung: end it and its server (its own process group)
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert b"server stopped (exit 0)" in out, out.decode(errors="replace")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0  # a normal way to stop
    assert not answers(port)
    assert not list(tmp_path.glob("cti-demo.*"))


def test_demo_connect_connects_takes_calls_and_disconnects(tmp_path):
    """`make demo-connect` (tools/demo-connect.sh): the whole OAuth connect through the fake
    Dialpad, three calls delivered to the webhook the server registered, a clean disconnect."""
    port = free_port()
    env = demo_env(tmp_path, port)
    out = subprocess.run(["bash", str(ROOT / "tools/demo-connect.sh")], env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "our page says: Dialpad connected" in text
    assert re.search(r"connected as Dialpad user \d+ \(company \d+\), webhook \d+, "
                     r"subscriptions call, sms", text), text
    listed = re.findall(r"^  (\d{16})  inbound +\+\d+ +ended +(\w+)$", text, re.M)
    assert sorted(o for _, o in listed) == ["answered", "missed", "voicemail"], text
    assert "connection.connected call.ringing" in text
    assert "not_connected; left at Dialpad: nothing" in text
    assert "the fake now holds 0 webhooks, 0 subscriptions; deauthorized 1 time(s)" in text
    assert not answers(port)
    assert not list(tmp_path.glob("cti-demo-connect.*"))
