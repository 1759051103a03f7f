#!/usr/bin/env bash
# Checks the unit files in deploy/: `systemd-analyze verify` must print nothing and succeed,
# and `systemd-analyze security --offline=true` must rate wsrelay.service's exposure <= 2.0,
# and the same for the template wsrelay@.service as one instance (wsrelay@01.service: a
# template itself cannot be verified). verify insists that ExecStart's binary exists, so it
# checks a copy of the units whose ExecStart points at the built binary ($WSRELAY_BIN, default
# target/release/wsrelay).
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
# Copies deploy/$1 to $tmp/$2 with ExecStart pointing at the built binary.
copy_unit() {
  sed "s|^ExecStart=/usr/local/bin/wsrelay|ExecStart=$(realpath "$bin")|" "$here/$1" >"$tmp/$2"
  grep -q "^ExecStart=$(realpath "$bin")" "$tmp/$2" ||
    { echo "check.sh: ExecStart=/usr/local/bin/wsrelay not found in $1" >&2; exit 1; }
}
copy_unit wsrelay.service wsrelay.service
cp "$here/wsrelay.socket" "$tmp/wsrelay.socket"
copy_unit wsrelay@.service wsrelay@01.service

# Fails unless `systemd-analyze verify` on the given units succeeds and prints nothing.
verify() {
  echo "check.sh: systemd-analyze verify ${*##*/}"
  if ! out="$(systemd-analyze verify "$@" 2>&1)" || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    echo "check.sh: FAILED: systemd-analyze verify is not clean" >&2
    exit 1
  fi
}

# Fails unless `systemd-analyze security` rates the unit at most $max_exposure.
security() {
  echo "check.sh: systemd-analyze security --offline=true ${1##*/}"
  local report line exposure
  report="$(systemd-analyze security --offline=true --no-pager "$1" 2>&1)" || true
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
}

verify "$tmp/wsrelay.socket" "$tmp/wsrelay.service"
security "$tmp/wsrelay.service"
# The same unit with its TLS lines uncommented (LoadCredential= of a chain and key), as
# wsrelay-tls.service with the wsrelay.socket it needs: it must rate the same.
touch "$tmp/fullchain.pem" "$tmp/privkey.pem"
sed -e 's|^#LoadCredential=tls-cert:.*|LoadCredential=tls-cert:'"$tmp"'/fullchain.pem|' \
  -e 's|^#LoadCredential=tls-key:.*|LoadCredential=tls-key:'"$tmp"'/privkey.pem|' \
  -e 's|^#Environment=WSRELAY_TLS_CERT=|Environment=WSRELAY_TLS_CERT=|' \
  -e 's|^Requires=wsrelay.socket|Requires=wsrelay-tls.socket|' \
  -e 's|^After=wsrelay.socket|After=wsrelay-tls.socket|' \
  -e 's|^Also=wsrelay.socket|Also=wsrelay-tls.socket|' \
  "$tmp/wsrelay.service" >"$tmp/wsrelay-tls.service"
[ "$(grep -c '^LoadCredential=\|^Environment=WSRELAY_TLS_CERT=' "$tmp/wsrelay-tls.service")" = 3 ] ||
  { echo "check.sh: the TLS lines of wsrelay.service were not found" >&2; exit 1; }
cp "$tmp/wsrelay.socket" "$tmp/wsrelay-tls.socket"
verify "$tmp/wsrelay-tls.socket" "$tmp/wsrelay-tls.service"
security "$tmp/wsrelay-tls.service"
verify "$tmp/wsrelay@01.service"
security "$tmp/wsrelay@01.service"
echo "check.sh: OK"
