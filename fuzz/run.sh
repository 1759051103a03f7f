#!/usr/bin/env bash
# Builds every fuzz target and runs each one for FUZZ_SECONDS (default 10) from its named seeds
# in corpus/<target>/; fails if any target finds a crash. New inputs go to corpus-gen/<target>/,
# crashes to artifacts/<target>/ (both gitignored). Kept regressions are replayed by the main
# package's `cargo test` (tests/fuzz_regressions.rs), not here.
#
#   bash fuzz/run.sh                         # CI: build, then 10 s per target
#   FUZZ_SECONDS=60 bash fuzz/run.sh         # longer
#   FUZZ_TARGETS="message utf8" bash fuzz/run.sh
#   FUZZ_RUNS=10000000 bash fuzz/run.sh      # a fixed number of executions instead of a time
#   FUZZ_SANITIZER=none bash fuzz/run.sh     # without AddressSanitizer: 2-3x the executions/s
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-10}
if [[ -n ${FUZZ_RUNS:-} ]]; then
    budget=(-runs="$FUZZ_RUNS")
    what="$FUZZ_RUNS runs"
else
    budget=(-max_total_time="$seconds")
    what="$seconds s"
fi
fuzz=(cargo +nightly fuzz)
# AddressSanitizer by default; the code under test has no `unsafe`, so long runs may trade it
# for speed (the assertions and Rust's own checks still run).
sanitizer=(-s "${FUZZ_SANITIZER:-address}")

if ! "${fuzz[@]}" --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    start=$(date +%s)
    cargo +nightly install cargo-fuzz --locked
    echo "cargo-fuzz installed in $(($(date +%s) - start)) s"
fi

echo "== building fuzz targets"
start=$(date +%s)
"${fuzz[@]}" build "${sanitizer[@]}"
echo "built in $(($(date +%s) - start)) s"

targets=${FUZZ_TARGETS:-$("${fuzz[@]}" list)}
failed=()
for target in $targets; do
    # Inputs as large as a message at its limit (4 KiB) in many frames, or many ops.
    case $target in
        message | connection) max_len=16384 ;;
        *) max_len=4096 ;;
    esac
    dict=()
    case $target in
        handshake | connection) dict=(-dict=dict/handshake.dict) ;;
        chat) dict=(-dict=dict/chat.dict) ;;
        resp) dict=(-dict=dict/resp.dict) ;;
        sio) dict=(-dict=dict/sio.dict) ;;
    esac
    mkdir -p "corpus-gen/$target" "artifacts/$target"
    echo "== $target: $what"
    if ! "${fuzz[@]}" run "${sanitizer[@]}" "$target" "corpus-gen/$target" "corpus/$target" -- \
        "${budget[@]}" -max_len="$max_len" -timeout=10 "${dict[@]}" \
        -print_final_stats=1 2>"artifacts/$target.log"; then
        tail -n 40 "artifacts/$target.log"
        failed+=("$target")
    fi
    grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' \
        "artifacts/$target.log" || true
done

if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/" >&2
    exit 1
fi
echo "fuzz: $what each, no crash"
