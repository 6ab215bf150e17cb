#!/usr/bin/env bash
# The performance suite: builds the release binary, prepares the Python environment (the same
# .venv as scripts/test.sh), then runs bench/run.py, which measures this machine's ceilings and
# Strata in one run and writes bench/results/perf-<date>.{md,json,svg}.
#
#   bench/run.sh               # the full suite (about 10 minutes on 2 cores)
#   BENCH_QUICK=1 bench/run.sh # a small smoke run
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import confluent_kafka' >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
fi
cargo build --release --bin strata --quiet
exec .venv/bin/python bench/run.py "$@"
