"""Packaging: the Dockerfile, docker-compose.yml, deploy/nginx.conf and the systemd unit.

No container engine runs on the build machines (docs/OPERATIONS.md says so), so these
tests check what can be checked without one: the Dockerfile's build stage installs
what tools/deps.sh lists and builds with a real Makefile target, its runtime stage
carries a package for every shared library the built binary needs, the compose file
keeps its invariants, and `systemd-analyze verify` accepts the unit.
"""
import re
import subprocess
from pathlib import Path

import yaml

from conftest import RELEASE_BIN, ROOT


def dockerfile_stages():
    """[(from-line, [instructions joined over continuation lines])] per stage."""
    stages = []
    cur = None
    for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            cur = (line, [])
            stages.append(cur)
        else:
            assert cur is not None, f"instruction before FROM: {line}"
            cur[1].append(line)
    return stages


def apt_packages(instructions):
    """The package names each `apt-get install` of these instructions names."""
    pkgs = set()
    for ins in instructions:
        for part in ins.split("apt-get install")[1:]:
            pkgs.update(t for t in part.split("&&")[0].split() if not t.startswith("-"))
    return pkgs


def deps_list(name):
    text = (ROOT / "tools/deps.sh").read_text()
    m = re.search(rf"^{name}=\(([^)]*)\)", text, re.M)
    assert m, f"tools/deps.sh has no {name}=(...) list"
    return set(m.group(1).split())


def test_dockerfile_build_stage_matches_the_makefile_and_deps():
    stages = dockerfile_stages()
    assert len(stages) == 2, "a multi-stage build: build, then runtime"
    (build_from, build), (run_from, run) = stages
    for base in (build_from, run_from):
        assert "debian:bookworm-slim" in base, base
    assert " AS build" in build_from
    # the build stage installs every build dependency the project itself lists
    assert deps_list("build") <= apt_packages(build), deps_list("build") - apt_packages(build)
    # ...and builds a target the Makefile really has, copying what the Makefile reads
    make_cmds = [i for i in build if i.startswith("RUN make ")]
    assert make_cmds, "the build stage runs make"
    targets = re.findall(r"make (?:-\S+ )*([\w./-]+)", make_cmds[0])
    makefile = (ROOT / "Makefile").read_text()
    for t in targets:
        assert re.search(rf"^{re.escape(t)}:", makefile, re.M), f"no Makefile target {t}"
    copied = {i.split()[1] for i in build if i.startswith("COPY")}
    assert {"Makefile", "src", "tools"} <= copied, copied
    # the runtime stage copies the binary from the build stage and runs unprivileged
    assert any(i.startswith("COPY --from=build /src/cti-server ") for i in run)
    users = [i.split()[1] for i in run if i.startswith("USER")]
    assert users and not users[-1].startswith(("root", "0")), users
    assert any(i.startswith("HEALTHCHECK") and "/health" in i for i in run)
    vols = [i for i in run if i.startswith("VOLUME")]
    envs = " ".join(i for i in run if i.startswith("ENV"))
    data_dir = re.search(r"DATA_DIR=(\S+)", envs).group(1)
    assert vols and data_dir in vols[0], (vols, data_dir)
    assert any(i.startswith("ENTRYPOINT") and "/usr/local/bin/cti-server" in i for i in run)


def test_dockerfile_runtime_stage_has_every_library_the_binary_needs():
    """Each NEEDED library of the built binary belongs to a package the runtime stage
    installs (the build machine is Debian 12 like the image, so the names are the same)."""
    assert Path(RELEASE_BIN).exists(), RELEASE_BIN
    run = dockerfile_stages()[1][1]
    installed = apt_packages(run)
    out = subprocess.run(["objdump", "-p", RELEASE_BIN], check=True, capture_output=True,
                         text=True).stdout
    needed = re.findall(r"NEEDED\s+(\S+)", out)
    assert "libmicrohttpd.so.12" in needed
    missing = []
    for lib in needed:
        if lib.startswith(("libc.so", "libm.so")):
            continue  # libc6 is in every Debian image
        owner = None
        for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"):
            p = subprocess.run(["dpkg", "-S", f"{d}/{lib}"], capture_output=True, text=True)
            if p.returncode == 0:
                owner = p.stdout.split(":")[0]
                break
        assert owner, f"no Debian package owns {lib}"
        if owner not in installed:
            missing.append((lib, owner))
    assert not missing, f"runtime stage lacks {missing}"


def test_compose_invariants():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    ctis = {n: s for n, s in services.items() if s.get("image", "").startswith("cti-server")}
    assert len(ctis) == 2, list(services)
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "healthcheck" in services["postgres"]
    for name, s in ctis.items():
        env = s["environment"]
        assert env["NODE_ENV"] == "production"
        assert env["TLS_TERMINATED_BY_PROXY"] == "true"
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        # every instance on one database must share the key and the admin token
        assert "TOKEN_ENCRYPTION_KEY" in env and "INTERNAL_API_SECRET" in env
        assert "ports" not in s, f"{name} must be reached only through the proxy"
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert any(v.endswith(":/var/lib/cti-server") for v in s["volumes"])
    envs = [tuple(sorted(s["environment"].items())) for s in ctis.values()]
    assert envs[0] == envs[1], "both instances configured alike"
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert any(p.endswith(":443") for p in proxy["ports"])
    conf_mount = [v for v in proxy["volumes"] if v.startswith("./deploy/nginx.conf:")]
    assert conf_mount
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert "listen 443 ssl" in conf and "ssl_certificate " in conf
    for name in ctis:
        assert f"server {name}:4000" in conf, f"nginx does not balance over {name}"
    assert "proxy_set_header Upgrade $http_upgrade" in conf  # WebSockets pass


def test_systemd_unit_verifies(tmp_path):
    unit = (ROOT / "deploy/cti-server.service").read_text()
    for key in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=cti-server",
                "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n",
                "KillSignal=SIGTERM", "ExecStart=/usr/local/bin/cti-server\n"):
        assert key in unit, key
    assert Path(RELEASE_BIN).exists(), RELEASE_BIN
    # systemd-analyze verify wants ExecStart's binary to exist: point the unit at the
    # built one in a temporary copy (nothing is installed on this machine).
    copy = tmp_path / "cti-server.service"
    copy.write_text(unit.replace("ExecStart=/usr/local/bin/cti-server",
                                 f"ExecStart={Path(RELEASE_BIN).resolve()}"))
    p = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert p.returncode == 0 and "cti-server.service" not in p.stderr, p.stderr + p.stdout
    # a broken unit is refused (the check can fail)
    bad = tmp_path / "bad.service"
    bad.write_text(unit.replace("ExecStart=/usr/local/bin/cti-server", "ExecStart=relative/path"))
    p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0, p.stderr
