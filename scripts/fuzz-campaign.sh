#!/usr/bin/env bash
# A long fuzzing campaign that shares the machine: runs the given cargo-fuzz targets
# FUZZ_JOBS at a time at low priority (nice 19: builds and tests preempt them) and stops
# each once it has used FUZZ_CPU_SECONDS of CPU time — CPU, not wall time, so "an hour of
# fuzzing" means an hour of the fuzzer's own work however busy the machine was. Corpora
# grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>), crashes land in
# fuzz/artifacts/<target>/, each run's libFuzzer log in fuzz/logs/<target>.log; a summary
# line per target (executions, CPU seconds, coverage, artifacts) is printed at the end.
#
#   FUZZ_CPU_SECONDS=3600 bash scripts/fuzz-campaign.sh responses_request stream_decoders
#
# Build the targets first (`cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build`, or
# scripts/fuzz.sh, which builds them on its first run).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
CPU_LIMIT=${FUZZ_CPU_SECONDS:-3600}
JOBS=${FUZZ_JOBS:-2}
NICE=${FUZZ_NICE:-19}
BIN_DIR=${FUZZ_BIN_DIR:-target/x86_64-unknown-linux-gnu/release}
TICK=$(getconf CLK_TCK)
(($# > 0)) || { echo "usage: $0 TARGET..." >&2; exit 2; }
mkdir -p logs

# CPU seconds (user + system) a running process has used.
cpu_seconds() {
    local f
    read -r -a f < "/proc/$1/stat" || { echo 0; return; }
    echo $(((f[13] + f[14]) / TICK))
}

run_one() {
    local t=$1 bin="$BIN_DIR/$1" log="logs/$1.log" pid used
    [[ -x $bin ]] || { echo "$t: $bin is not built" >&2; return 1; }
    mkdir -p "corpus/$t" "artifacts/$t"
    local seeds=()
    [[ -d seeds/$t ]] && seeds=("seeds/$t")
    # Wall-time bound as a backstop only: the CPU budget below ends the run.
    nice -n "$NICE" "$bin" "corpus/$t" "${seeds[@]}" -max_total_time=$((CPU_LIMIT * 20)) \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" > "$log" 2>&1 &
    pid=$!
    used=0
    while kill -0 "$pid" 2>/dev/null; do
        used=$(cpu_seconds "$pid")
        if ((used >= CPU_LIMIT)); then
            kill -INT "$pid" 2>/dev/null || true
            break
        fi
        sleep 5
    done
    wait "$pid" || true
    local execs cov artifacts
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    artifacts=$(find "artifacts/$t" -type f | wc -l)
    echo "$t: ${execs:-?} executions, ${used} CPU s, ${cov:-cov ?}, corpus $(find "corpus/$t" -type f | wc -l) files, artifacts $artifacts"
}

pids=()
for t in "$@"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    run_one "$t" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
