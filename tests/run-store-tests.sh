#!/usr/bin/env bash
# Runs the store conformance suite (the binaries given) against both
# backends: a SQLite file in a temp dir, then a private PostgreSQL started
# (and destroyed) here. Each binary migrates the database it is given.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 TEST_BINARY..." >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/cti-store-test.XXXXXX)
chmod 755 "$tmp"
trap '"$here/pg-harness.sh" destroy "$tmp/pg"; rm -rf "$tmp"' EXIT

for bin in "$@"; do
  echo "== store conformance: sqlite: $(basename "$bin")"
  CTI_TEST_DB="sqlite:$tmp/store.db" "$bin"
done
url=$("$here/pg-harness.sh" start "$tmp/pg")
for bin in "$@"; do
  echo "== store conformance: postgres: $(basename "$bin")"
  CTI_TEST_DB="$url" "$bin"
done
