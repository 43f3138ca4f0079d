"""Feast serving: get_online_features latency (SQLite and Redis) and materialisation throughput.

    python benchmarks/bench_features.py [--users 100000 1000000] [--requests 300]

Per scale: a synthetic ``user_rationale_embedding`` table (384-d unit vectors) and a real
pool version; the GX gate plus ``materialize_incremental`` into each online store (rows/s);
then ``get_online_features`` through the ranker's feature service, one user and 100 users
per request (p50/p95/p99 in ms).  A redis-server of its own runs on a free loopback port.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import redis_server, save  # noqa: E402

from components.config import load_config  # noqa: E402
from components.data.tables import vector_array  # noqa: E402
from components.features import OnlineFeatures, apply_features, materialise_features  # noqa: E402
from components.pool import write_pool_version  # noqa: E402
from components.retrieval import output_schema  # noqa: E402
from components.workspace import Workspace  # noqa: E402


def build(ws: Workspace, users: int) -> None:
    rng = np.random.default_rng(0)
    seeds = pd.DataFrame({"user_idx": np.arange(100), "user_id": [f"s{i}" for i in range(100)], "step1": "a",
                          "step2": "b", "model": "m", "template_version": "v", "prompt_tokens": 0, "completion_tokens": 0})
    seed_vectors = rng.normal(size=(100, 384)).astype(np.float32)
    seed_vectors /= np.linalg.norm(seed_vectors, axis=1, keepdims=True)
    write_pool_version(ws, str(ws.milvus_file), seeds, rng.normal(size=(100, 64)).astype(np.float32),
                       seed_vectors)
    now = int((datetime.now(timezone.utc) - timedelta(minutes=1)).timestamp() * 1e6)
    with pq.ParquetWriter(ws.user_rationales, output_schema(384)) as out:
        for start in range(0, users, 100_000):
            n = min(100_000, users - start)
            pick = rng.integers(0, 100, n)
            out.write_table(pa.Table.from_arrays([
                pa.array([f"u{i}" for i in range(start, start + n)]), pa.array(np.arange(start, start + n)),
                vector_array(seed_vectors[pick]), pa.array([f"s{p}" for p in pick]),
                pa.array(rng.random(n).astype(np.float32)), pa.array(np.ones(n, np.int64)),
                pa.array(np.full(n, now), pa.timestamp("us", tz="UTC"))], schema=output_schema(384)))


def latencies(online: OnlineFeatures, users: int, batch: int, requests: int) -> dict:
    rng = np.random.default_rng(1)
    times = []
    for _ in range(requests):
        ids = [f"u{i}" for i in rng.integers(0, users, batch)]
        started = time.perf_counter()
        got = online.get(ids)
        times.append((time.perf_counter() - started) * 1000)
        if any(seed is None for seed in got["seed_user_id"]):
            raise RuntimeError("a materialised user came back empty")
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workdir", default="/tmp/reland-bench-features")
    args = parser.parse_args()
    runs = []
    print(f"{'users':>10} {'store':>7} {'mat rows/s':>11} {'1 user p50/p95/p99 ms':>24} {'100 users p50/p95/p99 ms':>26}")
    for users in args.users:
        root = Path(args.workdir) / f"u{users}"
        shutil.rmtree(root, ignore_errors=True)
        ws = Workspace(root)
        build(ws, users)
        server, url = redis_server(root)
        try:
            for store in ("sqlite", "redis"):
                config = load_config(overrides={"features": {"online_store": store, "redis_url": url}})
                ws.feast_registry.unlink(missing_ok=True)  # each store materialises from scratch
                apply_features(config, ws)
                started = time.perf_counter()
                materialise_features(config, ws)
                rate = users / (time.perf_counter() - started)
                online = OnlineFeatures(ws, config.features)
                latencies(online, users, 1, 20)  # warm-up
                one = latencies(online, users, 1, args.requests)
                hundred = latencies(online, users, 100, max(args.requests // 3, 20))
                runs.append({"users": users, "store": store, "materialise_rows_per_s": round(rate),
                             "one_user": one, "hundred_users": hundred})
                print(f"{users:>10,} {store:>7} {rate:>11,.0f} {one['p50_ms']:>8} {one['p95_ms']:>7} {one['p99_ms']:>7}"
                      f" {hundred['p50_ms']:>8} {hundred['p95_ms']:>8} {hundred['p99_ms']:>8}")
        finally:
            server.terminate()
        shutil.rmtree(root, ignore_errors=True)
    print(f"written to {save('features', {'benchmark': 'feast serving', 'runs': runs})}")


if __name__ == "__main__":
    main()
