#!/usr/bin/env bash
# Every test wsrelay has, on a fresh machine: lints, unit and integration tests over real
# sockets (systemd's protocols among them), the systemd unit files, the chat page in headless
# Chromium, socket.io's own client against wsrelay (in Node and in headless Chromium), the
# Autobahn|Testsuite (RFC 6455, RFC 7692), a smoke run of the load generator, and a short run of
# every fuzz target.
# Installs what it needs (systemd, nginx, redis-server and Chromium from Debian, prometheus-client
# from PyPI, playwright-core and socket.io-client from npm, the Python 2 Autobahn suite from PyPI). `.ci/run` runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")"

# Each step prints the seconds spent so far, so the CI budget (well under 15 minutes) stays visible.
started=$SECONDS
step() { printf '\n== [%ss] %s\n' "$((SECONDS - started))" "$*"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "test dependencies: systemd (systemd-socket-activate, systemd-analyze), nginx, redis-server, openssl, prometheus-client, websockets"
# tests/proxy.rs runs nginx (from /usr/sbin, not on a user's PATH) in front of wsrelay;
# tests/cluster.rs and tests/browser/ run redis-server (and redis-cli) under wsrelay nodes.
if ! command -v systemd-socket-activate >/dev/null 2>&1 || ! command -v systemd-analyze >/dev/null 2>&1 \
  || ! [ -x /usr/sbin/nginx ] || ! command -v redis-server >/dev/null 2>&1 \
  || ! command -v redis-cli >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q systemd nginx redis-server openssl
fi
# tests/metrics.rs parses /metrics with Prometheus' own Python parser; tests/tls.rs chats over
# wss:// with Python's ssl (OpenSSL) and websockets, a TLS client independent of rustls.
# (openssl itself makes the test certificates and plays s_client there.)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/wsrelay-py"
if ! "$venv/bin/python" -c 'import prometheus_client, websockets.sync.client' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input prometheus-client==0.26.0 \
    websockets==15.0.1
fi
export WSRELAY_PYTHON="$venv/bin/python"

step "unit and integration tests"
cargo build --locked --release
cargo test --locked
# Latency bounds hold for the optimized build: run those tests against it too.
cargo test --locked --release --test fairness

step "deploy/: systemd-analyze verify, and security exposure <= 2.0"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash deploy/check.sh

step "chat page in headless Chromium"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/browser/run.sh

step "socket.io-client against wsrelay: echo, chat, two nodes on Redis, the tutorial page in Chromium"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/socketio/run.sh

step "Autobahn|Testsuite, sections 1-10 and 36 permessage-deflate cases of 12-13, against --mode echo --deflate"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/autobahn/run.sh

step "Autobahn|Testsuite over wss:// (--tls-cert): sections 1-8 and 10 (the full run: run.sh --tls)"
WSRELAY_BIN="$PWD/target/release/wsrelay" bash tests/autobahn/run.sh --tls --quick

step "load generator smoke run against wsrelay (everything delivered, in order)"
bash benches/smoke.sh

step "fuzz targets: build all, run each briefly from its seeds"
bash fuzz/run.sh

step "all passed"
