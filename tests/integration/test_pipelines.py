"""Kubeflow: every pipeline compiles to valid IR, components wrap the steps, the sweep and shards fan out."""
from __future__ import annotations

import yaml
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.kubeflow import PIPELINES, SHARDS


def test_every_pipeline_compiles_to_valid_ir(tmp_path):
    result = CliRunner().invoke(cli, ["pipelines", "compile", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in PIPELINES:
        spec = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        assert spec["pipelineInfo"]["name"] == name.replace("_", "-")
        assert set(spec["root"]["inputDefinitions"]["parameters"]) >= {"workspace", "config"}
        executors = spec["deploymentSpec"]["executors"]
        assert executors and all(e["container"]["image"] for e in executors.values())
        for task in spec["root"]["dag"]["tasks"].values():
            assert task["componentRef"]["name"] in spec["components"]
    daily = yaml.safe_load((tmp_path / "user_rationales.yaml").read_text())
    loops = [t for t in daily["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and f"[{', '.join(map(str, range(SHARDS)))}]" in str(loops[0]["parameterIterator"])
    assert "merge-shards" in daily["root"]["dag"]["tasks"]
    sweep = yaml.safe_load((tmp_path / "seed_budget_sweep.yaml").read_text())
    assert any("parameterIterator" in t for t in sweep["root"]["dag"]["tasks"].values())
