"""Step ``sample_seeds``: the seed users the LLM reasons about (§3.1.1).

Two strategies alternate until the budget is met, never picking a user twice:

* representativeness: K-means over the behaviour matrix M; cluster ``k`` gets
  N_k ∝ |C_k| seeds (largest remainders); a cluster with one seed gives the user nearest
  its centre, a cluster with more gives a uniform sample of its members;
* importance: each remaining user is kept with probability ∝ |D_u| (Eq. 2), scaled so the
  expected count fills the importance share; an overshoot is trimmed at random.

``strategy: random`` samples uniformly instead (the paper's "w/o a.s." ablation).  Output:
``pool/seeds.parquet`` (user_idx, user_id, strategy, cluster, round, n_interactions) and
``pool/seeds.json``.  Vectors are streamed; per user only a few bytes stay in memory.
"""
from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.config import Config, SeedConfig
from components.data.tables import USERS, vectors_of, write_table
from components.workspace import SEEDS_SUMMARY, Workspace, write_json

REPRESENTATIVE, IMPORTANT, RANDOM = "representativeness", "importance", "random"


def budget_count(budget: float, n_users: int) -> int:
    count = int(round(budget * n_users)) if budget < 1 else int(budget)
    if not 1 <= count <= n_users:
        raise ValueError(f"seed budget {budget} gives {count} seeds for {n_users} users; need 1..{n_users}")
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


def allocate(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``sizes`` summing to ``total`` (largest-remainder method)."""
    quota = sizes / max(sizes.sum(), 1) * total
    counts = np.floor(quota).astype(np.int64)
    extra = total - counts.sum()
    counts[np.argsort(-(quota - counts), kind="stable")[:extra]] += 1
    return np.minimum(counts, sizes)


def representative_step(want: int, cluster: np.ndarray, distance: np.ndarray, free: np.ndarray,
                        rng: np.random.Generator, k: int) -> np.ndarray:
    """Users picked per cluster ∝ its free size; the centre-most when a cluster gets one."""
    users = np.flatnonzero(free)
    quota = allocate(np.bincount(cluster[users], minlength=k), want)
    c = cluster[users]
    # Rank inside each cluster: by distance where the quota is one, at random otherwise.
    key = np.where(quota[c] == 1, distance[users], rng.random(len(users)))
    order = np.lexsort((key, c))
    first = np.r_[0, np.flatnonzero(np.diff(c[order])) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    return np.sort(users[order[rank < quota[c[order]]]])


def importance_step(want: int, weight: np.ndarray, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli draw per free user with p ∝ |D_u| (Eq. 2), expected count ``want``; trimmed to ``want``."""
    users = np.flatnonzero(free)
    p = np.minimum(1.0, want * weight[users] / weight[users].sum())
    chosen = users[rng.random(len(users)) < p]
    if len(chosen) > want:
        chosen = rng.choice(chosen, want, replace=False)
    return np.sort(chosen)


def sample_seed_users(cfg: SeedConfig, vectors: Path, interactions: np.ndarray, seed: int) -> tuple[pd.DataFrame, dict]:
    """The seed set with each seed's origin, and a summary."""
    n = len(interactions)
    budget = budget_count(cfg.budget, n)
    rng = np.random.default_rng(seed)
    if cfg.strategy == "random":
        users = np.sort(rng.choice(n, budget, replace=False))
        frame = pd.DataFrame({"user_idx": users, "strategy": RANDOM, "cluster": -1, "round": 0})
        return frame, {"strategy": "random", "budget": budget}
    k = max(1, min(int(math.ceil(cfg.cluster_fraction * n)), cfg.max_clusters, n))
    cluster, distance, inertia = kmeans_assign(vectors, n, k, cfg, seed)
    targets = {REPRESENTATIVE: int(round(budget * cfg.representative_share))}
    targets[IMPORTANT] = budget - targets[REPRESENTATIVE]
    taken = {REPRESENTATIVE: 0, IMPORTANT: 0}
    free = np.ones(n, bool)
    origin = np.full(n, "", object)
    round_of = np.full(n, -1, np.int32)
    weight = interactions.astype(np.float64)
    for round_index in range(100):
        for strategy in (REPRESENTATIVE, IMPORTANT):
            want = min(targets[strategy] - taken[strategy], int(free.sum()))
            if want <= 0:
                continue
            picked = (representative_step(want, cluster, distance, free, rng, k) if strategy == REPRESENTATIVE
                      else importance_step(want, weight, free, rng))
            free[picked] = False
            origin[picked], round_of[picked] = strategy, round_index
            taken[strategy] += len(picked)
        if sum(taken.values()) >= budget or not free.any():
            break
    users = np.flatnonzero(~free)
    frame = pd.DataFrame({"user_idx": users, "strategy": origin[users].astype(str), "cluster": cluster[users],
                          "round": round_of[users]})
    return frame, {"strategy": "adaptive", "budget": budget, "clusters": k, "kmeans_inertia": inertia,
                   "rounds": int(round_of.max()) + 1, "by_strategy": taken}


def sample_seeds(config: Config, workspace: Workspace) -> dict:
    """Sample seeds from ``encoder/user_vectors.parquet``; write ``pool/seeds.parquet`` and ``pool/seeds.json``."""
    vectors = workspace.user_vectors
    if not vectors.exists():
        raise FileNotFoundError(f"{vectors}: no behaviour vectors; run 'reland encoder embed' first")
    users = pd.read_parquet(workspace.prepared / USERS, columns=["user_idx", "user_id", "n_interactions"])
    frame, summary = sample_seed_users(config.seeds, vectors, users["n_interactions"].to_numpy(), config.seed)
    frame = frame.merge(users, on="user_idx", how="left")[
        ["user_idx", "user_id", "strategy", "cluster", "round", "n_interactions"]]
    write_table(frame, workspace.seeds)
    summary.update(users=len(users), seeds=len(frame),
                   mean_interactions_seeds=float(frame["n_interactions"].mean()),
                   mean_interactions_users=float(users["n_interactions"].mean()))
    write_json(workspace.file(SEEDS_SUMMARY), summary)
    return summary
