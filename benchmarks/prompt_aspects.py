"""Step 1's aspect list, A/B: the domain's abstract aspects against naming the profile's facts.

    python benchmarks/prompt_aspects.py WORKSPACE --preset amazon-beauty --seeds 48 --variant current|facts

Samples the first ``--seeds`` of the workspace's nested seed order into ``studies/aspect-<variant>``
(linked to WORKSPACE's data, encoder and LLM cache) and generates their rationales with the
product's step; ``facts`` replaces the system prompt's aspect list with "name its top <facts>
from the profile" for this process only.  Score each with ``benchmarks/grounding_report.py``.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from components import prompts
from components.config import load_config
from components.steps import PoolVariant, run_step
from components.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--seeds", type=int, default=48)
    parser.add_argument("--variant", choices=("current", "facts"), required=True)
    args = parser.parse_args()
    config = load_config(preset=args.preset)
    if args.variant == "facts":
        domain = prompts.DOMAINS[config.data.domain]
        prompts.DOMAINS[config.data.domain] = dataclasses.replace(domain, aspects=f"name its top {domain.facts} "
                                                                                   "from the profile")
    variant = PoolVariant(f"aspect-{args.variant}", {"seeds": {"count": args.seeds}})
    child = variant.workspace(Workspace(args.workspace))
    derived = config.model_copy(update={"seeds": config.seeds.model_copy(update=variant.overrides["seeds"])})
    for step in ("sample_seeds", "generate_rationales"):
        print(step, run_step(derived, child, step, True))


if __name__ == "__main__":
    main()
