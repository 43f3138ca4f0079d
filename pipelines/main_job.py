"""The main job behind ``reland run``: every step in order on one workspace, timed, then a summary."""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from components.config import Config
from components.features import online_features
from components.retrieval import TABLE
from components.steps import run_step
from components.workspace import Workspace, write_json


MAIN_STEPS = ("prepare_data", "validate_interactions", "train_encoder", "embed_users", "validate_behaviour",
              "sample_seeds", "generate_rationales", "build_pool", "retrieve_rationales", "embed_item_text",
              "apply_features", "materialise_features")


def run_main_job(config: Config, workspace: Workspace, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict:
    """Run each step in order (skipping those already up to date), print what it produced, write ``run.json``.

    Killed part-way (say during rationale generation), a rerun resumes: finished steps are
    skipped and no answered LLM call is paid for again.  Ends with a real
    ``get_online_features`` call through the ranker's feature service.
    """
    echo(f"== RELAND run: dataset '{config.name}', workspace {workspace.root}")
    results, timings = {}, {}
    for name in MAIN_STEPS:
        started = time.perf_counter()
        results[name], ran = run_step(config, workspace, name, progress)
        timings[name] = round(time.perf_counter() - started, 2)
        echo(f"-- {name.replace('_', ' ')}: " + (f"{timings[name]:.1f}s" if ran else "up to date, skipped"))
    data, encoder = results["prepare_data"], results["train_encoder"]
    llm, pool, retrieval = results["generate_rationales"], results["build_pool"], results["retrieve_rationales"]
    echo(f"data: {data['filtered']['users']:,} users, {data['filtered']['items']:,} items, "
         f"{data['filtered']['interactions']:,} interactions after {data['k_core']}-core")
    echo(f"encoder ({config.encoder.kind}): validation recall@20 {encoder['validation']['recall@20']:.4f} "
         f"vs popularity {encoder['popularity']['recall@20']:.4f}")
    echo(f"seeds: {results['sample_seeds']['seeds']:,}; LLM calls this run {llm['calls']:,} (cache hits "
         f"{llm['cache_hits']:,}), {llm['prompt_tokens'] + llm['completion_tokens']:,} tokens, "
         f"{llm['llm_seconds']:.0f} LLM-s, ~${llm['estimated_usd']:.2f}; per-user inference would need "
         f"{llm['per_user_inference']['calls']:,} calls")
    echo(f"pool v{pool['version']}: {pool['size']:,} rationales in Milvus ({pool['uri']})")
    echo(f"user_rationale_embedding: {retrieval['users']:,} users, mean similarity {retrieval['mean_similarity']:.3f} "
         f"-> {retrieval['table']}")
    echo(f"validation (Great Expectations): passed on {results['materialise_features']['validated_rows']:,} rows; "
         f"report {workspace.root / 'validation' / 'user_rationale_embedding.json'}")
    sample = pd.read_parquet(workspace.path("features", TABLE), columns=["user_id"])["user_id"].iloc[0]
    online = {k: v[0] for k, v in online_features(workspace, [sample], config.features).items()}
    echo(f"Feast get_online_features(ranker, user_id={sample}): seed {online['seed_user_id']}, similarity "
         f"{online['similarity']:.3f}, pool v{online['pool_version']}, rationale_embedding "
         f"[{len(online['rationale_embedding'])} floats]")
    echo(f"look again: .venv/bin/reland -w {workspace.root} features show {sample}")
    summary = {"dataset": config.name, "seconds": timings, "total_seconds": round(sum(timings.values()), 2)}
    write_json(workspace.path("", "run.json"), summary)
    echo(f"== done in {summary['total_seconds']:.0f}s; every artefact is under {workspace.root}")
    return summary
