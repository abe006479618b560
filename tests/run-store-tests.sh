#!/usr/bin/env bash
# Runs the store conformance suite ($1) against both backends: a SQLite file
# in a temp dir, then a private PostgreSQL started (and destroyed) here.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d /tmp/cti-store-test.XXXXXX)
chmod 755 "$tmp"
trap '"$here/pg-harness.sh" destroy "$tmp/pg"; rm -rf "$tmp"' EXIT

echo "== store conformance: sqlite"
CTI_TEST_DB="sqlite:$tmp/store.db" "$bin"
echo "== store conformance: postgres"
url=$("$here/pg-harness.sh" start "$tmp/pg")
CTI_TEST_DB="$url" "$bin"
