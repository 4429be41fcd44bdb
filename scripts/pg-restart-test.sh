#!/usr/bin/env bash
# Restarts the local PostgreSQL cluster under load and checks that memproxy loses nothing
# (tests/storage_restart.rs). Run it on its own, after the other tests: the restart breaks
# every other PostgreSQL test running at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(ls /etc/postgresql | sort -V | tail -n1)
cluster=$(ls "/etc/postgresql/$version" | head -n1)
export MEMPROXY_PG_RESTART="pg_ctlcluster --skip-systemctl-redirect $version $cluster restart"
echo "==> PostgreSQL restart test ($MEMPROXY_PG_RESTART)"
cargo test --locked --test storage_restart -- --ignored --nocapture
