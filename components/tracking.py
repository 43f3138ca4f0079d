"""MLflow tracking for ranker runs: one experiment per study, one run per configuration.

The store is SQLite in ``workspace/mlflow`` (artefacts beside it) unless ``MLFLOW_TRACKING_URI``
points elsewhere.  Each ranker run records its configuration, the data hash, the pool version
and the LLM cost of the pool it read (calls, tokens, LLM-seconds, dollars), per-epoch curves
and its final test metrics.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from components.config import Config, RankerSettings
from components.data.tables import INTERACTIONS
from components.workspace import (MLFLOW_ARTIFACTS, MLFLOW_LOCK, MLFLOW_ROOT_MARK, MLFLOW_STORE, RANKER_METRICS,
                                  Workspace, exclusive, read_json)

if TYPE_CHECKING:  # components.ranker (torch) is imported when a ranker trains
    from components.ranker import RankerResult

logging.getLogger("mlflow").setLevel(logging.ERROR)  # e.g. the pickle-format notice on every log_model
logging.getLogger("alembic").setLevel(logging.WARNING)


def metric_names(values: dict) -> dict:
    """MLflow names allow no '@': ndcg@10 is logged as ndcg_at_10."""
    return {k.replace("@", "_at_"): v for k, v in values.items()}


def registered_model_name(config: Config) -> str:
    """The model-registry name of a dataset's served ranker."""
    return f"reland-ranker-{config.name}"


CHAMPION = "champion"  # the registry alias of the version a ranking service serves


def served_model_uri(config: Config) -> str:
    return f"models:/{registered_model_name(config)}@{CHAMPION}"


# The user's MLflow server, read once at import: mlflow.set_tracking_uri() writes this variable itself,
# so read later it would name the store of the first workspace this process opened, not the user's.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(workspace: Workspace) -> str:
    return USER_TRACKING_URI or f"sqlite:///{workspace.file(MLFLOW_STORE)}"


def open_tracking(workspace: Workspace) -> str:
    """Point MLflow at the workspace's store (or the user's ``MLFLOW_TRACKING_URI``), relocated first
    if the workspace was moved or copied since the store last ran: see :func:`relocate_store`.

    Under the workspace's MLflow lock, the store is opened once here, so a new SQLite store is
    created and migrated by one process while parallel ones wait (two migrating it at once fail)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    with exclusive(workspace.file(MLFLOW_LOCK)):
        if not USER_TRACKING_URI:
            relocate_store(workspace)
        uri = tracking_uri(workspace)
        mlflow.set_tracking_uri(uri)
        MlflowClient().search_experiments(max_results=1)
    return uri


def relocate_store(workspace: Workspace) -> bool:
    """Rewrite the SQLite store's references to the workspace's former root (experiment and run
    artefact locations, registered model sources: MLflow keeps them absolute), so that a moved
    or copied workspace reads its own artefacts and never another's.  True if anything moved."""
    mark, store = workspace.file(MLFLOW_ROOT_MARK), workspace.file(MLFLOW_STORE)
    old, new = (mark.read_text() if mark.exists() else None), str(workspace.root)
    moved = bool(old and old != new and store.exists())
    if moved:
        with contextlib.closing(sqlite3.connect(store)) as db, db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                for column in [c[1] for c in db.execute(f'PRAGMA table_info("{table}")')
                               if c[2].upper().startswith(("TEXT", "VARCHAR"))]:
                    db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                               f'WHERE instr("{column}", ?) > 0', (old + "/", new + "/", old + "/"))
    if old != new:
        mark.write_text(new)
    return moved


def use_experiment(workspace: Workspace, name: str) -> str:
    """Point MLflow at the workspace's store and the experiment ``name`` (created with local artefacts)."""
    import mlflow

    open_tracking(workspace)
    with exclusive(workspace.file(MLFLOW_LOCK)):  # two processes must not both create it
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=(workspace.root / MLFLOW_ARTIFACTS / name).as_uri())
    experiment_id = mlflow.set_experiment(name).experiment_id
    close_orphaned_runs(experiment_id)
    return experiment_id


def start_run(run_name: str, nested: bool = False):
    """``mlflow.start_run`` tagged with this process, so a run its killed process left RUNNING can be told apart."""
    import mlflow

    return mlflow.start_run(run_name=run_name, nested=nested,
                            tags={"reland.host": socket.gethostname(), "reland.pid": str(os.getpid())})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs left RUNNING by a process of this host that no longer exists (a killed study)."""
    from mlflow.tracking import MlflowClient

    client, host = MlflowClient(), socket.gethostname()
    orphans = [run.info.run_id for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
               if run.data.tags.get("reland.host") == host and not _alive(int(run.data.tags.get("reland.pid", "0")))]
    for run_id in orphans:
        client.set_terminated(run_id, "KILLED")
    return orphans


def data_hash(workspace: Workspace) -> str:
    """sha256 (first 16 hex digits) of the prepared interactions file: which data a run saw."""
    digest = hashlib.sha256()
    with open(workspace.prepared / INTERACTIONS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def pool_context(workspace: Workspace) -> dict:
    """The pool a ranker's rationale features came from, and what its LLM calls cost."""
    summary_path = workspace.rationale_summary
    if not summary_path.exists():
        return {}
    summary = read_json(summary_path)
    context = {"llm_model": summary["model"], "template_version": summary["template_version"],
               "seeds": summary["seeds"], "seed_fraction": round(summary["seeds"] / max(summary["users"], 1), 4),
               "llm_calls": summary["calls"] + summary["cache_hits"],  # every answer the pool used, re-asks too
               "llm_calls_paid": summary["calls"], "llm_prompt_tokens": summary["prompt_tokens"],
               "llm_completion_tokens": summary["completion_tokens"], "llm_seconds": summary["llm_seconds"],
               "accelerator_hours": summary["llm_seconds"] / 3600,
               "llm_usd": summary["estimated_usd"], "rationales_ok": summary["ok"],
               **{k: summary[k] for k in ("mean_grounding", "vacuous_share") if k in summary}}
    current = workspace.pool_pointer
    if current.exists():
        context["pool_version"] = read_json(current)["version"]
    return context


def ranker_params(config: Config, workspace: Workspace) -> dict:
    """The ranker's configuration, the settings it trained with (defaults, tuned values and overrides
    resolved), and what its data and pool were."""
    from components.ranker import ranker_settings

    given = config.ranker.model_dump(exclude={"tuned", *RankerSettings.model_fields})
    params = {f"ranker.{k}": v for k, v in given.items()}
    params.update({f"ranker.{k}": v for k, v in ranker_settings(config.ranker).items()})
    params.update({"control": control_label(config), "dataset": config.name, "data_hash": data_hash(workspace), "seed": config.seed,
                   "seeds.strategy": config.seeds.strategy, "seeds.budget": config.seeds.budget,
                   "llm.prompt": config.llm.prompt})
    return params


def control_label(config: Config) -> str:
    """'none', or which control the run is: shuffled assignment, profile rationales, seed vectors
    (a variant that fuses nothing from the pool is no control, whatever the pool settings)."""
    from components.ranker import fuses

    if not fuses(config):
        return "none"
    controls = [name for name, on in (("shuffled", config.pool.assignment == "shuffled"),
                                      ("profile", config.llm.source == "profile"),
                                      ("seed_vector", config.ranker.variant == "seed_vector")) if on]
    return "+".join(controls) or "none"


def train_and_track(config: Config, workspace: Workspace, progress: bool = True) -> RankerResult:
    """The ``train_ranker`` step: train and test one ranker, recorded in MLflow (parameters, per-epoch
    curve, final metrics, the pool's LLM cost) in the run a study has open for it, or in a new run of
    experiment ``rankers-<dataset>`` (the main job, the CLI, a Kubeflow task)."""
    import mlflow

    from components.ranker import train_ranker

    active = mlflow.active_run() is not None
    if not active:
        use_experiment(workspace, f"rankers-{config.name}")
    with contextlib.nullcontext() if active else start_run(config.ranker.run_name):
        mlflow.log_params({**ranker_params(config, workspace), "reused": False})
        result = train_ranker(config, workspace, progress, on_epoch=log_epoch)
        log_ranker_run(config, workspace, result, workspace.ranker(config.ranker.run_name) / RANKER_METRICS)
        return {**result, "mlflow_run_id": mlflow.active_run().info.run_id}  # where a registered version points


def log_epoch(row: dict, epoch: int) -> None:
    """One epoch of a training curve on the active MLflow run (MLflow's own charts draw it)."""
    import mlflow

    mlflow.log_metrics(metric_names({k: v for k, v in row.items() if k != "epoch"}), step=epoch)


def log_ranker_run(config: Config, workspace: Workspace, result: dict, metrics_file: Path) -> None:
    """Final metrics, LLM cost and the run's metrics file, on the active MLflow run."""
    import mlflow

    from components.ranker import fuses

    context = pool_context(workspace) if fuses(config) else {}  # +f_item's run paid no LLM call
    mlflow.log_params({k: v for k, v in context.items() if isinstance(v, str) or k == "pool_version"})
    numeric = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    numeric.update({k: v for k, v in context.items() if isinstance(v, (int, float)) and k != "pool_version"})
    fitted = result.get("backbone_run", {})
    if "fusion_kept" in fitted:  # residual fusion: whether validation kept it, and its blend
        mlflow.log_params({"fusion_kept": fitted["fusion_kept"], "backbone_reused": fitted["reused"]})
        numeric["fusion_blend"] = fitted["blend"]
    mlflow.log_metrics(metric_names(numeric))
    mlflow.log_artifact(str(metrics_file))
