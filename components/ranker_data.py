"""What a downstream recommender trains and is evaluated on: one task's split, batches, and Feast features.

* ``cf`` backbones use the ratio split (``cf_split``): (user, item) training pairs with
  uniformly sampled negatives; evaluation excludes the items a user already has (training
  items for validation, training and validation items for test).
* ``seq`` backbones use leave-one-out (``seq_split``): every training interaction after a
  user's first is a (previous items → next item) target.  A user's training sequence is cut
  into windows of ``max_len`` inputs and the loss is taken at every position: with causal
  attention a position sees exactly its prefix, so this equals RecBole's one-sample-per-prefix
  augmentation (contexts of up to ``max_len`` items) at a fraction of the cost.  Validation
  and test predict the held-out item from everything before it; as in RecBole, known items
  are not masked.

Rationale and item-text features come through Feast's historical retrieval (point in time),
as a production ranker's training set would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from components.config import FeaturesConfig
from components.data.tables import SPLIT_COLUMN, TEST, TRAIN, VALID, PreparedDataset
from components.workspace import Workspace
from models.metrics import UserItemSets



@dataclass
class EvalSet:
    """One evaluation split: its users, their held-out items, and what is excluded from their ranking."""

    users: np.ndarray
    targets: UserItemSets
    exclude: UserItemSets
    rows: np.ndarray  # seq: the held-out row of each user (its prefix is the input); cf: unused


class RankerData:
    """The interactions of one task in index space, held as flat time-ordered arrays per user."""

    def __init__(self, data: PreparedDataset, family: str, max_len: int = 50):
        table = data.interactions(["user_idx", "item_idx", SPLIT_COLUMN[family]])
        self.family, self.max_len = family, max_len
        self.n_users, self.n_items = data.n_users, data.n_items
        self.users = table["user_idx"].to_numpy(np.int64)
        self.items = table["item_idx"].to_numpy(np.int64)
        self.split = table[SPLIT_COLUMN[family]].to_numpy(np.int8)
        if np.any(np.diff(self.users) < 0):
            raise ValueError(f"{data.folder}: interactions are not grouped by user; re-run 'reland data prepare'")
        counts = np.bincount(self.users, minlength=self.n_users)
        self.user_start = np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
        train = self.split == TRAIN
        self._train_keys = np.sort(self.users[train] * self.n_items + self.items[train])
        if family == "seq":  # training units are windows: (first row, number of inputs)
            self.train_rows, self.window_lengths = self._windows(np.flatnonzero(train))
        else:
            self.train_rows = np.flatnonzero(train)

    def _windows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cut each user's (contiguous) training rows into windows of up to ``max_len`` inputs."""
        users = self.users[rows]
        first = np.r_[True, users[1:] != users[:-1]]
        position = np.arange(len(rows)) - np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
        count = np.bincount(users, minlength=self.n_users)[users]
        start = (position % self.max_len == 0) & (position + 1 < count)
        return rows[start], np.minimum(self.max_len, count - 1 - position)[start]

    def sets(self, rows: np.ndarray) -> UserItemSets:
        return UserItemSets(self.users[rows], self.items[rows], self.n_users)

    def eval_set(self, split: int) -> EvalSet:
        rows = np.flatnonzero(self.split == split)
        known = np.flatnonzero(self.split < split) if self.family == "cf" else np.empty(0, np.int64)
        return EvalSet(np.unique(self.users[rows]), self.sets(rows), self.sets(known), rows)

    @property
    def valid(self) -> EvalSet:
        return self.eval_set(VALID)

    @property
    def test(self) -> EvalSet:
        return self.eval_set(TEST)

    def prefixes(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded sequences (items numbered from 1) of the up to ``max_len`` items before each row.

        Columns stop at the longest prefix: shorter batches cost less, and outputs do not change.
        """
        lengths = np.minimum(rows - self.user_start[rows], self.max_len)
        offsets = np.arange(max(int(lengths.max()), 1))  # no column of padding only
        source = rows[:, None] - lengths[:, None] + offsets[None, :]
        valid = offsets[None, :] < lengths[:, None]
        sequences = np.where(valid, self.items[np.where(valid, source, 0)] + 1, 0)
        return torch.from_numpy(sequences), torch.from_numpy(np.maximum(lengths, 1))

    def units_per_batch(self, batch_size: int) -> int:
        """Training units per batch: ``batch_size`` targets, i.e. pairs (cf) or windows holding that many (seq)."""
        if self.family == "cf":
            return batch_size
        return max(1, round(batch_size * len(self.train_rows) / max(int(self.window_lengths.sum()), 1)))

    def training_batches(self, batch_size: int, rng: np.random.Generator, max_batches: int | None = None):
        """Shuffled training batches (dicts of tensors) for one epoch, about ``batch_size`` targets each."""
        batch_size = self.units_per_batch(batch_size)
        order = rng.permutation(self.train_rows)
        n_batches = -(-len(order) // batch_size)
        for index in range(min(n_batches, max_batches or n_batches)):
            rows = order[index * batch_size: (index + 1) * batch_size]
            yield self.cf_batch(rows, rng) if self.family == "cf" else self.window_batch(rows)

    def cf_batch(self, rows: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        users = self.users[rows]
        negatives = rng.integers(0, self.n_items, len(rows))
        clash = self._is_training_pair(users, negatives)
        negatives[clash] = rng.integers(0, self.n_items, int(clash.sum()))  # one redraw: rare clashes remain
        return {"users": torch.from_numpy(users), "positives": torch.from_numpy(self.items[rows]),
                "negatives": torch.from_numpy(negatives)}

    def seq_batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        sequences, lengths = self.prefixes(rows)
        return {"users": torch.from_numpy(self.users[rows]), "sequences": sequences, "lengths": lengths,
                "targets": torch.from_numpy(self.items[rows]), "rows": torch.from_numpy(rows)}

    def window_batch(self, starts: np.ndarray) -> dict[str, torch.Tensor]:
        """Windows from ``starts``: inputs (from 1, right-padded), next-item targets per position (-100: none)."""
        lengths = self.window_lengths[np.searchsorted(self.train_rows, starts)]
        offsets = np.arange(int(lengths.max()))  # no column of padding only
        valid = offsets[None, :] < lengths[:, None]
        source = np.where(valid, starts[:, None] + offsets[None, :], 0)
        targets = np.where(valid, self.items[np.where(valid, source + 1, 0)], -100)
        return {"users": torch.from_numpy(self.users[starts]), "rows": torch.from_numpy(starts),
                "sequences": torch.from_numpy(np.where(valid, self.items[source] + 1, 0)),
                "lengths": torch.from_numpy(lengths), "window_targets": torch.from_numpy(targets),
                "targets": torch.from_numpy(self.items[starts + lengths])}

    def _is_training_pair(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        found = np.searchsorted(self._train_keys, keys)
        return self._train_keys[np.minimum(found, len(self._train_keys) - 1)] == keys

    def same_target_partners(self, rng: np.random.Generator) -> np.ndarray:
        """For each training window (by first row), another whose last target is the same (itself when alone)."""
        rows = self.train_rows
        last = self.items[rows + self.window_lengths]
        order = np.argsort(last, kind="stable")
        targets = last[order]
        starts = np.searchsorted(targets, targets, side="left")
        ends = np.searchsorted(targets, targets, side="right")
        partners = np.empty(self.n_rows, np.int64)
        partners[rows[order]] = rows[order][starts + (rng.random(len(order)) * (ends - starts)).astype(np.int64)]
        return partners

    @property
    def n_rows(self) -> int:
        return len(self.users)


def historical_frame(workspace: Workspace, features: FeaturesConfig, references: list[str],
                     entity: pd.DataFrame) -> pd.DataFrame:
    """Feast's point-in-time join of one view's ``view:field`` references onto ``entity`` (its join keys and
    ``event_timestamp``), in ``entity``'s row order.

    Raises naming the view when any row has no value at or before its timestamp (within the TTL).
    """
    from feast.errors import FeatureViewNotFoundException

    from feature_repo import feature_store

    view = references[0].split(":")[0]
    entity = entity.assign(_row=np.arange(len(entity)))
    try:
        frame = feature_store(workspace, features).get_historical_features(entity_df=entity,
                                                                           features=references).to_df()
    except FeatureViewNotFoundException:
        raise FileNotFoundError(f"{workspace.root}: feature view '{view}' is not registered in the workspace's Feast "
                                "repo; run 'reland features apply' (or 'reland run') first") from None
    # The file offline store drops entity rows it has no feature row for: reindex to find them.
    fields = [reference.split(":")[1] for reference in references]
    values = frame.set_index("_row")[fields].reindex(np.arange(len(entity)))
    missing = values.isna().any(axis=1).to_numpy()
    if missing.any():
        first = entity.drop(columns=["_row", "event_timestamp"]).iloc[int(np.argmax(missing))].to_dict()
        raise ValueError(f"feature view '{view}': {int(missing.sum()):,} of {len(entity):,} rows have no "
                         f"{', '.join(map(repr, fields))} at their timestamp (first: {first}); "
                         "materialised after the training time, or older than the view's TTL?")
    return values


def historical_features(workspace: Workspace, features: FeaturesConfig, reference: str, keys: pd.Series,
                        as_of: pd.Timestamp | pd.Series) -> np.ndarray:
    """One vector feature (``view:field``) for each key of a single-key view, as of ``as_of``."""
    from feature_repo import ENTITY_KEYS

    view, field = reference.split(":")
    (key,) = ENTITY_KEYS[view]
    entity = pd.DataFrame({key: keys.astype(str).to_numpy(), "event_timestamp": as_of})
    return np.stack(historical_frame(workspace, features, [reference], entity)[field].to_numpy()).astype(np.float32)


def rationale_features(workspace: Workspace, features: FeaturesConfig, users: pd.Series,
                       as_of: pd.Timestamp | pd.Series) -> np.ndarray:
    """Each user's rationale embedding as of ``as_of``, as serving sees it: the user's own row (per-user
    layout), or the row of the seed the user is assigned to (seed-keyed layout)."""
    from feature_repo import ENTITY_KEYS, RATIONALE_VIEW, SEED_VIEW, seed_keyed

    if not seed_keyed(workspace):
        return historical_features(workspace, features, f"{RATIONALE_VIEW}:rationale_embedding", users, as_of)
    keys = list(ENTITY_KEYS[SEED_VIEW])  # what the user's row names: its pool version and seed
    entity = pd.DataFrame({"user_id": users.astype(str).to_numpy(), "event_timestamp": as_of})
    assigned = historical_frame(workspace, features, [f"{RATIONALE_VIEW}:{key}" for key in keys], entity)
    seeds = assigned.astype({"pool_version": np.int64, "seed_user_id": str}).reset_index(drop=True)
    seeds["event_timestamp"] = entity["event_timestamp"]
    # Feast's join keeps one row per (keys, timestamp): ask once per distinct seed, then give each user its seed's.
    distinct = seeds.drop_duplicates(ignore_index=True)
    row = seeds.groupby([*keys, "event_timestamp"], sort=False).ngroup().to_numpy()
    vectors = historical_frame(workspace, features, [f"{SEED_VIEW}:rationale_embedding"], distinct)
    return np.stack(vectors["rationale_embedding"].to_numpy()).astype(np.float32)[row]
