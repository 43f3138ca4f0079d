"""The daily refresh at scale: retrieve, validate and write every user's rationale feature, timed per step.

    python benchmarks/bench_refresh.py [--users 1000000 10000000] [--seeds 10000 75000]
                                       [--layouts seed_keyed per_user] [--per-user-max 1000000]
                                       [--index clustered|ivf|hnsw]

Per (users, seeds): synthetic clustered 64-d behaviour vectors and a pool of ``seeds`` unit
rationale embeddings in Milvus Lite (as ``bench_retrieval.py`` builds them); then, per layout
(``features.layout``; the per-user one only up to ``--per-user-max`` users, 1.5 kB a user on
disk), each daily step in a child process with its own peak RSS: ``retrieve_rationales`` with
the ``--index`` (its sampled recall@1), the Great Expectations gate, ``materialise_features``
into a Redis of its own (``features.write_workers`` processes), the online store's bytes per
user (Redis ``used_memory``), and ``get_online_features`` latency through the ranker's feature
service, from a handle warmed as the ranking service warms it (the seed-keyed layout's seed
embeddings read once at start).  The behaviour vectors' own view is left out
(its table is moved aside before ``apply``): the step measured is the rationale feature.
Ends with an extrapolation to 10^8 users.  Written to ``results/<--name>.json``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import SETUP  # noqa: E402
from common import redis_server, run_measured, save  # noqa: E402

from components.workspace import Workspace  # noqa: E402

CONFIG = """
import os
from components.config import load_config
def config(layout, redis):
    return load_config(overrides={"pool": {"index": os.environ["BENCH_INDEX"]}, "features": {
        "layout": layout, "online_store": "redis", "redis_url": redis}})
"""
RETRIEVE = CONFIG + """
import json, sys
from components.retrieval import retrieve_rationales
from components.workspace import Workspace
print(json.dumps(retrieve_rationales(config(sys.argv[2], ""), Workspace(sys.argv[1]), progress=False)))
"""
VALIDATE = CONFIG + """
import json, sys, time
from components.features import validate_features
from components.workspace import Workspace
started = time.perf_counter()
rows = validate_features(config(sys.argv[2], ""), Workspace(sys.argv[1]))["rows"]
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
"""
WRITE = CONFIG + """
import json, sys
from components.features import apply_features, materialise_features
from components.workspace import Workspace
ws, cfg = Workspace(sys.argv[1]), config(sys.argv[2], sys.argv[3])
apply_features(cfg, ws)
print(json.dumps(materialise_features(cfg, ws, progress=False)))
"""
SERVE = CONFIG + """
import json, sys, time
import numpy as np
from components.features import OnlineFeatures
from components.workspace import Workspace
online = OnlineFeatures(Workspace(sys.argv[1]), config(sys.argv[2], sys.argv[3]).features)
started = time.perf_counter()
warmed = online.warm()
warm_s = time.perf_counter() - started
users, rng, times = int(sys.argv[4]), np.random.default_rng(1), []
for i in range(2100):
    user = f"u{rng.integers(0, users)}"
    started = time.perf_counter()
    row = online.get([user])
    if i >= 100:  # after warm-up
        times.append((time.perf_counter() - started) * 1000)
    assert row["rationale_embedding"][0] is not None and len(row["rationale_embedding"][0]) == 384
p50, p95, p99 = np.percentile(times, [50, 95, 99])
print(json.dumps({"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
                  "seeds_warmed": warmed, "warm_seconds": round(warm_s, 2)}))
"""


def redis_memory(url: str) -> int:
    import redis

    host, port = url.split(":")
    return int(redis.Redis(host=host, port=int(port)).info("memory")["used_memory"])


def flush(url: str) -> None:
    import redis

    host, port = url.split(":")
    redis.Redis(host=host, port=int(port)).flushall()


def one_layout(root: Path, layout: str, users: int, url: str) -> dict:
    """Retrieve, validate, write and serve one layout in the workspace at ``root``."""
    vectors = Workspace(root).user_vectors
    aside = vectors.with_suffix(".aside")
    for stale in ("features", "steps", "validation"):
        shutil.rmtree(root / stale, ignore_errors=True)
    if aside.exists():
        aside.rename(vectors)
    retrieve = run_measured(RETRIEVE, str(root), layout)
    vectors.rename(aside)  # only the rationale views get registered and written
    validate = run_measured(VALIDATE, str(root), layout)
    flush(url)
    empty = redis_memory(url)
    write = run_measured(WRITE, str(root), layout, url)
    stored = redis_memory(url) - empty
    serve = run_measured(SERVE, str(root), layout, url, str(users))
    summary = write["result"]
    steps = {"retrieve": {"seconds": retrieve["result"]["seconds"], "users_per_s": retrieve["result"]["users_per_s"],
                          "recall_at_1": retrieve["result"].get("recall_at_1"), "peak_rss_mib": retrieve["peak_rss_mib"]},
             "validate": {"seconds": round(validate["result"]["seconds"], 2),
                          "users_per_s": round(users / validate["result"]["seconds"]),
                          "peak_rss_mib": validate["peak_rss_mib"]},
             "write": {"seconds": summary["seconds"], "rows_per_s": summary["rows_per_s"],
                       "rows": summary["rows_written"], "peak_rss_mib": write["peak_rss_mib"]}}
    return {"layout": layout, "steps": steps, "redis_bytes_per_user": round(stored / users, 1), "serving": serve["result"]}


def extrapolate(runs: list[dict], target: int = 10 ** 8) -> list[dict]:
    """Hours for ``target`` users on one 2-core machine, from each run's per-step rates (memory is flat)."""
    rows = []
    for run in runs:
        for layout in run["layouts"]:
            s = layout["steps"]
            hours = {"retrieve": target / s["retrieve"]["users_per_s"] / 3600,
                     "validate": target / s["validate"]["users_per_s"] / 3600,
                     "write": target / s["write"]["rows_per_s"] / 3600}
            rows.append({"users": run["users"], "seeds": run["seeds"], "layout": layout["layout"],
                         "hours_at_1e8": {k: round(v, 2) for k, v in hours.items()},
                         "total_hours_at_1e8": round(sum(hours.values()), 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10_000, 75_000])
    parser.add_argument("--layouts", nargs="+", default=["seed_keyed", "per_user"], choices=["seed_keyed", "per_user"])
    parser.add_argument("--per-user-max", type=int, default=1_000_000,
                        help="largest user count the per-user layout runs at (its table is 1.5 kB a user)")
    parser.add_argument("--index", default="clustered", choices=["ivf", "hnsw", "clustered"],
                        help="pool.index of the retrieval step")
    parser.add_argument("--workdir", default="/tmp/reland-bench-refresh")
    parser.add_argument("--name", default="refresh", help="results/<name>.json")
    args = parser.parse_args()
    os.environ["BENCH_INDEX"] = args.index  # read by each step's child
    runs = []
    for users in args.users:
        for seeds in args.seeds:
            root = Path(args.workdir) / f"u{users}-s{seeds}"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            setup = run_measured(SETUP, str(users), str(seeds), "64", str(root))
            server, url = redis_server(root)
            try:
                layouts = [one_layout(root, layout, users, url) for layout in args.layouts
                           if layout == "seed_keyed" or users <= args.per_user_max]
            finally:
                server.terminate()
            shutil.rmtree(root, ignore_errors=True)
            runs.append({"users": users, "seeds": seeds, "setup_seconds": round(setup["seconds"], 1), "layouts": layouts})
            for layout in layouts:
                s = layout["steps"]
                print(f"{users:>11,} users {seeds:>6,} seeds {layout['layout']:>10}: retrieve "
                      f"{s['retrieve']['users_per_s']:>9,}/s (recall@1 {s['retrieve']['recall_at_1']}, "
                      f"{s['retrieve']['peak_rss_mib']:.0f} MiB), validate {s['validate']['users_per_s']:>9,}/s "
                      f"({s['validate']['peak_rss_mib']:.0f} MiB), write {s['write']['rows_per_s']:>7,} rows/s "
                      f"({s['write']['peak_rss_mib']:.0f} MiB), Redis {layout['redis_bytes_per_user']:,.0f} B/user, "
                      f"get_online_features p50/p99 {layout['serving']['p50_ms']}/{layout['serving']['p99_ms']} ms",
                      flush=True)
    projection = extrapolate(runs)
    for row in projection:
        print(f"10^8 users from the {row['users']:,}-user run, {row['seeds']:,} seeds, {row['layout']}: "
              f"{row['total_hours_at_1e8']} h on this machine ({row['hours_at_1e8']})")
    print(f"written to {save(args.name, {'benchmark': 'daily refresh', 'index': args.index, 'runs': runs, 'extrapolation': projection})}")


if __name__ == "__main__":
    main()
