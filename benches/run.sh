#!/usr/bin/env bash
# wsrelay against Node `ws` (the tutorials' server), every scenario, in one run.
#
#   bash benches/run.sh            # the full table for BENCHMARKS.md (about 10 minutes)
#   bash benches/run.sh --quick    # smaller sizes and shorter runs, to check the tooling
#   bash benches/run.sh --scenario "relay fanout --subs 10000 --rate 2"   # just these (repeatable;
#                                  # server mode, then the load generator's arguments; mode
#                                  # relay-deflate: wsrelay --deflate, ws with perMessageDeflate)
#   bash benches/run.sh --baseline old/wsrelay   # also an older wsrelay build, as "before"
#
# Installs the peer (`npm ci` in benches/peers), builds wsrelay and the load generator in
# release mode, then for each scenario starts a fresh server of each kind (alternating which
# goes first), the server pinned to CPU 0 and the load generator to CPU 1, and appends the
# load generator's RESULT lines to target/bench/results-*.txt. Prints the comparison table.
# Loopback only; every run is bounded in time and in messages.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
scenarios=()
baseline=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --scenario) scenarios+=("$2"); shift ;;
        --baseline) baseline=$(realpath "$2"); shift ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "usage: bash benches/run.sh [--quick] [--baseline BIN] [--scenario 'MODE ARGS…']…" >&2; exit 2 ;;
    esac
    shift
done

# The server gets one core, the load generator the other; on one core they share it.
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    server_cpu=(taskset -c 0)
    loadgen_cpu=(taskset -c 1)
else
    echo "warning: one CPU or no taskset: server and load generator are not pinned" >&2
    server_cpu=()
    loadgen_cpu=()
fi

# Every connection is a file on both sides; 19,000 idle connections need ~19,100 on the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 19200 ]; then
    echo "warning: open-file limit $(ulimit -n): the 19k idle row will fail" >&2
fi

echo "== installing the peer (npm ci) and building (cargo build --release)" >&2
(cd benches/peers && npm ci --no-audit --no-fund --loglevel=error >&2)
cargo build --release --locked --bin wsrelay --example loadgen >&2
wsrelay=target/release/wsrelay
loadgen=target/release/examples/loadgen

mkdir -p target/bench
results="target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "# $(date -u) quick=$quick"
    echo "# nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# kernel=$(uname -r) node=$(node --version) fuzzer=$([ -e /tmp/fuzz-running ] && echo yes || echo no)"
    echo "# loadavg=$(cut -d' ' -f1-3 /proc/loadavg) at start"
    echo "# wsrelay=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo -dirty) baseline=${baseline:-none}"
} >"$results"

port=20100
pid=
lift=(--max-connections 30000 --max-connections-per-ip 30000)
start_server() { # kind mode (relay-deflate: relay, with permessage-deflate on)
    local kind=$1 mode=${2%-deflate} zip=()
    [ "$2" = "$mode" ] || zip=(--deflate)
    port=$((port + 1))
    case "$kind" in
        # The load generator is a few addresses with thousands of sockets each: lift the
        # per-address and total limits that guard a public server. An older build gets the
        # same two flags (it has had them since before the first baseline) and no newer ones:
        # the benches run relay and echo modes, which --max-message-rate does not limit.
        wsrelay) "${server_cpu[@]}" "$wsrelay" --listen "127.0.0.1:$port" --mode "$mode" \
            "${lift[@]}" "${zip[@]}" 2>>target/bench/server.log & ;;
        wsrelay-before) "${server_cpu[@]}" "$baseline" --listen "127.0.0.1:$port" --mode "$mode" \
            "${lift[@]}" "${zip[@]}" 2>>target/bench/server.log & ;;
        ws) "${server_cpu[@]}" node "benches/peers/$([ "$mode" = relay ] && echo broadcast || echo echo).js" "$port" \
            ${zip[@]:+deflate} 2>>target/bench/server.log & ;;
    esac
    pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: $kind did not start listening on $port" >&2
    return 1
}
stop_server() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop_server EXIT

# Runs one scenario against both servers, alternating which goes first.
round=0
both() { # mode scenario args...
    local mode=$1
    shift
    local order=(wsrelay ws)
    if [ $((round % 2)) = 1 ]; then order=(ws wsrelay); fi
    if [ -n "$baseline" ]; then order+=(wsrelay-before); fi
    round=$((round + 1))
    for kind in "${order[@]}"; do
        echo "== $kind: $*" >&2
        start_server "$kind" "$mode"
        if ! "${loadgen_cpu[@]}" "$loadgen" "$@" --server "127.0.0.1:$port" --pid "$pid" --label "$kind" \
            | tee -a "$results" >&2; then
            echo "# FAILED $kind $*" | tee -a "$results" >&2
        fi
        stop_server
        sleep 1 # let the kernel finish closing the sockets before the next server
    done
}

if [ ${#scenarios[@]} -gt 0 ]; then
    for sc in "${scenarios[@]}"; do
        # shellcheck disable=SC2086 # the scenario is a list of words
        both $sc
    done
elif [ "$quick" = 1 ]; then
    both relay idle --conns 1000 --settle 1
    both relay fanout --subs 100 --size 32 --secs 1
    both relay fanout --subs 1000 --size 1024 --secs 1
    both relay fanout --subs 1000 --size 32 --rate 2 --secs 3
    both echo echo --conns 100 --secs 1
    both relay-deflate idle --conns 1000 --settle 1 --deflate
    both relay-deflate fanout --subs 1000 --size 1024 --json --deflate --secs 1
else
    for n in 1000 10000 19000; do both relay idle --conns "$n"; done
    for size in 32 1024; do
        for n in 100 1000 10000; do both relay fanout --subs "$n" --size "$size" --secs 5; done
    done
    both relay fanout --subs 10000 --size 32 --rate 2 --secs 15
    both relay fanout --subs 1000 --size 32 --rate 200 --secs 5
    for c in 100 1000; do both echo echo --conns "$c" --secs 5; done
    # permessage-deflate: every client offers it as Chromium does; ws with its defaults.
    both relay-deflate idle --conns 19000 --deflate
    both relay-deflate fanout --subs 1000 --size 1024 --json --deflate --secs 5
fi

echo
echo "results: $results"
"$loadgen" table "$results"
