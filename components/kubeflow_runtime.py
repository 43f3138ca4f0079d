"""What runs inside a Kubeflow task: a step under the task's configuration, and its artefacts filled in.

Kept apart from :mod:`components.kubeflow` (the component definitions) so a task's process
imports only this and the step it runs.
"""
from __future__ import annotations

import json
import os

import yaml

from components.config import Config, load_config
from components.steps import STEPS, run_step
from components.workspace import Workspace


def task_config(config: str, **overrides) -> Config:
    """The configuration a task receives as YAML text, with section ``overrides`` merged in."""
    settings = yaml.safe_load(config) or {}
    for section, values in overrides.items():
        settings[section] = {**settings.get(section, {}), **values}
    return Config.model_validate(settings)


def settings_text(preset: str, overrides: str, seed_budget: float, llm_model: str, llm_base_url: str) -> str:
    """A run's whole configuration as YAML: ``preset``, then the YAML ``overrides``, then each typed
    pipeline parameter that is set (a zero budget or an empty string leaves the setting as it was;
    a server URL selects the openai backend)."""
    typed = {"seeds": {"budget": seed_budget, "count": None} if seed_budget else {},
             "llm": {**({"model": llm_model} if llm_model else {}),
                     **({"base_url": llm_base_url, "backend": "openai"} if llm_base_url else {})}}
    settings = yaml.safe_load(overrides) or {}
    for section, values in typed.items():
        settings[section] = {**settings.get(section, {}), **values}
    return yaml.safe_dump(load_config(preset or None, overrides=settings).model_dump(mode="json"))


def execute(step: str, workspace: str, config: str, artifact=None, metrics=None, **overrides) -> dict:
    """Run ``step`` in ``workspace`` under the YAML ``config`` (plus ``overrides``); fill the output artefacts."""
    result, ran = run_step(task_config(config, **overrides), Workspace(workspace), step, progress=False)
    numbers = {k: v for k, v in (result.items() if isinstance(result, dict) else [])
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if artifact is not None:
        manifest = {"step": step, "workspace": workspace, "ran": ran,
                    "outputs": [os.path.join(workspace, p) for p in STEPS[step].writes]}
        with open(artifact.path, "w") as handle:
            json.dump({**manifest, "result": result}, handle, indent=2, default=str)
        artifact.metadata.update({"step": step, "ran": ran, **numbers})
    if metrics is not None:
        for name, value in numbers.items():
            metrics.log_metric(name.replace("@", "_at_"), float(value))
    return result if isinstance(result, dict) else {"result": result}
