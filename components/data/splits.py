"""The paper's splits (§4.1), computed per row from its position in the user's history.

* collaborative filtering: chronological 80/10/10 per user, RecBole's rounding
  (valid and test get ``int(ratio * n)`` rows, at least one each when ``ratio * n < 1``);
* sequential: leave-one-out (last row test, penultimate valid, the rest train); models read
  at most ``max_seq_len`` items of history before a target.
"""
from __future__ import annotations

import numpy as np

from components.data.tables import TEST, TRAIN, VALID


def ratio_split_sizes(n: np.ndarray, ratios: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Train and valid row counts per user for history lengths ``n`` (test gets the rest)."""
    n = np.asarray(n, np.int64)
    valid = np.floor(ratios[1] * n).astype(np.int64)
    test = np.floor(ratios[2] * n).astype(np.int64)
    train = n - valid - test
    for ratio, part in ((ratios[2], test), (ratios[1], valid)):  # RecBole tops up from the end
        bump = (train > 1) & (ratio * n > 0) & (ratio * n < 1)
        part += bump
        train -= bump
    return train, valid


def cf_split(position: np.ndarray, n: np.ndarray, ratios: tuple[float, float, float]) -> np.ndarray:
    """Split code of each row, given its 0-based position and its user's history length."""
    train, valid = ratio_split_sizes(n, ratios)
    return np.where(position < train, TRAIN, np.where(position < train + valid, VALID, TEST)).astype(np.int8)


def sequential_split(position: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.where(position == n - 1, TEST, np.where(position == n - 2, VALID, TRAIN)).astype(np.int8)


class PositionCounter:
    """0-based position of each row within its user, over user-major batches in order."""

    def __init__(self) -> None:
        self._user, self._next = -1, 0

    def __call__(self, user: np.ndarray) -> np.ndarray:
        if len(user) == 0:
            return np.zeros(0, np.int64)
        index = np.arange(len(user))
        starts = np.r_[True, user[1:] != user[:-1]]
        position = index - np.maximum.accumulate(np.where(starts, index, 0))
        if user[0] == self._user:  # the first user continues from the previous batch
            position[: np.argmax(starts[1:]) + 1 if starts[1:].any() else len(user)] += self._next
        self._user, self._next = int(user[-1]), int(position[-1]) + 1
        return position
