"""Feast: apply, materialise, and online features equal to the retrieval table's rows."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from components.config import load_config
from components import features as features_module
from components.features import apply_features, materialise_features, online_features
from components.retrieval import output_schema
from components.data.tables import vector_array
from components.workspace import Workspace
from feature_repo import feature_store
from pipelines.cli import cli

from builders import make_pool

import pyarrow.parquet as pq


def write_table(ws: Workspace, users: list[str], version: int, when: datetime) -> np.ndarray:
    rng = np.random.default_rng(version)
    embeddings = rng.normal(size=(len(users), 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    n = len(users)
    pq.write_table(pa.Table.from_arrays([
        pa.array(users), pa.array(np.arange(n)), vector_array(embeddings), pa.array([f"seed{i % 3}" for i in range(n)]),
        pa.array(np.linspace(0.1, 0.9, n).astype(np.float32)), pa.array(np.full(n, version)),
        pa.array(np.full(n, int(when.timestamp() * 1e6)), pa.timestamp("us", tz="UTC"))],
        schema=output_schema(384)), ws.user_rationales)
    return embeddings


FEAST = str(Path(sys.executable).parent / "feast")
FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def feast_cli(*args: str, workspace: Path | None, **env_vars: str) -> subprocess.CompletedProcess:
    """The Feast CLI in ``feature_repo/``, as a user runs it, with ``RELAND_WORKSPACE`` naming ``workspace``."""
    env = {k: v for k, v in os.environ.items() if k != "RELAND_WORKSPACE"} | env_vars
    env |= {"RELAND_WORKSPACE": str(workspace)} if workspace else {}
    return subprocess.run([FEAST, *args], cwd=FEATURE_REPO, env=env, capture_output=True, text=True, timeout=120)


def test_online_features_equal_the_parquet_rows_and_refresh(tmp_path):
    ws = Workspace(tmp_path)
    config = load_config()
    users = [f"u{i}" for i in range(20)]
    make_pool(ws)
    first = write_table(ws, users, 1, datetime.now(timezone.utc) - timedelta(hours=2))
    assert apply_features(config, ws) == ["user", "item", "user_rationale_embedding", "ranker"]
    materialise_features(config, ws, end=datetime.now(timezone.utc) - timedelta(hours=1))
    got = online_features(ws, ["u7", "nobody"])
    assert np.allclose(got["rationale_embedding"][0], first[7], atol=1e-6)
    assert got["seed_user_id"] == ["seed1", None] and got["pool_version"] == [1, None]
    make_pool(ws)  # pool v2
    second = write_table(ws, users, 2, datetime.now(timezone.utc) - timedelta(minutes=5))
    materialise_features(config, ws)
    materialise_features(config, ws)  # idempotent
    got = online_features(ws, ["u7"])
    assert got["pool_version"] == [2] and np.allclose(got["rationale_embedding"][0], second[7], atol=1e-6)
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "features", "show", "u7"])
    assert result.exit_code == 0 and '"pool_version": 2' in result.output
    result = CliRunner().invoke(cli, ["-w", str(tmp_path), "features", "show", "ghost"])
    assert result.exit_code == 2 and "no online features for user 'ghost'" in result.output


def test_clear_errors_before_apply(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(FileNotFoundError, match="run 'reland pool retrieve' first"):
        apply_features(load_config(), ws)
    write_table(ws, ["a"], 1, datetime.now(timezone.utc))
    with pytest.raises(ValueError, match="run 'reland features apply'"):
        online_features(ws, ["a"])


DEFECTS = {
    "NaN in an embedding": (lambda e, t: e.__setitem__((3, 5), np.nan), "non_finite"),
    "not unit norm": (lambda e, t: e.__setitem__(4, e[4] * 3), "norm"),
    "similarity above 1": (lambda e, t: t.__setitem__("similarity", np.r_[1.5, t["similarity"][1:]]), "similarity"),
    "seed not in the pool": (lambda e, t: t.__setitem__("seed_user_id", ["ghost"] + t["seed_user_id"][1:]), "seed_user_id"),
    "stale pool version": (lambda e, t: t.__setitem__("pool_version", np.full(len(e), 1)), "pool_version"),
    "user twice": (lambda e, t: t.__setitem__("user_id", ["u1"] + t["user_id"][1:]), "user_id"),
    "old timestamp": (lambda e, t: t.__setitem__("event_timestamp", t["event_timestamp"] - 10 * 86_400 * 10**6), "age_s"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_gate_catches_each_defect_and_old_features_stay_served(tmp_path, defect):
    from validation.gate import ValidationFailed

    ws = Workspace(tmp_path)
    config = load_config()
    users = [f"u{i}" for i in range(10)]
    make_pool(ws)
    good = write_table(ws, users, 1, datetime.now(timezone.utc) - timedelta(minutes=30))
    apply_features(config, ws)
    materialise_features(config, ws, end=datetime.now(timezone.utc) - timedelta(minutes=10))
    make_pool(ws)  # v2, and a new table for it with one planted defect
    rng = np.random.default_rng(9)
    embeddings = rng.normal(size=(10, 384)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    columns = {"user_id": list(users), "similarity": np.full(10, 0.5, np.float32),
               "seed_user_id": ["seed1"] * 10, "pool_version": np.full(10, 2),
               "event_timestamp": np.full(10, int(datetime.now(timezone.utc).timestamp() * 1e6))}
    plant, column = DEFECTS[defect]
    plant(embeddings, columns)
    pq.write_table(pa.Table.from_arrays([
        pa.array(columns["user_id"]), pa.array(np.arange(10)), vector_array(embeddings), pa.array(columns["seed_user_id"]),
        pa.array(columns["similarity"], pa.float32()), pa.array(columns["pool_version"]),
        pa.array(columns["event_timestamp"], pa.timestamp("us", tz="UTC"))], schema=output_schema(384)),
        ws.user_rationales)
    with pytest.raises(ValidationFailed, match=rf"(?s)failed.*\({column}\)"):
        materialise_features(config, ws)
    served = online_features(ws, ["u5"])
    assert served["pool_version"] == [1] and np.allclose(served["rationale_embedding"][0], good[5], atol=1e-6)
    assert (tmp_path / "validation" / "user_rationale_embedding.json").exists()
    assert (tmp_path / "validation" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


def test_redis_online_store_serves_the_same_rows(tmp_path, redis_url):
    ws = Workspace(tmp_path)
    config = load_config(overrides={"features": {"online_store": "redis", "redis_url": redis_url}})
    make_pool(ws)
    embeddings = write_table(ws, [f"u{i}" for i in range(12)], 1, datetime.now(timezone.utc) - timedelta(minutes=5))
    apply_features(config, ws)
    materialise_features(config, ws)
    got = online_features(ws, ["u3", "u11"], config.features)
    assert np.allclose(got["rationale_embedding"], embeddings[[3, 11]], atol=1e-6)
    assert got["seed_user_id"] == ["seed0", "seed2"]
    assert not (tmp_path / "features" / "online_store.db").exists(), "nothing went to SQLite"
    plan = feast_cli("-f", "feature_store_redis.yaml", "plan", workspace=ws.root, RELAND_REDIS_URL=redis_url)
    assert plan.returncode == 0 and "No changes to registry" in plan.stdout, plan.stdout + plan.stderr


def test_historical_features_are_point_in_time_correct(tmp_path):
    from feature_repo import feature_store

    ws = Workspace(tmp_path)
    config = load_config()
    make_pool(ws)
    day1, day2 = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 2, tzinfo=timezone.utc)
    old = write_table(ws, ["a", "b"], 1, day1)
    old_table = pq.read_table(ws.user_rationales)
    new = write_table(ws, ["a", "b"], 2, day2)
    pq.write_table(pa.concat_tables([old_table, pq.read_table(ws.user_rationales)]), ws.user_rationales)
    apply_features(config, ws)
    entities = pd.DataFrame({"user_id": ["a", "a"], "event_timestamp": [day1 + timedelta(hours=12),
                                                                        day2 + timedelta(hours=12)]})
    training = feature_store(ws).get_historical_features(
        entity_df=entities, features=["user_rationale_embedding:rationale_embedding",
                                      "user_rationale_embedding:pool_version"]).to_df()
    training = training.sort_values("event_timestamp")
    assert training["pool_version"].tolist() == [1, 2], "a training row never sees features computed after it"
    assert np.allclose(training["rationale_embedding"].iloc[0], old[0], atol=1e-6)
    assert np.allclose(training["rationale_embedding"].iloc[1], new[0], atol=1e-6)


def test_interaction_and_behaviour_gates(tmp_path):
    from components.behaviour import embed_users, train_behaviour_encoder
    from components.checks import validate_behaviour_vectors, validate_interactions
    from components.data.prepare import prepare_data
    from validation.gate import ValidationFailed

    ws = Workspace(tmp_path)
    config = load_config(overrides={"synthetic": {"users": 200, "clusters": 3},
                                    "encoder": {"dim": 8, "heads": 2, "epochs": 1, "batch_size": 512}})
    prepare_data(config, ws, progress=False)
    assert validate_interactions(config, ws)["success"]
    train_behaviour_encoder(config, ws, progress=False)
    embed_users(config, ws, progress=False)
    from components.data.tables import PreparedDataset

    assert validate_behaviour_vectors(config, ws)["rows"] == PreparedDataset(ws.prepared).n_users
    staged = ws.root / "raw" / "interactions.parquet"
    table = pq.read_table(staged)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), staged)  # a duplicate row
    with pytest.raises(ValidationFailed, match="expect_compound_columns_to_be_unique"):
        validate_interactions(config, ws)
    vectors = ws.user_vectors
    table = pq.read_table(vectors)
    pq.write_table(table.slice(1), vectors)  # a user lost
    with pytest.raises(ValidationFailed, match="every user needs one vector"):
        validate_behaviour_vectors(config, ws)


def test_the_feast_cli_plans_applies_and_materialises_a_workspace(tmp_path):
    """``cd feature_repo && feast plan`` against a workspace ``reland features apply`` registered:
    nothing to delete or change; ``feast apply`` and ``materialize-incremental`` work, and a user's own
    script reads the rows through ``get_online_features``; without RELAND_WORKSPACE, one clear line."""
    ws = Workspace(tmp_path / "ws")
    make_pool(ws)
    embeddings = write_table(ws, [f"u{i}" for i in range(20)], 1, datetime.now(timezone.utc) - timedelta(hours=2))
    apply_features(load_config(), ws)
    plan = feast_cli("plan", workspace=ws.root)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "No changes to registry" in plan.stdout and "No changes to infrastructure" in plan.stdout, plan.stdout
    for args in (("apply",), ("materialize-incremental", datetime.now(timezone.utc).isoformat())):
        done = feast_cli(*args, workspace=ws.root)
        assert done.returncode == 0, done.stdout + done.stderr
    script = ("from feast import FeatureStore\n"
              "store = FeatureStore(repo_path='.')\n"
              "rows = store.get_online_features(features=store.get_feature_service('ranker'),\n"
              "                                 entity_rows=[{'user_id': 'u7'}]).to_dict()\n"
              "print(repr(rows['rationale_embedding'][0]))\n")
    env = {**os.environ, "RELAND_WORKSPACE": str(ws.root)}
    done = subprocess.run([sys.executable, "-c", script], cwd=FEATURE_REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.allclose(eval(done.stdout), embeddings[7], atol=1e-6)
    unset = feast_cli("plan", workspace=None)
    assert unset.returncode != 0 and "RELAND_WORKSPACE=(unset): set it to a workspace folder" in unset.stderr


def test_a_moved_workspace_registry_names_its_own_tables(tmp_path):
    """Feast keeps source paths absolute: a copy re-points them at its own tables when first opened,
    and never reads the original's (removed here)."""
    original, config = Workspace(tmp_path / "a"), load_config()
    make_pool(original)
    write_table(original, ["u1", "u2"], 1, datetime.now(timezone.utc) - timedelta(hours=1))
    apply_features(config, original)
    shutil.copytree(original.root, tmp_path / "b", symlinks=True)
    shutil.rmtree(original.root)
    moved = Workspace(tmp_path / "b")
    paths = [source.path for source in feature_store(moved, config.features).list_data_sources()]
    assert paths and all(path.startswith(str(moved.root) + "/") for path in paths), paths
    materialise_features(config, moved)
    assert online_features(moved, ["u2"])["pool_version"] == [1]


def write_user_vectors(ws: Workspace, users: int, dim: int = 8) -> None:
    """Behaviour vectors as embed_users writes them (values generated here)."""
    vectors = np.random.default_rng(5).normal(size=(users, dim)).astype(np.float32)
    stamp = int((datetime.now(timezone.utc) - timedelta(minutes=10)).timestamp() * 1e6)
    pq.write_table(pa.table({"user_idx": np.arange(users), "user_id": [f"u{i}" for i in range(users)],
                             "vector": vector_array(vectors), "cold": np.zeros(users, bool),
                             "event_timestamp": pa.array(np.full(users, stamp), pa.timestamp("us", tz="UTC"))}),
                   ws.user_vectors, row_group_size=50)


def test_seed_keyed_layout_serves_and_trains_on_the_per_user_layouts_features(tmp_path, redis_url):
    """Top-1 retrieval stored per seed and joined at serving gives every user exactly the embedding the
    per-user layout stores, online (SQLite; Redis with two writer processes) and in training's
    point-in-time join, while storing each seed's embedding once."""
    from components.ranker_data import rationale_features
    from components.retrieval import retrieve_rationales

    users = [f"u{i}" for i in range(300)]
    served, trained = {}, {}
    for layout, store in (("per_user", "sqlite"), ("seed_keyed", "sqlite"), ("seed_keyed", "redis")):
        ws = Workspace(tmp_path / f"{layout}-{store}")
        make_pool(ws)
        write_user_vectors(ws, len(users))
        config = load_config(overrides={"features": {"layout": layout, "online_store": store, "redis_url": redis_url,
                                                     "write_workers": 2, "write_batch_rows": 1000}})
        assert retrieve_rationales(config, ws, progress=False)["layout"] == layout
        names = apply_features(config, ws)
        assert ("seed_rationale_embedding" in names) == (layout == "seed_keyed")
        written = materialise_features(config, ws, progress=False)
        assert written["rows_written"]["user_rationale_embedding"] == len(users)
        assert written["rows_written"].get("seed_rationale_embedding", 3) == 3, "each seed once"
        assert materialise_features(config, ws, progress=False)["rows_written"]["user_rationale_embedding"] == 0, \
            "incremental: nothing new to write"
        got = online_features(ws, users + ["nobody"], config.features)
        assert got["rationale_embedding"][-1] is None and got["seed_user_id"][-1] is None
        served[layout, store] = (np.array(got["rationale_embedding"][:-1]), got["seed_user_id"][:-1])
        as_of = pd.Timestamp.now(tz="UTC")
        trained[layout, store] = rationale_features(ws, config.features, pd.Series(users), as_of)
        if (layout, store) == ("seed_keyed", "sqlite"):  # the two-entity seed view is what `feast apply` would register
            plan = feast_cli("plan", workspace=ws.root)
            assert plan.returncode == 0 and "No changes to registry" in plan.stdout, plan.stdout + plan.stderr
    reference, seeds = served["per_user", "sqlite"]
    assert len(set(seeds)) == 3
    for key, (vectors, assigned) in served.items():
        assert assigned == seeds and np.allclose(vectors, reference, atol=1e-6), key
        assert np.allclose(trained[key], reference, atol=1e-6), key


def test_a_warmed_handle_serves_seed_keyed_features_with_one_lookup(tmp_path):
    """The seed embeddings a (pool version, seed) names never change, so the handle reads them once."""
    from components.retrieval import retrieve_rationales

    ws = Workspace(tmp_path)
    make_pool(ws)
    write_user_vectors(ws, 40)
    config = load_config()
    retrieve_rationales(config, ws, progress=False)
    apply_features(config, ws)
    materialise_features(config, ws, progress=False)
    online = features_module.OnlineFeatures(ws, config.features)
    assert online.warm() == 3
    asked = []
    real = online.store.get_online_features
    online.store.get_online_features = lambda **kw: asked.append(kw["features"].name) or real(**kw)
    first = online.get(["u1", "u2"])["rationale_embedding"]
    assert asked == ["ranker"], "no second lookup once warm"
    assert np.allclose(first, online_features(ws, ["u1", "u2"], config.features)["rationale_embedding"])
    small = features_module.OnlineFeatures(ws, config.features, seed_cache=1)
    small.get([f"u{i}" for i in range(40)])
    assert len(small._embeddings) == 1, "bounded"
