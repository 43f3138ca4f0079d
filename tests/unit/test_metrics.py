"""Full-ranking metrics against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.metrics import UserItemSets, full_ranking


def test_hand_computed_recall_ndcg_hit():
    # 5 items. User 0 trained on item 0, target item 3; user 1 trained on nothing, targets 1 and 4.
    scores = torch.tensor([[9.0, 1.0, 2.0, 5.0, 0.0],
                           [0.0, 1.0, 3.0, 2.0, 4.0]])
    exclude = UserItemSets(np.array([0]), np.array([0]), 2)
    targets = UserItemSets(np.array([0, 1, 1]), np.array([3, 1, 4]), 2)
    got = full_ranking(lambda users: scores[users], torch.tensor([0, 1]), exclude, targets, ks=(1, 2))
    # user 0: excluded item 0, ranking 3,2,1,4 -> hit at rank 1
    # user 1: ranking 4,2,3,1,0 -> target 4 at rank 1; target 1 at rank 4
    assert got["hit@1"].tolist() == [1.0, 1.0]
    assert got["recall@1"].tolist() == [1.0, 0.5]
    assert got["recall@2"].tolist() == [1.0, 0.5]
    assert got["ndcg@2"][0] == pytest.approx(1.0)
    assert got["ndcg@2"][1] == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))


def test_excluded_items_never_rank():
    scores = torch.arange(6, dtype=torch.float32).expand(1, -1)
    exclude = UserItemSets(np.array([0, 0]), np.array([5, 4]), 1)
    targets = UserItemSets(np.array([0]), np.array([3]), 1)
    got = full_ranking(lambda users: scores[users], torch.tensor([0]), exclude, targets, ks=(1,))
    assert got["hit@1"].tolist() == [1.0]
