"""The ``prepare_data`` step: source → staged → k-core filtered, indexed and split tables."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from components.config import Config, DataConfig
from components.data import loaders, synthetic
from components.data.filtering import CoreResult, k_core
from components.data.splits import PositionCounter, cf_split, sequential_split
from components.data.tables import (INTERACTIONS, ITEMS, SPLIT_NAMES, STATS, USERS, PreparedDataset, StagedMeta,
                                    items_schema)
from components.workspace import Workspace, atomic_path, write_json

PREPARED_SCHEMA = pa.schema([
    ("user_idx", pa.int64()), ("item_idx", pa.int64()), ("timestamp", pa.int64()),
    ("behaviour", pa.dictionary(pa.int8(), pa.string())), ("cf_split", pa.int8()), ("seq_split", pa.int8()),
])


def stage_source(config: Config, staging: Path, progress: bool = True) -> Path:
    """The staged folder for the configured source: generated, already staged, or loaded and staged."""
    data = config.data
    if data.source == "synthetic":
        synthetic.generate(config.synthetic, staging, progress=progress)
        return staging
    folder = data.source_path()
    fmt = loaders.detect_format(folder) if data.format == "auto" else data.format
    if fmt == "staged":
        return folder
    raw = loaders.load_dataset(folder, fmt, data.columns, data.timestamp_range)
    loaders.stage(raw, staging, source=str(folder))
    return staging


def _new_index(keep: np.ndarray) -> np.ndarray:
    """Map from ordinal id to contiguous index (-1 where dropped)."""
    return np.where(keep, np.cumsum(keep, dtype=np.int64 if len(keep) >= 2**31 else np.int32) - 1, -1)


# The writers below fill a folder that prepare_data publishes atomically as a whole.
def _write_interactions(staged: Path, target: Path, core: CoreResult, data: DataConfig, progress: bool) -> dict:
    user_index, item_index = _new_index(core.keep_users), _new_index(core.keep_items)
    meta = StagedMeta.load(staged)
    positions = PositionCounter()
    split_counts = {"cf": np.zeros(3, np.int64), "seq": np.zeros(3, np.int64)}
    source = pq.ParquetFile(staged / INTERACTIONS)
    with pq.ParquetWriter(target, PREPARED_SCHEMA) as out, \
            tqdm(total=meta.rows, unit="row", desc="filter+split", disable=not progress) as bar:
        for batch in source.iter_batches(batch_size=data.chunk_rows):
            user = batch.column("user").to_numpy()
            item = batch.column("item").to_numpy()
            alive = core.keep_users[user] & core.keep_items[item]
            user = user[alive]
            position = positions(user)
            n = core.user_counts[user]
            cf = cf_split(position, n, data.split_ratios)
            seq = sequential_split(position, n)
            split_counts["cf"] += np.bincount(cf, minlength=3)
            split_counts["seq"] += np.bincount(seq, minlength=3)
            mask = pa.array(alive)
            out.write_table(pa.Table.from_arrays([
                pa.array(user_index[user]), pa.array(item_index[item[alive]]),
                batch.column("timestamp").filter(mask), batch.column("behaviour").filter(mask),
                pa.array(cf), pa.array(seq)], schema=PREPARED_SCHEMA))
            bar.update(batch.num_rows)
    return {task: {SPLIT_NAMES[i]: int(c) for i, c in enumerate(counts)} for task, counts in split_counts.items()}


def _write_items(staged: Path, target: Path, core: CoreResult) -> None:
    items = pd.read_parquet(staged / ITEMS)
    kept = items[core.keep_items[items["item"].to_numpy()]].copy()
    kept["item"] = _new_index(core.keep_items)[kept["item"].to_numpy()]
    kept = kept.rename(columns={"item": "item_idx"}).sort_values("item_idx")
    pq.write_table(pa.Table.from_pandas(kept, schema=items_schema("item_idx"), preserve_index=False), target)


def _write_users(staged: Path, target: Path, core: CoreResult, chunk_rows: int) -> None:
    """Filter the (possibly huge) user table batch by batch, adding each user's interaction count."""
    index = _new_index(core.keep_users)
    source = pq.ParquetFile(staged / USERS)
    writer = None
    for batch in source.iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        ordinal = frame.pop("user").to_numpy()
        keep = core.keep_users[ordinal]
        frame = frame[keep]
        frame.insert(0, "user_idx", index[ordinal[keep]])
        frame["n_interactions"] = core.user_counts[ordinal[keep]]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(target, table.schema)
        writer.write_table(table)
    writer.close()


def prepare_data(config: Config, workspace: Workspace, progress: bool = True) -> PreparedDataset:
    """Stage the configured dataset, k-core filter it and write the canonical tables.

    Outputs in ``workspace/data``: ``interactions.parquet`` (user_idx, item_idx, timestamp,
    behaviour, cf_split, seq_split; sorted by user then time), ``items.parquet``,
    ``users.parquet`` (index ↔ raw id maps with profiles) and ``stats.json``.
    """
    started = time.perf_counter()
    # raw/ and data/ are published together or not at all: a rejected input leaves both as they were
    # (an already staged source is read in place, and raw/ keeps what it had).
    with atomic_path(workspace.staged) as staging:
        staged = stage_source(config, staging, progress)
        core = k_core(staged, config.data.k_core, config.data.chunk_rows)
        if core.filtered["interactions"] == 0:
            raise ValueError(f"{_source_name(config)}: no interactions survive the {config.data.k_core}-core filter")
        with atomic_path(workspace.prepared) as out:
            out.mkdir()
            splits = _write_interactions(staged, out / INTERACTIONS, core, config.data, progress)
            _write_items(staged, out / ITEMS, core)
            _write_users(staged, out / USERS, core, config.data.chunk_rows)
            _write_stats(out / STATS, config, StagedMeta.load(staged), core, splits, time.perf_counter() - started)
    return PreparedDataset(workspace.prepared)


def _source_name(config: Config) -> str:
    return "the synthetic shop" if config.data.source == "synthetic" else str(config.data.source_path())


def _write_stats(path: Path, config: Config, meta: StagedMeta, core: CoreResult, splits: dict, seconds: float) -> None:
    write_json(path, {
        "dataset": config.name, "source": meta.source, "format": meta.format, "domain": config.data.domain,
        "loaded": core.loaded, "filtered": core.filtered, "k_core": config.data.k_core, "k_core_passes": core.passes,
        "repeats_dropped": meta.repeats_dropped, "synthetic_timestamps": meta.synthetic_timestamps,
        "category_style": meta.category_style, "behaviours": meta.behaviours, "splits": splits,
        "split_ratios": list(config.data.split_ratios), "max_seq_len": config.data.max_seq_len,
        "notes": meta.extra.get("notes", []), "seconds": round(seconds, 3),
    })


def dataset_stats(folder: Path, fmt: str = "auto", k: int = 5, data: DataConfig | None = None) -> dict:
    """Counts as loaded and after the k-core filter, for any dataset folder, without a workspace."""
    data = data or DataConfig()
    fmt = loaders.detect_format(folder) if fmt == "auto" else fmt
    with tempfile.TemporaryDirectory() as scratch:
        staged = folder if fmt == "staged" else Path(scratch) / "raw"
        if fmt != "staged":
            loaders.stage(loaders.load_dataset(folder, fmt, data.columns, data.timestamp_range), staged,
                          source=str(folder))
        core = k_core(staged, k, data.chunk_rows)
        meta = StagedMeta.load(staged)
    return {"format": meta.format, "source": str(folder), "loaded": core.loaded, "filtered": core.filtered,
            "k_core": k, "repeats_dropped": meta.repeats_dropped, "synthetic_timestamps": meta.synthetic_timestamps,
            "notes": meta.extra.get("notes", [])}
