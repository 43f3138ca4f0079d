"""Grounding of a workspace's rationales: how many name the catalogue's brands, categories and items.

    python benchmarks/grounding_report.py WORKSPACE [--rationales FILE] [--label NAME] [--examples 5]

Scores every parsed rationale of ``pool/rationales.parquet`` (or ``--rationales``, e.g. a
copy kept from an earlier template) with the current grounding score against the
workspace's item table and each seed's training history, and prints mean grounding, the
share of vacuous answers (no catalogue term at all), the share of found terms that come
from the seed's own history, and examples of both kinds.  Figures go to
``benchmarks/results/grounding_<label>.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.data.tables import PreparedDataset  # noqa: E402
from components.grounding import Catalogue, grounding_summary  # noqa: E402
from components.rationales import history_texts, seed_histories  # noqa: E402
from components.workspace import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--rationales", type=Path, default=None, help="default: WORKSPACE/pool/rationales.parquet")
    parser.add_argument("--label", default=None, help="name of the results file (default: the workspace's name)")
    parser.add_argument("--examples", type=int, default=5)
    args = parser.parse_args()
    data = PreparedDataset(Workspace(args.workspace).prepared)
    rationales = pd.read_parquet(args.rationales or Workspace(args.workspace).rationale_table)
    parsed = rationales[rationales["status"] == "ok"].reset_index(drop=True)
    catalogue = Catalogue(data.items())
    histories = seed_histories(data, parsed["user_idx"].to_numpy(), "cf", 1_000_000)
    scored = [catalogue.ground(r.step1, r.step2, catalogue.history_terms(history_texts(histories[int(r.user_idx)])))
              for r in parsed.itertuples()]
    parsed["grounding"] = [g.score for g in scored]
    parsed["vacuous"] = [g.vacuous for g in scored]
    parsed["from_history"] = [g.from_history for g in scored]
    summary = {"rationales": len(rationales), "parsed": len(parsed), **grounding_summary(parsed),
               "template_versions": sorted(set(map(str, rationales["template_version"])))}
    examples = {kind: parsed[parsed["vacuous"] == vacuous][["step1", "step2", "grounding"]].head(args.examples)
                .to_dict("records") for kind, vacuous in (("grounded", False), ("vacuous", True))}
    for key, value in summary.items():
        print(f"{key:>20}: {value}")
    for kind, rows in examples.items():
        print(f"\n{kind}:")
        for row in rows:
            print(f"  [{row['grounding']:.2f}] {row['step1']} -> {row['step2']}")
    save(f"grounding_{args.label or args.workspace.name}", {**summary, "examples": examples})


if __name__ == "__main__":
    main()
