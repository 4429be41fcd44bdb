#!/usr/bin/env bash
# Fuzzes memproxy's parsers with cargo-fuzz (libFuzzer): the three client request parsers,
# the upstream stream decoders (SSE per wire format, Bedrock event-stream frames, Ollama
# NDJSON), the config loader and the identity rules. Seeds come from fuzz/seeds/ (request
# bodies and streams the tests use); crashes land in fuzz/artifacts/<target>/ — fix them and
# keep each one as a regression test beside the code it broke.
#
#   bash scripts/fuzz.sh                 # every target, FUZZ_SECONDS each (default 60)
#   FUZZ_SECONDS=3600 bash scripts/fuzz.sh chat_request config
#
# cargo fuzz needs nightly compiler flags; the machine's stable toolchain provides them with
# RUSTC_BOOTSTRAP=1 for this crate only (the product builds on stable).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
SECONDS_EACH=${FUZZ_SECONDS:-60}
targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
    corpus="corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    seeds=()
    [[ -d "seeds/$t" ]] && seeds=("seeds/$t")
    echo "==> $t (${SECONDS_EACH}s)"
    cargo fuzz run "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$t/" 2>&1 | tail -n 4
done
