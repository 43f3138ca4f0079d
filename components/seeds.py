"""Step ``sample_seeds``: the seed users the LLM reasons about (§3.1.1).

Seeds are the first ``count`` users of one priority order, so the seeds of a budget are a subset
of those of every larger budget (same data, encoder and seed): a budget sweep pays the LLM only
for its largest budget.  The order interleaves two streams, ``representative_share`` of every
prefix from the first, skipping a user already taken:

* representativeness: K-means over the behaviour matrix M; seats go to clusters by Webster's
  divisor method, so every prefix gives cluster ``k`` N_k ∝ |C_k| seeds; inside a cluster the
  user nearest its centre comes first, the others follow at random;
* importance: a weighted random order with weights |D_u| (Eq. 2), so every prefix is a sample
  without replacement with probability ∝ |D_u| (Efraimidis-Spirakis keys).

``strategy: random`` takes a uniform random order instead (the paper's "w/o a.s." ablation).
Output: ``pool/seeds.parquet`` (user_idx, user_id, strategy, cluster, rank, n_interactions; rank is
the position in the order) and ``pool/seeds.json``.  Vectors are streamed; per user only a few
numbers stay in memory.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TypedDict

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.config import Config, SeedConfig
from components.data.tables import USERS, vectors_of, write_table
from components.workspace import SEEDS_SUMMARY, Workspace, write_json

REPRESENTATIVE, IMPORTANT, RANDOM = "representativeness", "importance", "random"


def seed_count(cfg: SeedConfig, n_users: int) -> int:
    """``seeds.count`` when set, else ``seeds.budget`` (a fraction of users) of ``n_users``, at least one."""
    count = cfg.count if cfg.count is not None else max(1, round(cfg.budget * n_users))
    if count > n_users:
        raise ValueError(f"seeds.count is {count} but the data has {n_users} users")
    return count


def iter_unit_vectors(path: Path, batch_rows: int = 65_536):
    """(first row, unit-norm float32 block) over the ``vector`` column of a Parquet table."""
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["vector"]):
        block = vectors_of(batch.column("vector"))
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        yield start, block
        start += len(block)


def kmeans_assign(path: Path, n_users: int, k: int, cfg: SeedConfig, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster of each user and its distance to the centre; trained on a sample, assigned in a stream."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n_users, min(n_users, k * cfg.points_per_centroid), replace=False))
    parts = [block[sample[(sample >= start) & (sample < start + len(block))] - start]
             for start, block in iter_unit_vectors(path)]
    training = np.ascontiguousarray(np.concatenate(parts))
    kmeans = faiss.Kmeans(training.shape[1], k, niter=cfg.kmeans_iterations, seed=seed,
                          max_points_per_centroid=cfg.points_per_centroid, min_points_per_centroid=1)
    kmeans.train(training)
    cluster = np.empty(n_users, np.int32)
    distance = np.empty(n_users, np.float32)
    for start, block in iter_unit_vectors(path):
        d, c = kmeans.index.search(block, 1)
        cluster[start: start + len(block)], distance[start: start + len(block)] = c[:, 0], d[:, 0]
    return cluster, distance, float(kmeans.obj[-1])


def rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, … inside each run of equal values of a sorted array."""
    first = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    return np.arange(len(groups)) - np.repeat(first, np.diff(np.r_[first, len(groups)]))


def representative_order(cluster: np.ndarray, distance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every user in the order representativeness picks them: the j-th seat of cluster k has
    priority |C_k| / (j + 1/2) (Webster), and a cluster's first seat is its centre-most user."""
    by_distance = np.lexsort((distance, cluster))
    key = rng.random(len(cluster))
    key[by_distance[rank_within(cluster[by_distance]) == 0]] = -1.0  # the centre-most user leads
    order = np.lexsort((key, cluster))
    sizes = np.bincount(cluster)
    priority = sizes[cluster[order]] / (rank_within(cluster[order]) + 0.5)
    return order[np.lexsort((cluster[order], -priority))]


def importance_order(weight: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``count`` users of a random order whose every prefix is a weighted sample (p ∝ weight)."""
    key = np.log(rng.random(len(weight))) / weight
    top = np.argpartition(-key, count - 1)[:count]
    return top[np.argsort(-key[top], kind="stable")]


def interleave(first: np.ndarray, second: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Two orders merged so each prefix takes ``share`` of its slots from ``first``; a user already
    taken is skipped (its slot lost, so the share drifts by the overlap); the users, and whether each
    came from ``first``."""
    parts = [(order, s, label) for order, s, label in ((first, share, True), (second, 1 - share, False)) if s > 0]
    position = np.concatenate([(np.arange(len(order)) + 0.5) / s for order, s, _ in parts])
    users = np.concatenate([order for order, _, _ in parts])
    from_first = np.concatenate([np.full(len(order), label) for order, _, label in parts])
    merged = np.argsort(position, kind="stable")  # ties: ``first`` leads
    _, kept = np.unique(users[merged], return_index=True)
    kept = merged[np.sort(kept)]
    return users[kept], from_first[kept]


class _AdaptiveSeeds(TypedDict, total=False):  # (NotRequired is not seen at run time under postponed annotations)
    clusters: int  # K of the representativeness K-means
    kmeans_inertia: float
    by_strategy: dict[str, int]  # seeds taken as representative / important


class SeedSummary(_AdaptiveSeeds):
    """``pool/seeds.json``: how many seeds, drawn how, and how active they are against all users
    (the K-means figures with the adaptive strategy)."""
    strategy: str  # adaptive | random
    seeds: int
    users: int
    budget: float  # seeds / users
    mean_interactions_seeds: float
    mean_interactions_users: float


def sample_seed_users(cfg: SeedConfig, vectors: Path, interactions: np.ndarray, seed: int) -> tuple[pd.DataFrame, dict]:
    """The seed set with each seed's origin and rank in the priority order, and a summary."""
    n = len(interactions)
    count = seed_count(cfg, n)
    rng = np.random.default_rng(seed)
    if cfg.strategy == "random":
        users = rng.permutation(n)[:count]
        frame = pd.DataFrame({"user_idx": users, "strategy": RANDOM, "cluster": -1, "rank": np.arange(count)})
        return frame.sort_values("user_idx", ignore_index=True), {"strategy": "random", "seeds": count}
    k = max(1, min(int(math.ceil(cfg.cluster_fraction * n)), cfg.max_clusters, n))
    cluster, distance, inertia = kmeans_assign(vectors, n, k, cfg, seed)
    representative = representative_order(cluster, distance, rng)[:count]
    important = importance_order(interactions.astype(np.float64), count, rng)
    users, from_first = interleave(representative, important, cfg.representative_share)
    users, from_first = users[:count], from_first[:count]
    frame = pd.DataFrame({"user_idx": users, "strategy": np.where(from_first, REPRESENTATIVE, IMPORTANT),
                          "cluster": cluster[users], "rank": np.arange(count)})
    taken = {REPRESENTATIVE: int(from_first.sum()), IMPORTANT: int(count - from_first.sum())}
    return frame.sort_values("user_idx", ignore_index=True), {
        "strategy": "adaptive", "seeds": count, "clusters": k, "kmeans_inertia": inertia, "by_strategy": taken}


def sample_seeds(config: Config, workspace: Workspace, progress: bool = True) -> SeedSummary:
    """Sample seeds from ``encoder/user_vectors.parquet``; write ``pool/seeds.parquet`` and ``pool/seeds.json``."""
    vectors = workspace.user_vectors
    if not vectors.exists():
        raise FileNotFoundError(f"{vectors}: no behaviour vectors; run 'reland encoder embed' first")
    users = pd.read_parquet(workspace.prepared / USERS, columns=["user_idx", "user_id", "n_interactions"])
    frame, summary = sample_seed_users(config.seeds, vectors, users["n_interactions"].to_numpy(), config.seed)
    frame = frame.merge(users, on="user_idx", how="left")[
        ["user_idx", "user_id", "strategy", "cluster", "rank", "n_interactions"]]
    write_table(frame, workspace.seeds)
    summary.update(users=len(users), budget=len(frame) / len(users),
                   mean_interactions_seeds=float(frame["n_interactions"].mean()),
                   mean_interactions_users=float(users["n_interactions"].mean()))
    write_json(workspace.file(SEEDS_SUMMARY), summary)
    return summary
