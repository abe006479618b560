#!/usr/bin/env bash
# tools/demo-connect.sh — `make demo-connect`: watch an app connect its Dialpad
# account, receive calls and disconnect, with no Dialpad account.
#
# Starts the fake Dialpad (tests/fakedialpad/fakedialpad.py, Python's standard
# library only) and ./cti-server in sandbox mode on a temporary SQLite
# database pointed at it (DIALPAD_BASE_URL), creates an app, asks for a
# connect link and follows it the way a browser does (curl with a cookie jar:
# /authorize → the fake's consent page, which approves → our callback), shows
# the connection, lets the fake place calls that it delivers as signed JWT
# webhooks to the webhook the server registered, shows the calls and the
# events, and disconnects. Both processes are always stopped at the end.
#
# Environment: PORT (default 4000), CTI_SERVER (./cti-server).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-4000}
SERVER=${CTI_SERVER:-./cti-server}
BASE=http://127.0.0.1:$PORT
PY=$(command -v /usr/bin/python3 || command -v python3)
[ -x "$SERVER" ] || { echo "demo-connect: $SERVER is not built (run: make demo-connect)" >&2; exit 1; }
if curl -s -o /dev/null --max-time 2 "$BASE/health"; then
    echo "demo-connect: something already answers on port $PORT; stop it, or: PORT=4100 make demo-connect" >&2
    exit 1
fi

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cti-demo-connect.XXXXXX")
PID= FAKE=
stop() {
    trap - EXIT INT TERM
    for p in $PID $FAKE; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    rm -rf "$DIR"
}
trap stop EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

"$PY" tests/fakedialpad/fakedialpad.py --port 0 --client-id demo-client \
    --client-secret demo-client-secret >"$DIR/fake.out" 2>"$DIR/fake.log" &
FAKE=$!
for _ in $(seq 1 50); do [ -s "$DIR/fake.out" ] && break; sleep 0.1; done
DIALPAD=$("$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["base_url"])' "$DIR/fake.out")
echo "demo-connect: fake Dialpad on $DIALPAD"

NODE_ENV=sandbox HOST=127.0.0.1 PORT=$PORT DATA_DIR=$DIR DATABASE_URL=sqlite:$DIR/cti.db \
    PUBLIC_BASE_URL=$BASE DIALPAD_BASE_URL=$DIALPAD DIALPAD_SANDBOX_CLIENT_ID=demo-client \
    DIALPAD_SANDBOX_CLIENT_SECRET=demo-client-secret LOG_LEVEL=warn \
    "$SERVER" --env-file /dev/null 2>"$DIR/server.log" &
PID=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "$BASE/health" && break
    kill -0 "$PID" 2>/dev/null || { echo "demo-connect: the server did not start:" >&2; cat "$DIR/server.log" >&2; exit 1; }
    sleep 0.1
done
echo "demo-connect: cti-server on $BASE"

ADMIN="Authorization: Bearer $(cat "$DIR/admin-secret")"
json() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
APP=$(curl -s -f -XPOST "$BASE/internal/apps" -H "$ADMIN" -d '{"name":"Demo"}')
ID=$(echo "$APP" | json 'd["app_id"]')
KEY=$(echo "$APP" | json 'd["api_key"]')
echo "demo-connect: app $ID created"

LINK=$(curl -s -f -XPOST "$BASE/api/dialpad/connect" -H "X-API-Key: $KEY" | json 'd["authorize_url"]')
echo "demo-connect: connect link (one use, 10 minutes): ${LINK%%token=*}token=…"
JAR=$DIR/cookies
hop() { curl -s -o /dev/null -w '%{redirect_url}' -b "$JAR" -c "$JAR" "$1"; }
AT_DIALPAD=$(hop "$LINK")
echo "  the browser is sent to Dialpad: ${AT_DIALPAD%%\?*}?response_type=code&…&code_challenge_method=S256"
BACK=$(hop "$AT_DIALPAD")
echo "  the user approves; Dialpad sends it back: ${BACK%%\?*}?code=…&state=…"
PAGE=$(curl -s -b "$JAR" -c "$JAR" "$BACK")
echo "  our page says: $(echo "$PAGE" | sed -n 's:.*<h1>\(.*\)</h1>.*:\1:p')"
echo
echo "demo-connect: GET /api/dialpad/connection:"
curl -s -H "X-API-Key: $KEY" "$BASE/api/dialpad/connection" | json \
    '"  %s as Dialpad user %s (company %s), webhook %s, subscriptions %s" % (d["status"], d["dialpad_user_id"], d["company_id"], d["webhook_id"], ", ".join(s["type"] for s in d["subscriptions"]))'

echo
echo "demo-connect: the fake Dialpad places three calls and delivers them to the registered webhook"
for kind in inbound_answered inbound_missed inbound_voicemail; do
    curl -s -f -XPOST "$DIALPAD/_fake/calls" -d "{\"kind\":\"$kind\"}" >/dev/null
done
curl -s -XPOST "$DIALPAD/_fake/wait" -d '{"timeout":10}' >/dev/null
sleep 0.3
curl -s -H "X-API-Key: $KEY" "$BASE/api/calls?limit=10" | json \
    '"\n".join("  %s  %-8s %-14s %-7s %s" % (c["id"], c["direction"], c["external_number"], c["status"], c["outcome"]) for c in d["data"])'
echo "demo-connect: the events (GET /api/events):"
curl -s -H "X-API-Key: $KEY" "$BASE/api/events?since=0&limit=100" | json '"  " + " ".join(e["event"] for e in d["data"])'

echo
echo "demo-connect: DELETE /api/dialpad/connection"
curl -s -XDELETE -H "X-API-Key: $KEY" "$BASE/api/dialpad/connection" | json \
    '"  %s; left at Dialpad: %s" % (d["status"], d["left_at_dialpad"] or "nothing")'
curl -s "$DIALPAD/_fake/state" | json \
    '"  the fake now holds %d webhooks, %d subscriptions; deauthorized %d time(s)" % (len(d["webhooks"]), sum(len(v) for v in d["subscriptions"].values()), len(d["deauthorizations"]))'
