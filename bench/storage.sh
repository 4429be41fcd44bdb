#!/usr/bin/env bash
# Embedded next to PostgreSQL + Redis, in one run: bench/run.sh with retrieval and capture on
# and the same preloaded memories (default 100k of the bench user), once per backend; each
# report ends with the added latency over the floor forwarder. See bench/README.md.
#
#   bash bench/storage.sh
#   BENCH_MEMORY_PRELOAD=10000 BENCH_REPS=1 bash bench/storage.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_MEMORY=${BENCH_MEMORY:-retrieval}
export BENCH_MEMORY_PRELOAD=${BENCH_MEMORY_PRELOAD:-100000}
stamp=$(date +%Y%m%d-%H%M%S)
for storage in embedded postgres; do
    echo "######## storage: $storage"
    # With PostgreSQL, the database's own CPU is the backend's work, which the noise check
    # of bench/run.sh would count as other processes and measure again: not retried.
    retries=${BENCH_RETRIES:-2}
    [[ $storage == postgres ]] && retries=0
    BENCH_RETRIES=$retries BENCH_STORAGE=$storage \
        BENCH_OUT=$PWD/bench/results/storage-$stamp-$storage bash bench/run.sh
    # Built once: the second run reuses the binaries.
    export BENCH_BUILD=0
done
