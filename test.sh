#!/usr/bin/env bash
# Every test wsrelay has, on a fresh machine: lints, unit and integration tests over real
# sockets, the chat page in headless Chromium, the Autobahn|Testsuite (RFC 6455), a smoke run
# of the load generator, and a short run of every fuzz target.
# Installs what it needs (Chromium from Debian, playwright-core from npm, the Python 2
# Autobahn suite from PyPI). `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

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

step "load generator smoke run against wsrelay (everything delivered, in order)"
bash benches/smoke.sh

step "fuzz targets: build all, run each briefly from its seeds"
bash fuzz/run.sh
