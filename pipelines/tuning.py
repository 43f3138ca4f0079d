"""``reland experiments tune``: a small search of one ranker's settings on the validation split (Optuna).

The space holds what the backbone declares (learning rate, weight decay, dropout) and, for
variants with the RELAND fusion, the fusion's regularisers (only those for the default
residual fusion, which is fitted on the frozen +f_item backbone: tune ``item_text`` first).  Trial 0 is the current
settings, so the chosen values are never worse on validation than the defaults.  Each trial
trains with ``test=False`` (the test split is never scored) and is one nested MLflow run;
the Optuna study lives in ``tuning/optuna.db``, so an interrupted search resumes, several
``tune`` processes started one after another search the same study in parallel, and a trial
whose process died (no heartbeat for two intervals) is failed and run again with its values.  The
best values go to ``tuning/tuned.yaml`` under ``ranker.tuned["<backbone>-<variant>"]``: a
configuration file the studies read with ``--config``.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from components.config import Config
from pipelines.studies import with_ranker
from components.ranker import FUSION_DEFAULTS, fuses, ranker_settings, train_ranker
from components.tracking import log_epoch, start_run, use_experiment
from components.workspace import OPTUNA_STORE, TUNED, Workspace, atomic_path

# setting -> (low, high, log scale); searched only where the backbone (or its fusion) has it
SPACE = {"lr": (1e-4, 1e-2, True), "weight_decay": (1e-8, 1e-3, True), "dropout": (0.0, 0.6, False),
         "fusion_dropout": (0.0, 0.7, False), "fusion_input_dropout": (0.0, 0.5, False),
         "fusion_weight_decay": (1e-8, 1e-2, True), "gate_bias": (0.0, 3.0, False)}
HEARTBEAT_S = 60  # a running trial's liveness signal; silent for 2x this, it is taken as dead


def search_space(config: Config) -> dict[str, tuple[float, float, bool]]:
    """The backbone's settings (and the fusion's, for fused variants); a residual fusion sits on the
    +f_item backbone as tuned for ``item_text``, so only the fusion's own settings are searched."""
    settings = ranker_settings(config.ranker)
    residual = fuses(config) and config.ranker.fusion_training == "residual"
    return {k: v for k, v in SPACE.items() if k in settings and (k in FUSION_DEFAULTS if residual else
                                                                 fuses(config) or k not in FUSION_DEFAULTS)}


def _start_values(config: Config, space: dict) -> dict[str, float]:
    """The current settings, moved inside the space (a zero weight decay becomes the space's lowest)."""
    settings = ranker_settings(config.ranker)
    return {k: min(max(float(settings[k]), low), high) for k, (low, high, _) in space.items()}


def open_study(config: Config, workspace: Workspace):
    """The configured ranker's Optuna study in ``tuning/optuna.db`` (created on first use), with
    heartbeats, so a trial whose process died is failed and retried once with its values."""
    import warnings

    import optuna

    # Heartbeats and their retry callback are marked experimental; that is no news to the user each run.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{workspace.file(OPTUNA_STORE)}", heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    study = optuna.create_study(study_name=f"{config.name}-{config.ranker.backbone}-{config.ranker.variant}",
                                storage=storage, direction="maximize", load_if_exists=True)
    # Seeded by the trials already there: a search stays reproducible, while a second worker on the same
    # study (or a resumed search) draws its own values instead of repeating the first worker's; the
    # constant liar keeps parallel workers away from each other's running trials.
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials), constant_liar=True)
    return study


def tune(config: Config, workspace: Workspace, trials: int = 20, progress: bool = True) -> dict:
    """Search ``trials`` settings for the configured backbone and variant; write and return the best."""
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_space(config)
    key = f"{config.ranker.backbone}-{config.ranker.variant}"
    study = open_study(config, workspace)
    if not study.trials:
        study.enqueue_trial(_start_values(config, space))

    def objective(trial: optuna.Trial) -> float:
        values = {k: trial.suggest_float(k, low, high, log=log) for k, (low, high, log) in space.items()}
        with start_run(run_name=f"{key} trial {trial.number}", nested=True):
            mlflow.log_params({**values, "trial": trial.number})
            result = train_ranker(with_ranker(config, **values), workspace, progress, save=False, test=False,
                                  on_epoch=log_epoch)
            mlflow.log_metrics({"best_valid_ndcg_at_10": result["best_valid_ndcg@10"],
                                "best_epoch": result["best_epoch"]})
        return result["best_valid_ndcg@10"]

    use_experiment(workspace, f"tune-{config.name}")
    finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    with start_run(run_name=f"tune {key}"):
        study.optimize(objective, n_trials=max(0, trials - finished), show_progress_bar=progress)
        best = {k: float(v) for k, v in study.best_params.items()}
        mlflow.log_params({f"best.{k}": v for k, v in best.items()})
        mlflow.log_metric("best_valid_ndcg_at_10", study.best_value)
        path = write_tuned(workspace.file(TUNED), key, best)
        mlflow.log_artifact(str(path))
    return {"key": key, "best": best, "best_valid_ndcg@10": study.best_value, "trials": len(study.trials),
            "file": str(path)}


def write_tuned(path: Path, key: str, values: dict[str, float]) -> Path:
    """Merge ``values`` into ``ranker.tuned[key]`` of the YAML file at ``path`` (atomically)."""
    content = yaml.safe_load(path.read_text()) if path.exists() else {}
    content.setdefault("ranker", {}).setdefault("tuned", {})[key] = values
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(content, sort_keys=True))
    return path
