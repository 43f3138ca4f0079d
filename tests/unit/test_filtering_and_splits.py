"""k-core filter against a brute-force reference; both splits respect time and never leak."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.config import load_config
from components.data.prepare import prepare_data
from components.data.splits import PositionCounter, cf_split, ratio_split_sizes, sequential_split
from components.data.tables import TEST, TRAIN, VALID
from components.workspace import Workspace
from conftest import random_log, write_recbole


def brute_force_k_core(log: pd.DataFrame, k: int) -> pd.DataFrame:
    while True:
        users = log["user_id"].map(log["user_id"].value_counts())
        items = log["item_id"].map(log["item_id"].value_counts())
        kept = log[(users >= k) & (items >= k)]
        if len(kept) == len(log):
            return kept
        log = kept


@pytest.fixture
def prepared(tmp_path):
    log = random_log(n_users=60, n_items=40, seed=7)
    folder = write_recbole(tmp_path / "toy", log)
    # A small chunk size makes users straddle batch boundaries.
    config = load_config(overrides={"data": {"source": str(folder), "chunk_rows": 64}})
    return log, prepare_data(config, Workspace(tmp_path / "ws"), progress=False)


def test_k_core_matches_brute_force(prepared):
    log, data = prepared
    expected = brute_force_k_core(log, 5)
    assert data.stats["loaded"]["interactions"] == len(log)
    assert data.stats["filtered"] == {**data.stats["filtered"], "users": expected["user_id"].nunique(),
                                      "items": expected["item_id"].nunique(), "interactions": len(expected)}
    inter = data.interactions()
    assert inter.groupby("user_idx").size().min() >= 5 and inter.groupby("item_idx").size().min() >= 5
    assert inter["user_idx"].max() + 1 == data.n_users and inter["item_idx"].max() + 1 == data.n_items


@pytest.mark.parametrize("column", ["cf_split", "seq_split"])
def test_splits_are_chronological_and_disjoint(prepared, column):
    _, data = prepared
    inter = data.interactions()
    for _, rows in inter.groupby("user_idx"):
        codes = rows[column].to_numpy()
        assert (np.diff(codes) >= 0).all(), "train, then valid, then test, in time order"
        assert rows["timestamp"].is_monotonic_increasing
        train_items = set(rows.loc[rows[column] == TRAIN, "item_idx"])
        assert not train_items & set(rows.loc[rows[column] == TEST, "item_idx"])
        assert (codes == TEST).sum() >= 1 and (codes == VALID).sum() >= 1


def test_split_sizes_follow_recbole_rounding():
    n = np.array([5, 9, 10, 23, 100])
    train, valid = ratio_split_sizes(n, (0.8, 0.1, 0.1))
    assert train.tolist() == [3, 7, 8, 19, 80] and valid.tolist() == [1, 1, 1, 2, 10]
    codes = cf_split(np.arange(10), np.full(10, 10), (0.8, 0.1, 0.1))
    assert codes.tolist() == [TRAIN] * 8 + [VALID, TEST]
    assert sequential_split(np.arange(4), np.full(4, 4)).tolist() == [TRAIN, TRAIN, VALID, TEST]


def test_position_counter_carries_users_across_batches():
    users = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    counter = PositionCounter()
    got = np.concatenate([counter(users[:2]), counter(users[2:4]), counter(users[4:6]), counter(users[6:])])
    assert got.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
