#!/usr/bin/env bash
# Browser tests of the /ui dashboard (tests/ui): installs Debian's chromium when missing
# (non-interactive, as root) and playwright-core as pinned in tests/ui/package-lock.json,
# builds memproxy and the mock upstream, and runs tests/ui/ui.test.mjs against them.
# Screenshots of every page at desktop and phone width go to target/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "==> node/npm missing: installing Debian's nodejs and npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "==> installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

UI=tests/ui
STAMP="$UI/node_modules/.package-lock.stamp"
if ! cmp -s "$UI/package-lock.json" "$STAMP" 2>/dev/null; then
  echo "==> installing playwright-core (npm ci in $UI)"
  (cd "$UI" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$UI/package-lock.json" "$STAMP"
fi

if [ -z "${MEMPROXY_BIN:-}" ] || [ -z "${MOCK_UPSTREAM_BIN:-}" ]; then
  echo "==> building memproxy and mock-upstream"
  cargo build --workspace --locked --bins
fi
TARGET=${CARGO_TARGET_DIR:-target}
export MEMPROXY_BIN=${MEMPROXY_BIN:-$PWD/$TARGET/debug/memproxy}
export MOCK_UPSTREAM_BIN=${MOCK_UPSTREAM_BIN:-$PWD/$TARGET/debug/mock-upstream}
case "$MEMPROXY_BIN" in /*) ;; *) MEMPROXY_BIN=$PWD/$MEMPROXY_BIN ;; esac
case "$MOCK_UPSTREAM_BIN" in /*) ;; *) MOCK_UPSTREAM_BIN=$PWD/$MOCK_UPSTREAM_BIN ;; esac
export CHROMIUM SHOTS_DIR=${SHOTS_DIR:-$PWD/target/ui-screenshots}

echo "==> browser tests of /ui (chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}'))"
(cd "$UI" && node --test --test-concurrency=1 ui.test.mjs)
echo "==> screenshots in $SHOTS_DIR"
