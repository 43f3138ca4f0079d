"""The platform's Kubeflow pipelines; compile them to IR YAML, submit them to a cluster, or run them here.

* ``reasoning_pool`` (weekly, paper §3.4): prepare → validate → train encoder → embed →
  validate → seeds → rationales → pool.
* ``user_rationales`` (daily): embed users with the weekly encoder → retrieval in
  independent shards (``dsl.ParallelFor``) → merge → item text → Feast apply →
  validate and materialise.
* ``train_ranker``: one backbone and variant on Feast's historical features, tracked in MLflow.
* ``seed_budget_sweep``: one branch per seed budget (``dsl.ParallelFor``), each building its
  own pool in a linked workspace and training a RELAND ranker; the runs land in MLflow.

Locally, :func:`run_local` executes the same pipelines with ``kfp.local.SubprocessRunner``
(each task a subprocess of this Python environment); this kfp version runs ``ParallelFor``
locally too, so nothing is rewritten for the laptop.
"""

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import List

import yaml
from kfp import compiler, dsl, kubernetes

from components import kubeflow as components
from components.config import SWEEP_BUDGETS, Config
from components.workspace import CHECKPOINT, FEAST_REGISTRY, ITEM_TEXT, POOL_POINTER, USER_VECTORS

SHARDS = 4  # retrieval shards of the daily pipeline (compile-time: the fan-out is static)
MOUNT = "/mnt/reland"  # where every task mounts the workspace volume (the workspace is a folder inside it)
WORKSPACE = f"{MOUNT}/workspace"
PVC = "reland-workspace"
# (CPU, memory) each task requests; the rest get DEFAULT_RESOURCES.  The rationale step may also
# request GPUs: ``RELAND_RATIONALE_GPUS`` in the environment of ``reland pipelines compile`` (kfp
# builds each pipeline when this module is imported, so it is read then).
RATIONALE_GPUS = int(os.environ.get("RELAND_RATIONALE_GPUS", "0"))
RESOURCES = {"train_encoder": ("4", "16G"), "embed_users": ("4", "16G"), "generate_rationales": ("4", "16G"),
             "build_pool": ("2", "8G"), "retrieve_shard": ("2", "8G"), "retrieve_all": ("2", "8G"),
             "embed_item_text": ("2", "8G"), "train_ranker": ("4", "16G"), "prepare_data": ("2", "8G")}
DEFAULT_RESOURCES = ("1", "2G")
# Tasks whose output is a function of their parameters alone: Kubeflow may cache them.  Every other
# task reads the workspace volume, whose content its parameters do not show (the weekly run's
# inputs never change), so it always runs; the steps' own fingerprints skip what is up to date.
PURE = {"resolve_settings", "seed_budget_branch"}


class _OnCluster:
    """The components as a pipeline calls them, each task placed for a cluster: the workspace
    volume claim mounted, the caching policy, CPU and memory requests (and the rationale step's GPU)."""

    def __init__(self, pvc_name: str):
        self.pvc_name = pvc_name

    def __getattr__(self, name: str):
        component = getattr(components, name)

        def placed(**arguments) -> dsl.PipelineTask:
            task = component(**arguments)
            kubernetes.mount_pvc(task, pvc_name=self.pvc_name, mount_path=MOUNT)
            task.set_caching_options(name in PURE)
            cpu, memory = RESOURCES.get(name, DEFAULT_RESOURCES)
            task.set_cpu_request(cpu).set_memory_request(memory)
            if name == "generate_rationales" and RATIONALE_GPUS:
                task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(RATIONALE_GPUS)
            return task

        return placed


def resolved(op: _OnCluster, preset: str, config: str, seed_budget: float = 0.0, llm_model: str = "",
             llm_base_url: str = "") -> str:
    """The run's configuration from its typed parameters (a cached task).  Inside a ParallelFor it is
    resolved again in the loop: kfp's local runner hands a loop task its loop item in place of an
    upstream task's output parameter."""
    return op.resolve_settings(preset=preset, overrides=config, seed_budget=seed_budget, llm_model=llm_model,
                               llm_base_url=llm_base_url).output


@dsl.pipeline(name="reasoning-pool", description="Weekly: behaviour encoder -> seeds -> LLM rationales -> Milvus pool")
def reasoning_pool(workspace: str = WORKSPACE, pvc_name: str = PVC, preset: str = "synthetic", seed_budget: float = 0.0,
                   llm_model: str = "", llm_base_url: str = "", config: str = ""):
    op = _OnCluster(pvc_name)
    settings = resolved(op, preset, config, seed_budget, llm_model, llm_base_url)
    data = op.prepare_data(workspace=workspace, config=settings)
    checked = op.validate_interactions(workspace=workspace, config=settings, data=data.outputs["data"])
    encoder = op.train_encoder(workspace=workspace, config=settings, data=data.outputs["data"]).after(checked)
    vectors = op.embed_users(workspace=workspace, config=settings, encoder=encoder.outputs["encoder"])
    gate = op.validate_behaviour(workspace=workspace, config=settings, vectors=vectors.outputs["vectors"])
    seeds = op.sample_seeds(workspace=workspace, config=settings, vectors=vectors.outputs["vectors"]).after(gate)
    rationales = op.generate_rationales(workspace=workspace, config=settings, seeds=seeds.outputs["seeds"])
    op.build_pool(workspace=workspace, config=settings, rationales=rationales.outputs["rationales"])


@dsl.pipeline(name="user-rationales", description="Daily: embed users -> retrieve in shards -> validate -> Feast")
def user_rationales(workspace: str = WORKSPACE, pvc_name: str = PVC, preset: str = "synthetic", config: str = ""):
    op = _OnCluster(pvc_name)
    settings = resolved(op, preset, config)
    encoder = op.locate(workspace=workspace, relative=CHECKPOINT)
    pool = op.locate(workspace=workspace, relative=POOL_POINTER)
    vectors = op.embed_users(workspace=workspace, config=settings, encoder=encoder.outputs["found"])
    with dsl.ParallelFor(items=list(range(SHARDS))) as shard:
        part = op.retrieve_shard(workspace=workspace, config=resolved(op, preset, config), shard=shard, shards=SHARDS,
                                 pool=pool.outputs["found"], vectors=vectors.outputs["vectors"])
    features = op.merge_shards(workspace=workspace, config=settings, shards=SHARDS).after(part)
    items = op.embed_item_text(workspace=workspace, config=settings, data=vectors.outputs["vectors"])
    registry = op.apply_features(workspace=workspace, config=settings, features=features.outputs["features"],
                                 items=items.outputs["items"])
    op.materialise_features(workspace=workspace, config=settings, registry=registry.outputs["registry"])


@dsl.pipeline(name="train-ranker", description="A ranker on Feast's historical features, tracked in MLflow")
def train_ranker(workspace: str = WORKSPACE, pvc_name: str = PVC, preset: str = "synthetic", config: str = "",
                 backbone: str = "sasrec", variant: str = "reland"):
    op = _OnCluster(pvc_name)
    registry = op.locate(workspace=workspace, relative=FEAST_REGISTRY)
    op.train_ranker(workspace=workspace, config=resolved(op, preset, config), backbone=backbone, variant=variant,
                    registry=registry.outputs["found"])


@dsl.pipeline(name="seed-budget-sweep", description="RELAND quality against LLM cost, one branch per seed budget")
def seed_budget_sweep(workspace: str = WORKSPACE, pvc_name: str = PVC, preset: str = "synthetic", llm_model: str = "",
                      llm_base_url: str = "", config: str = "", budgets: List[float] = list(SWEEP_BUDGETS),
                      backbone: str = "sasrec"):
    op = _OnCluster(pvc_name)
    vectors = op.locate(workspace=workspace, relative=USER_VECTORS)
    items = op.locate(workspace=workspace, relative=ITEM_TEXT)
    with dsl.ParallelFor(items=budgets, parallelism=2) as budget:
        branch = op.seed_budget_branch(workspace=workspace, budget=budget,
                                       config=resolved(op, preset, config, 0.0, llm_model, llm_base_url))
        where, settings = branch.outputs["workspace"], branch.outputs["config"]
        seeds = op.sample_seeds(workspace=where, config=settings, vectors=vectors.outputs["found"])
        rationales = op.generate_rationales(workspace=where, config=settings, seeds=seeds.outputs["seeds"])
        pool = op.build_pool(workspace=where, config=settings, rationales=rationales.outputs["rationales"])
        features = op.retrieve_all(workspace=where, config=settings, pool=pool.outputs["pool"],
                                   vectors=vectors.outputs["found"])
        registry = op.apply_features(workspace=where, config=settings, features=features.outputs["features"],
                                     items=items.outputs["found"])
        op.train_ranker(workspace=where, config=settings, backbone=backbone, variant="reland",
                        registry=registry.outputs["registry"])


PIPELINES = {"reasoning_pool": reasoning_pool, "user_rationales": user_rationales, "train_ranker": train_ranker,
             "seed_budget_sweep": seed_budget_sweep}
SCHEDULES = {"reasoning_pool": "0 0 3 * * 1", "user_rationales": "0 0 4 * * *"}  # weekly Monday 03:00, daily 04:00


def config_text(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"))


def compile_all(output: Path) -> list[Path]:
    """One IR YAML per pipeline in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pipeline in PIPELINES.items():
        path = output / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        paths.append(path)
    return paths


def submit(host: str, workspace: str, config: Config, recurring: bool = True, pvc_name: str = PVC) -> dict[str, str]:
    """Runs of the weekly and daily pipelines on a cluster, and their recurring schedules."""
    import kfp

    warnings.filterwarnings("ignore", category=FutureWarning, module="kfp.client")  # a note on KFP server versions
    client = kfp.Client(host=host)
    arguments = {"workspace": workspace, "config": config_text(config), "pvc_name": pvc_name}
    experiment = client.create_experiment(f"reland-{config.name}")
    submitted = {}
    for name in ("reasoning_pool", "user_rationales"):
        run = client.create_run_from_pipeline_func(PIPELINES[name], arguments=arguments,
                                                   experiment_id=experiment.experiment_id, run_name=f"{name} (first)")
        submitted[name] = run.run_id
        if recurring:
            job = client.create_recurring_run(experiment.experiment_id, f"{name} ({SCHEDULES[name]})",
                                              cron_expression=SCHEDULES[name], params=arguments,
                                              pipeline_package_path=str(_compiled(name)), max_concurrency=1)
            submitted[f"{name} schedule"] = job.recurring_run_id
    return submitted


def _compiled(name: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="reland-ir-")) / f"{name}.yaml"
    compiler.Compiler().compile(PIPELINES[name], str(path))
    return path


def run_local(name: str, workspace: Path, config: Config, verbose: bool = False, **arguments) -> None:
    """Execute a pipeline on this machine with the local Kubeflow runner (tasks are subprocesses).

    The runner prints every task's executor input and output; unless ``verbose`` that goes to
    ``workspace/kfp/<pipeline>.log`` and only a failure's last lines reach the console.
    """
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workspace / "kfp"))
    warnings.filterwarnings("ignore", message=".*no effect in the current local runner")  # the cluster's resources
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # inherited by the task processes
    log = workspace / "kfp" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle, _kfp_log_level(logging.INFO if verbose else logging.WARNING), \
            (contextlib.nullcontext() if verbose else contextlib.redirect_stdout(handle)):
        try:
            PIPELINES[name](workspace=str(workspace), config=config_text(config), **arguments)
        except Exception:
            handle.flush()
            sys.stderr.write("".join(log.read_text().splitlines(keepends=True)[-40:]) + f"\n(full log: {log})\n")
            raise


@contextlib.contextmanager
def _kfp_log_level(level: int):
    """kfp's local runner resets the root logger to INFO around each run; keep it at ``level`` instead."""
    from kfp.local import logging_utils

    original = logging_utils.local_logger_context

    @contextlib.contextmanager
    def context():
        with original():
            logging.getLogger().setLevel(level)
            yield

    logging_utils.local_logger_context = context
    try:
        yield
    finally:
        logging_utils.local_logger_context = original
