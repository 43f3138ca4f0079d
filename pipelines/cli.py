"""The ``reland`` command line: one subcommand per step, plus ``reland run`` for the whole job."""
from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import click

from components.config import (BACKBONE_NAMES, DATASET_FORMATS, SWEEP_BUDGETS, VARIANT_NAMES, Config, available_presets,
                               load_config)
from components.errors import InputError
from components.workspace import Workspace
from validation.gate import ValidationFailed


class _Context:
    def __init__(self, workspace: str, preset: str | None, config_file: str | None, quiet: bool):
        self.workspace = Workspace(workspace)
        self.preset, self.config_file, self.progress = preset, config_file, not quiet

    def config(self, **overrides) -> Config:
        return load_config(self.preset, self.config_file, overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--workspace", "-w", default="workspace", show_default=True, envvar="RELAND_WORKSPACE",
              help="Folder that holds every artefact of this run; point two runs at two folders.")
@click.option("--preset", type=click.Choice(available_presets()), default=None,
              help="Dataset preset (default: 'synthetic', or the preset named in --config).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML file overriding preset fields (may name 'preset: NAME').")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (ours or the libraries').")
@click.pass_context
def cli(ctx: click.Context, workspace: str, preset: str | None, config_file: str | None, quiet: bool) -> None:
    """RELAND: LLM reasoning pools for recommenders (seed users -> rationales -> features for every user)."""
    if quiet:  # the libraries' own bars too (transformers' GGUF conversion, Feast, GX), in every subprocess
        os.environ["TQDM_DISABLE"] = os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    ctx.obj = _Context(workspace, preset, config_file, quiet)


def _run_step(obj: _Context, config: Config, name: str):
    """Run step ``name`` now (asked for by name, so never skipped) and record it, so that a later
    ``reland run`` or study finds it current instead of repeating it."""
    from components.steps import run_step

    return run_step(config, obj.workspace, name, obj.progress, force=True)[0]


@cli.group()
def data() -> None:
    """Load, generate, filter and split interaction data."""


@data.command("prepare")
@click.option("--source", default=None, help="'synthetic' or a dataset folder (overrides the preset).")
@click.option("--format", "fmt", type=click.Choice(["auto", *DATASET_FORMATS]),
              default=None, help="Dataset format (default: detected from the folder's files).")
@click.option("--users", type=int, default=None, help="Synthetic data: number of users.")
@click.pass_obj
def data_prepare(obj: _Context, source: str | None, fmt: str | None, users: int | None) -> None:
    """Stage the dataset, apply the k-core filter, write both splits into WORKSPACE/data."""
    overrides = {"data": {k: v for k, v in {"source": source, "format": fmt}.items() if v}}
    if users:
        overrides["synthetic"] = {"users": users}
    config = obj.config(**overrides)
    _print_stats(_run_step(obj, config, "prepare_data"))
    click.echo(f"tables written to {obj.workspace.root / 'data'}")


@data.command("validate")
@click.pass_obj
def data_validate(obj: _Context) -> None:
    """Run the Great Expectations gate on the staged interactions (results in WORKSPACE/validation)."""
    click.echo(f"passed: {_run_step(obj, obj.config(), 'validate_interactions')['rows']:,} interactions")


@data.command("stats")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["auto", *DATASET_FORMATS]),
              default="auto", show_default=True, help="Dataset format; 'auto' detects it from the files.")
@click.option("--k-core", "k", type=int, default=5, show_default=True, help="Minimum interactions per user and item.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data_stats(path: str, fmt: str, k: int, as_json: bool) -> None:
    """Users, items, interactions and sparsity of the dataset at PATH, as loaded and after k-core filtering."""
    from components.data.prepare import dataset_stats

    stats = dataset_stats(Path(path), fmt, k)
    click.echo(json.dumps(stats, indent=2) if as_json else "")
    if not as_json:
        _print_stats(stats)


@data.command("generate")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--users", type=int, default=2000, show_default=True, help="Number of users (10 to 10^9).")
@click.option("--clusters", type=int, default=12, show_default=True, help="Latent taste clusters.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same data.")
@click.pass_obj
def data_generate(obj: _Context, output: str, users: int, clusters: int, seed: int) -> None:
    """Write a synthetic dataset (staged Parquet) to OUTPUT, in blocks with bounded memory."""
    from components.config import SyntheticConfig
    from components.data.synthetic import generate

    meta = generate(SyntheticConfig(users=users, clusters=clusters, seed=seed), Path(output), progress=obj.progress)
    click.echo(f"{meta.rows:,} interactions of {meta.n_users:,} users over {meta.n_items:,} items -> {output}")


@cli.group()
def encoder() -> None:
    """Train the behaviour encoder (heterogeneous GAT or LightGCN) and embed every user."""


def _encoder_overrides(kind: str | None, task: str | None, epochs: int | None, item_text: bool | None) -> dict:
    values = {"kind": kind, "task": task, "epochs": epochs, "item_text": item_text}
    return {"encoder": {k: v for k, v in values.items() if v is not None}}


_kind = click.option("--kind", type=click.Choice(["gat", "lightgcn"]), default=None,
                     help="Encoder (default from the configuration: gat).")
_task = click.option("--task", type=click.Choice(["cf", "seq"]), default=None,
                     help="Whose training split builds the graph: collaborative filtering or sequential.")


@encoder.command("train")
@_kind
@_task
@click.option("--epochs", type=int, default=None, help="Maximum epochs (early stopping may end sooner).")
@click.option("--item-text/--no-item-text", default=None, help="GAT: add items' MiniLM text embeddings.")
@click.pass_obj
def encoder_train(obj: _Context, kind, task, epochs, item_text) -> None:
    """Build the graph from training edges only, train with BPR, keep the best checkpoint."""
    report = _run_step(obj, obj.config(**_encoder_overrides(kind, task, epochs, item_text)), "train_encoder")
    click.echo(f"graph: {report['graph']['nodes']}")
    v, p = report["validation"], report["popularity"]
    click.echo(f"best epoch {report['best_epoch']}: validation recall@20 {v['recall@20']:.4f} ndcg@20 {v['ndcg@20']:.4f}"
               f" (popularity {p['recall@20']:.4f} / {p['ndcg@20']:.4f})")


@encoder.command("embed")
@_kind
@_task
@click.pass_obj
def encoder_embed(obj: _Context, kind, task) -> None:
    """Write every user's behaviour vector (and every item's) to WORKSPACE/encoder."""
    summary = _run_step(obj, obj.config(**_encoder_overrides(kind, task, None, None)), "embed_users")
    click.echo(f"{summary['users']:,} users ({summary['cold_users']:,} cold) and {summary['items']:,} items embedded "
               f"in {summary['seconds']:.1f}s")


@encoder.command("validate")
@click.pass_obj
def encoder_validate(obj: _Context) -> None:
    """Run the Great Expectations gate on the behaviour vectors (one finite vector per user)."""
    click.echo(f"passed: {_run_step(obj, obj.config(), 'validate_behaviour')['rows']:,} user vectors")


@cli.group()
def seeds() -> None:
    """Sample the seed users whose histories the LLM reasons about."""


@seeds.command("sample")
@click.option("--budget", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Seeds as a fraction of users, in (0, 1] (default 0.1 = 10%).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Seeds as an absolute number (instead of --budget).")
@click.option("--strategy", type=click.Choice(["adaptive", "random"]), default=None,
              help="adaptive: K-means + interaction-count importance (paper); random: the w/o a.s. ablation.")
@click.pass_obj
def seeds_sample(obj: _Context, budget: float | None, count: int | None, strategy: str | None) -> None:
    """Sample seeds from the behaviour vectors into WORKSPACE/pool/seeds.parquet.

    The seeds of a smaller budget are always among those of a larger one (same data, encoder and
    seed), so the rationales already generated for a large budget serve every smaller one."""
    if budget is not None and count is not None:
        raise click.UsageError("give --budget (a fraction) or --count (a number), not both")
    size = {"budget": budget, "count": None} if budget is not None else {"count": count} if count else {}
    summary = _run_step(obj, obj.config(seeds={**size, **({"strategy": strategy} if strategy else {})}),
                        "sample_seeds")
    click.echo(f"{summary['seeds']:,} seeds of {summary['users']:,} users ({summary['strategy']}"
               f"{', K=' + str(summary['clusters']) if 'clusters' in summary else ''}); mean interactions "
               f"{summary['mean_interactions_seeds']:.1f} vs {summary['mean_interactions_users']:.1f} overall")


@cli.group()
def rationales() -> None:
    """Ask the LLM for step-by-step recommendation rationales of the seed users."""


@rationales.command("generate")
@click.option("--prompt", type=click.Choice(["cot", "direct"]), default=None,
              help="cot: the paper's Step 0-2 template; direct: the w/o r.p. ablation.")
@click.option("--backend", type=click.Choice(["local", "openai"]), default=None,
              help="local transformers model (default SmolLM2-135M) or an OpenAI-compatible server.")
@click.option("--base-url", default=None, help="openai backend: server URL, e.g. http://localhost:8000/v1.")
@click.option("--model", default=None, help="Model name (sent to the server; part of the cache key).")
@click.pass_obj
def rationales_generate(obj: _Context, prompt, backend, base_url, model) -> None:
    """Generate (or resume) rationales; finished calls are never paid for twice."""
    values = {"prompt": prompt, "backend": backend, "base_url": base_url, "model": model}
    summary = _run_step(obj, obj.config(llm={k: v for k, v in values.items() if v is not None}), "generate_rationales")
    _print_llm_summary(summary)


@rationales.command("export-batch")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--all-users", is_flag=True, help="A prompt for every user (per-user inference), not only the seeds.")
@click.option("--no-strict", is_flag=True,
              help="Only the prompts, no re-asks; exporting again after importing their answers then writes "
                   "only the re-asks those answers need.")
@click.option("--prompt", type=click.Choice(["cot", "direct"]), default=None, help="Template (default: the config's).")
@click.pass_obj
def rationales_export_batch(obj: _Context, output: str, all_users: bool, no_strict: bool, prompt: str | None) -> None:
    """Write the prompts the cache cannot answer as an OpenAI batch file (JSONL).

    Run it where there is a GPU with 'python -m models.llm.batch OUTPUT RESULTS' (torch and
    transformers only) or vLLM's run_batch, then 'reland rationales import-batch'.
    """
    from components.rationales import export_batch

    config = obj.config(**({"llm": {"prompt": prompt}} if prompt else {}))
    summary = export_batch(config, obj.workspace, Path(output), every_user=all_users, strict=not no_strict)
    click.echo(f"{summary['requests']:,} requests to answer (of {summary['prompts']:,} prompts) -> {summary['file']}")


@rationales.command("import-batch")
@click.argument("requests", type=click.Path(exists=True, dir_okay=False))
@click.argument("results", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def rationales_import_batch(obj: _Context, requests: str, results: str) -> None:
    """Store a batch run's answers in the workspace's LLM response cache (then run 'rationales generate')."""
    from components.rationales import import_batch

    summary = import_batch(obj.workspace, Path(requests), Path(results))
    click.echo(f"imported {summary['imported']:,} answers of {summary['requests']:,} requests "
               f"({summary['failed']:,} failed, {summary['unknown']:,} not in the request file, "
               f"{summary['duplicates']:,} repeated answers skipped)")


def _print_llm_summary(summary: dict) -> None:
    per_user = summary["per_user_inference"]
    click.echo(f"{summary['ok']:,}/{summary['seeds']:,} rationales ({summary['failed']} failed); LLM calls this run "
               f"{summary['calls']:,}, cache hits {summary['cache_hits']:,}")
    click.echo(f"tokens {summary['prompt_tokens']:,} in / {summary['completion_tokens']:,} out, "
               f"{summary['llm_seconds']:.0f} LLM-s, ~${summary['estimated_usd']:.2f}; per-user inference for all "
               f"{summary['users']:,} users would take {per_user['calls']:,} calls, {per_user['llm_seconds']:.0f} LLM-s, "
               f"~${per_user['estimated_usd']:.2f}")


@cli.group()
def pool() -> None:
    """Build, inspect, roll back and query the LLM Reasoning Pool in Milvus."""


@pool.command("build")
@click.pass_obj
def pool_build(obj: _Context) -> None:
    """Embed the rationales' Step-2 text and write a new pool version (Milvus collection)."""
    summary = _run_step(obj, obj.config(), "build_pool")
    click.echo(f"pool v{summary['version']}: {summary['size']:,} seeds in {summary['collection']} at {obj.workspace.located(summary['uri'])} "
               f"({summary['failed']} failed, {summary['too_short']} too short, {summary['near_duplicates']} duplicates)")


@pool.command("retrieve")
@click.option("--top-k", type=int, default=None, help="Rationales mixed per user (1 = the paper's Eq. 3).")
@click.pass_obj
def pool_retrieve(obj: _Context, top_k: int | None) -> None:
    """Give every user the rationale of its most similar seed: WORKSPACE/features/user_rationale_embedding.parquet."""
    summary = _run_step(obj, obj.config(pool={"top_k": top_k} if top_k else {}), "retrieve_rationales")
    click.echo(f"{summary['users']:,} users assigned from pool v{summary['pool_version']} ({summary['pool_size']:,} seeds), "
               f"mean similarity {summary['mean_similarity']:.3f}, {summary['users_per_s']:,} users/s")


@pool.command("versions")
@click.pass_obj
def pool_versions_command(obj: _Context) -> None:
    """List pool versions; the one in use is starred."""
    from components.pool import current_pool, pool_versions

    current = current_pool(obj.workspace).version
    for v in pool_versions(obj.workspace):
        click.echo(f"{'*' if v.version == current else ' '} v{v.version}  {v.size:>8,} seeds  {v.created_at}  {v.collection}")


@pool.command("use")
@click.argument("version", type=int)
@click.pass_obj
def pool_use(obj: _Context, version: int) -> None:
    """Point the platform at pool VERSION (roll back or forward): moves the Milvus alias
    reland_pool_current and pool/current.json; re-run 'pool retrieve' after."""
    from components.pool import use_pool_version

    click.echo(f"now using pool v{use_pool_version(obj.workspace, version).version}")


@pool.command("search")
@click.argument("user_id")
@click.option("--limit", type=int, default=3, show_default=True, help="Seeds to show.")
@click.pass_obj
def pool_search(obj: _Context, user_id: str, limit: int) -> None:
    """Online path: the nearest seeds of USER_ID through Milvus search, with their rationales."""
    import pyarrow.parquet as pq

    from components.data.tables import vectors_of
    from components.pool import current_pool, search_pool

    table = pq.read_table(obj.workspace.user_vectors, filters=[("user_id", "=", user_id)])
    if table.num_rows == 0:
        raise click.BadParameter(f"unknown user {user_id!r}", param_hint="USER_ID")
    for hit in search_pool(current_pool(obj.workspace), vectors_of(table.column("vector")), limit)[0]:
        click.echo(f"{hit['similarity']:.3f}  seed {hit['seed_user_id']}\n  Step 1: {hit['step1']}\n  Step 2: {hit['step2']}")


@cli.group()
def features() -> None:
    """Serve user_rationale_embedding through Feast (registry and SQLite online store in the workspace)."""


@features.command("apply")
@click.pass_obj
def features_apply(obj: _Context) -> None:
    """Register the entity, feature view and the ranker's feature service."""
    click.echo(f"applied: {', '.join(_run_step(obj, obj.config(), 'apply_features'))}")


@features.command("validate")
@click.pass_obj
def features_validate(obj: _Context) -> None:
    """Run the Great Expectations gate on user_rationale_embedding (results and data docs in WORKSPACE/validation)."""
    from components.features import validate_features

    summary = validate_features(obj.config(), obj.workspace)
    click.echo(f"passed: {summary['rows']:,} rows; data docs at {obj.workspace.located(summary['data_docs'])}")


@features.command("materialise")
@click.pass_obj
def features_materialise(obj: _Context) -> None:
    """Validate, then copy new feature rows into the online store (incremental, idempotent)."""
    summary = _run_step(obj, obj.config(), "materialise_features")
    click.echo(f"materialised {', '.join(summary['views'])} up to {summary['end']}")


@features.command("show")
@click.argument("user_id")
@click.pass_obj
def features_show(obj: _Context, user_id: str) -> None:
    """Print USER_ID's online features, as a ranking service gets them."""
    from components.features import online_features

    row = {k: v[0] for k, v in online_features(obj.workspace, [user_id], obj.config().features).items()}
    if row.get("seed_user_id") is None:
        raise click.BadParameter(f"no online features for user {user_id!r} (unknown user, or not materialised)",
                                 param_hint="USER_ID")
    embedding = row.pop("rationale_embedding")
    click.echo(json.dumps({**row, "rationale_embedding": f"[{len(embedding)} floats: {embedding[0]:.4f}, "
                                                         f"{embedding[1]:.4f}, …]"}, indent=2))


BACKBONE_CHOICE = click.Choice(BACKBONE_NAMES)
VARIANT_CHOICE = click.Choice(VARIANT_NAMES)


def _ranker_overrides(epochs: int | None, **fields) -> dict:
    return {"ranker": {k: v for k, v in {**fields, "epochs": epochs}.items() if v is not None}}


@cli.group()
def ranker() -> None:
    """Train and evaluate downstream recommenders on the platform's features (Feast historical retrieval)."""


@ranker.command("train")
@click.option("--backbone", type=BACKBONE_CHOICE, default=None, help="Backbone (default: the config's, sasrec).")
@click.option("--variant", type=VARIANT_CHOICE, default=None,
              help="id | item_text (+f_item) | reland (+f_item and Eq. 5 fusion) | rationale_only (w/o i.f.) "
                   "| seed_vector (+f_item fusing the seed's behaviour vector: no-LLM control).")
@click.option("--epochs", type=int, default=None, help="Most epochs (early stopping on validation NDCG@10).")
@click.option("--repeat", type=click.IntRange(0, 19), default=None,
              help="Repeat index k: trains with seed + k into ranker/<backbone>-<variant>-r<k> (what --repeats "
                   "of a study trains; parallel processes can fill a study this way).")
@click.option("--retrain", is_flag=True, help="Train again even if this configuration is already trained.")
@click.pass_obj
def ranker_train(obj: _Context, backbone, variant, epochs, repeat, retrain) -> None:
    """Train one ranker, test it by full ranking, track the run in MLflow (experiment 'rankers-<dataset>').

    A ranker already trained with the same configuration and features is logged again, not retrained.
    """
    from pipelines.studies import tracked_ranker
    from components.tracking import use_experiment

    config = obj.config(**_ranker_overrides(epochs, backbone=backbone, variant=variant, repeat=repeat))
    use_experiment(obj.workspace, f"rankers-{config.name}")
    result = tracked_ranker(config, obj.workspace, obj.progress, retrain=retrain)
    click.echo(f"{result['ranker']}: test NDCG@10 {result['test_ndcg@10']:.4f}, HR@10 {result['test_hit@10']:.4f} "
               f"({result['test_users']:,} users; best epoch {result['best_epoch']} of {result['epochs']})")


@cli.group()
def experiments() -> None:
    """The paper's studies as MLflow experiments: Table 2, the seed-budget sweep, the ablations."""


def _experiment_options(function):
    function = click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
                            help="Train the cells (every repeat) in this many single-threaded processes first, "
                                 "then log them; 2 on a 2-core machine. Cells already trained are skipped.")(function)
    function = click.option("--epochs", type=int, default=None, help="Most epochs per ranker.")(function)
    function = click.option("--repeats", type=click.IntRange(1, 20), default=1, show_default=True,
                            help="Training seeds per cell: mean ± sd, paired tests on seed-averaged per-user "
                                 "metrics.")(function)
    return click.option("--backbones", default=None, help="Comma-separated backbones (default: the study's).")(function)


def _names(value: str | None, default: tuple) -> tuple:
    return tuple(v.strip() for v in value.split(",")) if value else default


@experiments.command("table2")
@_experiment_options
@click.option("--variants", default=None, help="Comma-separated variants (default: id,item_text,reland).")
@click.pass_obj
def experiments_table2(obj: _Context, backbones, epochs, repeats, jobs, variants) -> None:
    """Every backbone x variant, with paired t-tests; registers the best ranker in the model registry."""
    from pipelines.studies import VARIANTS, table2

    frame = table2(obj.config(**_ranker_overrides(epochs)), obj.workspace, _names(backbones, BACKBONE_NAMES),
                   _names(variants, VARIANTS), obj.progress, repeats=repeats, jobs=jobs)
    click.echo(frame.to_string(index=False))


@experiments.command("sweep")
@_experiment_options
@click.option("--budgets", default=None, help="Comma-separated seed budgets (default: 0.01,...,1.0).")
@click.pass_obj
def experiments_sweep(obj: _Context, backbones, epochs, repeats, jobs, budgets) -> None:
    """RELAND at each seed budget against +f_item: quality versus LLM calls, tokens and seconds (ROI plot)."""
    from pipelines.studies import seed_sweep, sweep_calls

    chosen = tuple(float(b) for b in _names(budgets, SWEEP_BUDGETS))
    frame = seed_sweep(obj.config(**_ranker_overrides(epochs)), obj.workspace, chosen,
                       _names(backbones, ("sasrec", "lightgcn")), obj.progress, repeats, jobs)
    click.echo(frame.to_string(index=False))
    calls = sweep_calls(frame)
    click.echo(f"LLM calls paid: {calls['sweep_llm_calls_paid']:,} (nested seeds: each budget pays only for the seeds "
               f"the smaller ones lacked; the workspace's own budget counts what its pool paid); budgets that "
               f"shared no seeds would pay {calls['sweep_llm_calls_unnested']:,}")


@experiments.command("recommend-budget")
@click.option("--backbone", type=click.Choice(BACKBONE_NAMES), default="sasrec", show_default=True)
@click.option("--value-per-point", type=click.FloatRange(min=0, min_open=True), required=True,
              help="What one percentage point of NDCG@10 lift over +f_item is worth to you, in $.")
@click.option("--users", type=click.IntRange(min=1), default=None,
              help="Your user count: the pool's cost is scaled to it (default: the sweep's users).")
@click.option("--log-x", is_flag=True, help="Logarithmic cost axis in the PNG plot.")
@click.pass_obj
def experiments_recommend_budget(obj: _Context, backbone: str, value_per_point: float, users: int | None,
                                 log_x: bool) -> None:
    """The seed budget that maximises value: fit lift = a(1 - e^(-b x)) (or a power law) to the sweep,
    subtract the pool's cost at your scale, and give the best budget with a 90% range.

    Assumes the sweep's lift carries over to your data and the pool's cost grows linearly with the
    seeds. Logged to the sweep's MLflow experiment with the plots."""
    from pipelines.studies import sweep_recommendation

    r = sweep_recommendation(obj.config(), obj.workspace, backbone, value_per_point, users, log_x)
    if r["budget"] == 0:
        click.echo(f"{backbone}: no budget pays at ${value_per_point:,.0f} per lift point (fitted {r['curve']} curve, "
                   f"lift at 100% {r['lift_at_full_budget_points']:+.2f} points)")
    else:
        click.echo(f"{backbone}: recommended budget {r['budget']:.2%} (90% range {r['budget_low']:.2%}-"
                   f"{r['budget_high']:.2%}), expected lift {r['expected_lift_points']:+.2f} points of NDCG@10, "
                   f"net ${r['net_value_usd']:,.2f} ({r['curve']} curve)")
        if r["extrapolated"]:
            click.echo(f"note: {r['budget']:.2%} lies outside the budgets the sweep measured "
                       f"({r['measured_budget_min']:.2%}-{r['measured_budget_max']:.2%}); the curve is extrapolated "
                       f"there, so sweep that budget before relying on it")
    click.echo(f"for {r['users']:,} users: {r['seeds']:,} seeds, {r.get('pool_calls', 0):,.0f} LLM calls, "
               f"{r.get('pool_accelerator_hours', 0):,.2f} accelerator-hours, ${r.get('pool_usd', 0):,.2f}; "
               f"asking every user would cost ${r.get('per_user_inference_usd', 0):,.2f} "
               f"({r.get('per_user_inference_calls', 0):,.0f} calls)")
    click.echo("plots: " + ", ".join(r["plots"]))


@experiments.command("ablations")
@_experiment_options
@click.pass_obj
def experiments_ablations(obj: _Context, backbones, epochs, repeats, jobs) -> None:
    """RELAND against w/o r.p. (direct prompting), w/o a.s. (random seeds) and w/o i.f. (no item text)."""
    from pipelines.studies import ablations

    _run_backbone_study(obj, ablations, backbones, epochs, repeats, jobs)


def _run_backbone_study(obj: _Context, study, backbones: str | None, epochs: int | None, repeats: int,
                        jobs: int) -> None:
    """Run a study over backbones (default: SASRec and LightGCN, the paper's ablation backbones), print its table."""
    frame = study(obj.config(**_ranker_overrides(epochs)), obj.workspace, _names(backbones, ("sasrec", "lightgcn")),
                  obj.progress, repeats, jobs=jobs)
    click.echo(frame.to_string(index=False))


@experiments.command("controls")
@_experiment_options
@click.option("--cells", default=None, help="Comma-separated cells besides +f_item (default: reland,seed_vector,"
                                            "shuffled,profile); 'profile' alone needs no LLM pool.")
@click.pass_obj
def experiments_controls(obj: _Context, backbones, epochs, repeats, jobs, cells) -> None:
    """What carries RELAND's effect: controls with shuffled assignment, profile text (no LLM), seed vectors.

    Each control runs through the same pool, retrieval, Feast and fusion path as RELAND and is
    compared with +f_item and with RELAND (MLflow experiment 'controls-<dataset>').
    """
    from pipelines.studies import CONTROL_CELLS, controls

    frame = controls(obj.config(**_ranker_overrides(epochs)), obj.workspace, _names(backbones, ("sasrec", "lightgcn")),
                     obj.progress, repeats, _names(cells, CONTROL_CELLS), jobs)
    click.echo(frame.to_string(index=False))


@experiments.command("tune")
@click.option("--backbone", type=BACKBONE_CHOICE, default=None, help="Backbone (default: the config's).")
@click.option("--variant", type=VARIANT_CHOICE, default=None, help="Variant (default: the config's).")
@click.option("--trials", type=click.IntRange(1, 500), default=20, show_default=True,
              help="Settings tried in all (a resumed search counts the finished ones).")
@click.option("--epochs", type=int, default=None, help="Most epochs per trial.")
@click.pass_obj
def experiments_tune(obj: _Context, backbone, variant, trials, epochs) -> None:
    """Search the backbone's (and the fusion's) settings on the validation split with Optuna.

    Writes the best values to WORKSPACE/tuning/tuned.yaml; pass it to any study with --config.
    """
    from pipelines.tuning import tune

    config = obj.config(**_ranker_overrides(epochs, backbone=backbone, variant=variant))
    result = tune(config, obj.workspace, trials, obj.progress)
    click.echo(f"{result['key']}: best validation NDCG@10 {result['best_valid_ndcg@10']:.4f} after "
               f"{result['trials']} trials with {result['best']}")
    click.echo(f"written to {result['file']}; use it with: reland -w {obj.workspace.root} --config {result['file']} …")


@cli.group("pipelines")
def pipelines_group() -> None:
    """Compile the Kubeflow pipelines to IR YAML, or submit them to a cluster with their schedules."""


@pipelines_group.command("compile")
@click.option("--output", default="pipelines-ir", show_default=True, type=click.Path(file_okay=False),
              help="Folder for one IR YAML per pipeline.")
@click.option("--image", envvar="RELAND_IMAGE", default="reland-platform:0.1.0", show_default=True,
              help="The image every task runs ('make image' builds it; push it where the cluster pulls from).")
def pipelines_compile(output: str, image: str) -> None:
    """Write reasoning_pool, user_rationales, train_ranker and seed_budget_sweep as Kubeflow IR YAML."""
    os.environ["RELAND_IMAGE"] = image  # kfp reads a component's image when its module is imported, below
    from pipelines.kubeflow import compile_all

    for path in compile_all(Path(output)):
        click.echo(path)


@pipelines_group.command("submit")
@click.option("--host", required=True, help="Kubeflow Pipelines API endpoint, e.g. https://kubeflow.example.com/pipeline.")
@click.option("--pvc", default="reland-workspace", show_default=True,
              help="The PersistentVolumeClaim holding the workspace, mounted at /mnt/reland in every task.")
@click.option("--cluster-workspace", default="/mnt/reland/workspace", show_default=True,
              help="The workspace folder as the tasks see it: inside /mnt/reland.")
@click.option("--no-schedule", is_flag=True, help="Only the first runs, no weekly/daily recurring runs.")
@click.pass_obj
def pipelines_submit(obj: _Context, host: str, pvc: str, cluster_workspace: str, no_schedule: bool) -> None:
    """Run the weekly and daily pipelines on a cluster and schedule them (weekly pool, daily features)."""
    from pipelines.kubeflow import MOUNT, submit

    if not cluster_workspace.startswith(MOUNT + "/"):
        raise click.UsageError(f"--cluster-workspace must be inside {MOUNT}, where the volume is mounted")
    try:
        submitted = submit(host, cluster_workspace, obj.config(), recurring=not no_schedule, pvc_name=pvc)
    except Exception as exc:  # the cluster's answer (unreachable, refused, unauthorised): one line, not a traceback
        reason = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"error: could not submit to Kubeflow at {host}: {type(exc).__name__}: {reason[:300]}", err=True)
        sys.exit(2)
    for name, run_id in submitted.items():
        click.echo(f"{name}: {run_id}")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--model-uri", default=None, help="MLflow model URI (default: models:/reland-ranker-<dataset>@champion, the alias registration sets).")
@click.pass_obj
def serve(obj: _Context, host: str, port: int, model_uri: str | None) -> None:
    """Start the ranking service: POST /rank, GET /health, GET /ready (docs at /docs)."""
    import uvicorn

    from serving import create_app

    uvicorn.run(create_app(obj.workspace, obj.config(), model_uri), host=host, port=port, log_level="warning")


@cli.command("run")
@click.option("--dataset", default=None, help="Preset to run instead of the synthetic default, e.g. ml-100k.")
@click.option("--runner", type=click.Choice(["kfp", "inline"]), default="kfp", show_default=True,
              help="kfp: the Kubeflow pipelines on the local runner (a subprocess per task); inline: one process.")
@click.pass_obj
def run(obj: _Context, dataset: str | None, runner: str) -> None:
    """Run the platform end to end: data -> behaviour vectors -> seeds -> rationales -> pool -> features -> rankers.

    Steps already up to date are skipped: rerun after a failure to resume.
    """
    from pipelines.main_job import run_main_job

    if dataset:
        obj.preset = dataset
    options = (f" --preset {obj.preset}" if obj.preset else "") + \
        (f" --config {Path(obj.config_file).resolve()}" if obj.config_file else "")
    run_main_job(obj.config(), obj.workspace, progress=obj.progress, echo=click.echo, runner=runner,
                 cli_options=options)


def _print_stats(stats: dict) -> None:
    click.echo(f"{'':10}{'users':>12}{'items':>12}{'interactions':>15}{'sparsity':>11}")
    for label in ("loaded", "filtered"):
        s = stats[label]
        name = label if label == "loaded" else f"{stats.get('k_core', 5)}-core"
        click.echo(f"{name:10}{s['users']:>12,}{s['items']:>12,}{s['interactions']:>15,}{s['sparsity']:>11.4%}")
    if stats.get("synthetic_timestamps"):
        click.echo("note: this dataset records order only; timestamps were synthesised from position")
    for note in stats.get("notes", []):
        click.echo(f"note: {note}")


def main() -> None:
    """Console entry point: bad input or a failed gate ends with a clear message and exit code 2, no traceback."""
    warnings.filterwarnings("ignore", message='Field name "vector_enabled"')  # raised by Feast's own config classes
    try:
        cli(standalone_mode=True)
    except (InputError, ValueError, FileNotFoundError, ValidationFailed) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
