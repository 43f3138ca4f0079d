"""Table layouts on disk and the readers later steps use.

A *staged* dataset (``raw/`` in a workspace, or any folder with ``meta.json``) holds
ordinal ids and rows sorted by user, then time; a *prepared* dataset (``data/``) holds
the k-core-filtered tables with contiguous indices and both splits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.workspace import atomic_path, read_json, write_json

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_COLUMN = {"cf": "cf_split", "seq": "seq_split"}  # each row's split, per task (family)
SPLIT_NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}

INTERACTIONS = "interactions.parquet"
ITEMS = "items.parquet"
USERS = "users.parquet"
META = "meta.json"
STATS = "stats.json"

def behaviour_array(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """Behaviour types stored as a dictionary column: one byte a row, readable names."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(names, pa.string()))


INTERACTION_SCHEMA = pa.schema([
    ("user", pa.int64()), ("item", pa.int64()), ("timestamp", pa.int64()),
    ("behaviour", pa.dictionary(pa.int8(), pa.string())),
])


@dataclass
class StagedMeta:
    """What a staged dataset is: sizes of the ordinal id spaces and how it was made."""

    format: str
    source: str
    n_users: int
    n_items: int
    rows: int
    behaviours: list[str]
    category_style: str = "path"  # "path": levels of one category path; "tags": independent genres
    synthetic_timestamps: bool = False
    repeats_dropped: int = 0
    extra: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        write_json(folder / META, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "StagedMeta":
        return cls(**read_json(folder / META))


def iter_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Stream a Parquet table as dicts of numpy arrays, ``batch_rows`` rows at a time."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns):
        yield {name: _to_numpy(batch.column(name)) for name in columns}


def _to_numpy(column: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(column.type):
        return column.indices.to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False)


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (rows × dim) float matrix as one fixed-size-list column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def vectors_of(column: pa.ChunkedArray | pa.Array, copy: bool = True) -> np.ndarray:
    """The inverse of :func:`vector_array`: a (rows × dim) float32 matrix (a read-only view if not ``copy``)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    flat = array.flatten().to_numpy(zero_copy_only=False)
    return (np.array(flat, dtype=np.float32) if copy else flat).reshape(len(array), -1)


class ColumnCursor:
    """Reads one column of a Parquet table forward, handing out consecutive slices of rows."""

    def __init__(self, path: Path, column: str, batch_rows: int = 65_536):
        self._batches = (b.column(0) for b in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=[column]))
        self._buffer: pa.Array | None = None

    def take(self, rows: int) -> pa.Array:
        parts = [self._buffer] if self._buffer is not None else []
        while sum(len(p) for p in parts) < rows:
            parts.append(next(self._batches))
        joined = pa.concat_arrays(parts)
        self._buffer = joined.slice(rows)
        return joined.slice(0, rows)


def write_table(df: pd.DataFrame, target: Path, schema: pa.Schema | None = None) -> None:
    """Write a DataFrame to Parquet atomically."""
    with atomic_path(target) as tmp:
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), tmp)


def items_schema(with_index: str) -> pa.Schema:
    return pa.schema([
        (with_index, pa.int64()), ("item_id", pa.string()), ("title", pa.string()), ("brand", pa.string()),
        ("categories", pa.list_(pa.string())), ("year", pa.int32()), ("description", pa.string()),
    ])


class Counts(TypedDict):
    users: int
    items: int
    interactions: int
    sparsity: float


class DatasetStats(TypedDict):
    """``data/stats.json``: where the dataset came from and what the filter and split left (``prepare_data``'s result)."""
    dataset: str
    source: str
    format: str
    domain: str
    loaded: Counts
    filtered: Counts
    k_core: int
    k_core_passes: int
    repeats_dropped: int
    synthetic_timestamps: bool
    category_style: str
    behaviours: list[str]
    splits: dict[str, dict[str, int]]  # task (cf, seq) -> split -> interactions
    split_ratios: list[float]
    max_seq_len: int
    notes: list[str]
    seconds: float


@dataclass(frozen=True)
class PreparedDataset:
    """The canonical tables of a prepared dataset folder (``workspace/data``)."""

    folder: Path

    @property
    def stats(self) -> DatasetStats:
        return read_json(self.folder / STATS)

    def interactions(self, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(self.folder / INTERACTIONS, columns=columns)

    def items(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / ITEMS)

    def users(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / USERS)

    def iter_interactions(self, columns: list[str], batch_rows: int = 1_000_000) -> Iterator[dict[str, np.ndarray]]:
        return iter_batches(self.folder / INTERACTIONS, columns, batch_rows)

    @property
    def n_users(self) -> int:
        return int(self.stats["filtered"]["users"])

    @property
    def n_items(self) -> int:
        return int(self.stats["filtered"]["items"])
