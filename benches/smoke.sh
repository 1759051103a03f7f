#!/usr/bin/env bash
# CI smoke run of the load generator against wsrelay (not a benchmark: no timings are judged).
# Fails unless every broadcast reaches every subscriber, in order, and every echo comes back;
# in chat mode the room's seq must also rise at every receiver and agree between them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin wsrelay --example loadgen
loadgen=target/release/examples/loadgen
pid=

log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

check() { # mode "key=value…" loadgen-args...; the RESULT line must hold every key=value
    local mode=$1 want=$2 port=
    shift 2
    # Port 0: the kernel picks a free one; the server's first log line names it.
    : >"$log" # emptied here, not by the child, so no earlier server's port is read back
    local extra=()
    # The chat publisher sends as fast as the window allows: lift the per-connection rate.
    if [ "$mode" = chat ]; then extra=(--max-message-rate 1000000); fi
    # relay-deflate: relay, with permessage-deflate on.
    if [ "$mode" = relay-deflate ]; then mode=relay extra=(--deflate); fi
    target/release/wsrelay --listen 127.0.0.1:0 --mode "$mode" "${extra[@]}" \
        --max-connections 30000 --max-connections-per-ip 30000 2>>"$log" &
    pid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's|.*listening on ws://127.0.0.1:\([0-9]*\)/.*|\1|p' "$log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "smoke: wsrelay did not start" >&2; exit 1; }
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
check relay "lost=0 reordered=0 missing=0 closed=0 drained=true" fanout --subs 300 --secs 1 --max-deliveries 3000000
check relay "lost=0 reordered=0 missing=0 closed=0 drained=true" fanout --subs 300 --size 1024 --rate 50 --secs 1
# The chat dialect: JSON in, {"type":"message",…,"seq"} out, the room's seq checked.
check chat "lost=0 reordered=0 order_errors=0 disagree=0 missing=0 closed=0 drained=true" \
    fanout --dialect chat --subs 300 --secs 1 --max-deliveries 3000000
# permessage-deflate: compressed broadcasts of chat-like JSON, inflated by every subscriber.
check relay-deflate "deflate=1 lost=0 reordered=0 missing=0 closed=0 drained=true" \
    fanout --dialect json --deflate --subs 300 --size 1024 --secs 1 --max-deliveries 3000000
check echo "lost=0 closed=0" echo --conns 50 --secs 1
check relay "open=500" idle --conns 500 --warmup 10 --settle 0
echo "smoke: ok"
