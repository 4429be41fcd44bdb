#!/usr/bin/env bash
# Soak: mixed load (chat, streams, Anthropic messages, Responses, the memory tool loop, the
# memory API, virtual key changes) against memproxy with memory capture and retrieval on,
# over the mock upstream, sampling RSS, open files, threads, the analytics queue and latency
# every SOAK_INTERVAL seconds. Writes samples.csv and plot.svg to SOAK_OUT and fails when
# memory or open files grow in the second half, more than 1% of requests fail, or the
# analytics queue backs up.
#
#   bash scripts/soak.sh                      # one hour (the documented soak)
#   SOAK_SECONDS=300 bash scripts/soak.sh     # the CI-sized five minutes (.ci/run)
#
# Environment: SOAK_SECONDS (3600), SOAK_INTERVAL (10), SOAK_RATE (requests/s, 100),
# SOAK_WORKERS (16), SOAK_OUT (target/soak/DATE), SOAK_MAX_RSS_SLOPE (MiB/min; 1.0 for runs of
# 30 minutes or more, 3.0 for shorter ones, whose caches are still filling),
# SOAK_MAX_FD_SPREAD (64), SOAK_BUILD (1: build the debug binaries first).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-3600}
INTERVAL=${SOAK_INTERVAL:-10}
OUT=${SOAK_OUT:-target/soak/$(date +%Y%m%d-%H%M%S)}
TARGET=${CARGO_TARGET_DIR:-target}
VENV=tests/sdk/.venv
[[ -x $VENV/bin/python ]] || { echo "soak: run scripts/test.sh once first (it makes $VENV)" >&2; exit 2; }
if [[ ${SOAK_BUILD:-1} == 1 ]]; then cargo build --locked --workspace --bins; fi
for bin in memproxy mock-upstream; do
    [[ -x $TARGET/debug/$bin ]] || { echo "soak: $TARGET/debug/$bin is missing (cargo build --workspace --bins)" >&2; exit 2; }
done
mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(free_port)
MOCK_TOOL=memory_search MOCK_TOOL_ARGS='{"query":"what I like"}' \
    "$TARGET/debug/mock-upstream" "$MOCK_PORT" 2>"$work/mock.log" &
pids+=($!)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MOCK_PORT") 2>/dev/null && break
    sleep 0.1
done
MASTER=sk-soak-master
cat >"$work/config.yaml" <<YAML
general_settings: {master_key: $MASTER}
model_list:
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: k}
  - model_name: gpt-tools
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:$MOCK_PORT/v1", api_key: k}
  - model_name: claude
    litellm_params: {model: anthropic/claude-test, api_base: "http://127.0.0.1:$MOCK_PORT", api_key: k}
router_settings: {num_retries: 0}
context_retrieval: {enabled: true, max_results: 5}
tool_execution: {enabled: true, enabled_for_models: [gpt-tools], max_iterations: 2}
YAML
PORT=$(free_port)
MEMPROXY_DATA_DIR="$work/data" LOG_LEVEL=warn "$TARGET/debug/memproxy" --config "$work/config.yaml" \
    --port "$PORT" >"$work/memproxy.log" 2>&1 &
MP_PID=$!
pids+=("$MP_PID")
for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$PORT/health/liveliness" >/dev/null 2>&1 && break
    kill -0 "$MP_PID" 2>/dev/null || { cat "$work/memproxy.log" >&2; exit 1; }
    sleep 0.1
done
echo "soak: ${SECONDS_TOTAL}s against memproxy pid $MP_PID on :$PORT; samples every ${INTERVAL}s in $OUT"
"$VENV/bin/python" scripts/soak.py --url "http://127.0.0.1:$PORT" --pid "$MP_PID" --master "$MASTER" \
    --seconds "$SECONDS_TOTAL" --interval "$INTERVAL" --rate "${SOAK_RATE:-100}" \
    --workers "${SOAK_WORKERS:-16}" --out "$OUT"
