#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): licences, banned crates, sources; and
# RustSec advisories when the advisory database (on GitHub) can be fetched. Installs
# cargo-deny on first use. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
echo "==> cargo deny: licences, bans, sources"
cargo deny --locked check licenses bans sources
if timeout 10 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    echo "==> cargo deny: advisories (RustSec)"
    cargo deny --locked check advisories
else
    echo "==> NOT CHECKED: RustSec advisories (github.com, where the advisory database lives, is unreachable from here)"
fi
