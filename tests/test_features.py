"""Feast: apply, materialise, and online features equal to the retrieval table's rows."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from components.config import load_config
from components.features import apply_features, materialise_features, online_features
from components.retrieval import TABLE, output_schema
from components.data.tables import vector_array
from components.workspace import Workspace
from pipelines.cli import cli

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
        schema=output_schema(384)), ws.path("features", TABLE))
    return embeddings


def test_online_features_equal_the_parquet_rows_and_refresh(tmp_path):
    ws = Workspace(tmp_path)
    config = load_config()
    users = [f"u{i}" for i in range(20)]
    first = write_table(ws, users, 1, datetime.now(timezone.utc) - timedelta(hours=2))
    assert apply_features(config, ws) == ["user", "user_rationale_embedding", "ranker"]
    materialise_features(config, ws, end=datetime.now(timezone.utc) - timedelta(hours=1))
    got = online_features(ws, ["u7", "nobody"])
    assert np.allclose(got["rationale_embedding"][0], first[7], atol=1e-6)
    assert got["seed_user_id"] == ["seed1", None] and got["pool_version"] == [1, None]
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
