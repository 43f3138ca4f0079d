"""Every pipeline step by name, with what it reads and writes: the unit the CLI, Kubeflow and the main job run.

:func:`run_step` makes steps idempotent and resumable.  A step's *fingerprint* hashes the
configuration sections it reads and the fingerprints and result ids of the steps it depends
on (so a change anywhere upstream reaches every step below it); a result id
hashes the step's output files (sizes and modification times, cheap at any scale).  Both are
recorded in ``workspace/steps/<name>.json`` when the step succeeds.  A step is skipped when
its fingerprint matches the record and its outputs are unchanged, so re-running a pipeline
after a failure redoes only what is missing or stale; rationale generation additionally
never re-pays an LLM call (its response cache survives any crash).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from components.config import Config
from components.data.tables import DatasetStats
from components.workspace import (CHECKPOINT, ENCODER, FEAST_REGISTRY, ITEM_TEXT, LLM_CACHE, POOL_POINTER, PREPARED,
                                  PSEUDONYM_KEY, RANKER_BACKBONES, RATIONALE_TABLE, SEEDS, STUDIES, USER_RATIONALES, USER_VECTORS, Workspace,
                                  read_json, write_json)

StepFunction = Callable[..., object]  # (config, workspace, progress=...) -> its result type (a TypedDict: JSON as recorded)


def _resolve(target: str) -> Callable:
    """``"module:name"`` imported on first use: a Kubeflow task or CLI call loads only its own step's
    libraries (DGL, torch, transformers and Feast cost seconds each to import)."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Step:
    name: str
    target: str  # "module:function"; every step has one signature: (config, workspace, progress)
    reads: tuple[str, ...]  # configuration sections (dotted paths) that change the result
    after: tuple[str, ...]  # upstream steps whose results it reads
    writes: tuple[str, ...]  # workspace files it produces
    updated_later: tuple[str, ...] = ()  # outputs later steps modify (Feast's registry): only their presence counts
    derived: str | None = None  # "module:function" of Config: settings declared in code (a model's defaults, a template), fingerprinted
    reads_after: str | None = None  # "module:function" of Config: the subset of ``after`` this config reads

    @property
    def function(self) -> StepFunction:
        return _resolve(self.target)

    def upstream(self, config: Config) -> tuple[str, ...]:
        """The steps whose results this configuration of the step reads (all of ``after`` unless narrowed)."""
        return _resolve(self.reads_after)(config) if self.reads_after else self.after

    def run(self, config: Config, workspace: Workspace, progress: bool) -> object:
        return self.function(config, workspace, progress=progress)


def prepare_data_stats(config: Config, workspace: Workspace, progress: bool = True) -> DatasetStats:
    """The ``prepare_data`` step: the prepared dataset's statistics as its result."""
    from components.data.prepare import prepare_data
    return prepare_data(config, workspace, progress).stats


STEPS: dict[str, Step] = {step.name: step for step in [
    Step("prepare_data", "components.steps:prepare_data_stats", ("name", "data", "synthetic"), (),
         ("data/interactions.parquet",)),
    Step("validate_interactions", "components.checks:validate_interactions", (), ("prepare_data",), ()),
    Step("train_encoder", "components.behaviour:train_behaviour_encoder", ("seed", "encoder"), ("prepare_data",),
         (CHECKPOINT,)),
    Step("embed_users", "components.behaviour:embed_users", ("encoder",), ("train_encoder",), (USER_VECTORS,)),
    Step("validate_behaviour", "components.checks:validate_behaviour_vectors", (), ("embed_users",), ()),
    Step("sample_seeds", "components.seeds:sample_seeds", ("seed", "seeds"), ("embed_users",), (SEEDS,)),
    Step("generate_rationales", "components.rationales:generate_rationales", ("llm", "data.domain"), ("sample_seeds",),
         (RATIONALE_TABLE,), derived="components.rationales:template_settings"),
    Step("build_pool", "components.pool:build_pool", ("pool",), ("generate_rationales",), (POOL_POINTER,)),
    Step("retrieve_rationales", "components.retrieval:retrieve_rationales", ("pool", "features.layout"),
         ("build_pool", "embed_users"), (USER_RATIONALES,)),
    Step("embed_item_text", "components.behaviour:write_item_text_features", ("pool.text_encoder_path",),
         ("prepare_data",), (ITEM_TEXT,)),
    Step("apply_features", "components.features:apply_features", ("features",),
         ("retrieve_rationales", "embed_item_text"), (FEAST_REGISTRY,), updated_later=(FEAST_REGISTRY,)),
    Step("materialise_features", "components.features:materialise_features", ("features",), ("apply_features",), ()),
    Step("train_ranker", "components.tracking:train_and_track", ("seed", "ranker", "data.max_seq_len"),
         ("apply_features",), (), derived="components.ranker:resolved_settings",
         reads_after="components.ranker:ranker_upstream"),
]}


def _section(config: Config, dotted: str) -> object:
    value: object = config.model_dump(mode="json")
    for part in dotted.split("."):
        value = value[part]
    return value


def record_name(config: Config, name: str) -> str:
    """The record's name: rankers keep one per backbone and variant, other steps one per workspace."""
    return f"{name}-{config.ranker.run_name}" if name == "train_ranker" else name


def _record_path(workspace: Workspace, name: str):
    return workspace.root / "steps" / f"{name}.json"


def _record(workspace: Workspace, name: str) -> dict | None:
    path = _record_path(workspace, name)
    return read_json(path) if path.exists() else None


def step_record(config: Config, workspace: Workspace, name: str) -> dict | None:
    """What the last successful run of ``name`` recorded (result, seconds, finished_at), if any."""
    return _record(workspace, record_name(config, name))


def result_id(workspace: Workspace, step: Step) -> str | None:
    """Hash of the step's outputs as they are on disk (None when one is missing)."""
    parts = []
    for relative in step.writes:
        path = workspace.root / relative
        if not path.exists():
            return None
        stat = path.stat()
        parts.append((relative,) if relative in step.updated_later else (relative, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def fingerprint(config: Config, workspace: Workspace, step: Step) -> str:
    """What the step's result depends on: its configuration sections and its inputs' fingerprints and result ids.

    Upstream fingerprints make a change propagate past outputs hashed by presence (the Feast registry);
    a step's ``derived`` settings (a ranker's resolved defaults) count as configuration.
    """
    upstream = {}
    for name in step.upstream(config):
        record = _record(workspace, name)
        upstream[name] = [record["fingerprint"], record["result_id"]] if record else None
    payload = {"step": step.name, "config": {k: _section(config, k) for k in step.reads}, "after": upstream}
    if step.derived:  # a changed default (declared with a model, not in the configuration) makes the step stale
        payload["derived"] = _resolve(step.derived)(config)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_current(config: Config, workspace: Workspace, name: str) -> bool:
    step, record = STEPS[name], step_record(config, workspace, name)
    return bool(record and record["fingerprint"] == fingerprint(config, workspace, step)
                and record["result_id"] == (result_id(workspace, step) or "missing"))


def run_step(config: Config, workspace: Workspace, name: str, progress: bool = True, force: bool = False) -> tuple[object, bool]:
    """(the step's result, whether it ran); an up-to-date step returns its recorded result without running."""
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; steps: {', '.join(STEPS)}")
    step = STEPS[name]
    if not force and is_current(config, workspace, name):
        return step_record(config, workspace, name)["result"], False
    started = time.perf_counter()
    result = step.run(config, workspace, progress)
    record_step(config, workspace, name, result, time.perf_counter() - started)
    return json.loads(json.dumps(result, default=str)), True


def record_step(config: Config, workspace: Workspace, name: str, result: object, seconds: float) -> None:
    """Note that ``name`` finished with ``result`` (also for work done outside :func:`run_step`, e.g. in shards)."""
    step = STEPS[name]
    write_json(_record_path(workspace, record_name(config, name)), {
        "step": name, "fingerprint": fingerprint(config, workspace, step),
        "result_id": result_id(workspace, step) or "missing", "seconds": round(seconds, 2),
        "finished_at": time.time(), "result": result})


POOL_STEPS = ("sample_seeds", "generate_rationales", "build_pool", "retrieve_rationales", "apply_features")
SHARED_STEPS = ("prepare_data", "train_encoder", "embed_users", "embed_item_text")  # a derived workspace links their outputs


def _link(target: Path, link: Path) -> None:
    """A relative symlink ``link`` -> ``target`` (the pair can move together), unless ``link`` is there."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(link):
        os.symlink(os.path.relpath(target, link.parent), link)


@dataclass(frozen=True)
class PoolVariant:
    """A derived workspace whose pool differs from the base one: ``overrides`` of the configuration's
    ``seeds``, ``llm`` or ``pool`` sections (budget, prompt, seed strategy, rationale source, assignment)."""

    name: str
    overrides: dict[str, dict]

    def workspace(self, base: Workspace) -> Workspace:
        """``studies/<name>`` linking the base's data, encoder, item text, trained backbones, LLM cache and
        pseudonym key, and the records of the steps that made them, so the derived steps' fingerprints
        follow the base: a base re-embedding its users or item text makes the derived pool stale."""
        child = Workspace(base.root / STUDIES / self.name)
        base.dir(RANKER_BACKBONES)  # linked before it holds anything: backbones trained later are shared too
        for relative in (PREPARED, ENCODER, ITEM_TEXT, RANKER_BACKBONES, LLM_CACHE, PSEUDONYM_KEY):
            if (base.root / relative).exists():
                _link(base.root / relative, child.root / relative)
        for name in SHARED_STEPS:  # linked even before the base records them (a dangling link reads as "not run")
            _link(_record_path(base, name), _record_path(child, name))
        return child

    def derive(self, config: Config, base: Workspace) -> tuple[Config, Workspace]:
        """The derived configuration and its workspace. Overrides that change nothing (a sweep budget equal
        to the base's) name the base itself, so its pool and trained rankers are reused, not rebuilt."""
        derived = config.model_copy(update={section: getattr(config, section).model_copy(update=fields)
                                            for section, fields in self.overrides.items()})
        return derived, base if derived == config else self.workspace(base)

    def build(self, config: Config, base: Workspace, progress: bool) -> tuple[Config, Workspace]:
        """Seeds → rationales → pool → retrieval → Feast registry in the derived workspace (steps already current are skipped)."""
        missing = [name for name in SHARED_STEPS if not is_current(config, base, name)]
        if missing:
            raise FileNotFoundError(f"{base.root}: step(s) {', '.join(missing)} not run or stale; the studies build on "
                                    "the base workspace's data, behaviour vectors and item text: run 'reland run' there first")
        derived, child = self.derive(config, base)
        for step in POOL_STEPS:
            run_step(derived, child, step, progress)
        return derived, child
