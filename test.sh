#!/usr/bin/env bash
# Every test wsrelay has, on a fresh machine: lints, unit and integration tests over real
# sockets, the chat page in headless Chromium, the Autobahn|Testsuite (RFC 6455), and a short
# run of every fuzz target.
# Installs what it needs (Chromium from Debian, playwright-core from npm, the Python 2
# Autobahn suite from PyPI). `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"

# Each step prints the seconds spent so far, so the CI budget (well under 15 minutes) stays visible.
started=$SECONDS
step() { printf '\n== [%ss] %s\n' "$((SECONDS - started))" "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "unit and integration tests"
cargo build --locked --release
cargo test --locked

step "chat page in headless Chromium"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/browser/run.sh

step "Autobahn|Testsuite, sections 1-10, against --mode echo"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/autobahn/run.sh

step "fuzz targets: build all, run each briefly from its seeds"
bash fuzz/run.sh

step "all passed"
