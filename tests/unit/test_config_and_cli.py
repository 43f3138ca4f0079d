"""Configuration presets and overrides; the CLI's help, stats and error handling."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from components.config import available_presets, load_config
from components.steps import PoolVariant, is_current
from components.workspace import Workspace
from pipelines.cli import cli


def test_presets_and_yaml_overrides(tmp_path):
    assert {"synthetic", "ml-100k", "amazon-beauty", "amazon-sports"} <= set(available_presets())
    assert load_config("ml-100k").data.format == "recbole"
    file = tmp_path / "my.yaml"
    file.write_text("preset: amazon-beauty\ndata:\n  k_core: 3\n")
    config = load_config(file=file)
    assert config.name == "amazon-beauty" and config.data.k_core == 3 and config.data.domain == "beauty"


def test_a_sweep_budget_equal_to_the_base_reuses_the_base_workspace(tmp_path):
    base, config = Workspace(tmp_path), load_config(overrides={"seeds": {"budget": 0.1}})
    same, child = (PoolVariant(f"budget-{b:g}", {"seeds": {"budget": b, "count": None}}).derive(config, base)
                   for b in (0.1, 0.05))
    assert same == (config, base), "the base's own pool and rankers are what this budget would rebuild"
    assert child[0].seeds.budget == 0.05 and child[1].root == tmp_path / "studies" / "budget-0.05"


def test_a_derived_pool_waits_for_the_base_and_follows_its_item_text(tmp_path):
    """A sweep on a base without item text fails before any pool is built; a derived workspace made early
    still sees the base's later steps, so its Feast views are applied again with the item text."""
    from components.steps import STEPS, fingerprint, record_step

    base, config = Workspace(tmp_path), load_config()
    variant = PoolVariant("budget-0.05", {"seeds": {"budget": 0.05, "count": None}})
    with pytest.raises(FileNotFoundError, match=r"embed_users, embed_item_text not run or stale.*'reland run'"):
        variant.build(config, base, progress=False)
    derived, child = variant.derive(config, base)
    prints = [fingerprint(derived, child, STEPS["apply_features"])]
    for content in (b"item text v1", b"item text v2, re-embedded"):
        base.item_text.write_bytes(content)
        record_step(config, base, "embed_item_text", {}, 0.0)
        prints.append(fingerprint(derived, child, STEPS["apply_features"]))
    assert len(set(prints)) == 3


def test_a_task_imports_only_its_own_steps_libraries(tmp_path):
    """A Kubeflow task starts in a fresh process: checking and running ``sample_seeds`` must not pay
    for importing DGL, torch or transformers (seconds each)."""
    script = ("import sys; from components.config import load_config; from components.steps import is_current; "
              "from components.workspace import Workspace; import components.kubeflow_runtime; "
              f"is_current(load_config(), Workspace({str(tmp_path)!r}), 'sample_seeds'); "
              "print(sorted({'dgl', 'torch', 'transformers'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    with pytest.raises(ValidationError, match="k_cor"):
        load_config(overrides={"data": {"k_cor": 3}})
    with pytest.raises(ValidationError, match="split_ratios"):
        load_config(overrides={"data": {"split_ratios": [0.5, 0.1, 0.1]}})
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("nope")


def test_help_explains_each_command():
    runner = CliRunner()
    for args in ([], ["data"], ["data", "prepare"], ["data", "stats"], ["data", "generate"], ["run"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
    assert "--workspace" in runner.invoke(cli, ["--help"]).output


def test_stats_and_prepare_from_the_cli(tmp_path, recbole_folder):
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "stats", str(recbole_folder), "--json"])
    assert result.exit_code == 0 and '"interactions"' in result.output
    result = runner.invoke(cli, ["-q", "-w", str(tmp_path / "ws"), "data", "prepare", "--source", str(recbole_folder)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ws" / "data" / "interactions.parquet").exists()
    config = load_config(overrides={"data": {"source": str(recbole_folder)}})
    assert is_current(config, Workspace(tmp_path / "ws"), "prepare_data"), \
        "a step run by its command is recorded: 'reland run' does not repeat it"


def test_bad_input_exits_2_with_one_line(tmp_path, recbole_folder):
    inter = next(recbole_folder.glob("*.inter"))
    inter.write_text("")
    proc = subprocess.run([sys.executable, "-c", "from pipelines.cli import main; main()", "data", "stats",
                           str(recbole_folder)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {inter}: file is empty"
