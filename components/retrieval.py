"""Step ``retrieve_rationales``: Eq. (3) for every user, as the ``user_rationale_embedding`` table.

The bulk path loads the pool's seed vectors once and streams users through blocked
matrix products (cosine = dot product of unit vectors), so memory is one block of users
times the pool, whatever the number of users.  ``pool.top_k > 1`` mixes the k nearest
seeds' rationale embeddings weighted by similarity (the paper's limitation (i),
diversity).  ``pool.index: ivf | hnsw | clustered`` searches an index over the seeds instead of
exact products (for pools of tens of thousands of seeds), and checks a fixed sample of users
against exact retrieval: the sampled recall@1 goes into the summary, and the gate before
materialisation fails below ``pool.min_recall``.  ``pool.assignment: shuffled`` gives each user a pseudo-random pool entry
instead: a control that tells whether the assignment carries the lift.  Cold users (no training history) carry the encoder's crowd vector and so
receive the rationale of the seed nearest the crowd's taste (limitation (iii)).

Output ``features/user_rationale_embedding.parquet``: user_id, user_idx, seed_user_id,
similarity, pool_version, event_timestamp, and in the ``per_user`` layout (``features.layout``)
rationale_embedding (float32 × 384).  The ``seed_keyed`` layout stores each seed's embedding
once instead, in ``features/seed_rationale_embedding.parquet`` (seed_user_id, pool_version,
rationale_embedding, event_timestamp): at 10^8 users it is the difference between 100 GB and a
few hundred MB of features, and the serving join reads the seed's row by the user's seed_user_id.
"""
from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from threadpoolctl import threadpool_info, threadpool_limits
from tqdm import tqdm

from components.config import Config, PoolConfig
from components.data.tables import vector_array, vectors_of
from components.pool import PoolVersion, current_pool, load_pool, pool_versions
from components.workspace import RETRIEVAL_SHARDS, Workspace, atomic_path, read_json, write_json



def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def nearest_seeds(users: np.ndarray, seeds: np.ndarray, k: int = 1,
                  buffer: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rows × k, best first) and cosine similarities of each user's k nearest seeds.

    ``seeds`` must be unit rows; ``users`` need not be (a user's norm does not change which
    seed is nearest, so it divides only the chosen similarities).  Ties go to the lower index.
    ``buffer`` (at least users × seeds float32), reused across blocks, spares the allocator
    from faulting in a fresh similarity matrix each time (a third of the matmul's time).
    """
    sims = np.matmul(users, seeds.T, out=None if buffer is None else buffer[:len(users)])
    if k == 1:
        best = sims.argmax(1)[:, None]
    else:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable"), 1)
    norms = np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    return best, np.clip(np.take_along_axis(sims, best, 1) / norms, -1.0, 1.0)  # float rounding can pass 1


def seed_index(seed_vectors: np.ndarray, cfg: PoolConfig, stored: Callable[[str], Path] | None = None):
    """An index over the pool's unit seed vectors (inner product = cosine) for ``pool.index`` ivf,
    hnsw (faiss) or clustered (:class:`ClusteredSeeds`); None for exact retrieval.

    A pool version's seeds never change, so with ``stored`` (index shape -> its file) the trained
    part is built once and kept: each later retrieval of that version (the daily refresh, every
    Kubeflow shard) loads it instead of training it again.
    """
    if cfg.index == "exact":
        return None
    import faiss

    n, dim = seed_vectors.shape
    default_cells = (4 if cfg.index == "ivf" else 1) * np.sqrt(n)
    nlist = min(cfg.nlist or int(default_cells), max(1, n // 39))  # k-means trains on ≥ 39 points a cell
    path = stored(f"hnsw{cfg.hnsw_m}" if cfg.index == "hnsw" else f"{cfg.index}{nlist}") if stored else None
    if path and path.exists():
        index = faiss.read_index(str(path))
    else:
        index = _trained_index(seed_vectors, cfg, nlist)
        if path:
            with atomic_path(path) as tmp:
                faiss.write_index(index, str(tmp))
    if cfg.index == "clustered":
        return ClusteredSeeds(seed_vectors, index.reconstruct_n(0, index.ntotal), min(cfg.probes, nlist))
    if cfg.index == "ivf":
        index.nprobe = min(cfg.probes, nlist)
    else:
        index.hnsw.efSearch = max(cfg.ef_search, cfg.top_k)
    return index


def _trained_index(seed_vectors: np.ndarray, cfg: PoolConfig, nlist: int):
    """The faiss index ``pool.index`` keeps: IVF-Flat or HNSW over the seeds, or, for ``clustered``,
    the k-means centroids of the seeds (a flat index of them: the only trained state)."""
    import faiss

    dim = seed_vectors.shape[1]
    if cfg.index == "clustered":
        kmeans = faiss.Kmeans(dim, nlist, niter=20, spherical=True)
        kmeans.train(seed_vectors)
        index = faiss.IndexFlatIP(dim)
        index.add(kmeans.centroids)
        return index
    if cfg.index == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(seed_vectors)
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(seed_vectors)
    return index


def nearest_cells(vectors: np.ndarray, centroids: np.ndarray, rows: int = 1 << 16) -> np.ndarray:
    """Each vector's most similar centroid, ``rows`` vectors at a time (bounds the similarity matrix)."""
    parts = [(vectors[start:start + rows] @ centroids.T).argmax(1) for start in range(0, len(vectors), rows)]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


class ClusteredSeeds:
    """``pool.index: clustered``: the seeds in k-means cells; users grouped by their nearest cell and
    matched, one matrix product a group, against the seeds of that cell's ``probe`` nearest cells
    (itself included).

    IVF scans each user's own nearest lists one user at a time.  Grouping the users of a block by
    cell turns the same kind of candidate scan into a few hundred dense matrix products, which run
    at the machine's matrix-product speed (docs/benchmarks.md: against 75,000 seeds, tens of times
    exact retrieval at recall@1 ≥ 0.999).  A user near its cell's far border can have its seed in a
    cell outside the neighbourhood: the sampled recall check and its gate catch a setting too tight
    for the data.  Candidate matrices are kept per cell: memory ``probe`` × the pool, not the users.
    """

    def __init__(self, seeds: np.ndarray, centroids: np.ndarray, probe: int):
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        cells = nearest_cells(seeds, self.centroids)
        sizes = np.bincount(cells, minlength=len(self.centroids))
        members = np.split(np.argsort(cells, kind="stable"), np.cumsum(sizes)[:-1])
        neighbourhoods = np.argsort(-(self.centroids @ self.centroids.T), axis=1, kind="stable")[:, :probe]
        self.candidates = [np.concatenate([members[c] for c in row]) for row in neighbourhoods]
        self.vectors = [np.ascontiguousarray(seeds[c]) for c in self.candidates]
        self.threads = max([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"] or [1])

    def search(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As faiss's ``search`` for unit ``users``: (similarities, seed indices), users × k, best first;
        -1 for the users whose cell's neighbourhood holds fewer than k seeds."""
        similarity = np.full((len(users), k), -np.inf, np.float32)
        best = np.full((len(users), k), -1, np.int64)
        cells = nearest_cells(users, self.centroids)  # one large product: the BLAS's own threads serve it
        order = np.argsort(cells, kind="stable")
        bounds = np.searchsorted(cells[order], np.arange(len(self.centroids) + 1))
        groups = [(cell, order[bounds[cell]: bounds[cell + 1]]) for cell in np.flatnonzero(np.diff(bounds))
                  if len(self.candidates[cell]) >= k]

        def match(group: tuple[int, np.ndarray]) -> None:
            cell, rows = group
            local, similarity[rows] = nearest_seeds(users[rows], self.vectors[cell], k)
            best[rows] = self.candidates[cell][local]

        # A group's product is too small for a threaded BLAS (its threads cost more than they save, and
        # stall when the cores are shared): one BLAS thread a product, the groups spread over as many
        # threads as the BLAS was given (numpy releases the GIL in matmul).
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(self.threads) as workers:
            list(workers.map(match, groups))
        return similarity, best


def approximate_seeds(users: np.ndarray, seeds: np.ndarray, index, k: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`nearest_seeds`, through ``index``; a user the index finds too few seeds for is
    answered exactly."""
    similarity, best = index.search(unit_rows(users).astype(np.float32), k)
    short = (best < 0).any(1)
    if short.any():
        best[short], similarity[short] = nearest_seeds(users[short], seeds, k)
    return best.astype(np.int64), np.clip(similarity, -1.0, 1.0)


def best_similarity(users: np.ndarray, seeds: np.ndarray, rows: int) -> np.ndarray:
    """Each user's exact top-1 cosine, ``rows`` users at a time (bounds the similarity matrix)."""
    parts = [nearest_seeds(users[start:start + rows], seeds, 1)[1][:, 0] for start in range(0, len(users), rows)]
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def recall_mask(user_idx: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A fixed pseudo-random sample of users (the same in every shard and every run) for the recall check."""
    return shuffled_seeds(user_idx, 1_000_000, seed)[:, 0] < int(share * 1_000_000)


def recall_figures(hits: int, checked: int) -> dict[str, int | float | None]:
    """The sampled recall@1 of an approximate index, as a summary records it (shards add up)."""
    return {"recall_hits": hits, "recall_checked": checked, "recall_at_1": round(hits / checked, 5) if checked else None}


def shuffled_seeds(users: np.ndarray, n_seeds: int, seed: int) -> np.ndarray:
    """A pseudo-random pool entry for each user index (the ``shuffled`` control): the same in every shard."""
    mixed = (users.astype(np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(31)
    return (mixed % np.uint64(n_seeds)).astype(np.int64)[:, None]


def mix(rationales: np.ndarray, index: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Similarity-weighted mean of the chosen rationale embeddings, back on the unit sphere."""
    if index.shape[1] == 1:
        return rationales[index[:, 0]]
    weights = np.maximum(similarity, 0) + 1e-6
    mixed = (rationales[index] * (weights / weights.sum(1, keepdims=True))[..., None]).sum(1)
    return unit_rows(mixed).astype(np.float32)


TIMESTAMP = pa.timestamp("us", tz="UTC")


def output_schema(rationale_dim: int | None) -> pa.Schema:
    """The user table's columns; ``rationale_dim`` None for the seed-keyed layout (no embedding per user)."""
    embedding = [("rationale_embedding", pa.list_(pa.float32(), rationale_dim))] if rationale_dim else []
    return pa.schema([("user_id", pa.string()), ("user_idx", pa.int64()), *embedding, ("seed_user_id", pa.string()),
                      ("similarity", pa.float32()), ("pool_version", pa.int64()), ("event_timestamp", TIMESTAMP)])


def write_seed_rationales(workspace: Workspace, pool: PoolVersion, seeds: dict[str, np.ndarray],
                          timestamp_us: int) -> None:
    """The seed-keyed layout's shared table: one row per seed of ``pool``, stamped like the users' rows."""
    n = len(seeds["seed_user_id"])
    table = pa.table({"seed_user_id": pa.array(seeds["seed_user_id"], pa.string()),
                      "pool_version": pa.array(np.full(n, pool.version, np.int64)),
                      "rationale_embedding": vector_array(seeds["rationale"]),
                      "event_timestamp": pa.array(np.full(n, timestamp_us, np.int64), TIMESTAMP)})
    with atomic_path(workspace.seed_rationales) as tmp:
        pq.write_table(table, tmp, compression="none")


def shard_path(workspace: Workspace, shard: int) -> Path:
    return workspace.file(f"{RETRIEVAL_SHARDS}/part-{shard:05d}.parquet")


class _ApproximateOrSharded(TypedDict, total=False):  # (NotRequired is not seen at run time under postponed annotations)
    recall_hits: int  # an approximate index: its sampled recall@1 against exact retrieval
    recall_checked: int
    recall_at_1: float | None
    shards: int  # merged from this many shards


class RetrievalSummary(_ApproximateOrSharded):
    """``features/retrieval.json``: which pool every user was assigned from, how similar, how fast."""
    users: int
    pool_version: int
    pool_size: int
    top_k: int
    layout: str  # seed_keyed | per_user
    timestamp_us: int  # the event time of every row written
    index: str  # exact | ivf | hnsw
    similarity_sum: float
    mean_similarity: float
    seconds: float
    users_per_s: int
    table: str  # workspace-relative


def user_batches(source: pq.ParquetFile, block: int, shard: tuple[int, int] | None):
    """The users' vectors in blocks: all row groups, or shard i of n (row groups i, i + n, …)."""
    groups = range(source.num_row_groups) if shard is None else range(shard[0], source.num_row_groups, shard[1])
    return source.iter_batches(batch_size=block, row_groups=list(groups), columns=["user_id", "user_idx", "vector"])


def retrieve_rationales(config: Config, workspace: Workspace, progress: bool = True,
                        pool: PoolVersion | None = None, shard: tuple[int, int] | None = None) -> RetrievalSummary:
    """Assign every user the rationale of its most similar seed user; stream the result to Parquet.

    With ``shard=(i, n)`` only the i-th of n interleaved slices of the users is processed and
    written to ``features/shards/part-<i>.parquet``: shards are independent tasks (Kubeflow
    fans them out), joined by :func:`merge_shards`.
    """
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard index {shard[0]} outside 0..{shard[1] - 1}")
    pool = pool or current_pool(workspace)
    seeds = load_pool(pool)
    seed_vectors = unit_rows(seeds["behaviour"]).astype(np.float32)
    seed_ids = pa.array(seeds["seed_user_id"], pa.string())
    source = pq.ParquetFile(workspace.user_vectors)
    per_user = config.rationale_layout == "per_user"
    schema = output_schema(pool.rationale_dim if per_user else None)
    now = int(time.time() * 1e6)
    started, users, similarity_sum = time.perf_counter(), 0, 0.0
    k = min(config.pool.top_k, len(seed_vectors))
    stored = functools.partial(workspace.pool_index, pool.version)
    ann = seed_index(seed_vectors, config.pool, stored) if config.pool.assignment == "nearest" else None
    # Exact blocks are bounded by their similarity matrix; an index holds no such matrix.
    exact_rows = max(1, min(config.pool.block_users, (config.pool.block_mb << 20) // (4 * len(seed_vectors))))
    block = config.pool.block_users if ann else exact_rows
    target = workspace.user_rationales if shard is None else shard_path(workspace, shard[0])
    # Floats neither dictionary-encode nor compress well: spend no time trying.  One writer thread
    # overlaps each block's write with the next block's matrix product (two blocks in memory at most).
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, use_dictionary=["seed_user_id"],
                                                      compression="none", write_statistics=False) as out, \
            ThreadPoolExecutor(1) as writer, \
            tqdm(total=source.metadata.num_rows, desc="retrieve", unit="user", disable=not progress) as bar:
        buffer = None if ann else np.empty((block, len(seed_vectors)), np.float32)
        share = min(1.0, config.pool.recall_sample / max(source.metadata.num_rows, 1))
        pending, hits, checked = None, 0, 0
        for batch in user_batches(source, block, shard):
            vectors = vectors_of(batch.column("vector"), copy=False)
            if config.pool.assignment == "shuffled":
                index = shuffled_seeds(batch.column("user_idx").to_numpy(), len(seed_vectors), config.seed)
                similarity = (unit_rows(vectors) * seed_vectors[index[:, 0]]).sum(1, keepdims=True)
            elif ann is not None:
                index, similarity = approximate_seeds(vectors, seed_vectors, ann, k)
                sampled = recall_mask(batch.column("user_idx").to_numpy(), share, config.seed)
                exact = best_similarity(vectors[sampled], seed_vectors, exact_rows)
                hits += int((similarity[sampled, 0] >= exact - 1e-5).sum())  # a tie is a hit
                checked += int(sampled.sum())
            else:
                index, similarity = nearest_seeds(vectors, seed_vectors, k, buffer)
            n = batch.num_rows
            embedding = [vector_array(mix(seeds["rationale"], index, similarity))] if per_user else []
            table = pa.Table.from_arrays([
                batch.column("user_id"), batch.column("user_idx"), *embedding, seed_ids.take(pa.array(index[:, 0])),
                pa.array(similarity[:, 0].astype(np.float32)), pa.array(np.full(n, pool.version, np.int64)),
                pa.array(np.full(n, now, np.int64), TIMESTAMP)], schema=schema)
            if pending is not None:
                pending.result()
            pending = writer.submit(out.write_table, table)
            users += n
            similarity_sum += float(similarity[:, 0].sum())
            bar.update(n)
        if pending is not None:
            pending.result()
    if not per_user and shard is None:  # sharded runs: merge_shards writes it once
        write_seed_rationales(workspace, pool, seeds, now)
    seconds = time.perf_counter() - started
    summary = {"users": users, "pool_version": pool.version, "pool_size": len(seed_vectors), "top_k": k,
               "layout": config.rationale_layout, "timestamp_us": now,
               "index": config.pool.index if ann is not None else "exact",
               **(recall_figures(hits, checked) if ann is not None else {}),
               "similarity_sum": similarity_sum, "mean_similarity": round(similarity_sum / max(users, 1), 4),
               "seconds": round(seconds, 3), "users_per_s": round(users / seconds),
               "table": workspace.stored(str(target))}
    write_json(target.with_suffix(".json") if shard else workspace.retrieval_summary, summary)
    return summary


def merge_shards(workspace: Workspace, shards: int) -> RetrievalSummary:
    """Join the shards' tables into ``features/user_rationale_embedding.parquet`` (streamed, atomic)."""
    parts = [shard_path(workspace, i) for i in range(shards)]
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"retrieval shards missing: {', '.join(missing)}")
    summaries = [read_json(p.with_suffix(".json")) for p in parts]
    versions = {s["pool_version"] for s in summaries}
    if len(versions) != 1:
        raise ValueError(f"retrieval shards come from different pool versions {sorted(versions)}; rerun them")
    target = workspace.user_rationales
    schema = pq.read_schema(parts[0])
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, use_dictionary=["seed_user_id"],
                                                      compression="none", write_statistics=False) as out:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches():
                out.write_batch(batch)
    if summaries[0]["layout"] == "seed_keyed":
        pool = next(p for p in pool_versions(workspace) if p.version == summaries[0]["pool_version"])
        write_seed_rationales(workspace, pool, load_pool(pool), min(s["timestamp_us"] for s in summaries))
    users = sum(s["users"] for s in summaries)
    summary = {**summaries[0], "users": users, "shards": shards, "table": workspace.stored(str(target)),
               "similarity_sum": sum(s["similarity_sum"] for s in summaries),
               "seconds": round(sum(s["seconds"] for s in summaries), 3)}
    if "recall_checked" in summaries[0]:
        summary |= recall_figures(*(sum(s[key] for s in summaries) for key in ("recall_hits", "recall_checked")))
    summary["mean_similarity"] = round(summary["similarity_sum"] / max(users, 1), 4)
    summary["users_per_s"] = round(users / max(summary["seconds"], 1e-9))
    write_json(workspace.retrieval_summary, summary)
    return summary
