"""Adaptive seed sampling: proportions, the nearest-to-centre rule, Eq. (2) weighting, determinism."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.config import SeedConfig
from components.data.tables import vector_array
from components.seeds import (IMPORTANT, REPRESENTATIVE, allocate, importance_step, representative_step,
                              sample_seed_users)


def test_allocation_is_proportional_and_exact():
    counts = allocate(np.array([50, 30, 15, 5]), 10)
    assert counts.tolist() == [5, 3, 2, 0]  # the tied remainder goes to the larger cluster
    assert counts.sum() == 10
    assert allocate(np.array([1, 1, 100]), 50).tolist()[2] >= 48


def test_one_seed_per_cluster_is_the_user_nearest_the_centre():
    cluster = np.array([0, 0, 0, 1, 1, 1])
    distance = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8], np.float32)
    picked = representative_step(2, cluster, distance, np.ones(6, bool), np.random.default_rng(0), k=2)
    assert picked.tolist() == [1, 4]


def test_importance_weighting_follows_interaction_counts():
    weight = np.r_[np.full(500, 5.0), np.full(500, 50.0)]
    hits = np.zeros(1000)
    rng = np.random.default_rng(0)
    for _ in range(200):
        hits[importance_step(50, weight, np.ones(1000, bool), rng)] += 1
    ratio = hits[500:].mean() / hits[:500].mean()
    assert 7 < ratio < 13, f"heavy users should be picked ~10x as often, got {ratio:.1f}"


@pytest.fixture
def vectors(tmp_path):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16))
    matrix = (centres[rng.integers(0, 8, 2000)] + 0.1 * rng.normal(size=(2000, 16))).astype(np.float32)
    path = tmp_path / "vectors.parquet"
    pq.write_table(pa.table({"vector": vector_array(matrix)}), path)
    return path, rng.integers(5, 60, 2000)


def test_adaptive_sampling_meets_the_budget_without_duplicates(vectors):
    path, interactions = vectors
    cfg = SeedConfig(budget=0.1, cluster_fraction=0.02)
    frame, summary = sample_seed_users(cfg, path, interactions, seed=3)
    assert len(frame) == 200 and frame["user_idx"].is_unique
    assert summary["by_strategy"] == {REPRESENTATIVE: 100, IMPORTANT: 100} and summary["clusters"] == 40
    assert set(frame["strategy"]) == {REPRESENTATIVE, IMPORTANT}
    assert interactions[frame["user_idx"]].mean() > interactions.mean(), "importance favours active users"
    again, _ = sample_seed_users(cfg, path, interactions, seed=3)
    assert again.equals(frame)
    other, _ = sample_seed_users(cfg, path, interactions, seed=4)
    assert not other["user_idx"].equals(frame["user_idx"])


def test_random_strategy_and_budget_errors(vectors):
    path, interactions = vectors
    frame, summary = sample_seed_users(SeedConfig(strategy="random", budget=37), path, interactions, seed=0)
    assert len(frame) == 37 and set(frame["strategy"]) == {"random"}
    with pytest.raises(ValueError, match="seed budget"):
        sample_seed_users(SeedConfig(budget=5000), path, interactions, seed=0)
