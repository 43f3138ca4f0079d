"""Recall@1 and speed of the approximate indexes against their probe count, on data of rising difficulty.

    python benchmarks/ann_recall.py [--seeds 75000] [--users 65536] [--noise 0.5 1.0 1.5] [--probes 2 4 8 16]

Synthetic users and seeds around 256 centres in 64-d with Gaussian spread ``--noise`` (0.5 is
``bench_retrieval.py``'s data; at 1.5 the clusters overlap and nearest neighbours get hard), unit
rows.  Per noise and probe count, one block of users is searched in-process by ``clustered``
and ``ivf`` (``pool.index`` with ``nprobe`` = probes, default cells) and compared with exact
retrieval.  It is the measurement behind the indexes' default ``nprobe``: a clustered user is
matched against its cell's whole neighbourhood, so its recall rises little past 4 cells, while
IVF's per-user lists keep gaining.  Written to ``results/ann_recall.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.config import PoolConfig  # noqa: E402
from components.retrieval import best_similarity, seed_index, unit_rows  # noqa: E402


def clustered_points(rng: np.random.Generator, centres: np.ndarray, n: int, noise: float) -> np.ndarray:
    points = centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, centres.shape[1]))
    return unit_rows(points).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=75_000)
    parser.add_argument("--users", type=int, default=65_536)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    parser.add_argument("--probes", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'noise':>6}{'index':>10}{'nprobe':>7}{'recall@1':>10}{'users/s':>10}")
    for noise in args.noise:
        centres = rng.normal(size=(256, 64))
        seeds = clustered_points(rng, centres, args.seeds, noise)
        users = clustered_points(rng, centres, args.users, noise)
        exact = best_similarity(users, seeds, 2048)
        for index in ("clustered", "ivf"):
            for probes in args.probes:
                searcher = seed_index(seeds, PoolConfig(index=index, nprobe=probes))
                started = time.perf_counter()
                similarity, _ = searcher.search(users, 1)
                speed = len(users) / (time.perf_counter() - started)
                recall = float((similarity[:, 0] >= exact - 1e-5).mean())
                rows.append({"noise": noise, "index": index, "nprobe": probes, "recall_at_1": round(recall, 4),
                             "users_per_s": round(speed)})
                print(f"{noise:>6}{index:>10}{probes:>7}{recall:>10.4f}{speed:>10,.0f}", flush=True)
    result = {"benchmark": "ann recall", "seeds": args.seeds, "users": args.users, "rows": rows}
    print(f"written to {save('ann_recall', result)}")


if __name__ == "__main__":
    main()
