"""The main job behind ``reland run``: every step in order on one workspace, timed, then a summary."""
from __future__ import annotations

import time
from typing import Callable

import pandas as pd

from components.config import Config
from components.features import online_features
from components.steps import STEPS, record_name, run_step, step_record
from components.tracking import served_model_uri, tracking_uri, use_experiment
from components.workspace import RUN_SUMMARY, Workspace, write_json


MAIN_STEPS = tuple(name for name in STEPS if name != "train_ranker")  # the registry's order; rankers come after
RANKER_VARIANTS = ("item_text", "reland")  # the ranker without and with the rationale features


def run_main_job(config: Config, workspace: Workspace, progress: bool = True,
                 echo: Callable[[str], None] = print, runner: str = "kfp", cli_options: str = "") -> dict:
    """Run the platform end to end, print what it produced and where, write ``run.json``.

    ``cli_options`` (e.g. `` --config run.yaml``) go into the printed follow-up commands, so they
    open the same configuration (and so the same registered model) as this run.

    ``runner="kfp"`` executes the reasoning_pool, user_rationales and train_ranker pipelines
    with the local Kubeflow runner (each task a subprocess); ``"inline"`` runs the same steps
    in this process.  Either way steps already up to date are skipped, so a run killed
    part-way (say during rationale generation) resumes without paying again for an LLM call.
    Ends with a real ``get_online_features`` call through the ranker's feature service.
    """
    from pipelines.studies import with_ranker

    echo(f"== RELAND run: dataset '{config.name}', workspace {workspace.root}, runner {runner}")
    started_at = time.time()
    rankers = {variant: with_ranker(config, variant=variant) for variant in RANKER_VARIANTS}
    if runner == "kfp":
        from pipelines.kubeflow import run_local

        for pipeline in ("reasoning_pool", "user_rationales"):
            echo(f"-- pipeline {pipeline} (kfp.local.SubprocessRunner)")
            run_local(pipeline, workspace.root, config)
        for variant in RANKER_VARIANTS:
            echo(f"-- pipeline train_ranker ({config.ranker.backbone}, {variant})")
            run_local("train_ranker", workspace.root, config, backbone=config.ranker.backbone, variant=variant)
    results, timings = {}, {}
    for name, step_config in [(name, config) for name in MAIN_STEPS] + [("train_ranker", c) for c in rankers.values()]:
        key = record_name(step_config, name)
        if runner == "kfp":  # the pipelines ran every step: read what they recorded
            record = step_record(step_config, workspace, name)
            if record is None:
                raise RuntimeError(f"the Kubeflow pipelines finished without recording step {key!r} in "
                                   f"{workspace.root / 'steps'}")
            results[key] = record["result"]
        else:
            results[key], _ = run_step(step_config, workspace, name, progress)
            record = step_record(step_config, workspace, name)
        timings[key] = record["seconds"]
        fresh = record["finished_at"] >= started_at
        echo(f"   {key.replace('_', ' ')}: " + (f"{record['seconds']:.1f}s" if fresh else "up to date, skipped"))
    data, encoder = results["prepare_data"], results["train_encoder"]
    llm, pool, retrieval = results["generate_rationales"], results["build_pool"], results["retrieve_rationales"]
    echo(f"data: {data['filtered']['users']:,} users, {data['filtered']['items']:,} items, "
         f"{data['filtered']['interactions']:,} interactions after {data['k_core']}-core")
    echo(f"encoder ({config.encoder.kind}): validation recall@20 {encoder['validation']['recall@20']:.4f} "
         f"vs popularity {encoder['popularity']['recall@20']:.4f}")
    echo(f"seeds: {results['sample_seeds']['seeds']:,}; LLM answers {llm['calls'] + llm['cache_hits']:,} "
         f"({llm['calls']:,} paid when generated, {llm['cache_hits']:,} from the cache of earlier attempts), "
         f"{llm['prompt_tokens'] + llm['completion_tokens']:,} tokens, "
         f"{llm['llm_seconds']:.0f} LLM-s, ~${llm['estimated_usd']:.2f}; per-user inference would need "
         f"{llm['per_user_inference']['calls']:,} calls")
    echo(f"pool v{pool['version']}: {pool['size']:,} rationales in Milvus ({workspace.located(pool['uri'])})")
    echo(f"user_rationale_embedding: {retrieval['users']:,} users, mean similarity {retrieval['mean_similarity']:.3f} "
         f"-> {workspace.located(retrieval['table'])}")
    echo(f"validation (Great Expectations): passed on {results['materialise_features']['validated_rows']:,} rows; "
         f"report {workspace.validation_report('user_rationale_embedding')}")
    sample = pd.read_parquet(workspace.user_rationales, columns=["user_id"])["user_id"].iloc[0]
    online = {k: v[0] for k, v in online_features(workspace, [sample], config.features).items()}
    echo(f"Feast get_online_features(ranker, user_id={sample}): seed {online['seed_user_id']}, similarity "
         f"{online['similarity']:.3f}, pool v{online['pool_version']}, rationale_embedding "
         f"[{len(online['rationale_embedding'])} floats]")
    for variant in RANKER_VARIANTS:
        ranker = results[record_name(rankers[variant], "train_ranker")]
        label = "with rationales (RELAND)" if variant == "reland" else "without rationales (+f_item)"
        echo(f"ranker {ranker['backbone']} {label}: test NDCG@10 {ranker['test_ndcg@10']:.4f}, "
             f"HR@10 {ranker['test_hit@10']:.4f} ({ranker['test_users']:,} users){_fusion_note(ranker)}")
    verdict = _lift_verdict(rankers, results, workspace, pool)
    if verdict:
        echo(verdict)
    model_uri = _register_best(rankers, results, workspace, started_at)
    echo(f"registered ranker: {model_uri}")
    _log_cost_quality(rankers, results, workspace, llm)
    command = f"reland -w {workspace.root}{cli_options}"
    echo(f"look again: {command} features show {sample}")
    echo(f"MLflow UI:  mlflow ui --backend-store-uri {tracking_uri(workspace)}")
    echo(f"serve:      {command} serve --port 8000   (POST /rank)")
    summary = {"dataset": config.name, "runner": runner, "seconds": timings,
               "wall_seconds": round(time.time() - started_at, 2)}
    write_json(workspace.file(RUN_SUMMARY), summary)
    echo(f"== done in {summary['wall_seconds']:.0f}s; every artefact is under {workspace.root}")
    return summary


def _fusion_note(ranker: dict) -> str:
    """How a residual fusion ended: kept (validation improved) with its blend, or left out."""
    fitted = ranker.get("backbone_run", {})
    if "fusion_kept" not in fitted:
        return ""
    if fitted["fusion_kept"]:
        return f"; fusion kept on validation, blend {fitted['blend']:.2f}"
    return "; fusion not kept (no validation gain), so the +f_item backbone as it is"


def _lift_verdict(rankers: dict[str, Config], results: dict, workspace: Workspace, pool: dict) -> str | None:
    """One line saying why, when RELAND lands below +f_item: whether the gap is significant, and the pool."""
    from pipelines.studies import paired_p_value
    from components.ranker import load_per_user

    base, fused = (results[record_name(rankers[v], "train_ranker")] for v in RANKER_VARIANTS)
    if fused["test_ndcg@10"] >= base["test_ndcg@10"]:
        return None
    p = paired_p_value(*(load_per_user(workspace, r["ranker"]) for r in (fused, base)), "ndcg@10")
    grounding = pool.get("kept", {})
    return (f"RELAND is below +f_item here by {1 - fused['test_ndcg@10'] / base['test_ndcg@10']:.1%} NDCG@10, "
            f"{'significant' if p < 0.05 else 'not significant'} (paired p = {p:.2f}, one training seed); "
            f"the pool has {pool['size']:,} rationales, mean grounding {grounding.get('mean_grounding', 0):.2f}: "
            "see docs/results.md")


def _log_cost_quality(rankers: dict[str, Config], results: dict, workspace: Workspace, llm: dict) -> None:
    """A 'main job' MLflow run holding what each variant cost in LLM work and what it scored (a table)."""
    import mlflow

    from components.tracking import start_run

    rows = []
    for variant, ranker_config in rankers.items():
        ranker = results[record_name(ranker_config, "train_ranker")]
        paid = variant == "reland"  # +f_item reads no rationale
        rows.append({"variant": variant, "llm_calls": llm["calls"] + llm["cache_hits"] if paid else 0,
                     "tokens": llm["prompt_tokens"] + llm["completion_tokens"] if paid else 0,
                     "usd": llm["estimated_usd"] if paid else 0.0, "ndcg@10": ranker["test_ndcg@10"],
                     "hr@10": ranker["test_hit@10"]})
    use_experiment(workspace, f"rankers-{next(iter(rankers.values())).name}")
    with start_run("main job"):
        mlflow.log_table(pd.DataFrame(rows), artifact_file="cost_quality.json")


def _register_best(rankers: dict[str, Config], results: dict, workspace: Workspace, started_at: float) -> str:
    """Register the ranker with the better validation NDCG@10 (again only if a ranker was retrained)."""
    from pipelines.studies import register_ranker

    served = served_model_uri(next(iter(rankers.values())))
    fresh = any(step_record(c, workspace, "train_ranker")["finished_at"] >= started_at for c in rankers.values())
    if not fresh and (workspace.root / "mlflow").exists():
        return served
    best = max(rankers.values(), key=lambda c: results[record_name(c, "train_ranker")]["best_valid_ndcg@10"])
    use_experiment(workspace, f"rankers-{best.name}")
    register_ranker(best, workspace, results[record_name(best, "train_ranker")]["mlflow_run_id"])
    return served
