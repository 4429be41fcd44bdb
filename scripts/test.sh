#!/usr/bin/env bash
# Runs the whole test suite: Rust unit + integration tests, the dashboard's browser tests
# (scripts/ui-test.sh), then the client matrix: the
# official OpenAI and Anthropic SDKs for Python and Node, Claude Code and Codex CLI, at the
# versions pinned in tests/sdk/requirements.txt and tests/clients/package-lock.json,
# against a running proxy (test tooling in its own venv and node_modules).
# PostgreSQL/Redis tests run when MEMPROXY_TEST_DATABASE_URL / MEMPROXY_TEST_REDIS_URL are set.
set -euo pipefail
cd "$(dirname "$0")/.."

# The built-in embedding model's weights (fetched and distilled once, then cached);
# tests/semantic.rs reads them from MEMPROXY_MODEL_DIR.
export MEMPROXY_MODEL_DIR="${MEMPROXY_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/memproxy/models/minilm-l6-static-256}"
echo "==> built-in embedding model in $MEMPROXY_MODEL_DIR (scripts/fetch-model.sh)"
scripts/fetch-model.sh --dir "$MEMPROXY_MODEL_DIR"

echo "==> cargo test (workspace)"
cargo test --workspace --locked

echo "==> building binaries for the client tests"
cargo build --workspace --locked --bins

# The dashboard in a real browser (Debian's chromium, playwright-core pinned in tests/ui).
TARGET_BIN="${CARGO_TARGET_DIR:-target}/debug"
case "$TARGET_BIN" in /*) ;; *) TARGET_BIN="$(pwd)/$TARGET_BIN" ;; esac
MEMPROXY_BIN="$TARGET_BIN/memproxy" MOCK_UPSTREAM_BIN="$TARGET_BIN/mock-upstream" \
  bash scripts/ui-test.sh

# The client matrix (tests/sdk, driven by pytest): the official Python SDKs, the Node SDKs,
# Claude Code and Codex CLI, all pinned, against a running proxy. A client is skipped, and
# said so, only when its toolchain is missing; a failing install fails the run.
# scripts/clients-latest.sh runs the same matrix on the newest published versions.
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "==> SKIPPED: $PY not found: no client tests (Python SDKs, Node SDKs, Claude Code, Codex CLI)"
  exit 0
fi
VENV=tests/sdk/.venv
STAMP="$VENV/.requirements.stamp"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! cmp -s tests/sdk/requirements.txt "$STAMP" 2>/dev/null; then
  echo "==> installing the Python SDKs and pytest"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$STAMP"
fi

# Node clients: Claude Code, Codex CLI, openai-node, @anthropic-ai/sdk, exactly as in
# tests/clients/package-lock.json (npm ci; reinstalled when the lock file changes).
CLIENTS=tests/clients
NODE_STAMP="$CLIENTS/node_modules/.package-lock.stamp"
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  export CLIENTS_REQUIRED=1 # a Node client that is not there fails its tests
  if ! cmp -s "$CLIENTS/package-lock.json" "$NODE_STAMP" 2>/dev/null; then
    echo "==> installing the Node clients (npm ci in $CLIENTS)"
    (cd "$CLIENTS" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$CLIENTS/package-lock.json" "$NODE_STAMP"
  fi
else
  echo "==> SKIPPED: node/npm not found: Claude Code, Codex CLI, openai-node and @anthropic-ai/sdk are not tested"
fi

echo "==> client matrix (Python SDKs, Node SDKs, Claude Code, Codex CLI)"
"$VENV/bin/python" -m pytest -q -rs tests/sdk "$@"
