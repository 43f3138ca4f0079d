"""The suites: what a good ``user_rationale_embedding`` table looks like before it is served.

GX has no expectations over list columns, so each embedding is reduced to scalar columns
first (dimension, L2 norm, non-finite count) and those are checked.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from components.data.tables import vectors_of


def rationale_chunks(path, batch_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """The retrieval table as scalar columns, chunk by chunk (embeddings never all in memory)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        vectors = vectors_of(batch.column("rationale_embedding"), copy=False)
        finite = np.isfinite(vectors)
        frame = batch.drop_columns(["rationale_embedding"]).to_pandas()
        frame["dim"] = vectors.shape[1]
        frame["non_finite"] = (~finite).sum(1)
        frame["norm"] = np.linalg.norm(np.where(finite, vectors, 0), axis=1)
        frame["age_s"] = (pd.Timestamp.now(tz="UTC") - frame["event_timestamp"]).dt.total_seconds()
        yield frame


def rationale_suite(seed_ids: list[str], pool_version: int, dim: int = 384, max_age_s: float = 2 * 86_400) -> list:
    """Every user once, dimension ``dim``, finite unit vectors, cosine similarities, seeds and version of the pool in use."""
    import great_expectations as gx

    e = gx.expectations
    return [
        e.ExpectColumnValuesToNotBeNull(column="user_id"),
        e.ExpectColumnValuesToBeUnique(column="user_id"),
        e.ExpectColumnValuesToBeBetween(column="dim", min_value=dim, max_value=dim),
        e.ExpectColumnValuesToBeBetween(column="non_finite", min_value=0, max_value=0),
        e.ExpectColumnValuesToBeBetween(column="norm", min_value=0.99, max_value=1.01),
        e.ExpectColumnValuesToBeBetween(column="similarity", min_value=-1.0, max_value=1.0),
        e.ExpectColumnValuesToBeInSet(column="seed_user_id", value_set=sorted(seed_ids)),
        e.ExpectColumnValuesToBeBetween(column="pool_version", min_value=pool_version, max_value=pool_version),
        e.ExpectColumnValuesToBeBetween(column="age_s", min_value=-300, max_value=max_age_s),
    ]
