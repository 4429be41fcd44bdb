#!/usr/bin/env python3
"""Writes synthetic usage rows straight into memproxy's analytics database, to measure the
dashboard with a large databank (docs/ui.md, "Measured"). The rows go into `requests` only:
memproxy folds them into its hourly rollup the next time it opens the database.

Usage: scripts/ui-seed-usage.py DATA_DIR [--rows 1000000] [--days 30] [--seed 1]
DATA_DIR must hold an analytics.db made by memproxy (start it once with --data-dir DATA_DIR).
"""

import argparse
import math
import random
import sqlite3
import sys
import time
import uuid
from pathlib import Path

COLUMNS = (
    "ts_ms, request_id, user_id, key_id, key_alias, endpoint, model, deployment, upstream_model, "
    "provider, stream, tokens_in, tokens_out, tokens_cached, tokens_reasoning, cost_usd, total_ms, "
    "ttft_ms, upstream_ms, overhead_ms, status, error_type, memories_injected, tool_rounds, attempts"
)
MODELS = [
    ("gpt-4o", "openai", 2.5e-6, 10e-6),
    ("gpt-4o-mini", "openai", 0.15e-6, 0.6e-6),
    ("claude-sonnet-4.5", "anthropic", 3e-6, 15e-6),
    ("claude-haiku-4.5", "anthropic", 1e-6, 5e-6),
    ("gemini-2.5-flash", "gemini", 0.3e-6, 2.5e-6),
    ("local-llama", "openai", None, None),
]
USERS = ["claude-code", "codex", "pycharm-ai", "default-dev"] + [f"dev-{i:02}" for i in range(16)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    db = Path(a.data_dir) / "analytics.db"
    if not db.exists():
        print(f"{db} not found: start memproxy once with --data-dir {a.data_dir}", file=sys.stderr)
        return 2
    rnd = random.Random(a.seed)
    keys = [(uuid.UUID(int=rnd.getrandbits(128)).hex * 2, f"team-{i}") for i in range(10)]
    now = int(time.time() * 1000)
    start = now - a.days * 86_400_000
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    t0 = time.time()

    def rows():
        for _ in range(a.rows):
            model, provider, pin, pout = rnd.choice(MODELS)
            user = USERS[min(int(rnd.expovariate(0.25)), len(USERS) - 1)]
            key = rnd.choice(keys) if rnd.random() < 0.7 else (None, None)
            stream = rnd.random() < 0.5
            tin, tout = int(rnd.lognormvariate(7, 1)), int(rnd.lognormvariate(5, 1))
            failed = rnd.random() < 0.03
            total = rnd.lognormvariate(math.log(1500), 0.8)
            upstream = total * 0.98
            cost = None if pin is None or failed else tin * pin + tout * pout
            yield (
                rnd.randrange(start, now), str(uuid.UUID(int=rnd.getrandbits(128))), user,
                key[0], key[1], "chat", model, model, model, provider, stream,
                0 if failed else tin, 0 if failed else tout, 0, 0, cost, total,
                total * rnd.uniform(0.1, 0.4) if stream and not failed else None, upstream,
                total - upstream, 502 if failed else 200, "upstream_status" if failed else None,
                rnd.randrange(0, 6), 0, 1,
            )

    with conn:
        conn.executemany(
            f"INSERT INTO requests ({COLUMNS}) VALUES ({','.join('?' * 25)})", rows()
        )
    conn.close()
    print(f"{a.rows} rows over {a.days} days written to {db} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
