#!/usr/bin/env bash
# Checks the unit files in deploy/: `systemd-analyze verify` must print nothing and succeed,
# and `systemd-analyze security --offline=true` must rate wsrelay.service's exposure <= 2.0.
# verify insists that ExecStart's binary exists, so it checks a copy of the units whose
# ExecStart points at the built binary ($WSRELAY_BIN, default target/release/wsrelay).
# Installs Debian's systemd package (for systemd-analyze) if it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${WSRELAY_BIN:-$here/../target/release/wsrelay}"
max_exposure=2.0

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check.sh: installing systemd (apt-get) for systemd-analyze" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q systemd
fi
[ -x "$bin" ] || { echo "check.sh: no wsrelay binary at $bin (cargo build --release)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/local/bin/wsrelay|ExecStart=$(realpath "$bin")|" \
  "$here/wsrelay.service" >"$tmp/wsrelay.service"
cp "$here/wsrelay.socket" "$tmp/wsrelay.socket"
grep -q "^ExecStart=$(realpath "$bin")" "$tmp/wsrelay.service" ||
  { echo "check.sh: ExecStart=/usr/local/bin/wsrelay not found in wsrelay.service" >&2; exit 1; }

echo "check.sh: systemd-analyze verify"
if ! out="$(systemd-analyze verify "$tmp/wsrelay.socket" "$tmp/wsrelay.service" 2>&1)" ||
   [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  echo "check.sh: FAILED: systemd-analyze verify is not clean" >&2
  exit 1
fi

echo "check.sh: systemd-analyze security --offline=true"
report="$(systemd-analyze security --offline=true --no-pager "$tmp/wsrelay.service" 2>&1)" || true
line="$(printf '%s\n' "$report" | grep 'Overall exposure level' || true)"
exposure="$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9][0-9.]*\) .*/\1/p')"
if [ -z "$exposure" ]; then
  printf '%s\n' "$report" >&2
  echo "check.sh: FAILED: no exposure level in systemd-analyze security's report" >&2
  exit 1
fi
echo "check.sh: exposure $exposure (at most $max_exposure)"
if ! awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }'; then
  printf '%s\n' "$report" >&2
  echo "check.sh: FAILED: exposure $exposure is over $max_exposure" >&2
  exit 1
fi
echo "check.sh: OK"
