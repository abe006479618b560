#!/usr/bin/env bash
# tests/fuzz/run.sh — build the libFuzzer targets and run each for a while.
#
#   bash tests/fuzz/run.sh                 # every target, $FUZZ_SECONDS (60) each
#   FUZZ_SECONDS=180 bash tests/fuzz/run.sh fuzz_event
#
# Environment: FUZZ_SECONDS (default 60), CC (default clang-14, else clang),
# FUZZ_KEEP_GOING=1 (fork mode: keep fuzzing after a crash and collect every
# crash in the time given, instead of stopping at the first one),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-only_ascii=1"),
# FIXTURES (default tests/fixtures), FUZZ_OUT (default build/fuzz),
# FUZZ_JOBS (parallel compiles of the library, default 2).
# A target with a directory tests/fuzz/seeds/<target>/ starts from those seeds;
# the others from the fixtures and tests/fuzz/seeds/ (hand-written: a contact
# event, a call as a sequence of events). All also get tests/fuzz/crashes/
# (reproducers of bugs found before, so a regression fails at once).
# Each target uses tests/fuzz/<target>.dict as its dictionary when present.
# Output in build/fuzz/: libcti-fuzz.a (every source, instrumented) and obj/,
# the binaries, seeds/ (from the fixtures),
# corpus-<target>/ (kept between runs), <target>.log, and crash artifacts
# named build/fuzz/<target>-crash-<sha1> (also -leak-, -timeout-, -oom-).
# Exits non-zero when a target fails to build or finds a crash.
# Reproduce a crash: build/fuzz/<target> build/fuzz/<target>-crash-<sha1>
set -u

cd "$(dirname "$0")/../.." || exit 2

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FIXTURES=${FIXTURES:-tests/fixtures}
if [ -z "${CC:-}" ] || [ "$CC" = cc ]; then
    if command -v clang-14 >/dev/null 2>&1; then CC=clang-14; else CC=clang; fi
fi
OUT=${FUZZ_OUT:-build/fuzz}
case $OUT in /*) BIN=$OUT ;; *) BIN=./$OUT ;; esac # where to run the binaries from
ALL_TARGETS=(fuzz_jwt fuzz_event fuzz_wsframe fuzz_jscan fuzz_phone fuzz_config fuzz_dpclient
             fuzz_wsproto fuzz_http)
TARGETS=("${@:-${ALL_TARGETS[@]}}")

# Sanitizers: stop at the first report (UBSan only prints by default, which
# libFuzzer would not count as a crash), with stack traces.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}

CFLAGS=(-g -O1 -fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -I src)
PKGS="libmicrohttpd jansson libjwt libcrypt openssl sqlite3 libpq libcurl" # the Makefile's
read -r -a PKG_CFLAGS <<<"$(pkg-config --cflags $PKGS)"
read -r -a PKG_LIBS <<<"$(pkg-config --libs $PKGS) -lpthread -lm"
mkdir -p "$OUT"

# ---- seed corpus: each element of every fixture array, plus the JWT vector ----
SEEDS=$OUT/seeds
rm -rf "$SEEDS"
mkdir -p "$SEEDS"
/usr/bin/python3 - "$FIXTURES" "$SEEDS" <<'PY' || { echo "run.sh: cannot make seeds" >&2; exit 2; }
import glob, json, os, sys
src, dst = sys.argv[1], sys.argv[2]
n = 0
for path in sorted(glob.glob(os.path.join(src, "*.json"))):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    items = doc if isinstance(doc, list) else [doc]
    base = os.path.splitext(os.path.basename(path))[0]
    for i, item in enumerate(items):
        with open(os.path.join(dst, "%s-%d.json" % (base, i)), "w", encoding="utf-8") as out:
            json.dump(item, out, ensure_ascii=False, separators=(",", ":"))
        n += 1
vec = os.path.join(src, "jwt-vector.txt")
if os.path.exists(vec):
    with open(vec, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "token" and value.strip():
                with open(os.path.join(dst, "jwt-vector.token"), "w") as out:
                    out.write(value.strip())
                n += 1
print("seeds: %d files in %s" % (n, dst))
PY

# ---- build ----
# Every source but main.c, instrumented for coverage (fuzzer-no-link) with
# ASan+UBSan, as $OUT/libcti-fuzz.a (rebuilt only where a source or header is
# newer than its object); each target links it whole, as the Makefile's
# replay build links build/asan/libcti.a. A target may #include the .c it
# tests (to reach static functions): its own definitions then win over the
# archive's object, which the linker leaves out.
status=0
built=()
LIB=$OUT/libcti-fuzz.a
newest_h=$(find src -name '*.h' -newer "$LIB" 2>/dev/null | head -1)
objs=()
todo=()
while IFS= read -r src; do
    obj=$OUT/obj/${src%.c}.o
    objs+=("$obj")
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$newest_h" ] || [ ! -f "$LIB" ]; then
        todo+=("$src")
    fi
done < <(find src -name '*.c' ! -name main.c | sort)
if [ ${#todo[@]} -gt 0 ]; then
    echo "  CC [fuzz lib] ${#todo[@]} sources"
    export CC OUT
    export LIBFLAGS="${CFLAGS[*]} -fsanitize=fuzzer-no-link,address,undefined ${PKG_CFLAGS[*]}"
    printf '%s\n' "${todo[@]}" | xargs -P "${FUZZ_JOBS:-2}" -I{} sh -c \
        'o="$OUT/obj/$(dirname {})/$(basename {} .c).o"; mkdir -p "$(dirname "$o")" &&
         $CC $LIBFLAGS -c {} -o "$o"' || { echo "run.sh: library build failed" >&2; exit 2; }
    rm -f "$LIB"
    ar rcs "$LIB" "${objs[@]}" || exit 2
fi
for t in "${TARGETS[@]}"; do
    if [ ! -f "tests/fuzz/$t.c" ]; then
        echo "run.sh: no such target: $t" >&2
        status=1
        continue
    fi
    echo "  CC [fuzz] $t"
    if "$CC" "${CFLAGS[@]}" -fsanitize=fuzzer,address,undefined "${PKG_CFLAGS[@]}" \
        "tests/fuzz/$t.c" "$LIB" -o "$OUT/$t" "${PKG_LIBS[@]}"; then
        built+=("$t")
    else
        echo "run.sh: $t: build failed" >&2
        status=1
    fi
done

# ---- run ----
read -r -a EXTRA <<<"${FUZZ_ARGS:-}"
[ "${FUZZ_KEEP_GOING:-0}" = 1 ] && EXTRA=(-fork=1 -ignore_crashes=1 "${EXTRA[@]}")
declare -A result
for t in "${built[@]}"; do
    corpus=$OUT/corpus-$t
    mkdir -p "$corpus"
    log=$OUT/$t.log
    stamp=$(mktemp)
    echo "== $t: ${FUZZ_SECONDS}s, log in $log"
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
    # A target with seeds of its own (tests/fuzz/seeds/<target>/) starts from
    # those; the others from the fixtures and the shared seeds.
    seeds=("$SEEDS" tests/fuzz/seeds)
    [ -d "tests/fuzz/seeds/$t" ] && seeds=("tests/fuzz/seeds/$t")
    "$BIN/$t" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$OUT/$t-" "${dict[@]}" "${EXTRA[@]}" "$corpus" "${seeds[@]}" \
        tests/fuzz/crashes >"$log" 2>&1
    rc=$?
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    eps=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
    [ -n "$eps" ] || eps=$(grep -oE 'exec/s:? [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
    [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    # Coverage of the corpus now kept, replayed in one process (comparable
    # between normal and fork mode, whose "cov:" counts differently).
    # Replays write no artifacts of their own (libFuzzer would put them in the cwd).
    scratch=$(mktemp -d)
    ccov=$("$BIN/$t" -runs=0 -artifact_prefix="$scratch/" "$corpus" "${seeds[@]}" 2>&1 |
        grep -oE 'INITED cov: [0-9]+' | grep -oE '[0-9]+$')
    artifacts=$(find "$OUT" -maxdepth 1 -name "$t-*" -newer "$stamp" -type f | sort)
    rm -f "$stamp"
    if [ "$rc" -ne 0 ] || [ -n "$artifacts" ]; then
        status=1
        result[$t]="FAILED (exit $rc)"
        echo "!! $t found a problem (exit $rc):"
        # Replay each artifact to say where it fails: the sanitizer's message,
        # or the first frame in src/ or tests/fuzz/ (a failed CHECK traps there).
        for a in $artifacts; do
            where=$("$BIN/$t" -artifact_prefix="$scratch/" "$a" 2>&1 |
                grep -E 'invariant failed|runtime error:|ERROR: (Address|Leak)Sanitizer|^ +#[0-9]+ .* (/[^ ]*)?(src|tests/fuzz)/' |
                head -2 | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ in //; s/^==[0-9]+==//' | paste -sd'|' -)
            echo "   reproducer: $a"
            echo "       ${where:-?}"
        done
        echo "   (replay one: $BIN/$t <reproducer>)"
    else
        result[$t]="ok"
    fi
    rm -rf "$scratch"
    echo "   runs=${runs:-?} exec/s=${eps:-?} cov=${cov:-?} corpus_cov=${ccov:-?} corpus=$(ls "$corpus" | wc -l)"
done

echo "== summary"
for t in "${built[@]}"; do echo "   $t: ${result[$t]}"; done
exit $status
