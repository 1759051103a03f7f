#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzingclient (RFC 6455 conformance, sections 1-10, and
# permessage-deflate, sections 12-13) against wsrelay in echo mode with --deflate, and
# checks the verdicts with check.py.
#
#   bash tests/autobahn/run.sh          # 1-10, and the 12-13 subset in deflate-subset.txt
#   bash tests/autobahn/run.sh --full   # 1-10, and all of 12-13 (216 cases, minutes more)
#   bash tests/autobahn/run.sh --tls    # the same over wss:// (--tls-cert, a certificate made
#                                       # here with openssl); combines with --full
#   bash tests/autobahn/run.sh --tls --quick   # over wss://, sections 1-8 and 10 only (no
#                                       # 9, the large-message performance cases, no 12-13)
#
# Environment:
#   WSRELAY_BIN    server binary (default target/release/wsrelay; not built here)
#   AUTOBAHN_HOME  where the suite is installed (default ~/.cache/wsrelay-autobahn)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

full=0
tls=0
quick=0
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    --tls) tls=1 ;;
    --quick) quick=1 ;;
    *) echo "usage: bash tests/autobahn/run.sh [--full] [--tls] [--quick]" >&2; exit 2 ;;
  esac
done

AUTOBAHN_HOME="${AUTOBAHN_HOME:-$HOME/.cache/wsrelay-autobahn}"
WSRELAY_BIN="${WSRELAY_BIN:-target/release/wsrelay}"
wstest="$AUTOBAHN_HOME/bin/wstest"
reports="$here/reports$([ "${tls:-0}" = 1 ] && echo -tls || true)"

die() { echo "autobahn: $*" >&2; exit 1; }

# Checked first so a missing build fails before a long install.
[ -f "$WSRELAY_BIN" ] || die "server binary $WSRELAY_BIN not found (build it with: cargo build --release, or set WSRELAY_BIN)"
[ -x "$WSRELAY_BIN" ] || die "server binary $WSRELAY_BIN is not executable"

# --- 1. the suite: Python 2 only, installed once into its own user base ----
find_python2() {
  local p
  if command -v pyenv >/dev/null 2>&1; then
    p="$(pyenv root)/versions/2.7.18/bin/python2.7"
    if [ -x "$p" ]; then echo "$p"; return; fi
  fi
  # A pyenv shim can exist without the version behind it, so try to run it.
  if p="$(command -v python2.7)" && "$p" -c 'import sys' >/dev/null 2>&1; then
    echo "$p"; return
  fi
  return 1
}

install_suite() {
  local py stage
  py="$(find_python2)" || die "python2.7 not found (looked for \$(pyenv root)/versions/2.7.18/bin/python2.7, then python2.7 on PATH); the Autobahn suite needs CPython 2.7"
  echo "autobahn: installing autobahntestsuite into $AUTOBAHN_HOME with $py"
  # Install into a staging dir and rename at the end, so an interrupted
  # install never leaves a half-working wstest that later runs would reuse.
  # PYTHONUSERBASE keeps the interpreter's own site-packages untouched.
  stage="$AUTOBAHN_HOME.partial.$$"
  rm -rf "$stage"
  mkdir -p "$(dirname "$AUTOBAHN_HOME")"
  local pipargs=(--user --quiet --disable-pip-version-check --no-input --no-warn-script-location)
  # The interpreter's bundled pip is too old for the pins; pip 20.3.4 is the
  # last one that runs on 2.7, so it goes in first and is used for the rest.
  if ! { PYTHONUSERBASE="$stage" "$py" -m pip install "${pipargs[@]}" pip==20.3.4 &&
         PYTHONUSERBASE="$stage" "$py" -m pip install "${pipargs[@]}" \
           -c "$here/constraints-py2.txt" autobahntestsuite==25.10.1; } ||
     [ ! -x "$stage/bin/wstest" ]; then
    rm -rf "$stage"
    die "installing autobahntestsuite failed (see pip's output above)"
  fi
  rm -rf "$AUTOBAHN_HOME"
  mv "$stage" "$AUTOBAHN_HOME"
}

if [ -x "$wstest" ]; then
  echo "autobahn: reusing suite in $AUTOBAHN_HOME"
else
  t0=$SECONDS
  install_suite
  echo "autobahn: suite installed in $((SECONDS - t0)) s"
fi
# wstest's site-packages live under this user base, not the interpreter's.
export PYTHONUSERBASE="$AUTOBAHN_HOME"
unset PYTHONNOUSERSITE PYTHONHOME PYTHONPATH

# --- 2. the server, on a port the OS picks --------------------------------
rm -rf "$reports"
mkdir -p "$reports"
log="$reports/server.log"

# Limits sit at or above the suite's largest messages so that no case fails
# on a limit: 9.1.6/9.2.6 send exactly 16 MiB (so --max-message is inclusive),
# and 9.3.1/9.4.1 send 4 MiB in 64-byte frames, which the suite's sender makes
# 65537 frames (65536 full ones plus an empty final one), so 65536 is too low.
# --deflate: sections 1-10 offer no extension, so they run as without it.
# --tls: a throwaway self-signed certificate (the suite's client does not verify it).
tls_args=()
scheme=ws
if [ "$tls" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$reports/key.pem" -out "$reports/cert.pem" -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null || die "openssl could not make a certificate"
  tls_args=(--tls-cert "$reports/cert.pem" --tls-key "$reports/key.pem")
  scheme=wss
fi
"$WSRELAY_BIN" --listen 127.0.0.1:0 --mode echo --deflate \
  --max-message 16777216 --max-fragments 131072 --max-output 67108864 "${tls_args[@]}" \
  >"$log" 2>&1 &
server_pid=$!
cleanup() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# The server announces its address on stderr: "... listening on ws://HOST:PORT/" (wss://).
url=""
for _ in $(seq 100); do  # 100 x 0.1 s = at most ~10 s
  url="$(grep -o "listening on $scheme://[^ ]*" "$log" | head -n1 | sed 's/^listening on //')" || true
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; die "server exited before listening"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; die "server printed no 'listening on ws://HOST:PORT/' line within 10 s"; }
port="$(sed -E 's#^wss?://[^/]*:([0-9]+)/?.*#\1#' <<<"$url")"
[[ "$port" =~ ^[0-9]+$ ]] || die "cannot parse a port from '$url'"
echo "autobahn: server pid $server_pid on port $port"

# --- 3. the fuzzingclient ---------------------------------------------------
# Connect to 127.0.0.1 whatever host the server printed (it may print 0.0.0.0).
config="$reports/fuzzingclient.json"
if [ "$full" = 1 ]; then
  cases='"*"'
elif [ "$quick" = 1 ]; then
  cases="$(printf '"%s.*", ' 1 2 3 4 5 6 7 8)\"10.*\""
else
  # Sections 1-10 whole; of 12-13, the cases deflate-subset.txt lists (one per line).
  cases="$(printf '"%s.*", ' 1 2 3 4 5 6 7 8 9 10)$(grep -v '^#' "$here/deflate-subset.txt" \
    | awk 'NF { printf "%s\"%s\"", sep, $1; sep = ", " }')"
fi
sed -e "s#@URL@#$scheme://127.0.0.1:$port#" -e "s#@OUTDIR@#$reports/clients#" \
  -e "s#@CASES@#$cases#" "$here/fuzzingclient.json" >"$config"

t0=$SECONDS
# stdin from /dev/null: wstest must never wait on a terminal (CI has none).
# Bounded: sections 1-10 take well under a minute against a healthy server, the
# deflate subset about two, all of 12-13 several more (see README.md).
rc=0
(cd "$reports" && timeout "$((full ? 1800 : 600))" "$wstest" -m fuzzingclient -s "$config" </dev/null \
  >"$reports/wstest.log" 2>&1) || rc=$?
echo "autobahn: wstest finished in $((SECONDS - t0)) s (exit $rc); log: $reports/wstest.log"
if [ "$rc" -eq 124 ]; then
  tail -n 20 "$reports/wstest.log" >&2
  die "wstest timed out"
fi
index="$reports/clients/index.json"
if [ ! -f "$index" ]; then
  tail -n 20 "$reports/wstest.log" >&2
  die "wstest wrote no $index"
fi
# A crashed server, or a wstest that lost its connection, ends the run early:
# the report then lacks cases, which is a failure even if those run passed.
# Said before check.py so that its summary line stays the last line.
incomplete=0
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "autobahn: server died during the run; last lines of $log:" >&2
  tail -n 20 "$log" >&2
  incomplete=1
fi
if grep -q '^Connection to .* failed' "$reports/wstest.log"; then
  grep '^Connection to .* failed' "$reports/wstest.log" >&2
  incomplete=1
fi

# --- 4. the verdicts ----------------------------------------------------------
check_rc=0
python3 "$here/check.py" "$index" "$here/expected-results.json" --config "$config" || check_rc=$?
[ "$incomplete" -eq 0 ] || exit 1
exit "$check_rc"
