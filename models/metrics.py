"""Exact full-ranking top-k metrics, vectorised over users in batches (RecBole definitions).

For each user, every item is scored, the items in ``exclude`` (the user's training
items) are removed, and the top k are compared with ``targets``:
recall@k = hits / |targets|, ndcg@k = DCG / ideal DCG over min(|targets|, k), hit@k = any hit.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


class UserItemSets:
    """Per-user item sets in CSR form (``indptr`` over users, ``indices`` items)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int):
        order = np.argsort(users, kind="stable")
        self.indices = torch.from_numpy(np.ascontiguousarray(items[order]).astype(np.int64))
        self.indptr = torch.from_numpy(np.r_[0, np.cumsum(np.bincount(users, minlength=n_users))].astype(np.int64))

    def sizes(self, users: torch.Tensor) -> torch.Tensor:
        return self.indptr[users + 1] - self.indptr[users]

    def coordinates(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row within ``users``, item) pairs of the given users' sets."""
        sizes = self.sizes(users)
        rows = torch.repeat_interleave(torch.arange(len(users)), sizes)
        starts = torch.repeat_interleave(self.indptr[users], sizes)
        offsets = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        return rows, self.indices[starts + offsets]


def full_ranking(score: Callable[[torch.Tensor], torch.Tensor], users: torch.Tensor, exclude: UserItemSets,
                 targets: UserItemSets, ks: tuple[int, ...] = (10, 20), batch_size: int = 512) -> dict[str, np.ndarray]:
    """Per-user recall/ndcg/hit at each k; ``score(users)`` returns a (len(users) × n_items) matrix."""
    top = max(ks)
    out: dict[str, list[torch.Tensor]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "hit")}
    discounts = 1.0 / torch.log2(torch.arange(top, dtype=torch.float64) + 2.0)
    for start in range(0, len(users), batch_size):
        batch = users[start: start + batch_size]
        scores = score(batch).clone()
        rows, items = exclude.coordinates(batch)
        scores[rows, items] = -torch.inf
        ranked = scores.topk(min(top, scores.shape[1]), dim=1).indices
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        rows, items = targets.coordinates(batch)
        relevant[rows, items] = True
        hits = torch.nn.functional.pad(relevant.gather(1, ranked).double(), (0, top - ranked.shape[1]))
        n_targets = targets.sizes(batch).double().clamp(min=1)
        for k in ks:
            ideal = torch.cumsum(discounts[:k], 0)[(n_targets.clamp(max=k) - 1).long()]
            out[f"recall@{k}"].append(hits[:, :k].sum(1) / n_targets)
            out[f"ndcg@{k}"].append((hits[:, :k] * discounts[:k]).sum(1) / ideal)
            out[f"hit@{k}"].append((hits[:, :k].sum(1) > 0).double())
    return {name: torch.cat(parts).numpy() for name, parts in out.items()}
