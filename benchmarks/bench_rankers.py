"""Ranker cost: epoch time of RELAND against +f_item (the fusion's overhead), and full-ranking evaluation speed.

    python benchmarks/bench_rankers.py -w WORKSPACE --preset amazon-beauty [--backbones sasrec lightgcn] [--epochs 3]

Trains each backbone for a few epochs in both variants on the workspace's features (Feast
historical retrieval, as in production) and reports mean training seconds per epoch, the
RELAND/+f_item ratio (the paper calls the overhead marginal: the target is at most 1.10),
and test-set full-ranking throughput in users/s.  RELAND trains jointly here (the fused model's
own epoch cost); the default residual fusion adds its fusion-only epochs to the +f_item run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("--preset", default="amazon-beauty")
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "lightgcn"])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    from components.config import load_config
    from components.ranker import train_ranker
    from components.workspace import Workspace

    workspace, rows = Workspace(args.workspace), {}
    for backbone in args.backbones:
        for variant in ("item_text", "reland"):
            config = load_config(args.preset, overrides={"ranker": {"backbone": backbone, "variant": variant,
                                                                    "epochs": args.epochs, "patience": args.epochs,
                                                                    "fusion_training": "joint"}})
            result = train_ranker(config, workspace, progress=False, save=False)
            rows[f"{backbone}-{variant}"] = {"epoch_seconds": result["epoch_train_seconds"],
                                             "eval_users_per_s": result["eval_users_per_s"]}
        rows[backbone] = {"reland_over_item_text": round(rows[f"{backbone}-reland"]["epoch_seconds"]
                                                         / rows[f"{backbone}-item_text"]["epoch_seconds"], 3)}
    print(f"{'ranker':24}{'s/epoch':>10}{'eval users/s':>14}")
    for backbone in args.backbones:
        for variant in ("item_text", "reland"):
            row = rows[f"{backbone}-{variant}"]
            print(f"{backbone + '-' + variant:24}{row['epoch_seconds']:>10.2f}{row['eval_users_per_s']:>14,}")
        print(f"{backbone}: RELAND / +f_item epoch time = {rows[backbone]['reland_over_item_text']:.3f} (target <= 1.10)")
    print(f"written to {save('rankers', {'benchmark': 'rankers', 'preset': args.preset, 'epochs': args.epochs, **rows})}")


if __name__ == "__main__":
    main()
