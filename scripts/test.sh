#!/usr/bin/env bash
# Runs the whole test suite: Rust unit + integration tests, then the official OpenAI and
# Anthropic Python SDKs against a running proxy (test tooling in its own venv), then the
# dashboard's browser tests in headless Chromium (skipped when node/npm are absent).
# PostgreSQL/Redis tests run when MEMPROXY_TEST_DATABASE_URL / MEMPROXY_TEST_REDIS_URL are set.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo test (workspace)"
cargo test --workspace --locked

echo "==> building binaries for the SDK tests"
cargo build --workspace --locked --bins

VENV=tests/sdk/.venv
STAMP="$VENV/.requirements.stamp"
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PY" -m venv "$VENV"
fi
if ! cmp -s tests/sdk/requirements.txt "$STAMP" 2>/dev/null; then
  echo "==> installing SDK test tooling"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$STAMP"
fi

# Codex CLI (npm, pinned) for its end-to-end test; skipped when npm is unavailable.
CODEX_VERSION=0.169.0
CODEX_DIR=tests/sdk/.codex
if command -v npm >/dev/null 2>&1 && [ ! -x "$CODEX_DIR/node_modules/.bin/codex" ]; then
  echo "==> installing Codex CLI $CODEX_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$CODEX_DIR" "@openai/codex@$CODEX_VERSION" \
    || echo "could not install Codex CLI; its test will be skipped"
fi

echo "==> SDK tests (openai, anthropic, Codex CLI)"
"$VENV/bin/python" -m pytest -q tests/sdk "$@"

echo "==> UI browser tests (headless Chromium)"
bash tests/ui/run.sh
