#!/usr/bin/env bash
# Headless-Chromium end-to-end tests of the chat page: one server (chat.test.js), one over
# https:// and wss:// (tls.test.js, --tls-cert with a certificate it makes), one with
# --deflate (deflate.test.js), and two
# nodes on one Redis (cluster.test.js, which starts redis-server itself).
# Installs Debian's chromium and redis-server if missing, npm dependencies if missing, builds
# the release server if WSRELAY_BIN is unset and the binary is absent, then
# runs the tests with Node's built-in runner. Safe to run non-interactively
# (CI=true) as root on a fresh machine.
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

if [ ! -d node_modules/playwright-core ]; then
  echo "run.sh: npm ci" >&2
  npm ci --no-audit --no-fund
fi

if [ -z "${WSRELAY_BIN:-}" ] && [ ! -x ../../target/release/wsrelay ]; then
  echo "run.sh: building target/release/wsrelay" >&2
  (cd ../.. && cargo build --release --locked)
fi

# One file at a time: each starts its own servers and browser, on a machine with few cores.
exec node --test --test-concurrency=1 chat.test.js deflate.test.js cluster.test.js tls.test.js
