#!/usr/bin/env bash
# Fuzz edgemq on the stable toolchain: cargo-fuzz (libFuzzer) with RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets: decode session topic authz config (default: all). Each target starts from a copy
# of the committed corpus fuzz/corpus/<target>/ in a temporary work dir (the repository is
# never modified) and runs SECONDS_PER_TARGET seconds (default 60). Prints per target:
# executions/s, total executions, corpus size, crashes; exits 1 if any target crashed (or
# hung: libFuzzer timeout), printing the saved input's path.
#
# Environment:
#   FUZZ_SANITIZER   cargo-fuzz sanitizer (default "none": edgemq forbids unsafe code;
#                    "address" finds memory errors in dependencies, ~2x slower, longer build)
#   FUZZ_WORK_DIR    where corpora and crashes go (default: a new mktemp -d, kept)
#   CARGO_FUZZ_VERSION  cargo-fuzz to install when missing (default 0.13.2)
set -euo pipefail

ALL_TARGETS=(decode session topic authz config)
SECS=${1:-60}
shift || true
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export RUSTC_BOOTSTRAP=1
SANITIZER=${FUZZ_SANITIZER:-none}
# -O release, -a debug assertions (overflow checks too).
BUILD_ARGS=(-O -a -s "$SANITIZER")

for t in "${TARGETS[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "unknown target: $t (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    start=$(date +%s)
    cargo install --locked cargo-fuzz --version "${CARGO_FUZZ_VERSION:-0.13.2}"
    echo "== cargo-fuzz installed in $(( $(date +%s) - start )) s"
fi

echo "== building ${TARGETS[*]} (sanitizer: $SANITIZER)"
start=$(date +%s)
for t in "${TARGETS[@]}"; do
    cargo fuzz build "${BUILD_ARGS[@]}" "$t"
done
echo "== built in $(( $(date +%s) - start )) s"

WORK=${FUZZ_WORK_DIR:-$(mktemp -d -t edgemq-fuzz.XXXXXX)}
mkdir -p "$WORK"
echo "== work dir: $WORK"

failed=0
summary=()
for t in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$t"
    artifacts="$WORK/artifacts/$t"
    log="$WORK/$t.log"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "fuzz/corpus/$t" ]; then cp -R "fuzz/corpus/$t/." "$corpus/"; fi
    seeds=$(find "$corpus" -type f | wc -l)
    echo "== fuzzing $t for ${SECS}s from $seeds seeds"
    set +e
    cargo fuzz run "${BUILD_ARGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECS" -print_final_stats=1 -timeout=20 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" \
        >"$log" 2>&1
    status=$?
    set -e
    execs=$(awk '/stat::number_of_executed_units/ {s+=$2} END {print s+0}' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ {s+=$2} END {print s+0}' "$log")
    size=$(find "$corpus" -type f | wc -l)
    crashes=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    line=$(printf '%-8s exec/s: %-7s total execs: %-10s corpus: %-6s crashes: %s' "$t" "$rate" "$execs" "$size" "$crashes")
    echo "$line"
    summary+=("$line")
    if [ "$crashes" -gt 0 ] || [ "$status" -ne 0 ]; then
        failed=1
        echo "!! $t failed (exit $status); log: $log"
        if grep -q "failed to build fuzz script" "$log"; then
            echo "!! $t: build failed"
            grep -h -A6 "^error" "$log" | head -n 30 || true
        else
            grep -h -m1 -A3 "panicked at" "$log" || tail -n 20 "$log"
        fi
        find "$artifacts" -type f | sed 's/^/!! crashing input: /'
        for a in $(find "$artifacts" -type f); do
            echo "!! reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_ARGS[*]} $t $a"
        done
    fi
done

echo "== summary (${SECS}s per target, work dir $WORK)"
printf '%s\n' "${summary[@]}"
exit "$failed"
