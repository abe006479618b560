"""A start/serve/stop cycle of the optimized binary under valgrind: no leaks, no errors."""
import shutil
import time
from pathlib import Path

import pytest

from conftest import RELEASE_BIN


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_no_leaks_or_errors_under_valgrind(make_server, tmp_path, database, request):
    env = {}
    if database == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("pg").fresh_database("bb_valgrind")
    # the optimized build allocates with tcmalloc: memcheck replaces its malloc too
    vg = ["valgrind", "--soname-synonyms=somalloc=*tcmalloc*",
          "--suppressions=" + str(Path(__file__).with_name("valgrind.supp")), "--leak-check=full",
          "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99", "--track-fds=no",
          "--quiet"]
    srv = make_server(env=env, binary=RELEASE_BIN, wrapper=vg, start=False)
    srv.start(timeout=60)
    for path in ("/health", "/nope", "/health?api_key=x"):
        srv.get(path, timeout=30)
    srv.post("/health", data=b"x" * 5000, timeout=30)
    srv.post("/health", data=b"x" * (1024 * 1024 + 10), timeout=30)
    time.sleep(0.3)
    code = srv.stop(timeout=60)
    text = srv.log_text()
    assert code == 0, text[-5000:]
    assert "definitely lost" not in text or "definitely lost: 0 bytes" in text, text[-5000:]
    assert "Invalid read" not in text and "Invalid write" not in text and "uninitialised" not in text
