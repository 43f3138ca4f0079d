"""LLM throughput of rationale generation: batched versus one prompt at a time.

    python benchmarks/bench_llm.py [--prompts 16] [--batch-sizes 1 8 16]

Real prompts (the cot template over synthetic seed histories) through the local default
model (SmolLM2-135M-Instruct); prints prompts/s, generated tokens/s and prompt tokens/s
for each batch size.  The cache is bypassed: every prompt is generated.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.config import load_config  # noqa: E402
from components.data.synthetic import generate_items  # noqa: E402
from components.prompts import HistoryItem, build_messages, condense_history, history_profile  # noqa: E402
from components.rationales import make_backend  # noqa: E402


def prompts(n: int) -> list[list[dict]]:
    config = load_config()
    items = generate_items(config.synthetic)
    out = []
    for user in range(n):
        rows = items.iloc[[(user * 37 + step * 5) % len(items) for step in range(8)]]
        history = [HistoryItem(r.title, r.brand, tuple(r.categories)) for r in rows.itertuples()]
        out.append(build_messages(condense_history(history, 10, 60, " > "), history_profile(history).lines(), "generic"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    args = parser.parse_args()
    conversations = prompts(args.prompts)
    config = load_config()
    runs = []
    print(f"{'batch':>6}{'prompts/s':>11}{'gen tok/s':>11}{'prompt tok/s':>14}{'s/prompt':>10}")
    for batch in args.batch_sizes:
        backend = make_backend(config.llm.model_copy(update={"batch_size": batch}))
        started = time.perf_counter()
        answers = backend.complete(conversations, config.llm.max_new_tokens)
        seconds = time.perf_counter() - started
        row = {"batch_size": batch, "prompts": len(answers), "seconds": round(seconds, 2),
               "prompts_per_s": round(len(answers) / seconds, 3),
               "generated_tokens_per_s": round(sum(a.completion_tokens for a in answers) / seconds, 1),
               "prompt_tokens_per_s": round(sum(a.prompt_tokens for a in answers) / seconds, 1)}
        runs.append(row)
        print(f"{batch:>6}{row['prompts_per_s']:>11.3f}{row['generated_tokens_per_s']:>11.1f}"
              f"{row['prompt_tokens_per_s']:>14.1f}{seconds / len(answers):>10.2f}")
    print(f"written to {save('llm', {'benchmark': 'llm throughput', 'model': config.llm.model, 'runs': runs})}")


if __name__ == "__main__":
    main()
