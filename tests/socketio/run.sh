#!/usr/bin/env bash
# wsrelay's socket.io support: protocol.test.js on the wire (raw HTTP and WebSocket), then with
# the official client (socket.io-client, pinned in package.json and package-lock.json):
# echo.test.js and chat.test.js against one server each, cluster.test.js against nodes on one
# redis-server, tutorial.test.js in headless Chromium.
# Every test file starts and stops its own servers on free loopback ports.
#
#   WSRELAY_BIN   server binary (default: ../../target/release/wsrelay, built if absent)
#   CHROMIUM      browser binary (default /usr/bin/chromium; installed with apt-get if absent)
#   REDIS_SERVER  redis-server binary (default: on PATH; installed with apt-get if absent)
#   Extra arguments are test files to run instead of all of them.
#
# Installs npm dependencies with `npm ci` when node_modules does not match the lock file. Safe
# to run non-interactively (CI=true) as root on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")"

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  echo "run.sh: installing chromium (apt-get)" >&2
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q chromium
fi

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_SERVER:-}" ]; then
  echo "run.sh: installing redis-server (apt-get)" >&2
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q redis-server
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "run.sh: Node.js >= 20 required (found $(node --version))" >&2
  exit 1
fi

# Every package the lock file names, at the version it names, or `npm ci`.
if ! node -e '
  const lock = require("./package-lock.json");
  for (const [dir, { version }] of Object.entries(lock.packages)) {
    if (dir && require(`./${dir}/package.json`).version !== version) process.exit(1);
  }' 2>/dev/null; then
  echo "run.sh: npm ci" >&2
  npm ci --no-audit --no-fund
fi

if [ -z "${WSRELAY_BIN:-}" ] && [ ! -x ../../target/release/wsrelay ]; then
  echo "run.sh: building target/release/wsrelay" >&2
  (cd ../.. && cargo build --release --locked)
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then files=(protocol.test.js echo.test.js chat.test.js cluster.test.js tutorial.test.js); fi

# One file at a time: each starts its own servers (and a browser), on a machine with few cores.
# Every wait inside is bounded; --test-timeout bounds a file that hangs anyway.
exec node --test --test-concurrency=1 --test-timeout=180000 "${files[@]}"
