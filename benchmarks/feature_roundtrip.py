"""Check a finished run end to end: online features equal the retrieval table, in SQLite and Redis.

    python benchmarks/feature_roundtrip.py WORKSPACE [--preset ml-100k] [--config FILE] [--sample 50]

For a workspace where ``reland run`` has finished: validate, apply and materialise into the
SQLite online store (as the run did) and into a Redis server of its own, then compare
``get_online_features`` for sampled users with their rows in
``features/user_rationale_embedding.parquet``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import redis_server  # noqa: E402
from common import save  # noqa: E402

from components.config import load_config  # noqa: E402
from components.features import OnlineFeatures, apply_features, materialise_features  # noqa: E402
from components.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--sample", type=int, default=50)
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    table = pd.read_parquet(ws.user_rationales)
    sample = table.sample(min(args.sample, len(table)), random_state=0)
    server, url = redis_server(ws.root)
    report = {"workspace": str(ws.root), "users": len(table), "sampled": len(sample), "stores": {}}
    try:
        for store in ("sqlite", "redis"):
            config = load_config(args.preset, args.config, {"features": {"online_store": store, "redis_url": url}})
            if store == "redis":
                ws.feast_registry.unlink(missing_ok=True)  # materialise Redis from scratch
            apply_features(config, ws)
            materialise_features(config, ws)
            got = OnlineFeatures(ws, config.features).get(sample["user_id"].tolist())
            equal_vectors = all(np.allclose(g, e, atol=1e-6) for g, e in zip(got["rationale_embedding"],
                                                                              sample["rationale_embedding"]))
            equal_seeds = got["seed_user_id"] == sample["seed_user_id"].tolist()
            report["stores"][store] = {"vectors_equal": bool(equal_vectors), "seeds_equal": bool(equal_seeds)}
            print(f"{store:7} {len(sample)} sampled users: embeddings equal {equal_vectors}, seeds equal {equal_seeds}")
    finally:
        server.terminate()
    name = f"roundtrip_{Path(args.workspace).name}"
    print(f"written to {save(name, report)}")
    if not all(all(s.values()) for s in report["stores"].values()):
        raise SystemExit("online features differ from the retrieval table")


if __name__ == "__main__":
    main()
