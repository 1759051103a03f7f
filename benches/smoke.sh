#!/usr/bin/env bash
# CI smoke run of the load generator against wsrelay (not a benchmark: no timings are judged).
# Fails unless every broadcast reaches every subscriber, in order, and every echo comes back.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin wsrelay --example loadgen
loadgen=target/release/examples/loadgen
pid=
trap 'kill "$pid" 2>/dev/null || true' EXIT

check() { # mode loadgen-args...; every check is a key=value the RESULT line must hold
    local mode=$1 port=$2 want=$3
    shift 3
    target/release/wsrelay --listen "127.0.0.1:$port" --mode "$mode" 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    local line
    line=$(timeout 120 "$loadgen" "$@" --server "127.0.0.1:$port" --pid "$pid" --label wsrelay)
    echo "$line"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    for kv in $want; do
        [[ " $line " == *" $kv "* ]] || { echo "smoke: expected $kv" >&2; exit 1; }
    done
}

# 300 subscribers over two processes and two source addresses, saturated, then open loop.
check relay 20051 "lost=0 reordered=0 missing=0 closed=0 drained=true" fanout --subs 300 --secs 1 --max-deliveries 3000000
check relay 20052 "lost=0 reordered=0 missing=0 closed=0 drained=true" fanout --subs 300 --size 1024 --rate 50 --secs 1
check echo 20053 "lost=0 closed=0" echo --conns 50 --secs 1
check relay 20054 "open=500" idle --conns 500 --warmup 10 --settle 0
echo "smoke: ok"
