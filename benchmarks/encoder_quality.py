"""Link-prediction quality of the behaviour encoders against popularity, on real datasets.

    python benchmarks/encoder_quality.py [--datasets ml-100k amazon-beauty] [--workdir /tmp/reland-encoder]

For each dataset: prepare, train the heterogeneous GAT and LightGCN on the collaborative-
filtering training split, and report validation Recall@20 / NDCG@20 (full ranking,
training items excluded) beside the popularity baseline on the same split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.behaviour import train_behaviour_encoder  # noqa: E402
from components.config import load_config  # noqa: E402
from components.data.prepare import prepare_data  # noqa: E402
from components.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "amazon-beauty"])
    parser.add_argument("--workdir", default="/tmp/reland-encoder")
    args = parser.parse_args()
    rows = []
    print(f"{'dataset':15}{'model':12}{'recall@20':>11}{'ndcg@20':>10}{'epochs':>8}{'seconds':>9}")
    for name in args.datasets:
        workspace = Workspace(Path(args.workdir) / name)
        prepare_data(load_config(name), workspace, progress=False)
        for kind in ("gat", "lightgcn"):
            started = time.perf_counter()
            report = train_behaviour_encoder(load_config(name, overrides={"encoder": {"kind": kind}}), workspace,
                                             progress=False)
            seconds = time.perf_counter() - started
            results = [("popularity", report["popularity"])] if kind == "gat" else []
            results.append((kind, report["validation"]))
            for model, metrics in results:
                row = {"dataset": name, "model": model, "recall@20": round(metrics["recall@20"], 4),
                       "ndcg@20": round(metrics["ndcg@20"], 4),
                       "epochs": len(report["history"]) if model == kind else None,
                       "seconds": round(seconds, 1) if model == kind else None}
                rows.append(row)
                print(f"{name:15}{model:12}{row['recall@20']:>11.4f}{row['ndcg@20']:>10.4f}"
                      f"{row['epochs'] or '':>8}{row['seconds'] or '':>9}")
    print(f"written to {save('encoder_quality', {'benchmark': 'encoder link prediction', 'runs': rows})}")


if __name__ == "__main__":
    main()
