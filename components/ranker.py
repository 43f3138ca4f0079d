"""Step ``train_ranker``: one backbone in one variant, early-stopped on validation NDCG@10, tested by full ranking.

Variants: ``id`` (IDs only), ``item_text`` ("+f_item"), ``reland`` (+f_item and the fusion
of Eq. 5), ``rationale_only`` (the fusion without item text: the "w/o i.f." ablation) and
``seed_vector`` (+f_item fusing the assigned seed's behaviour vector instead of its
rationale: what the pool gives a user without any LLM text, a control for the ablations).
Features are read through Feast's historical retrieval as of the training time (the control's
seed vectors from the encoder's output: they are not a served feature).

Outputs under ``ranker/<backbone>-<variant>/``: ``model.pt`` (the best validation state and
how to rebuild it), ``metrics.json`` (per-epoch curve, test metrics, timings) and
``per_user.npz`` (each test user's metrics, for paired significance tests).
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Callable, NotRequired, TypedDict

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from components.config import Config, RankerConfig, RankerSettings
from components.data.tables import PreparedDataset
from components.ranker_data import EvalSet, RankerData, historical_features, rationale_features
from components.training import fit
from components.workspace import RANKER_METRICS, RANKER_MODEL, RANKER_PER_USER, Workspace, atomic_path, write_json
from models.metrics import full_ranking
from models.recommenders import BACKBONES, Recommender, build_recommender, family, model_settings

# variant -> (item text, what the fusion layer mixes in)
VARIANT_INPUTS = {"id": (False, None), "item_text": (True, None), "reland": (True, "rationale"),
                  "rationale_only": (False, "rationale"), "seed_vector": (True, "seed_vector")}
KS = (10, 20)
# ``train_ranker``'s result; keys with "@" need the functional form.  The test metrics come with
# ``test=True``, ``backbone_run`` with a residual fusion, ``mlflow_run_id`` from the tracked step.
RankerResult = TypedDict("RankerResult", {
    "ranker": str, "backbone": str, "variant": str, "repeat": int, "settings": dict, "family": str,
    "epochs": int, "best_epoch": int, "best_valid_ndcg@10": float, "seconds": float, "epoch_train_seconds": float,
    "as_of": str, "backbone_run": NotRequired[dict],
    **{f"test_{metric}@{k}": NotRequired[float] for metric in ("hit", "ndcg", "recall") for k in KS},
    "test_users": NotRequired[int], "eval_users_per_s": NotRequired[int], "mlflow_run_id": NotRequired[str]})


# The fusion's regularisers (Eq. 5 unchanged): z_u dropout as the transformers' 0.5, the gate started at
# α1 ≈ 0.88 towards e_u, light weight decay.  Set a priori and checked on ML-100K validation against the
# unregularised fusion (equal within noise, docs/results.md); `reland experiments tune` searches them.
FUSION_DEFAULTS = {"fusion_dropout": 0.5, "fusion_input_dropout": 0.0, "fusion_weight_decay": 1e-4, "gate_bias": 2.0}


def ranker_settings(cfg: RankerConfig) -> dict[str, float | int]:
    """The backbone's and the fusion's settings: its declared defaults, then ``tuned`` entries, then the config."""
    settings = {**BACKBONES[cfg.backbone].defaults, **FUSION_DEFAULTS}
    for layer in (cfg.tuned.get(cfg.backbone), cfg.tuned.get(f"{cfg.backbone}-{cfg.variant}"), cfg):
        if layer is not None:
            given = layer.model_dump(include=set(RankerSettings.model_fields), exclude_none=True)
            settings.update({k: v for k, v in given.items() if k in settings})
    return settings


def fuses(config: Config) -> bool:
    """Whether the variant fuses a pool-derived vector (so reads the pool, its controls and its cost)."""
    return VARIANT_INPUTS[config.ranker.variant][1] is not None


def resolved_settings(config: Config) -> dict[str, float | int]:
    """What ``train_ranker`` trains with beyond the configuration's text (part of its step fingerprint);
    the fusion's settings only for variants that fuse."""
    settings = ranker_settings(config.ranker)
    return {k: v for k, v in settings.items() if fuses(config) or k not in FUSION_DEFAULTS}


def ranker_upstream(config: Config) -> tuple[str, ...]:
    """The steps a ranker's result depends on: ID-only and +f_item read no rationale, so a new pool
    leaves them current (hours of training are not repeated for a pool they never see)."""
    if fuses(config):
        return ("apply_features",)
    return ("embed_item_text",) if VARIANT_INPUTS[config.ranker.variant][0] else ("prepare_data",)


def training_device(cfg: RankerConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"ranker.device is {cfg.device!r}, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(cfg.device)


def on_device(batch: dict, device: torch.device) -> dict:
    """A batch (tensors, nested batches) moved to ``device``."""
    return {k: on_device(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}


def ranker_features(config: Config, workspace: Workspace, data: PreparedDataset,
                    as_of: pd.Timestamp) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(item text embeddings, the fusion's user inputs) the variant needs, in index order, from Feast."""
    wants_text, fused = VARIANT_INPUTS[config.ranker.variant]
    text = user_inputs = None
    if wants_text:
        items = data.items().sort_values("item_idx")
        text = torch.from_numpy(historical_features(workspace, config.features, "item_text_embedding:text_embedding",
                                                    items["item_id"], as_of))
    if fused:
        users = data.users().sort_values("user_idx")["user_id"]
        user_inputs = torch.from_numpy(assigned_seed_vectors(workspace, users) if fused == "seed_vector" else
                                       rationale_features(workspace, config.features, users, as_of))
    return text, user_inputs


def assigned_seed_vectors(workspace: Workspace, users: pd.Series) -> np.ndarray:
    """The behaviour vector of each user's assigned seed (retrieval's ``seed_user_id``), in ``users`` order."""
    assigned = pd.read_parquet(workspace.user_rationales, columns=["user_id", "seed_user_id"])
    vectors = pd.read_parquet(workspace.user_vectors, columns=["user_id", "vector"])
    seed_of = assigned.set_index("user_id")["seed_user_id"].reindex(users.astype(str))
    if seed_of.isna().any():
        raise ValueError(f"{workspace.user_rationales}: no assigned seed for user "
                         f"{seed_of.index[seed_of.isna().argmax()]}; run 'reland pool retrieve'")
    return np.stack(vectors.set_index("user_id")["vector"].loc[seed_of.to_numpy()].to_numpy()).astype(np.float32)


def make_model(config: Config, data: RankerData, item_text: torch.Tensor | None,
               rationales: torch.Tensor | None) -> Recommender:
    cfg = config.ranker
    settings = ranker_settings(cfg)
    hyper = {k: settings[k] for k in model_settings(cfg.backbone)}
    fusion = {"dropout": settings["fusion_dropout"], "input_dropout": settings["fusion_input_dropout"],
              "gate_bias": settings["gate_bias"], "residual": cfg.fusion_training == "residual"}
    adjacency = None
    if BACKBONES[cfg.backbone].needs_adjacency:
        from models.recommenders import normalised_adjacency

        rows = data.train_rows
        adjacency = normalised_adjacency(data.users[rows], data.items[rows], data.n_users, data.n_items)
    return build_recommender(cfg.backbone, data.n_users, data.n_items, cfg.dim, item_text, rationales, fusion,
                             max_len=data.max_len, adjacency=adjacency, **hyper)


def make_optimiser(model: Recommender, settings: dict) -> torch.optim.Optimizer:
    """Adam over the trainable parameters; the fusion layer's in their own group with their own weight decay."""
    fusion = {id(p) for p in model.fusion.parameters()} if model.fusion is not None else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in fusion], "weight_decay": settings["weight_decay"]},
              {"params": [p for p in trainable if id(p) in fusion], "weight_decay": settings["fusion_weight_decay"]}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=settings["lr"])


@torch.no_grad()
def evaluate(model: Recommender, data: RankerData, split: EvalSet, batch_size: int) -> dict[str, np.ndarray]:
    """Per-user full-ranking metrics (HR = hit, NDCG, recall at 10 and 20) on ``split``."""
    model.eval()
    device = next(model.parameters()).device
    position = np.full(data.n_users, -1)
    position[split.users] = np.arange(len(split.users))

    def score(users: torch.Tensor) -> torch.Tensor:
        batch = {"users": users} if data.family == "cf" else data.seq_batch(split.rows[position[users.numpy()]])
        return model.score(on_device(batch, device)).cpu()

    return full_ranking(score, torch.from_numpy(split.users), split.exclude, split.targets, KS, batch_size)


def summarise(per_user: dict[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{name}": round(float(values.mean()), 6) for name, values in per_user.items()}


def train_epoch(model: Recommender, data: RankerData, optimiser: torch.optim.Optimizer, config: Config,
                rng: np.random.Generator, partners: np.ndarray | None, progress: bool,
                fusion_only: bool = False) -> float:
    """One pass over the training rows; the mean loss.  ``fusion_only``: the frozen backbone stays in
    evaluation mode (no dropout), so the fusion learns on the representations it will be served."""
    cfg = config.ranker
    model.train(not fusion_only)
    if fusion_only:
        model.fusion.train()
    device = next(model.parameters()).device
    losses = []
    total = -(-len(data.train_rows) // data.units_per_batch(cfg.batch_size))
    batches = data.training_batches(cfg.batch_size, rng, cfg.max_batches)
    for batch in tqdm(batches, total=min(total, cfg.max_batches or total), desc="train", leave=False,
                      disable=not progress):
        if partners is not None:  # DuoRec: a positive view with the same next item
            batch["partner"] = data.window_batch(partners[batch["rows"].numpy()])
        loss = model.loss(on_device(batch, device))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.detach())  # no per-batch sync with the GPU
    return float(torch.stack(losses).mean())


def fit_ranker(model: Recommender, config: Config, data: RankerData, rng: np.random.Generator, progress: bool,
               on_epoch: Callable[[dict, int], None] | None, start: dict | None = None) -> tuple[list[dict], dict]:
    """Train ``model``'s trainable parameters, early-stopped on validation NDCG@10; the best state is loaded.

    ``start`` (the residual fusion's untrained state, scored) is the best to beat: the fusion
    is kept only if some epoch improves validation, else the model stays as it began.
    """
    cfg = config.ranker
    optimiser = make_optimiser(model, ranker_settings(cfg))
    partners = data.same_target_partners(rng) if cfg.backbone == "duorec" else None
    fusion_only = start is not None

    def run_epoch(epoch: int, validate: bool) -> dict:
        epoch_started = time.perf_counter()
        loss = train_epoch(model, data, optimiser, config, rng, partners, progress, fusion_only)
        train_seconds = time.perf_counter() - epoch_started
        valid = summarise(evaluate(model, data, data.valid, cfg.eval_batch), "valid_") if validate else {}
        return {"loss": round(loss, 6), "train_seconds": round(train_seconds, 3), **valid}

    def keep_best(row: dict | None = None) -> None:
        best_state.update({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    best_state: dict = {}
    if start is not None:
        keep_best()
    curve, best = fit(run_epoch, cfg.epochs, cfg.patience, "valid_ndcg@10", keep_best, on_epoch, progress,
                      label=f"{cfg.run_name} {'fusion ' if fusion_only else ''}epochs", start=start,
                      eval_step=cfg.eval_step)
    model.load_state_dict(best_state)
    return curve, best


def seeded(config: Config) -> np.random.Generator:
    """Seed torch (model initialisation) with seed + repeat and return the batch order's generator."""
    torch.manual_seed(config.seed + config.ranker.repeat)
    return np.random.default_rng(config.seed + config.ranker.repeat)


def base_variant(variant: str) -> str:
    """The variant without its fusion: what the residual fusion is fitted on."""
    return "item_text" if VARIANT_INPUTS[variant][0] else "id"


def backbone_key(config: Config, data: RankerData, item_text: torch.Tensor | None) -> str:
    """A hash of everything an unfused ranker's trained state depends on: its settings, training seed,
    the interactions and their splits, and the item text."""
    cfg = config.ranker
    settings = {k: v for k, v in ranker_settings(cfg).items() if k not in FUSION_DEFAULTS}
    described = {**cfg.model_dump(include={"backbone", "dim", "batch_size", "epochs", "patience", "eval_step",
                                               "max_batches"}),
                 "variant": base_variant(cfg.variant), "settings": settings, "seed": config.seed + cfg.repeat,
                 "max_len": data.max_len}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    for array in (data.users, data.items, data.split) + ((item_text.numpy(),) if item_text is not None else ()):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def trained_backbone(config: Config, workspace: Workspace, data: RankerData, item_text: torch.Tensor | None,
                     progress: bool,
                     on_epoch: Callable[[dict, int], None] | None) -> tuple[Recommender, list[dict], dict, bool]:
    """The unfused ranker of ``config`` (its variant without the fusion): from ``ranker/backbones/``
    when one was trained on the same inputs, else trained and stored there (also when tuning
    or benchmarking: ``save`` is about the ranker's own folder, and a tuning trial of the fusion
    then trains the backbone once, not once per trial).

    Returns (model, curve, best row, reused).  Training is seeded by seed + repeat, so the +f_item
    run and a residual RELAND run of the same repeat share one backbone, and their comparison
    isolates the fusion.
    """
    base = config.model_copy(update={"ranker": config.ranker.model_copy(
        update={"variant": base_variant(config.ranker.variant)})})
    rng = seeded(config)
    model = make_model(base, data, item_text, None)
    path = workspace.backbone(backbone_key(base, data, item_text))
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state"])
        for row in saved["curve"] if on_epoch else ():
            on_epoch(row, row["epoch"])
        return model.to(training_device(config.ranker)), saved["curve"], saved["best"], True
    model.to(training_device(config.ranker))
    curve, best = fit_ranker(model, base, data, rng, progress, on_epoch)
    with atomic_path(path) as tmp:
        torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "curve": curve, "best": best}, tmp)
    return model, curve, best, False


def fit_residual_fusion(config: Config, workspace: Workspace, data: RankerData, item_text: torch.Tensor | None,
                        rationales: torch.Tensor, progress: bool,
                        on_epoch: Callable[[dict, int], None] | None) -> tuple[Recommender, list[dict], dict, dict]:
    """The fusion fitted on the frozen unfused backbone, from blend 0 (the backbone exactly) and kept
    only where validation improves.  Returns (model, fusion curve, best row, backbone summary)."""
    backbone, curve, best, reused = trained_backbone(config, workspace, data, item_text, progress, None)
    rng = seeded(config)
    model = make_model(config, data, item_text, rationales)
    missing, unexpected = model.load_state_dict(backbone.state_dict(), strict=False)
    if unexpected or any(not k.startswith("fusion.") for k in missing):
        raise RuntimeError(f"backbone state does not fit the fused model: missing {missing}, unexpected {unexpected}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("fusion."))
    model.to(training_device(config.ranker))
    start = {"epoch": -1, **{k: v for k, v in best.items() if k.startswith("valid_")}}
    fusion_curve, fusion_best = fit_ranker(model, config, data, rng, progress, on_epoch, start)
    summary = {"reused": reused, "epochs": len(curve), "best_epoch": best["epoch"],
               "best_valid_ndcg@10": best["valid_ndcg@10"], "fusion_kept": fusion_best["epoch"] >= 0,
               "blend": round(float(model.fusion.blend), 6)}
    return model, fusion_curve, fusion_best, summary


def train_ranker(config: Config, workspace: Workspace, progress: bool = True,
                 on_epoch: Callable[[dict, int], None] | None = None, as_of: pd.Timestamp | None = None,
                 save: bool = True, test: bool = True) -> RankerResult:
    """Train, early-stop, test; ``on_epoch(row, epoch)`` receives each epoch's loss and validation metrics.

    Unfused variants train their backbone (or reuse one trained on the same inputs); the fusion
    trains jointly with a fresh backbone (``fusion_training: joint``) or on the frozen unfused
    one (``residual``).  ``save=False`` (benchmarks, tuning) leaves ``ranker/<name>/`` as it was;
    ``test=False`` (tuning) never scores the test split.
    """
    cfg = config.ranker
    prepared = PreparedDataset(workspace.prepared)
    data = RankerData(prepared, family(cfg.backbone), config.data.max_seq_len)
    as_of = as_of or pd.Timestamp.now(tz="UTC")
    item_text, rationales = ranker_features(config, workspace, prepared, as_of)
    started, backbone = time.perf_counter(), None
    if rationales is None:
        model, curve, best, reused = trained_backbone(config, workspace, data, item_text, progress, on_epoch)
        backbone = {"reused": reused} if reused else None
    elif cfg.fusion_training == "residual":
        model, curve, best, backbone = fit_residual_fusion(config, workspace, data, item_text, rationales, progress,
                                                           on_epoch)
    else:
        rng = seeded(config)
        model = make_model(config, data, item_text, rationales).to(training_device(cfg))
        curve, best = fit_ranker(model, config, data, rng, progress, on_epoch)
    eval_started = time.perf_counter()
    per_user = evaluate(model, data, data.test, cfg.eval_batch) if test else {}
    eval_seconds = time.perf_counter() - eval_started
    model.cpu()
    result = {"ranker": config.ranker.run_name, "backbone": cfg.backbone, "variant": cfg.variant, "repeat": cfg.repeat,
              "settings": ranker_settings(cfg),
              "family": data.family, "epochs": len(curve), "best_epoch": best["epoch"],
              "best_valid_ndcg@10": best["valid_ndcg@10"],
              "seconds": round(time.perf_counter() - started, 2),
              "epoch_train_seconds": round(float(np.mean([r["train_seconds"] for r in curve])), 3),
              "as_of": as_of.isoformat()}
    if backbone:
        result["backbone_run"] = backbone
    if test:
        result.update({**summarise(per_user, "test_"), "test_users": len(data.test.users),
                       "eval_users_per_s": round(len(data.test.users) / eval_seconds)})
    if save:
        save_ranker(workspace, config, model, result, curve, data.test.users, per_user)
    return result


def save_ranker(workspace: Workspace, config: Config, model: Recommender, result: dict, curve: list[dict],
                users: np.ndarray, per_user: dict[str, np.ndarray]) -> None:
    folder = workspace.ranker(config.ranker.run_name)  # atomic_path creates it
    with atomic_path(folder / RANKER_MODEL) as tmp:
        torch.save({"state": model.state_dict(), "ranker": config.ranker.model_dump(), "n_users": model.n_users,
                    "n_items": model.n_items, "max_len": config.data.max_seq_len}, tmp)
    with atomic_path(folder / RANKER_PER_USER) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, users=users, **{k.replace("@", "_at_"): v for k, v in per_user.items()})
    write_json(folder / RANKER_METRICS, {**result, "curve": curve})


def load_per_user(workspace: Workspace, name: str) -> dict[str, np.ndarray]:
    with np.load(workspace.ranker(name) / RANKER_PER_USER) as saved:
        return {k.replace("_at_", "@"): saved[k] for k in saved.files}


def load_ranker(config: Config, workspace: Workspace) -> Recommender:
    """Rebuild a trained ranker from ``ranker/<backbone>-<variant>/model.pt`` (feature tables come with its state)."""
    path = workspace.ranker(config.ranker.run_name) / RANKER_MODEL
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained ranker; run 'reland ranker train' first")
    saved = torch.load(path, weights_only=True)
    state = saved["state"]
    data = RankerData(PreparedDataset(workspace.prepared), family(config.ranker.backbone), saved["max_len"])
    item_text = torch.zeros_like(state["items.text"]) if "items.text" in state else None
    rationales = torch.zeros_like(state["fusion.rationales"]) if "fusion.rationales" in state else None
    # The fusion as it was trained (a residual one has a blend), whatever the configuration says now.
    trained = config.ranker.model_copy(update={"fusion_training": "residual" if "fusion.blend" in state else "joint"})
    model = make_model(config.model_copy(update={"ranker": trained}), data, item_text, rationales)
    model.load_state_dict(state)
    return model.eval()


def serving_example(model: Recommender, rows: int = 2) -> torch.Tensor:
    """A few well-formed serving rows (users 0.., one recent item each), for signatures and smoke checks."""
    from models.recommenders import serving_rows

    users = torch.arange(rows)
    sequences = torch.zeros(rows, model.max_len, dtype=torch.long)
    sequences[:, 0] = 1
    rationales = model.fusion.rationales[users] if model.fusion is not None else None
    return serving_rows(users, sequences, rationales)
