"""Rankers trained by separate `reland ranker train` processes, compared as study cells.

    python benchmarks/compare_cells.py [--label NAME] [--reference LABEL] \
        "+f_item=WS:sasrec-item_text,sasrec-item_text-r1" \
        "profile=WS/studies/control-profile:sasrec-reland,sasrec-reland-r1"

Each argument is ``LABEL=WORKSPACE:RANKER[,RANKER...]`` (the ranker folders of one cell, one
per training seed, in any workspace).  Prints a Markdown table: test NDCG@10 and HR@10 as mean
± sd over the seeds, each seed's value, the best validation NDCG@10, whether a residual fusion
was kept (and its blend), and the lift over the reference cell (the first unless
``--reference``) with the two-sided paired t-test over test users on seed-averaged per-user
metrics: the same figures the studies compute.  Figures go to ``benchmarks/results/cells_<label>.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.workspace import RANKER_METRICS, Workspace, read_json  # noqa: E402
from pipelines.studies import METRICS, cell_per_user, paired_p_value  # noqa: E402


def parse_cell(text: str) -> tuple[str, Workspace, list[str]]:
    label, sep, rest = text.partition("=")
    root, sep2, rankers = rest.rpartition(":")
    if not (sep and sep2 and label and root and rankers):
        raise SystemExit(f"{text!r}: expected LABEL=WORKSPACE:RANKER[,RANKER...]")
    return label, Workspace(root), rankers.split(",")


def describe(workspace: Workspace, rankers: list[str]) -> dict:
    runs = [read_json(workspace.ranker(name) / RANKER_METRICS) for name in rankers]
    row = {"seeds": len(runs), "best_valid_ndcg@10": [r["best_valid_ndcg@10"] for r in runs],
           "fusion": [(r["backbone_run"]["fusion_kept"], r["backbone_run"]["blend"]) for r in runs
                      if "fusion_kept" in r.get("backbone_run", {})]}
    for metric in METRICS:
        values = np.array([r[f"test_{metric}"] for r in runs])
        row[metric] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                       "seeds": values.tolist()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="LABEL=WORKSPACE:RANKER[,RANKER...]")
    parser.add_argument("--reference", help="label of the cell the others are tested against (default: the first)")
    parser.add_argument("--label", default="comparison", help="name of the results file")
    args = parser.parse_args()
    cells = [parse_cell(text) for text in args.cells]
    reference = args.reference or cells[0][0]
    per_user = {label: cell_per_user(ws, rankers) for label, ws, rankers in cells}
    if reference not in per_user:
        raise SystemExit(f"--reference {reference!r} is none of the cells {', '.join(per_user)}")
    rows = {label: describe(ws, rankers) for label, ws, rankers in cells}
    for label, row in rows.items():
        for metric in METRICS:
            row[metric]["lift"] = row[metric]["mean"] / rows[reference][metric]["mean"] - 1
            row[metric]["p"] = paired_p_value(per_user[label], per_user[reference], metric)
    print(f"| cell | seeds | NDCG@10 | HR@10 | NDCG@10 vs {reference} (p) | HR@10 vs {reference} (p) "
          "| NDCG@10 per seed | best valid NDCG@10 | fusion kept, blend |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        spread = {m: f"{row[m]['mean']:.4f}" + (f" ± {row[m]['sd']:.4f}" if row[m]["sd"] is not None else "")
                  for m in METRICS}
        versus = {m: "" if label == reference else f"{row[m]['lift']:+.1%} (p = {row[m]['p']:.2g})" for m in METRICS}
        print(f"| {label} | {row['seeds']} | {spread['ndcg@10']} | {spread['hit@10']} | {versus['ndcg@10']} "
              f"| {versus['hit@10']} | {', '.join(f'{v:.4f}' for v in row['ndcg@10']['seeds'])} "
              f"| {', '.join(f'{v:.4f}' for v in row['best_valid_ndcg@10'])} "
              f"| {', '.join(f'{kept}, {blend:.3f}' for kept, blend in row['fusion'])} |")
    print(f"written to {save(f'cells_{args.label}', {'reference': reference, 'cells': rows})}")


if __name__ == "__main__":
    main()
