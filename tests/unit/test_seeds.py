"""Adaptive seed sampling: proportions, the nearest-to-centre rule, Eq. (2) weighting, nesting, determinism."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from components.config import SeedConfig
from components.data.tables import vector_array
from components.seeds import (IMPORTANT, REPRESENTATIVE, importance_order, interleave, representative_order,
                              sample_seed_users)


def test_every_prefix_of_the_representative_order_is_proportional_to_cluster_sizes():
    cluster = np.repeat([0, 1, 2, 3], [50, 30, 15, 5]).astype(np.int32)
    distance = np.random.default_rng(0).random(100).astype(np.float32)
    order = representative_order(cluster, distance, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(100))
    for size in (4, 10, 20, 50):
        counts = np.bincount(cluster[order[:size]], minlength=4)
        assert np.abs(counts - size * np.array([.5, .3, .15, .05])).max() <= 1, (size, counts)
    assert np.bincount(cluster[order[:10]], minlength=4).tolist() == [5, 3, 2, 0]


def test_a_clusters_first_seed_is_the_user_nearest_its_centre():
    cluster = np.array([0, 0, 0, 1, 1, 1], np.int32)
    distance = np.array([0.5, 0.1, 0.9, 0.3, 0.2, 0.8], np.float32)
    assert sorted(representative_order(cluster, distance, np.random.default_rng(0))[:2].tolist()) == [1, 4]


def test_importance_order_follows_interaction_counts():
    weight = np.r_[np.full(500, 5.0), np.full(500, 50.0)]
    hits = np.zeros(1000)
    rng = np.random.default_rng(0)
    for _ in range(200):
        hits[importance_order(weight, 50, rng)] += 1
    ratio = hits[500:].mean() / hits[:500].mean()
    assert 7 < ratio < 13, f"heavy users should be picked ~10x as often, got {ratio:.1f}"


def test_interleaving_alternates_by_share_and_never_repeats_a_user():
    users, from_first = interleave(np.array([0, 1, 2, 3, 4, 5]), np.array([1, 6, 7, 0, 8, 9]), 0.5)
    assert users.tolist() == [0, 1, 6, 2, 7, 3, 4, 8, 5, 9]  # each stream's second 1 and 0 are skipped
    assert from_first.tolist() == [True, False, False, True, False, True, True, False, True, False]
    thirds, _ = interleave(np.arange(0, 30), np.arange(100, 130), 2 / 3)
    assert (thirds[:9] < 100).sum() == 6
    only, _ = interleave(np.array([3, 1]), np.array([2, 0]), 0.0)
    assert only.tolist() == [2, 0]


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
    assert len(frame) == 200 and frame["user_idx"].is_unique and summary["clusters"] == 40
    assert abs(summary["by_strategy"][REPRESENTATIVE] - 100) <= 10 and sum(summary["by_strategy"].values()) == 200
    assert set(frame["strategy"]) == {REPRESENTATIVE, IMPORTANT}
    assert sorted(frame["rank"]) == list(range(200))
    assert interactions[frame["user_idx"]].mean() > interactions.mean(), "importance favours active users"
    again, _ = sample_seed_users(cfg, path, interactions, seed=3)
    assert again.equals(frame)
    other, _ = sample_seed_users(cfg, path, interactions, seed=4)
    assert not other["user_idx"].equals(frame["user_idx"])


@pytest.mark.parametrize("strategy", ["adaptive", "random"])
def test_the_seeds_of_a_budget_are_among_those_of_every_larger_budget(vectors, strategy):
    path, interactions = vectors
    sets = [set(sample_seed_users(SeedConfig(strategy=strategy, budget=b, cluster_fraction=0.02), path,
                                  interactions, seed=3)[0]["user_idx"]) for b in (0.01, 0.025, 0.05, 0.1, 0.5, 1.0)]
    assert [len(s) for s in sets] == [20, 50, 100, 200, 1000, 2000]
    assert all(small < large for small, large in zip(sets, sets[1:]))
    if strategy == "adaptive":  # the mix holds at every size, not only the largest
        for budget in (0.025, 0.1, 0.5):
            frame, summary = sample_seed_users(SeedConfig(budget=budget, cluster_fraction=0.02), path, interactions, 3)
            share = summary["by_strategy"][REPRESENTATIVE] / len(frame)
            assert 0.4 <= share <= 0.6, (budget, share)
            assert interactions[frame["user_idx"]].mean() > interactions.mean()


def test_budget_is_a_fraction_and_count_a_number(vectors):
    path, interactions = vectors
    frame, summary = sample_seed_users(SeedConfig(strategy="random", count=37), path, interactions, seed=0)
    assert len(frame) == 37 and set(frame["strategy"]) == {"random"} and summary["seeds"] == 37
    with pytest.raises(ValidationError, match="seeds.count: 37"):
        SeedConfig(budget=37)
    with pytest.raises(ValueError, match="seeds.count is 5000 but the data has 2000 users"):
        sample_seed_users(SeedConfig(count=5000), path, interactions, seed=0)
