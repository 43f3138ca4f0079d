"""Steps ``apply_features`` and ``materialise_features``, and online lookups for ranking services.

Materialisation is incremental (Feast keeps each view's last materialised time), idempotent
(re-running writes the same rows) and streamed in batches; ranking services call
``get_online_features`` through the ``ranker`` feature service, as :func:`online_features` does
(and, in the seed-keyed layout, ``ranker_seeds`` for the assigned seed's embedding).
"""
from __future__ import annotations

import multiprocessing
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from typing import TypedDict

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from components.config import Config, FeaturesConfig
from components.workspace import Workspace, read_json


def apply_features(config: Config, workspace: Workspace, progress: bool = True) -> list[str]:
    """Register the platform's entities, feature views and feature service in the workspace registry."""
    from feature_repo import apply_definitions, definitions, feature_store

    if not workspace.user_rationales.exists():
        raise FileNotFoundError(f"{workspace.user_rationales}: nothing to serve; run 'reland pool retrieve' first")
    objects = definitions(workspace, config.features.ttl_days)
    apply_definitions(feature_store(workspace, config.features), objects)
    return [obj.name for obj in objects]


def validate_features(config: Config, workspace: Workspace) -> dict:
    """The GX gates on ``user_rationale_embedding`` (and, seed-keyed, ``seed_rationale_embedding``): raise
    ``ValidationFailed`` before anything is served."""
    from components.pool import current_pool, seed_ids
    from feature_repo import SEED_VIEW, seed_keyed
    from validation.gate import run_gate
    from validation.suites import rationale_chunks, rationale_suite, recall_suite, seed_rationale_suite

    pool = current_pool(workspace)
    seeds = seed_ids(pool)
    retrieval = read_json(workspace.retrieval_summary) if workspace.retrieval_summary.exists() else {}
    if retrieval.get("recall_at_1") is not None:  # an approximate index: its sampled recall, before any row
        run_gate("retrieval_recall", recall_suite(config.pool.min_recall),
                 [pd.DataFrame({"recall_at_1": [retrieval["recall_at_1"]], "index": [retrieval["index"]]})], workspace)
    shared = seed_keyed(workspace)
    if shared:
        run_gate(SEED_VIEW, seed_rationale_suite(seeds, pool.version, pool.rationale_dim),
                 rationale_chunks(workspace.seed_rationales), workspace)
    return run_gate("user_rationale_embedding", rationale_suite(seeds, pool.version, None if shared else pool.rationale_dim),
                    rationale_chunks(workspace.user_rationales), workspace)


class MaterialisationSummary(TypedDict):
    """What one materialisation wrote into the online store, after the features gate passed."""
    views: list[str]
    end: str  # ISO time up to which each view is now materialised
    validated_rows: int
    rows_written: dict[str, int]  # per view
    seconds: float
    rows_per_s: int


def materialise_features(config: Config, workspace: Workspace, progress: bool = True,
                         end: datetime | None = None) -> MaterialisationSummary:
    """Validate, then write each view's rows stamped after its last materialisation into the online store.

    Incremental as ``feast materialize-incremental`` is (the intervals are recorded in the registry,
    so either continues from the other), but streamed: each view's table is read in batches of
    ``features.write_batch_rows`` and written through Feast's ``write_to_online_store``, by
    ``features.write_workers`` processes in parallel for Redis (memory: one batch per worker).
    A failed validation raises before Feast is touched: the online store keeps serving the
    previous good features.
    """
    from feature_repo import feature_store

    validation = validate_features(config, workspace)
    store = feature_store(workspace, config.features)
    end = end or datetime.now(timezone.utc)
    written, started = {}, time.perf_counter()
    for view in store.list_feature_views():
        begin = view.most_recent_end_time or end - view.ttl
        written[view.name] = write_view(config, workspace, view.name, workspace.located(view.batch_source.path),
                                        begin, end, progress)
        store.registry.apply_materialization(view, store.project, begin, end)
    seconds = time.perf_counter() - started
    return {"views": list(written), "end": end.isoformat(), "validated_rows": validation["rows"],
            "rows_written": written, "seconds": round(seconds, 3),
            "rows_per_s": round(sum(written.values()) / max(seconds, 1e-9))}


def write_view(config: Config, workspace: Workspace, view: str, path: str, begin: datetime, end: datetime,
               progress: bool = True) -> int:
    """Rows of ``path`` stamped in (begin, end] into ``view``'s online table; the row groups are split
    among the writer processes (one for SQLite, which takes a single writer)."""
    metadata = pq.ParquetFile(path).metadata
    workers = 1 if config.features.online_store == "sqlite" else min(config.features.write_workers,
                                                                      metadata.num_row_groups)
    rows = metadata.num_rows
    with tqdm(total=rows, desc=f"write {view}", unit="row", disable=not progress) as bar:
        if workers == 1:
            return write_rows(config, workspace, view, path, begin, end, (0, 1), bar.update)
        tasks = [(i, workers * 4) for i in range(workers * 4)]  # a few per worker, so progress moves
        written = 0
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(write_rows, config, workspace, view, path, begin, end, task)
                                      for task in tasks]):
                written += done.result()
                bar.update(rows // len(tasks))
        return written


def write_rows(config: Config, workspace: Workspace, view: str, path: str, begin: datetime, end: datetime,
               shard: tuple[int, int], advance=None) -> int:
    """Shard i of n of the table's row groups (i, i + n, …), batch by batch, through ``write_to_online_store``."""
    from feature_repo import feature_store

    store = feature_store(workspace, config.features)
    columns = _view_columns(store.get_feature_view(view))
    source = pq.ParquetFile(path)
    written = 0
    for batch in source.iter_batches(batch_size=config.features.write_batch_rows, columns=columns,
                                     row_groups=list(range(shard[0], source.num_row_groups, shard[1]))):
        stamps = batch.column("event_timestamp")
        fresh = batch.filter(pc.and_(pc.greater(stamps, pa.scalar(begin, stamps.type)),
                                     pc.less_equal(stamps, pa.scalar(end, stamps.type))))
        if fresh.num_rows:
            store.write_to_online_store(view, fresh.to_pandas())
            written += fresh.num_rows
        if advance:
            advance(batch.num_rows)
    return written


def _view_columns(view) -> list[str]:
    return [*view.join_keys, *(f.name for f in view.features), view.batch_source.timestamp_field]


class OnlineFeatures:
    """A ranking service's handle on the online store: opened once, then one lookup per request.

    In the seed-keyed layout a user's row names its seed, and the seed's embedding comes from
    ``ranker_seeds``; a (pool version, seed) embedding never changes, so the handle keeps the
    ones it has read (up to ``seed_cache`` of them, least recently used out) and :meth:`warm`
    reads the current pool's at start: a request then costs one lookup, as in the per-user layout.
    """

    def __init__(self, workspace: Workspace, features: FeaturesConfig | None = None, seed_cache: int = 200_000):
        from feast.errors import FeatureServiceNotFoundException

        from feature_repo import FEATURE_SERVICE, SEED_SERVICE, feature_store

        self.store = feature_store(workspace, features)
        self.workspace = workspace
        try:
            self.service = self.store.get_feature_service(FEATURE_SERVICE)
        except FeatureServiceNotFoundException:
            raise ValueError(f"feature service '{FEATURE_SERVICE}' is not registered in {workspace.root / 'features'}; "
                             "run 'reland features apply' and 'reland features materialise'") from None
        names = {service.name for service in self.store.list_feature_services()}
        self.seeds = self.store.get_feature_service(SEED_SERVICE) if SEED_SERVICE in names else None
        self.seed_cache, self._embeddings = seed_cache, OrderedDict()

    def get(self, user_ids: list[str], timestamps: bool = False) -> dict[str, list]:
        """The ranker's features for ``user_ids``, ``rationale_embedding`` included in either layout;
        unknown users come back as None.  With ``timestamps``, each feature's event time too
        (``<feature>__ts``, seconds since the epoch)."""
        rows = self.store.get_online_features(features=self.service, entity_rows=[{"user_id": u} for u in user_ids]
                                              ).to_dict(include_event_timestamps=timestamps)
        if self.seeds is not None:
            rows["rationale_embedding"] = self._seed_embeddings(rows["pool_version"], rows["seed_user_id"])
        return rows

    def warm(self, batch: int = 10_000) -> int:
        """Read the current pool's seed embeddings into the cache (seed-keyed layout); how many are held."""
        from components.pool import current_pool, seed_ids

        if self.seeds is None:
            return 0
        pool = current_pool(self.workspace)
        keys = [(pool.version, s) for s in seed_ids(pool)[: self.seed_cache]]
        for start in range(0, len(keys), batch):
            self._fetch(keys[start:start + batch])
        return len(self._embeddings)

    def _seed_embeddings(self, versions: list, seeds: list) -> list:
        keys = [(v, s) if s is not None else None for v, s in zip(versions, seeds)]
        missing = sorted({k for k in keys if k is not None and k not in self._embeddings})
        if missing:
            self._fetch(missing)
        for key in keys:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
        return [self._embeddings.get(key) if key else None for key in keys]

    def _fetch(self, keys: list[tuple[int, str]]) -> None:
        found = self.store.get_online_features(
            features=self.seeds, entity_rows=[{"pool_version": v, "seed_user_id": s} for v, s in keys]).to_dict()
        for key, embedding in zip(keys, found["rationale_embedding"]):
            if embedding is not None:  # not written yet: ask again next time
                self._embeddings[key] = embedding
        while len(self._embeddings) > self.seed_cache:
            self._embeddings.popitem(last=False)


def online_features(workspace: Workspace, user_ids: list[str], features: FeaturesConfig | None = None) -> dict[str, list]:
    """One-off lookup of the ranker's features (opens the store; services keep an :class:`OnlineFeatures`)."""
    return OnlineFeatures(workspace, features).get(user_ids)
