"""Small inputs the integration tests build on: a ranker configuration, feature tables written as
retrieval and the text encoder write them, and a real three-seed pool in Milvus Lite."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import load_config
from components.data.tables import PreparedDataset, vector_array
from components.pool import write_pool_version
from components.retrieval import output_schema
from components.workspace import Workspace


def ranker_config(**ranker):
    """The synthetic shop, small, with a one-epoch ranker of ``ranker`` settings."""
    return load_config(overrides={"synthetic": {"users": 150, "clusters": 3},
                                  "ranker": {"dim": 16, "epochs": 1, "batch_size": 256, **ranker}})


def unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_features(ws: Workspace, when: pd.Timestamp, seed: int = 0, seed_ids: list[str] = ("seed",)) -> None:
    """Rationale and item-text tables as retrieval and the text encoder write them (values generated here)."""
    data = PreparedDataset(ws.prepared)
    users, items = data.users(), data.items()
    stamp = pa.array(np.full(len(users), when.value // 1000), pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.Table.from_arrays([
        pa.array(users["user_id"].astype(str)), pa.array(users["user_idx"]), vector_array(unit(len(users), seed)),
        pa.array([seed_ids[i % len(seed_ids)] for i in range(len(users))]), pa.array(np.ones(len(users), np.float32)),
        pa.array(np.ones(len(users), np.int64)),
        stamp], schema=output_schema(384)), ws.user_rationales)
    pq.write_table(pa.Table.from_arrays([
        pa.array(items["item_id"].astype(str)), pa.array(items["item_idx"]), vector_array(unit(len(items), seed + 1)),
        pa.array(np.full(len(items), when.value // 1000), pa.timestamp("us", tz="UTC"))],
        names=["item_id", "item_idx", "text_embedding", "event_timestamp"]), ws.item_text)


def make_pool(ws: Workspace) -> None:
    """A real three-seed pool version in Milvus Lite, so the gate has seeds and a version to check."""
    seeds = pd.DataFrame({"user_idx": [0, 1, 2], "user_id": ["seed0", "seed1", "seed2"], "step1": "s", "step2": "t",
                          "model": "m", "template_version": "v", "prompt_tokens": 0, "completion_tokens": 0})
    behaviour = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    write_pool_version(ws, str(ws.milvus_file), seeds, behaviour, unit(3, 0))  # rationales are unit, as MiniLM's
