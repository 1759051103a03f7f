#!/usr/bin/env bash
# wsrelay against Node `ws` (the tutorials' server), and a wsrelay cluster on Redis against
# socket.io's (the tutorials' scale-out), every scenario, in one run.
#
#   bash benches/run.sh            # the full tables for BENCHMARKS.md (about 7 minutes)
#   bash benches/run.sh --quick    # smaller sizes and shorter runs, to check the tooling
#   bash benches/run.sh --cluster  # only the cluster rows (with --quick: smaller)
#   bash benches/run.sh --socketio # only the socket.io rows (with --quick: smaller)
#   bash benches/run.sh --tls      # only the TLS rows (with --quick: smaller)
#   bash benches/run.sh --scenario "relay fanout --subs 10000 --rate 2"   # just these (repeatable;
#                                  # server mode, then the load generator's arguments; mode
#                                  # relay-deflate: wsrelay --deflate, ws with perMessageDeflate)
#   bash benches/run.sh --baseline old/wsrelay   # also an older wsrelay build, as "before"
#   bash benches/run.sh --uws      # only issue 14's rows (wsrelay, uWebSockets, ws)
#   WSRELAY_UWS_BIN=/path/uws_peer bash benches/run.sh   # adds uWebSockets as a third server
#                                  # (built locally, not in this repository: see BENCHMARKS.md);
#                                  # unset or missing: its rows are skipped with a note
#   WSRELAY_BIN=path/to/wsrelay bash benches/run.sh   # measure this build instead of building
#
# Installs the peers (`npm ci` in benches/peers: ws, socket.io, @socket.io/redis-adapter,
# redis) and Debian's redis-server when missing, builds wsrelay and the load generator in
# release mode, then for each scenario starts a fresh server of each kind (alternating which
# goes first), the server pinned to CPU 0 and the load generator to CPU 1, and appends the
# load generator's RESULT lines to target/bench/results-*.txt. Prints the comparison tables.
#
# Cluster rows (each with a fresh redis-server on a free loopback port, persistence off,
# pinned to CPU 0 with the servers; killed with them):
#   cluster       2 wsrelay processes (--mode chat --redis) against 2 socket.io processes
#                 (benches/peers/socketio-cluster.js) on one Redis each, subscribers split
#                 between the two ports, the publisher on the first: fan-out deliveries/s
#                 saturated (1,000 subscribers x 32 B and x 1 KiB), latency at 100 messages/s
#   redis-cost    the same latency row with every client on one wsrelay, --redis on and off,
#                 3 paired runs (the table shows each side's median)
#   cluster-idle  idle bytes per connection (19,000), one wsrelay in chat mode, --redis on/off
#   reuse-port    2 wsrelay processes on one port (--reuse-port --redis), 2 x 19,000 idle
#                 connections; each process's open files are reported (20,000 at most here)
#   socketio      (no Redis) socket.io clients (WebSocket transport) on one wsrelay (--mode chat, room
#                 `main`) against one Node socket.io 4 process (benches/peers/socketio.js, the
#                 tutorial's io.emit, no adapter), both speaking socket.io: idle bytes per
#                 connection (19,000; target ≤ 1/20 of socket.io's) and fan-out deliveries/s
#                 saturated (1,000 subscribers x 32 B and x 1 KiB; target ≥ 20×)
#   tls           (no Redis) wss:// on one wsrelay (--mode relay --tls-cert, rustls) against
#                 Node ws on https.createServer (benches/peers/broadcast-tls.js), the load
#                 generator's clients on rustls (no resumption), a CA and a P-256 leaf made
#                 here with openssl: idle bytes per connection (10,000; target ≤ 1/10 of
#                 Node's, and ≤ 2 KiB more than a plaintext wsrelay connection, the
#                 wsrelay-plain label), full handshakes/s on one core (32 in flight; the
#                 client skips certificate checks so the server is what is measured; target
#                 ≥ Node's), saturated fan-out to 1,000 subscribers x 32 B / 1 KiB (target ≥ 10×)
# Every cluster fan-out row reports deliveries against expected, and reordering: the
# publisher's counter must arrive in order and the room's seq rise at every receiver.
# Cluster rows need a wsrelay with --redis (and --reuse-port for that row); without, they
# are skipped with a warning.
# Loopback only; every run is bounded in time and in messages.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
uws_only=0
cluster_only=0
socketio_only=0
tls_only=0
scenarios=()
baseline=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --uws) uws_only=1 ;;
        --cluster) cluster_only=1 ;;
        --socketio) socketio_only=1 ;;
        --tls) tls_only=1 ;;
        --scenario) scenarios+=("$2"); shift ;;
        --baseline) baseline=$(realpath "$2"); shift ;;
        -h | --help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
        *) echo "usage: bash benches/run.sh [--quick] [--uws] [--cluster] [--socketio] [--tls] [--baseline BIN] [--scenario 'MODE ARGS…']…" >&2; exit 2 ;;
    esac
    shift
done
run_cluster=$([ ${#scenarios[@]} = 0 ] && [ "$uws_only" = 0 ] \
    && { { [ "$socketio_only" = 0 ] && [ "$tls_only" = 0 ]; } || [ "$cluster_only" = 1 ]; } && echo 1 || echo 0)

# uWebSockets (App::publish on one topic; see BENCHMARKS.md) is built outside this repository;
# without it its rows are skipped, not faked.
uws_bin=
if [ -n "${WSRELAY_UWS_BIN:-}" ] && [ -x "${WSRELAY_UWS_BIN}" ]; then
    uws_bin=$(realpath "$WSRELAY_UWS_BIN")
else
    echo "note: uWebSockets peer skipped: set WSRELAY_UWS_BIN to its binary (BENCHMARKS.md: how to build it)${WSRELAY_UWS_BIN:+; not executable: $WSRELAY_UWS_BIN}" >&2
fi

# The server gets one core, the load generator the other; on one core they share it. In the
# cluster rows both server processes and Redis share the server's core, for wsrelay and
# socket.io alike.
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

echo "== installing the peers (npm ci) and building (cargo build --release)" >&2
(cd benches/peers && npm ci --no-audit --no-fund --loglevel=error >&2)
if [ "$run_cluster" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q redis-server >&2
fi
if [ -n "${WSRELAY_BIN:-}" ]; then
    cargo build --release --locked --example loadgen >&2
    wsrelay=$(realpath "$WSRELAY_BIN")
else
    cargo build --release --locked --bin wsrelay --example loadgen >&2
    wsrelay=target/release/wsrelay
fi
loadgen=target/release/examples/loadgen
# Cluster rows need the flags; a build without them gets its rows skipped, not faked.
has_redis=0
has_reuse_port=0
if [ "$run_cluster" = 1 ]; then
    help=$("$wsrelay" --help 2>&1 || true)
    if grep -q -- '--redis' <<<"$help"; then has_redis=1; else
        echo "warning: $wsrelay has no --redis: the cluster rows are skipped" >&2
    fi
    if grep -q -- '--reuse-port' <<<"$help"; then has_reuse_port=1; else
        echo "warning: $wsrelay has no --reuse-port: the reuse-port row is skipped" >&2
    fi
fi

mkdir -p target/bench
results="target/bench/results-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "# $(date -u) quick=$quick"
    echo "# nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "# kernel=$(uname -r) node=$(node --version) fuzzer=$([ -e /tmp/fuzz-running ] && echo yes || echo no)"
    echo "# redis-server=$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p') peers=$(cd benches/peers && node -e 'const l=require("./package-lock.json").packages;console.log(["ws","socket.io","@socket.io/redis-adapter","redis"].map(n=>n+"@"+(l["node_modules/"+n]||{}).version).join(","))')"
    echo "# loadavg=$(cut -d' ' -f1-3 /proc/loadavg) at start"
    echo "# wsrelay=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo -dirty) bin=$wsrelay baseline=${baseline:-none}"
    echo "# uws=${uws_bin:-none}$([ -n "$uws_bin" ] && echo " sha256=$(sha256sum "$uws_bin" | cut -c1-16)")"
} >"$results"

port=20100
pid=
pids=()      # every server process of the scenario running now (pid is the first)
redis_pid=
lift=(--max-connections 30000 --max-connections-per-ip 30000)
# The next port nothing listens on (other programs on this machine have servers too).
next_port() {
    port=$((port + 1))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
}
wait_listening() { # port what
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: $2 did not start listening on $1" >&2
    return 1
}
start_server() { # kind mode (relay-deflate: relay, with permessage-deflate on)
    local kind=$1 mode=${2%-deflate} zip=()
    [ "$2" = "$mode" ] || zip=(--deflate)
    next_port
    case "$kind" in
        # The load generator is a few addresses with thousands of sockets each: lift the
        # per-address and total limits that guard a public server. An older build gets the
        # same two flags (it has had them since before the first baseline) and no newer ones:
        # the benches run relay and echo modes, which --max-message-rate does not limit.
        wsrelay) "${server_cpu[@]}" "$wsrelay" --listen "127.0.0.1:$port" --mode "$mode" \
            "${lift[@]}" "${zip[@]}" 2>>target/bench/server.log & ;;
        wsrelay-before) "${server_cpu[@]}" "$baseline" --listen "127.0.0.1:$port" --mode "$mode" \
            "${lift[@]}" "${zip[@]}" 2>>target/bench/server.log & ;;
        # Its argument is the mode (relay or echo); it has no permessage-deflate here.
        uws) "${server_cpu[@]}" "$uws_bin" "$port" "$mode" 2>>target/bench/server.log & ;;
        ws) "${server_cpu[@]}" node "benches/peers/$([ "$mode" = relay ] && echo broadcast || echo echo).js" "$port" \
            ${zip[@]:+deflate} 2>>target/bench/server.log & ;;
    esac
    pid=$!
    pids=("$pid")
    wait_listening "$port" "$kind"
}
stop_server() {
    local p
    for p in "${pids[@]}" $redis_pid; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}" $redis_pid; do wait "$p" 2>/dev/null || true; done
    pids=()
    redis_pid=
}
trap stop_server EXIT

# Runs one scenario against both servers, alternating which goes first.
round=0
both() { # mode scenario args...
    local mode=$1
    shift
    local order=(wsrelay ws)
    if [ $((round % 2)) = 1 ]; then order=(ws wsrelay); fi
    # uWebSockets between or after them, by turns; not in deflate modes (its peer has none).
    if [ -n "$uws_bin" ] && [ "$mode" = "${mode%-deflate}" ]; then
        if [ $((round % 2)) = 1 ]; then order=("${order[0]}" uws "${order[1]}"); else order+=(uws); fi
    fi
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

# A fresh Redis for one scenario: a free loopback port, no snapshots, no append-only file.
start_redis() {
    next_port
    "${server_cpu[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --loglevel warning >>target/bench/redis.log 2>&1 &
    redis_pid=$!
    redis_url="redis://127.0.0.1:$port"
    wait_listening "$port" redis-server
}
# Chat mode with the rate limit lifted: the publisher sends as fast as the window allows.
chat=(--mode chat --max-message-rate 1000000 "${lift[@]}")
start_wsrelay_chat() { # port extra-flags...
    local at=$1
    shift
    "${server_cpu[@]}" "$wsrelay" --listen "127.0.0.1:$at" "${chat[@]}" "$@" 2>>target/bench/server.log &
    pids+=($!)
}
# Starts a cluster layout; sets pids, addrs (comma-separated), dialect, and redis_pid if any.
start_layout() { # layout
    pids=()
    redis_pid=
    local a b p
    case "$1" in
        wsrelay-2nodes | socketio-2nodes)
            start_redis || return 1
            next_port; a=$port
            next_port; b=$port
            addrs="127.0.0.1:$a,127.0.0.1:$b"
            for p in $a $b; do
                if [ "$1" = socketio-2nodes ]; then
                    "${server_cpu[@]}" node benches/peers/socketio-cluster.js "$p" "$redis_url" 2>>target/bench/server.log &
                    pids+=($!)
                    dialect=socketio
                else
                    start_wsrelay_chat "$p" --redis "$redis_url"
                    dialect=chat
                fi
            done
            wait_listening "$a" "$1" && wait_listening "$b" "$1" ;;
        wsrelay-redis | wsrelay-single)
            if [ "$1" = wsrelay-redis ]; then start_redis || return 1; fi
            next_port; addrs="127.0.0.1:$port"
            dialect=chat
            if [ "$1" = wsrelay-redis ]; then start_wsrelay_chat "$port" --redis "$redis_url"
            else start_wsrelay_chat "$port"; fi
            wait_listening "$port" "$1" ;;
        wsrelay-sio | socketio-1node)
            next_port; addrs="127.0.0.1:$port"
            dialect=socketio
            if [ "$1" = socketio-1node ]; then
                "${server_cpu[@]}" node benches/peers/socketio.js "$port" 2>>target/bench/server.log &
                pids+=($!)
            else start_wsrelay_chat "$port"; fi
            wait_listening "$port" "$1" ;;
        wsrelay-reuseport)
            start_redis || return 1
            next_port; addrs="127.0.0.1:$port"
            dialect=chat
            start_wsrelay_chat "$port" --reuse-port --redis "$redis_url"
            wait_listening "$port" "$1" || return 1
            start_wsrelay_chat "$port" --reuse-port --redis "$redis_url"
            # A probe cannot tell which process answered: the second one is up if it is
            # still running once it has had time to bind (a failed bind exits at once).
            sleep 1
            kill -0 "${pids[1]}" 2>/dev/null ;;
    esac
}
# Runs one cluster scenario against each layout, alternating which goes first.
cluster() { # group "layout:label …" loadgen-args...
    local group=$1 cases
    read -ra cases <<<"$2"
    shift 2
    if [ $((round % 2)) = 1 ] && [ ${#cases[@]} = 2 ]; then cases=("${cases[1]}" "${cases[0]}"); fi
    round=$((round + 1))
    local c layout label list
    for c in "${cases[@]}"; do
        layout=${c%%:*} label=${c#*:}
        echo "== $label ($layout): $*" >&2
        if start_layout "$layout"; then
            list=$(IFS=,; echo "${pids[*]}")
            if ! "${loadgen_cpu[@]}" "$loadgen" "$@" --server "$addrs" --pid "$list" \
                ${redis_pid:+--redis-pid "$redis_pid"} --dialect "$dialect" --group "$group" \
                --label "$label" | tee -a "$results" >&2; then
                echo "# FAILED $label $group $*" | tee -a "$results" >&2
            fi
        else
            echo "# FAILED to start $layout for $group $*" | tee -a "$results" >&2
        fi
        stop_server
        sleep 1
    done
}
cluster_rows() {
    [ "$has_redis" = 1 ] || return 0
    local subs=1000 secs=5 rate_secs=10 idle=19000 repeats=3
    if [ "$quick" = 1 ]; then subs=200 secs=1 rate_secs=2 idle=1000 repeats=1; fi
    local vs_socketio="wsrelay-2nodes:wsrelay socketio-2nodes:socketio"
    # The same window for both sides, smaller than the default's 1,024 32-byte messages: a
    # socket.io process handed 1,024 messages in one read blocks its event loop for seconds
    # broadcasting them, and the `redis` client's default 5 s command timeout then rejects a
    # PUBLISH the adapter does not catch, which ends the process. With 256 it stays up.
    # Repeated like the latency rows below: on a shared machine one run of a ratio can land
    # on someone else's build; the table shows each side's median run.
    for _ in $(seq "$repeats"); do
        for size in 32 1024; do
            cluster cluster "$vs_socketio" fanout --subs "$subs" --size "$size" --secs "$secs" \
                --window 256
        done
    done
    cluster cluster "$vs_socketio" fanout --subs "$subs" --size 32 --rate 100 --secs "$rate_secs"
    # What Redis adds is a few ms against a p99 that moves by ±10 ms from run to run here:
    # paired runs, alternating which goes first; the table shows each side's median.
    for _ in $(seq "$repeats"); do
        cluster redis-cost "wsrelay-redis:wsrelay wsrelay-single:wsrelay-noredis" \
            fanout --subs "$subs" --size 32 --rate 100 --secs "$rate_secs"
    done
    cluster cluster-idle "wsrelay-redis:wsrelay wsrelay-single:wsrelay-single" idle --conns "$idle"
    if [ "$has_reuse_port" = 1 ]; then
        # 9,000 connections per load-generator process (--per-proc), none near 20,000 files.
        cluster reuse-port "wsrelay-reuseport:wsrelay" idle --conns $((2 * idle))
    fi
}
# socket.io clients on one process each side: wsrelay's /socket.io/ in chat mode against the
# tutorial's socket.io server. No Redis, so no --redis needed.
# A CA and a P-256 leaf for localhost and 127.0.0.1 (chain: leaf, CA), made once per run.
tls_dir=target/bench/tls
make_tls_pki() {
    [ -s "$tls_dir/chain.pem" ] && return 0
    mkdir -p "$tls_dir"
    (
        cd "$tls_dir"
        printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' >ca.ext
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >leaf.ext
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
            -out ca.pem -days 30 -subj "/CN=wsrelay bench CA" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem \
            -out leaf.csr -subj /CN=localhost 2>/dev/null
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
            -days 30 -extfile leaf.ext 2>/dev/null
        cat leaf.pem ca.pem >chain.pem
    )
}
start_tls_server() { # kind: wsrelay (TLS), ws (Node https + ws) or wsrelay-plain
    next_port
    case "$1" in
        wsrelay) "${server_cpu[@]}" "$wsrelay" --listen "127.0.0.1:$port" --mode relay "${lift[@]}" \
            --tls-cert "$tls_dir/chain.pem" --tls-key "$tls_dir/key.pem" 2>>target/bench/server.log & ;;
        wsrelay-plain) "${server_cpu[@]}" "$wsrelay" --listen "127.0.0.1:$port" --mode relay \
            "${lift[@]}" 2>>target/bench/server.log & ;;
        ws) "${server_cpu[@]}" node benches/peers/broadcast-tls.js "$port" "$tls_dir/chain.pem" \
            "$tls_dir/key.pem" 2>>target/bench/server.log & ;;
    esac
    pid=$!
    pids=("$pid")
    wait_listening "$port" "$1"
}
tls_both() { # kinds loadgen-args...
    local kinds=($1) kind tls_args
    shift
    if [ $((round % 2)) = 1 ]; then kinds=($(printf '%s\n' "${kinds[@]}" | tac)); fi
    round=$((round + 1))
    for kind in "${kinds[@]}"; do
        echo "== tls $kind: $*" >&2
        tls_args=(--tls-ca "$tls_dir/ca.pem")
        [ "$kind" = wsrelay-plain ] && tls_args=()
        if start_tls_server "$kind"; then
            if ! "${loadgen_cpu[@]}" "$loadgen" "$@" "${tls_args[@]}" --group tls \
                --server "127.0.0.1:$port" --pid "$pid" --label "$kind" | tee -a "$results" >&2; then
                echo "# FAILED $kind tls $*" | tee -a "$results" >&2
            fi
        else
            echo "# FAILED to start $kind for tls $*" | tee -a "$results" >&2
        fi
        stop_server
        sleep 1
    done
}
tls_rows() {
    local subs=1000 secs=5 hs_secs=5 idle=10000 repeats=3
    if [ "$quick" = 1 ]; then subs=200 secs=1 hs_secs=2 idle=1000 repeats=1; fi
    if ! "$wsrelay" --help 2>&1 | grep -q -- '--tls-cert'; then
        echo "warning: $wsrelay has no --tls-cert: the TLS rows are skipped" >&2
        return 0
    fi
    make_tls_pki
    tls_both "wsrelay ws wsrelay-plain" idle --conns "$idle"
    local r size
    for r in $(seq "$repeats"); do
        tls_both "wsrelay ws" handshakes --conns 32 --secs "$hs_secs"
    done
    for size in 32 1024; do
        for r in $(seq "$repeats"); do
            tls_both "wsrelay ws" fanout --subs "$subs" --size "$size" --secs "$secs"
        done
    done
}

socketio_rows() {
    local subs=1000 secs=5 idle=19000 repeats=3
    if [ "$quick" = 1 ]; then subs=200 secs=1 idle=1000 repeats=1; fi
    local vs_socketio="wsrelay-sio:wsrelay socketio-1node:socketio"
    # The cluster rows' window (256 messages), for the same reason: one socket.io process
    # handed 1,024 messages in one read blocks its event loop for seconds; the same for both.
    for _ in $(seq "$repeats"); do
        for size in 32 1024; do
            cluster socketio "$vs_socketio" fanout --subs "$subs" --size "$size" --secs "$secs" \
                --window 256
        done
    done
    cluster socketio "$vs_socketio" idle --conns "$idle"
}

if [ ${#scenarios[@]} -gt 0 ]; then
    for sc in "${scenarios[@]}"; do
        # shellcheck disable=SC2086 # the scenario is a list of words
        both $sc
    done
elif [ "$uws_only" = 1 ]; then
    # Issue 14's rows: uWebSockets' measured lead was in echo, 10,000 x 32 B with 8 messages in
    # flight, and p99 at 10,000 subscribers.
    idle=19000 secs=5 rate_secs=15 subs=10000
    if [ "$quick" = 1 ]; then idle=1000 secs=1 rate_secs=3 subs=1000; fi
    both relay idle --conns "$idle"
    both relay fanout --subs 1000 --size 32 --secs "$secs"
    both relay fanout --subs "$subs" --size 32 --window 8 --secs "$secs"
    both relay fanout --subs 1000 --size 1024 --secs "$secs"
    both relay fanout --subs "$subs" --size 32 --rate 2 --secs "$rate_secs"
    both echo echo --conns 100 --secs "$secs"
elif [ "$cluster_only" = 1 ] || [ "$socketio_only" = 1 ] || [ "$tls_only" = 1 ]; then
    if [ "$cluster_only" = 1 ]; then cluster_rows; fi
    if [ "$socketio_only" = 1 ]; then socketio_rows; fi
    if [ "$tls_only" = 1 ]; then tls_rows; fi
elif [ "$quick" = 1 ]; then
    both relay idle --conns 1000 --settle 1
    both relay fanout --subs 100 --size 32 --secs 1
    both relay fanout --subs 1000 --size 1024 --secs 1
    both relay fanout --subs 1000 --size 32 --rate 2 --secs 3
    both echo echo --conns 100 --secs 1
    both relay-deflate idle --conns 1000 --settle 1 --deflate
    both relay-deflate fanout --subs 1000 --size 1024 --dialect json --deflate --secs 1
    cluster_rows
    socketio_rows
    tls_rows
else
    for n in 1000 10000 19000; do both relay idle --conns "$n"; done
    for size in 32 1024; do
        for n in 100 1000 10000; do both relay fanout --subs "$n" --size "$size" --secs 5; done
    done
    both relay fanout --subs 10000 --size 32 --rate 2 --secs 15
    both relay fanout --subs 1000 --size 32 --rate 200 --secs 5
    both relay fanout --subs 10000 --size 32 --window 8 --secs 5
    for c in 100 1000; do both echo echo --conns "$c" --secs 5; done
    # permessage-deflate: every client offers it as Chromium does; ws with its defaults.
    both relay-deflate idle --conns 19000 --deflate
    both relay-deflate fanout --subs 1000 --size 1024 --dialect json --deflate --secs 5
    cluster_rows
    socketio_rows
    tls_rows
fi

echo
echo "results: $results"
"$loadgen" table "$results"
