#!/usr/bin/env bash
# Browser tests of the /ui dashboard (tests/ui/ui.test.mjs) in Debian's headless Chromium,
# driven by playwright-core (pinned in package-lock.json). Installs what is missing:
# Debian's chromium package (apt-get, as root) and the npm packages (npm ci). Expects
# target/debug/memproxy and target/debug/mock-upstream to be built.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node/npm not found: the UI browser tests are skipped"
  exit 0
fi
CHROMIUM=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "==> installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null; then
  npm ci --no-audit --no-fund --silent
fi
node --test --test-concurrency=1 ui.test.mjs
