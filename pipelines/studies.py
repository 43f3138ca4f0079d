"""The paper's studies as MLflow experiments: Table 2, the seed-budget sweep (Figure 6), the ablations
(Figure 5) and the controls; orchestration above the steps, which never import it.

Each study is one experiment (``<study>-<dataset>``) with a parent run and one nested run per
configuration.  Studies that change the pool (budgets, prompt, seed strategy) build it in a
derived workspace under ``studies/`` that links the base workspace's data, encoder and item
text, and shares its LLM response cache, so an answer already paid for is never asked again.
Results tables (CSV and Markdown) and the ROI plot are written under ``ranker/`` and logged as
artefacts; the best Table-2 ranker (by validation NDCG@10) is registered in the model registry.
"""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

import models

from components.config import BACKBONE_NAMES, SWEEP_BUDGETS, Config
from components.ranker import base_variant, fuses, load_per_user
from components.steps import PoolVariant, is_current, run_step, step_record
from components.tracking import (CHAMPION, control_label, data_hash, log_epoch, log_ranker_run, metric_names,
                                 ranker_params, registered_model_name, start_run, use_experiment)
from components.workspace import RANKER_METRICS, RANKER_MODEL, RANKER_PER_USER, Workspace, atomic_path, read_json
from pipelines.roi import budget_table, recommend_budget, roi_html, roi_plot

# What a process loading the registered model installs: the model classes travel with it (``models/``
# imports only torch and numpy, see MODEL_CODE), so no package of ours has to be on an index.
SERVING_REQUIREMENTS = ["torch==2.2.1", "numpy<2"]
MODEL_CODE = Path(models.__file__).parent
VARIANTS = ("id", "item_text", "reland")
METRICS = ("ndcg@10", "hit@10")


def with_ranker(config: Config, **fields) -> Config:
    return config.model_copy(update={"ranker": config.ranker.model_copy(update=fields)})


def tracked_ranker(config: Config, workspace: Workspace, progress: bool = True, label: str | None = None,
                   retrain: bool = False) -> dict:
    """One ranker inside a nested MLflow run named ``label``: trained by the ``train_ranker`` step, or,
    when already trained on the same configuration and features, logged again from its saved metrics
    and curve (``reused=True``), so an interrupted study resumes where it stopped.
    """
    import mlflow

    folder = workspace.ranker(config.ranker.run_name)
    saved = None if retrain else _trained_already(config, workspace, folder)
    with start_run(label or config.ranker.run_name, nested=True):
        if saved:
            mlflow.log_params({**ranker_params(config, workspace), "reused": True})
            result = {k: v for k, v in saved.items() if k != "curve"}
            for row in saved["curve"]:
                log_epoch(row, row["epoch"])
            log_ranker_run(config, workspace, result, folder / RANKER_METRICS)
            result["mlflow_run_id"] = mlflow.active_run().info.run_id
        else:
            result, _ = run_step(config, workspace, "train_ranker", progress, force=True)
        return {**result, "workspace": str(workspace.root)}


def tracked_cell(config: Config, workspace: Workspace, repeats: int = 1, progress: bool = True,
                 label: str | None = None) -> dict:
    """One study cell trained ``repeats`` times (training seeds seed, seed + 1, …).

    With repeats, the cell is a parent MLflow run holding the mean and standard deviation of
    each test metric, with one child run per seed; ``rankers`` names the trained folders,
    whose per-user metrics :func:`cell_per_user` averages for the paired tests.
    """
    import mlflow

    label = label or config.ranker.run_name
    if repeats == 1:
        result = tracked_ranker(config, workspace, progress, label)
        return {**result, "repeats": 1, "rankers": [result["ranker"]]}
    with start_run(run_name=label, nested=True):
        mlflow.log_params({"cell": label, "repeats": repeats, "backbone": config.ranker.backbone,
                           "variant": config.ranker.variant, "control": control_label(config)})
        runs = [tracked_ranker(cfg, workspace, progress, f"{label} seed {cfg.ranker.repeat}")
                for cfg in repeat_configs(config, repeats)]
        cell = aggregate_repeats(runs)
        mlflow.log_metrics(metric_names({k: v for k, v in cell.items() if k.startswith(("test_", "best_valid"))}))
    return cell


def repeat_configs(config: Config, repeats: int) -> list[Config]:
    """The configurations of a cell's repeats: itself alone, or repeats 0 … repeats - 1 (seeds seed + k)."""
    return [config] if repeats == 1 else [with_ranker(config, repeat=r) for r in range(repeats)]


def train_cells(cells: list[tuple[Config, Workspace]], repeats: int, jobs: int, progress: bool = True) -> None:
    """Train every repeat of ``cells`` in ``jobs`` single-threaded processes before a study logs them.

    The study then finds each ranker trained (``reused``) and only logs it, so a study on a
    machine with N cores (or one GPU) takes N lanes.  A residual fusion is fitted on the stored
    unfused backbone of its seed, so each backbone trains once (as its +f_item or ID-only
    ranker) and its fusions start as soon as it is stored.  Cells already trained are skipped;
    the first failure stops the rest and fails the study.
    """
    if jobs < 2:
        return
    tasks = [(each, ws) for cfg, ws in cells for each in repeat_configs(cfg, repeats)]
    backbones: dict[str, tuple[Config, Workspace]] = {}
    for cfg, ws in tasks:
        if not fuses(cfg):
            backbones.setdefault(_backbone_id(cfg), (cfg, ws))
    fitted_on: dict[str | None, list[tuple[Config, Workspace]]] = {}  # backbone id (None: joint) -> fusions
    for cfg, ws in tasks:
        if fuses(cfg):
            base = with_ranker(cfg, variant=base_variant(cfg.ranker.variant))
            key = _backbone_id(base) if cfg.ranker.fusion_training == "residual" else None
            if key:
                backbones.setdefault(key, (base, ws))
            fitted_on.setdefault(key, []).append((cfg, ws))
    total, done = len(backbones) + sum(map(len, fitted_on.values())), 0
    context = multiprocessing.get_context("spawn")  # a forked child would inherit the parent's thread pools
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        running: dict = {}  # future -> the backbone id it trains (None: a fusion)

        def submit(key: str | None, lane: list[tuple[Config, Workspace]]) -> None:
            running.update({pool.submit(train_cell, cfg, str(ws.root)): key for cfg, ws in lane})

        for key, task in backbones.items():
            submit(key, [task])
        submit(None, fitted_on.pop(None, []))
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    key = running.pop(future)
                    name, minutes, ran = future.result()
                    submit(None, fitted_on.pop(key, []))  # the fusions on this backbone
                    done += 1
                    if progress:
                        print(f"cell {done}/{total}: {name} "
                              f"{f'trained in {minutes:.1f} min' if ran else 'already trained'}", flush=True)
        except BaseException:  # stop at the first failure (or Ctrl-C), not after every cell still queued
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _backbone_id(config: Config) -> str:
    """What makes two unfused cells one backbone (data and item text are the study's, shared)."""
    return f"{config.seed}:{config.ranker.model_dump_json()}"


def train_cell(config: Config, root: str) -> tuple[str, float, bool]:
    """One ranker through the ``train_ranker`` step (skipped when current): (name, minutes, whether it ran)."""
    started = time.perf_counter()
    _, ran = run_step(config, Workspace(root), "train_ranker", progress=False)
    return config.ranker.run_name, (time.perf_counter() - started) / 60, ran


def aggregate_repeats(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (``_sd``) of the runs' metrics, each run's best epoch;
    the first run's descriptive fields."""
    cell = {**runs[0], "repeats": len(runs), "rankers": [r["ranker"] for r in runs], "ranker": runs[0]["ranker"],
            "best_epochs": [r["best_epoch"] for r in runs]}
    for name in [k for k, v in runs[0].items() if k.startswith(("test_", "best_valid", "epoch", "best_epoch")) and
                 isinstance(v, (int, float)) and k != "test_users"]:
        values = np.array([r[name] for r in runs], float)
        cell[name] = float(values.mean())
        if name.startswith(("test_", "best_valid")):
            cell[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return cell


def cell_per_user(workspace: Workspace, rankers: list[str]) -> dict[str, np.ndarray]:
    """Each test user's metrics averaged over a cell's repeats (the same users in every repeat)."""
    runs = [load_per_user(workspace, name) for name in rankers]
    for run in runs[1:]:
        if not np.array_equal(run["users"], runs[0]["users"]):
            raise ValueError(f"{workspace.root / 'ranker'}: repeats {rankers} were tested on different users")
    return {k: runs[0][k] if k == "users" else np.mean([r[k] for r in runs], axis=0) for k in runs[0]}


def _trained_already(config: Config, workspace: Workspace, folder: Path) -> dict | None:
    """The ranker's saved metrics (result and curve) when its record is current and its files are that run's."""
    if not (is_current(config, workspace, "train_ranker")
            and all((folder / f).exists() for f in (RANKER_MODEL, RANKER_METRICS, RANKER_PER_USER))):
        return None
    saved = read_json(folder / RANKER_METRICS)
    return saved if saved["as_of"] == step_record(config, workspace, "train_ranker")["result"]["as_of"] else None


def paired_p_value(a: dict[str, np.ndarray], b: dict[str, np.ndarray], metric: str) -> float:
    """Two-sided paired t-test over the users both evaluations share."""
    common, ia, ib = np.intersect1d(a["users"], b["users"], return_indices=True)
    x, y = a[metric][ia], b[metric][ib]
    if len(common) < 2 or np.allclose(x, y):
        return 1.0
    return float(stats.ttest_rel(x, y).pvalue)


def lift_interval(a: dict[str, np.ndarray], b: dict[str, np.ndarray], metric: str) -> tuple[float, float]:
    """95% interval of a's relative lift over b, from the paired per-user differences."""
    common, ia, ib = np.intersect1d(a["users"], b["users"], return_indices=True)
    x, y = a[metric][ia], b[metric][ib]
    if len(common) < 2 or not y.mean():
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(common) - 1) * (x - y).std(ddof=1) / np.sqrt(len(common))
    return float(((x - y).mean() - half) / y.mean()), float(((x - y).mean() + half) / y.mean())


def compare(rows: list[dict], reference: dict, per_user: dict[str, dict]) -> None:
    """Add each row's p-values, lift and the lift's 95% interval against ``reference`` (in place)."""
    base = per_user[reference["key"]]
    for row in rows:
        if row is reference:
            continue
        for metric in METRICS:
            name = f"{metric}_vs_{reference['variant']}"
            row[f"p_{name}"] = paired_p_value(per_user[row["key"]], base, metric)
            row[f"lift_{name}"] = (row[f"test_{metric}"] / reference[f"test_{metric}"] - 1
                                   if reference[f"test_{metric}"] else float("nan"))
            row[f"lift_{name}_low"], row[f"lift_{name}_high"] = lift_interval(per_user[row["key"]], base, metric)


def save_table(workspace: Workspace, name: str, frame: pd.DataFrame) -> list[Path]:
    """``ranker/<name>.csv`` and ``.md`` (significance marked: * p < 0.05 against the row's reference)."""
    paths = []
    for suffix, write in ((".csv", lambda f, p: f.to_csv(p, index=False)),
                          (".md", lambda f, p: p.write_text(f.to_markdown(index=False, floatfmt=".4f") + "\n"))):
        target = workspace.studies / f"{name}{suffix}"
        with atomic_path(target) as tmp:
            write(frame, tmp)
        paths.append(target)
    return paths


def _per_user(results: list[dict]) -> dict[str, dict]:
    return {r["key"]: cell_per_user(Workspace(r["workspace"]), r["rankers"]) for r in results}


def table2(config: Config, workspace: Workspace, backbones=BACKBONE_NAMES, variants=VARIANTS,
           progress: bool = True, register: bool = True, repeats: int = 1, jobs: int = 1) -> pd.DataFrame:
    """Every backbone × variant; lifts and paired tests of +f_item and RELAND against ID-only.

    With ``repeats`` > 1 every cell is the mean ± sd over that many training seeds, and the
    paired tests run on each user's metrics averaged over the seeds.  ``jobs`` > 1 trains the
    cells in that many processes first (:func:`train_cells`).
    """
    import mlflow

    use_experiment(workspace, f"table2-{config.name}")
    cells = [(with_ranker(config, backbone=backbone, variant=variant), workspace)
             for backbone in backbones for variant in variants]
    train_cells(cells, repeats, jobs, progress)
    results = []
    with start_run(run_name="table2"):
        mlflow.log_param("repeats", repeats)
        for cfg, _ in cells:
            result = tracked_cell(cfg, workspace, repeats, progress)
            results.append({**result, "key": result["ranker"]})
        per_user = _per_user(results)
        for backbone in backbones:
            rows = [r for r in results if r["backbone"] == backbone]
            reference = next((r for r in rows if r["variant"] == "id"), None)
            if reference:
                compare(rows, reference, per_user)
            item_text = next((r for r in rows if r["variant"] == "item_text"), None)
            if item_text:
                compare([r for r in rows if r["variant"] == "reland"], item_text, per_user)
        frame = results_frame(results)
        summary = workspace.studies / f"table2-{config.name}-layout.md"
        with atomic_path(summary) as tmp:
            tmp.write_text(paper_layout(frame))
        for path in save_table(workspace, f"table2-{config.name}", frame) + [summary]:
            mlflow.log_artifact(str(path))
        if register:
            best = max(results, key=lambda r: r["best_valid_ndcg@10"])
            register_ranker(with_ranker(config, backbone=best["backbone"], variant=best["variant"]), workspace,
                            best["mlflow_run_id"])
    return frame


def paper_layout(frame: pd.DataFrame) -> str:
    """Markdown in Table 2's layout: a row per backbone, NDCG@10 and HR@10 per variant.

    Paired t-tests over test users, p < 0.05: ``*`` better than ID-only, ``†`` better than
    +f_item; ``▼`` / ``‡`` significantly worse than ID-only / +f_item.
    """
    names = {"id": "ID-only", "item_text": "+f_item", "reland": "RELAND", "rationale_only": "w/o i.f.",
             "seed_vector": "seed vector (no LLM)"}
    variants = [v for v in names if v in set(frame["variant"])]
    header = ["backbone"] + [f"{names[v]} {m}" for m in ("NDCG@10", "HR@10") for v in variants]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for backbone, rows in frame.groupby("backbone", sort=False):
        by_variant = {row["variant"]: row for _, row in rows.iterrows()}
        cells = [backbone]
        for metric in METRICS:
            for variant in variants:
                row = by_variant.get(variant)
                spread = f" ± {row[f'test_{metric}_sd']:.4f}" if row is not None and pd.notna(
                    row.get(f"test_{metric}_sd")) else ""
                cells.append("" if row is None else f"{row[f'test_{metric}']:.4f}{spread}" +
                             _marks(row, by_variant, metric))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _marks(row: pd.Series, by_variant: dict, metric: str) -> str:
    marks = ""
    for reference, better, worse in (("id", "*", "▼"), ("item_text", "†", "‡")):
        column = f"p_{metric}_vs_{reference}"
        if reference in by_variant and column in row and pd.notna(row[column]) and row[column] < 0.05:
            marks += better if row[f"test_{metric}"] > by_variant[reference][f"test_{metric}"] else worse
    return marks


def results_frame(results: list[dict]) -> pd.DataFrame:
    columns = ["backbone", "variant", "test_ndcg@10", "test_hit@10"]
    frame = pd.DataFrame(results)
    extra = [c for c in frame.columns if c.startswith(("p_", "lift_"))]
    spread = [c for c in ("test_ndcg@10_sd", "test_hit@10_sd", "repeats") if c in frame]
    keep = columns + spread + [c for c in ("budget", *POOL_COST, "label", "control") if c in frame] + \
        sorted(extra) + ["epochs", "best_epoch", "epoch_train_seconds"]
    return frame[keep]


def seed_sweep(config: Config, workspace: Workspace, budgets=SWEEP_BUDGETS, backbones=("sasrec", "lightgcn"),
               progress: bool = True, repeats: int = 1, jobs: int = 1) -> pd.DataFrame:
    """RELAND at each seed budget against the +f_item baseline: quality against LLM calls, tokens and seconds.

    A budget of 1.0 asks the LLM about every user: per-user inference, the KAR-style setting.
    Every budget's pool is built first, smallest first (nested seeds: each budget pays only for
    the seeds the last one lacked); ``jobs`` > 1 then trains the cells in parallel (:func:`train_cells`).
    """
    import mlflow

    use_experiment(workspace, f"seed-sweep-{config.name}")
    pools = {budget: PoolVariant(f"budget-{budget:g}", {"seeds": {"budget": budget, "count": None}}).build(
        config, workspace, progress) for budget in sorted(budgets)}
    baselines = [(with_ranker(config, backbone=backbone, variant="item_text"), workspace) for backbone in backbones]
    train_cells(baselines + [(with_ranker(derived, backbone=backbone, variant="reland"), child)
                             for derived, child in pools.values() for backbone in backbones], repeats, jobs, progress)
    results = []
    with start_run(run_name="seed-sweep"):
        for cfg, _ in baselines:
            baseline = tracked_cell(cfg, workspace, repeats, progress)
            results.append({**baseline, **dict.fromkeys(POOL_COST, 0), "key": f"{cfg.ranker.backbone}-baseline",
                            "label": "+f_item", "budget": 0.0})
        for budget, (derived, child) in pools.items():
            cost = _pool_cost(derived, child)
            for backbone in backbones:
                result = tracked_cell(with_ranker(derived, backbone=backbone, variant="reland"), child, repeats,
                                      progress, label=f"{backbone}-reland-{budget:g}")
                results.append({**result, **cost, "key": f"{backbone}-{budget:g}", "label": f"{budget:g}",
                                "budget": budget})
        per_user = _per_user(results)
        for backbone in backbones:
            rows = [r for r in results if r["backbone"] == backbone]
            compare(rows, next(r for r in rows if r["label"] == "+f_item"), per_user)
        frame = results_frame(results)
        log_sweep(frame)
        name = f"seed-sweep-{config.name}"
        paths = save_table(workspace, name, frame)
        for backbone in backbones:
            table = budget_table(frame, backbone)
            paths += [roi_plot(table, workspace.studies / f"roi-{config.name}-{backbone}.png"),
                      roi_html(table, workspace.studies / f"roi-{config.name}-{backbone}.html")]
        for path in paths:
            mlflow.log_artifact(str(path))
    return frame


def log_sweep(frame: pd.DataFrame) -> None:
    """The sweep in MLflow: its calls, a table artefact, and per-budget metrics with the budget in basis
    points (1% = 100) as the step, so MLflow's charts draw lift and cost against the budget."""
    import mlflow

    mlflow.log_metrics(sweep_calls(frame))
    mlflow.log_table(frame, artifact_file="seed_sweep_table.json")
    for _, row in frame[frame["label"] != "+f_item"].iterrows():
        step = int(round(row["budget"] * 10_000))
        prefix = row["backbone"]
        mlflow.log_metrics(metric_names({f"{prefix}_test_ndcg@10": row["test_ndcg@10"], f"{prefix}_test_hit@10": row["test_hit@10"],
                                         f"{prefix}_lift_ndcg@10": row["lift_ndcg@10_vs_item_text"],
                                         **{k: row[k] for k in POOL_COST}}), step=step)


def sweep_recommendation(config: Config, workspace: Workspace, backbone: str, value_per_point: float,
                         users: int | None = None, log_x: bool = False) -> dict:
    """The recommended seed budget from the workspace's sweep table, logged to the sweep's MLflow
    experiment with the plots (recommendation marked) as artefacts."""
    import mlflow

    name = f"seed-sweep-{config.name}"
    source = workspace.studies / f"{name}.csv"
    if not source.exists():
        raise FileNotFoundError(f"{source}: no sweep table; run 'reland experiments sweep' first")
    sweep = pd.read_csv(source)
    result = recommend_budget(sweep, backbone, value_per_point, users)
    table = budget_table(sweep, backbone)
    stem = workspace.studies / f"roi-{config.name}-{backbone}-recommended"
    paths = [roi_plot(table, stem.with_suffix(".png"), result, log_x), roi_html(table, stem.with_suffix(".html"), result)]
    use_experiment(workspace, name)
    with start_run(run_name=f"recommend-budget {backbone}"):
        mlflow.log_params({"backbone": backbone, "value_per_point": value_per_point, "users": result["users"],
                           "curve": result["curve"], "sweep_table": source.name,
                           "extrapolated": result["extrapolated"]})
        mlflow.log_metrics({k: v for k, v in result.items() if isinstance(v, float) and np.isfinite(v)})
        for path in paths:
            mlflow.log_artifact(str(path))
    return {**result, "plots": [str(p) for p in paths]}


def sweep_calls(frame: pd.DataFrame) -> dict[str, int]:
    """LLM calls the sweep paid, and what it would pay if its budgets shared no seeds (each pool's own calls):
    named apart from the per-budget ``llm_calls_paid`` that MLflow steps by the budget."""
    pools = frame[frame["label"] != "+f_item"].drop_duplicates("label")
    return {"sweep_llm_calls_paid": int(pools["llm_calls_paid"].sum()),
            "sweep_llm_calls_unnested": int(pools["llm_calls"].sum())}


def ablations(config: Config, workspace: Workspace, backbones=("sasrec", "lightgcn"), progress: bool = True,
              repeats: int = 1, jobs: int = 1) -> pd.DataFrame:
    """Figure 5: RELAND against w/o r.p. (direct prompting), w/o a.s. (random seeds), w/o i.f. (no item text).

    Plus a control the paper does not run: the seed's behaviour vector fused instead of its
    rationale, to tell what the LLM's words add beyond the seed neighbourhood a user is in.
    """
    import mlflow

    use_experiment(workspace, f"ablations-{config.name}")
    pools = {"w/o r.p.": PoolVariant("direct-prompt", {"llm": {"prompt": "direct"}}),
             "w/o a.s.": PoolVariant("random-seeds", {"seeds": {"strategy": "random"}})}
    built = {label: pool.build(config, workspace, progress) for label, pool in pools.items()}
    runs = []
    for backbone in backbones:
        runs += [("RELAND", with_ranker(config, backbone=backbone, variant="reland"), workspace),
                 ("w/o i.f.", with_ranker(config, backbone=backbone, variant="rationale_only"), workspace),
                 ("seed vector (no LLM)", with_ranker(config, backbone=backbone, variant="seed_vector"), workspace)]
        runs += [(label, with_ranker(derived, backbone=backbone, variant="reland"), child)
                 for label, (derived, child) in built.items()]
    train_cells([(cfg, where) for _, cfg, where in runs], repeats, jobs, progress)
    results = []
    with start_run(run_name="ablations"):
        for label, cfg, where in runs:
            key = f"{cfg.ranker.backbone} {label}"
            result = tracked_cell(cfg, where, repeats, progress, label=key)
            results.append({**result, **_pool_cost(cfg, where), "key": key, "label": label})
        per_user = _per_user(results)
        for backbone in backbones:
            rows = [r for r in results if r["backbone"] == backbone]
            compare(rows, next(r for r in rows if r["label"] == "RELAND"), per_user)
        frame = results_frame(results)
        for path in save_table(workspace, f"ablations-{config.name}", frame):
            mlflow.log_artifact(str(path))
    return frame


CONTROLS = {"shuffled": PoolVariant("control-shuffled", {"pool": {"assignment": "shuffled"}}),
            "profile": PoolVariant("control-profile", {"llm": {"source": "profile"}})}


CONTROL_CELLS = ("reland", "seed_vector", *CONTROLS)  # besides +f_item, which every controls study has


def controls(config: Config, workspace: Workspace, backbones=("sasrec", "lightgcn"), progress: bool = True,
             repeats: int = 1, cells: tuple[str, ...] = CONTROL_CELLS, jobs: int = 1) -> pd.DataFrame:
    """Where RELAND's effect comes from: the LLM's text, grounded text without an LLM, or the assignment.

    Against +f_item and RELAND, each backbone trains three controls through the same pool →
    retrieval → Feast → fusion path: ``shuffled`` (each user a random pool entry), ``profile``
    (rationales written from the Step-0 profile, no LLM) and ``seed_vector`` (the assigned
    seed's behaviour vector fused instead of any text).  Paired tests against +f_item and, when
    it is among ``cells``, RELAND; a subset of ``cells`` (say, ``("profile",)``) needs no LLM pool.
    """
    import mlflow

    unknown = set(cells) - set(CONTROL_CELLS)
    if unknown:
        raise ValueError(f"unknown control cells {sorted(unknown)}; choose from {', '.join(CONTROL_CELLS)}")
    use_experiment(workspace, f"controls-{config.name}")
    built = {label: pool.build(config, workspace, progress) for label, pool in CONTROLS.items() if label in cells}
    runs = []
    for backbone in backbones:
        runs += [("+f_item", with_ranker(config, backbone=backbone, variant="item_text"), workspace)]
        runs += [(label, with_ranker(config, backbone=backbone, variant=variant), workspace)
                 for cell, label, variant in (("reland", "RELAND", "reland"),
                                              ("seed_vector", "control: seed vector", "seed_vector"))
                 if cell in cells]
        runs += [(f"control: {label}", with_ranker(derived, backbone=backbone, variant="reland"), child)
                 for label, (derived, child) in built.items()]
    train_cells([(cfg, where) for _, cfg, where in runs], repeats, jobs, progress)
    results = []
    with start_run(run_name="controls"):
        mlflow.log_params({"repeats": repeats, "cells": ",".join(cells)})
        for label, cfg, where in runs:
            key = f"{cfg.ranker.backbone} {label}"
            result = tracked_cell(cfg, where, repeats, progress, label=key)
            results.append({**result, **_pool_cost(cfg, where), "key": key, "label": label,
                            "control": control_label(cfg)})
        per_user = _per_user(results)
        for backbone in backbones:
            rows = [r for r in results if r["backbone"] == backbone]
            compare(rows, next(r for r in rows if r["label"] == "+f_item"), per_user)
            reland = next((r for r in rows if r["label"] == "RELAND"), None)
            if reland:
                compare([r for r in rows if r["label"] != "+f_item"], reland, per_user)
        frame = results_frame(results)
        for path in save_table(workspace, f"controls-{config.name}", frame):
            mlflow.log_artifact(str(path))
    return frame


# What a pool cost, as a cell's columns (from the rationale step's record)
POOL_COST = ("seeds", "llm_calls", "llm_calls_paid", "llm_prompt_tokens", "llm_completion_tokens", "llm_seconds",
             "accelerator_hours", "llm_usd")


def _pool_cost(config: Config, workspace: Workspace) -> dict:
    """Seeds and LLM cost behind a cell; none for a variant that fuses nothing from the pool."""
    from components.ranker import fuses
    from components.tracking import pool_context

    context = pool_context(workspace) if fuses(config) else {}
    return {k: context[k] for k in POOL_COST if k in context}


def register_ranker(config: Config, workspace: Workspace, run_id: str) -> str:
    """Log a trained ranker into the MLflow run that trained it (``run_id``, which holds its metrics),
    register it as ``reland-ranker-<dataset>`` with tags and a description, and point the
    ``champion`` alias, which the ranking service serves, at the new version."""
    import mlflow
    from mlflow.models import infer_signature

    from components.ranker import load_ranker, serving_example
    from components.tracking import pool_context

    model = load_ranker(config, workspace)
    example = serving_example(model)
    signature = infer_signature(example.numpy(), model(example).detach().numpy())
    name = registered_model_name(config)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        info = mlflow.pytorch.log_model(model, name="model", signature=signature, registered_model_name=name,
                                        serialization_format="pickle",  # pt2 export needs torch >= 2.4
                                        pip_requirements=SERVING_REQUIREMENTS,  # inference would import-scan
                                        code_paths=[str(MODEL_CODE)])
    pool = pool_context(workspace) if model.fusion is not None else {}
    tags = {"backbone": config.ranker.backbone, "variant": config.ranker.variant, "data_hash": data_hash(workspace),
            "pool_version": str(pool.get("pool_version", "none")), "rationale_template": pool.get("template_version", "none")}
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=(
        f"{config.ranker.backbone} {config.ranker.variant} on {config.name}, chosen by validation NDCG@10; "
        f"trained in run {run_id}"))
    client.update_registered_model(name, description=f"RELAND rankers for {config.name}; the '{CHAMPION}' alias is served")
    client.set_registered_model_alias(name, CHAMPION, version)
    return f"models:/{name}/{version}"
