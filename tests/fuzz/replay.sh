#!/usr/bin/env bash
# tests/fuzz/replay.sh BINDIR [FILE...] — replays saved fuzz inputs through
# their targets without libFuzzer (`make test-fuzz-replay`, part of `make test`).
#
# FILEs default to every file in tests/fuzz/crashes/. A file's target comes
# from the start of its name:
#   event-…    fuzz_event      jwt-…      fuzz_jwt
#   jscan-…    fuzz_jscan      wsframe-…  fuzz_wsframe
#   phone-…    fuzz_phone      config-…   fuzz_config
#   dpclient-… fuzz_dpclient   wsproto-…  fuzz_wsproto
#   http-…     fuzz_http
# BINDIR holds BINDIR/fuzz_<target>: the target linked with tests/fuzz/replay.c
# and the ASan+UBSan build of the sources. Each input runs in its own process;
# one line per input, then a closing line. Exits 1 when an input fails (the
# invariant or sanitizer message is shown) or its name maps to no target.
set -u
cd "$(dirname "$0")/../.." || exit 2
BIN=${1:?usage: tests/fuzz/replay.sh BINDIR [FILE...]}
shift
if [ $# -eq 0 ]; then
    shopt -s nullglob
    set -- tests/fuzz/crashes/*
    if [ $# -eq 0 ]; then
        echo "fuzz replay: no inputs in tests/fuzz/crashes/" >&2
        exit 1
    fi
fi

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
n=0
failed=0
for f in "$@"; do
    n=$((n + 1))
    name=$(basename "$f")
    case $name in
    event-*) t=fuzz_event ;;
    jwt-*) t=fuzz_jwt ;;
    jscan-*) t=fuzz_jscan ;;
    wsframe-*) t=fuzz_wsframe ;;
    phone-*) t=fuzz_phone ;;
    config-*) t=fuzz_config ;;
    dpclient-*) t=fuzz_dpclient ;;
    wsproto-*) t=fuzz_wsproto ;;
    http-*) t=fuzz_http ;;
    *)
        echo "FAIL  (no target)    $f: name it event-, jwt-, jscan-, wsframe-, phone-, config-, dpclient-, wsproto- or http-…"
        failed=$((failed + 1))
        continue
        ;;
    esac
    if out=$("$BIN/$t" "$f" 2>&1); then
        echo "ok    $(printf '%-14s' "$t") $f"
    else
        rc=$?
        echo "FAIL  $(printf '%-14s' "$t") $f (exit $rc)"
        echo "$out" | grep -E 'invariant failed|runtime error:|ERROR: (Address|Leak)Sanitizer|SUMMARY' |
            head -3 | sed 's/^/        /'
        echo "        (replay: $BIN/$t $f)"
        failed=$((failed + 1))
    fi
done
if [ $failed -eq 0 ]; then
    echo "fuzz replay: $n inputs, all pass"
else
    echo "fuzz replay: $n inputs, $failed FAILED"
    exit 1
fi
