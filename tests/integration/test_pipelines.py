"""Kubeflow: every pipeline compiles to valid IR, components wrap the steps, the sweep and shards fan out."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.kubeflow import PIPELINES, SHARDS


def test_every_pipeline_compiles_to_valid_ir(tmp_path):
    result = CliRunner().invoke(cli, ["pipelines", "compile", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in PIPELINES:
        spec, _ = yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text())
        assert spec["pipelineInfo"]["name"] == name.replace("_", "-")
        assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"workspace", "config"}
        executors = spec["deploymentSpec"]["executors"]
        assert executors and all(e["container"]["image"] for e in executors.values())
        for task in spec["root"]["dag"]["tasks"].values():
            assert task["componentRef"]["name"] in spec["components"]
    daily, _ = yaml.safe_load_all((tmp_path / "user_rationales.yaml").read_text())
    loops = [t for t in daily["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and f"[{', '.join(map(str, range(SHARDS)))}]" in str(loops[0]["parameterIterator"])
    assert "merge-shards" in daily["root"]["dag"]["tasks"]
    sweep, _ = yaml.safe_load_all((tmp_path / "seed_budget_sweep.yaml").read_text())
    assert any("parameterIterator" in t for t in sweep["root"]["dag"]["tasks"].values())


def test_the_ir_runs_on_a_cluster_volume_with_resources_and_no_stale_cache(tmp_path):
    subprocess.run([sys.executable, "-m", "pipelines.cli", "pipelines", "compile", "--output", str(tmp_path),
                    "--image", "registry.example.com/reland:7"],
                   env={**os.environ, "RELAND_RATIONALE_GPUS": "1"}, check=True, capture_output=True, timeout=120,
                   cwd=Path(__file__).resolve().parents[2])
    for name in PIPELINES:
        spec, platform = yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text())
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        assert parameters["pvc_name"]["defaultValue"] == "reland-workspace"
        assert parameters["workspace"]["defaultValue"] == "/mnt/reland/workspace"
        mounts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        executors = spec["deploymentSpec"]["executors"]
        assert set(mounts) == set(executors), "every task mounts the workspace volume"
        assert all(m["pvcMount"][0]["mountPath"] == "/mnt/reland" for m in mounts.values())
        for executor in executors.values():
            assert executor["container"]["image"] == "registry.example.com/reland:7"
            resources = executor["container"]["resources"]
            assert resources["resourceCpuRequest"] and resources["resourceMemoryRequest"]
        tasks = [t for t in _all_tasks(spec)]
        for task in tasks:  # the weekly and daily inputs never change: a cache hit would skip the week's work
            cached = task["cachingOptions"].get("enableCache", False)
            pure = task["componentRef"]["name"].startswith(("comp-seed-budget-branch", "comp-resolve-settings"))
            assert cached == pure, task["componentRef"]
    weekly, _ = yaml.safe_load_all((tmp_path / "reasoning_pool.yaml").read_text())
    typed = weekly["root"]["inputDefinitions"]["parameters"]
    assert {name: typed[name].get("defaultValue") for name in ("preset", "seed_budget", "llm_model", "llm_base_url")} \
        == {"preset": "synthetic", "seed_budget": 0.0, "llm_model": "", "llm_base_url": ""}
    rationale = weekly["deploymentSpec"]["executors"]["exec-generate-rationales"]["container"]["resources"]
    assert rationale["accelerator"]["resourceType"] == "nvidia.com/gpu" and rationale["accelerator"]["resourceCount"] == "1"


def _all_tasks(spec: dict) -> list[dict]:
    """Every task of a compiled pipeline, inside loops too."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return [task for dag in dags for task in dag["tasks"].values() if "componentRef" in task
            and not task["componentRef"]["name"].startswith("comp-for-loop")]


def test_submitting_to_an_unreachable_cluster_says_so_in_one_line():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "pipelines", "submit", "--host",
                           f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: could not submit to Kubeflow at http://127.0.0.1:{port}")
    assert "Traceback" not in done.stderr


def test_typed_pipeline_parameters_override_the_preset_and_the_yaml():
    from components.kubeflow_runtime import settings_text

    plain = yaml.safe_load(settings_text("ml-100k", "", 0.0, "", ""))
    assert plain["name"] == "ml-100k" and plain["seeds"]["budget"] == 0.1 and plain["llm"]["backend"] == "local"
    typed = yaml.safe_load(settings_text("ml-100k", "seeds: {budget: 0.2}\nranker: {epochs: 3}", 0.05, "qwen2.5-7b",
                                         "http://vllm:8000/v1"))
    assert typed["seeds"]["budget"] == 0.05 and typed["ranker"]["epochs"] == 3
    assert (typed["llm"]["model"], typed["llm"]["base_url"], typed["llm"]["backend"]) == \
        ("qwen2.5-7b", "http://vllm:8000/v1", "openai")
