"""Kubeflow Pipelines v2 components: one per step, each a thin wrapper over :func:`components.steps.run_step`.

Every component receives the workspace folder (on a cluster: a shared volume mounted at the
same path in every pod), the whole configuration as YAML text, and its upstream artefacts;
it runs its step (skipped when already up to date, see :mod:`components.steps`) and writes
a typed artefact: a small JSON manifest of what the step produced in the workspace (with
the step's result id and numbers as metadata), plus a Metrics artefact.  The artefacts make
the pipeline's data flow explicit and visible in the Kubeflow UI; the data stays in the
workspace, so nothing large is copied between tasks.

All components share one image (``RELAND_IMAGE``, default ``reland-platform:0.1.0``): the platform
installed by ``docker/install.sh`` (``make image`` builds it from ``docker/Dockerfile``).
"""

import os
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

IMAGE = os.environ.get("RELAND_IMAGE", "reland-platform:0.1.0")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def resolve_settings(preset: str, overrides: str, seed_budget: float, llm_model: str, llm_base_url: str) -> str:
    """The run's configuration (YAML) from the preset, the overrides and the typed pipeline parameters."""
    from components.kubeflow_runtime import settings_text
    return settings_text(preset, overrides, seed_budget, llm_model, llm_base_url)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(workspace: str, config: str, data: Output[Dataset], metrics: Output[Metrics]):
    """Stage, k-core filter and split the interaction log."""
    from components.kubeflow_runtime import execute
    execute("prepare_data", workspace, config, data, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_interactions(workspace: str, config: str, data: Input[Dataset], metrics: Output[Metrics]):
    """Great Expectations gate on the prepared interactions."""
    from components.kubeflow_runtime import execute
    execute("validate_interactions", workspace, config, None, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_encoder(workspace: str, config: str, data: Input[Dataset], encoder: Output[Model], metrics: Output[Metrics]):
    """Build the DGL graph and train the behaviour encoder (GAT or LightGCN)."""
    from components.kubeflow_runtime import execute
    execute("train_encoder", workspace, config, encoder, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def embed_users(workspace: str, config: str, encoder: Input[Model], vectors: Output[Dataset], metrics: Output[Metrics]):
    """Behaviour vectors M for every user and item, streamed in batches."""
    from components.kubeflow_runtime import execute
    execute("embed_users", workspace, config, vectors, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_behaviour(workspace: str, config: str, vectors: Input[Dataset], metrics: Output[Metrics]):
    """Great Expectations gate on the behaviour vectors."""
    from components.kubeflow_runtime import execute
    execute("validate_behaviour", workspace, config, None, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def sample_seeds(workspace: str, config: str, vectors: Input[Dataset], seeds: Output[Dataset], metrics: Output[Metrics]):
    """Adaptive seed sampling: K-means representativeness and Eq. (2) importance."""
    from components.kubeflow_runtime import execute
    execute("sample_seeds", workspace, config, seeds, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def generate_rationales(workspace: str, config: str, seeds: Input[Dataset], rationales: Output[Dataset],
                        metrics: Output[Metrics]):
    """Step-by-step LLM rationales for the seeds (response cache: never pays twice)."""
    from components.kubeflow_runtime import execute
    execute("generate_rationales", workspace, config, rationales, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_pool(workspace: str, config: str, rationales: Input[Dataset], pool: Output[Dataset], metrics: Output[Metrics]):
    """A new LLM Reasoning Pool version in Milvus."""
    from components.kubeflow_runtime import execute
    execute("build_pool", workspace, config, pool, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrieve_shard(workspace: str, config: str, shard: int, shards: int, pool: Input[Dataset],
                   vectors: Input[Dataset], part: Output[Dataset], metrics: Output[Metrics]):
    """Eq. (3) for shard ``shard`` of ``shards`` of the users (independent tasks)."""
    import json

    from components.kubeflow_runtime import task_config
    from components.retrieval import retrieve_rationales
    from components.workspace import Workspace
    summary = retrieve_rationales(task_config(config), Workspace(workspace), False, shard=(shard, shards))
    with open(part.path, "w") as handle:
        json.dump(summary, handle)
    for name in ("users", "mean_similarity", "users_per_s"):
        metrics.log_metric(name, float(summary[name]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def merge_shards(workspace: str, config: str, shards: int, features: Output[Dataset], metrics: Output[Metrics]):
    """Join the retrieval shards into the user_rationale_embedding table (recorded as the retrieval step)."""
    import json

    from components.kubeflow_runtime import task_config
    from components.retrieval import merge_shards as merge
    from components.steps import record_step
    from components.workspace import Workspace
    summary = merge(Workspace(workspace), shards)
    record_step(task_config(config), Workspace(workspace), "retrieve_rationales", summary, summary["seconds"])
    with open(features.path, "w") as handle:
        json.dump(summary, handle)
    metrics.log_metric("users", float(summary["users"]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def embed_item_text(workspace: str, config: str, data: Input[Dataset], items: Output[Dataset]):
    """MiniLM embeddings of every item's text (the "+f_item" feature)."""
    from components.kubeflow_runtime import execute
    execute("embed_item_text", workspace, config, items)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def apply_features(workspace: str, config: str, features: Input[Dataset], items: Input[Dataset],
                   registry: Output[Dataset]):
    """Register the Feast entities, feature views and services."""
    from components.kubeflow_runtime import execute
    execute("apply_features", workspace, config, registry)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def materialise_features(workspace: str, config: str, registry: Input[Dataset], metrics: Output[Metrics]):
    """Validate user_rationale_embedding (Great Expectations), then materialise it into the online store."""
    from components.kubeflow_runtime import execute
    execute("materialise_features", workspace, config, None, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ranker(workspace: str, config: str, backbone: str, variant: str, registry: Input[Dataset],
                 model: Output[Model], metrics: Output[Metrics]):
    """Train and test one ranker on Feast's historical features; tracked in MLflow."""
    from components.kubeflow_runtime import execute
    execute("train_ranker", workspace, config, model, metrics, ranker={"backbone": backbone, "variant": variant})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def retrieve_all(workspace: str, config: str, pool: Input[Dataset], vectors: Input[Artifact],
                 features: Output[Dataset], metrics: Output[Metrics]):
    """Eq. (3) for every user in one task (small workspaces, sweep branches)."""
    from components.kubeflow_runtime import execute
    execute("retrieve_rationales", workspace, config, features, metrics)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def locate(workspace: str, relative: str, found: Output[Artifact]):
    """An artefact another pipeline left in the workspace (the weekly encoder, the Feast registry …); fails if absent."""
    import json
    import os
    path = os.path.join(workspace, relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run the pipeline that produces it first")
    with open(found.path, "w") as handle:
        json.dump({"workspace": workspace, "path": path}, handle)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def seed_budget_branch(workspace: str, config: str, budget: float) -> NamedTuple("Branch", workspace=str, config=str):
    """A sweep branch's workspace (``studies/budget-<b>``, linked to the base) and configuration."""
    from typing import NamedTuple

    import yaml

    from components.steps import PoolVariant
    from components.workspace import Workspace
    settings = yaml.safe_load(config)
    seeds = {**settings.get("seeds", {}), "budget": budget, "count": None}  # 1.0 = every user
    base = Workspace(workspace)
    child = base if seeds == settings.get("seeds") else PoolVariant(f"budget-{budget:g}", {}).workspace(base)
    settings["seeds"] = seeds  # the base's own budget reuses its pool and rankers, as the CLI sweep does
    return NamedTuple("Branch", workspace=str, config=str)(str(child.root), yaml.safe_dump(settings))
