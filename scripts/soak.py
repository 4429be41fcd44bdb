"""Soak driver for scripts/soak.sh: mixed load against a running memproxy for a while,
sampling the process every interval (RSS, open files, threads, analytics queue depth,
latency p50/p99, errors), writing samples.csv and plot.svg, and failing on growth.

Load mix, by weight: chat (plain and streamed, with retrieval and capture), Anthropic
messages (streamed), Responses (streamed), a memory-tool round trip, the memory API (add,
search, delete), and virtual key changes (generate, use, delete).

Only the Python standard library and httpx (installed with the SDKs in tests/sdk/.venv).
"""

import argparse
import asyncio
import csv
import json
import os
import random
import sys
import time

import httpx


def proc_stats(pid):
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb / 1024.0, fds, threads


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


class Stats:
    def __init__(self):
        self.lat = []
        self.ok = 0
        self.errors = 0
        self.error_kinds = {}
        self.samples = {}

    def take(self):
        lat, ok, err = self.lat, self.ok, self.errors
        self.lat, self.ok, self.errors = [], 0, 0
        return lat, ok, err


async def one(client, stats, kind, master):
    user = f"soak-user-{random.randrange(20)}"
    h = {"authorization": f"Bearer {master}", "x-memory-user-id": user}
    started = time.perf_counter()
    r = None
    try:
        if kind == "chat":
            stream = random.random() < 0.5
            body = {"model": "gpt", "stream": stream,
                    "messages": [{"role": "user", "content": f"remember that I like tea number {random.randrange(1000)}"}]}
            async with client.stream("POST", "/v1/chat/completions", json=body, headers=h) as r:
                data = await r.aread()
                ok = r.status_code == 200 and (not stream or b"[DONE]" in data)
        elif kind == "messages":
            body = {"model": "claude", "max_tokens": 64, "stream": True,
                    "messages": [{"role": "user", "content": "what do I like?"}]}
            async with client.stream("POST", "/v1/messages", json=body, headers=h) as r:
                data = await r.aread()
                ok = r.status_code == 200 and b"message_stop" in data
        elif kind == "responses":
            body = {"model": "gpt", "stream": True, "input": "what do I like?", "store": False}
            async with client.stream("POST", "/v1/responses", json=body, headers=h) as r:
                data = await r.aread()
                ok = r.status_code == 200 and b"response.completed" in data
        elif kind == "tools":
            body = {"model": "gpt-tools", "messages": [{"role": "user", "content": "look up what I like"}]}
            r = await client.post("/v1/chat/completions", json=body, headers=h)
            ok = r.status_code == 200
        elif kind == "memory":
            r = await client.post("/v1/memories", headers=h,
                                  json={"user_id": user, "content": f"soak fact {random.random()}"})
            ok = r.status_code == 201
            if ok:
                created = r.json()
                mid = created["id"] if isinstance(created, dict) else created[0]["id"]
                r = await client.get("/v1/memories/search", headers=h,
                                     params={"user_id": user, "query": "soak fact"})
                ok = r.status_code == 200
                r = await client.delete(f"/v1/memories/{mid}", headers=h, params={"user_id": user})
                ok = ok and r.status_code in (200, 204)
        else:  # keys
            r = await client.post("/key/generate", headers=h, json={"user_id": user, "rpm_limit": 1000})
            ok = r.status_code == 200
            if ok:
                key = r.json()["key"]
                r = await client.post("/v1/chat/completions",
                                      headers={"authorization": f"Bearer {key}"},
                                      json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
                ok = r.status_code == 200
                r = await client.post("/key/delete", headers=h, json={"keys": [key]})
                ok = ok and r.status_code == 200
    except (httpx.HTTPError, KeyError, ValueError) as e:
        ok = False
        stats.error_kinds[type(e).__name__] = stats.error_kinds.get(type(e).__name__, 0) + 1
    stats.lat.append(time.perf_counter() - started)
    if not ok and kind not in stats.samples:
        try:
            stats.samples[kind] = f"{r.status_code}: {r.text[:300]}"
        except Exception as e:  # noqa: BLE001 - a sample for the report only
            stats.samples[kind] = repr(e)[:300]
    if ok:
        stats.ok += 1
    else:
        stats.errors += 1
        stats.error_kinds[kind] = stats.error_kinds.get(kind, 0) + 1


MIX = [("chat", 40), ("messages", 15), ("responses", 15), ("tools", 10), ("memory", 15), ("keys", 5)]


async def worker(client, stats, master, until, rate_per_worker):
    kinds = [k for k, w in MIX for _ in range(w)]
    gap = 1.0 / rate_per_worker if rate_per_worker > 0 else 0
    while time.monotonic() < until:
        t = time.monotonic()
        await one(client, stats, random.choice(kinds), master)
        if gap:
            await asyncio.sleep(max(0.0, gap - (time.monotonic() - t)))


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def plot(rows, path):
    """A small SVG: RSS, open files and p99 latency over time, each scaled to its panel."""
    series = [("rss_mib", "RSS (MiB)"), ("open_fds", "open files"), ("p99_ms", "p99 latency (ms)"),
              ("analytics_queue", "analytics queue")]
    w, ph = 720, 140
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ph * len(series)}" font-family="sans-serif" font-size="12">']
    tmax = max(r["t_s"] for r in rows) or 1
    for i, (key, label) in enumerate(series):
        y0 = i * ph
        vals = [r[key] or 0 for r in rows]
        vmax = max(vals) or 1
        pts = " ".join(f'{50 + r["t_s"] / tmax * (w - 70):.1f},{y0 + ph - 20 - (v / vmax) * (ph - 40):.1f}'
                       for r, v in zip(rows, vals))
        out.append(f'<text x="4" y="{y0 + 14}">{label}: max {vmax:.1f}</text>')
        out.append(f'<line x1="50" y1="{y0 + ph - 20}" x2="{w - 20}" y2="{y0 + ph - 20}" stroke="#999"/>')
        out.append(f'<polyline fill="none" stroke="#2a6fdb" stroke-width="1.5" points="{pts}"/>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--master", required=True)
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s in total")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    stats = Stats()
    limits = httpx.Limits(max_connections=a.workers * 2, max_keepalive_connections=a.workers)
    rows = []
    async with httpx.AsyncClient(base_url=a.url, timeout=30, limits=limits) as client:
        start = time.monotonic()
        until = start + a.seconds
        tasks = [asyncio.create_task(worker(client, stats, a.master, until, a.rate / a.workers))
                 for _ in range(a.workers)]
        while time.monotonic() < until:
            await asyncio.sleep(a.interval)
            lat, ok, err = stats.take()
            rss, fds, threads = proc_stats(a.pid)
            m = (await client.get("/metrics", headers={"authorization": f"Bearer {a.master}"})).text
            row = {"t_s": round(time.monotonic() - start, 1), "rss_mib": round(rss, 1), "open_fds": fds,
                   "threads": threads, "analytics_queue": metric(m, "memproxy_analytics_queue_depth"),
                   "requests": ok + err, "errors": err, "p50_ms": round(pct(lat, 0.5), 2),
                   "p99_ms": round(pct(lat, 0.99), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        await asyncio.gather(*tasks)

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "samples.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(rows)
    plot(rows, os.path.join(a.out, "plot.svg"))

    # Growth checks over the second half (the first half warms caches and pools up).
    half = rows[len(rows) // 2:]
    rss_slope = slope([(r["t_s"] / 60, r["rss_mib"]) for r in half])  # MiB per minute
    fd_spread = max(r["open_fds"] for r in half) - min(r["open_fds"] for r in half)
    total = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    queue_max = max((r["analytics_queue"] or 0) for r in half)
    summary = {"requests": total, "errors": errors, "error_kinds": stats.error_kinds,
               "error_samples": stats.samples,
               "rss_start_mib": rows[0]["rss_mib"], "rss_end_mib": rows[-1]["rss_mib"],
               "rss_slope_mib_per_min_second_half": round(rss_slope, 3),
               "open_fds_spread_second_half": fd_spread, "analytics_queue_max_second_half": queue_max}
    print("SUMMARY " + json.dumps(summary), flush=True)
    failures = []
    if total == 0 or errors > 0.01 * total:
        failures.append(f"{errors} of {total} requests failed")
    # SQLite page caches and the allocator grow with the stores for the first minutes, so a
    # short run allows more; an hour's second half must be flat.
    default_slope = "1.0" if a.seconds >= 1800 else "3.0"
    if rss_slope > float(os.environ.get("SOAK_MAX_RSS_SLOPE", default_slope)):
        failures.append(f"RSS grows {rss_slope:.2f} MiB/min in the second half")
    if fd_spread > int(os.environ.get("SOAK_MAX_FD_SPREAD", "64")):
        failures.append(f"open files vary by {fd_spread} in the second half")
    if queue_max > 1000:
        failures.append(f"the analytics queue reached {queue_max}")
    if failures:
        print("SOAK FAILED: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    asyncio.run(main())
