#!/usr/bin/env bash
# Runs every Strata check: rustfmt and clippy (first; a failure stops the run), the Rust tests
# (release, then the dev profile with debug assertions on) and the end-to-end tests that drive
# a real `strata` process with kafka-python, confluent-kafka and kcat.
#
# Needs a Debian/Ubuntu machine with a Rust toolchain and Python 3 (with venv + pip). It installs
# kcat, openssl, chromium and Node with apt-get when missing, playwright-core with npm and keeps the Python test dependencies in .venv/ (reinstalled
# only when tests/requirements.txt changes). Idempotent; works from any directory.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k kcat -x      # extra arguments go to pytest (the e2e step)
#
# Environment: STRATA_BIN (broker binary for the e2e tests; default: the release build),
# E2E_WORKERS (pytest-xdist workers, default 2), CARGO_TARGET_DIR (honoured).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STEP_START=$SECONDS
FAILED=()

step() {
    printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"
    STEP_START=$SECONDS
}

done_step() {
    printf -- '--- ok (%ss)\n' "$((SECONDS - STEP_START))"
}

# Run a noisy command quietly; show its output only when it fails.
quietly() {
    local log
    log="$(mktemp)"
    if "$@" >"$log" 2>&1; then
        rm -f "$log"
    else
        local code=$?
        cat "$log" >&2
        rm -f "$log"
        echo "error: '$*' failed with exit code $code" >&2
        return "$code"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        return 1
    fi
}

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# ---- 0. style gate --------------------------------------------------------------------------
# First and fatal: a formatting or lint failure stops the run before the long steps.
step "cargo fmt --check"
cargo fmt --check
done_step

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
done_step

# The fuzz targets live outside the workspace (fuzz/, a cargo-fuzz crate run by
# scripts/fuzz.sh); checking that they still compile keeps them from rotting unseen.
step "cargo check of the fuzz targets"
cargo check --manifest-path fuzz/Cargo.toml --bins --examples --quiet
done_step

# ---- 1. system packages ---------------------------------------------------------------------
# kcat (a third client), openssl (the TLS tests make their CA and certificates with it),
# chromium and Node (the console's browser test drives Debian's chromium with playwright-core).
step "kcat, openssl, chromium, node"
APT_UPDATED=""
for tool in kcat openssl chromium node npm; do
    if command -v "$tool" >/dev/null 2>&1; then
        echo "$tool present: $(command -v "$tool")"
    else
        if [ -z "$APT_UPDATED" ]; then
            quietly as_root apt-get update
            APT_UPDATED=1
        fi
        package="$tool"
        [ "$tool" = node ] && package=nodejs
        quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$package"
        echo "installed $(command -v "$tool")"
    fi
done
done_step

# ---- 1b. browser driver ---------------------------------------------------------------------
# playwright-core (no bundled browser) at the version package-lock.json pins, reinstalled only
# when the lock file changes.
step "playwright-core (tests/e2e/browser)"
BROWSER_DIR="tests/e2e/browser"
LOCK_HASH="$(sha256sum "$BROWSER_DIR/package-lock.json" | cut -c1-16)"
if [ -f "$BROWSER_DIR/node_modules/.lock-$LOCK_HASH" ]; then
    echo "package-lock.json unchanged ($LOCK_HASH); skipping npm ci"
else
    (cd "$BROWSER_DIR" && quietly npm ci --no-audit --no-fund)
    touch "$BROWSER_DIR/node_modules/.lock-$LOCK_HASH"
    echo "installed playwright-core ($LOCK_HASH)"
fi
done_step

# ---- 2. Python virtualenv -------------------------------------------------------------------
step "Python test environment (.venv)"
REQUIREMENTS="tests/requirements.txt"
VENV_PY=".venv/bin/python"
if [ -e .venv ] && ! "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
    echo "removing a broken .venv"
    rm -rf .venv
fi
if [ ! -x "$VENV_PY" ]; then
    if ! quietly python3 -m venv .venv; then
        # Debian's python3 ships venv/ensurepip separately.
        rm -rf .venv
        echo "python3 -m venv failed; installing python3-venv"
        quietly as_root apt-get update
        quietly as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
        quietly python3 -m venv .venv
    fi
    echo "created .venv ($("$VENV_PY" --version))"
fi
REQ_HASH="$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
STAMP=".venv/.requirements-$REQ_HASH"
if [ -f "$STAMP" ]; then
    echo "requirements unchanged ($REQ_HASH); skipping pip install"
else
    quietly "$VENV_PY" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
    rm -f .venv/.requirements-*
    touch "$STAMP"
    echo "installed $REQUIREMENTS ($REQ_HASH)"
fi
done_step

# ---- 3. build -------------------------------------------------------------------------------
step "cargo build --release --bin strata"
cargo build --release --bin strata --quiet
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export STRATA_BIN="${STRATA_BIN:-$TARGET_DIR/release/strata}"
echo "broker binary: $STRATA_BIN"
done_step

# ---- 4. Rust tests --------------------------------------------------------------------------
# --release shares the build above. A failure here is reported at the end; the end-to-end
# tests still run so one command shows every failure.
step "cargo test --release --workspace"
if cargo test --release --workspace --quiet; then
    done_step
else
    FAILED+=("cargo test")
    echo "--- FAILED (cargo test)"
fi

# ---- 4b. Rust tests with debug assertions ---------------------------------------------------
# The dev profile keeps debug_assert! and the check_invariants calls that release builds
# compile out. It is a second build (a few minutes on 2 cores); the whole script stays well
# under 30 minutes there.
step "cargo test --workspace (dev profile: debug assertions on)"
if cargo test --workspace --quiet; then
    done_step
else
    FAILED+=("cargo test (debug assertions)")
    echo "--- FAILED (cargo test, debug assertions)"
fi

# ---- 5. end-to-end tests --------------------------------------------------------------------
step "end-to-end tests (pytest tests/e2e, ${E2E_WORKERS:-2} workers)"
if "$VENV_PY" -m pytest tests/e2e -n "${E2E_WORKERS:-2}" -p no:cacheprovider "$@"; then
    done_step
else
    FAILED+=("e2e tests")
    echo "--- FAILED (e2e tests)"
fi

echo
if [ "${#FAILED[@]}" -eq 0 ]; then
    echo "==> all tests passed"
else
    echo "==> FAILED: ${FAILED[*]}"
    exit 1
fi
