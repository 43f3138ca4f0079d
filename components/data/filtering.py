"""Repeat removal and the iterative k-core filter, streamed over a staged dataset."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.data.tables import INTERACTIONS, StagedMeta, iter_batches
from components.errors import InputError


def drop_repeats(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Mask keeping the first row of each (user, item) pair; rows must be in time order per user."""
    order = np.lexsort((np.arange(len(user)), item, user))
    repeat = np.zeros(len(user), dtype=bool)
    same = (user[order][1:] == user[order][:-1]) & (item[order][1:] == item[order][:-1])
    repeat[order[1:][same]] = True
    return ~repeat


@dataclass
class CoreResult:
    """Which ordinal users and items survive, with counts before and after filtering."""

    keep_users: np.ndarray  # bool per user ordinal
    keep_items: np.ndarray  # bool per item ordinal
    user_counts: np.ndarray  # interactions per user ordinal after filtering
    loaded: dict
    filtered: dict
    passes: int


def summary(users: int, items: int, rows: int) -> dict:
    sparsity = 1.0 - rows / (users * items) if users and items else 0.0
    return {"users": int(users), "items": int(items), "interactions": int(rows), "sparsity": round(sparsity, 6)}


def _count(folder: Path, meta: StagedMeta, keep_users: np.ndarray, keep_items: np.ndarray,
           chunk_rows: int, check_order: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Interactions per user and per item over rows whose user and item are both kept."""
    user_counts = np.zeros(meta.n_users, np.int32)
    item_counts = np.zeros(meta.n_items, np.int32)
    previous, row = -1, 0
    path = folder / INTERACTIONS
    for batch in iter_batches(path, ["user", "item"], chunk_rows):
        user, item = batch["user"], batch["item"]
        if check_order:
            steps = np.diff(user, prepend=previous)
            if (steps < 0).any():
                raise InputError(path, "rows are not sorted by user (staged data must be user-major)",
                                 column="user", row=row + int(np.argmax(steps < 0)))
            if len(user) and (user.min() < 0 or user.max() >= meta.n_users or item.min() < 0 or item.max() >= meta.n_items):
                raise InputError(path, "ordinal id outside the range given in meta.json", row=row)
            previous = user[-1] if len(user) else previous
        alive = keep_users[user] & keep_items[item]
        if alive.any():  # user-major rows: count into the chunk's user range only
            lo, hi = int(user[0]), int(user[-1]) + 1
            user_counts[lo:hi] += np.bincount(user[alive] - lo, minlength=hi - lo).astype(np.int32)
            item_counts += np.bincount(item[alive], minlength=meta.n_items).astype(np.int32)
        row += len(user)
    return user_counts, item_counts, row


def k_core(folder: Path, k: int, chunk_rows: int) -> CoreResult:
    """Iterate passes until every kept user and item has at least ``k`` kept interactions.

    Memory is two count arrays (users + items) plus one chunk, whatever the number of rows.
    """
    meta = StagedMeta.load(folder)
    keep_users = np.ones(meta.n_users, bool)
    keep_items = np.ones(meta.n_items, bool)
    user_counts, item_counts, rows = _count(folder, meta, keep_users, keep_items, chunk_rows, check_order=True)
    loaded = summary((user_counts > 0).sum(), (item_counts > 0).sum(), rows)
    passes = 1
    while True:
        new_users, new_items = keep_users & (user_counts >= k), keep_items & (item_counts >= k)
        if (new_users == keep_users).all() and (new_items == keep_items).all():
            break
        keep_users, keep_items = new_users, new_items
        user_counts, item_counts, _ = _count(folder, meta, keep_users, keep_items, chunk_rows, check_order=False)
        passes += 1
    filtered = summary(keep_users.sum(), keep_items.sum(), int(user_counts[keep_users].sum()))
    return CoreResult(keep_users, keep_items, np.where(keep_users, user_counts, 0), loaded, filtered, passes)
