"""The suites: what good interactions, behaviour vectors, rationale embeddings and retrieval recall look like.

GX has no expectations over list columns, so each embedding is reduced to scalar columns
first (dimension, L2 norm, non-finite count) and those are checked.  Tables are read in
chunks; uniqueness is checked within each chunk (the steps write one row per key by
construction; row counts are checked against the data layer by the callers).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.data.tables import vectors_of


def _vector_scalars(frame: pd.DataFrame, vectors: np.ndarray) -> pd.DataFrame:
    finite = np.isfinite(vectors)
    frame["dim"] = vectors.shape[1]
    frame["non_finite"] = (~finite).sum(1)
    frame["norm"] = np.linalg.norm(np.where(finite, vectors, 0), axis=1)
    return frame


def interaction_chunks(path, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield batch.to_pandas()


def interaction_suite(latest: pd.Timestamp) -> list:
    """Staged interactions: ids present, integer seconds within 1990..``latest``, no duplicate rows."""
    import great_expectations as gx

    e = gx.expectations
    return [
        *(e.ExpectColumnToExist(column=c) for c in ("user", "item", "timestamp", "behaviour")),
        *(e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user", "item", "timestamp", "behaviour")),
        *(e.ExpectColumnValuesToBeInTypeList(column=c, type_list=["int64", "Int64"]) for c in ("user", "item", "timestamp")),
        e.ExpectColumnValuesToBeBetween(column="timestamp", min_value=631_152_000, max_value=int(latest.timestamp())),
        e.ExpectCompoundColumnsToBeUnique(column_list=["user", "item", "timestamp", "behaviour"]),
    ]


def behaviour_chunks(path, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield _vector_scalars(batch.drop_columns(["vector"]).to_pandas(), vectors_of(batch.column("vector"), copy=False))


def _key_expectations(key: str, unique: str) -> list:
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToNotBeNull(column=key), gx.expectations.ExpectColumnValuesToBeUnique(column=unique)]


def _vector_expectations(dim: int, min_norm: float, max_norm: float) -> list:
    """Per-row checks shared by every embedding table: shape, finiteness, length."""
    import great_expectations as gx

    e = gx.expectations
    return [
        e.ExpectColumnValuesToBeBetween(column="dim", min_value=dim, max_value=dim),
        e.ExpectColumnValuesToBeBetween(column="non_finite", min_value=0, max_value=0),
        e.ExpectColumnValuesToBeBetween(column="norm", min_value=min_norm, max_value=max_norm),
    ]


def behaviour_suite(dim: int, max_norm: float = 1e3) -> list:
    """One row per user, the encoder's dimension, finite vectors of a sane, non-zero length."""
    return _key_expectations("user_id", "user_idx") + _vector_expectations(dim, 1e-6, max_norm)


def rationale_chunks(path, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """A retrieval table (users' or seeds') as scalar columns, chunk by chunk (embeddings never all in memory)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        if "rationale_embedding" in batch.schema.names:
            frame = _vector_scalars(batch.drop_columns(["rationale_embedding"]).to_pandas(),
                                    vectors_of(batch.column("rationale_embedding"), copy=False))
        else:  # the seed-keyed layout's user table: the embeddings are the seeds'
            frame = batch.to_pandas()
        frame["age_s"] = (pd.Timestamp.now(tz="UTC") - frame["event_timestamp"]).dt.total_seconds()
        yield frame


def _pool_expectations(seed_ids: list[str], pool_version: int, max_age_s: float) -> list:
    import great_expectations as gx

    e = gx.expectations
    return [e.ExpectColumnValuesToBeInSet(column="seed_user_id", value_set=sorted(seed_ids)),
            e.ExpectColumnValuesToBeBetween(column="pool_version", min_value=pool_version, max_value=pool_version),
            e.ExpectColumnValuesToBeBetween(column="age_s", min_value=-300, max_value=max_age_s)]


def rationale_suite(seed_ids: list[str], pool_version: int, dim: int | None = 384,
                    max_age_s: float = 2 * 86_400) -> list:
    """Every user once, cosine similarities, seeds and version of the pool in use; with ``dim`` (the
    per-user layout) finite unit vectors of that dimension too."""
    import great_expectations as gx

    vectors = _vector_expectations(dim, 0.99, 1.01) if dim else []
    return _key_expectations("user_id", "user_id") + vectors + [
        gx.expectations.ExpectColumnValuesToBeBetween(column="similarity", min_value=-1.0, max_value=1.0),
        *_pool_expectations(seed_ids, pool_version, max_age_s)]


def seed_rationale_suite(seed_ids: list[str], pool_version: int, dim: int = 384, max_age_s: float = 2 * 86_400) -> list:
    """The seed-keyed layout's shared table: every seed of the pool once, finite unit vectors of ``dim``."""
    import great_expectations as gx

    return (_key_expectations("seed_user_id", "seed_user_id") + _vector_expectations(dim, 0.99, 1.01)
            + [gx.expectations.ExpectTableRowCountToEqual(value=len(seed_ids))]
            + _pool_expectations(seed_ids, pool_version, max_age_s))


def recall_suite(min_recall: float) -> list:
    """An approximate retrieval index's sampled recall@1 against exact retrieval, at least ``min_recall``."""
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToBeBetween(column="recall_at_1", min_value=min_recall, max_value=1.0)]
