#!/usr/bin/env bash
# Runs Strata's fuzz targets (fuzz/, a cargo-fuzz crate outside the main workspace), one after
# the other, each for a bounded time. See fuzz/README.md.
#
#   scripts/fuzz.sh                      # every target, FUZZ_SECONDS (default 60) each
#   scripts/fuzz.sh batches              # only the named target(s)
#   FUZZ_SECONDS=600 scripts/fuzz.sh     # longer runs
#   FUZZ_KEEP_GOING=1 scripts/fuzz.sh    # libFuzzer fork mode: record crashes and OOMs in
#                                        # fuzz/artifacts/<target>/ and keep fuzzing
#   FUZZ_ARGS="-max_len=65536" scripts/fuzz.sh   # extra libFuzzer flags
#
# Only a stable toolchain is installed; cargo-fuzz needs nightly-only flags (-Zsanitizer,
# sancov), which RUSTC_BOOTSTRAP=1 unlocks. The seed corpus (fuzz/corpus/<target>/, gitignored)
# is regenerated from valid requests and record batches on every run; inputs the fuzzer added
# earlier stay. Exits non-zero if any target found a crash.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
SECS="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1

ALL_TARGETS=(decode_request batches log_append_read internal_records sasl_messages)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== generating the seed corpus"
cargo run --quiet --manifest-path "$FUZZ_DIR/Cargo.toml" --example gen_corpus -- "$FUZZ_DIR/corpus"

# One build for every target (release, debug assertions and overflow checks, AddressSanitizer).
echo "== building the fuzz targets"
cargo fuzz build --fuzz-dir "$FUZZ_DIR"

LOG_DIR="$FUZZ_DIR/artifacts/logs"
mkdir -p "$LOG_DIR"
summary=()
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/$t"
    log="$LOG_DIR/$t.log"
    # -rss_limit_mb/-malloc_limit_mb: a single allocation over 2 GiB is reported as a crash
    # (a request or batch of a few bytes must not make the broker allocate gigabytes).
    flags=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
        flags+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    fi
    # shellcheck disable=SC2206
    flags+=(${FUZZ_ARGS:-})
    echo "== fuzzing $t for ${SECS}s (log: $log)"
    stamp="$LOG_DIR/.$t.start"
    touch "$stamp"
    set +e
    cargo fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$FUZZ_DIR/corpus/$t" -- "${flags[@]}" >"$log" 2>&1
    rc=$?
    set -e
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
    if [ -z "$execs" ]; then
        # Fork mode and crashes print no final stats: take the last status line.
        execs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
        rate=""
    fi
    if [ -z "$rate" ] && [ -n "$execs" ]; then
        rate="~$((execs / SECS)) (average over the run)"
    fi
    crashes="$(find "$FUZZ_DIR/artifacts/$t" -type f -newer "$stamp" \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)"
    status=ok
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        status="FAILED (exit $rc, $crashes new artifact(s) in fuzz/artifacts/$t)"
        failed=1
        grep -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|memory allocation of" "$log" | head -5 || true
    fi
    summary+=("$t: ${execs:-?} executions, ${rate:-?} exec/s, $status")
done

echo "== summary (${SECS}s per target)"
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>"
    echo "minimize:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>"
fi
exit "$failed"
