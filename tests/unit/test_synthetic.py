"""The generator: deterministic under a seed, structured, streamed in blocks."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from components.config import SyntheticConfig, load_config
from components.data import synthetic
from components.data.prepare import prepare_data
from components.workspace import Workspace


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    cfg = SyntheticConfig(users=300, seed=5)
    synthetic.generate(cfg, tmp_path / "a", progress=False)
    synthetic.generate(cfg, tmp_path / "b", progress=False)
    synthetic.generate(SyntheticConfig(users=300, seed=6), tmp_path / "c", progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["interactions.parquet"] != _digest(tmp_path / "c")["interactions.parquet"]


def test_blocks_stitch_into_one_user_major_table(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "USERS_PER_BLOCK", 70)
    meta = synthetic.generate(SyntheticConfig(users=200, seed=1), tmp_path / "s", progress=False)
    inter = pd.read_parquet(tmp_path / "s" / "interactions.parquet")
    assert len(inter) == meta.rows and inter["user"].nunique() == 200
    assert (np.diff(inter["user"]) >= 0).all()
    assert inter.groupby("user")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    assert not inter.duplicated(["user", "item"]).any()
    assert set(inter["behaviour"]) == set(synthetic.BEHAVIOURS)


def test_catalogue_is_readable_and_clustered(tmp_path):
    cfg = SyntheticConfig(users=1000, clusters=4, seed=0)
    synthetic.generate(cfg, tmp_path / "s", progress=False)
    items = pd.read_parquet(tmp_path / "s" / "items.parquet")
    assert items["title"].str.split().str.len().min() >= 3
    assert items["categories"].map(len).eq(3).all() and items["brand"].notna().all()
    inter = pd.read_parquet(tmp_path / "s" / "interactions.parquet")
    bounds = synthetic.item_cluster_bounds(cfg.n_items, cfg.clusters)
    cluster = np.searchsorted(bounds, inter["item"].to_numpy(), side="right") - 1
    share_of_top = pd.Series(cluster).groupby(inter["user"].to_numpy()).agg(lambda c: c.value_counts(normalize=True).iloc[0])
    assert share_of_top.mean() > 0.6, "users concentrate on their taste cluster"
    counts = inter.groupby("user").size()
    assert counts.max() > 4 * counts.median(), "power-law activity has a heavy tail"


def test_prepare_on_synthetic_default(tmp_path):
    config = load_config(overrides={"synthetic": {"users": 400}})
    data = prepare_data(config, Workspace(tmp_path), progress=False)
    assert data.stats["filtered"]["users"] > 300 and data.stats["format"] == "synthetic"
    assert data.users()["user_id"].str.startswith("u").all()
