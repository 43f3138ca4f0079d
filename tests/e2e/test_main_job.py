"""The main job on the local Kubeflow runner: killed during rationale generation, it resumes and finishes
without repeating an LLM call (this is also the CI's local pipeline run on a tiny generated dataset)."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from components.workspace import MLFLOW_STORE, RANKER_METRICS, Workspace
from openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "synthetic": {"users": 400, "clusters": 4},
        "encoder": {"dim": 16, "heads": 2, "epochs": 1, "batch_size": 512, "inference_batch": 256},
        "seeds": {"budget": 0.25},
        "llm": {"backend": "openai", "base_url": url, "model": "test-model", "batch_size": 1, "concurrency": 1,
                "timeout_s": 5},
        "ranker": {"dim": 16, "epochs": 2}}))
    return path


def reland(workspace: Path, config: Path) -> subprocess.Popen:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "-q", "-w", str(workspace), "--config", str(config),
                             "run"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: the kill takes every task with it


def identity(messages: list[dict]) -> tuple[str, str]:
    """A prompt as the server sees it (the local-model prefill is not sent): system and user text."""
    text = {m["role"]: m["content"] for m in messages if m["role"] != "assistant"}
    return text["system"], text["user"]


def cached_prompts(workspace: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(Workspace(workspace).llm_cache) as db:
        return {identity(json.loads(row[0])) for row in db.execute("SELECT prompt FROM responses")}


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_llm_calls(tmp_path):
    workspace = tmp_path / "ws"
    with FakeOpenAI() as server:
        server.delay_s = 0.05
        config = write_config(tmp_path / "config.yaml", server.url)
        first = reland(workspace, config)
        deadline = time.time() + 240
        while len(server.requests) < 15 and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, f"the run ended before it could be killed:\n{first.stdout.read()}"
        os.killpg(first.pid, signal.SIGKILL)  # no clean-up, no flush: a machine dying mid-generation
        first.wait()
        paid = cached_prompts(workspace)
        assert len(paid) >= 10 and not Workspace(workspace).rationale_summary.exists(), \
            "the kill landed during rationale generation"
        asked_before = len(server.requests)

        second = reland(workspace, config)
        output, _ = second.communicate(timeout=900)  # a hang guard, not a speed check: CI machines are shared
        assert second.returncode == 0, output
        again = [identity(r["body"]["messages"]) for r in server.requests[asked_before:]]
        assert not paid & set(again), "an answer already paid for was asked again"
        assert len(again) == len(set(again))
    for step in ("prepare data", "train encoder", "embed users", "sample seeds"):
        assert f"   {step}: up to date, skipped" in output, output
    assert "pipeline reasoning_pool (kfp.local.SubprocessRunner)" in output
    assert "Feast get_online_features(ranker" in output
    assert f"serve:      reland -w {workspace} --config {config} serve --port 8000" in output, "the run's options"
    answers = json.loads(Workspace(workspace).rationale_summary.read_text())
    assert f"LLM answers {answers['calls'] + answers['cache_hits']:,} " \
           f"({len(again):,} paid when generated, {len(paid):,} from the cache of earlier attempts)" in output
    assert "with rationales (RELAND): test NDCG@10" in output and "without rationales (+f_item)" in output
    ndcg = {label: float(re.search(rf"{re.escape(label)}: test NDCG@10 ([0-9.]+)", output).group(1))
            for label in ("with rationales (RELAND)", "without rationales (+f_item)")}
    below = ndcg["with rationales (RELAND)"] < ndcg["without rationales (+f_item)"]
    assert below == ("RELAND is below +f_item here" in output), output  # said, in one line, only when it is
    summary = json.loads(Workspace(workspace).rationale_summary.read_text())
    assert summary["cache_hits"] == len(paid) and summary["calls"] == len(again)
    assert summary["ok"] + summary["failed"] == summary["seeds"] > len(paid)
    tracked_as_mlflow_users_expect(workspace)
    every_step_records_the_result_its_type_declares(workspace)

    controls = subprocess.run([sys.executable, "-m", "pipelines.cli", "-q", "-w", str(workspace), "--config",
                               str(config), "experiments", "controls", "--backbones", "lightgcn", "--epochs", "1"],
                              cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                              timeout=900)
    assert controls.returncode == 0, controls.stdout + controls.stderr
    for label in ("+f_item", "RELAND", "control: seed vector", "control: shuffled", "control: profile"):
        assert label in controls.stdout, controls.stdout
    profile = json.loads(Workspace(workspace / "studies" / "control-profile").rationale_summary.read_text())
    assert profile["calls"] == 0 and profile["source"] == "profile", "the profile control asks no LLM"
    shuffled = json.loads(Workspace(workspace / "studies" / "control-shuffled").rationale_summary.read_text())
    assert shuffled["calls"] == 0, "the shuffled control reuses the answers already paid for"
    backbones = workspace / "studies" / "control-profile" / "ranker" / "backbones"
    assert backbones.is_symlink() and not os.path.isabs(os.readlink(backbones)), "shared, and movable"
    fused = json.loads((backbones.parent / "lightgcn-reland" / RANKER_METRICS).read_text())
    assert fused["backbone_run"]["reused"], "the control's fusion sits on the +f_item backbone already trained"
    sweep_pays_no_call_below_the_budget_already_built(workspace, config)
    moved_workspace_keeps_working(workspace, tmp_path / "moved", config)


def tracked_as_mlflow_users_expect(workspace: Path) -> None:
    """The served version is aliased and points at the run that trained it; the main job's run holds
    a cost/quality table in which the LLM-free variant paid nothing."""
    import mlflow

    from components.tracking import tracking_uri

    uri = tracking_uri(Workspace(workspace))  # a client of its own: set_tracking_uri would reach the subprocesses
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("reland-ranker-synthetic", "champion")
    assert client.get_run(champion.run_id).data.metrics["test_ndcg_at_10"] > 0
    experiment = client.get_experiment_by_name("rankers-synthetic").experiment_id
    main = client.search_runs([experiment], "attributes.run_name = 'main job'")
    table = json.loads(Path(client.download_artifacts(main[0].info.run_id, "cost_quality.json")).read_text())
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert rows["item_text"]["llm_calls"] == 0 and rows["reland"]["llm_calls"] > 0 and rows["reland"]["ndcg@10"] > 0


def every_step_records_the_result_its_type_declares(workspace: Path) -> None:
    """Each step's recorded result has the fields of the result type its function declares (a TypedDict)."""
    import typing

    import components.ranker
    from components.steps import STEPS

    records = sorted((workspace / "steps").glob("*.json"))
    assert {json.loads(p.read_text())["step"] for p in records} == set(STEPS), "every step ran"
    for path in records:
        record = json.loads(path.read_text())
        function = STEPS[record["step"]].function
        names = {**vars(sys.modules[function.__module__]), **vars(components.ranker)}  # RankerResult: a typing import
        declared = typing.get_type_hints(function, globalns=names)["return"]
        if typing.get_origin(declared) is list:
            assert isinstance(record["result"], list), path
            continue
        fields, required = set(record["result"]), declared.__required_keys__
        allowed = required | declared.__optional_keys__
        assert required <= fields <= allowed, f"{path.name}: missing {required - fields}, undeclared {fields - allowed}"


def sweep_pays_no_call_below_the_budget_already_built(workspace: Path, config: Path) -> None:
    """Seeds are nested and the main job's budget (0.25) is the workspace itself, so the sweep pays no call:
    its total is what the main job's pool paid, the smaller budget's none. Its table then gives a budget
    recommendation with plots."""
    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "-q", "-w", str(workspace), "--config",
                               str(config), "experiments", *args], cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    sweep = cli("sweep", "--backbones", "lightgcn", "--budgets", "0.1,0.25", "--epochs", "1", "--jobs", "2")
    paid, unnested = (int(n.replace(",", "")) for n in re.search(r"LLM calls paid: ([\d,]+) .* would pay ([\d,]+)",
                                                                 sweep).group(1, 2))
    base_paid = json.loads(Workspace(workspace).rationale_summary.read_text())["calls"]
    assert paid == base_paid and unnested > paid, sweep
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{Workspace(workspace).file(MLFLOW_STORE)}")
    experiment = next(e for e in client.search_experiments() if e.name.startswith("seed-sweep-"))
    run = client.search_runs([experiment.experiment_id], "attributes.run_name = 'seed-sweep'")[0]
    assert run.data.metrics["sweep_llm_calls_unnested"] == unnested, "the total, not one budget's count"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "llm_calls")] == [1000, 2500]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "llm_calls_paid")] == [0, base_paid]
    advice = cli("recommend-budget", "--backbone", "lightgcn", "--value-per-point", "100")
    assert re.search(r"for [\d,]+ users: [\d,]+ seeds", advice) and "lightgcn-recommended.html" in advice, advice


def moved_workspace_keeps_working(original: Path, moved: Path, config: Path) -> None:
    """``mv`` a finished workspace: a re-run skips every step, and features, pool and service work from
    the new place; no text record names the old one (which no longer exists)."""
    from fastapi.testclient import TestClient

    from components.config import load_config
    from serving import create_app

    from components.steps import STEPS, is_current

    settings = load_config(file=config)
    stale = [name for name in STEPS if name != "train_ranker" and not is_current(settings, Workspace(original), name)]
    assert not stale, f"stale before the move (the studies changed the base workspace?): {stale}"
    original.rename(moved)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "-w", str(moved), "--config", str(config), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    again = cli("run", "--runner", "inline")
    states = re.findall(r"^   ([a-z].*?): (.+)$", again, re.M)
    assert states and all(state == "up to date, skipped" for _, state in states), again
    user = re.search(r"get_online_features\(ranker, user_id=(\S+)\)", again).group(1)
    assert '"seed_user_id"' in cli("features", "show", user) and cli("pool", "search", user).strip()
    with TestClient(create_app(Workspace(moved), load_config(file=config))) as client:
        assert client.get("/ready").json()["status"] == "ready"
        items = pd.read_parquet(Workspace(moved).prepared / "items.parquet")["item_id"].astype(str).tolist()
        answer = client.post("/rank", json={"user_id": user, "candidates": items[:20], "k": 5})
        assert answer.status_code == 200 and len(answer.json()["items"]) == 5, answer.text
    records = [p for p in moved.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix in (".json", ".yaml")
               and p.relative_to(moved).parts[0] != "kfp"]  # kfp/: the local runner's history of past runs
    naming_the_old = [str(p.relative_to(moved)) for p in records if str(original) in p.read_text(errors="ignore")]
    assert not naming_the_old, naming_the_old
