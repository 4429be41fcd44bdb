#!/usr/bin/env bash
# Page load of the dashboard's overview with a million usage rows: writes ROWS (default
# 1,000,000) rows into a fresh analytics DB (through the store's batch write, rollups
# included), starts memproxy on it, and times the calls the overview page makes (the page,
# its assets, the session, a timeseries per range), each the median of 5.
# Usage: scripts/ui-load-bench.sh [ROWS]   (PROFILE=release for an optimised build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
PROFILE=${PROFILE:-dev}
DIR=$(mktemp -d)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$DIR"' EXIT
cargo build --profile "$PROFILE" --bin memproxy --example ui_load_rows
TARGET=${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
"$TARGET/examples/ui_load_rows" "$DIR/data" "$ROWS"
cat > "$DIR/config.yaml" <<YAML
model_list:
  - model_name: m
    litellm_params: {model: openai/m, mock_response: hi}
general_settings: {master_key: sk-bench}
YAML
MEMPROXY_DATA_DIR="$DIR/data" "$TARGET/memproxy" serve --config "$DIR/config.yaml" --port 0 >"$DIR/log" 2>&1 &
PID=$!
ADDR=""
for _ in $(seq 1 200); do
  ADDR=$(grep -o '"address":"[^"]*"' "$DIR/log" | head -1 | cut -d'"' -f4 || true)
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$DIR/log"; exit 1; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ms() {
  for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -H 'authorization: Bearer sk-bench' "http://$ADDR$1"
  done | awk '{printf "%.1f\n", $1 * 1000}' | median
}
echo "rows: $ROWS ($(du -sh "$DIR/data/analytics.db" | cut -f1) analytics.db)"
for path in /ui /ui/app.js /ui/charts.js /ui/style.css \
  "/v1/usage/timeseries?range=1h&group_by=client" "/v1/usage/timeseries?range=24h&group_by=client" \
  "/v1/usage/timeseries?range=7d&group_by=model" "/v1/usage/timeseries?range=30d&group_by=key" \
  "/v1/usage/timeseries?range=30d&group_by=project" \
  "/v1/usage/requests?limit=25"; do
  ms=$(time_ms "$path")
  printf '%8s ms  %s\n' "$ms" "$path"
done
echo "(the overview page loads /ui, its 3 assets and one timeseries; 24h is the default range)"
