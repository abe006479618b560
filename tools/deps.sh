#!/usr/bin/env bash
# Installs the Debian packages cti-server needs, or says which are missing.
#
#   tools/deps.sh build   what `make` needs to compile and link cti-server
#   tools/deps.sh run     build + what `make run`, `make demo` and the README's walkthrough
#                         use next (curl; python3 to read JSON)
#   tools/deps.sh test    run + what `make test` needs (cmocka, pytest, jsonschema, PostgreSQL,
#                         the sqlite3 CLI, systemd-analyze, valgrind, Node.js >= 18 and npm
#                         for the JavaScript client's tests, chromium for the dashboard's)
#   tools/deps.sh js      what `make test-js` needs besides the build (Node.js >= 18, npm)
#   tools/deps.sh browser what `make test-browser` needs besides the build (Node.js, npm,
#                         chromium for the dashboard's browser test)
#   tools/deps.sh bench   test + the load generator and libfaketime (make drills)
#   tools/deps.sh fuzz    test + clang and its libFuzzer runtime
#
# As root: runs `apt-get update` once and `apt-get install -y` for what is missing.
# Otherwise: prints the one apt-get line to run and exits 1.
set -euo pipefail

build=(gcc make pkg-config libmicrohttpd-dev libjansson-dev libjwt-dev
       libcrypt-dev libssl-dev libsqlite3-dev libpq-dev libgoogle-perftools-dev
       libcurl4-openssl-dev liburing-dev)
run=(curl python3)
test=(libcmocka-dev python3-pytest python3-requests python3-websocket python3-jsonschema python3-yaml sqlite3
      postgresql-15 systemd binutils
      valgrind procps prometheus)
js=(nodejs npm)
browser=(chromium)
bench=(wrk faketime)
fuzz=(clang libclang-rt-14-dev)

case "${1:-build}" in
  build) want=("${build[@]}") ;;
  run)   want=("${build[@]}" "${run[@]}") ;;
  test)  want=("${build[@]}" "${run[@]}" "${test[@]}" "${js[@]}" "${browser[@]}") ;;
  js)    want=("${build[@]}" "${js[@]}") ;;
  browser) want=("${build[@]}" "${js[@]}" "${browser[@]}") ;;
  bench) want=("${build[@]}" "${run[@]}" "${test[@]}" "${js[@]}" "${browser[@]}" "${bench[@]}") ;;
  fuzz)  want=("${build[@]}" "${run[@]}" "${test[@]}" "${js[@]}" "${browser[@]}" "${fuzz[@]}") ;;
  *) echo "usage: $0 build|run|test|js|browser|bench|fuzz" >&2; exit 2 ;;
esac

# Node.js installed some other way (e.g. nodesource's nodejs, which bundles npm and
# conflicts with Debian's npm package) is fine as long as it is 18 or newer.
node_ok() {
  command -v node >/dev/null && command -v npm >/dev/null &&
    [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 18 ]
}

missing=()
for p in "${want[@]}"; do
  if { [ "$p" = nodejs ] || [ "$p" = npm ]; } && node_ok; then
    continue
  fi
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "cti-server needs these Debian packages; run as root:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
