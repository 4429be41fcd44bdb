#!/usr/bin/env bash
# memproxy's benchmark: the same mock upstream called directly, through floor-proxy (a
# do-nothing forwarder, the physical floor of proxy overhead) and through memproxy, side by
# side in one run. See bench/README.md for what is measured and how to read it.
#
#   bash bench/run.sh
#
# Environment (all optional):
#   BENCH_SECONDS=5         measured seconds per measurement (after BENCH_WARMUP)
#   BENCH_WARMUP=1          warm-up seconds per measurement, not counted
#   BENCH_REPS=3            repetitions; every figure is the median over them
#   BENCH_CONNECTIONS=50    connections for the throughput measurement
#   BENCH_LOADGEN_THREADS=1 load generator threads
#   BENCH_LOG_LEVEL=info    memproxy's LOG_LEVEL
#   BENCH_MEMORY=off        off: memproxy's config says memory: {enabled: false}; default:
#                           no memory section (the build's defaults); retrieval: the build's
#                           memory defaults (capture on) plus context_retrieval on
#   BENCH_MEMORY_PRELOAD=0  memories written into memproxy's data dir before it starts, all of
#                           the user the bench requests get (default-dev), by
#                           `memproxy-bench bench-memory` (e.g. 100000; kept in BENCH_MEMORY_CACHE)
#   BENCH_MEMORY_LAYOUT=one one: all preloaded memories are the bench user's (the worst case
#                           for a search); spread: over 1000 users, the bench user one of them
#   BENCH_MEMORY_CACHE      where preloaded data dirs are kept for reuse
#                           (default bench/results/membench-cache)
#   BENCH_RATE=1000         one more 50-connection measurement, open loop at this total rate
#                           (requests/s, below saturation); 0: none
#   BENCH_BUILD=1           0: use the binaries already in the target dir
#   BENCH_WAIT_IDLE=60      wait up to this many seconds for a quiet machine (other processes
#                           using < 10% CPU) before each repetition and before a retry; 0: never
#   BENCH_RETRIES=2         times a measurement disturbed by other processes is taken again
#   BENCH_PIN=1             1-connection measurements: load generator on CPU 0, servers on
#                           the last CPU (see bench/README.md); 0: leave placement to the kernel
#   BENCH_NICE=N            run the servers and the load generator at this nice value (e.g. -10,
#                           needs root) so that other work on the machine disturbs less
#   BENCH_STRICT=0          1: exit 1 when a target is missed
#   BENCH_OUT=DIR           raw results (default bench/results/DATE-TIME)
#   BENCH_REPORT=DIR        measure nothing: print the report of an earlier run's raw results
#   BENCH_TRANSLATED_MODEL  translated-stream cases (see TRANSLATED below); empty: none
#   BENCH_STORAGE=embedded  postgres: every durable state in a PostgreSQL database made for the
#                           run (memory.backend postgres; preloaded memories copied in by
#                           `memproxy storage migrate`) and rate limits (rpm 10^9, so every
#                           request takes from a shared Redis bucket) plus the key feed in Redis;
#                           the database and the Redis keys are removed afterwards
#   BENCH_PG_URL            server for BENCH_STORAGE=postgres (default
#                           postgres://postgres@127.0.0.1:5432)
#   BENCH_REDIS_URL         Redis for BENCH_STORAGE=postgres (default redis://127.0.0.1:6379)
#   BENCH_OHA=1             also measure with oha (`cargo install oha --locked`), the same
#                           scenarios as the in-repo load generator (1 connection pinned, and
#                           BENCH_CONNECTIONS), in the same run; 0: loadgen only
#   FLOOR_DIR               floor-proxy sources (default ../shared/bench/floor-proxy)
#   CARGO_TARGET_DIR        cargo's target dir (default ./target)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
FLOOR_DIR=${FLOOR_DIR:-$ROOT/../shared/bench/floor-proxy}
FLOOR_BIN=$TARGET/floor/release/floor-proxy
DURATION=${BENCH_SECONDS:-5}
WARMUP=${BENCH_WARMUP:-1}
REPS=${BENCH_REPS:-3}
CONNS=${BENCH_CONNECTIONS:-50}
LG_THREADS=${BENCH_LOADGEN_THREADS:-1}
MP_LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
MEMORY=${BENCH_MEMORY:-off}
PRELOAD=${BENCH_MEMORY_PRELOAD:-0}
MEM_LAYOUT=${BENCH_MEMORY_LAYOUT:-one}
[[ $MEM_LAYOUT == one || $MEM_LAYOUT == spread ]] || {
    echo "bench: BENCH_MEMORY_LAYOUT must be one or spread" >&2
    exit 2
}
MEM_CACHE=${BENCH_MEMORY_CACHE:-$ROOT/bench/results/membench-cache}
# The user id memproxy gives the bench requests (they carry no identifying header).
MEM_USER=default-dev
RATE=${BENCH_RATE:-1000}
case $MEMORY in
off | default | retrieval) ;;
*)
    echo "bench: BENCH_MEMORY must be off, default or retrieval" >&2
    exit 2
    ;;
esac
[[ $PRELOAD =~ ^[0-9]+$ ]] || {
    echo "bench: BENCH_MEMORY_PRELOAD must be a number of memories" >&2
    exit 2
}
[[ $RATE =~ ^[0-9]+$ ]] || {
    echo "bench: BENCH_RATE must be a whole number of requests/s" >&2
    exit 2
}
WAIT_IDLE=${BENCH_WAIT_IDLE:-60}
STORAGE=${BENCH_STORAGE:-embedded}
[[ $STORAGE == embedded || $STORAGE == postgres ]] || {
    echo "bench: BENCH_STORAGE must be embedded or postgres" >&2
    exit 2
}
PG_SERVER=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS_URL_BENCH=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
PG_DB=memproxy_bench_$$
REDIS_PREFIX=memproxy-bench:$$:
RETRIES=${BENCH_RETRIES:-2}
HAVE_OHA=0
if [[ ${BENCH_OHA:-1} == 1 && -z ${BENCH_REPORT:-} ]]; then
    OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
    if [[ -x $OHA ]]; then
        HAVE_OHA=1
    else
        printf '%s\n' "oha not found: measuring with the in-repo load generator only (cargo install oha --locked)" >&2
    fi
fi
NOISE_PCT=10
PIN=${BENCH_PIN:-1}
NICE=${BENCH_NICE:-}
OUT=${BENCH_REPORT:-${BENCH_OUT:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}}

# Translated streams: a model whose provider speaks another wire format, so memproxy
# translates the answer back to OpenAI SSE. One case a line: MODEL_NAME [LITELLM_MODEL
# [API_BASE]], where {mock} stands for the mock upstream's host:port; LITELLM_MODEL defaults to
# PROVIDER/bench for a name bench-PROVIDER, API_BASE to http://{mock}. A case the memproxy
# build cannot serve yet is reported as "not available".
# A fourth field `responses` makes the case a Responses-API client (POST /v1/responses,
# streamed) on a deployment bridged to chat completions.
TRANSLATED=${BENCH_TRANSLATED_MODEL-"
bench-anthropic anthropic/bench http://{mock}
bench-responses openai/bench http://{mock}/v1 responses
"}

# Targets: added p99 at 1 connection, throughput as a share of floor-proxy's, peak RSS.
MAX_ADDED_P99_US=200
MIN_RPS_SHARE_OF_FLOOR=0.80
MAX_RSS_KB=$((40 * 1024))
# Issue 4's target with retrieval and capture on (and memories preloaded): added p99 at 50
# connections.
MAX_ADDED_P99_MEMORY_US=2000

PIDS=()
AUTOGROUP_NICE=
cleanup() {
    local pid
    if [[ -n $AUTOGROUP_NICE ]]; then echo "$AUTOGROUP_NICE" >/proc/self/autogroup 2>/dev/null || true; fi
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $STORAGE == postgres && -z ${BENCH_REPORT:-} ]]; then
        psql -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
        redis-cli -u "$REDIS_URL_BENCH" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null |
            xargs -r redis-cli -u "$REDIS_URL_BENCH" DEL >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() {
    say "bench: $*"
    exit 1
}

# --- build -------------------------------------------------------------------------------

if [[ -z ${BENCH_REPORT:-} ]]; then

HAVE_FLOOR=1
if [[ ! -f $FLOOR_DIR/Cargo.toml ]]; then
    say "floor-proxy not found at $FLOOR_DIR: measuring without the floor"
    HAVE_FLOOR=0
fi
if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    say "== building release binaries (target dir $TARGET)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p memproxy -p mock-upstream -p memproxy-bench)
    CARGO_TARGET_DIR=$TARGET cargo build --release --manifest-path "$ROOT/bench/loadgen/Cargo.toml"
    if ((HAVE_FLOOR)); then
        cargo build --release --manifest-path "$FLOOR_DIR/Cargo.toml" --target-dir "$TARGET/floor"
    fi
fi
if ((HAVE_FLOOR)) && [[ ! -x $FLOOR_BIN ]]; then
    say "floor-proxy is not built ($FLOOR_BIN): measuring without the floor"
    HAVE_FLOOR=0
fi
for b in memproxy mock-upstream loadgen; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing (build it, or run with BENCH_BUILD=1)"
done
# Run copies: a target dir shared with other checkouts may get another build of memproxy
# while this one runs, and the table must describe the binaries that were measured.
mkdir -p "$OUT/bin"
for b in memproxy mock-upstream loadgen; do
    cp "$BIN/$b" "$OUT/bin/$b"
done
if ((PRELOAD > 0)); then # memproxy-bench writes the preloaded memories
    [[ -x $BIN/memproxy-bench ]] || die "$BIN/memproxy-bench is missing (build it, or run with BENCH_BUILD=1)"
    cp "$BIN/memproxy-bench" "$OUT/bin/memproxy-bench"
fi
if ((HAVE_FLOOR)); then
    cp "$FLOOR_BIN" "$OUT/bin/floor-proxy"
    FLOOR_BIN=$OUT/bin/floor-proxy
fi
if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    MP_BUILD="built from $(git -C "$ROOT" log -1 --format=%h -- src Cargo.toml Cargo.lock crates 2>/dev/null || echo '?')"
    [[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock crates 2>/dev/null) ]] ||
        MP_BUILD+=" + local changes"
else
    MP_BUILD="prebuilt $BIN/memproxy of $(date -r "$BIN/memproxy" '+%Y-%m-%d %H:%M')"
fi
BIN=$OUT/bin
fi

# --- machine helpers ---------------------------------------------------------------------

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(nproc)
if [[ $PIN == 1 ]] && { ((NCPU < 2)) || ! command -v taskset >/dev/null; }; then
    say "no CPU pinning (needs 2 CPUs and taskset)"
    PIN=0
fi

# Busy and total clock ticks of the whole machine (busy: user, nice, system, steal; the
# interrupt time of loopback networking is left out, it belongs to the measured traffic).
machine_ticks() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print $2+$3+$4+$9, t; exit}' /proc/stat; }
# user+system clock ticks of one process (0 when gone).
proc_ticks() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo 0
        return
    }
    s=${s##*) }
    awk '{print $12 + $13}' <<<"$s"
}
# kB of a /proc/PID/status field (VmRSS, VmHWM).
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# Percent of the machine's CPU used over one second.
busy_pct() {
    local b0 t0 b1 t1
    read -r b0 t0 < <(machine_ticks)
    sleep 1
    read -r b1 t1 < <(machine_ticks)
    awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN{printf "%.0f", (t > 0 ? 100*b/t : 0)}'
}

wait_quiet() {
    local pct deadline=$((SECONDS + WAIT_IDLE))
    pct=$(busy_pct)
    while ((pct > NOISE_PCT && SECONDS < deadline)); do
        pct=$(busy_pct)
    done
    if ((pct > NOISE_PCT)); then
        say "warning: the machine is ${pct}% busy before measuring; figures will be noisy"
    fi
}

# The value of KEY in a loadgen result line (or file).
kv() { # file key
    awk -v k="$2" '{for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) { print a[2]; exit } }}' "$1"
}
kv_line() { kv /dev/stdin "$2" <<<"$1"; } # line key

# --- processes ---------------------------------------------------------------------------

FREE_PORT=
TAKEN=" "
pick_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $TAKEN == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            TAKEN+="$p "
            FREE_PORT=$p
            return 0
        fi
    done
    die "no free port found"
}

# Polls until the process listens on its port; fails when it exits first.
wait_listening() { # name pid port
    for _ in $(seq 1 400); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "$1 did not listen on port $3 within 20 s (log: $OUT/$1.log)"
}

# Starts `launch_NAME PORT` on a free port (another one if the port was taken meanwhile);
# sets STARTED_PID and STARTED_PORT.
start() { # name
    local attempt pid
    for attempt in 1 2 3; do
        pick_port
        "launch_$1" "$FREE_PORT" >"$OUT/$1.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        if wait_listening "$1" "$pid" "$FREE_PORT"; then
            STARTED_PID=$pid
            STARTED_PORT=$FREE_PORT
            return 0
        fi
        say "$1 exited at start (attempt $attempt); log:"
        tail -5 "$OUT/$1.log" >&2 || true
    done
    die "could not start $1"
}

# Prefix for every process the benchmark runs (the nice value, when asked for).
RUN=()
if [[ -n $NICE ]]; then
    nice -n "$NICE" true 2>/dev/null || die "cannot run at nice $NICE (negative values need root)"
    RUN=(nice -n "$NICE")
    # With autogroup scheduling, nice values count only inside a session's group: give the
    # group the same nice value while the benchmark runs (restored on exit).
    if [[ -w /proc/self/autogroup ]]; then
        AUTOGROUP_NICE=$(awk '{print $NF}' /proc/self/autogroup)
        echo "$NICE" >/proc/self/autogroup 2>/dev/null || AUTOGROUP_NICE=
    fi
fi
launch_mock() { exec "${RUN[@]}" "$BIN/mock-upstream" "$1"; }
launch_floor() { LISTEN_PORT=$1 UPSTREAM=http://127.0.0.1:$MOCK_PORT exec "${RUN[@]}" "$FLOOR_BIN"; }
# memproxy runs in the results dir, with its data (memory store, if the build has one) there.
launch_memproxy() {
    cd "$OUT" || exit 1
    LOG_LEVEL=$MP_LOG_LEVEL MEMPROXY_DATA_DIR=$OUT/data exec "${RUN[@]}" "$BIN/memproxy" serve \
        --config "$MP_CONFIG" --host 127.0.0.1 --port "$1"
}

# --- requests ----------------------------------------------------------------------------

if [[ -z ${BENCH_REPORT:-} ]]; then

cat >"$OUT/chat.json" <<'EOF'
{"model": "bench", "messages": [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}, {"role": "user", "content": "What is the capital of France? Please answer in one sentence."}], "temperature": 0.2, "max_tokens": 64}
EOF
sed 's/"max_tokens": 64}$/"max_tokens": 64, "stream": true}/' "$OUT/chat.json" >"$OUT/chat-stream.json"
grep -q '"stream": true' "$OUT/chat-stream.json" || die "could not make the streaming body"

# loadgen against URL with the given options; the result line goes to FILE, plus the CPU
# ticks that the proxy under test, the mock, the load generator and the rest of the machine
# used meanwhile. A measurement during which other processes used more than NOISE_PCT of the
# machine is taken again after waiting for a quiet machine (up to BENCH_RETRIES times).
measure() { # file url proxy_pid loadgen-options...
    local file=$1 url=$2 ppid=$3 attempt
    shift 3
    for attempt in $(seq 0 "$RETRIES"); do
        measure_once "$file" "$url" "$ppid" "$@"
        local noise
        noise=$(noise_pct "$file")
        ((noise > NOISE_PCT && attempt < RETRIES && WAIT_IDLE > 0)) || break
        say "     other processes used ${noise}% of the machine meanwhile: waiting, then measuring again"
        wait_quiet
    done
}

measure_once() { # file url proxy_pid loadgen-options...
    local file=$1 url=$2 ppid=$3 b0 t0 b1 t1 m0 m1 p0=0 p1=0 line lg others
    shift 3
    read -r b0 t0 < <(machine_ticks)
    m0=$(proc_ticks "$MOCK_PID")
    [[ $ppid == - ]] || p0=$(proc_ticks "$ppid")
    line=$("${LG_PREFIX[@]}" "$BIN/loadgen" --url "$url" --format kv --threads "$LG_THREADS" "$@" 2>"$file.err") ||
        die "loadgen failed: $(cat "$file.err")"
    read -r b1 t1 < <(machine_ticks)
    m1=$(proc_ticks "$MOCK_PID")
    [[ $ppid == - ]] || p1=$(proc_ticks "$ppid")
    lg=$(kv_line "$line" cpu_ticks)
    # Ticks of the machine (all cores) not used by the load generator, mock or proxy.
    others=$((b1 - b0 - lg - (m1 - m0) - (p1 - p0)))
    ((others > 0)) || others=0
    printf '%s proxy_ticks=%s mock_ticks=%s loadgen_ticks=%s others_ticks=%s wall_ticks=%s\n' \
        "$line" $((p1 - p0)) $((m1 - m0)) "$lg" "$others" $(((t1 - t0) / NCPU)) >"$file"
}

# Percent of the machine that other processes used during a measurement.
noise_pct() { # file
    awk -v n="$NCPU" '{for (i = 1; i <= NF; i++) { split($i, a, "="); f[a[1]] = a[2] }}
        END {printf "%d", 100 * f["others_ticks"] / (f["wall_ticks"] * n + 1)}' "$1"
}

# oha against URL for DURATION seconds (after a WARMUP-second run that is not counted) with
# CONNS connections; writes the figures as key=value like loadgen's (latencies in µs).
oha_measure() { # file url conns
    local file=$1 url=$2 conns=$3
    local args=(--no-tui --output-format json -m POST -H 'content-type: application/json'
        -D "$OUT/chat.json" -c "$conns")
    if ((WARMUP > 0)); then
        "${LG_PREFIX[@]}" "$OHA" "${args[@]}" -z "${WARMUP}s" "$url" >/dev/null 2>&1 || true
    fi
    "${LG_PREFIX[@]}" "$OHA" "${args[@]}" -z "${DURATION}s" "$url" >"$file.json" 2>"$file.err" ||
        die "oha failed: $(head -c 300 "$file.err")"
    python3 - "$file.json" >"$file" <<'PY' || die "cannot read oha's output $1.json"
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = sum(n for c, n in codes.items() if c == "200")
# Requests still in flight when the time is up are cut off by oha, not failed.
cut = lambda e: "deadline" in e
errors = sum(codes.values()) - ok + sum(n for e, n in r.get("errorDistribution", {}).items() if not cut(e))
us = lambda v: f"{(v or 0) * 1e6:.1f}"
print(f"rps={s['requestsPerSec']:.1f} lat_p50_us={us(p.get('p50'))} lat_p99_us={us(p.get('p99'))} "
      f"requests={ok} errors={errors}")
PY
}

# A few requests to check that a target answers properly; prints the first error if not.
smoke() { # url body expect...
    local url=$1 body=$2 line
    shift 2
    local args=()
    for e in "$@"; do args+=(--expect "$e"); done
    line=$("$BIN/loadgen" --url "$url" --body "$body" --requests 3 --warmup 0 --timeout 5 \
        --format kv "${args[@]}" 2>&1 >/dev/null) || true
    if [[ -n $line ]]; then
        printf '%s\n' "$line"
        return 1
    fi
}

# --- start -------------------------------------------------------------------------------

say "== starting mock upstream, floor-proxy and memproxy (logs and raw results in $OUT)"
start mock
MOCK_PID=$STARTED_PID
MOCK_PORT=$STARTED_PORT

FLOOR_PID=-
if ((HAVE_FLOOR)); then
    start floor
    FLOOR_PID=$STARTED_PID
    FLOOR_PORT=$STARTED_PORT
fi

# memproxy's config: the mock as an OpenAI-compatible provider, the translated cases, and
# memory off. A build that rejects a part gets the config without it (said in the report).
TRANSLATED_NAMES=()
TRANSLATED_LINES=
declare -A TRANSLATED_API
while read -r name model base api; do
    [[ -n ${name:-} && $name != \#* ]] || continue
    [[ -n ${model:-} ]] || model=${name#bench-}/bench
    [[ -n ${base:-} ]] || base="http://{mock}"
    TRANSLATED_NAMES+=("$name")
    TRANSLATED_API[$name]=${api:-chat}
    TRANSLATED_LINES+=$(printf '  - model_name: %s\n    litellm_params:\n      model: %s\n      api_base: %s\n      api_key: bench' \
        "$name" "$model" "${base//\{mock\}/127.0.0.1:$MOCK_PORT}")$'\n'
    if [[ ${api:-chat} == responses ]]; then
        TRANSLATED_LINES+=$'    model_info:\n      supported_endpoints: ["/v1/chat/completions"]\n'
    fi
done <<<"$TRANSLATED"
write_config() { # with_translated with_memory_section
    if [[ $STORAGE == postgres ]]; then
        printf 'general_settings:\n  database_url: %s/%s\n  redis_url: %s\n' "$PG_SERVER" "$PG_DB" "$REDIS_URL_BENCH"
        printf 'rate_limits:\n  enabled: true\n  requests_per_minute: 1000000000\n  redis_prefix: "%s"\n' "$REDIS_PREFIX"
        if [[ $2 == 1 && $MEMORY != off ]]; then printf 'memory:\n  backend: postgres\n'; fi
    fi
    if [[ $2 == 1 && $MEMORY == off ]]; then
        printf 'memory:\n  enabled: false\n'
    fi
    if [[ $2 == 1 && $MEMORY == retrieval ]]; then
        printf 'context_retrieval:\n  enabled: true\n  max_results: 5\n'
    fi
    printf 'model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n'
    printf '      api_base: http://127.0.0.1:%s/v1\n      api_key: bench\n' "$MOCK_PORT"
    if [[ $1 == 1 ]]; then printf '%s' "$TRANSLATED_LINES"; fi
}
if [[ $STORAGE == postgres && -z ${BENCH_REPORT:-} ]]; then
    say "== storage: PostgreSQL database $PG_DB on $PG_SERVER, Redis $REDIS_URL_BENCH (prefix $REDIS_PREFIX)"
    psql -q "$PG_SERVER/postgres" -c "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create database $PG_DB on $PG_SERVER"
    redis-cli -u "$REDIS_URL_BENCH" ping 2>/dev/null | grep -q PONG || die "Redis at $REDIS_URL_BENCH does not answer"
fi
MP_CONFIG=
for variant in "1 1" "0 1" "1 0" "0 0"; do
    read -r with_translated with_memory <<<"$variant"
    write_config "$with_translated" "$with_memory" >"$OUT/memproxy.yaml"
    if "$BIN/memproxy" check-config "$OUT/memproxy.yaml" >"$OUT/check-config.log" 2>&1; then
        MP_CONFIG=$OUT/memproxy.yaml
        break
    fi
    cp "$OUT/check-config.log" "$OUT/check-config-$with_translated$with_memory.log"
done
[[ -n $MP_CONFIG ]] || die "memproxy rejects even the plain config: $(tail -3 "$OUT/check-config.log")"
if [[ $with_translated == 0 && -n $TRANSLATED_LINES ]]; then
    say "memproxy rejects the translated models' config (see $OUT/check-config-11.log); measuring without them"
    TRANSLATED_REJECTED=1
fi
if [[ $with_memory == 0 && $MEMORY == off ]]; then
    say "memproxy rejects 'memory: {enabled: false}'; measuring with the build's memory defaults"
    MEMORY="default (the build rejects memory: {enabled: false})"
fi
if [[ $with_memory == 0 && $MEMORY == retrieval ]]; then
    die "memproxy rejects the context_retrieval section: $(tail -3 "$OUT/check-config-10.log" 2>/dev/null)"
fi

# Preloaded memories: a data dir of PRELOAD synthetic memories of MEM_USER, written once by
# `memproxy-bench bench-memory` into the cache and copied into memproxy's data dir for each run.
MEM_NOTE=
if ((PRELOAD > 0)); then
    [[ $MEMORY == off* ]] && die "BENCH_MEMORY_PRELOAD needs memory on (BENCH_MEMORY=default or retrieval)"
    say "== preloading $PRELOAD memories, layout $MEM_LAYOUT, user $MEM_USER (cache $MEM_CACHE)"
    # With the built-in model in place memproxy's default config is hybrid: the preloaded
    # memories get their vectors now, or memproxy would spend the run re-embedding them.
    model_dir=${MEMPROXY_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memproxy/models/minilm-l6-static-256}
    embed_args=()
    [[ -f $model_dir/SHA256SUMS ]] && embed_args=(--builtin-model "$model_dir")
    "$BIN/memproxy-bench" bench-memory --sizes "$PRELOAD" --layouts "$MEM_LAYOUT" --user "$MEM_USER" --searches 0 \
        --keep "$MEM_CACHE" "${embed_args[@]}" >"$OUT/preload.log" 2>&1 || die "preloading failed: $(tail -3 "$OUT/preload.log")"
    mkdir -p "$OUT/data"
    if [[ $MEM_LAYOUT == one ]]; then
        cp "$MEM_CACHE/$PRELOAD-one-$MEM_USER"/memproxy.db* "$OUT/data/"
    else
        cp "$MEM_CACHE/$PRELOAD-spread-1000-$MEM_USER"/memproxy.db* "$OUT/data/"
    fi
    if [[ $STORAGE == postgres ]]; then
        say "== copying the preloaded memories into PostgreSQL (memproxy storage migrate)"
        "$BIN/memproxy" storage migrate --from "sqlite:$OUT/data" --to "$PG_SERVER/$PG_DB" >"$OUT/migrate.log" 2>&1 ||
            die "storage migrate failed: $(tail -3 "$OUT/migrate.log")"
    fi
    MEM_NOTE=$(grep -E '^ +[0-9]+ +(one|spread) ' "$OUT/preload.log" | awk '{print "preloaded " $1 " memories over " $3 " user(s) (" ($4 == "reused" ? "cached" : $4 " writes/s") ", " $5 " MiB)"}')
fi

start memproxy
MP_PID=$STARTED_PID
MP_PORT=$STARTED_PORT
RSS_START=$(proc_kb "$MP_PID" VmRSS)

PATHQ=/v1/chat/completions
declare -A URL PID_OF
NAMES=(direct)
URL[direct]=http://127.0.0.1:$MOCK_PORT$PATHQ
PID_OF[direct]=-
if ((HAVE_FLOOR)); then
    NAMES+=(floor)
    URL[floor]=http://127.0.0.1:$FLOOR_PORT$PATHQ
    PID_OF[floor]=$FLOOR_PID
fi
NAMES+=(memproxy)
URL[memproxy]=http://127.0.0.1:$MP_PORT$PATHQ
PID_OF[memproxy]=$MP_PID

for t in "${NAMES[@]}"; do
    err=$(smoke "${URL[$t]}" "$OUT/chat.json" "fixed answer") ||
        die "$t does not answer the chat request: $err"
    err=$(smoke "${URL[$t]}" "$OUT/chat-stream.json" "fixed " "[DONE]") ||
        die "$t does not stream the chat answer: $err"
done
RSS_WARM=$(proc_kb "$MP_PID" VmRSS)

# With memory on: the bench requests' user, and how many memories it has (the newest
# memory's sequence number, the memory API's cursor); capture adds one per request.
mem_count() {
    curl -s "http://127.0.0.1:$MP_PORT/v1/memories?user_id=$MEM_USER&limit=1" |
        sed -n 's/.*"next_cursor":"\{0,1\}\([0-9]*\).*/\1/p'
}
mem_dropped() {
    curl -s "http://127.0.0.1:$MP_PORT/health/readiness" | sed -n 's/.*"dropped_writes":\([0-9]*\).*/\1/p'
}
MEM_START=
MEM_END=
MEM_DROPPED=
if [[ $MEMORY == default || $MEMORY == retrieval ]] && command -v curl >/dev/null; then
    who=$(curl -s -D - -o /dev/null -H 'content-type: application/json' --data-binary "@$OUT/chat.json" \
        "${URL[memproxy]}" | tr -d '\r' | sed -n 's/^x-memproxy-user-id: //Ip')
    [[ $who == "$MEM_USER" ]] || die "memproxy gives the bench requests user id '$who', not $MEM_USER"
    MEM_START=$(mem_count)
    if [[ $MEMORY == retrieval ]]; then
        hits=$(curl -s "http://127.0.0.1:$MP_PORT/v1/memories/search?user_id=$MEM_USER&limit=5&q=What+is+the+capital+of+France%3F+Please+answer+in+one+sentence." |
            grep -o '"id":' | wc -l)
        say "   memory: user $MEM_USER has ${MEM_START:-?} memories; the bench request's search finds $hits"
    fi
fi

# Translated cases that answer a proper OpenAI stream.
TRANSLATED_OK=()
declare -A TRANSLATED_WHY
declare -A TRANSLATED_URL
for name in "${TRANSLATED_NAMES[@]}"; do
    if [[ ${TRANSLATED_API[$name]} == responses ]]; then
        TRANSLATED_URL[$name]=http://127.0.0.1:$MP_PORT/v1/responses
        printf '{"model": "%s", "input": "Say something short.", "max_output_tokens": 64, "stream": true}' \
            "$name" >"$OUT/stream-$name.json"
        expect=("response.completed" "output_text.delta")
    else
        TRANSLATED_URL[$name]=${URL[memproxy]}
        sed "s/\"model\": \"bench\"/\"model\": \"$name\"/" "$OUT/chat-stream.json" >"$OUT/stream-$name.json"
        expect=("[DONE]" '"content"')
    fi
    if [[ -n ${TRANSLATED_REJECTED:-} ]]; then
        TRANSLATED_WHY[$name]="config rejected (see $OUT/check-config-11.log)"
    elif err=$(smoke "${TRANSLATED_URL[$name]}" "$OUT/stream-$name.json" "${expect[@]}"); then
        TRANSLATED_OK+=("$name")
    else
        TRANSLATED_WHY[$name]=$(sed -n 's/.*first error: //p' <<<"$err" | head -c 160)
    fi
done

# --- measure -----------------------------------------------------------------------------

# Where the processes run. A wake-up across CPUs costs tens of µs in a VM, so a 1-connection
# ping-pong measures mostly where the kernel happened to place the processes. Pinned: the
# load generator has CPU 0, the mock and the proxies share the last CPU, so direct and
# proxied requests both cross CPUs exactly once each way. Throughput runs unpinned.
LG_PREFIX=("${RUN[@]}")
placement() { # pinned|free
    local cpus=0-$((NCPU - 1)) pid
    LG_PREFIX=("${RUN[@]}")
    if [[ $1 == pinned ]]; then
        cpus=$((NCPU - 1))
        LG_PREFIX+=(taskset -c 0)
    fi
    for pid in "$MOCK_PID" "$FLOOR_PID" "$MP_PID"; do
        [[ $pid == - ]] || taskset -a -p -c "$cpus" "$pid" >/dev/null
    done
}

COMMON=(--duration "$DURATION" --warmup "$WARMUP")
say "== measuring: ${#NAMES[@]} targets x 3 scenarios x $REPS repetition(s), ${DURATION}s each + ${WARMUP}s warm-up"
for rep in $(seq 1 "$REPS"); do
    if ((WAIT_IDLE > 0)); then wait_quiet; fi
    if [[ $PIN == 1 ]]; then placement pinned; fi
    for t in "${NAMES[@]}"; do
        say "   rep $rep: $t, 1 connection"
        measure "$OUT/r$rep-lat1-$t" "${URL[$t]}" "${PID_OF[$t]}" "${COMMON[@]}" \
            --connections 1 --body "$OUT/chat.json" --label "$t"
        measure "$OUT/r$rep-stream1-$t" "${URL[$t]}" "${PID_OF[$t]}" "${COMMON[@]}" \
            --connections 1 --body "$OUT/chat-stream.json" --label "$t"
        if ((HAVE_OHA)); then
            say "   rep $rep: $t, 1 connection (oha)"
            oha_measure "$OUT/r$rep-ohalat1-$t" "${URL[$t]}" 1
        fi
    done
    for name in "${TRANSLATED_OK[@]}"; do
        say "   rep $rep: memproxy, translated stream $name"
        measure "$OUT/r$rep-translated-$name" "${TRANSLATED_URL[$name]}" "$MP_PID" "${COMMON[@]}" \
            --connections 1 --body "$OUT/stream-$name.json" --label "$name"
    done
    if [[ $PIN == 1 ]]; then placement free; fi
    for t in "${NAMES[@]}"; do
        say "   rep $rep: $t, $CONNS connections"
        measure "$OUT/r$rep-rps-$t" "${URL[$t]}" "${PID_OF[$t]}" "${COMMON[@]}" \
            --connections "$CONNS" --body "$OUT/chat.json" --label "$t"
        if ((HAVE_OHA)); then
            say "   rep $rep: $t, $CONNS connections (oha)"
            oha_measure "$OUT/r$rep-oharps-$t" "${URL[$t]}" "$CONNS"
        fi
    done
    if ((RATE > 0)); then
        for t in "${NAMES[@]}"; do
            say "   rep $rep: $t, $CONNS connections at $RATE requests/s (open loop)"
            measure "$OUT/r$rep-paced-$t" "${URL[$t]}" "${PID_OF[$t]}" "${COMMON[@]}" \
                --connections "$CONNS" --rate "$RATE" --body "$OUT/chat.json" --label "$t"
        done
    fi
done
if [[ -n $MEM_START ]]; then
    MEM_END=$(mem_count)
    MEM_DROPPED=$(mem_dropped)
fi
RSS_END=$(proc_kb "$MP_PID" VmRSS)
RSS_PEAK=$(proc_kb "$MP_PID" VmHWM)
FLOOR_RSS_PEAK=
if ((HAVE_FLOOR)); then FLOOR_RSS_PEAK=$(proc_kb "$FLOOR_PID" VmHWM); fi
MEASURED=$(date '+%Y-%m-%d %H:%M')
# What the report needs, so that BENCH_REPORT=DIR can print it again.
declare -p NAMES HAVE_FLOOR RSS_START RSS_WARM RSS_END RSS_PEAK FLOOR_RSS_PEAK TRANSLATED_NAMES \
    TRANSLATED_OK TRANSLATED_WHY MP_LOG_LEVEL DURATION WARMUP REPS CONNS LG_THREADS NICE PIN \
    MP_BUILD MEASURED MEMORY RATE MEM_NOTE MEM_START MEM_END MEM_DROPPED HAVE_OHA >"$OUT/state.sh"
else
    # shellcheck source=/dev/null
    source "$OUT/state.sh"
fi

# --- report ------------------------------------------------------------------------------

# Median over the repetitions of one key of one scenario and target.
med() { # scenario target key
    local rep
    for rep in $(seq 1 "$REPS"); do kv "$OUT/r$rep-$1-$2" "$3"; done |
        sort -g | awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# Median over the repetitions of (target - direct) for one key: each repetition's pair was
# measured close in time, so a disturbance hits both sides of most pairs.
med_diff() { # scenario target key
    local rep a b
    for rep in $(seq 1 "$REPS"); do
        a=$(kv "$OUT/r$rep-$1-$2" "$3")
        b=$(kv "$OUT/r$rep-$1-direct" "$3")
        calc %.3f "$a - $b"
        echo
    done | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# Median over the repetitions of target_a / target_b for one key.
med_ratio() { # scenario target_a target_b key
    local rep a b
    for rep in $(seq 1 "$REPS"); do
        a=$(kv "$OUT/r$rep-$1-$2" "$4")
        b=$(kv "$OUT/r$rep-$1-$3" "$4")
        calc %.4f "$a / $b"
        echo
    done | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# Sum over the repetitions of one key, for error counts.
total() { # scenario target key
    local rep
    for rep in $(seq 1 "$REPS"); do kv "$OUT/r$rep-$1-$2" "$3"; done | awk '{s += $1} END {print s + 0}'
}
calc() { awk "BEGIN {printf \"$1\", ($2)}"; }

has_floor() { ((HAVE_FLOOR)); }
declare -A M
SCENARIOS=(lat1 rps stream1)
if ((${RATE:-0} > 0)); then SCENARIOS+=(paced); fi
if ((${HAVE_OHA:-0})); then SCENARIOS+=(ohalat1 oharps); fi
for s in "${SCENARIOS[@]}"; do
    for t in "${NAMES[@]}"; do
        for k in lat_p50_us lat_p99_us lat_mean_us ttfb_p50_us ttfb_p99_us rps requests warm_requests \
            proxy_ticks mock_ticks others_ticks wall_ticks loadgen_ticks behind; do
            M[$s.$t.$k]=$(med "$s" "$t" "$k")
        done
        M[$s.$t.errors]=$(total "$s" "$t" errors)
    done
done
v() { printf '%s' "${M[$1]:-}"; }

# One table row: label, then the value for each target, then proxy - direct for each proxy.
row() { # label scenario key [fmt]
    local fmt=${4:-%.1f} line t
    line=$(printf '%-34s' "$1")
    for t in direct floor memproxy; do
        if [[ -n ${M[$2.$t.$3]:-} ]]; then
            line+=$(printf "%12s" "$(calc "$fmt" "${M[$2.$t.$3]}")")
        else
            line+=$(printf '%12s' -)
        fi
    done
    for t in floor memproxy; do
        if [[ -n ${M[$2.$t.$3]:-} && $3 != rps ]]; then
            line+=$(printf '%+16.1f' "$(med_diff "$2" "$t" "$3")")
        else
            line+=$(printf '%16s' "")
        fi
    done
    printf '%s\n' "$line"
}

# CPU time per request (µs) of one process over one measurement.
cpu_per_req() { # scenario target which
    local ticks=${M[$1.$2.${3}_ticks]:-0} n
    n=$(calc %d "${M[$1.$2.requests]:-0} + ${M[$1.$2.warm_requests]:-0}")
    if ((n > 0)); then
        calc %.1f "$ticks * 1000000 / $CLK_TCK / $n"
    else
        printf -
    fi
}

{
    echo
    echo "memproxy benchmark, $MEASURED, $NCPU cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)),"
    echo "memproxy ${MP_BUILD:-?}, LOG_LEVEL=$MP_LOG_LEVEL, memory ${MEMORY:-default}${MEM_NOTE:+ (${MEM_NOTE})}; ${DURATION}s + ${WARMUP}s warm-up per measurement, median of $REPS;"
    echo "loadgen $LG_THREADS thread(s)${NICE:+; all processes at nice $NICE}; 1-connection runs $([[ $PIN == 1 ]] && echo "pinned (loadgen CPU 0, servers CPU $((NCPU - 1)))" || echo unpinned), $CONNS-connection runs unpinned"
    echo
    printf '%-34s%12s%12s%12s%16s%16s\n' "" direct floor memproxy "floor-direct" "memproxy-direct"
    echo "non-streaming, 1 connection"
    row "  latency p50 (µs)" lat1 lat_p50_us
    row "  latency p99 (µs)" lat1 lat_p99_us
    row "  requests/s" lat1 rps %.0f
    echo "non-streaming, $CONNS connections"
    row "  requests/s" rps rps %.0f
    row "  latency p50 (µs)" rps lat_p50_us
    row "  latency p99 (µs)" rps lat_p99_us
    echo "streaming, 1 connection"
    row "  TTFB p50 (µs)" stream1 ttfb_p50_us
    row "  TTFB p99 (µs)" stream1 ttfb_p99_us
    row "  complete stream p50 (µs)" stream1 lat_p50_us
    if ((${HAVE_OHA:-0})); then
        echo "oha, non-streaming, 1 connection"
        row "  latency p50 (µs)" ohalat1 lat_p50_us
        row "  latency p99 (µs)" ohalat1 lat_p99_us
        echo "oha, non-streaming, $CONNS connections"
        row "  requests/s" oharps rps %.0f
        row "  latency p99 (µs)" oharps lat_p99_us
    fi
    if ((${RATE:-0} > 0)); then
        echo "$CONNS connections, open loop at $RATE requests/s"
        row "  requests/s" paced rps %.0f
        row "  latency p50 (µs)" paced lat_p50_us
        row "  latency p99 (µs)" paced lat_p99_us
    fi
    echo
    share_direct=$(calc %.2f "$(med_ratio rps memproxy direct rps)")
    line="memproxy throughput at $CONNS connections: ${share_direct} of direct"
    if has_floor; then
        share_floor=$(calc %.2f "$(med_ratio rps memproxy floor rps)")
        line+=", ${share_floor} of floor-proxy (floor: $(calc %.2f "$(med_ratio rps floor direct rps)") of direct)"
    fi
    echo "$line"
    if ((${HAVE_OHA:-0})); then
        line="memproxy throughput at $CONNS connections with oha: $(calc %.2f "$(med_ratio oharps memproxy direct rps)") of direct"
        if has_floor; then
            line+=", $(calc %.2f "$(med_ratio oharps memproxy floor rps)") of floor-proxy"
        fi
        echo "$line"
    fi
    line="proxy CPU per request at $CONNS connections: memproxy $(cpu_per_req rps memproxy proxy) µs"
    has_floor && line+=", floor-proxy $(cpu_per_req rps floor proxy) µs"
    line+="; mock $(cpu_per_req rps direct mock) µs, loadgen $(cpu_per_req rps direct loadgen) µs (direct run)"
    echo "$line"
    line="memproxy RSS: $(calc %.1f "$RSS_START / 1024") MiB at start, $(calc %.1f "$RSS_WARM / 1024") MiB after the first requests,"
    line+=" $(calc %.1f "$RSS_END / 1024") MiB after load, peak $(calc %.1f "$RSS_PEAK / 1024") MiB"
    [[ -n $FLOOR_RSS_PEAK ]] && line+=" (floor-proxy peak $(calc %.1f "$FLOOR_RSS_PEAK / 1024") MiB)"
    echo "$line"

    # Translated streams, compared with the direct OpenAI stream and memproxy's passthrough.
    for name in "${TRANSLATED_NAMES[@]}"; do
        if [[ " ${TRANSLATED_OK[*]} " == *" $name "* ]]; then
            p50=$(med translated "$name" ttfb_p50_us)
            p99=$(med translated "$name" ttfb_p99_us)
            errs=$(total translated "$name" errors)
            echo "translated stream ($name): TTFB p50 $(calc %.1f "$p50") µs, p99 $(calc %.1f "$p99") µs;" \
                "added vs direct p50 $(calc %+.1f "$p50 - ${M[stream1.direct.ttfb_p50_us]}")," \
                "p99 $(calc %+.1f "$p99 - ${M[stream1.direct.ttfb_p99_us]}") µs;" \
                "vs memproxy passthrough p50 $(calc %+.1f "$p50 - ${M[stream1.memproxy.ttfb_p50_us]}") µs" \
                "$( ((errs == 0)) || echo "($errs errors)")"
        else
            echo "translated stream ($name): not available (${TRANSLATED_WHY[$name]:-no answer})"
        fi
    done

    if [[ -n ${MEM_START:-} ]]; then
        echo "memory: user $MEM_USER had ${MEM_START} memories at start, ${MEM_END:-?} after the load (capture adds one per request); ${MEM_DROPPED:-?} captured writes dropped (queue full)"
    fi
    if ((${RATE:-0} > 0)); then
        for t in "${NAMES[@]}"; do
            b=${M[paced.$t.behind]:-0}
            n=${M[paced.$t.requests]:-0}
            if [[ -n $n && $(calc %d "$n > 0") == 1 ]] && (($(calc %d "100 * $b > $n"))); then
                echo "warning: $t fell behind the $RATE requests/s schedule on $(calc %.0f "100 * $b / $n")% of the paced requests (saturated: latency includes queueing)"
            fi
        done
    fi

    # Errors and a busy machine make figures unreliable: say so.
    for s in "${SCENARIOS[@]}"; do
        for t in "${NAMES[@]}"; do
            if ((${M[$s.$t.errors]} > 0)); then
                echo "warning: $t had ${M[$s.$t.errors]} failed requests in $s (see $OUT/r*-$s-$t*)"
            fi
            [[ -n ${M[$s.$t.wall_ticks]} ]] || continue # oha runs: no CPU accounting
            busy=$(calc %.0f "100 * ${M[$s.$t.others_ticks]} / (${M[$s.$t.wall_ticks]} * $NCPU + 1)")
            if ((busy > NOISE_PCT)); then
                echo "warning: other processes used ${busy}% of the machine during $s/$t; figures are noisy"
            fi
        done
    done

    echo
    echo "targets"
    added=$(med_diff lat1 memproxy lat_p99_us)
    verdict() { if (($(calc %d "$1"))); then echo PASS; else echo FAIL; fi; }
    r=$(verdict "$added <= $MAX_ADDED_P99_US")
    echo "  $r  added latency p99 at 1 connection: $(calc %.3f "$added / 1000") ms (target <= $(calc %.1f "$MAX_ADDED_P99_US / 1000") ms)"
    if has_floor; then
        r=$(verdict "$share_floor >= $MIN_RPS_SHARE_OF_FLOOR")
        echo "  $r  throughput at $CONNS connections: ${share_floor} of floor-proxy (target >= $MIN_RPS_SHARE_OF_FLOOR)"
    else
        echo "  SKIP  throughput as a share of floor-proxy: floor-proxy not available"
    fi
    if [[ $MEMORY == retrieval ]]; then
        added=$(med_diff rps memproxy lat_p99_us)
        r=$(verdict "$added <= $MAX_ADDED_P99_MEMORY_US")
        echo "  $r  added latency p99 at $CONNS connections, closed loop (saturated), retrieval + capture on: $(calc %.3f "$added / 1000") ms (target <= $(calc %.1f "$MAX_ADDED_P99_MEMORY_US / 1000") ms)"
        if ((${RATE:-0} > 0)); then
            added=$(med_diff paced memproxy lat_p99_us)
            r=$(verdict "$added <= $MAX_ADDED_P99_MEMORY_US")
            echo "  $r  added latency p99 at $CONNS connections, $RATE requests/s, retrieval + capture on: $(calc %.3f "$added / 1000") ms (target <= $(calc %.1f "$MAX_ADDED_P99_MEMORY_US / 1000") ms)"
        fi
    fi
    r=$(verdict "$RSS_PEAK <= $MAX_RSS_KB")
    echo "  $r  memproxy RSS under load (peak): $(calc %.1f "$RSS_PEAK / 1024") MiB (target <= $((MAX_RSS_KB / 1024)) MiB)"
} | tee "$OUT/summary.txt"

if [[ ${BENCH_STRICT:-0} == 1 ]] && grep -q '^  FAIL' "$OUT/summary.txt"; then
    exit 1
fi
