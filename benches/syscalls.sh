#!/usr/bin/env bash
# System calls per delivery (fan-out) or per round trip (echo), counted by the kernel's
# tracepoints (`perf stat -e syscalls:sys_enter_*`, no strace: a traced server would batch
# differently), for one server on one scenario. Counts, not times: it is the load
# generator's RESULT line that says how many deliveries or round trips the counts are for.
#
#   bash benches/syscalls.sh wsrelay relay fanout --subs 10000 --size 32 --window 8 --secs 5
#   bash benches/syscalls.sh uws echo echo --conns 100 --secs 5    # needs WSRELAY_UWS_BIN
#   WSRELAY_BIN=old/wsrelay bash benches/syscalls.sh wsrelay echo echo --conns 100 --secs 5
#
# Arguments: the server (wsrelay, uws or ws), its mode (relay or echo), then the load
# generator's. Pinned as in run.sh (server CPU 0, load generator CPU 1). Connection setup is
# counted too: a few calls per connection, under 1 % of a 5 s row's. Needs perf (Debian:
# linux-perf) and the right to trace (root here).
set -euo pipefail
cd "$(dirname "$0")/.."
kind=$1 mode=$2
shift 2
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked --bin wsrelay --example loadgen >&2
wsrelay=$(realpath "${WSRELAY_BIN:-target/release/wsrelay}")
port=$((21000 + RANDOM % 2000))
case "$kind" in
    wsrelay) taskset -c 0 "$wsrelay" --listen "127.0.0.1:$port" --mode "$mode" \
        --max-connections 30000 --max-connections-per-ip 30000 2>/dev/null & ;;
    uws) taskset -c 0 "${WSRELAY_UWS_BIN:?set WSRELAY_UWS_BIN}" "$port" "$mode" 2>/dev/null & ;;
    ws) taskset -c 0 node "benches/peers/$([ "$mode" = relay ] && echo broadcast || echo echo).js" \
        "$port" 2>/dev/null & ;;
    *) echo "server: wsrelay, uws or ws" >&2; exit 2 ;;
esac
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
calls=read,recvfrom,recvmsg,write,writev,sendto,sendmsg,epoll_wait,epoll_pwait,epoll_pwait2
calls=$calls,epoll_ctl,accept4,close,futex
events=raw_syscalls:sys_enter
for c in ${calls//,/ }; do events=$events,syscalls:sys_enter_$c; done
out=$(mktemp)
perf stat -x, -e "$events" -p "$server" -o "$out" &
perf=$!
sleep 0.5
# The server's user and system CPU time (clock ticks), fields 14 and 15 of /proc/PID/stat.
ticks() { sed 's/.*) //' "/proc/$server/stat" | cut -d' ' -f12,13; }
read -r u0 s0 <<<"$(ticks)"
result=$(taskset -c 1 target/release/examples/loadgen "$@" --server "127.0.0.1:$port" \
    --pid "$server" --label "$kind")
read -r u1 s1 <<<"$(ticks)"
kill -INT $perf
wait $perf || true
echo "$result"
# Per unit: deliveries for fan-out, round trips for echo.
units=$(sed -n 's/.* deliveries=\([0-9]*\).*/\1/p; s/.* round_trips=\([0-9]*\).*/\1/p' <<<"$result")
echo "syscalls per $([ "$mode" = echo ] && echo 'round trip' || echo delivery) ($units):"
awk -F, -v n="$units" '$3 ~ /sys_enter/ && $1 > 0 {
    name = $3; sub(/.*sys_enter_?/, "", name); if (name == "") name = "all"
    printf "  %-12s %12d  %.4f\n", name, $1, $1 / n }' "$out"
hz=$(getconf CLK_TCK)
awk -v n="$units" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" 'BEGIN {
    printf "server CPU per unit: user %.2f us, system %.2f us (%.0f %% in the kernel)\n",
        u / hz / n * 1e6, s / hz / n * 1e6, 100 * s / (u + s) }'
rm -f "$out"
