"""The main job behind ``reland run``: every step in order on one workspace, timed, then a summary."""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from components.behaviour import embed_users, train_behaviour_encoder, write_item_text_features
from components.checks import validate_behaviour_vectors, validate_interactions
from components.config import Config
from components.data.prepare import prepare_data
from components.features import apply_features, materialise_features, online_features
from components.pool import build_pool
from components.rationales import generate_rationales
from components.retrieval import TABLE, retrieve_rationales
from components.seeds import sample_seeds
from components.workspace import Workspace, write_json


def run_main_job(config: Config, workspace: Workspace, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict:
    """Run each step, print what it produced, and write ``run.json`` with each step's seconds.

    Ends with a real ``get_online_features`` call through the ranker's feature service.
    """
    echo(f"== RELAND run: dataset '{config.name}', workspace {workspace.root}")
    steps: list[tuple[str, Callable[[], object]]] = [
        ("prepare data", lambda: prepare_data(config, workspace, progress).stats),
        ("validate interactions", lambda: validate_interactions(config, workspace)),
        ("train behaviour encoder", lambda: train_behaviour_encoder(config, workspace, progress)),
        ("embed users", lambda: embed_users(config, workspace, progress)),
        ("validate behaviour vectors", lambda: validate_behaviour_vectors(config, workspace)),
        ("sample seeds", lambda: sample_seeds(config, workspace)),
        ("generate rationales", lambda: generate_rationales(config, workspace, progress=progress)),
        ("build pool", lambda: build_pool(config, workspace, progress)),
        ("retrieve rationales", lambda: retrieve_rationales(config, workspace, progress)),
        ("embed item text", lambda: write_item_text_features(config, workspace, progress)),
        ("apply features", lambda: apply_features(config, workspace)),
        ("validate and materialise features", lambda: materialise_features(config, workspace)),
    ]
    results, timings = {}, {}
    for name, step in steps:
        started = time.perf_counter()
        results[name] = step()
        timings[name] = round(time.perf_counter() - started, 2)
        echo(f"-- {name}: {timings[name]:.1f}s")
    data, encoder = results["prepare data"], results["train behaviour encoder"]
    llm, pool, retrieval = results["generate rationales"], results["build pool"], results["retrieve rationales"]
    echo(f"data: {data['filtered']['users']:,} users, {data['filtered']['items']:,} items, "
         f"{data['filtered']['interactions']:,} interactions after {data['k_core']}-core")
    echo(f"encoder ({config.encoder.kind}): validation recall@20 {encoder['validation']['recall@20']:.4f} "
         f"vs popularity {encoder['popularity']['recall@20']:.4f}")
    echo(f"seeds: {results['sample seeds']['seeds']:,}; LLM calls this run {llm['calls']:,} (cache hits "
         f"{llm['cache_hits']:,}), {llm['prompt_tokens'] + llm['completion_tokens']:,} tokens, "
         f"{llm['llm_seconds']:.0f} LLM-s, ~${llm['estimated_usd']:.2f}; per-user inference would need "
         f"{llm['per_user_inference']['calls']:,} calls")
    echo(f"pool v{pool['version']}: {pool['size']:,} rationales in Milvus ({pool['uri']})")
    echo(f"user_rationale_embedding: {retrieval['users']:,} users, mean similarity {retrieval['mean_similarity']:.3f} "
         f"-> {retrieval['table']}")
    echo(f"validation (Great Expectations): passed on {results['validate and materialise features']['validated_rows']:,} rows; "
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
