#!/usr/bin/env bash
# LoCoMo retrieval, lexical and hybrid side by side: starts a local embeddings server
# (all-MiniLM-L6-v2, bench/embed-server, in its own venv), runs `memproxy-bench eval-locomo` once
# with the default (lexical) config and once with memory.embedding_model pointing at that
# server, and prints recall_any / recall_all @1/5/10 and search latency of both.
#
#   bash bench/locomo-hybrid.sh [LOCOMO_FILE]     (default ../shared/data/locomo-dev.json)
#
# Environment (all optional):
#   BENCH_BUILD=1         0: use the memproxy binary already in the target dir
#   CARGO_TARGET_DIR      cargo's target dir (default ./target)
#   EMBED_THREADS=1       torch threads of the embeddings server
#   PYTHON=python3        the Python that creates the venv
#   HYBRID_OUT=DIR        where the config, logs and both reports go (default: a temp dir,
#                         removed at the end)
#
# The LoCoMo file is read in place and never copied (CC BY-NC 4.0, evaluation only). The
# first run creates bench/embed-server/.venv (~6 GB: torch from PyPI brings CUDA wheels).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:-$ROOT/../shared/data/locomo-dev.json}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/memproxy-bench
SERVER_DIR=$ROOT/bench/embed-server
VENV=$SERVER_DIR/.venv
PY=${PYTHON:-python3}

say() { printf '%s\n' "$*" >&2; }
die() {
    say "locomo-hybrid: $*"
    exit 1
}

[[ -f $DATA ]] || die "no LoCoMo file at $DATA (pass its path)"
DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")

if [[ -n ${HYBRID_OUT:-} ]]; then
    OUT=$HYBRID_OUT
    mkdir -p "$OUT"
    KEEP_OUT=1
else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/memproxy-locomo-hybrid.XXXXXX")
    KEEP_OUT=0
fi

SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if ((KEEP_OUT == 0)); then rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the embeddings server's venv ---------------------------------------------------------

STAMP=$VENV/.requirements.stamp
if [[ ! -x $VENV/bin/python ]]; then
    say "== creating $VENV"
    "$PY" -m venv "$VENV"
fi
if ! cmp -s "$SERVER_DIR/requirements.txt" "$STAMP" 2>/dev/null; then
    say "== installing the embeddings server's requirements (torch: a few GB, once)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$SERVER_DIR/requirements.txt"
    cp "$SERVER_DIR/requirements.txt" "$STAMP"
fi

# --- memproxy -----------------------------------------------------------------------------

if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    say "== building memproxy-bench (release, target dir $TARGET)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -p memproxy-bench)
fi
[[ -x $BIN ]] || die "$BIN is missing (build it, or run with BENCH_BUILD=1)"
# A copy: a target dir shared with other checkouts may get another build meanwhile.
cp "$BIN" "$OUT/memproxy-bench"
BIN=$OUT/memproxy-bench

# --- the embeddings server ----------------------------------------------------------------

say "== starting the embeddings server (all-MiniLM-L6-v2)"
EMBED_THREADS=${EMBED_THREADS:-1} "$VENV/bin/python" "$SERVER_DIR/server.py" --port 0 \
    --port-file "$OUT/embed.port" >"$OUT/embed-server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 600); do
    [[ -s $OUT/embed.port ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the embeddings server exited: $(tail -5 "$OUT/embed-server.log")"
    sleep 0.1
done
[[ -s $OUT/embed.port ]] || die "the embeddings server did not start within 60 s"
PORT=$(cat "$OUT/embed.port")

cat >"$OUT/hybrid.yaml" <<EOF
model_list:
  - model_name: minilm
    litellm_params:
      model: openai/all-MiniLM-L6-v2
      api_base: http://127.0.0.1:$PORT/v1
      api_key: unused
memory:
  embedding_model: minilm
EOF

# --- the two evaluations --------------------------------------------------------------------

say "== lexical: memproxy-bench eval-locomo --file $DATA"
"$BIN" eval-locomo --file "$DATA" >"$OUT/lexical.txt" 2>"$OUT/lexical.err" ||
    die "lexical evaluation failed: $(tail -5 "$OUT/lexical.err")"
say "== hybrid: memproxy-bench eval-locomo --file $DATA --config $OUT/hybrid.yaml"
"$BIN" eval-locomo --file "$DATA" --config "$OUT/hybrid.yaml" >"$OUT/hybrid.txt" 2>"$OUT/hybrid.err" ||
    die "hybrid evaluation failed: $(tail -5 "$OUT/hybrid.err")"
if grep -q "embedding failed\|searching lexically only\|embedding new memories" "$OUT/hybrid.err"; then
    die "the embedding model failed during the hybrid run (so it was partly lexical): $(grep -m3 embedding "$OUT/hybrid.err")"
fi

# One figure of a report: recall_any@K / recall_all@K / p50 / p99 / ingest.
figure() { # file what
    case $2 in
    any@* | all@*)
        awk -v key="recall_${2%@*}@${2#*@}" '{for (i = 1; i < NF; i++) if ($i == key) print $(i + 1)}' "$1"
        ;;
    p50) sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' "$1" ;;
    p99) sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' "$1" ;;
    ingest) sed -n 's/.*ingest \([0-9.]*\)s.*/\1/p' "$1" ;;
    esac
}

{
    echo
    echo "LoCoMo retrieval ($(basename "$DATA")): $(head -1 "$OUT/lexical.txt")"
    echo "memproxy $(git -C "$ROOT" log -1 --format=%h 2>/dev/null || echo '?'); hybrid = lexical fused with all-MiniLM-L6-v2 (bench/embed-server)"
    echo
    printf '%-22s %10s %10s\n' "" lexical hybrid
    for k in 1 5 10; do
        printf '%-22s %10s %10s\n' "recall_any@$k" "$(figure "$OUT/lexical.txt" "any@$k")" "$(figure "$OUT/hybrid.txt" "any@$k")"
    done
    for k in 1 5 10; do
        printf '%-22s %10s %10s\n' "recall_all@$k" "$(figure "$OUT/lexical.txt" "all@$k")" "$(figure "$OUT/hybrid.txt" "all@$k")"
    done
    printf '%-22s %10s %10s\n' "search p50 (ms)" "$(figure "$OUT/lexical.txt" p50)" "$(figure "$OUT/hybrid.txt" p50)"
    printf '%-22s %10s %10s\n' "search p99 (ms)" "$(figure "$OUT/lexical.txt" p99)" "$(figure "$OUT/hybrid.txt" p99)"
    printf '%-22s %10s %10s\n' "ingest (s)" "$(figure "$OUT/lexical.txt" ingest)" "$(figure "$OUT/hybrid.txt" ingest)"
    echo
    echo "hybrid search latency includes embedding the question (one call to the embeddings server);"
    echo "hybrid ingest includes waiting until every memory's vector is stored."
}
