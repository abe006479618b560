#!/usr/bin/python3
"""Failure drills: `make drills` or tests/drills/run.py [--only NAME[,NAME]] [--backend
sqlite|postgres|both] [--quick] [--list].

Each drill starts its own release server (and PostgreSQL cluster, proxies) on loopback,
breaks something on purpose, and prints exactly one line:

  DRILL <name> [backend]: did ...; expected ...; got ...: PASS|FAIL

Every drill has a time limit and stops everything it started, also when it fails.
The runner exits 1 if any drill failed. See docs/RELIABILITY.md.
"""
import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import drills  # noqa: E402


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated drill names")
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="fewer cycles and requests (development)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs of failed drills")
    a = ap.parse_args()

    if a.list:
        for d in drills.ALL:
            print(f"{d.name:12} {'/'.join(d.backends):16} {d.summary}")
        return 0
    chosen = drills.ALL
    if a.only:
        names = a.only.split(",")
        unknown = set(names) - {d.name for d in drills.ALL}
        if unknown:
            ap.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
        chosen = [d for d in drills.ALL if d.name in names]
    backends = ["sqlite", "postgres"] if a.backend == "both" else [a.backend]
    if not os.access(common.RELEASE_BIN, os.X_OK):
        print(f"no release binary at {common.RELEASE_BIN}: run `make cti-server` first")
        return 2

    signal.signal(signal.SIGALRM, on_alarm)
    failed = 0
    ran = 0
    t_all = time.time()
    for d in chosen:
        for backend in [b for b in backends if b in d.backends]:
            ran += 1
            env = common.Env(f"{d.name}-{backend}")
            t0 = time.time()
            limit = d.limit_quick if a.quick else d.limit
            ok = False
            signal.alarm(limit)
            try:
                did, expected, got = d.fn(env, backend, a.quick)
                ok = True
            except Timeout:
                did, expected, got = d.summary, "within its time limit", f"still running after {limit}s"
                ok = False
            except common.DrillFailed as e:
                did, expected, got = getattr(e, "did", d.summary), d.expected, str(e)
                ok = False
            except Exception as e:
                traceback.print_exc()
                did, expected, got = d.summary, d.expected, f"crashed: {e!r}"
                ok = False
            finally:
                signal.alarm(0)
                env.keep = a.keep and not ok
                try:
                    signal.alarm(120)
                    env.stop_all()
                except Timeout:
                    print("  cleanup timed out", file=sys.stderr)
                finally:
                    signal.alarm(0)
            failed += 0 if ok else 1
            print(f"DRILL {d.name} [{backend}]: did {did}; expected {expected}; got {got} "
                  f"({time.time() - t0:.0f}s): {'PASS' if ok else 'FAIL'}", flush=True)
    print(f"drills: {ran - failed} passed, {failed} failed, {time.time() - t_all:.0f}s"
          f"{' (quick)' if a.quick else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
