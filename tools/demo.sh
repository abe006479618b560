#!/usr/bin/env bash
# tools/demo.sh — `make demo`: watch cti-server work, no Dialpad account needed.
#
# Starts ./cti-server in sandbox mode on a temporary SQLite database (a fresh
# directory under $TMPDIR, removed at the end), creates an app, lets cti-sim
# play its demo calls the way Dialpad sends them (signed JWTs), shows the calls
# they made and prints the curl lines to look further. The server then runs
# until Enter or Ctrl-C (when stdin is not a terminal it stops at once), and is
# always stopped (SIGTERM) before the script exits.
#
# Environment: PORT (default 4000), DEMO_CALLS (4), DEMO_SPEED (1 = human
# speed; 10 = ten times faster), CTI_SERVER (./cti-server), CTI_SIM
# (build/release/tools/cti-sim). Needs curl and python3 (tools/deps.sh run).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-4000}
SERVER=${CTI_SERVER:-./cti-server}
SIM=${CTI_SIM:-build/release/tools/cti-sim}
BASE=http://127.0.0.1:$PORT
for f in "$SERVER" "$SIM"; do
    [ -x "$f" ] || { echo "demo: $f is not built (run: make demo)" >&2; exit 1; }
done
if curl -s -o /dev/null --max-time 2 "$BASE/health"; then
    echo "demo: something already answers on port $PORT (make run?); stop it, or: PORT=4100 make demo" >&2
    exit 1
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cti-demo.XXXXXX")
PID=
stop() {
    trap - EXIT INT TERM
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID"
        local rc=0
        wait "$PID" || rc=$?
        echo "demo: server stopped (exit $rc)"
    fi
    rm -rf "$DIR"
}
trap stop EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# Sandbox mode, its own data directory and database; ./.env is not read.
NODE_ENV=sandbox HOST=127.0.0.1 PORT=$PORT DATA_DIR=$DIR DATABASE_URL=sqlite:$DIR/cti.db \
    LOG_LEVEL=warn "$SERVER" --env-file /dev/null 2>"$DIR/server.log" &
PID=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "$BASE/health" && break
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "demo: the server did not start:" >&2
        cat "$DIR/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "demo: cti-server on $BASE (SQLite in $DIR, removed at the end)"

ADMIN="Authorization: Bearer $(cat "$DIR/admin-secret")"
APP=$(curl -s -f -XPOST "$BASE/internal/apps" -H "$ADMIN" -d '{"name":"Demo"}')
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$APP" "$1"; }
ID=$(field app_id)
KEY=$(field api_key)
SECRET=$(field webhook_secret)
echo "demo: app $ID created; cti-sim plays its calls:"

"$SIM" demo --url "$BASE" --app "$ID" --secret "$SECRET" --calls "${DEMO_CALLS:-4}" \
    --speed "${DEMO_SPEED:-1}" >/dev/null

# Events are applied within milliseconds of being acknowledged; wait for them.
for _ in $(seq 1 50); do
    curl -s "$BASE/health" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("pending_events") != 0)' && break
    sleep 0.1
done
echo
echo "demo: the calls it made (GET /api/calls):"
CALLS=$(curl -s -f -H "X-API-Key: $KEY" "$BASE/api/calls?limit=50")
NUMBER=$(python3 - "$CALLS" <<'PY'
import json, sys
calls = json.loads(sys.argv[1])["data"]
for c in calls:
    print("  %s  %-8s %-14s %-7s %-9s %s" % (c["id"], c["direction"], c["external_number"],
          c["status"], c["outcome"] or "-", (c["target"] or {}).get("name", "")), file=sys.stderr)
print(calls[-1]["external_number"] if calls else "+14155550123")
PY
)
ENC=${NUMBER/+/%2B}

if [ -t 0 ]; then WHEN="in another terminal, while this server runs"; else
    WHEN="the server stops now: run make demo in a terminal to keep it up"; fi
cat <<EOF

Look further ($WHEN):
  KEY=$KEY
  curl -s -H "X-API-Key: \$KEY" '$BASE/api/calls?limit=5'
  curl -s -H "X-API-Key: \$KEY" '$BASE/api/events?since=0&limit=5'
  curl -s -H "X-API-Key: \$KEY" '$BASE/api/screen-pop?number=$ENC'
  curl -s -H "X-API-Key: \$KEY" '$BASE/api/voicemails'
Admin API: curl -H "$ADMIN" $BASE/internal/apps
EOF
if [ -t 0 ]; then
    echo
    trap 'echo; exit 0' INT # the normal way to stop here, as Enter is
    read -r -p "Press Enter (or Ctrl-C) to stop the server. " _ || true
fi
