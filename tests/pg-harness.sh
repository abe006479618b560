#!/usr/bin/env bash
# A private PostgreSQL 15 for tests: its own data directory, a free loopback
# port, run as the `postgres` system user, nothing shared with any system cluster.
#
#   tests/pg-harness.sh start DIR    initdb DIR (if new), start, create db cti_test;
#                                    prints postgres://postgres@127.0.0.1:PORT/cti_test
#   tests/pg-harness.sh stop DIR     stop (fast), keep DIR (start again later: same port)
#   tests/pg-harness.sh destroy DIR  stop and delete DIR
#   tests/pg-harness.sh psql DIR ARGS...   run psql against it
# PG_EXTRA_OPTS: more server options for start, e.g. for profiling:
#   PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements"
set -euo pipefail
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: pg-harness.sh start|stop|destroy|psql DIR}
dir=${2:?usage: pg-harness.sh start|stop|destroy|psql DIR}
shift 2

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
  if [ ! -d "$dir/data" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    as_pg "$BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
    fresh=1
  fi
  port=$(cat "$dir/port")
  as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=300 -c synchronous_commit=on ${PG_EXTRA_OPTS:-}" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  if [ "${fresh:-0}" = 1 ]; then
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres cti_test
  fi
  echo "postgres://postgres@127.0.0.1:$port/cti_test"
  ;;
stop)
  [ -d "$dir/data" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  ;;
destroy)
  [ -d "$dir/data" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
psql)
  port=$(cat "$dir/port")
  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d cti_test "$@"
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
